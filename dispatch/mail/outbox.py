"""The outbox: e-mails decided inside a transaction, sent by ``sender`` after it commits.

A row is unique per (dispatch, recipient, kind, sequence), and ``enqueue`` inserts with
ON CONFLICT DO NOTHING, so deciding the same e-mail twice (a job run twice, two schedulers at
once) leaves one row, and so one e-mail.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from dispatch.extensions import db
from dispatch.mail.verp import new_token
from dispatch.models import DeliveryStatus, MessageKind, OutboxMessage


def message_domain() -> str:
    """The domain of our Message-IDs: the sender's."""
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    address = sender[1] if isinstance(sender, tuple) else sender
    return address.rsplit("@", 1)[-1].strip(" >") or "dispatch.invalid"


def message_id(name: str) -> str:
    """``<name.random@domain>``: the row's own name (unique per row) and 64 random bits, so
    that a database started afresh never reuses an id a mailbox has seen. Short enough for
    its header line to stay within RFC 5322's 78 characters with a sender domain of up to 18
    (``email.utils.make_msgid``'s time, pid and 64-bit decimal made it 80 and more)."""
    return f"<{name}.{secrets.token_hex(8)}@{message_domain()}>"


def _values(
    *,
    dispatch_id: int,
    kind: MessageKind,
    to_addrs: list[str],
    at: dt.datetime,
    recipient_id: int | None,
    cc_addrs: list[str] | None,
    sequence: int,
) -> dict[str, Any]:
    """One outbox row, as ``enqueue`` and ``enqueue_many`` insert it."""
    key = recipient_id or 0
    return {
        "dispatch_id": dispatch_id,
        "recipient_id": recipient_id,
        "recipient_key": key,
        "kind": kind,
        "sequence": sequence,
        "to_addrs": to_addrs,
        "cc_addrs": cc_addrs or [],
        "message_id": message_id(f"d{dispatch_id}.r{key}.{kind.value}.{sequence}"),
        # Its own envelope sender (dispatch.mail.verp): a bounce finds this row by it.
        "bounce_token": new_token(),
        "status": DeliveryStatus.QUEUED,
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
    }


def _insert() -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id, executed with the rows as parameters (one
    statement compiled once and cached, which a VALUES list of every row was not)."""
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    table = OutboxMessage.__table__
    return (
        dialect.insert(table)
        .on_conflict_do_nothing(index_elements=["dispatch_id", "recipient_key", "kind", "sequence"])
        .returning(table.c.id)
    )


def enqueue(
    *,
    dispatch_id: int,
    kind: MessageKind,
    to_addrs: list[str],
    at: dt.datetime,
    recipient_id: int | None = None,
    cc_addrs: list[str] | None = None,
    sequence: int = 0,
) -> bool:
    """Queue an e-mail to be sent from ``at`` on; False if the same one was already queued."""
    values = _values(
        dispatch_id=dispatch_id,
        kind=kind,
        to_addrs=to_addrs,
        at=at,
        recipient_id=recipient_id,
        cc_addrs=cc_addrs,
        sequence=sequence,
    )
    # RETURNING tells whether a row went in; rowcount is not reliable for ORM-enabled inserts.
    return db.session.execute(_insert(), values).first() is not None


def enqueue_many(
    *,
    dispatch_id: int,
    kind: MessageKind,
    messages: list[tuple[int, list[str], list[str]]],
    at: dt.datetime,
    sequence: int = 0,
) -> int:
    """Queue one e-mail of ``kind`` per (recipient id, To, Cc) in one INSERT; how many were new
    (the others had been queued before)."""
    if not messages:
        return 0
    rows = [
        _values(
            dispatch_id=dispatch_id,
            kind=kind,
            to_addrs=to_addrs,
            at=at,
            recipient_id=recipient_id,
            cc_addrs=cc_addrs,
            sequence=sequence,
        )
        for recipient_id, to_addrs, cc_addrs in messages
    ]
    return len(db.session.execute(_insert(), rows).all())
