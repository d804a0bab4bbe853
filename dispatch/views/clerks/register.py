"""The outgoing register (sổ đăng ký văn bản đi): the page, XLSX and PDF."""

from __future__ import annotations

from typing import Any

from flask import (
    Response,
    render_template,
    request,
)

from dispatch import clock
from dispatch.accounts.auth import role_required
from dispatch.reporting import register
from dispatch.views.clerks.common import (
    CHANGE_ROLES,
    bp,
)

# --- The outgoing register ---------------------------------------------------------------------


def _register_year() -> int:
    year = request.args.get("year", type=int)
    if year is None or not 2000 <= year <= 2100:
        year = clock.local(clock.now()).year
    return year


@bp.get("/register")
@role_required(*CHANGE_ROLES)
def register_page() -> Any:
    """The outgoing register of a year (Phụ lục IV), with its Excel and PDF exports."""
    year = _register_year()
    years = sorted({*register.years(), year, clock.local(clock.now()).year}, reverse=True)
    return render_template(
        "clerks/register.html",
        book=register.build_register(year),
        headers=register.HEADERS,
        years=years,
        title=register.TITLE,
    )


@bp.get("/register.xlsx")
@role_required(*CHANGE_ROLES)
def register_xlsx() -> Any:
    """The register of a year as an Excel workbook."""
    year = _register_year()
    data = register.register_xlsx(register.build_register(year), at=clock.now())
    return Response(
        data,
        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="so-van-ban-di-{year}.xlsx"'},
    )


@bp.get("/register.pdf")
@role_required(*CHANGE_ROLES)
def register_pdf() -> Any:
    """The register of a year printed as a PDF (A4 landscape)."""
    year = _register_year()
    data = register.register_pdf(register.build_register(year), at=clock.now())
    return Response(
        data,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'inline; filename="so-van-ban-di-{year}.pdf"'},
    )
