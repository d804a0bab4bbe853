"""Composing: the form with every field of the letter, its live preview, autosave, uploads."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from flask import (
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
from werkzeug.exceptions import RequestEntityTooLarge

from dispatch import clock
from dispatch.accounts.auth import forget_request_state, render_error, role_required
from dispatch.directory import offices
from dispatch.drafting import deletion, drafts, uploads, word_import
from dispatch.drafting import form as compose_form
from dispatch.drafting.drafts import DispatchFrozen, DraftError
from dispatch.extensions import db
from dispatch.letters.source import LetterSourceError
from dispatch.models import (
    Dispatch,
    DispatchStatus,
    Organisation,
)
from dispatch.transaction import unit_of_work
from dispatch.views.clerks.common import (
    CHANGE_ROLES,
    SEARCH_LIMIT,
    bp,
    dispatch_or_404,
    signed_in_user,
)
from dispatch.views.downloads import send_document
from dispatch.views.headers import frameable
from dispatch.views.params import int_arg

NOTHING_TO_SAVE = (
    "Chưa có gì để lưu: biểu mẫu còn trống hoặc vẫn như lúc mở, nên chưa tạo bản nháp nào."
)

# --- Composing ---------------------------------------------------------------------------------


def _recipient_choices(
    dispatch: Dispatch | None, form: compose_form.ComposeForm, at: dt.datetime, query: str
) -> dict[str, Any]:
    """The offices the compose page lists with a checkbox, and which are ticked."""
    group = None
    if form.group:
        group = next((g for g in compose_form.groups() if g.code == form.group), None)
    meta_date = compose_form.parse_letter_date(form.fields.get("date", ""))[0]
    day = drafts.recipients_date(meta_date, at)
    members = offices.recipients_for(group.code, day) if group is not None else []
    if dispatch is not None and form.recipients is not None:
        chosen = set(form.recipients)
    elif dispatch is not None and dispatch.group is not None and dispatch.group.code == form.group:
        chosen = {r.organisation_id for r in dispatch.recipients}
    else:
        chosen = {org.id for org in members}
    listed = {org.id for org in members}
    extra_ids = [org_id for org_id in chosen if org_id not in listed]
    extras = offices.organisations_by_id(extra_ids)
    results: list[Organisation] = []
    if query:
        results = [
            org
            for org in offices.search(query, on=day, limit=SEARCH_LIMIT)
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


# Where each field sits on the compose page, top to bottom: the summary lists in this order.
PAGE_ORDER = (
    "letter",
    "word_file",
    "parent_agency",
    "issuing_agency",
    "symbol",
    "place",
    "date",
    "urgency",
    "subject",
    "addressees",
    "body",
    "appendices",
    "appendix-",
    "signer_authority",
    "signer_acting_for",
    "signer_title",
    "signer_name",
    "distribution",
    "attachments",
    "group",
    "recipients",
)


def _page_position(key: str) -> tuple[int, int, int]:
    """A field's place on the page (appendix slots in their order, title before body)."""
    if key.startswith("appendix-"):
        _, index, part = key.split("-", 2)
        slot = int(index) if index.isdigit() else 0
        return PAGE_ORDER.index("appendix-"), slot, 0 if part == "title" else 1
    return (PAGE_ORDER.index(key) if key in PAGE_ORDER else len(PAGE_ORDER)), 0, 0


def error_items(errors: dict[str, str]) -> list[dict[str, str]]:
    """The error summary's entries: where each problem is (anchor), its field, the message."""
    labels = {**compose_form.TEXT_FIELDS, **compose_form.LIST_FIELDS, "body": "Nội dung"}
    labels.update(
        recipients="Nơi nhận điện tử",
        group="Nhóm nơi nhận",
        attachments="Tài liệu gửi kèm",
        appendices="Phụ lục",
        letter="Công văn",
        word_file="Tệp Word",
    )
    anchors = {
        "recipients": "noi-nhan",
        "attachments": "f-attachment",
        "appendices": "phu-luc",
        "letter": "compose-form",
    }
    items = []
    for key, message in sorted(errors.items(), key=lambda item: _page_position(item[0])):
        label = labels.get(key, key)
        if key.startswith("appendix-"):
            _, index, part = key.split("-", 2)
            label = f"Phụ lục {int(index) + 1}: " + ("tên" if part == "title" else "nội dung")
        items.append({"anchor": anchors.get(key, f"f-{key}"), "label": label, "message": message})
    return items


def compose_page(
    dispatch: Dispatch | None,
    form: compose_form.ComposeForm,
    *,
    errors: dict[str, str] | None = None,
    upload_error: str | None = None,
    slots: int | None = None,
    query: str = "",
    code: int = 200,
) -> Any:
    at = clock.now()
    attachment_names = uploads.attachments_of(dispatch.source if dispatch else None)
    files = uploads.stored_files(dispatch.id, attachment_names) if dispatch else []
    missing = [n for n in attachment_names if n not in {f.name for f in files}]
    empty_slots = compose_form.EMPTY_APPENDIX_SLOTS if slots is None else slots
    room = max(compose_form.MAX_APPENDICES - len(form.appendices), 0)
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
            can_add_appendix=len(appendix_rows) < compose_form.MAX_APPENDICES,
            groups=compose_form.groups(),
            recipients=_recipient_choices(dispatch, form, at, query),
            files=files,
            missing_files=missing,
            max_upload=uploads.max_upload(),
            max_upload_text=uploads.human_size(uploads.max_upload()),
            mail_room=uploads.mail_room(dispatch.id if dispatch else None, attachment_names),
            accepted=uploads.ACCEPTED,
            authority_choices=compose_form.AUTHORITY_CHOICES,
            urgency_choices=compose_form.URGENCY_CHOICES,
            labels={**compose_form.TEXT_FIELDS, **compose_form.LIST_FIELDS},
            import_report=_import_report(dispatch),
        ),
        code,
    )


# Set on the redirect after a letter was read from a file: the composer shows the report.
IMPORT_REPORT_ARG = "tu-word"


def _import_report(dispatch: Dispatch | None) -> list[tuple[str, str, str]] | None:
    """Right after an import, the field-by-field report of the Word file kept with the draft."""
    if dispatch is None or request.args.get(IMPORT_REPORT_ARG) != "1":
        return None
    return word_import.report_rows(dispatch.id)


def form_for(dispatch: Dispatch) -> compose_form.ComposeForm:
    return compose_form.form_from_source(
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
            uploads.add_attachment(dispatch_id, file.filename, data, actor=signed_in_user(), at=at)
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
        removed = compose_form.parse_int(action.split(":", 1)[1], -1)
    form = compose_form.form_from_post(request.form, remove_appendix=removed)
    if (
        dispatch_id is None
        and action in ("save", "issue")
        and not any(f and f.filename for f in request.files.getlist("attachment"))
        and compose_form.is_untouched(form, at)
    ):
        # Nothing typed yet: no empty draft is left behind.
        flash(NOTHING_TO_SAVE, "info")
        return redirect(url_for("clerks.new"), code=303)
    try:
        with unit_of_work():
            result = _save_posted(dispatch_id, form, at)
            dispatch = result.dispatch
            if action.startswith("remove_attachment:"):
                uploads.remove_attachment(
                    dispatch.id, action.split(":", 1)[1], actor=signed_in_user(), at=at
                )
            upload_problems = _save_files(dispatch.id, at)
    except DispatchFrozen as exc:
        flash(str(exc), "error")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    except compose_form.FormError as exc:
        dispatch = db.session.get(Dispatch, dispatch_id) if dispatch_id else None
        return compose_page(dispatch, form, errors={"group": str(exc)}, code=422)

    errors = compose_form.draft_errors(dispatch, project_root=uploads.letter_root(dispatch.id))
    if upload_problems:
        # Stay on the page (no redirect) so the message sits next to the file field.
        db.session.refresh(dispatch)
        return compose_page(
            dispatch,
            form_for(dispatch),
            errors=errors,
            upload_error=" ".join(upload_problems),
            code=422,
        )
    slots = request.form.get("appendix_slots", type=int) or compose_form.EMPTY_APPENDIX_SLOTS
    params: dict[str, Any] = {}
    if action == "add_appendix":
        params["slots"] = slots + 1
    elif action == "search":
        params["q"] = compose_form.clean_text(request.form.get("q", ""))
    elif action == "issue" and not errors:
        return redirect(url_for("clerks.issue", dispatch_id=dispatch.id), code=303)
    # Said once: with errors, the summary says the draft was saved and what is left (in the
    # page's order); without, a short notice says it was saved.
    if not errors:
        flash(f"Đã lưu bản nháp lúc {clock.local(at):%H:%M}.", "info")
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
    return compose_page(None, compose_form.blank_form(clock.now()))


@bp.route("/dispatches/<int:dispatch_id>/edit", methods=["GET", "POST"])
@role_required(*CHANGE_ROLES)
def edit(dispatch_id: int) -> Any:
    """The composer for a draft: every field, its problems, the preview; posting saves."""
    dispatch = dispatch_or_404(dispatch_id)
    if dispatch.status is not DispatchStatus.DRAFT:
        flash(
            "Công văn đã ban hành nên không sửa được nữa; muốn thay đổi, hãy ban hành văn bản "
            "thay thế hoặc đính chính.",
            "error",
        )
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    if (locked := drafts.open_approval_status(dispatch_id)) is not None:
        flash(drafts.signature_lock_message(locked), "error")
        return redirect(
            url_for("clerks.dispatch_detail", dispatch_id=dispatch_id) + "#trinh-ky", code=303
        )
    if request.method == "POST":
        return _handle_compose_post(dispatch_id)
    errors = compose_form.draft_errors(dispatch, project_root=uploads.letter_root(dispatch_id))
    return compose_page(
        dispatch,
        form_for(dispatch),
        errors=errors,
        # How many empty appendix slots to show: page state, so an odd value shows the usual.
        slots=int_arg("slots", None, low=0, high=compose_form.MAX_APPENDICES, strict=False),
        query=compose_form.clean_text(request.args.get("q", "")),
    )


@bp.route("/dispatches/<int:dispatch_id>/delete", methods=["GET", "POST"])
@role_required(*CHANGE_ROLES)
def delete_draft(dispatch_id: int) -> Any:
    """Delete a draft never issued: a confirmation page, then a POST (CSRF) that deletes."""
    dispatch = dispatch_or_404(dispatch_id)
    if dispatch.status is not DispatchStatus.DRAFT:
        flash(drafts.frozen_message(dispatch).replace("không thể sửa", "không xoá được"), "error")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    if request.method == "GET":
        return render_template(
            "clerks/delete_draft.html",
            dispatch=dispatch,
            recipient_count=len(dispatch.recipients),
            file_count=len(uploads.attachments_of(dispatch.source)),
        )
    try:
        with unit_of_work():
            subject = deletion.delete_draft(dispatch_id, actor=signed_in_user(), at=clock.now())
    except DraftError as exc:
        flash(str(exc), "error")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    flash(f"Đã xoá bản nháp “{subject or 'chưa có trích yếu'}”.", "info")
    return redirect(url_for("clerks.home"), code=303)


def _save_posted(
    dispatch_id: int | None, form: compose_form.ComposeForm, at: dt.datetime
) -> compose_form.SaveResult:
    """Save what the composer posted as a new draft, or over draft ``dispatch_id``."""
    return compose_form.save_draft(
        dispatch_id,
        form,
        actor=signed_in_user(),
        at=at,
        project_root=uploads.letter_root(dispatch_id) if dispatch_id else None,
    )


def _autosave(dispatch_id: int | None) -> Any:
    at = clock.now()
    form = compose_form.form_from_post(request.form)
    if dispatch_id is None and compose_form.is_untouched(form, at):
        return jsonify({"id": None, "created": False, "message": NOTHING_TO_SAVE, "errors": {}})
    try:
        with unit_of_work():
            result = _save_posted(dispatch_id, form, at)
    except DispatchFrozen as exc:
        return jsonify({"message": str(exc)}), 409
    except (compose_form.FormError, DraftError) as exc:
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
    dispatch_or_404(dispatch_id)
    return _autosave(dispatch_id)


@bp.get("/dispatches/<int:dispatch_id>/preview.pdf")
@frameable  # shown in the composer's frame
@role_required(*CHANGE_ROLES)
def preview(dispatch_id: int) -> Any:
    """The draft as a PDF with a blank number and day; an issued one's archived PDF."""
    from dispatch.letters.pdf import RenderError, render_pdf

    dispatch = dispatch_or_404(dispatch_id)
    if dispatch.status is not DispatchStatus.DRAFT:
        document = next((d for d in dispatch.documents if d.kind == "pdf"), None)
        if document is None:
            abort(404)
        return send_document(document, inline=True)
    try:
        letter = compose_form.preview_letter(dispatch, uploads.letter_root(dispatch_id))
        pdf = render_pdf(letter)
    except (LetterSourceError, RenderError) as exc:
        message = exc.message if isinstance(exc, LetterSourceError) else str(exc)
        errors = compose_form.draft_errors(dispatch, uploads.letter_root(dispatch_id))
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
            form = form_for(dispatch)
            errors = compose_form.draft_errors(dispatch, uploads.letter_root(dispatch.id))
        else:
            dispatch, form, errors = None, compose_form.blank_form(clock.now()), {}
        return compose_page(dispatch, form, errors=errors, upload_error=message, code=413)
    if endpoint == "clerks.directory_import":
        return render_template("clerks/directory_import.html", problems=[], error=message), 413
    if endpoint in ("clerks.autosave", "clerks.autosave_new"):
        return jsonify({"message": message}), 413
    return render_error(413, message)
