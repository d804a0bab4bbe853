"""The built-in SMTP sink: accepts every message on loopback and keeps it as an ``.eml`` file.

A developer's machine has no mail server; ``dispatch smtp-sink`` (started by ``make run``) listens
on 127.0.0.1:8025, the default MAIL_SERVER/MAIL_PORT, so ``dispatch deliver`` works unchanged and
every e-mail can be opened from ``instance/mail/``. Each file is written under a temporary name
and renamed into place, so a reader never sees half a message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import signal
import socket
import uuid
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller, UnthreadedController

log = logging.getLogger("dispatch.processes.smtp_sink")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds the threaded sink (tests, benchmarks) is given to start: aiosmtpd's default, 5 s, is
# not enough on a busy machine, and its time-out is an OSError that reads like a taken port.
READY_TIMEOUT = 60.0
# Seconds the connections still open when the sink stops are given to end, and then the server.
STOP_TIMEOUT = 5.0

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")


def eml_name(received_at: dt.datetime, message_id: str | None) -> str:
    """A file name that sorts by arrival time and says which message it is."""
    stamp = received_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    ident = _UNSAFE.sub("_", (message_id or "").strip().strip("<>"))[:120].strip("._")
    return f"{stamp}-{ident or 'no-message-id'}.eml"


def write_atomically(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` (renamed into place; never overwrites another file)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    target = folder / name
    stem = target.stem
    counter = 1
    while True:
        try:
            # link + unlink, unlike rename, fails instead of replacing an existing file.
            os.link(tmp, target)
            break
        except FileExistsError:
            counter += 1
            target = folder / f"{stem}-{counter}.eml"
    tmp.unlink()
    return target


class EmlSinkHandler:
    """An aiosmtpd handler that stores each accepted message as ``<time>-<Message-ID>.eml``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Store the message with its envelope (as Return-Path and X-Original-To headers)."""
        raw: bytes = envelope.original_content or b""
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
        message_id = headers.get("Message-ID")
        # What a mailbox would add on delivery: who sent it and to whom, per the envelope.
        envelope_headers = (
            f"Return-Path: <{envelope.mail_from or ''}>\r\n"
            f"X-Original-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode("utf-8", "surrogateescape")
        received_at = dt.datetime.now(dt.UTC)  # the sink is an edge: it reads the clock itself
        path = write_atomically(
            self.folder, eml_name(received_at, message_id), envelope_headers + raw
        )
        self.count += 1
        log.info(
            "%s -> %s  %s  %d bytes  %s",
            envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
            message_id or "(no Message-ID)",
            len(raw),
            path.name,
        )
        return f"250 OK stored as {path.name}"


def _controller_options(host: str, port: int) -> dict[str, Any]:
    """What both ways of running the sink give aiosmtpd: where to listen, the name it greets
    with, the largest message."""
    return {
        "hostname": host,
        "port": port,
        "server_hostname": socket.getfqdn(host) if host not in ("", "0.0.0.0", "::") else None,
        "data_size_limit": 64 * 1024 * 1024,
    }


def start_sink(folder: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> Controller:
    """Start the sink in a background thread; call ``.stop()`` on the result to end it."""
    controller = Controller(
        EmlSinkHandler(folder), ready_timeout=READY_TIMEOUT, **_controller_options(host, port)
    )
    controller.start()
    return controller


def run_sink(folder: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run the sink in the foreground until SIGINT (Ctrl-C) or SIGTERM; call from the main thread.

    The server runs on an event loop in this thread, and the two signals are that loop's own
    (``add_signal_handler``), set before the port opens. So a signal is never raised as
    ``KeyboardInterrupt`` in the middle of starting or stopping a server thread (which would
    leave that thread serving), never lands on a thread that does not look at it, and there is
    no thread to join: whenever it arrives, the sink stops at once. Connections still open are
    cut, and the server given ``STOP_TIMEOUT`` seconds at most to close.
    """
    loop = asyncio.new_event_loop()
    stopping: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stopping.done():
            stopping.set_result(None)

    try:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, request_stop)
        controller = UnthreadedController(
            EmlSinkHandler(folder), loop=loop, **_controller_options(host, port)
        )
        controller.begin()  # OSError when the port cannot be opened
        try:
            loop.run_until_complete(stopping)
        finally:
            loop.run_until_complete(_shut_down(controller))
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        asyncio.set_event_loop(None)
        loop.close()


async def _shut_down(controller: UnthreadedController) -> None:
    """Stop listening, end the open connections, then close the server, within bounded time."""
    assert controller.server is not None
    controller.server.close()
    # A connection left open (a client that never says QUIT) would keep the server from
    # closing: its task is cancelled, which closes it.
    current = asyncio.current_task()
    connections = [task for task in asyncio.all_tasks() if task is not current]
    for task in connections:
        task.cancel()
    if connections:
        await asyncio.wait(connections, timeout=STOP_TIMEOUT)
    try:
        await asyncio.wait_for(controller.finalize(), STOP_TIMEOUT)
    except TimeoutError:
        log.warning("the SMTP sink did not close within %s s; stopping anyway", STOP_TIMEOUT)
