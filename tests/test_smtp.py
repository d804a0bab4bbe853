"""The SMTP client (dispatch.mail.smtp) against a real aiosmtpd server on loopback: what the
server or the connection answered, and whether the connection carries the next message."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from dispatch.mail.smtp import (
    Envelope,
    SendFailure,
    SmtpSession,
    SmtpSettings,
    failure_from_exception,
)
from tests.fixtures.smtp import SmtpServer

pytestmark = pytest.mark.nodb

SENDER = "van-thu@thh.example"
HANOI = "sotttt.hanoi@tinh.example"
COPY = "lanhdao.hanoi@tinh.example"


def message(number: int = 1, to: str = HANOI, body: str = "Kính gửi: Sở TTTT Hà Nội.") -> bytes:
    mail = EmailMessage()
    mail["From"] = SENDER
    mail["To"] = to
    mail["Subject"] = f"Công văn số {number:02d}/THH-VP"
    mail["Message-ID"] = f"<d1.r{number}.letter.0@thh.example>"
    mail.set_content(body)
    return mail.as_bytes(policy=SMTP)


def envelope(*rcpt_tos: str, required: tuple[str, ...] = (HANOI,)) -> Envelope:
    return Envelope(SENDER, rcpt_tos or (HANOI,), frozenset(a.lower() for a in required))


def session_for(server: SmtpServer, **settings: object) -> SmtpSession:
    return SmtpSession(SmtpSettings(host=server.host, port=server.port, **settings))


def test_a_message_goes_byte_for_byte_and_the_next_on_the_same_connection(smtp_server):
    # A line that starts with a dot is stuffed on the wire and arrives as it was written.
    first, second = message(1, body=".ba chấm đầu dòng\n."), message(2)
    with session_for(smtp_server) as session:
        reply = session.send(envelope(), first)
        assert reply.startswith("250 ") and "queued as Q1" in reply
        assert session.send(envelope(), second).startswith("250 ")
        assert session.connections == 1

    received = smtp_server.messages
    assert [m.raw for m in received] == [first, second]
    assert [(m.mail_from, m.rcpt_tos, m.connection) for m in received] == [
        (SENDER, [HANOI], 1),
        (SENDER, [HANOI], 1),
    ]


def test_a_refused_copy_is_noted_and_the_message_still_goes(smtp_server):
    smtp_server.handler.reject[COPY] = "550 5.1.1 no such mailbox"
    with session_for(smtp_server) as session:
        reply = session.send(envelope(HANOI, COPY), message())
    assert reply.startswith("250 ")
    assert reply.endswith(f"(copy refused: <{COPY}> 550 5.1.1 no such mailbox)")
    assert smtp_server.messages[0].rcpt_tos == [HANOI]


def test_a_refused_address_fails_the_message_for_good_and_keeps_the_connection(smtp_server):
    smtp_server.handler.reject[HANOI] = "550 5.1.1 no such mailbox"
    with session_for(smtp_server) as session:
        with pytest.raises(SendFailure) as refused:
            session.send(envelope(), message(1))
        failure = refused.value
        assert failure.permanent and failure.before_data and not failure.connection_lost
        assert failure.reply == "550 5.1.1 no such mailbox"
        assert failure.reason == f"RCPT TO:<{HANOI}>: 550 5.1.1 no such mailbox"
        # RSET, and the same connection carries the next message.
        assert session.send(envelope(COPY, required=(COPY,)), message(2, to=COPY))
        assert session.connections == 1
    assert [m.rcpt_tos for m in smtp_server.messages] == [[COPY]]


def test_a_451_to_the_data_is_temporary_and_the_connection_goes_on(smtp_server):
    smtp_server.handler.fail_data = 1
    with session_for(smtp_server) as session:
        handover = session.hand_over(envelope(), message(1))
        with pytest.raises(SendFailure) as answered:
            session.read_reply(handover)
        failure = answered.value
        assert not failure.permanent and not failure.before_data and not failure.connection_lost
        assert failure.reply == "451 4.3.0 Temporary local problem, try again later"
        assert session.send(envelope(), message(2)).startswith("250 ")
        assert session.connections == 1
    assert [m.message_id for m in smtp_server.messages] == ["<d1.r2.letter.0@thh.example>"]


def test_a_connection_dropped_during_the_data_is_lost_and_the_next_message_opens_one(
    smtp_server,
):
    smtp_server.handler.drop_data = 1
    with session_for(smtp_server) as session:
        with pytest.raises(SendFailure) as lost:
            session.send(envelope(), message(1))
        failure = lost.value
        assert failure.connection_lost and not failure.permanent and not failure.before_data
        assert failure.reason.startswith("DATA: connection lost: ")
        assert session.send(envelope(), message(2)).startswith("250 ")
        assert session.connections == 2
    assert [m.connection for m in smtp_server.messages] == [2]


def test_a_reply_slower_than_the_timeout_is_a_lost_connection_never_a_resend(smtp_server):
    smtp_server.handler.delay = 3.0
    with session_for(smtp_server, timeout=0.5) as session:
        with pytest.raises(SendFailure) as late:
            session.send(envelope(), message(1))
        assert session.connections == 1
    failure = late.value
    assert failure.connection_lost and not failure.permanent and not failure.before_data
    # smtplib reads the reply: a socket time-out reaches us as a closed connection.
    assert failure.reason == (
        "DATA: connection lost: SMTPServerDisconnected: Connection unexpectedly closed: timed out"
    )
    smtp_server.handler.wait_until(lambda h: h.holding == 0)
    assert smtp_server.messages == []  # the server saw its client leave before answering


def test_two_time_outs_in_a_row_give_the_relay_up_and_an_answer_in_between_does_not(
    smtp_server,
):
    handler = smtp_server.handler
    handler.delay = 3.0
    with session_for(smtp_server, timeout=0.3) as session:
        with pytest.raises(SendFailure) as first:
            session.send(envelope(), message(1))
        assert first.value.timed_out and session.given_up is None
        # An answer in between (here a 451) starts the count again.
        handler.delay, handler.fail_data = 0.0, 1
        with pytest.raises(SendFailure) as answered:
            session.send(envelope(), message(2))
        assert not answered.value.timed_out and session.stalls == 0
        handler.delay = 3.0
        for number in (3, 4):
            with pytest.raises(SendFailure) as late:
                session.send(envelope(), message(number))
            # Its data had left: the message itself is retried like any other time-out.
            assert late.value.timed_out and not late.value.server_wide
        assert session.given_up.startswith("relay stalled: 2 time-outs in a row (DATA: ")
        with pytest.raises(SendFailure) as held:
            session.send(envelope(), message(5))
        assert held.value.server_wide
    handler.wait_until(lambda h: h.holding == 0)
    assert handler.data_commands == 4 and smtp_server.messages == []


class Steps:
    """The caller's work in ``count`` steps, noting what the server had when each was taken."""

    def __init__(self, server: SmtpServer, count: int, pause: float = 0.0) -> None:
        self.server, self.left, self.pause = server, count, pause
        self.seen: list[tuple[int, int, int]] = []  # MAIL FROMs, DATAs, messages accepted

    def __call__(self) -> bool:
        handler = self.server.handler
        self.seen.append((handler.mail_commands, handler.data_commands, len(handler.messages)))
        time.sleep(self.pause)
        self.left -= 1
        return self.left > 0


def test_the_callers_steps_are_taken_while_commands_are_answered_and_all_before_the_data(
    smtp_server,
):
    with session_for(smtp_server) as session:
        steps = Steps(smtp_server, 2)  # fewer than the commands: one after MAIL FROM, RCPT TO
        handover = session.hand_over(envelope(HANOI, COPY), message(1), steps)
        assert steps.left == 0 and len(steps.seen) == 2
        assert session.read_reply(handover).startswith("250 ")
        steps = Steps(smtp_server, 9)  # more: the rest after DATA's 354, before the data
        handover = session.hand_over(envelope(), message(2), steps)
        assert steps.left == 0 and len(steps.seen) == 9
        assert all(data == 1 and accepted == 1 for _, data, accepted in steps.seen)
        assert session.read_reply(handover).startswith("250 ")
    assert [m.raw for m in smtp_server.messages] == [message(1), message(2)]


def test_the_end_of_the_data_waits_for_the_callers_work_and_nothing_is_accepted_before(
    smtp_server,
):
    with session_for(smtp_server) as session:
        steps = Steps(smtp_server, 3, pause=0.2)  # time for the server to read all but the end
        handover = session.hand_over(envelope(), message(1), before_end=steps)
        assert steps.left == 0 and [accepted for *_, accepted in steps.seen] == [0, 0, 0]
        assert session.read_reply(handover).startswith("250 ")
    assert [m.raw for m in smtp_server.messages] == [message(1)]


@pytest.mark.parametrize("during", ["meanwhile", "before_end"])
def test_an_error_of_the_callers_steps_is_theirs_not_a_lost_connection(smtp_server, during):
    def failing() -> bool:
        raise OSError("the caller's disk is full")

    with session_for(smtp_server) as session:
        with pytest.raises(OSError, match="caller's disk") as raised:
            session.hand_over(envelope(), message(1), **{during: failing})
        assert not isinstance(raised.value, SendFailure)
        assert session.smtp is None  # dropped: in the middle of the message
        assert session.send(envelope(), message(2)).startswith("250 ")
        assert session.connections == 2
    # Stopped before its data, or before the line that ends it: the first was not accepted.
    assert [m.raw for m in smtp_server.messages] == [message(2)]


def test_a_closed_connection_found_before_the_data_is_replaced_once(smtp_server):
    # The server closes the kept-open connection at the second MAIL FROM (a limit per
    # connection): nothing of that message was sent, so it goes on a new connection.
    smtp_server.handler.fail_mail_numbers = {2}
    with session_for(smtp_server) as session:
        session.send(envelope(), message(1))
        assert session.send(envelope(), message(2)).startswith("250 ")
        assert session.connections == 2
    assert [m.connection for m in smtp_server.messages] == [1, 2]


def test_a_refused_sender_leaves_every_message_for_later(smtp_server):
    smtp_server.handler.fail_mail = 1
    smtp_server.handler.fail_mail_reply = "553 5.7.1 sender not allowed"
    with session_for(smtp_server) as session:
        with pytest.raises(SendFailure) as refused:
            session.send(envelope(), message(1))
        assert not refused.value.permanent  # no fault of the message
        assert session.unreachable == "sender refused: MAIL FROM: 553 5.7.1 sender not allowed"
        with pytest.raises(SendFailure, match="sender refused"):
            session.send(envelope(), message(2))
    assert smtp_server.handler.mail_commands == 1 and smtp_server.messages == []


def test_a_451_to_our_sender_gives_the_relay_up_for_the_batch_no_fault_of_a_message(
    smtp_server,
):
    smtp_server.handler.fail_mail = 1
    smtp_server.handler.fail_mail_reply = "451 4.3.2 System not accepting network messages"
    with session_for(smtp_server) as session:
        with pytest.raises(SendFailure) as refused:
            session.send(envelope(), message(1))
        assert refused.value.server_wide and refused.value.before_data
        assert not refused.value.permanent
        assert session.unreachable is None
        assert session.given_up == (
            "sender refused for now: MAIL FROM: 451 4.3.2 System not accepting network messages"
        )
        # The next message is not even offered.
        with pytest.raises(SendFailure) as held:
            session.send(envelope(), message(2))
        assert held.value.server_wide and held.value.before_data
    assert smtp_server.handler.mail_commands == 1 and smtp_server.messages == []


def test_a_server_that_is_down_is_tried_once_per_batch(dead_smtp_port):
    session = SmtpSession(SmtpSettings(port=dead_smtp_port, timeout=5))
    with session:
        for number in (1, 2):
            with pytest.raises(SendFailure) as down:
                session.send(envelope(), message(number))
            assert down.value.connection_lost and not down.value.permanent
            assert down.value.reason.startswith(f"cannot connect to 127.0.0.1:{dead_smtp_port}: ")
    assert session.connections == 0


def test_suppressed_sending_answers_at_once_and_connects_to_nothing(dead_smtp_port):
    session = SmtpSession(SmtpSettings(port=dead_smtp_port, suppress=True))
    assert session.send(envelope(), message()) == "250 not sent: MAIL_SUPPRESS_SEND is on"
    assert session.connections == 0


def test_settings_are_flask_mails_with_its_defaults():
    settings = SmtpSettings.from_config({}, testing=True)
    assert (settings.host, settings.port, settings.timeout, settings.suppress) == (
        "127.0.0.1",
        25,
        30.0,
        True,
    )
    configured = SmtpSettings.from_config(
        {
            "MAIL_SERVER": "relay.example",
            "MAIL_PORT": "587",
            "MAIL_USE_TLS": True,
            "MAIL_TIMEOUT": "5",
            "MAIL_SUPPRESS_SEND": False,
        },
        testing=True,
    )
    assert (configured.host, configured.port, configured.use_tls) == ("relay.example", 587, True)
    assert (configured.timeout, configured.suppress) == (5.0, False)


@pytest.mark.parametrize(
    ("exc", "permanent", "lost", "keeps", "reply"),
    [
        (smtplib.SMTPDataError(451, b"try again"), False, False, True, "451 try again"),
        (smtplib.SMTPDataError(554, b"rejected"), True, False, True, "554 rejected"),
        (smtplib.SMTPDataError(421, b"closing"), False, True, False, "421 closing"),
        # A reply out of turn (a line too long) leaves the conversation out of step.
        (
            smtplib.SMTPResponseException(500, "Line too long."),
            True,
            False,
            False,
            "500 Line too long.",
        ),
        (
            smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
            False,
            True,
            False,
            None,
        ),
        (TimeoutError("timed out"), False, True, False, None),
        (ConnectionResetError(104, "Connection reset by peer"), False, True, False, None),
    ],
)
def test_every_exception_means_one_outcome(exc, permanent, lost, keeps, reply):
    failure = failure_from_exception(exc, "DATA", before_data=False)
    assert (failure.permanent, failure.connection_lost, failure.keeps_connection) == (
        permanent,
        lost,
        keeps,
    )
    assert failure.reply == reply and not failure.before_data
    assert failure.reason == (
        f"DATA: {reply}" if reply else f"DATA: connection lost: {failure_text(exc)}"
    )


def failure_text(exc: BaseException) -> str:
    name = type(exc).__name__
    return str(exc) if name in str(exc) else f"{name}: {exc}"


def test_a_failure_already_classified_is_kept_as_it_is():
    refused = SendFailure("RCPT TO:<x@y.example>: 550 no", permanent=True, before_data=True)
    assert failure_from_exception(refused, "DATA", before_data=False) is refused
    assert refused.before_data
