"""The sender: takes due outbox rows, sends each over SMTP, records the server's answer.

The SMTP conversation itself (connecting, the envelope, the data, reading and classifying the
replies) is ``dispatch.mail.smtp``; this module decides what each answer means for a row and
when it is committed. ``deliver_due(at)`` runs in three steps, each committed on its own so
that a crash loses at most the message in flight:

1. **Claim** the due rows (queued, or retrying with ``next_attempt_at <= at``, or stuck in
   ``sending`` longer than ``LEASE`` because their sender died): they become ``sending`` with
   ``claimed_by``/``claimed_at``. PostgreSQL takes them with ``FOR UPDATE SKIP LOCKED``; both
   databases re-check the due condition in a conditional UPDATE, so two senders never both win
   the same row.
2. **Send** them over ONE SMTP connection (``smtp.SmtpSession``, opened with
   ``MAIL_TIMEOUT``), one message per recipient. Before a message goes, a claim older than
   ``RENEW_AFTER`` is renewed for the rest of its batch at once (a conditional UPDATE on our
   own claim): a row another sender has taken over meanwhile is skipped. No other sender can
   take a row whose claim is younger than ``LEASE``, so a message leaves at most
   ``RENEW_AFTER`` after its claim was last confirmed, nine minutes inside the lease. Rows are
   claimed ``CLAIM_BATCH`` at a time and each batch is sent before the next is claimed, so the
   first message leaves at once, claims stay fresh during a long run, and memory does not grow
   with the outbox.
3. **Record** each outcome as soon as the reply is read, and commit it before the next
   message's data leaves (while the server answers that message's commands): the server's 250
   → ``sent`` with its reply; a 4xx, a lost connection or a
   timeout → ``retrying`` with exponential back-off (1, 2, 4 … minutes, at most an hour,
   ``failed`` after ``DELIVERY_MAX_ATTEMPTS`` attempts or ``DELIVERY_GIVE_UP_HOURS`` hours); a
   5xx → ``failed`` with the reply. A reminder whose office has confirmed meanwhile, or an
   escalation with nobody left to chase, becomes ``cancelled``. When the relay is given up for
   the run (it refuses our sender for now, or stalls), the rows not handed over go back to the
   queue untried (``_release``).

**Never twice what was accepted.** A row is ``sent`` only after the server's 250, committed
before the next message's data leaves. What is left is the message the server may accept without
the sender knowing: one whose data has left, ending line included, and whose reply has not been
read and committed yet (the end of the server's reading, its 250, and one row and its audit
entry written while the server answers the next message's MAIL FROM, RCPT TO and DATA). A
sender killed then leaves that one row in ``sending``, and after the lease it is sent again with
the SAME Message-ID (``OutboxMessage.message_id``), which lets the receiving side recognise the
copy; every other row is either on record or was never handed over (one whose data was leaving
when the sender died, its ending line not sent, was not accepted).

Time is the ``at`` passed in, advanced by the run's own elapsed (monotonic) time, so claims and
``sent_at`` stay truthful during a long batch while ``--at`` can still replay any moment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from email.utils import parseaddr
from functools import partial
from typing import TypeVar

from flask import current_app
from flask_mail import Message, email_dispatched, sanitize_address
from sqlalchemy import and_, bindparam, case, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import joinedload

from dispatch import audit
from dispatch.archive import (
    ArchivedFile,
    ArchiveError,
    ArchiveWriter,
    sent_message_name,
    sent_message_path,
    sent_message_temporary_name,
    sent_messages_writer,
)
from dispatch.extensions import db
from dispatch.mail.compose import ComposeCache, ComposeError, compose, unconfirmed_recipients
from dispatch.mail.smtp import Envelope, Handover, SendFailure, SmtpSession, SmtpSettings
from dispatch.models import (
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    MessageKind,
    OutboxMessage,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

ACTOR = "system"
_OUTBOX = OutboxMessage.__table__
# A row in ``sending`` whose claim is older than this belongs to a sender that died.
LEASE = dt.timedelta(minutes=10)
# A sender confirms its claims again (the rest of a batch, in one statement) once they are this
# old: well inside the lease, and rarely enough to cost nothing per message (bench/issue_63,
# where renewing before every message was a tenth of the sending time).
RENEW_AFTER = dt.timedelta(minutes=1)
FIRST_BACKOFF = dt.timedelta(minutes=1)
MAX_BACKOFF = dt.timedelta(hours=1)
DEFAULT_MAX_ATTEMPTS = 30
DEFAULT_GIVE_UP_HOURS = 24
# An outcome the database does not take at once is tried again this many times (1, 2, 3, 4 s
# apart: a blink, a locked SQLite file) while nothing else is handed over; after that the run
# stops, and goes on trying to record that one outcome until OUTCOME_PATIENCE has passed. Well
# inside the lease: no other sender can have taken the row over (and sent it again) by then.
OUTCOME_COMMIT_ATTEMPTS = 5
OUTCOME_PATIENCE = dt.timedelta(minutes=5)
# Rows claimed at a time: each batch is sent before the next is claimed.
CLAIM_BATCH = 100
# E-mails composed ahead of the one being sent, their copies written meanwhile (``_KeptCopies``):
# composed in groups of half as many, whose copies share one fsync of their folder.
KEEP_AHEAD = 8
# Copies of a group written (and fsynced) at once: concurrent fsyncs share the file system's
# journal commits, where one after another each waits for its own (bench/issue_63).
COPY_WRITERS = 4


def default_worker() -> str:
    """This sender's name in ``claimed_by``: '<host>:<pid>'."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


def public_state(status: DeliveryStatus | str | None) -> str:
    """A row's state as the status report shows it: ``sending`` is still ``queued`` there."""
    if status is None:
        return "queued"
    status = DeliveryStatus(status)
    return "queued" if status is DeliveryStatus.SENDING else status.value


@dataclass
class DeliveryReport:
    """What one ``deliver_due`` run did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0  # claimed, then taken over by another sender before its turn
    connections: int = 0  # SMTP connections opened
    claimed: int = 0
    released: int = 0  # claimed, then given back untried: the relay was given up, or the run
    held_back: str | None = None  # why the relay was given up, leaving the rest for later
    # Why the run stopped before its end (Vietnamese, for the clerk): its database did not take
    # an outcome, so nothing else was handed over. None when it ran to its end.
    stopped: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """How many rows this run settled."""
        return self.sent + self.retrying + self.failed + self.cancelled


# --- The envelope --------------------------------------------------------------------------

# A plain ASCII address (RFC 5322 dot-atom): what Flask-Mail's sanitising gives back unchanged.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def _envelope_address(value: str | tuple[str, str]) -> str:
    """The bare address for MAIL FROM / RCPT TO, as ``parseaddr(sanitize_address(value))``
    gives it, without its cost for a plain ASCII address (three per message)."""
    address = value[1] if isinstance(value, tuple) else parseaddr(value)[1]
    if _PLAIN_ADDRESS.fullmatch(address):
        return address
    return parseaddr(sanitize_address(value))[1]


def _unique(addresses: object) -> list:
    seen: list = []
    for address in addresses:  # type: ignore[attr-defined]
        if address not in seen:
            seen.append(address)
    return seen


def _envelope(message: Message, primary: list[str]) -> Envelope:
    """The SMTP envelope of a composed e-mail: ``primary`` are the addresses it is for (one of
    them refused fails it); a refused copy (Cc) is only noted."""
    # The row's own bounce address when compose gave one (dispatch.mail.verp), else From.
    mail_from = getattr(message, "envelope_sender", None) or message.sender
    return Envelope(
        mail_from=_envelope_address(mail_from),
        rcpt_tos=tuple(_envelope_address(a) for a in _unique(message.send_to)),
        required=frozenset(_envelope_address(a).lower() for a in primary),
    )


# --- Claiming --------------------------------------------------------------------------------


def _due(at: dt.datetime):
    return or_(
        and_(
            OutboxMessage.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRYING]),
            or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= at),
        ),
        and_(
            OutboxMessage.status == DeliveryStatus.SENDING,
            or_(OutboxMessage.claimed_at.is_(None), OutboxMessage.claimed_at < at - LEASE),
        ),
    )


def claim_due(
    at: dt.datetime, limit: int | None, worker: str, claimed_at: dt.datetime | None = None
) -> list[int]:
    """Mark the rows due at ``at`` as ``sending`` by ``worker`` (claimed at ``claimed_at``,
    default ``at``), audit each claim, and commit; return their ids.

    One short transaction for the batch: the due rows are read, then taken by one conditional
    UPDATE that re-checks the due condition (so of two senders only one wins a row), and the
    claims audited together. PostgreSQL locks the rows it reads and skips those another
    sender is claiming; on SQLite the transaction takes the database's write lock before it
    reads, so two senders queue on that lock instead of deadlocking on a read-then-write
    upgrade.
    """
    claimed_at = claimed_at or at
    postgres = db.engine.dialect.name == "postgresql"
    if not postgres:
        # A write as the first statement: the driver BEGINs and SQLite takes the write lock.
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == -1)
            .values(claimed_by=None)
            .execution_options(synchronize_session=False)
        )
    query = (
        select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.claimed_by)
        .where(_due(at))
        .order_by(OutboxMessage.id)
    )
    if limit is not None:
        query = query.limit(limit)
    if postgres:
        # Rows another sender is claiming right now are skipped, not waited for.
        query = query.with_for_update(skip_locked=True, of=OutboxMessage)
    previous = {row.id: row for row in db.session.execute(query)}
    if not previous:
        db.session.commit()
        return []
    taken = db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(list(previous)), _due(at))
        .values(
            status=DeliveryStatus.SENDING,
            claimed_at=claimed_at,
            claimed_by=worker,
            attempts=OutboxMessage.attempts + 1,
        )
        .returning(
            OutboxMessage.id,
            OutboxMessage.attempts,
            OutboxMessage.message_id,
            OutboxMessage.dispatch_id,
        )
        .execution_options(synchronize_session=False)
    ).all()
    taken.sort(key=lambda row: row.id)
    entries = []
    for row in taken:
        details = {"worker": worker, "attempt": row.attempts, "message_id": row.message_id}
        before = previous[row.id]
        if before.status == DeliveryStatus.SENDING:
            # The previous sender died (or hung) after claiming it: it may have reached the
            # server.
            details["taken_over_from"] = before.claimed_by
        entries.append(
            {
                "action": "message.claimed",
                "actor": ACTOR,
                "at": claimed_at,
                "object_type": "outbox_message",
                "object_id": row.id,
                "dispatch_id": row.dispatch_id,
                "details": details,
            }
        )
    audit.record_many(entries)
    db.session.commit()
    return [row.id for row in taken]


def _renew(
    row_ids: list[int], claimed_at: dt.datetime, worker: str, moment: dt.datetime
) -> set[int]:
    """Refresh our claim on ``row_ids`` (claimed at ``claimed_at``) and commit; return the ids
    still ours (a row another sender has taken over is not)."""
    renewed = db.session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(row_ids),
            OutboxMessage.status == DeliveryStatus.SENDING,
            OutboxMessage.claimed_by == worker,
            OutboxMessage.claimed_at == claimed_at,
        )
        .values(claimed_at=moment)
        .returning(OutboxMessage.id)
        .execution_options(synchronize_session=False)
    ).scalars()
    ours = set(renewed)
    db.session.commit()
    return ours


class _Claim:
    """A claimed batch: which of its rows are still ours, confirmed once ``RENEW_AFTER`` old."""

    def __init__(self, row_ids: list[int], claimed_at: dt.datetime, worker: str) -> None:
        self.row_ids = row_ids
        self.claimed_at = claimed_at
        self.worker = worker
        self.ours = set(row_ids)

    def holds(self, row_id: int, now: dt.datetime) -> bool:
        """Whether ``row_id`` may be sent at ``now``: renews what is left of the batch first
        when the claim is ``RENEW_AFTER`` old."""
        if now - self.claimed_at >= RENEW_AFTER:
            # Every row of the batch still ours and in ``sending`` (the settled ones are not).
            self.ours = _renew(self.row_ids, self.claimed_at, self.worker, now)
            self.claimed_at = now
        return row_id in self.ours


def _release(row_ids: list[int], claim: _Claim, moment: dt.datetime, reason: str) -> int:
    """Give back our claim on ``row_ids``, none of them handed over, and commit: each goes back
    to where it was (``queued``, or ``retrying`` after an earlier failed attempt), due at once,
    the attempt its claim counted not spent; audited as ``message.released``. How many."""
    if not row_ids:
        return 0
    released = db.session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(row_ids),
            OutboxMessage.status == DeliveryStatus.SENDING,
            OutboxMessage.claimed_by == claim.worker,
            OutboxMessage.claimed_at == claim.claimed_at,
        )
        .values(
            status=case(
                (OutboxMessage.attempts > 1, DeliveryStatus.RETRYING),
                else_=DeliveryStatus.QUEUED,
            ),
            attempts=OutboxMessage.attempts - 1,
            claimed_at=None,
            claimed_by=None,
        )
        .returning(
            OutboxMessage.id,
            OutboxMessage.attempts,
            OutboxMessage.message_id,
            OutboxMessage.dispatch_id,
        )
        .execution_options(synchronize_session=False)
    ).all()
    audit.record_many(
        [
            {
                "action": "message.released",
                "actor": ACTOR,
                "at": moment,
                "object_type": "outbox_message",
                "object_id": row.id,
                "dispatch_id": row.dispatch_id,
                "details": {
                    "worker": claim.worker,
                    "message_id": row.message_id,
                    "attempt": row.attempts + 1,  # the claim's, not counted
                    "reason": reason,
                },
            }
            for row in sorted(released, key=lambda row: row.id)
        ]
    )
    db.session.commit()
    return len(released)


# --- Outcomes --------------------------------------------------------------------------------


def backoff(attempts: int) -> dt.timedelta:
    """Wait before the next attempt after ``attempts`` failed ones: 1, 2, 4 … minutes, ≤ 1 h."""
    delay = FIRST_BACKOFF * (2 ** max(attempts - 1, 0))
    return min(delay, MAX_BACKOFF)


@dataclass(frozen=True)
class _Row:
    """An outbox row as claimed: what composing, sending and recording its e-mail read of it.

    A plain copy, read for the whole batch in one query (``_load_claimed``): every outcome is
    committed at once, and ORM objects would be read again after each commit.
    """

    id: int
    dispatch_id: int
    recipient_id: int | None
    kind: MessageKind
    sequence: int
    to_addrs: list[str]
    cc_addrs: list[str]
    message_id: str
    attempts: int
    bounce_token: str | None = None  # its envelope sender's token (dispatch.mail.verp)

    @classmethod
    def of(cls, row: OutboxMessage) -> _Row:
        """The copy of a loaded row."""
        return cls(
            row.id,
            row.dispatch_id,
            row.recipient_id,
            MessageKind(row.kind),
            row.sequence,
            list(row.to_addrs),
            list(row.cc_addrs or []),
            row.message_id,
            row.attempts,
            row.bounce_token,
        )


@dataclass(frozen=True)
class _Recipient:
    """What a letter's e-mail reads of its recipient: the name, the province, the link's salt."""

    id: int
    name: str
    province_code: str
    token_salt: str | None


def _load_claimed(row_ids: list[int]) -> dict[int, tuple[_Row, _Recipient | None]]:
    """The claimed rows with their recipients, in one query."""
    o, r = _OUTBOX.c, DispatchRecipient.__table__.c
    query = (
        select(
            o.id,
            o.dispatch_id,
            o.recipient_id,
            o.kind,
            o.sequence,
            o.to_addrs,
            o.cc_addrs,
            o.message_id,
            o.attempts,
            o.bounce_token,
            r.name,
            r.province_code,
            r.token_salt,
        )
        .select_from(_OUTBOX.outerjoin(DispatchRecipient.__table__, r.id == o.recipient_id))
        .where(o.id.in_(row_ids))
    )
    loaded: dict[int, tuple[_Row, _Recipient | None]] = {}
    for found in db.session.execute(query):
        row = _Row(
            *found[:6], found.cc_addrs or [], found.message_id, found.attempts, found.bounce_token
        )
        recipient = None
        if found.recipient_id is not None and found.name is not None:
            recipient = _Recipient(
                found.recipient_id, found.name, found.province_code, found.token_salt
            )
        loaded[row.id] = (row, recipient)
    return loaded


def _audit(row: OutboxMessage | _Row, action: str, moment: dt.datetime, **details: object) -> None:
    audit.record(
        action,
        actor=ACTOR,
        at=moment,
        object_type="outbox_message",
        object_id=row.id,
        dispatch_id=row.dispatch_id,
        details={
            "kind": row.kind.value,
            "message_id": row.message_id,
            "to": row.to_addrs,
            "attempt": row.attempts,
            **details,
        },
    )


# Recording a 250, prepared once: the UPDATE of the row (on the table, not the ORM entity:
# nothing in the session holds the row, and the ORM's statement handling was a third of the
# cost of recording, bench/issue_63).
_MARK_SENT = (
    _OUTBOX.update()
    .where(_OUTBOX.c.id == bindparam("row_id"))
    .values(
        status=DeliveryStatus.SENT,
        sent_at=bindparam("sent_at"),
        smtp_reply=bindparam("smtp_reply"),
        sent_sha256=bindparam("sent_sha256"),
        sent_path=bindparam("sent_path"),
        last_error=None,
        next_attempt_at=None,
    )
)


def _mark_sent(row: _Row, sent: _AnsweredMessage, worker: str) -> None:
    """Mark the row sent with the server's reply and the SHA-256 of the exact bytes accepted,
    then audit it (the hash goes into the hash-chained entry too); the caller commits."""
    for _ in _marking_sent(row, sent, worker):
        pass


def _marking_sent(row: _Row, sent: _AnsweredMessage, worker: str) -> Iterator[None]:
    """``_mark_sent`` in two steps: the row, then its audit entry."""
    db.session.execute(
        _MARK_SENT,
        {
            "row_id": row.id,
            "sent_at": sent.at,
            "smtp_reply": sent.reply,
            "sent_sha256": sent.composed.sha256,
            "sent_path": sent_message_path(row.dispatch_id, row.id),
        },
    )
    yield
    _audit(
        row,
        "message.sent",
        sent.at,
        smtp_reply=sent.reply,
        worker=worker,
        sha256=sent.composed.sha256,
        size=len(sent.composed.data),
    )


class _KeptCopies:
    """Writes each e-mail's exact bytes to the archive before any of them leaves, from threads
    of its own.

    The copy (``sent_message_path``) is written under a temporary name, fsynced, renamed into
    place and its folder fsynced before the e-mail is handed over (``_hand_over_message`` waits
    for it): a row on record as sent has its copy whatever stops the sender, and the SHA-256 on
    record is that copy's, computed here from the bytes written (off the sending thread: the
    hash releases the GIL). The temporary name is fixed per e-mail, so one that a killed sender
    left behind is replaced when the e-mail is next written. A copy whose e-mail does not go
    after all (refused, or never handed over) is replaced at the next try; only a row recorded
    as sent points to its copy. The sender composes up to ``KEEP_AHEAD`` e-mails ahead, so the
    writing (waiting on a disk, milliseconds on a shared one) overlaps with sending the ones
    before; the copies queued together are written side by side (``COPY_WRITERS`` at once, so
    their fsyncs share the file system's journal commits) and share one fsync of their folder:
    each copy is reported kept only once that fsync, made after every rename of its group, has
    returned.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[list[tuple[ArchiveWriter, _Composed, Future]] | None] = (
            queue.SimpleQueue()
        )
        self._writers: dict[int, ArchiveWriter] = {}
        # Threads of its own, started here: an executor refuses work once the interpreter
        # begins to exit, while a scheduler's job may still be sending from another thread.
        self._copy_jobs: queue.SimpleQueue[tuple[ArchiveWriter, _Composed, Future] | None] = (
            queue.SimpleQueue()
        )
        self._copiers = [
            threading.Thread(target=self._copy, name=f"dispatch-copy-{n}", daemon=True)
            for n in range(COPY_WRITERS)
        ]
        self._thread = threading.Thread(target=self._run, name="dispatch-copies", daemon=True)
        for thread in (*self._copiers, self._thread):
            thread.start()

    def start(self, group: list[_Composed]) -> None:
        """Start writing the copies of the composed e-mails (each one's ``kept``)."""
        jobs = []
        for composed in group:
            row = composed.row
            writer = self._writers.get(row.dispatch_id)
            if writer is None:  # here: it reads the app's configuration
                writer = self._writers[row.dispatch_id] = sent_messages_writer(row.dispatch_id)
            composed.kept = Future()
            jobs.append((writer, composed, composed.kept))
        if jobs:
            self._jobs.put(jobs)

    def _run(self) -> None:
        """Write the copies queued, in order; those queued together share a folder fsync."""
        while True:
            jobs = self._jobs.get()
            if jobs is None:
                return
            batch = list(jobs)
            last = False
            while True:
                try:
                    jobs = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if jobs is None:
                    last = True
                    break
                batch += jobs
            self._write(batch)
            if last:
                return

    @staticmethod
    def _write_one(writer: ArchiveWriter, composed: _Composed) -> ArchivedFile:
        """Write one copy, fsynced and renamed into place (its folder not yet fsynced)."""
        row = composed.row
        return writer.write(
            sent_message_name(row.id),
            composed.data,
            sha256=hashlib.sha256(composed.data).hexdigest(),
            temporary=sent_message_temporary_name(row.id),
            sync_folder=False,  # once for the group, in ``_write``
        )

    def _copy(self) -> None:
        """One of the threads writing copies side by side, until told to stop (None)."""
        while (job := self._copy_jobs.get()) is not None:
            writer, composed, done = job
            try:
                done.set_result(self._write_one(writer, composed))
            except BaseException as exc:
                done.set_exception(exc)

    def _write(self, batch: list[tuple[ArchiveWriter, _Composed, Future]]) -> None:
        # Each copy has its own temporary name: one writer's files can be written at once.
        writing = []
        for writer, composed, kept in batch:
            done: Future[ArchivedFile] = Future()
            self._copy_jobs.put((writer, composed, done))
            writing.append((writer, kept, done))
        written: list[tuple[ArchiveWriter, Future, ArchivedFile]] = []
        for writer, kept, done in writing:
            try:
                copy = done.result()
            except BaseException as exc:  # told to the sender, which stops (``_wait_until_kept``)
                kept.set_exception(exc)
                continue
            written.append((writer, kept, copy))
        failed: dict[int, BaseException] = {}
        for writer in {id(writer): writer for writer, _, _ in written}.values():
            try:
                writer.sync_folder()
            except BaseException as exc:
                failed[id(writer)] = exc
        for writer, kept, copy in written:
            if id(writer) in failed:
                kept.set_exception(failed[id(writer)])
            else:
                kept.set_result(copy)

    def close(self) -> None:
        """Finish the copies being written, then stop the thread."""
        self._jobs.put(None)
        self._thread.join()
        for _ in self._copiers:
            self._copy_jobs.put(None)
        for thread in self._copiers:
            thread.join()


def _apply_failure(
    row: OutboxMessage, failure: SendFailure, moment: dt.datetime, worker: str
) -> DeliveryStatus:
    config = current_app.config
    max_attempts = int(config.get("DELIVERY_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
    give_up_after = dt.timedelta(
        hours=float(config.get("DELIVERY_GIVE_UP_HOURS") or DEFAULT_GIVE_UP_HOURS)
    )
    row.last_error = failure.reason
    if failure.reply is not None:
        row.smtp_reply = failure.reply
    gave_up = row.attempts >= max_attempts or moment - row.created_at >= give_up_after
    if failure.permanent or gave_up:
        row.status = DeliveryStatus.FAILED
        row.next_attempt_at = None
        if not failure.permanent:
            row.last_error = f"gave up after {row.attempts} attempts: {failure.reason}"
        _audit(
            row,
            "message.failed",
            moment,
            error=row.last_error,
            smtp_reply=failure.reply,  # the server's own words, when it answered
            worker=worker,
        )
        return DeliveryStatus.FAILED
    row.status = DeliveryStatus.RETRYING
    row.next_attempt_at = moment + backoff(row.attempts)
    _audit(
        row,
        "message.retrying",
        moment,
        error=failure.reason,
        smtp_reply=failure.reply,
        next_attempt_at=row.next_attempt_at.isoformat(),
        worker=worker,
    )
    return DeliveryStatus.RETRYING


_DONE = object()  # what ``next`` gives for a finished iterator
_STOP_REQUESTED = "tiến trình được yêu cầu dừng; thư đang gửi dở đã được ghi nhận"


class _Stop(Exception):
    """The run stops here (the database or the archive failed it, or the process was asked to
    end), and nothing else may be handed over.

    ``reason``: what the clerk is told (Vietnamese). ``unrecorded``: the row whose message the
    server may have accepted without it being on record (it goes again after the lease).
    """

    def __init__(self, reason: str, unrecorded: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unrecorded = unrecorded


def _database_error(exc: BaseException) -> str:
    """The driver's own first line about a database error (refused, terminated, locked …)."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [exc.__class__.__name__])[0]


def _commit_outcome(row_id: int, apply: Callable[[], _T]) -> _T:
    """Apply a message's outcome and commit it; what ``apply`` returned.

    Losing this commit would leave the row in ``sending``, and an accepted message would go out
    again after the lease: a database error is tried again (``OUTCOME_COMMIT_ATTEMPTS`` times
    quickly). Whatever happens, nothing else is handed over meanwhile; if the database did not
    take it at once, the run stops (``_Stop``) once it is recorded, or once ``OUTCOME_PATIENCE``
    has passed without.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = apply()
            db.session.commit()
        except DBAPIError as exc:
            db.session.rollback()
            waited = time.monotonic() - started
            if attempt == 1:
                log.warning(
                    "outbox row %s: the database did not take its outcome (%s); nothing else "
                    "is handed over until it does",
                    row_id,
                    _database_error(exc),
                )
            if waited >= OUTCOME_PATIENCE.total_seconds():
                raise _Stop(
                    f"không ghi được kết quả gửi của thư (mã hàng đợi {row_id}) vào cơ sở dữ "
                    f"liệu sau {waited:.0f} giây ({_database_error(exc)}); thư này có thể được "
                    f"gửi lại một lần sau {LEASE.seconds // 60} phút",
                    unrecorded=row_id,
                ) from exc
            time.sleep(min(attempt, 5))
            continue
        if attempt > OUTCOME_COMMIT_ATTEMPTS:
            waited = time.monotonic() - started
            raise _Stop(
                f"cơ sở dữ liệu không ghi được kết quả gửi trong {waited:.0f} giây; kết quả "
                "đã được ghi khi cơ sở dữ liệu trở lại"
            )
        return result


def _cancel_reason(row: OutboxMessage) -> str | None:
    """Why this row should no longer go out, or None."""
    if row.kind is MessageKind.REMINDER and row.recipient_id is not None:
        recipient = db.session.get(DispatchRecipient, row.recipient_id)
        if recipient is None:
            return "recipient removed"
        if recipient.acknowledged_at is not None:
            return "the office confirmed receipt before the reminder left"
        if recipient.reminders_stopped:
            return "reminders stopped for this office"
    if row.kind is MessageKind.ESCALATION:
        dispatch = db.session.get(Dispatch, row.dispatch_id)
        if dispatch is not None and not unconfirmed_recipients(dispatch):
            return "every office confirmed before the escalation left"
    return None


@dataclass
class _Composed:
    """A claimed row whose e-mail is composed, ready to be handed over."""

    row: _Row
    message: Message
    envelope: Envelope
    data: bytes  # the exact bytes handed over, and kept
    sha256: str = ""  # theirs, from their kept copy (``_wait_until_kept``)
    kept: Future[ArchivedFile] | None = None  # their copy in the archive, being written


@dataclass
class _AwaitingReply:
    """A row whose e-mail the server has been handed and is reading."""

    composed: _Composed
    handover: Handover


def _commit_failure(
    row_id: int,
    failure: SendFailure,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
) -> None:
    """Record a message that did not go (retry later, or failed for good) and commit."""

    def apply() -> tuple[DeliveryStatus, str]:
        row = db.session.get(OutboxMessage, row_id, populate_existing=True)
        assert row is not None
        return _apply_failure(row, failure, moment(), worker), row.message_id

    status, message_id = _commit_outcome(row_id, apply)
    report.errors.append(f"{message_id}: {failure.reason}")
    if status is DeliveryStatus.FAILED:
        report.failed += 1
    else:
        report.retrying += 1


def _compose_claimed(
    claimed: tuple[_Row, _Recipient | None],
    claim: _Claim,
    cache: ComposeCache,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
) -> _Composed | None:
    """Check the claim and compose the e-mail; None if the row is settled without sending.

    A letter goes as it was claimed: nothing but another sender (the claim) can stop it. A
    reminder or an escalation is read again first, with its recipient, since an office may
    have confirmed meanwhile. The claim is checked again just before the e-mail goes
    (``_hand_over_message``).
    """
    row, recipient = claimed
    if not claim.holds(row.id, moment()):
        report.skipped += 1
        log.warning("outbox row %s was taken over by another sender; skipped", row.id)
        return None
    if row.kind is not MessageKind.LETTER:
        current = db.session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.id == row.id)
            .options(joinedload(OutboxMessage.recipient))
            .execution_options(populate_existing=True)
        ).scalar_one()
        reason = _cancel_reason(current)
        if reason is not None:
            current.status = DeliveryStatus.CANCELLED
            current.last_error = reason
            current.next_attempt_at = None
            _audit(current, "message.cancelled", moment(), reason=reason, worker=worker)
            db.session.commit()
            report.cancelled += 1
            return None
        row, recipient = _Row.of(current), current.recipient
    try:
        message = compose(row, at=moment(), cache=cache, recipient=recipient)
    except ComposeError as exc:
        # A missing or altered archive file may be restored: retry, and say so in the log.
        log.error("outbox row %s cannot be composed: %s", row.id, exc)
        _commit_failure(
            row.id, SendFailure(f"cannot compose: {exc}", permanent=False), worker, moment, report
        )
        return None
    if message.has_bad_headers():
        failure = SendFailure("header contains a line break", permanent=True)
        _commit_failure(row.id, failure, worker, moment, report)
        return None
    data = message.as_bytes()
    envelope = _envelope(message, row.to_addrs)
    return _Composed(row, message, envelope, data)


def _wait_until_kept(composed: _Composed) -> None:
    """Wait for the composed e-mail's copy to be durable, and take its SHA-256 from it;
    ``_Stop`` if it cannot be kept: nothing goes without its copy."""
    if composed.kept is None:
        composed.sha256 = hashlib.sha256(composed.data).hexdigest()
        return
    try:
        composed.sha256 = composed.kept.result().sha256
    except ArchiveError as exc:
        raise _Stop(f"không lưu được bản thư sẽ gửi vào kho lưu trữ ({exc})") from exc


def _hand_over_message(
    composed: _Composed,
    claim: _Claim,
    session: SmtpSession,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
    meanwhile: Callable[[], bool] | None = None,
    before_end: Callable[[], bool] | None = None,
) -> _AwaitingReply | None:
    """Give the composed e-mail's data to the server; None if it was refused before its data
    or taken over by another sender while it was being composed. ``meanwhile`` and
    ``before_end``: work done in steps while the server answers the commands and reads the
    data (``SmtpSession.hand_over``); ``meanwhile`` is finished before anything else is
    written."""
    row_id = composed.row.id
    if not claim.holds(row_id, moment()):
        report.skipped += 1
        log.warning("outbox row %s was taken over by another sender; skipped", row_id)
        return None
    try:
        handover = session.hand_over(composed.envelope, composed.data, meanwhile, before_end)
    except SendFailure as failure:
        while meanwhile is not None and meanwhile():
            pass  # all of it, before this failure is written
        if not failure.server_wide:  # else left for a later run with the rest (``_release``)
            _commit_failure(row_id, failure, worker, moment, report)
        return None
    return _AwaitingReply(composed, handover)


@dataclass
class _AnsweredMessage:
    """The record of a handed-over e-mail whose reply has been read, its outcome still to be
    committed."""

    composed: _Composed  # the row, and the exact bytes handed over with their SHA-256
    at: dt.datetime  # when the reply was read
    reply: str = ""  # the server's 250
    failure: SendFailure | None = None


def _read_reply(
    awaiting: _AwaitingReply, session: SmtpSession, moment: Callable[[], dt.datetime]
) -> _AnsweredMessage:
    """The server's reply to a handed-over e-mail (not yet recorded)."""
    try:
        reply = session.read_reply(awaiting.handover)
    except SendFailure as failure:
        return _AnsweredMessage(awaiting.composed, moment(), failure=failure)
    # Flask-Mail's signal, as its own ``send`` gives it (``mail.record_messages`` listens).
    email_dispatched.send(current_app._get_current_object(), message=awaiting.composed.message)
    return _AnsweredMessage(awaiting.composed, moment(), reply=reply)


def _record_outcome(
    answered: _AnsweredMessage,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
) -> None:
    """Commit the outcome of an answered e-mail (its copy was kept before it left). Raises
    ``_Stop`` when the database did not take it at once; any other error is
    logged and leaves the row in ``sending`` (tried again after the lease), as ``_guarded``
    does."""
    row = answered.composed.row
    try:
        if answered.failure is not None:
            _commit_failure(row.id, answered.failure, worker, moment, report)
            return
        try:
            _commit_outcome(row.id, lambda: _mark_sent(row, answered, worker))
        except _Stop as stop:
            if stop.unrecorded is None:  # on record after all
                report.sent += 1
            raise
        report.sent += 1
    except _Stop:
        raise
    except Exception:
        db.session.rollback()
        log.exception("outbox row %s: unexpected error; left for a later run", row.id)
        report.errors.append(f"row {row.id}: unexpected error")


def _recording_outcome(
    answered: _AnsweredMessage,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
) -> Iterator[None]:
    """``_record_outcome`` in steps, for the caller to take one at a time while the server
    answers the next message's commands: a 250's row, its audit entry, the commit. Should the
    database not take them at once, or anything else go wrong, it is rolled back and recorded
    as ``_record_outcome`` does, patiently, in the last step."""
    if answered.failure is None:
        try:
            yield from _marking_sent(answered.composed.row, answered, worker)
            yield
            db.session.commit()
        except Exception:
            db.session.rollback()
        else:
            report.sent += 1
            return
    _record_outcome(answered, worker, moment, report)


def _guarded(
    row_id: int,
    report: DeliveryReport,
    step: Callable[[], _T],
    on_error: Callable[[], None] | None = None,
) -> _T | None:
    """Run one step for a row; an unexpected error leaves the row in ``sending`` (tried again
    after the lease), calls ``on_error``, and the run goes on with the next row. A database
    error stops the run (``_Stop``): nothing may be handed over that could not be recorded."""
    try:
        return step()
    except _Stop:
        if on_error is not None:
            on_error()
        raise
    except DBAPIError as exc:
        db.session.rollback()
        if on_error is not None:
            on_error()
        log.warning("outbox row %s: database error: %s", row_id, _database_error(exc))
        raise _Stop(f"lỗi cơ sở dữ liệu ({_database_error(exc)})") from exc
    except Exception:
        db.session.rollback()
        if on_error is not None:
            on_error()
        log.exception("outbox row %s: unexpected error; left for a later run", row_id)
        report.errors.append(f"row {row_id}: unexpected error")
        return None


def _send_claimed(
    claimed: list[int],
    claimed_at: dt.datetime,
    session: SmtpSession,
    copies: _KeptCopies,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
    stop: threading.Event | None = None,
) -> None:
    """Send the claimed rows in order, one message at a time: hand it over once its copy is
    kept, read the server's reply, and commit its outcome before the next one's data leaves.

    Each process works while the other does (``SmtpSession.hand_over``): the sender commits
    the previous outcome, in steps, while the server answers this message's MAIL FROM, RCPT TO
    and DATA, and composes the next e-mail while the server reads this one, before the line
    with one dot that ends it (until that line the server can accept nothing of it).

    So an accepted message is without its record only from the end of its data to that commit:
    the rest of the server's reading, its 250, and the outcome written before anything that may
    take time (composing when behind, waiting for a copy, another message's failure). A sender
    killed meanwhile leaves that row in ``sending``, sent again (with the same Message-ID) after
    the lease; killed while it composes, it leaves the message being read unaccepted. The next
    e-mails (up to ``KEEP_AHEAD``) are composed, and their copies written a few at a time,
    before they are handed over; only the first messages of a batch are composed several in a
    row. A reminder composed ahead was read again a few messages before it leaves (an office
    confirming meanwhile still gets it). When the run stops (``_Stop``) or the relay is given
    up, the rows nothing of which reached the server go back to the queue untried
    (``_give_back``), once the last outcome is on record.
    """
    # An unexpected error while a message is with the server leaves the connection in the
    # middle of it: drop it, the next message opens a new one.
    abandon = session.abandon
    cache = ComposeCache()  # per batch: a file changed meanwhile is seen by the next batch
    claim = _Claim(claimed, claimed_at, worker)
    untried = 0  # claimed[untried:]: rows nothing of which has reached the server
    composed: dict[int, _Composed | None] = {}  # by position: ready, or settled without going
    next_up = 0  # the next position to compose: those before it are composed (or settled)
    unkept: list[_Composed] = []  # composed, their copies not yet started

    def keep_copies() -> None:
        # Started together: written side by side, with one folder fsync (``_KeptCopies``).
        copies.start(unkept)
        unkept.clear()

    def compose_next(loaded: dict[int, tuple[_Row, _Recipient | None]]) -> None:
        nonlocal next_up
        position, next_up = next_up, next_up + 1
        row_id = claimed[position]
        ready = None
        if row_id in loaded:
            step = partial(_compose_claimed, loaded[row_id], claim, cache, worker, moment, report)
            ready = _guarded(row_id, report, step)
            if ready is not None:
                unkept.append(ready)
                if len(unkept) >= KEEP_AHEAD // 2:
                    keep_copies()
        composed[position] = ready

    # The steps of recording the last reply read (``_recording_outcome``): taken while the
    # server answers the next message's commands, or at once before anything that may take time.
    recording: list[Iterator[None]] = []

    def record_step() -> bool:
        # One step; whether more is left.
        if recording and next(recording[0], _DONE) is _DONE:
            recording.clear()
        return bool(recording)

    def record_answered() -> None:
        while record_step():
            pass

    try:
        loaded = _guarded(claimed[0], report, partial(_load_claimed, claimed))
        if loaded is None:
            return  # the rows stay claimed and go after the lease
        for position, row_id in enumerate(claimed):
            untried = position
            if session.given_up is not None:
                break
            if stop is not None and stop.is_set():
                raise _Stop(_STOP_REQUESTED)
            if next_up <= position:
                record_answered()
                while next_up <= position:
                    compose_next(loaded)
            ready = composed.pop(position)
            if ready is None:
                continue
            if ready.kept is None:
                keep_copies()  # this one's, with those composed since the last started
            if next_up - position <= KEEP_AHEAD // 2:
                # Composing while the server reads the data has fallen behind (the first
                # messages, or no server): several ahead at once, their copies written
                # together while this one and the next go.
                record_answered()
                while next_up < min(position + KEEP_AHEAD + 1, len(claimed)):
                    compose_next(loaded)
            assert ready.kept is not None
            if not ready.kept.done():
                record_answered()
            _wait_until_kept(ready)
            untried = position + 1

            def before_the_end(step: Callable[[], bool], position: int = position) -> bool:
                # A step of our own work taken while the server has this message but can accept
                # nothing of it yet: should it stop the run, the message was not handed over.
                nonlocal untried
                try:
                    return step()
                except _Stop:
                    untried = position
                    raise

            def compose_ahead(position: int = position) -> bool:
                # One more e-mail, composed while the server reads this one.
                if next_up >= min(position + KEEP_AHEAD + 1, len(claimed)):
                    return False
                compose_next(loaded)
                return True

            def hand_over(ready: _Composed = ready) -> _AwaitingReply | None:
                try:
                    return _hand_over_message(
                        ready,
                        claim,
                        session,
                        worker,
                        moment,
                        report,
                        meanwhile=partial(before_the_end, record_step),
                        before_end=partial(before_the_end, compose_ahead),
                    )
                finally:
                    record_answered()  # all of it, before any error is handled

            awaiting = _guarded(row_id, report, hand_over, abandon)
            if awaiting is None:
                if session.given_up is not None:  # refused with the whole server: untried
                    untried = position
                    break
                continue
            read = partial(_read_reply, awaiting, session, moment)
            answered = _guarded(row_id, report, read, abandon)
            if answered is not None:
                recording.append(_recording_outcome(answered, worker, moment, report))
        else:
            untried = len(claimed)
        record_answered()
    except _Stop as stopped_by:
        stop_reason = stopped_by.reason
        try:
            record_answered()
        except _Stop as unrecorded:  # says that a message may go twice: that first
            stop_reason = unrecorded.reason
        report.stopped = stop_reason
        reason = "the run stopped: " + (
            "asked to"
            if stop_reason == _STOP_REQUESTED
            else "the database or the archive failed it"
        )
        _give_back(claimed[untried:], claim, moment(), reason, report)
        return
    if session.given_up is not None:
        report.held_back = session.given_up
        _give_back(claimed[untried:], claim, moment(), session.given_up, report)


def _give_back(
    row_ids: list[int], claim: _Claim, moment: dt.datetime, reason: str, report: DeliveryReport
) -> None:
    """Release the rows of a run that stops before them (``_release``), if the database lets
    us: otherwise they stay claimed, and go after the lease."""
    try:
        report.released += _release(row_ids, claim, moment, reason)
    except DBAPIError as exc:
        db.session.rollback()
        log.warning("claims not released (%s): they go after the lease", _database_error(exc))


def deliver_due(
    at: dt.datetime,
    limit: int | None = None,
    worker: str | None = None,
    stop: threading.Event | None = None,
) -> DeliveryReport:
    """Send the outbox rows due at ``at``; commits on its own, each outcome before the next leaves.

    At most ``limit`` rows, over one SMTP connection. Claims, renewals and outcomes are each
    committed here, so a sender killed at any point leaves at most one message without a
    record (see the module's docstring); the caller's ``unit_of_work`` only ends the session.
    ``stop``, once set (a signal asking the process to end), ends the run after the outcome of
    the message in hand is recorded: the rest goes back to the queue, and nothing is sent twice.
    """
    worker = worker or default_worker()
    started = time.monotonic()

    def moment() -> dt.datetime:
        return at + dt.timedelta(seconds=time.monotonic() - started)

    report = DeliveryReport()
    # Read from the configuration at each run, so a changed setting needs no restart.
    settings = SmtpSettings.from_config(current_app.config, testing=current_app.testing)
    session = SmtpSession(settings)  # connects at its first message
    copies = _KeptCopies()
    try:
        with session:
            _deliver_batches(at, limit, worker, moment, session, copies, report, stop)
    finally:
        copies.close()
    return report


def _deliver_batches(
    at: dt.datetime,
    limit: int | None,
    worker: str,
    moment: Callable[[], dt.datetime],
    session: SmtpSession,
    copies: _KeptCopies,
    report: DeliveryReport,
    stop: threading.Event | None,
) -> None:
    """Claim and send batches until nothing is due at ``at`` or ``limit`` rows were claimed."""
    while limit is None or report.claimed < limit:
        if stop is not None and stop.is_set():
            report.stopped = _STOP_REQUESTED
            break
        size = CLAIM_BATCH if limit is None else min(CLAIM_BATCH, limit - report.claimed)
        # Due at ``at`` (what failed during this run waits for a later run), claimed now.
        claimed_at = moment()
        claimed = claim_due(at, size, worker, claimed_at=claimed_at)
        if not claimed:
            break
        report.claimed += len(claimed)
        _send_claimed(claimed, claimed_at, session, copies, worker, moment, report, stop)
        if session.unreachable is not None or session.given_up is not None:
            break  # the server is down or refuses our sender: leave the rest queued for later
        if report.stopped is not None:
            break  # the database failed the run: claim nothing more
    report.connections = session.connections
