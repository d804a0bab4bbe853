"""The sender against a real SMTP server on loopback: claims, replies, retries, crashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dispatch import audit
from dispatch.extensions import db
from dispatch.mail import outbox
from dispatch.mail.links import confirmation_url
from dispatch.mail.sender import (
    LEASE,
    backoff,
    claim_due,
    deliver_due,
    public_state,
)
from dispatch.models import (
    AuditEntry,
    DeliveryStatus,
    DispatchRecipient,
    Document,
    MessageKind,
    OutboxMessage,
)
from tests.fixtures.database import command_env
from tests.fixtures.smtp import ISSUED_AT

AT = ISSUED_AT + dt.timedelta(minutes=1)
BIN = Path(sys.executable).parent


def rows(dispatch_id: int | None = None) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(OutboxMessage.id)
    if dispatch_id is not None:
        query = query.where(OutboxMessage.dispatch_id == dispatch_id)
    db.session.expire_all()
    return list(db.session.execute(query).scalars())


def statuses(dispatch_id: int | None = None) -> list[str]:
    return [row.status.value for row in rows(dispatch_id)]


def audit_actions(action: str) -> int:
    return db.session.execute(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
    ).scalar_one()


# --- Pure rules ------------------------------------------------------------------------------


@pytest.mark.nodb
def test_backoff_doubles_from_one_minute_up_to_an_hour():
    assert [backoff(n).total_seconds() / 60 for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.nodb
def test_sending_is_shown_as_queued():
    assert public_state(DeliveryStatus.SENDING) == "queued"
    assert public_state("retrying") == "retrying"
    assert public_state(None) == "queued"


# --- Sending ---------------------------------------------------------------------------------


def test_all_accepted_over_one_connection(smtp_app, smtp_server, outbox_dispatch):
    dispatch = outbox_dispatch(6)

    report = deliver_due(AT)

    assert (report.sent, report.retrying, report.failed) == (6, 0, 0)
    assert smtp_server.handler.connections == 1
    assert report.connections == 1
    sent = rows()
    assert {row.status for row in sent} == {DeliveryStatus.SENT}
    for row in sent:
        assert row.smtp_reply.startswith("250 2.0.0 OK queued as Q")
        assert row.sent_at is not None and row.sent_at >= AT
        assert row.attempts == 1
        assert row.last_error is None
    # One message per recipient, each to its own address, carrying the row's Message-ID.
    by_id = {m.message_id: m for m in smtp_server.messages}
    assert set(by_id) == {row.message_id for row in sent}
    for row in sent:
        assert by_id[row.message_id].rcpt_tos == row.to_addrs
    assert audit_actions("message.sent") == 6
    assert audit_actions("message.claimed") == 6
    assert audit.verify_chain() == []
    # Nothing is due any more: a second run sends nothing.
    again = deliver_due(AT + dt.timedelta(hours=1))
    assert again.claimed == 0
    assert len(smtp_server.messages) == 6
    assert dispatch.id == sent[0].dispatch_id


def test_a_refused_recipient_fails_with_the_reply_and_the_others_go(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(4)
    refused = rows()[1]
    smtp_server.handler.reject[refused.to_addrs[0]] = "550 5.1.1 <x>: Recipient address rejected"

    report = deliver_due(AT)

    assert (report.sent, report.retrying, report.failed) == (3, 0, 1)
    after = {row.id: row for row in rows()}
    failed = after[refused.id]
    assert failed.status is DeliveryStatus.FAILED
    assert failed.smtp_reply == "550 5.1.1 <x>: Recipient address rejected"
    assert "RCPT TO" in failed.last_error and "550" in failed.last_error
    assert failed.next_attempt_at is None
    assert [row.status for key, row in after.items() if key != refused.id] == [
        DeliveryStatus.SENT
    ] * 3
    assert smtp_server.handler.connections == 1  # the refusal did not cost the connection
    assert audit_actions("message.failed") == 1
    # A permanent failure is not retried.
    assert deliver_due(AT + dt.timedelta(days=1)).claimed == 0


def test_a_refused_copy_does_not_stop_the_letter(smtp_app, smtp_server, outbox_dispatch):
    outbox_dispatch(codes=["01"], cc={"01": ["vanthu.hanoi@tinh.example"]})
    smtp_server.handler.reject["vanthu.hanoi@tinh.example"] = "550 5.1.1 no such user"

    report = deliver_due(AT)

    assert report.sent == 1
    (row,) = rows()
    assert row.status is DeliveryStatus.SENT
    assert "copy refused" in row.smtp_reply and "550 5.1.1 no such user" in row.smtp_reply
    assert smtp_server.messages[0].rcpt_tos == row.to_addrs


def test_451_then_recovery_retries_later_and_sends_each_once(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(5)
    smtp_server.handler.fail_data = 2  # the first two DATA commands get 451

    first = deliver_due(AT)

    assert (first.sent, first.retrying, first.failed) == (3, 2, 0)
    assert smtp_server.handler.connections == 1  # a 451 does not abort the batch
    retrying = [row for row in rows() if row.status is DeliveryStatus.RETRYING]
    assert len(retrying) == 2
    for row in retrying:
        assert row.next_attempt_at > AT
        assert row.next_attempt_at <= AT + dt.timedelta(minutes=1, seconds=30)
        assert row.smtp_reply.startswith("451 4.3.0")
        assert row.last_error.startswith("DATA: 451")
        assert row.attempts == 1

    # Not due yet at the same moment.
    assert deliver_due(AT).claimed == 0

    later = deliver_due(AT + dt.timedelta(minutes=5))
    assert (later.sent, later.retrying, later.failed) == (2, 0, 0)
    assert set(statuses()) == {"sent"}
    counts = smtp_server.handler.message_ids()
    assert len(counts) == 5 and set(counts.values()) == {1}
    # The retried messages went out under the Message-ID they had from the start.
    assert {row.message_id for row in retrying} <= set(counts)
    assert {row.attempts for row in rows() if row.id in {r.id for r in retrying}} == {2}


def test_server_down_leaves_everything_retrying_then_a_later_run_sends_all(
    smtp_app, smtp_server, dead_smtp_port, outbox_dispatch
):
    outbox_dispatch(4)
    smtp_app.config["MAIL_PORT"] = dead_smtp_port

    report = deliver_due(AT)

    assert (report.sent, report.retrying, report.failed) == (0, 4, 0)
    for row in rows():
        assert row.status is DeliveryStatus.RETRYING
        assert "cannot connect" in row.last_error
        assert row.next_attempt_at > AT
    assert report.connections == 0

    smtp_server.configure(smtp_app)
    later = deliver_due(AT + dt.timedelta(minutes=10))
    assert later.sent == 4
    assert set(statuses()) == {"sent"}
    assert set(smtp_server.handler.message_ids().values()) == {1}


def test_a_connection_lost_in_data_is_retried_and_the_batch_reconnects(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(4)
    smtp_server.handler.drop_data = 1

    report = deliver_due(AT)

    assert (report.sent, report.retrying) == (3, 1)
    (lost,) = [row for row in rows() if row.status is DeliveryStatus.RETRYING]
    assert "connection lost" in lost.last_error
    assert smtp_server.handler.connections == 2  # reconnected for the rest of the batch

    assert deliver_due(AT + dt.timedelta(minutes=2)).sent == 1
    counts = smtp_server.handler.message_ids()
    assert counts[lost.message_id] == 1 and len(counts) == 4


def test_a_connection_the_server_closes_between_messages_is_reopened_at_once(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(4)
    # The second MAIL FROM gets "421 … closing" (say, a limit per connection).
    smtp_server.handler.fail_mail_numbers = {2}

    report = deliver_due(AT)

    assert (report.sent, report.retrying, report.failed) == (4, 0, 0)
    assert report.connections == 2  # the 421 came before any data: sent on a new connection
    assert [m.connection for m in smtp_server.messages] == [1, 2, 2, 2]
    assert set(statuses()) == {"sent"}
    assert set(smtp_server.handler.message_ids().values()) == {1}


def test_a_refused_sender_leaves_the_batch_for_later_not_failed(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(3)
    smtp_server.handler.fail_mail = 1
    smtp_server.handler.fail_mail_reply = "530 5.7.0 Authentication required"

    report = deliver_due(AT)

    assert (report.sent, report.retrying, report.failed) == (0, 3, 0)
    assert smtp_server.handler.data_commands == 0
    for row in rows():
        assert row.status is DeliveryStatus.RETRYING
        assert "sender refused" in row.last_error or "530 5.7.0" in row.last_error
    assert deliver_due(AT + dt.timedelta(minutes=5)).sent == 3


def test_a_451_to_our_sender_leaves_the_batch_queued_without_spending_attempts(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(3)
    smtp_server.handler.fail_mail = 1
    smtp_server.handler.fail_mail_reply = "451 4.3.2 System not accepting network messages"

    report = deliver_due(AT)

    # A server-wide condition, no fault of any message: nothing is counted as an attempt.
    assert (report.sent, report.retrying, report.failed, report.released) == (0, 0, 0, 3)
    assert "451 4.3.2" in report.held_back
    assert smtp_server.handler.mail_commands == 1 and smtp_server.handler.data_commands == 0
    for row in rows():
        assert row.status is DeliveryStatus.QUEUED
        assert (row.attempts, row.claimed_by, row.last_error) == (0, None, None)
    assert audit_actions("message.released") == 3
    assert audit_actions("message.retrying") == 0
    assert audit.verify_chain() == []
    # Due again at once: the next run sends them, each on its first attempt.
    later = deliver_due(AT + dt.timedelta(minutes=1))
    assert later.sent == 3
    assert {row.attempts for row in rows()} == {1}
    assert set(smtp_server.handler.message_ids().values()) == {1}


def test_a_row_retrying_before_a_451_to_our_sender_stays_retrying(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(1)
    smtp_server.handler.fail_data = 1
    assert deliver_due(AT).retrying == 1
    smtp_server.handler.fail_mail = 1
    smtp_server.handler.fail_mail_reply = "451 4.3.2 try later"

    report = deliver_due(AT + dt.timedelta(minutes=5))

    assert (report.retrying, report.released) == (0, 1)
    (row,) = rows()
    assert (row.status, row.attempts) == (DeliveryStatus.RETRYING, 1)
    assert row.last_error.startswith("DATA: 451")  # the earlier attempt's reason, kept


def test_gives_up_after_a_day_of_temporary_failures(smtp_app, smtp_server, outbox_dispatch):
    outbox_dispatch(1)
    smtp_server.handler.fail_data = 1
    day_later = ISSUED_AT + dt.timedelta(hours=24, minutes=1)

    report = deliver_due(day_later)

    assert report.failed == 1
    (row,) = rows()
    assert row.status is DeliveryStatus.FAILED
    assert row.last_error.startswith("gave up after 1 attempts: DATA: 451")


def test_gives_up_after_the_configured_attempts(smtp_app, smtp_server, outbox_dispatch):
    outbox_dispatch(1)
    smtp_app.config["DELIVERY_MAX_ATTEMPTS"] = 2
    smtp_server.handler.fail_data = 5

    assert deliver_due(AT).retrying == 1
    assert deliver_due(AT + dt.timedelta(minutes=5)).failed == 1
    (row,) = rows()
    assert row.status is DeliveryStatus.FAILED and row.attempts == 2
    assert deliver_due(AT + dt.timedelta(hours=5)).claimed == 0


def test_an_altered_archive_file_is_not_sent(smtp_app, smtp_server, outbox_dispatch):
    dispatch = outbox_dispatch(2)
    pdf = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch.id, Document.kind == "pdf")
    ).scalar_one()
    path = Path(smtp_app.config["DISPATCH_DATA_DIR"]) / pdf.path
    path.write_bytes(path.read_bytes() + b"%tampered")

    report = deliver_due(AT)

    assert (report.sent, report.retrying) == (0, 2)
    assert smtp_server.messages == []
    assert all("SHA-256" in row.last_error for row in rows())


def test_a_reminder_for_an_office_that_confirmed_is_cancelled(
    smtp_app, smtp_server, outbox_dispatch
):
    dispatch = outbox_dispatch(2)
    deliver_due(AT)
    first, second = dispatch.recipients
    for recipient in (first, second):
        outbox.enqueue(
            dispatch_id=dispatch.id,
            kind=MessageKind.REMINDER,
            to_addrs=[recipient.email],
            at=AT + dt.timedelta(days=1),
            recipient_id=recipient.id,
            sequence=1,
        )
    db.session.get(DispatchRecipient, first.id).acknowledged_at = AT + dt.timedelta(hours=3)
    db.session.commit()

    report = deliver_due(AT + dt.timedelta(days=1, minutes=1))

    assert (report.sent, report.cancelled) == (1, 1)
    reminders = {r.recipient_id: r for r in rows() if r.kind is MessageKind.REMINDER}
    assert reminders[first.id].status is DeliveryStatus.CANCELLED
    assert reminders[second.id].status is DeliveryStatus.SENT
    assert [m.rcpt_tos for m in smtp_server.messages[2:]] == [[second.email]]


def test_a_live_claim_is_left_alone_and_an_expired_one_is_taken_over(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(2)
    assert claim_due(AT, limit=None, worker="dead-host:1") == [r.id for r in rows()]

    # Within the lease another sender keeps its hands off.
    assert deliver_due(AT + LEASE - dt.timedelta(seconds=1)).claimed == 0
    assert smtp_server.messages == []

    report = deliver_due(AT + LEASE + dt.timedelta(seconds=1), worker="new-host:2")
    assert report.sent == 2
    for row in rows():
        assert row.status is DeliveryStatus.SENT and row.claimed_by == "new-host:2"
        assert row.attempts == 2
    taken = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "message.claimed").order_by(AuditEntry.id)
    ).scalars()
    assert [e.details.get("taken_over_from") for e in taken] == [None, None] + ["dead-host:1"] * 2


class _Stall:
    """The sender's monotonic clock, made to jump forward while it composes one message (a
    sender that hangs there, as a stopped process or a stuck disk would), with ``then`` run at
    that moment; ``time`` for ``dispatch.mail.sender`` only, the rest of the process keeps its
    own."""

    def __init__(self, at_message: int, jump: dt.timedelta, then=None) -> None:
        import time

        self.real = time
        self.at_message, self.jump, self.then = at_message, jump.total_seconds(), then
        self.offset = 0.0
        self.composed = 0

    def monotonic(self) -> float:
        return self.real.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        self.real.sleep(seconds)

    def wrap(self, compose):
        def composing(row, **kwargs):
            message = compose(row, **kwargs)
            self.composed += 1
            if self.composed == self.at_message:
                self.offset += self.jump
                if self.then is not None:
                    self.then()
            return message

        return composing


def test_a_sender_that_stalls_past_the_lease_skips_what_another_took_over(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    from dispatch.mail import sender

    outbox_dispatch(4)
    late = AT + LEASE + dt.timedelta(minutes=1)
    # While the first sender hangs after composing its first e-mail, another takes them all.
    stall = _Stall(1, LEASE + dt.timedelta(minutes=1), lambda: claim_due(late, None, "other:2"))
    monkeypatch.setattr(sender, "time", stall)
    monkeypatch.setattr(sender, "compose", stall.wrap(sender.compose))

    report = deliver_due(AT, worker="slow:1")

    # Not even the e-mail it had composed: its claim is checked again before the data goes.
    assert (report.sent, report.skipped) == (0, 4)
    assert smtp_server.messages == []
    assert {(row.status, row.claimed_by) for row in rows()} == {(DeliveryStatus.SENDING, "other:2")}
    assert audit.verify_chain() == []


def test_a_long_batch_renews_its_claims_and_sends_everything_once(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    from dispatch.mail import sender

    outbox_dispatch(3)
    stall = _Stall(1, sender.RENEW_AFTER + dt.timedelta(seconds=30))
    monkeypatch.setattr(sender, "time", stall)
    monkeypatch.setattr(sender, "compose", stall.wrap(sender.compose))

    report = deliver_due(AT, worker="slow:1")

    assert (report.sent, report.skipped) == (3, 0)
    assert len(smtp_server.messages) == 3
    # The hang made the claim a minute old: the batch was confirmed once, in one statement,
    # before the first e-mail left.
    claimed_at = {row.claimed_at for row in rows()}
    assert len(claimed_at) == 1 and claimed_at.pop() >= AT + sender.RENEW_AFTER
    assert {row.status for row in rows()} == {DeliveryStatus.SENT}


def test_limit_takes_the_oldest_first(smtp_app, smtp_server, outbox_dispatch):
    outbox_dispatch(5)
    assert deliver_due(AT, limit=2).sent == 2
    assert statuses() == ["sent", "sent", "queued", "queued", "queued"]


def test_deliver_command_prints_a_vietnamese_summary(smtp_app, smtp_server, outbox_dispatch):
    outbox_dispatch(3)
    smtp_server.handler.reject[rows()[0].to_addrs[0]] = "550 5.1.1 unknown"
    runner = smtp_app.test_cli_runner()

    result = runner.invoke(args=["deliver", "--at", "2021-11-15T08:31:00+07:00"])

    assert result.exit_code == 0, result.output
    assert "Đã gửi: 2; đang chờ gửi lại: 0; thất bại: 1." in result.output
    again = runner.invoke(args=["deliver", "--at", "2021-11-15T08:32:00+07:00"])
    assert "Không có thư nào đến hạn gửi." in again.output
    bad = runner.invoke(args=["deliver", "--at", "hôm qua"])
    assert bad.exit_code == 2 and "thời điểm không hợp lệ" in bad.output


# --- Processes -------------------------------------------------------------------------------


def _dispatch_env(app, smtp_server, tmp_path: Path) -> dict[str, str]:
    return command_env(app, tmp_path, **smtp_server.environ())


def _run_deliver(env, at: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "dispatch"), "deliver", "--at", at],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _signal_mid_batch(signum, smtp_app, smtp_server, outbox_dispatch, tmp_path):
    """Queue 12 messages, start ``dispatch deliver`` against a server that answers each after
    0.3 s, and send it ``signum`` while the server holds its fourth message; the ended sender,
    its environment and its log."""
    outbox_dispatch(12)
    db.session.commit()
    db.session.close()  # the subprocess writes; hold no lock here
    env = _dispatch_env(smtp_app, smtp_server, tmp_path)
    log = tmp_path / "deliver.log"
    handler = smtp_server.handler
    handler.delay = 0.3
    sender = _run_deliver(env, "2021-11-15T08:31:00+07:00", log)
    try:
        handler.wait_until(lambda h: len(h.messages) >= 3 and h.holding > 0)
        sender.send_signal(signum)
    finally:
        sender.wait(timeout=60)
    return sender, env, log


@pytest.mark.slow
def test_a_sender_killed_mid_batch_loses_nothing_and_sends_nothing_twice(
    smtp_app, smtp_server, outbox_dispatch, tmp_path
):
    # Kill it while the server holds its fourth message, before answering it.
    sender, env, log = _signal_mid_batch(
        signal.SIGKILL, smtp_app, smtp_server, outbox_dispatch, tmp_path
    )
    handler = smtp_server.handler
    assert sender.returncode == -signal.SIGKILL
    handler.wait_until(lambda h: h.holding == 0)
    accepted_before = len(handler.messages)
    assert 3 <= accepted_before < 12
    states = statuses()
    assert states.count("sent") == accepted_before
    assert states.count("sending") == 12 - accepted_before  # claimed, then orphaned

    handler.delay = 0
    # Within the lease the orphans are not touched; after it, they are sent.
    soon = _run_deliver(env, "2021-11-15T08:33:00+07:00", log)
    assert soon.wait(timeout=120) == 0
    assert len(handler.messages) == accepted_before
    after = _run_deliver(env, "2021-11-15T08:45:00+07:00", log)
    assert after.wait(timeout=120) == 0, log.read_text()

    assert statuses() == ["sent"] * 12
    counts = handler.message_ids()
    assert len(counts) == 12, counts
    assert set(counts.values()) == {1}, counts
    assert counts.keys() == {row.message_id for row in rows()}
    assert audit.verify_chain() == []


@pytest.mark.slow
def test_a_sender_asked_to_stop_ends_once_the_message_in_hand_is_recorded(
    smtp_app, smtp_server, outbox_dispatch, tmp_path
):
    # SIGTERM (systemd's stop, a time-out) while the server holds a message.
    sender, env, log = _signal_mid_batch(
        signal.SIGTERM, smtp_app, smtp_server, outbox_dispatch, tmp_path
    )
    handler = smtp_server.handler

    output = log.read_text()
    assert sender.returncode == 1, output
    assert "Lỗi: Đã dừng gửi: tiến trình được yêu cầu dừng" in output
    # The message in hand was answered and recorded; the rest is back in the queue, due now.
    accepted = len(handler.messages)
    assert 4 <= accepted < 12
    states = statuses()
    assert (states.count("sent"), states.count("queued")) == (accepted, 12 - accepted)
    handler.delay = 0
    after = _run_deliver(env, "2021-11-15T08:32:00+07:00", log)
    assert after.wait(timeout=120) == 0, log.read_text()
    assert statuses() == ["sent"] * 12
    assert set(handler.message_ids().values()) == {1}
    assert audit.verify_chain() == []


@pytest.mark.slow
def test_two_senders_at_once_send_each_message_once(
    smtp_app, smtp_server, outbox_dispatch, tmp_path
):
    outbox_dispatch(20)
    db.session.close()
    env = _dispatch_env(smtp_app, smtp_server, tmp_path)
    log = tmp_path / "deliver.log"
    smtp_server.handler.delay = 0.05

    senders = [_run_deliver(env, "2021-11-15T08:31:00+07:00", log) for _ in range(2)]
    for sender in senders:
        assert sender.wait(timeout=180) == 0, log.read_text()

    assert statuses() == ["sent"] * 20
    counts = smtp_server.handler.message_ids()
    assert len(counts) == 20 and set(counts.values()) == {1}, counts
    assert audit.verify_chain() == []


# --- End to end: seed, draft, issue, deliver --------------------------------------------------


def _text_of_docx(data: bytes) -> str:
    import docx

    document = docx.Document(io.BytesIO(data))
    texts = [p.text for p in document.paragraphs]
    for table in document.tables:
        texts += [cell.text for row in table.rows for cell in row.cells]
    return "\n".join(texts)


@pytest.mark.slow
def test_issue_and_deliver_the_seed_letter_to_the_63_offices(smtp_app, smtp_server):
    from pypdf import PdfReader

    from dispatch.config import PROJECT_ROOT

    runner = smtp_app.test_cli_runner()
    assert runner.invoke(args=["seed"]).exit_code == 0
    draft = runner.invoke(
        args=[
            "draft",
            "create",
            str(PROJECT_ROOT / "official_letters" / "pc-covid-2021"),
            "--group",
            "so-tttt-2021",
        ]
    )
    assert draft.exit_code == 0, draft.output
    dispatch_id = draft.output.strip().splitlines()[-1]
    issued = runner.invoke(
        args=["issue", "--confirm-placeholders", dispatch_id, "--at", "2021-11-15T08:30:00+07:00"]
    )
    assert issued.exit_code == 0, issued.output

    delivered = runner.invoke(args=["deliver", "--at", "2021-11-15T08:31:00+07:00"])

    assert delivered.exit_code == 0, delivered.output
    assert "Đã gửi: 63; đang chờ gửi lại: 0; thất bại: 0." in delivered.output
    assert smtp_server.handler.connections == 1
    status = json.loads(runner.invoke(args=["status", dispatch_id, "--json"]).output)
    assert status["number"] == "01/THH-VP"
    assert status["counts"]["sent"] == 63
    documents = {
        doc.kind: doc
        for doc in db.session.execute(
            select(Document).where(Document.dispatch_id == int(dispatch_id))
        ).scalars()
    }
    root = Path(smtp_app.config["DISPATCH_DATA_DIR"])
    archived_pdf = (root / documents["pdf"].path).read_bytes()
    archived_docx = (root / documents["docx"].path).read_bytes()
    assert hashlib.sha256(archived_pdf).hexdigest() == status["pdf_sha256"]

    messages = smtp_server.messages
    assert len(messages) == 63
    assert len({m.message_id for m in messages}) == 63
    assert sorted(r for m in messages for r in m.rcpt_tos) == sorted(
        r["email"] for r in status["recipients"]
    )
    links = set()
    recipients = {
        r.email: r
        for r in db.session.execute(
            select(DispatchRecipient).where(DispatchRecipient.dispatch_id == int(dispatch_id))
        ).scalars()
    }
    for received in messages:
        mail = received.email
        assert "01/THH-VP" in str(mail["Subject"])
        files = {p.get_content_type(): p.get_content() for p in mail.iter_attachments()}
        pdf = files["application/pdf"]
        assert hashlib.sha256(pdf).hexdigest() == status["pdf_sha256"]
        assert pdf == archived_pdf
        docx_bytes = files[
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        ]
        assert docx_bytes == archived_docx
        text = mail.get_body(preferencelist=("plain",)).get_content()
        recipient = recipients[received.rcpt_tos[0]]
        link = confirmation_url(recipient)
        assert link in text and link in mail.get_body(preferencelist=("html",)).get_content()
        links.add(link)
        assert f"Kính gửi: {recipient.name}." in text
    assert len(links) == 63

    (bac_lieu,) = [m for m in messages if m.rcpt_tos == ["sovhttdl.baclieu@tinh.example"]]
    text = bac_lieu.email.get_body(preferencelist=("plain",)).get_content()
    assert "Kính gửi: Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu." in text
    # The files read back: the PDF's text and the DOCX both carry the number.
    pdf_text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(archived_pdf)).pages)
    assert "01/THH-VP" in pdf_text
    assert "01/THH-VP" in _text_of_docx(archived_docx)
    assert audit.verify_chain() == []
