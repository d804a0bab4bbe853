"""What a clerk does for one recipient of an issued dispatch: resend, correct the address and
resend, record a confirmation by phone, stop reminders; each changes the data, is audited with
the clerk as actor, and goes out through the real outbox and SMTP server."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from dispatch.clock import parse_moment
from dispatch.extensions import db
from dispatch.mail.sender import deliver_due
from dispatch.models import (
    AcknowledgementMethod,
    AuditEntry,
    DeliveryStatus,
    DispatchRecipient,
    MessageKind,
    OutboxMessage,
    Role,
)
from dispatch.receipts import recipient_actions
from dispatch.reporting import status
from tests.fixtures.clerks import office, post_form

SENT_AT = parse_moment("2021-11-15T08:35:00+07:00")
LATER = parse_moment("2021-11-15T10:00:00+07:00")


def _recipient(dispatch_id: int, code: str) -> DispatchRecipient:
    return db.session.execute(
        select(DispatchRecipient).where(
            DispatchRecipient.dispatch_id == dispatch_id, DispatchRecipient.province_code == code
        )
    ).scalar_one()


def _letters(recipient_id: int) -> list[OutboxMessage]:
    return list(
        db.session.execute(
            select(OutboxMessage)
            .where(
                OutboxMessage.recipient_id == recipient_id,
                OutboxMessage.kind == MessageKind.LETTER,
            )
            .order_by(OutboxMessage.sequence)
        ).scalars()
    )


def _entries(action: str) -> list[AuditEntry]:
    return list(db.session.execute(select(AuditEntry).where(AuditEntry.action == action)).scalars())


def _row(dispatch_id: int, code: str) -> dict:
    report = status.status_report(dispatch_id, at=LATER)
    return next(r for r in report["recipients"] if r["code"] == code)


@pytest.fixture()
def delivered(issued_dispatch, smtp_app, smtp_server):
    """An issued dispatch whose letters went out, Cà Mau's refused by its server (550)."""
    smtp_server.handler.reject["sotttt.camau@tinh.example"] = "550 5.1.1 Mailbox unavailable"
    dispatch = issued_dispatch()
    deliver_due(SENT_AT)
    db.session.expire_all()
    return dispatch


def test_resend_queues_the_next_letter_which_the_report_follows(delivered, desk, smtp_server):
    clerk = desk.users[Role.CLERK]
    hanoi = _recipient(delivered.id, "01")
    assert _row(delivered.id, "01")["delivery"] == "sent"
    before = len(smtp_server.messages)

    result = recipient_actions.resend_letter(hanoi, actor=clerk, at=LATER)
    db.session.commit()
    assert result.sequence == 1
    letters = _letters(hanoi.id)
    assert [(m.sequence, m.status) for m in letters] == [
        (0, DeliveryStatus.SENT),
        (1, DeliveryStatus.QUEUED),
    ]
    assert _row(delivered.id, "01")["delivery"] == "queued"  # the latest letter counts
    [entry] = _entries("recipient.letter_resent")
    assert entry.actor == clerk.email and entry.details["sequence"] == 1

    # While it waits, a second resend is refused.
    with pytest.raises(recipient_actions.RecipientActionError, match="đang chờ gửi"):
        recipient_actions.resend_letter(hanoi, actor=clerk, at=LATER)
    db.session.rollback()

    report = deliver_due(LATER)
    assert report.sent == 1
    assert len(smtp_server.messages) == before + 1
    message = smtp_server.messages[-1]
    assert message.rcpt_tos == ["sotttt.hanoi@tinh.example"]
    assert "/r/" in message.email.get_body(("plain",)).get_content()  # the same kind of link
    row = _row(delivered.id, "01")
    assert row["delivery"] == "sent"
    assert dt.datetime.fromisoformat(row["sent_at"]) >= LATER


def test_correct_address_and_resend(delivered, desk, smtp_server):
    clerk = desk.users[Role.CLERK]
    ca_mau = _recipient(delivered.id, "96")
    assert _row(delivered.id, "96")["delivery"] == "failed"
    assert _row(delivered.id, "96")["smtp_reply"].startswith("550")

    with pytest.raises(recipient_actions.RecipientActionError) as caught:
        recipient_actions.correct_address(
            ca_mau,
            email="khong hop le",
            cc="vanthu@camau",
            update_directory=True,
            actor=clerk,
            at=LATER,
        )
    assert set(caught.value.errors) == {"email", "cc"}
    db.session.rollback()
    assert _recipient(delivered.id, "96").email == "sotttt.camau@tinh.example"

    ca_mau = _recipient(delivered.id, "96")
    result = recipient_actions.correct_address(
        ca_mau,
        email=" STTTT@camau.gov.vn ",
        cc="vanthu@camau.gov.vn; stttt@camau.gov.vn",
        update_directory=True,
        actor=clerk,
        at=LATER,
    )
    db.session.commit()
    assert result.sequence == 1
    ca_mau = _recipient(delivered.id, "96")
    assert ca_mau.email == "stttt@camau.gov.vn" and ca_mau.cc == ["vanthu@camau.gov.vn"]
    org = office("96")
    assert org.email == "stttt@camau.gov.vn" and not org.email_is_placeholder
    [corrected] = _entries("recipient.address_corrected")
    assert corrected.actor == clerk.email
    assert corrected.details["email"] == {
        "from": "sotttt.camau@tinh.example",
        "to": "stttt@camau.gov.vn",
    }
    [updated] = _entries("organisation.updated")
    assert updated.actor == clerk.email and updated.details["via"] == "recipient correction"

    deliver_due(LATER)
    message = smtp_server.messages[-1]
    assert sorted(message.rcpt_tos) == ["stttt@camau.gov.vn", "vanthu@camau.gov.vn"]
    assert _row(delivered.id, "96")["delivery"] == "sent"
    assert _row(delivered.id, "96")["email"] == "stttt@camau.gov.vn"


def test_a_corrected_address_replaces_a_letter_still_waiting(issued_dispatch, desk):
    dispatch = issued_dispatch()  # nothing delivered: every letter is queued
    clerk = desk.users[Role.CLERK]
    hanoi = _recipient(dispatch.id, "01")
    result = recipient_actions.correct_address(
        hanoi,
        email="stttt@hanoi.gov.vn",
        cc="",
        update_directory=False,
        actor=clerk,
        at=LATER,
    )
    db.session.commit()
    assert result.cancelled == 1
    assert [(m.sequence, m.status, m.to_addrs) for m in _letters(hanoi.id)] == [
        (0, DeliveryStatus.CANCELLED, ["sotttt.hanoi@tinh.example"]),
        (1, DeliveryStatus.QUEUED, ["stttt@hanoi.gov.vn"]),
    ]
    assert office("01").email == "sotttt.hanoi@tinh.example"  # the directory left alone


def test_phone_confirmation_needs_a_reason_and_names_the_clerk(delivered, desk):
    clerk = desk.users[Role.CLERK]
    bac_lieu = _recipient(delivered.id, "95")
    with pytest.raises(recipient_actions.RecipientActionError) as caught:
        recipient_actions.record_phone_confirmation(
            bac_lieu, name="Trần Thị Lan", position="Văn thư", note="  ", actor=clerk, at=LATER
        )
    assert set(caught.value.errors) == {"note"}
    db.session.rollback()
    assert _recipient(delivered.id, "95").acknowledged_at is None
    assert _entries("recipient.acknowledged") == []

    bac_lieu = _recipient(delivered.id, "95")
    recipient_actions.record_phone_confirmation(
        bac_lieu,
        name="Trần Thị Lan",
        position="Văn thư Sở",
        note="Gọi lúc 9 giờ: Sở đã nhận qua hộp thư chung.",
        actor=clerk,
        at=LATER,
    )
    db.session.commit()
    bac_lieu = _recipient(delivered.id, "95")
    assert bac_lieu.acknowledged_at == LATER
    assert bac_lieu.acknowledged_method is AcknowledgementMethod.PHONE
    assert bac_lieu.acknowledged_by == "Trần Thị Lan"
    [entry] = _entries("recipient.acknowledged")
    assert entry.actor == clerk.email and entry.details["method"] == "phone"
    assert entry.details["note"].startswith("Gọi lúc 9 giờ")
    assert _row(delivered.id, "95")["acknowledged_method"] == "phone"

    with pytest.raises(recipient_actions.RecipientActionError, match="đã xác nhận"):
        recipient_actions.record_phone_confirmation(
            bac_lieu, name="Ai đó", position="Khác", note="lần hai", actor=clerk, at=LATER
        )


def test_stop_reminders(delivered, desk):
    clerk = desk.users[Role.CLERK]
    hanoi = _recipient(delivered.id, "01")
    assert recipient_actions.set_reminders_stopped(hanoi, True, actor=clerk, at=LATER)
    db.session.commit()
    assert _recipient(delivered.id, "01").reminders_stopped is True
    assert not recipient_actions.set_reminders_stopped(hanoi, True, actor=clerk, at=LATER)
    [entry] = _entries("recipient.reminders_stopped")
    assert entry.actor == clerk.email and entry.object_id == str(hanoi.id)


def test_the_actions_through_the_web(delivered, desk):
    clerk = desk.clerk
    hanoi = _recipient(delivered.id, "01")
    ca_mau = _recipient(delivered.id, "96")
    bac_lieu = _recipient(delivered.id, "95")
    base = f"/dispatches/{delivered.id}/recipients"
    page = clerk.get(f"{base}/{ca_mau.id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "550 5.1.1 Mailbox unavailable" in html
    assert "Sửa địa chỉ và gửi lại" in html and "Ghi nhận xác nhận qua điện thoại" in html

    response = post_form(clerk, f"{base}/{hanoi.id}/resend", {}, token_from=f"{base}/{hanoi.id}")
    assert response.status_code == 303
    assert [m.sequence for m in _letters(hanoi.id)] == [0, 1]

    bad = post_form(
        clerk,
        f"{base}/{ca_mau.id}/address",
        {"email": "sai@", "cc": "", "update_directory": "1"},
        token_from=f"{base}/{ca_mau.id}",
    )
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert 'id="email-loi"' in html and "không hợp lệ" in html and 'value="sai@"' in html
    good = post_form(
        clerk,
        f"{base}/{ca_mau.id}/address",
        {"email": "stttt@camau.gov.vn", "cc": "", "update_directory": "1"},
        token_from=f"{base}/{ca_mau.id}",
    )
    assert good.status_code == 303
    db.session.expire_all()
    assert _recipient(delivered.id, "96").email == "stttt@camau.gov.vn"
    assert office("96").email == "stttt@camau.gov.vn"

    missing_note = post_form(
        clerk,
        f"{base}/{bac_lieu.id}/phone",
        {"name": "Trần Thị Lan", "position": "Văn thư", "note": ""},
        token_from=f"{base}/{bac_lieu.id}",
    )
    assert missing_note.status_code == 422
    assert "bắt buộc khi xác nhận qua điện thoại" in missing_note.get_data(as_text=True)
    response = post_form(
        clerk,
        f"{base}/{bac_lieu.id}/phone",
        {"name": "Trần Thị Lan", "position": "Văn thư", "note": "Đã nhận, báo qua điện thoại."},
        token_from=f"{base}/{bac_lieu.id}",
    )
    assert response.status_code == 303
    db.session.expire_all()
    assert _recipient(delivered.id, "95").acknowledged_method is AcknowledgementMethod.PHONE
    page = clerk.get(f"/dispatches/{delivered.id}").get_data(as_text=True)
    assert "(qua điện thoại)" in page and "đã xác nhận 1/63" in page

    response = post_form(
        clerk, f"{base}/{hanoi.id}/reminders", {"stop": "1"}, token_from=f"{base}/{hanoi.id}"
    )
    assert response.status_code == 303
    db.session.expire_all()
    assert _recipient(delivered.id, "01").reminders_stopped
    assert "đã dừng nhắc" in clerk.get(f"/dispatches/{delivered.id}").get_data(as_text=True)

    actors = {
        entry.actor
        for action in (
            "recipient.letter_resent",
            "recipient.address_corrected",
            "recipient.acknowledged",
            "recipient.reminders_stopped",
        )
        for entry in _entries(action)
    }
    assert actors == {desk.users[Role.CLERK].email}


def _link_token(message) -> str:
    body = message.email.get_body(("plain",)).get_content()
    [token] = set(re.findall(r"/r/([A-Za-z0-9_-]{43})", body))
    return token


def test_a_corrected_address_gets_a_new_link_and_the_old_one_stops_working(
    delivered, desk, smtp_server, client
):
    clerk = desk.users[Role.CLERK]
    hanoi = _recipient(delivered.id, "01")
    [first] = [m for m in smtp_server.messages if m.rcpt_tos == ["sotttt.hanoi@tinh.example"]]
    old = _link_token(first)
    assert client.get(f"/r/{old}").status_code == 200  # the misdirected e-mail's link works …

    recipient_actions.correct_address(
        hanoi, email="stttt@hanoi.gov.vn", cc="", update_directory=False, actor=clerk, at=LATER
    )
    db.session.commit()
    deliver_due(LATER)
    [second] = [m for m in smtp_server.messages if m.rcpt_tos == ["stttt@hanoi.gov.vn"]]
    new = _link_token(second)

    assert new != old
    assert client.get(f"/r/{old}").status_code == 404  # … until the address is corrected
    assert client.get(f"/r/{new}").status_code == 200
    [corrected] = _entries("recipient.address_corrected")
    assert corrected.details["link_replaced"] is True


def test_resending_to_the_same_address_keeps_the_link(delivered, desk, smtp_server):
    clerk = desk.users[Role.CLERK]
    hanoi = _recipient(delivered.id, "01")
    [first] = [m for m in smtp_server.messages if m.rcpt_tos == ["sotttt.hanoi@tinh.example"]]
    recipient_actions.resend_letter(hanoi, actor=clerk, at=LATER)
    db.session.commit()
    deliver_due(LATER)
    again = smtp_server.messages[-1]
    assert again.rcpt_tos == ["sotttt.hanoi@tinh.example"]
    assert _link_token(again) == _link_token(first)


def _sections(html: str) -> dict[str, str]:
    """The page's cards by heading id, and what each one's table says."""
    return dict(
        re.findall(r'<section class="card" aria-labelledby="([^"]+)">(.*?)</section>', html, re.S)
    )


def test_the_recipient_page_shows_what_applies_and_the_reply_in_plain_words(delivered, desk):
    clerk = desk.clerk
    base = f"/dispatches/{delivered.id}/recipients"
    hanoi = _recipient(delivered.id, "01")
    ca_mau = _recipient(delivered.id, "96")

    html = clerk.get(f"{base}/{hanoi.id}").get_data(as_text=True)
    sections = _sections(html)
    history = sections["lich-su"]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", history, re.S)
    assert "Lần đầu" in cells and "0" not in cells and "Lần 0" not in html
    # Accepted, said plainly; the raw reply behind a disclosure.
    assert re.search(r'class="smtp-meaning">Máy chủ thư đã nhận\s*<details', history)
    assert re.search(r"<summary>Phản hồi gốc</summary><code[^>]*>250 ", history)
    assert "gui-lai" in sections and "nhac-viec" in sections
    checkbox = re.search(r'<input type="checkbox" id="update_directory"[^>]*>', html).group(0)
    assert "checked" not in checkbox  # the directory is changed only when asked

    refused = clerk.get(f"{base}/{ca_mau.id}").get_data(as_text=True)
    assert "Máy chủ thư từ chối nhận" in _sections(refused)["lich-su"]

    # Once the office has confirmed: nothing to resend, nobody to remind.
    recipient_actions.record_phone_confirmation(
        hanoi,
        name="Nguyễn Văn Bình",
        position="Văn thư",
        note="Gọi điện.",
        actor=desk.users[Role.CLERK],
        at=LATER,
    )
    db.session.commit()
    html = clerk.get(f"{base}/{hanoi.id}").get_data(as_text=True)
    sections = _sections(html)
    assert "gui-lai" not in sections and "nhac-viec" not in sections
    assert ">Gửi lại<" not in html and "Dừng nhắc việc" not in html
    assert "không cần gửi lại" in sections["da-xac-nhan"]
    # …and the actions refuse it even when posted.
    response = post_form(clerk, f"{base}/{hanoi.id}/resend", {}, token_from=f"{base}/{hanoi.id}")
    assert response.status_code == 422 and "đã xác nhận" in response.get_data(as_text=True)
    response = post_form(
        clerk, f"{base}/{hanoi.id}/reminders", {"stop": "1"}, token_from=f"{base}/{hanoi.id}"
    )
    assert response.status_code == 422
    assert [m.sequence for m in _letters(hanoi.id)] == [0]
