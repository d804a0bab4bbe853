"""``dispatch deliver`` (send what the outbox holds) and ``dispatch smtp-sink`` (a local server)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from dispatch.clock import now, parse_moment


def _moment(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"thời điểm không hợp lệ {value!r}, cần dạng ISO-8601, ví dụ 2021-11-15T08:30:00+07:00"
        ) from exc


@click.command("deliver")
@click.option("--at", "at", callback=_moment, help="The moment to act at (ISO-8601); default now.")
@click.option("--limit", type=click.IntRange(1), help="Send at most this many messages.")
@with_appcontext
def deliver_command(at, limit: int | None) -> None:
    """Send the e-mails that are due (letters, reminders, escalations) and record the replies."""
    from dispatch.mail.sender import deliver_due

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = deliver_due(at or now(), limit=limit)
    if report.claimed == 0:
        click.echo("Không có thư nào đến hạn gửi.")
        return
    line = f"Đã gửi: {report.sent}; đang chờ gửi lại: {report.retrying}; thất bại: {report.failed}"
    if report.cancelled:
        line += f"; đã huỷ (không còn cần gửi): {report.cancelled}"
    if report.skipped:
        line += f"; do tiến trình khác gửi: {report.skipped}"
    click.echo(line + ".")
    for error in report.errors:
        click.echo(f"  - {error}", err=True)


@click.command("smtp-sink")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to keep the messages (default: <instance>/mail).",
)
@with_appcontext
def smtp_sink_command(host: str, port: int, folder: Path | None) -> None:
    """Run a local SMTP server that keeps every message as an .eml file, until Ctrl-C."""
    from dispatch.processes.smtp_sink import run_sink

    folder = folder or Path(current_app.instance_path) / "mail"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line per SMTP command
    click.echo(
        f"Máy chủ thư thử nghiệm đang nghe tại {host}:{port}; thư được lưu vào {folder}. "
        "Bấm Ctrl-C để dừng."
    )
    try:
        run_sink(folder, host=host, port=port)
    except OSError as exc:
        raise click.ClickException(f"không mở được cổng {host}:{port}: {exc}") from exc
    click.echo("Đã dừng máy chủ thư thử nghiệm.")


commands = (deliver_command, smtp_sink_command)
