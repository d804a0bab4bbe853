"""The scheduler process (``dispatch scheduler``): sends the outbox, queues reminders, beats.

It runs only in its own process, never in ``create_app`` or ``wsgi.py`` (a scheduler per web
worker would run each job once per worker). ``dispatch scheduler`` hands it the app to run in:
this module never builds one (the app factory imports the CLI, which starts the scheduler). Its
jobs are plain importable functions that push that app's context and call the same domain
functions as the CLI, with the moment read here, at the edge, each inside ``unit_of_work()``:
``deliver_job`` (``sender.deliver_due``), ``remind_job`` (``reminders.send_due_reminders``) and
``heartbeat_job`` (a ``SchedulerHeartbeat`` row).

Sending nothing twice does not depend on there being one scheduler: the outbox's unique
constraint and the delivery's claims see to that. On PostgreSQL the process ALSO takes a
session-level advisory lock before it runs any job, so that of two schedulers started by
mistake (or on purpose, as a standby) one works and the other waits, and takes over when the
first one dies (its connection closes, PostgreSQL releases the lock). On SQLite, a one-machine
mode, there is no lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import NullPool

from dispatch import clock
from dispatch.extensions import db
from dispatch.models import SchedulerHeartbeat
from dispatch.transaction import unit_of_work

log = logging.getLogger("dispatch.processes.scheduler")

# Any constant: the PostgreSQL advisory lock held by the one scheduler that runs the jobs.
SCHEDULER_LOCK_KEY = 0x44535343  # "DSSC"
HEARTBEAT_NAME = "scheduler"

_app: Flask | None = None
_last_job: str | None = None
_lock: SchedulerLock | None = None
_on_lock_lost: Callable[[], None] | None = None


@dataclass(frozen=True)
class Intervals:
    """How often each job runs, in seconds."""

    deliver: float = 60
    remind: float = 600
    heartbeat: float = 60
    checkpoint: float = 24 * 3600
    imap: float = 60
    standby_poll: float = 15


def _job_app() -> Flask:
    """The app the jobs run in: the one handed to ``run_scheduler`` (this module builds none)."""
    if _app is None:
        raise RuntimeError("the scheduler's jobs run in the app given to run_scheduler()")
    return _app


def _finished(name: str) -> None:
    global _last_job
    _last_job = name


def deliver_job() -> None:
    """Send what the outbox has due now."""
    from dispatch.mail.sender import deliver_due

    with _job_app().app_context(), unit_of_work():
        report = deliver_due(clock.now())
    if report.stopped:
        log.error("sending stopped: %s", report.stopped)
    _finished("deliver")


def remind_job() -> None:
    """Queue the reminders and escalations due now, then send them."""
    from dispatch.mail.sender import deliver_due
    from dispatch.receipts.reminders import send_due_reminders

    with _job_app().app_context(), unit_of_work():
        at = clock.now()
        report = send_due_reminders(at)
        if report.reminders_queued or report.escalations_queued:
            log.info(
                "queued %d reminder(s), %d escalation(s)",
                report.reminders_queued,
                report.escalations_queued,
            )
            delivery = deliver_due(at)
            if delivery.stopped:
                log.error("sending stopped: %s", delivery.stopped)
    _finished("remind")


def imap_job() -> None:
    """Read the inbound mailbox (DISPATCH_IMAP_URL): bounces, automatic and human replies."""
    from dispatch.inbound.imap import ImapError, ImapSettings, poll_mailbox

    app = _job_app()
    with app.app_context(), unit_of_work():
        settings = ImapSettings.from_config(app.config)
        if settings is None:
            return
        try:
            report = poll_mailbox(settings, now=clock.now)
        except ImapError as exc:
            log.error("inbound mailbox: %s", exc)  # tried again at the next interval
            return
        if report.handled or report.refiled:
            log.info("inbound mailbox: %d new message(s) %s", report.handled, report.kinds)
    _finished("imap")


def checkpoint_job() -> None:
    """Anchor the audit log's heads outside the database (once a day, and at start-up)."""
    from dispatch import audit
    from dispatch.signing import timestamps

    app = _job_app()
    with app.app_context(), unit_of_work():
        stamp = timestamps.stamper(app.config.get("DISPATCH_TSA_URL"))
        written = audit.write_checkpoint_report(clock.now(), stamp=stamp)
        log.info(
            "audit checkpoint written: %s%s",
            written.path.name,
            " (RFC 3161 time-stamped)" if written.stamped else "",
        )
        if written.stamp_error:
            log.warning("audit checkpoint not time-stamped: %s", written.stamp_error)
    _finished("checkpoint")


def write_heartbeat(at: dt.datetime, *, name: str = HEARTBEAT_NAME, last_job: str | None) -> None:
    """Record the scheduler's sign of life (one row per name, upserted); the caller commits."""
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    values = {
        "name": name,
        "host": socket.gethostname()[:100],
        "pid": os.getpid(),
        "beat_at": at,
        "last_job": last_job,
    }
    statement = dialect.insert(SchedulerHeartbeat).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_={key: statement.excluded[key] for key in ("host", "pid", "beat_at", "last_job")},
    )
    db.session.execute(statement)


def heartbeat_job() -> None:
    """Write the heartbeat, after checking that this process still holds the scheduler lock."""
    if _lock is not None and not _lock.still_held():
        log.error("lost the scheduler lock (database connection gone?): stopping")
        if _on_lock_lost is not None:
            _on_lock_lost()
        return
    with _job_app().app_context(), unit_of_work():
        write_heartbeat(clock.now(), last_job=_last_job)


class SchedulerLock:
    """A session-level PostgreSQL advisory lock on a connection of its own, kept open while held.

    On SQLite (one machine, one scheduler) it is always granted.
    """

    def __init__(self, url: str, key: int = SCHEDULER_LOCK_KEY) -> None:
        self.key = key
        self.enabled = sa.make_url(url).get_backend_name() == "postgresql"
        # NullPool: the connection is ours alone, closing it really closes it (and frees the lock).
        # TCP keepalives: if this host vanishes, PostgreSQL notices and frees the lock for the
        # standby within about a minute.
        self._engine = (
            sa.create_engine(
                url,
                poolclass=NullPool,
                connect_args={
                    "keepalives": 1,
                    "keepalives_idle": 30,
                    "keepalives_interval": 10,
                    "keepalives_count": 3,
                },
            )
            if self.enabled
            else None
        )
        self._conn: sa.Connection | None = None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this process holds it."""
        if not self.enabled:
            return True
        try:
            if self._conn is None:
                assert self._engine is not None
                self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = self._conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
            ).scalar_one()
        except sa.exc.SQLAlchemyError as exc:
            # The database is away: try again on the next poll, with a new connection.
            log.warning("cannot reach the database for the scheduler lock: %s", exc)
            self._drop_connection()
            return False
        return bool(got)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.close()
            self._conn = None

    def still_held(self) -> bool:
        """Whether the lock's connection is alive and still holds it."""
        if not self.enabled:
            return True
        if self._conn is None:
            return False
        try:
            held = self._conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND objid = :key"
                ),
                {"key": self.key & 0xFFFFFFFF},
            ).scalar_one()
        except sa.exc.SQLAlchemyError:
            return False
        return bool(held)

    def release(self) -> None:
        """Release the lock and close its connection."""
        if self._conn is not None:
            # If the connection is already gone, so is the lock.
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self._drop_connection()
        if self._engine is not None:
            self._engine.dispose()


def build_scheduler(intervals: Intervals) -> BlockingScheduler:
    """The APScheduler with its jobs, in Vietnam time, each run at most once at a time."""
    scheduler = BlockingScheduler(
        timezone=clock.VN,
        job_defaults={
            "coalesce": True,  # after a pause, run once, not once per missed interval
            "max_instances": 1,
            "misfire_grace_time": 300,
        },
    )
    start = dt.datetime.now(clock.VN)  # run every job at start-up: catch up after downtime
    for func, seconds in (
        (heartbeat_job, intervals.heartbeat),
        (deliver_job, intervals.deliver),
        (remind_job, intervals.remind),
        (checkpoint_job, intervals.checkpoint),
        (imap_job, intervals.imap),
    ):
        scheduler.add_job(
            f"{func.__module__}:{func.__name__}",
            IntervalTrigger(seconds=seconds, timezone=clock.VN),
            id=func.__name__,
            name=func.__name__,
            next_run_time=start,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=300,
        )
    return scheduler


def run_scheduler(app: Flask, intervals: Intervals | None = None) -> int:
    """Run the scheduler in this process until SIGINT/SIGTERM; returns the exit status."""
    global _app, _lock, _on_lock_lost
    intervals = intervals or Intervals()
    _app = app
    stop = threading.Event()
    status = {"code": 0}
    scheduler: BlockingScheduler | None = None

    def stop_scheduler() -> None:
        stop.set()
        if scheduler is not None and scheduler.running:
            # From another thread: the handler may have interrupted the scheduler holding its
            # own locks. A running job is not interrupted; the process waits for it to finish.
            threading.Thread(target=scheduler.shutdown, kwargs={"wait": False}).start()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop_scheduler()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    lock = SchedulerLock(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        if not lock.try_acquire():
            log.info("another scheduler holds the lock: standing by")
            print("Bộ lập lịch khác đang chạy: chờ để thay thế khi nó dừng.", flush=True)
            while not stop.wait(intervals.standby_poll):
                if lock.try_acquire():
                    break
        if stop.is_set():
            return 0
        log.info("scheduler lock held (pid %s): running jobs", os.getpid())
        print(f"Bộ lập lịch đang chạy (pid {os.getpid()}).", flush=True)
        _lock = lock

        def lock_lost() -> None:
            status["code"] = 3
            stop_scheduler()

        _on_lock_lost = lock_lost
        scheduler = build_scheduler(intervals)
        if not stop.is_set():
            scheduler.start()  # blocks until shutdown
        return status["code"]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _lock = None
        _on_lock_lost = None
        lock.release()
        log.info("scheduler stopped")
