"""The SMTP client: one connection for a batch, each message handed over before its reply is read.

This module talks SMTP and nothing else: it knows no database, no outbox row and no Flask app.
The sender (``dispatch.mail.sender``) gives it an envelope and the exact bytes of a message and
is told what the server, or the connection, answered; what that means for a row is decided
there.

A message goes in two calls:

* ``SmtpSession.hand_over`` sends MAIL FROM, one RCPT TO per address and DATA, then the data to
  its last byte, without reading the server's final reply.
* ``SmtpSession.read_reply`` reads the reply to the data: the server's 250, or ``SendFailure``.

``hand_over`` takes the caller's own work in steps while the server works: the sender records
the previous reply while the server answers this message's commands, and composes the next
e-mails while the server reads this one, before the line with one dot that ends it (until
then, nothing of it can be accepted; ``dispatch.mail.sender``). The two calls are two so that a
refusal before the data and the answer to the data stay apart.

**Never twice what may have been accepted.** A message is tried again on a new connection only
when nothing of it reached the server (a kept-open connection found closed before its data);
once its data has left, the answer, or the lack of one, is the caller's to record.

Every exception raised while talking to the server goes through ``failure_from_exception``,
which says what it means for the message (permanent or not, the connection lost or not, before
the data or not) and whether the connection can carry the next one.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 25
DEFAULT_TIMEOUT = 30.0
# Time-outs in a row after which the relay is given up for the run: a stalled relay would
# otherwise hold every message of the batch for MAIL_TIMEOUT each.
STALLS_BEFORE_GIVING_UP = 2


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to connect: Flask-Mail's ``MAIL_*`` settings, with its defaults."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    use_ssl: bool = False
    use_tls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = DEFAULT_TIMEOUT  # seconds, for connecting and for each reply
    suppress: bool = False  # nothing leaves; every message is answered at once

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, testing: bool = False) -> SmtpSettings:
        """The settings in an app's configuration; ``MAIL_SUPPRESS_SEND`` defaults to
        ``testing``, as with Flask-Mail."""
        return cls(
            host=config.get("MAIL_SERVER") or DEFAULT_HOST,
            port=int(config.get("MAIL_PORT") or DEFAULT_PORT),
            use_ssl=bool(config.get("MAIL_USE_SSL")),
            use_tls=bool(config.get("MAIL_USE_TLS")),
            username=config.get("MAIL_USERNAME"),
            password=config.get("MAIL_PASSWORD"),
            timeout=float(config.get("MAIL_TIMEOUT") or DEFAULT_TIMEOUT),
            suppress=bool(config.get("MAIL_SUPPRESS_SEND", testing)),
        )


@dataclass(frozen=True)
class Envelope:
    """Who a message is from and for, as MAIL FROM and RCPT TO give them (bare addresses)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]  # each address once, in order
    # Lower-cased addresses the message is for: one of them refused fails the message; any
    # other (a copy) refused is noted in the reply and the message still goes.
    required: frozenset[str]


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
        # The relay refused (or stalled) for every message alike, not for this one: nothing of
        # it was sent, and it is no attempt of its own (``SmtpSession.given_up``).
        self.server_wide = False
        self.timed_out = False  # the server did not answer within MAIL_TIMEOUT
        # The conversation is still in step: after RSET the connection can carry the next one.
        self.keeps_connection = not connection_lost


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if exc.__class__.__name__ not in text else text


def failure_from_reply(step: str, code: int, text: bytes | str) -> SendFailure:
    """The failure a reply other than the expected one at ``step`` means: a 5xx is permanent,
    anything else temporary, and 421 means the server is closing the connection."""
    reply = _reply(code, text)
    return SendFailure(
        f"{step}: {reply}", permanent=500 <= code < 600, connection_lost=code == 421, reply=reply
    )


# What talking to the server can raise: its answers, a closed connection, a socket error (a
# timeout among them), and the refusals this module raises itself.
_CONVERSATION_ERRORS = (
    SendFailure,
    smtplib.SMTPResponseException,
    smtplib.SMTPServerDisconnected,
    OSError,
)


def failure_from_exception(exc: BaseException, step: str, *, before_data: bool) -> SendFailure:
    """What an exception raised during ``step`` of a message's transaction means for it.

    A reply read in its turn (``smtplib.SMTPDataError``, raised here for any unexpected code)
    leaves the connection usable after RSET, unless it is a 421; any other reply error (a line
    too long …) leaves the conversation out of step; a closed connection, a timeout or another
    socket error loses the connection, and trying again later may help. A ``SendFailure`` is
    already one and comes back as it is.
    """
    if isinstance(exc, SendFailure):
        return exc
    if isinstance(exc, smtplib.SMTPResponseException):
        failure = failure_from_reply(step, exc.smtp_code, exc.smtp_error)
        if not isinstance(exc, smtplib.SMTPDataError):
            failure.keeps_connection = False
    else:
        failure = SendFailure(
            f"{step}: connection lost: {_describe(exc)}", permanent=False, connection_lost=True
        )
        failure.timed_out = _timed_out(exc)
    failure.before_data = before_data
    return failure


def _timed_out(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was raised while handling, a socket time-out (smtplib reports
    one as a closed connection)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, TimeoutError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


@dataclass
class Handover:
    """A message whose data went to the server: its reply is still to be read."""

    refused: list[str] = field(default_factory=list)  # copies (Cc) the server refused
    smtp: smtplib.SMTP | None = None
    reply: str | None = None  # known at once when nothing was sent (``suppress``)


class SmtpSession:
    """One SMTP connection for a batch, opened on first use and kept open between messages.

    smtplib's commands are used one at a time: Flask-Mail's ``send`` hides the server's answer,
    loses a refused recipient among several and connects without a timeout, and
    ``smtplib.SMTP.sendmail`` waits for each reply before it sends anything more.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None
        self.unreachable: str | None = None  # set once connecting failed: no retry this batch
        # Set when the relay is given up for this run without any fault of a message: it
        # answered our MAIL FROM with a temporary refusal (a server-wide condition), or it let
        # STALLS_BEFORE_GIVING_UP messages in a row time out. What has not been handed over is
        # left for a later run, no attempt spent.
        self.given_up: str | None = None
        self.stalls = 0  # messages in a row that timed out
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
        settings = self.settings
        smtp: smtplib.SMTP | None = None
        try:
            if settings.use_ssl:
                smtp = smtplib.SMTP_SSL(
                    settings.host,
                    settings.port,
                    timeout=settings.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
            self.connections += 1
            # The line that ends a message goes on its own, after the message (``_send_data``):
            # Nagle's algorithm would hold it until the server acknowledged the message.
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo()
            if settings.use_tls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.username and settings.password:
                smtp.login(settings.username, settings.password)
        except (smtplib.SMTPException, OSError) as exc:
            if smtp is not None:
                smtp.close()
            # Whatever the code (even a 535 on login), it is no fault of the message: retry.
            self.unreachable = (
                f"cannot connect to {settings.host}:{settings.port}: {_describe(exc)}"
            )
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

    def abandon(self) -> None:
        """Drop the connection after an unexpected error: it may be in the middle of a message."""
        self._drop()

    def _drop(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()

    def _rset(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _settle(self, smtp: smtplib.SMTP, failure: SendFailure) -> None:
        """Make the connection ready for the next message after ``failure``, or drop it."""
        if failure.keeps_connection:
            self._rset(smtp)
        else:
            self._drop()

    def send(self, envelope: Envelope, data: bytes) -> str:
        """Send a message; return the server's reply to its data, or raise ``SendFailure``."""
        return self.read_reply(self.hand_over(envelope, data))

    def hand_over(
        self,
        envelope: Envelope,
        data: bytes,
        meanwhile: Callable[[], bool] | None = None,
        before_end: Callable[[], bool] | None = None,
    ) -> Handover:
        """Give the server a message's data to its last byte, without waiting for the reply
        (``read_reply`` reads it). Raises ``SendFailure`` when the message is refused before its
        data (a required address refused, the sender refused, the connection lost).

        ``meanwhile``: the caller's own work in steps (a call does one and says whether more is
        left), done while the server answers MAIL FROM, each RCPT TO and DATA: one step after
        each command is sent and before its answer is read, the rest before the data. So all of
        it is done before anything of this message can be accepted. ``before_end``: more of
        the caller's work, all of it taken once the message is sent and before the line with
        one dot that ends it, while the server reads the message: until that line, the server
        can accept nothing, so a caller killed meanwhile leaves nothing accepted. An exception
        either raises drops the connection, leaves the message unsent and goes up as it is."""
        if self.settings.suppress:
            return Handover(reply="250 not sent: MAIL_SUPPRESS_SEND is on")
        if self.unreachable is not None:
            raise SendFailure(self.unreachable, permanent=False, connection_lost=True)
        if self.given_up is not None:
            raise self._given_up_failure()
        for attempt in (1, 2):
            reused = self.smtp is not None
            smtp = self.smtp or self._connect()
            try:
                refused = self._transact(smtp, envelope, data, meanwhile, before_end)
            except SendFailure as failure:
                self._count_stall(failure)
                if (
                    attempt == 1
                    and reused
                    and failure.connection_lost
                    and failure.before_data
                    and self.given_up is None
                ):
                    # A kept-open connection the server had closed (idle time-out, a limit per
                    # connection): nothing of this message was sent, so try a new one, once.
                    self._drop()
                    continue
                raise
            return Handover(refused, smtp)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _count_stall(self, failure: SendFailure) -> None:
        """Count a message's time-out (an answer resets the count); give the relay up for the
        run at ``STALLS_BEFORE_GIVING_UP`` in a row."""
        if not failure.timed_out:
            self.stalls = 0
            return
        self.stalls += 1
        if self.stalls >= STALLS_BEFORE_GIVING_UP and self.given_up is None:
            self.given_up = f"relay stalled: {self.stalls} time-outs in a row ({failure.reason})"
            # Timed out before its data: nothing of it reached the server, no attempt spent.
            failure.server_wide = failure.before_data

    def _given_up_failure(self) -> SendFailure:
        failure = SendFailure(self.given_up or "", permanent=False, before_data=True)
        failure.server_wide = True
        return failure

    def read_reply(self, handover: Handover) -> str:
        """The server's reply to the data of ``handover``, or ``SendFailure``."""
        if handover.reply is not None:
            return handover.reply
        smtp = handover.smtp
        assert smtp is not None
        try:
            code, text = smtp.getreply()
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
        except _CONVERSATION_ERRORS as exc:
            failure = failure_from_exception(exc, "DATA", before_data=False)
            self._settle(smtp, failure)
            self._count_stall(failure)
            raise failure from exc
        self.stalls = 0
        reply = _reply(code, text)
        if handover.refused:
            reply += " (copy refused: " + "; ".join(handover.refused) + ")"
        return reply

    def _transact(
        self,
        smtp: smtplib.SMTP,
        envelope: Envelope,
        data: bytes,
        meanwhile: Callable[[], bool] | None = None,
        before_end: Callable[[], bool] | None = None,
    ) -> list[str]:
        """One MAIL/RCPT/DATA transaction up to the data's last byte (``read_reply`` reads the
        answer); the refused copies, or ``SendFailure``. ``meanwhile`` and ``before_end``: see
        ``hand_over``."""
        work = _CallersWork(meanwhile)
        step = "MAIL FROM"
        try:
            code, text = _command(smtp, "mail", envelope.mail_from, work)
            if code != 250:
                failure = failure_from_reply(step, code, text)
                failure.permanent = False  # our sender refused: no fault of this message
                failure.before_data = True
                if 400 <= code < 500 and code != 421:
                    # "Not now" to our sender (451 …), a condition of the whole server: this
                    # message and every other stay queued for a later run, no attempt spent.
                    self.given_up = f"sender refused for now: {failure.reason}"
                    failure.server_wide = True
                elif code != 421:
                    # Every other message would be refused too: leave them for a later run.
                    self.unreachable = f"sender refused: {failure.reason}"
                raise failure
            refused: list[str] = []
            for address in envelope.rcpt_tos:
                step = f"RCPT TO:<{address}>"
                code, text = _command(smtp, "rcpt", address, work)
                if code in (250, 251):
                    continue
                if code < 500 or address.lower() in envelope.required:
                    failure = failure_from_reply(step, code, text)
                    failure.before_data = True
                    raise failure
                refused.append(f"<{address}> {_reply(code, text)}")
            step = "DATA"
            code, text = _command(smtp, "data", None, work)
            if code != 354:
                raise smtplib.SMTPDataError(code, text)
            work.finish()  # all of it, before the data
            _send_data(smtp, data, _CallersWork(before_end))
        except _CallerFailed as failed:
            self._drop()  # in the middle of a transaction, a reply perhaps unread: out of step
            raise failed.error from None
        except _CONVERSATION_ERRORS as exc:
            self._fail(smtp, exc, step)
        return refused

    def _fail(self, smtp: smtplib.SMTP, exc: BaseException, step: str) -> NoReturn:
        """Raise the ``SendFailure`` that ``exc``, raised at ``step`` of a transaction, means,
        the connection made ready for the next message or dropped."""
        failure = failure_from_exception(exc, step, before_data=step != "DATA")
        self._settle(smtp, failure)
        if failure is exc:
            raise failure
        raise failure from exc


class _CallerFailed(Exception):
    """The caller's own work (``meanwhile``, ``before_end``) raised ``error``: not the server's
    doing, so it is kept apart from the conversation's errors (an ``OSError`` of the caller's
    is no lost connection)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class _CallersWork:
    """The caller's work in steps: a call takes one and says whether more is left; none is
    taken once it said no. Its errors come out as ``_CallerFailed``."""

    def __init__(self, meanwhile: Callable[[], bool] | None) -> None:
        self.meanwhile = meanwhile
        self.left = meanwhile is not None

    def step(self) -> bool:
        """Take one step if any is left; whether more is left."""
        if self.left:
            assert self.meanwhile is not None
            try:
                self.left = self.meanwhile()
            except BaseException as exc:
                self.left = False
                raise _CallerFailed(exc) from exc
        return self.left

    def finish(self) -> None:
        """Take every step left."""
        while self.step():
            pass


def _command(
    smtp: smtplib.SMTP, verb: str, address: str | None, work: _CallersWork
) -> tuple[int, bytes]:
    """Send MAIL FROM or RCPT TO (``address``) or DATA, take a step of the caller's work while
    the server answers, and read the answer."""
    if verb == "data":
        smtp.putcmd("data")
    else:
        prefix = "FROM:" if verb == "mail" else "TO:"
        smtp.putcmd(verb, prefix + smtplib.quoteaddr(address or ""))
    work.step()
    return smtp.getreply()


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _send_data(smtp: smtplib.SMTP, data: bytes, work: _CallersWork) -> None:
    """The message after DATA's 354, exactly as ``smtplib.SMTP.data`` sends it, but without
    reading the final reply (``SmtpSession.read_reply`` does); ``work`` is taken between the
    message and the line with one dot that ends it."""
    quoted = data
    if data.startswith(b".") or b"\n." in data:  # base64 lines never need it: skip the scan
        quoted = _LEADING_DOT.sub(b"..", data)  # dot-stuffing, RFC 5321 4.5.2
    if not quoted.endswith(b"\r\n"):
        quoted += b"\r\n"
    smtp.send(quoted)
    work.finish()
    smtp.send(b".\r\n")
