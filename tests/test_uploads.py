"""Files attached to a draft: checked by content (not name), zip bombs refused, names made safe,
size limits answered in Vietnamese, kept per draft and archived with the letter at issuing."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import unicodedata
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatch.drafting import uploads
from dispatch.extensions import db
from dispatch.models import AuditEntry, Dispatch, Document, OutboxMessage
from tests.fixtures import files
from tests.fixtures.clerks import (
    csrf_of,
    draft_id_from,
    exe_bytes,
    post_form,
    valid_fields,
    zip_bomb_docx,
)
from tests.fixtures.files import docx_bytes, pdf_bytes, png_bytes, xlsx_bytes

SEED_LETTER_DAY = dt.datetime(2021, 11, 15, 2, 0, tzinfo=dt.UTC)

# --- by content --------------------------------------------------------------------------------


@pytest.mark.nodb
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (pdf_bytes(), uploads.PDF),
        (png_bytes(), uploads.PNG),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64, uploads.JPEG),
        (docx_bytes(), uploads.DOCX),
        (xlsx_bytes(), uploads.XLSX),
    ],
)
def test_types_are_told_by_their_bytes(data, expected):
    assert uploads.detect_type(data, "tệp") is expected


@pytest.mark.nodb
def test_a_program_renamed_pdf_is_refused():
    with pytest.raises(uploads.UploadError) as caught:
        uploads.detect_type(exe_bytes(), "bao-cao.pdf")
    message = str(caught.value)
    assert "bao-cao.pdf" in message and "chương trình" in message and "PDF, PNG" in message


@pytest.mark.nodb
def test_a_zip_bomb_in_a_docx_is_refused():
    bomb = zip_bomb_docx()
    assert len(bomb) < 1024 * 1024  # tiny on the wire …
    with pytest.raises(uploads.UploadError, match="zip bomb"):
        uploads.detect_type(bomb, "danh-sach.docx")


@pytest.mark.nodb
def test_a_zip_that_is_not_an_office_document_is_refused():
    out = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "xin chào")
    with pytest.raises(uploads.UploadError, match="Word"):
        uploads.detect_type(out.getvalue(), "tai-lieu.docx")
    # A DOCX whose declared main part is missing is no DOCX either.
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_bytes())) as source, zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            if info.filename != "word/document.xml":
                archive.writestr(info.filename, source.read(info.filename))
    with pytest.raises(uploads.UploadError):
        uploads.detect_type(out.getvalue(), "tai-lieu.docx")


@pytest.mark.nodb
def test_file_names_are_made_safe_keeping_vietnamese():
    nfd = unicodedata.normalize("NFD", "Báo cáo tổng hợp.pdf")
    assert uploads.sanitise_filename(nfd, uploads.PDF) == "Báo cáo tổng hợp.pdf"
    assert uploads.sanitise_filename(nfd, uploads.PDF) == unicodedata.normalize(
        "NFC", "Báo cáo tổng hợp.pdf"
    )
    assert uploads.sanitise_filename("C:\\Users\\vt\\Đề án.docx", uploads.DOCX) == "Đề án.docx"
    assert uploads.sanitise_filename("../../etc/passwd", uploads.PDF) == "passwd.pdf"
    assert uploads.sanitise_filename("sơ đồ.pdf", uploads.PNG) == "sơ đồ.png"  # content wins
    assert uploads.sanitise_filename("ảnh.JPEG", uploads.JPEG) == "ảnh.jpeg"
    assert uploads.sanitise_filename("kế hoạch v1.2", uploads.PDF) == "kế hoạch v1.2.pdf"
    assert uploads.sanitise_filename('a<b>:"c|?*\x00\x1f.pdf', uploads.PDF) == "a_b_c_.pdf"
    assert uploads.sanitise_filename("...", uploads.PDF) == "tep-dinh-kem.pdf"
    assert len(uploads.sanitise_filename("x" * 500 + ".pdf", uploads.PDF)) <= uploads.MAX_NAME


# --- through the composer ----------------------------------------------------------------------


def _draft(desk) -> int:
    response = post_form(
        desk.clerk, "/dispatches/new", valid_fields(), token_from="/dispatches/new"
    )
    return draft_id_from(response)


def _upload(desk, draft_id: int, data: bytes, name: str):
    response = post_form(
        desk.clerk,
        f"/dispatches/{draft_id}/edit",
        {**valid_fields(), "action": "upload", "attachment": (io.BytesIO(data), name)},
    )
    return _read(response)


def _read(response):
    """The response, read, with the request's body closed: the test client writes a body over
    500 KB to a temporary file, and leaves it open."""
    response.get_data()
    response.close()
    response.request.input_stream.close()
    return response


def _names(draft_id: int) -> list[str]:
    db.session.expire_all()
    return db.session.get(Dispatch, draft_id).source["meta"].get("attachments", [])


def test_a_pdf_is_kept_with_the_draft_and_archived_at_issuing(desk, app, smtp_server, fixed_now):
    fixed_now(SEED_LETTER_DAY)  # issued in the letter's own month, to the offices of then
    draft_id = _draft(desk)
    data = pdf_bytes("Danh sách đầu mối")
    response = _upload(desk, draft_id, data, "Danh sách đầu mối.pdf")
    assert response.status_code == 303
    assert _names(draft_id) == ["Danh sách đầu mối.pdf"]
    stored = Path(app.config["DISPATCH_DATA_DIR"]) / "uploads" / str(draft_id) / "attachments"
    assert (stored / "Danh sách đầu mối.pdf").read_bytes() == data
    page = desk.clerk.get(f"/dispatches/{draft_id}/edit").get_data(as_text=True)
    assert "Danh sách đầu mối.pdf" in page and "remove_attachment:Danh sách đầu mối.pdf" in page
    entry = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "dispatch.attachment_added")
    ).scalar_one()
    assert entry.details["filename"] == "Danh sách đầu mối.pdf"

    # Issued: the archive holds the same bytes, and the letter e-mail carries them.
    token = csrf_of(desk.clerk, f"/dispatches/{draft_id}/issue")
    assert "Danh sách đầu mối.pdf" in desk.clerk.get(f"/dispatches/{draft_id}/issue").get_data(
        as_text=True
    )
    response = desk.clerk.post(f"/dispatches/{draft_id}/issue", data={"csrf_token": token})
    assert response.status_code == 303
    db.session.expire_all()
    document = db.session.execute(
        select(Document).where(Document.dispatch_id == draft_id, Document.kind == "attachment")
    ).scalar_one()
    assert document.filename == "Danh sách đầu mối.pdf"
    assert document.media_type == "application/pdf"
    assert document.sha256 == hashlib.sha256(data).hexdigest()
    smtp_server.configure(app)
    from dispatch.clock import now
    from dispatch.mail.sender import deliver_due

    row = db.session.execute(
        select(OutboxMessage).where(OutboxMessage.dispatch_id == draft_id).limit(1)
    ).scalar_one()
    deliver_due(now(), limit=1)
    message = next(m for m in smtp_server.messages if row.message_id.strip("<>") in m.raw.decode())
    names = [part.get_filename() for part in message.email.iter_attachments()]
    assert "Danh sách đầu mối.pdf" in names


def test_a_program_named_pdf_is_refused_and_not_kept(desk, app):
    draft_id = _draft(desk)
    response = _upload(desk, draft_id, exe_bytes(), "bao-cao.pdf")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="f-attachment-loi"' in html and "không được chấp nhận" in html
    assert "chương trình chạy được" in html
    assert _names(draft_id) == []
    folder = Path(app.config["DISPATCH_DATA_DIR"]) / "uploads" / str(draft_id) / "attachments"
    assert not folder.exists() or not any(folder.iterdir())
    # The rest of the form was saved all the same.
    assert db.session.get(Dispatch, draft_id).subject == "triển khai ứng dụng PC-Covid"


def test_a_png_named_pdf_is_kept_as_the_png_it_is(desk, app):
    draft_id = _draft(desk)
    assert _upload(desk, draft_id, png_bytes(), "so-do.pdf").status_code == 303
    assert _names(draft_id) == ["so-do.png"]
    # Two files of the same name do not overwrite each other.
    assert _upload(desk, draft_id, png_bytes(), "so-do.png").status_code == 303
    assert _names(draft_id) == ["so-do.png", "so-do-2.png"]


def test_a_zip_bomb_docx_is_refused(desk):
    draft_id = _draft(desk)
    response = _upload(desk, draft_id, zip_bomb_docx(), "danh-sach.docx")
    assert response.status_code == 422
    assert "zip bomb" in response.get_data(as_text=True)
    assert _names(draft_id) == []


def test_a_real_docx_and_xlsx_are_accepted_and_removable(desk, app):
    draft_id = _draft(desk)
    assert _upload(desk, draft_id, docx_bytes(), "Đề án.docx").status_code == 303
    assert _upload(desk, draft_id, xlsx_bytes(), "Số liệu.xlsx").status_code == 303
    assert _names(draft_id) == ["Đề án.docx", "Số liệu.xlsx"]
    response = post_form(
        desk.clerk,
        f"/dispatches/{draft_id}/edit",
        {**valid_fields(), "action": "remove_attachment:Đề án.docx"},
    )
    assert response.status_code == 303
    assert _names(draft_id) == ["Số liệu.xlsx"]
    folder = Path(app.config["DISPATCH_DATA_DIR"]) / "uploads" / str(draft_id) / "attachments"
    assert sorted(p.name for p in folder.iterdir()) == ["Số liệu.xlsx"]
    assert (
        "dispatch.attachment_removed"
        in db.session.execute(select(AuditEntry.action).where(AuditEntry.dispatch_id == draft_id))
        .scalars()
        .all()
    )


def test_an_oversized_upload_gets_a_clear_vietnamese_error(desk, app):
    draft_id = _draft(desk)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    response = _upload(desk, draft_id, pdf_bytes() + b"\x00" * (128 * 1024), "lon.pdf")
    assert response.status_code == 413
    html = response.get_data(as_text=True)
    assert "Tệp tải lên quá lớn" in html and "64 KB" in html
    assert 'id="f-attachment-loi"' in html  # on the composer, next to the file field
    assert "Sửa dự thảo công văn" in html
    assert _names(draft_id) == []
    # A leader posting a large body learns nothing about the draft.
    response = desk.leader.post(f"/dispatches/{draft_id}/edit", data={"x": "y" * (128 * 1024)})
    assert response.status_code == 413 and "Sửa dự thảo" not in response.get_data(as_text=True)


def test_a_draft_made_from_a_folder_keeps_its_project_attachments(desk, tmp_path, monkeypatch):
    import dispatch.config
    from dispatch.clock import now
    from dispatch.drafting import drafts
    from dispatch.letters.source import read_source
    from tests.fixtures.database import SMALL_LETTER

    # A draft made by "dispatch draft create" carries a file from the project's attachments/.
    project = tmp_path / "project"
    (project / "attachments").mkdir(parents=True)
    (project / "attachments" / "ma-qr.png").write_bytes(png_bytes())
    monkeypatch.setattr(dispatch.config, "PROJECT_ROOT", project)
    folder = project / "official_letters" / "co-tep"
    folder.mkdir(parents=True)
    extra = "attachments:\n  - ma-qr.png\n"
    (folder / "letter.md").write_text(
        SMALL_LETTER.format(symbol="THH-VP", date="2021-11", subject="có tệp", extra=extra),
        encoding="utf-8",
    )
    draft = drafts.create_draft(
        read_source(folder), group_code="so-tttt-2021", actor=None, at=now()
    )
    db.session.commit()
    assert uploads.letter_root(draft.id) is None  # still read from the project

    # A first upload through the composer moves the letter's files into the draft's folder.
    assert _upload(desk, draft.id, pdf_bytes(), "them.pdf").status_code == 303
    assert _names(draft.id) == ["ma-qr.png", "them.pdf"]
    assert uploads.letter_root(draft.id) is not None
    stored = uploads.attachments_dir(draft.id)
    assert (stored / "ma-qr.png").read_bytes() == png_bytes()
    html = desk.clerk.get(f"/dispatches/{draft.id}/edit").get_data(as_text=True)
    assert "ma-qr.png" in html and "Không tìm thấy tệp" not in html


def test_a_file_name_with_a_bidi_control_is_refused(desk, app):
    draft_id = _draft(desk)
    # Shown as "bao-caoxcod.pdf" by a mail client: a Word file dressed as a PDF.
    response = _upload(desk, draft_id, docx_bytes(), "bao-cao\u202efdp.docx")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="f-attachment-loi"' in html and "U+202E" in html and "\u202e" not in html
    assert _names(draft_id) == []
    folder = uploads.attachments_dir(draft_id)
    assert not folder.exists() or not any(folder.iterdir())


# --- PDFs are read, not sniffed ------------------------------------------------------------------


@pytest.mark.nodb
@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.4 <html><script>alert(1)</script></html>",
        b"%PDF-1.7\n" + b"\x00" * 4096,
        pdf_bytes()[: len(pdf_bytes()) // 2],
        files.raw_pdf(
            b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"
        ),
    ],
    ids=["html-behind-a-pdf-header", "header-and-zeros", "cut-in-half", "no-page"],
)
def test_what_only_starts_like_a_pdf_is_refused(data):
    with pytest.raises(uploads.UploadError) as caught:
        uploads.detect_type(data, "x.pdf")
    assert "x.pdf" in str(caught.value) and "PDF" in str(caught.value)


@pytest.mark.nodb
@pytest.mark.parametrize(
    ("build", "words"),
    [
        (files.pdf_with_javascript, "JavaScript"),
        (lambda: files.pdf_with_open_action("/JavaScript", JS="app.alert(1)"), "JavaScript"),
        (lambda: files.pdf_with_open_action("/Launch", F="cmd.exe"), "chạy chương trình"),
        (files.pdf_with_launch_link, "chạy chương trình"),
        (files.pdf_with_embedded_file, "tệp nhúng"),
        (files.pdf_with_hidden_javascript, "JavaScript"),
        (
            lambda: files.raw_pdf(
                b"<< /Type /Catalog /Pages 2 0 R /OpenAction << /S 4 0 R /F (cmd.exe) >> >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>",
                b"/Launch",
            ),
            "chạy chương trình",
        ),
        (lambda: files.encrypted_pdf("", javascript=True), "JavaScript"),
    ],
    ids=[
        "document-javascript",
        "javascript-on-open",
        "launch-on-open",
        "launch-link",
        "embedded-program",
        "unreferenced-escaped-javascript",
        "launch-named-by-reference",
        "javascript-in-a-pdf-without-password",
    ],
)
def test_a_pdf_that_can_run_or_carry_something_is_refused(build, words):
    data = build()
    assert data.startswith(b"%PDF-")
    with pytest.raises(uploads.UploadError) as caught:
        uploads.detect_type(data, "huong-dan.pdf")
    message = str(caught.value)
    assert "huong-dan.pdf" in message and words in message


@pytest.mark.nodb
def test_a_pdf_that_needs_a_password_is_refused_one_that_opens_without_is_kept():
    with pytest.raises(uploads.UploadError, match="mật khẩu"):
        uploads.detect_type(files.encrypted_pdf("bi-mat"), "bao-mat.pdf")
    # Protected only against editing or printing: every office opens it, and it was read.
    assert uploads.detect_type(files.encrypted_pdf(""), "chi-doc.pdf") is uploads.PDF


def test_a_refused_pdf_is_not_kept_and_the_clerk_is_told_why(desk, app):
    draft_id = _draft(desk)
    assert _upload(desk, draft_id, pdf_bytes(), "bang-ke.pdf").status_code == 303
    response = _upload(desk, draft_id, files.pdf_with_javascript(), "huong-dan.pdf")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="f-attachment-loi"' in html and "JavaScript" in html
    assert _names(draft_id) == ["bang-ke.pdf"]  # what was already there stays
    assert sorted(p.name for p in uploads.attachments_dir(draft_id).iterdir()) == ["bang-ke.pdf"]


# --- Word and Excel files that run something are refused ------------------------------------------


@pytest.mark.nodb
@pytest.mark.parametrize(
    ("build", "words"),
    [
        (files.docx_with_macros, "có macro (VBA)"),
        (files.docm_dressed_as_docx, "có macro (VBA)"),
        (files.xlsx_with_macros, "có macro (VBA)"),
        (files.docx_with_activex, "có điều khiển ActiveX"),
        (files.docx_with_ole_object, "có đối tượng nhúng (OLE)"),
        (files.docx_with_program, "chương trình chạy được"),
        (lambda: files.docx_with_program("word/media/image1.png"), "chương trình chạy được"),
        (files.docx_with_remote_template, "mẫu hoặc đối tượng bên ngoài"),
    ],
    ids=[
        "vba-project",
        "docm-dressed-as-docx",
        "xlsx-vba-project",
        "activex",
        "ole-object",
        "embedded-exe",
        "exe-as-an-image",
        "remote-template",
    ],
)
def test_an_office_file_that_can_run_something_is_refused(build, words):
    with pytest.raises(uploads.UploadError) as caught:
        uploads.detect_type(build(), "bao-cao.docx")
    message = str(caught.value)
    assert "bao-cao.docx" in message and words in message


@pytest.mark.nodb
def test_ordinary_office_files_with_a_chart_or_printer_settings_are_kept():
    assert uploads.detect_type(files.docx_with_chart_workbook(), "bieu-do.docx") is uploads.DOCX
    assert uploads.detect_type(files.xlsx_with_printer_settings(), "bang.xlsx") is uploads.XLSX


def test_a_refused_docx_is_not_kept_and_the_clerk_is_told_why(desk):
    draft_id = _draft(desk)
    response = _upload(desk, draft_id, files.docx_with_macros(), "ke-hoach.docm")
    assert response.status_code == 422
    assert "có macro (VBA)" in response.get_data(as_text=True)
    assert _names(draft_id) == []


# --- One e-mail: the letter's PDF and DOCX and every attachment, within a limit ----------------

MB = 1024 * 1024


@pytest.mark.nodb
def test_the_size_of_an_email_is_capped_at_20_mb_unless_configured(tmp_path):
    from dispatch.config import load_config

    assert load_config(tmp_path, {})["DISPATCH_MAIL_MAX_BYTES"] == 20 * MB
    assert load_config(tmp_path, {"DISPATCH_MAIL_MAX_BYTES": "10485760"})[
        "DISPATCH_MAIL_MAX_BYTES"
    ] == (10 * MB)


def test_the_composer_says_how_much_room_an_email_has_left(desk, app):
    app.config["DISPATCH_MAIL_MAX_BYTES"] = 4 * MB
    html = desk.clerk.get("/dispatches/new").get_data(as_text=True)
    assert "tối đa 4 MB" in html and "còn trống 3 MB" in html
    draft_id = _draft(desk)
    assert _upload(desk, draft_id, png_bytes(MB), "anh.png").status_code == 303
    html = desk.clerk.get(f"/dispatches/{draft_id}/edit").get_data(as_text=True)
    assert "tối đa 4 MB" in html and "chiếm 1 MB" in html and "còn trống 2 MB" in html
    assert f'data-mail-room="{2 * MB}"' in html


def test_three_files_of_15_mb_do_not_all_go_into_one_email(desk, app):
    draft_id = _draft(desk)  # the default limit: 20 MB an e-mail
    assert _upload(desk, draft_id, png_bytes(15 * MB), "ban-do-1.png").status_code == 303
    response = _upload(desk, draft_id, png_bytes(15 * MB), "ban-do-2.png")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "ban-do-2.png" in html and "20 MB" in html and "15 MB" in html
    assert _names(draft_id) == ["ban-do-1.png"]
    assert [p.name for p in uploads.attachments_dir(draft_id).iterdir()] == ["ban-do-1.png"]


def test_a_file_that_would_make_the_email_too_large_is_refused_and_the_others_kept(desk, app):
    app.config["DISPATCH_MAIL_MAX_BYTES"] = 4 * MB
    draft_id = _draft(desk)
    size = int(1.2 * MB)
    response = post_form(
        desk.clerk,
        f"/dispatches/{draft_id}/edit",
        {
            **valid_fields(subject="gửi kèm sơ đồ"),
            "action": "upload",
            "attachment": [(io.BytesIO(png_bytes(size)), f"so-do-{n}.png") for n in (1, 2, 3)],
        },
    )
    _read(response)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="f-attachment-loi"' in html
    message = html.split('id="f-attachment-loi"', 1)[1].split("</p>", 1)[0]
    # The file, its size, the limit, what is taken and what is left, in Vietnamese.
    for words in ("so-do-3.png", "1.2 MB", "4 MB", "2.4 MB", "614 KB", "vẫn được giữ"):
        assert words in message, words
    assert _names(draft_id) == ["so-do-1.png", "so-do-2.png"]
    assert sorted(p.name for p in uploads.attachments_dir(draft_id).iterdir()) == [
        "so-do-1.png",
        "so-do-2.png",
    ]
    # Nothing else was lost: the form was saved, and a file that fits still goes in.
    assert db.session.get(Dispatch, draft_id).subject == "gửi kèm sơ đồ"
    assert _upload(desk, draft_id, png_bytes(500 * 1024), "nho.png").status_code == 303
    assert _names(draft_id) == ["so-do-1.png", "so-do-2.png", "nho.png"]


def test_issuing_refuses_an_email_over_the_limit_and_takes_no_number(desk, app, fixed_now):
    fixed_now(SEED_LETTER_DAY)  # issued in the letter's own month, to the offices of then
    from dispatch.models import RegisterCounter

    draft_id = _draft(desk)
    assert _upload(desk, draft_id, png_bytes(2 * MB - 16 * 1024), "ban-do.png").status_code == 303
    # The limit is lowered after the upload: the file alone fits, the rendered letter does not.
    app.config["DISPATCH_MAIL_MAX_BYTES"] = 2 * MB
    page = desk.clerk.get(f"/dispatches/{draft_id}/issue").get_data(as_text=True)
    assert "vượt giới hạn" in page  # warned before pressing the button
    token = csrf_of(desk.clerk, f"/dispatches/{draft_id}/issue")
    response = desk.clerk.post(
        f"/dispatches/{draft_id}/issue", data={"csrf_token": token}, follow_redirects=True
    )
    html = response.get_data(as_text=True)
    assert "Không ban hành được" in html and "vượt giới hạn 2 MB" in html
    assert "1 tệp gửi kèm 2.0 MB" in html and "Chưa lấy số nào" in html
    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id).status.value == "draft"
    assert db.session.execute(select(Document)).first() is None
    assert db.session.execute(select(OutboxMessage)).first() is None
    counter = db.session.execute(select(RegisterCounter)).scalar_one_or_none()
    assert counter is None or counter.last_number == 0
    archive = Path(app.config["DISPATCH_DATA_DIR"]) / "dispatches" / str(draft_id)
    assert not archive.exists() or not any(archive.rglob("*.*"))
