"""The confirmation link under load: 2,000 offices confirming at once through ``POST /r/<token>``
on gunicorn (4 workers) and PostgreSQL, against a bare Flask endpoint served the same way.

``python -m bench confirm_load``. The letter is issued for real (the seed letter to 2,000
generated offices) in the database ``dispatch_bench``, or that of ``BENCH_DATABASE_URL`` (created
if missing, emptied first: the tests' ``test`` database is never touched). Then ``gunicorn -w 4
wsgi:app`` serves it, and a second process (``bench._load``) runs 50 concurrent clients, each
confirmation the real flow: GET the page, read the CSRF token, POST the form, expect the 303. The
baseline is the same load against ``gunicorn -w 4 bench._bare_app:app``, which answers both
requests trivially.

Afterwards every confirmation must be on record exactly once: 2,000 recipients confirmed, 2,000
``recipient.acknowledged`` audit entries for 2,000 different recipients, and the audit chain
(appended to by four processes at once) intact.

Figures go to ``bench/results.json`` under "confirm_load": ``ratio`` is our wall time for the
2,000 confirmations over the bare app's (the cost per confirmation, relative), with p50/p99
latencies of a whole confirmation (GET + POST) and of each request, and the throughput.

Measured on 2 shared CPUs (load average 3–7 from other work), five runs alternating with main:
ratio 1.75 median (1.38–2.80), main 2.16 (1.81–2.45). Everything runs on the same two cores, so
the ratio follows CPU per confirmation, measured from /proc in two more alternating runs: our
workers 4.4 ms (main 5.2, bare app 1.5), PostgreSQL 1.0 ms (main 1.2, bare 0.25), the load
generator 3.9 ms (main 4.2, bare 3.4: our page is larger). A confirmation is 3 round trips: the
link's row and its opening with event and audit entry (GET), the confirmation with its entry
(POST); no pool pre-ping, no session cookie.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._sending import free_port
from bench._setup import POSTGRES_BENCH_URL, ROOT, make_app, prepare_draft, reset_postgres
from bench.common import record

CONFIRMATIONS = 2000
CONCURRENCY = 50
WORKERS = 4
ISSUE_AT = "2021-11-15T08:30:00+07:00"
START_TIMEOUT = 60.0
LOAD_TIMEOUT = 600


def _percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _issue_and_tokens(folder: Path, database_url: str) -> tuple[int, list[str]]:
    """Issue the seed letter to CONFIRMATIONS generated offices; their confirmation tokens."""
    from sqlalchemy import select

    from dispatch.clock import parse_moment
    from dispatch.extensions import db
    from dispatch.issuing import issue_dispatch
    from dispatch.mail.links import token_for
    from dispatch.models import DispatchRecipient

    app = make_app(folder, database_url=database_url)
    dispatch_id = prepare_draft(app, CONFIRMATIONS)
    with app.app_context():
        issue_dispatch(dispatch_id, actor=None, at=parse_moment(ISSUE_AT))
        recipients = db.session.execute(
            select(DispatchRecipient).where(DispatchRecipient.dispatch_id == dispatch_id)
        ).scalars()
        tokens = [token_for(recipient) for recipient in recipients]
        db.session.remove()
        db.engine.dispose()
    return dispatch_id, tokens


def _serve(app_spec: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """``gunicorn -w WORKERS app_spec`` on a free loopback port, once it answers."""
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(WORKERS),
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                app_spec,
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn {app_spec} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"gunicorn {app_spec} did not answer:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    # Every worker has imported the app; one request each at least opens its database pool.
    for _ in range(WORKERS * 4):
        httpx.get(f"{base_url}/healthz", timeout=30)
    return process, base_url


def _stop(process: subprocess.Popen) -> None:
    """Stop gunicorn (its master and workers) gracefully, or kill them."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _load(base_url: str, tokens_file: Path) -> dict[str, Any]:
    """Run the load generator in its own process; its figures."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench._load", base_url, str(tokens_file), str(CONCURRENCY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=LOAD_TIMEOUT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _summary(load: dict[str, Any]) -> dict[str, Any]:
    return {
        "seconds": load["seconds"],
        "confirmations_per_second": len(load["confirm_ms"]) / load["seconds"],
        "requests_per_second": 2 * len(load["confirm_ms"]) / load["seconds"],
        "p50_ms": statistics.median(load["confirm_ms"]),
        "p99_ms": _percentile(load["confirm_ms"], 99),
        "get_p50_ms": statistics.median(load["get_ms"]),
        "get_p99_ms": _percentile(load["get_ms"], 99),
        "post_p50_ms": statistics.median(load["post_ms"]),
        "post_p99_ms": _percentile(load["post_ms"], 99),
        "statuses": load["statuses"],
    }


def _check_recorded_once(folder: Path, database_url: str, dispatch_id: int) -> dict[str, int]:
    """Every confirmation on record exactly once, and the audit chain whole."""
    from sqlalchemy import func, select

    from dispatch import audit
    from dispatch.extensions import db
    from dispatch.models import AuditEntry, DispatchRecipient

    app = make_app(folder, database_url=database_url)
    with app.app_context():
        confirmed = db.session.execute(
            select(func.count())
            .select_from(DispatchRecipient)
            .where(
                DispatchRecipient.dispatch_id == dispatch_id,
                DispatchRecipient.acknowledged_at.is_not(None),
            )
        ).scalar_one()
        entries, recipients = db.session.execute(
            select(func.count(), func.count(func.distinct(AuditEntry.object_id))).where(
                AuditEntry.action == "recipient.acknowledged",
                AuditEntry.dispatch_id == dispatch_id,
            )
        ).one()
        problems = audit.verify_chain()
        db.session.remove()
        db.engine.dispose()
    counts = {
        "confirmed": confirmed,
        "audit_entries": entries,
        "audit_recipients": recipients,
        "audit_chain_problems": len(problems),
    }
    expected = {
        "confirmed": CONFIRMATIONS,
        "audit_entries": CONFIRMATIONS,
        "audit_recipients": CONFIRMATIONS,
        "audit_chain_problems": 0,
    }
    if counts != expected:
        raise RuntimeError(f"confirmations not recorded exactly once: {counts}, not {expected}")
    return counts


def main() -> dict[str, Any]:
    """Measure, print and record the confirm_load benchmark."""
    with tempfile.TemporaryDirectory(prefix="bench-confirm-") as name:
        folder = Path(name)
        database_url = reset_postgres(os.environ.get("BENCH_DATABASE_URL") or POSTGRES_BENCH_URL)
        dispatch_id, tokens = _issue_and_tokens(folder, database_url)
        tokens_file = folder / "tokens.txt"
        tokens_file.write_text("\n".join(tokens))
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "bench-secret-key",
            "DISPATCH_AUDIT_KEY": "bench-audit-key",
            "DISPATCH_INSTANCE_PATH": str(folder / "instance"),
            "DISPATCH_DATA_DIR": str(folder / "data"),
        }
        log = folder / "gunicorn.log"

        bare_process, bare_url = _serve("bench._bare_app:app", env, log)
        try:
            bare = _load(bare_url, tokens_file)
        finally:
            _stop(bare_process)

        ours_process, ours_url = _serve("wsgi:app", env, log)
        try:
            ours = _load(ours_url, tokens_file)
        finally:
            _stop(ours_process)
        if ours["failures"] or ours["statuses"] != {
            "GET 200": CONFIRMATIONS,
            "POST 303": CONFIRMATIONS,
        }:
            raise RuntimeError(
                f"confirmations failed: {ours['statuses']} {ours['failures'][:5]}\n"
                f"{log.read_text()[-3000:]}"
            )
        counts = _check_recorded_once(folder, database_url, dispatch_id)

    ours_summary, bare_summary = _summary(ours), _summary(bare)
    figures = {
        "ratio": ours["seconds"] / bare["seconds"],
        "ratio_p50": ours_summary["p50_ms"] / bare_summary["p50_ms"],
        "ratio_p99": ours_summary["p99_ms"] / bare_summary["p99_ms"],
        "confirmations": CONFIRMATIONS,
        "concurrency": CONCURRENCY,
        "workers": WORKERS,
        "database": "postgresql",
        **ours_summary,
        "baseline": bare_summary,
        "recorded": counts,
    }
    entry = record("confirm_load", figures)
    print(
        f"{CONFIRMATIONS} confirmations (GET + POST), {CONCURRENCY} clients, gunicorn "
        f"-w {WORKERS}, PostgreSQL, {entry['cpu_count']} CPUs, {entry['date']}"
    )
    print("                      total   per s   p50 (ms)  p99 (ms)  GET p50  POST p50")
    for label, summary in (("ours", ours_summary), ("bare Flask", bare_summary)):
        print(
            f"  {label:<14} {summary['seconds']:7.1f} s {summary['confirmations_per_second']:6.0f}"
            f"  {summary['p50_ms']:9.1f} {summary['p99_ms']:9.1f} {summary['get_p50_ms']:8.1f}"
            f" {summary['post_p50_ms']:8.1f}"
        )
    print(f"  ratio ours / bare: time {figures['ratio']:.2f}, p50 {figures['ratio_p50']:.2f}")
    print(
        f"  recorded once: {counts['confirmed']} confirmed, {counts['audit_entries']} audit "
        f"entries, chain problems {counts['audit_chain_problems']}"
    )
    return entry


if __name__ == "__main__":
    main()
