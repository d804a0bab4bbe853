"""Signed-in pages for clerks (and admins; leaders read only): the list of dispatches, the
composer with its live preview and autosave, issuing with a confirmation step, the delivery
status with per-recipient actions, the directory and the outgoing register.

Routes are thin: the work is in ``composer``, ``uploads``, ``issuing``, ``delivery``,
``recipient_actions``, ``directory``, ``directory_edit`` and ``register``. Every route checks the
role on the server with ``role_required``; routes that change anything use ``CHANGE_ROLES``
(the directory's edits ``ADMIN_ROLES``). Every POST carries the CSRF token (Flask-WTF checks it
for the whole app; the autosave script sends it in the ``X-CSRFToken`` header).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from dispatch import (
    archive,
    audit,
    clock,
    composer,
    delivery,
    directory,
    directory_edit,
    issuing,
    listing,
    recipient_actions,
    register,
    status,
    uploads,
)
from dispatch.auth import forget_request_state, render_error, role_required
from dispatch.drafts import DispatchFrozen, DraftError, actor_name
from dispatch.extensions import db
from dispatch.letters.source import LetterSourceError
from dispatch.models import (
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
    Organisation,
    OutboxMessage,
    Role,
)

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
    return {"can_change": role in CHANGE_ROLES, "is_admin": role in ADMIN_ROLES}


# Ids are 32-bit integers in the database: a larger one in a URL names nothing (and would
# overflow the driver), so it is a 404 before any query.
MAX_ID = 2**31 - 1


@bp.url_value_preprocessor
def _ids_in_range(endpoint: str | None, values: dict[str, Any] | None) -> None:
    for name, value in (values or {}).items():
        if name.endswith("_id") and isinstance(value, int) and not 0 < value <= MAX_ID:
            abort(404)


def _user() -> Any:
    return current_user._get_current_object()


def _dispatch_or_404(dispatch_id: int) -> Dispatch:
    dispatch = db.session.get(Dispatch, dispatch_id)
    if dispatch is None:
        abort(404)
    return dispatch


# --- The list ----------------------------------------------------------------------------------


@bp.get("/")
@role_required(*READ_ROLES)
def home() -> Any:
    """The dispatches, newest first, by status tab, with how many recipients confirmed."""
    page = max(request.args.get("page", 1, type=int) or 1, 1)
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


# --- Composing ---------------------------------------------------------------------------------


def _recipient_choices(
    dispatch: Dispatch | None, form: composer.ComposeForm, at: dt.datetime, query: str
) -> dict[str, Any]:
    """The offices the compose page lists with a checkbox, and which are ticked."""
    group = None
    if form.group:
        group = next((g for g in composer.groups() if g.code == form.group), None)
    meta_date = composer.parse_letter_date(form.fields.get("date", ""))[0]
    day = composer._first_day(meta_date, at)
    members = directory.recipients_for(group.code, day) if group is not None else []
    if dispatch is not None and form.recipients is not None:
        chosen = set(form.recipients)
    elif dispatch is not None and dispatch.group is not None and dispatch.group.code == form.group:
        chosen = {r.organisation_id for r in dispatch.recipients}
    else:
        chosen = {org.id for org in members}
    listed = {org.id for org in members}
    extra_ids = [org_id for org_id in chosen if org_id not in listed]
    extras = composer._organisations(extra_ids)
    results: list[Organisation] = []
    if query:
        results = [
            org
            for org in directory.search(query, on=day, limit=SEARCH_LIMIT)
            if org.id not in listed and org.id not in chosen
        ]
    return {
        "members": members,
        "extras": extras,
        "results": results,
        "chosen": chosen,
        "group": group,
        "day": day,
        "query": query,
    }


def error_items(errors: dict[str, str]) -> list[dict[str, str]]:
    """The error summary's entries: where each problem is (anchor), its field, the message."""
    labels = {**composer.TEXT_FIELDS, **composer.LIST_FIELDS, "body": "Nội dung"}
    labels.update(
        recipients="Nơi nhận điện tử",
        group="Nhóm nơi nhận",
        attachments="Tài liệu gửi kèm",
        appendices="Phụ lục",
        letter="Công văn",
    )
    anchors = {
        "recipients": "noi-nhan",
        "attachments": "f-attachment",
        "appendices": "phu-luc",
        "letter": "compose-form",
    }
    items = []
    for key, message in errors.items():
        label = labels.get(key, key)
        if key.startswith("appendix-"):
            _, index, part = key.split("-", 2)
            label = f"Phụ lục {int(index) + 1}: " + ("tên" if part == "title" else "nội dung")
        items.append({"anchor": anchors.get(key, f"f-{key}"), "label": label, "message": message})
    return items


def _compose_page(
    dispatch: Dispatch | None,
    form: composer.ComposeForm,
    *,
    errors: dict[str, str] | None = None,
    upload_error: str | None = None,
    slots: int | None = None,
    query: str = "",
    code: int = 200,
) -> Any:
    at = clock.now()
    attachment_names = composer.attachments_of(dispatch.source if dispatch else None)
    files = uploads.stored_files(dispatch.id, attachment_names) if dispatch else []
    missing = [n for n in attachment_names if n not in {f.name for f in files}]
    empty_slots = composer.EMPTY_APPENDIX_SLOTS if slots is None else slots
    room = max(composer.MAX_APPENDICES - len(form.appendices), 0)
    blanks = [{"title": "", "body": ""} for _ in range(min(empty_slots, room))]
    appendix_rows = [*form.appendices, *blanks]
    return (
        render_template(
            "clerks/compose.html",
            dispatch=dispatch,
            form=form,
            fields=form.fields,
            errors=errors or {},
            error_items=error_items(errors or {}),
            upload_error=upload_error,
            appendices=appendix_rows,
            appendix_slots=empty_slots,
            can_add_appendix=len(appendix_rows) < composer.MAX_APPENDICES,
            groups=composer.groups(),
            recipients=_recipient_choices(dispatch, form, at, query),
            files=files,
            missing_files=missing,
            max_upload=uploads.max_upload(),
            max_upload_text=uploads.human_size(uploads.max_upload()),
            accepted=uploads.ACCEPTED,
            authority_choices=composer.AUTHORITY_CHOICES,
            urgency_choices=composer.URGENCY_CHOICES,
            labels={**composer.TEXT_FIELDS, **composer.LIST_FIELDS},
        ),
        code,
    )


def _form_for(dispatch: Dispatch) -> composer.ComposeForm:
    return composer.form_from_source(
        dispatch.source or {}, group=dispatch.group.code if dispatch.group else ""
    )


def _save_files(dispatch_id: int, at: dt.datetime) -> list[str]:
    """Store the files posted with the form; the refused ones' messages (others are kept)."""
    problems = []
    for file in request.files.getlist("attachment"):
        if not file or not file.filename:
            continue
        data = file.read(uploads.max_upload() + 1)
        try:
            uploads.add_attachment(dispatch_id, file.filename, data, actor=_user(), at=at)
        except uploads.UploadError as exc:
            problems.append(str(exc))
    return problems


def _edit_url(dispatch_id: int, **params: Any) -> str:
    query = {k: v for k, v in params.items() if v}
    return url_for("clerks.edit", dispatch_id=dispatch_id) + (
        f"?{urlencode(query)}" if query else ""
    )


def _handle_compose_post(dispatch_id: int | None) -> Any:
    """Save what was posted (always), then do what the pressed button asks."""
    at = clock.now()
    action = request.form.get("action", "save")
    removed = None
    if action.startswith("remove_appendix:"):
        removed = composer._int(action.split(":", 1)[1], -1)
    form = composer.form_from_post(request.form, remove_appendix=removed)
    try:
        result = composer.save_draft(
            dispatch_id,
            form,
            actor=_user(),
            at=at,
            project_root=uploads.letter_root(dispatch_id) if dispatch_id else None,
        )
        dispatch = result.dispatch
        if action.startswith("remove_attachment:"):
            uploads.remove_attachment(dispatch.id, action.split(":", 1)[1], actor=_user(), at=at)
        upload_problems = _save_files(dispatch.id, at)
        db.session.commit()
    except DispatchFrozen as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    except composer.ComposeError as exc:
        db.session.rollback()
        dispatch = db.session.get(Dispatch, dispatch_id) if dispatch_id else None
        return _compose_page(dispatch, form, errors={"group": str(exc)}, code=422)

    errors = composer.draft_errors(dispatch, project_root=uploads.letter_root(dispatch.id))
    if upload_problems:
        # Stay on the page (no redirect) so the message sits next to the file field.
        db.session.refresh(dispatch)
        return _compose_page(
            dispatch,
            _form_for(dispatch),
            errors=errors,
            upload_error=" ".join(upload_problems),
            code=422,
        )
    slots = request.form.get("appendix_slots", type=int) or composer.EMPTY_APPENDIX_SLOTS
    params: dict[str, Any] = {}
    if action == "add_appendix":
        params["slots"] = slots + 1
    elif action == "search":
        params["q"] = composer.clean_text(request.form.get("q", ""))
    elif action == "issue":
        if not errors:
            return redirect(url_for("clerks.issue", dispatch_id=dispatch.id), code=303)
        flash("Bản nháp còn lỗi nên chưa thể ban hành; hãy sửa các mục được đánh dấu.", "error")
    saved = f"Đã lưu bản nháp lúc {clock.local(at):%H:%M}."
    if errors and action != "issue":
        saved += f" Còn {len(errors)} mục cần sửa trước khi ban hành."
    flash(saved, "info")
    anchor = {"search": "#noi-nhan", "add_appendix": "#phu-luc"}.get(action, "")
    if action.startswith(("remove_attachment:", "remove_appendix:")):
        anchor = "#phu-luc" if action.startswith("remove_appendix") else "#tep-gui-kem"
    return redirect(_edit_url(dispatch.id, **params) + anchor, code=303)


@bp.route("/dispatches/new", methods=["GET", "POST"])
@role_required(*CHANGE_ROLES)
def new() -> Any:
    """A new letter: the form with the office's usual values; posting it creates the draft."""
    if request.method == "POST":
        return _handle_compose_post(None)
    return _compose_page(None, composer.blank_form(clock.now()))


@bp.route("/dispatches/<int:dispatch_id>/edit", methods=["GET", "POST"])
@role_required(*CHANGE_ROLES)
def edit(dispatch_id: int) -> Any:
    """The composer for a draft: every field, its problems, the preview; posting saves."""
    dispatch = _dispatch_or_404(dispatch_id)
    if dispatch.status is not DispatchStatus.DRAFT:
        flash(
            "Công văn đã ban hành nên không sửa được nữa; muốn thay đổi, hãy ban hành văn bản "
            "thay thế hoặc đính chính.",
            "error",
        )
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    if request.method == "POST":
        return _handle_compose_post(dispatch_id)
    errors = composer.draft_errors(dispatch, project_root=uploads.letter_root(dispatch_id))
    return _compose_page(
        dispatch,
        _form_for(dispatch),
        errors=errors,
        slots=request.args.get("slots", type=int),
        query=composer.clean_text(request.args.get("q", "")),
    )


def _autosave(dispatch_id: int | None) -> Any:
    at = clock.now()
    form = composer.form_from_post(request.form)
    try:
        result = composer.save_draft(
            dispatch_id,
            form,
            actor=_user(),
            at=at,
            project_root=uploads.letter_root(dispatch_id) if dispatch_id else None,
        )
        db.session.commit()
    except DispatchFrozen as exc:
        db.session.rollback()
        return jsonify({"message": str(exc)}), 409
    except (composer.ComposeError, DraftError) as exc:
        db.session.rollback()
        return jsonify({"message": str(exc), "errors": {"group": str(exc)}}), 422
    dispatch = result.dispatch
    return jsonify(
        {
            "id": dispatch.id,
            "created": result.created,
            "changed": bool(result.changed) or result.created,
            "saved_at": f"{clock.local(at):%H:%M:%S}",
            "message": f"Đã tự động lưu lúc {clock.local(at):%H:%M:%S}.",
            "valid": result.valid,
            "errors": result.errors,
            "urls": {
                "edit": url_for("clerks.edit", dispatch_id=dispatch.id),
                "autosave": url_for("clerks.autosave", dispatch_id=dispatch.id),
                "preview": url_for("clerks.preview", dispatch_id=dispatch.id),
                "issue": url_for("clerks.issue", dispatch_id=dispatch.id),
            },
        }
    ), (201 if result.created else 200)


@bp.post("/dispatches/autosave")
@role_required(*CHANGE_ROLES)
def autosave_new() -> Any:
    """Autosave of a letter not saved yet: creates the draft and says where it lives (JSON)."""
    return _autosave(None)


@bp.post("/dispatches/<int:dispatch_id>/autosave")
@role_required(*CHANGE_ROLES)
def autosave(dispatch_id: int) -> Any:
    """Autosave of a draft (JSON); it is kept even while invalid."""
    _dispatch_or_404(dispatch_id)
    return _autosave(dispatch_id)


@bp.get("/dispatches/<int:dispatch_id>/preview.pdf")
@role_required(*CHANGE_ROLES)
def preview(dispatch_id: int) -> Any:
    """The draft as a PDF with a blank number and day; an issued one's archived PDF."""
    from dispatch.letters.pdf import RenderError, render_pdf

    dispatch = _dispatch_or_404(dispatch_id)
    if dispatch.status is not DispatchStatus.DRAFT:
        document = next((d for d in dispatch.documents if d.kind == "pdf"), None)
        if document is None:
            abort(404)
        return _send_document(document, inline=True)
    try:
        letter = composer.preview_letter(dispatch, uploads.letter_root(dispatch_id))
        pdf = render_pdf(letter)
    except (LetterSourceError, RenderError) as exc:
        message = exc.message if isinstance(exc, LetterSourceError) else str(exc)
        errors = composer.draft_errors(dispatch, uploads.letter_root(dispatch_id))
        return (
            render_template(
                "clerks/preview_error.html", dispatch=dispatch, message=message, errors=errors
            ),
            422,
            {"Cache-Control": "no-store"},
        )
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="du-thao-{dispatch_id}.pdf"',
            "Cache-Control": "no-store",
        },
    )


# --- Issuing -----------------------------------------------------------------------------------


@bp.route("/dispatches/<int:dispatch_id>/issue", methods=["GET", "POST"])
@role_required(*CHANGE_ROLES)
def issue(dispatch_id: int) -> Any:
    """Confirm, then issue: the expected number, the recipients, the preview; POST issues."""
    dispatch = _dispatch_or_404(dispatch_id)
    if dispatch.status is not DispatchStatus.DRAFT:
        flash(f"Công văn đã được ban hành với số {dispatch.number_and_symbol}.", "info")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    if request.method == "POST":
        try:
            result = issuing.issue_dispatch(dispatch_id, actor=_user(), at=clock.now())
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
    errors = composer.draft_errors(dispatch, project_root=uploads.letter_root(dispatch_id))
    placeholders = db.session.execute(
        select(Organisation.name)
        .join(DispatchRecipient, DispatchRecipient.organisation_id == Organisation.id)
        .where(
            DispatchRecipient.dispatch_id == dispatch_id,
            Organisation.email_is_placeholder.is_(True),
        )
    ).scalars()
    return render_template(
        "clerks/issue.html",
        dispatch=dispatch,
        errors=errors,
        expected=composer.expected_number(dispatch, clock.now()),
        recipients=len(dispatch.recipients),
        placeholders=list(placeholders),
        attachments=uploads.stored_files(dispatch_id, composer.attachments_of(dispatch.source)),
        error_items=error_items(errors),
    )


@bp.post("/dispatches/<int:dispatch_id>/deliver")
@role_required(*CHANGE_ROLES)
def deliver_now(dispatch_id: int) -> Any:
    """ "Gửi ngay": send every e-mail due now instead of waiting for the scheduler's minute."""
    dispatch = _dispatch_or_404(dispatch_id)
    at = clock.now()
    audit.record(
        "outbox.delivery_requested",
        actor=actor_name(_user()),
        at=at,
        object_type="dispatch",
        object_id=dispatch.id,
        dispatch_id=dispatch.id,
        details={"via": "web"},
    )
    db.session.commit()
    try:
        report = delivery.deliver_due(at)
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
    return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)


# --- Watching delivery -------------------------------------------------------------------------


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
    if recipient["acknowledged_at"]:
        confirmed = row["acknowledged_at"]
        if recipient["acknowledged_method"] == "phone":
            confirmed += " (qua điện thoại)"
    elif recipient["overdue"]:
        confirmed = "quá hạn"
    else:
        confirmed = "chưa"
    row["confirmed_label"] = confirmed
    row["reminders_stopped"] = stopped
    row["reminders_label"] = str(recipient["reminders"]) + (" (đã dừng nhắc)" if stopped else "")
    return row


def _status_data(dispatch_id: int) -> dict[str, Any]:
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
    data = _status_data(dispatch_id)
    dispatch = _dispatch_or_404(dispatch_id)
    report = data["report"]
    return render_template(
        "clerks/dispatch.html",
        dispatch=dispatch,
        report=report,
        status_label=listing.STATUS_LABELS[DispatchStatus(report["status"])],
        recipients=data["rows"],
        in_flight=data["in_flight"],
        refresh_seconds=REFRESH_SECONDS,
        documents=list(dispatch.documents),
    )


@bp.get("/dispatches/<int:dispatch_id>/status.json")
@role_required(*READ_ROLES)
def status_json(dispatch_id: int) -> Any:
    """The status as JSON for the page's polling script: counts and each row's display text."""
    data = _status_data(dispatch_id)
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


def _send_document(document: Document, *, inline: bool = False) -> Response:
    from dispatch.views.provinces import content_disposition

    try:
        data = archive.read_document(document)
    except archive.ArchiveError as exc:
        abort(Response(render_error(500, str(exc))[0], status=500))
    disposition = content_disposition(document.filename)
    if inline:
        disposition = disposition.replace("attachment;", "inline;", 1)
    return Response(
        data,
        mimetype=document.media_type,
        headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"},
    )


@bp.get("/dispatches/<int:dispatch_id>/documents/<int:document_id>")
@role_required(*READ_ROLES)
def document(dispatch_id: int, document_id: int) -> Any:
    """An archived file of an issued dispatch, exactly as it was sent."""
    found = db.session.get(Document, document_id)
    if found is None or found.dispatch_id != dispatch_id:
        abort(404)
    return _send_document(found)


# --- Per-recipient actions ---------------------------------------------------------------------


def _recipient_or_404(dispatch_id: int, recipient_id: int) -> DispatchRecipient:
    recipient = recipient_actions.get_recipient(dispatch_id, recipient_id)
    if recipient is None:
        abort(404)
    return recipient


def _recipient_page(
    recipient: DispatchRecipient,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    message: str | None = None,
    code: int = 200,
) -> Any:
    data = _status_data(recipient.dispatch_id)
    row = next(r for r in data["rows"] if r["id"] == recipient.id)
    messages = list(
        db.session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.recipient_id == recipient.id)
            .order_by(OutboxMessage.id)
        ).scalars()
    )
    return (
        render_template(
            "clerks/recipient.html",
            dispatch=recipient.dispatch,
            recipient=recipient,
            row=row,
            messages=messages,
            errors=errors or {},
            values=values or {},
            message=message,
            delivery_labels=status.DELIVERY_LABELS,
        ),
        code,
    )


@bp.get("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>")
@role_required(*CHANGE_ROLES)
def recipient(dispatch_id: int, recipient_id: int) -> Any:
    """One recipient: its e-mails and receipt, and what a clerk can do about them."""
    return _recipient_page(_recipient_or_404(dispatch_id, recipient_id))


def _after_action(recipient: DispatchRecipient, message: str) -> Any:
    db.session.commit()
    flash(message, "info")
    return redirect(
        url_for("clerks.recipient", dispatch_id=recipient.dispatch_id, recipient_id=recipient.id),
        code=303,
    )


def _action_failed(
    recipient: DispatchRecipient, exc: recipient_actions.RecipientActionError, values: dict
) -> Any:
    db.session.rollback()
    db.session.refresh(recipient)
    return _recipient_page(
        recipient, errors=exc.errors, values=values, message=exc.message, code=422
    )


@bp.post("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/resend")
@role_required(*CHANGE_ROLES)
def resend(dispatch_id: int, recipient_id: int) -> Any:
    """Send the letter again to this recipient."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)
    try:
        result = recipient_actions.resend_letter(recipient, actor=_user(), at=clock.now())
    except recipient_actions.RecipientActionError as exc:
        return _action_failed(recipient, exc, {})
    return _after_action(
        recipient, f"Đã xếp hàng gửi lại công văn tới {recipient.email} (lần {result.sequence})."
    )


@bp.post("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/address")
@role_required(*CHANGE_ROLES)
def correct_address(dispatch_id: int, recipient_id: int) -> Any:
    """Correct the recipient's address (and maybe the directory's) and resend the letter."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)
    values = {
        "email": request.form.get("email", ""),
        "cc": request.form.get("cc", ""),
        "update_directory": request.form.get("update_directory", ""),
    }
    try:
        recipient_actions.correct_address(
            recipient,
            email=values["email"],
            cc=values["cc"],
            update_directory=bool(values["update_directory"]),
            actor=_user(),
            at=clock.now(),
        )
    except recipient_actions.RecipientActionError as exc:
        return _action_failed(recipient, exc, values)
    message = f"Đã sửa địa chỉ thành {recipient.email} và xếp hàng gửi lại công văn."
    if values["update_directory"]:
        message += " Danh bạ cũng đã được cập nhật."
    return _after_action(recipient, message)


@bp.post("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/phone")
@role_required(*CHANGE_ROLES)
def phone_confirmation(dispatch_id: int, recipient_id: int) -> Any:
    """Record a confirmation of receipt given by phone."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)
    values = {key: request.form.get(key, "") for key in ("name", "position", "note")}
    try:
        recipient_actions.record_phone_confirmation(
            recipient, **values, actor=_user(), at=clock.now()
        )
    except recipient_actions.RecipientActionError as exc:
        return _action_failed(recipient, exc, values)
    return _after_action(recipient, "Đã ghi nhận xác nhận qua điện thoại.")


@bp.post("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/reminders")
@role_required(*CHANGE_ROLES)
def reminders(dispatch_id: int, recipient_id: int) -> Any:
    """Stop (or resume) the reminders to this recipient."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)
    stop = request.form.get("stop", "1") != "0"
    try:
        recipient_actions.set_reminders_stopped(recipient, stop, actor=_user(), at=clock.now())
    except recipient_actions.RecipientActionError as exc:
        return _action_failed(recipient, exc, {})
    return _after_action(
        recipient, "Đã dừng nhắc việc cho nơi nhận này." if stop else "Đã bật lại nhắc việc."
    )


# --- Directory ---------------------------------------------------------------------------------


@bp.get("/directory")
@role_required(*CHANGE_ROLES)
def directory_list() -> Any:
    """The directory, searchable without accents ("bac lieu" finds Bạc Liêu)."""
    query = composer.clean_text(request.args.get("q", ""))
    offices = directory.search(query, limit=DIRECTORY_LIMIT)
    return render_template(
        "clerks/directory.html", offices=offices, query=query, limit=DIRECTORY_LIMIT
    )


@bp.get("/directory/search.json")
@role_required(*CHANGE_ROLES)
def directory_search() -> Any:
    """Offices matching a query (accent-insensitive), for the composer's search box."""
    query = composer.clean_text(request.args.get("q", ""))
    on = None
    if request.args.get("on"):
        try:
            on = dt.date.fromisoformat(request.args["on"])
        except ValueError:
            on = None
    offices = directory.search(query, on=on, limit=SEARCH_LIMIT) if query else []
    return jsonify(
        {
            "offices": [
                {
                    "id": org.id,
                    "code": org.province_code,
                    "name": org.name,
                    "email": org.email,
                    "placeholder": org.email_is_placeholder,
                }
                for org in offices
            ]
        }
    )


@bp.get("/directory/export.csv")
@role_required(*CHANGE_ROLES)
def directory_export() -> Any:
    """The whole directory as CSV (UTF-8 with BOM, so Excel reads the Vietnamese)."""
    return Response(
        directory.export_csv(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="danh-ba.csv"'},
    )


@bp.route("/directory/<int:org_id>/edit", methods=["GET", "POST"])
@role_required(*ADMIN_ROLES)
def office_edit(org_id: int) -> Any:
    """Edit one office (admin): name, addresses, agency id, valid period."""
    org = db.session.get(Organisation, org_id)
    if org is None:
        abort(404)
    if request.method == "POST":
        form = directory_edit.OfficeForm(
            **{
                key: unicodedata.normalize("NFC", request.form.get(key, ""))
                for key in ("name", "email", "cc", "agency_id", "valid_from", "valid_to")
            }
        )
        try:
            changed = directory_edit.update_office(org_id, form, actor=_user(), at=clock.now())
        except directory_edit.OfficeError as exc:
            db.session.rollback()
            return render_template(
                "clerks/office_edit.html", org=org, form=form, errors=exc.errors
            ), 422
        db.session.commit()
        flash(f"Đã lưu thông tin {org.name}." if changed else "Không có thay đổi nào.", "info")
        return redirect(url_for("clerks.directory_list", q=org.province_name), code=303)
    return render_template(
        "clerks/office_edit.html", org=org, form=directory_edit.form_for(org), errors={}
    )


@bp.route("/directory/import", methods=["GET", "POST"])
@role_required(*ADMIN_ROLES)
def directory_import() -> Any:
    """Import a directory CSV (admin): every row checked; all of it or nothing."""
    if request.method == "GET":
        return render_template("clerks/directory_import.html", problems=[], error=None)
    file = request.files.get("file")
    if file is None or not file.filename:
        return render_template(
            "clerks/directory_import.html", problems=[], error="Vui lòng chọn tệp CSV."
        ), 422
    data = file.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return render_template(
            "clerks/directory_import.html",
            problems=[],
            error="Tệp không phải văn bản mã UTF-8; hãy lưu lại dưới dạng “CSV UTF-8”.",
        ), 422
    try:
        result = directory.import_csv(text, actor=actor_name(_user()), at=clock.now())
    except directory.DirectoryImportError as exc:
        db.session.rollback()
        return render_template(
            "clerks/directory_import.html",
            problems=exc.problems,
            error="Không nhập được danh bạ; chưa có thay đổi nào được ghi.",
        ), 422
    except directory.DirectoryError as exc:
        db.session.rollback()
        return render_template("clerks/directory_import.html", problems=[], error=str(exc)), 422
    flash(
        f"Đã nhập danh bạ: {len(result.created)} cơ quan mới, {len(result.updated)} cập nhật, "
        f"{len(result.unchanged)} không đổi.",
        "info",
    )
    return redirect(url_for("clerks.directory_list"), code=303)


# --- The outgoing register ---------------------------------------------------------------------


def _register_year() -> int:
    year = request.args.get("year", type=int)
    if year is None or not 2000 <= year <= 2100:
        year = clock.local(clock.now()).year
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


@bp.get("/register.xlsx")
@role_required(*CHANGE_ROLES)
def register_xlsx() -> Any:
    """The register of a year as an Excel workbook."""
    year = _register_year()
    data = register.register_xlsx(register.build_register(year), at=clock.now())
    return Response(
        data,
        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="so-van-ban-di-{year}.xlsx"'},
    )


@bp.get("/register.pdf")
@role_required(*CHANGE_ROLES)
def register_pdf() -> Any:
    """The register of a year printed as a PDF (A4 landscape)."""
    year = _register_year()
    data = register.register_pdf(register.build_register(year), at=clock.now())
    return Response(
        data,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'inline; filename="so-van-ban-di-{year}.pdf"'},
    )


# --- Too large a request -----------------------------------------------------------------------


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> Any:
    """A request over ``MAX_CONTENT_LENGTH``: say so in Vietnamese where the clerk was."""
    # The body is refused while reading the form for its CSRF token, before any other
    # before-request step: drop what an earlier request in this context may have cached.
    forget_request_state()
    message = uploads.too_large_message()
    endpoint = request.endpoint or ""
    if getattr(current_user, "role", None) not in CHANGE_ROLES:
        # The body was refused before the role check ran: show nothing of any draft.
        return render_error(413, message)
    dispatch_id = (request.view_args or {}).get("dispatch_id")
    if endpoint in ("clerks.edit", "clerks.new"):
        dispatch = db.session.get(Dispatch, dispatch_id) if dispatch_id else None
        if dispatch is not None and dispatch.status is DispatchStatus.DRAFT:
            form = _form_for(dispatch)
            errors = composer.draft_errors(dispatch, uploads.letter_root(dispatch.id))
        else:
            dispatch, form, errors = None, composer.blank_form(clock.now()), {}
        return _compose_page(dispatch, form, errors=errors, upload_error=message, code=413)
    if endpoint == "clerks.directory_import":
        return render_template("clerks/directory_import.html", problems=[], error=message), 413
    if endpoint in ("clerks.autosave", "clerks.autosave_new"):
        return jsonify({"message": message}), 413
    return render_error(413, message)
