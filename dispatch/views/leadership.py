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
from dispatch.views.downloads import NO_STORE, add_file_routes, file_response
from dispatch.views.params import page_arg

bp = Blueprint("leadership", __name__, url_prefix="/lanh-dao")

READ_ROLES = (Role.LEADER, Role.CLERK, Role.ADMIN)

# The exports of one dispatch, by file extension: how each is made, and its media type.
EXPORTS = {
    "csv": (exports.to_csv, exports.CSV_MEDIA_TYPE),
    "xlsx": (exports.to_xlsx, exports.XLSX_MEDIA_TYPE),
    "pdf": (exports.to_pdf, exports.PDF_MEDIA_TYPE),
}


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


@bp.get("/")
@role_required(*READ_ROLES)
def dispatches() -> Any:
    """Every issued dispatch (or, with ``?loai=du-thao``, every draft) with its progress."""
    page = page_arg(clamp=True)  # past the end (however far): the last page
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


@role_required(*READ_ROLES)
def export(dispatch_id: int, extension: str) -> Response:
    """The table of offices as CSV (UTF-8 with BOM) or Excel, or the printable report
    "Báo cáo tình hình tiếp nhận" as PDF; each sorted as the page was."""
    data = _dispatch_data(dispatch_id)
    make, media_type = EXPORTS[extension]
    filename = f"{exports.export_basename(data)}.{extension}"
    return file_response(make(data), media_type, filename, headers=NO_STORE)


# /lanh-dao/cong-van/<id>/bao-cao.csv … as ``leadership.export_csv`` …
add_file_routes(bp, "/cong-van/<int:dispatch_id>/bao-cao", "export", export, EXPORTS)
