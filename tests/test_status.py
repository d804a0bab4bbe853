"""The status report: each recipient's delivery and receipt, the counts, a fixed query count."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import event, select

from dispatch.clock import parse_moment
from dispatch.drafting import drafts
from dispatch.extensions import db
from dispatch.mail import outbox
from dispatch.models import (
    DeliveryStatus,
    DispatchRecipient,
    MessageKind,
    OutboxMessage,
    RecipientGroup,
)
from dispatch.reporting.status import StatusError, format_report, status_report

ISSUE_AT = parse_moment("2021-11-15T08:30:00+07:00")
DRAFT_AT = parse_moment("2021-11-12T10:00:00+07:00")
RECIPIENT_KEYS = {
    "code",
    "name",
    "email",
    "delivery",
    "smtp_reply",
    "opened_at",
    "acknowledged_at",
    "acknowledged_by",
    "reminders",
}


def _recipients(dispatch_id: int) -> dict[str, DispatchRecipient]:
    rows = db.session.execute(
        select(DispatchRecipient).where(DispatchRecipient.dispatch_id == dispatch_id)
    ).scalars()
    return {r.province_code: r for r in rows}


def _letter(recipient: DispatchRecipient, sequence: int = 0) -> OutboxMessage:
    return db.session.execute(
        select(OutboxMessage).where(
            OutboxMessage.recipient_id == recipient.id,
            OutboxMessage.kind == MessageKind.LETTER,
            OutboxMessage.sequence == sequence,
        )
    ).scalar_one()


def test_a_draft_reports_its_recipients_without_delivery(seeded, letter_folder):
    dispatch = drafts.create_draft(
        letter_folder(), group_code="so-tttt-2021", actor=None, at=DRAFT_AT
    )
    db.session.commit()
    report = status_report(dispatch.id)
    assert report["status"] == "draft"
    assert report["number"] is None and report["pdf_sha256"] is None
    assert report["issued_on"] is None and report["deadline"] is None
    assert report["counts"] == {
        "total": 63,
        "sent": 0,
        "failed": 0,
        "bounced": 0,
        "refused": 0,
        "opened": 0,
        "acknowledged": 0,
        "overdue": 0,
    }
    assert {r["delivery"] for r in report["recipients"]} == {None}
    assert "(chưa có số)" in format_report(report)


def test_the_report_follows_delivery_receipt_and_reminders(issued_dispatch):
    dispatch_id = issued_dispatch(ISSUE_AT).id
    report = status_report(dispatch_id, at=ISSUE_AT)
    assert report["number"] == "01/THH-VP" and report["status"] == "issued"
    assert report["issued_on"] == "15/11/2021"
    assert report["issued_at"] == "2021-11-15T08:30:00+07:00"
    assert report["deadline"] == "18/11/2021 17:00"
    assert report["deadline_at"] == "2021-11-18T17:00:00+07:00"
    assert len(report["pdf_sha256"]) == 64
    assert {r["delivery"] for r in report["recipients"]} == {"queued"}
    assert report["counts"]["total"] == 63 and report["counts"]["sent"] == 0

    r = _recipients(dispatch_id)
    sent_at = ISSUE_AT + dt.timedelta(minutes=5)
    # What the sender records, message by message.
    letter = _letter(r["01"])
    letter.status, letter.smtp_reply, letter.sent_at = DeliveryStatus.SENT, "250 OK", sent_at
    letter = _letter(r["02"])
    letter.status, letter.smtp_reply = DeliveryStatus.FAILED, "550 5.1.1 mailbox unavailable"
    _letter(r["04"]).status = DeliveryStatus.SENDING
    _letter(r["06"]).status = DeliveryStatus.RETRYING
    # A letter that failed, then was resent (sequence 1) to a corrected address and went out.
    _letter(r["08"]).status = DeliveryStatus.FAILED
    outbox.enqueue(
        dispatch_id=dispatch_id,
        kind=MessageKind.LETTER,
        to_addrs=["sotttt@tuyenquang.gov.vn"],
        at=sent_at,
        recipient_id=r["08"].id,
        sequence=1,
    )
    db.session.flush()
    _letter(r["08"], 1).status = DeliveryStatus.SENT
    # Reminders: two sent to Cao Bằng, a third one still queued.
    for day, status in ((1, DeliveryStatus.SENT), (2, DeliveryStatus.SENT), (3, None)):
        outbox.enqueue(
            dispatch_id=dispatch_id,
            kind=MessageKind.REMINDER,
            to_addrs=[r["04"].email],
            at=sent_at,
            recipient_id=r["04"].id,
            sequence=day,
        )
        if status is not None:
            db.session.flush()
            db.session.execute(
                select(OutboxMessage).where(
                    OutboxMessage.recipient_id == r["04"].id,
                    OutboxMessage.kind == MessageKind.REMINDER,
                    OutboxMessage.sequence == day,
                )
            ).scalar_one().status = status
    # Receipts: Hà Nội opened and confirmed, Bắc Kạn opened only, Lào Cai marked overdue.
    r["01"].opened_at = ISSUE_AT + dt.timedelta(hours=1)
    r["01"].acknowledged_at = ISSUE_AT + dt.timedelta(hours=2)
    r["01"].acknowledged_by = "Nguyễn Văn Bình"
    r["06"].opened_at = ISSUE_AT + dt.timedelta(hours=3)
    r["10"].overdue_at = ISSUE_AT + dt.timedelta(days=3)
    db.session.commit()

    report = status_report(dispatch_id, at=ISSUE_AT + dt.timedelta(days=1))
    json.dumps(report, ensure_ascii=False)  # plain data
    rows = {row["code"]: row for row in report["recipients"]}
    assert all(row.keys() >= RECIPIENT_KEYS for row in rows.values())
    assert rows["01"]["delivery"] == "sent" and rows["01"]["smtp_reply"] == "250 OK"
    assert rows["01"]["acknowledged_at"] == "2021-11-15T10:30:00+07:00"
    assert rows["01"]["acknowledged_by"] == "Nguyễn Văn Bình"
    assert rows["01"]["opened_at"] == "2021-11-15T09:30:00+07:00"
    assert rows["02"]["delivery"] == "failed"
    assert rows["02"]["smtp_reply"] == "550 5.1.1 mailbox unavailable"
    assert rows["04"]["delivery"] == "queued"  # being sent shows as queued
    assert rows["04"]["reminders"] == 2
    assert rows["06"]["delivery"] == "retrying"
    assert rows["08"]["delivery"] == "sent"  # the latest letter message counts
    assert rows["10"]["overdue"] and not rows["02"]["overdue"]
    assert rows["95"]["name"] == "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"
    assert report["counts"] == {
        "total": 63,
        "sent": 2,
        "failed": 1,
        "bounced": 0,
        "refused": 0,
        "opened": 2,
        "acknowledged": 1,
        "overdue": 1,
    }

    # After the deadline, everyone who has not confirmed is overdue.
    late = status_report(dispatch_id, at=parse_moment("2021-11-18T17:00:00+07:00"))
    assert late["counts"]["overdue"] == 62

    table = format_report(late)
    assert table.splitlines()[0] == "Công văn số 01/THH-VP ngày 15/11/2021 — đã ban hành"
    assert "Đã xác nhận: 1" in table and "Quá hạn: 62" in table
    assert "Nguyễn Văn Bình" in table
    assert "gửi lỗi (550 5.1.1 mailbox unavailable)" in table


def test_the_report_costs_the_same_few_queries_for_3_or_63_recipients(seeded, issued_dispatch):
    small = RecipientGroup(code="thu-nghiem", name="Nhóm thử nghiệm")
    small.members = seeded.offices[:3]
    db.session.add(small)
    db.session.commit()
    big_id = issued_dispatch(ISSUE_AT).id
    small_id = issued_dispatch(ISSUE_AT, group_code="thu-nghiem").id

    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    def queries_for(dispatch_id: int) -> int:
        db.session.expire_all()
        statements.clear()
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            report = status_report(dispatch_id, at=ISSUE_AT)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert report["counts"]["total"] in (3, 63)
        return len(statements)

    assert queries_for(big_id) == queries_for(small_id) == 3


def test_an_unknown_dispatch_is_reported_in_vietnamese(db_app):
    with pytest.raises(StatusError, match="Không có công văn mã 404"):
        status_report(404)
