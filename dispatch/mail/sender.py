"""The sender: takes due outbox rows, sends each over SMTP, records the server's answer.

``deliver_due(at)`` runs in three steps, each committed on its own so that a crash loses at
most the message in flight:

1. **Claim** the due rows (queued, or retrying with ``next_attempt_at <= at``, or stuck in
   ``sending`` longer than ``LEASE`` because their sender died): they become ``sending`` with
   ``claimed_by``/``claimed_at``. PostgreSQL takes them with ``FOR UPDATE SKIP LOCKED``; both
   databases re-check the due condition in a conditional UPDATE, so two senders never both win
   the same row.
2. **Send** them over ONE SMTP connection (opened with ``MAIL_TIMEOUT``), one message per
   recipient. Before a message goes, a claim older than ``RENEW_AFTER`` is renewed for the
   rest of its batch at once (a conditional UPDATE on our own claim): a row another sender has
   taken over meanwhile is skipped. No other sender can take a row whose claim is younger than
   ``LEASE``, so a message leaves at most ``RENEW_AFTER`` after its claim was last confirmed,
   nine minutes inside the lease. Rows are claimed ``CLAIM_BATCH`` at a time and each batch is
   sent before the next is claimed, so the first message leaves at once, claims stay fresh
   during a long run, and memory does not grow with the outbox. While the server reads and
   checks a message's data, the next message is prepared (e-mail composed); only then is the
   server's reply read: the two sides work at once.
3. **Record** each outcome as soon as the reply is read, while the next message's envelope is
   exchanged, and commit it before that message's data leaves: the server's 250 → ``sent``
   with its reply;
   a 4xx, a lost connection or a timeout → ``retrying`` with exponential back-off (1, 2, 4 …
   minutes, at most an hour, ``failed`` after ``DELIVERY_MAX_ATTEMPTS`` attempts or
   ``DELIVERY_GIVE_UP_HOURS`` hours); a 5xx → ``failed`` with the reply. A reminder whose office
   has confirmed meanwhile, or an escalation with nobody left to chase, becomes ``cancelled``.

**Never twice what was accepted.** A row is ``sent`` only after the server's 250, committed
before the next message's data leaves. What is left is the message the server may accept
without the sender knowing: one whose data has left and whose reply has not been read and
committed yet (a few milliseconds per message, while the next one is composed and the next
envelope exchanged). A sender killed then leaves that one row in ``sending``, and after the
lease it is sent again with the SAME Message-ID (``OutboxMessage.message_id``), which lets the
receiving side recognise the copy; every other row is either on record or was never handed over.

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
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parseaddr
from functools import partial
from types import TracebackType
from typing import TypeVar

from flask import current_app
from flask_mail import Message, email_dispatched, sanitize_address
from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import joinedload

from dispatch import audit
from dispatch.archive import (
    ArchiveError,
    ArchiveWriter,
    sent_message_name,
    sent_message_path,
    sent_messages_writer,
)
from dispatch.extensions import db
from dispatch.mail.compose import ComposeCache, ComposeError, compose, unconfirmed_recipients
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
OUTCOME_COMMIT_ATTEMPTS = 5
# Rows claimed at a time: each batch is sent before the next is claimed.
CLAIM_BATCH = 100


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
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """How many rows this run settled."""
        return self.sent + self.retrying + self.failed + self.cancelled


# --- SMTP ------------------------------------------------------------------------------------


class SendFailure(Exception):
    """A message was not accepted; ``permanent`` says whether trying again can help."""

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool,
        connection_lost: bool = False,
        reply: str | None = None,
        before_data: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.connection_lost = connection_lost
        self.reply = reply  # the server's answer, when it gave one
        self.before_data = before_data  # nothing of the message reached the server


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


def _by_code(step: str, code: int, text: bytes | str) -> SendFailure:
    reply = _reply(code, text)
    # 421 means the server is closing the connection: temporary, and the connection is gone.
    return SendFailure(
        f"{step}: {reply}", permanent=500 <= code < 600, connection_lost=code == 421, reply=reply
    )


class SmtpSession:
    """One SMTP connection for a batch, opened on first use, that returns the DATA reply.

    Flask-Mail builds the messages; the transaction is done here with smtplib's ``mail``,
    ``rcpt`` and ``data`` because Flask-Mail's ``send`` hides the server's answer, loses a
    refused recipient among several, and opens connections without a timeout.
    """

    def __init__(self) -> None:
        # Read from the configuration at each batch (as Flask-Mail would at start-up, with its
        # defaults), so a changed setting takes effect without a restart.
        config = current_app.config
        self.server: str = config.get("MAIL_SERVER") or "127.0.0.1"
        self.port: int = int(config.get("MAIL_PORT") or 25)
        self.use_ssl: bool = bool(config.get("MAIL_USE_SSL"))
        self.use_tls: bool = bool(config.get("MAIL_USE_TLS"))
        self.username: str | None = config.get("MAIL_USERNAME")
        self.password: str | None = config.get("MAIL_PASSWORD")
        self.suppress: bool = bool(config.get("MAIL_SUPPRESS_SEND", current_app.testing))
        self.timeout: float = float(config.get("MAIL_TIMEOUT") or 30)
        self.smtp: smtplib.SMTP | None = None
        self.unreachable: str | None = None  # set once connecting failed: no retry this batch
        self.connections = 0

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        if self.unreachable is not None:
            raise SendFailure(self.unreachable, permanent=False, connection_lost=True)
        smtp: smtplib.SMTP | None = None
        try:
            if self.use_ssl:
                smtp = smtplib.SMTP_SSL(
                    self.server,
                    self.port,
                    timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(self.server, self.port, timeout=self.timeout)
            self.connections += 1
            smtp.ehlo()
            if self.use_tls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self.username and self.password:
                smtp.login(self.username, self.password)
        except (smtplib.SMTPException, OSError) as exc:
            if smtp is not None:
                smtp.close()
            # Whatever the code (even a 535 on login), it is no fault of the message: retry.
            self.unreachable = f"cannot connect to {self.server}:{self.port}: {_describe(exc)}"
            raise SendFailure(self.unreachable, permanent=False, connection_lost=True) from exc
        self.smtp = smtp
        return smtp

    def close(self) -> None:
        """End the connection politely if it is still there."""
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            smtp.close()

    def _drop(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()

    def _rset(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def send(self, message: Message, primary: list[str]) -> str:
        """Send ``message``; return the server's reply to DATA, or raise ``SendFailure``.

        ``primary`` are the addresses the message is for: if one is refused the message fails;
        a refused copy (Cc) is noted in the reply and the message still goes.
        """
        return self.finish(self.begin(message, primary))

    def begin(
        self,
        message: Message,
        primary: list[str],
        data: bytes | None = None,
        meanwhile: Iterator[object] | None = None,
    ) -> InFlight:
        """Hand ``message`` to the server up to its last byte, without waiting for the reply.

        The server reads and checks the data while the caller prepares the next message, then
        ``finish`` reads the reply. Raises ``SendFailure`` when the message is refused before
        its data (``primary`` as for ``send``). ``data``: the message already serialised.

        ``meanwhile``: work done one step after each envelope command (MAIL, RCPT, DATA) is
        sent, while the server answers it; the sender writes the previous message's outcome so.
        It is always run to its end, and before any byte of this message's data leaves.
        """
        steps = _Steps(meanwhile)
        try:
            return self._begin(message, primary, data, steps)
        finally:
            steps.finish()

    def _begin(
        self, message: Message, primary: list[str], data: bytes | None, steps: _Steps
    ) -> InFlight:
        if message.has_bad_headers():
            raise SendFailure("header contains a line break", permanent=True)
        envelope_from = _envelope_address(message.sender)
        recipients = [_envelope_address(a) for a in _unique(message.send_to)]
        primary_set = {_envelope_address(a).lower() for a in primary}
        data = message.as_bytes() if data is None else data
        if self.suppress:
            # MAIL_SUPPRESS_SEND (tests of other areas): nothing leaves, listeners still hear it.
            email_dispatched.send(current_app._get_current_object(), message=message)
            return InFlight(message, data, reply="250 not sent: MAIL_SUPPRESS_SEND is on")
        if self.unreachable is not None:
            raise SendFailure(self.unreachable, permanent=False, connection_lost=True)
        for attempt in (1, 2):
            reused = self.smtp is not None
            smtp = self.smtp or self._connect()
            try:
                refused = self._transact(smtp, envelope_from, recipients, primary_set, data, steps)
            except SendFailure as failure:
                if attempt == 1 and reused and failure.connection_lost and failure.before_data:
                    # A kept-open connection the server had closed (idle time-out, a limit per
                    # connection): nothing of this message was sent, so try a new one, once.
                    self._drop()
                    continue
                raise
            return InFlight(message, data, refused, smtp)
        raise AssertionError("unreachable")  # the loop returns or raises

    def finish(self, flight: InFlight) -> str:
        """The server's reply to the data of ``flight`` (begun by ``begin``), or ``SendFailure``."""
        if flight.reply is not None:
            return flight.reply
        smtp = flight.smtp
        assert smtp is not None
        try:
            code, text = smtp.getreply()
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
        except smtplib.SMTPDataError as exc:
            failure = _by_code("DATA", exc.smtp_code, exc.smtp_error)
            if failure.connection_lost:
                self._drop()
            else:
                self._rset(smtp)
            raise failure from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise SendFailure(
                f"DATA: connection lost: {_describe(exc)}", permanent=False, connection_lost=True
            ) from exc
        except smtplib.SMTPResponseException as exc:
            self._drop()
            raise _by_code("DATA", exc.smtp_code, exc.smtp_error) from exc
        email_dispatched.send(current_app._get_current_object(), message=flight.message)
        reply = _reply(code, text)
        if flight.refused:
            reply += " (copy refused: " + "; ".join(flight.refused) + ")"
        return reply

    def abandon(self) -> None:
        """Drop the connection after an unexpected error: it may be in the middle of a message."""
        self._drop()

    def _transact(
        self,
        smtp: smtplib.SMTP,
        envelope_from: str,
        recipients: list[str],
        primary: set[str],
        data: bytes,
        steps: _Steps,
    ) -> list[str]:
        """One MAIL/RCPT/DATA transaction up to the data's last byte (``finish`` reads the
        reply); the refused copies, or ``SendFailure``. A step of ``steps`` runs while the
        server answers each command (``smtplib``'s ``mail`` and ``rcpt``, split in two)."""
        step = "MAIL FROM"
        try:
            smtp.putcmd("mail", f"FROM:{smtplib.quoteaddr(envelope_from)}")
            steps.step()
            code, text = smtp.getreply()
            if code != 250:
                failure = _by_code(step, code, text)
                failure.permanent = False  # our sender refused: no fault of this message
                failure.before_data = True
                if code != 421:
                    self._rset(smtp)
                    # Every other message would be refused too: leave them for a later run.
                    self.unreachable = f"sender refused: {failure.reason}"
                raise failure
            refused: list[str] = []
            for address in recipients:
                step = f"RCPT TO:<{address}>"
                smtp.putcmd("rcpt", f"TO:{smtplib.quoteaddr(address)}")
                steps.step()
                code, text = smtp.getreply()
                if code in (250, 251):
                    continue
                if code < 500 or address.lower() in primary:
                    failure = _by_code(step, code, text)
                    failure.before_data = True
                    if code != 421:
                        self._rset(smtp)
                    raise failure
                refused.append(f"<{address}> {_reply(code, text)}")
            step = "DATA"
            _send_data(smtp, data, steps)
        except smtplib.SMTPDataError as exc:
            failure = _by_code(step, exc.smtp_code, exc.smtp_error)
            failure.before_data = step != "DATA"
            if failure.connection_lost:
                self._drop()
            else:
                self._rset(smtp)
            raise failure from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise SendFailure(
                f"{step}: connection lost: {_describe(exc)}",
                permanent=False,
                connection_lost=True,
                before_data=step != "DATA",
            ) from exc
        except smtplib.SMTPResponseException as exc:
            self._drop()
            failure = _by_code(step, exc.smtp_code, exc.smtp_error)
            failure.before_data = step != "DATA"
            raise failure from exc
        except SendFailure as failure:
            if failure.connection_lost:  # 421: the server is closing the connection
                self._drop()
            raise
        return refused


@dataclass
class InFlight:
    """A message handed to the server whose reply to its data is still to be read."""

    message: Message
    data: bytes  # the exact bytes handed over
    refused: list[str] = field(default_factory=list)  # copies (Cc) the server refused
    smtp: smtplib.SMTP | None = None
    reply: str | None = None  # known at once when nothing was sent (MAIL_SUPPRESS_SEND)


_LEADING_DOT = re.compile(rb"(?m)^\.")


class _Steps:
    """Work done a step at a time between SMTP commands (``SmtpSession.begin``'s
    ``meanwhile``), and finished on demand."""

    def __init__(self, steps: Iterator[object] | None) -> None:
        self._steps = steps

    def step(self) -> None:
        """Run the next step, if any is left."""
        if self._steps is not None and next(self._steps, _DONE) is _DONE:
            self._steps = None

    def finish(self) -> None:
        """Run every step left."""
        steps, self._steps = self._steps, None
        _finish(steps)


_DONE = object()


def _send_data(smtp: smtplib.SMTP, data: bytes, steps: _Steps) -> None:
    """DATA and the message, exactly as ``smtplib.SMTP.data`` sends them, but without reading
    the final reply (``SmtpSession.finish`` does); ``steps`` are finished before the data."""
    smtp.putcmd("data")
    steps.step()
    code, text = smtp.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, text)
    steps.finish()
    quoted = data
    if data.startswith(b".") or b"\n." in data:  # base64 lines never need it: skip the scan
        quoted = _LEADING_DOT.sub(b"..", data)  # dot-stuffing, RFC 5321 4.5.2
    if not quoted.endswith(b"\r\n"):
        quoted += b"\r\n"
    smtp.send(quoted + b".\r\n")


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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if exc.__class__.__name__ not in text else text


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
        """Whether ``row_id`` may be sent at ``now``: renews the rest of the batch first when
        the claim is ``RENEW_AFTER`` old (a database error leaves the claim to renew later)."""
        if now - self.claimed_at >= RENEW_AFTER:
            rest = self.row_ids[self.row_ids.index(row_id) :]
            self.ours = _renew(rest, self.claimed_at, self.worker, now)
            self.claimed_at = now
        return row_id in self.ours


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
            r.name,
            r.province_code,
            r.token_salt,
        )
        .select_from(_OUTBOX.outerjoin(DispatchRecipient.__table__, r.id == o.recipient_id))
        .where(o.id.in_(row_ids))
    )
    loaded: dict[int, tuple[_Row, _Recipient | None]] = {}
    for found in db.session.execute(query):
        row = _Row(*found[:6], found.cc_addrs or [], found.message_id, found.attempts)
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


def _writing_sent(row: _Row, sent: _Answered, worker: str) -> Iterator[None]:
    """Mark the row sent with the server's reply and the SHA-256 of the exact bytes accepted,
    then audit it (the hash goes into the hash-chained entry too), a statement per step; the
    caller commits."""
    db.session.execute(
        _MARK_SENT,
        {
            "row_id": row.id,
            "sent_at": sent.at,
            "smtp_reply": sent.reply,
            "sent_sha256": sent.ready.sha256,
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
        sha256=sent.ready.sha256,
        size=len(sent.ready.data),
    )


def _record_sent(row: _Row, sent: _Answered, worker: str) -> None:
    """``_writing_sent`` in one go."""
    for _ in _writing_sent(row, sent, worker):
        pass


class _Keeper:
    """Keeps accepted messages' bytes from a thread of its own, in the order they were sent.

    After its outcome is committed, not before: the commit is what keeps a message from being
    sent twice, and a file that could not be written is only missing from the evidence (its
    SHA-256 is on record). Each file is written and fsynced (milliseconds of waiting on a
    disk): done inline, that wait was added to every message (bench/issue_63); here it overlaps
    with sending the next ones, and each folder's entries are made durable once, at ``close``,
    which waits for the last file, so a run returns with every file written. A sender killed
    meanwhile leaves the last few files unwritten, which is what a failed write already means.
    """

    def __init__(self) -> None:
        self._app = current_app._get_current_object()  # type: ignore[attr-defined]
        # Bounded: if the disk falls behind, sending waits rather than memory growing (16
        # e-mails of ~100 KB; 64 showed as the sender's memory growing with the run's size).
        self._queue: queue.Queue[tuple[int, int, bytes, str] | None] = queue.Queue(maxsize=16)
        self._thread: threading.Thread | None = None  # started with the first file
        self._writers: dict[int, ArchiveWriter] = {}

    def _keep(self, dispatch_id: int, row_id: int, data: bytes, sha256: str) -> None:
        writer = self._writers.get(dispatch_id)
        if writer is None:
            writer = self._writers[dispatch_id] = sent_messages_writer(dispatch_id)
        try:
            writer.write(sent_message_name(row_id), data, sha256=sha256, sync_folder=False)
        except ArchiveError as exc:
            log.error("outbox row %s: sent, but its bytes could not be kept: %s", row_id, exc)

    def _run(self) -> None:
        with self._app.app_context():
            while (item := self._queue.get()) is not None:
                try:
                    self._keep(*item)
                except Exception:  # never lose the thread: the next files still get written
                    log.exception("outbox row %s: keeping its bytes failed", item[1])
            for writer in self._writers.values():
                try:
                    writer.sync_folder()
                except ArchiveError as exc:
                    log.error("sent e-mails of a dispatch may not be kept: %s", exc)

    def keep(self, dispatch_id: int, row_id: int, data: bytes, sha256: str) -> None:
        """Queue a sent message's bytes (with their SHA-256) to be kept."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dispatch-keeper", daemon=True)
            self._thread.start()
        self._queue.put((dispatch_id, row_id, data, sha256))

    def close(self) -> None:
        """Write what is queued, make it durable, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


def _record_failure(
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


def _commit_outcome(row_id: int, apply: Callable[[], None]) -> None:
    """Apply an accepted message's outcome and commit it, retrying if the database blinks.

    Losing this commit would leave the row in ``sending`` and the message would go out again
    after the lease, so a locked SQLite file or a dropped PostgreSQL connection gets retried.
    """
    for attempt in range(1, OUTCOME_COMMIT_ATTEMPTS + 1):
        try:
            apply()
            db.session.commit()
            return
        except OperationalError:
            db.session.rollback()
            if attempt == OUTCOME_COMMIT_ATTEMPTS:
                raise
            log.warning("outbox row %s: recording the outcome failed; retrying", row_id)
            time.sleep(attempt)


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
class _Ready:
    """A claimed row whose e-mail is composed."""

    row: _Row
    message: Message
    # Serialised, and hashed, while the server was still reading the previous message.
    data: bytes
    sha256: str


@dataclass
class _Pending:
    """A row whose e-mail the server is reading."""

    ready: _Ready
    flight: InFlight


def _fail(
    row_id: int,
    failure: SendFailure,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
) -> None:
    """Record a message that did not go (retry later, or failed for good) and commit."""
    row = db.session.get(OutboxMessage, row_id, populate_existing=True)
    assert row is not None
    status = _record_failure(row, failure, moment(), worker)
    db.session.commit()
    report.errors.append(f"{row.message_id}: {failure.reason}")
    if status is DeliveryStatus.FAILED:
        report.failed += 1
    else:
        report.retrying += 1


def _prepare(
    claimed: tuple[_Row, _Recipient | None],
    claim: _Claim,
    cache: ComposeCache,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
) -> _Ready | None:
    """Check the claim and compose the e-mail; None if the row is settled without sending.

    A letter goes as it was claimed: nothing but another sender (the claim) can stop it. A
    reminder or an escalation is read again first, with its recipient, since an office may
    have confirmed meanwhile. The claim is checked again just before the e-mail goes
    (``_hand_over``).
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
        _fail(
            row.id, SendFailure(f"cannot compose: {exc}", permanent=False), worker, moment, report
        )
        return None
    data = message.as_bytes()
    return _Ready(row, message, data, hashlib.sha256(data).hexdigest())


def _hand_over(
    ready: _Ready,
    claim: _Claim,
    session: SmtpSession,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
    recording: Iterator[None] | None = None,
) -> _Pending | None:
    """Give the composed e-mail to the server, the previous outcome being written meanwhile
    (``recording``, finished before the data leaves); None if it was refused before its data
    or taken over by another sender while it was being composed."""
    row_id = ready.row.id
    if not claim.holds(row_id, moment()):
        _finish(recording)
        report.skipped += 1
        log.warning("outbox row %s was taken over by another sender; skipped", row_id)
        return None
    try:
        flight = session.begin(
            ready.message, primary=ready.row.to_addrs, data=ready.data, meanwhile=recording
        )
    except SendFailure as failure:
        _fail(row_id, failure, worker, moment, report)
        return None
    return _Pending(ready, flight)


@dataclass
class _Answered:
    """A handed-over e-mail whose reply has been read, its outcome still to record."""

    ready: _Ready  # the row, and the exact bytes handed over with their SHA-256
    at: dt.datetime  # when the reply was read
    reply: str = ""  # the server's 250
    failure: SendFailure | None = None


def _read_reply(
    pending: _Pending, session: SmtpSession, moment: Callable[[], dt.datetime]
) -> _Answered:
    """The server's reply to a handed-over e-mail (not yet recorded)."""
    try:
        reply = session.finish(pending.flight)
    except SendFailure as failure:
        return _Answered(pending.ready, moment(), failure=failure)
    return _Answered(pending.ready, moment(), reply=reply)


def _recording(
    answered: _Answered,
    keeper: _Keeper,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
) -> Iterator[None]:
    """Commit the outcome of an answered e-mail, a statement at a time, for ``begin`` to run
    while the server answers the next message's envelope; keep its bytes once it is recorded.

    Never raises: an unexpected error is logged and leaves the row in ``sending`` (tried again
    after the lease), as ``_guarded`` does.
    """
    row = answered.ready.row
    try:
        if answered.failure is not None:
            _fail(row.id, answered.failure, worker, moment, report)
            return
        try:
            yield from _writing_sent(row, answered, worker)
            yield
            db.session.commit()
        except OperationalError:
            # The database blinked: record it the patient way, retrying.
            db.session.rollback()
            _commit_outcome(row.id, lambda: _record_sent(row, answered, worker))
        keeper.keep(row.dispatch_id, row.id, answered.ready.data, answered.ready.sha256)
        report.sent += 1
    except Exception:
        db.session.rollback()
        log.exception("outbox row %s: unexpected error; left for a later run", row.id)
        report.errors.append(f"row {row.id}: unexpected error")


def _finish(steps: Iterator[None] | None) -> None:
    """Run what is left of ``steps``."""
    for _ in steps or ():
        pass


def _guarded(
    row_id: int,
    report: DeliveryReport,
    step: Callable[[], _T],
    on_error: Callable[[], None] | None = None,
) -> _T | None:
    """Run one step for a row; an unexpected error leaves the row in ``sending`` (tried again
    after the lease), calls ``on_error``, and the run goes on with the next row."""
    try:
        return step()
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
    keeper: _Keeper,
    worker: str,
    moment: Callable[[], dt.datetime],
    report: DeliveryReport,
) -> None:
    """Send the claimed rows in order, one message always with the server.

    For each message: compose it while the server reads the previous one, read the server's
    reply to that previous one, then hand this one over while that reply is committed (a
    statement after each envelope command, while the server answers it). The commit is done
    before any byte of this message's data leaves: an outcome is on record before the next
    message can be accepted, so a sender killed at any point has at most the one message it
    was handing over or waiting on without a record (sent again, with the same Message-ID,
    after the lease).
    """
    # An unexpected error while a message is with the server leaves the connection in the
    # middle of it: drop it, the next message opens a new one.
    abandon = session.abandon
    cache = ComposeCache()  # per batch: a file changed meanwhile is seen by the next batch
    claim = _Claim(claimed, claimed_at, worker)
    loaded = _guarded(claimed[0], report, partial(_load_claimed, claimed))
    if loaded is None:
        return  # the database failed: the rows stay claimed and go after the lease
    pending: _Pending | None = None
    for row_id in [*claimed, None]:
        ready = None
        if row_id in loaded:
            prepare = partial(_prepare, loaded[row_id], claim, cache, worker, moment, report)
            ready = _guarded(row_id, report, prepare)
        recording = None
        if pending is not None:
            read = partial(_read_reply, pending, session, moment)
            answered = _guarded(pending.ready.row.id, report, read, abandon)
            if answered is not None:
                recording = _recording(answered, keeper, worker, moment, report)
            pending = None
        if ready is not None:
            hand_over = partial(
                _hand_over, ready, claim, session, worker, moment, report, recording
            )
            pending = _guarded(ready.row.id, report, hand_over, abandon)
        _finish(recording)  # done already, unless nothing was handed over


def deliver_due(
    at: dt.datetime, limit: int | None = None, worker: str | None = None
) -> DeliveryReport:
    """Send every outbox row due at ``at`` (at most ``limit``) over one SMTP connection."""
    worker = worker or default_worker()
    started = time.monotonic()

    def moment() -> dt.datetime:
        return at + dt.timedelta(seconds=time.monotonic() - started)

    report = DeliveryReport()
    session = SmtpSession()  # connects at its first message
    keeper = _Keeper()
    try:
        with session:
            _deliver_batches(at, limit, worker, moment, session, keeper, report)
    finally:
        keeper.close()
    return report


def _deliver_batches(
    at: dt.datetime,
    limit: int | None,
    worker: str,
    moment: Callable[[], dt.datetime],
    session: SmtpSession,
    keeper: _Keeper,
    report: DeliveryReport,
) -> None:
    """Claim and send batches until nothing is due at ``at`` or ``limit`` rows were claimed."""
    while limit is None or report.claimed < limit:
        size = CLAIM_BATCH if limit is None else min(CLAIM_BATCH, limit - report.claimed)
        # Due at ``at`` (what failed during this run waits for a later run), claimed now.
        claimed_at = moment()
        claimed = claim_due(at, size, worker, claimed_at=claimed_at)
        if not claimed:
            break
        report.claimed += len(claimed)
        _send_claimed(claimed, claimed_at, session, keeper, worker, moment, report)
        if session.unreachable is not None:
            break  # the server is down or refuses our sender: leave the rest queued for later
    report.connections = session.connections
