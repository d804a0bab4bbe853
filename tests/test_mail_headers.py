"""Every e-mail the service sends, read back strictly: RFC 2047 encoded words of at most 75
characters, lines within RFC 5322's limits, the agency's name on From, Auto-Submitted (RFC
3834) on what the system writes by itself, attachment names twice (ASCII and RFC 2231), and the
escalation addressed and greeted as leadership."""

from __future__ import annotations

import datetime as dt
import re
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from dispatch.clock import VN
from dispatch.mail.compose import OfficialMessage, content_disposition, phrase_tokens
from dispatch.mail.outbox import message_id
from dispatch.mail.sender import deliver_due
from dispatch.receipts.reminders import send_due_reminders
from tests.fixtures.checkers import vnu_errors
from tests.fixtures.smtp import ATTACHMENT, CLERK, ISSUED_AT, directory_rows

AGENCY = "Cục Tin học hoá"
LEADERSHIP = "lanh-dao@thh.example"
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# The duplicate Python's parser reports for RFC 6266's pair filename / filename* (it keeps the
# first, filename*): the pair is what point 8 asks for, so that one defect is expected there.
DUPLICATE_PARAMETER = "duplicate parameter name"


def heads(raw: bytes) -> list[bytes]:
    """The header block of the message and of each MIME part, as raw bytes."""
    blocks = [raw.split(b"\r\n\r\n", 1)[0]]
    for boundary in set(re.findall(rb'boundary="([^"]+)"', raw)):
        for piece in raw.split(b"--" + boundary + b"\r\n")[1:]:
            blocks.append(piece.split(b"\r\n\r\n", 1)[0])
    return blocks


def check_wire(raw: bytes) -> EmailMessage:
    """The raw rules every message keeps; the message read with the strict policy."""
    assert raw.isascii()
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    for block in heads(raw):
        for line in block.split(b"\r\n"):
            # RFC 5322 2.1.1: 78 SHOULD, 998 MUST; the Message-ID line too.
            assert len(line) <= 78, line
        # Every encoded word, folded lines included, at most 75 characters (RFC 2047, 2).
        for word in ENCODED_WORD.findall(block):
            assert len(word) <= 75, word
    mail = BytesParser(policy=policy.strict).parsebytes(raw)
    assert not mail.defects
    for part in mail.walk():
        assert not part.defects
        for name, value in part.items():
            defects = [str(d) for d in getattr(value, "defects", ())]
            if name == "Content-Disposition":
                defects = [d for d in defects if DUPLICATE_PARAMETER not in d]
            assert defects == [], (name, defects)
    return mail  # type: ignore[return-value]


def rfc2047(value: str) -> str:
    """A header value decoded as RFC 2047 says (adjacent encoded words joined)."""
    return str(make_header(decode_header(re.sub(r"\r\n[ \t]", " ", value))))


def raw_header(raw: bytes, name: str) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    match = re.search(rf"^{name}: (.*?)(?=\r\n\S|\Z)", head, re.M | re.S)
    assert match is not None, name
    return match.group(1)


def display_name(raw: bytes, name: str) -> str:
    return rfc2047(raw_header(raw, name).split("<", 1)[0].strip())


def check_from(raw: bytes, mail: EmailMessage) -> None:
    assert display_name(raw, "From") == AGENCY
    (sender,) = mail["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (AGENCY, "van-thu@thh.example")


def check_attachments(raw: bytes, mail: EmailMessage) -> dict[str, bytes]:
    """Each attachment's name as sent: ASCII in ``filename``, exact in ``filename*`` (in
    RFC 2231 pieces when one line cannot hold it); the names as the parser reads them."""
    dispositions = [
        raw_header(block + b"\r\n", "Content-Disposition")
        for block in heads(raw)
        if b"\r\nContent-Disposition: " in b"\r\n" + block
    ]
    attachments = list(mail.iter_attachments())
    assert len(dispositions) == len(attachments)
    files = {}
    for part, disposition in zip(attachments, dispositions, strict=True):
        name = part.get_filename()
        assert name is not None
        fallback = re.search(r'(?:^|[;\s])filename="([ -~]+)"', disposition)
        assert fallback is not None, disposition
        if not name.isascii():
            assert "filename*" in disposition
            assert fallback.group(1).endswith("." + name.rsplit(".", 1)[-1])
            if len(disposition) > 78:
                assert "filename*0*=utf-8''" in disposition and "filename*1*=" in disposition
        else:
            assert fallback.group(1) == name
        files[name] = part.get_content()
    return files


def test_every_mail_of_the_seed_letter_reads_back_strictly(smtp_app, smtp_server, outbox_dispatch):
    smtp_app.config["DISPATCH_LEADERSHIP_EMAIL"] = LEADERSHIP
    dispatch = outbox_dispatch(63)
    names = {r.email: r.name for r in dispatch.recipients}
    assert len(names) == 63

    assert deliver_due(ISSUED_AT + dt.timedelta(minutes=1)).sent == 63
    letters = list(smtp_server.messages)
    # A first working day's reminder to every office, then the escalation after the deadline.
    assert send_due_reminders(dt.datetime(2021, 11, 16, 9, tzinfo=VN)).reminders_queued == 63
    assert deliver_due(dt.datetime(2021, 11, 16, 9, 1, tzinfo=VN)).sent == 63
    reminders = smtp_server.messages[63:]
    assert send_due_reminders(dt.datetime(2021, 11, 19, 9, tzinfo=VN)).escalations_queued == 1
    assert deliver_due(dt.datetime(2021, 11, 19, 9, 1, tzinfo=VN)).sent == 1
    (escalation,) = smtp_server.messages[126:]

    long_subject_words = 0
    for received in letters:
        mail = check_wire(received.raw)
        check_from(received.raw, mail)
        assert mail.get_all("Auto-Submitted") is None  # the letter is the agency's own
        (to,) = mail["To"].addresses
        assert display_name(received.raw, "To") == names[to.addr_spec]
        files = check_attachments(received.raw, mail)
        assert list(files)[-1] == ATTACHMENT
        long_subject_words += len(ENCODED_WORD.findall(received.raw.split(b"\r\n\r\n")[0]))
        text = mail.get_body(preferencelist=("plain",)).get_content()
        assert "trước 17:00 ngày 18/11/2021" in text and "ngay trong ngày" not in text
    assert long_subject_words > 63  # the names and subjects are split, not one long word each

    for received in reminders:
        mail = check_wire(received.raw)
        check_from(received.raw, mail)
        assert mail["Auto-Submitted"] == "auto-generated"
        assert mail["X-Dispatch-Kind"] == "reminder"
        (to,) = mail["To"].addresses
        assert display_name(received.raw, "To") == names[to.addr_spec]
        check_attachments(received.raw, mail)
        text = mail.get_body(preferencelist=("plain",)).get_content()
        assert "trước 17:00 ngày 18/11/2021" in text

    mail = check_wire(escalation.raw)
    check_from(escalation.raw, mail)
    assert mail["Auto-Submitted"] == "auto-generated"
    assert [a.addr_spec for a in mail["To"].addresses] == [LEADERSHIP]
    assert display_name(escalation.raw, "To") == f"Lãnh đạo {AGENCY}"
    assert [a.addr_spec for a in mail["Cc"].addresses] == [CLERK[0]]
    assert sorted(escalation.rcpt_tos) == sorted([LEADERSHIP, CLERK[0]])
    for body in (
        mail.get_body(preferencelist=("plain",)).get_content(),
        mail.get_body(preferencelist=("html",)).get_content(),
    ):
        flat = re.sub(r"<[^>]+>", "", body)
        assert f"Kính gửi: Lãnh đạo {AGENCY}." in flat
        assert f"Đồng gửi: {CLERK[1]} (người theo dõi văn bản)." in flat
    assert list(mail.iter_attachments()) == []


@pytest.mark.nodb
def test_a_long_vietnamese_file_name_comes_in_rfc_2231_pieces():
    name = "Phụ lục hướng dẫn triển khai ứng dụng PC-Covid tại các tỉnh, thành phố.docx"
    value = content_disposition(name).encode(linesep="\r\n", maxlinelen=78)
    lines = f"Content-Disposition: {value}".split("\r\n")
    assert all(len(line) <= 78 for line in lines)
    assert lines[1].startswith(" filename*0*=utf-8''") and lines[2].startswith(" filename*1*=")
    assert lines[-1].startswith(' filename="Phu luc huong dan') and lines[-1].endswith('.docx"')
    raw = (
        "Content-Type: application/octet-stream\r\nContent-Disposition: " + value + "\r\n\r\nx\r\n"
    ).encode()
    part = BytesParser(policy=policy.strict).parsebytes(raw)
    assert part.get_filename() == name


@pytest.mark.nodb
def test_display_names_split_where_both_kinds_of_reader_agree():
    for name in [r["name"] for r in directory_rows()] + [AGENCY, f"Lãnh đạo {AGENCY}"]:
        tokens = phrase_tokens(name)
        assert all(len(t) <= 75 for t in tokens)
        assert rfc2047(" ".join(tokens)) == name


@pytest.mark.nodb
def test_a_message_id_too_long_for_its_line_goes_on_the_next(app):
    long_domain = "cuc-thh.mic.gov.example"
    with app.app_context():
        for domain in ("thh.example", long_domain):
            app.config["MAIL_DEFAULT_SENDER"] = f"van-thu@{domain}"
            ident = message_id("d123456.r123456.escalation.99")
            message = OfficialMessage(
                subject="Thử", sender=f"van-thu@{domain}", recipients=["a@tinh.example"],
                body="x", html="<p>x</p>",
            )  # fmt: skip
            message.msgId = ident
            raw = message.as_bytes()
            head = raw.split(b"\r\n\r\n", 1)[0]
            assert max(len(line) for line in head.split(b"\r\n")) <= 78, head
            mail = BytesParser(policy=policy.strict).parsebytes(raw)
            assert mail["Message-ID"].strip() == ident
            folded = b"Message-ID: \r\n <" in head
            assert folded == (domain == long_domain)


@pytest.mark.slow
def test_every_kind_of_email_has_an_html_body_the_checker_accepts(
    smtp_app, smtp_server, outbox_dispatch, tmp_path
):
    """The Nu Html Checker on the HTML body of each kind the service writes: the letter, the
    reminder and the escalation (a follow-up letter is a letter)."""
    smtp_app.config["DISPATCH_LEADERSHIP_EMAIL"] = LEADERSHIP
    outbox_dispatch(3)
    assert deliver_due(ISSUED_AT + dt.timedelta(minutes=1)).sent == 3
    assert send_due_reminders(dt.datetime(2021, 11, 16, 9, tzinfo=VN)).reminders_queued == 3
    assert deliver_due(dt.datetime(2021, 11, 16, 9, 1, tzinfo=VN)).sent == 3
    assert send_due_reminders(dt.datetime(2021, 11, 19, 9, tzinfo=VN)).escalations_queued == 1
    assert deliver_due(dt.datetime(2021, 11, 19, 9, 1, tzinfo=VN)).sent == 1

    bodies = {}
    for received in smtp_server.messages:
        mail = BytesParser(policy=policy.default).parsebytes(received.raw)
        html = mail.get_body(preferencelist=("html",))
        assert html is not None, mail["X-Dispatch-Kind"]
        bodies.setdefault(mail["X-Dispatch-Kind"], html.get_content())
    assert set(bodies) == {"letter", "reminder", "escalation"}
    files = []
    for kind, html in bodies.items():
        path = tmp_path / f"email-{kind}.html"
        path.write_text(html, encoding="utf-8")
        files.append(path)
    assert vnu_errors(files) == []
