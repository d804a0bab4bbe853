"""``dispatch approve ID --as EMAIL``: a leader signs a submitted draft (ký duyệt);
``dispatch verify FILE [--json]``: the signatures of a PDF and its place in the register."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option, dispatch_id_argument, resolve_actor

ROLE_LABELS = {"signer": "Người ký (ký duyệt)", "agency": "Cơ quan ban hành", "other": "Khác"}
# What pyHanko's modification analysis found after a signature that did not permit it.
FORBIDDEN_CHANGES = {
    "form_filling": "điền lại các ô (số, ngày …)",
    "annotations": "thêm ghi chú",
    "other": "sửa nội dung",
}
NOT_PERMITTED = " (not permitted)"


@click.command("approve")
@dispatch_id_argument
@click.option("--as", "as_email", required=True, help="E-mail of the leader who signs.")
@at_option
@with_appcontext
def approve_command(dispatch_id: int, as_email: str, at: dt.datetime) -> None:
    """Sign draft DISPATCH_ID as the leader it was submitted to (ký duyệt).

    The key is the leader's (``dispatch users signing-key``); its password is read from the
    environment variable named there.
    """
    from dispatch.drafting import approval
    from dispatch.drafting.drafts import DraftError
    from dispatch.transaction import unit_of_work

    actor = resolve_actor(as_email)
    assert actor is not None
    try:
        with unit_of_work():  # approving commits on its own; this ends the command's session
            signed = approval.approve(dispatch_id, actor=actor, at=at, environ=os.environ)
    except DraftError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã ký duyệt bản nháp mã {dispatch_id} ({signed.certificate}).")
    click.echo(f"  {signed.pdf_path}  SHA-256 {signed.pdf_sha256}")
    click.echo(f"Ban hành bằng: dispatch issue {dispatch_id}")


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
        with _quiet_pyhanko():
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
            if sig["changes_after"].endswith(NOT_PERMITTED):
                change = sig["changes_after"].removesuffix(NOT_PERMITTED)
                state = (
                    "BỊ HỎNG (sau khi ký có thay đổi không được phép: "
                    f"{FORBIDDEN_CHANGES.get(change, change)})"
                )
            trust = "tin cậy" if sig["trusted"] else "chưa xác định được nguồn tin cậy"
            click.echo(
                f"{ROLE_LABELS.get(sig['role'], sig['role'])}: {sig['name']}, "
                f"ký lúc {_local(sig['signed_at'])}: {state}; chứng thư {trust}."
            )
            click.echo(f"  {_level_line(sig)}")
        entry = result["register"]
        if entry:
            click.echo(f"Sổ đăng ký: số {entry['number']} ngày {entry['date']}: {entry['subject']}")
        else:
            click.echo("Tệp không trùng với bản gốc của công văn nào trong sổ đăng ký.")
        click.echo(f"PDF/A: {result['pdfa'] or 'không'}")
    if not passed:
        raise SystemExit(1)


@contextlib.contextmanager
def _quiet_pyhanko():
    """pyHanko logs a traceback for every chain it cannot build to a trusted root; the result
    already says "chưa xác định được nguồn tin cậy", so keep them off the console."""
    logger = logging.getLogger("pyhanko")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


LEVEL_LABELS = {
    "B-B": "PAdES B-B (không có dấu thời gian)",
    "B-T": "PAdES B-T (có dấu thời gian)",
    "B-LT": "PAdES B-LT (có dấu thời gian và thông tin thu hồi chứng thư)",
}


def _local(iso: str | None) -> str:
    """An ISO 8601 time (already in Vietnam time) as dd/mm/yyyy HH:MM:SS (+07:00)."""
    if not iso:
        return "không rõ"
    moment = dt.datetime.fromisoformat(iso)
    return f"{moment:%d/%m/%Y %H:%M:%S} ({moment.isoformat()[-6:]})"


def _level_line(sig: dict) -> str:
    label = LEVEL_LABELS.get(sig.get("level"), sig.get("level"))
    if sig.get("timestamp"):
        return f"Mức chữ ký: {label}; dấu thời gian lúc {_local(sig['timestamp'])}."
    return f"Mức chữ ký: {label}."


commands = (approve_command, verify_command)
