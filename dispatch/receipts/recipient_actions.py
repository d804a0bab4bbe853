"""What a clerk does for one recipient of an issued dispatch: resend the letter, correct the
address and resend, record a confirmation received by phone, stop (or resume) its reminders.

Each action writes in the caller's transaction with an audit entry naming the clerk; the caller
commits. A resend is a new LETTER row in the outbox with the next ``sequence`` for that
recipient (the unique key allows one row per sequence), so the sender sends it like any other
letter and the status report, which reads each recipient's latest LETTER row, shows its state.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from dispatch import audit
from dispatch.audit import actor_name
from dispatch.directory.addresses import parse_addresses
from dispatch.directory.edit import apply_address
from dispatch.extensions import db
from dispatch.mail import outbox
from dispatch.mail.links import assign_token
from dispatch.models import (
    AcknowledgementMethod,
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    MessageKind,
    Organisation,
    OutboxMessage,
    User,
)
from dispatch.receipts.acknowledgements import (
    AcknowledgementError,
    acknowledge,
    validate_confirmer,
)
from dispatch.text import clean_line, clean_note

# Letter e-mails not yet handed to a sender; a resend to a corrected address replaces them.
PENDING = (DeliveryStatus.QUEUED, DeliveryStatus.RETRYING)


class RecipientActionError(ValueError):
    """The action cannot be done; ``errors`` maps form fields to Vietnamese messages."""

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


@dataclass(frozen=True)
class ResendResult:
    """The new letter e-mail: its sequence and how many pending ones it replaced."""

    sequence: int
    cancelled: int


def get_recipient(dispatch_id: int, recipient_id: int) -> DispatchRecipient | None:
    """A recipient of this dispatch, or None."""
    recipient = db.session.get(DispatchRecipient, recipient_id)
    if recipient is None or recipient.dispatch_id != dispatch_id:
        return None
    return recipient


def _issued(recipient: DispatchRecipient) -> Dispatch:
    dispatch = recipient.dispatch
    if dispatch.status is DispatchStatus.DRAFT:
        raise RecipientActionError(
            "Công văn chưa ban hành: chưa có thư nào để gửi lại hay xác nhận."
        )
    if recipient.token_hash is None:
        raise RecipientActionError("Nơi nhận này chưa được cấp đường liên kết xác nhận.")
    return dispatch


def _not_confirmed(recipient: DispatchRecipient, consequence: str) -> None:
    """Refuse what only applies to an office that has not confirmed yet."""
    if recipient.acknowledged_at is not None:
        raise RecipientActionError(f"Cơ quan này đã xác nhận đã nhận công văn; {consequence}.")


def latest_letter(recipient_id: int) -> OutboxMessage | None:
    """The recipient's latest LETTER e-mail (highest sequence)."""
    return db.session.execute(
        select(OutboxMessage)
        .where(
            OutboxMessage.recipient_id == recipient_id,
            OutboxMessage.kind == MessageKind.LETTER,
        )
        .order_by(OutboxMessage.sequence.desc(), OutboxMessage.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _next_sequence(recipient_id: int) -> int:
    last = db.session.execute(
        select(func.max(OutboxMessage.sequence)).where(
            OutboxMessage.recipient_id == recipient_id,
            OutboxMessage.kind == MessageKind.LETTER,
        )
    ).scalar_one_or_none()
    return 0 if last is None else last + 1


def _cancel_pending(recipient: DispatchRecipient, reason: str) -> int:
    """Cancel the recipient's letter e-mails still waiting (not those a sender holds now)."""
    result = db.session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.recipient_id == recipient.id,
            OutboxMessage.kind == MessageKind.LETTER,
            OutboxMessage.status.in_(PENDING),
        )
        .values(status=DeliveryStatus.CANCELLED, last_error=reason, next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def _resend(
    recipient: DispatchRecipient,
    dispatch: Dispatch,
    *,
    actor: User,
    at: dt.datetime,
    **details: object,
) -> int:
    """Queue the letter again to the recipient's address (next sequence) and audit it with
    ``details``; returns the sequence. A bounce on record is cleared: the new e-mail's own
    fate (its own bounce, if it comes) decides from now on; the audit log keeps the old one."""
    if recipient.bounced_at is not None:
        details = {
            **details,
            "bounce_cleared": {
                "address": recipient.bounced_address,
                "status": recipient.bounce_status,
                "at": recipient.bounced_at.isoformat(),
            },
        }
        recipient.bounced_at = None
        recipient.bounced_address = None
        recipient.bounce_status = None
        recipient.bounce_diagnostic = None
        recipient.bounce_reporter = None
    sequence = _next_sequence(recipient.id)
    queued = outbox.enqueue(
        dispatch_id=recipient.dispatch_id,
        kind=MessageKind.LETTER,
        to_addrs=[recipient.email],
        cc_addrs=list(recipient.cc or []),
        recipient_id=recipient.id,
        sequence=sequence,
        at=at,
    )
    if not queued:  # another clerk resent at the same moment: their row stands
        raise RecipientActionError("Thư vừa được gửi lại bởi người khác; hãy tải lại trang.")
    audit.record_recipient(
        "recipient.letter_resent",
        recipient,
        actor=actor_name(actor),
        at=at,
        details={
            "sequence": sequence,
            "to": [recipient.email],
            "cc": list(recipient.cc or []),
            **details,
        },
    )
    return sequence


def resend_letter(
    recipient: DispatchRecipient, *, actor: User, at: dt.datetime, note: str | None = None
) -> ResendResult:
    """Queue the letter again for one recipient (next sequence); the caller commits."""
    dispatch = _issued(recipient)
    _not_confirmed(recipient, "không cần gửi lại")
    latest = latest_letter(recipient.id)
    if latest is not None and latest.status in (*PENDING, DeliveryStatus.SENDING):
        raise RecipientActionError(
            "Thư gửi trước đó vẫn đang chờ gửi; hãy đợi kết quả (hoặc bấm “Gửi ngay”) "
            "trước khi gửi lại."
        )
    sequence = _resend(
        recipient,
        dispatch,
        actor=actor,
        at=at,
        previous_status=latest.status.value if latest is not None else None,
        note=clean_note(note) or None,
    )
    db.session.flush()
    return ResendResult(sequence=sequence, cancelled=0)


def correct_address(
    recipient: DispatchRecipient,
    *,
    email: str,
    cc: str,
    update_directory: bool,
    actor: User,
    at: dt.datetime,
) -> ResendResult:
    """Fix a recipient's address (and, if asked, its directory record) and resend the letter.

    Letter e-mails still waiting for the old address are cancelled. A changed address gets a
    new confirmation link: whoever received the misdirected e-mail cannot confirm for the
    office, since the old link now answers 404. The caller commits.
    """
    dispatch = _issued(recipient)
    address, copies, errors = parse_addresses(email, cc)
    if errors:
        raise RecipientActionError("Địa chỉ chưa hợp lệ.", errors)
    before = {"email": recipient.email, "cc": list(recipient.cc or [])}
    after = {"email": address, "cc": copies}
    recipient.email = address
    recipient.cc = copies
    link_replaced = after != before
    if link_replaced:
        assign_token(recipient)
    cancelled = _cancel_pending(recipient, "superseded: resent to a corrected address")
    audit.record_recipient(
        "recipient.address_corrected",
        recipient,
        actor=actor_name(actor),
        at=at,
        details={
            key: {"from": before[key], "to": after[key]}
            for key in after
            if after[key] != before[key]
        }
        | {
            "cancelled_pending": cancelled,
            "directory_updated": update_directory,
            "link_replaced": link_replaced,
        },
    )
    if update_directory:
        org = db.session.get(Organisation, recipient.organisation_id)
        if org is not None:
            apply_address(org, email=address, cc=copies, actor=actor, at=at)
    db.session.flush()
    sequence = _resend(recipient, dispatch, actor=actor, at=at, reason="address")
    db.session.flush()
    return ResendResult(sequence=sequence, cancelled=cancelled)


def record_phone_confirmation(
    recipient: DispatchRecipient,
    *,
    name: str,
    position: str,
    note: str,
    actor: User,
    at: dt.datetime,
) -> Any:
    """Record a confirmation of receipt given by phone, with who confirmed and why it is
    recorded by hand (required); the clerk is the actor. The caller commits."""
    _issued(recipient)
    if recipient.acknowledged_at is not None:
        raise RecipientActionError("Nơi nhận này đã xác nhận trước đó; không ghi lại lần nữa.")
    # Everything is checked before anything is written: the note is required here only.
    errors = validate_confirmer(clean_line(name), clean_line(position), clean_note(note))
    if not clean_note(note):
        errors["note"] = (
            "Vui lòng ghi lý do, nội dung cuộc gọi (bắt buộc khi xác nhận qua điện thoại)."
        )
    if errors:
        raise RecipientActionError("Thông tin xác nhận chưa đầy đủ.", errors)
    try:
        return acknowledge(
            recipient,
            name,
            position,
            note,
            ip=None,
            user_agent=None,
            at=at,
            method=AcknowledgementMethod.PHONE,
            actor=actor_name(actor),
        )
    except AcknowledgementError as exc:
        raise RecipientActionError("Thông tin xác nhận chưa đầy đủ.", exc.errors) from exc


def set_reminders_stopped(
    recipient: DispatchRecipient, stopped: bool, *, actor: User, at: dt.datetime
) -> bool:
    """Stop (or resume) reminders to one recipient; False if it already was so. Caller commits."""
    _issued(recipient)  # refuses a draft's recipient
    if stopped:
        _not_confirmed(recipient, "hệ thống đã thôi nhắc việc")
    if recipient.reminders_stopped == stopped:
        return False
    recipient.reminders_stopped = stopped
    audit.record_recipient(
        "recipient.reminders_stopped" if stopped else "recipient.reminders_resumed",
        recipient,
        actor=actor_name(actor),
        at=at,
        details={"code": recipient.province_code},
    )
    db.session.flush()
    return True
