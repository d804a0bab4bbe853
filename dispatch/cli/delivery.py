"""``dispatch deliver``: send what the outbox holds."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option
from dispatch.transaction import unit_of_work


@contextmanager
def stop_on_signal() -> Iterator[threading.Event]:
    """SIGTERM or SIGINT (Ctrl-C) sets the event: the sender ends its run once the message in
    hand is recorded, so that stopping it sends nothing twice. A second signal acts as usual."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach the main thread only
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}

    def request_stop(number: int, frame: object) -> None:
        stop.set()
        for known, handler in previous.items():
            signal.signal(known, handler)

    for number in previous:
        signal.signal(number, request_stop)
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@click.command("deliver")
@at_option
@click.option("--limit", type=click.IntRange(1), help="Send at most this many messages.")
@with_appcontext
def deliver_command(at: dt.datetime, limit: int | None) -> None:
    """Send the e-mails that are due (letters, reminders, escalations) and record the replies.

    SIGTERM or Ctrl-C ends the run once the e-mail in hand is recorded.
    """
    from dispatch.mail.sender import deliver_due

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The sender commits each outcome; unit_of_work ends the command's session.
    with stop_on_signal() as stop, unit_of_work():
        report = deliver_due(at, limit=limit, stop=stop)
    if report.claimed == 0:
        click.echo("Không có thư nào đến hạn gửi.")
        return
    line = f"Đã gửi: {report.sent}; đang chờ gửi lại: {report.retrying}; thất bại: {report.failed}"
    if report.cancelled:
        line += f"; đã huỷ (không còn cần gửi): {report.cancelled}"
    if report.skipped:
        line += f"; do tiến trình khác gửi: {report.skipped}"
    if report.released:
        line += f"; để lại cho lần gửi sau: {report.released}"
    click.echo(line + ".")
    if report.held_back:
        click.echo(
            f"Máy chủ thư tạm ngừng nhận ({report.held_back}): "
            "các thư còn lại giữ nguyên trong hàng đợi, gửi ở lần chạy sau."
        )
    for error in report.errors:
        click.echo(f"  - {error}", err=True)
    if report.stopped:
        raise CliError(f"Đã dừng gửi: {report.stopped}. Các thư chưa gửi để lại cho lần chạy sau.")


commands = (deliver_command,)
