"""``dispatch verify FILE [--json]``: the signatures of a PDF and its place in the register."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from dispatch.cli.options import CliError

ROLE_LABELS = {"signer": "Người ký (ký duyệt)", "agency": "Cơ quan ban hành", "other": "Khác"}


@click.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_appcontext
def verify_command(file: Path, as_json: bool) -> None:
    """Check FILE's signatures and that it is exactly an issued dispatch's PDF.

    Exit status 0 only when every signature is intact and the file's SHA-256 is in the register.
    """
    from dispatch.signing import pades, verification

    try:
        result, passed, _ = verification.verify_file(file.read_bytes(), current_app.config)
    except pades.SigningError as exc:
        raise CliError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        if not result["signatures"]:
            click.echo("Tệp không có chữ ký số.")
        for sig in result["signatures"]:
            state = "nguyên vẹn" if sig["intact"] else "BỊ HỎNG (tệp đã bị sửa sau khi ký)"
            trust = "tin cậy" if sig["trusted"] else "chưa xác định được nguồn tin cậy"
            click.echo(
                f"{ROLE_LABELS.get(sig['role'], sig['role'])}: {sig['name']}, "
                f"ký lúc {sig['signed_at']}: {state}; chứng thư {trust}."
            )
        entry = result["register"]
        if entry:
            click.echo(f"Sổ đăng ký: số {entry['number']} ngày {entry['date']}: {entry['subject']}")
        else:
            click.echo("Tệp không trùng với bản gốc của công văn nào trong sổ đăng ký.")
        click.echo(f"PDF/A: {result['pdfa'] or 'không'}")
    if not passed:
        raise SystemExit(1)


commands = (verify_command,)
