"""``dispatch inbound``: receive one message, serve the inbound SMTP listener, poll the mailbox,
list what could not be matched."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import threading

import click
from flask import current_app
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option
from dispatch.transaction import unit_of_work

KIND_LABELS = {
    "bounce": "thư bị trả lại",
    "delay": "thông báo chậm chuyển thư",
    "delivered": "thông báo đã chuyển thư",
    "auto_reply": "thư trả lời tự động",
    "reply": "thư trả lời",
    "edxml_status": "thông điệp trạng thái edXML",
}


@click.group("inbound")
def inbound_group() -> None:
    """Mail that comes back: bounces, automatic replies, the offices' replies."""


@inbound_group.command("receive")
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--envelope-from", help="MAIL FROM as the relay saw it ('' for a bounce).")
@click.option(
    "--envelope-to", "envelope_to", multiple=True, help="RCPT TO as the relay saw it (repeatable)."
)
@at_option
@with_appcontext
def receive_command(
    file, envelope_from: str | None, envelope_to: tuple[str, ...], at: dt.datetime
) -> None:
    """Handle one message (.eml) read from FILE or standard input."""
    from dispatch.inbound.handler import InboundError, handle_message

    raw = file.read(int(current_app.config.get("DISPATCH_INBOUND_MAX_BYTES")) + 1)
    if len(raw) > int(current_app.config.get("DISPATCH_INBOUND_MAX_BYTES")):
        raise CliError("thư quá lớn (DISPATCH_INBOUND_MAX_BYTES).")
    try:
        with unit_of_work():
            result = handle_message(
                raw,
                door="file",
                at=at,
                envelope_from=envelope_from,
                envelope_to=list(envelope_to),
            )
    except InboundError as exc:
        raise CliError(str(exc)) from exc
    label = KIND_LABELS.get(result.kind.value, result.kind.value)
    if result.duplicate:
        click.echo(f"Thư này đã được xử lý trước đó (mã {result.inbound_id}): {label}.")
        return
    line = f"Đã lưu thư đến mã {result.inbound_id}: {label}"
    if result.recipient_id is None:
        line += "; không khớp với thư nào đã gửi (chờ quản trị xem)"
    else:
        line += f"; thuộc nơi nhận mã {result.recipient_id} (khớp theo {result.matched_by})"
    if result.bounced:
        line += "; địa chỉ được đánh dấu bị trả lại"
    click.echo(line + ".")


@inbound_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=2525, show_default=True, type=click.IntRange(1, 65535))
@with_appcontext
def serve_command(host: str, port: int) -> None:
    """Run the inbound SMTP listener (bounces and replies from a relay) until Ctrl-C."""
    from dispatch.cli.processes import running_app
    from dispatch.processes.inbound_listener import run_listener

    logging.basicConfig(
        level=os.environ.get("DISPATCH_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    click.echo(f"Đang nhận thư đến tại {host}:{port}. Bấm Ctrl-C để dừng.")
    try:
        run_listener(running_app(), host=host, port=port)
    except OSError as exc:
        raise CliError(f"không mở được cổng {host}:{port}: {exc}") from exc
    click.echo("Đã dừng nhận thư đến.")


@inbound_group.command("poll")
@click.option("--loop", "every", type=float, help="Poll again every this many seconds.")
@click.option("--limit", type=click.IntRange(1), help="Handle at most this many messages a pass.")
@with_appcontext
def poll_command(every: float | None, limit: int | None) -> None:
    """Read the DISPATCH_IMAP_URL mailbox once (or every --loop seconds until Ctrl-C)."""
    from dispatch import clock
    from dispatch.inbound.imap import ImapError, ImapSettings, poll_mailbox

    try:
        settings = ImapSettings.from_config(current_app.config)
    except ImapError as exc:
        raise CliError(str(exc)) from exc
    if settings is None:
        raise CliError("chưa cấu hình DISPATCH_IMAP_URL.")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while True:
        try:
            with unit_of_work():
                report = poll_mailbox(settings, now=clock.now, limit=limit)
        except ImapError as exc:
            if every is None:
                raise CliError(str(exc)) from exc
            click.echo(f"Lỗi: {exc}", err=True)
        else:
            click.echo(
                f"Hộp thư {settings.key}: xử lý {report.handled} thư mới, "
                f"{report.duplicates} thư trùng, cất {report.filed + report.refiled} thư."
            )
        if every is None or stop.wait(every):
            return


@inbound_group.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@with_appcontext
def list_command(limit: int) -> None:
    """List the inbound messages that match nothing we sent (for an admin)."""
    from dispatch import clock
    from dispatch.inbound.handler import unmatched

    found = unmatched(limit)
    if not found:
        click.echo("Không có thư đến nào chưa khớp.")
        return
    for message in found:
        click.echo(
            f"{message.id}\t{clock.format_local(message.received_at)}\t"
            f"{KIND_LABELS.get(message.kind.value, message.kind.value)}\t"
            f"{message.from_address or ''}\t{message.subject or ''}\t{message.archive_path}"
        )


commands = (inbound_group,)
