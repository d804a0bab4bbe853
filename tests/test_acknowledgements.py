"""Confirmation of receipt: the recipients' personal pages, downloads and the domain functions."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import secrets
import threading
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from sqlalchemy import create_engine, event, func, select, text

from dispatch import audit, create_app
from dispatch.extensions import db
from dispatch.mail import links
from dispatch.models import (
    AcknowledgementMethod,
    AuditEntry,
    Dispatch,
    DispatchRecipient,
    Document,
    RecipientEvent,
)
from dispatch.receipts import acknowledgements
from dispatch.views.downloads import content_disposition
from dispatch.views.provinces import NotFoundThrottle, form_link_ids, form_token
from tests.fixtures.acknowledgements import (
    ISSUED_AT,
    confirm,
    csrf_token_from,
    draft_with_links,
    issue_to_three,
    open_page,
)

on_postgres = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgres"),
    reason="needs PostgreSQL (TEST_DATABASE_URL)",
)

SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _recipient(recipient_id: int) -> DispatchRecipient:
    db.session.expire_all()
    return db.session.get(DispatchRecipient, recipient_id)


def _audit(action: str) -> list[AuditEntry]:
    return list(
        db.session.execute(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        ).scalars()
    )


def _events(recipient_id: int, kind: str) -> list[RecipientEvent]:
    return list(
        db.session.execute(
            select(RecipientEvent)
            .where(RecipientEvent.recipient_id == recipient_id, RecipientEvent.kind == kind)
            .order_by(RecipientEvent.id)
        ).scalars()
    )


def _assert_secure(response) -> None:
    for header, value in SECURITY_HEADERS.items():
        assert response.headers[header] == value, header
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def _forged_token() -> str:
    token = secrets.token_urlsafe(32)
    assert links.is_well_formed(token)
    return token


@pytest.fixture()
def make_app(app, migrated_database):
    """Another app on the test database with some settings changed (disposed afterwards)."""
    made = []

    def build(**overrides):
        config = {
            key: app.config[key]
            for key in (
                "TESTING",
                "SQLALCHEMY_DATABASE_URI",
                "DISPATCH_DATA_DIR",
                "SECRET_KEY",
                "DISPATCH_AUDIT_KEY",
                "WTF_CSRF_ENABLED",
            )
        }
        other = create_app({**config, **overrides})
        made.append(other)
        return other

    yield build
    for other in made:
        with other.app_context():
            db.engine.dispose()


# --- The page ---------------------------------------------------------------------------------


def test_page_shows_the_letter_in_vietnamese_and_records_the_open(issued, client):
    before = dt.datetime.now(dt.UTC)
    response = client.get(f"/r/{issued.tokens[0]}", headers={"User-Agent": "Trình duyệt thử"})
    after = dt.datetime.now(dt.UTC)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    _assert_secure(response)
    html = response.get_data(as_text=True)
    assert unicodedata.is_normalized("NFC", html)
    assert '<html lang="vi">' in html
    assert "Công văn điện tử — Hệ thống gửi và theo dõi công văn" in html
    assert 'Công văn số <span class="nowrap">01/THH-VP</span>' in html
    assert "15/11/2021" in html
    assert "V/v triển khai ứng dụng PC-Covid trên phạm vi toàn quốc" in html
    assert "Cục Tin học hoá" in html
    assert "Kính gửi" in html and "Sở Thông tin và Truyền thông thành phố Hà Nội" in html
    assert "18/11/2021 17:00 (giờ Việt Nam)" in html
    for name, document_id in issued.documents.items():
        assert f'href="/r/{issued.tokens[0]}/files/{document_id}"' in html
        assert name in html
    # The form, usable without JavaScript: labels tied to inputs, CSRF token, no scripts.
    required = ' <span class="required-mark">(bắt buộc)</span>'
    assert f'<label for="name">Họ và tên người xác nhận{required}</label>' in html
    assert f'<label for="position">Chức vụ{required}</label>' in html
    assert '<label for="note">Ghi chú' in html
    assert csrf_token_from(html)
    assert "<script" not in html

    recipient = _recipient(issued.recipient_ids[0])
    assert recipient.opened_at is not None and before <= recipient.opened_at <= after
    assert recipient.acknowledged_at is None
    [event] = _events(recipient.id, "opened")
    assert (event.ip, event.user_agent) == ("127.0.0.1", "Trình duyệt thử")
    [opened] = _audit("recipient.opened")
    assert opened.object_id == str(recipient.id) and opened.dispatch_id == issued.dispatch_id

    # Opening again does not move the first-opened time nor audit a second first opening.
    first_opened = recipient.opened_at
    assert client.get(f"/r/{issued.tokens[0]}").status_code == 200
    assert _recipient(recipient.id).opened_at == first_opened
    assert len(_audit("recipient.opened")) == 1
    assert _audit("recipient.acknowledged") == []


def test_bac_lieu_is_addressed_by_its_combined_department(issued, client):
    html = client.get(f"/r/{issued.tokens[1]}").get_data(as_text=True)
    assert "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu" in html
    assert "Sở Thông tin và Truyền thông" not in html


def test_opened_events_are_throttled_to_one_a_minute_per_browser(issued):
    recipient = _recipient(issued.recipient_ids[0])
    t0 = ISSUED_AT + dt.timedelta(hours=1)

    def opened(at, ua="Firefox", ip="10.1.1.1"):
        return acknowledgements.record_opened(recipient, ip=ip, user_agent=ua, at=at)

    assert opened(t0) is True
    assert opened(t0 + dt.timedelta(seconds=30)) is False
    assert opened(t0 + dt.timedelta(seconds=30), ua="Chrome") is True
    assert opened(t0 + dt.timedelta(seconds=40), ip="10.1.1.2") is True
    assert opened(t0 + dt.timedelta(seconds=61)) is True
    db.session.commit()

    assert len(_events(recipient.id, "opened")) == 4
    assert _recipient(recipient.id).opened_at == t0
    assert len(_audit("recipient.opened")) == 1


# --- Reads that do not depend on their bookkeeping -------------------------------------------


@contextmanager
def refused_event_inserts():
    """The database refuses every new recipient event, as a full disk would, until the block
    ends: a real trigger (PostgreSQL or SQLite), not a patched function."""
    with db.engine.begin() as conn:
        if db.engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'could not extend file: No space left on device' "
                    "USING ERRCODE = 'disk_full'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_event BEFORE INSERT ON recipient_event "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_event()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_event BEFORE INSERT ON recipient_event "
                    "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
                )
            )
    try:
        yield
    finally:
        db.session.rollback()
        with db.engine.begin() as conn:
            if db.engine.dialect.name == "postgresql":
                conn.execute(text("DROP TRIGGER refuse_event ON recipient_event"))
                conn.execute(text("DROP FUNCTION refuse_event()"))
            else:
                conn.execute(text("DROP TRIGGER refuse_event"))


def test_the_page_and_the_file_are_served_when_their_bookkeeping_fails(
    issued, client, fixed_now, caplog
):
    token, recipient_id = issued.tokens[0], issued.recipient_ids[0]
    pdf = issued.documents[issued.pdf_name]
    opened_at = ISSUED_AT + dt.timedelta(hours=1)
    downloaded_at = opened_at + dt.timedelta(minutes=5)

    with refused_event_inserts():
        fixed_now(opened_at)
        page = client.get(f"/r/{token}", headers={"User-Agent": "Firefox"})
        fixed_now(downloaded_at)
        download = client.get(f"/r/{token}/files/{pdf}", headers={"User-Agent": "Firefox"})

        assert page.status_code == 200
        assert "Sở Thông tin và Truyền thông thành phố Hà Nội" in page.get_data(as_text=True)
        _assert_secure(page)
        assert download.status_code == 200
        assert download.data == issued.files[issued.pdf_name]
        # Nothing was written, and the failures are in the log.
        assert _recipient(recipient_id).opened_at is None
        assert _events(recipient_id, "opened") == [] == _events(recipient_id, "downloaded")
        assert "kept to record later" in caplog.text

    # The next link request that can write records what was missed, at the moments it happened.
    fixed_now(downloaded_at + dt.timedelta(hours=2))
    assert client.get(f"/r/{issued.tokens[1]}").status_code == 200

    recipient = _recipient(recipient_id)
    assert recipient.opened_at == opened_at
    [opened] = _events(recipient_id, "opened")
    assert (opened.at, opened.user_agent) == (opened_at, "Firefox")
    [downloaded] = _events(recipient_id, "downloaded")
    assert (downloaded.at, downloaded.detail) == (downloaded_at, issued.pdf_name)
    first_open = _audit("recipient.opened")[0]
    assert (first_open.object_id, first_open.at) == (str(recipient_id), opened_at)
    assert first_open.details == {"via": "page"}
    [audited_download] = _audit("recipient.downloaded")
    assert audited_download.at == downloaded_at
    assert len(_events(issued.recipient_ids[1], "opened")) == 1
    assert audit.verify_chain() == []
    # Recorded once: a later request does not record them again.
    assert client.get(f"/r/{issued.tokens[2]}").status_code == 200
    assert len(_events(recipient_id, "opened")) == 1
    assert len(_events(recipient_id, "downloaded")) == 1


def test_a_confirmation_records_what_was_missed_before_it(issued, client, fixed_now):
    opened_at = ISSUED_AT + dt.timedelta(hours=1)
    with refused_event_inserts():
        fixed_now(opened_at)
        assert open_page(client, issued.tokens[0]).status_code == 200
    fixed_now(opened_at + dt.timedelta(minutes=3))
    assert confirm(client, issued.tokens[1], "Nguyễn Văn An", "Chánh Văn phòng").status_code == 303

    assert _recipient(issued.recipient_ids[0]).opened_at == opened_at
    assert [event.at for event in _events(issued.recipient_ids[0], "opened")] == [opened_at]


def _statements_of(client, url: str, user_agent: str) -> list[str]:
    db.session.expunge_all()
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        response = client.get(url, headers={"User-Agent": user_agent})
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert response.status_code == 200
    return statements


def test_a_link_page_reads_what_it_shows_before_it_writes(issued, client):
    token = issued.tokens[0]
    pdf = issued.documents[issued.pdf_name]
    client.get(f"/r/{token}")  # the first opening, audited

    # Opened again (another browser): find the link and its letter, list the files, check for a
    # recent identical opening, look for a recall or replacement, add the event. No reload of
    # what was read before the commit.
    page = _statements_of(client, f"/r/{token}", "Chrome")
    assert len(page) <= 5, page
    assert sum(s.lstrip().upper().startswith("SELECT") for s in page) <= 4, page
    # A download: the link, the file, the event and its audit entry: its lane's end, locked and
    # read at once, then the entry (inserted with the end moved in one statement on PostgreSQL,
    # two on SQLite).
    download = _statements_of(client, f"/r/{token}/files/{pdf}", "Chrome")
    assert len(download) <= (5 if db.engine.dialect.name == "postgresql" else 6), download


# --- Downloads --------------------------------------------------------------------------------


def _disposition_filename(header: str) -> tuple[str, str]:
    fallback = re.search(r'filename="([^"]*)"', header).group(1)
    exact = re.search(r"filename\*=UTF-8''(\S+)", header).group(1)
    return fallback, unquote(exact, encoding="utf-8", errors="strict")


def test_download_returns_the_archived_bytes_and_records_it(issued, client):
    token = issued.tokens[2]
    media_types = {
        ".pdf": "application/pdf",
        ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    }
    for name, document_id in issued.documents.items():
        response = client.get(f"/r/{token}/files/{document_id}", headers={"User-Agent": "UA"})
        assert response.status_code == 200, name
        assert response.data == issued.files[name]
        assert response.mimetype == media_types[Path(name).suffix]
        _assert_secure(response)
        disposition = response.headers["Content-Disposition"]
        assert disposition.startswith("attachment;")
        fallback, exact = _disposition_filename(disposition)
        assert exact == name
        assert fallback.isascii()

    # The attachment's Vietnamese name keeps its letters in the ASCII fallback ("đ" too).
    attachment = issued.documents["Hướng dẫn cài đặt PC-Covid.pdf"]
    response = client.get(f"/r/{token}/files/{attachment}")
    assert _disposition_filename(response.headers["Content-Disposition"])[0] == (
        "Huong dan cai dat PC-Covid.pdf"
    )

    # By file name as well as by id.
    response = client.get(f"/r/{token}/files/{quote('Hướng dẫn cài đặt PC-Covid.pdf')}")
    assert response.status_code == 200
    assert response.data == issued.files["Hướng dẫn cài đặt PC-Covid.pdf"]

    recipient = _recipient(issued.recipient_ids[2])
    # A download without opening the page first still counts as opened.
    assert recipient.opened_at is not None
    [opened] = _audit("recipient.opened")
    assert opened.details == {"via": "download"}
    events = _events(recipient.id, "downloaded")
    assert len(events) == 5
    assert events[0].detail == next(iter(issued.documents))
    assert events[0].ip == "127.0.0.1" and events[0].user_agent == "UA"
    downloaded = _audit("recipient.downloaded")
    assert len(downloaded) == 5
    assert {entry.details["document_id"] for entry in downloaded} == set(issued.documents.values())
    assert _recipient(recipient.id).acknowledged_at is None
    assert audit.verify_chain() == []


def test_a_token_opens_only_its_own_dispatchs_files(issued, letter_folder, client):
    other = issue_to_three(letter_folder, label=" (số 2)")
    token = issued.tokens[0]
    not_found = client.get(f"/r/{_forged_token()}").get_data(as_text=True)
    for ref in [
        *(str(document_id) for document_id in other.documents.values()),
        quote(next(iter(other.documents))),
        "999999",
        "..%2F..%2Fetc%2Fpasswd",
    ]:
        response = client.get(f"/r/{token}/files/{ref}")
        assert response.status_code == 404, ref
        assert response.get_data(as_text=True) == not_found
    # The other dispatch's own recipients do get them.
    other_pdf = other.documents[other.pdf_name]
    assert client.get(f"/r/{other.tokens[0]}/files/{other_pdf}").data == other.files[other.pdf_name]
    assert _events(issued.recipient_ids[0], "downloaded") == []


def test_a_changed_archive_file_is_not_served(issued, db_app, client):
    pdf = db.session.get(Document, issued.documents[issued.pdf_name])
    path = Path(db_app.config["DISPATCH_DATA_DIR"]) / pdf.path
    path.write_bytes(path.read_bytes() + b"% changed\n")

    response = client.get(f"/r/{issued.tokens[0]}/files/{pdf.id}")
    assert response.status_code == 500
    assert "Tạm thời không tải được tệp" in response.get_data(as_text=True)
    assert _events(issued.recipient_ids[0], "downloaded") == []
    assert _audit("recipient.downloaded") == []


# --- Confirming -------------------------------------------------------------------------------


def test_post_without_csrf_token_is_refused(issued, client):
    token = issued.tokens[0]
    client.get(f"/r/{token}")
    data = {"name": "Nguyễn Văn A", "position": "Chánh Văn phòng"}
    for form in (data, {**data, "csrf_token": "bịa-ra"}):
        response = client.post(f"/r/{token}", data=form)
        assert response.status_code == 400
        assert "Biểu mẫu đã hết hạn hoặc không hợp lệ" in response.get_data(as_text=True)
        _assert_secure(response)
    assert _recipient(issued.recipient_ids[0]).acknowledged_at is None
    assert _audit("recipient.acknowledged") == []


def test_the_form_token_is_bound_to_its_link_its_ids_and_a_time_window(issued, client, app):
    token, other = issued.tokens[0], issued.tokens[1]
    ids = (issued.recipient_ids[0], issued.dispatch_id)
    now = dt.datetime.now(dt.UTC).timestamp()
    with app.app_context():
        genuine = form_token(token, *ids, now)
        assert form_link_ids(token, genuine, now) == ids
        assert form_link_ids(token, genuine, now + 3599) == ids
        assert form_link_ids(token, genuine, now + 3602) is None  # expired (an hour)
        assert form_link_ids(other, genuine, now) is None  # another link's
        assert form_link_ids(token, form_token(other, *ids, now), now) is None
        recipient_id, dispatch_id, expires, mac = genuine.split(".")
        for changed in (
            f"{issued.recipient_ids[1]}.{dispatch_id}.{expires}.{mac}",  # other ids, same MAC
            f"{recipient_id}.{dispatch_id}.{int(expires) + 7200}.{mac}",  # a later expiry
            f"{recipient_id}.{dispatch_id}.{expires}.{mac[:-1]}{'B' if mac[-1] == 'A' else 'A'}",
            f"{recipient_id}.{dispatch_id}.{expires}",
            "",
        ):
            assert form_link_ids(token, changed, now) is None, changed
        app.config["SECRET_KEY"] = "another-secret-key"
        assert form_link_ids(token, genuine, now) is None  # made with another key

    # Through the page: an expired token or another link's is refused, and nothing is recorded.
    with app.app_context():
        app.config["SECRET_KEY"] = "test-secret"
        expired = form_token(token, *ids, now - 3601)
    page = open_page(client, other)
    for csrf in (expired, csrf_token_from(page.get_data(as_text=True))):
        data = {"csrf_token": csrf, "name": "Nguyễn Văn A", "position": "Văn thư"}
        response = client.post(f"/r/{token}", data=data)
        assert response.status_code == 400
        html = response.get_data(as_text=True)
        assert "Biểu mẫu đã hết hạn hoặc không hợp lệ" in html
        assert "cookie" not in html  # the form needs none
        _assert_secure(response)
    assert _recipient(issued.recipient_ids[0]).acknowledged_at is None
    assert _audit("recipient.acknowledged") == []


def test_the_page_and_the_confirmation_set_no_cookie(issued, client):
    page = open_page(client, issued.tokens[0])
    assert page.status_code == 200
    assert "Set-Cookie" not in page.headers
    assert client.get_cookie("session") is None
    confirmed = confirm(client, issued.tokens[0], "Nguyễn Văn An", "Chánh Văn phòng", page=page)
    assert confirmed.status_code == 303
    assert "Set-Cookie" not in confirmed.headers
    assert _recipient(issued.recipient_ids[0]).acknowledged_by == "Nguyễn Văn An"


def test_confirming_over_https_needs_no_referer(issued, client):
    # The page tells browsers to send no Referer (the token is in the URL): over HTTPS the
    # form's post comes without one, and must still be recorded.
    token = issued.tokens[0]
    page = open_page(client, token, base_url="https://congvan.example.gov.vn")
    assert page.status_code == 200
    confirmed = client.post(
        f"/r/{token}",
        base_url="https://congvan.example.gov.vn",
        data={
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
            "name": "Nguyễn Văn An",
            "position": "Chánh Văn phòng",
        },
    )
    assert confirmed.status_code == 303
    assert _recipient(issued.recipient_ids[0]).acknowledged_by == "Nguyễn Văn An"


def test_invalid_form_shows_errors_and_keeps_what_was_typed(issued, client):
    token = issued.tokens[0]
    long_name = "Nguyễn Thị Hồng Nhung " * 5  # 110 characters
    note = "Đã nhận đủ.\nCảm ơn."
    response = confirm(client, token, long_name, "   ", note)

    # Post/Redirect/Get on errors too: the form comes back on the GET, once.
    assert response.status_code == 303
    assert response.headers["Location"] == f"/r/{token}#xac-nhan"
    html = client.get(f"/r/{token}").get_data(as_text=True)
    assert "Chưa thể ghi nhận, vui lòng kiểm tra lại" in html
    assert "Họ và tên dài tối đa 100 ký tự (đã nhập 109)." in html
    assert "Vui lòng nhập chức vụ của người xác nhận." in html
    assert f'value="{long_name.strip()}"' in html
    assert 'aria-invalid="true"' in html
    assert "Đã nhận đủ.\nCảm ơn.</textarea>" in html
    assert _recipient(issued.recipient_ids[0]).acknowledged_at is None
    assert _audit("recipient.acknowledged") == []

    assert "Chưa thể ghi nhận" not in client.get(f"/r/{token}").get_data(as_text=True)
    confirm(client, token, "", "Chánh Văn phòng", "x" * 1001)
    html = client.get(f"/r/{token}").get_data(as_text=True)
    assert "Vui lòng nhập họ và tên người xác nhận." in html
    assert "Ghi chú dài tối đa 1000 ký tự (đã nhập 1001)." in html
    assert 'value="Chánh Văn phòng"' in html
    assert _recipient(issued.recipient_ids[0]).acknowledged_at is None


def test_confirming_records_once_and_shows_the_receipt(issued, client):
    token = issued.tokens[0]
    before = dt.datetime.now(dt.UTC)
    response = confirm(
        client, token, "Nguyễn Văn An", "Chánh Văn phòng", "Đã nhận bản PDF và DOCX."
    )
    after = dt.datetime.now(dt.UTC)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/r/{token}"
    _assert_secure(response)

    recipient = _recipient(issued.recipient_ids[0])
    assert before <= recipient.acknowledged_at <= after
    assert recipient.acknowledged_by == "Nguyễn Văn An"
    assert recipient.acknowledged_position == "Chánh Văn phòng"
    assert recipient.acknowledgement_note == "Đã nhận bản PDF và DOCX."
    assert recipient.acknowledged_ip == "127.0.0.1"
    assert recipient.acknowledged_user_agent
    assert recipient.acknowledged_method == AcknowledgementMethod.LINK
    [entry] = _audit("recipient.acknowledged")
    assert entry.actor == f"recipient:{recipient.id}"
    assert entry.details["name"] == "Nguyễn Văn An"
    assert entry.details["method"] == "link"
    assert entry.at == recipient.acknowledged_at

    receipt = client.get(f"/r/{token}")
    html = receipt.get_data(as_text=True)
    pdf_sha256 = hashlib.sha256(issued.files[issued.pdf_name]).hexdigest()
    assert "Biên nhận xác nhận đã nhận công văn" in html
    from dispatch.clock import format_local

    assert f"{format_local(recipient.acknowledged_at)} (giờ Việt Nam)" in html
    assert "Nguyễn Văn An" in html and "Chánh Văn phòng" in html
    assert pdf_sha256 in html
    assert 'name="name"' not in html  # no form any more
    assert "đã xác nhận lúc" not in html  # the "already confirmed" notice is for a re-post

    # Another office is untouched.
    assert _recipient(issued.recipient_ids[1]).acknowledged_at is None
    assert audit.verify_chain() == []


def test_confirming_again_changes_nothing_and_says_when(issued, db_app, client):
    token = issued.tokens[0]
    # Another browser of the same office has the form open (a stale tab).
    stale = db_app.test_client()
    stale_csrf = csrf_token_from(open_page(stale, token).get_data(as_text=True))
    page = open_page(client, token)
    form = {
        "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        "name": "Nguyễn Văn An",
        "position": "Chánh Văn phòng",
    }
    assert client.post(f"/r/{token}", data=form).status_code == 303
    first = _recipient(issued.recipient_ids[0])
    first_state = (first.acknowledged_at, first.acknowledged_by, first.acknowledged_position)
    from dispatch.clock import format_local

    notice = (
        f"Đơn vị đã xác nhận lúc {format_local(first.acknowledged_at)} "
        "(người xác nhận: Nguyễn Văn An, Chánh Văn phòng)"
    )
    for browser, csrf, name in (
        (client, form["csrf_token"], "Nguyễn Văn An"),
        (stale, stale_csrf, "Trần Văn Bình"),
    ):
        # The same form posted again (back button, double click), then the stale tab's form.
        response = browser.post(
            f"/r/{token}", data={"csrf_token": csrf, "name": name, "position": "Văn thư"}
        )
        assert response.status_code == 200
        assert notice in response.get_data(as_text=True)
        _assert_secure(response)

    again = _recipient(issued.recipient_ids[0])
    assert (again.acknowledged_at, again.acknowledged_by, again.acknowledged_position) == (
        first_state
    )
    assert len(_audit("recipient.acknowledged")) == 1


def test_typed_values_are_stored_in_nfc_on_one_line(issued, client):
    name = unicodedata.normalize("NFD", "Lê Thị\r\nHoà")
    position = unicodedata.normalize("NFD", "Phó Giám đốc\n")
    note = unicodedata.normalize("NFD", "Dòng một\r\nDòng hai\x07")
    assert confirm(client, issued.tokens[0], name, position, note).status_code == 303
    recipient = _recipient(issued.recipient_ids[0])
    assert recipient.acknowledged_by == "Lê Thị Hoà"
    assert unicodedata.is_normalized("NFC", recipient.acknowledged_by)
    assert recipient.acknowledged_position == "Phó Giám đốc"
    assert recipient.acknowledgement_note == "Dòng một\nDòng hai"


def test_a_recipient_whose_reminders_are_stopped_can_still_confirm(issued, client):
    recipient = _recipient(issued.recipient_ids[1])
    recipient.reminders_stopped = True
    db.session.commit()
    assert confirm(client, issued.tokens[1], "Phạm Văn Cường", "Văn thư").status_code == 303
    assert _recipient(issued.recipient_ids[1]).acknowledged_by == "Phạm Văn Cường"


def test_acknowledge_validates_and_is_idempotent(issued):
    recipient = _recipient(issued.recipient_ids[0])
    at = ISSUED_AT + dt.timedelta(hours=2)
    with pytest.raises(acknowledgements.AcknowledgementError) as error:
        acknowledgements.acknowledge(recipient, " ", "x" * 101, None, None, None, at)
    assert set(error.value.errors) == {"name", "position"}
    assert recipient.acknowledged_at is None

    first = acknowledgements.acknowledge(
        recipient,
        "Đỗ Minh Châu",
        "Chuyên viên",
        "Xác nhận qua điện thoại",
        None,
        None,
        at,
        method=AcknowledgementMethod.PHONE,
        actor="van-thu@thh.example",
    )
    second = acknowledgements.acknowledge(
        recipient, "Người khác", "Văn thư", None, "10.0.0.9", "UA", at + dt.timedelta(hours=1)
    )
    db.session.commit()
    assert first.recorded and not second.recorded
    assert second.acknowledged_at == first.acknowledged_at == at
    assert second.acknowledged_by == "Đỗ Minh Châu"
    assert second.method == AcknowledgementMethod.PHONE
    [entry] = _audit("recipient.acknowledged")
    assert entry.actor == "van-thu@thh.example"


# --- Links that do not work -------------------------------------------------------------------


def test_forged_and_malformed_tokens_get_the_same_404(issued, client):
    bodies = set()
    for path in (
        f"/r/{_forged_token()}",
        "/r/abc",
        f"/r/{issued.tokens[0][:-1]}!",
        f"/r/{issued.tokens[0]}x",
        f"/r/{_forged_token()}/files/1",
        "/r/",
        "/r/a/b/c",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        _assert_secure(response)
        bodies.add(response.get_data(as_text=True))
    [body] = bodies
    assert "Không tìm thấy trang" in body
    assert "Đường liên kết không đúng hoặc không còn hiệu lực" in body
    assert db.session.execute(select(func.count()).select_from(RecipientEvent)).scalar() == 0


def test_a_draft_never_has_a_working_link(seeded_directory, db_app, letter_folder, client):
    draft = draft_with_links(db_app, letter_folder)
    not_found = client.get(f"/r/{_forged_token()}").get_data(as_text=True)
    response = client.get(f"/r/{draft.tokens[0]}")
    assert response.status_code == 404
    assert response.get_data(as_text=True) == not_found
    document_id = next(iter(draft.documents.values()))
    assert client.get(f"/r/{draft.tokens[0]}/files/{document_id}").status_code == 404
    assert _recipient(draft.recipient_ids[0]).opened_at is None


def test_repeated_404s_from_one_address_get_429(issued, make_app):
    app = make_app(DISPATCH_LINK_404_LIMIT=5, DISPATCH_LINK_404_WINDOW=600)
    guesser = app.test_client()
    guesser.environ_base["REMOTE_ADDR"] = "203.0.113.7"
    for _ in range(5):
        assert guesser.get(f"/r/{_forged_token()}").status_code == 404
    response = guesser.get(f"/r/{_forged_token()}")
    assert response.status_code == 429
    assert "Quá nhiều yêu cầu" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    _assert_secure(response)
    # Every unknown link from the blocked address is refused: tokens, files, other addresses.
    assert guesser.get(f"/r/{_forged_token()}/files/1").status_code == 429
    assert guesser.get(f"/r/{issued.tokens[0]}/files/khong-co.pdf").status_code == 429
    assert guesser.get("/r/a/b").status_code == 429
    office = app.test_client()
    office.environ_base["REMOTE_ADDR"] = "198.51.100.20"
    assert office.get(f"/r/{issued.tokens[0]}").status_code == 200


def test_valid_links_keep_working_from_an_address_blocked_for_unknown_ones(issued, make_app):
    # Offices behind one NAT share an address: one mistyped bookmark must not lock them all out.
    app = make_app(DISPATCH_LINK_404_LIMIT=3, DISPATCH_LINK_404_WINDOW=600)
    shared = app.test_client()
    shared.environ_base["REMOTE_ADDR"] = "203.0.113.8"
    for _ in range(3):
        assert shared.get(f"/r/{_forged_token()}").status_code == 404
    assert shared.get(f"/r/{_forged_token()}").status_code == 429

    token = issued.tokens[0]
    page = open_page(shared, token)
    assert page.status_code == 200
    document_id = issued.documents[issued.pdf_name]
    download = shared.get(f"/r/{token}/files/{document_id}")
    assert download.status_code == 200
    assert download.data == issued.files[issued.pdf_name]
    confirmed = confirm(shared, token, "Nguyễn Văn An", "Chánh Văn phòng", page=page)
    assert confirmed.status_code == 303
    assert _recipient(issued.recipient_ids[0]).acknowledged_by == "Nguyễn Văn An"
    # Still blocked for guesses, and a valid link counts no miss and lifts nothing.
    assert shared.get(f"/r/{_forged_token()}").status_code == 429


@pytest.mark.nodb
def test_the_throttle_window_slides_and_forgets_old_addresses():
    throttle = NotFoundThrottle(limit=3, window=60, max_clients=2)
    for t in (0, 10, 20):
        assert throttle.retry_after("a", t) is None
        throttle.miss("a", t)
    assert throttle.retry_after("a", 30) == 31  # until the miss at 0 leaves the window
    assert throttle.retry_after("a", 61) is None
    throttle.miss("a", 61)
    assert throttle.retry_after("a", 62) is not None
    throttle.miss("b", 62)
    throttle.miss("c", 62)  # a third address: the least recently seen ("a") is forgotten
    assert throttle.retry_after("a", 63) is None


@pytest.mark.nodb
def test_content_disposition_has_an_ascii_fallback_and_the_exact_name():
    header = content_disposition('Đề nghị "khẩn"/bản 2.pdf')
    fallback, exact = _disposition_filename(header)
    assert fallback == "De nghi khan_ban 2.pdf"
    assert exact == 'Đề nghị "khẩn"_bản 2.pdf'
    assert unicodedata.is_normalized("NFC", exact)


# --- Client address behind a proxy ------------------------------------------------------------


def test_forwarded_address_is_ignored_unless_a_proxy_is_trusted(issued, client, make_app):
    forwarded = {"X-Forwarded-For": "192.0.2.55"}
    client.get(f"/r/{issued.tokens[0]}", headers=forwarded)
    [event] = _events(issued.recipient_ids[0], "opened")
    assert event.ip == "127.0.0.1"

    proxied = make_app(DISPATCH_TRUSTED_PROXIES=1).test_client()
    page = proxied.get(f"/r/{issued.tokens[2]}", headers=forwarded)
    assert page.status_code == 200
    [event] = _events(issued.recipient_ids[2], "opened")
    assert event.ip == "192.0.2.55"


# --- The site's shared parts ------------------------------------------------------------------


def test_the_stylesheet_is_served_by_the_app(db_app, client):
    with client.get("/static/css/site.css") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/css"
        assert b"@media" in response.data


# --- Concurrency (PostgreSQL) -----------------------------------------------------------------


@on_postgres
@pytest.mark.postgres
def test_two_confirmations_at_once_record_exactly_one(issued, db_app):
    token = issued.tokens[0]
    names = ["Nguyễn Văn An", "Trần Thị Bình", "Lê Văn Cường", "Phạm Thị Dung"]
    barrier = threading.Barrier(len(names))
    statuses: dict[str, int] = {}
    errors: list[BaseException] = []

    def confirm_as(name: str) -> None:
        try:
            browser = db_app.test_client()
            page = browser.get(f"/r/{token}").get_data(as_text=True)
            form = {"csrf_token": csrf_token_from(page), "name": name, "position": "Văn thư"}
            barrier.wait(timeout=60)
            statuses[name] = browser.post(f"/r/{token}", data=form).status_code
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=confirm_as, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(statuses.values()) == [200, 200, 200, 303]
    [winner] = [name for name, status in statuses.items() if status == 303]
    assert _recipient(issued.recipient_ids[0]).acknowledged_by == winner
    [entry] = _audit("recipient.acknowledged")
    assert entry.details["name"] == winner
    assert audit.verify_chain() == []


@on_postgres
@pytest.mark.postgres
def test_a_confirmation_waiting_on_another_records_nothing(issued, db_app, migrated_database):
    recipient_id = issued.recipient_ids[0]
    at = ISSUED_AT + dt.timedelta(hours=3)
    # This transaction confirms first and keeps the row locked until it commits.
    first = acknowledgements.acknowledge(
        _recipient(recipient_id), "Nguyễn Văn An", "Chánh Văn phòng", None, None, None, at
    )
    assert first.recorded
    results = []

    def second() -> None:
        with db_app.app_context():
            recipient = db.session.get(DispatchRecipient, recipient_id)
            results.append(
                acknowledgements.acknowledge(
                    recipient, "Trần Thị Bình", "Văn thư", None, None, None, at
                )
            )
            db.session.commit()

    thread = threading.Thread(target=second)
    thread.start()
    # Wait until the second transaction is blocked on the row lock, then let the first finish.
    watcher = create_engine(migrated_database)
    with watcher.connect() as conn:
        for _ in range(600):
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar()
            conn.rollback()  # pg_stat_activity is a snapshot taken once per transaction
            if waiting:
                break
            thread.join(timeout=0.1)
        assert waiting, "the second confirmation never waited for the first"
    watcher.dispose()
    db.session.commit()
    thread.join(timeout=60)

    [result] = results
    assert not result.recorded
    assert (result.acknowledged_by, result.acknowledged_at) == ("Nguyễn Văn An", at)
    assert len(_audit("recipient.acknowledged")) == 1


# --- Through the real issuing -----------------------------------------------------------------


def test_an_issued_letter_is_confirmed_through_its_link(seeded, client):
    from dispatch.clock import parse_moment
    from tests.fixtures.dispatches import issue_letter
    from tests.letter_samples import SEED_FOLDER

    draft = issue_letter(SEED_FOLDER, actor=seeded.clerk, at=parse_moment("2021-11-15T08:30:00"))
    bac_lieu = db.session.execute(
        select(DispatchRecipient).where(
            DispatchRecipient.dispatch_id == draft.id, DispatchRecipient.province_code == "95"
        )
    ).scalar_one()
    link = links.confirmation_url(bac_lieu)
    token = link.rsplit("/", 1)[1]

    html = open_page(client, token).get_data(as_text=True)
    assert 'Công văn số <span class="nowrap">01/THH-VP</span>' in html
    assert "15/11/2021" in html and "Cục Tin học hoá" in html
    assert "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu" in html
    assert "18/11/2021 17:00 (giờ Việt Nam)" in html  # three working days, at 17:00

    pdf = next(d for d in db.session.get(Dispatch, draft.id).documents if d.kind == "pdf")
    docx = next(d for d in db.session.get(Dispatch, draft.id).documents if d.kind == "docx")
    for document in (pdf, docx):
        response = client.get(f"/r/{token}/files/{document.id}")
        assert response.status_code == 200
        assert hashlib.sha256(response.data).hexdigest() == document.sha256
        assert response.mimetype == document.media_type
    assert response.data[:2] == b"PK"  # the DOCX is a real zip package

    assert confirm(client, token, "Nguyễn Văn Bạc", "Chánh Văn phòng").status_code == 303
    receipt = client.get(f"/r/{token}").get_data(as_text=True)
    assert pdf.sha256 in receipt
    assert _recipient(bac_lieu.id).acknowledged_by == "Nguyễn Văn Bạc"
    assert audit.verify_chain() == []


@contextmanager
def _statements() -> list[str]:
    """The SQL statements sent to the database while the block runs."""
    sent: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)


@on_postgres
@pytest.mark.postgres
def test_a_link_is_opened_and_confirmed_in_one_statement_each_with_its_audit_entry(
    issued, db_app, client
):
    # The first confirmation of a process learns where its audit lane ends.
    assert confirm(client, issued.tokens[0], "Nguyễn Văn An", "Văn thư").status_code == 303
    token = issued.tokens[1]
    browser = db_app.test_client()
    with _statements() as on_opening:
        page = open_page(browser, token)
    assert page.status_code == 200
    form = {"csrf_token": csrf_token_from(page.get_data(as_text=True))}
    form |= {"name": "Trần Thị Bình", "position": "Chánh Văn phòng"}
    with _statements() as on_confirming:
        assert browser.post(f"/r/{token}", data=form).status_code == 303

    # Opening: the link's row, then its opening, its event and its audit entry at once.
    # Confirming: the confirmation and its audit entry at once. No BEGIN, no COMMIT.
    assert len(on_opening) == 2, on_opening
    assert "audit_entry" in on_opening[1] and "recipient_event" in on_opening[1]
    assert len(on_confirming) == 1, on_confirming
    assert "audit_entry" in on_confirming[0] and "dispatch_recipient" in on_confirming[0]
    recipient = _recipient(issued.recipient_ids[1])
    assert recipient.opened_at is not None and recipient.acknowledged_by == "Trần Thị Bình"
    assert [e.object_id for e in _audit("recipient.opened")] == [
        str(issued.recipient_ids[0]),
        str(issued.recipient_ids[1]),
    ]
    [_, entry] = _audit("recipient.acknowledged")
    assert entry.object_id == str(recipient.id) and entry.dispatch_id == recipient.dispatch_id
    assert entry.details["name"] == "Trần Thị Bình"
    assert len(_events(recipient.id, "opened")) == 1
    assert audit.verify_chain() == []


@on_postgres
@pytest.mark.postgres
def test_a_lane_moved_by_another_process_writes_nothing_at_once_and_the_change_goes_the_long_way(
    issued, db_app, client
):
    assert confirm(client, issued.tokens[0], "Nguyễn Văn An", "Văn thư").status_code == 303
    ends = db_app.extensions["dispatch_audit_lane_ends"]
    assert ends, "the process knows where its lane ends"

    def another_process_appended() -> None:
        # What this process believes is no longer the end of its lane.
        for lane in ends:
            ends[lane] = hashlib.sha256(os.urandom(8)).hexdigest()

    token = issued.tokens[1]
    browser = db_app.test_client()
    another_process_appended()
    with _statements() as on_opening:
        page = open_page(browser, token)
    assert page.status_code == 200
    # The one statement was refused whole, and the page's visit recorded in a transaction.
    assert len(on_opening) > 2
    form = {"csrf_token": csrf_token_from(page.get_data(as_text=True))}
    form |= {"name": "Trần Thị Bình", "position": "Chánh Văn phòng"}
    another_process_appended()
    with _statements() as on_confirming:
        assert browser.post(f"/r/{token}", data=form).status_code == 303
    assert len(on_confirming) > 1

    recipient = _recipient(issued.recipient_ids[1])
    assert recipient.acknowledged_by == "Trần Thị Bình"
    assert len(_events(recipient.id, "opened")) == 1
    assert [e.object_id for e in _audit("recipient.opened")].count(str(recipient.id)) == 1
    assert [e.object_id for e in _audit("recipient.acknowledged")].count(str(recipient.id)) == 1
    assert audit.verify_chain() == []


def test_two_links_open_in_one_browser_confirm_each_their_own(issued, db_app, client):
    # Each page's form carries its own link's ids: a confirmation of the link opened first, after
    # another was opened in the same browser, is recorded for its own recipient, once.
    first, second = issued.tokens[0], issued.tokens[1]
    page = open_page(client, second)
    csrf = csrf_token_from(page.get_data(as_text=True))
    assert open_page(client, first).status_code == 200
    posted = client.post(
        f"/r/{second}", data={"csrf_token": csrf, "name": "Lê Văn Cường", "position": "Văn thư"}
    )
    assert posted.status_code == 303
    assert _recipient(issued.recipient_ids[1]).acknowledged_by == "Lê Văn Cường"
    assert _recipient(issued.recipient_ids[0]).acknowledged_at is None
    [entry] = _audit("recipient.acknowledged")
    assert entry.object_id == str(issued.recipient_ids[1])
    assert audit.verify_chain() == []
