"""The audit log: every state change, who made it and when, append-only and hash-chained.

Each entry's ``hash`` is SHA-256 over the previous entry's hash and this entry's canonical JSON,
so editing or deleting a row breaks the chain (``verify_chain``). Entries are written in the
caller's transaction: the change and its record commit or roll back together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text

from dispatch.extensions import db
from dispatch.models import AuditEntry, DispatchRecipient, User

# How the log names work done by the system itself (the scheduler, a seed).
SYSTEM_ACTOR = "system"

# Any constant: the key of the PostgreSQL advisory lock that serialises appends to the chain.
_CHAIN_LOCK = 0x44495350  # "DISP"


_TABLE = AuditEntry.__table__
_FIELDS = ("at", "actor", "action", "object_type", "object_id", "dispatch_id", "details")
# Built once: every audited change runs them (each e-mail sent, each confirmation).
_CHAIN_END = select(_TABLE.c.hash).order_by(_TABLE.c.id.desc()).limit(1)
_INSERT_ONE = insert(_TABLE).returning(_TABLE.c.id)
_INSERT_MANY = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def actor_name(actor: User | None) -> str:
    """How the audit log names who acted: the user's e-mail, or "system"."""
    return actor.email if actor is not None else SYSTEM_ACTOR


def _canonical(entry: AuditEntry | Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers: its fields (an entry read back, or a row's values)."""
    if isinstance(entry, AuditEntry):
        entry = {name: getattr(entry, name) for name in _FIELDS}
    payload = {name: entry[name] for name in _FIELDS}
    payload["at"] = entry["at"].astimezone(dt.UTC).isoformat(timespec="microseconds")
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()


def _entry_hash(prev_hash: str, entry: AuditEntry | Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(entry)).hexdigest()


def record(
    action: str,
    *,
    actor: str,
    at: dt.datetime,
    object_type: str,
    object_id: str | int | None = None,
    dispatch_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append an entry to the audit log in the current transaction (the caller commits);
    return its id."""
    return record_many(
        [
            {
                "action": action,
                "actor": actor,
                "at": at,
                "object_type": object_type,
                "object_id": object_id,
                "dispatch_id": dispatch_id,
                "details": details,
            }
        ]
    )[0]


def record_dispatch(
    action: str,
    dispatch_id: int,
    *,
    actor: str,
    at: dt.datetime,
    details: dict[str, Any] | None = None,
) -> int:
    """Append an entry about a dispatch as a whole (drafted, issued, escalated …); the caller
    commits. It is filed under the dispatch both as its object and in its history."""
    return record(
        action,
        actor=actor,
        at=at,
        object_type="dispatch",
        object_id=dispatch_id,
        dispatch_id=dispatch_id,
        details=details,
    )


def record_recipient(
    action: str,
    recipient: DispatchRecipient,
    *,
    actor: str,
    at: dt.datetime,
    details: dict[str, Any] | None = None,
) -> int:
    """Append an entry about one recipient of a dispatch (opened, confirmed, resent …); the
    caller commits. It is filed under the recipient and in its dispatch's history."""
    return record(
        action,
        actor=actor,
        at=at,
        object_type="dispatch_recipient",
        object_id=recipient.id,
        dispatch_id=recipient.dispatch_id,
        details=details,
    )


def record_many(entries: list[dict[str, Any]]) -> list[int]:
    """Append several entries (each the keyword arguments of ``record``) in this order, with one
    look-up of the chain's end and one INSERT; the caller commits. Returns their ids.

    The ORM's pending changes are flushed first, so the change is written before its record.
    The entries themselves are plain rows (an INSERT, no ORM objects): a sender records every
    e-mail it sends, and the unit of work was most of that cost (bench/issue_63).
    """
    if not entries:
        return []
    db.session.flush()
    if db.engine.dialect.name == "postgresql":
        # Appends must see the previous entry: serialise them until this transaction ends.
        db.session.execute(_LOCK, {"key": _CHAIN_LOCK})
    prev = db.session.execute(_CHAIN_END).scalar_one_or_none() or ""
    rows = []
    for fields in entries:
        object_id = fields.get("object_id")
        values = {
            "at": fields["at"],
            "actor": fields["actor"],
            "action": fields["action"],
            "object_type": fields["object_type"],
            "object_id": None if object_id is None else str(object_id),
            "dispatch_id": fields.get("dispatch_id"),
            # As the JSON column gives it back, so that the hash verifies after a read.
            "details": json.loads(
                json.dumps(fields.get("details") or {}, ensure_ascii=False, default=str)
            ),
            "prev_hash": prev,
        }
        values["hash"] = prev = _entry_hash(values["prev_hash"], values)
        rows.append(values)
    if len(rows) == 1:
        return [db.session.execute(_INSERT_ONE, rows[0]).scalar_one()]
    return list(db.session.execute(_INSERT_MANY, rows).scalars())


@dataclass(frozen=True)
class ChainProblem:
    """Where the chain breaks and why."""

    entry_id: int
    reason: str


INSERTED = "entry inserted into the chain"
MISSING = "previous entry missing or changed"
CHANGED = "entry changed after it was written"


def verify_chain() -> list[ChainProblem]:
    """Recompute the chain; return every place where a row was edited, removed or inserted."""
    problems: list[ChainProblem] = []
    prev_hash = ""
    # Every entry read so far, in order, by its hash: an entry that links back past its
    # predecessor to an earlier entry shows that the rows in between were slipped in.
    read: list[int] = []
    position: dict[str, int] = {}
    for entry in db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars():
        if entry.prev_hash != prev_hash:
            earlier = position.get(entry.prev_hash)
            if earlier is not None:
                problems.extend(ChainProblem(i, INSERTED) for i in read[earlier + 1 :])
            else:
                problems.append(ChainProblem(entry.id, MISSING))
        if entry.hash != _entry_hash(entry.prev_hash, entry):
            problems.append(ChainProblem(entry.id, CHANGED))
        position.setdefault(entry.hash, len(read))
        read.append(entry.id)
        prev_hash = entry.hash
    problems.sort(key=lambda problem: problem.entry_id)
    return problems
