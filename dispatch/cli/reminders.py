"""``dispatch remind``, ``dispatch scheduler`` and ``dispatch dev``: thin calls into the modules."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from dispatch import clock


def _check_calendar() -> None:
    """Stop at once, with the setting's name, on a malformed DISPATCH_EXTRA_* date."""
    from dispatch.calendar import CalendarConfigError, calendar_from_config

    try:
        calendar_from_config(current_app.config)
    except CalendarConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _parse_at(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime:
    if value is None:
        return clock.now()
    try:
        return clock.parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"thời điểm không hợp lệ {value!r}, cần dạng ISO-8601, ví dụ 2021-11-16T09:00:00+07:00"
        ) from exc


@click.command("remind")
@click.option(
    "--at",
    "at",
    callback=_parse_at,
    metavar="ISO-8601",
    help="The moment to act at (default: now); without an offset, Vietnam time.",
)
@click.option("--no-deliver", is_flag=True, help="Only queue; leave sending to the scheduler.")
@with_appcontext
def remind_command(at: dt.datetime, no_deliver: bool) -> None:
    """Queue the reminders and escalations due at --at, then send what is due."""
    from dispatch.receipts.reminders import send_due_reminders

    _check_calendar()
    report = send_due_reminders(at)
    click.echo(f"Thời điểm: {clock.format_local(at)}")
    for outcome in report.outcomes:
        label = outcome.number or f"#{outcome.dispatch_id}"
        parts = []
        if outcome.reminded:
            parts.append(f"nhắc việc ngày làm việc thứ {outcome.day}: {len(outcome.reminded)}")
        if outcome.already_reminded:
            parts.append(f"đã nhắc trước đó: {outcome.already_reminded}")
        if outcome.not_delivered:
            parts.append(f"chưa nhận được văn bản (không nhắc): {outcome.not_delivered}")
        if outcome.escalated:
            parts.append(f"quá hạn, đã báo cáo lãnh đạo: {len(outcome.overdue)} đơn vị")
        if outcome.completed:
            parts.append("tất cả đơn vị đã xác nhận: hoàn thành")
        if parts:
            click.echo(f"Công văn {label} (mã {outcome.dispatch_id}): " + "; ".join(parts))
    click.echo(f"Số nhắc việc đã xếp gửi: {report.reminders_queued}")
    click.echo(f"Số báo cáo quá hạn đã xếp gửi: {report.escalations_queued}")
    click.echo(f"Số đơn vị quá hạn: {report.overdue_marked}")
    if report.not_delivered:
        click.echo(f"Số đơn vị chưa nhận được văn bản (không nhắc): {report.not_delivered}")
    if not no_deliver:
        from dispatch.mail.sender import deliver_due

        delivery = deliver_due(at)
        click.echo(
            f"Thư đã gửi: {delivery.sent}; sẽ gửi lại: {delivery.retrying}; "
            f"thất bại: {delivery.failed}; đã huỷ: {delivery.cancelled}"
        )
        for error in delivery.errors:
            click.echo(f"  lỗi gửi: {error}", err=True)
    for dispatch_id, error in report.errors:
        click.echo(f"Lỗi khi xử lý công văn mã {dispatch_id}: {error}", err=True)
    if report.errors:
        sys.exit(1)


@click.command("scheduler")
@click.option("--deliver-every", default=60.0, show_default=True, help="Seconds between sends.")
@click.option(
    "--remind-every", default=600.0, show_default=True, help="Seconds between reminder runs."
)
@click.option(
    "--heartbeat-every", default=60.0, show_default=True, help="Seconds between heartbeats."
)
@click.option(
    "--standby-poll",
    default=15.0,
    show_default=True,
    help="Seconds between tries for the lock while another scheduler holds it (PostgreSQL).",
)
@with_appcontext
def scheduler_command(
    deliver_every: float, remind_every: float, heartbeat_every: float, standby_poll: float
) -> None:
    """Run the scheduler (sending, reminders, heartbeat) in this process until Ctrl-C."""
    from dispatch.processes.scheduler import Intervals, run_scheduler

    _check_calendar()
    logging.basicConfig(
        level=os.environ.get("DISPATCH_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # APScheduler logs every run at INFO: keep its warnings and errors only.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    code = run_scheduler(
        app,
        Intervals(
            deliver=deliver_every,
            remind=remind_every,
            heartbeat=heartbeat_every,
            standby_poll=standby_poll,
        ),
    )
    sys.exit(code)


@click.command("dev")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address of the web app and sink."
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=5000,
    show_default=True,
    envvar="DISPATCH_DEV_PORT",
    help="Web app port (env DISPATCH_DEV_PORT).",
)
@click.option(
    "--smtp-port",
    type=click.IntRange(1, 65535),
    default=8025,
    show_default=True,
    envvar="DISPATCH_DEV_SMTP_PORT",
    help="SMTP sink port (env DISPATCH_DEV_SMTP_PORT).",
)
@with_appcontext
def dev_command(host: str, port: int, smtp_port: int) -> None:
    """Run everything on this machine: migrate, seed, then the web app, scheduler and sink."""
    from dispatch.processes.devserver import DevError, run_dev

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        code = run_dev(app, host=host, port=port, smtp_port=smtp_port)
    except DevError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


commands = (remind_command, scheduler_command, dev_command)
