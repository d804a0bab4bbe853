"""A draft from a letter written in Word: checked like an upload, read, kept with the draft.

The DOCX is checked as any uploaded Office file is (no macros, ActiveX, OLE objects, programs,
external templates; zip bombs refused), then ``dispatch.letters.docx_import`` reads it. A draft
is created only when every required field was recognised; the original file is kept with the
draft under ``DISPATCH_DATA_DIR/uploads/<draft id>/original/`` (it is not sent to the offices:
the letter is rendered again from the draft) and the import is audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from dispatch import audit
from dispatch.audit import actor_name
from dispatch.drafting import drafts, uploads
from dispatch.letters.docx_import import DocxImportError, ImportReport, read_docx
from dispatch.letters.source import LetterSource
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
