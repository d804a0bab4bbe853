"""The directory of recipients through time: office versions by province, their addresses, the
groups they form, and which version took over from which.

The directory ships with the package (``dispatch/data/directory.csv``), every version with the
dates it was valid:

- group ``so-tttt-2021``: the 62 Sở Thông tin và Truyền thông of 2021 and Bạc Liêu's combined
  Sở Văn hoá, Thông tin, Thể thao và Du lịch (2019 to its split in March 2023), then Bạc Liêu's
  re-established Sở Thông tin và Truyền thông, all until 28/02/2025;
- group ``so-khcn``: the 63 Sở Khoa học và Công nghệ that took them over on 01/03/2025, until
  30/06/2025, then the 34 Sở Khoa học và Công nghệ of the provinces formed on 01/07/2025.

E-mail addresses are placeholders under the reserved ``.example`` domain until the real ones are
imported. An import (CSV or XLSX) is checked row by row before anything is written, and either
applies completely or not at all.

A record is identified by its province code and the start of its valid period (``valid_from``),
written ``CODE@YYYY-MM-DD`` where a file names one (the ``predecessors`` column). Periods of one
province may not overlap, so that "the office of province 95 on 15/11/2021" always means one
record; consecutive versions of a province, and a version and the ones that took over from it,
follow each other without a gap; lineage never loops.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import selectinload

from dispatch import audit
from dispatch.directory.addresses import is_valid_email
from dispatch.extensions import db
from dispatch.models import Organisation, RecipientGroup
from dispatch.text import from_spreadsheet_text, refused_characters_message, spreadsheet_text

DEFAULT_GROUP_CODE = "so-tttt-2021"
DEFAULT_GROUP_NAME = "Sở TTTT và tương đương các tỉnh, thành phố (2021)"
CURRENT_GROUP_CODE = "so-khcn"
GROUP_NAMES = {
    DEFAULT_GROUP_CODE: DEFAULT_GROUP_NAME,
    CURRENT_GROUP_CODE: "Sở Khoa học và Công nghệ các tỉnh, thành phố (từ 01/03/2025)",
}
DATA_FILE = "directory.csv"
PROVINCES_2025_FILE = "provinces-2025.csv"
# The day each province's Sở TTTT was merged into its Sở Khoa học và Công nghệ.
DEPARTMENTS_MERGED_ON = dt.date(2025, 3, 1)
# The day the 63 provinces became 34 (Resolution 202/2025/QH15).
PROVINCES_MERGED_ON = dt.date(2025, 7, 1)

COLUMNS = (
    "code",
    "province",
    "kind",
    "region",
    "name",
    "email",
    "cc",
    "agency_id",
    "valid_from",
    "valid_to",
    "placeholder",
    "groups",
    "predecessors",
)
COLUMNS_HEADER = ",".join(COLUMNS)
REQUIRED_COLUMNS = ("code", "province", "kind", "region", "name", "email")
PROVINCE_KINDS = ("tỉnh", "thành phố")

# Mã định danh (QCVN 102): XXX.YY.ZZ.Lnn, 13 characters, e.g. 000.00.00.H29.
_AGENCY_ID = re.compile(r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}$")
_PROVINCE_CODE = re.compile(r"^\d{2}$")
_GROUP_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
_VERSION_KEY = re.compile(r"^(\d{2})@(\d{4}-\d{2}-\d{2})$")
_TRUE = {"yes", "y", "có", "co", "x", "1", "true"}
_FALSE = {"", "no", "n", "không", "khong", "0", "false"}


class DirectoryError(ValueError):
    """A directory operation refused, with a message for clerks (Vietnamese)."""


@dataclass(frozen=True)
class RowProblem:
    """One thing wrong with one line of an imported file."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"Dòng {self.line}: {self.message}"


class DirectoryImportError(DirectoryError):
    """The file has bad rows; nothing was imported."""

    def __init__(self, problems: list[RowProblem]) -> None:
        self.problems = problems
        super().__init__(
            "Không nhập được danh bạ, chưa có thay đổi nào được ghi "
            f"({len(problems)} lỗi):\n" + "\n".join(str(p) for p in problems)
        )


@dataclass(frozen=True)
class DirectoryRow:
    """A checked row of a directory file."""

    line: int
    code: str
    province: str
    kind: str
    region: str
    name: str
    email: str
    cc: tuple[str, ...]
    agency_id: str | None
    valid_from: dt.date | None
    valid_to: dt.date | None
    placeholder: bool
    groups: tuple[str, ...] = ()
    predecessors: tuple[tuple[str, dt.date], ...] = ()

    @property
    def key(self) -> tuple[str, dt.date | None]:
        """The record this row is: its province code and the start of its period."""
        return (self.code, self.valid_from)

    def valid_on(self, day: dt.date) -> bool:
        """Whether the row's period contains ``day``."""
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day <= self.valid_to
        )


@dataclass
class ImportResult:
    """What an import or a seed did."""

    created: list[str] = field(default_factory=list)  # province codes
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    group_created: bool = False
    memberships_added: int = 0
    links_added: int = 0

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return bool(
            self.created
            or self.updated
            or self.group_created
            or self.memberships_added
            or self.links_added
        )


# --- text helpers -----------------------------------------------------------------------------


def fold(text: str) -> str:
    """Accent-free lower case for search: 'Bạc Liêu' and 'Hoá'/'Hóa' become 'bac lieu', 'hoa'."""
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    stripped = stripped.replace("đ", "d").replace("Đ", "D")
    return " ".join(stripped.lower().split())


def search_text_for(org: Organisation) -> str:
    """What ``search`` matches an office on: its name, province, code and e-mail, folded."""
    return fold(f"{org.name} {org.province_name} {org.province_code} {org.email}")[:400]


def _nfc(value: str | None) -> str:
    # Files saved on some systems carry decomposed (NFD) Vietnamese: store it composed.
    return unicodedata.normalize("NFC", value or "").strip()


# --- the package's 2021 directory ---------------------------------------------------------------


def bundled_csv_text() -> str:
    """The directory shipped with the package (every version since 2019), as text."""
    return resources.files("dispatch").joinpath("data", DATA_FILE).read_text(encoding="utf-8-sig")


def known_provinces() -> dict[str, str]:
    """Province code → name of the 63 provinces of 2021 (from the bundled directory)."""
    reader = csv.DictReader(io.StringIO(bundled_csv_text()))
    names: dict[str, str] = {}
    for row in reader:
        if DEFAULT_GROUP_CODE in (row.get("groups") or "").split(";"):
            names.setdefault(row["code"], _nfc(row["province"]))
    return names


def provinces_2025() -> list[dict[str, Any]]:
    """The 34 provinces since 01/07/2025: code, name, kind and the 2021 codes they were formed
    from (``merged_from``)."""
    text = resources.files("dispatch").joinpath("data", PROVINCES_2025_FILE).read_text("utf-8")
    return [
        {
            "code": row["code"],
            "name": _nfc(row["name"]),
            "kind": row["kind"],
            "merged_from": tuple(row["merged_from"].split()),
        }
        for row in csv.DictReader(io.StringIO(text))
    ]


def province_names() -> dict[str, set[str]]:
    """Province code → every name it had (folded): the 2021 name, and since 2025 the name of
    the province whose centre sits in it ("15": Yên Bái, then Lào Cai; "46": Huế)."""
    names: dict[str, set[str]] = {}
    for code, name in known_provinces().items():
        names.setdefault(code, set()).add(fold(name))
    for province in provinces_2025():
        names.setdefault(province["code"], set()).add(fold(province["name"]))
    names.setdefault("46", set()).add(fold("Huế"))
    return names


def version_key(code: str, valid_from: dt.date | None) -> str:
    """How a file names one version of an office: ``95@2023-03-15``."""
    return f"{code}@{valid_from.isoformat() if valid_from else ''}"


# --- parsing and validation -------------------------------------------------------------------


def is_agency_id(text: str) -> bool:
    """Whether ``text`` is a well-formed mã định danh (QCVN 102): XXX.YY.ZZ.Lnn."""
    return _AGENCY_ID.fullmatch(text) is not None


def parse_date(text: str) -> dt.date:
    """A date of a valid period: ISO as exported, or dd/mm/yyyy; ``ValueError`` otherwise."""
    # dd/mm/yyyy: a spreadsheet set to Vietnamese may re-save the ISO dates that way.
    if re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", text):
        day, month, year = (int(part) for part in text.split("/"))
        return dt.date(year, month, day)
    return dt.date.fromisoformat(text)


def _delimiter(header_line: str) -> str:
    # Excel set to Vietnamese regional settings saves CSV with ";" between fields.
    return ";" if header_line.count(";") > header_line.count(",") else ","


def parse_csv(text: str) -> list[DirectoryRow]:
    """Check every row of a directory file; raise ``DirectoryImportError`` listing all problems."""
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DirectoryImportError([RowProblem(1, "tệp rỗng, không có dòng tiêu đề")])
    first_line = text.splitlines()[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line))
    header = [_nfc(h).lower() for h in next(reader)]
    problems: list[RowProblem] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if missing:
        problems.append(RowProblem(1, "thiếu cột bắt buộc: " + ", ".join(missing)))
    if unknown:
        problems.append(RowProblem(1, "cột không được hỗ trợ: " + ", ".join(unknown)))
    if duplicated:
        problems.append(RowProblem(1, "cột bị lặp: " + ", ".join(duplicated)))
    if problems:
        raise DirectoryImportError(problems)

    provinces = province_names()
    rows: list[DirectoryRow] = []
    end_of_previous = reader.line_num
    for cells in reader:
        # A quoted cell may run over several lines: a row is named by the line it starts on.
        line, end_of_previous = end_of_previous + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank lines, e.g. at the end of a file saved by a spreadsheet
        if len(cells) != len(header):
            problems.append(RowProblem(line, f"có {len(cells)} cột, tiêu đề có {len(header)} cột"))
            continue
        record = {
            column: _nfc(from_spreadsheet_text(cell))
            for column, cell in zip(header, cells, strict=True)
        }
        row, row_problems = _check_row(line, record, provinces)
        problems.extend(row_problems)
        if row is not None:
            rows.append(row)
    problems.extend(_overlaps(rows))
    if not rows and not problems:
        problems.append(RowProblem(2, "tệp không có dòng dữ liệu nào"))
    if problems:
        problems.sort(key=lambda p: p.line)
        raise DirectoryImportError(problems)
    return rows


def _check_row(
    line: int, record: dict[str, str], provinces: dict[str, set[str]]
) -> tuple[DirectoryRow | None, list[RowProblem]]:
    problems: list[str] = []
    code = record["code"]
    if not _PROVINCE_CODE.fullmatch(code):
        problems.append(f"mã tỉnh {code!r} phải gồm đúng 2 chữ số (ví dụ 01, 95)")
    elif code not in provinces:
        problems.append(f"mã tỉnh {code} không có trong danh mục 63 tỉnh, thành phố")
    elif fold(record["province"]) not in provinces[code]:
        known = known_provinces().get(code, "")
        problems.append(f"tên tỉnh {record['province']!r} không khớp mã {code} ({known})")
    for column, label in (("province", "tên tỉnh"), ("region", "vùng"), ("name", "tên cơ quan")):
        if not record[column]:
            problems.append(f"thiếu {label} (cột {column})")
    if refused := refused_characters_message(record["name"]):
        problems.append(f"tên cơ quan {refused}")
    if len(record["name"]) > 200:
        problems.append("tên cơ quan dài quá 200 ký tự")
    if record["kind"] not in PROVINCE_KINDS:
        problems.append(f"loại {record['kind']!r} phải là 'tỉnh' hoặc 'thành phố'")

    email = record["email"].lower()
    if not email:
        problems.append("thiếu địa chỉ thư điện tử (cột email)")
    elif not is_valid_email(email):
        problems.append(f"địa chỉ thư điện tử không hợp lệ: {record['email']!r}")
    cc: list[str] = []
    for part in (record.get("cc") or "").split(";"):
        address = part.strip().lower()
        if not address:
            continue
        if not is_valid_email(address):
            problems.append(f"địa chỉ đồng gửi (cc) không hợp lệ: {part.strip()!r}")
        elif address == email or address in cc:
            problems.append(f"địa chỉ đồng gửi (cc) bị lặp: {address}")
        else:
            cc.append(address)

    agency_id = record.get("agency_id") or None
    if agency_id is not None and not is_agency_id(agency_id):
        problems.append(
            f"mã định danh {agency_id!r} phải có dạng XXX.YY.ZZ.Lnn, 13 ký tự "
            "(ví dụ 000.00.00.H29), hoặc để trống"
        )

    dates: dict[str, dt.date | None] = {}
    for column, label in (("valid_from", "ngày bắt đầu"), ("valid_to", "ngày kết thúc")):
        value = record.get(column) or ""
        try:
            dates[column] = parse_date(value) if value else None
        except ValueError:
            dates[column] = None
            problems.append(
                f"{label} {value!r} không phải ngày hợp lệ (YYYY-MM-DD hoặc dd/mm/yyyy)"
            )
    valid_from, valid_to = dates["valid_from"], dates["valid_to"]
    if valid_from and valid_to and valid_from > valid_to:
        problems.append(f"ngày bắt đầu {valid_from:%d/%m/%Y} sau ngày kết thúc {valid_to:%d/%m/%Y}")

    flag = (record.get("placeholder") or "").lower()
    if flag not in _TRUE | _FALSE:
        problems.append(
            f"cột placeholder {record.get('placeholder')!r} phải là yes/no hoặc để trống"
        )

    groups: list[str] = []
    for part in (record.get("groups") or "").split(";"):
        group = part.strip().lower()
        if not group:
            continue
        if not _GROUP_CODE.fullmatch(group):
            problems.append(f"mã nhóm {part.strip()!r} chỉ gồm chữ thường không dấu, số và '-'")
        elif group not in groups:
            groups.append(group)
    predecessors: list[tuple[str, dt.date]] = []
    for part in (record.get("predecessors") or "").split(";"):
        reference = part.strip()
        if not reference:
            continue
        match = _VERSION_KEY.fullmatch(reference)
        try:
            key = (match.group(1), dt.date.fromisoformat(match.group(2))) if match else None
        except ValueError:
            key = None
        if key is None:
            problems.append(
                f"cơ quan tiền thân {reference!r} phải có dạng MÃ@YYYY-MM-DD "
                "(mã tỉnh và ngày bắt đầu hiệu lực, ví dụ 95@2023-03-15)"
            )
        elif key not in predecessors:
            predecessors.append(key)

    if problems:
        return None, [RowProblem(line, message) for message in problems]
    return (
        DirectoryRow(
            line=line,
            code=code,
            province=record["province"],
            kind=record["kind"],
            region=record["region"],
            name=record["name"],
            email=email,
            cc=tuple(cc),
            agency_id=agency_id,
            valid_from=valid_from,
            valid_to=valid_to,
            placeholder=flag in _TRUE,
            groups=tuple(groups),
            predecessors=tuple(predecessors),
        ),
        [],
    )


def periods_overlap(
    a_from: dt.date | None, a_to: dt.date | None, b_from: dt.date | None, b_to: dt.date | None
) -> bool:
    """Whether two valid periods share a day (a missing bound is open-ended)."""
    lo, hi = dt.date.min, dt.date.max
    return (a_from or lo) <= (b_to or hi) and (b_from or lo) <= (a_to or hi)


def period_text(valid_from: dt.date | None, valid_to: dt.date | None) -> str:
    """A valid period as clerks read it: "01/01/2019–31/12/2023", "01/01/2021–nay"."""
    start = f"{valid_from:%d/%m/%Y}" if valid_from else "…"
    end = f"{valid_to:%d/%m/%Y}" if valid_to else "nay"
    return f"{start}–{end}"


def _overlaps(rows: list[DirectoryRow]) -> list[RowProblem]:
    problems: list[RowProblem] = []
    for i, row in enumerate(rows):
        for earlier in rows[:i]:
            if earlier.code != row.code:
                continue
            if earlier.valid_from == row.valid_from:
                problems.append(
                    RowProblem(
                        row.line,
                        f"trùng với dòng {earlier.line} (cùng mã tỉnh {row.code} và ngày bắt đầu)",
                    )
                )
            elif periods_overlap(
                earlier.valid_from, earlier.valid_to, row.valid_from, row.valid_to
            ):
                problems.append(
                    RowProblem(
                        row.line,
                        f"thời gian hiệu lực {period_text(row.valid_from, row.valid_to)} "
                        f"chồng lên dòng {earlier.line} "
                        f"({period_text(earlier.valid_from, earlier.valid_to)})",
                    )
                )
    return problems


@dataclass(frozen=True)
class _Version:
    """One version of an office as the lineage checks see it (from the file or the database)."""

    key: tuple[str, dt.date | None]
    valid_to: dt.date | None
    predecessors: tuple[tuple[str, dt.date | None], ...]
    line: int | None  # the file's line; None for a record already in the database
    name: str


def _describe(version: _Version) -> str:
    where = f"dòng {version.line}" if version.line else "bản ghi đã có"
    return f"{version.name} ({version_key(*version.key)}, {where})"


def _lineage_problems(rows: list[DirectoryRow], existing: list[_Version]) -> list[RowProblem]:
    """Gaps, overlaps and loops that the rows would leave, with the records already there.

    - every predecessor named must exist, and must end the day before its successor starts;
    - consecutive versions of one province follow each other without a gap;
    - following successors never comes back to where it started.
    """
    from_file = [
        _Version(row.key, row.valid_to, row.predecessors, row.line, row.name) for row in rows
    ]
    in_file = {version.key for version in from_file}
    versions = {v.key: v for v in existing if v.key not in in_file}
    versions.update({v.key: v for v in from_file})
    problems: list[RowProblem] = []

    def report(version: _Version, message: str) -> None:
        # A problem is reported on the file's line that causes it (the first one involved).
        problems.append(RowProblem(version.line or 1, message))

    for version in from_file:
        for reference in version.predecessors:
            predecessor = versions.get(reference)
            if predecessor is None:
                report(version, f"không có cơ quan tiền thân {version_key(*reference)}")
                continue
            start = version.key[1]
            if predecessor.valid_to is None:
                report(
                    version,
                    f"cơ quan tiền thân {_describe(predecessor)} chưa có ngày kết thúc hiệu lực: "
                    "hai cơ quan cùng hiệu lực (chồng lấn)",
                )
            elif start is None or start <= predecessor.valid_to:
                report(
                    version,
                    f"bắt đầu hiệu lực trước khi cơ quan tiền thân {_describe(predecessor)} "
                    f"kết thúc ({predecessor.valid_to:%d/%m/%Y}): chồng lấn",
                )
            elif start > predecessor.valid_to + dt.timedelta(days=1):
                report(
                    version,
                    f"để trống từ {predecessor.valid_to + dt.timedelta(days=1):%d/%m/%Y} đến "
                    f"{start - dt.timedelta(days=1):%d/%m/%Y} sau cơ quan tiền thân "
                    f"{_describe(predecessor)}: mỗi cơ quan kế nhiệm bắt đầu ngay ngày hôm sau",
                )

    by_code: dict[str, list[_Version]] = {}
    for version in versions.values():
        by_code.setdefault(version.key[0], []).append(version)
    for code_versions in by_code.values():
        code_versions.sort(key=lambda v: v.key[1] or dt.date.min)
        for earlier, later in pairwise(code_versions):
            if earlier.valid_to is None or later.key[1] is None:
                continue  # an overlap: reported by the period checks
            gap_from = earlier.valid_to + dt.timedelta(days=1)
            if later.key[1] > gap_from and (earlier.line or later.line):
                culprit = later if later.line else earlier
                report(
                    culprit,
                    f"mã tỉnh {later.key[0]} để trống từ {gap_from:%d/%m/%Y} đến "
                    f"{later.key[1] - dt.timedelta(days=1):%d/%m/%Y}, giữa "
                    f"{_describe(earlier)} và {_describe(later)}",
                )

    # Loops: walk from each version of the file back through its predecessors.
    for version in from_file:
        seen: set[tuple[str, dt.date | None]] = set()
        stack = list(version.predecessors)
        while stack:
            key = stack.pop()
            if key == version.key:
                report(version, f"{_describe(version)} là tiền thân của chính nó (vòng lặp)")
                break
            if key in seen or key not in versions:
                continue
            seen.add(key)
            stack.extend(versions[key].predecessors)
    return problems


# --- writing ----------------------------------------------------------------------------------


def _get_or_create_group(code: str, name: str | None, result: ImportResult) -> RecipientGroup:
    group = db.session.execute(
        select(RecipientGroup).where(RecipientGroup.code == code)
    ).scalar_one_or_none()
    if group is None:
        if name is None:
            raise DirectoryError(f"Không có nhóm nơi nhận mã {code!r}.")
        group = RecipientGroup(code=code, name=name)
        db.session.add(group)
        db.session.flush()
        result.group_created = True
    return group


def _apply(org: Organisation, row: DirectoryRow) -> None:
    org.name = row.name
    org.province_code = row.code
    org.province_name = row.province
    org.province_kind = row.kind
    org.region = row.region
    org.email = row.email
    org.cc = list(row.cc)
    org.agency_id = row.agency_id
    org.valid_from = row.valid_from
    org.valid_to = row.valid_to
    org.search_text = search_text_for(org)


def snapshot(org: Organisation) -> dict[str, Any]:
    """The fields of an office that its audit entries record, as JSON values."""
    return {
        "name": org.name,
        "province": org.province_name,
        "kind": org.province_kind,
        "region": org.region,
        "email": org.email,
        "cc": list(org.cc or []),
        "agency_id": org.agency_id,
        "valid_from": org.valid_from.isoformat() if org.valid_from else None,
        "valid_to": org.valid_to.isoformat() if org.valid_to else None,
        "placeholder": org.email_is_placeholder,
    }


def record_change(
    org: Organisation, before: dict[str, Any], *, actor: str, at: dt.datetime, via: str
) -> bool:
    """Write one "organisation.updated" entry with every field that differs from ``before``
    (a ``snapshot`` taken before the change); False, and nothing written, if none does.

    ``via`` says which door the change came through ("import", "form", "recipient correction").
    """
    after = snapshot(org)
    if after == before:
        return False
    org.updated_at = at
    audit.record(
        "organisation.updated",
        actor=actor,
        at=at,
        object_type="organisation",
        object_id=org.id,
        details={
            key: {"from": before[key], "to": after[key]}
            for key in after
            if after[key] != before[key]
        }
        | {"via": via},
    )
    return True


def _write_rows(
    rows: list[DirectoryRow],
    *,
    group_code: str,
    group_name: str | None,
    update_existing: bool,
    actor: str,
    at: dt.datetime,
) -> ImportResult:
    """Insert new records, update (or keep) matching ones, and put them all in the group."""
    result = ImportResult()
    groups = {group_code: _get_or_create_group(group_code, group_name, result)}
    for row in rows:
        for code in row.groups:
            if code not in groups:
                groups[code] = _get_or_create_group(code, GROUP_NAMES.get(code, code), result)
    codes = sorted(
        {row.code for row in rows} | {ref[0] for row in rows for ref in row.predecessors}
    )
    existing = {
        (org.province_code, org.valid_from): org
        for org in db.session.execute(
            select(Organisation).where(Organisation.province_code.in_(codes)).with_for_update()
        ).scalars()
    }
    lineage = _lineage_problems(
        rows,
        [
            _Version(
                key,
                org.valid_to,
                tuple((p.province_code, p.valid_from) for p in org.predecessors),
                None,
                org.name,
            )
            for key, org in existing.items()
        ],
    )
    if lineage:
        raise DirectoryImportError(sorted(lineage, key=lambda p: p.line))
    in_file = {(row.code, row.valid_from) for row in rows}
    problems: list[RowProblem] = []
    for row in rows:
        # A period must not overlap another record of the same province that the file leaves
        # as it is (records also in the file were checked against each other already).
        for key, other in existing.items():
            if key in in_file or other.province_code != row.code:
                continue
            if periods_overlap(other.valid_from, other.valid_to, row.valid_from, row.valid_to):
                problems.append(
                    RowProblem(
                        row.line,
                        f"thời gian hiệu lực {period_text(row.valid_from, row.valid_to)} "
                        f"chồng lên bản ghi đã có của {other.name} "
                        f"({period_text(other.valid_from, other.valid_to)})",
                    )
                )
    if problems:
        raise DirectoryImportError(problems)

    members = {code: {org.id for org in group.members} for code, group in groups.items()}
    written: dict[tuple[str, dt.date | None], Organisation] = {}
    for row in rows:
        org = existing.get((row.code, row.valid_from))
        if org is None:
            org = Organisation(email_is_placeholder=row.placeholder)
            _apply(org, row)
            db.session.add(org)
            db.session.flush()
            result.created.append(row.code)
            audit.record(
                "organisation.created",
                actor=actor,
                at=at,
                object_type="organisation",
                object_id=org.id,
                details=snapshot(org),
            )
        elif update_existing:
            before = snapshot(org)
            _apply(org, row)
            # The flag says whether the address is known to be real. A row still marked as a
            # placeholder but carrying a corrected address is a real one: a clerk typed it.
            org.email_is_placeholder = row.placeholder and row.email == before["email"]
            if record_change(org, before, actor=actor, at=at, via="import"):
                result.updated.append(row.code)
            else:
                result.unchanged.append(row.code)
        else:
            result.unchanged.append(row.code)
        written[row.key] = org
        for code in row.groups or (group_code,):
            if org.id not in members[code]:
                groups[code].members.append(org)
                members[code].add(org.id)
                result.memberships_added += 1
    for row in rows:
        org = written[row.key]
        for reference in row.predecessors:
            predecessor = written.get(reference) or existing[reference]
            if org not in predecessor.successors:
                predecessor.successors.append(org)
                result.links_added += 1
                audit.record(
                    "organisation.succeeded",
                    actor=actor,
                    at=at,
                    object_type="organisation",
                    object_id=predecessor.id,
                    details={
                        "predecessor": version_key(*reference),
                        "successor": version_key(*row.key),
                        "successor_id": org.id,
                    },
                )
    db.session.flush()
    return result


def import_csv(
    source: str | Path,
    *,
    actor: str,
    at: dt.datetime,
    group_code: str = DEFAULT_GROUP_CODE,
) -> ImportResult:
    """Import a directory file (a path, or the CSV text itself): every row, or none; the caller
    commits.

    Accepts UTF-8 with or without a BOM, comma- or semicolon-separated. On any bad row raises
    ``DirectoryImportError`` before anything is written.
    """
    if isinstance(source, str) and "\n" not in source and Path(source).is_file():
        source = Path(source)
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise DirectoryError(f"Không đọc được tệp {source}: {exc.strerror}") from exc
        if source.suffix.lower() == ".xlsx" or data.startswith(b"PK\x03\x04"):
            data = xlsx_to_csv_text(data).encode()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DirectoryImportError(
                [RowProblem(data[: exc.start].count(b"\n") + 1, "tệp không phải mã UTF-8")]
            ) from exc
    else:
        text = source
    rows = parse_csv(text)
    result = _write_rows(
        rows,
        group_code=group_code,
        group_name=DEFAULT_GROUP_NAME if group_code == DEFAULT_GROUP_CODE else None,
        update_existing=True,
        actor=actor,
        at=at,
    )
    audit.record(
        "directory.imported",
        actor=actor,
        at=at,
        object_type="recipient_group",
        object_id=group_code,
        details={
            "rows": len(rows),
            "created": result.created,
            "updated": result.updated,
            "unchanged": len(result.unchanged),
        },
    )
    return result


def seed_directory(*, actor: str, at: dt.datetime) -> ImportResult:
    """Load the bundled 2021 directory and its group; records already there are left as they are.

    Idempotent: a second run changes nothing, and never overwrites addresses imported since.
    The caller commits.
    """
    rows = parse_csv(bundled_csv_text())
    result = _write_rows(
        rows,
        group_code=DEFAULT_GROUP_CODE,
        group_name=DEFAULT_GROUP_NAME,
        update_existing=False,
        actor=actor,
        at=at,
    )
    if result.changed:
        audit.record(
            "directory.seeded",
            actor=actor,
            at=at,
            object_type="recipient_group",
            object_id=DEFAULT_GROUP_CODE,
            details={
                "created": len(result.created),
                "memberships_added": result.memberships_added,
                "group_created": result.group_created,
            },
        )
    return result


def export_csv(*, group_code: str | None = None, bom: bool = True) -> str:
    """The directory (or a group) as CSV text in ``COLUMNS``; a BOM lets Excel read it as UTF-8."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for cells in export_rows(group_code=group_code):
        writer.writerow(spreadsheet_text(cell) for cell in cells)
    return ("\ufeff" if bom else "") + out.getvalue()


def export_rows(*, group_code: str | None = None) -> Iterable[list[str]]:
    """Each version of each office (or of a group's) as the cells of ``COLUMNS``, by province
    and start date: what ``export_csv`` and ``export_xlsx`` write and an import reads back."""
    query = (
        select(Organisation)
        .options(selectinload(Organisation.groups), selectinload(Organisation.predecessors))
        .order_by(Organisation.valid_from, Organisation.province_code)
    )
    if group_code is not None:
        query = query.where(Organisation.groups.any(RecipientGroup.code == group_code))
    for org in db.session.execute(query).scalars():
        yield [
            org.province_code,
            org.province_name,
            org.province_kind,
            org.region,
            org.name,
            org.email,
            ";".join(org.cc or []),
            org.agency_id or "",
            org.valid_from.isoformat() if org.valid_from else "",
            org.valid_to.isoformat() if org.valid_to else "",
            "yes" if org.email_is_placeholder else "no",
            ";".join(sorted(group.code for group in org.groups)),
            ";".join(version_key(p.province_code, p.valid_from) for p in org.predecessors),
        ]


def export_xlsx(*, group_code: str | None = None) -> bytes:
    """The same rows as ``export_csv``, as an Excel workbook (every cell text, so that codes
    like "01" and dates keep their form)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Danh bạ"
    sheet.append(list(COLUMNS))
    for cells in export_rows(group_code=group_code):
        sheet.append([spreadsheet_text(cell) for cell in cells])
    bold = Font(bold=True)
    for cell in sheet[1]:
        cell.font = bold
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


XLSX_MAX_BYTES = 10 * 1024 * 1024
XLSX_MAX_ROWS = 50_000


def xlsx_to_csv_text(data: bytes) -> str:
    """The first sheet of an Excel workbook as CSV text, for ``parse_csv``; a
    ``DirectoryImportError`` for a file that is not a readable workbook or is too large."""
    from zipfile import BadZipFile

    from openpyxl import load_workbook

    if len(data) > XLSX_MAX_BYTES:
        raise DirectoryImportError([RowProblem(1, "tệp Excel lớn quá 10 MB")])
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (BadZipFile, KeyError, OSError, ValueError) as exc:
        raise DirectoryImportError([RowProblem(1, "không đọc được tệp Excel (.xlsx)")]) from exc
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for index, values in enumerate(workbook.worksheets[0].iter_rows(values_only=True)):
        if index > XLSX_MAX_ROWS:
            raise DirectoryImportError([RowProblem(index + 1, "tệp có quá nhiều dòng")])
        writer.writerow(_xlsx_cell(value) for value in values)
    workbook.close()
    return out.getvalue()


def _xlsx_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value < 100:
        return f"{value:02d}"  # a province code that Excel turned into a number
    return str(value)


# --- reading ----------------------------------------------------------------------------------


def _valid_on(day: dt.date):
    return and_(
        or_(Organisation.valid_from.is_(None), Organisation.valid_from <= day),
        or_(Organisation.valid_to.is_(None), Organisation.valid_to >= day),
    )


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search(query: str, *, on: dt.date | None = None, limit: int = 50) -> list[Organisation]:
    """Offices whose name, province, code or e-mail contain every word of ``query``, accents
    ignored ("bac lieu" finds "Bạc Liêu"); only those valid ``on`` a date if given."""
    words = fold(query).split()
    statement = select(Organisation).order_by(Organisation.province_code, Organisation.valid_from)
    for word in words:
        statement = statement.where(
            Organisation.search_text.like(f"%{_escape_like(word)}%", escape="\\")
        )
    if on is not None:
        statement = statement.where(_valid_on(on))
    return list(db.session.execute(statement.limit(limit)).scalars())


def organisations_by_id(ids: Iterable[int]) -> list[Organisation]:
    """The offices with these ids (unknown ids are left out), by province code."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    return list(
        db.session.execute(
            select(Organisation)
            .where(Organisation.id.in_(wanted))
            .order_by(Organisation.province_code, Organisation.id)
        ).scalars()
    )


def get_group(code: str) -> RecipientGroup:
    """The group with this code, or a ``DirectoryError`` naming it."""
    group = db.session.execute(
        select(RecipientGroup).where(RecipientGroup.code == code)
    ).scalar_one_or_none()
    if group is None:
        raise DirectoryError(
            f"Không có nhóm nơi nhận mã {code!r}. Hãy chạy 'dispatch seed' hoặc nhập danh bạ."
        )
    return group


def recipients_for(group_code: str, on: dt.date) -> list[Organisation]:
    """The members of a group whose valid period contains ``on``, by province code."""
    group = get_group(group_code)
    statement = (
        select(Organisation)
        .where(Organisation.groups.any(RecipientGroup.id == group.id))
        .where(_valid_on(on))
        .order_by(Organisation.province_code)
    )
    return list(db.session.execute(statement).scalars())


def valid_on(org: Organisation, day: dt.date) -> bool:
    """Whether ``org``'s period contains ``day``."""
    return (org.valid_from is None or org.valid_from <= day) and (
        org.valid_to is None or day <= org.valid_to
    )


def successors_on(org: Organisation, on: dt.date) -> list[Organisation]:
    """The offices that answer, on ``on``, for ``org``: itself if it is still valid then,
    otherwise the versions that took over from it, followed as far as ``on`` (each once, by
    province code). Empty if nothing took over, or ``on`` is before ``org`` began."""
    if valid_on(org, on):
        return [org]
    if org.valid_from is not None and on < org.valid_from:
        return []
    found: dict[int, Organisation] = {}
    seen: set[int] = {org.id}
    frontier = list(org.successors)
    while frontier:
        following: list[Organisation] = []
        for successor in frontier:
            if successor.id in seen:
                continue
            seen.add(successor.id)
            if valid_on(successor, on):
                found[successor.id] = successor
            elif successor.valid_to is not None and successor.valid_to < on:
                following.extend(successor.successors)
        frontier = following
    return sorted(found.values(), key=lambda o: (o.province_code, o.id))


def versions_of(code: str) -> list[Organisation]:
    """Every version of the offices of province ``code``, oldest first."""
    return list(
        db.session.execute(
            select(Organisation)
            .where(Organisation.province_code == code)
            .order_by(Organisation.valid_from, Organisation.id)
        ).scalars()
    )


def successors_of_code(code: str, on: dt.date) -> list[Organisation]:
    """Who answers on ``on`` for the office of province ``code``: the version valid then, or
    the successors of its last version before ``on``. A ``DirectoryError`` for an unknown code."""
    versions = versions_of(code)
    if not versions:
        raise DirectoryError(f"Không có cơ quan nào mang mã tỉnh {code!r} trong danh bạ.")
    current = [org for org in versions if valid_on(org, on)]
    if current:
        return current
    earlier = [org for org in versions if org.valid_to is not None and org.valid_to < on]
    if not earlier:
        return []
    last = max(earlier, key=lambda org: org.valid_to or dt.date.min)
    return successors_on(last, on)


def office_on(code: str, on: dt.date) -> Organisation | None:
    """The version of province ``code``'s office valid on ``on``, if any."""
    return db.session.execute(
        select(Organisation).where(Organisation.province_code == code, _valid_on(on)).limit(1)
    ).scalar_one_or_none()


def usual_group(day: dt.date) -> str:
    """The group a new letter of ``day`` usually goes to: the Sở TTTT (and Bạc Liêu's
    combined department) until 28/02/2025, the Sở Khoa học và Công nghệ from 01/03/2025."""
    return CURRENT_GROUP_CODE if day >= DEPARTMENTS_MERGED_ON else DEFAULT_GROUP_CODE
