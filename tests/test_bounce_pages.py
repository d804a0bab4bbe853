"""What people see of bounces and replies: the clerk's and the leader's pages, the reminders that
stop, the corrected address with its new link, the reply a clerk marks as a confirmation."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from sqlalchemy import select

from dispatch import clock
from dispatch.clock import parse_moment
from dispatch.extensions import db
from dispatch.inbound.handler import handle_message
from dispatch.mail.sender import deliver_due
from dispatch.models import (
    AcknowledgementMethod,
    AuditEntry,
    DeliveryStatus,
    DispatchRecipient,
    InboundMessage,
    MessageKind,
    OutboxMessage,
    Role,
)
from dispatch.processes.inbound_listener import start_listener
from dispatch.receipts.reminders import send_due_reminders
from tests.fixtures.clerks import post_form
from tests.fixtures.smtp import ISSUED_AT, free_port
from tests.test_inbound import BOUNCES, REFUSAL, letter_rows, reply_bytes

AT = ISSUED_AT + dt.timedelta(minutes=1)
NEXT_MORNING = parse_moment("2021-11-16T09:00:00+07:00")
CAMAU = "96"


@pytest.fixture()
def bounced(smtp_app, smtp_server, relay, outbox_dispatch, desk):
    """Three offices; Cà Mau's server refuses its address after the relay accepted it, and the
    bounce comes back through the inbound SMTP listener."""
    port = free_port()
    listener = start_listener(smtp_app, port=port)
    relay.bounce_route = ("127.0.0.1", port)
    smtp_app.config.update(DISPATCH_BOUNCE_ADDRESS=BOUNCES, MAIL_PORT=relay.port)
    try:
        dispatch = outbox_dispatch(codes=["01", "79", CAMAU])
        rows = letter_rows(dispatch.id)
        camau = next(r for r in rows if r.recipient.province_code == CAMAU)
        address = camau.to_addrs[0]
        smtp_server.handler.reject[address.lower()] = REFUSAL.format(address=address)
        assert deliver_due(AT).sent == 3
        relay.wait_idle()
    finally:
        listener.stop()
    db.session.expire_all()
    return dispatch, camau.recipient_id


def test_the_clerk_sees_the_bounce_in_red_with_its_reason_and_the_raw_diagnostic(bounced, desk):
    dispatch, camau_id = bounced
    page = desk.clerk.get(f"/dispatches/{dispatch.id}").get_data(as_text=True)
    row = re.search(rf'<tr data-code="{CAMAU}"[^>]*class="([^"]+)"', page)
    assert row and "delivery-bounced" in row.group(1)
    assert "Địa chỉ thư không tồn tại trên máy chủ thư của cơ quan nhận." in page
    assert 'class="reason-bad"' in page
    assert 'bị trả lại <span data-count="bounced">1</span>' in page

    detail = desk.clerk.get(f"/dispatches/{dispatch.id}/recipients/{camau_id}")
    html = detail.get_data(as_text=True)
    assert "Thông báo gốc của máy chủ" in html
    assert "smtp; 550 5.1.1" in html and "(mã 5.1.1)" in html and "dns; relay.thh.test" in html
    assert "Thư bị trả lại" in html  # the bounce in the office's history
    inbound = db.session.execute(select(InboundMessage)).scalar_one()
    eml = desk.clerk.get(
        f"/dispatches/{dispatch.id}/recipients/{camau_id}/received/{inbound.id}.eml"
    )
    assert eml.status_code == 200 and b"message/delivery-status" in eml.data

    status = desk.clerk.get(f"/dispatches/{dispatch.id}/status.json").get_json()
    assert status["counts"]["bounced"] == 1
    row = next(r for r in status["recipients"] if r["id"] == camau_id)
    assert row["delivery"] == "bounced"


def test_the_leader_sees_the_office_in_red_on_the_map_and_in_the_table(bounced, desk):
    dispatch, _ = bounced
    html = desk.leader.get(f"/lanh-dao/cong-van/{dispatch.id}").get_data(as_text=True)
    assert re.search(rf'class="tile status-bounced" data-code="{CAMAU}"', html)
    assert '<span class="badge status-bounced"><span class="badge-code">TL</span>' in html
    assert "Địa chỉ thư không tồn tại trên máy chủ thư của cơ quan nhận." in html


def test_no_reminder_goes_to_a_bounced_address(bounced):
    _, camau_id = bounced
    report = send_due_reminders(NEXT_MORNING)
    (outcome,) = report.outcomes
    assert sorted(outcome.reminded) == ["01", "79"]
    reminders = db.session.execute(
        select(OutboxMessage.recipient_id).where(OutboxMessage.kind == MessageKind.REMINDER)
    ).scalars()
    assert camau_id not in set(reminders)


def test_a_corrected_address_is_sent_a_new_link_and_the_old_one_answers_404(
    bounced, desk, smtp_app, smtp_server, client
):
    from dispatch.mail.links import token_for

    dispatch, camau_id = bounced
    old_token = token_for(db.session.get(DispatchRecipient, camau_id))
    assert client.get(f"/r/{old_token}").status_code == 200
    url = f"/dispatches/{dispatch.id}/recipients/{camau_id}"
    response = post_form(
        desk.clerk,
        f"{url}/address",
        {"email": "vanthu@camau.gov.vn", "cc": "", "update_directory": ""},
        token_from=url,
    )
    assert response.status_code == 303
    db.session.expire_all()
    recipient = db.session.get(DispatchRecipient, camau_id)
    assert recipient.bounced_at is None  # the new e-mail's fate decides from now on
    (resent,) = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "recipient.letter_resent")
    ).scalars()
    assert resent.details["bounce_cleared"]["status"] == "5.1.1"
    smtp_server.configure(smtp_app)  # straight to the province's server this time
    assert deliver_due(clock.now()).sent == 1  # queued by the web request, now
    new_message = smtp_server.messages[-1]
    assert new_message.rcpt_tos == ["vanthu@camau.gov.vn"]
    body = new_message.email.get_body(("plain",)).get_content()
    (new_token,) = set(re.findall(r"/r/([A-Za-z0-9_-]{43})", body))
    assert new_token != old_token
    assert client.get(f"/r/{old_token}").status_code == 404
    assert client.get(f"/r/{new_token}").status_code == 200
    row = next(
        r
        for r in desk.clerk.get(f"/dispatches/{dispatch.id}/status.json").get_json()["recipients"]
        if r["id"] == camau_id
    )
    assert row["delivery"] == "sent"


def test_a_reply_shows_on_the_recipient_page_and_a_clerk_marks_it_as_confirmation(
    smtp_app, smtp_server, outbox_dispatch, desk
):
    dispatch = outbox_dispatch(codes=["01", "79"])
    deliver_due(AT)
    row = letter_rows(dispatch.id)[0]
    raw = reply_bytes(
        to_message_id=row.message_id,
        subject="Re: Công văn số 01/THH-VP",
        body="Sở Thông tin và Truyền thông Hà Nội đã nhận được công văn.\n\n> trích",
        sender=row.to_addrs[0],
    )
    auto = reply_bytes(
        to_message_id=row.message_id,
        subject="Automatic reply: Công văn",
        body="Tôi vắng mặt.",
        headers="Auto-Submitted: auto-replied\r\n",
        sender=row.to_addrs[0],
    )
    handle_message(auto, door="file", at=AT + dt.timedelta(minutes=5))
    handle_message(raw, door="file", at=AT + dt.timedelta(minutes=30))
    db.session.commit()
    url = f"/dispatches/{dispatch.id}/recipients/{row.recipient_id}"
    html = desk.clerk.get(url).get_data(as_text=True)
    assert "Sở Thông tin và Truyền thông Hà Nội đã nhận được công văn." in html
    assert "Trả lời tự động (không tính là xác nhận)" in html
    reply = db.session.execute(
        select(InboundMessage).where(InboundMessage.kind == "reply")
    ).scalar_one()
    auto_row = db.session.execute(
        select(InboundMessage).where(InboundMessage.kind == "auto_reply")
    ).scalar_one()
    # An automatic reply cannot be marked as a confirmation.
    refused = post_form(
        desk.clerk,
        f"{url}/received/{auto_row.id}",
        {"reply_name": "X", "reply_position": "Y"},
        token_from=url,
    )
    assert refused.status_code == 422
    response = post_form(
        desk.clerk,
        f"{url}/received/{reply.id}",
        {"reply_name": "Nguyễn Văn An", "reply_position": "Văn thư"},
        token_from=url,
    )
    assert response.status_code == 303
    db.session.expire_all()
    recipient = db.session.get(DispatchRecipient, row.recipient_id)
    assert recipient.acknowledged_method is AcknowledgementMethod.EMAIL
    assert recipient.acknowledged_by == "Nguyễn Văn An"
    marked = db.session.get(InboundMessage, reply.id)
    assert marked.confirmed_by_id == desk.users[Role.CLERK].id
    (entry,) = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "inbound.marked_as_confirmation")
    ).scalars()
    assert entry.actor == desk.users[Role.CLERK].email
    page = desk.clerk.get(f"/dispatches/{dispatch.id}").get_data(as_text=True)
    assert "(qua thư trả lời)" in page
    # A leader reads but cannot mark.
    assert desk.leader.post(f"{url}/received/{reply.id}").status_code in (400, 403)


def test_the_status_command_gives_bounce_reason_replies_and_counts(bounced, runner):
    dispatch, camau_id = bounced
    result = runner.invoke(args=["status", str(dispatch.id), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts"]["bounced"] == 1
    row = next(r for r in report["recipients"] if r["id"] == camau_id)
    assert row["delivery"] == "bounced"
    assert row["bounce_reason"].startswith("Địa chỉ thư không tồn tại")
    assert (row["replies"], row["auto_replies"]) == (0, 0)
    text = runner.invoke(args=["status", str(dispatch.id)]).output
    assert "Bị trả lại: 1" in text and "bị trả lại (5.1.1)" in text


def test_an_admin_sees_the_unmatched_mail(db_app, desk):
    handle_message(
        reply_bytes(to_message_id=None, subject="Thư lạc", body="…", sender="nguoi-la@example.com"),
        door="file",
        at=AT,
    )
    db.session.commit()
    html = desk.admin.get("/admin/inbound").get_data(as_text=True)
    assert "Thư lạc" in html and "nguoi-la@example.com" in html
    assert desk.clerk.get("/admin/inbound").status_code == 403
    assert DeliveryStatus.BOUNCED.value == "bounced"


def test_the_escalation_lists_a_bounced_office_with_its_state(bounced, smtp_app, smtp_server):
    dispatch, _ = bounced
    smtp_server.configure(smtp_app)
    deadline = parse_moment("2021-11-18T17:05:00+07:00")
    report = send_due_reminders(deadline)
    assert report.escalations_queued == 1
    assert deliver_due(deadline).sent == 1
    escalation = smtp_server.messages[-1].email.get_body(("plain",)).get_content()
    assert "Bị trả lại" in escalation and str(dispatch.number_and_symbol) in escalation
