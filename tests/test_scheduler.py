"""The scheduler: its jobs, its heartbeat, its lock, and real ``dispatch scheduler`` processes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from dispatch import audit
from dispatch.clock import VN
from dispatch.extensions import db
from dispatch.models import (
    AuditEntry,
    DeliveryStatus,
    Dispatch,
    MessageKind,
    OutboxMessage,
    SchedulerHeartbeat,
)
from dispatch.processes import scheduler as sched
from tests.fixtures.smtp import CLERK, free_port

on_postgres = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgres"),
    reason="needs PostgreSQL (TEST_DATABASE_URL)",
)

DISPATCH = str(Path(sys.executable).with_name("dispatch"))
WAIT = 60.0  # generous: these machines are shared and slow at times


@pytest.mark.nodb
def test_scheduler_jobs_are_importable_and_run_once_at_a_time():
    scheduler = sched.build_scheduler(sched.Intervals(deliver=60, remind=600, heartbeat=30))
    assert str(scheduler.timezone) == "Asia/Ho_Chi_Minh"
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {
        "deliver_job",
        "remind_job",
        "heartbeat_job",
        "checkpoint_job",
        "imap_job",
    }
    assert jobs["imap_job"].func is sched.imap_job
    assert jobs["checkpoint_job"].trigger.interval == dt.timedelta(days=1)
    assert jobs["deliver_job"].func is sched.deliver_job
    assert jobs["remind_job"].func is sched.remind_job
    assert jobs["heartbeat_job"].func is sched.heartbeat_job
    assert jobs["remind_job"].func_ref == "dispatch.processes.scheduler:remind_job"
    assert jobs["remind_job"].trigger.interval == dt.timedelta(minutes=10)
    assert jobs["deliver_job"].trigger.interval == dt.timedelta(minutes=1)
    for job in jobs.values():
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.misfire_grace_time == 300


@pytest.mark.nodb
def test_jobs_run_only_in_the_app_handed_to_the_scheduler(monkeypatch):
    # The scheduler never builds an app itself: the factory imports the CLI, which starts it.
    monkeypatch.setattr(sched, "_app", None)
    with pytest.raises(RuntimeError, match="run_scheduler"):
        sched.heartbeat_job()


@pytest.mark.nodb
def test_the_web_app_starts_no_scheduler(tmp_path):
    # Only ``dispatch scheduler`` runs one: a scheduler per web worker would run each job twice.
    env = dict(os.environ, DISPATCH_INSTANCE_PATH=str(tmp_path), SECRET_KEY="x")
    env.pop("DATABASE_URL", None)
    probe = (
        "import sys, threading, wsgi\n"
        "wsgi.app.test_client().get('/healthz')\n"
        "print(sorted(m for m in sys.modules"
        " if 'apscheduler' in m or m == 'dispatch.processes.scheduler'))\n"
        "print(len(threading.enumerate()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    modules, threads = result.stdout.splitlines()[-2:]
    assert modules == "[]"
    assert threads == "1"


def test_heartbeat_is_one_row_per_scheduler(db_app):
    sched.write_heartbeat(dt.datetime(2021, 11, 16, 9, tzinfo=VN), last_job=None)
    sched.write_heartbeat(dt.datetime(2021, 11, 16, 9, 1, tzinfo=VN), last_job="deliver")
    rows = db.session.execute(select(SchedulerHeartbeat)).scalars().all()
    assert len(rows) == 1
    assert rows[0].name == "scheduler"
    assert rows[0].pid == os.getpid()
    assert rows[0].beat_at == dt.datetime(2021, 11, 16, 9, 1, tzinfo=VN)
    assert rows[0].last_job == "deliver"


@pytest.fixture()
def job_app(smtp_app, monkeypatch):
    """The scheduler's jobs bound to the test app (as ``run_scheduler`` binds them)."""
    monkeypatch.setattr(sched, "_app", smtp_app)
    monkeypatch.setattr(sched, "_last_job", None)
    return smtp_app


def test_jobs_call_the_domain_functions_at_the_current_moment(
    job_app, smtp_server, outbox_dispatch
):
    dispatch = outbox_dispatch(4)
    dispatch_id = dispatch.id
    db.session.commit()

    sched.deliver_job()
    assert len(smtp_server.messages) == 4
    assert sched._last_job == "deliver"

    # Now is long after the 2021 deadline: the reminder job escalates once, and sends it.
    sched.remind_job()
    sched.remind_job()
    assert len(smtp_server.messages) == 5
    assert sorted(smtp_server.messages[-1].rcpt_tos) == sorted(
        [CLERK[0], job_app.config["MAIL_DEFAULT_SENDER"]]
    )
    assert sched._last_job == "remind"
    db.session.expire_all()
    [escalation] = db.session.execute(
        select(OutboxMessage).where(
            OutboxMessage.dispatch_id == dispatch_id,
            OutboxMessage.kind == MessageKind.ESCALATION,
        )
    ).scalars()
    assert escalation.status == DeliveryStatus.SENT
    assert db.session.get(Dispatch, dispatch_id).escalated_at is not None

    sched.heartbeat_job()
    beat = db.session.execute(select(SchedulerHeartbeat)).scalar_one()
    assert beat.last_job == "remind"
    assert dt.datetime.now(dt.UTC) - beat.beat_at < dt.timedelta(hours=1)

    # The daily checkpoint anchors the audit log's heads in the archive.
    sched.checkpoint_job()
    assert sched._last_job == "checkpoint"
    checkpoints, problems = audit.verify_checkpoints()
    assert len(checkpoints) == 1 and problems == []
    # Every entry up to it, and after it the log's own record of the checkpoint.
    entries = db.session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars()
    *before, last = entries.all()
    assert sum(head["count"] for head in checkpoints[0].lanes.values()) == len(before)
    assert last == audit.CHECKPOINT_WRITTEN


@on_postgres
@pytest.mark.postgres
def test_advisory_lock_admits_one_scheduler(db_app):
    url = db_app.config["SQLALCHEMY_DATABASE_URI"]
    first, second = sched.SchedulerLock(url), sched.SchedulerLock(url)
    try:
        assert first.try_acquire()
        assert first.still_held()
        assert not second.try_acquire()
        assert not second.still_held()
        first.release()
        assert second.try_acquire()
        assert second.still_held()
    finally:
        first.release()
        second.release()


@pytest.mark.nodb
def test_no_lock_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    first, second = sched.SchedulerLock(url), sched.SchedulerLock(url)
    assert first.try_acquire() and second.try_acquire()
    assert first.still_held()


# --- Real scheduler processes -------------------------------------------------------------


def scheduler_env(db_app, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": db_app.config["SQLALCHEMY_DATABASE_URI"],
            "DISPATCH_INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": "test-secret",
            "DISPATCH_AUDIT_KEY": "test-audit-key",
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(free_port()),  # nothing is due, so nothing is sent
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_scheduler(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [DISPATCH, "scheduler", "--heartbeat-every", "0.5", "--standby-poll", "0.3"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def heartbeat_pid() -> int | None:
    db.session.rollback()  # a fresh snapshot on every look
    beat = db.session.execute(
        select(SchedulerHeartbeat).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    db.session.rollback()
    return None if beat is None else beat.pid


def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(WAIT)


def test_scheduler_process_beats_and_stops_cleanly_on_sigterm(db_app, tmp_path):
    log = tmp_path / "scheduler.log"
    process = start_scheduler(scheduler_env(db_app, tmp_path), log)
    try:
        wait_for(lambda: heartbeat_pid() == process.pid, "the first heartbeat")
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        stop(process)
    output = log.read_text()
    assert "Bộ lập lịch đang chạy" in output
    assert "scheduler stopped" in output
    assert "Traceback" not in output


def test_scheduler_process_stops_cleanly_on_ctrl_c(db_app, tmp_path):
    log = tmp_path / "scheduler.log"
    process = start_scheduler(scheduler_env(db_app, tmp_path), log)
    try:
        wait_for(lambda: heartbeat_pid() == process.pid, "the first heartbeat")
        process.send_signal(signal.SIGINT)
        assert process.wait(WAIT) == 0
    finally:
        stop(process)
    assert "Traceback" not in log.read_text()


@on_postgres
@pytest.mark.postgres
def test_second_scheduler_stands_by_and_takes_over(db_app, tmp_path):
    env = scheduler_env(db_app, tmp_path)
    first = start_scheduler(env, tmp_path / "first.log")
    second = None
    try:
        wait_for(lambda: heartbeat_pid() == first.pid, "the first scheduler's heartbeat")
        second = start_scheduler(env, tmp_path / "second.log")
        wait_for(
            lambda: "chờ để thay thế" in (tmp_path / "second.log").read_text(),
            "the second scheduler to stand by",
        )
        # Standing by: it runs no job, so the heartbeat stays the first one's.
        beats_seen = set()
        for _ in range(10):
            beats_seen.add(heartbeat_pid())
            time.sleep(0.2)
        assert beats_seen == {first.pid}
        assert second.poll() is None

        os.killpg(first.pid, signal.SIGKILL)  # dies without a goodbye: the lock goes with it
        first.wait(WAIT)
        wait_for(lambda: heartbeat_pid() == second.pid, "the second scheduler to take over")
        assert "Bộ lập lịch đang chạy" in (tmp_path / "second.log").read_text()

        second.send_signal(signal.SIGTERM)
        assert second.wait(WAIT) == 0
    finally:
        stop(first)
        if second is not None:
            stop(second)


@on_postgres
@pytest.mark.postgres
def test_scheduler_that_loses_its_lock_stops(db_app, tmp_path):
    process = start_scheduler(scheduler_env(db_app, tmp_path), tmp_path / "scheduler.log")
    try:
        wait_for(lambda: heartbeat_pid() == process.pid, "the first heartbeat")
        # Cut the lock's connection, as a database restart would.
        db.session.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND objid = :key"
            ),
            {"key": sched.SCHEDULER_LOCK_KEY},
        )
        db.session.commit()
        assert process.wait(WAIT) == 3
    finally:
        stop(process)
    assert "lost the scheduler lock" in (tmp_path / "scheduler.log").read_text()
