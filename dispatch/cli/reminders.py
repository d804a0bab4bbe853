"""``dispatch remind``: queue the reminders and escalations due, then send them."""

from __future__ import annotations

import datetime as dt
import sys

import click
from flask.cli import with_appcontext

from dispatch import clock
from dispatch.cli.options import at_option, check_calendar
from dispatch.transaction import unit_of_work


@click.command("remind")
@at_option
@click.option("--no-deliver", is_flag=True, help="Only queue; leave sending to the scheduler.")
@with_appcontext
def remind_command(at: dt.datetime, no_deliver: bool) -> None:
    """Queue the reminders and escalations due at --at, then send what is due."""
    from dispatch.receipts.reminders import send_due_reminders

    check_calendar()
    with unit_of_work():  # the run commits each dispatch on its own; this ends the session
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
    stopped = None
    if not no_deliver:
        from dispatch.mail.sender import deliver_due

        with unit_of_work():
            delivery = deliver_due(at)
        click.echo(
            f"Thư đã gửi: {delivery.sent}; sẽ gửi lại: {delivery.retrying}; "
            f"thất bại: {delivery.failed}; đã huỷ: {delivery.cancelled}"
        )
        for error in delivery.errors:
            click.echo(f"  lỗi gửi: {error}", err=True)
        stopped = delivery.stopped
        if stopped:
            click.echo(
                f"Lỗi: Đã dừng gửi: {stopped}. Các thư chưa gửi để lại cho lần chạy sau.",
                err=True,
            )
    for dispatch_id, error in report.errors:
        click.echo(f"Lỗi khi xử lý công văn mã {dispatch_id}: {error}", err=True)
    if report.errors or stopped:
        sys.exit(1)


commands = (remind_command,)
