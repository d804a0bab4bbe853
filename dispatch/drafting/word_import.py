"""A draft from a letter written in Word: checked like an upload, read, kept with the draft.

The DOCX is checked as any uploaded Office file is (no macros, ActiveX, OLE objects, programs,
external templates; zip bombs refused), then ``dispatch.letters.docx_import`` reads it. A draft
is created only when every required field was recognised; the original file is kept with the
draft under ``DISPATCH_DATA_DIR/uploads/<draft id>/original/`` (it is not sent to the offices:
the letter is rendered again from the draft) and the import is audited. Issuing archives it,
read-only, under ``dispatches/<id>/original/`` beside the files that were sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import shutil
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dispatch import audit
from dispatch.archive import data_dir, dispatch_folder
from dispatch.audit import actor_name
from dispatch.drafting import drafts, uploads
from dispatch.letters.docx_import import DocxImportError, ImportReport, read_docx
from dispatch.letters.source import LETTER_FILE, LetterSource, read_source, source_to_json
from dispatch.models import Dispatch, User

ORIGINAL_FOLDER = "original"


@dataclass(frozen=True)
class WordDraft:
    dispatch: Dispatch
    report: ImportReport
    original: Path


def _shown(filename: str) -> str:
    return unicodedata.normalize("NFC", re.split(r"[/\\]", filename or "")[-1]) or "tệp.docx"


def read_word_letter(data: bytes, filename: str) -> tuple[LetterSource, ImportReport]:
    """The letter in an uploaded DOCX and the report; ``DocxImportError`` for a refused file."""
    shown = _shown(filename)
    if len(data) > uploads.max_upload():
        raise DocxImportError(
            f"Tệp “{shown}” dài {uploads.human_size(len(data))}, vượt giới hạn "
            f"{uploads.human_size(uploads.max_upload())}."
        )
    try:
        file_type = uploads.detect_type(data, shown)
    except uploads.UploadError as exc:
        raise DocxImportError(str(exc)) from exc
    if file_type is not uploads.DOCX:
        raise DocxImportError(f"Tệp “{shown}” không phải công văn Word (.docx).")
    imported = read_docx(data, origin=f"tệp Word “{shown}”")
    return imported.source, imported.report


def missing_message(report: ImportReport) -> str:
    """Why a DOCX cannot become a draft yet, field by field."""
    return "Chưa nhận ra đủ công văn trong tệp Word: " + "; ".join(report.missing.values()) + "."


def original_path(dispatch_id: int) -> Path | None:
    """The Word file a draft was imported from, if any."""
    folder = uploads.upload_root(dispatch_id) / ORIGINAL_FOLDER
    if not folder.is_dir():
        return None
    files = sorted(folder.iterdir())
    return files[0] if files else None


def archived_original(dispatch_id: int) -> Path | None:
    """The Word file an issued dispatch was imported from, as archived when it was issued."""
    folder = data_dir() / dispatch_folder(dispatch_id) / ORIGINAL_FOLDER
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    return files[0] if files else None


def keep_original(
    dispatch: Dispatch,
    data: bytes,
    filename: str,
    report: ImportReport,
    *,
    actor: User | None,
    at: dt.datetime,
) -> Path:
    """Store the original DOCX with the draft and audit the import; the caller commits."""
    name = uploads.sanitise_filename(_shown(filename), uploads.DOCX)
    folder = uploads.upload_root(dispatch.id) / ORIGINAL_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    audit.record_dispatch(
        "dispatch.imported_from_word",
        dispatch.id,
        actor=actor_name(actor),
        at=at,
        details={
            "filename": name,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "recognised": sorted(report.recognised),
            "missing": sorted(report.missing),
            "unrecognised_paragraphs": len(report.unrecognised),
        },
    )
    return path


def create_from_word(
    data: bytes, filename: str, *, group_code: str, actor: User | None, at: dt.datetime
) -> WordDraft:
    """A new draft to a group from a Word letter; the caller commits.

    ``DocxImportError`` when the file is refused or a required field was not recognised,
    ``LetterSourceError`` when what was read is not a valid letter, ``DraftError`` or
    ``DirectoryError`` for a bad group; nothing is kept then.
    """
    source, report = read_word_letter(data, filename)
    if not report.complete:
        raise DocxImportError(missing_message(report))
    dispatch = drafts.create_draft(source, group_code=group_code, actor=actor, at=at)
    original = keep_original(dispatch, data, filename, report, actor=actor, at=at)
    return WordDraft(dispatch, report, original)


# A letter source zip holds letter.md and its appendices' .md files: small text files.
MAX_SOURCE_MEMBERS = 50
MAX_SOURCE_BYTES = 2 * 1024 * 1024


def read_source_zip(data: bytes, filename: str) -> LetterSource:
    """The letter in a zip of a letter folder (letter.md, phu-luc-*.md), read safely.

    Only Markdown files are taken, each by its bare name, under a total size checked from what
    is really inflated (not from the zip's own claims); ``DocxImportError`` otherwise.
    """
    shown = _shown(filename)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise DocxImportError(f"Tệp “{shown}” không phải tệp nén .zip đọc được.") from exc
    markdown = [m for m in members if not m.is_dir() and m.filename.lower().endswith(".md")]
    if len(members) > 10 * MAX_SOURCE_MEMBERS or len(markdown) > MAX_SOURCE_MEMBERS:
        raise DocxImportError(f"Tệp nén “{shown}” có quá nhiều tệp cho một công văn.")
    names = {Path(m.filename).name: m for m in markdown}
    if LETTER_FILE not in names:
        raise DocxImportError(
            f"Tệp nén “{shown}” không có {LETTER_FILE}: hãy nén thư mục công văn "
            "(letter.md và các tệp phụ lục)."
        )
    total = 0
    with tempfile.TemporaryDirectory(prefix="letter-zip-") as folder:
        for name, member in names.items():
            if name.startswith(".") or not re.fullmatch(r"[\w.\-]+\.md", name):
                continue
            with archive.open(member) as stream:
                content = stream.read(MAX_SOURCE_BYTES - total + 1)
            total += len(content)
            if total > MAX_SOURCE_BYTES:
                raise DocxImportError(
                    f"Tệp nén “{shown}” khi giải nén quá lớn cho một công văn (tối đa "
                    f"{MAX_SOURCE_BYTES // 1024 // 1024} MB văn bản)."
                )
            (Path(folder) / name).write_bytes(content)
        source = read_source(Path(folder))
    return LetterSource(source.meta, source.body, source.appendices, f"tệp nén “{shown}”")


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except (zipfile.BadZipFile, ValueError):
        return False


def import_into(
    dispatch_id: int,
    data: bytes,
    filename: str,
    *,
    group: str,
    actor: User | None,
    at: dt.datetime,
) -> ImportReport | None:
    """Replace draft ``dispatch_id``'s letter by the one in a DOCX or a letter source zip.

    What was read is saved as typed (the composer then shows what is still wrong); a DOCX is
    kept with the draft and its report returned. The caller commits; ``DocxImportError`` (a
    ``LetterSourceError`` of a zip's source becomes one) leaves the draft as it was.
    """
    from dispatch.drafting import form as compose_form
    from dispatch.letters.source import LetterSourceError

    shown = _shown(filename)
    if len(data) > uploads.max_upload():
        raise DocxImportError(
            f"Tệp “{shown}” dài {uploads.human_size(len(data))}, vượt giới hạn "
            f"{uploads.human_size(uploads.max_upload())}."
        )
    report: ImportReport | None = None
    if data.startswith(b"PK\x03\x04") and not _is_docx(data):
        try:
            source = read_source_zip(data, filename)
        except LetterSourceError as exc:
            raise DocxImportError(f"Công văn trong tệp nén không đọc được: {exc}") from exc
    else:
        source, report = read_word_letter(data, filename)
    if not group:  # no group picked yet: the draft's, else the office's usual one this month
        from dispatch.clock import local
        from dispatch.directory import offices
        from dispatch.extensions import db

        current = db.session.get(Dispatch, dispatch_id)
        group = current.group.code if current is not None and current.group else ""
        group = group or offices.usual_group(local(at).date())
    form = compose_form.form_from_source(source_to_json(source), group=group)
    saved = compose_form.save_draft(dispatch_id, form, actor=actor, at=at)
    folder = uploads.upload_root(dispatch_id) / ORIGINAL_FOLDER
    if folder.is_dir():
        shutil.rmtree(folder)
    if report is not None:
        keep_original(saved.dispatch, data, filename, report, actor=actor, at=at)
    else:
        audit.record_dispatch(
            "dispatch.imported_from_source_zip",
            dispatch_id,
            actor=actor_name(actor),
            at=at,
            details={"filename": shown[:200], "size": len(data)},
        )
    return report


def report_rows(dispatch_id: int) -> list[tuple[str, str, str]] | None:
    """The field-by-field report of the Word file kept with a draft (None without one)."""
    path = original_path(dispatch_id)
    if path is None:
        return None
    try:
        return read_docx(path.read_bytes()).report.rows()
    except DocxImportError:
        return None
