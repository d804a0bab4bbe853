"""The audit log: every state change, who made it and when, append-only, chained and keyed.

Entries are written in the caller's transaction: the change and its record commit or roll back
together. Three things make the log trustworthy:

- **Chains.** Each entry's ``hash`` is SHA-256 over the previous entry's hash and this entry's
  canonical JSON, so editing, deleting or inserting a row breaks the chain. There are ``LANES``
  chains side by side: a transaction appends to one lane only, its thread's (each gunicorn
  worker, the scheduler, a command has its own, mostly; one that finds another appending to
  its lane moves to another), so that writers in different lanes
  never wait for each other (one global chain serialised every confirmation). Where each lane
  ends is kept in ``audit_lane``, a row the append moves in the statement that inserts the
  entry, only from the end the process last left there (else it locks and reads the row
  first). Anyone can recompute the hashes.
- **A key.** Each entry's ``mac`` is HMAC-SHA256, with ``DISPATCH_AUDIT_KEY`` (kept outside the
  database), over its hash. Whoever can write to the database but does not hold the key can
  no longer edit a row and recompute the chain.
- **Checkpoints.** ``write_checkpoint`` (daily, by the scheduler, or ``dispatch audit
  checkpoint``) writes every lane's head, keyed, to a file in the archive, outside the
  database. ``verify_checkpoints`` then shows entries cut off the end of a lane. With a
  time-stamp authority configured (DISPATCH_TSA_URL) the caller passes a ``stamp`` function and
  the checkpoint also carries an RFC 3161 token over its keyed body: even whoever holds the key
  cannot then rewrite a checkpoint, or write one later and date it back, without the token
  showing it.

Entries written before keys were introduced have an empty ``mac``; they are accepted only before
the first keyed entry and reported as such.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, func, insert, select, update

from dispatch.extensions import db
from dispatch.models import AuditEntry, AuditLane, DispatchRecipient, User

# How the log names work done by the system itself (the scheduler, a seed).
SYSTEM_ACTOR = "system"

# How many chains run side by side. Stored on each entry, so changing it later is safe.
LANES = 16

_TABLE = AuditEntry.__table__
_LANES = AuditLane.__table__
_FIELDS = ("at", "actor", "action", "object_type", "object_id", "dispatch_id", "details")
_COLUMNS = (*_FIELDS, "prev_hash", "hash", "lane", "mac")
# Built once: every audited change runs them (each e-mail sent, each confirmation).
_CHAIN_END = (
    select(_TABLE.c.hash)
    .where(_TABLE.c.lane == bindparam("lane"))
    .order_by(_TABLE.c.id.desc())
    .limit(1)
)
# Locks the lane's end until the transaction ends and reads it, in one round trip. (FOR UPDATE
# reads the row as last committed, after any wait: never an end another append has moved.)
_LANE_END = select(_LANES.c.hash).where(_LANES.c.lane == bindparam("lane")).with_for_update()
# Moves the lane's end, only from where this transaction last saw it.
_MOVE_END = (
    update(_LANES)
    .where(_LANES.c.lane == bindparam("end_lane"), _LANES.c.hash == bindparam("end_before"))
    .values(hash=bindparam("end_after"))
)
_INSERT_ONE = insert(_TABLE).returning(_TABLE.c.id)
_INSERT_MANY = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)


def _append_one_statement():
    """PostgreSQL: move the lane's end and insert the entry in one statement; the entry is
    inserted only if the end was where this transaction saw it (no row returned otherwise)."""
    moved = (
        update(_LANES)
        .where(_LANES.c.lane == bindparam("end_lane"), _LANES.c.hash == bindparam("end_before"))
        .values(hash=bindparam("end_after"))
        .returning(_LANES.c.lane)
        .cte("moved")
    )
    # Parameters named apart from every column: an UPDATE sets the columns its parameters name.
    values = select(
        *(bindparam(f"entry_{name}", type_=_TABLE.c[name].type) for name in _COLUMNS)
    ).select_from(moved)
    return insert(_TABLE).from_select(list(_COLUMNS), values).returning(_TABLE.c.id)


_APPEND_ONE = _append_one_statement()


def gated_append(gate: Any) -> Any:
    """PostgreSQL, for a statement that makes a change and its audit entry at once: the CTE
    that appends one entry (``GatedAppend.parameters``) to its lane, only if the CTE ``gate``
    (the change) returned a row and only if the lane ends where this process last left it (as
    ``_append_one_statement``). Returns the CTE of the inserted entry's id.

    The statement using it must fail as a whole when the change was made but the entry was not
    (another process moved the lane's end): see ``acknowledgements`` for how.
    """
    moved = (
        update(_LANES)
        .where(
            _LANES.c.lane == bindparam("end_lane"),
            _LANES.c.hash == bindparam("end_before"),
            select(gate).exists(),
        )
        .values(hash=bindparam("end_after"))
        .returning(_LANES.c.lane)
        .cte("moved")
    )
    values = select(
        *(bindparam(f"entry_{name}", type_=_TABLE.c[name].type) for name in _COLUMNS)
    ).select_from(moved)
    return insert(_TABLE).from_select(list(_COLUMNS), values).returning(_TABLE.c.id).cte("entry")


@dataclass(frozen=True)
class GatedAppend:
    """One entry hashed and keyed after the lane end this process knows, for ``gated_append``."""

    lane: int
    parameters: dict[str, Any]

    def appended(self) -> None:
        """The statement inserted the entry: the lane now ends with it."""
        _known_ends()[self.lane] = self.parameters["end_after"]


def prepare_gated(
    action: str,
    *,
    actor: str,
    at: dt.datetime,
    object_type: str,
    object_id: str | int | None = None,
    dispatch_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> GatedAppend | None:
    """The entry ``record`` would append, ready for a statement built with ``gated_append``
    and run outside any transaction of the session; None if this process does not know where
    its lane ends yet (``record`` then learns it)."""
    # The request's session, if it has one (none is made for the asking: a confirmation uses none).
    sessions = db.session.registry
    pinned = sessions().info.get("audit_lane") if sessions.has() else None
    if pinned is not None and pinned.end is not None and pinned.transaction.is_active:
        # The session's transaction has appended and holds its lane until it ends: an append
        # from elsewhere in this thread could wait for it forever.
        return None
    lane = _own_lane()
    end = _known_ends().get(lane)
    if end is None:
        return None
    fields = {
        "action": action,
        "actor": actor,
        "at": at,
        "object_type": object_type,
        "object_id": object_id,
        "dispatch_id": dispatch_id,
        "details": details,
    }
    [row] = _rows(end, lane, [fields])
    parameters = {f"entry_{name}": value for name, value in row.items()}
    parameters |= {"end_lane": lane, "end_before": end, "end_after": row["hash"]}
    return GatedAppend(lane, parameters)


# Where checkpoints are written, under DISPATCH_DATA_DIR.
CHECKPOINT_DIR = "audit-checkpoints"
CHECKPOINT_WRITTEN = "audit.checkpoint_written"


class AuditKeyError(RuntimeError):
    """No key to sign or check the audit log with."""


def _key() -> bytes:
    key = current_app.config.get("DISPATCH_AUDIT_KEY")
    if not key:
        raise AuditKeyError(
            "Thiếu khoá nhật ký kiểm tra DISPATCH_AUDIT_KEY: không thể ghi hay kiểm tra nhật ký."
        )
    return key.encode("utf-8")


def _mac(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hmac.new(_key(), data, hashlib.sha256).hexdigest()


def _own_lane() -> int:
    """The lane this thread appends to: first the one its thread id gives, so that gunicorn's
    workers, the scheduler, a command and each thread of a process have their own, mostly.

    Two that share one wait for each other's appends and, worse, keep moving the end the other
    expected, so that neither's one-statement appends succeed. The one that finds its lane's
    end moved by another therefore leaves for another lane, chosen at random (``_leave_lane``),
    until each has one of its own: 4 processes on 16 lanes start with two on one lane a third
    of the time (process ids are not consecutive on a busy machine).
    """
    thread = threading.get_native_id()
    return _lanes_taken().get(thread, thread % LANES)


def _lanes_taken() -> dict[int, int]:
    """The lane each thread of this process moved to, by native thread id."""
    return current_app.extensions.setdefault("dispatch_audit_thread_lanes", {})


def _leave_lane(lane: int) -> None:
    """Another process appended to ``lane``, this thread's: append to another from now on."""
    others = [other for other in range(LANES) if other != lane]
    _lanes_taken()[threading.get_native_id()] = random.choice(others)


def _known_ends() -> dict[int, str]:
    """Where this process last left each lane, by lane: where its next append will most
    likely find the end (checked by the append itself, never trusted)."""
    return current_app.extensions.setdefault("dispatch_audit_lane_ends", {})


@dataclass
class _Pinned:
    """The lane the current transaction appends to, and where it last saw the lane end (None
    before its first append: the lane's row is not locked yet)."""

    transaction: Any
    lane: int
    end: str | None = None


def _pinned_lane() -> _Pinned:
    """The lane of the current transaction: this thread's, kept until the transaction ends.

    One lane per transaction means one lane lock per transaction, held until it ends, so two
    transactions can never wait for each other's lanes (no deadlock).
    """
    session = db.session()
    session.connection()  # begins the transaction if nothing has yet
    transaction = session.get_transaction()
    pinned = session.info.get("audit_lane")
    if pinned is not None and pinned.transaction is transaction:
        return pinned
    pinned = _Pinned(transaction, _own_lane())
    session.info["audit_lane"] = pinned
    return pinned


def _lock_lane_end(lane: int) -> str:
    """Lock the lane's row until the transaction ends; the hash of the lane's last entry.

    The row is made, from the lane's entries, when a lane has none yet (a new database, or
    ``LANES`` raised).
    """
    end = db.session.execute(_LANE_END, {"lane": lane}).scalar_one_or_none()
    if end is not None:
        return end
    last = db.session.execute(_CHAIN_END, {"lane": lane}).scalar_one_or_none() or ""
    dialect = db.engine.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as insert_or_skip
    else:
        from sqlalchemy.dialects.sqlite import insert as insert_or_skip
    # Two first appends at once: one makes the row, the other waits for it and then locks it.
    db.session.execute(insert_or_skip(_LANES).values(lane=lane, hash=last).on_conflict_do_nothing())
    return db.session.execute(_LANE_END, {"lane": lane}).scalar_one()


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
    """Append several entries (each the keyword arguments of ``record``) in this order; the
    caller commits. Returns their ids.

    The ORM's pending changes are flushed first, so the change is written before its record.
    The entries themselves are plain rows (an INSERT, no ORM objects): a sender records every
    e-mail it sends, and the unit of work was most of that cost (bench/issue_63).

    Round trips: each append moves its lane's end and inserts, in one statement on PostgreSQL
    (two on SQLite, or for several entries), only if the end is where this process last left
    it; the UPDATE locks the lane's row until the transaction ends. Should the end have moved
    (another process on the same lane, a rolled-back transaction or savepoint), the append
    locks and reads it (one SELECT … FOR UPDATE) and goes again from there.
    """
    if not entries:
        return []
    db.session.flush()
    pinned = _pinned_lane()
    if pinned.end is None:
        # Where this process left the lane: nearly always still its end, as the lane is this
        # process's own. The append checks it; if another moved the end since, it reads the end.
        pinned.end = _known_ends().get(pinned.lane)
    ids = None if pinned.end is None else _append(pinned, entries)
    if ids is None:
        if pinned.end is not None:
            _leave_lane(pinned.lane)  # for the next transaction: this one keeps its lane
        pinned.end = _lock_lane_end(pinned.lane)
        ids = _append(pinned, entries)
        if ids is None:  # the row is locked by this transaction: nobody else moved it
            raise RuntimeError(f"audit lane {pinned.lane} moved under its lock")
    assert pinned.end is not None
    _known_ends()[pinned.lane] = pinned.end
    return ids


def _rows(prev: str, lane: int, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries as rows chained from ``prev``, hashed and keyed."""
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
            "lane": lane,
        }
        values["hash"] = prev = _entry_hash(values["prev_hash"], values)
        values["mac"] = _mac(values["hash"])
        rows.append(values)
    return rows


def _append(pinned: _Pinned, entries: list[dict[str, Any]]) -> list[int] | None:
    """Insert ``entries`` after the end ``pinned`` knows and move the end past them; None (and
    nothing written) if the lane does not end there."""
    assert pinned.end is not None
    rows = _rows(pinned.end, pinned.lane, entries)
    new_end = rows[-1]["hash"]
    move = {"end_lane": pinned.lane, "end_before": pinned.end, "end_after": new_end}
    if len(rows) == 1 and db.engine.dialect.name == "postgresql":
        entry = {f"entry_{name}": value for name, value in rows[0].items()}
        ids = list(db.session.execute(_APPEND_ONE, entry | move).scalars())
        if not ids:
            return None
    else:
        moved = db.session.execute(_MOVE_END, move)
        if moved.rowcount != 1:
            return None
        if len(rows) == 1:
            ids = [db.session.execute(_INSERT_ONE, rows[0]).scalar_one()]
        else:
            ids = list(db.session.execute(_INSERT_MANY, rows).scalars())
    pinned.end = new_end
    return ids


@dataclass(frozen=True)
class ChainProblem:
    """Where the chain breaks and why."""

    entry_id: int
    reason: str


INSERTED = "entry inserted into the chain"
MISSING = "previous entry missing or changed"
CHANGED = "entry changed after it was written"
BAD_MAC = "entry not signed with the audit key"
UNKEYED_LATE = "unkeyed entry after keyed ones"


@dataclass
class _Lane:
    """What ``check_chain`` knows of one lane so far."""

    prev_hash: str = ""
    read: list[int] = field(default_factory=list)  # entry ids, in order
    position: dict[str, int] = field(default_factory=dict)  # hash -> index in ``read``


@dataclass(frozen=True)
class ChainReport:
    """What ``verify_chain`` found: the problems, and how many entries predate the key."""

    problems: list[ChainProblem]
    entries: int
    unkeyed: int


def check_chain() -> ChainReport:
    """Recompute every lane's chain and every entry's key; report what was edited, removed,
    inserted or written without the key."""
    problems: list[ChainProblem] = []
    lanes: dict[int, _Lane] = {}
    entries = unkeyed = 0
    keyed_seen = False
    for entry in db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars():
        entries += 1
        lane = lanes.setdefault(entry.lane, _Lane())
        if entry.prev_hash != lane.prev_hash:
            # An entry that links back past its predecessor to an earlier entry of its lane
            # shows that the rows in between were slipped in.
            earlier = lane.position.get(entry.prev_hash)
            if earlier is not None:
                problems.extend(ChainProblem(i, INSERTED) for i in lane.read[earlier + 1 :])
            else:
                problems.append(ChainProblem(entry.id, MISSING))
        if entry.hash != _entry_hash(entry.prev_hash, entry):
            problems.append(ChainProblem(entry.id, CHANGED))
        if entry.mac:
            keyed_seen = True
            if not hmac.compare_digest(entry.mac, _mac(entry.hash)):
                problems.append(ChainProblem(entry.id, BAD_MAC))
        elif keyed_seen:
            problems.append(ChainProblem(entry.id, UNKEYED_LATE))
        else:
            unkeyed += 1
        lane.position.setdefault(entry.hash, len(lane.read))
        lane.read.append(entry.id)
        lane.prev_hash = entry.hash
    problems.sort(key=lambda problem: problem.entry_id)
    return ChainReport(problems, entries, unkeyed)


def verify_chain() -> list[ChainProblem]:
    """Every place where the log was edited, cut, extended in the middle or forged."""
    return check_chain().problems


# --- Checkpoints: the lanes' heads, keyed, outside the database ------------------------------


def _checkpoint_folder() -> Path:
    return Path(current_app.config["DISPATCH_DATA_DIR"]) / CHECKPOINT_DIR


def _checkpoint_body(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")


def lane_heads() -> dict[int, dict[str, Any]]:
    """Each lane's last entry (id, hash) and number of entries, as committed now.

    The count and the last id come from one statement, so from one snapshot: read apart, an
    append committed between them (a lane's first entry, say) would give a last id without its
    count. An entry never changes once committed, so its hash may be read after.
    """
    heads = db.session.execute(
        select(AuditEntry.lane, func.count(), func.max(AuditEntry.id)).group_by(AuditEntry.lane)
    ).all()
    hashes = dict(
        db.session.execute(
            select(AuditEntry.id, AuditEntry.hash).where(
                AuditEntry.id.in_([last_id for _, _, last_id in heads])
            )
        ).all()
    )
    return {
        lane: {"last_id": last_id, "hash": hashes[last_id], "count": count}
        for lane, count, last_id in sorted(heads)
    }


# Gives an RFC 3161 token (DER) over the bytes it is handed; raises RuntimeError when the TSA
# gives none (dispatch.signing.timestamps.stamp, bound to DISPATCH_TSA_URL, by the caller).
Stamper = Callable[[bytes], bytes]
# Checks a token against bytes: returns an object with ``intact``, ``trusted``, ``at``, ``tsa``
# and ``problem`` (dispatch.signing.timestamps.check, bound to the trusted roots).
StampChecker = Callable[[bytes, bytes], Any]


@dataclass(frozen=True)
class CheckpointWritten:
    """A checkpoint just written, and whether it got its time-stamp."""

    path: Path
    stamped: bool
    stamp_error: str | None  # why the TSA gave no token (Vietnamese), when it was asked


def write_checkpoint(at: dt.datetime, *, stamp: Stamper | None = None) -> Path:
    """Write the lanes' heads, keyed (and time-stamped with ``stamp``), to a new file in the
    archive; its path. See ``write_checkpoint_report``."""
    return write_checkpoint_report(at, stamp=stamp).path


def write_checkpoint_report(at: dt.datetime, *, stamp: Stamper | None = None) -> CheckpointWritten:
    """Write the lanes' heads, keyed, to a new file in the archive.

    With ``stamp`` the keyed body is time-stamped (RFC 3161) and the token kept beside it in the
    file, base64. A TSA that gives no token does not stop the checkpoint: it is written keyed
    only, and the error returned, so the caller can say so.

    Written to a temporary file, flushed to disk and renamed, so a checkpoint is whole or
    absent. Then the log itself records it ("audit.checkpoint_written": the file's name, whether
    it was time-stamped and the token's SHA-256), so that a later checkpoint anchors that record:
    a checkpoint file removed, or stripped of its token, is then found by
    ``verify_checkpoints``. The caller commits.
    """
    payload: dict[str, Any] = {
        "format": 1,
        "at": at.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "lanes": {str(lane): head for lane, head in lane_heads().items()},
    }
    payload["mac"] = _mac(_checkpoint_body(payload))
    content = dict(payload)
    stamp_error = None
    if stamp is not None:
        try:
            content["rfc3161"] = base64.b64encode(stamp(_checkpoint_body(payload))).decode()
        except RuntimeError as exc:
            stamp_error = str(exc)
    folder = _checkpoint_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"checkpoint-{at.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    # Two schedulers (a standby taking over) may write in the same second: each its own file.
    temporary = path.with_name(f".{path.stem}-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    with temporary.open("wb") as handle:
        handle.write(_checkpoint_body(content))
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    token = content.get("rfc3161")
    record(
        CHECKPOINT_WRITTEN,
        actor="system",
        at=at,
        object_type="audit_checkpoint",
        object_id=path.name[:50],
        details={
            "file": path.name,
            "stamped": token is not None,
            "token_sha256": hashlib.sha256(token.encode()).hexdigest() if token else None,
            "stamp_error": stamp_error,
        },
    )
    return CheckpointWritten(path, token is not None, stamp_error)


@dataclass(frozen=True)
class CheckpointProblem:
    """A checkpoint that does not hold, and why (Vietnamese, for ``audit verify``)."""

    checkpoint: str
    message: str


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back."""

    name: str
    at: dt.datetime
    lanes: dict[int, dict[str, Any]]
    stamp: Any = None  # what the StampChecker found of its RFC 3161 token, when it has one
    token_sha256: str | None = None  # of the token as kept in the file (base64), when it has one


def read_checkpoints(
    check_stamp: StampChecker | None = None,
) -> tuple[list[Checkpoint], list[CheckpointProblem]]:
    """Every checkpoint in the archive whose key (and time-stamp, checked with ``check_stamp``)
    holds, oldest first, and those that fail."""
    found: list[Checkpoint] = []
    problems: list[CheckpointProblem] = []
    folder = _checkpoint_folder()
    for path in sorted(folder.glob("checkpoint-*.json")) if folder.is_dir() else []:
        try:
            payload = json.loads(path.read_bytes())
            kept = payload.pop("rfc3161", None)
            token = base64.b64decode(kept, validate=True) if kept is not None else None
            token_sha256 = hashlib.sha256(kept.encode()).hexdigest() if kept is not None else None
            mac = payload.pop("mac")
            lanes = {int(k): v for k, v in payload["lanes"].items()}
            at = dt.datetime.fromisoformat(payload["at"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            problems.append(CheckpointProblem(path.name, "không đọc được tệp điểm neo"))
            continue
        if not isinstance(mac, str) or not hmac.compare_digest(
            mac, _mac(_checkpoint_body(payload))
        ):
            problems.append(CheckpointProblem(path.name, "chữ ký của điểm neo không khớp khoá"))
            continue
        stamp = None
        if token is not None and check_stamp is not None:
            # The token covers the keyed body: the fields and the key's MAC, as first written.
            stamp = check_stamp(token, _checkpoint_body({**payload, "mac": mac}))
            if not stamp.intact:
                problems.append(
                    CheckpointProblem(
                        path.name,
                        f"dấu thời gian RFC 3161 không khớp: {stamp.problem or 'không hợp lệ'}",
                    )
                )
                continue
        found.append(Checkpoint(path.name, at, lanes, stamp, token_sha256))
    return found, problems


def verify_checkpoints(
    check_stamp: StampChecker | None = None,
) -> tuple[list[Checkpoint], list[CheckpointProblem]]:
    """Check the log against every checkpoint: each lane's head then must still be there, with
    as many entries up to it; a time-stamped checkpoint's token must still match it (checked
    with ``check_stamp``). Returns the checkpoints that hold and the problems found."""
    checkpoints, problems = read_checkpoints(check_stamp)
    holding = []
    for checkpoint in checkpoints:
        found = []
        for lane, head in checkpoint.lanes.items():
            row = db.session.execute(
                select(AuditEntry.hash, AuditEntry.lane).where(AuditEntry.id == head["last_id"])
            ).first()
            count = db.session.execute(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.lane == lane, AuditEntry.id <= head["last_id"])
            ).scalar_one()
            when = f"{checkpoint.at.astimezone(dt.UTC):%d/%m/%Y %H:%M} UTC"
            if row is None or row.lane != lane:
                found.append(
                    f"mục {head['last_id']}, mục cuối của làn {lane} lúc {when}, không còn: "
                    "nhật ký đã bị cắt bớt"
                )
            elif row.hash != head["hash"]:
                found.append(f"mục {head['last_id']} (làn {lane}) đã khác so với lúc {when}")
            elif count != head["count"]:
                found.append(
                    f"làn {lane} có {count} mục đến mục {head['last_id']}, "
                    f"lúc {when} có {head['count']}"
                )
        problems.extend(CheckpointProblem(checkpoint.name, message) for message in found)
        if not found:
            holding.append(checkpoint)
    problems.extend(_recorded_checkpoints_missing(checkpoints, problems))
    return holding, problems


def _recorded_checkpoints_missing(
    readable: list[Checkpoint], problems: list[CheckpointProblem]
) -> list[CheckpointProblem]:
    """The checkpoints the log says were written that are gone from the archive, or have lost
    (or changed) the time-stamp they were written with."""
    folder = _checkpoint_folder()
    present = {path.name for path in folder.glob("checkpoint-*.json")} if folder.is_dir() else set()
    by_name = {checkpoint.name: checkpoint for checkpoint in readable}
    already = {problem.checkpoint for problem in problems}
    missing = []
    for details in db.session.execute(
        select(AuditEntry.details).where(AuditEntry.action == CHECKPOINT_WRITTEN)
    ).scalars():
        name = (details or {}).get("file")
        if not name or name in already:
            continue
        if name not in present:
            missing.append(CheckpointProblem(name, "tệp điểm neo đã ghi trong nhật ký không còn"))
            continue
        checkpoint = by_name.get(name)
        if (
            checkpoint is not None
            and details.get("stamped")
            and checkpoint.token_sha256 != details.get("token_sha256")
        ):
            missing.append(
                CheckpointProblem(
                    name, "dấu thời gian RFC 3161 ghi trong nhật ký đã bị gỡ hoặc thay khỏi tệp"
                )
            )
    return missing
