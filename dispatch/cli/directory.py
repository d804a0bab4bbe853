"""``dispatch directory import FILE.csv`` and ``dispatch directory export [FILE.csv|-]``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option, resolve_actor
from dispatch.transaction import unit_of_work


@click.group("directory")
def directory_group() -> None:
    """The directory of recipient offices."""


@directory_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--group", "group_code", default="so-tttt-2021", show_default=True)
@click.option("--as", "as_email", help="E-mail of the admin who imports (default: system).")
@at_option
@with_appcontext
def import_command(path: Path, group_code: str, as_email: str | None, at: dt.datetime) -> None:
    """Import offices from a CSV file: all rows or, if any row is wrong, none."""
    from dispatch.directory import offices

    actor = resolve_actor(as_email)
    try:
        with unit_of_work():
            result = offices.import_csv(
                path, actor=actor.email if actor else "system", at=at, group_code=group_code
            )
    except offices.DirectoryError as exc:
        raise CliError(str(exc)) from exc
    click.echo(
        f"Đã nhập danh bạ vào nhóm {group_code}: {len(result.created)} cơ quan mới, "
        f"{len(result.updated)} cập nhật, {len(result.unchanged)} không đổi."
    )


@directory_group.command("export")
@click.argument("path", required=False, default="-")
@click.option("--group", "group_code", help="Only the offices of this group.")
@with_appcontext
def export_command(path: str, group_code: str | None) -> None:
    """Write the directory as CSV to PATH (with a BOM, for Excel) or to stdout ('-', no BOM)."""
    from dispatch.directory import offices

    if path == "-":
        click.echo(offices.export_csv(group_code=group_code, bom=False), nl=False)
        return
    text = offices.export_csv(group_code=group_code, bom=True)
    try:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    except OSError as exc:
        raise CliError(f"Không ghi được tệp {path}: {exc.strerror}") from exc
    click.echo(f"Đã xuất {text.count(chr(10)) - 1} cơ quan ra {path}.")


commands = (directory_group,)
