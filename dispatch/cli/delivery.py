"""``dispatch deliver``: send what the outbox holds."""

from __future__ import annotations

import datetime as dt
import logging

import click
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option
from dispatch.transaction import unit_of_work


@click.command("deliver")
@at_option
@click.option("--limit", type=click.IntRange(1), help="Send at most this many messages.")
@with_appcontext
def deliver_command(at: dt.datetime, limit: int | None) -> None:
    """Send the e-mails that are due (letters, reminders, escalations) and record the replies."""
    from dispatch.mail.sender import deliver_due

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with unit_of_work():  # the sender commits each outcome; this ends the command's session
        report = deliver_due(at, limit=limit)
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
