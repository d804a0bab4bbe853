"""The audit log: every state change, who made it and when, append-only and hash-chained.

Each entry's ``hash`` is SHA-256 over the previous entry's hash and this entry's canonical JSON,
so editing or deleting a row breaks the chain (``verify_chain``). Entries are written in the
caller's transaction: the change and its record commit or roll back together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text

from dispatch.extensions import db
from dispatch.models import AuditEntry

# Any constant: the key of the PostgreSQL advisory lock that serialises appends to the chain.
_CHAIN_LOCK = 0x44495350  # "DISP"


def _canonical(entry: AuditEntry) -> bytes:
    payload = {
        "at": entry.at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "dispatch_id": entry.dispatch_id,
        "details": entry.details,
    }
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()


def _entry_hash(prev_hash: str, entry: AuditEntry) -> str:
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
) -> AuditEntry:
    """Append an entry to the audit log in the current transaction (the caller commits)."""
    if db.engine.dialect.name == "postgresql":
        # Appends must see the previous entry: serialise them until this transaction ends.
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})
    prev = db.session.execute(
        select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).scalar_one_or_none()
    entry = AuditEntry(
        at=at,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        dispatch_id=dispatch_id,
        details=json.loads(json.dumps(details or {}, ensure_ascii=False, default=str)),
        prev_hash=prev or "",
    )
    entry.hash = _entry_hash(entry.prev_hash, entry)
    db.session.add(entry)
    db.session.flush()
    return entry


def record_many(entries: list[dict[str, Any]]) -> list[AuditEntry]:
    """Append several entries (each the keyword arguments of ``record``) in this order, with one
    look-up of the chain's end and one INSERT; the caller commits.

    What ``record`` would append one by one (the same hashes, ids in the same order), for a
    sender claiming a batch of e-mails, which made two queries per entry (bench/issue_63).
    """
    if not entries:
        return []
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})
    prev = (
        db.session.execute(
            select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
        ).scalar_one_or_none()
        or ""
    )
    written = []
    for fields in entries:
        object_id = fields.get("object_id")
        entry = AuditEntry(
            at=fields["at"],
            actor=fields["actor"],
            action=fields["action"],
            object_type=fields["object_type"],
            object_id=None if object_id is None else str(object_id),
            dispatch_id=fields.get("dispatch_id"),
            details=json.loads(
                json.dumps(fields.get("details") or {}, ensure_ascii=False, default=str)
            ),
            prev_hash=prev,
        )
        entry.hash = prev = _entry_hash(entry.prev_hash, entry)
        written.append(entry)
    # The unit of work inserts them in the order added, their ids ascending in that order
    # (SQLAlchemy sorts a multi-row INSERT by parameter order where ids are generated).
    db.session.add_all(written)
    db.session.flush()
    return written


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
