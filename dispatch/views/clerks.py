"""Signed-in pages for clerks, leaders and admins: the list of dispatches and one dispatch.

Every route checks the role on the server with ``role_required``. Reading is open to all three
roles (leaders read everything); routes that change anything must use ``CHANGE_ROLES``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, abort, render_template, request

from dispatch import clock, listing, status
from dispatch.auth import role_required
from dispatch.models import DispatchStatus, Role

bp = Blueprint("clerks", __name__)

# Who may read the signed-in pages, and who may change things (leaders read only).
READ_ROLES = (Role.ADMIN, Role.CLERK, Role.LEADER)
CHANGE_ROLES = (Role.CLERK, Role.ADMIN)


@bp.get("/")
@role_required(*READ_ROLES)
def home() -> Any:
    """The dispatches, newest first, with how many recipients confirmed receipt."""
    page = request.args.get("page", 1, type=int) or 1
    summaries = listing.list_dispatches(page=page, page_size=listing.DEFAULT_PAGE_SIZE)
    return render_template("clerks/home.html", page=summaries)


@bp.get("/dispatches/<int:dispatch_id>")
@role_required(*READ_ROLES)
def dispatch_detail(dispatch_id: int) -> Any:
    """One dispatch: number, subject, status, and every recipient's delivery and receipt."""
    try:
        report = status.status_report(dispatch_id, at=clock.now())
    except status.StatusError:
        abort(404)
    return render_template(
        "clerks/dispatch.html",
        report=report,
        status_label=listing.STATUS_LABELS[DispatchStatus(report["status"])],
        delivery_labels=status.DELIVERY_LABELS,
        recipients=[_recipient_row(r) for r in report["recipients"]],
    )


def _recipient_row(recipient: dict[str, Any]) -> dict[str, Any]:
    """A recipient of the report with its times in dd/mm/yyyy HH:MM, Vietnam time."""
    row = dict(recipient)
    for key in ("sent_at", "opened_at", "acknowledged_at"):
        value = recipient[key]
        row[key] = clock.format_local(dt.datetime.fromisoformat(value)) if value else ""
    return row
