"""Files a draft carries (tài liệu gửi kèm): checked by what they contain, kept per draft.

A file is accepted only if its bytes are a PDF, a PNG, a JPEG, or a Word/Excel document (DOCX,
XLSX: a ZIP whose ``[Content_Types].xml`` declares the main part, every part really inflated
under a budget so that a zip bomb is refused before anyone opens it). The name the browser sent
and its Content-Type say nothing: an EXE called ``bao-cao.pdf`` is refused, a PNG called
``so-do.pdf`` is accepted as ``so-do.png``.

What is sent to every office must not run anything there. A PDF is parsed (pypdf), not
recognised by its first bytes: what does not parse, or has no page, is refused, and so is one
that holds JavaScript, a Launch action, an embedded file, an XFA form or rich media, wherever
it sits in the file (every object of the cross-reference table is read, not only those the
pages reach). An encrypted PDF that opens without a password (protected only against printing
or editing, as offices often send them) is decrypted with the empty password, checked the same
way and kept as it is; one that needs a password to open is refused, since the offices could
not read it and nobody could check it. A Word or Excel file is refused if it carries a VBA
project or declares a macro-enabled content type (a .docm under another name), ActiveX, an OLE
object or anything embedded other than a macro-free Office package (a chart's workbook), a
program under any name, or a template or object fetched from outside when it is opened.

A letter goes out as one e-mail per office carrying its PDF, its DOCX and every attachment, so
their total is capped (``DISPATCH_MAIL_MAX_BYTES``, 20 MB by default): a file is refused when,
with the draft's other files and ``LETTER_ALLOWANCE`` kept for the letter's own documents
(which exist only once it is numbered), the e-mail would pass the cap. The composer shows the
room left (``mail_room``); issuing checks the real total again once the letter is rendered.

Files live under ``DISPATCH_DATA_DIR/uploads/<draft id>/attachments/``; the draft's letter
source lists them by name in ``meta.attachments``, and ``letter_root`` tells ``build_letter``
(and so issuing, which archives them with the letter) to look for them there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
import shutil
import tempfile
import unicodedata
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import current_app

from dispatch import audit
from dispatch.archive import data_dir
from dispatch.audit import actor_name
from dispatch.drafting.drafts import ensure_editable, list_attachments, lock_dispatch
from dispatch.extensions import db
from dispatch.models import User
from dispatch.text import refused_characters_message, without_refused_characters

UPLOADS_FOLDER = "uploads"
ATTACHMENTS_FOLDER = "attachments"  # build_letter looks for attachments in <root>/attachments
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
DEFAULT_MAIL_MAX_BYTES = 20 * 1024 * 1024
# Kept for the letter's PDF and DOCX when an attachment is added, before they exist: the 2021
# letter with its two appendices renders to 60 KB in all; a long letter with tables stays far
# below this.
LETTER_ALLOWANCE = 1024 * 1024

# Zip bombs: a DOCX/XLSX may inflate to at most this much in all, at most RATIO times its size,
# and hold at most this many parts. Real office files stay far below (a text-heavy DOCX
# inflates about 5–10 times; images do not compress).
MAX_UNZIPPED = 200 * 1024 * 1024
MAX_RATIO = 100
MAX_ZIP_ENTRIES = 5_000
MAX_CONTENT_TYPES = 1024 * 1024
MAX_NAME = 120


@dataclass(frozen=True)
class FileType:
    """What a file is, found from its bytes."""

    label: str  # as clerks know it: "PDF", "Word (DOCX)"
    extension: str  # the extension the stored name gets: ".pdf"
    media_type: str
    extensions: tuple[str, ...]  # extensions already right for this type


PDF = FileType("PDF", ".pdf", "application/pdf", (".pdf",))
PNG = FileType("PNG", ".png", "image/png", (".png",))
JPEG = FileType("JPEG", ".jpg", "image/jpeg", (".jpg", ".jpeg"))
DOCX = FileType(
    "Word (DOCX)",
    ".docx",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    (".docx",),
)
XLSX = FileType(
    "Excel (XLSX)",
    ".xlsx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    (".xlsx",),
)
# The main part's content type, as [Content_Types].xml declares it, for each office format.
_OFFICE_MAIN = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml": DOCX,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": XLSX,
}
ACCEPTED = "PDF, PNG, JPEG, Word (DOCX) hoặc Excel (XLSX)"

_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]+')


class UploadError(ValueError):
    """A file is refused; the message is for clerks (Vietnamese)."""


@dataclass(frozen=True)
class StoredFile:
    """A file kept for a draft."""

    name: str
    size: int
    media_type: str
    label: str


# --- what a file is ---------------------------------------------------------------------------


def detect_type(data: bytes, name: str = "tệp") -> FileType:
    """The type of a file from its first bytes (and, for PDFs and ZIPs, what they hold);
    ``UploadError`` for anything else, a zip bomb or a PDF that runs code included."""
    if data.startswith(b"%PDF-"):
        _check_pdf(data, name)
        return PDF
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"PK\x03\x04"):
        return _office_type(data, name)
    what = ""
    if data.startswith(b"MZ") or data.startswith(b"\x7fELF"):
        what = " Tệp này là một chương trình chạy được."
    elif not data:
        what = " Tệp rỗng."
    raise UploadError(
        f"Tệp “{name}” không được chấp nhận: chỉ nhận tệp {ACCEPTED}, kiểm tra theo nội dung "
        f"tệp chứ không theo tên.{what}"
    )


# --- PDF ----------------------------------------------------------------------------------------

# Objects read at most: a real document has a few thousand; this bounds the time a crafted one
# can take.
MAX_PDF_OBJECTS = 500_000
_PDF_JAVASCRIPT = "có mã JavaScript"
_PDF_LAUNCH = "có lệnh chạy chương trình (Launch)"
_PDF_EMBEDDED = "có tệp nhúng bên trong (EmbeddedFile)"
_PDF_XFA = "có biểu mẫu XFA (có thể chứa mã lệnh)"
_PDF_RICH_MEDIA = "có nội dung đa phương tiện tự chạy (RichMedia)"
# Keys whose presence alone says what a PDF carries …
_PDF_REFUSED_KEYS = {
    "/JS": _PDF_JAVASCRIPT,
    "/JavaScript": _PDF_JAVASCRIPT,
    "/EmbeddedFiles": _PDF_EMBEDDED,
    "/EF": _PDF_EMBEDDED,
    "/XFA": _PDF_XFA,
    "/RichMediaContent": _PDF_RICH_MEDIA,
    "/RichMediaSettings": _PDF_RICH_MEDIA,
}
# … and names that do as the value of /S (an action), /Type or /Subtype.
_PDF_REFUSED_NAMES = {
    "/JavaScript": _PDF_JAVASCRIPT,
    "/Launch": _PDF_LAUNCH,
    "/ImportData": _PDF_EMBEDDED,
    "/GoToE": _PDF_EMBEDDED,
    "/EmbeddedFile": _PDF_EMBEDDED,
    "/FileAttachment": _PDF_EMBEDDED,
    "/RichMedia": _PDF_RICH_MEDIA,
    "/RichMediaExecute": _PDF_RICH_MEDIA,
}
_PDF_NAME_KEYS = ("/S", "/Type", "/Subtype")


def _check_pdf(data: bytes, name: str) -> None:
    """Refuse a PDF that does not parse, has no page, needs a password or can run something."""
    from pypdf import PasswordType, PdfReader

    unreadable = (
        f"Tệp “{name}” không được chấp nhận: nội dung không phải tài liệu PDF đọc được (tệp hỏng, "
        "bị cắt dở hoặc chỉ giả dạng PDF). Hãy xuất lại tài liệu ra PDF rồi tải lên lại."
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pypdf warns about every small flaw it repairs
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise UploadError(
                    f"Tệp “{name}” được đặt mật khẩu để mở: nơi nhận không đọc được và hệ thống "
                    "không kiểm tra được nội dung. Hãy gỡ mật khẩu rồi tải lên lại."
                )
            if len(reader.pages) < 1:
                raise UploadError(unreadable)
            found = _pdf_active_content(reader, name)
    except UploadError:
        raise
    except Exception as exc:  # whatever pypdf cannot read, no office should be sent
        raise UploadError(unreadable) from exc
    if found is not None:
        raise UploadError(
            f"Tệp “{name}” bị từ chối: tài liệu PDF {found}. Tệp gửi tới các nơi nhận không được "
            "chứa nội dung tự chạy hay tệp ẩn bên trong; hãy in lại tài liệu ra PDF (chọn máy in "
            "“Microsoft Print to PDF” hoặc “Lưu dưới dạng PDF”) rồi tải lên lại."
        )


def _pdf_active_content(reader: Any, name: str) -> str | None:
    """What a PDF holds that can run or carry a file (a Vietnamese phrase), or None.

    Every object is read: those reachable from the trailer and every one the cross-reference
    tables list, so that an object no page refers to (which a viewer rebuilding a damaged file
    may still find) is checked too. Names arrive decoded (``/J#61vaScript`` is ``/JavaScript``).
    """
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    pending: list[Any] = [reader.trailer]
    for generation, numbers in reader.xref.items():
        pending.extend(IndirectObject(number, generation, reader) for number in numbers)
    pending.extend(IndirectObject(number, 0, reader) for number in reader.xref_objStm)
    seen: set[tuple[int, int]] = set()
    visited = 0
    while pending:
        item = pending.pop()
        if isinstance(item, IndirectObject):
            key = (item.idnum, item.generation)
            if key in seen:
                continue
            seen.add(key)
            item = item.get_object()
        visited += 1
        if visited > MAX_PDF_OBJECTS:
            raise UploadError(
                f"Tệp “{name}” bị từ chối: tài liệu PDF có cấu trúc phức tạp bất thường, không "
                "kiểm tra được. Hãy in lại tài liệu ra PDF rồi tải lên lại."
            )
        if isinstance(item, DictionaryObject):  # streams too: their dictionary is what acts
            for key, value in dict.items(item):  # unresolved: references are followed above
                if key in _PDF_REFUSED_KEYS:
                    return _PDF_REFUSED_KEYS[key]
                if key in _PDF_NAME_KEYS:
                    # "/S 5 0 R" with object 5 being /Launch acts all the same.
                    named = str(value.get_object() if isinstance(value, IndirectObject) else value)
                    if named in _PDF_REFUSED_NAMES:
                        return _PDF_REFUSED_NAMES[named]
                pending.append(value)
        elif isinstance(item, ArrayObject):
            pending.extend(list.__iter__(item))
    return None


# --- Word and Excel -----------------------------------------------------------------------------


def _office_type(data: bytes, name: str) -> FileType:
    """DOCX or XLSX from a ZIP's declared main part, after checking that it is no zip bomb."""
    refused = f"Tệp “{name}” không phải tài liệu Word (DOCX) hay Excel (XLSX) hợp lệ."
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UploadError(refused) from exc
    with archive:
        if len(entries) > MAX_ZIP_ENTRIES:
            raise UploadError(_bomb(name))
        if any(info.flag_bits & 0x1 for info in entries):
            raise UploadError(f"Tệp “{name}” được đặt mật khẩu; hãy gỡ mật khẩu rồi tải lên lại.")
        declared = sum(info.file_size for info in entries)
        budget = min(MAX_UNZIPPED, MAX_RATIO * max(len(data), 1))
        if declared > budget:
            raise UploadError(_bomb(name))
        # The sizes in the ZIP's directory are the file's own claim: inflate every part,
        # counting, and stop as soon as the real total passes the budget. On the way, note
        # any part that is a program and keep the relationship parts to read below.
        total = 0
        relationships: dict[str, bytes] = {}
        try:
            for info in entries:
                first = True
                kept = bytearray()
                keep = info.filename.lower().endswith(".rels")
                with archive.open(info) as part:
                    while chunk := part.read(1024 * 1024):
                        if first and chunk.startswith(_PROGRAM_MAGIC):
                            raise UploadError(_active_office(name, _OFFICE_PROGRAM))
                        first = False
                        total += len(chunk)
                        if total > budget:
                            raise UploadError(_bomb(name))
                        if keep and len(kept) <= MAX_CONTENT_TYPES:
                            kept += chunk
                if keep:
                    relationships[info.filename] = bytes(kept)
            content_types = archive.read("[Content_Types].xml")
        except KeyError as exc:
            raise UploadError(refused) from exc
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            raise UploadError(refused) from exc
        if len(content_types) > MAX_CONTENT_TYPES:
            raise UploadError(refused)
        names = {info.filename for info in entries}
    try:
        root = ET.fromstring(content_types)
    except ET.ParseError as exc:
        raise UploadError(refused) from exc
    declared_types = [element.get("ContentType", "") for element in root]
    found = _office_active_content(names, declared_types, relationships)
    if found is not None:
        raise UploadError(_active_office(name, found))
    for element in root:
        if not element.tag.endswith("Override"):
            continue
        file_type = _OFFICE_MAIN.get(element.get("ContentType", ""))
        part = (element.get("PartName") or "").lstrip("/")
        if file_type is not None and part in names:
            return file_type
    raise UploadError(refused)


# What a Word or Excel file may not carry to the offices, as the clerk is told.
_OFFICE_MACRO = "có macro (VBA)"
_OFFICE_ACTIVEX = "có điều khiển ActiveX"
_OFFICE_EMBEDDED = "có đối tượng nhúng (OLE) hoặc tệp chạy được bên trong"
_OFFICE_PROGRAM = "có một chương trình chạy được bên trong"
_OFFICE_EXTERNAL = "liên kết tới mẫu hoặc đối tượng bên ngoài, được tải về khi mở tệp"
_PROGRAM_MAGIC = (b"MZ", b"\x7fELF")
# Content types (lower case) that only macro-enabled or active documents declare.
_ACTIVE_CONTENT_TYPES = (
    ("macroenabled", _OFFICE_MACRO),
    ("vbaproject", _OFFICE_MACRO),
    ("vbadata", _OFFICE_MACRO),
    ("activex", _OFFICE_ACTIVEX),
    ("oleobject", _OFFICE_EMBEDDED),
)
# Embedded packages Word and Excel keep for charts and linked tables, which cannot hold macros.
_EMBEDDED_PACKAGES = (".docx", ".xlsx", ".pptx")
# Relationship types (their last segment) that run or fetch something.
_ACTIVE_RELATIONSHIPS = {
    "vbaproject": _OFFICE_MACRO,
    "wordvbadata": _OFFICE_MACRO,
    "activexcontrol": _OFFICE_ACTIVEX,
    "activexcontrolbinary": _OFFICE_ACTIVEX,
    "oleobject": _OFFICE_EMBEDDED,
}
# … and those that, pointing outside the file, are fetched when it is opened.
_EXTERNAL_RELATIONSHIPS = frozenset(
    {"attachedtemplate", "oleobject", "subdocument", "frame", "package", "control"}
)


def _office_active_content(
    names: set[str], content_types: list[str], relationships: dict[str, bytes]
) -> str | None:
    """What a DOCX/XLSX holds that runs or fetches something when opened, or None: a VBA
    project, a macro-enabled content type (a .docm under another name), ActiveX, an OLE object
    or anything else embedded but a macro-free Office package, a link to an outside template."""
    for part in names:
        lowered = part.lower()
        if lowered.endswith(("vbaproject.bin", "vbadata.xml")):
            return _OFFICE_MACRO
        if "/activex/" in f"/{lowered}":
            return _OFFICE_ACTIVEX
        if "/embeddings/" in f"/{lowered}" and not lowered.endswith(_EMBEDDED_PACKAGES):
            return _OFFICE_EMBEDDED
    for content_type in content_types:
        lowered = content_type.lower()
        for marker, found in _ACTIVE_CONTENT_TYPES:
            if marker in lowered:
                return found
    for data in relationships.values():
        try:
            root = ET.fromstring(data)
        except ET.ParseError:
            return _OFFICE_EMBEDDED  # Word would not open it either; nothing to check it by
        for element in root:
            kind = (element.get("Type") or "").rstrip("/").rsplit("/", 1)[-1].lower()
            if kind in _ACTIVE_RELATIONSHIPS:
                return _ACTIVE_RELATIONSHIPS[kind]
            external = (element.get("TargetMode") or "").lower() == "external"
            if external and kind in _EXTERNAL_RELATIONSHIPS:
                return _OFFICE_EXTERNAL
    return None


def _active_office(name: str, found: str) -> str:
    return (
        f"Tệp “{name}” bị từ chối: tài liệu {found}. Tệp gửi tới các nơi nhận không được chứa gì "
        "tự chạy khi mở; hãy lưu lại thành tệp Word (.docx) hoặc Excel (.xlsx) thường, bỏ macro "
        "và đối tượng nhúng, rồi tải lên lại."
    )


def _bomb(name: str) -> str:
    return (
        f"Tệp “{name}” bị từ chối: khi giải nén, dung lượng tăng bất thường (nghi là “zip bomb”). "
        "Hãy lưu lại tài liệu bằng Word hoặc Excel rồi tải lên lại."
    )


# --- names ------------------------------------------------------------------------------------


def sanitise_filename(name: str, file_type: FileType | None = None) -> str:
    """A safe file name: no folders, NFC, Vietnamese letters kept, the extension of its type."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]  # a browser may send "C:\\Users\\…\\tệp.pdf"
    name = _UNSAFE.sub("_", name)
    name = " ".join(name.split()).strip(" .")
    stem, dot, raw = name.rpartition(".")
    # "v1.2" ends in a version, not an extension: an extension is short and has a letter.
    if not dot or not (len(raw) <= 5 and raw.isascii() and raw.isalnum() and not raw.isdigit()):
        stem, raw = name, ""
    extension = f".{raw.lower()}" if raw else ""
    if file_type is not None and extension not in file_type.extensions:
        # The content decides: "so-do.pdf" holding a PNG is kept as "so-do.png", so that no
        # program on the receiving side opens a PNG as a PDF.
        extension = file_type.extension
    stem = stem.strip(" .")[: MAX_NAME - len(extension)].rstrip(" .") or "tep-dinh-kem"
    return f"{stem}{extension}"


# --- where files live -------------------------------------------------------------------------


def max_upload() -> int:
    """The largest file accepted, in bytes (``DISPATCH_MAX_UPLOAD`` → ``MAX_CONTENT_LENGTH``)."""
    return int(current_app.config.get("MAX_CONTENT_LENGTH") or DEFAULT_MAX_UPLOAD)


def human_size(size: int) -> str:
    """'20 MB', '512 KB' — sizes as clerks read them."""
    if size >= 1024 * 1024:
        value = size / (1024 * 1024)
        return f"{value:.0f} MB" if value >= 10 or value.is_integer() else f"{value:.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} byte"


def mail_max_bytes() -> int:
    """The largest letter e-mail, in bytes of files (``DISPATCH_MAIL_MAX_BYTES``)."""
    return int(current_app.config.get("DISPATCH_MAIL_MAX_BYTES") or DEFAULT_MAIL_MAX_BYTES)


@dataclass(frozen=True)
class MailRoom:
    """How much of one letter e-mail a draft's files take, and what is left for more."""

    limit: int  # the cap of one e-mail
    letter: int  # kept for the letter's PDF and DOCX
    attachments: int  # the draft's files

    @property
    def left(self) -> int:
        """Bytes a further attachment may still have."""
        return max(self.limit - self.letter - self.attachments, 0)

    @property
    def over(self) -> bool:
        """Whether the draft's files already leave too little room for the letter."""
        return self.letter + self.attachments > self.limit

    def describe(self) -> str:
        """The room as the composer states it (Vietnamese)."""
        return (
            f"Mỗi thư gửi tới nơi nhận (công văn PDF, DOCX và các tệp gửi kèm) tối đa "
            f"{human_size(self.limit)}; các tệp đã tải lên chiếm {human_size(self.attachments)}, "
            f"còn trống {human_size(self.left)} cho tệp gửi kèm "
            f"(đã dành {human_size(self.letter)} cho bản PDF và DOCX của công văn)."
        )

    def over_message(self) -> str:
        """Why the draft cannot go out as it is (Vietnamese)."""
        return (
            f"Các tệp gửi kèm chiếm {human_size(self.attachments)}: cùng công văn (PDF, DOCX), "
            f"thư gửi đi sẽ vượt giới hạn {human_size(self.limit)} của một thư. "
            "Hãy gỡ bớt hoặc nén tệp gửi kèm."
        )


def mail_room(dispatch_id: int | None, names: list[str]) -> MailRoom:
    """The room a draft's files (``names``, as its source lists them) leave in one e-mail."""
    used = sum(f.size for f in stored_files(dispatch_id, names)) if dispatch_id else 0
    return MailRoom(limit=mail_max_bytes(), letter=LETTER_ALLOWANCE, attachments=used)


def too_large_message() -> str:
    """What a clerk is told when a request is over the size limit."""
    return (
        f"Tệp tải lên quá lớn: mỗi lần gửi tối đa {human_size(max_upload())}. "
        "Hãy nén hoặc chia nhỏ tệp rồi tải lên lại."
    )


def upload_root(dispatch_id: int) -> Path:
    """The draft's folder of uploads: ``DISPATCH_DATA_DIR/uploads/<id>``."""
    return data_dir() / UPLOADS_FOLDER / str(dispatch_id)


def attachments_dir(dispatch_id: int) -> Path:
    """Where the draft's files are kept."""
    return upload_root(dispatch_id) / ATTACHMENTS_FOLDER


def discard_uploads(dispatch_id: int) -> None:
    """Remove a deleted draft's folder of uploads (nothing if it never had one)."""
    shutil.rmtree(upload_root(dispatch_id), ignore_errors=True)


def letter_root(dispatch_id: int) -> Path | None:
    """The ``project_root`` under which ``build_letter`` finds this draft's attachments.

    None (the project's own ``attachments/``) for a draft that never had a file uploaded, such
    as one created by ``dispatch draft create`` from a folder.
    """
    return upload_root(dispatch_id) if attachments_dir(dispatch_id).is_dir() else None


def attachments_of(source: Mapping[str, Any] | None) -> list[str]:
    """The attachment names a stored letter source lists."""
    meta = (source or {}).get("meta")
    names = meta.get("attachments") if isinstance(meta, dict) else None
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def stored_files(dispatch_id: int, names: list[str]) -> list[StoredFile]:
    """The draft's listed attachments that are on disk, in the listed order."""
    from dispatch.config import PROJECT_ROOT

    folder = (letter_root(dispatch_id) or PROJECT_ROOT) / ATTACHMENTS_FOLDER
    files = []
    for name in names:
        path = folder / name
        if not path.is_file():
            continue
        kind = _kind_from_name(name)
        files.append(StoredFile(name, path.stat().st_size, kind.media_type, kind.label))
    return files


def _kind_from_name(name: str) -> FileType:
    # Names are ours: ``add_attachment`` gave each the extension of its checked content.
    for kind in (PDF, PNG, JPEG, DOCX):
        if name.lower().endswith(kind.extensions):
            return kind
    return XLSX


def _write(path: Path, data: bytes) -> None:
    """Write a file atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def adopt_project_attachments(dispatch_id: int, names: list[str]) -> None:
    """Copy the project attachments a draft made from a folder lists into its own uploads.

    Called before the first upload to such a draft: from then on its files are looked for in
    its uploads folder only, so the ones it already carried must be there too.
    """
    from dispatch.config import PROJECT_ROOT

    folder = attachments_dir(dispatch_id)
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = (PROJECT_ROOT / "attachments" / name).resolve()
        if source.is_file() and source.is_relative_to((PROJECT_ROOT / "attachments").resolve()):
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


# --- changing a draft's files -----------------------------------------------------------------


def add_attachment(
    dispatch_id: int, filename: str, data: bytes, *, actor: User | None, at: dt.datetime
) -> StoredFile:
    """Check a file by its content, keep it with the draft and list it in the letter source.

    The caller commits; ``UploadError`` (nothing kept) for a refused file and ``DispatchFrozen``
    for an issued dispatch.
    """
    dispatch = lock_dispatch(dispatch_id)
    ensure_editable(dispatch)
    shown = unicodedata.normalize("NFC", re.split(r"[/\\]", filename or "")[-1]) or "tệp"
    if refused := refused_characters_message(shown):
        # "bao-cao<U+202E>fdp.docx" reads "bao-caoxcod.pdf" in a mail client: a Word file
        # dressed as a PDF. The message shows the name without the characters.
        raise UploadError(
            f"Tên tệp “{without_refused_characters(shown)}” {refused}; "
            "hãy đổi tên tệp rồi tải lên lại."
        )
    if len(data) > max_upload():
        raise UploadError(
            f"Tệp “{shown}” dài {human_size(len(data))}, vượt giới hạn {human_size(max_upload())}."
        )
    names = attachments_of(dispatch.source)
    # With the dispatch locked, so two uploads at once cannot both take the last room.
    room = mail_room(dispatch_id, names)
    if len(data) > room.left:
        raise UploadError(
            f"Không thêm được tệp “{shown}” ({human_size(len(data))}): mỗi thư gửi tới nơi nhận "
            f"tối đa {human_size(room.limit)}, gồm công văn (dành {human_size(room.letter)} cho "
            f"bản PDF và DOCX) và các tệp gửi kèm; các tệp đã tải lên chiếm "
            f"{human_size(room.attachments)}, chỉ còn trống {human_size(room.left)}. Các tệp đã "
            "tải lên vẫn được giữ; hãy nén hoặc chia nhỏ tệp này, hoặc gỡ bớt tệp khác."
        )
    file_type = detect_type(data, shown)
    adopt_project_attachments(dispatch_id, names)
    folder = attachments_dir(dispatch_id)
    taken = {n.casefold() for n in names} | {p.name.casefold() for p in folder.iterdir()}
    name = sanitise_filename(filename, file_type)
    name = _unique_casefold(name, taken)
    _write(folder / name, data)
    list_attachments(dispatch, [*names, name], at=at)
    audit.record_dispatch(
        "dispatch.attachment_added",
        dispatch.id,
        actor=actor_name(actor),
        at=at,
        details={
            "filename": name,
            "uploaded_as": shown[:200],
            "media_type": file_type.media_type,
            "size": len(data),
        },
    )
    db.session.flush()
    return StoredFile(name, len(data), file_type.media_type, file_type.label)


def _unique_casefold(name: str, taken: set[str]) -> str:
    # Case-insensitive, so two names never collide on a case-insensitive disk or archive.
    candidate = name
    counter = 2
    stem, dot, extension = name.rpartition(".")
    while candidate.casefold() in taken:
        candidate = f"{stem}-{counter}.{extension}" if dot else f"{name}-{counter}"
        counter += 1
    return candidate


def remove_attachment(dispatch_id: int, name: str, *, actor: User | None, at: dt.datetime) -> bool:
    """Take a file off the draft (list and disk); False if it was not there. The caller commits."""
    dispatch = lock_dispatch(dispatch_id)
    ensure_editable(dispatch)
    names = attachments_of(dispatch.source)
    if name not in names:
        return False
    list_attachments(dispatch, [n for n in names if n != name], at=at)
    path = attachments_dir(dispatch_id) / name
    if path.resolve().is_relative_to(attachments_dir(dispatch_id).resolve()):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    audit.record_dispatch(
        "dispatch.attachment_removed",
        dispatch.id,
        actor=actor_name(actor),
        at=at,
        details={"filename": name},
    )
    db.session.flush()
    return True
