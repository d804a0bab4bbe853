"""``dispatch draft import FILE.docx``: a draft from a letter written in Word, original kept."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from dataclasses import replace

from docx import Document
from sqlalchemy import func, select

from dispatch.drafting import word_import
from dispatch.extensions import db
from dispatch.letters.docx import render_docx
from dispatch.letters.source import build_letter, load_letter, source_from_json
from dispatch.models import AuditEntry, Dispatch
from dispatch.models import Document as ArchivedDocument
from tests.fixtures.clerks import draft_id_from, field_value, post_form, valid_fields
from tests.fixtures.wording import internal_names, visible_text
from tests.letter_samples import SEED_FOLDER

ISSUE_AT = "2021-11-15T08:30:00+07:00"


def _write_docx(tmp_path, data: bytes, name: str = "cong-van.docx"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _count_dispatches() -> int:
    return db.session.scalar(select(func.count()).select_from(Dispatch))


def test_import_a_word_letter_then_issue_it(seeded, runner, app, tmp_path):
    seed = load_letter(SEED_FOLDER)
    path = _write_docx(tmp_path, render_docx(seed), "Công văn PC-Covid.docx")
    result = runner.invoke(args=["draft", "import", str(path), "--group", "so-tttt-2021"])
    assert result.exit_code == 0, result.output
    assert "✓ ký hiệu: THH-VP" in result.output
    assert "✓ cơ quan chủ quản: Bộ Thông tin và Truyền thông" in result.output
    assert "✗" not in result.output
    dispatch_id = int(result.output.strip().splitlines()[-1])

    with app.app_context():
        dispatch = db.session.get(Dispatch, dispatch_id)
        letter = build_letter(source_from_json(dispatch.source))
        assert letter.body == seed.body and letter.signer == seed.signer
        assert [a.title for a in letter.appendices] == [a.title for a in seed.appendices]
        original = word_import.original_path(dispatch_id)
        assert original is not None and original.read_bytes() == path.read_bytes()
        assert original.name == "Công văn PC-Covid.docx"
        entry = db.session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "dispatch.imported_from_word",
                AuditEntry.dispatch_id == dispatch_id,
            )
        ).one()
        assert entry.details["missing"] == []

    issued = runner.invoke(
        args=["issue", str(dispatch_id), "--confirm-placeholders", "--at", ISSUE_AT]
    )
    assert issued.exit_code == 0, issued.output
    assert "Đã ban hành công văn số 01/THH-VP ngày 15/11/2021" in issued.output

    # The original Word file is archived with the dispatch, read-only; it is not one of the
    # documents sent to the offices (the letter was rendered again).
    with app.app_context():
        archived = word_import.archived_original(dispatch_id)
        assert archived is not None and archived.read_bytes() == path.read_bytes()
        assert archived.name == "Công văn PC-Covid.docx"
        assert not archived.stat().st_mode & 0o222
        entry = db.session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "document.archived",
                AuditEntry.dispatch_id == dispatch_id,
                AuditEntry.object_id.like("%/original/%"),
            )
        ).one()
        assert entry.details["kind"] == "original"
        assert entry.details["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        sent = db.session.scalars(
            select(ArchivedDocument.filename).where(ArchivedDocument.dispatch_id == dispatch_id)
        )
        assert archived.name not in set(sent)


def test_a_word_file_missing_fields_makes_no_draft(seeded, runner, app, tmp_path):
    document = Document()
    document.add_paragraph("Kính gửi: Sở Y tế")
    document.add_paragraph("Đề nghị Quý Sở báo cáo./.")
    buffer = io.BytesIO()
    document.save(buffer)
    path = _write_docx(tmp_path, buffer.getvalue())
    with app.app_context():
        before = _count_dispatches()
    result = runner.invoke(args=["draft", "import", str(path), "--group", "so-tttt-2021"])
    assert result.exit_code == 1
    assert "✓ Kính gửi: Sở Y tế" in result.output
    assert "✗ ký hiệu" in result.output
    assert "Chưa nhận ra đủ công văn trong tệp Word" in result.output
    assert internal_names(result.output) == []
    with app.app_context():
        assert _count_dispatches() == before


def test_a_macro_word_file_is_refused(seeded, runner, tmp_path):
    seed = load_letter(SEED_FOLDER)
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(render_docx(replace(seed, appendices=()))[:])) as source,
        zipfile.ZipFile(buffer, "w") as target,
    ):
        for info in source.infolist():
            target.writestr(info, source.read(info.filename))
        target.writestr("word/vbaProject.bin", b'Attribute VB_Name = "x"')
    path = _write_docx(tmp_path, buffer.getvalue())
    result = runner.invoke(args=["draft", "import", str(path), "--group", "so-tttt-2021"])
    assert result.exit_code == 1
    assert "macro" in result.output


def test_a_file_that_is_not_word_is_refused(seeded, runner, tmp_path):
    path = _write_docx(tmp_path, b"%PDF-1.4 nothing", "thu.docx")
    result = runner.invoke(args=["draft", "import", str(path), "--group", "so-tttt-2021"])
    assert result.exit_code == 1 and "Lỗi:" in result.output


# --- the composer -------------------------------------------------------------------------------


def _zip_folder(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"pc-covid-2021/{path.name}")
    return buffer.getvalue()


def test_the_composer_reads_a_word_letter_and_shows_what_it_recognised(desk):
    seed = load_letter(SEED_FOLDER)
    clerk = desk.clerk
    assert 'name="word_file"' in clerk.get("/dispatches/new").get_data(as_text=True)
    response = post_form(
        clerk,
        "/dispatches/new/import",
        valid_fields(word_file=(io.BytesIO(render_docx(seed)), "cong-van.docx")),
        token_from="/dispatches/new",
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    assert "tu-word=1" in response.headers["Location"]
    draft_id = draft_id_from(response)
    html = clerk.get(response.headers["Location"]).get_data(as_text=True)
    assert 'class="import-report"' in html
    assert "✓ Bộ Thông tin và Truyền thông" in html
    assert field_value(html, "subject") == seed.subject
    assert field_value(html, "signer_name") == seed.signer.name
    assert "error-summary" not in html  # the imported letter can be issued as it is
    assert word_import.original_path(draft_id).read_bytes() == render_docx(seed)
    assert "dispatch.imported_from_word" in [
        e.action for e in db.session.scalars(select(AuditEntry)) if e.dispatch_id == draft_id
    ]


def test_a_letter_half_recognised_is_reported_in_the_forms_words(desk):
    """The import panel and the summary after it name fields by their labels only."""
    document = Document()
    document.add_paragraph("Kính gửi: Sở Y tế")
    document.add_paragraph("Đề nghị Quý Sở báo cáo./.")
    buffer = io.BytesIO()
    document.save(buffer)
    response = post_form(
        desk.clerk,
        "/dispatches/new/import",
        valid_fields(word_file=(io.BytesIO(buffer.getvalue()), "nửa công văn.docx")),
        token_from="/dispatches/new",
    )
    assert response.status_code == 303
    html = desk.clerk.get(response.headers["Location"]).get_data(as_text=True)
    report = re.search(r'<table class="import-report".*?</table>', html, re.S).group(0)
    assert "✓ Sở Y tế" in report or "Sở Y tế" in report
    assert "Chưa nhận ra" in report
    text = visible_text(html)
    assert internal_names(text) == [], internal_names(text)
    assert '"' not in text, [line for line in text.splitlines() if '"' in line]
    assert len(re.findall(r'class="error-summary"', html)) == 1


def test_a_bad_file_keeps_what_was_typed_and_says_why(desk):
    clerk = desk.clerk
    response = post_form(
        clerk,
        "/dispatches/new/import",
        valid_fields(
            subject="điều tôi vừa gõ", word_file=(io.BytesIO(b"MZ\x90\x00 exe"), "thu.docx")
        ),
        token_from="/dispatches/new",
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="f-word_file-loi"' in html and "chương trình chạy được" in html
    assert field_value(html, "subject") == "điều tôi vừa gõ"
    saved = db.session.scalars(select(Dispatch).order_by(Dispatch.id.desc())).first()
    assert saved.source["meta"]["subject"] == "điều tôi vừa gõ"


def test_the_composer_accepts_a_zip_of_a_letter_folder(desk):
    clerk = desk.clerk
    response = post_form(
        clerk,
        "/dispatches/new/import",
        valid_fields(subject="", word_file=(io.BytesIO(_zip_folder(SEED_FOLDER)), "cv.zip")),
        token_from="/dispatches/new",
    )
    assert response.status_code == 303
    draft = db.session.get(Dispatch, draft_id_from(response))
    letter = build_letter(source_from_json(draft.source))
    seed = load_letter(SEED_FOLDER)
    assert letter.subject == seed.subject and letter.body == seed.body
    assert len(letter.appendices) == 2


def test_a_zip_bomb_is_refused(desk):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("letter.md", "---\n" + "a" * (30 * 1024 * 1024))
    response = post_form(
        desk.clerk,
        "/dispatches/new/import",
        valid_fields(word_file=(io.BytesIO(buffer.getvalue()), "cv.zip")),
        token_from="/dispatches/new",
    )
    assert response.status_code == 422
    assert "quá lớn" in response.get_data(as_text=True)
