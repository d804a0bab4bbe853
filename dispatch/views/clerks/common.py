"""What the clerks' pages share: their blueprint, who may do what, template filters, look-ups."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, abort
from flask_login import current_user

from dispatch import clock
from dispatch.drafting import uploads
from dispatch.extensions import db
from dispatch.models import Dispatch, DispatchStatus, Role

bp = Blueprint("clerks", __name__)

# Who may read the signed-in pages, and who may change things (leaders read only).
READ_ROLES = (Role.ADMIN, Role.CLERK, Role.LEADER)
CHANGE_ROLES = (Role.CLERK, Role.ADMIN)
ADMIN_ROLES = (Role.ADMIN,)

STATUS_TABS = (
    ("", "Tất cả"),
    (DispatchStatus.DRAFT.value, "Dự thảo"),
    (DispatchStatus.ISSUED.value, "Đã ban hành"),
    (DispatchStatus.COMPLETED.value, "Đã hoàn thành"),
)
# A recipient's letter is "in flight" while its e-mail waits or is retried: the page refreshes.
IN_FLIGHT = {"queued", "retrying"}
REFRESH_SECONDS = 15
DIRECTORY_LIMIT = 500
SEARCH_LIMIT = 30


@bp.app_template_filter("vn_datetime")
def vn_datetime(moment: dt.datetime | None) -> str:
    """dd/mm/yyyy HH:MM in Vietnam time."""
    return clock.format_local(moment)


@bp.app_template_filter("vn_date")
def vn_date(value: dt.date | dt.datetime | None) -> str:
    """dd/mm/yyyy (a datetime in Vietnam time)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return clock.format_local(value, with_time=False)
    return value.strftime("%d/%m/%Y")


@bp.app_template_filter("human_size")
def human_size(size: int) -> str:
    """'2 MB', '512 KB'."""
    return uploads.human_size(size)


@bp.app_context_processor
def _roles() -> dict[str, Any]:
    # App-wide: the leaders' pages share the staff layout and its navigation.
    role = getattr(current_user, "role", None)
    return {
        "can_change": role in CHANGE_ROLES,
        "is_admin": role in ADMIN_ROLES,
        "is_leader": role is Role.LEADER,
    }


def signed_in_user() -> Any:
    """The signed-in user as a model object (not Flask-Login's proxy)."""
    return current_user._get_current_object()


def dispatch_or_404(dispatch_id: int) -> Dispatch:
    """The dispatch with this id, or a 404. (Ids past 32 bits are 404s already: ``IdConverter``.)"""
    dispatch = db.session.get(Dispatch, dispatch_id)
    if dispatch is None:
        abort(404)
    return dispatch
