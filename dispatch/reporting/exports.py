"""Exports of one dispatch's receipt status: CSV, XLSX and the printable PDF report.

Each export is a pure function of the data ``dashboard.dispatch_dashboard`` builds, so the page,
the files and any future command agree on every status and every time.

- CSV: UTF-8 with a byte-order mark (Excel on Windows then reads Vietnamese correctly), one
  header row, times written dd/mm/yyyy HH:MM in Vietnam time.
- XLSX (openpyxl): a sheet of offices with a bold, frozen header row, filters and column widths,
  times stored as real date-times in Vietnam time (Excel has no time zones) shown dd/mm/yyyy
  hh:mm; a second sheet with the dispatch and its counts.
- PDF "Báo cáo tình hình tiếp nhận": A4 landscape, laid out by WeasyPrint with the shipped
  Liberation Serif faces only, through the letters' restricted fetcher (it may read the font
  files and nothing else), page numbers in the footer. A character the fonts lack (an emoji in
  a confirmer's name, say) is printed as "?" rather than refusing the whole report.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
import unicodedata
from typing import Any

from markupsafe import Markup

from dispatch import clock
from dispatch.config import DEFAULT_PRODUCT_NAME, PROJECT_ROOT
from dispatch.letters import pdf as letter_pdf
from dispatch.text import spreadsheet_text, text_cells_only

TEMPLATE_DIR = PROJECT_ROOT / "templates" / "leadership"
MAP_CHART_CSS = PROJECT_ROOT / "dispatch" / "static" / "css" / "map-chart.css"
REPORT_TITLE = "BÁO CÁO TÌNH HÌNH TIẾP NHẬN CÔNG VĂN"

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PDF_MEDIA_TYPE = "application/pdf"

# The columns of the CSV and XLSX files: header, row key, width in characters (XLSX).
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("Mã", "code", 6),
    ("Tỉnh, thành phố", "province", 18),
    ("Đơn vị", "name", 48),
    ("Vùng", "region", 34),
    ("Thư điện tử", "email", 32),
    ("Ký hiệu trạng thái", "status_code", 10),
    ("Trạng thái", "status_label", 14),
    ("Gửi thư", "delivery_label", 14),
    ("Phản hồi máy chủ thư", "smtp_meaning", 30),
    ("Phản hồi gốc của máy chủ thư", "smtp_reply", 40),
    ("Gửi lúc", "sent_at", 17),
    ("Đã mở lúc", "opened_at", 17),
    ("Xác nhận lúc", "acknowledged_at", 17),
    ("Người xác nhận", "acknowledged_by", 24),
    ("Số lần nhắc", "reminders", 8),
    ("Quá hạn", "overdue", 8),
)
TIME_KEYS = frozenset({"sent_at", "opened_at", "acknowledged_at"})
EXCEL_TIME_FORMAT = "dd/mm/yyyy hh:mm"


class ReportError(RuntimeError):
    """The report cannot be produced (the PDF engine refused a resource or a font)."""


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def export_basename(dashboard: dict[str, Any]) -> str:
    """An ASCII file name stem: "bao-cao-tiep-nhan-01-THH-VP" (or "…-du-thao-12")."""
    number = dashboard["number"]
    if not number:
        return f"bao-cao-tiep-nhan-du-thao-{dashboard['id']}"
    safe = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in number)
    return f"bao-cao-tiep-nhan-{safe}"


def _cell_text(row: dict[str, Any], key: str) -> str:
    value = row[key]
    if key in TIME_KEYS:
        return clock.format_local(value)
    if key == "overdue":
        return "Có" if value else "Không"
    return _nfc(str(value)) if value is not None else ""


# --- CSV ------------------------------------------------------------------------------------


def to_csv(dashboard: dict[str, Any]) -> bytes:
    """The table of offices as CSV bytes: UTF-8 with BOM, a header row, one row per office."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([header for header, _, _ in COLUMNS])
    for row in dashboard["rows"]:
        writer.writerow([spreadsheet_text(_cell_text(row, key)) for _, key, _ in COLUMNS])
    return out.getvalue().encode("utf-8-sig")


# --- XLSX -----------------------------------------------------------------------------------


def _excel_time(value: dt.datetime | None) -> dt.datetime | None:
    """Vietnam wall-clock time without a zone: what Excel can store."""
    return None if value is None else clock.local(value).replace(tzinfo=None)


def to_xlsx(dashboard: dict[str, Any]) -> bytes:
    """The table of offices (and a summary sheet) as XLSX bytes."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Đơn vị"
    header_font = Font(bold=True, color="FFFFFF")
    header_fill = PatternFill("solid", fgColor="0B4F9C")
    sheet.append([header for header, _, _ in COLUMNS])
    for cell in sheet[1]:
        cell.font = header_font
        cell.fill = header_fill
        cell.alignment = Alignment(vertical="center", wrap_text=True)
    for row in dashboard["rows"]:
        values: list[Any] = []
        for _, key, _ in COLUMNS:
            if key in TIME_KEYS:
                values.append(_excel_time(row[key]))
            elif key == "reminders":
                values.append(int(row[key]))
            else:
                values.append(_cell_text(row, key))
        sheet.append(values)
    for index, (_, key, width) in enumerate(COLUMNS, start=1):
        letter = get_column_letter(index)
        sheet.column_dimensions[letter].width = width
        if key in TIME_KEYS:
            for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                cell.number_format = EXCEL_TIME_FORMAT
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = sheet.dimensions

    summary = workbook.create_sheet("Tổng hợp")
    facts: list[tuple[str, Any]] = [
        ("Công văn", dashboard["number"] or "Dự thảo"),
        ("Trích yếu", "V/v " + _nfc(dashboard["subject"])),
        ("Trạng thái", dashboard["status_label"]),
        ("Ban hành lúc", _excel_time(dashboard["issued_at"])),
        ("Hạn xác nhận", _excel_time(dashboard["deadline_at"])),
        ("Thời điểm lập báo cáo", _excel_time(dashboard["at"])),
    ]
    facts += [(item["label"], item["value"]) for item in dashboard["count_items"]]
    for label, value in facts:
        summary.append([label, value])
        summary.cell(row=summary.max_row, column=1).font = Font(bold=True)
        if isinstance(value, dt.datetime):
            summary.cell(row=summary.max_row, column=2).number_format = EXCEL_TIME_FORMAT
    summary.column_dimensions["A"].width = 24
    summary.column_dimensions["B"].width = 80

    # The file's own metadata says when the report was made, not when the server wrote it.
    workbook.properties.creator = "Dispatch"
    workbook.properties.title = _nfc(f"Báo cáo tình hình tiếp nhận {dashboard['title']}")
    stamp = dashboard["at"].astimezone(dt.UTC).replace(tzinfo=None, microsecond=0)
    workbook.properties.created = stamp
    workbook.properties.modified = stamp
    out = io.BytesIO()
    for each in workbook.worksheets:
        text_cells_only(each)
    workbook.save(out)
    return out.getvalue()


# --- PDF ------------------------------------------------------------------------------------


class _ReportEngine(letter_pdf.PrintEngine):
    """The report's engine: the shipped fonts, the report stylesheet, a fetcher that serves the
    font files only."""

    def __init__(self) -> None:
        from dispatch.letters.fetcher import FONT_TYPES

        super().__init__(
            template_dir=TEMPLATE_DIR,
            template="report_pdf.html",
            stylesheet="report_pdf.css",
            readable={letter_pdf.FONT_DIR: FONT_TYPES},
            error=ReportError,
            fetch_failed="Không in được báo cáo: {exc} ({cause})",
            foreign_font="Báo cáo đã dùng phông chữ ngoài bộ phông đi kèm ({family}).",
        )
        # The map's and the chart's drawing rules, the same file the web page links, in the
        # bundled fonts: printed inline SVG takes them from a style element of its own.
        self.svg_css = MAP_CHART_CSS.read_text(encoding="utf-8") + (
            ".tile-label, .tile-code, .chart text, .archipelago-label "
            f"{{ font-family: {letter_pdf.FONT_FAMILY}; }}\n"
        )

    def printable(self, text: str) -> str:
        """NFC text with every character the fonts lack replaced by "?"."""
        text = _nfc(text)
        return "".join(
            c if c in "\t\n\r" or ord(c) in self.coverage.codepoints else "?" for c in text
        )


_engine: _ReportEngine | None = None
_engine_lock = threading.Lock()


def _get_engine() -> _ReportEngine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _ReportEngine()
        return _engine


def product_name() -> str:
    """The product's name as the app is configured (DISPATCH_PRODUCT_NAME)."""
    from flask import current_app

    return current_app.config.get("DISPATCH_PRODUCT_NAME") or DEFAULT_PRODUCT_NAME


def pdf_view(dashboard: dict[str, Any], printable: Any = _nfc, svg_css: str = "") -> dict[str, Any]:
    """The plain data the PDF template reads; every text passed through ``printable``;
    ``svg_css`` the drawing rules of the map and the chart (our own CSS, not escaped)."""
    number = dashboard["number"]
    title = f"{REPORT_TITLE} SỐ" if number else f"{REPORT_TITLE} (DỰ THẢO)"
    at = clock.local(dashboard["at"])
    rows = [
        {
            "index": index,
            "code": row["code"],
            "province": printable(row["province"]),
            "name": printable(row["name"]),
            "status": printable(f"{row['status_code']} · {row['status_label']}"),
            "status_key": row["status"],
            "delivery": printable(row["delivery_label"]),
            "opened": row["opened_text"],
            "acknowledged": row["acknowledged_text"],
            "acknowledged_by": printable(row["acknowledged_by"]),
            "reminders": row["reminders"],
        }
        for index, row in enumerate(dashboard["rows"], start=1)
    ]
    return {
        # Inline SVG takes its drawing rules from a style element of its own when printed.
        "svg_css": Markup(svg_css),
        "product_name": product_name(),
        "map": dashboard["map"],
        "chart": dashboard["chart"],
        "document_title": printable(f"Báo cáo tình hình tiếp nhận {dashboard['title']}"),
        "title": title,
        "number": number or "",
        "subject": printable("V/v " + dashboard["subject"]),
        "issued_on": dashboard["issued_on"],
        "deadline": dashboard["deadline_text"],
        "status_label": printable(dashboard["status_label"]),
        "made_at": f"{at:%H:%M} ngày {at:%d/%m/%Y}",
        "created": at.replace(microsecond=0).isoformat(),
        "counts": dashboard["count_items"],
        "legend": [
            {"code": tile["code"], "label": tile["label"]}
            for tile in dashboard["map"]["legend"]
            if tile["key"] != "none"
        ],
        "rows": rows,
    }


def to_pdf(dashboard: dict[str, Any]) -> bytes:
    """The printable status report "Báo cáo tình hình tiếp nhận" as PDF bytes."""
    engine = _get_engine()
    return engine.render(pdf_view(dashboard, engine.printable, engine.svg_css))


def warm_up() -> None:
    """Set the PDF engine up now rather than on the first report."""
    _get_engine()
