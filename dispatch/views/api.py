"""The JSON API for other systems: bearer tokens, marshmallow schemas, an OpenAPI 3 document.

flask-smorest builds ``/api/openapi.json`` from the schemas and decorators below. Every request
needs ``Authorization: Bearer <token>`` (``dispatch tokens create EMAIL``); a session cookie is
never accepted here, and the blueprint is exempt from CSRF because no cookie authenticates it.
Errors are always JSON: ``{"message": "<Vietnamese>", "code": <HTTP status>}``, with ``errors``,
``field`` and ``line`` when a request body is invalid. The views are thin: they call the same
domain functions as the CLI (``drafts``, ``issuing``, ``status``, ``directory``, ``listing``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import marshmallow as ma
from flask import Blueprint as FlaskBlueprint
from flask import Flask, Response, current_app, g, request, url_for
from flask_smorest import Api, abort
from flask_smorest import Blueprint as ApiBlueprint
from werkzeug.exceptions import HTTPException

from dispatch import clock, issuing
from dispatch.accounts import api_tokens, auth
from dispatch.directory import offices
from dispatch.drafting import drafts
from dispatch.extensions import csrf, db
from dispatch.letters.formatting import ROMAN
from dispatch.letters.source import LetterSourceError, source_from_json
from dispatch.models import Dispatch, DispatchStatus, Role, User
from dispatch.reporting import listing, status
from dispatch.transaction import unit_of_work

API_CONFIG = {
    "API_TITLE": "Dispatch API",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    "API_SPEC_OPTIONS": {
        "info": {
            "description": (
                "Phát hành công văn tới các Sở và theo dõi xác nhận đã nhận. "
                "Mọi yêu cầu cần tiêu đề `Authorization: Bearer <mã>` "
                "(tạo bằng `dispatch tokens create EMAIL`). Lỗi luôn trả về JSON "
                '`{"message": "...", "code": <mã HTTP>}`.'
            )
        },
        "security": [{"bearerAuth": []}],
    },
}
BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "Mã truy cập API (tạo bằng `dispatch tokens create EMAIL`).",
}
CHANGE_ROLES = (Role.CLERK, Role.ADMIN)
LEADER_READ_ONLY = "Tài khoản lãnh đạo chỉ được xem, không được thay đổi dữ liệu."
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The error codes each kind of operation can answer, documented on every operation.
READ_ERRORS = (401, 404)
CHANGE_ERRORS = (401, 403, 404, 409, 422)


# --- Schemas --------------------------------------------------------------------------------


def _vi(**extra: str) -> dict[str, str]:
    """Vietnamese messages for marshmallow's common validation errors."""
    return {
        "required": "Thiếu trường bắt buộc.",
        "null": "Trường này không được để trống.",
        "invalid": "Giá trị không hợp lệ.",
        **extra,
    }


class InputSchema(ma.Schema):
    """A request's parameters or body: unknown fields refused, messages in Vietnamese."""

    class Meta:
        unknown = ma.RAISE

    error_messages = {  # noqa: RUF012  (marshmallow reads this class attribute)
        "unknown": "Trường không được hỗ trợ.",
        "type": "Dữ liệu phải là một đối tượng JSON.",
    }


def _range(low: int, high: int) -> ma.validate.Range:
    return ma.validate.Range(min=low, max=high, error=f"Giá trị phải từ {low} đến {high}.")


def _one_of(choices: list[str]) -> ma.validate.OneOf:
    return ma.validate.OneOf(choices, error="Giá trị phải là một trong: {choices}.")


class ErrorSchema(ma.Schema):
    """An error: a Vietnamese message and the HTTP status; details for invalid input."""

    message = ma.fields.String(required=True, metadata={"description": "Thông báo lỗi"})
    code = ma.fields.Integer(required=True, metadata={"description": "Mã trạng thái HTTP"})
    errors = ma.fields.Dict(metadata={"description": "Lỗi theo từng trường (đầu vào sai)"})
    field = ma.fields.String(metadata={"description": "Trường (hoặc tệp) gây lỗi"})
    line = ma.fields.Integer(
        allow_none=True,  # a problem in the metadata has a field but no line of the body
        metadata={"description": "Dòng gây lỗi trong nội dung nguồn"},
    )


class CountsSchema(ma.Schema):
    """How many recipients there are and where they stand."""

    recipients = ma.fields.Integer(required=True)
    opened = ma.fields.Integer(required=True)
    acknowledged = ma.fields.Integer(required=True)
    overdue = ma.fields.Integer(required=True)
    pending = ma.fields.Integer(required=True)


class DispatchSummarySchema(ma.Schema):
    """One dispatch in the list."""

    id = ma.fields.Integer(required=True)
    number = ma.fields.Integer(allow_none=True)
    number_and_symbol = ma.fields.String(allow_none=True, metadata={"example": "05/THH-VP"})
    subject = ma.fields.String(required=True)
    status = ma.fields.String(
        required=True, validate=ma.validate.OneOf([s.value for s in DispatchStatus])
    )
    issued_on = ma.fields.Date(allow_none=True)
    issued_at = ma.fields.DateTime(allow_none=True)
    counts = ma.fields.Nested(CountsSchema, required=True)
    url = ma.fields.String(required=True, metadata={"description": "Địa chỉ API của công văn"})


class DispatchPageSchema(ma.Schema):
    """A page of the list of dispatches."""

    items = ma.fields.List(ma.fields.Nested(DispatchSummarySchema), required=True)
    page = ma.fields.Integer(required=True)
    page_size = ma.fields.Integer(required=True)
    total = ma.fields.Integer(required=True)
    pages = ma.fields.Integer(required=True)


class DispatchListArgs(InputSchema):
    """Query parameters of the list."""

    page = ma.fields.Integer(load_default=1, validate=_range(1, 1_000_000), error_messages=_vi())
    page_size = ma.fields.Integer(
        load_default=listing.DEFAULT_PAGE_SIZE,
        validate=_range(1, listing.MAX_PAGE_SIZE),
        error_messages=_vi(),
    )
    status = ma.fields.String(
        validate=_one_of([s.value for s in DispatchStatus]), error_messages=_vi()
    )


class LetterSourceSchema(InputSchema):
    """A letter source as JSON (``meta``, ``body``, ``appendices``) and the recipient group."""

    meta = ma.fields.Dict(
        required=True,
        error_messages=_vi(),
        metadata={"description": "Thông tin công văn (như phần đầu YAML của tệp nguồn)"},
    )
    body = ma.fields.String(
        required=True, error_messages=_vi(), metadata={"description": "Nội dung (Markdown)"}
    )
    appendices = ma.fields.List(
        ma.fields.Dict(),
        load_default=list,
        error_messages=_vi(),
        metadata={"description": "Phụ lục: mỗi phụ lục có tiêu đề và nội dung"},
    )
    origin = ma.fields.String(
        load_only=True,
        metadata={"description": "Bỏ qua (có trong dạng JSON của nguồn; API đặt nguồn riêng)"},
    )
    group = ma.fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=50, error="Mã nhóm dài từ {min} đến {max} ký tự."),
        error_messages=_vi(),
        metadata={"description": "Mã nhóm nơi nhận", "example": offices.DEFAULT_GROUP_CODE},
    )


class IssueArgs(InputSchema):
    """When to issue (default: now); without an offset, Vietnam time."""

    at = ma.fields.String(
        load_default=None,
        allow_none=True,
        error_messages=_vi(),
        metadata={"description": "Thời điểm ban hành, ISO-8601", "example": "2021-11-15T09:00"},
    )


class DocumentSchema(ma.Schema):
    """An archived file of an issued dispatch."""

    kind = ma.fields.String(required=True, metadata={"example": "pdf"})
    filename = ma.fields.String(required=True)
    media_type = ma.fields.String(required=True)
    sha256 = ma.fields.String(required=True)
    size = ma.fields.Integer(required=True)


class ReportCountsSchema(ma.Schema):
    """The recipients of a dispatch, counted by where they stand."""

    total = ma.fields.Integer(required=True)
    sent = ma.fields.Integer(required=True)
    failed = ma.fields.Integer(required=True)
    opened = ma.fields.Integer(required=True)
    acknowledged = ma.fields.Integer(required=True)
    overdue = ma.fields.Integer(required=True)


class RecipientReportSchema(ma.Schema):
    """One recipient: its letter's delivery and its confirmation of receipt."""

    id = ma.fields.Integer(required=True)
    code = ma.fields.String(required=True, metadata={"description": "Mã tỉnh"})
    name = ma.fields.String(required=True)
    email = ma.fields.String(required=True)
    cc = ma.fields.List(ma.fields.String(), required=True)
    delivery = ma.fields.String(
        allow_none=True,
        metadata={"description": "queued, sent, retrying, failed, cancelled; null: chưa gửi"},
    )
    smtp_reply = ma.fields.String(allow_none=True)
    last_error = ma.fields.String(allow_none=True)
    sent_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    opened_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    acknowledged_at = ma.fields.String(
        allow_none=True, metadata={"description": "ISO-8601, giờ VN"}
    )
    acknowledged_by = ma.fields.String(allow_none=True)
    acknowledged_method = ma.fields.String(allow_none=True, metadata={"example": "link"})
    reminders = ma.fields.Integer(required=True, metadata={"description": "Số lần đã nhắc"})
    overdue = ma.fields.Boolean(required=True)


class StatusReportSchema(ma.Schema):
    """A dispatch and every recipient's delivery and receipt (as ``dispatch status --json``)."""

    id = ma.fields.Integer(required=True)
    status = ma.fields.String(
        required=True, validate=ma.validate.OneOf([s.value for s in DispatchStatus])
    )
    number = ma.fields.String(allow_none=True, metadata={"example": "05/THH-VP"})
    symbol = ma.fields.String(required=True, metadata={"example": "THH-VP"})
    subject = ma.fields.String(required=True)
    issued_on = ma.fields.String(allow_none=True, metadata={"example": "15/11/2021"})
    issued_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    deadline = ma.fields.String(allow_none=True, metadata={"example": "18/11/2021 17:00"})
    deadline_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    pdf_sha256 = ma.fields.String(allow_none=True)
    docx_sha256 = ma.fields.String(allow_none=True)
    documents = ma.fields.List(ma.fields.Nested(DocumentSchema), required=True)
    counts = ma.fields.Nested(ReportCountsSchema, required=True)
    recipients = ma.fields.List(ma.fields.Nested(RecipientReportSchema), required=True)


class OfficeSchema(ma.Schema):
    """An office in the directory of recipients."""

    id = ma.fields.Integer(required=True)
    code = ma.fields.String(required=True, metadata={"description": "Mã tỉnh", "example": "95"})
    name = ma.fields.String(required=True)
    province = ma.fields.String(required=True)
    province_kind = ma.fields.String(required=True)
    region = ma.fields.String(required=True)
    email = ma.fields.String(required=True)
    cc = ma.fields.List(ma.fields.String(), required=True)
    placeholder = ma.fields.Boolean(
        required=True, metadata={"description": "Địa chỉ thư là tạm (chưa phải địa chỉ thật)"}
    )
    agency_id = ma.fields.String(allow_none=True, metadata={"example": "000.00.00.H29"})
    valid_from = ma.fields.Date(allow_none=True)
    valid_to = ma.fields.Date(allow_none=True)
    groups = ma.fields.List(ma.fields.String(), required=True)


class DirectoryArgs(InputSchema):
    """Filters of the directory."""

    q = ma.fields.String(metadata={"description": "Tìm theo tên, tỉnh, mã, thư (không dấu)"})
    on = ma.fields.Date(
        error_messages=_vi(), metadata={"description": "Chỉ các đơn vị còn hiệu lực ngày này"}
    )
    group = ma.fields.String(metadata={"description": "Chỉ các đơn vị thuộc nhóm này"})


class DirectorySchema(ma.Schema):
    """The directory (filtered)."""

    items = ma.fields.List(ma.fields.Nested(OfficeSchema), required=True)
    total = ma.fields.Integer(required=True)


# --- The blueprint and its guards ------------------------------------------------------------

bp = ApiBlueprint(
    "api",
    __name__,
    url_prefix="/api",
    description="Công văn, trạng thái nhận và danh bạ nơi nhận.",
)
csrf.exempt(bp)


def _errors(*codes: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Document error responses (the shared ``ErrorSchema``) on an operation."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        for code in codes:
            view = bp.alt_response(
                code, schema=ErrorSchema, description=auth.ERROR_MESSAGES.get(code, "")
            )(view)
        return view

    return decorator


def _unauthorized(message: str, error: str | None = None) -> tuple[Response, int]:
    body, status = auth.error_response(401, message)
    challenge = 'Bearer realm="dispatch"'
    if error:
        challenge += f', error="{error}"'
    body.headers["WWW-Authenticate"] = challenge
    return body, status


@bp.before_request
def authenticate_token() -> Any:
    """Every API request carries a valid bearer token; cookies do not count here."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized("Thiếu mã truy cập: gửi tiêu đề 'Authorization: Bearer <mã>'.")
    with unit_of_work():  # keeps the note of when the token was last used
        user = api_tokens.user_for_token(token, clock.now())
    if user is None:
        return _unauthorized("Mã truy cập không hợp lệ hoặc đã bị thu hồi.", "invalid_token")
    g.api_user = user
    if request.method not in _READ_METHODS and user.role not in CHANGE_ROLES:
        # Before the body is parsed: a leader learns nothing about what a change would need.
        abort(403, message=LEADER_READ_ONLY)
    return None


@bp.after_request
def no_store(response: Response) -> Response:
    """API answers are per token and change often: never cache them."""
    response.headers["Cache-Control"] = "no-store"
    return response


def api_user() -> User:
    """The owner of the token of the current request."""
    return g.api_user


def _require_change() -> User:
    user = api_user()
    if user.role not in CHANGE_ROLES:
        abort(403, message=LEADER_READ_ONLY)
    return user


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """webargs' nested messages ({"json": {"meta": {"x": [...]}}}) as {"meta.x": [...]}."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            if not prefix and key in ("json", "query", "form", "querystring"):
                flat.update(_flatten(value, ""))
            else:
                flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or "_schema"] = messages
    else:
        flat[prefix or "_schema"] = [str(messages)]
    return flat


def handle_api_error(error: HTTPException) -> tuple[Response, int]:
    """Every error under /api as ``{"message", "code"}`` JSON (never an HTML page)."""
    code = error.code or 500
    data = getattr(error, "data", None) or {}
    extra: dict[str, Any] = {k: data[k] for k in ("field", "line") if k in data}
    if "errors" in data:
        extra["errors"] = data["errors"]
    elif "messages" in data:  # webargs: the request did not match its schema
        extra["errors"] = _flatten(data["messages"])
        if code == 400:
            data = {"message": "Nội dung yêu cầu không phải JSON hợp lệ."}
        elif "field" not in extra and extra["errors"]:
            extra["field"] = next(iter(extra["errors"]))
    body, status = auth.error_response(code, data.get("message"), **extra)
    allowed = getattr(error, "valid_methods", None)
    if allowed:
        body.headers["Allow"] = ", ".join(allowed)
    return body, status


# Code-specific handlers on the blueprint win over any the app has for the same codes.
for _code in (400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500):
    bp.register_error_handler(_code, handle_api_error)
bp.register_error_handler(HTTPException, handle_api_error)


def _unknown(rest: str = "") -> Any:
    """Any other address under /api: 404 (or 405 when the path exists for other methods)."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = sorted(
        method for method in _METHODS if _endpoint_for(adapter, method) not in (None, *_CATCH_ALL)
    )
    if allowed:
        body, status = auth.error_response(405)
        body.headers["Allow"] = ", ".join(allowed)
        return body, status
    return auth.error_response(404)


def _endpoint_for(adapter: Any, method: str) -> str | None:
    try:
        endpoint, _ = adapter.match(request.path, method=method)
    except HTTPException:
        return None
    return endpoint


# Flask's own add_url_rule: these catch-alls are not operations to document.
_CATCH_ALL = ("api.unknown", "api.unknown_root")
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
FlaskBlueprint.add_url_rule(bp, "", "unknown_root", _unknown, methods=_METHODS)
FlaskBlueprint.add_url_rule(bp, "/<path:rest>", "unknown", _unknown, methods=_METHODS)


# --- Dispatches -------------------------------------------------------------------------------


def _summary_dict(summary: listing.DispatchSummary) -> dict[str, Any]:
    data = summary.as_dict()
    data["url"] = url_for("api.get_dispatch", dispatch_id=summary.id)
    return data


@bp.route("/dispatches", methods=["GET"])
@bp.arguments(DispatchListArgs, location="query", as_kwargs=True)
@bp.response(200, DispatchPageSchema)
@_errors(401, 422)
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


_QUOTED_KEY = re.compile(r'"([A-Za-z_][A-Za-z0-9_.]*)"')
API_ORIGIN = "nguồn gửi qua API"


@bp.route("/dispatches", methods=["POST"])
@bp.arguments(LetterSourceSchema)
@bp.response(201, StatusReportSchema)
@_errors(401, 403, 422)
def create_dispatch(payload: dict[str, Any]) -> Any:
    """Create a draft from a letter source (JSON form) addressed to a recipient group."""
    user = _require_change()
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
@_errors(*READ_ERRORS)
def get_dispatch(dispatch_id: int) -> dict[str, Any]:
    """A dispatch and every recipient's delivery and receipt (as ``dispatch status --json``)."""
    return _report(dispatch_id)


@bp.route("/dispatches/<int:dispatch_id>/issue", methods=["POST"])
@bp.arguments(IssueArgs, required=False)
@bp.response(200, StatusReportSchema)
@_errors(*CHANGE_ERRORS)
def issue(payload: dict[str, Any], dispatch_id: int) -> dict[str, Any]:
    """Issue a draft: take its number, archive the letter and queue the e-mails (clerk, admin)."""
    user = _require_change()
    if db.session.get(Dispatch, dispatch_id) is None:
        abort(404, message=f"Không có công văn mã {dispatch_id}.")
    at = clock.now()
    if payload.get("at"):
        try:
            at = clock.parse_moment(payload["at"])
        except ValueError:
            abort(422, message="Thời điểm không hợp lệ, cần dạng ISO-8601.", field="at")
    try:
        issuing.issue_dispatch(dispatch_id, actor=user, at=at)
    except issuing.AlreadyIssued as exc:
        abort(409, message=str(exc))
    except issuing.IssueError as exc:
        abort(409, message=str(exc))
    except LetterSourceError as exc:
        abort(422, message=str(exc.message), **_source_error(exc))
    return _report(dispatch_id)


# --- Directory --------------------------------------------------------------------------------


def _office_dict(org: Any) -> dict[str, Any]:
    return {
        "id": org.id,
        "code": org.province_code,
        "name": org.name,
        "province": org.province_name,
        "province_kind": org.province_kind,
        "region": org.region,
        "email": org.email,
        "cc": list(org.cc or []),
        "placeholder": org.email_is_placeholder,
        "agency_id": org.agency_id,
        "valid_from": org.valid_from,
        "valid_to": org.valid_to,
        "groups": sorted(group.code for group in org.groups),
    }


@bp.route("/directory", methods=["GET"])
@bp.arguments(DirectoryArgs, location="query", as_kwargs=True)
@bp.response(200, DirectorySchema)
@_errors(401, 404, 422)
def get_directory(
    q: str | None = None, on: dt.date | None = None, group: str | None = None
) -> dict[str, Any]:
    """The offices of the directory: code, name, province, region, address, validity."""
    if group is not None:
        try:
            offices.get_group(group)
        except offices.DirectoryError as exc:
            abort(404, message=str(exc), field="group")
    found = offices.search(q or "", on=on, limit=10_000)
    if group is not None:
        found = [org for org in found if any(g_.code == group for g_ in org.groups)]
    return {"items": [_office_dict(org) for org in found], "total": len(found)}


# --- Wiring -----------------------------------------------------------------------------------


class DispatchApi(Api):
    """flask-smorest's Api with our error schema, and no app-wide error handler.

    flask-smorest would answer every HTTP error of the whole app as JSON; the API's errors are
    handled by its own blueprint instead, and the HTML pages keep theirs
    (``dispatch.accounts.auth``).
    """

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        return None


def init_app(app: Flask) -> None:
    """Configure flask-smorest, declare the bearer scheme and register the API blueprint."""
    for key, value in API_CONFIG.items():
        app.config.setdefault(key, value)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # Vietnamese stays readable
    api = DispatchApi(app)
    api.spec.components.security_scheme("bearerAuth", BEARER_SCHEME)
    api.register_blueprint(bp)
    app.extensions["dispatch_api"] = api
