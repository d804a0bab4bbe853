"""The directory: search, edit one office (admin), CSV import and export."""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

from flask import (
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from dispatch import clock
from dispatch.accounts.auth import role_required
from dispatch.audit import actor_name
from dispatch.directory import edit as directory_edit
from dispatch.directory import offices
from dispatch.drafting import form as compose_form
from dispatch.extensions import db
from dispatch.models import (
    Organisation,
)
from dispatch.transaction import unit_of_work
from dispatch.views.clerks.common import (
    ADMIN_ROLES,
    CHANGE_ROLES,
    DIRECTORY_LIMIT,
    SEARCH_LIMIT,
    bp,
    signed_in_user,
)
from dispatch.views.downloads import file_response

# --- Directory ---------------------------------------------------------------------------------


@bp.get("/directory")
@role_required(*CHANGE_ROLES)
def directory_list() -> Any:
    """The directory, searchable without accents ("bac lieu" finds Bạc Liêu)."""
    query = compose_form.clean_text(request.args.get("q", ""))
    found = offices.search(query, limit=DIRECTORY_LIMIT)
    return render_template(
        "clerks/directory.html", offices=found, query=query, limit=DIRECTORY_LIMIT
    )


@bp.get("/directory/search.json")
@role_required(*CHANGE_ROLES)
def directory_search() -> Any:
    """Offices matching a query (accent-insensitive), for the composer's search box."""
    query = compose_form.clean_text(request.args.get("q", ""))
    on = None
    if request.args.get("on"):
        try:
            on = dt.date.fromisoformat(request.args["on"])
        except ValueError:
            on = None
    found = offices.search(query, on=on, limit=SEARCH_LIMIT) if query else []
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
                for org in found
            ]
        }
    )


@bp.get("/directory/export.csv")
@role_required(*CHANGE_ROLES)
def directory_export() -> Any:
    """The whole directory as CSV (UTF-8 with BOM, so Excel reads the Vietnamese)."""
    return file_response(offices.export_csv(), "text/csv; charset=utf-8", "danh-ba.csv")


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
            with unit_of_work():
                changed = directory_edit.update_office(
                    org_id, form, actor=signed_in_user(), at=clock.now()
                )
        except directory_edit.OfficeError as exc:
            return render_template(
                "clerks/office_edit.html", org=org, form=form, errors=exc.errors
            ), 422
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
        with unit_of_work():
            result = offices.import_csv(text, actor=actor_name(signed_in_user()), at=clock.now())
    except offices.DirectoryImportError as exc:
        return render_template(
            "clerks/directory_import.html",
            problems=exc.problems,
            error="Không nhập được danh bạ; chưa có thay đổi nào được ghi.",
        ), 422
    except offices.DirectoryError as exc:
        return render_template("clerks/directory_import.html", problems=[], error=str(exc)), 422
    flash(
        f"Đã nhập danh bạ: {len(result.created)} cơ quan mới, {len(result.updated)} cập nhật, "
        f"{len(result.unchanged)} không đổi.",
        "info",
    )
    return redirect(url_for("clerks.directory_list"), code=303)
