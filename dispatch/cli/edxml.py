"""``dispatch edxml``: export a dispatch's packages, receive a status message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option, dispatch_id_argument
from dispatch.transaction import unit_of_work


@click.group("edxml")
def edxml_group() -> None:
    """The national exchange format (edXML, QCVN 102:2016)."""


@edxml_group.command("export")
@dispatch_id_argument
@click.option(
    "--out",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write one package per recipient into.",
)
@at_option
@with_appcontext
def export_command(dispatch_id: int, folder: Path, at: dt.datetime) -> None:
    """Write one edXML package per recipient of an issued dispatch."""
    from dispatch.edxml.exchange import export_packages
    from dispatch.edxml.xml import EdxmlError

    try:
        written = export_packages(dispatch_id, folder, at=at)
    except EdxmlError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã ghi {len(written)} gói edXML vào {folder}.")


@edxml_group.command("receive")
@click.argument("file", type=click.File("rb"))
@at_option
@with_appcontext
def receive_command(file, at: dt.datetime) -> None:
    """Record a status message (01–06, 15, 16) from a recipient's system."""
    from dispatch.edxml.exchange import receive_status
    from dispatch.edxml.xml import MAX_BYTES, EdxmlError

    raw = file.read(MAX_BYTES + 1)
    try:
        with unit_of_work():
            result = receive_status(raw, door="file", at=at)
    except EdxmlError as exc:
        raise CliError(str(exc)) from exc
    if result.duplicate:
        click.echo(f"Thông điệp này đã được ghi nhận trước đó (mã {result.inbound_id}).")
        return
    if result.recipient_id is None:
        raise CliError(
            f"thông điệp trạng thái {result.code} không khớp công văn hay cơ quan nào "
            f"(đã lưu, mã {result.inbound_id}, chờ quản trị xem)."
        )
    click.echo(
        f"Đã ghi nhận trạng thái {result.code} ({result.meaning}) của nơi nhận mã "
        f"{result.recipient_id}, công văn mã {result.dispatch_id}"
        + ("." if result.changed else " (không thay đổi trạng thái).")
    )


commands = (edxml_group,)
