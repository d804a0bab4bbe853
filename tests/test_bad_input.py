"""Hostile and malformed input: refused cleanly in Vietnamese, never executed, fetched, injected
or let past a role.

Role and CSRF checks are generated from ``app.url_map``, so a route added later is covered
without touching this file; the only routes left out are listed (and why) in ``PUBLIC``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.routing.converters import NumberConverter

from dispatch.config import PROJECT_ROOT
from dispatch.extensions import db
from dispatch.letters.model import Letter
from dispatch.letters.source import (
    MAX_BODY_BLOCKS,
    MAX_BODY_CHARS,
    LetterSourceError,
    build_letter,
    read_source,
    source_from_json,
    source_to_json,
)
from dispatch.mail.links import derive_token
from dispatch.mail.sender import deliver_due
from dispatch.models import (
    AuditEntry,
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    Document,
    Organisation,
    OutboxMessage,
    Role,
)
from tests.fixtures.acknowledgements import confirm, open_page
from tests.fixtures.database import SMALL_LETTER
from tests.fixtures.routes import RouteArguments, is_api, route_urls
from tests.fixtures.smtp import ISSUED_AT
from tests.fixtures.web import csrf_token_from
from tests.letter_samples import SEED_FOLDER

GROUP = "so-tttt-2021"


def small_meta(**changes) -> dict:
    """The front matter of the one-page test letter, as JSON data."""
    text = SMALL_LETTER.format(symbol="THH-VP", date="2021-11", subject="thử nghiệm", extra="")
    meta = yaml.safe_load(text.split("---")[1])
    meta.update(changes)
    return meta


def payload(body: str, **meta) -> dict:
    """A draft for the API: the test letter's metadata (changed by ``meta``) and ``body``."""
    return {"meta": small_meta(**meta), "body": body, "appendices": [], "group": GROUP}


# --- The JSON form of a letter source, fuzzed --------------------------------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=60),
    st.sampled_from(["2021-11-15", "2021-11", "THH-VP", "Trân trọng./.", "- mục", "| a |"]),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_SEED_JSON = source_to_json(read_source(SEED_FOLDER))
_KEYS = [*sorted(_SEED_JSON["meta"]), "number", "urgency", "attachments", "khác"]


def _with(data: dict, path: tuple, value) -> dict:
    copy = json.loads(json.dumps(data))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


_sources = st.one_of(
    _json,  # anything at all
    st.fixed_dictionaries(  # the right shape, anything inside
        {"meta": _json, "body": _json, "appendices": _json}
    ),
    # The seed letter with one metadata value, the body or an appendix replaced.
    st.tuples(st.sampled_from(_KEYS), _json).map(lambda t: _with(_SEED_JSON, ("meta", t[0]), t[1])),
    st.text(max_size=400).map(lambda t: _with(_SEED_JSON, ("body",), t)),
    st.tuples(st.integers(0, 1), st.sampled_from(["title", "body", "file", "x"]), _json).map(
        lambda t: _with(_SEED_JSON, ("appendices", t[0], t[1]), t[2])
    ),
    _json.map(lambda value: _with(_SEED_JSON, ("appendices",), value)),
)


@pytest.mark.nodb
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=_sources)
def test_any_json_source_gives_a_letter_or_a_source_error(data) -> None:
    try:
        letter = build_letter(source_from_json(data, origin="bản nháp 1"))
    except LetterSourceError as error:
        assert error.message and error.path
        assert error.line is None or error.line >= 1
    else:
        assert isinstance(letter, Letter)


# --- Hostile letter text ---------------------------------------------------------------------

HOSTILE_SUBJECT = '<script>alert("x")</script> thử @import url(file:///etc/passwd)'
HOSTILE_BODY = """\
Cục Tin học hoá gửi <script>alert("x")</script> và <style>@import url("file:///etc/passwd");
body { background: url(file:///etc/passwd) }</style> để thử.

<link rel="attachment" href="file:///etc/passwd">
<a rel="attachment" href="file:///etc/passwd">tệp đính kèm</a> <img src="file:///etc/passwd">
<iframe src="http://evil.example/"></iframe>

Liên kết [mật khẩu](file:///etc/passwd) và ảnh ![ảnh](file:///etc/passwd) và <http://evil.example/x.css>.

- @import "http://evil.example/x.css";
- <object data="file:///etc/shadow"></object>

Trân trọng./.
"""


def _pdftotext(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "letter.pdf"
    path.write_bytes(pdf)
    result = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True
    )
    return result.stdout.decode("utf-8")


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text))


@pytest.mark.slow
def test_hostile_letter_text_is_printed_literally_and_nothing_is_fetched_or_sent_as_html(
    client, api_headers, seeded, smtp_app, smtp_server, tmp_path, fixed_now
):
    from pypdf import PdfReader

    fixed_now(ISSUED_AT)  # over HTTP a letter is issued at the server's time

    clerk = api_headers[Role.CLERK]
    created = client.post(
        "/api/dispatches",
        json=payload(
            HOSTILE_BODY,
            subject=HOSTILE_SUBJECT,
            addressees=['<img src="file:///etc/passwd"> Các Sở Thông tin và Truyền thông'],
        ),
        headers=clerk,
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    dispatch_id = created.get_json()["id"]
    issued = client.post(
        f"/api/dispatches/{dispatch_id}/issue", json={"confirm_placeholders": True}, headers=clerk
    )
    assert issued.status_code == 200, issued.get_data(as_text=True)

    root = Path(smtp_app.config["DISPATCH_DATA_DIR"])
    documents = {
        doc.kind: (root / doc.path).read_bytes()
        for doc in db.session.execute(
            select(Document).where(Document.dispatch_id == dispatch_id)
        ).scalars()
    }
    assert set(documents) == {"pdf", "docx"}  # nothing else was picked up as an attachment
    pdf = documents["pdf"]
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.attachments == {}
    assert b"/EmbeddedFile" not in pdf and b"/Launch" not in pdf
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    text = _squeeze(_pdftotext(pdf, tmp_path))
    assert passwd not in text
    for literal in (
        '<script>alert("x")</script>',
        '<link rel="attachment" href="file:///etc/passwd">',
        "@import url(file:///etc/passwd)",
        "background: url(file:///etc/passwd)",
        '@import "http://evil.example/x.css";',
    ):
        assert _squeeze(literal) in text, literal

    import docx

    word = docx.Document(io.BytesIO(documents["docx"]))
    word_text = _squeeze(
        " ".join(
            [p.text for p in word.paragraphs]
            + [c.text for t in word.tables for r in t.rows for c in r.cells]
        )
    )
    assert '<script>alert("x")</script>' in word_text
    assert passwd not in word_text

    # The e-mails carry the text escaped in HTML, and no header learned anything from it.
    report = deliver_due(ISSUED_AT + dt.timedelta(minutes=1))
    assert report.sent == 63
    mail = smtp_server.messages[0].email
    assert HOSTILE_SUBJECT in str(mail["Subject"])
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert {part.get_content_type() for part in mail.iter_attachments()} == {
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    }


# --- Enormous input: refused or rendered within bounds -----------------------------------------

_RENDER = """
import json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from dispatch.letters.source import LetterSourceError, build_letter, source_from_json
data = json.load(sys.stdin)
try:
    letter = build_letter(source_from_json(data, origin="bản nháp 1"))
except LetterSourceError as exc:
    print("REFUSED", exc)
    sys.exit(3)
from dispatch.letters.docx import render_docx
from dispatch.letters.pdf import render_pdf
pdf, word = render_pdf(letter), render_docx(letter)
print("RENDERED", len(pdf), len(word))
"""
MEMORY_LIMIT = 2 * 1024**3  # address space of the rendering process
TIME_LIMIT = 120  # seconds: generous for a slow shared machine; a render at the limits takes ~5


def _render_bounded(data: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _RENDER, str(MEMORY_LIMIT)],
        input=json.dumps(data, ensure_ascii=False),
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,  # a TimeoutExpired fails the test
        cwd=PROJECT_ROOT,
    )


def _source(body: str, appendices: list | None = None) -> dict:
    return {"meta": small_meta(), "body": body, "appendices": appendices or []}


PARAGRAPH_200K = ("Chữ " * 50_000).strip() + "\n\nTrân trọng./.\n"
ITEMS_5000 = "Đề nghị:\n\n" + "".join(f"- {i};\n" for i in range(5_000)) + "\nTrân trọng./.\n"


@pytest.mark.nodb
@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_source(PARAGRAPH_200K), f"tối đa {MAX_BODY_CHARS:,} ký tự".replace(",", ".")),
        (_source(ITEMS_5000), f"quá {MAX_BODY_BLOCKS:,} đoạn".replace(",", ".")),
        (
            _source(
                "Xem các phụ lục.\n\nTrân trọng./.\n",
                [{"title": f"Phụ lục {i}", "body": ("Chữ " * 12_000) + "./."} for i in range(4)],
            ),
            "công văn và các phụ lục dài",
        ),
    ],
    ids=["200k-paragraph", "5000-items", "appendices-total"],
)
def test_enormous_letters_are_refused_in_vietnamese_before_rendering(data, expected):
    result = _render_bounded(data)

    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith("REFUSED bản nháp 1")
    assert expected in result.stdout


@pytest.mark.nodb
@pytest.mark.slow
def test_letters_at_the_limits_render_within_time_and_memory():
    items = "".join(f"- mục {i};\n" for i in range(MAX_BODY_BLOCKS - 3))
    paragraph = ("Chữ " * 9_000).strip()
    body = f"Đề nghị:\n\n{items}\n{paragraph}\n\nTrân trọng./.\n"
    assert len(body) < MAX_BODY_CHARS

    result = _render_bounded(_source(body))

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("RENDERED")


def test_the_api_refuses_an_enormous_body_with_the_field_and_line(client, api_headers, seeded):
    response = client.post(
        "/api/dispatches", json=payload(PARAGRAPH_200K), headers=api_headers[Role.CLERK]
    )

    assert response.status_code == 422
    body = response.get_json()
    assert body["field"] == "body" and body["line"] == 1
    assert "tối đa 50.000 ký tự" in body["message"]
    assert db.session.execute(select(func.count()).select_from(Dispatch)).scalar_one() == 0


def test_an_oversized_source_file_is_refused_before_it_is_read(runner, seeded, tmp_path):
    folder = tmp_path / "letter"
    folder.mkdir()
    text = SMALL_LETTER.format(symbol="THH-VP", date="2021-11", subject="thử", extra="")
    (folder / "letter.md").write_text(text + "Chữ " * 300_000, encoding="utf-8")

    result = runner.invoke(args=["draft", "create", str(folder), "--group", GROUP])

    assert result.exit_code == 1
    assert "Lỗi: nguồn công văn không hợp lệ" in result.output
    assert "tối đa 1.000.000 byte" in result.output


# --- CR/LF: no header injection ----------------------------------------------------------------

EVIL = "evil@attacker.example"


def test_line_breaks_in_subject_and_addresses_inject_no_header(
    smtp_app, smtp_server, outbox_dispatch
):
    dispatch = outbox_dispatch(2, subject=f"Triển khai PC-Covid\r\nBcc: {EVIL}\r\nX-Injected: 1")
    rows = list(
        db.session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.dispatch_id == dispatch.id)
            .order_by(OutboxMessage.id)
        ).scalars()
    )
    # Stored addresses with a line break and a header after them, as forged rows would have
    # (the directory refuses such an address: see the import and form tests below).
    rows[0].cc_addrs = [f"vanthu.hanoi@tinh.example\r\nBcc: {EVIL}"]
    rows[1].to_addrs = [f"{rows[1].to_addrs[0]}\r\nBcc: {EVIL}"]
    db.session.commit()

    deliver_due(ISSUED_AT + dt.timedelta(minutes=1))

    assert smtp_server.messages, "nothing was sent at all"
    for message in smtp_server.messages:
        assert all(EVIL not in rcpt for rcpt in message.rcpt_tos)
        headers = message.raw.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nBcc:" not in headers and b"\r\nX-Injected:" not in headers
        mail = BytesParser(policy=policy.default).parsebytes(message.raw)
        assert mail["Bcc"] is None and mail["X-Injected"] is None
        assert "\n" not in str(mail["Subject"])
    db.session.expire_all()
    for row in rows:
        row = db.session.get(OutboxMessage, row.id)
        # Sent to the office's own address only, or refused with a reason: never to EVIL.
        assert row.status in (DeliveryStatus.SENT, DeliveryStatus.FAILED), row.status
        if row.status is DeliveryStatus.FAILED:
            assert row.last_error


@pytest.mark.parametrize("column", ["email", "cc"])
def test_the_directory_import_refuses_addresses_with_line_breaks(runner, seeded, tmp_path, column):
    from dispatch.directory.offices import export_csv

    text = export_csv(group_code=GROUP, bom=False)
    lines = text.splitlines()
    header = lines[0].split(",")
    cells = next(iter(__import__("csv").reader([lines[1]])))
    cells[header.index(column)] = f"sotttt@hanoi.gov.vn\r\nBcc: {EVIL}"
    out = io.StringIO()
    writer = __import__("csv").writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerow(cells)
    path = tmp_path / "danh-ba.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    before = db.session.execute(select(Organisation.email).order_by(Organisation.id)).all()

    result = runner.invoke(args=["directory", "import", str(path)])

    assert result.exit_code == 1
    # The row starts on line 2 (its quoted cell runs on to line 3).
    assert re.search(r"^Dòng 2: địa chỉ .*không hợp lệ", result.output, re.MULTILINE)
    db.session.expire_all()
    assert db.session.execute(select(Organisation.email).order_by(Organisation.id)).all() == before
    assert EVIL not in json.dumps(
        [list(o.cc) for o in db.session.execute(select(Organisation)).scalars()]
    )


# --- Invalid UTF-8, and text that is not NFC ------------------------------------------------


def test_a_directory_file_that_is_not_utf8_is_refused_with_its_line(runner, seeded, tmp_path):
    from dispatch.directory.offices import export_csv

    data = export_csv(group_code=GROUP, bom=False).encode("utf-8")
    lines = data.split(b"\r\n")
    lines[3] = lines[3].replace("Sở".encode(), "S\xff".encode("latin-1"), 1)
    path = tmp_path / "danh-ba.csv"
    path.write_bytes(b"\r\n".join(lines))

    result = runner.invoke(args=["directory", "import", str(path)])

    assert result.exit_code == 1
    assert "Dòng 4: tệp không phải mã UTF-8" in result.output


def test_a_letter_source_that_is_not_utf8_is_refused_with_its_line(runner, seeded, tmp_path):
    folder = tmp_path / "letter"
    folder.mkdir()
    text = SMALL_LETTER.format(symbol="THH-VP", date="2021-11", subject="thử", extra="")
    data = text.encode("utf-8").replace("Quý Sở".encode(), b"Qu\xfd S\xf5")  # Windows-1258
    (folder / "letter.md").write_bytes(data)

    result = runner.invoke(args=["draft", "create", str(folder), "--group", GROUP])

    assert result.exit_code == 1
    assert "Lỗi: nguồn công văn không hợp lệ" in result.output
    line = text.splitlines().index("Cục Tin học hoá đề nghị Quý Sở phối hợp thực hiện.") + 1
    assert f"letter.md:{line}: tệp không phải văn bản UTF-8 hợp lệ (byte 0xFD)" in result.output
    assert db.session.execute(select(func.count()).select_from(Dispatch)).scalar_one() == 0


def test_a_request_body_that_is_not_utf8_is_a_json_400(client, api_headers, seeded):
    response = client.post(
        "/api/dispatches",
        data='{"body": "Trân trọng./."}'.encode().replace(b"\xc3\xa2", b"\xe2"),
        content_type="application/json",
        headers=api_headers[Role.CLERK],
    )

    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert response.get_json()["code"] == 400


def test_decomposed_text_is_stored_composed(client, api_headers, seeded):
    nfd = lambda text: unicodedata.normalize("NFD", text)  # noqa: E731
    subject = "triển khai ứng dụng PC-Covid trên phạm vi toàn quốc"
    body = "Cục Tin học hoá đề nghị Quý Sở phối hợp thực hiện.\n\nTrân trọng./.\n"
    assert nfd(subject) != subject

    response = client.post(
        "/api/dispatches",
        json=payload(nfd(body), subject=nfd(subject), place=nfd("Hà Nội")),
        headers=api_headers[Role.CLERK],
    )

    assert response.status_code == 201, response.get_data(as_text=True)
    dispatch = db.session.get(Dispatch, response.get_json()["id"])
    assert dispatch.subject == subject
    assert dispatch.source["body"] == body
    assert dispatch.source["meta"]["subject"] == subject
    assert dispatch.source["meta"]["place"] == "Hà Nội"
    assert response.get_json()["subject"] == subject


def test_a_decomposed_directory_file_is_stored_composed(runner, seeded, tmp_path):
    from dispatch.directory.offices import export_csv

    text = export_csv(group_code=GROUP, bom=False)
    text = text.replace("sotttt.hanoi@tinh.example", "sotttt@hanoi.gov.vn")
    path = tmp_path / "danh-ba.csv"
    path.write_text(unicodedata.normalize("NFD", text), encoding="utf-8")

    result = runner.invoke(args=["directory", "import", str(path)])

    assert result.exit_code == 0, result.output
    db.session.expire_all()
    for org in db.session.execute(select(Organisation)).scalars():
        for value in (org.name, org.province_name, org.region, org.search_text):
            assert unicodedata.is_normalized("NFC", value), value
    hanoi = db.session.execute(
        select(Organisation).where(Organisation.email == "sotttt@hanoi.gov.vn")
    ).scalar_one()
    assert hanoi.name == "Sở Thông tin và Truyền thông thành phố Hà Nội"


# --- Confirmation links: forged, replayed, guessed -------------------------------------------


def test_a_token_made_with_another_key_opens_nothing(issued, client, db_app):
    recipient = db.session.get(DispatchRecipient, issued.recipient_ids[0])
    forged = derive_token(recipient.id, recipient.token_salt, "another-secret-key")
    assert forged != issued.tokens[0]

    assert client.get(f"/r/{forged}").status_code == 404
    # The form's token is bound to its link: one read from another office's genuine page, or
    # none, is refused before the link is looked at, and nothing tells whether it exists.
    genuine = open_page(client, issued.tokens[1])
    csrf = csrf_token_from(genuine.get_data(as_text=True))
    posted = client.post(f"/r/{forged}", data={"csrf_token": csrf, "name": "X", "position": "Y"})
    assert posted.status_code == 400
    assert client.post(f"/r/{forged}", data={"name": "X", "position": "Y"}).status_code == 400
    assert client.get(f"/r/{forged}/files/1").status_code == 404
    db.session.expire_all()
    assert db.session.get(DispatchRecipient, recipient.id).opened_at is None


def test_a_replayed_confirmation_changes_nothing(issued, client, app):
    token = issued.tokens[0]
    other = app.test_client()
    own_page = open_page(other, token)  # another browser of the office, the form still open
    page = open_page(client, token)
    form = {
        "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        "name": "Nguyễn Văn An",
        "position": "Chánh Văn phòng",
    }
    assert client.post(f"/r/{token}", data=form).status_code == 303

    # The captured request sent again, another browser of the link posting its own values, and
    # one posting with the token of another link's page.
    replay = client.post(f"/r/{token}", data=form)
    forged = {"name": "Kẻ Giả Mạo", "position": "Giám đốc"}
    again = other.post(
        f"/r/{token}",
        data={**forged, "csrf_token": csrf_token_from(own_page.get_data(as_text=True))},
    )
    other_page = open_page(other, issued.tokens[1])
    crossed = other.post(
        f"/r/{token}",
        data={**forged, "csrf_token": csrf_token_from(other_page.get_data(as_text=True))},
    )

    assert replay.status_code == 200 and again.status_code == 200
    assert crossed.status_code == 400
    db.session.expire_all()
    recipient = db.session.get(DispatchRecipient, issued.recipient_ids[0])
    assert recipient.acknowledged_by == "Nguyễn Văn An"
    assert recipient.acknowledged_position == "Chánh Văn phòng"
    confirmations = db.session.execute(
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.action == "recipient.acknowledged")
    ).scalar_one()
    assert confirmations == 1
    assert db.session.get(DispatchRecipient, issued.recipient_ids[1]).acknowledged_at is None


def test_guessing_links_by_posting_is_throttled_too(issued, app):
    from dispatch.views.provinces import NotFoundThrottle

    app.extensions["dispatch_link_throttle"] = NotFoundThrottle(limit=5, window=600)
    guesser = app.test_client()
    guesser.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    page = open_page(guesser, issued.tokens[1])
    token = csrf_token_from(page.get_data(as_text=True))
    codes = []
    for index in range(7):
        forged = issued.tokens[0][:-4] + f"{index:04d}"
        response = guesser.post(
            f"/r/{forged}", data={"csrf_token": token, "name": "A", "position": "B"}
        )
        codes.append(response.status_code)

    # A form token is bound to its link: a guess posted with another link's is refused (400)
    # and counted, as a wrong link opened is.
    assert codes == [400] * 5 + [429] * 2
    assert int(response.headers["Retry-After"]) > 0
    # Blocked for guesses only: the real link still opens and confirms from this address.
    page = open_page(guesser, issued.tokens[0])
    assert page.status_code == 200
    confirmed = confirm(guesser, issued.tokens[0], "A", "B", page=page)
    assert confirmed.status_code == 303


# --- CSRF and roles on every route that changes something --------------------------------------

# Routes that accept POST without a signed-in role, by design.
PUBLIC = {
    "auth.login": "the sign-in form",
    "provinces.letter": "a province's personal link: the token is the credential",
    "provinces.unknown": "any other /r/ address: the same 404 as a wrong link",
    "verification.upload": "the public verification page: checks a file, stores nothing",
    "verification.unknown": "any deeper /xac-minh/ address: the same 404 as a wrong code",
}
# Routes any signed-in user may post to.
ANY_SIGNED_IN = {"auth.logout": "signing out", "auth.change_password": "one's own password"}
# Routes only a leader may post to (deciding on a recall or a replacement): a clerk is refused.
LEADERS_ONLY = {
    "clerks.approve_amendment": "approving a recall or a replacement",
    "clerks.reject_amendment": "declining it",
    "approvals.sign": "signing a draft submitted to the leader (ký duyệt)",
    "approvals.send_back": "returning it with a comment (trả lại)",
}
# The API's catch-all: 404/405 JSON for addresses that are not operations.
API_CATCH_ALL = {"api.unknown", "api.unknown_root"}
CHANGES = {"POST", "PUT", "PATCH", "DELETE"}


def _changing_rules(app):
    for rule in app.url_map.iter_rules():
        methods = sorted(rule.methods & CHANGES)
        if methods and rule.endpoint not in API_CATCH_ALL:
            yield rule, methods


def _url(rule) -> str:
    values = {}
    for name, converter in rule._converters.items():
        values[name] = 1 if isinstance(converter, NumberConverter) else "x1"
    return rule.build(values, append_unknown=False)[1]


def _is_api(rule) -> bool:
    return rule.rule == "/api" or rule.rule.startswith("/api/")


def test_the_route_map_has_changing_routes_to_check(app):
    rules = {rule.endpoint for rule, _ in _changing_rules(app)}
    assert {"auth.login", "auth.logout", "api.create_dispatch", "api.issue"} <= rules


def test_every_form_post_without_a_csrf_token_is_refused_with_400(app, role_clients, issued):
    clerk, admin = role_clients[Role.CLERK], role_clients[Role.ADMIN]
    anonymous = app.test_client()
    checked = 0
    for rule, methods in _changing_rules(app):
        if _is_api(rule):
            continue  # bearer tokens, no cookies: nothing for a forged form to ride on
        url = _url(rule)
        if rule.endpoint == "provinces.letter":
            url = f"/r/{issued.tokens[0]}"
        for method in methods:
            for client in (clerk, admin, anonymous):
                response = client.open(url, method=method, data={"name": "x", "position": "y"})
                assert response.status_code == 400, (rule.rule, method, response.status_code)
                checked += 1
    assert checked >= 9
    db.session.expire_all()
    assert db.session.get(DispatchRecipient, issued.recipient_ids[0]).acknowledged_at is None


def test_every_changing_route_refuses_leaders_and_signed_out_visitors(
    app, role_clients, api_headers
):
    leader = role_clients[Role.LEADER]
    leader_csrf = csrf_token_from(leader.get("/").get_data(as_text=True))
    clerk = role_clients[Role.CLERK]
    clerk_csrf = csrf_token_from(clerk.get("/").get_data(as_text=True))
    anonymous = app.test_client()
    anonymous_csrf = csrf_token_from(anonymous.get("/login").get_data(as_text=True))
    checked = []
    for rule, methods in _changing_rules(app):
        if rule.endpoint in PUBLIC:
            continue
        url = _url(rule)
        for method in methods:
            where = f"{method} {rule.rule}"
            if _is_api(rule):
                signed_out = anonymous.open(url, method=method, json={})
                assert signed_out.status_code == 401, where
                as_leader = anonymous.open(
                    url, method=method, json={}, headers=api_headers[Role.LEADER]
                )
                assert as_leader.status_code == 403, (where, as_leader.status_code)
            else:
                signed_out = anonymous.open(url, method=method, data={"csrf_token": anonymous_csrf})
                assert signed_out.status_code == 302, (where, signed_out.status_code)
                assert urlsplit(signed_out.headers["Location"]).path == "/login", where
                if rule.endpoint in ANY_SIGNED_IN:
                    continue
                if rule.endpoint in LEADERS_ONLY:
                    as_clerk = clerk.open(url, method=method, data={"csrf_token": clerk_csrf})
                    assert as_clerk.status_code == 403, (where, as_clerk.status_code)
                    checked.append(where)
                    continue
                as_leader = leader.open(url, method=method, data={"csrf_token": leader_csrf})
                assert as_leader.status_code == 403, (where, as_leader.status_code)
            checked.append(where)
    assert "POST /api/dispatches" in checked and "POST /api/dispatches/<int:dispatch_id>/issue" in (
        checked
    )
    # Nothing was changed by any of it.
    assert db.session.execute(select(func.count()).select_from(Dispatch)).scalar_one() == 0


# --- Uploads that lie, oversized uploads, zip bombs (through the web pages) --------------------


def _upload_to_draft(desk, data: bytes, name: str, content_type: str):
    from tests.fixtures.clerks import draft_id_from, post_form, valid_fields

    draft_id = draft_id_from(
        post_form(desk.clerk, "/dispatches/new", valid_fields(), token_from="/dispatches/new")
    )
    response = post_form(
        desk.clerk,
        f"/dispatches/{draft_id}/edit",
        {
            **valid_fields(),
            "action": "upload",
            "attachment": (io.BytesIO(data), name, content_type),
        },
    )
    db.session.expire_all()
    return response, db.session.get(Dispatch, draft_id)


@pytest.mark.parametrize(
    ("data", "name", "content_type"),
    [
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "so-do.png",
            "image/png",
        ),
        (b"<!doctype html><script>alert(1)</script>", "cong-van.pdf", "application/pdf"),
        (
            b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00",
            "bang-tinh.xlsx",
            "application/vnd.ms-excel",
        ),
    ],
    ids=["svg-as-png", "html-as-pdf", "exe-as-xlsx"],
)
def test_an_upload_that_lies_about_its_type_is_refused(desk, app, data, name, content_type):
    response, draft = _upload_to_draft(desk, data, name, content_type)

    assert response.status_code == 422, response.status_code
    assert "không được chấp nhận" in response.get_data(as_text=True)
    assert draft.source["meta"].get("attachments", []) == []
    folder = Path(app.config["DISPATCH_DATA_DIR"]) / "uploads" / str(draft.id) / "attachments"
    assert not folder.exists() or not any(folder.iterdir())


def test_an_upload_is_named_by_what_it_is_not_by_what_it_claims(desk):
    from tests.fixtures.files import pdf_bytes

    response, draft = _upload_to_draft(desk, pdf_bytes(), "bao-cao.docx", "application/msword")

    assert response.status_code == 303
    assert draft.source["meta"]["attachments"] == ["bao-cao.pdf"]


def test_a_zip_bomb_posted_as_the_directory_csv_is_refused_unopened(desk):
    from tests.fixtures.clerks import post_form, zip_bomb_docx

    bomb = zip_bomb_docx()
    before = db.session.execute(select(func.count()).select_from(Organisation)).scalar_one()

    response = post_form(
        desk.admin,
        "/directory/import",
        {"file": (io.BytesIO(bomb), "danh-ba.csv", "text/csv")},
        token_from="/directory/import",
    )

    assert response.status_code == 422
    assert "Tệp không phải văn bản mã UTF-8" in response.get_data(as_text=True)
    assert db.session.execute(select(func.count()).select_from(Organisation)).scalar_one() == (
        before
    )


def test_the_directory_page_refuses_line_breaks_and_oversized_files_in_vietnamese(desk, app):
    from dispatch.directory.offices import export_csv
    from tests.fixtures.clerks import post_form

    text = export_csv(group_code=GROUP, bom=False).replace(
        "sotttt.hanoi@tinh.example", f'"sotttt@hanoi.gov.vn\r\nBcc: {EVIL}"', 1
    )
    injected = post_form(
        desk.admin,
        "/directory/import",
        {"file": (io.BytesIO(text.encode()), "danh-ba.csv", "text/csv")},
        token_from="/directory/import",
    )
    assert injected.status_code == 422
    html = injected.get_data(as_text=True)
    assert "Không nhập được danh bạ" in html and "không hợp lệ" in html

    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    huge = post_form(
        desk.admin,
        "/directory/import",
        {"file": (io.BytesIO(text.encode() * 20), "danh-ba.csv", "text/csv")},
        token_from="/directory/import",
    )
    assert huge.status_code == 413
    assert "quá lớn" in huge.get_data(as_text=True)
    db.session.expire_all()
    assert EVIL not in json.dumps(
        [[o.email, *o.cc] for o in db.session.execute(select(Organisation)).scalars()]
    )


# --- Numbers past 64 bits, lone surrogates, NUL bytes, huge strings: a 4xx, never a 500 ---------

# Query strings as they arrive on the wire (already percent-encoded): a lone surrogate cannot be
# sent as UTF-8, so it comes as its CESU-8 bytes, which no UTF-8 decoder accepts.
HOSTILE_QUERY_VALUES = {
    "past-64-bits": "99999999999999999999",
    "negative-past-64-bits": "-99999999999999999999",
    "negative": "-1",
    "zero": "0",
    "lone-surrogate": "%ED%A0%80",
    "nul": "%00",
    "long-digits": "9" * 5000,
    "long-text": "x" * 20000,
}
# Parameters every list-like route is fuzzed with, whether or not it reads them today.
COMMON_QUERY_PARAMETERS = {"page", "per_page", "page_size"}


class _RecordingArgs(ImmutableMultiDict):
    """Query parameters that note which names the view asked for (in ``read``)."""

    read: set[str] = set()  # noqa: RUF012  (replaced by the test before each request)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None, type=None):
        self.read.add(key)
        return super().get(key, default, type)

    def getlist(self, key, type=None):
        self.read.add(key)
        return super().getlist(key, type)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def _recording_request_class(base):
    class RecordingRequest(base):
        @property
        def args(self):
            return _RecordingArgs(super().args)

    return RecordingRequest


@dataclass
class Territory:
    """Every GET route's arguments, and who asks: the admin, or an admin's API token."""

    routes: RouteArguments
    admin: object
    api_headers: dict[str, str]

    @property
    def openapi(self) -> dict:
        return self.routes.openapi


@pytest.fixture()
def territory(route_arguments, role_clients, api_headers) -> Territory:
    return Territory(route_arguments, role_clients[Role.ADMIN], api_headers[Role.ADMIN])


def _get_urls(app, territory: Territory):
    return route_urls(app, territory.routes, "GET")


def _openapi_query_names(territory: Territory, rule) -> set[str]:
    path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
    operation = territory.openapi["paths"].get(path, {}).get("get", {})
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}


def _fetch(app, territory: Territory, rule, url: str, query: str = ""):
    api = is_api(rule)
    client = app.test_client() if api else territory.admin
    headers = territory.api_headers if api else {}
    response = client.get(url + (f"?{query}" if query else ""), headers=headers)
    response.close()  # a static file is streamed from an open file
    return response


def test_every_get_route_is_reached_by_the_fuzzing(app, territory):
    endpoints = {rule.endpoint for rule, _ in _get_urls(app, territory)}
    assert {"clerks.home", "leadership.dispatches", "api.list_dispatches", "static"} <= endpoints
    assert {"provinces.letter", "provinces.download", "clerks.register_page"} <= endpoints


@pytest.mark.parametrize("kind", sorted(HOSTILE_QUERY_VALUES))
def test_no_query_parameter_of_any_get_route_makes_a_500(app, territory, kind):
    value = HOSTILE_QUERY_VALUES[kind]
    plain = app.request_class
    app.request_class = _recording_request_class(plain)
    fuzzed = []
    try:
        for rule, url in _get_urls(app, territory):
            # Which parameters the route reads, learnt from a plain request to it.
            _RecordingArgs.read = read = set()
            response = _fetch(app, territory, rule, url)
            assert response.status_code < 500, (url, response.status_code)
            names = read | COMMON_QUERY_PARAMETERS | _openapi_query_names(territory, rule)
            for name in sorted(names):
                response = _fetch(app, territory, rule, url, f"{name}={value}")
                assert response.status_code < 500, (url, name, kind, response.status_code)
                fuzzed.append((rule.endpoint, name))
    finally:
        app.request_class = plain
    read_by = {endpoint: set() for endpoint, _ in fuzzed}
    for endpoint, name in fuzzed:
        read_by[endpoint].add(name)
    # The recording found what the views read, and the API's schemas were included.
    assert {"status"} <= read_by["clerks.home"]
    assert {"year"} <= read_by["clerks.register_page"]
    assert {"sort", "dir"} <= read_by["leadership.dispatch_page"]
    assert {"q", "on", "group"} <= read_by["api.get_directory"]


def test_a_page_number_past_64_bits_is_a_400_in_vietnamese(clerk_client, db_app):
    for page in ("99999999999999999999", "0", "-3", "hai", "1.5"):
        response = clerk_client.get(f"/?page={page}")
        assert response.status_code == 400, page
        html = response.get_data(as_text=True)
        assert "Tham số “page” phải là số nguyên từ 1 đến 1.000.000." in html, page
        assert 'lang="vi"' in html
    assert clerk_client.get("/?page=1").status_code == 200
    # The leaders' list shows its last page past the end, however far (test_leadership).
    assert clerk_client.get("/lanh-dao/?page=99999999999999999999").status_code == 200


# Values every JSON field of the API is set to in turn.
HOSTILE_JSON_VALUES = {
    "past-64-bits": 2**70,
    "negative-past-64-bits": -(2**70),
    "negative": -1,
    "lone-surrogate": "tiêu đề \ud800 lạc",
    "lone-low-surrogate": "\udfff",
    "nul": "có \x00 byte rỗng",
    "long-text": "x" * 200_000,
    "huge-float": 1e308,
}


def _json_fields(territory: Territory) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path, field path) for every field of every API operation's JSON body, and of
    the metadata of a letter."""
    found = []
    schemas = territory.openapi["components"]["schemas"]
    for path, item in territory.openapi["paths"].items():
        for method, operation in item.items():
            if method not in {"post", "put", "patch", "delete"}:
                continue
            content = operation.get("requestBody", {}).get("content", {})
            ref = content.get("application/json", {}).get("schema", {}).get("$ref")
            if not ref:
                continue
            schema = schemas[ref.rsplit("/", 1)[1]]
            for name in schema.get("properties", {}):
                found.append((method.upper(), path, (name,)))
                if name == "meta":
                    found.extend((method.upper(), path, ("meta", key)) for key in small_meta())
                if name == "appendices":
                    found.extend(
                        (method.upper(), path, ("appendices", 0, key)) for key in ("title", "body")
                    )
    return found


@pytest.mark.parametrize("kind", sorted(HOSTILE_JSON_VALUES))
def test_no_json_field_of_the_api_makes_a_500(app, territory, kind):
    value = HOSTILE_JSON_VALUES[kind]
    draft_id = str(territory.routes.draft_id)
    base = {
        **payload("Cục Tin học hoá đề nghị Quý Sở phối hợp.\n\nTrân trọng./.\n"),
        "appendices": [{"title": "Phụ lục", "body": "Nội dung của phụ lục./."}],
    }
    client = app.test_client()
    as_sent = _post_json(client, territory.api_headers, base)
    assert as_sent.status_code == 201, as_sent.get_data(as_text=True)  # each change is the cause
    fields = _json_fields(territory)
    assert ("POST", "/api/dispatches", ("meta", "subject")) in fields
    assert any(path.endswith("/issue") for _, path, _ in fields)
    for method, path, field in fields:
        url = path.replace("{dispatch_id}", draft_id)
        body = base if url == "/api/dispatches" else {"at": "2021-11-15T09:00"}
        # json.dumps escapes a lone surrogate as \ud800, which is how such a body arrives.
        data = json.dumps(_with(body, field, value))
        response = client.open(
            url,
            method=method,
            data=data,
            content_type="application/json",
            headers=territory.api_headers,
        )
        assert response.status_code < 500, (method, url, field, kind, response.status_code)
        assert response.mimetype == "application/json"
    db.session.rollback()


def _post_json(client, headers, data: dict):
    # json.dumps escapes a lone surrogate as \ud800, which is how such a body arrives.
    return client.post(
        "/api/dispatches", data=json.dumps(data), content_type="application/json", headers=headers
    )


def test_a_lone_surrogate_in_the_subject_is_a_422_in_vietnamese(client, api_headers, seeded):
    headers = api_headers[Role.CLERK]
    response = _post_json(client, headers, payload("Trân trọng./.\n", subject="thử \ud800 nghiệm"))

    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["field"] == "meta.subject"
    assert body["errors"] == {"meta.subject": ["Chuỗi chứa ký tự Unicode không hợp lệ (U+D800)."]}
    assert db.session.execute(select(func.count()).select_from(Dispatch)).scalar_one() == 0


@pytest.mark.parametrize(
    ("where", "field"), [((), "_schema"), (("meta",), "meta"), (("appendices", 0), "appendices.0")]
)
def test_a_lone_surrogate_in_a_field_name_is_a_422_in_vietnamese(
    client, api_headers, seeded, where, field
):
    data = {**payload("Trân trọng./.\n"), "appendices": [{"title": "A", "body": "B"}]}
    target = data
    for key in where:
        target = target[key]
    target["t\udc00n"] = "giá trị"

    response = _post_json(client, api_headers[Role.CLERK], data)

    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["errors"] == {
        field: ["Tên trường chứa ký tự Unicode không hợp lệ (U+DC00)."]
    }


def test_a_nul_byte_in_a_query_or_a_json_field_is_refused_in_vietnamese(
    client, clerk_client, api_headers, seeded
):
    # PostgreSQL refuses a NUL in any text: it must never get that far.
    page = clerk_client.get("/directory?q=H%00N")
    assert page.status_code == 400
    assert "Tham số “q” chứa ký tự rỗng NUL (U+0000)" in page.get_data(as_text=True)
    listed = client.get("/api/directory?q=%00", headers=api_headers[Role.CLERK])
    assert listed.status_code == 400 and listed.get_json()["field"] == "q"

    response = _post_json(
        client, api_headers[Role.CLERK], payload("Trân trọng./.\n", subject="thử\x00")
    )
    assert response.status_code == 422
    assert response.get_json()["errors"] == {
        "meta.subject": ["Chuỗi chứa ký tự rỗng NUL (U+0000), không được phép."]
    }
    assert db.session.execute(select(func.count()).select_from(Dispatch)).scalar_one() == 0
