"""What follows an issued letter, on the dispatch page: recall and replacement (a clerk asks, a
leader approves or declines) and the follow-up letter (công văn đôn đốc)."""

from __future__ import annotations

import os
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from dispatch import amendments, clock
from dispatch.accounts.auth import role_required
from dispatch.drafting.drafts import DraftError
from dispatch.letters.source import LetterSourceError
from dispatch.models import AmendmentKind, DispatchAmendment, Role
from dispatch.transaction import unit_of_work
from dispatch.views.clerks.common import CHANGE_ROLES, bp, dispatch_or_404, signed_in_user


def amendment_rows(dispatch_id: int) -> list[dict[str, Any]]:
    """The requests that concern a dispatch, as the page shows them."""
    rows = []
    role = getattr(current_user, "role", None)
    for amendment in amendments.amendments_of(dispatch_id):
        original, new = amendment.original, amendment.new
        is_original = amendment.original_id == dispatch_id
        issued_new = new is not None and new.number_and_symbol is not None
        rows.append(
            {
                "id": amendment.id,
                "kind": amendment.kind.value,
                "label": amendments.LABELS[amendment.kind],
                "status": amendment.status.value,
                "status_label": amendments.STATUS_LABELS[amendment.status],
                "reason": amendment.reason,
                "requested_by": amendment.requested_by.email if amendment.requested_by else "",
                "requested_at": clock.format_local(amendment.requested_at),
                "decided_by": amendment.decided_by.email if amendment.decided_by else "",
                "decided_at": clock.format_local(amendment.decided_at),
                "note": amendment.decision_note or "",
                "is_original": is_original,
                "other_id": (amendment.new_id if is_original else amendment.original_id),
                "other_number": (
                    (new.number_and_symbol or "bản nháp")
                    if is_original and new
                    else (original.number_and_symbol or "")
                    if not is_original
                    else ""
                ),
                "other_label": (
                    f"công văn số {new.number_and_symbol}"
                    if issued_new and new is not None
                    else "bản nháp văn bản mới"
                ),
                "can_decide": role is Role.LEADER
                and amendment.status.value in ("requested", "approved")
                and (new is None or new.status.value == "draft"),
            }
        )
    return rows


@bp.post("/dispatches/<int:dispatch_id>/recall")
@role_required(*CHANGE_ROLES)
def request_recall(dispatch_id: int) -> Any:
    """A clerk asks a leader to recall this dispatch."""
    dispatch_or_404(dispatch_id)
    try:
        with unit_of_work():
            amendments.request_recall(
                dispatch_id,
                reason=request.form.get("reason", ""),
                actor=signed_in_user(),
                at=clock.now(),
            )
    except (amendments.AmendmentError, DraftError) as exc:
        flash(str(exc), "error")
    else:
        flash("Đã gửi đề nghị thu hồi; chờ lãnh đạo duyệt.", "info")
    return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)


@bp.post("/dispatches/<int:dispatch_id>/replace")
@role_required(*CHANGE_ROLES)
def start_replacement(dispatch_id: int) -> Any:
    """A clerk drafts a corrected letter to replace this dispatch."""
    dispatch_or_404(dispatch_id)
    try:
        with unit_of_work():
            amendment = amendments.start_replacement(
                dispatch_id,
                reason=request.form.get("reason", ""),
                actor=signed_in_user(),
                at=clock.now(),
            )
            draft_id = amendment.new_id
    except (amendments.AmendmentError, DraftError) as exc:
        flash(str(exc), "error")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    flash(
        "Đã tạo bản nháp văn bản thay thế: sửa nội dung cần đính chính; lãnh đạo duyệt thì "
        "văn bản được ban hành với số mới.",
        "info",
    )
    return redirect(url_for("clerks.edit", dispatch_id=draft_id), code=303)


@bp.post("/dispatches/<int:dispatch_id>/follow-up")
@role_required(*CHANGE_ROLES)
def start_follow_up(dispatch_id: int) -> Any:
    """A clerk drafts the follow-up letter (công văn đôn đốc) of this dispatch."""
    from dispatch.drafting import follow_up, uploads

    dispatch_or_404(dispatch_id)
    try:
        with unit_of_work():
            draft = follow_up.create_follow_up(dispatch_id, actor=signed_in_user(), at=clock.now())
            draft_id = draft.id
            count = len(draft.recipients)
    except (DraftError, uploads.UploadError) as exc:
        flash(str(exc), "error")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    flash(
        f"Đã tạo bản nháp công văn đôn đốc gửi {count} cơ quan, kèm công văn gốc: xem lại nội "
        "dung rồi ban hành.",
        "info",
    )
    return redirect(url_for("clerks.edit", dispatch_id=draft_id), code=303)


def _back(amendment_id: int) -> Any:
    from dispatch.extensions import db

    amendment = db.session.get(DispatchAmendment, amendment_id)
    target = amendment.original_id if amendment is not None else None
    if target is None:
        return redirect(url_for("clerks.home"), code=303)
    return redirect(url_for("clerks.dispatch_detail", dispatch_id=target), code=303)


def _confirmations(pending: amendments.PendingIssue | None) -> amendments.Confirmations:
    """What the confirmation form ticked, each checked against what it was shown: the printed
    date's token, the number of placeholder addresses, the number of offices to readdress."""
    if pending is None:
        return amendments.Confirmations()
    check, form = pending.check, request.form
    return amendments.Confirmations(
        date=form.get("confirm_date") == check.confirmation_token,
        successors=form.get("to_successors") == str(len(check.stale)),
        placeholders=form.get("confirm_placeholders") == str(len(pending.placeholders)),
    )


def _signing_notice(amendment: DispatchAmendment, leader: Any) -> dict[str, str]:
    """What the confirmation page says about digital signatures: unsigned (no key configured),
    signed by this leader (a recall), signed by the leader it was submitted to (a replacement),
    or refused (the leader cannot sign, the replacement is not signed yet)."""
    from dispatch import issuing
    from dispatch.drafting import approval

    if not issuing.signing_configured():
        return {"refusal": "", "notice": issuing.UNSIGNED_NOTICE}
    if amendment.kind is AmendmentKind.RECALL:
        try:
            approval.ready_to_sign(leader, os.environ)
        except approval.ApprovalError as exc:
            return {
                "refusal": "Văn bản thu hồi được ban hành có chữ ký số và do lãnh đạo duyệt thu "
                f"hồi ký: {exc}",
                "notice": "",
            }
        return {
            "refusal": "",
            "notice": "Khi bấm “Duyệt và ban hành”, văn bản thu hồi được tạo bản PDF một lần, "
            "lưu trữ, và ký số bằng khoá của bạn (ký duyệt); rồi được cấp số, ngày và ký số "
            "của cơ quan (kèm con dấu). Bản PDF gửi đi là bản gốc điện tử.",
        }
    if amendment.new_id is not None:
        try:
            issuing.refuse_unapproved(amendment.new_id)
        except issuing.NotApproved:
            return {
                "refusal": "Văn bản thay thế chưa được lãnh đạo ký duyệt: văn thư trình ký bản "
                "nháp, lãnh đạo ký duyệt rồi mới duyệt thay thế và ban hành.",
                "notice": "",
            }
    return {
        "refusal": "",
        "notice": "Văn bản thay thế đã được lãnh đạo ký duyệt; khi ban hành, số và ngày được "
        "điền vào bản đã ký duyệt rồi ký số của cơ quan (kèm con dấu).",
    }


@bp.get("/amendments/<int:amendment_id>/approve")
@role_required(Role.LEADER)
def confirm_amendment(amendment_id: int) -> Any:
    """Before a leader approves: the letter that will be issued (the recall letter's text, or
    the replacement draft), its printed date, offices no longer valid that day, placeholder
    addresses and signatures, with the confirmations the normal issue page asks."""
    from dispatch.extensions import db

    amendment = db.session.get(DispatchAmendment, amendment_id)
    if amendment is None:
        abort(404)
    at = clock.now()
    pending = amendments.issue_check(amendment_id, at)
    if pending is None:
        flash("Đề nghị này không còn văn bản nào chờ ban hành.", "info")
        return _back(amendment_id)
    original = amendment.original
    recall = None
    if amendment.kind is AmendmentKind.RECALL and amendment.new_id is None:
        recall = amendments.recall_source(original, amendment.reason, at)
    return render_template(
        "clerks/amendment_approve.html",
        amendment=amendment,
        label=amendments.LABELS[amendment.kind],
        original=original,
        recall=recall,
        check=pending.check,
        placeholders=list(pending.placeholders),
        signing=_signing_notice(amendment, signed_in_user()),
    )


@bp.post("/amendments/<int:amendment_id>/approve")
@role_required(Role.LEADER)
def approve_amendment(amendment_id: int) -> Any:
    """A leader approves: the recall letter or the replacement is issued with a new number
    (signed, when the agency's key is configured); asked confirmations missing, back to the
    confirmation page."""
    at = clock.now()
    try:
        approved = amendments.approve(
            amendment_id,
            actor=signed_in_user(),
            at=at,
            environ=os.environ,
            confirm=_confirmations(amendments.issue_check(amendment_id, at)),
        )
    except amendments.ConfirmationNeeded as exc:
        flash(str(exc), "error")
        return redirect(url_for("clerks.confirm_amendment", amendment_id=amendment_id), code=303)
    except (amendments.AmendmentError, DraftError) as exc:
        flash(str(exc), "error")
    except LetterSourceError as exc:
        flash(f"Văn bản thay thế còn lỗi, chưa ban hành được: {exc.message}", "error")
    else:
        flash(f"Đã duyệt; đã ban hành công văn số {approved.number}.", "info")
    return _back(amendment_id)


@bp.post("/amendments/<int:amendment_id>/reject")
@role_required(Role.LEADER)
def reject_amendment(amendment_id: int) -> Any:
    """A leader declines the request."""
    try:
        with unit_of_work():
            amendments.reject(
                amendment_id,
                note=request.form.get("note", ""),
                actor=signed_in_user(),
                at=clock.now(),
            )
    except amendments.AmendmentError as exc:
        flash(str(exc), "error")
    else:
        flash("Đã không duyệt đề nghị.", "info")
    return _back(amendment_id)
