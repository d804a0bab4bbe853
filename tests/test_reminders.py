"""Reminders and escalation: what is due at a given moment, once, on a real database."""

from __future__ import annotations

import datetime as dt
import os
import threading

import pytest
from sqlalchemy import func, select, update

from dispatch.audit import verify_chain
from dispatch.clock import VN
from dispatch.extensions import db
from dispatch.models import (
    AuditEntry,
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    MessageKind,
    OutboxMessage,
)
from dispatch.receipts.reminders import escalation_addresses, send_due_reminders
from tests.fixtures.reminders import CLERK_EMAIL
from tests.fixtures.smtp import CLERK

CLERK_ADDRESS = CLERK[0]

on_postgres = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgres"),
    reason="needs PostgreSQL (TEST_DATABASE_URL)",
)


def vn(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=VN)


def reminders(dispatch_id: int, sequence: int | None = None) -> list[OutboxMessage]:
    query = select(OutboxMessage).where(
        OutboxMessage.dispatch_id == dispatch_id, OutboxMessage.kind == MessageKind.REMINDER
    )
    if sequence is not None:
        query = query.where(OutboxMessage.sequence == sequence)
    return list(db.session.execute(query.order_by(OutboxMessage.id)).scalars())


def escalations(dispatch_id: int) -> list[OutboxMessage]:
    query = select(OutboxMessage).where(
        OutboxMessage.dispatch_id == dispatch_id, OutboxMessage.kind == MessageKind.ESCALATION
    )
    return list(db.session.execute(query).scalars())


def codes_of(messages: list[OutboxMessage]) -> list[str]:
    return sorted(m.recipient.province_code for m in messages)


def test_first_working_day_reminds_each_unconfirmed_recipient_once(reminder_dispatch):
    dispatch = reminder_dispatch(12, acknowledged={0, 3, 7})
    report = send_due_reminders(vn(2021, 11, 16, 9))

    assert report.reminders_queued == 9
    assert report.escalations_queued == 0
    rows = reminders(dispatch.id)
    assert codes_of(rows) == ["02", "03", "05", "06", "07", "09", "10", "11", "12"]
    assert {m.sequence for m in rows} == {1}
    assert all(m.status == DeliveryStatus.QUEUED for m in rows)
    by_code = {m.recipient.province_code: m for m in rows}
    assert by_code["02"].to_addrs == ["so02@example.vn"]
    assert by_code["11"].cc_addrs == ["vanthu11@example.vn"]  # the office's cc comes along
    assert by_code["02"].next_attempt_at == vn(2021, 11, 16, 9)

    # The audit tells who was reminded, when, for which working day.
    entry = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "reminder.queued")
    ).scalar_one()
    assert entry.dispatch_id == dispatch.id
    assert entry.at == vn(2021, 11, 16, 9)
    assert entry.details["day"] == 1
    assert sorted(r["code"] for r in entry.details["recipients"]) == codes_of(rows)
    assert verify_chain() == []


def test_same_hour_and_later_that_day_send_nothing_more(reminder_dispatch):
    dispatch = reminder_dispatch(5, acknowledged={1})
    assert send_due_reminders(vn(2021, 11, 16, 9)).reminders_queued == 4
    again = send_due_reminders(vn(2021, 11, 16, 9))
    assert again.reminders_queued == 0
    assert again.already_reminded == 4
    assert send_due_reminders(vn(2021, 11, 16, 9, 45)).reminders_queued == 0
    assert send_due_reminders(vn(2021, 11, 16, 16, 59)).reminders_queued == 0
    assert len(reminders(dispatch.id)) == 4
    # A rerun that queued nothing writes no audit entry.
    count = db.session.execute(
        select(func.count()).where(AuditEntry.action == "reminder.queued")
    ).scalar_one()
    assert count == 1


def test_nothing_before_the_reminder_hour_or_on_the_day_of_issuing(reminder_dispatch):
    dispatch = reminder_dispatch(4)
    assert send_due_reminders(vn(2021, 11, 15, 16)).reminders_queued == 0
    assert send_due_reminders(vn(2021, 11, 16, 7, 59)).reminders_queued == 0
    assert reminders(dispatch.id) == []
    assert send_due_reminders(vn(2021, 11, 16, 8, 0)).reminders_queued == 4


def test_reminder_hour_is_per_dispatch(reminder_dispatch):
    dispatch = reminder_dispatch(3)
    dispatch.reminder_hour = 10
    db.session.commit()
    assert send_due_reminders(vn(2021, 11, 16, 9, 59)).reminders_queued == 0
    assert send_due_reminders(vn(2021, 11, 16, 10)).reminders_queued == 3


def test_next_working_day_sends_the_next_round(reminder_dispatch):
    dispatch = reminder_dispatch(6, acknowledged={0})
    send_due_reminders(vn(2021, 11, 16, 9))
    # Two more confirm during day 1.
    for recipient in dispatch.recipients[1:3]:
        recipient.acknowledged_at = vn(2021, 11, 16, 14)
    db.session.commit()

    assert send_due_reminders(vn(2021, 11, 17, 7)).reminders_queued == 0  # still day 1
    report = send_due_reminders(vn(2021, 11, 17, 8, 5))
    assert report.reminders_queued == 3
    assert codes_of(reminders(dispatch.id, 2)) == ["04", "05", "06"]
    assert send_due_reminders(vn(2021, 11, 17, 15)).reminders_queued == 0
    assert len(reminders(dispatch.id, 1)) == 5
    report = send_due_reminders(vn(2021, 11, 18, 8, 5))
    assert codes_of(reminders(dispatch.id, 3)) == ["04", "05", "06"]


def test_no_reminders_on_a_weekend(reminder_dispatch):
    # Issued Thursday 18/11: day 1 is Friday 19/11, day 2 Monday 22/11.
    dispatch = reminder_dispatch(3, issued_at=vn(2021, 11, 18, 10))
    assert send_due_reminders(vn(2021, 11, 19, 9)).reminders_queued == 3
    assert send_due_reminders(vn(2021, 11, 20, 9)).reminders_queued == 0  # Saturday
    assert send_due_reminders(vn(2021, 11, 21, 9)).reminders_queued == 0  # Sunday
    assert send_due_reminders(vn(2021, 11, 22, 9)).reminders_queued == 3
    assert [m.sequence for m in reminders(dispatch.id)] == [1, 1, 1, 2, 2, 2]


def test_scheduler_down_for_days_sends_one_catch_up(reminder_dispatch):
    dispatch = reminder_dispatch(4, acknowledged={3})
    assert send_due_reminders(vn(2021, 11, 16, 9)).reminders_queued == 3
    # Down on Wednesday 17/11; back on Thursday 18/11 10:00: day 3 only, never day 2.
    assert send_due_reminders(vn(2021, 11, 18, 10)).reminders_queued == 3
    assert reminders(dispatch.id, 2) == []
    assert len(reminders(dispatch.id, 3)) == 3
    for recipient in dispatch.recipients[:3]:
        count = sum(1 for m in recipient.messages if m.kind == MessageKind.REMINDER)
        assert count == 2


def test_scheduler_down_from_the_start_sends_one_reminder(reminder_dispatch):
    dispatch = reminder_dispatch(3)
    assert send_due_reminders(vn(2021, 11, 18, 9)).reminders_queued == 3
    assert [m.sequence for m in reminders(dispatch.id)] == [3, 3, 3]


def test_at_most_three_reminders_in_all(reminder_dispatch):
    dispatch = reminder_dispatch(2)
    moment = vn(2021, 11, 15, 0)
    while moment < vn(2021, 11, 26):
        send_due_reminders(moment)
        moment += dt.timedelta(minutes=55)
    assert [m.sequence for m in reminders(dispatch.id)] == [1, 1, 2, 2, 3, 3]
    assert len(escalations(dispatch.id)) == 1


def test_after_the_deadline_one_escalation_and_no_more_reminders(reminder_dispatch, db_app):
    dispatch = reminder_dispatch(8, acknowledged={0, 1})
    send_due_reminders(vn(2021, 11, 16, 9))
    dispatch.recipients[2].acknowledged_at = vn(2021, 11, 18, 11)
    db.session.commit()

    # One minute before the deadline it is still day 3: its reminders go, no escalation yet.
    before = send_due_reminders(vn(2021, 11, 18, 16, 59))
    assert before.escalations_queued == 0
    assert before.reminders_queued == 5
    report = send_due_reminders(vn(2021, 11, 18, 17, 0))
    assert report.escalations_queued == 1
    assert report.reminders_queued == 0
    assert sorted(report.outcomes[0].overdue) == ["04", "05", "06", "07", "08"]

    db.session.expire_all()
    dispatch = db.session.get(Dispatch, dispatch.id)
    assert dispatch.escalated_at == vn(2021, 11, 18, 17)
    assert dispatch.status == DispatchStatus.ISSUED
    overdue = {r.province_code: r.overdue_at for r in dispatch.recipients}
    assert overdue["01"] is None and overdue["03"] is None
    assert all(overdue[c] == vn(2021, 11, 18, 17) for c in ("04", "05", "06", "07", "08"))
    [escalation] = escalations(dispatch.id)
    assert escalation.recipient_id is None
    assert escalation.sequence == 0
    assert escalation.to_addrs == [db_app.config["MAIL_DEFAULT_SENDER"]]
    assert escalation.cc_addrs == [CLERK_EMAIL]

    for moment in (vn(2021, 11, 18, 17, 10), vn(2021, 11, 19, 9), vn(2021, 11, 22, 9)):
        later = send_due_reminders(moment)
        assert later.escalations_queued == 0
        assert later.reminders_queued == 0
    assert len(escalations(dispatch.id)) == 1
    assert {m.sequence for m in reminders(dispatch.id)} == {1, 3}

    entry = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "dispatch.escalated")
    ).scalar_one()
    assert [r["code"] for r in entry.details["overdue"]] == ["04", "05", "06", "07", "08"]
    assert verify_chain() == []


def test_late_scheduler_escalates_once_and_marks_overdue_at_the_deadline(reminder_dispatch):
    dispatch = reminder_dispatch(3)
    report = send_due_reminders(vn(2021, 11, 23, 10))  # days after the deadline
    assert report.escalations_queued == 1
    assert report.reminders_queued == 0
    db.session.expire_all()
    recipients = db.session.get(Dispatch, dispatch.id).recipients
    assert {r.overdue_at for r in recipients} == {vn(2021, 11, 18, 17)}


def test_escalation_addresses(reminder_dispatch, db_app):
    dispatch = reminder_dispatch(1)
    sender = db_app.config["MAIL_DEFAULT_SENDER"]
    # No leadership mailbox configured: the agency's own mailbox, the clerk in copy.
    assert escalation_addresses(dispatch) == ([sender], [CLERK_EMAIL])

    db_app.config["DISPATCH_LEADERSHIP_EMAIL"] = (
        "Lãnh đạo Cục <lanhdao@thh.example>, pho-cuc@thh.example"
    )
    assert escalation_addresses(dispatch) == (
        ["lanhdao@thh.example", "pho-cuc@thh.example"],
        [CLERK_EMAIL],
    )

    db_app.config["DISPATCH_LEADERSHIP_EMAIL"] = CLERK_EMAIL.upper()
    assert escalation_addresses(dispatch) == ([CLERK_EMAIL.upper()], [])  # once

    db_app.config["DISPATCH_LEADERSHIP_EMAIL"] = None
    db_app.config["MAIL_DEFAULT_SENDER"] = ("Văn thư Cục", "vt@thh.example")
    unsigned = reminder_dispatch(1, number=2, clerk_email=None)
    assert escalation_addresses(unsigned) == (["vt@thh.example"], [])


def test_escalation_without_a_clerk_goes_to_leadership(reminder_dispatch, db_app):
    db_app.config["DISPATCH_LEADERSHIP_EMAIL"] = "lanhdao@thh.example"
    dispatch = reminder_dispatch(2, clerk_email=None)
    send_due_reminders(vn(2021, 11, 19, 9))
    [escalation] = escalations(dispatch.id)
    assert escalation.to_addrs == ["lanhdao@thh.example"]
    assert escalation.cc_addrs == []


def test_stopped_reminders_are_respected(reminder_dispatch):
    dispatch = reminder_dispatch(5, stopped={1, 4})
    assert send_due_reminders(vn(2021, 11, 16, 9)).reminders_queued == 3
    assert codes_of(reminders(dispatch.id)) == ["01", "03", "04"]
    # Stopped reminders do not excuse the delay: still overdue at the deadline.
    report = send_due_reminders(vn(2021, 11, 18, 17))
    assert sorted(report.outcomes[0].overdue) == ["01", "02", "03", "04", "05"]


def test_a_letter_never_accepted_is_not_reminded_but_counted(reminder_dispatch):
    dispatch = reminder_dispatch(6, unsent={2, 5}, acknowledged={0})
    report = send_due_reminders(vn(2021, 11, 16, 9))
    assert report.reminders_queued == 3
    assert report.not_delivered == 2
    assert codes_of(reminders(dispatch.id)) == ["02", "04", "05"]


def test_a_resent_letter_that_was_accepted_counts(reminder_dispatch):
    from dispatch.mail import outbox

    dispatch = reminder_dispatch(2, unsent={1})
    recipient = dispatch.recipients[1]
    outbox.enqueue(
        dispatch_id=dispatch.id,
        kind=MessageKind.LETTER,
        to_addrs=["moi@example.vn"],
        at=vn(2021, 11, 15, 15),
        recipient_id=recipient.id,
        sequence=1,
    )
    db.session.execute(
        OutboxMessage.__table__.update()
        .where(OutboxMessage.recipient_id == recipient.id, OutboxMessage.sequence == 1)
        .values(status=DeliveryStatus.SENT.value)
    )
    db.session.commit()
    assert send_due_reminders(vn(2021, 11, 16, 9)).reminders_queued == 2


def test_all_confirmed_completes_the_dispatch(reminder_dispatch):
    dispatch = reminder_dispatch(3, acknowledged={0, 1})
    assert send_due_reminders(vn(2021, 11, 16, 9)).reminders_queued == 1
    dispatch.recipients[2].acknowledged_at = vn(2021, 11, 16, 10)
    db.session.commit()

    report = send_due_reminders(vn(2021, 11, 16, 10, 5))
    assert report.completed == 1
    db.session.expire_all()
    assert db.session.get(Dispatch, dispatch.id).status == DispatchStatus.COMPLETED
    assert send_due_reminders(vn(2021, 11, 17, 9)).reminders_queued == 0
    assert send_due_reminders(vn(2021, 11, 19, 9)).escalations_queued == 0
    completed = db.session.execute(
        select(func.count()).where(AuditEntry.action == "dispatch.completed")
    ).scalar_one()
    assert completed == 1


def test_disabled_reminders_and_drafts_are_left_alone(reminder_dispatch):
    quiet = reminder_dispatch(2, reminders_enabled=False)
    draft = reminder_dispatch(2, number=2)
    # Back to draft under the guard's nose: letters sent, yet a draft, so only its status can
    # be what keeps it quiet.
    db.session.execute(
        update(Dispatch).where(Dispatch.id == draft.id).values(status=DispatchStatus.DRAFT)
    )
    db.session.commit()
    report = send_due_reminders(vn(2021, 11, 16, 9))
    assert report.reminders_queued == 0
    assert send_due_reminders(vn(2021, 11, 22, 9)).escalations_queued == 0
    assert reminders(quiet.id) == [] and reminders(draft.id) == []
    assert escalations(quiet.id) == []


def test_several_dispatches_each_on_their_own_calendar(reminder_dispatch):
    first = reminder_dispatch(2)  # Monday 15/11
    second = reminder_dispatch(3, number=2, issued_at=vn(2021, 11, 17, 9))  # Wednesday
    report = send_due_reminders(vn(2021, 11, 18, 9))
    assert report.reminders_queued == 5
    assert {m.sequence for m in reminders(first.id)} == {3}
    assert {m.sequence for m in reminders(second.id)} == {1}


def test_naive_moment_is_refused(db_app):
    with pytest.raises(ValueError):
        send_due_reminders(dt.datetime(2021, 11, 16, 9))


@on_postgres
@pytest.mark.postgres
def test_two_runs_at_once_queue_one_reminder_each(reminder_dispatch, db_app):
    dispatch = reminder_dispatch(40, acknowledged={0, 1, 2})
    dispatch_id = dispatch.id
    db.session.remove()
    barrier = threading.Barrier(2)
    reports, errors = [], []

    def run() -> None:
        try:
            with db_app.app_context():
                barrier.wait(timeout=30)
                reports.append(send_due_reminders(vn(2021, 11, 16, 9)))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(reports) == 2
    assert sum(r.reminders_queued for r in reports) == 37
    assert sum(r.already_reminded for r in reports) == 37
    rows = reminders(dispatch_id)
    assert len(rows) == 37
    assert len({m.recipient_id for m in rows}) == 37
    assert (
        db.session.execute(
            select(func.count()).where(AuditEntry.action == "reminder.queued")
        ).scalar_one()
        == 1
    )
    assert verify_chain() == []


@on_postgres
@pytest.mark.postgres
def test_two_runs_at_once_after_the_deadline_escalate_once(reminder_dispatch, db_app):
    dispatch = reminder_dispatch(10, acknowledged={0})
    dispatch_id = dispatch.id
    db.session.remove()
    barrier = threading.Barrier(2)
    reports, errors = [], []

    def run() -> None:
        try:
            with db_app.app_context():
                barrier.wait(timeout=30)
                reports.append(send_due_reminders(vn(2021, 11, 18, 17, 30)))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sum(r.escalations_queued for r in reports) == 1
    assert sum(r.overdue_marked for r in reports) == 9
    assert len(escalations(dispatch_id)) == 1
    overdue = db.session.execute(
        select(func.count()).where(
            DispatchRecipient.dispatch_id == dispatch_id, DispatchRecipient.overdue_at.is_not(None)
        )
    ).scalar_one()
    assert overdue == 9


# --- From the CLI, through a real SMTP server ---------------------------------------------


def _deliver_letters_and_confirm(dispatch: Dispatch, confirmed: int) -> set[str]:
    """Send the queued letters, confirm the first ``confirmed`` offices; their addresses."""
    from dispatch.mail.sender import deliver_due
    from dispatch.receipts.acknowledgements import acknowledge

    report = deliver_due(vn(2021, 11, 15, 8, 31))
    assert report.sent == len(dispatch.recipients)
    addresses = set()
    for recipient in dispatch.recipients[:confirmed]:
        acknowledge(
            recipient,
            "Nguyễn Văn An",
            "Chánh Văn phòng",
            None,
            "127.0.0.1",
            "pytest",
            at=vn(2021, 11, 15, 14),
        )
        addresses.add(recipient.email)
    db.session.commit()
    return addresses


def test_remind_command_sends_exactly_the_expected_reminders(
    smtp_app, smtp_server, outbox_dispatch
):
    dispatch = outbox_dispatch(63)
    dispatch_id = dispatch.id
    confirmed = _deliver_letters_and_confirm(dispatch, 10)
    letters = len(smtp_server.messages)
    assert letters == 63
    runner = smtp_app.test_cli_runner()

    result = runner.invoke(args=["remind", "--at", "2021-11-16T09:00:00+07:00"])
    assert result.exit_code == 0, result.output
    assert "Số nhắc việc đã xếp gửi: 53" in result.output
    assert "Thư đã gửi: 53" in result.output
    sent = smtp_server.messages[letters:]
    assert len(sent) == 53
    recipients = [address for m in sent for address in m.rcpt_tos]
    assert len(set(recipients)) == 53
    assert not confirmed & set(recipients)
    assert all(m.email["Subject"].startswith("Nhắc") for m in sent)
    assert all("01/THH-VP" in m.email["Subject"] for m in sent)

    # Again at the same hour, and later that day: nothing.
    for moment in ("2021-11-16T09:00:00+07:00", "2021-11-16T15:30:00+07:00"):
        result = runner.invoke(args=["remind", "--at", moment])
        assert result.exit_code == 0, result.output
        assert "Số nhắc việc đã xếp gửi: 0" in result.output
    assert len(smtp_server.messages) == letters + 53

    # The next working day: the next round, to the same 53.
    result = runner.invoke(args=["remind", "--at", "2021-11-17T08:00:00+07:00"])
    assert "Số nhắc việc đã xếp gửi: 53" in result.output
    assert len(smtp_server.messages) == letters + 106

    # After the deadline: one escalation, to the clerk and leadership, and no reminder.
    result = runner.invoke(args=["remind", "--at", "2021-11-18T17:05:00+07:00"])
    assert result.exit_code == 0, result.output
    assert "Số nhắc việc đã xếp gửi: 0" in result.output
    assert "Số báo cáo quá hạn đã xếp gửi: 1" in result.output
    assert "Số đơn vị quá hạn: 53" in result.output
    [escalation] = smtp_server.messages[letters + 106 :]
    assert sorted(escalation.rcpt_tos) == sorted(
        [CLERK_ADDRESS, smtp_app.config["MAIL_DEFAULT_SENDER"]]
    )
    assert escalation.email["Subject"].startswith("Quá hạn")
    result = runner.invoke(args=["remind", "--at", "2021-11-19T09:00:00+07:00"])
    assert "Số báo cáo quá hạn đã xếp gửi: 0" in result.output
    assert len(smtp_server.messages) == letters + 107
    assert len(escalations(dispatch_id)) == 1


def test_remind_command_in_its_own_process(smtp_app, smtp_server, outbox_dispatch, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    dispatch = outbox_dispatch(5)
    _deliver_letters_and_confirm(dispatch, 2)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=smtp_app.config["SQLALCHEMY_DATABASE_URI"],
        DISPATCH_INSTANCE_PATH=str(tmp_path / "instance"),
        DISPATCH_DATA_DIR=smtp_app.config["DISPATCH_DATA_DIR"],
        SECRET_KEY=smtp_app.config["SECRET_KEY"],
        DISPATCH_AUDIT_KEY=smtp_app.config["DISPATCH_AUDIT_KEY"],
        **smtp_server.environ(),
    )
    command = [str(Path(sys.executable).with_name("dispatch")), "remind"]
    result = subprocess.run(
        [*command, "--at", "2021-11-16T09:00:00+07:00"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Số nhắc việc đã xếp gửi: 3" in result.stdout
    assert len(smtp_server.messages) == 5 + 3
    bad = subprocess.run(
        [*command, "--at", "hôm qua"], env=env, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert "thời điểm không hợp lệ" in bad.stderr


def test_remind_command_names_a_malformed_extra_holiday(db_app):
    db_app.config["DISPATCH_EXTRA_HOLIDAYS"] = "2021-11-16,16/11/2021"
    result = db_app.test_cli_runner().invoke(args=["remind", "--at", "2021-11-16T09:00:00+07:00"])
    assert result.exit_code == 1
    assert "DISPATCH_EXTRA_HOLIDAYS" in result.output
    assert "'16/11/2021' không phải là ngày" in result.output


def test_configured_holiday_moves_the_reminder(reminder_dispatch, db_app):
    # 16/11/2021 declared a day off: day 1 becomes Wednesday 17/11.
    db_app.config["DISPATCH_EXTRA_HOLIDAYS"] = "2021-11-16"
    dispatch = reminder_dispatch(2)
    assert send_due_reminders(vn(2021, 11, 16, 9)).reminders_queued == 0
    assert send_due_reminders(vn(2021, 11, 17, 9)).reminders_queued == 2
    assert {m.sequence for m in reminders(dispatch.id)} == {1}
