"""The inbound SMTP listener (``dispatch inbound serve``): relays hand it bounces and replies.

Each message is handled (``dispatch.inbound.handler.handle_message``) and committed BEFORE the
listener answers 250, so a relay drops a message only once it is on record; a failure answers
451 and the relay tries again later (the handler recognises a message it has already kept).
The database work runs on one worker thread, away from the event loop that talks SMTP, one
message at a time. Messages larger than ``DISPATCH_INBOUND_MAX_BYTES`` are refused with 552.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.controller import Controller, UnthreadedController
from flask import Flask

from dispatch import clock
from dispatch.inbound.handler import InboundError, handle_message
from dispatch.transaction import unit_of_work

log = logging.getLogger("dispatch.processes.inbound_listener")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2525
MAX_RECIPIENTS = 100
READY_TIMEOUT = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InboundHandler:
    """The aiosmtpd handler: accepts any recipient, records each message before its 250."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatch-inbound")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Accept up to MAX_RECIPIENTS addresses per message."""
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    def _record(self, raw: bytes, mail_from: str | None, rcpt_tos: list[str]) -> str:
        with self.app.app_context(), unit_of_work():
            result = handle_message(
                raw, door="smtp", at=clock.now(), envelope_from=mail_from, envelope_to=rcpt_tos
            )
        state = "duplicate" if result.duplicate else result.kind.value
        log.info("inbound message %s: %s (%s)", result.inbound_id, state, result.matched_by)
        return f"250 2.0.0 OK recorded as {result.inbound_id}"

    async def handle_DATA(self, server, session, envelope):
        """Record the message, then answer: 250 once committed, 451 if it could not be."""
        raw: bytes = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self.executor, self._record, raw, envelope.mail_from, list(envelope.rcpt_tos)
            )
        except InboundError as exc:
            return f"554 5.6.0 {exc}".encode("ascii", "replace").decode("ascii")
        except Exception:
            log.exception("inbound message could not be recorded; the relay will retry")
            return "451 4.3.0 Temporary failure, try again later"


def _options(app: Flask, host: str, port: int) -> dict[str, Any]:
    return {
        "hostname": host,
        "port": port,
        "data_size_limit": int(app.config.get("DISPATCH_INBOUND_MAX_BYTES") or 40 * 1024 * 1024),
        "decode_data": False,
    }


def start_listener(app: Flask, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> Controller:
    """Start the listener in a background thread; ``.stop()`` ends it."""
    controller = Controller(
        InboundHandler(app), ready_timeout=READY_TIMEOUT, **_options(app, host, port)
    )
    controller.start()
    return controller


def run_listener(app: Flask, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run the listener in the foreground until SIGINT or SIGTERM (from the main thread)."""
    loop = asyncio.new_event_loop()
    stopping: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stopping.done():
            stopping.set_result(None)

    handler = InboundHandler(app)
    try:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, request_stop)
        controller = UnthreadedController(handler, loop=loop, **_options(app, host, port))
        controller.begin()  # OSError when the port cannot be opened
        try:
            loop.run_until_complete(stopping)
        finally:
            assert controller.server is not None
            controller.server.close()
            loop.run_until_complete(controller.finalize())
            handler.executor.shutdown(wait=True)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        asyncio.set_event_loop(None)
        loop.close()
