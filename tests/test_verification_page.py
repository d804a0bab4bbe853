"""The public verification pages (/xac-minh), the code behind the letter's QR code, and the
signatures' validation reports in the evidence package.

Signed letters are made with the demo PKI (the ``pki`` fixture, as in tests/test_signing.py):
the issued letter's archived PDF is approved with the leader's PKCS#12 key and signed with the
agency's key on the SoftHSM2 token, and the archive then holds those signed bytes as the
dispatch's PDF (``signed_dispatch``): the state that issuing with signatures produces.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select, update

from dispatch import amendments
from dispatch.archive import ArchiveWriter, read_archived
from dispatch.clock import VN
from dispatch.extensions import db
from dispatch.models import Dispatch, DispatchRecipient, DispatchStatus, Document, Role
from dispatch.reporting.evidence import MANIFEST, build_evidence
from dispatch.signing.demo import AGENCY_NAME, LEADER_NAME
from dispatch.views.provinces import NotFoundThrottle
from tests.fixtures.originals import refilled, sign_letter
from tests.fixtures.web import csrf_token_from

CODE = re.compile(r"/xac-minh/([A-Za-z0-9_-]{16})\b")
EXPORT_AT = dt.datetime(2021, 11, 16, 10, 0, tzinfo=VN)
DECIDED = dt.datetime(2021, 11, 16, 10, 0, tzinfo=VN)


def _pdf_of(dispatch: Dispatch) -> tuple[Document, bytes]:
    document = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch.id, Document.kind == "pdf")
    ).scalar_one()
    return document, read_archived(document.path, document.sha256)


def _sign(dispatch: Dispatch, pki) -> bytes:
    """The dispatch's letter taken through approval and issuance with the demo keys, as the
    issued letter with its number, date and QR code."""
    from flask import current_app

    from dispatch.drafting.approval import letter_for_approval
    from dispatch.signing.verification import verify_url

    return sign_letter(
        pki,
        letter_for_approval(dispatch),
        number=dispatch.number,
        date=dispatch.issued_on,
        verify_url=verify_url(dispatch, current_app.config),
    ).issued


@pytest.fixture()
def signed_dispatch(issued_dispatch, pki, db_app):
    """An issued dispatch whose archived PDF carries the signer's and the agency's signatures."""
    db_app.config["DISPATCH_TRUST_ROOTS"] = str(pki.root_pem)
    dispatch = issued_dispatch(codes=["01", "79"])
    document, _ = _pdf_of(dispatch)
    signed = _sign(dispatch, pki)
    stored = ArchiveWriter(dispatch.id).write(
        document.filename.replace(".pdf", "-ky-so.pdf"), signed
    )
    # Issued documents are frozen for the ORM: the row is written as issuing with signatures
    # writes it, by a plain UPDATE.
    db.session.execute(
        update(Document)
        .where(Document.id == document.id)
        .values(filename=stored.filename, path=stored.path, sha256=stored.sha256, size=stored.size)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    db.session.expire_all()
    return dispatch, signed


def _upload(client, data: bytes, filename: str = "cong-van.pdf", token: str | None = None):
    if token is None:
        token = csrf_token_from(client.get("/xac-minh").get_data(as_text=True))
    return client.post(
        "/xac-minh",
        data={"csrf_token": token, "file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def _text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


# --- The code and the QR code on the issued letter --------------------------------------------


@pytest.mark.skipif(not shutil.which("zbarimg"), reason="zbar-tools is not installed")
def test_the_issued_pdf_carries_the_qr_code_of_its_page(issued_dispatch, db_app, tmp_path):
    dispatch = issued_dispatch(codes=["01"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", dispatch.verification_code)
    _, pdf = _pdf_of(dispatch)
    (tmp_path / "cv.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "300", "-f", "1", "-l", "1", "-png", "-singlefile",
         str(tmp_path / "cv.pdf"), str(tmp_path / "page")],
        check=True,
    )  # fmt: skip
    decoded = subprocess.run(
        ["zbarimg", "--quiet", "--raw", str(tmp_path / "page.png")],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert decoded == [f"{db_app.config['BASE_URL']}/xac-minh/{dispatch.verification_code}"]


def test_each_draft_gets_its_own_code_when_drafted(issued_dispatch, db_app):
    first, second = issued_dispatch(codes=["01"]), issued_dispatch(codes=["79"])
    assert first.verification_code != second.verification_code
    from dispatch.models import AuditEntry

    drafted = db.session.execute(
        select(AuditEntry).where(
            AuditEntry.action == "dispatch.drafted", AuditEntry.dispatch_id == first.id
        )
    ).scalar_one()
    assert drafted.details["verification_code"] == first.verification_code


# --- /xac-minh/<code> -------------------------------------------------------------------------


def test_the_code_page_shows_the_public_record_and_nothing_of_the_recipients(
    issued_dispatch, client
):
    dispatch = issued_dispatch(codes=["01", "79"], subject="kiểm tra trang xác minh")
    _, pdf = _pdf_of(dispatch)
    response = client.get(f"/xac-minh/{dispatch.verification_code}")
    assert response.status_code == 200
    text = _text(response)
    assert "Công văn số 01/THH-VP" in text
    assert "15/11/2021" in text and "V/v kiểm tra trang xác minh" in text
    assert "Cục Tin học hoá" in text
    assert hashlib.sha256(pdf).hexdigest() in text
    assert "Đang có hiệu lực" in text
    assert 'href="/xac-minh"' in response.get_data(as_text=True)
    # Nothing of whom it was sent to: no office's name nor address, no personal link.
    for recipient in db.session.execute(
        select(DispatchRecipient).where(DispatchRecipient.dispatch_id == dispatch.id)
    ).scalars():
        assert recipient.name not in text and recipient.email not in text
    assert "/r/" not in response.get_data(as_text=True)
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_a_recalled_letter_says_so_and_names_the_recall(issued_dispatch, client, desk):
    dispatch = issued_dispatch(codes=["01"])
    clerk, leader = desk.users[Role.CLERK], desk.users[Role.LEADER]
    amendment = amendments.request_recall(
        dispatch.id, reason="Nhầm số liệu.", actor=clerk, at=DECIDED
    )
    db.session.commit()
    approved = amendments.approve(
        amendment.id,
        actor=leader,
        at=DECIDED,
        confirm=amendments.Confirmations(placeholders=True),  # the seeded .example addresses
    )
    db.session.expire_all()
    assert db.session.get(Dispatch, dispatch.id).status is DispatchStatus.RECALLED
    text = _text(client.get(f"/xac-minh/{dispatch.verification_code}"))
    assert f"Đã bị thu hồi bằng Công văn số {approved.number}" in text
    recall = db.session.get(Dispatch, approved.new_id)
    text = _text(client.get(f"/xac-minh/{recall.verification_code}"))
    assert "Văn bản này thu hồi Công văn số 01/THH-VP." in text


def test_a_draft_or_unknown_code_is_a_counted_404(seeded, letter_folder, client, app):
    from dispatch.drafting import drafts

    draft = drafts.create_draft(
        letter_folder(), group_code="so-tttt-2021", actor=None, at=EXPORT_AT
    )
    db.session.commit()
    app.extensions["dispatch_link_throttle"] = NotFoundThrottle(limit=3, window=600)
    for path in (
        f"/xac-minh/{draft.verification_code}",  # a draft is not public
        "/xac-minh/khongcomanaytrongso",
        "/xac-minh/a",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Không tìm thấy công văn" in _text(response)
    blocked = client.get("/xac-minh/thumotlannua12345")
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    assert "Quá nhiều yêu cầu" in _text(blocked)


# --- The upload form --------------------------------------------------------------------------


def test_the_form_page(client, db_app):
    response = client.get("/xac-minh")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in page and csrf_token_from(page)
    assert "Xác minh công văn điện tử" in _text(response)
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_issued_unsigned_pdf_is_found_in_the_register_without_signatures(
    issued_dispatch, client
):
    dispatch = issued_dispatch(codes=["01"])
    _, pdf = _pdf_of(dispatch)
    response = _upload(client, pdf)
    assert response.status_code == 200
    text = _text(response)
    assert "Tệp trùng từng byte với bản PDF đã ban hành của Công văn số 01/THH-VP" in text
    assert "không có chữ ký số" in text and "PDF/A-3u" in text
    assert f'href="/xac-minh/{dispatch.verification_code}"' in response.get_data(as_text=True)


def test_a_signed_original_passes_and_names_both_signers(signed_dispatch, client):
    _, signed = signed_dispatch
    text = _text(_upload(client, signed))
    assert "HỢP LỆ: tệp đúng là bản gốc điện tử của Công văn số 01/THH-VP ngày 15/11/2021" in text
    assert "Trần Văn Lãnh Đạo" in text and "Cục Tin học hoá" in text
    assert "Người ký (ký duyệt)" in text and "Cơ quan ban hành" in text
    assert text.count("Nguyên vẹn") == 2 and "BỊ HỎNG" not in text
    assert "Tin cậy (chứng thư thuộc chuỗi tin cậy đã cấu hình)" in text
    assert "Chỉ điền số, ngày và ký tiếp" in text  # the signer's: the agency signed after
    assert "+07:00" in text and "PDF/A-3u" in text


def test_a_tampered_copy_fails_and_says_which_signature_broke(signed_dispatch, client):
    _, signed = signed_dispatch
    data = bytearray(signed)
    data[len(signed) // 4] ^= 0x01
    text = _text(_upload(client, bytes(data)))
    assert "KHÔNG HỢP LỆ" in text and f"Người ký (ký duyệt) ({LEADER_NAME})" in text
    assert "BỊ HỎNG" in text
    assert "không trùng với bản gốc của công văn nào" in text


def test_a_number_filled_in_again_after_issuance_is_named(signed_dispatch, client):
    from dispatch.signing.original import NUMBER_FIELD

    _, signed = signed_dispatch
    text = _text(_upload(client, refilled(signed, NUMBER_FIELD, "Số: 99/THH-VP")))
    assert "KHÔNG HỢP LỆ" in text and "Có thay đổi mà chữ ký không cho phép" in text


def test_a_signed_file_not_in_the_register_is_not_confirmed(signed_dispatch, client, pki):
    from tests.letter_samples import sample_letter

    other = sign_letter(pki, sample_letter(), number=9, date=dt.date(2021, 11, 20)).issued
    text = _text(_upload(client, other))
    assert "CHƯA XÁC NHẬN ĐƯỢC" in text and "HỢP LỆ:" not in text


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"", "rong.pdf", "rỗng (0 byte)"),
        (b"PK\x03\x04 not a pdf", "cong-van.docx", "không phải tệp PDF"),
        (b"%PDF-1.7\n garbage without xref", "hong.pdf", "Không đọc được tệp hong.pdf"),
    ],
)
def test_bad_files_get_a_clear_error(client, db_app, data, filename, message):
    response = _upload(client, data, filename)
    assert response.status_code == 400
    assert message in _text(response)


def test_no_file_and_no_csrf_token_are_refused(client, db_app):
    token = csrf_token_from(client.get("/xac-minh").get_data(as_text=True))
    empty = client.post("/xac-minh", data={"csrf_token": token})
    assert empty.status_code == 400 and "Vui lòng chọn một tệp PDF" in _text(empty)
    forged = _upload(client, b"%PDF-1.7", token="gia-mao")
    assert forged.status_code == 400 and "Biểu mẫu đã hết hạn" in _text(forged)


def test_a_file_over_the_cap_is_refused(client, db_app):
    db_app.config["DISPATCH_VERIFY_MAX_UPLOAD"] = 64 * 1024
    response = _upload(client, b"%PDF-1.7\n" + b"0" * (65 * 1024))
    assert response.status_code == 413
    assert "Tệp quá lớn: trang này nhận tệp tới 64 KB" in _text(response)


def test_the_upload_page_takes_more_than_the_clerks_cap(issued_dispatch, client, db_app):
    """30 MB here, whatever the clerks' upload cap (MAX_CONTENT_LENGTH) is."""
    dispatch = issued_dispatch(codes=["01"])
    _, pdf = _pdf_of(dispatch)
    db_app.config["MAX_CONTENT_LENGTH"] = len(pdf) // 2
    response = _upload(client, pdf)
    assert response.status_code == 200 and "01/THH-VP" in _text(response)


# --- The evidence package ---------------------------------------------------------------------


def _package(dispatch_id: int) -> tuple[dict[str, bytes], str]:
    package = build_evidence(dispatch_id, at=EXPORT_AT)
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        files = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}
    return files, files["README.txt"].decode()


def test_the_evidence_package_holds_each_signatures_report(signed_dispatch):
    import json

    dispatch, signed = signed_dispatch
    files, readme = _package(dispatch.id)
    listed = json.loads(files["signatures.json"])
    assert [(s["role"], s["name"], s["intact"], s["trusted"]) for s in listed] == [
        ("signer", LEADER_NAME, True, True),
        ("agency", AGENCY_NAME, True, True),
    ]
    manifest = files[MANIFEST].decode()
    for entry in listed:
        report = files[entry["report"]].decode()
        assert entry["report"].startswith("signatures/")
        assert hashlib.sha256(signed).hexdigest() in report
        assert entry["name"] in report and "Integrity" in report  # pyHanko's own summary
        digest = hashlib.sha256(files[entry["report"]]).hexdigest()
        assert f"{digest}  {entry['report']}" in manifest
    assert "signatures.json" in manifest
    assert "Chữ ký số: 2 chữ ký" in readme


def test_an_unsigned_letter_has_no_reports_and_says_so(issued_dispatch):
    dispatch = issued_dispatch(codes=["01"])
    files, readme = _package(dispatch.id)
    assert files["signatures.json"].strip() == b"[]"
    assert not [name for name in files if name.startswith("signatures/")]
    assert "không có chữ ký số, nên không có báo cáo kiểm tra" in readme


def test_verify_url_is_under_base_url(db_app, issued_dispatch):
    from dispatch.signing.verification import verify_url

    dispatch = issued_dispatch(codes=["01"])
    url = verify_url(dispatch, {"BASE_URL": "https://congvan.example.vn/"})
    assert url == f"https://congvan.example.vn/xac-minh/{dispatch.verification_code}"
    assert CODE.search(url)
    assert Path(url).name == dispatch.verification_code


@pytest.mark.nodb
def test_the_migration_gives_existing_dispatches_each_their_own_code(tmp_path):
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    from tests.fixtures.database import scratch_app

    app = scratch_app(tmp_path)
    with app.app_context():
        upgrade(revision="0010")
        with db.engine.begin() as conn:
            for index in range(3):
                conn.execute(
                    text(
                        "INSERT INTO dispatch (status, source, subject, symbol, register, "
                        "created_at, updated_at, deadline_working_days, deadline_hour, "
                        "reminder_hour, reminders_enabled) VALUES ('draft', '{}', :subject, "
                        "'THH-VP', 'THH', '2021-11-01 01:00:00', '2021-11-01 01:00:00', 3, 17, "
                        "8, 1)"
                    ),
                    {"subject": f"cũ {index}"},
                )
        upgrade(revision="0012")
        codes = db.session.execute(select(Dispatch.verification_code)).scalars().all()
        assert len(codes) == 3 and len(set(codes)) == 3
        assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", code) for code in codes)
        db.session.remove()
        downgrade(revision="0010")
        db.engine.dispose()
