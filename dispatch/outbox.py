"""The outbox: e-mails decided inside a transaction, sent by ``delivery`` after it commits.

A row is unique per (dispatch, recipient, kind, sequence), and ``enqueue`` inserts with
ON CONFLICT DO NOTHING, so deciding the same e-mail twice (a job run twice, two schedulers at
once) leaves one row, and so one e-mail.
"""

from __future__ import annotations

import datetime as dt
from email.utils import make_msgid

from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from dispatch.extensions import db
from dispatch.models import DeliveryStatus, MessageKind, OutboxMessage


def message_domain() -> str:
    """The domain of our Message-IDs: the sender's."""
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    address = sender[1] if isinstance(sender, tuple) else sender
    return address.rsplit("@", 1)[-1].strip(" >") or "dispatch.invalid"


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
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    key = recipient_id or 0
    values = {
        "dispatch_id": dispatch_id,
        "recipient_id": recipient_id,
        "recipient_key": key,
        "kind": kind,
        "sequence": sequence,
        "to_addrs": to_addrs,
        "cc_addrs": cc_addrs or [],
        "message_id": make_msgid(
            idstring=f"d{dispatch_id}.r{key}.{kind.value}.{sequence}", domain=message_domain()
        ),
        "status": DeliveryStatus.QUEUED,
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
    }
    statement = (
        dialect.insert(OutboxMessage)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dispatch_id", "recipient_key", "kind", "sequence"])
    )
    # RETURNING tells whether a row went in; rowcount is not reliable for ORM-enabled inserts.
    return db.session.execute(statement.returning(OutboxMessage.id)).first() is not None
