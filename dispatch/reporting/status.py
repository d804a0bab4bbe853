"""Where a dispatch stands, as plain data: for ``dispatch status``, the web pages and the API.

``status_report`` runs a fixed number of queries whatever the number of recipients: the
dispatch, its documents, and one query for the recipients joined to their latest LETTER message,
their count of REMINDER messages sent and their count of replies and automatic replies received.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import case, func, select

from dispatch.clock import VN, format_local
from dispatch.extensions import db
from dispatch.inbound.reasons import bounce_reason
from dispatch.models import (
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
    InboundKind,
    InboundMessage,
    MessageKind,
    OutboxMessage,
)

STATUS_LABELS = {
    DispatchStatus.DRAFT: "bản nháp",
    DispatchStatus.ISSUED: "đã ban hành",
    DispatchStatus.COMPLETED: "đã hoàn thành",
    DispatchStatus.RECALLED: "đã thu hồi",
    DispatchStatus.REPLACED: "đã bị thay thế",
}
DELIVERY_LABELS = {
    None: "chưa gửi",
    "queued": "chờ gửi",
    "sent": "đã gửi",
    "retrying": "đang thử lại",
    "failed": "gửi lỗi",
    "cancelled": "đã huỷ",
    "bounced": "bị trả lại",
    "refused": "bị từ chối tiếp nhận",
}
# How far the office's own handling has got (edXML status 04, 05, 06).
PROCESSING_LABELS = {
    "assigned": "đã phân công xử lý",
    "in_progress": "đang xử lý",
    "done": "đã xử lý xong",
}


class StatusError(LookupError):
    """No such dispatch; the message is for clerks (Vietnamese)."""


def _iso(moment: dt.datetime | None) -> str | None:
    """ISO-8601 in Vietnam time ("2021-11-15T08:30:00+07:00"), for machines."""
    return None if moment is None else moment.astimezone(VN).isoformat()


def _delivery(status: DeliveryStatus | None) -> str | None:
    """A recipient's letter as the report shows it: a message being sent counts as queued."""
    if status is None:
        return None
    if status is DeliveryStatus.SENDING:
        return DeliveryStatus.QUEUED.value
    return status.value


def _recipient_rows(dispatch_id: int) -> list[Any]:
    """Each recipient with its latest letter message and its count of reminders sent: one query."""
    latest_letter = (
        select(
            OutboxMessage.recipient_id.label("recipient_id"),
            OutboxMessage.status.label("status"),
            OutboxMessage.smtp_reply.label("smtp_reply"),
            OutboxMessage.sent_at.label("sent_at"),
            OutboxMessage.last_error.label("last_error"),
            func.row_number()
            .over(
                partition_by=OutboxMessage.recipient_id,
                order_by=(OutboxMessage.sequence.desc(), OutboxMessage.id.desc()),
            )
            .label("rank"),
        )
        .where(
            OutboxMessage.dispatch_id == dispatch_id,
            OutboxMessage.kind == MessageKind.LETTER,
        )
        .subquery()
    )
    reminders = (
        select(
            OutboxMessage.recipient_id.label("recipient_id"),
            func.count().label("sent"),
        )
        .where(
            OutboxMessage.dispatch_id == dispatch_id,
            OutboxMessage.kind == MessageKind.REMINDER,
            OutboxMessage.status == DeliveryStatus.SENT,
        )
        .group_by(OutboxMessage.recipient_id)
        .subquery()
    )
    # Replies and automatic replies received about each recipient (dispatch.inbound).
    inbound = (
        select(
            InboundMessage.recipient_id.label("recipient_id"),
            func.sum(case((InboundMessage.kind == InboundKind.REPLY, 1), else_=0)).label("replies"),
            func.sum(case((InboundMessage.kind == InboundKind.AUTO_REPLY, 1), else_=0)).label(
                "auto_replies"
            ),
        )
        .where(InboundMessage.dispatch_id == dispatch_id, InboundMessage.recipient_id.is_not(None))
        .group_by(InboundMessage.recipient_id)
        .subquery()
    )
    statement = (
        select(
            DispatchRecipient,
            latest_letter.c.status,
            latest_letter.c.smtp_reply,
            latest_letter.c.sent_at,
            latest_letter.c.last_error,
            func.coalesce(reminders.c.sent, 0),
            func.coalesce(inbound.c.replies, 0),
            func.coalesce(inbound.c.auto_replies, 0),
        )
        .outerjoin(
            latest_letter,
            (latest_letter.c.recipient_id == DispatchRecipient.id) & (latest_letter.c.rank == 1),
        )
        .outerjoin(reminders, reminders.c.recipient_id == DispatchRecipient.id)
        .outerjoin(inbound, inbound.c.recipient_id == DispatchRecipient.id)
        .where(DispatchRecipient.dispatch_id == dispatch_id)
        .order_by(DispatchRecipient.province_code, DispatchRecipient.id)
    )
    return list(db.session.execute(statement).all())


def _as_status(value: Any) -> DeliveryStatus | None:
    # A column read through a subquery may come back as its plain string.
    if value is None or isinstance(value, DeliveryStatus):
        return value
    return DeliveryStatus(value)


def status_report(dispatch_id: int, *, at: dt.datetime | None = None) -> dict[str, Any]:
    """The dispatch's state and every recipient's delivery and receipt, as JSON-able data.

    ``at`` is the moment the report is for: a recipient is overdue once the deadline has passed
    at ``at`` without confirmation, or when it was marked overdue (``overdue_at``).
    """
    dispatch = db.session.get(Dispatch, dispatch_id)
    if dispatch is None:
        raise StatusError(f"Không có công văn mã {dispatch_id}.")
    documents = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch_id).order_by(Document.id)
    ).scalars()
    files = [
        {
            "kind": doc.kind,
            "filename": doc.filename,
            "media_type": doc.media_type,
            "sha256": doc.sha256,
            "size": doc.size,
        }
        for doc in documents
    ]
    deadline_passed = (
        at is not None and dispatch.deadline_at is not None and at >= dispatch.deadline_at
    )

    recipients: list[dict[str, Any]] = []
    counts = {
        "total": 0,
        "sent": 0,
        "failed": 0,
        "bounced": 0,
        "refused": 0,
        "opened": 0,
        "acknowledged": 0,
        "overdue": 0,
    }
    for (
        recipient,
        status,
        smtp_reply,
        sent_at,
        last_error,
        reminders_sent,
        replies,
        auto_replies,
    ) in _recipient_rows(dispatch_id):
        status = _as_status(status)
        # Accepted by the first server, then returned by a later one: the address bounced.
        bounced = recipient.bounced_at is not None
        refused = recipient.refused_at is not None
        delivery = "bounced" if bounced else _delivery(status)
        acknowledged = recipient.acknowledged_at is not None
        overdue = not acknowledged and (recipient.overdue_at is not None or deadline_passed)
        counts["total"] += 1
        counts["sent"] += delivery == DeliveryStatus.SENT.value
        counts["failed"] += status is DeliveryStatus.FAILED
        counts["bounced"] += bounced
        counts["refused"] += refused
        counts["opened"] += recipient.opened_at is not None
        counts["acknowledged"] += acknowledged
        counts["overdue"] += overdue
        recipients.append(
            {
                "id": recipient.id,
                "code": recipient.province_code,
                "name": recipient.name,
                "email": recipient.email,
                "cc": list(recipient.cc or []),
                "delivery": delivery,
                "smtp_reply": smtp_reply,
                "last_error": last_error,
                "sent_at": _iso(sent_at),
                "opened_at": _iso(recipient.opened_at),
                "acknowledged_at": _iso(recipient.acknowledged_at),
                "acknowledged_by": recipient.acknowledged_by,
                "acknowledged_method": (
                    recipient.acknowledged_method.value if recipient.acknowledged_method else None
                ),
                "reminders": int(reminders_sent),
                "overdue": overdue,
                "bounced_at": _iso(recipient.bounced_at),
                "bounce_reason": (
                    bounce_reason(recipient.bounce_status, recipient.bounce_diagnostic)
                    if bounced
                    else None
                ),
                "bounce_status": recipient.bounce_status if bounced else None,
                "bounce_diagnostic": recipient.bounce_diagnostic if bounced else None,
                "bounce_reporter": recipient.bounce_reporter if bounced else None,
                "refused": refused,
                "refused_at": _iso(recipient.refused_at),
                "refusal_reason": recipient.refusal_reason,
                "processing": recipient.processing_state,
                "processing_at": _iso(recipient.processing_at),
                "replies": int(replies),
                "auto_replies": int(auto_replies),
            }
        )

    pdf = next((f for f in files if f["kind"] == "pdf"), None)
    docx = next((f for f in files if f["kind"] == "docx"), None)
    return {
        "id": dispatch.id,
        "status": dispatch.status.value,
        "number": dispatch.number_and_symbol,
        "symbol": dispatch.symbol,
        "subject": dispatch.subject,
        "issued_on": dispatch.issued_on.strftime("%d/%m/%Y") if dispatch.issued_on else None,
        "issued_at": _iso(dispatch.issued_at),
        "deadline": format_local(dispatch.deadline_at) or None,
        "deadline_at": _iso(dispatch.deadline_at),
        "pdf_sha256": pdf["sha256"] if pdf else None,
        "docx_sha256": docx["sha256"] if docx else None,
        "documents": files,
        "counts": counts,
        "recipients": recipients,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a readable Vietnamese table for the terminal."""
    number = report["number"] or "(chưa có số)"
    lines = [
        f"Công văn số {number}"
        + (f" ngày {report['issued_on']}" if report["issued_on"] else "")
        + f" — {STATUS_LABELS[DispatchStatus(report['status'])]}",
        f"V/v {report['subject']}",
    ]
    if report["deadline"]:
        lines.append(f"Hạn xác nhận: {report['deadline']}")
    if report["pdf_sha256"]:
        lines.append(f"SHA-256 bản PDF: {report['pdf_sha256']}")
    c = report["counts"]
    lines.append(
        f"Tổng số nơi nhận: {c['total']} | Đã gửi: {c['sent']} | Gửi lỗi: {c['failed']} | "
        f"Bị trả lại: {c['bounced']} | Từ chối: {c['refused']} | "
        f"Đã mở: {c['opened']} | Đã xác nhận: {c['acknowledged']} | Quá hạn: {c['overdue']}"
    )
    lines.append("")
    header = ("Mã", "Cơ quan", "Thư điện tử", "Gửi thư", "Xác nhận", "Người xác nhận", "Nhắc")
    rows = [header]
    for r in report["recipients"]:
        confirmed = (
            format_local(dt.datetime.fromisoformat(r["acknowledged_at"]))
            if r["acknowledged_at"]
            else ("quá hạn" if r["overdue"] else "chưa")
        )
        delivery = DELIVERY_LABELS.get(r["delivery"], r["delivery"] or "")
        if r["delivery"] == "failed" and r["smtp_reply"]:
            delivery += f" ({r['smtp_reply'][:40]})"
        if r["delivery"] == "bounced" and r["bounce_status"]:
            delivery += f" ({r['bounce_status']})"
        if r["refused"]:
            confirmed = "từ chối tiếp nhận"
        rows.append(
            (
                r["code"],
                r["name"],
                r["email"],
                delivery,
                confirmed,
                r["acknowledged_by"] or "",
                str(r["reminders"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
