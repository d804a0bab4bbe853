"""``dispatch export ID [--out FILE.zip]``: the evidence package of an issued dispatch."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import click
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option, dispatch_id_argument


@click.command("export")
@dispatch_id_argument
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the zip (default: <number>-chung-cu.zip in the current folder).",
)
@at_option
@with_appcontext
def export_command(dispatch_id: int, out: Path | None, at: dt.datetime) -> None:
    """Write the evidence package of DISPATCH_ID: files, e-mails, replies, receipts, audit log.

    Exit status 1 when something no longer matches its record (the package is still written,
    with the differences listed in its README).
    """
    from dispatch.reporting.evidence import EvidenceError, build_evidence, default_filename

    try:
        package = build_evidence(dispatch_id, at=at)
    except EvidenceError as exc:
        raise CliError(str(exc)) from exc
    target = out or Path(default_filename(package))
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        # Written whole then renamed: a half-written package never has the final name.
        temporary.write_bytes(package.data)
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CliError(f"Không ghi được tệp {target}: {exc.strerror}.") from exc
    click.echo(f"Đã xuất gói chứng cứ ({len(package.files)} tệp) ra {target}.")
    click.echo(
        f"Kiểm tra: giải nén rồi chạy 'sha256sum -c MANIFEST.sha256' trong {package.folder}/."
    )
    if package.rebuilt:
        click.echo(
            f"Lưu ý: {len(package.rebuilt)} thư không còn bản gốc đã gửi; gói chứa bản dựng lại.",
            err=True,
        )
    if package.problems:
        click.echo("Cảnh báo: có điểm không khớp với bản ghi:", err=True)
        for problem in package.problems:
            click.echo(f"  - {problem}", err=True)
        raise SystemExit(1)


commands = (export_command,)
