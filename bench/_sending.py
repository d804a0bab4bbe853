"""What ``issue_63`` and ``issue_10000`` share: from ``issue_dispatch`` to the last message
accepted by a real SMTP server, against the baseline of rendering the PDF once and sending N
identical messages with ``smtplib`` over one connection.

* The SMTP server is aiosmtpd on loopback, in a process of its own (so it does not share the
  GIL with the sender), with a handler that only counts (no ``.eml`` writing).
* ``prepare`` builds a fresh SQLite instance in a temporary folder (schema by the migrations,
  N offices in a group, a draft of the seed letter to that group); it is not timed.
* Each measured run happens in a child process (``python -m bench._sending ours|baseline``),
  warmed first as a long-running web or scheduler worker is: one render of the seed letter
  (both sides) and, for ours, one letter issued and sent to one office (a second draft of the
  prepared instance; the server's count leaves it out). The child reports its wall times and
  its peak RSS (Linux VmHWM) after warming and at the end, so the growth of memory with N is
  measured apart from WeasyPrint's own footprint.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import multiprocessing
import resource
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._setup import (
    PREPARED_AT,
    ROOT,
    SEED,
    SENDER,
    generated_directory,
    make_app,
    prepare_draft,
)

ISSUE_AT = "2021-11-15T08:30:00+07:00"
CHILD_TIMEOUT = 900  # seconds; a run that takes longer is a failure, not a figure


# --- The SMTP server --------------------------------------------------------------------------


class CountingHandler:
    """An aiosmtpd handler that accepts every message and only counts messages and bytes."""

    def __init__(self, messages: Any, size: Any) -> None:
        self.messages = messages
        self.size = size

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Count the message and accept it."""
        with self.messages.get_lock():
            self.messages.value += 1
            self.size.value += len(envelope.original_content or b"")
        return "250 2.0.0 OK"


def _serve(port: int, messages: Any, size: Any, ready: Any, stop: Any) -> None:
    """The sink process: aiosmtpd with the counting handler until ``stop`` is set."""
    import logging

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(
        CountingHandler(messages, size),
        hostname="127.0.0.1",
        port=port,
        data_size_limit=64 * 1024 * 1024,
        ready_timeout=60.0,  # aiosmtpd's 5 s is too short on a busy machine
    )
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


@dataclass
class Sink:
    """The running sink: its port and its counters (shared with its process)."""

    port: int
    _messages: Any
    _size: Any

    @property
    def messages(self) -> int:
        """Messages accepted so far."""
        return self._messages.value

    @property
    def size(self) -> int:
        """Bytes of message data accepted so far."""
        return self._size.value

    def reset(self) -> None:
        """Start counting from zero."""
        with self._messages.get_lock():
            self._messages.value = 0
            self._size.value = 0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def smtp_sink() -> Iterator[Sink]:
    """A counting aiosmtpd server on loopback, in its own process, for the block's duration."""
    context = multiprocessing.get_context("spawn")
    messages, size = context.Value("q", 0), context.Value("q", 0)
    ready, stop = context.Event(), context.Event()
    port = free_port()
    process = context.Process(
        target=_serve, args=(port, messages, size, ready, stop), name="bench-smtp-sink"
    )
    process.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the SMTP sink did not start")
        yield Sink(port, messages, size)
    finally:
        stop.set()
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()


# --- A fresh instance with N offices and a draft ----------------------------------------------


WARM_UP_GROUP = "bench-warm-up"


def prepare(folder: Path, recipients: int | None) -> tuple[int, int]:
    """A fresh SQLite instance in ``folder`` with a draft of the seed letter to ``recipients``
    generated offices (None: the bundled 63 departments), and a draft of it to one office that
    the measuring process issues and sends first (``_warm_up_sending``); returns both ids,
    the warm-up draft's first."""
    from dispatch.clock import parse_moment
    from dispatch.drafting import drafts
    from dispatch.extensions import db

    app = make_app(folder)
    dispatch_id = prepare_draft(app, recipients)
    at = parse_moment(PREPARED_AT)
    with app.app_context():
        generated_directory(1, at, group_code=WARM_UP_GROUP)
        warm_up_id = drafts.create_draft(SEED, group_code=WARM_UP_GROUP, actor=None, at=at).id
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return warm_up_id, dispatch_id


# --- The measured runs (in a child process) ----------------------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB.

    Linux's VmHWM: ``ru_maxrss`` would also count the parent's memory at the fork that started
    this child (it survives the exec), and the parent has just built the instance.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _warm_up() -> None:
    """What a long-running worker has done before: imports, fonts, stylesheet, DOCX template.

    One render of the seed letter, and one deadline computed for another year (the holidays
    package's import costs ~0.6 s the first time; the year measured is still computed).
    """
    from dispatch.calendar import deadline_for
    from dispatch.clock import parse_moment
    from dispatch.letters.docx import render_docx
    from dispatch.letters.pdf import render_pdf
    from dispatch.letters.source import load_letter

    letter = load_letter(SEED).issued_as(1, dt.date(2021, 11, 15))
    render_pdf(letter)
    render_docx(letter)
    deadline_for(parse_moment("2019-11-15T08:30:00+07:00"), working_days=3, hour=17)


def _settle() -> None:
    """Freeze what the warm-up left out of the garbage collector, on both sides.

    A full collection scans every object alive, and the measured process holds a few hundred
    thousand after its warm-up (the app, SQLAlchemy, WeasyPrint): one falling inside a run added
    50 to 100 ms to that run and not to the next. Frozen, they are no longer scanned, so the
    figures compare the work, not where the collector happened to strike.
    """
    gc.collect()
    gc.freeze()


def _warm_up_sending(warm_up_id: int, at: dt.datetime) -> int:
    """What a long-running scheduler or web worker has done before: issued a letter and sent it
    (here the warm-up draft, to one office), so that its database connection, SQL statements,
    mapped classes and e-mail templates are ready. Returns the bytes of the e-mail sent."""
    from flask import current_app
    from sqlalchemy import select

    from dispatch.extensions import db
    from dispatch.issuing import issue_dispatch
    from dispatch.mail.sender import deliver_due
    from dispatch.models import OutboxMessage

    issue_dispatch(warm_up_id, actor=None, at=at)
    report = deliver_due(at)
    if report.sent != 1:
        raise RuntimeError(f"warm-up: {report.sent} e-mails sent, 1 expected: {report.errors}")
    path = db.session.execute(
        select(OutboxMessage.sent_path).where(OutboxMessage.dispatch_id == warm_up_id)
    ).scalar_one()
    return (Path(current_app.config["DISPATCH_DATA_DIR"]) / path).stat().st_size


def run_ours(folder: Path, port: int, warm_up_id: int, dispatch_id: int) -> dict[str, Any]:
    """Issue the draft and deliver its letters; the figures of this run."""
    from dispatch.clock import parse_moment
    from dispatch.issuing import issue_dispatch
    from dispatch.mail.sender import deliver_due

    app = make_app(folder, smtp_port=port)
    at = parse_moment(ISSUE_AT)
    with app.app_context():
        _warm_up()
        warm_up_bytes = _warm_up_sending(warm_up_id, at - dt.timedelta(minutes=5))
        _settle()
        rss_warm = _peak_rss_mb()
        cpu_start = time.process_time()
        start = time.perf_counter()
        issued = issue_dispatch(dispatch_id, actor=None, at=at)
        issued_after = time.perf_counter()
        sent = failed = connections = 0
        while True:  # until nothing is due: the scheduler would come back each minute
            report = deliver_due(at)
            sent, failed = sent + report.sent, failed + report.failed + report.retrying
            connections += report.connections
            if report.claimed == 0:
                break
        end = time.perf_counter()
        cpu = time.process_time() - cpu_start
    return {
        "seconds": end - start,
        "cpu_seconds": cpu,
        "issue_seconds": issued_after - start,
        "deliver_seconds": end - issued_after,
        "recipients": issued.recipients,
        "sent": sent,
        "not_sent": failed,
        "smtp_connections": connections,
        "warm_up_messages": 1,
        "warm_up_bytes": warm_up_bytes,
        "rss_after_warm_up_mb": round(rss_warm, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def run_baseline(port: int, count: int, with_docx: bool = False) -> dict[str, Any]:
    """Render the PDF once (and the DOCX if ``with_docx``) and send ``count`` identical
    messages carrying it over one connection."""
    from email import policy
    from email.message import EmailMessage

    from dispatch.letters.docx import render_docx
    from dispatch.letters.pdf import render_pdf
    from dispatch.letters.source import load_letter

    _warm_up()
    _settle()
    rss_warm = _peak_rss_mb()
    cpu_start = time.process_time()
    start = time.perf_counter()
    letter = load_letter(SEED).issued_as(1, dt.date(2021, 11, 15))
    pdf = render_pdf(letter)
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = SENDER
    message["To"] = "so-tttt@tinh.example"
    message["Subject"] = f"Công văn số 01/{letter.symbol} V/v {letter.subject}"
    message.set_content("Kính gửi Quý Sở,\n\nCục Tin học hoá gửi công văn kèm theo.\n")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="cong-van.pdf")
    if with_docx:
        message.add_attachment(
            render_docx(letter),
            maintype="application",
            subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
            filename="cong-van.docx",
        )
    data = message.as_bytes()
    rendered = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
        for _ in range(count):
            smtp.sendmail(SENDER, ["so-tttt@tinh.example"], data)
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "render_seconds": rendered - start,
        "send_seconds": end - rendered,
        "message_bytes": len(data),
        "rss_after_warm_up_mb": round(rss_warm, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def run_child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m bench._sending ARGS`` (in ``env``, else this process's environment) and
    return the JSON it prints last."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench._sending", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"bench child {args[0]} failed ({completed.returncode}):\n{completed.stderr[-4000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_ours(sink: Sink, recipients: int | None) -> dict[str, Any]:
    """One issue-and-deliver on a fresh instance; checks the sink got every message once."""
    with tempfile.TemporaryDirectory(prefix="bench-issue-") as name:
        folder = Path(name)
        warm_up_id, dispatch_id = prepare(folder, recipients)
        sink.reset()
        figures = run_child(
            ["ours", str(folder), str(sink.port), str(warm_up_id), str(dispatch_id)]
        )
    expected = figures["recipients"]
    if recipients is not None and expected != recipients:
        raise RuntimeError(f"issued to {expected} offices, {recipients} expected")
    accepted = sink.messages - figures["warm_up_messages"]
    if figures["sent"] != expected or accepted != expected:
        raise RuntimeError(
            f"{expected} letters to send, {figures['sent']} reported sent, "
            f"{accepted} accepted by the SMTP server"
        )
    figures["accepted_bytes"] = sink.size - figures["warm_up_bytes"]
    return figures


def measure_baseline(sink: Sink, count: int, with_docx: bool = False) -> dict[str, Any]:
    """One baseline run of ``count`` messages; checks the sink got them all."""
    sink.reset()
    figures = run_child(["baseline", str(sink.port), str(count), "docx" if with_docx else "pdf"])
    if sink.messages != count:
        raise RuntimeError(f"baseline: {count} sent, {sink.messages} accepted")
    return figures


def _main(argv: list[str]) -> int:
    kind, *rest = argv
    if kind == "ours":
        folder, port, warm_up_id, dispatch_id = rest
        figures = run_ours(Path(folder), int(port), int(warm_up_id), int(dispatch_id))
    elif kind == "baseline":
        port, count, files = rest
        figures = run_baseline(int(port), int(count), with_docx=files == "docx")
    else:
        raise SystemExit(f"unknown run {kind!r}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    # The sink process is started with "spawn": keep this module importable without side effects.
    threading.current_thread().name = "bench-child"
    sys.exit(_main(sys.argv[1:]))
