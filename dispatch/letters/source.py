"""Reading a letter source: a folder with ``letter.md`` (YAML front matter + Markdown body) and one
Markdown file per appendix, into the ``Letter`` model the renderers print.

Two forms of the same source exist. ``LetterSource`` is the raw, editable form (what the clerk
wrote; JSON-safe, stored in the database and edited by the web composer). ``Letter`` is the
validated, typed form. ``read_source`` reads a folder into the first, ``build_letter`` checks it
and builds the second, ``load_letter`` does both. Every problem is a ``LetterSourceError`` that
names the file and the line, in Vietnamese, for the clerk who has to fix it.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import mimetypes
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dispatch.letters.formatting import ROMAN, appendix_numeral
from dispatch.letters.markup import MarkupError, check_closing, parse_blocks
from dispatch.letters.model import (
    Appendix,
    Attachment,
    Authority,
    Block,
    BlockKind,
    Letter,
    Signer,
    Urgency,
)
from dispatch.text import refused_characters_message

LETTER_FILE = "letter.md"
FRONT_MATTER_FENCE = "---"

# The keys of letter.md's front matter, with the Vietnamese name used in error messages.
LETTER_KEYS: dict[str, str] = {
    "parent_agency": "cơ quan chủ quản",
    "issuing_agency": "cơ quan ban hành",
    "symbol": "ký hiệu",
    "place": "địa danh",
    "date": "ngày ban hành",
    "number": "số",
    "subject": "trích yếu",
    "addressees": "Kính gửi",
    "signer": "người ký",
    "distribution": "Nơi nhận",
    "urgency": "độ khẩn",
    "appendices": "phụ lục",
    "attachments": "tài liệu gửi kèm",
}
REQUIRED_KEYS = (
    "parent_agency",
    "issuing_agency",
    "symbol",
    "place",
    "date",
    "subject",
    "addressees",
    "signer",
    "distribution",
)
SIGNER_KEYS: dict[str, str] = {
    "authority": "quyền hạn ký",
    "acting_for": "chức vụ của người đứng đầu",
    "title": "chức vụ",
    "name": "họ và tên",
}
APPENDIX_KEYS: dict[str, str] = {"title": "tên phụ lục"}

# Limits of the electronic document metadata (Decree 30, Phụ lục VI).
MAX_SYMBOL = 30
MAX_SUBJECT = 500
MAX_SIGNER_NAME = 50
MAX_SIGNER_TITLE = 100
MAX_AGENCY = 200
# Not fixed by the decree; generous bounds that still catch a pasted paragraph.
MAX_PLACE = 100
MAX_LIST_ITEM = 200
MAX_APPENDIX_TITLE = 500
MAX_NUMBER = 10**11 - 1  # CodeNumber is at most 11 characters
# Bounds that keep rendering one letter to seconds, far above any real công văn: WeasyPrint
# takes about 25 s for one 200,000-character paragraph and 15 s for 5,000 list items, and a
# letter is issued from a web request. At these bounds a body renders in about 4 s.
MAX_BODY_CHARS = 50_000  # the letter's body, or one appendix's
MAX_BODY_BLOCKS = 1_000  # paragraphs, headings, list items and table rows of one body
MAX_LETTER_CHARS = 150_000  # the body and every appendix together
MAX_FILE_BYTES = 1_000_000  # a source file, checked before it is decoded


def _count(value: int) -> str:
    """50.000: thousands grouped with dots, as Vietnamese writes them."""
    return f"{value:,}".replace(",", ".")


URGENCIES = {
    "khẩn": Urgency.URGENT,
    "thượng khẩn": Urgency.VERY_URGENT,
    "hỏa tốc": Urgency.IMMEDIATE,
    "hoả tốc": Urgency.IMMEDIATE,
}
# The decree forbids academic titles before the signer's name.
ACADEMIC_TITLES = ("GS.", "PGS.", "TS.", "TSKH.", "ThS.", "KS.", "BS.", "CN.")

KeyPath = tuple[str | int, ...]


class LetterSourceError(ValueError):
    """A malformed letter source: ``path`` (file or draft), 1-based ``line`` (or None), message."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        super().__init__(str(path), line, message)
        self.path = str(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class FilePositions:
    """Where things are in one source file, for error messages."""

    file: str  # the file as messages name it
    closing_line: int  # the front matter's closing "---" (where a missing key would go)
    body_offset: int  # lines of the file before the Markdown body
    key_lines: Mapping[KeyPath, int]  # ("signer", "name") -> 12, ("addressees", 1) -> 9


@dataclass(frozen=True)
class SourcePositions:
    """Positions of a source read from a folder."""

    folder: Path
    letter: FilePositions
    appendices: tuple[FilePositions, ...]


@dataclass
class LetterSource:
    """The raw, editable form of a letter: what the clerk wrote, JSON-safe."""

    meta: dict  # the letter.md front matter (plain JSON-able values; dates as ISO strings)
    body: str  # letter.md's Markdown body
    appendices: list[dict]  # [{"title": str, "body": str, "file": "phu-luc-1.md"}] in order
    origin: str  # for error messages: the folder path, or "bản nháp 12"
    # Only for a source read from files; the JSON form reports lines relative to each body.
    positions: SourcePositions | None = field(default=None, compare=False, repr=False)


# --- error locations -------------------------------------------------------------------------


class _Where:
    """Builds errors for one file (or one part of a draft) with the best line it knows."""

    def __init__(self, label: str, positions: FilePositions | None) -> None:
        self.label = label
        self.positions = positions

    def key(self, path: KeyPath, message: str) -> LetterSourceError:
        """An error about the value at ``path``, on that key's line (or its parent's)."""
        line = None
        if self.positions is not None:
            probe = path
            while probe and line is None:
                line = self.positions.key_lines.get(probe)
                probe = probe[:-1]
            if line is None:
                line = self.positions.closing_line
        return LetterSourceError(self.label, line, message)

    def missing(self, path: KeyPath, message: str) -> LetterSourceError:
        """A missing key: on its parent's line, or the front matter's closing line."""
        if len(path) > 1:
            return self.key(path[:-1], message)
        line = None if self.positions is None else self.positions.closing_line
        return LetterSourceError(self.label, line, message)

    def body(self, line: int, message: str) -> LetterSourceError:
        """An error at ``line`` (1-based) of the Markdown body."""
        offset = 0 if self.positions is None else self.positions.body_offset
        return LetterSourceError(self.label, line + offset, message)


def _dotted(path: KeyPath) -> str:
    """'signer.name', or 'addressees" mục 2' style for list items (counted from 1 for clerks)."""
    names = ".".join(str(part) for part in path if isinstance(part, str))
    items = "".join(f", mục {part + 1}" for part in path if isinstance(part, int))
    return names + items


def _named(path: KeyPath, names: Mapping[str, str]) -> str:
    """'“subject” (trích yếu)' for messages."""
    label = names.get(str(path[-1]), "") if path else ""
    if path == ("title",):  # an appendix's own front matter
        label = APPENDIX_KEYS["title"]
    return f"“{_dotted(path)}”" + (f" ({label})" if label else "")


# --- reading files ---------------------------------------------------------------------------


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _normalise_text(text: str) -> str:
    """NFC, Unix newlines, no byte-order mark: the form every later step assumes."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.startswith("\ufeff"):
        text = text[1:]
    return _nfc(text)


def _read_text(path: Path, label: str) -> str:
    """The file's text, or an error naming the line of the first byte that is not UTF-8."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LetterSourceError(
                label,
                None,
                f"tệp dài {_count(size)} byte, tối đa {_count(MAX_FILE_BYTES)} byte; "
                "hãy gửi phần dài dưới dạng tài liệu kèm theo",
            )
        data = path.read_bytes()
    except OSError as exc:
        raise LetterSourceError(label, None, f"không đọc được tệp ({exc.strerror})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LetterSourceError(
            label,
            line,
            f"tệp không phải văn bản UTF-8 hợp lệ (byte 0x{data[exc.start]:02X}); "
            "hãy lưu lại tệp với bảng mã UTF-8",
        ) from exc
    return _normalise_text(text)


@dataclass(frozen=True)
class _Parsed:
    """A Markdown file split into its front matter and body."""

    meta: dict
    body: str
    positions: FilePositions


def _split_front_matter(text: str, label: str) -> tuple[str, int, str]:
    """Return (YAML text, index of the closing fence line, body) of a file with front matter."""
    lines = text.split("\n")
    if lines[0].rstrip() != FRONT_MATTER_FENCE:
        raise LetterSourceError(
            label,
            1,
            f"thiếu phần khai báo ở đầu tệp: dòng đầu tiên phải là “{FRONT_MATTER_FENCE}”, "
            f"tiếp theo là các trường, rồi một dòng “{FRONT_MATTER_FENCE}” đóng lại",
        )
    for index in range(1, len(lines)):
        if lines[index].rstrip() == FRONT_MATTER_FENCE:
            return "\n".join(lines[1:index]), index, "\n".join(lines[index + 1 :])
    raise LetterSourceError(
        label, 1, f"phần khai báo mở ở dòng 1 nhưng không có dòng “{FRONT_MATTER_FENCE}” đóng lại"
    )


# PyYAML's messages for the mistakes clerks make most, said in Vietnamese.
_YAML_PROBLEMS = {
    "mapping values are not allowed here": (
        "dấu hai chấm không đúng chỗ (giá trị có chứa “: ” phải đặt trong ngoặc kép)"
    ),
    "found character '\\t' that cannot start any token": "không dùng phím Tab để thụt lề",
    "could not find expected ':'": "thiếu dấu hai chấm sau tên trường",
    "found an alias": "không dùng tham chiếu YAML (*tên) trong phần khai báo",
}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses aliases where they appear.

    An alias (``*name``) makes one line stand for a whole earlier tree; refusing it keeps
    "billion laughs" documents out and lets the error point at the alias itself.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "found an alias", event.start_mark)
        return super().compose_node(parent, index)


def _yaml_error(exc: yaml.YAMLError, label: str, first_line: int, text: str) -> LetterSourceError:
    """Turn a PyYAML error into ours, on the file line PyYAML points at."""
    line = first_line
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line = first_line + mark.line
        problem = exc.problem or exc.context or "lỗi cú pháp"
    elif isinstance(exc, yaml.reader.ReaderError):
        line = first_line + text[: exc.position].count("\n")
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        problem = f"ký tự không được phép U+{code:04X}"
        return LetterSourceError(label, line, f"phần khai báo có {problem}")
    else:
        problem = str(exc)
    problem = problem.strip()
    explained = _YAML_PROBLEMS.get(problem)
    message = explained if explained else f"cú pháp YAML sai: {problem}"
    return LetterSourceError(label, line, f"phần khai báo không hợp lệ: {message}")


class _YamlReader:
    """Composes the YAML node tree (for line numbers) and turns it into plain values."""

    def __init__(self, text: str, label: str, first_line: int) -> None:
        self.text = text
        self.label = label
        self.first_line = first_line
        self.key_lines: dict[KeyPath, int] = {}
        self.seen: set[int] = set()

    def line(self, node: yaml.Node) -> int:
        return self.first_line + node.start_mark.line

    def fail(self, node: yaml.Node, message: str) -> LetterSourceError:
        return LetterSourceError(self.label, self.line(node), message)

    def read(self) -> dict:
        loader = None
        try:
            try:
                # The reader checks for forbidden characters already while it is built.
                loader = _Loader(self.text)
                node = loader.get_single_node()
            except yaml.YAMLError as exc:
                raise _yaml_error(exc, self.label, self.first_line, self.text) from exc
            except RecursionError as exc:
                raise LetterSourceError(
                    self.label, self.first_line, "phần khai báo lồng nhau quá sâu"
                ) from exc
            if node is None:
                return {}
            if not isinstance(node, yaml.MappingNode):
                raise self.fail(node, "phần khai báo phải gồm các trường dạng tên: giá trị")
            try:
                return self.plain(loader, node, ())
            except RecursionError as exc:
                raise LetterSourceError(
                    self.label, self.first_line, "phần khai báo lồng nhau quá sâu"
                ) from exc
        finally:
            if loader is not None:
                loader.dispose()

    def plain(self, loader: _Loader, node: yaml.Node, path: KeyPath) -> Any:
        """The node as JSON-able data; remember the line of every key and list item."""
        if id(node) in self.seen:
            # The loader refuses aliases already; a node met twice must still never expand.
            raise self.fail(node, "không dùng tham chiếu YAML (&tên, *tên) trong phần khai báo")
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                raise self.fail(node, f"kiểu dữ liệu YAML không được hỗ trợ ({node.tag})")
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in (
                    "tag:yaml.org,2002:str",
                    "tag:yaml.org,2002:merge",
                ):
                    raise self.fail(key_node, "tên trường phải là chữ")
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self.fail(key_node, "không dùng “<<” (gộp trường) trong phần khai báo")
                key = key_node.value
                if key in result:
                    raise self.fail(key_node, f"trường “{key}” khai báo hai lần")
                self.key_lines[(*path, key)] = self.line(key_node)
                result[key] = self.plain(loader, value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise self.fail(node, f"kiểu dữ liệu YAML không được hỗ trợ ({node.tag})")
            items = []
            for index, item in enumerate(node.value):
                self.key_lines[(*path, index)] = self.line(item)
                items.append(self.plain(loader, item, (*path, index)))
            return items
        return self.scalar(loader, node)

    def scalar(self, loader: _Loader, node: yaml.ScalarNode) -> Any:
        if node.tag == "tag:yaml.org,2002:int" and node.value.isascii() and node.value.isdigit():
            # YAML 1.1 reads "010" as octal 8; a clerk writing a number means decimal.
            return int(node.value, 10)
        try:
            value = loader.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            if node.tag == "tag:yaml.org,2002:timestamp":
                # "2021-02-30": keep the text, the date check says what is wrong with it.
                return _nfc(node.value)
            raise self.fail(node, f"giá trị “{node.value}” không hợp lệ") from exc
        if isinstance(value, dt.date):
            # Plain JSON-able data: dates are kept as their ISO text.
            return value.isoformat()
        if isinstance(value, str):
            return _nfc(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        raise self.fail(node, f"kiểu dữ liệu YAML không được hỗ trợ ({node.tag})")


def _parse_file(path: Path, label: str, keys: Mapping[str, str]) -> _Parsed:
    """Read a Markdown file with front matter; check its keys are known ones."""
    text = _read_text(path, label)
    yaml_text, closing_index, body = _split_front_matter(text, label)
    reader = _YamlReader(yaml_text, label, first_line=2)
    meta = reader.read()
    positions = FilePositions(
        file=label,
        closing_line=closing_index + 1,
        body_offset=closing_index + 1,
        key_lines=reader.key_lines,
    )
    where = _Where(label, positions)
    for key in meta:
        if key not in keys:
            raise where.key((key,), _unknown_key(key, keys))
    return _Parsed(meta, body, positions)


def _unknown_key(key: str, keys: Mapping[str, str]) -> str:
    guess = difflib.get_close_matches(key, list(keys), n=1)
    hint = f" (có phải “{guess[0]}”?)" if guess else ""
    return f"trường không được hỗ trợ “{key}”{hint}; các trường hợp lệ: {', '.join(keys)}"


def read_source(folder: Path) -> LetterSource:
    """Read a letter folder (letter.md and its appendix files) into its editable form."""
    folder = Path(folder)
    letter_path = folder / LETTER_FILE
    label = str(letter_path)
    if not folder.is_dir():
        raise LetterSourceError(folder, None, "không tìm thấy thư mục công văn")
    if not letter_path.is_file():
        raise LetterSourceError(label, None, f"không tìm thấy tệp {LETTER_FILE}")
    letter = _parse_file(letter_path, label, LETTER_KEYS)
    where = _Where(label, letter.positions)

    names = letter.meta.get("appendices")
    if names is None:
        names = []
    if not isinstance(names, list):
        raise where.key(("appendices",), _wrong_type(("appendices",), "một danh sách tên tệp"))
    if len(names) > len(ROMAN):
        raise where.key(("appendices",), f"một công văn có tối đa {len(ROMAN)} phụ lục")
    appendices: list[dict] = []
    appendix_positions: list[FilePositions] = []
    seen: set[Path] = set()
    resolved_folder = folder.resolve()
    for index, name in enumerate(names):
        path = ("appendices", index)
        if not isinstance(name, str) or not name.strip():
            raise where.key(path, _wrong_type(path, "tên một tệp .md trong thư mục công văn"))
        name = name.strip()
        file = folder / name
        if file.suffix != ".md":
            raise where.key(path, f"tệp phụ lục “{name}” phải là tệp Markdown (.md)")
        try:
            resolved = file.resolve()
            inside = not Path(name).is_absolute() and resolved.is_relative_to(resolved_folder)
            exists, is_file = file.exists(), file.is_file()
        except (OSError, ValueError) as exc:  # a NUL byte or an over-long name
            raise where.key(path, f"tên tệp phụ lục “{name}” không hợp lệ") from exc
        if not inside:
            raise where.key(path, f"tệp phụ lục “{name}” phải nằm trong thư mục công văn")
        if not exists:
            raise where.key(path, f"không tìm thấy tệp phụ lục “{name}”")
        if not is_file:
            raise where.key(path, f"“{name}” không phải là tệp")
        if resolved in seen:
            raise where.key(path, f"tệp phụ lục “{name}” được liệt kê hai lần")
        seen.add(resolved)
        parsed = _parse_file(file, str(file), APPENDIX_KEYS)
        if "title" not in parsed.meta:
            raise _Where(str(file), parsed.positions).missing(
                ("title",), "thiếu trường bắt buộc “title” (tên phụ lục)"
            )
        appendices.append({"title": parsed.meta["title"], "body": parsed.body, "file": name})
        appendix_positions.append(parsed.positions)

    return LetterSource(
        meta=letter.meta,
        body=letter.body,
        appendices=appendices,
        origin=str(folder),
        positions=SourcePositions(folder, letter.positions, tuple(appendix_positions)),
    )


# --- checking values -------------------------------------------------------------------------


def _wrong_type(path: KeyPath, expected: str) -> str:
    return f"trường {_named(path, {**LETTER_KEYS, **SIGNER_KEYS})} phải là {expected}"


def _text(where: _Where, value: Any, path: KeyPath, limit: int) -> str:
    """A one-line text value: a non-empty string, whitespace collapsed, at most ``limit`` long."""
    if value is None:
        raise where.key(path, f"trường {_named(path, {**LETTER_KEYS, **SIGNER_KEYS})} để trống")
    if not isinstance(value, str):
        hint = ""
        if isinstance(value, dict):
            hint = ' (nếu giá trị có dấu hai chấm, hãy đặt cả giá trị trong ngoặc kép "…")'
        raise where.key(path, _wrong_type(path, "một chuỗi văn bản") + hint)
    refused = refused_characters_message(value)
    if refused:
        raise where.key(path, f"trường {_named(path, {**LETTER_KEYS, **SIGNER_KEYS})} {refused}")
    text = " ".join(_nfc(value).split())
    if not text:
        raise where.key(path, f"trường {_named(path, {**LETTER_KEYS, **SIGNER_KEYS})} để trống")
    if len(text) > limit:
        raise where.key(
            path,
            f"trường {_named(path, {**LETTER_KEYS, **SIGNER_KEYS})} dài {len(text)} ký tự, "
            f"tối đa {limit}",
        )
    return text


def _list_item(text: str) -> str:
    """An addressee or distribution item without the "- " and ";"/"." that formatting adds."""
    text = text.strip()
    if text[:1] in ("-", "–", "•"):
        text = text[1:].strip()
    if text[-1:] in (";", "."):
        text = text[:-1].rstrip()
    return text


def _text_list(where: _Where, value: Any, path: KeyPath) -> tuple[str, ...]:
    """A non-empty list of one-line texts, list marks and end punctuation removed."""
    if not isinstance(value, list):
        raise where.key(path, _wrong_type(path, "một danh sách (mỗi dòng bắt đầu bằng “- ”)"))
    if not value:
        raise where.key(path, f"danh sách {_named(path, LETTER_KEYS)} trống")
    items = []
    for index, item in enumerate(value):
        text = _list_item(_text(where, item, (*path, index), MAX_LIST_ITEM))
        if not text:
            raise where.key((*path, index), f"trường {_named((*path, index), LETTER_KEYS)} trống")
        items.append(text)
    return tuple(items)


def check_symbol(symbol: str) -> str | None:
    """Why ``symbol`` is not a valid ký hiệu ("THH-VP"), or None when it is."""
    if not symbol:
        return "ký hiệu để trống"
    if len(symbol) > MAX_SYMBOL:
        return f"ký hiệu dài {len(symbol)} ký tự, tối đa {MAX_SYMBOL}"
    groups = symbol.split("-")
    if any(not group or not group.isalnum() for group in groups):
        return (
            f"ký hiệu “{symbol}” không hợp lệ: gồm các nhóm chữ cái, chữ số nối với nhau bằng "
            "dấu “-”, không có khoảng trắng và không ghi số văn bản (ví dụ “THH-VP”)"
        )
    return None


def register_of(symbol: str) -> str:
    """The issuing body's register key: the symbol's part before the first "-" ("THH-VP" → "THH").

    Numbers run per issuing body and year (Decree 30), and the first group of the symbol names
    the issuing body, so letters of different drafting units of one body share one register.
    """
    problem = check_symbol(symbol)
    if problem is not None:
        raise ValueError(problem)
    return symbol.split("-", 1)[0]


def _date(where: _Where, value: Any) -> tuple[dt.date | None, int, int]:
    """(full date or None, month, year) from "2021-11" or "2021-11-15"."""
    path: KeyPath = ("date",)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value, value.month, value.year
    problem = (
        "trường “date” (ngày ban hành) phải có dạng “2021-11” (chưa có ngày) hoặc “2021-11-15”"
    )
    if not isinstance(value, str):
        raise where.key(path, problem)
    parts = value.strip().split("-")
    sizes = [len(part) for part in parts]
    if sizes not in ([4, 2], [4, 2, 2]) or not all(p.isascii() and p.isdigit() for p in parts):
        raise where.key(path, problem)
    year, month = int(parts[0]), int(parts[1])
    try:
        date = dt.date(year, month, int(parts[2])) if len(parts) == 3 else None
        dt.date(year, month, 1)
    except ValueError as exc:
        raise where.key(path, f"ngày “{value}” không có thật trên lịch") from exc
    return date, month, year


def _number(where: _Where, value: Any) -> int:
    path: KeyPath = ("number",)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.key(path, _wrong_type(path, "một số nguyên"))
    if not 1 <= value <= MAX_NUMBER:
        raise where.key(path, f"trường “number” (số) phải từ 1 đến {MAX_NUMBER}")
    return value


def _signer(where: _Where, value: Any) -> Signer:
    path: KeyPath = ("signer",)
    if not isinstance(value, dict):
        raise where.key(path, _wrong_type(path, "một nhóm trường title, name (và authority)"))
    for key in value:
        if key not in SIGNER_KEYS:
            raise where.key((*path, key), "người ký: " + _unknown_key(str(key), SIGNER_KEYS))
    for key in ("title", "name"):
        if key not in value:
            raise where.missing(
                (*path, key), f"thiếu trường bắt buộc “signer.{key}” ({SIGNER_KEYS[key]})"
            )
    title = _text(where, value["title"], (*path, "title"), MAX_SIGNER_TITLE)
    name = _text(where, value["name"], (*path, "name"), MAX_SIGNER_NAME)
    first = name.split()[0]
    if any(first.startswith(prefix) for prefix in ACADEMIC_TITLES):
        raise where.key((*path, "name"), "họ tên người ký không kèm học hàm, học vị (Nghị định 30)")
    authority = None
    acting_for = None
    if value.get("authority") is not None:
        raw = _text(where, value["authority"], (*path, "authority"), 10).upper()
        try:
            authority = Authority(raw if raw.endswith(".") else raw + ".")
        except ValueError as exc:
            choices = ", ".join(member.value for member in Authority)
            raise where.key(
                (*path, "authority"), f"quyền hạn ký “{raw}” không hợp lệ; dùng một trong {choices}"
            ) from exc
        if value.get("acting_for") is None:
            raise where.missing(
                (*path, "acting_for"),
                f"có quyền hạn ký “{authority.value}” thì cần trường “signer.acting_for” "
                "(ví dụ “Cục trưởng”)",
            )
    if value.get("acting_for") is not None:
        if authority is None:
            raise where.key(
                (*path, "acting_for"),
                "trường “signer.acting_for” chỉ dùng cùng “signer.authority” "
                "(TM., Q., KT., TL., TUQ.)",
            )
        acting_for = _text(where, value["acting_for"], (*path, "acting_for"), MAX_SIGNER_TITLE)
    return Signer(title=title, name=name, authority=authority, acting_for=acting_for)


def _urgency(where: _Where, value: Any) -> Urgency | None:
    if value is None:
        return None
    text = _text(where, value, ("urgency",), 20).lower()
    if text not in URGENCIES:
        raise where.key(
            ("urgency",), "độ khẩn phải là “khẩn”, “thượng khẩn” hoặc “hoả tốc” (hoặc bỏ trường)"
        )
    return URGENCIES[text]


def _attachments(where: _Where, value: Any, project_root: Path) -> tuple[Attachment, ...]:
    """The files under attachments/ the letter carries; each must exist and be a file.

    A name that leads out of attachments/ (``..``, a link) gets the same answer as a file that
    is not there, and nothing outside attachments/ is ever looked at: the API takes these names
    from anyone with a token, and its answers must not tell which paths exist on the server.
    """
    path: KeyPath = ("attachments",)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise where.key(path, _wrong_type(path, "một danh sách đường dẫn tệp"))
    folder = Path(os.path.abspath(project_root / "attachments"))
    found: list[Attachment] = []
    seen: set[Path] = set()
    for index, item in enumerate(value):
        item_path = (*path, index)
        name = _text(where, item, item_path, 500)
        relative = Path(name)
        if relative.is_absolute():
            raise where.key(item_path, f"“{name}”: ghi đường dẫn tương đối trong attachments/")
        missing = where.key(item_path, f"không tìm thấy tệp gửi kèm “{name}” trong attachments/")
        # "ma-qr.png" means attachments/ma-qr.png even if the root happens to hold such a file.
        # Only the candidates that stay in attachments/ by their spelling alone are looked up.
        candidates = [
            candidate
            for candidate in (
                Path(os.path.abspath(folder / relative)),
                Path(os.path.abspath(folder.parent / relative)),
            )
            if candidate.is_relative_to(folder) and candidate != folder
        ]
        try:
            file = next((c for c in candidates if c.exists()), None)
            resolved = file.resolve() if file is not None else None
            is_file = resolved is not None and resolved.is_file()
        except (OSError, ValueError) as exc:  # a NUL byte or an over-long name
            raise where.key(item_path, f"tên tệp gửi kèm “{name}” không hợp lệ") from exc
        # A link inside attachments/ that points out of it is, for a letter, no file at all.
        if resolved is None or not resolved.is_relative_to(folder.resolve()):
            raise missing
        if not is_file:
            raise where.key(item_path, f"“{name}” không phải là tệp")
        if resolved in seen:
            raise where.key(item_path, f"tệp gửi kèm “{name}” được liệt kê hai lần")
        seen.add(resolved)
        media_type = mimetypes.guess_type(resolved.name)[0] or "application/octet-stream"
        found.append(Attachment(path=resolved, name=resolved.name, media_type=media_type))
    return tuple(found)


def _blocks(where: _Where, text: Any, *, headings: bool) -> tuple[Block, ...]:
    """Parse a Markdown body and check it ends as Decree 30 requires."""
    if not isinstance(text, str):
        raise where.body(1, "nội dung phải là văn bản")
    text = _normalise_text(text)
    if len(text) > MAX_BODY_CHARS:
        # Refused before parsing: the parser and the renderer never see an unbounded text.
        raise where.body(
            text[:MAX_BODY_CHARS].count("\n") + 1,
            f"nội dung dài {_count(len(text))} ký tự, tối đa {_count(MAX_BODY_CHARS)} ký tự; "
            "hãy chia thành phụ lục hoặc gửi dưới dạng tài liệu kèm theo",
        )
    try:
        placed = parse_blocks(text, headings=headings)
        check_closing(placed, max(1, text.count("\n")))
    except MarkupError as exc:
        raise where.body(exc.line, exc.message) from exc
    blocks = 0
    for item in placed:
        rows = len(item.block.rows) - 1 if item.block.kind is BlockKind.TABLE else 0
        blocks += 1 + max(rows, 0)
        if blocks > MAX_BODY_BLOCKS:
            raise where.body(
                item.line,
                f"nội dung có quá {_count(MAX_BODY_BLOCKS)} đoạn, mục và dòng bảng; "
                "hãy chia thành phụ lục hoặc gửi dưới dạng tài liệu kèm theo",
            )
    return tuple(item.block for item in placed)


def build_letter(source: LetterSource, project_root: Path | None = None) -> Letter:
    """Check an editable source and build the ``Letter`` the renderers print."""
    if project_root is None:
        from dispatch.config import PROJECT_ROOT

        project_root = PROJECT_ROOT
    positions = source.positions
    label = positions.letter.file if positions else source.origin
    where = _Where(label, positions.letter if positions else None)
    meta = source.meta
    if not isinstance(meta, dict):
        raise LetterSourceError(label, None, "phần khai báo phải là các trường dạng tên: giá trị")

    for key in meta:
        if key not in LETTER_KEYS:
            raise where.key((str(key),), _unknown_key(str(key), LETTER_KEYS))
    for key in REQUIRED_KEYS:
        if key not in meta or meta[key] is None:
            raise where.missing((key,), f"thiếu trường bắt buộc “{key}” ({LETTER_KEYS[key]})")

    parent_agency = _text(where, meta["parent_agency"], ("parent_agency",), MAX_AGENCY)
    issuing_agency = _text(where, meta["issuing_agency"], ("issuing_agency",), MAX_AGENCY)
    symbol = _text(where, meta["symbol"], ("symbol",), 200)
    problem = check_symbol(symbol)
    if problem is not None:
        raise where.key(("symbol",), problem)
    place = _text(where, meta["place"], ("place",), MAX_PLACE)
    date, month, year = _date(where, meta["date"])
    number = None
    if meta.get("number") is not None:
        number = _number(where, meta["number"])
        if date is None:
            raise where.key(
                ("number",),
                "công văn đã có số thì trường “date” phải có đủ ngày (ví dụ 2021-11-15)",
            )
    subject = _text(where, meta["subject"], ("subject",), MAX_SUBJECT)
    if subject.casefold().startswith("v/v"):
        raise where.key(("subject",), "trích yếu không ghi “V/v” ở đầu: phần này tự thêm vào")
    addressees = _text_list(where, meta["addressees"], ("addressees",))
    signer = _signer(where, meta["signer"])
    distribution = _text_list(where, meta["distribution"], ("distribution",))
    urgency = _urgency(where, meta.get("urgency"))
    attachments = _attachments(where, meta.get("attachments"), Path(project_root))

    body = _blocks(where, source.body, headings=False)
    appendices = _appendices(source, where)
    total = len(source.body or "") + sum(
        len(item.get("body") or "") for item in source.appendices if isinstance(item, dict)
    )
    if total > MAX_LETTER_CHARS:
        raise LetterSourceError(
            label,
            None,
            f"công văn và các phụ lục dài {_count(total)} ký tự, tối đa "
            f"{_count(MAX_LETTER_CHARS)} ký tự; hãy gửi phần dài dưới dạng tài liệu kèm theo",
        )

    return Letter(
        parent_agency=parent_agency,
        issuing_agency=issuing_agency,
        symbol=symbol,
        place=place,
        subject=subject,
        addressees=addressees,
        body=body,
        signer=signer,
        distribution=distribution,
        appendices=appendices,
        attachments=attachments,
        urgency=urgency,
        number=number,
        date=date,
        month=month,
        year=year,
        source=positions.folder if positions else None,
    )


def _appendices(source: LetterSource, where: _Where) -> tuple[Appendix, ...]:
    """Check and build the appendices, numbered I, II … when there are several."""
    items = source.appendices
    if not isinstance(items, list):
        raise where.key(("appendices",), "danh sách phụ lục không hợp lệ")
    if len(items) > len(ROMAN):
        raise where.key(("appendices",), f"một công văn có tối đa {len(ROMAN)} phụ lục")
    listed = source.meta.get("appendices")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise where.key(("appendices",), _wrong_type(("appendices",), "một danh sách tên tệp"))
        if len(listed) != len(items):
            raise where.key(
                ("appendices",),
                f"khai báo {len(listed)} phụ lục nhưng nguồn có {len(items)} phụ lục",
            )
    positions = source.positions
    result = []
    for index, item in enumerate(items):
        numeral = appendix_numeral(index, len(items))
        file_positions = None
        if positions is not None and index < len(positions.appendices):
            file_positions = positions.appendices[index]
        if file_positions is not None:
            label = file_positions.file
        else:
            label = f"{source.origin}, phụ lục {numeral or 1}"
        here = _Where(label, file_positions)
        if not isinstance(item, dict):
            raise LetterSourceError(label, None, "phụ lục phải có title và body")
        for key in item:
            if key not in ("title", "body", "file"):
                raise here.key((str(key),), _unknown_key(str(key), APPENDIX_KEYS))
        if item.get("title") is None:
            raise here.missing(("title",), "thiếu trường bắt buộc “title” (tên phụ lục)")
        title = _text(here, item["title"], ("title",), MAX_APPENDIX_TITLE)
        body = _blocks(here, item.get("body", ""), headings=True)
        file = item.get("file")
        appendix_source = (
            positions.folder / file if positions is not None and isinstance(file, str) else None
        )
        result.append(Appendix(numeral=numeral, title=title, body=body, source=appendix_source))
    return tuple(result)


def load_letter(folder: Path) -> Letter:
    """Read and check the letter in ``folder`` (a folder under official_letters/)."""
    return build_letter(read_source(Path(folder)))


# --- the JSON form ---------------------------------------------------------------------------


def _jsonable(value: Any, origin: str) -> Any:
    """A deep copy of ``value`` with only JSON types; dates become ISO strings."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item, origin) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item, origin) for item in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return _nfc(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    raise LetterSourceError(origin, None, f"giá trị không lưu được: {type(value).__name__}")


def source_to_json(source: LetterSource) -> dict:
    """The source as plain JSON data (for the database and the web composer)."""
    return {
        "meta": _jsonable(source.meta, source.origin),
        "body": source.body,
        "appendices": _jsonable(source.appendices, source.origin),
        "origin": source.origin,
    }


def issuing_agency_in(data: object) -> str:
    """The issuing agency named by ``source_to_json`` data (under "meta"), read without
    rebuilding the source; "" when it names none."""
    if not isinstance(data, dict):
        return ""
    for holder in (data.get("meta"), data):
        if isinstance(holder, dict) and isinstance(holder.get("issuing_agency"), str):
            return holder["issuing_agency"]
    return ""


def source_from_json(data: Any, origin: str | None = None) -> LetterSource:
    """Rebuild a source from ``source_to_json`` data; ``origin`` ("bản nháp 12") overrides."""
    label = origin or (data.get("origin") if isinstance(data, dict) else None) or "nguồn công văn"
    if not isinstance(label, str):
        label = "nguồn công văn"
    if not isinstance(data, dict):
        raise LetterSourceError(label, None, "dữ liệu nguồn công văn không hợp lệ")
    meta = data.get("meta", {})
    body = data.get("body", "")
    appendices = data.get("appendices", [])
    if not isinstance(meta, dict):
        raise LetterSourceError(label, None, "phần khai báo phải là các trường dạng tên: giá trị")
    if not isinstance(body, str):
        raise LetterSourceError(label, None, "nội dung công văn phải là văn bản")
    if not isinstance(appendices, list) or not all(isinstance(a, dict) for a in appendices):
        raise LetterSourceError(label, None, "danh sách phụ lục không hợp lệ")
    for index, appendix in enumerate(appendices):
        if not isinstance(appendix.get("body", ""), str):
            raise LetterSourceError(label, None, f"nội dung phụ lục {index + 1} phải là văn bản")
    return LetterSource(
        meta=_jsonable(copy.deepcopy(meta), label),
        body=_normalise_text(body),
        appendices=[
            {
                **_jsonable(appendix, label),
                "body": _normalise_text(appendix.get("body", "")),
            }
            for appendix in appendices
        ],
        origin=label,
    )
