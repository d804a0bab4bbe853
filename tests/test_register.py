"""The outgoing register (sổ đăng ký văn bản đi): Phụ lục IV's columns, one row per issued
dispatch in number order, as a page, an Excel workbook and a PDF read back."""

from __future__ import annotations

import datetime as dt
import io
import subprocess

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import event

from dispatch.clock import parse_moment
from dispatch.extensions import db
from dispatch.mail.sender import deliver_due
from dispatch.reporting import register
from tests.fixtures.dispatches import ISSUE_AT
from tests.test_archival import archival_facts

PHU_LUC_IV = [
    "Số, ký hiệu văn bản",
    "Ngày, tháng văn bản",
    "Tên loại và trích yếu nội dung văn bản",
    "Người ký",
    "Nơi nhận văn bản",
    "Đơn vị, người nhận bản lưu",
    "Số lượng bản",
    "Ngày chuyển",
    "Ký nhận",
    "Ghi chú",
]
SECOND_AT = parse_moment("2021-11-16T09:00:00+07:00")
NEXT_YEAR_AT = parse_moment("2022-01-04T09:00:00+07:00")


@pytest.fixture()
def year_2021(issued_dispatch, smtp_app):
    """Two dispatches issued in 2021 (the first sent), one in 2022."""
    first = issued_dispatch(subject="triển khai ứng dụng PC-Covid")
    deliver_due(parse_moment("2021-11-15T08:40:00+07:00"))
    second = issued_dispatch(at=SECOND_AT, subject="báo cáo kết quả", extra="urgency: khẩn\n")
    third = issued_dispatch(at=NEXT_YEAR_AT, subject="kế hoạch năm 2022", date="2022-01")
    return first, second, third


@pytest.mark.nodb
def test_the_columns_are_those_of_phu_luc_iv():
    assert list(register.HEADERS) == PHU_LUC_IV


def test_one_row_per_issued_dispatch_in_number_order(year_2021, desk):
    queries = []
    listener = lambda *args: queries.append(args[2])  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        book = register.build_register(2021)
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert len(queries) == 3  # however many dispatches
    assert [row.number_and_symbol for row in book.rows] == ["01/THH-VP", "02/THH-VP"]
    row = book.rows[0]
    assert row.date == dt.date(2021, 11, 15)
    assert row.subject == "Công văn V/v triển khai ứng dụng PC-Covid"
    assert row.signer == "Đỗ Công Anh (Cục trưởng)"
    assert row.recipients.startswith("Các Sở Thông tin và Truyền thông (63 cơ quan")
    assert row.filed_by == "VT, THH"
    assert row.copies == 63
    assert row.sent_on == dt.date(2021, 11, 15)
    assert row.signed_for == "Đã xác nhận 0/63"
    assert book.rows[1].sent_on is None and book.rows[1].note == "Khẩn"
    assert [r.number_and_symbol for r in register.build_register(2022).rows] == ["01/THH-VP"]
    assert register.years() == [2022, 2021]
    assert register.build_register(2021, register="KHAC").rows == []


def test_the_register_page(year_2021, desk):
    html = desk.clerk.get("/register?year=2021").get_data(as_text=True)
    for header in PHU_LUC_IV:
        assert header in html
    assert "01/THH-VP" in html and "02/THH-VP" in html and "kế hoạch năm 2022" not in html
    assert "15/11/2021" in html
    assert 'href="/register.xlsx?year=2021"' in html and 'href="/register.pdf?year=2021"' in html


def test_the_register_as_excel(year_2021, desk):
    response = desk.clerk.get("/register.xlsx?year=2021")
    assert response.status_code == 200
    assert response.mimetype.endswith("spreadsheetml.sheet")
    assert "so-van-ban-di-2021.xlsx" in response.headers["Content-Disposition"]
    sheet = load_workbook(io.BytesIO(response.data)).active
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert rows[0][0] == "SỔ ĐĂNG KÝ VĂN BẢN ĐI" and rows[1][0] == "Năm 2021"
    header_index = next(i for i, row in enumerate(rows) if row[0] == PHU_LUC_IV[0])
    assert rows[header_index] == PHU_LUC_IV
    data = [row for row in rows[header_index + 1 :] if any(row)]
    assert [row[0] for row in data] == ["01/THH-VP", "02/THH-VP"]  # one row per dispatch
    assert data[0][1] == dt.datetime(2021, 11, 15)  # a real date, not text
    assert data[0][6] == 63
    header_cell = sheet.cell(row=header_index + 1, column=1)
    assert header_cell.font.bold and header_cell.alignment.wrap_text
    assert sheet.cell(row=header_index + 2, column=2).number_format == "DD/MM/YYYY"
    assert sheet.page_setup.orientation == "landscape"
    assert str(sheet.page_setup.paperSize) == str(sheet.PAPERSIZE_A4)
    assert sheet.column_dimensions["C"].width > sheet.column_dimensions["A"].width
    row = header_index + 1
    assert sheet.print_title_rows == f"${row}:${row}"  # the header repeats on each page


def test_the_register_as_pdf(year_2021, desk, tmp_path):
    response = desk.clerk.get("/register.pdf?year=2021")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(response.data))
    page = reader.pages[0]
    assert float(page.mediabox.width) > float(page.mediabox.height)  # A4 landscape
    assert round(float(page.mediabox.width)) == 842 and round(float(page.mediabox.height)) == 595
    text = "\n".join(p.extract_text() for p in reader.pages)
    assert "SỔ ĐĂNG KÝ VĂN BẢN ĐI" in text and "Năm 2021" in text
    assert "01/THH-VP" in text and "02/THH-VP" in text
    assert "Trang 1 / 1" in text
    path = tmp_path / "so.pdf"
    path.write_bytes(response.data)
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True)
    lines = [line.split() for line in fonts.stdout.splitlines()[2:]]
    families = {line[0].split("+")[-1] for line in lines}
    assert families and all(name.startswith("Liberation-Serif") for name in families)
    assert all("yes" in line[-5:-2] for line in lines)  # embedded (subset)
    _, xmp = archival_facts(response.data)
    assert "SỔ ĐĂNG KÝ VĂN BẢN ĐI" in xmp and "<xmp:CreateDate>" in xmp


def test_an_empty_year_prints_too(desk):
    response = desk.clerk.get("/register.pdf?year=2030")
    assert response.status_code == 200
    text = PdfReader(io.BytesIO(response.data)).pages[0].extract_text()
    assert "SỔ ĐĂNG KÝ VĂN BẢN ĐI" in text and "Chưa có văn bản nào" in text
    assert "Chưa có văn bản nào" in desk.clerk.get("/register?year=2030").get_data(as_text=True)
    assert ISSUE_AT.year == 2021


def test_the_register_opens_on_the_newest_year_with_entries(year_2021, desk, monkeypatch):
    """Without ?year, a year with no entries yet is not where the register opens."""
    from dispatch import clock
    from dispatch.clock import VN

    monkeypatch.setattr(clock, "now", lambda: dt.datetime(2025, 3, 3, 9, 0, tzinfo=VN))
    html = desk.clerk.get("/register").get_data(as_text=True)
    newest = register.years()[0]
    assert newest != 2025
    assert f'href="/register.xlsx?year={newest}"' in html
