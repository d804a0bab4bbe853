"""The public verification pages (no account): anyone holding a copy of a letter checks it.

* ``GET /xac-minh``: a form to upload a PDF; ``POST /xac-minh`` shows what ``dispatch verify``
  finds in it (each signature, the PDF/A level, the register entry) and a verdict in words.
* ``GET /xac-minh/<code>``: the page the letter's QR code opens: number, date, subject, issuer,
  the SHA-256 of the original and whether it was recalled or replaced. Never anything about the
  recipients. An unknown code is a 404 counted in the recipients' links' guess throttle.

The work is in ``dispatch.signing.verification``; these routes only read the upload and format.
They send the recipients' pages' strict headers (no Referer: the code is in the URL).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from flask_wtf.file import FileField
from werkzeug.exceptions import RequestEntityTooLarge

from dispatch.drafting.uploads import human_size
from dispatch.extensions import csrf
from dispatch.signing import pades, verification
from dispatch.views import provinces

bp = Blueprint("verification", __name__)

# The largest file the upload form takes (``DISPATCH_VERIFY_MAX_UPLOAD``): a signed letter with
# its appendices is far smaller, and the mail cap keeps e-mailed letters under 20 MB.
DEFAULT_MAX_UPLOAD = 30 * 1024 * 1024
# What a verification code looks like (``secrets.token_urlsafe``); anything else is unknown.
CODE = re.compile(r"[A-Za-z0-9_-]{8,64}")
NOT_FOUND = "verification/not_found.html"
TOO_MANY = "verification/too_many_requests.html"


class UploadForm(FlaskForm):
    """The file to check; the CSRF token is checked by the form itself (see ``check``)."""

    file = FileField("Tệp PDF cần xác minh")


def _max_upload() -> int:
    return int(current_app.config.get("DISPATCH_VERIFY_MAX_UPLOAD") or DEFAULT_MAX_UPLOAD)


def _too_large_message() -> str:
    return (
        f"Tệp quá lớn: trang này nhận tệp tới {human_size(_max_upload())}. Bản PDF của một công "
        "văn nhỏ hơn nhiều; hãy kiểm tra lại tệp đã chọn."
    )


# --- What the templates are given ------------------------------------------------------------


@dataclass(frozen=True)
class SignatureRow:
    """One signature as the page lists it."""

    role: str
    name: str
    signed_at: str
    intact: bool
    intact_text: str
    trusted_text: str
    changes_text: str


_CHANGES = {
    "none": "Không có thay đổi nào sau chữ ký",
    "lta_updates": "Chỉ bổ sung dấu thời gian, thông tin kiểm tra chứng thư",
    "form_filling": "Chỉ điền số, ngày và ký tiếp (được chữ ký cho phép)",
    "annotations": "Chỉ thêm ghi chú (được chữ ký cho phép)",
}


def _changes_text(changes: str) -> str:
    if changes.endswith(" (not permitted)"):
        return f"Có thay đổi mà chữ ký không cho phép ({changes.removesuffix(' (not permitted)')})"
    return _CHANGES.get(changes, f"Thay đổi khác ({changes})")


def _moment(value: str | None) -> str:
    if not value:
        return "không rõ"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    return f"{moment:%d/%m/%Y %H:%M:%S} ({value})"


def _signature_rows(signatures: list[dict[str, Any]]) -> list[SignatureRow]:
    return [
        SignatureRow(
            role=verification.ROLE_LABELS.get(s["role"], s["role"]),
            name=s["name"],
            signed_at=_moment(s["signed_at"]),
            intact=s["intact"],
            intact_text=("Nguyên vẹn" if s["intact"] else "BỊ HỎNG: tệp đã bị sửa sau khi ký"),
            trusted_text=(
                "Tin cậy (chứng thư thuộc chuỗi tin cậy đã cấu hình)"
                if s["trusted"]
                else "Chưa xác định được nguồn tin cậy của chứng thư"
            ),
            changes_text=_changes_text(s["changes_after"]),
        )
        for s in signatures
    ]


def _pdfa_text(level: str | None) -> str:
    return f"PDF/A-{level}" if level else "Không phải PDF/A (định dạng lưu trữ)"


# --- Routes ---------------------------------------------------------------------------------


@bp.after_request
def add_security_headers(response: Response) -> Response:
    """The recipients' pages' headers: the code in the URL goes to no other site."""
    for header, value in provinces.SECURITY_HEADERS.items():
        response.headers[header] = value
    return response


@bp.errorhandler(CSRFError)
def csrf_failed(error: CSRFError) -> tuple[str, int]:
    return _form_page(
        UploadForm(formdata=None),
        error="Biểu mẫu đã hết hạn. Vui lòng tải lại trang, chọn lại tệp rồi gửi lại.",
        code=400,
    )


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> tuple[str, int]:
    return _form_page(UploadForm(formdata=None), error=_too_large_message(), code=413)


def _form_page(form: UploadForm, *, error: str | None = None, code: int = 200) -> tuple[str, int]:
    return (
        render_template(
            "verification/upload.html",
            form=form,
            error=error,
            max_upload=human_size(_max_upload()),
            action=url_for("verification.upload"),
        ),
        code,
    )


@bp.get("/xac-minh")
def upload_form() -> tuple[str, int]:
    """The upload form."""
    return _form_page(UploadForm())


@bp.post("/xac-minh")
@csrf.exempt  # checked by the form itself, after the larger size cap of this page is set
def upload() -> Any:
    """Check the uploaded PDF: its signatures, its PDF/A level, its place in the register."""
    # The app-wide cap (MAX_CONTENT_LENGTH) is for clerks' uploads; this page takes its own.
    request.max_content_length = _max_upload()
    form = UploadForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            return csrf_failed(CSRFError())
        return _form_page(form, error="Chưa nhận được tệp.", code=400)
    storage = form.file.data
    if storage is None or not getattr(storage, "filename", ""):
        return _form_page(form, error="Vui lòng chọn một tệp PDF để xác minh.", code=400)
    data = storage.read(_max_upload() + 1)
    if len(data) > _max_upload():
        return _form_page(form, error=_too_large_message(), code=413)
    if not data:
        return _form_page(form, error=f"Tệp {storage.filename} rỗng (0 byte).", code=400)
    if b"%PDF-" not in data[:1024]:
        return _form_page(
            form,
            error=f"Tệp {storage.filename} không phải tệp PDF. Trang này chỉ xác minh tệp PDF "
            "của công văn (bản gốc điện tử).",
            code=400,
        )
    try:
        result, passed, _ = verification.verify_file(data, current_app.config)
    except pades.SigningError as exc:
        return _form_page(
            form,
            error=f"Không đọc được tệp {storage.filename}: tệp PDF bị hỏng hoặc không đúng "
            f"định dạng. ({exc})",
            code=400,
        )
    matched = verification.issued_with_pdf(data)
    record = verification.public_record(matched) if matched is not None else None
    return render_template(
        "verification/result.html",
        filename=storage.filename,
        size=human_size(len(data)),
        sha256=verification.sha256_of(data),
        verdict=verification.verdict(result, passed, record),
        signatures=_signature_rows(result["signatures"]),
        pdfa=_pdfa_text(result["pdfa"]),
        register=result["register"],
        record=record,
        record_url=url_for("verification.record", code=record.code) if record else None,
        again_url=url_for("verification.upload_form"),
    )


@bp.get("/xac-minh/<code>")
def record(code: str) -> Any:
    """The public record of the letter whose QR code holds ``code``."""
    found = verification.record_by_code(code) if CODE.fullmatch(code) else None
    if found is None:
        return provinces.unknown_link(NOT_FOUND, TOO_MANY)
    return render_template(
        "verification/record.html",
        record=found,
        upload_url=url_for("verification.upload_form"),
    )


@bp.route("/xac-minh/<code>/<path:rest>", methods=["GET", "POST"])
def unknown(code: str, rest: str) -> Response:
    """Any deeper address is a code that does not exist: same answer, same count."""
    return provinces.unknown_link(NOT_FOUND, TOO_MANY)


def init_app(app: Flask) -> None:
    """Register the pages (after ``provinces.init_app``: they share its guess throttle)."""
    app.register_blueprint(bp)
