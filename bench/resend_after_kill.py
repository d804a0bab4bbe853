"""How often a sender killed mid-batch costs an office a second copy of its e-mail.

``python -m bench resend_after_kill``. A fresh SQLite instance in a temporary folder (or the
database of ``BENCH_DATABASE_URL``, emptied first) with the seed letter issued to OFFICES
generated offices, and an aiosmtpd server in this process that notes the Message-ID of every
message it accepts. Then, KILLS times (``BENCH_KILLS``): a real ``dispatch deliver`` process
is started and, once the server has accepted its first message, killed with SIGKILL after a
delay drawn uniformly from 0 to KILL_WINDOW, while it is sending; the next run comes after the
lease and takes over what the killed one left in ``sending``. A message the server accepted
whose 250 the killed sender had not yet committed goes out again then, with the same
Message-ID: that is a duplicate. A last run sends what is left.

Afterwards every office must have its letter; the rows recorded as sent without their kept
copy (the exact bytes, matching the SHA-256 on record) and the temporary files left in the
archive are counted (both 0 since copies are kept before the e-mail leaves). The figures go to
``bench/results.json`` under "resend_after_kill": the kills, the duplicates, the rate
(duplicates per kill, with its 95 % Wilson interval) and, as ``ratio``, that rate against the
baseline the design allows at worst: one duplicate for every kill. The time per e-mail while the
killed runs sent (from their first acceptance to the kill) turns the rate into the window each
e-mail spends accepted but unrecorded (``window_ms``): what an outage at a random moment costs
grows with a dispatch's e-mails times that window, while the rate per kill also grows when the
sender does its own work faster, outside the window.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._sending import free_port
from bench._setup import (
    AUDIT_KEY,
    ROOT,
    SECRET_KEY,
    SENDER,
    make_app,
    prepare_draft,
    reset_postgres,
)
from bench.common import record

OFFICES = 2000  # letters enough for every kill
KILLS = int(os.environ.get("BENCH_KILLS") or 60)
KILL_WINDOW = 0.25  # seconds after a run's first 250: some 40 messages at full speed
ISSUE_AT = dt.datetime(2021, 11, 15, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=7)))
SEED = 20211115
RUN_TIMEOUT = 300.0


class _Recorder:
    """An aiosmtpd handler that accepts every message and notes its Message-ID."""

    def __init__(self) -> None:
        self.message_ids: list[str] = []
        self.changed = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Note the message's Message-ID and accept it."""
        from email import policy
        from email.parser import BytesParser

        raw = envelope.original_content or b""
        headers = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
        with self.changed:
            self.message_ids.append("".join(str(headers.get("Message-ID", "")).split()))
            self.changed.notify_all()
        return "250 2.0.0 OK"

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until the server has accepted ``count`` messages; False after ``timeout``."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.message_ids) >= count, timeout)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def _environment(folder: Path, database_url: str, port: int) -> dict[str, str]:
    """What a ``dispatch`` process needs to send this instance's outbox to our server."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAIL_", "DATABASE_URL", "DISPATCH_"))
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET_KEY,
            "DISPATCH_AUDIT_KEY": AUDIT_KEY,
            "DISPATCH_DATA_DIR": str(folder / "data"),
            "DISPATCH_INSTANCE_PATH": str(folder / "instance"),
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(port),
            "MAIL_DEFAULT_SENDER": SENDER,
            # The processes run this checkout's code, whatever the environment has installed.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        }
    )
    return env


def _deliver(env: dict[str, str], at: dt.datetime, log: Path) -> subprocess.Popen:
    with log.open("ab") as output:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("dispatch")), "deliver", "--at", _iso(at)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _wilson(hits: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = hits / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    denominator = 1 + z * z / trials
    return (centre - spread) / denominator, (centre + spread) / denominator


def _check(app: Any, received: Counter[str]) -> dict[str, int]:
    """What the runs left: rows not sent, or sent and never received (both must be 0), rows
    sent whose kept copy is missing or not the bytes recorded, temporary files left behind."""
    from sqlalchemy import select

    from dispatch.extensions import db
    from dispatch.models import DeliveryStatus, OutboxMessage

    root = Path(app.config["DISPATCH_DATA_DIR"])
    found = Counter(rows=0, not_sent=0, never_received=0, copies_missing=0, temporary_files=0)
    with app.app_context():
        for row in db.session.execute(select(OutboxMessage)).scalars():
            found["rows"] += 1
            if row.status is not DeliveryStatus.SENT:
                found["not_sent"] += 1
                continue
            found["never_received"] += received[row.message_id] == 0
            path = root / row.sent_path
            kept = path.read_bytes() if path.is_file() else b""
            found["copies_missing"] += hashlib.sha256(kept).hexdigest() != row.sent_sha256
        found["temporary_files"] = len(list(root.glob("dispatches/*/sent/.tmp-*")))
        db.session.remove()
        db.engine.dispose()
    return dict(found)


def main() -> dict[str, Any]:
    """Measure, print and record the resend_after_kill benchmark."""
    from aiosmtpd.controller import Controller

    from dispatch.extensions import db
    from dispatch.issuing import issue_dispatch
    from dispatch.mail.sender import LEASE

    database = os.environ.get("BENCH_DATABASE_URL")
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="bench-resend-") as tmp:
        folder = Path(tmp)
        url = reset_postgres(database) if database else f"sqlite:///{folder / 'dispatch.db'}"
        port = free_port()
        app = make_app(folder, database_url=url, smtp_port=port)
        dispatch_id = prepare_draft(app, OFFICES)
        with app.app_context():
            issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)
            db.session.remove()
            db.engine.dispose()
        recorder = _Recorder()
        controller = Controller(recorder, hostname="127.0.0.1", port=port, ready_timeout=60)
        controller.start()
        env = _environment(folder, url, port)
        log = folder / "deliver.log"
        at = ISSUE_AT + dt.timedelta(minutes=1)
        kills = 0
        sending_seconds = 0.0  # from each run's first acceptance to its kill
        sent_meanwhile = 0  # the messages accepted in that time
        try:
            for _ in range(KILLS):
                accepted = len(recorder.message_ids)
                process = _deliver(env, at, log)
                try:
                    if not recorder.wait_for(accepted + 1, RUN_TIMEOUT):
                        raise RuntimeError(f"no message sent: {log.read_text()[-2000:]}")
                    first = time.perf_counter()
                    time.sleep(rng.uniform(0, KILL_WINDOW))
                    process.send_signal(signal.SIGKILL)
                    sending_seconds += time.perf_counter() - first
                    sent_meanwhile += len(recorder.message_ids) - accepted - 1
                finally:
                    process.wait(RUN_TIMEOUT)
                kills += process.returncode == -signal.SIGKILL
                # What it left in sending is taken over by the next run.
                at += LEASE + dt.timedelta(minutes=1)
            last = _deliver(env, at, log)
            if last.wait(RUN_TIMEOUT) != 0:
                raise RuntimeError(f"the last run failed: {log.read_text()[-2000:]}")
        finally:
            controller.stop()
        received = Counter(recorder.message_ids)
        found = _check(app, received)
    duplicates = sum(count - 1 for count in received.values())
    if found["not_sent"] or found["never_received"] or len(received) != found["rows"]:
        raise RuntimeError(f"not every office has its letter once at least: {found}")
    rate = duplicates / kills if kills else 0.0
    low, high = _wilson(duplicates, kills)
    # A kill at a random moment of a run finds an accepted e-mail unrecorded ``rate`` of the
    # time: per e-mail, that is this long. A faster sender shows a higher rate for the same
    # window, since its runs hold less else; for an outage at a random moment of a day, the
    # duplicates a dispatch costs grow with its e-mails times this window, not with the rate.
    per_message_ms = sending_seconds / sent_meanwhile * 1000 if sent_meanwhile else 0.0
    window_ms = rate * per_message_ms
    figures = {
        "database": "postgresql" if database else "sqlite",
        "offices": OFFICES,
        "kills": kills,
        "kill_window_seconds": KILL_WINDOW,
        "duplicates": duplicates,
        "rate": round(rate, 3),
        "rate_95": [round(low, 3), round(high, 3)],
        "ratio": round(rate, 3),  # against one duplicate per kill
        "per_message_ms": round(per_message_ms, 2),
        "window_ms": round(window_ms, 2),
        "kept_copies_missing": found["copies_missing"],
        "temporary_files_left": found["temporary_files"],
    }
    print(f"{kills} kills of a sending `dispatch deliver` ({figures['database']})")
    print(f"  offices that got a second copy   {duplicates}")
    print(f"  rate, per kill                  {rate:.1%}  (95 %: {low:.1%} to {high:.1%})")
    print(f"  time per e-mail while sending   {per_message_ms:.2f} ms")
    print(f"  window per e-mail (rate × time) {window_ms:.2f} ms")
    print(f"  sent rows without their kept copy   {found['copies_missing']}")
    print(f"  temporary files left in the archive {found['temporary_files']}")
    record("resend_after_kill", figures)
    return figures


if __name__ == "__main__":
    main()
