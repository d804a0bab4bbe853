"""Read-only pages for leadership (and clerks and admins): how far every dispatch has got, and
one dispatch's map of the provinces, chart of confirmations, table of offices and exports.

Routes only read: each accepts GET (and HEAD) alone, so a POST is answered 405 by Flask, and
every route checks the role on the server. The work is in ``dispatch.reporting.dashboard`` and
``dispatch.reporting.exports``; the moment shown is read here, once per request.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, render_template, request

from dispatch import clock
from dispatch.accounts.auth import role_required
from dispatch.models import Role
from dispatch.reporting import dashboard, exports, status

bp = Blueprint("leadership", __name__, url_prefix="/lanh-dao")

READ_ROLES = (Role.LEADER, Role.CLERK, Role.ADMIN)
# Ids are 32-bit integers in the database: a larger one in a URL names nothing (and would
# overflow the PostgreSQL driver), so it is a 404 before any query.
MAX_ID = 2**31 - 1


@bp.url_value_preprocessor
def _ids_in_range(endpoint: str | None, values: dict[str, Any] | None) -> None:
    for name, value in (values or {}).items():
        if name.endswith("_id") and isinstance(value, int) and not 0 < value <= MAX_ID:
            abort(404)


def _dispatch_data(dispatch_id: int) -> dict[str, Any]:
    """The dashboard of a dispatch as of now, sorted as the query string asks; 404 if unknown."""
    try:
        return dashboard.dispatch_dashboard(
            dispatch_id,
            at=clock.now(),
            sort=request.args.get("sort"),
            direction=request.args.get("dir"),
        )
    except status.StatusError:
        abort(404)


def _download(data: bytes, media_type: str, filename: str) -> Response:
    response = Response(data, mimetype=media_type.split(";")[0])
    if "charset" in media_type:
        response.headers["Content-Type"] = media_type
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
@role_required(*READ_ROLES)
def dispatches() -> Any:
    """Every issued dispatch (or, with ``?loai=du-thao``, every draft) with its progress."""
    page = request.args.get("page", 1, type=int) or 1
    drafts = request.args.get("loai") == "du-thao"
    listing_page = dashboard.dispatch_list(at=clock.now(), page=page, drafts=drafts)
    return render_template("leadership/list.html", listing=listing_page)


@bp.get("/cong-van/<int:dispatch_id>")
@role_required(*READ_ROLES)
def dispatch_page(dispatch_id: int) -> Any:
    """One dispatch: counts, the tile map, the chart, the sortable table of offices, exports."""
    return render_template(
        "leadership/dispatch.html",
        d=_dispatch_data(dispatch_id),
    )


@bp.get("/cong-van/<int:dispatch_id>/bao-cao.csv")
@role_required(*READ_ROLES)
def export_csv(dispatch_id: int) -> Response:
    """The table of offices as CSV (UTF-8 with BOM)."""
    data = _dispatch_data(dispatch_id)
    return _download(
        exports.to_csv(data), exports.CSV_MEDIA_TYPE, exports.export_basename(data) + ".csv"
    )


@bp.get("/cong-van/<int:dispatch_id>/bao-cao.xlsx")
@role_required(*READ_ROLES)
def export_xlsx(dispatch_id: int) -> Response:
    """The table of offices as an Excel workbook."""
    data = _dispatch_data(dispatch_id)
    return _download(
        exports.to_xlsx(data), exports.XLSX_MEDIA_TYPE, exports.export_basename(data) + ".xlsx"
    )


@bp.get("/cong-van/<int:dispatch_id>/bao-cao.pdf")
@role_required(*READ_ROLES)
def export_pdf(dispatch_id: int) -> Response:
    """The printable report "Báo cáo tình hình tiếp nhận" as PDF."""
    data = _dispatch_data(dispatch_id)
    return _download(
        exports.to_pdf(data), exports.PDF_MEDIA_TYPE, exports.export_basename(data) + ".pdf"
    )
