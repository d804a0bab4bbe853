"""The archive: the exact bytes of every issued document, on disk under ``DISPATCH_DATA_DIR``.

Each dispatch has its folder ``dispatches/<id>/``. A file is written to a temporary name in that
folder, flushed to disk (fsync), then renamed into place (atomic on POSIX), and made read-only,
so a crash leaves either the whole file or none under the final name. The caller records the
``Document`` row in its transaction; if that transaction fails, ``ArchiveWriter.discard`` removes
what was written, so the archive holds only documents the database knows.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
import shutil
import stat
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from flask import current_app

READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH  # 0o444

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


class ArchiveError(RuntimeError):
    """The archive cannot be written, or a file cannot be read back as it was archived: missing,
    outside the data folder, or altered. The message is for clerks (Vietnamese).

    ``found``: when the file is there but its SHA-256 is not the recorded one, its bytes as they
    are now (the evidence package shows them); None otherwise.
    """

    def __init__(self, message: str, *, found: bytes | None = None) -> None:
        super().__init__(message)
        self.found = found


@dataclass(frozen=True)
class ArchivedFile:
    """A file written to the archive: where (relative to the data folder) and what."""

    path: str
    filename: str
    sha256: str
    size: int


def data_dir() -> Path:
    """The root of the archive (``DISPATCH_DATA_DIR``)."""
    return Path(current_app.config["DISPATCH_DATA_DIR"])


def dispatch_folder(dispatch_id: int) -> str:
    """The folder of a dispatch's files, relative to the data folder."""
    return f"dispatches/{dispatch_id}"


def safe_filename(name: str) -> str:
    """A name usable as a file name on any system, keeping Vietnamese letters (NFC)."""
    name = _UNSAFE.sub("_", unicodedata.normalize("NFC", name)).strip(" .")
    return name[:200] or "tep"


def read_archived(path: str | None, sha256: str | None) -> bytes:
    """The bytes archived under ``path`` (relative to the data folder), exactly those whose
    SHA-256 was recorded as ``sha256``; ``ArchiveError`` for anything else.

    The one way to read an archived file back (a document, a kept e-mail): what the recorded
    hash vouches for is never handed out as other bytes.
    """
    if not path:
        raise ArchiveError("Tệp lưu trữ không có đường dẫn.")
    root = data_dir().resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise ArchiveError(f"Tệp lưu trữ {path} nằm ngoài thư mục lưu trữ.")
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"Không đọc được tệp lưu trữ {path}: {exc.strerror}") from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ArchiveError(f"Tệp lưu trữ {path} đã bị thay đổi (SHA-256 không khớp).", found=data)
    return data


SENT_FOLDER = "sent"


def sent_message_name(outbox_id: int) -> str:
    """The file name under which an accepted e-mail is kept in its dispatch's sent folder."""
    return f"{outbox_id}.eml"


def sent_message_temporary_name(outbox_id: int) -> str:
    """The temporary name an e-mail's copy is written under before it is renamed into place:
    fixed, so that one a killed sender left behind is replaced by the next write."""
    return f".tmp-{outbox_id}.eml"


def sent_message_path(dispatch_id: int, outbox_id: int) -> str:
    """Where the exact bytes of an accepted e-mail are kept, relative to the data folder."""
    return f"{dispatch_folder(dispatch_id)}/{SENT_FOLDER}/{sent_message_name(outbox_id)}"


def sent_messages_writer(dispatch_id: int) -> ArchiveWriter:
    """The writer that keeps the bytes of a dispatch's accepted e-mails, read-only, for the
    evidence package (each under ``sent_message_name``)."""
    return ArchiveWriter(dispatch_id, SENT_FOLDER, undoable=False)


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk too.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArchiveWriter:
    """Writes one dispatch's files, and can take them all back if the issue fails.

    ``undoable=False``: a writer that never takes its files back (the kept e-mails of a run
    to thousands of offices), so it does not remember them.
    """

    def __init__(
        self, dispatch_id: int, subfolder: str | None = None, *, undoable: bool = True
    ) -> None:
        self.undoable = undoable
        self.root = data_dir()
        self.relative_folder = dispatch_folder(dispatch_id)
        if subfolder:
            self.relative_folder += f"/{subfolder}"
        self.folder = self.root / self.relative_folder
        self._written: list[Path] = []
        self._created_folders: list[Path] = []
        self._folder_made = False

    def _make_folder(self) -> None:
        if self._folder_made:
            return
        missing: list[Path] = []
        current = self.folder
        while not current.exists():
            missing.append(current)
            current = current.parent
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(
                f"Không tạo được thư mục lưu trữ {self.folder}: {exc.strerror}. "
                "Kiểm tra DISPATCH_DATA_DIR và quyền ghi."
            ) from exc
        self._created_folders.extend(missing)
        self._folder_made = True

    def write(
        self,
        filename: str,
        data: bytes,
        *,
        sha256: str | None = None,
        sync_folder: bool = True,
        temporary: str | None = None,
    ) -> ArchivedFile:
        """Write ``data`` under ``filename`` atomically and read-only; return what was written.

        ``sha256``: the data's, when the caller has it already. ``sync_folder=False`` leaves the
        folder's entry to ``sync_folder()`` (once after many files): until then a crash may lose
        the name of a file whose bytes are on disk. ``temporary``: the name to write under
        before the rename (a file left under it by a writer that died is replaced), instead of
        a new random one.
        """
        filename = safe_filename(filename)
        self._make_folder()
        target = self.folder / filename
        tmp_name: str | None = None
        try:
            if temporary is None:
                fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)
            else:
                leftover = str(self.folder / temporary)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
                fd = os.open(leftover, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                tmp_name = leftover
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, READ_ONLY)
            # A file already under this name is a leftover of an issue that crashed before its
            # commit (a committed one is never re-issued): the new bytes replace it.
            os.replace(tmp_name, target)
            tmp_name = None
            if self.undoable:
                self._written.append(target)
            if sync_folder:
                _fsync_dir(self.folder)
        except OSError as exc:
            raise ArchiveError(
                f"Không ghi được tệp lưu trữ {target}: {exc.strerror}. "
                "Kiểm tra DISPATCH_DATA_DIR, quyền ghi và dung lượng đĩa."
            ) from exc
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
        return ArchivedFile(
            path=f"{self.relative_folder}/{filename}",
            filename=filename,
            sha256=sha256 or hashlib.sha256(data).hexdigest(),
            size=len(data),
        )

    def sync_folder(self) -> None:
        """Make the folder's entries (the files written with ``sync_folder=False``) durable."""
        try:
            _fsync_dir(self.folder)
        except OSError as exc:
            raise ArchiveError(
                f"Không ghi được thư mục lưu trữ {self.folder}: {exc.strerror}."
            ) from exc

    def discard(self) -> None:
        """Remove every file written, and the folders created, by this writer."""
        for path in reversed(self._written):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._written.clear()
        for folder in self._created_folders:  # deepest first
            if folder.exists() and not any(folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)
        self._created_folders.clear()


INBOUND_FOLDER = "inbound"


def inbound_message_path(sha256: str, received_at: datetime.datetime, suffix: str = ".eml") -> str:
    """Where an inbound e-mail (or edXML file, ``suffix`` ".xml") is kept as received, relative
    to the data folder: by month of arrival (UTC), named by the SHA-256 of its bytes."""
    month = received_at.astimezone(datetime.UTC).strftime("%Y-%m")
    return f"{INBOUND_FOLDER}/{month}/{sha256}{suffix}"


def keep_inbound(
    data: bytes, sha256: str, received_at: datetime.datetime, suffix: str = ".eml"
) -> str:
    """Keep an inbound message's exact bytes, read-only, written atomically; its path.

    Named by its SHA-256, so keeping the same message twice (a door that hands it over again)
    writes the same file: an existing one with the right bytes is left as it is.
    """
    path = inbound_message_path(sha256, received_at, suffix)
    target = data_dir() / path
    if target.is_file():
        with contextlib.suppress(ArchiveError):
            read_archived(path, sha256)
            return path
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, READ_ONLY)
            os.replace(tmp_name, target)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        _fsync_dir(folder)
    except OSError as exc:
        raise ArchiveError(
            f"Không ghi được thư đến vào lưu trữ {target}: {exc.strerror}. "
            "Kiểm tra DISPATCH_DATA_DIR, quyền ghi và dung lượng đĩa."
        ) from exc
    return path
