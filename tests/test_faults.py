"""Faults during issuing and sending: nothing lost, nothing sent twice, the audit log complete.

Each scenario breaks something real (the SMTP server, the sender process, its database
connection, the archive folder), lets the product recover the way it would in production (a
later run, a restart), and ends with the same check, ``assert_nothing_lost``:

* every outbox row is settled: ``sent`` and its Message-ID accepted exactly once by the server,
  or ``failed``/``cancelled`` with its reason and never accepted; nothing left queued or sending;
* every recipient of every dispatch has its letter row, and the server accepted nothing else;
* the audit log holds one ``message.sent`` entry per sent row and one ``message.failed`` per
  failed row, and its hash chain verifies.

Sender processes are real ``dispatch deliver``/``dispatch remind`` commands pointed at the test
database and at the controlled aiosmtpd server of ``tests/fixtures/smtp.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.pool import NullPool

from dispatch import audit
from dispatch.clock import VN, parse_moment
from dispatch.drafting import drafts
from dispatch.extensions import db
from dispatch.mail.sender import LEASE, deliver_due
from dispatch.models import (
    AuditEntry,
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
    MessageKind,
    OutboxMessage,
    RegisterCounter,
)
from tests.fixtures.database import command_env
from tests.fixtures.smtp import ISSUED_AT, SmtpServer

DISPATCH = str(Path(sys.executable).with_name("dispatch"))
AT = ISSUED_AT + dt.timedelta(minutes=1)
WAIT = 180  # seconds a sender process may take on a slow shared machine

on_postgres = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="needs PostgreSQL (TEST_DATABASE_URL)",
)


# --- The invariant -------------------------------------------------------------------------


def _rows() -> list[OutboxMessage]:
    db.session.expire_all()
    return list(db.session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())


def _audited(action: str) -> Counter[str]:
    """How many entries of ``action`` each outbox row (by id) has in the audit log."""
    ids = db.session.execute(
        select(AuditEntry.object_id).where(
            AuditEntry.action == action, AuditEntry.object_type == "outbox_message"
        )
    ).scalars()
    return Counter(ids)


def assert_nothing_lost(smtp_server: SmtpServer, *, failed: Iterable[str] = ()) -> None:
    """Every recipient accepted exactly once or failed with its reason; the audit log complete.

    ``failed`` are the addresses expected to have failed (refused by the server).
    """
    rows = _rows()
    assert rows, "no outbox row at all"
    accepted = smtp_server.handler.message_ids()
    by_message_id = {row.message_id: row for row in rows}
    # The server accepted nothing the outbox does not know, and nothing twice.
    assert set(accepted) <= set(by_message_id), set(accepted) - set(by_message_id)
    assert all(count == 1 for count in accepted.values()), accepted.most_common(3)
    expected_failures = {address.lower() for address in failed}
    sent_audit, failed_audit = _audited("message.sent"), _audited("message.failed")
    for row in rows:
        where = f"outbox row {row.id} ({row.kind.value} to {row.to_addrs})"
        assert row.status in (
            DeliveryStatus.SENT,
            DeliveryStatus.FAILED,
            DeliveryStatus.CANCELLED,
        ), f"{where} left {row.status.value}"
        if row.status is DeliveryStatus.SENT:
            assert accepted[row.message_id] == 1, where
            assert row.smtp_reply and row.smtp_reply.startswith("250"), where
            assert row.sent_at is not None, where
            assert sent_audit[str(row.id)] == 1, f"{where}: sent but audited {sent_audit}"
            assert failed_audit[str(row.id)] == 0, where
            assert row.to_addrs[0].lower() not in expected_failures, where
        else:
            assert accepted[row.message_id] == 0, f"{where} accepted yet marked {row.status}"
            assert row.last_error, f"{where} has no reason"
            assert sent_audit[str(row.id)] == 0, where
        if row.status is DeliveryStatus.FAILED:
            assert failed_audit[str(row.id)] == 1, where
            assert row.to_addrs[0].lower() in expected_failures, f"{where}: {row.last_error}"
    # What the server accepted went to the row's own addresses, and to no other.
    for message in smtp_server.messages:
        row = by_message_id[message.message_id]
        envelope = {a.lower() for a in message.rcpt_tos}
        assert {a.lower() for a in row.to_addrs} <= envelope, (row.to_addrs, envelope)
        assert envelope <= {a.lower() for a in [*row.to_addrs, *(row.cc_addrs or [])]}
    # Nothing lost: each recipient of each issued dispatch has its letter.
    letters = {(r.dispatch_id, r.recipient_id) for r in rows if r.kind is MessageKind.LETTER}
    recipients = db.session.execute(
        select(DispatchRecipient.dispatch_id, DispatchRecipient.id)
        .join(Dispatch, Dispatch.id == DispatchRecipient.dispatch_id)
        .where(Dispatch.status != DispatchStatus.DRAFT)
    ).all()
    assert {tuple(r) for r in recipients} == letters
    assert {row.to_addrs[0].lower() for row in rows if row.status is DeliveryStatus.FAILED} == (
        expected_failures
    )
    assert audit.verify_chain() == []


# --- Sender processes ------------------------------------------------------------------------


def _env(app, smtp_server: SmtpServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return command_env(app, tmp_path, **smtp_server.environ(), **extra)


def _start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [DISPATCH, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent
        )


def _run(env: dict[str, str], log: Path, *args: str) -> None:
    process = _start(env, log, *args)
    assert process.wait(timeout=WAIT) == 0, log.read_text()


def _sent_count() -> int:
    """Rows recorded as sent, read in a short transaction of its own."""
    db.session.expire_all()
    count = db.session.execute(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.status == DeliveryStatus.SENT)
    ).scalar_one()
    db.session.commit()
    return count


def _release_database() -> None:
    """End this process's transaction and close its connections: the sender needs the locks."""
    db.session.commit()
    db.session.close()
    db.engine.dispose()


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(VN).isoformat()


# --- SMTP faults ---------------------------------------------------------------------------


def test_smtp_server_down_during_delivery_then_back(
    smtp_app, smtp_server, dead_smtp_port, outbox_dispatch
):
    outbox_dispatch(6)
    smtp_app.config["MAIL_PORT"] = dead_smtp_port

    down = deliver_due(AT)
    assert (down.sent, down.retrying, down.failed) == (0, 6, 0)
    # Still down at the next attempt: still nothing failed, nothing lost.
    again = deliver_due(AT + dt.timedelta(minutes=2))
    assert (again.sent, again.retrying) == (0, 6)
    assert {row.attempts for row in _rows()} == {2}

    smtp_server.configure(smtp_app)
    back = deliver_due(AT + dt.timedelta(minutes=10))

    assert (back.sent, back.retrying, back.failed) == (6, 0, 0)
    assert len(smtp_server.messages) == 6
    assert_nothing_lost(smtp_server)
    # Each attempt is on record: two temporary failures then the send, per message.
    retried = _audited("message.retrying")
    assert all(retried[str(row.id)] == 2 for row in _rows())


def test_451_for_a_while_then_recovery(smtp_app, smtp_server, outbox_dispatch):
    outbox_dispatch(5)
    smtp_server.handler.fail_data = 8  # every DATA of the first run, three of the second

    first = deliver_due(AT)
    assert (first.sent, first.retrying) == (0, 5)
    second = deliver_due(AT + dt.timedelta(minutes=2))
    assert (second.sent, second.retrying) == (2, 3)
    third = deliver_due(AT + dt.timedelta(minutes=10))

    assert (third.sent, third.retrying, third.failed) == (3, 0, 0)
    assert smtp_server.handler.data_commands == 13
    assert_nothing_lost(smtp_server)


def test_550_for_one_address_fails_it_with_the_reason_and_sends_the_rest(
    smtp_app, smtp_server, outbox_dispatch
):
    dispatch = outbox_dispatch(5)
    refused = dispatch.recipients[2].email
    smtp_server.handler.reject[refused] = f"550 5.1.1 <{refused}>: Recipient address rejected"

    report = deliver_due(AT)
    # A permanent failure is not retried, however long one waits.
    later = deliver_due(AT + dt.timedelta(days=2))

    assert (report.sent, report.failed, later.claimed) == (4, 1, 0)
    (failed,) = [row for row in _rows() if row.status is DeliveryStatus.FAILED]
    assert failed.smtp_reply.startswith("550 5.1.1") and "RCPT TO" in failed.last_error
    assert_nothing_lost(smtp_server, failed=[refused])


def test_a_stalled_relay_is_given_up_after_two_time_outs_and_the_rest_waits(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(6)
    smtp_app.config["MAIL_TIMEOUT"] = 0.5
    handler = smtp_server.handler
    handler.delay = 10.0  # every DATA held far beyond the time-out

    stalled = deliver_due(AT)

    # Two time-outs in a row, then the relay is left alone for this run: not one time-out per
    # message (63 × MAIL_TIMEOUT for a letter to the provinces).
    assert handler.data_commands == 2
    assert (stalled.sent, stalled.retrying, stalled.failed, stalled.released) == (0, 2, 0, 4)
    assert "2 time-outs in a row" in stalled.held_back
    rows = _rows()
    timed_out = [row for row in rows if row.status is DeliveryStatus.RETRYING]
    assert [row.attempts for row in timed_out] == [1, 1]
    assert all("timed out" in row.last_error for row in timed_out)
    untried = [row for row in rows if row.status is DeliveryStatus.QUEUED]
    assert len(untried) == 4 and {row.attempts for row in untried} == {0}

    handler.wait_until(lambda h: h.holding == 0)
    handler.delay = 0
    back = deliver_due(AT + dt.timedelta(minutes=5))

    assert (back.sent, back.retrying, back.failed) == (6, 0, 0)
    assert_nothing_lost(smtp_server)


# --- Process faults --------------------------------------------------------------------------


@pytest.mark.slow
def test_sender_killed_mid_batch_and_restarted(smtp_app, smtp_server, outbox_dispatch, tmp_path):
    outbox_dispatch(10)
    _release_database()
    env = _env(smtp_app, smtp_server, tmp_path)
    log = tmp_path / "deliver.log"
    handler = smtp_server.handler
    handler.delay = 1.0

    sender = _start(env, log, "deliver", "--at", _iso(AT))
    try:
        # SIGKILL while the server holds a message, before it answers, once the sender has
        # recorded every earlier one (killing between a 250 and its record is the one window
        # where a resend is possible, by design: not this scenario).
        handler.wait_until(lambda h: len(h.messages) >= 3 and h.holding > 0)
        for _ in range(200):
            accepted = len(handler.messages)
            if handler.holding and _sent_count() == accepted == len(handler.messages):
                break
            time.sleep(0.02)
        sender.send_signal(signal.SIGKILL)
    finally:
        sender.wait(timeout=WAIT)
    assert sender.returncode == -signal.SIGKILL
    handler.wait_until(lambda h: h.holding == 0)
    accepted = len(handler.messages)
    assert 3 <= accepted < 10
    states = Counter(row.status for row in _rows())
    assert states == {DeliveryStatus.SENT: accepted, DeliveryStatus.SENDING: 10 - accepted}

    # The restarted sender leaves the orphans alone within the lease, then sends them.
    handler.delay = 0
    _run(env, log, "deliver", "--at", _iso(AT + dt.timedelta(minutes=2)))
    assert len(handler.messages) == accepted
    _run(env, log, "deliver", "--at", _iso(AT + LEASE + dt.timedelta(minutes=2)))

    assert len(handler.messages) == 10
    assert_nothing_lost(smtp_server)
    taken_over = db.session.execute(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "message.claimed")
    ).scalar_one()
    assert taken_over == 10 + (10 - accepted)  # the orphans were claimed twice, on record


def _same_bytes(kept: bytes, received: bytes) -> bool:
    """The kept e-mail is what the server received (which reads its lines ending in CRLF)."""
    return kept.replace(b"\r\n", b"\n") == received.replace(b"\r\n", b"\n")


def assert_every_sent_message_kept(app, smtp_server: SmtpServer) -> None:
    """Each row on record as sent has its kept copy under ``sent_path``, with the SHA-256 on
    record, byte for byte a message the server received under its Message-ID."""
    root = Path(app.config["DISPATCH_DATA_DIR"])
    received: dict[str, list[bytes]] = {}
    for message in smtp_server.messages:
        received.setdefault(message.message_id or "", []).append(message.raw)
    for row in _rows():
        if row.status is not DeliveryStatus.SENT:
            continue
        path = root / row.sent_path
        assert path.is_file(), f"row {row.id} sent, but no kept copy at {row.sent_path}"
        kept = path.read_bytes()
        assert hashlib.sha256(kept).hexdigest() == row.sent_sha256, f"row {row.id}"
        assert any(_same_bytes(kept, raw) for raw in received[row.message_id]), f"row {row.id}"


@pytest.mark.slow
def test_a_sender_killed_at_random_points_keeps_the_copy_of_every_message_it_recorded(
    smtp_app, smtp_server, outbox_dispatch, tmp_path
):
    dispatch_id = outbox_dispatch(30).id
    _release_database()
    env = _env(smtp_app, smtp_server, tmp_path)
    log = tmp_path / "deliver.log"
    handler = smtp_server.handler
    rng = random.Random(20211115)
    at = AT
    kills = 0
    for _ in range(8):
        accepted = len(handler.messages)
        sender = _start(env, log, "deliver", "--at", _iso(at))
        try:
            # A few milliseconds after the server accepted a message: wherever its record,
            # its kept copy and the next message happen to be.
            handler.wait_until(lambda h, n=accepted: len(h.messages) > n, timeout=WAIT)
            time.sleep(rng.uniform(0, 0.006))
            sender.send_signal(signal.SIGKILL)
        finally:
            sender.wait(timeout=WAIT)
        kills += sender.returncode == -signal.SIGKILL
        handler.wait_until(lambda h: h.holding == 0)
        assert_every_sent_message_kept(smtp_app, smtp_server)
        at += LEASE + dt.timedelta(minutes=1)  # what it left in sending is taken over next
    assert kills >= 6, log.read_text()

    _run(env, log, "deliver", "--at", _iso(at))

    assert {row.status for row in _rows()} == {DeliveryStatus.SENT}
    assert_every_sent_message_kept(smtp_app, smtp_server)
    # A temporary file a kill left behind was taken up by the next write of its message.
    sent_folder = Path(smtp_app.config["DISPATCH_DATA_DIR"]) / f"dispatches/{dispatch_id}/sent"
    assert sorted(p.name for p in sent_folder.iterdir() if p.name.startswith(".")) == []
    assert audit.verify_chain() == []


def _terminate_backends(url: str, application_name: str) -> int:
    """End every PostgreSQL connection of ``application_name``, as an admin (or a crash) would."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": application_name},
                ).all()
            )
    finally:
        engine.dispose()


@on_postgres
@pytest.mark.postgres
@pytest.mark.slow
def test_database_connection_dropped_mid_job(smtp_app, smtp_server, outbox_dispatch, tmp_path):
    outbox_dispatch(8)
    _release_database()
    url = smtp_app.config["SQLALCHEMY_DATABASE_URI"]
    name = "dispatch-fault-sender"
    env = _env(smtp_app, smtp_server, tmp_path, PGAPPNAME=name)
    log = tmp_path / "deliver.log"
    handler = smtp_server.handler
    original = handler.handle_DATA
    terminated: list[int] = []

    async def handle_DATA(server, session, envelope):  # aiosmtpd's hook name
        reply = await original(server, session, envelope)
        if reply.startswith("250") and len(handler.messages) == 3 and not terminated:
            # The third message is accepted; before the sender hears so, its database
            # connection is cut: recording the send must survive that.
            terminated.append(_terminate_backends(url, name))
        return reply

    handler.handle_DATA = handle_DATA  # type: ignore[method-assign]

    sender = _start(env, log, "deliver", "--at", _iso(AT))
    sender.wait(timeout=WAIT)  # it may finish or stop with an error: either way nothing is lost
    assert terminated and terminated[0] >= 1, "the sender's connection was never cut"

    # The next run, after any orphan's lease, completes the job.
    _run(env, log, "deliver", "--at", _iso(AT + LEASE + dt.timedelta(minutes=2)))

    assert len(handler.messages) == 8, log.read_text()
    assert_nothing_lost(smtp_server)


class _DatabaseOutage:
    """The test database refusing every connection for ``seconds``: new connections are
    disallowed (``ALLOW_CONNECTIONS false``) and the open ones ended (``pg_terminate_backend``),
    from a superuser connection to another database, as a failover or a crash would."""

    def __init__(self, url: str, seconds: float) -> None:
        self.name = make_url(url).database
        self.admin = create_engine(
            make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        self.seconds = seconds
        self.began: float | None = None
        self.ended = threading.Event()
        self._timer: threading.Timer | None = None

    def begin(self) -> None:
        """Cut the database off, and let it back in after ``seconds``."""
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.name},
            )
        self.began = time.monotonic()
        self._timer = threading.Timer(self.seconds, self.end)
        self._timer.start()

    def end(self) -> None:
        """Let connections in again (whether or not the outage began)."""
        if self._timer is not None:
            self._timer.cancel()
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true'))
        self.ended.set()


@on_postgres
@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_unreachable_for_30_s_mid_batch_stops_the_sender_and_sends_nothing_twice(
    smtp_app, smtp_server, outbox_dispatch, tmp_path
):
    outbox_dispatch(8)
    _release_database()
    outage = _DatabaseOutage(smtp_app.config["SQLALCHEMY_DATABASE_URI"], seconds=30)
    env = _env(smtp_app, smtp_server, tmp_path)
    log = tmp_path / "deliver.log"
    handler = smtp_server.handler
    accept = handler.handle_DATA

    async def handle_DATA(server, session, envelope):  # aiosmtpd's hook name
        reply = await accept(server, session, envelope)
        if reply.startswith("250") and len(handler.messages) == 3 and outage.began is None:
            # The third message is accepted; before the sender hears so, its database goes.
            outage.begin()
        return reply

    handler.handle_DATA = handle_DATA  # type: ignore[method-assign]
    try:
        sender = _start(env, log, "deliver", "--at", _iso(AT))
        status = sender.wait(timeout=WAIT)
    finally:
        outage.end()  # always: the database must take connections again
    assert outage.began is not None, "the outage never began"
    stopped_after = time.monotonic() - outage.began

    # It handed nothing over while it could not record the third message's 250, waited for
    # the database, recorded it, then stopped and said so.
    output = log.read_text()
    assert status == 1, output
    assert stopped_after >= 30
    assert len(handler.messages) == 3
    (line,) = [line for line in output.splitlines() if line.startswith("Lỗi: ")]
    assert "Đã dừng gửi" in line and "cơ sở dữ liệu" in line, output
    assert "Traceback" not in output
    states = Counter(row.status for row in _rows())
    assert states == {DeliveryStatus.SENT: 3, DeliveryStatus.QUEUED: 5}, states

    # What it had not handed over is due at once: the next run sends it, each message once.
    _run(env, log, "deliver", "--at", _iso(AT + dt.timedelta(minutes=2)))
    assert len(handler.messages) == 8, log.read_text()
    assert_nothing_lost(smtp_server)


@pytest.mark.skipif(
    os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="holds SQLite's write lock (PostgreSQL: the outage test above)",
)
@pytest.mark.slow
def test_an_outcome_the_database_never_takes_stops_the_run_and_goes_again_after_the_lease(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    import sqlite3

    from dispatch.mail import sender

    outbox_dispatch(5)
    _release_database()
    monkeypatch.setattr(sender, "OUTCOME_PATIENCE", dt.timedelta(0))  # give up at the first try
    path = make_url(smtp_app.config["SQLALCHEMY_DATABASE_URI"]).database
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    handler = smtp_server.handler
    accept = handler.handle_DATA

    async def handle_DATA(server, session, envelope):  # aiosmtpd's hook name
        reply = await accept(server, session, envelope)
        if reply.startswith("250") and len(handler.messages) == 2 and not blocker.in_transaction:
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        return reply

    handler.handle_DATA = handle_DATA  # type: ignore[method-assign]
    try:
        stopped = deliver_due(AT)
    finally:
        blocker.rollback()
        blocker.close()

    assert "có thể được gửi lại một lần sau 10 phút" in stopped.stopped
    assert (stopped.sent, len(handler.messages)) == (1, 2)
    states = [row.status for row in _rows()]
    assert states == [DeliveryStatus.SENT] + [DeliveryStatus.SENDING] * 4  # all claimed still

    # After the lease the unrecorded one goes again, with its Message-ID: the one copy an
    # outage longer than OUTCOME_PATIENCE can cost. The rest go once.
    handler.handle_DATA = accept  # type: ignore[method-assign]
    assert deliver_due(AT + LEASE + dt.timedelta(minutes=1)).sent == 4
    counts = handler.message_ids()
    assert sorted(counts.values()) == [1, 1, 1, 1, 2]
    assert counts[_rows()[1].message_id] == 2


@pytest.mark.slow
def test_two_schedulers_deliver_and_remind_at_once(
    smtp_app, smtp_server, outbox_dispatch, tmp_path
):
    dispatch_id = outbox_dispatch(12).id
    _release_database()
    env = _env(smtp_app, smtp_server, tmp_path)
    log = tmp_path / "senders.log"
    smtp_server.handler.delay = 0.02

    # Two senders race for the letters.
    letters = [_start(env, log, "deliver", "--at", _iso(AT)) for _ in range(2)]
    for process in letters:
        assert process.wait(timeout=WAIT) == 0, log.read_text()
    assert len(smtp_server.messages) == 12

    # Two offices confirm; the next working day two reminder runs race as well.
    for recipient in db.session.execute(
        select(DispatchRecipient)
        .where(DispatchRecipient.dispatch_id == dispatch_id)
        .order_by(DispatchRecipient.id)
        .limit(2)
    ).scalars():
        recipient.acknowledged_at = AT + dt.timedelta(hours=2)
        recipient.acknowledged_by = "Văn thư Sở"
    _release_database()
    next_morning = parse_moment("2021-11-16T08:05:00+07:00")
    reminders = [_start(env, log, "remind", "--at", _iso(next_morning)) for _ in range(2)]
    for process in reminders:
        assert process.wait(timeout=WAIT) == 0, log.read_text()

    rows = _rows()
    reminder_rows = [row for row in rows if row.kind is MessageKind.REMINDER]
    assert len(reminder_rows) == 10  # one per office that has not confirmed, not two
    assert {row.status for row in reminder_rows} == {DeliveryStatus.SENT}
    assert len(smtp_server.messages) == 22
    assert_nothing_lost(smtp_server)


@pytest.mark.slow
def test_two_scheduler_processes_at_once(smtp_app, smtp_server, outbox_dispatch, tmp_path):
    outbox_dispatch(10)
    _release_database()
    env = _env(smtp_app, smtp_server, tmp_path, DISPATCH_LOG_LEVEL="WARNING")
    log = tmp_path / "schedulers.log"
    smtp_server.handler.delay = 0.05
    every = ("--deliver-every", "1", "--heartbeat-every", "1", "--remind-every", "3600")
    with log.open("ab") as out:
        schedulers = [
            subprocess.Popen(
                [DISPATCH, "scheduler", *every],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for _ in range(2)
        ]
    try:
        # On PostgreSQL one runs and one stands by; on SQLite both run: either way, once each.
        smtp_server.handler.wait_until(lambda h: len(h.messages) >= 10, timeout=WAIT)
    finally:
        for process in schedulers:
            process.send_signal(signal.SIGTERM)
        for process in schedulers:
            try:
                process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=WAIT)
    assert [process.returncode for process in schedulers] == [0, 0], log.read_text()
    assert "Traceback" not in log.read_text()

    # Whatever the schedulers queued as they stopped (a reminder run at start-up) goes out now.
    later = dt.datetime.now(dt.UTC) + LEASE + dt.timedelta(minutes=2)
    _run(env, log, "deliver", "--at", _iso(later))

    letters = [row for row in _rows() if row.kind is MessageKind.LETTER]
    assert [row.status for row in letters] == [DeliveryStatus.SENT] * 10
    assert_nothing_lost(smtp_server)


# --- Issuing fault ---------------------------------------------------------------------------


@pytest.mark.slow
def test_archive_folder_not_writable_at_issuing(
    seeded, letter_folder, smtp_app, smtp_server, tmp_path
):
    dispatch_id = drafts.create_draft(
        letter_folder(), group_code="so-tttt-2021", actor=None, at=seeded.at
    ).id
    db.session.commit()
    good = smtp_app.config["DISPATCH_DATA_DIR"]
    # Root ignores permissions: a path below a regular file cannot be created by anyone.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be")
    smtp_app.config["DISPATCH_DATA_DIR"] = str(blocker / "data")
    runner = smtp_app.test_cli_runner()
    audit_before = db.session.execute(select(func.count()).select_from(AuditEntry)).scalar_one()

    refused = runner.invoke(
        args=[
            "issue",
            "--confirm-placeholders",
            str(dispatch_id),
            "--at",
            "2021-11-15T08:30:00+07:00",
        ]
    )

    assert refused.exit_code == 1
    assert "Lỗi: Không tạo được thư mục lưu trữ" in refused.output
    assert "DISPATCH_DATA_DIR" in refused.output and "Traceback" not in refused.output
    db.session.expire_all()
    dispatch = db.session.get(Dispatch, dispatch_id)
    assert dispatch.status is DispatchStatus.DRAFT and dispatch.number is None
    count = db.session.execute(select(func.count()).select_from(RegisterCounter)).scalar_one()
    assert count == 0  # no number consumed
    assert db.session.execute(select(func.count()).select_from(OutboxMessage)).scalar_one() == 0
    assert db.session.execute(select(func.count()).select_from(Document)).scalar_one() == 0
    audit_after = db.session.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    assert audit_after == audit_before
    assert blocker.is_file()

    # Fixed, the same draft takes number 1 and goes to every office once.
    smtp_app.config["DISPATCH_DATA_DIR"] = good
    issued = runner.invoke(
        args=[
            "issue",
            "--confirm-placeholders",
            str(dispatch_id),
            "--at",
            "2021-11-15T08:30:00+07:00",
        ]
    )
    assert issued.exit_code == 0, issued.output
    assert "số 01/THH-VP" in issued.output
    report = deliver_due(parse_moment("2021-11-15T08:31:00+07:00"))
    assert report.sent == len(dispatch.recipients) == 63
    assert_nothing_lost(smtp_server)
