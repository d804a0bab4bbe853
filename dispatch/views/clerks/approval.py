"""Trình ký on the draft's page: a clerk submits the draft to a leader who signs, sees where the
submission stands and its history, and withdraws it to edit the letter again."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for

from dispatch import clock
from dispatch.accounts.auth import role_required
from dispatch.drafting import approval
from dispatch.drafting.drafts import DraftError
from dispatch.models import ApprovalStatus, DispatchStatus
from dispatch.transaction import unit_of_work
from dispatch.views.clerks.common import CHANGE_ROLES, bp, dispatch_or_404, signed_in_user


def _who(user: Any) -> str:
    if user is None:
        return "hệ thống"
    return f"{user.name} ({user.email})" if user.name else user.email


def approval_panel(dispatch_id: int, status: str) -> dict[str, Any] | None:
    """The "Trình ký" part of a draft's page, as plain data: where the submission stands, its
    history, the leaders it can go to and which forms to show; None once issued."""
    if status != DispatchStatus.DRAFT.value:
        return None
    rows = []
    for item in approval.history(dispatch_id):
        decided = ""
        if item.status is ApprovalStatus.APPROVED or item.pdf_sha256:
            decided = f"ký duyệt lúc {clock.format_local(item.decided_at)}"
        elif item.status is ApprovalStatus.RETURNED:
            decided = f"trả lại lúc {clock.format_local(item.decided_at)}"
        rows.append(
            {
                "id": item.id,
                "status": item.status.value,
                "status_label": approval.STATUS_LABELS[item.status],
                "leader": _who(item.leader),
                "submitted": f"{_who(item.submitted_by)} trình lúc "
                f"{clock.format_local(item.submitted_at)}",
                "decided": decided,
                "comment": item.comment or "",
                "withdrawn": (
                    f"{_who(item.withdrawn_by)} rút lại lúc {clock.format_local(item.withdrawn_at)}"
                    if item.withdrawn_at
                    else ""
                ),
                "sha256": item.pdf_sha256 or "",
                "submitted_sha256": item.submitted_pdf_sha256 or "",
                "pdf_url": url_for("approvals.document", approval_id=item.id),
            }
        )
    current = approval.open_approval(dispatch_id)
    if current is None:
        state = "Chưa trình ký." if not rows else "Chưa trình ký lại."
    elif current.status is ApprovalStatus.SUBMITTED:
        state = f"Đang chờ {_who(current.leader)} ký duyệt."
    else:
        state = f"{_who(current.leader)} đã ký duyệt: bản nháp sẵn sàng để ban hành."
    return {
        "state": state,
        "history": list(reversed(rows)),
        "leaders": [
            {"email": user.email, "label": _who(user)} for user in approval.leaders_who_sign()
        ],
        "can_submit": current is None,
        "can_withdraw": current is not None,
        "approved_pdf": (
            url_for("approvals.document", approval_id=current.id) if current is not None else None
        ),
    }


def _back(dispatch_id: int) -> Any:
    return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id) + "#trinh-ky", 303)


@bp.post("/dispatches/<int:dispatch_id>/submit")
@role_required(*CHANGE_ROLES)
def submit_for_signature(dispatch_id: int) -> Any:
    """A clerk submits the draft to the chosen leader for signature (trình ký)."""
    dispatch_or_404(dispatch_id)
    try:
        with unit_of_work():
            submitted = approval.submit(
                dispatch_id,
                leader_email=request.form.get("leader", ""),
                actor=signed_in_user(),
                at=clock.now(),
            )
            leader = _who(submitted.leader)
    except DraftError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Đã trình {leader} ký duyệt.", "info")
    return _back(dispatch_id)


@bp.post("/dispatches/<int:dispatch_id>/withdraw")
@role_required(*CHANGE_ROLES)
def withdraw_submission(dispatch_id: int) -> Any:
    """A clerk withdraws the submission or the approval, to edit the draft (it becomes void)."""
    dispatch_or_404(dispatch_id)
    try:
        with unit_of_work():
            withdrawn = approval.withdraw(dispatch_id, actor=signed_in_user(), at=clock.now())
            what = "chữ ký duyệt" if withdrawn.pdf_sha256 else "lần trình ký"
    except DraftError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Đã rút lại {what}: bản nháp sửa được, sửa xong hãy trình ký lại.", "info")
    return _back(dispatch_id)
