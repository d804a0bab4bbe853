"""The API's operations on dispatches: list, create a draft, read one, delete a draft, issue."""

from __future__ import annotations

import re
from typing import Any

from flask import url_for
from flask_smorest import abort

from dispatch import clock, issuing
from dispatch.directory import offices
from dispatch.drafting import approval, deletion, drafts
from dispatch.extensions import db
from dispatch.letters.formatting import ROMAN
from dispatch.letters.source import LetterSourceError, source_from_json
from dispatch.models import Dispatch, DispatchStatus
from dispatch.reporting import listing, status
from dispatch.transaction import unit_of_work
from dispatch.views.api.common import (
    CHANGE_ERRORS,
    READ_ERRORS,
    bp,
    documented_errors,
    require_change,
)
from dispatch.views.api.schemas import (
    ApprovalSchema,
    DispatchListArgs,
    DispatchPageSchema,
    IssueArgs,
    LetterSourceSchema,
    StatusReportSchema,
    SubmitArgs,
)


def _summary_dict(summary: listing.DispatchSummary) -> dict[str, Any]:
    data = summary.as_dict()
    data["url"] = url_for("api.get_dispatch", dispatch_id=summary.id)
    return data


@bp.route("/dispatches", methods=["GET"])
@bp.arguments(DispatchListArgs, location="query", as_kwargs=True)
@bp.response(200, DispatchPageSchema)
@documented_errors(401, 422)
def list_dispatches(page: int, page_size: int, status: str | None = None) -> dict[str, Any]:
    """List dispatches, newest first, with their receipt counts (paginated)."""
    result = listing.list_dispatches(
        page=page, page_size=page_size, status=None if status is None else DispatchStatus(status)
    )
    return {
        "items": [_summary_dict(item) for item in result.items],
        "page": result.page,
        "page_size": result.page_size,
        "total": result.total,
        "pages": result.pages,
    }


def _report(dispatch_id: int) -> dict[str, Any]:
    try:
        return status.status_report(dispatch_id, at=clock.now())
    except status.StatusError as exc:
        abort(404, message=str(exc))


def _source_error(exc: LetterSourceError) -> dict[str, Any]:
    """Where in the submitted JSON a letter source problem is: ``field`` and ``line``."""
    where = exc.path
    if ", phụ lục " in where:
        numeral = where.rsplit(", phụ lục ", 1)[1].strip()
        index = ROMAN.index(numeral) if numeral in ROMAN else 0
        field = f"appendices.{index}" + (".body" if exc.line is not None else "")
    elif exc.line is not None:
        field = "body"
    else:
        key = _QUOTED_KEY.search(exc.message)
        field = "meta" + (f".{key.group(1)}" if key else "")
    return {"field": field, "line": exc.line}


_QUOTED_KEY = re.compile(r"“([A-Za-z_][A-Za-z0-9_.]*)”")
API_ORIGIN = "nguồn gửi qua API"


@bp.route("/dispatches", methods=["POST"])
@bp.arguments(LetterSourceSchema)
@bp.response(201, StatusReportSchema)
@documented_errors(401, 403, 422)
def create_dispatch(payload: dict[str, Any]) -> Any:
    """Create a draft from a letter source (JSON form) addressed to a recipient group."""
    user = require_change()
    at = clock.now()
    try:
        with unit_of_work():
            source = source_from_json(
                {k: payload[k] for k in ("meta", "body", "appendices")}, origin=API_ORIGIN
            )
            dispatch = drafts.create_draft(source, group_code=payload["group"], actor=user, at=at)
    except LetterSourceError as exc:
        abort(422, message=str(exc.message), **_source_error(exc))
    except (drafts.DraftError, offices.DirectoryError) as exc:
        abort(422, message=str(exc), field="group")
    location = url_for("api.get_dispatch", dispatch_id=dispatch.id)
    return _report(dispatch.id), 201, {"Location": location}


@bp.route("/dispatches/<int:dispatch_id>", methods=["GET"])
@bp.response(200, StatusReportSchema)
@documented_errors(*READ_ERRORS)
def get_dispatch(dispatch_id: int) -> dict[str, Any]:
    """A dispatch and every recipient's delivery and receipt (as ``dispatch status --json``)."""
    return _report(dispatch_id)


@bp.route("/dispatches/<int:dispatch_id>", methods=["DELETE"])
@bp.response(204)
@documented_errors(*CHANGE_ERRORS)
def delete_dispatch(dispatch_id: int) -> Any:
    """Delete a draft never issued (and its uploaded files); 409 once issued."""
    user = require_change()
    if db.session.get(Dispatch, dispatch_id) is None:
        abort(404, message=f"Không có công văn mã {dispatch_id}.")
    try:
        with unit_of_work():
            deletion.delete_draft(dispatch_id, actor=user, at=clock.now())
    except drafts.DraftError as exc:
        abort(409, message=str(exc))
    return None


# Over HTTP a letter is issued when the server receives the request: a moment chosen by the
# caller would let any clerk's token number a letter out of order and stamp its audit entries
# in another year. Replaying a moment is the CLI's job (``dispatch issue --at``).
SERVER_TIME_ONLY = (
    "Không được gửi trường “at”: qua API, công văn được ban hành theo giờ của máy chủ lúc nhận "
    "yêu cầu. Muốn ghi lại một lần ban hành ở thời điểm khác, hãy dùng lệnh "
    "“dispatch issue --at” trên máy chủ."
)


@bp.route("/dispatches/<int:dispatch_id>/issue", methods=["POST"])
@bp.arguments(IssueArgs, required=False)
@bp.response(200, StatusReportSchema)
@documented_errors(400, *CHANGE_ERRORS)
def issue(payload: dict[str, Any], dispatch_id: int) -> dict[str, Any]:
    """Issue a draft now (the server's time): take its number, archive the letter and queue
    the e-mails (clerk, admin). A body naming a moment (``at``) is refused with a 400."""
    user = require_change()
    if "at" in payload:
        abort(400, message=SERVER_TIME_ONLY, field="at")
    if db.session.get(Dispatch, dispatch_id) is None:
        abort(404, message=f"Không có công văn mã {dispatch_id}.")
    at = clock.now()
    try:
        issuing.refuse_unapproved(dispatch_id)  # signing configured: only an approved draft
    except issuing.NotApproved as exc:
        abort(409, message=str(exc))
    check = issuing.check_before_issue(dispatch_id, at)
    if check.stale and not payload.get("to_successors"):
        abort(
            409,
            message=(
                f"{len(check.stale)} nơi nhận không còn hiệu lực vào ngày {check.printed_text}: "
                "gửi “to_successors”: true để gửi tới các cơ quan kế nhiệm, hoặc sửa bản nháp."
            ),
            field="to_successors",
        )
    placeholders = issuing.placeholder_recipients(dispatch_id)
    if placeholders and payload.get("confirm_placeholders") is not True:
        abort(
            409,
            message=issuing.placeholders_refusal(
                len(placeholders), "gửi “confirm_placeholders”: true"
            ),
            field="confirm_placeholders",
        )
    if check.date_differs and payload.get("confirm_date") != check.confirmation_token:
        abort(
            409,
            message=(
                f"Công văn sẽ mang ngày {check.printed_text}, khác ngày {check.draft_date} của "
                f"bản nháp: gửi “confirm_date”: “{check.confirmation_token}” để xác nhận."
            ),
            field="confirm_date",
        )
    try:
        if check.stale:
            with unit_of_work():
                issuing.readdress_to_successors(dispatch_id, actor=user, at=at)
        issuing.issue_dispatch(dispatch_id, actor=user, at=at)
    except issuing.MailTooLarge as exc:  # the attachments are the thing to change
        abort(422, message=str(exc), field="meta.attachments")
    except issuing.IssueError as exc:  # AlreadyIssued, ArchiveUnavailable …
        abort(409, message=str(exc))
    except LetterSourceError as exc:
        abort(422, message=str(exc.message), **_source_error(exc))
    return _report(dispatch_id)


@bp.route("/dispatches/<int:dispatch_id>/submit", methods=["POST"])
@bp.arguments(SubmitArgs)
@bp.response(200, ApprovalSchema)
@documented_errors(*CHANGE_ERRORS)
def submit(payload: dict[str, Any], dispatch_id: int) -> dict[str, Any]:
    """Submit a finished draft to a leader for signature (trình ký; clerk, admin). The leader
    signs or returns it in the web app or with ``dispatch approve``, never through the API:
    409 when the draft is issued or already submitted, 422 when the draft is not a finished
    letter or the leader cannot sign."""
    user = require_change()
    if db.session.get(Dispatch, dispatch_id) is None:
        abort(404, message=f"Không có công văn mã {dispatch_id}.")
    try:
        with unit_of_work():
            submitted = approval.submit(
                dispatch_id, leader_email=payload["leader"], actor=user, at=clock.now()
            )
            result = {
                "dispatch_id": dispatch_id,
                "approval_id": submitted.id,
                "status": submitted.status.value,
                "leader": submitted.leader.email,
                "submitted_at": submitted.submitted_at.isoformat(),
            }
    except approval.LeaderRefused as exc:
        abort(422, message=str(exc), field="leader")
    except approval.DraftNotReady as exc:
        abort(422, message=str(exc))
    except drafts.DraftError as exc:
        abort(409, message=str(exc))
    return result
