"""The e-mails themselves: structure, headers, Vietnamese text, attachments, escaping."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatch.extensions import db
from dispatch.mail import outbox
from dispatch.mail.compose import OfficialMessage, compose, header_text, letter_title
from dispatch.mail.links import confirmation_url
from dispatch.mail.sender import deliver_due
from dispatch.models import (
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    Document,
    MessageKind,
    OutboxMessage,
)
from tests.fixtures.smtp import CLERK, ISSUED_AT, SUBJECT

AT = ISSUED_AT + dt.timedelta(minutes=1)
TITLE = f"Công văn số 01/THH-VP ngày 15/11/2021 V/v {SUBJECT}"
BAC_LIEU = "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"


def parse(message) -> EmailMessage:
    """The message as the wire carries it, read back by a standard parser."""
    return BytesParser(policy=policy.default).parsebytes(message.as_bytes())  # type: ignore[return-value]


def rfc2047_display_name(raw: bytes, name: str) -> str:
    """The display name of the first address of header ``name``, decoded as RFC 2047 says."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    value = re.search(rf"^{name}: (.*?)(?=\r\n\S)", head, re.M | re.S).group(1)  # type: ignore[union-attr]
    phrase = re.sub(r"\r\n[ \t]", " ", value).split("<", 1)[0].strip()
    return str(make_header(decode_header(phrase)))


def row_for(recipient_id: int, kind: MessageKind = MessageKind.LETTER) -> OutboxMessage:
    return db.session.execute(
        select(OutboxMessage).where(
            OutboxMessage.recipient_id == recipient_id, OutboxMessage.kind == kind
        )
    ).scalar_one()


def archived(dispatch: Dispatch, app) -> dict[str, bytes]:
    documents = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch.id)
    ).scalars()
    root = Path(app.config["DISPATCH_DATA_DIR"])
    return {doc.filename: (root / doc.path).read_bytes() for doc in documents}


def parts(mail: EmailMessage) -> tuple[str, str, dict[str, bytes]]:
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    files = {part.get_filename(): part.get_content() for part in mail.iter_attachments()}
    return text, html, files


def test_the_letter_email_has_text_html_and_the_exact_archived_files(db_app, outbox_dispatch):
    dispatch = outbox_dispatch(codes=["95"], cc={"95": ["vanthu.baclieu@tinh.example"]})
    recipient = dispatch.recipients[0]
    row = row_for(recipient.id)

    mail = parse(compose(row, at=AT))

    assert mail.get_content_type() == "multipart/mixed"
    first = next(mail.iter_parts())
    assert first.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in first.iter_parts()] == ["text/plain", "text/html"]
    assert str(mail["Subject"]) == TITLE
    assert mail["To"].addresses[0].display_name == BAC_LIEU
    assert mail["To"].addresses[0].addr_spec == "sovhttdl.baclieu@tinh.example"
    assert [a.addr_spec for a in mail["Cc"].addresses] == ["vanthu.baclieu@tinh.example"]
    assert mail.get_all("Message-ID") == [row.message_id]
    assert mail["X-Dispatch-Id"] == str(dispatch.id)
    assert mail["X-Dispatch-Kind"] == "letter"
    assert mail["X-Dispatch-Recipient"] == "95"
    assert mail.get_all("Auto-Submitted") is None
    assert mail["Date"] == "Mon, 15 Nov 2021 08:31:00 +0700"

    text, html, files = parts(mail)
    assert files == archived(dispatch, db_app)  # names decoded, bytes identical
    assert list(files) == [
        "CV-01-THH-VP-2021-11-15.pdf",
        "CV-01-THH-VP-2021-11-15.docx",
        "Hướng dẫn cài đặt PC-Covid.pdf",
    ]
    attachment_types = [p.get_content_type() for p in mail.iter_attachments()]
    assert attachment_types[0] == "application/pdf"
    assert attachment_types[1].endswith("wordprocessingml.document")
    link = confirmation_url(recipient)
    for body in (text, html):
        assert f"Kính gửi: {BAC_LIEU}." in body.replace("<strong>", "").replace("</strong>", "")
        assert link in body
        assert "18/11/2021 17:00" in body
        # It asks for confirmation by the deadline it states, never "the same day".
        assert "trước 17:00 ngày 18/11/2021" in body.lower()
        assert "ngay trong ngày" not in body.lower()
        assert "Nghị định số 30/2020/NĐ-CP" in body
        assert CLERK[0] in body and "van-thu@thh.example" in body
        assert "Cục Tin học hoá" in body
    assert f'href="{link}"' in html
    assert "<img" not in html and "http://" not in html.replace(link, "")


def test_subject_and_names_cannot_inject_headers(db_app, outbox_dispatch):
    dispatch = outbox_dispatch(codes=["01"], subject="Kiểm tra\r\nBcc: ke-gian@evil.example")
    recipient = dispatch.recipients[0]
    recipient.name = "Sở Thông tin\nX-Injected: 1"
    db.session.commit()

    raw = compose(row_for(recipient.id), at=AT).as_bytes()
    mail = BytesParser(policy=policy.default).parsebytes(raw)

    assert mail["Bcc"] is None and mail["X-Injected"] is None
    assert str(mail["Subject"]) == (
        "Công văn số 01/THH-VP ngày 15/11/2021 V/v Kiểm tra Bcc: ke-gian@evil.example"
    )
    assert mail["To"].addresses[0].display_name == "Sở Thông tin X-Injected: 1"
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert not [line for line in head.split(b"\r\n") if line.startswith((b"Bcc", b"X-Inj"))]


def test_html_escapes_what_the_clerk_typed(db_app, outbox_dispatch):
    dispatch = outbox_dispatch(codes=["01"], subject='Thử <script>alert("x")</script> & xem')
    _, html, _ = parts(parse(compose(row_for(dispatch.recipients[0].id), at=AT)))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; xem" in html


def test_message_id_and_bytes_are_stable_across_a_retry(db_app, outbox_dispatch):
    dispatch = outbox_dispatch(codes=["01"])
    row = row_for(dispatch.recipients[0].id)
    first, second = parse(compose(row, at=AT)), parse(compose(row, at=AT + dt.timedelta(hours=1)))
    assert first["Message-ID"] == second["Message-ID"] == row.message_id
    assert parts(first) == parts(second)


def test_composing_never_looks_the_host_name_up(db_app, outbox_dispatch, monkeypatch):
    import socket

    def no_lookup(*args):
        raise AssertionError("host name looked up while composing an e-mail")

    # A host whose reverse DNS is slow would hold up every e-mail by the resolver's time-out.
    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    monkeypatch.setattr(socket, "gethostbyaddr", no_lookup)
    dispatch = outbox_dispatch(codes=["01"])
    row = row_for(dispatch.recipients[0].id)

    assert parse(compose(row, at=AT))["Message-ID"] == row.message_id


def test_the_reminder_carries_the_link_the_count_and_the_pdf_only(db_app, outbox_dispatch):
    dispatch = outbox_dispatch(codes=["02"])
    recipient = dispatch.recipients[0]
    for day in (1, 2):
        outbox.enqueue(
            dispatch_id=dispatch.id,
            kind=MessageKind.REMINDER,
            to_addrs=[recipient.email],
            at=AT + dt.timedelta(days=day),
            recipient_id=recipient.id,
            sequence=day,
        )
    db.session.commit()
    second = db.session.execute(
        select(OutboxMessage).where(
            OutboxMessage.kind == MessageKind.REMINDER, OutboxMessage.sequence == 2
        )
    ).scalar_one()

    mail = parse(compose(second, at=AT + dt.timedelta(days=2)))

    assert str(mail["Subject"]) == f"Nhắc: xác nhận đã nhận {TITLE}"
    assert mail["X-Dispatch-Kind"] == "reminder"
    assert mail["Message-ID"] == second.message_id
    text, html, files = parts(mail)
    assert list(files) == ["CV-01-THH-VP-2021-11-15.pdf"]
    pdf = archived(dispatch, db_app)["CV-01-THH-VP-2021-11-15.pdf"]
    assert (
        hashlib.sha256(files["CV-01-THH-VP-2021-11-15.pdf"]).digest()
        == hashlib.sha256(pdf).digest()
    )
    for body in (text, html):
        assert "lần thứ 2" in body
        assert confirmation_url(recipient) in body
        assert "18/11/2021 17:00" in body
        assert "Sở Thông tin và Truyền thông tỉnh Hà Giang" in body


def test_the_escalation_lists_every_office_that_has_not_confirmed(
    smtp_app, smtp_server, outbox_dispatch
):
    dispatch = outbox_dispatch(codes=["01", "02", "95"])
    hanoi, hagiang, baclieu = dispatch.recipients
    smtp_server.handler.reject[hagiang.email] = "550 5.1.1 unknown"
    deliver_due(AT)
    db.session.get(DispatchRecipient, hanoi.id).acknowledged_at = AT + dt.timedelta(hours=1)
    outbox.enqueue(
        dispatch_id=dispatch.id,
        kind=MessageKind.ESCALATION,
        to_addrs=[CLERK[0], "lanh-dao@thh.example"],
        at=AT + dt.timedelta(days=4),
    )
    db.session.commit()
    escalation = db.session.execute(
        select(OutboxMessage).where(OutboxMessage.kind == MessageKind.ESCALATION)
    ).scalar_one()

    mail = parse(compose(escalation, at=dt.datetime(2021, 11, 19, 1, 0, tzinfo=dt.UTC)))

    assert str(mail["Subject"]) == f"Quá hạn xác nhận: {TITLE}"
    assert [a.addr_spec for a in mail["To"].addresses] == [CLERK[0], "lanh-dao@thh.example"]
    assert list(mail.iter_attachments()) == []
    text, html, _ = parts(mail)
    assert "còn 2/3 đơn vị" in text and "<strong>2/3</strong>" in html
    assert "Đến 19/11/2021 08:00" in text
    for body in (text, html):
        assert hanoi.name not in body  # confirmed: not listed
        assert hagiang.name in body and hagiang.email in body and "Gửi thất bại" in body
        assert BAC_LIEU in body and baclieu.email in body and "Đã gửi" in body
    assert html.count("<tr>") == 2  # one row per late office (the header row is styled)
    assert '<td style="border:1px solid #c4c9d0; padding:6px;">95</td>' in html

    # It goes out through the sender like any other message.
    report = deliver_due(AT + dt.timedelta(days=4, minutes=1))
    assert report.sent == 1
    received = smtp_server.messages[-1]
    assert sorted(received.rcpt_tos) == sorted([CLERK[0], "lanh-dao@thh.example"])
    db.session.expire_all()
    assert db.session.get(OutboxMessage, escalation.id).status is DeliveryStatus.SENT


def test_what_the_server_receives_parses_back_identically(smtp_app, smtp_server, outbox_dispatch):
    dispatch = outbox_dispatch(codes=["79"])
    deliver_due(AT)
    (received,) = smtp_server.messages
    mail = received.email
    assert str(mail["Subject"]) == TITLE
    assert received.message_id == row_for(dispatch.recipients[0].id).message_id
    _, _, files = parts(mail)
    assert files == archived(dispatch, smtp_app)
    assert received.mail_from == "van-thu@thh.example"


@pytest.mark.nodb
def test_header_text_keeps_one_nfc_line():
    decomposed = "Hoa\u0300"  # "Hoà" with a combining grave accent
    assert header_text(f" {decomposed}\r\n\tBình\x00 ") == "Hoà Bình"


def test_letter_title_before_a_number_is_given(db_app, outbox_dispatch):
    dispatch = outbox_dispatch(codes=["01"])
    assert letter_title(dispatch) == TITLE


@pytest.mark.nodb
def test_every_office_name_and_long_subjects_survive_the_wire(app):
    # Flask-Mail's own serialisation (policy.SMTP) turns "thành phố" into "thành ph ố" and
    # "tại địa phương" into "tạiđịa phương"; OfficialMessage must not.
    from tests.fixtures.smtp import directory_rows

    subjects = [
        f"Nhắc: xác nhận đã nhận Công văn số 01/THH-VP ngày 15/11/2021 V/v {SUBJECT}",
        "Quá hạn xác nhận: Công văn số 123/THH-VP ngày 05/01/2022 V/v tổ chức hướng dẫn và "
        "truyền thông về ứng dụng PC-Covid, quét mã QR tại địa phương",
        "ASCII only " * 12,
    ]
    with app.app_context():
        for row in directory_rows():
            for subject in subjects:
                message = OfficialMessage(
                    subject=subject,
                    sender="Văn thư Cục Tin học hoá <van-thu@thh.example>",
                    recipients=[(row["name"], row["email"])],
                    cc=["van-thu@tinh.example"],
                    body="From the start\nKính gửi",
                    html="<p>Kính gửi</p>",
                )
                raw = message.as_bytes()
                mail = BytesParser(policy=policy.default).parsebytes(raw)
                assert str(mail["Subject"]) == subject.strip()
                (to,) = mail["To"].addresses
                assert to.addr_spec == row["email"]
                # As RFC 2047 reads it (Python's address parser keeps the space between two
                # encoded words, which RFC 2047 readers drop: allow that one difference).
                assert rfc2047_display_name(raw, "To") == row["name"]
                assert " ".join(to.display_name.split()) == row["name"]
                (sender,) = mail["From"].addresses
                assert sender.display_name == "Văn thư Cục Tin học hoá"
                assert raw.isascii()  # 7-bit clean: quoted-printable bodies, encoded headers
                assert max(len(line) for line in raw.split(b"\r\n")) < 998
                body = mail.get_body(preferencelist=("plain",)).get_content()
                assert body.startswith("From the start")  # no ">From" mangling
