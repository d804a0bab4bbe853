"""The one handler behind the three doors: keep, classify, match and record an inbound message.

``handle_message`` writes in the caller's transaction (the caller commits), so the message's
row, what it changes and their audit entries commit together. It is safe to call twice with the
same bytes: the message is kept under the SHA-256 of its bytes and its row is unique by it, so
the second call (a poller killed before it filed the message, a relay that retried) changes
nothing and says so.

What ties a message to what we sent, most certain first:

* **VERP**: it was addressed to one of our bounce addresses (``bounces+<token>@…``, the envelope
  recipient the door saw, else Delivered-To, X-Original-To or To): the token names the row.
* **The returned message's Message-ID** (a DSN's headers part).
* **In-Reply-To, then References**: a reply to one of our e-mails.

Nothing is guessed from the sender's address. A message tied to nothing is kept all the same,
and listed for an admin (``unmatched``).

What each kind does:

* a bounce (``failed``) of a recipient's current address: the e-mail becomes ``bounced`` and
  the recipient too (status code, diagnostic, reporting server), its queued reminders are
  cancelled; a late bounce of an address since corrected, or of a copy (Cc), is only noted;
* a delay (``delayed``) or a success report is noted: nothing changes state;
* an automatic reply is recorded and never counts as a confirmation;
* a person's reply is attached to the recipient's history, for the clerk, who may mark it as the
  office's confirmation (``mark_reply_as_confirmation``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from dispatch import audit
from dispatch.archive import keep_inbound
from dispatch.audit import actor_name
from dispatch.extensions import db
from dispatch.inbound.classify import Classified, RecipientReport, classify
from dispatch.inbound.reasons import bounce_reason
from dispatch.mail.verp import token_in
from dispatch.models import (
    AcknowledgementMethod,
    DeliveryStatus,
    DispatchRecipient,
    InboundKind,
    InboundMessage,
    MessageKind,
    OutboxMessage,
    User,
)
from dispatch.receipts.acknowledgements import AcknowledgementError, AckResult, acknowledge

ACTOR = "system"
DOORS = ("imap", "smtp", "file", "api")
_PENDING = (DeliveryStatus.QUEUED, DeliveryStatus.RETRYING)


class InboundError(ValueError):
    """An inbound message cannot be handled as asked; the message is for clerks (Vietnamese)."""


@dataclass(frozen=True)
class InboundResult:
    """What handling one message did."""

    inbound_id: int
    duplicate: bool  # the same bytes were handled before: nothing changed
    kind: InboundKind
    matched_by: str | None
    recipient_id: int | None
    bounced: bool = False  # a recipient became bounced


def _clip(value: str | None, limit: int) -> str | None:
    return None if value is None else value[:limit]


def _bare(address: str | None) -> str:
    return (parseaddr(address or "")[1] or address or "").strip().lower()


def _verp_token(envelope_to: Sequence[str], classified: Classified) -> str | None:
    config = current_app.config
    for address in [*envelope_to, *classified.addressed_to]:
        token = token_in(address, config)
        if token is not None:
            return token
    return None


def _match(token: str | None, classified: Classified) -> tuple[OutboxMessage | None, str | None]:
    """The outbox row the message is about, and how it was found."""
    if token is not None:
        row = db.session.execute(
            select(OutboxMessage).where(OutboxMessage.bounce_token == token)
        ).scalar_one_or_none()
        if row is not None:
            return row, "verp"
    for message_id in classified.refers_to:
        row = db.session.execute(
            select(OutboxMessage).where(OutboxMessage.message_id == message_id)
        ).scalar_one_or_none()
        if row is not None:
            return row, classified.refers_by[message_id]
    return None, None


def _report_for(row: OutboxMessage | None, classified: Classified) -> RecipientReport | None:
    """The per-recipient report about ``row``'s addresses (a failed one first); with no row, the
    first failure."""
    wanted = {_bare(a) for a in (row.to_addrs + list(row.cc_addrs or []))} if row else set()
    ordered = classified.failed + [r for r in classified.reports if r.action != "failed"]
    for report in ordered:
        if not wanted or _bare(report.recipient) in wanted:
            return report
    # A VERP-matched message has one primary address: a report that names it differently (an
    # alias expanded on the way) is still about it.
    return ordered[0] if ordered and row is not None else None


def record_inbound(
    values: dict, *, actor: str, at: dt.datetime, details: dict
) -> tuple[int, InboundMessage | None]:
    """INSERT the inbound row and its "inbound.received" audit entry (its door, kind, SHA-256,
    archive path and ``details``), unless its SHA-256 is known: then nothing is written.

    Returns the row's id and, when another door kept the same bytes at this very moment, that
    earlier row (None when this call inserted it).
    """
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    table = InboundMessage.__table__
    statement = (
        dialect.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["sha256"])
        .returning(table.c.id)
    )
    inbound_id = db.session.execute(statement).scalar_one_or_none()
    if inbound_id is None:
        again = db.session.execute(
            select(InboundMessage).where(InboundMessage.sha256 == values["sha256"])
        ).scalar_one()
        return again.id, again
    audit.record(
        "inbound.received",
        actor=actor,
        at=at,
        object_type="inbound_message",
        object_id=inbound_id,
        dispatch_id=values.get("dispatch_id"),
        details={
            "door": values["door"],
            "kind": values["kind"].value,
            "sha256": values["sha256"],
            "archive_path": values["archive_path"],
            **details,
        },
    )
    return inbound_id, None


def _mark_bounced(
    row: OutboxMessage,
    report: RecipientReport,
    classified: Classified,
    inbound_id: int,
    at: dt.datetime,
) -> bool:
    """Record a failed delivery on its e-mail and, for the recipient's current address, on the
    recipient; True when the recipient became bounced."""
    failed = _bare(report.recipient)
    primary = {_bare(a) for a in row.to_addrs}
    diagnostic = report.diagnostic or classified.subject or ""
    is_copy = bool(failed) and failed not in primary
    if row.status is DeliveryStatus.SENT and not is_copy:
        row.status = DeliveryStatus.BOUNCED
        row.last_error = _clip(f"{report.status or ''} {diagnostic}".strip(), 4000)
    audit.record(
        "message.bounced",
        actor=ACTOR,
        at=at,
        object_type="outbox_message",
        object_id=row.id,
        dispatch_id=row.dispatch_id,
        details={
            "inbound_id": inbound_id,
            "address": report.recipient,
            "copy": is_copy,
            "status": report.status,
            "diagnostic": report.diagnostic,
            "reporting_mta": classified.reporting_mta,
            "standard": classified.standard,
        },
    )
    recipient = db.session.get(DispatchRecipient, row.recipient_id) if row.recipient_id else None
    if (
        recipient is None
        or is_copy
        or row.kind not in (MessageKind.LETTER, MessageKind.REMINDER)
        or _bare(recipient.email) not in (primary if not failed else {failed})
    ):
        return False  # a copy, an escalation, or an address corrected since: noted only
    recipient.bounced_at = at
    recipient.bounced_address = _clip(failed or _bare(recipient.email), 254)
    recipient.bounce_status = _clip(report.status, 20)
    recipient.bounce_diagnostic = report.diagnostic or diagnostic or None
    recipient.bounce_reporter = _clip(classified.reporting_mta or report.remote_mta, 255)
    cancelled = db.session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.recipient_id == recipient.id,
            OutboxMessage.kind == MessageKind.REMINDER,
            OutboxMessage.status.in_(_PENDING),
        )
        .values(
            status=DeliveryStatus.CANCELLED,
            last_error="the address bounced",
            next_attempt_at=None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    audit.record_recipient(
        "recipient.bounced",
        recipient,
        actor=ACTOR,
        at=at,
        details={
            "inbound_id": inbound_id,
            "outbox_message_id": row.id,
            "address": recipient.bounced_address,
            "status": recipient.bounce_status,
            "reason": bounce_reason(recipient.bounce_status, recipient.bounce_diagnostic),
            "diagnostic": recipient.bounce_diagnostic,
            "reporting_mta": recipient.bounce_reporter,
            "reminders_cancelled": cancelled or 0,
        },
    )
    return True


def handle_message(
    raw: bytes,
    *,
    door: str,
    at: dt.datetime,
    envelope_from: str | None = None,
    envelope_to: Sequence[str] = (),
) -> InboundResult:
    """Keep, classify, match and record one inbound message once; the caller commits.

    ``door``: "imap", "smtp" or "file". ``envelope_from`` and ``envelope_to``: the SMTP envelope
    when the door knows it ('' for a bounce's null sender).
    """
    if door not in DOORS:
        raise InboundError(f"cửa nhận thư không hợp lệ: {door!r}")
    if not raw.strip():
        raise InboundError("thư rỗng, không có gì để xử lý")
    sha256 = hashlib.sha256(raw).hexdigest()
    known = db.session.execute(
        select(
            InboundMessage.id,
            InboundMessage.kind,
            InboundMessage.matched_by,
            InboundMessage.recipient_id,
        ).where(InboundMessage.sha256 == sha256)
    ).first()
    if known is not None:
        return InboundResult(
            known.id, True, InboundKind(known.kind), known.matched_by, known.recipient_id
        )

    classified_first = classify(raw, envelope_from=envelope_from)
    token = _verp_token(envelope_to, classified_first)
    classified = (
        classify(raw, envelope_from=envelope_from, to_bounce_address=True)
        if token is not None and not classified_first.reports
        else classified_first
    )
    row, matched_by = _match(token, classified)
    report = _report_for(row, classified) if classified.reports else None
    path = keep_inbound(raw, sha256, at)
    recipient_id = row.recipient_id if row is not None else None
    inbound_id, again = record_inbound(
        {
            "received_at": at,
            "door": door,
            "sha256": sha256,
            "size": len(raw),
            "archive_path": path,
            "envelope_from": _clip(envelope_from, 254),
            "envelope_to": [a[:254] for a in envelope_to][:20],
            "header_message_id": _clip(classified.message_id, 500),
            "from_address": _clip(classified.from_address, 254),
            "from_name": _clip(classified.from_name, 200),
            "subject": _clip(classified.subject, 500),
            "kind": classified.kind,
            "matched_by": matched_by,
            "outbox_message_id": row.id if row is not None else None,
            "recipient_id": recipient_id,
            "dispatch_id": row.dispatch_id if row is not None else None,
            "dsn_status": _clip(report.status, 20) if report else None,
            "diagnostic": report.diagnostic if report else None,
            "reporting_mta": _clip(classified.reporting_mta or (report and report.remote_mta), 255),
            "failed_recipient": _clip(report.recipient, 254) if report else None,
            "excerpt": classified.excerpt,
            "details": {
                "standard_dsn": classified.standard,
                "auto_reason": classified.auto_reason,
                "reports": [
                    {"action": r.action, "recipient": r.recipient, "status": r.status}
                    for r in classified.reports[:50]
                ],
            },
        },
        actor=ACTOR,
        at=at,
        details={
            "message_id": classified.message_id,
            "from": classified.from_address,
            "subject": classified.subject,
            "matched_by": matched_by,
            "outbox_message_id": row.id if row is not None else None,
            "recipient_id": recipient_id,
        },
    )
    if again is not None:  # handled at this very moment by another door
        return InboundResult(again.id, True, again.kind, again.matched_by, again.recipient_id)
    bounced = False
    if row is not None and classified.kind is InboundKind.BOUNCE and report is not None:
        bounced = _mark_bounced(row, report, classified, inbound_id, at)
    elif row is not None and classified.kind is InboundKind.DELAY:
        audit.record(
            "message.delayed",
            actor=ACTOR,
            at=at,
            object_type="outbox_message",
            object_id=row.id,
            dispatch_id=row.dispatch_id,
            details={
                "inbound_id": inbound_id,
                "status": report.status if report else None,
                "diagnostic": report.diagnostic if report else None,
            },
        )
    db.session.flush()
    return InboundResult(inbound_id, False, classified.kind, matched_by, recipient_id, bounced)


def mark_reply_as_confirmation(
    inbound: InboundMessage, *, name: str, position: str, actor: User, at: dt.datetime
) -> AckResult:
    """Record a person's reply as the office's confirmation of receipt, with who marked it and
    who wrote it; the caller commits. Refused for anything but a matched person's reply."""
    if inbound.kind is not InboundKind.REPLY or inbound.recipient_id is None:
        raise InboundError("Chỉ thư trả lời của cơ quan nhận mới được ghi nhận là xác nhận.")
    recipient = db.session.get(DispatchRecipient, inbound.recipient_id)
    assert recipient is not None
    if recipient.acknowledged_at is not None:
        raise InboundError("Cơ quan này đã xác nhận trước đó; không ghi nhận lần nữa.")
    received = inbound.received_at.strftime("%d/%m/%Y %H:%M UTC")
    note = f"Thư trả lời {inbound.header_message_id or ''} từ {inbound.from_address or ''}, "
    note += f"nhận lúc {received}; văn thư {actor.email} ghi nhận là xác nhận."
    try:
        result = acknowledge(
            recipient,
            name,
            position,
            note,
            ip=None,
            user_agent=None,
            at=at,
            method=AcknowledgementMethod.EMAIL,
            actor=actor_name(actor),
        )
    except AcknowledgementError as exc:
        raise InboundError("; ".join(exc.errors.values())) from exc
    inbound.confirmed_at = at
    inbound.confirmed_by_id = actor.id
    audit.record(
        "inbound.marked_as_confirmation",
        actor=actor_name(actor),
        at=at,
        object_type="inbound_message",
        object_id=inbound.id,
        dispatch_id=recipient.dispatch_id,
        details={"recipient_id": recipient.id, "name": name, "position": position},
    )
    db.session.flush()
    return result


def unmatched(limit: int = 200) -> list[InboundMessage]:
    """Inbound messages tied to nothing we sent, newest first: for an admin to look at."""
    return list(
        db.session.execute(
            select(InboundMessage)
            .where(
                InboundMessage.recipient_id.is_(None), InboundMessage.outbox_message_id.is_(None)
            )
            .order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc())
            .limit(limit)
        ).scalars()
    )


def for_recipient(recipient_id: int) -> list[InboundMessage]:
    """Everything received about one recipient, oldest first (its history)."""
    return list(
        db.session.execute(
            select(InboundMessage)
            .where(InboundMessage.recipient_id == recipient_id)
            .order_by(InboundMessage.received_at, InboundMessage.id)
        ).scalars()
    )
