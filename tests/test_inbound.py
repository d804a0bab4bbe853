"""Inbound mail: classification, the three doors behind one handler, a real relay chain.

A letter goes from the sender to a relay on loopback, which accepts it (the sender records
"sent") and forwards it to the province's server, which refuses one address; the relay then
returns a bounce to the letter's own envelope sender. That bounce reaches Dispatch through each
door: a file (``dispatch inbound receive``), the SMTP listener (``dispatch inbound serve``, a
real process) and a Dovecot mailbox read over IMAPS.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dispatch import audit
from dispatch.archive import read_archived
from dispatch.extensions import db
from dispatch.inbound.classify import classify
from dispatch.inbound.handler import handle_message, unmatched
from dispatch.inbound.imap import ImapSettings, poll_mailbox
from dispatch.inbound.reasons import bounce_reason
from dispatch.mail.sender import deliver_due
from dispatch.models import (
    AuditEntry,
    DeliveryStatus,
    DispatchRecipient,
    InboundKind,
    InboundMessage,
    MessageKind,
    OutboxMessage,
)
from dispatch.reporting.status import status_report
from tests.fixtures.database import command_env
from tests.fixtures.relay import dsn_bytes, qmail_bounce_bytes, wait_for
from tests.fixtures.smtp import ISSUED_AT, free_port

AT = ISSUED_AT + dt.timedelta(minutes=1)
LATER = ISSUED_AT + dt.timedelta(hours=3)
BIN = Path(sys.executable).parent
BOUNCES = "bounces@thh.example"
REFUSAL = "550 5.1.1 <{address}>: Recipient address rejected: User unknown in local table"


def letter_rows(dispatch_id: int) -> list[OutboxMessage]:
    db.session.expire_all()
    return list(
        db.session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.dispatch_id == dispatch_id, OutboxMessage.kind == "letter")
            .order_by(OutboxMessage.id)
        ).scalars()
    )


def reply_bytes(
    *, to_message_id: str | None, subject: str, body: str, headers: str = "", sender: str
) -> bytes:
    """A reply as a mail client writes it."""
    refs = (
        f"In-Reply-To: {to_message_id}\r\nReferences: {to_message_id}\r\n" if to_message_id else ""
    )
    return (
        f"From: Văn thư Sở <{sender}>\r\n".encode()
        + b"To: van-thu@thh.example\r\n"
        + f"Subject: {subject}\r\n".encode()
        + f"Message-ID: {make_msgid(domain='tinh.example')}\r\n".encode()
        + b"Date: Mon, 15 Nov 2021 10:00:00 +0700\r\n"
        + refs.encode()
        + headers.encode()
        + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        + b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        + body.encode("utf-8")
    )


# --- Classification (bytes only) --------------------------------------------------------------


@pytest.mark.nodb
def test_a_standard_report_of_failure_gives_status_diagnostic_and_reporting_server():
    original = b"Message-ID: <d1.r2.letter.0@thh.example>\r\nSubject: x\r\n\r\nbody\r\n"
    raw = dsn_bytes(
        mail_from="bounces+abc@thh.example",
        original=original,
        recipient="sotttt@hanoi.example",
        reply="550 5.1.1 <sotttt@hanoi.example>: Recipient address rejected",
    )
    found = classify(raw, envelope_from="")
    assert found.kind is InboundKind.BOUNCE and found.standard
    (report,) = found.failed
    assert report.recipient == "sotttt@hanoi.example"
    assert report.status == "5.1.1"
    assert report.diagnostic.startswith("smtp; 550 5.1.1")
    assert report.remote_mta == "dns; mx.tinh.test"
    assert found.reporting_mta == "dns; relay.thh.test"
    assert found.refers_to == ["<d1.r2.letter.0@thh.example>"]


@pytest.mark.nodb
def test_a_delay_report_is_a_delay_and_a_qmail_bounce_is_found_by_the_detectors():
    original = b"Message-ID: <m@thh.example>\r\n\r\nx\r\n"
    delayed = dsn_bytes(
        mail_from="b@thh.example",
        original=original,
        recipient="a@tinh.example",
        reply="451 4.4.1 Connection timed out",
        action="delayed",
    )
    found = classify(delayed)
    assert found.kind is InboundKind.DELAY and found.reports[0].status == "4.4.1"
    qmail = qmail_bounce_bytes(
        mail_from="b@thh.example",
        original=original,
        recipient="a@tinh.example",
        reply="550 5.1.1 mailbox unavailable",
    )
    found = classify(qmail, envelope_from="")
    assert found.kind is InboundKind.BOUNCE and not found.standard
    assert [r.recipient for r in found.failed] == ["a@tinh.example"]
    assert found.failed[0].status == "5.1.1"
    assert "550 5.1.1" in found.failed[0].diagnostic


@pytest.mark.nodb
def test_automatic_replies_by_rfc_3834_and_by_the_usual_marks():
    standard = reply_bytes(
        to_message_id="<m@thh.example>",
        subject="Re: Công văn",
        body="Tôi đang nghỉ phép.",
        headers="Auto-Submitted: auto-replied\r\n",
        sender="a@tinh.example",
    )
    assert classify(standard).kind is InboundKind.AUTO_REPLY
    outlook = reply_bytes(
        to_message_id="<m@thh.example>",
        subject="Automatic reply: Công văn số 01/THH-VP",
        body="I am out of the office.",
        sender="a@tinh.example",
    )
    assert classify(outlook).kind is InboundKind.AUTO_REPLY
    vietnamese = reply_bytes(
        to_message_id=None,
        subject="Trả lời tự động: Công văn",
        body="Vắng mặt.",
        sender="a@tinh.example",
    )
    assert classify(vietnamese).kind is InboundKind.AUTO_REPLY
    person = reply_bytes(
        to_message_id="<m@thh.example>",
        subject="Re: Công văn",
        body="Sở đã nhận được công văn.\n\nOn Mon wrote:\n> quoted",
        headers="Auto-Submitted: no\r\n",
        sender="a@tinh.example",
    )
    found = classify(person)
    assert found.kind is InboundKind.REPLY
    assert found.refers_to == ["<m@thh.example>"] and found.refers_by["<m@thh.example>"] == (
        "in-reply-to"
    )
    assert found.excerpt == "Sở đã nhận được công văn."
    # A person who quotes an error in a reply is not a bounce.
    quoting = reply_bytes(
        to_message_id="<m@thh.example>",
        subject="Re: Công văn",
        body="Máy chủ báo: 550 5.1.1 user unknown, chúng tôi đã sửa.",
        sender="a@tinh.example",
    )
    assert classify(quoting).kind is InboundKind.REPLY


@pytest.mark.nodb
def test_bounce_reasons_in_plain_vietnamese():
    assert bounce_reason("5.1.1") == "Địa chỉ thư không tồn tại trên máy chủ thư của cơ quan nhận."
    assert bounce_reason("5.2.2") == "Hộp thư của cơ quan nhận đã đầy."
    assert "chính sách an ninh" in bounce_reason("5.7.1")
    assert bounce_reason(None, "smtp; 550 5.1.2 host unknown").startswith("Tên miền")
    assert bounce_reason(None, "554 rejected") == "Máy chủ thư của cơ quan nhận trả lại thư."
    assert bounce_reason(None, None).startswith("Thư bị trả lại, không rõ lý do")


# --- The relay chain ----------------------------------------------------------------------------


def _send_through_relay(app, relay, smtp_server, outbox_dispatch, refused_code: str):
    """Issue to three offices; the province's server refuses one; the relay accepts all three."""
    app.config.update(DISPATCH_BOUNCE_ADDRESS=BOUNCES, MAIL_PORT=relay.port)
    dispatch = outbox_dispatch(codes=["01", refused_code, "79"])
    rows = letter_rows(dispatch.id)
    refused = next(r for r in rows if r.recipient.province_code == refused_code)
    address = refused.to_addrs[0]
    smtp_server.handler.reject[address.lower()] = REFUSAL.format(address=address)
    report = deliver_due(AT)
    assert report.sent == 3  # the first server said 250 to every one
    relay.wait_idle()
    assert relay.forwarded == 3 and len(relay.bounces) == 1
    # Each row keeps the first server's 250, whatever the bounce did to its state since.
    assert all(r.smtp_reply.startswith("250 2.0.0 Ok") for r in letter_rows(dispatch.id))
    return dispatch, refused


def _assert_bounced_exactly(dispatch, refused_id: int, door: str) -> None:
    db.session.expire_all()
    report = status_report(dispatch.id, at=LATER)
    by_id = {r["id"]: r for r in report["recipients"]}
    bounced = by_id.pop(refused_id)
    assert bounced["delivery"] == "bounced"
    assert bounced["bounce_reason"] == (
        "Địa chỉ thư không tồn tại trên máy chủ thư của cơ quan nhận."
    )
    assert bounced["bounce_status"] == "5.1.1"
    assert "550 5.1.1" in bounced["bounce_diagnostic"]
    assert {r["delivery"] for r in by_id.values()} == {"sent"}
    assert report["counts"]["bounced"] == 1 and report["counts"]["sent"] == 2
    (inbound,) = db.session.execute(select(InboundMessage)).scalars()
    assert inbound.door == door and inbound.kind is InboundKind.BOUNCE
    assert inbound.matched_by == "verp" and inbound.recipient_id == refused_id
    # Kept as received, and referenced from the audit log.
    data = read_archived(inbound.archive_path, inbound.sha256)
    assert b"message/delivery-status" in data
    entry = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "inbound.received")
    ).scalar_one()
    assert entry.details["archive_path"] == inbound.archive_path
    assert entry.details["sha256"] == inbound.sha256
    assert audit.verify_chain() == []


def test_a_bounce_by_the_second_server_read_from_a_file(
    smtp_app, smtp_server, relay, outbox_dispatch, tmp_path, runner
):
    from dispatch.processes.smtp_sink import start_sink

    sink = start_sink(tmp_path / "bounces", port=(port := free_port()))
    relay.bounce_route = ("127.0.0.1", port)
    try:
        dispatch, refused = _send_through_relay(smtp_app, relay, smtp_server, outbox_dispatch, "02")
    finally:
        sink.stop()
    (eml,) = sorted((tmp_path / "bounces").glob("*.eml"))
    # The sink wrote the envelope as headers, the bounce is addressed to the VERP address.
    assert f"bounces+{refused.bounce_token}@thh.example".encode() in eml.read_bytes()
    result = runner.invoke(args=["inbound", "receive", str(eml), "--at", "2021-11-15T11:00:00"])
    assert result.exit_code == 0, result.output
    assert "thư bị trả lại" in result.output and "verp" in result.output
    _assert_bounced_exactly(dispatch, refused.recipient_id, "file")
    # The same file again changes nothing.
    again = runner.invoke(args=["inbound", "receive", str(eml)])
    assert "đã được xử lý trước đó" in again.output
    assert db.session.execute(select(func.count(InboundMessage.id))).scalar_one() == 1


def _dispatch_env(app, tmp_path: Path) -> dict[str, str]:
    return command_env(app, tmp_path, DISPATCH_BOUNCE_ADDRESS=BOUNCES)


@pytest.mark.slow
def test_a_bounce_by_the_second_server_through_the_smtp_listener(
    smtp_app, smtp_server, relay, outbox_dispatch, tmp_path
):
    port = free_port()
    log = tmp_path / "listener.log"
    db.session.close()
    with log.open("wb") as out:
        listener = subprocess.Popen(
            [str(BIN / "dispatch"), "inbound", "serve", "--port", str(port)],
            env=_dispatch_env(smtp_app, tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b"127.0.0.1:" in log.read_bytes() or listener.poll() is not None)
        assert listener.poll() is None, log.read_text()
        relay.bounce_route = ("127.0.0.1", port)
        dispatch, refused = _send_through_relay(smtp_app, relay, smtp_server, outbox_dispatch, "31")
        # relay.wait_idle() returned after the listener's 250: the bounce is committed.
        _assert_bounced_exactly(dispatch, refused.recipient_id, "smtp")
    finally:
        listener.send_signal(signal.SIGTERM)
        assert listener.wait(timeout=30) == 0, log.read_text()
    assert "Đã dừng nhận thư đến." in log.read_text()


def test_a_bounce_by_the_second_server_read_from_the_imap_mailbox(
    smtp_app, smtp_server, relay, outbox_dispatch, dovecot, mailbox_delivery
):
    agent, port = mailbox_delivery
    relay.bounce_route = ("127.0.0.1", port)
    dispatch, refused = _send_through_relay(smtp_app, relay, smtp_server, outbox_dispatch, "48")
    assert agent.delivered == 1 and dovecot.count() == 1
    settings = ImapSettings.from_url(
        dovecot.url(), filed="Dispatch-Processed", cafile=dovecot.cafile
    )
    report = poll_mailbox(settings, now=lambda: LATER)
    assert (report.handled, report.filed) == (1, 1)
    _assert_bounced_exactly(dispatch, refused.recipient_id, "imap")
    # Filed away; a second pass finds nothing new.
    assert dovecot.count() == 0 and dovecot.count("Dispatch-Processed") == 1
    again = poll_mailbox(settings, now=lambda: LATER)
    assert (again.handled, again.duplicates, again.filed) == (0, 0, 0)


def test_imap_refuses_a_server_whose_certificate_it_cannot_check(dovecot, db_app):
    from dispatch.inbound.imap import ImapError

    settings = ImapSettings.from_url(dovecot.url())  # the system's authorities only
    with pytest.raises(ImapError, match="không kết nối được hộp thư"):
        poll_mailbox(settings, now=lambda: LATER)


def test_a_non_standard_bounce_is_matched_by_its_verp_address(
    smtp_app, smtp_server, relay, outbox_dispatch, tmp_path
):
    port = free_port()
    from dispatch.processes.inbound_listener import start_listener

    listener = start_listener(smtp_app, port=port)
    relay.bounce_route = ("127.0.0.1", port)
    relay.standard = False
    try:
        _, refused = _send_through_relay(smtp_app, relay, smtp_server, outbox_dispatch, "92")
    finally:
        listener.stop()
    db.session.expire_all()
    recipient = db.session.get(DispatchRecipient, refused.recipient_id)
    assert recipient.bounced_at is not None and recipient.bounce_status == "5.1.1"
    inbound = db.session.execute(select(InboundMessage)).scalar_one()
    assert inbound.kind is InboundKind.BOUNCE and not inbound.details["standard_dsn"]


# --- Delays, automatic and human replies, unmatched mail ----------------------------------------


def test_a_delay_is_noted_and_changes_nothing(smtp_app, smtp_server, outbox_dispatch):
    smtp_app.config.update(DISPATCH_BOUNCE_ADDRESS=BOUNCES)
    dispatch = outbox_dispatch(codes=["01"])
    deliver_due(AT)
    (row,) = letter_rows(dispatch.id)
    raw = dsn_bytes(
        mail_from=f"bounces+{row.bounce_token}@thh.example",
        original=smtp_server.messages[0].raw,
        recipient=row.to_addrs[0],
        reply="451 4.4.1 No answer from host",
        action="delayed",
    )
    result = handle_message(raw, door="file", at=LATER)
    db.session.commit()
    assert result.kind is InboundKind.DELAY and result.matched_by == "verp"
    assert not result.bounced
    report = status_report(dispatch.id, at=LATER)
    assert report["recipients"][0]["delivery"] == "sent"
    assert report["counts"]["bounced"] == 0
    assert (
        db.session.execute(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "message.delayed")
        ).scalar_one()
        == 1
    )


def test_an_out_of_office_reply_changes_no_count_and_a_reply_is_attached(
    smtp_app, smtp_server, outbox_dispatch
):
    dispatch = outbox_dispatch(codes=["01", "79"])
    deliver_due(AT)
    rows = letter_rows(dispatch.id)
    before = status_report(dispatch.id, at=LATER)["counts"]
    auto = reply_bytes(
        to_message_id=rows[0].message_id,
        subject="Out of Office: Công văn",
        body="Tôi vắng mặt đến 20/11.",
        headers="Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n",
        sender=rows[0].to_addrs[0],
    )
    person = reply_bytes(
        to_message_id=rows[1].message_id,
        subject="Re: Công văn",
        body="Sở Thông tin và Truyền thông đã nhận công văn, xin cảm ơn.",
        sender=rows[1].to_addrs[0],
    )
    handle_message(auto, door="file", at=LATER)
    result = handle_message(person, door="file", at=LATER)
    db.session.commit()
    assert result.kind is InboundKind.REPLY and result.matched_by == "in-reply-to"
    after = status_report(dispatch.id, at=LATER)
    assert after["counts"] == before
    by_id = {r["id"]: r for r in after["recipients"]}
    assert by_id[rows[0].recipient_id]["auto_replies"] == 1
    assert by_id[rows[0].recipient_id]["replies"] == 0
    assert by_id[rows[0].recipient_id]["acknowledged_at"] is None
    assert by_id[rows[1].recipient_id]["replies"] == 1


def test_mail_that_matches_nothing_is_kept_and_listed_for_an_admin(db_app, runner):
    raw = reply_bytes(
        to_message_id="<not-ours@elsewhere.example>",
        subject="Hỏi về thủ tục",
        body="Xin hỏi …",
        sender="nguoi-dan@example.com",
    )
    result = handle_message(raw, door="file", at=LATER)
    db.session.commit()
    assert result.recipient_id is None and result.matched_by is None
    (found,) = unmatched()
    assert found.subject == "Hỏi về thủ tục"
    assert read_archived(found.archive_path, found.sha256) == raw
    listed = runner.invoke(args=["inbound", "list"])
    assert "Hỏi về thủ tục" in listed.output and "nguoi-dan@example.com" in listed.output


def test_a_late_bounce_of_a_corrected_address_is_only_noted(smtp_app, smtp_server, outbox_dispatch):
    from dispatch.receipts.recipient_actions import correct_address

    smtp_app.config.update(DISPATCH_BOUNCE_ADDRESS=BOUNCES)
    dispatch = outbox_dispatch(codes=["01"])
    deliver_due(AT)
    (row,) = letter_rows(dispatch.id)
    recipient = row.recipient
    old = row.to_addrs[0]
    from dispatch.accounts.users import find_user
    from tests.fixtures.smtp import CLERK

    correct_address(
        recipient,
        email="van-thu.moi@hanoi.example",
        cc="",
        update_directory=False,
        actor=find_user(CLERK[0]),
        at=AT,
    )
    db.session.commit()
    raw = dsn_bytes(
        mail_from=f"bounces+{row.bounce_token}@thh.example",
        original=smtp_server.messages[0].raw,
        recipient=old,
        reply=REFUSAL.format(address=old),
    )
    result = handle_message(raw, door="file", at=LATER)
    db.session.commit()
    assert result.kind is InboundKind.BOUNCE and not result.bounced
    db.session.expire_all()
    assert db.session.get(DispatchRecipient, recipient.id).bounced_at is None
    assert db.session.get(OutboxMessage, row.id).status is DeliveryStatus.BOUNCED
    assert row.kind is MessageKind.LETTER


# --- Nothing lost under load ----------------------------------------------------------------------


def _mixed_messages(rows: list[OutboxMessage], originals: dict[str, bytes], count: int):
    """``count`` distinct inbound messages of every kind, about ``rows``."""
    messages = []
    for i in range(count):
        row = rows[i % len(rows)]
        verp = f"bounces+{row.bounce_token}@thh.example"
        kind = (i // len(rows)) % 5  # every row gets every kind
        if kind in (0, 1):
            raw = dsn_bytes(
                mail_from=verp,
                original=originals[row.message_id],
                recipient=row.to_addrs[0],
                reply=REFUSAL.format(address=row.to_addrs[0])
                if kind == 0
                else "451 4.4.1 No answer from host",
                action="failed" if kind == 0 else "delayed",
            )
        elif kind == 2:
            raw = reply_bytes(
                to_message_id=row.message_id,
                subject=f"Tự động trả lời ({i})",
                body="Tôi vắng mặt.",
                headers="Auto-Submitted: auto-replied\r\n",
                sender=row.to_addrs[0],
            )
        elif kind == 3:
            raw = reply_bytes(
                to_message_id=row.message_id,
                subject=f"Re: Công văn ({i})",
                body=f"Sở đã nhận công văn, lần {i}.",
                sender=row.to_addrs[0],
            )
        else:
            raw = reply_bytes(
                to_message_id=None,
                subject=f"Thư lạc ({i})",
                body="Không liên quan.",
                sender="nguoi-la@example.com",
            )
        messages.append(raw)
    return messages


@pytest.mark.slow
def test_a_thousand_messages_are_each_handled_once_with_the_poller_killed_midway(
    smtp_app, smtp_server, outbox_dispatch, dovecot, tmp_path
):
    smtp_app.config.update(DISPATCH_BOUNCE_ADDRESS=BOUNCES)
    dispatch_id = outbox_dispatch(10).id
    deliver_due(AT)
    rows = letter_rows(dispatch_id)
    originals = {m.message_id: m.raw for m in smtp_server.messages}
    messages = _mixed_messages(rows, originals, 1000)
    conn = dovecot.connect()
    try:
        for raw in messages:
            assert conn.append("INBOX", None, None, raw)[0] == "OK"
    finally:
        conn.logout()
    db.session.commit()
    db.session.close()

    env = _dispatch_env(smtp_app, tmp_path) | {
        "DISPATCH_IMAP_URL": dovecot.url(),
        "DISPATCH_IMAP_CA_FILE": dovecot.cafile,
    }
    log = tmp_path / "poll.log"

    def handled() -> int:
        try:
            return db.session.execute(select(func.count(InboundMessage.id))).scalar_one()
        finally:
            db.session.rollback()

    with log.open("ab") as out:
        poller = subprocess.Popen(
            [str(BIN / "dispatch"), "inbound", "poll"], env=env, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: handled() >= 300 or poller.poll() is not None, timeout=300)
        poller.send_signal(signal.SIGKILL)
    finally:
        poller.wait(timeout=60)
    assert poller.returncode == -signal.SIGKILL, log.read_text()
    midway = handled()
    assert 300 <= midway < 1000

    with log.open("ab") as out:
        again = subprocess.run(
            [str(BIN / "dispatch"), "inbound", "poll"], env=env, stdout=out, stderr=out,
            timeout=600,
        )  # fmt: skip
    assert again.returncode == 0, log.read_text()

    assert handled() == 1000
    assert dovecot.count() == 0 and dovecot.count("Dispatch-Processed") == 1000
    kinds = dict(
        db.session.execute(
            select(InboundMessage.kind, func.count()).group_by(InboundMessage.kind)
        ).all()
    )
    assert {InboundKind(k).value: v for k, v in kinds.items()} == {
        "bounce": 200,
        "delay": 200,
        "auto_reply": 200,
        "reply": 400,  # 200 of them tied to nothing we sent
    }
    assert len(unmatched(1000)) == 200
    # Each message handled once: one audit entry each, none twice.
    received = db.session.execute(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "inbound.received")
    ).scalar_one()
    assert received == 1000
    report = status_report(dispatch_id, at=LATER)
    assert report["counts"]["bounced"] == 10
    assert {r["replies"] for r in report["recipients"]} == {20}
    assert {r["auto_replies"] for r in report["recipients"]} == {20}
    assert audit.verify_chain() == []
