"""Exports of a dispatch's receipt status, read back: CSV (csv module), XLSX (openpyxl) and the
printable PDF report (pdftotext, pdffonts, pypdf)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pdfplumber
import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from dispatch.clock import parse_moment
from dispatch.reporting import dashboard, exports
from tests.fixtures.leadership import SEEN_AT, Office, add_dispatch
from tests.test_archival import archival_facts

POPPLER = shutil.which("pdftotext") and shutil.which("pdffonts")
HEADER = [
    "Mã",
    "Tỉnh, thành phố",
    "Đơn vị",
    "Vùng",
    "Thư điện tử",
    "Ký hiệu trạng thái",
    "Trạng thái",
    "Gửi thư",
    "Phản hồi máy chủ thư",
    "Phản hồi gốc của máy chủ thư",
    "Gửi lúc",
    "Đã mở lúc",
    "Xác nhận lúc",
    "Người xác nhận",
    "Số lần nhắc",
    "Quá hạn",
]


def _download(client, board, ext: str, **query: str):
    response = client.get(
        f"/lanh-dao/cong-van/{board.dispatch_id}/bao-cao.{ext}", query_string=query
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="bao-cao-tiep-nhan-01-THH-VP.{ext}";')
    assert response.headers["Cache-Control"] == "no-store"
    return response


def test_the_csv_export_has_a_bom_a_header_and_one_row_per_office(board, leader_client):
    response = _download(leader_client, board, "csv", sort="code")
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    data = response.data
    assert data.startswith("\ufeff".encode())
    text = data.decode("utf-8-sig")
    assert unicodedata.is_normalized("NFC", text)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == HEADER
    body = {row[0]: dict(zip(HEADER, row, strict=True)) for row in rows[1:]}
    assert len(rows) == 64 and len(body) == 63
    assert [row[0] for row in rows[1:]] == sorted(body)  # in the order asked for
    hanoi = body["01"]
    assert hanoi["Tỉnh, thành phố"] == "Hà Nội"
    assert hanoi["Đơn vị"] == "Sở Thông tin và Truyền thông thành phố Hà Nội"
    assert hanoi["Vùng"] == "Đồng bằng sông Hồng"
    assert hanoi["Trạng thái"] == "Đã xác nhận" and hanoi["Ký hiệu trạng thái"] == "XN"
    assert hanoi["Gửi lúc"] == "15/11/2021 08:32"
    assert hanoi["Đã mở lúc"] == "15/11/2021 09:40"
    assert hanoi["Xác nhận lúc"] == "15/11/2021 10:30"
    assert hanoi["Người xác nhận"] == "Nguyễn Văn Bình" and hanoi["Quá hạn"] == "Không"
    assert body["02"]["Gửi thư"] == "Gửi lỗi"
    # What the server said, in plain words first, the raw reply in a column of its own.
    assert body["02"]["Phản hồi máy chủ thư"] == "Máy chủ thư từ chối nhận"
    assert body["02"]["Phản hồi gốc của máy chủ thư"] == "550 5.1.1 mailbox unavailable"
    assert hanoi["Phản hồi máy chủ thư"] == "Máy chủ thư đã nhận"
    assert hanoi["Phản hồi gốc của máy chủ thư"].startswith("250")
    assert body["10"]["Quá hạn"] == "Có" and body["10"]["Số lần nhắc"] == "2"
    assert body["11"]["Gửi thư"] == "Đang thử lại" and body["11"]["Trạng thái"] == "Chờ gửi"
    assert body["95"]["Đơn vị"] == "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"
    statuses = [row["Trạng thái"] for row in body.values()]
    assert statuses.count("Đã xác nhận") == 4 and statuses.count("Đã gửi") == 52


def test_the_xlsx_export_has_real_dates_widths_and_a_frozen_header(board, leader_client):
    response = _download(leader_client, board, "xlsx", sort="time", dir="asc")
    assert response.headers["Content-Type"] == exports.XLSX_MEDIA_TYPE
    workbook = load_workbook(io.BytesIO(response.data))
    assert workbook.sheetnames == ["Đơn vị", "Tổng hợp"]
    sheet = workbook["Đơn vị"]
    header = [cell.value for cell in sheet[1]]
    assert header == HEADER
    assert all(cell.font.bold for cell in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert sheet.column_dimensions["C"].width == 48 and sheet.column_dimensions["A"].width == 6
    rows = [dict(zip(HEADER, (c.value for c in row), strict=True)) for row in sheet.iter_rows(2)]
    assert len(rows) == 63
    assert [row["Mã"] for row in rows[:4]] == ["01", "48", "95", "79"]  # confirmation order
    hanoi = rows[0]
    # Vietnam wall-clock time, as a real date-time shown dd/mm/yyyy hh:mm.
    assert hanoi["Xác nhận lúc"] == dt.datetime(2021, 11, 15, 10, 30)
    assert hanoi["Đã mở lúc"] == dt.datetime(2021, 11, 15, 9, 40)
    assert sheet.cell(row=2, column=HEADER.index("Xác nhận lúc") + 1).number_format == (
        "dd/mm/yyyy hh:mm"
    )
    assert hanoi["Người xác nhận"] == "Nguyễn Văn Bình" and hanoi["Số lần nhắc"] == 0
    assert hanoi["Phản hồi máy chủ thư"] == "Máy chủ thư đã nhận"
    failed = next(row for row in rows if row["Mã"] == "02")
    assert failed["Phản hồi máy chủ thư"] == "Máy chủ thư từ chối nhận"
    assert failed["Phản hồi gốc của máy chủ thư"] == "550 5.1.1 mailbox unavailable"
    lao_cai = next(row for row in rows if row["Mã"] == "10")
    assert lao_cai["Số lần nhắc"] == 2 and lao_cai["Quá hạn"] == "Có"
    assert lao_cai["Xác nhận lúc"] is None
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                assert unicodedata.is_normalized("NFC", value)

    summary = {row[0].value: row[1].value for row in workbook["Tổng hợp"].iter_rows()}
    assert summary["Công văn"] == "01/THH-VP"
    assert summary["Trích yếu"] == "V/v triển khai ứng dụng PC-Covid trên phạm vi toàn quốc"
    assert summary["Hạn xác nhận"] == dt.datetime(2021, 11, 18, 17, 0)
    assert summary["Thời điểm lập báo cáo"] == dt.datetime(2021, 11, 16, 10, 0)
    assert summary["Tổng số"] == 63 and summary["Đã xác nhận"] == 4 and summary["Quá hạn"] == 1


def _poppler(tool: str, data: bytes, tmp_path: Path, *args: str) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    result = subprocess.run(
        [tool, *args, str(path), "-"] if tool == "pdftotext" else [tool, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def _office_table(data: bytes) -> list[list[str]]:
    """The rows of the offices table on every page, each cell's lines joined by spaces."""
    rows = []
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for page in pdf.pages:
            for table in page.extract_tables():
                for row in table:
                    cells = [" ".join((cell or "").split()) for cell in row]
                    if len(cells) == 10 and cells[0].isdigit():
                        rows.append(cells)
    return rows


@pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext, pdffonts) not installed")
def test_the_pdf_report_reads_back_with_title_counts_offices_and_page_numbers(
    board, leader_client, tmp_path, artifacts_dir
):
    response = _download(leader_client, board, "pdf", sort="code")
    assert response.headers["Content-Type"] == "application/pdf"
    data = response.data
    (artifacts_dir / "bao-cao-tiep-nhan.pdf").write_bytes(data)
    _, xmp = archival_facts(data)
    assert "Báo cáo tình hình tiếp nhận" in xmp and "<xmp:CreateDate>" in xmp
    reader = PdfReader(io.BytesIO(data))
    pages = reader.pages
    assert len(pages) >= 2
    width, height = float(pages[0].mediabox.width), float(pages[0].mediabox.height)
    assert (round(width), round(height)) == (842, 595)  # A4 landscape, in points
    assert reader.metadata.title == "Báo cáo tình hình tiếp nhận Công văn số 01/THH-VP"

    text = _poppler("pdftotext", data, tmp_path, "-layout", "-enc", "UTF-8")
    assert unicodedata.is_normalized("NFC", text)
    flat = " ".join(text.split())
    assert "BÁO CÁO TÌNH HÌNH TIẾP NHẬN CÔNG VĂN SỐ 01/THH-VP" in flat
    assert "V/v triển khai ứng dụng PC-Covid trên phạm vi toàn quốc" in flat
    assert "Báo cáo lập lúc 10:00 ngày 16/11/2021 (giờ Việt Nam)" in flat
    assert "Hạn xác nhận: 18/11/2021 17:00" in flat
    assert "Tổng số Đã gửi Gửi lỗi Đã mở Đã xác nhận Quá hạn 63 58 2 4 4 1" in flat
    for page_number in range(1, len(pages) + 1):
        assert f"Trang {page_number}/{len(pages)}" in flat
    # The map of the 63 provinces (2021) with both archipelagos, and the chart, in colour.
    assert "Bản đồ 63 tỉnh, thành phố (trước 01/07/2025)" in flat
    assert "quần đảo Hoàng Sa (thành phố Đà Nẵng), quần đảo Trường Sa (tỉnh Khánh Hòa)" in flat
    assert "LCH Lai Châu" in flat and "CM Cà Mau" in flat
    assert "Hoàng Sa" in flat and "Trường Sa" in flat and "Số đơn vị đã xác nhận" in flat
    assert "Hạn xác nhận 18/11 17:00" in flat
    # The table of offices, cell by cell (a long name wraps inside its cell).
    rows = _office_table(data)
    assert [row[0] for row in rows] == [str(n) for n in range(1, 64)]
    codes = [row[1] for row in rows]
    assert codes == sorted(codes) and len(set(codes)) == 63  # in the order asked for
    by_code = {row[1]: row for row in rows}
    assert by_code["01"][2:] == [
        "Hà Nội",
        "Sở Thông tin và Truyền thông thành phố Hà Nội",
        "XN · Đã xác nhận",
        "Đã gửi",
        "15/11/2021 09:40",
        "15/11/2021 10:30",
        "Nguyễn Văn Bình",
        "0",
    ]
    assert by_code["79"][8] == "Trần Thị Hồng Nhung"
    assert by_code["95"][3] == "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"
    assert by_code["10"][4] == "QH · Quá hạn" and by_code["10"][9] == "2"
    assert by_code["11"][4:6] == ["CG · Chờ gửi", "Đang thử lại"]
    for row in rows:
        assert all(unicodedata.is_normalized("NFC", cell) for cell in row)

    fonts = _poppler("pdffonts", data, tmp_path).splitlines()[2:]
    assert fonts and all(re.search(r"\+Liberation-Serif", line) for line in fonts), fonts
    assert all(" yes yes " in line for line in fonts)  # embedded, subset


@pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext, pdffonts) not installed")
def test_the_pdf_prints_a_character_the_fonts_lack_as_a_question_mark(seeded, fixed_now, tmp_path):
    emoji = Office(acknowledged_at=SEEN_AT, acknowledged_by="Ngô Văn An 👍")
    dispatch_id = add_dispatch(seeded.offices[:2], number=7, offices={"01": emoji})
    data = dashboard.dispatch_dashboard(dispatch_id, at=SEEN_AT)
    pdf = exports.to_pdf(data)
    text = " ".join(_poppler("pdftotext", pdf, tmp_path, "-layout", "-enc", "UTF-8").split())
    assert "Ngô Văn An ?" in text
    hanoi = next(row for row in _office_table(pdf) if row[1] == "01")
    assert hanoi[8] == "Ngô Văn An ?"
    assert "CÔNG VĂN SỐ 07/THH-VP" in text
    fonts = _poppler("pdffonts", pdf, tmp_path).splitlines()[2:]
    assert all("Liberation-Serif" in line for line in fonts)


def test_exports_of_a_draft_are_named_after_its_id(seeded, fixed_now):
    dispatch_id = add_dispatch(seeded.offices[:2], number=None)
    data = dashboard.dispatch_dashboard(dispatch_id, at=SEEN_AT)
    assert exports.export_basename(data) == f"bao-cao-tiep-nhan-du-thao-{dispatch_id}"
    rows = list(csv.reader(io.StringIO(exports.to_csv(data).decode("utf-8-sig"))))
    assert len(rows) == 3 and {row[7] for row in rows[1:]} == {"Chưa gửi"}
    view = exports.pdf_view(data)
    assert view["title"] == "BÁO CÁO TÌNH HÌNH TIẾP NHẬN CÔNG VĂN (DỰ THẢO)"


def test_the_csv_follows_the_moment_it_is_made_for(board):
    late = dashboard.dispatch_dashboard(
        board.dispatch_id, at=parse_moment("2021-11-19T09:00:00+07:00"), sort="code"
    )
    rows = list(csv.DictReader(io.StringIO(exports.to_csv(late).decode("utf-8-sig"))))
    assert sum(row["Quá hạn"] == "Có" for row in rows) == 59
    assert {row["Trạng thái"] for row in rows} == {"Đã xác nhận", "Quá hạn"}
