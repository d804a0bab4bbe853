"""The directory of recipients: offices by province, their addresses, and the groups they form.

The 2021 directory ships with the package (``dispatch/data/directory-2021.csv``): the 62
Sở Thông tin và Truyền thông and Bạc Liêu's combined Sở Văn hoá, Thông tin, Thể thao và Du lịch,
with placeholder e-mail addresses under the reserved ``.example`` domain until the real ones are
imported. A CSV import is checked row by row before anything is written, and either applies
completely or not at all.

A record is identified by its province code and the start of its valid period (``valid_from``):
an import updates the record with the same pair (name, address, cc, agency id, end of the
period) and inserts the others. Periods of one province may not overlap, so that "the office of
province 95 on 15/11/2021" always means one record.
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
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select

from dispatch import audit
from dispatch.directory.addresses import is_valid_email
from dispatch.extensions import db
from dispatch.models import Organisation, RecipientGroup
from dispatch.text import from_spreadsheet_text, refused_characters_message, spreadsheet_text

DEFAULT_GROUP_CODE = "so-tttt-2021"
DEFAULT_GROUP_NAME = "Sở TTTT và tương đương các tỉnh, thành phố (2021)"
DATA_FILE = "directory-2021.csv"

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
)
REQUIRED_COLUMNS = ("code", "province", "kind", "region", "name", "email")
PROVINCE_KINDS = ("tỉnh", "thành phố")

# Mã định danh (QCVN 102): XXX.YY.ZZ.Lnn, 13 characters, e.g. 000.00.00.H29.
_AGENCY_ID = re.compile(r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}$")
_PROVINCE_CODE = re.compile(r"^\d{2}$")
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

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return bool(self.created or self.updated or self.group_created or self.memberships_added)


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
    """The 2021 directory shipped with the package, as text."""
    return resources.files("dispatch").joinpath("data", DATA_FILE).read_text(encoding="utf-8-sig")


def known_provinces() -> dict[str, str]:
    """Province code → name, from the bundled directory (the 63 provinces of 2021)."""
    reader = csv.DictReader(io.StringIO(bundled_csv_text()))
    return {row["code"]: _nfc(row["province"]) for row in reader}


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

    provinces = known_provinces()
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
    line: int, record: dict[str, str], provinces: dict[str, str]
) -> tuple[DirectoryRow | None, list[RowProblem]]:
    problems: list[str] = []
    code = record["code"]
    if not _PROVINCE_CODE.fullmatch(code):
        problems.append(f"mã tỉnh {code!r} phải gồm đúng 2 chữ số (ví dụ 01, 95)")
    elif code not in provinces:
        problems.append(f"mã tỉnh {code} không có trong danh mục 63 tỉnh, thành phố")
    elif fold(record["province"]) != fold(provinces[code]):
        problems.append(f"tên tỉnh {record['province']!r} không khớp mã {code} ({provinces[code]})")
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
    group = _get_or_create_group(group_code, group_name, result)
    codes = sorted({row.code for row in rows})
    existing = {
        (org.province_code, org.valid_from): org
        for org in db.session.execute(
            select(Organisation).where(Organisation.province_code.in_(codes)).with_for_update()
        ).scalars()
    }
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

    members = {org.id for org in group.members}
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
        if org.id not in members:
            group.members.append(org)
            members.add(org.id)
            result.memberships_added += 1
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
    query = select(Organisation).order_by(Organisation.province_code, Organisation.valid_from)
    if group_code is not None:
        query = query.where(Organisation.groups.any(RecipientGroup.code == group_code))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for org in db.session.execute(query).scalars():
        writer.writerow(
            spreadsheet_text(cell)
            for cell in [
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
            ]
        )
    return ("\ufeff" if bom else "") + out.getvalue()


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
