"""The outgoing register (sổ đăng ký văn bản đi): the page, XLSX and PDF."""

from __future__ import annotations

from typing import Any

from flask import render_template

from dispatch import clock
from dispatch.accounts.auth import role_required
from dispatch.reporting import exports, register
from dispatch.views.clerks.common import CHANGE_ROLES, bp
from dispatch.views.downloads import add_file_routes, file_response
from dispatch.views.params import int_arg


def _register_year() -> int:
    # An absent or absurd year opens on this year's register if it has entries, else on the
    # newest year that has (an empty book is no place to start), rather than an error.
    year = int_arg("year", None, low=2000, high=2100, strict=False)
    if year is None:
        year = clock.local(clock.now()).year
        with_entries = register.years()
        if with_entries and year not in with_entries:
            year = with_entries[0]
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


# The register's files, by extension: how each is made, its media type, shown or saved.
REGISTER_FILES = {
    "xlsx": (register.register_xlsx, exports.XLSX_MEDIA_TYPE, False),
    "pdf": (register.register_pdf, exports.PDF_MEDIA_TYPE, True),  # printed from the browser
}


@role_required(*CHANGE_ROLES)
def register_file(extension: str) -> Any:
    """The register of a year as an Excel workbook, or printed as a PDF (A4 landscape)."""
    year = _register_year()
    make, media_type, inline = REGISTER_FILES[extension]
    data = make(register.build_register(year), at=clock.now())
    return file_response(data, media_type, f"so-van-ban-di-{year}.{extension}", inline=inline)


# /register.xlsx and /register.pdf as ``clerks.register_xlsx`` and ``clerks.register_pdf``.
add_file_routes(bp, "/register", "register", register_file, REGISTER_FILES)
