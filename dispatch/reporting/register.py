"""The outgoing register (sổ đăng ký văn bản đi) of a year, as Decree 30's Phụ lục IV lays it
out: one row per issued dispatch, in number order, as data, as an Excel workbook and as a PDF.

The rows are built in three queries whatever their number: the dispatches, their recipients'
counts, and the first letter e-mail each dispatch had accepted ("Ngày chuyển").
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

from flask import render_template
from sqlalchemy import Integer, case, cast, func, select

from dispatch.clock import format_local, local
from dispatch.extensions import db
from dispatch.letters.source import URGENCIES
from dispatch.models import (
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    MessageKind,
    OutboxMessage,
)
from dispatch.text import text_cells_only

TITLE = "SỔ ĐĂNG KÝ VĂN BẢN ĐI"
# Phụ lục IV's columns, in its order, with the width (characters) each gets in the workbook.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("number", "Số, ký hiệu văn bản", 14),
    ("date", "Ngày, tháng văn bản", 12),
    ("subject", "Tên loại và trích yếu nội dung văn bản", 44),
    ("signer", "Người ký", 22),
    ("recipients", "Nơi nhận văn bản", 32),
    ("filed_by", "Đơn vị, người nhận bản lưu", 16),
    ("copies", "Số lượng bản", 9),
    ("sent_on", "Ngày chuyển", 12),
    ("signed_for", "Ký nhận", 18),
    ("note", "Ghi chú", 20),
)
HEADERS = tuple(label for _, label, _ in COLUMNS)
# A công văn has no type name in its heading; the register names its type all the same.
LETTER_TYPE = "Công văn"
FILED_PREFIX = "lưu:"


class RegisterError(RuntimeError):
    """The register cannot be printed faithfully; the message is for clerks (Vietnamese)."""


@dataclass(frozen=True)
class RegisterRow:
    """One issued dispatch as the register lists it."""

    dispatch_id: int
    number: int
    number_and_symbol: str
    date: dt.date
    subject: str
    signer: str
    recipients: str
    filed_by: str
    copies: int
    sent_on: dt.date | None
    signed_for: str
    note: str

    def cells(self) -> list[Any]:
        """The row's values in the order of ``COLUMNS`` (dates as dates)."""
        return [
            self.number_and_symbol,
            self.date,
            self.subject,
            self.signer,
            self.recipients,
            self.filed_by,
            self.copies,
            self.sent_on,
            self.signed_for,
            self.note,
        ]

    def texts(self) -> list[str]:
        """The row's values as printed text (dates dd/mm/yyyy)."""
        return [
            value.strftime("%d/%m/%Y")
            if isinstance(value, dt.date)
            else ("" if value is None else str(value))
            for value in self.cells()
        ]


@dataclass(frozen=True)
class Register:
    """A year of the register."""

    year: int
    register: str | None  # one issuing body's register ("THH"), or None for all
    rows: list[RegisterRow]


def _signer(meta: dict[str, Any]) -> str:
    signer = meta.get("signer") if isinstance(meta.get("signer"), dict) else {}
    assert isinstance(signer, dict)
    name = str(signer.get("name") or "").strip()
    title = str(signer.get("title") or "").strip()
    authority = str(signer.get("authority") or "").strip()
    acting_for = str(signer.get("acting_for") or "").strip()
    role = title
    if authority:
        prefix = authority if authority.endswith(".") else authority + "."
        role = f"{prefix.upper()} {acting_for} - {title}".strip(" -")
    return f"{name} ({role})" if role and name else name or role


def _text_list(meta: dict[str, Any], key: str) -> list[str]:
    value = meta.get(key)
    if not isinstance(value, list):
        return []
    return [str(item).strip().lstrip("-–• ").rstrip(";.").strip() for item in value if item]


def _filed_by(meta: dict[str, Any]) -> str:
    """'VT, THH' from the distribution's "Lưu: VT, THH" line."""
    for item in _text_list(meta, "distribution"):
        if item.casefold().startswith(FILED_PREFIX):
            return item[len(FILED_PREFIX) :].strip()
    return ""


def _note(meta: dict[str, Any], status: DispatchStatus, failed: int) -> str:
    parts = []
    urgency = meta.get("urgency")
    if isinstance(urgency, str) and urgency.strip().lower() in URGENCIES:
        parts.append(URGENCIES[urgency.strip().lower()].value.capitalize())
    if status is DispatchStatus.COMPLETED:
        parts.append("Đã nhận đủ xác nhận")
    if status is DispatchStatus.RECALLED:
        parts.append("Đã thu hồi")
    if status is DispatchStatus.REPLACED:
        parts.append("Đã bị thay thế")
    if failed:
        parts.append(f"{failed} thư gửi lỗi")
    return "; ".join(parts)


def years() -> list[int]:
    """The years that have issued dispatches, newest first."""
    return sorted(
        (
            year
            for year in db.session.execute(
                select(Dispatch.register_year).where(Dispatch.register_year.is_not(None)).distinct()
            ).scalars()
            if year is not None
        ),
        reverse=True,
    )


def build_register(year: int, register: str | None = None) -> Register:
    """The register of ``year`` (one issuing body's, or every one's), in number order."""
    filters = [
        Dispatch.register_year == year,
        # A recalled or replaced letter keeps its number: the register shows it, with a note.
        Dispatch.status.in_(
            (
                DispatchStatus.ISSUED,
                DispatchStatus.COMPLETED,
                DispatchStatus.RECALLED,
                DispatchStatus.REPLACED,
            )
        ),
    ]
    if register:
        filters.append(Dispatch.register == register)
    dispatches = list(
        db.session.execute(
            select(Dispatch).where(*filters).order_by(Dispatch.register, Dispatch.number)
        ).scalars()
    )
    ids = [d.id for d in dispatches]
    counts: dict[int, tuple[int, int]] = {}
    sent: dict[int, tuple[dt.datetime | None, int]] = {}
    if ids:
        for dispatch_id, total, acknowledged in db.session.execute(
            select(
                DispatchRecipient.dispatch_id,
                func.count(DispatchRecipient.id),
                func.count(DispatchRecipient.acknowledged_at),
            )
            .where(DispatchRecipient.dispatch_id.in_(ids))
            .group_by(DispatchRecipient.dispatch_id)
        ):
            counts[dispatch_id] = (total, acknowledged)
        failed = cast(
            func.sum(case((OutboxMessage.status == DeliveryStatus.FAILED, 1), else_=0)), Integer
        )
        for dispatch_id, first_sent, failures in db.session.execute(
            select(
                OutboxMessage.dispatch_id,
                func.min(OutboxMessage.sent_at),
                failed,
            )
            .where(OutboxMessage.dispatch_id.in_(ids), OutboxMessage.kind == MessageKind.LETTER)
            .group_by(OutboxMessage.dispatch_id)
        ):
            sent[dispatch_id] = (first_sent, failures or 0)
    rows = []
    for dispatch in dispatches:
        meta = (dispatch.source or {}).get("meta") or {}
        total, acknowledged = counts.get(dispatch.id, (0, 0))
        first_sent, failures = sent.get(dispatch.id, (None, 0))
        addressees = "; ".join(_text_list(meta, "addressees"))
        assert dispatch.number is not None and dispatch.issued_on is not None
        rows.append(
            RegisterRow(
                dispatch_id=dispatch.id,
                number=dispatch.number,
                number_and_symbol=dispatch.number_and_symbol or "",
                date=dispatch.issued_on,
                subject=f"{LETTER_TYPE} V/v {dispatch.subject}",
                signer=_signer(meta),
                recipients=f"{addressees} ({total} cơ quan, gửi điện tử)"
                if addressees
                else f"{total} cơ quan (gửi điện tử)",
                filed_by=_filed_by(meta),
                copies=total,
                sent_on=local(first_sent).date() if first_sent else None,
                signed_for=f"Đã xác nhận {acknowledged}/{total}",
                note=_note(meta, dispatch.status, failures),
            )
        )
    return Register(year=year, register=register or None, rows=rows)


# --- Excel -------------------------------------------------------------------------------------


def register_xlsx(book: Register, *, at: dt.datetime) -> bytes:
    """The register as an Excel workbook: title, bold wrapped header, dates as dates, A4
    landscape, the header repeated on every printed page."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, Side
    from openpyxl.utils import get_column_letter

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = f"So di {book.year}"
    last = get_column_letter(len(COLUMNS))
    sheet["A1"] = TITLE
    sheet["A1"].font = Font(name="Times New Roman", bold=True, size=14)
    sheet["A1"].alignment = Alignment(horizontal="center")
    sheet.merge_cells(f"A1:{last}1")
    subtitle = f"Năm {book.year}" + (f" — Sổ {book.register}" if book.register else "")
    sheet["A2"] = subtitle
    sheet["A2"].font = Font(name="Times New Roman", italic=True, size=12)
    sheet["A2"].alignment = Alignment(horizontal="center")
    sheet.merge_cells(f"A2:{last}2")
    thin = Side(style="thin")
    border = Border(left=thin, right=thin, top=thin, bottom=thin)
    header_row = 4
    for index, (_, label, width) in enumerate(COLUMNS, start=1):
        cell = sheet.cell(row=header_row, column=index, value=label)
        cell.font = Font(name="Times New Roman", bold=True, size=11)
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.border = border
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.row_dimensions[header_row].height = 45
    for offset, row in enumerate(book.rows, start=1):
        for index, value in enumerate(row.cells(), start=1):
            cell = sheet.cell(row=header_row + offset, column=index, value=value)
            cell.font = Font(name="Times New Roman", size=11)
            cell.alignment = Alignment(vertical="top", wrap_text=True)
            cell.border = border
            if isinstance(value, dt.date):
                cell.number_format = "DD/MM/YYYY"
                cell.alignment = Alignment(horizontal="center", vertical="top")
    sheet.freeze_panes = sheet.cell(row=header_row + 1, column=1)
    sheet.print_title_rows = f"{header_row}:{header_row}"
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A4
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    sheet.print_options.horizontalCentered = True
    sheet.oddFooter.center.text = "Trang &P / &N"
    workbook.properties.title = f"{TITLE} năm {book.year}"
    workbook.properties.creator = "Dispatch"
    # Fixed times: the same register gives the same bytes (the export is reproducible).
    moment = local(at).replace(tzinfo=None, microsecond=0)
    workbook.properties.created = moment
    workbook.properties.modified = moment
    out = io.BytesIO()
    for each in workbook.worksheets:
        text_cells_only(each)
    workbook.save(out)
    return out.getvalue()


# --- PDF ---------------------------------------------------------------------------------------


def register_pdf(book: Register, *, at: dt.datetime) -> bytes:
    """The register printed on A4 landscape with the shipped fonts, page numbers on each page.

    Rendered through the same restricted fetcher as letters: only the font files can be read.
    """
    import weasyprint
    from weasyprint.text.fonts import FontConfiguration
    from weasyprint.urls import FatalURLFetchingError

    from dispatch.letters.fetcher import FONT_TYPES, RestrictedURLFetcher
    from dispatch.letters.pdf import (
        FONT_DIR,
        FONT_FAMILY,
        font_faces,
        font_paths,
        write_archival,
    )

    fonts = font_faces(font_paths())
    html = render_template(
        "clerks/register_print.html",
        book=book,
        title=TITLE,
        headers=HEADERS,
        rows=[row.texts() for row in book.rows],
        fonts=fonts,
        font_family=FONT_FAMILY,
        printed_at=format_local(at),
        created=local(at).replace(microsecond=0).isoformat(),
    )
    fetcher = RestrictedURLFetcher({FONT_DIR: FONT_TYPES})
    font_config = FontConfiguration()
    try:
        document = weasyprint.HTML(
            string=html, base_url=FONT_DIR.as_uri() + "/", url_fetcher=fetcher
        ).render(font_config=font_config)
        pdf = write_archival(document)
    except FatalURLFetchingError as exc:  # a BaseException
        raise RegisterError(f"Không in được sổ đăng ký: {exc}") from exc
    # A silent fallback to another font would print boxes for Vietnamese marks: refuse it.
    strangers = {font.family for font in document.fonts.values()} - {FONT_FAMILY}
    if strangers:
        raise RegisterError(f"Sổ đăng ký đã dùng phông chữ ngoài bộ đi kèm: {strangers}")
    return pdf
