"""The list of dispatches, issuing with its confirmation step, and watching delivery."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from dispatch import audit, clock, issuing
from dispatch.accounts.auth import role_required
from dispatch.audit import actor_name
from dispatch.drafting import form as compose_form
from dispatch.drafting import uploads
from dispatch.drafting.drafts import DraftError
from dispatch.extensions import db
from dispatch.letters.source import LetterSourceError
from dispatch.mail import sender
from dispatch.models import DispatchRecipient, DispatchStatus, Document
from dispatch.reporting import listing, status
from dispatch.transaction import unit_of_work
from dispatch.views.clerks.common import (
    CHANGE_ROLES,
    IN_FLIGHT,
    READ_ROLES,
    REFRESH_SECONDS,
    STATUS_TABS,
    bp,
    dispatch_or_404,
    signed_in_user,
)
from dispatch.views.clerks.drafts import error_items
from dispatch.views.downloads import file_response, send_document
from dispatch.views.params import page_arg

# --- The list ----------------------------------------------------------------------------------


@bp.get("/")
@role_required(*READ_ROLES)
def home() -> Any:
    """The dispatches, newest first, by status tab, with how many recipients confirmed."""
    page = page_arg()
    tab = request.args.get("status", "")
    try:
        chosen = DispatchStatus(tab) if tab else None
    except ValueError:
        chosen, tab = None, ""
    summaries = listing.list_dispatches(
        page=page, page_size=listing.DEFAULT_PAGE_SIZE, status=chosen
    )
    return render_template(
        "clerks/home.html",
        page=summaries,
        tabs=STATUS_TABS,
        tab=tab,
        tab_label=dict(STATUS_TABS)[tab],
    )


# --- Issuing -----------------------------------------------------------------------------------


@bp.route("/dispatches/<int:dispatch_id>/issue", methods=["GET", "POST"])
@role_required(*CHANGE_ROLES)
def issue(dispatch_id: int) -> Any:
    """Confirm, then issue: the expected number, the recipients, the preview; POST issues."""
    dispatch = dispatch_or_404(dispatch_id)
    if dispatch.status is not DispatchStatus.DRAFT:
        flash(f"Công văn đã được ban hành với số {dispatch.number_and_symbol}.", "info")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    at = clock.now()
    check = issuing.check_before_issue(dispatch_id, at)
    placeholders = issuing.placeholder_recipients(dispatch_id)
    if request.method == "POST":
        refusal = _unconfirmed(check) or _placeholders_unconfirmed(placeholders)
        if refusal is not None:
            flash(refusal, "error")
            return redirect(url_for("clerks.issue", dispatch_id=dispatch_id), code=303)
        try:
            result = issuing.issue_dispatch(dispatch_id, actor=signed_in_user(), at=at)
        except LetterSourceError as exc:
            flash(f"Chưa ban hành được vì bản nháp còn lỗi: {exc.message}", "error")
            return redirect(url_for("clerks.edit", dispatch_id=dispatch_id), code=303)
        except DraftError as exc:  # IssueError, AlreadyIssued, ArchiveUnavailable …
            flash(str(exc), "error")
            return redirect(url_for("clerks.issue", dispatch_id=dispatch_id), code=303)
        message = (
            f"Đã ban hành công văn số {result.number_and_symbol} ngày "
            f"{result.issued_on:%d/%m/%Y}; {result.queued} thư đã được xếp hàng gửi."
        )
        if result.placeholder_addresses:
            message += (
                f" Lưu ý: {result.placeholder_addresses} nơi nhận đang dùng địa chỉ tạm, "
                "cần sửa địa chỉ rồi gửi lại."
            )
        flash(message, "info")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    errors = compose_form.draft_errors(dispatch, project_root=uploads.letter_root(dispatch_id))
    return render_template(
        "clerks/issue.html",
        signing=_signing_state(dispatch_id),
        dispatch=dispatch,
        errors=errors,
        expected=compose_form.expected_number(dispatch, at),
        check=check,
        recipients=len(dispatch.recipients),
        placeholders=placeholders,
        attachments=uploads.stored_files(dispatch_id, uploads.attachments_of(dispatch.source)),
        error_items=error_items(errors),
    )


def _signing_state(dispatch_id: int) -> dict[str, str]:
    """What the issue page says about digital signatures: signed on issue, unsigned (no key
    configured), or refused (a key is configured and the leader has not signed)."""
    if not issuing.signing_configured():
        return {"refusal": "", "notice": issuing.UNSIGNED_NOTICE}
    try:
        issuing.refuse_unapproved(dispatch_id)
    except issuing.NotApproved as exc:
        return {"refusal": str(exc), "notice": ""}
    return {
        "refusal": "",
        "notice": "Lãnh đạo đã ký duyệt. Khi ban hành, số và ngày được điền vào bản đã ký duyệt, "
        "rồi ký số của cơ quan (kèm con dấu); bản PDF gửi đi là bản gốc điện tử.",
    }


def _unconfirmed(check: issuing.IssueCheck) -> str | None:
    """Why a POST to issue is refused: recipients no longer valid, or a printed date that
    differs from the draft's and was not confirmed on the page; None when it may issue."""
    if check.stale:
        return (
            f"{len(check.stale)} nơi nhận không còn hiệu lực vào ngày "
            f"{check.printed_on:%d/%m/%Y}: hãy chọn gửi tới các cơ quan kế nhiệm, "
            "hoặc quay lại sửa bản nháp."
        )
    if check.date_differs and request.form.get("confirm_date") != check.confirmation_token:
        return (
            f"Công văn sẽ mang ngày {check.printed_on:%d/%m/%Y}, khác ngày {check.draft_date} "
            "của bản nháp: hãy đánh dấu xác nhận ngày ban hành rồi bấm “Ban hành”."
        )
    return None


def _placeholders_unconfirmed(placeholders: list[str]) -> str | None:
    """A POST that issues to placeholder addresses must carry their count, ticked on the page."""
    if placeholders and request.form.get("confirm_placeholders") != str(len(placeholders)):
        return issuing.placeholders_refusal(
            len(placeholders), "hãy đánh dấu ô xác nhận gửi tới địa chỉ tạm rồi bấm “Ban hành”"
        )
    return None


@bp.post("/dispatches/<int:dispatch_id>/readdress")
@role_required(*CHANGE_ROLES)
def readdress(dispatch_id: int) -> Any:
    """Send to the successors: the recipients no longer valid on the issuing day are replaced
    by the offices that answer for them that day."""
    dispatch_or_404(dispatch_id)
    try:
        with unit_of_work():
            count = issuing.readdress_to_successors(
                dispatch_id, actor=signed_in_user(), at=clock.now()
            )
    except DraftError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Đã thay {count} nơi nhận không còn hiệu lực bằng cơ quan kế nhiệm.", "info")
    return redirect(url_for("clerks.issue", dispatch_id=dispatch_id), code=303)


@bp.post("/dispatches/<int:dispatch_id>/deliver")
@role_required(*CHANGE_ROLES)
def deliver_now(dispatch_id: int) -> Any:
    """ "Gửi ngay": send every e-mail due now instead of waiting for the scheduler's minute."""
    dispatch = dispatch_or_404(dispatch_id)
    at = clock.now()
    with unit_of_work():
        audit.record_dispatch(
            "outbox.delivery_requested",
            dispatch.id,
            actor=actor_name(signed_in_user()),
            at=at,
            details={"via": "web"},
        )
    try:
        report = sender.deliver_due(at)
    except OSError as exc:  # the SMTP server cannot be reached: the scheduler retries later
        flash(f"Chưa gửi được: không kết nối được máy chủ thư ({exc}).", "error")
    else:
        parts = [f"đã gửi {report.sent} thư"]
        if report.retrying:
            parts.append(f"{report.retrying} thư sẽ thử lại")
        if report.failed:
            parts.append(f"{report.failed} thư gửi lỗi")
        if not report.claimed:
            parts = ["không có thư nào đang chờ gửi"]
        flash("Gửi ngay: " + ", ".join(parts) + ".", "info")
        if report.stopped:
            flash(f"Đã dừng gửi: {report.stopped}. Các thư chưa gửi sẽ được gửi sau.", "error")
    return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)


# --- Watching delivery -------------------------------------------------------------------------

# How a confirmation that did not come through the link reached us.
ACK_METHOD_NOTES = {
    "phone": " (qua điện thoại)",
    "email": " (qua thư trả lời)",
    "edxml": " (qua hệ thống quản lý văn bản, edXML)",
}


def _recipient_row(recipient: dict[str, Any], stopped: bool) -> dict[str, Any]:
    """A recipient of the report as the page shows it (times dd/mm/yyyy HH:MM, Vietnam)."""
    row = dict(recipient)
    for key in ("sent_at", "opened_at", "acknowledged_at"):
        value = recipient[key]
        row[key] = clock.format_local(dt.datetime.fromisoformat(value)) if value else ""
    delivery_label = status.DELIVERY_LABELS.get(recipient["delivery"], recipient["delivery"] or "")
    row["delivery_label"] = delivery_label
    row["delivery_detail"] = (
        (recipient["smtp_reply"] or recipient["last_error"] or "")
        if recipient["delivery"] in ("failed", "retrying")
        else ""
    )
    row["delivery_detail_class"] = "muted smtp-reply"
    if recipient["delivery"] == "bounced":
        row["delivery_detail"] = recipient["bounce_reason"] or ""
        row["delivery_detail_class"] = "reason-bad"
    if recipient["acknowledged_at"]:
        confirmed = row["acknowledged_at"]
        confirmed += ACK_METHOD_NOTES.get(recipient["acknowledged_method"] or "", "")
    elif recipient["refused"]:
        confirmed = "từ chối tiếp nhận"
        if recipient["refusal_reason"]:
            confirmed += f": {recipient['refusal_reason']}"
    elif recipient["overdue"]:
        confirmed = "quá hạn"
    else:
        confirmed = "chưa"
    row["confirmed_label"] = confirmed
    row["reminders_stopped"] = stopped
    row["reminders_label"] = str(recipient["reminders"]) + (" (đã dừng nhắc)" if stopped else "")
    return row


def status_data(dispatch_id: int) -> dict[str, Any]:
    """A dispatch's status report as of now, rows as the pages show them; 404 if unknown."""
    try:
        report = status.status_report(dispatch_id, at=clock.now())
    except status.StatusError:
        abort(404)
    stopped = dict(
        db.session.execute(
            select(DispatchRecipient.id, DispatchRecipient.reminders_stopped).where(
                DispatchRecipient.dispatch_id == dispatch_id
            )
        ).all()
    )
    rows = [_recipient_row(r, bool(stopped.get(r["id"]))) for r in report["recipients"]]
    in_flight = report["status"] != "draft" and any(r["delivery"] in IN_FLIGHT for r in rows)
    return {"report": report, "rows": rows, "in_flight": in_flight}


@bp.get("/dispatches/<int:dispatch_id>")
@role_required(*READ_ROLES)
def dispatch_detail(dispatch_id: int) -> Any:
    """One dispatch: number, subject, status, and every recipient's delivery and receipt."""
    from dispatch.reporting.dashboard import follow_up_links
    from dispatch.views.clerks.amendments import amendment_rows
    from dispatch.views.clerks.approval import approval_panel

    data = status_data(dispatch_id)
    dispatch = dispatch_or_404(dispatch_id)
    report = data["report"]
    follow_up_of, follow_ups = follow_up_links(dispatch_id)
    return render_template(
        "clerks/dispatch.html",
        dispatch=dispatch,
        report=report,
        status_label=listing.STATUS_LABELS[DispatchStatus(report["status"])],
        recipients=data["rows"],
        in_flight=data["in_flight"],
        refresh_seconds=REFRESH_SECONDS,
        documents=list(dispatch.documents),
        amendments=amendment_rows(dispatch_id),
        signature=approval_panel(dispatch_id, report["status"]),
        can_amend=report["status"] in ("issued", "completed"),
        follow_up_of=follow_up_of,
        follow_ups=follow_ups,
        unconfirmed=report["counts"]["total"] - report["counts"]["acknowledged"],
    )


@bp.get("/dispatches/<int:dispatch_id>/status.json")
@role_required(*READ_ROLES)
def status_json(dispatch_id: int) -> Any:
    """The status as JSON for the page's polling script: counts and each row's display text."""
    data = status_data(dispatch_id)
    report = data["report"]
    fields = ("delivery", "delivery_label", "delivery_detail", "opened_at", "confirmed_label")
    fields += ("acknowledged_by", "reminders_label", "email")
    response = jsonify(
        {
            "id": report["id"],
            "status": report["status"],
            "counts": report["counts"],
            "in_flight": data["in_flight"],
            "recipients": [
                {"id": row["id"], **{key: row[key] or "" for key in fields}} for row in data["rows"]
            ],
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/dispatches/<int:dispatch_id>/documents/<int:document_id>")
@role_required(*READ_ROLES)
def document(dispatch_id: int, document_id: int) -> Any:
    """An archived file of an issued dispatch, exactly as it was sent."""
    found = db.session.get(Document, document_id)
    if found is None or found.dispatch_id != dispatch_id:
        abort(404)
    return send_document(found)


@bp.get("/dispatches/<int:dispatch_id>/edxml.zip")
@role_required(*READ_ROLES)
def edxml_packages(dispatch_id: int) -> Any:
    """The dispatch's edXML packages (QCVN 102:2016), one per recipient, in one zip."""
    import io
    import zipfile

    from dispatch.edxml.exchange import packages
    from dispatch.edxml.xml import EdxmlError

    dispatch = dispatch_or_404(dispatch_id)
    try:
        files = packages(dispatch_id, at=clock.now())
    except EdxmlError as exc:
        flash(f"Chưa tạo được gói edXML: {exc}", "error")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    number = (dispatch.number_and_symbol or str(dispatch_id)).replace("/", "-")
    return file_response(buffer.getvalue(), "application/zip", f"edXML-CV-{number}.zip")
