"""Bringing a letter written in Word (or a letter source zip) into the composer.

The import button sits inside the compose form and posts the whole form here: what was typed
is saved first (as "Lưu bản nháp" would), so a refused file loses nothing; then the file
replaces the draft's letter and the composer opens with a field-by-field report of what was
recognised and what was not, next to the preview.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for

from dispatch import clock
from dispatch.accounts.auth import role_required
from dispatch.drafting import form as compose_form
from dispatch.drafting import uploads, word_import
from dispatch.drafting.drafts import DispatchFrozen
from dispatch.extensions import db
from dispatch.letters.docx_import import DocxImportError
from dispatch.models import Dispatch
from dispatch.transaction import unit_of_work
from dispatch.views.clerks.common import CHANGE_ROLES, bp, signed_in_user
from dispatch.views.clerks.drafts import IMPORT_REPORT_ARG, compose_page, form_for


def _import(dispatch_id: int | None) -> Any:
    at = clock.now()
    form = compose_form.form_from_post(request.form)
    file = request.files.get("word_file")
    try:
        with unit_of_work():
            saved = compose_form.save_draft(
                dispatch_id,
                form,
                actor=signed_in_user(),
                at=at,
                project_root=uploads.letter_root(dispatch_id) if dispatch_id else None,
            )
    except DispatchFrozen as exc:
        flash(str(exc), "error")
        return redirect(url_for("clerks.dispatch_detail", dispatch_id=dispatch_id), code=303)
    except compose_form.FormError as exc:
        dispatch = db.session.get(Dispatch, dispatch_id) if dispatch_id else None
        return compose_page(dispatch, form, errors={"group": str(exc)}, code=422)
    dispatch = saved.dispatch
    problem = None
    if file is None or not file.filename:
        problem = "Chưa chọn tệp: hãy chọn tệp Word (.docx) hoặc tệp nén (.zip) của công văn."
    else:
        data = file.read(uploads.max_upload() + 1)
        try:
            with unit_of_work():
                word_import.import_into(
                    dispatch.id,
                    data,
                    file.filename,
                    group=form.group,
                    actor=signed_in_user(),
                    at=at,
                )
        except DocxImportError as exc:
            problem = str(exc)
    if problem is not None:
        db.session.refresh(dispatch)
        errors = compose_form.draft_errors(dispatch, project_root=uploads.letter_root(dispatch.id))
        return compose_page(
            dispatch, form_for(dispatch), errors={"word_file": problem, **errors}, code=422
        )
    flash("Đã đọc công văn từ tệp; kiểm tra các mục bên dưới rồi lưu hoặc ban hành.", "info")
    return redirect(
        url_for("clerks.edit", dispatch_id=dispatch.id, **{IMPORT_REPORT_ARG: "1"})
        + "#nhap-tu-word",
        code=303,
    )


@bp.post("/dispatches/new/import")
@role_required(*CHANGE_ROLES)
def import_new() -> Any:
    """The composer's form with a Word file: a new draft holding the imported letter."""
    return _import(None)


@bp.post("/dispatches/<int:dispatch_id>/import")
@role_required(*CHANGE_ROLES)
def import_into(dispatch_id: int) -> Any:
    """The composer's form with a Word file: the draft's letter replaced by the imported one."""
    return _import(dispatch_id)
