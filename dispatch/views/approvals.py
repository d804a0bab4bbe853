"""Ký duyệt: the leaders' side of approval. "Chờ ký duyệt" lists the drafts submitted to the
signed-in leader; a submission's page shows the letter as it will be signed (the PDF archived
when it was submitted, inline: exactly the bytes "Ký duyệt" signs) with two forms: "Ký duyệt"
(sign with the leader's key) and "Trả lại" (with a comment).

Only the leader a draft was submitted to signs or returns it (``drafting.approval`` checks it
again); clerks and admins may open the PDF of a submission. The key's password comes from the
environment variable named in the leader's ``signing_password_env``: read here from the
server's environment, never from the request.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from dispatch import clock
from dispatch.accounts.auth import role_required
from dispatch.archive import ArchiveError, read_archived
from dispatch.drafting import approval
from dispatch.drafting.drafts import DraftError
from dispatch.extensions import db
from dispatch.models import ApprovalStatus, DispatchApproval, Role
from dispatch.transaction import unit_of_work
from dispatch.views.downloads import file_response
from dispatch.views.headers import frameable

bp = Blueprint("approvals", __name__, url_prefix="/lanh-dao/trinh-ky")

NO_STORE = {"Cache-Control": "no-store"}


def _me() -> Any:
    return current_user._get_current_object()


def _who(user: Any) -> str:
    if user is None:
        return "hệ thống"
    return f"{user.name} ({user.email})" if user.name else user.email


def _row(item: DispatchApproval) -> dict[str, Any]:
    dispatch = item.dispatch
    return {
        "id": item.id,
        "dispatch_id": dispatch.id,
        "subject": dispatch.subject,
        "symbol": dispatch.symbol,
        "submitted_by": _who(item.submitted_by),
        "submitted_at": clock.format_local(item.submitted_at),
        "recipients": len(dispatch.recipients),
    }


def _addressed_to_me(approval_id: int) -> DispatchApproval:
    """The submission, if it was addressed to the signed-in leader; 404 otherwise."""
    item = db.session.get(DispatchApproval, approval_id)
    if item is None or item.leader_id != _me().id:
        abort(404)
    return item


@bp.get("/")
@role_required(Role.LEADER)
def waiting() -> Any:
    """Chờ ký duyệt: the drafts submitted to the signed-in leader, oldest first."""
    rows = [_row(item) for item in approval.waiting_for(_me())]
    return render_template("leadership/approvals.html", rows=rows, has_key=bool(_me().signing_key))


@bp.get("/<int:approval_id>")
@role_required(Role.LEADER)
def submission(approval_id: int) -> Any:
    """One submission: the letter inline and, while it waits, the two forms."""
    item = _addressed_to_me(approval_id)
    waiting_now = item.status is ApprovalStatus.SUBMITTED and item.dispatch.status.value == "draft"
    return render_template(
        "leadership/approval.html",
        row=_row(item),
        status_label=approval.STATUS_LABELS[item.status],
        comment=item.comment or "",
        decided_at=clock.format_local(item.decided_at),
        waiting=waiting_now,
        pdf_url=url_for("approvals.document", approval_id=item.id),
        has_key=bool(_me().signing_key),
        comment_max=approval.COMMENT_MAX,
    )


@bp.get("/<int:approval_id>/van-ban.pdf")
@frameable  # shown in the submission's page
@role_required(Role.LEADER, Role.CLERK, Role.ADMIN)
def document(approval_id: int) -> Any:
    """The letter of a submission: the PDF archived when it was submitted (exactly the bytes
    the leader signs) while it waits, or returned or withdrawn; the signed PDF once approved.
    Both are read back with their SHA-256 checked. A leader sees only what was submitted to
    them."""
    item = db.session.get(DispatchApproval, approval_id)
    if item is None or (_me().role is Role.LEADER and item.leader_id != _me().id):
        abort(404)
    name = f"trinh-ky-{item.dispatch_id}-{item.id}.pdf"
    if item.pdf_path:
        try:
            data = read_archived(item.pdf_path, item.pdf_sha256)
        except ArchiveError as exc:
            abort(Response(str(exc), status=500, mimetype="text/plain"))
        return file_response(data, "application/pdf", name, inline=True, headers=NO_STORE)
    try:
        data = approval.submitted_pdf(item)
    except approval.SubmittedPdfUnavailable as exc:
        return Response(str(exc), status=409, mimetype="text/plain", headers=NO_STORE)
    return file_response(data, "application/pdf", name, inline=True, headers=NO_STORE)


def _decide(approval_id: int, decide: Callable[..., object], done: str) -> Any:
    """Carry out the addressed leader's decision on a submission; back to the list with
    ``done`` (``{id}``: the draft's), or to the submission with the refusal."""
    dispatch_id = _addressed_to_me(approval_id).dispatch_id
    try:
        with unit_of_work():  # approving commits on its own; this ends the request's session
            decide(dispatch_id, actor=_me(), at=clock.now(), approval_id=approval_id)
    except DraftError as exc:
        flash(str(exc), "error")
        return redirect(url_for("approvals.submission", approval_id=approval_id), code=303)
    flash(done.format(id=dispatch_id), "info")
    return redirect(url_for("approvals.waiting"), code=303)


@bp.post("/<int:approval_id>/ky-duyet")
@role_required(Role.LEADER)
def sign(approval_id: int) -> Any:
    """Ký duyệt: sign the letter with the leader's key; back to the list."""
    return _decide(
        approval_id,
        partial(approval.approve, environ=os.environ),
        "Đã ký duyệt bản nháp mã {id}; văn thư có thể ban hành.",
    )


@bp.post("/<int:approval_id>/tra-lai")
@role_required(Role.LEADER)
def send_back(approval_id: int) -> Any:
    """Trả lại: return the draft to the clerk with a comment (required)."""
    return _decide(
        approval_id,
        partial(approval.return_draft, comment=request.form.get("comment", "")),
        "Đã trả lại bản nháp mã {id} kèm ý kiến.",
    )
