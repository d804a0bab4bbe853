"""The API blueprint and what every operation shares: its settings, the bearer-token guard,
the documented errors and the JSON error handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Response, current_app, g, request
from flask_smorest import Blueprint as ApiBlueprint
from flask_smorest import abort
from werkzeug.exceptions import HTTPException

from dispatch import clock
from dispatch.accounts import api_tokens, auth
from dispatch.extensions import csrf
from dispatch.models import Role, TokenScope, User
from dispatch.transaction import unit_of_work
from dispatch.views.api.schemas import ErrorSchema

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
READ_TOKEN_ONLY = (
    "Mã truy cập này chỉ có quyền đọc (phạm vi read): chỉ dùng được cho yêu cầu GET. "
    "Muốn tạo hoặc ban hành công văn, hãy dùng mã có quyền ghi "
    "(dispatch tokens create EMAIL --scope write)."
)
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The error codes each kind of operation can answer, documented on every operation.
READ_ERRORS = (401, 404)
CHANGE_ERRORS = (401, 403, 404, 409, 422)


bp = ApiBlueprint(
    "api",
    __name__,
    url_prefix="/api",
    description="Công văn, trạng thái nhận và danh bạ nơi nhận.",
)
csrf.exempt(bp)


def documented_errors(*codes: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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
    try:
        with unit_of_work():  # keeps the note of when the token was last used
            found = api_tokens.token_for(token, clock.now())
    except api_tokens.TokenRefused as exc:
        return _unauthorized(str(exc), "invalid_token")
    user = found.user
    g.api_user = user
    if request.method not in _READ_METHODS:
        # Before the body is parsed: a leader or a read token learns nothing about what a
        # change would need.
        if user.role not in CHANGE_ROLES:
            abort(403, message=LEADER_READ_ONLY)
        if found.scope is not TokenScope.WRITE:
            abort(403, message=READ_TOKEN_ONLY)
    return None


@bp.after_request
def no_store(response: Response) -> Response:
    """API answers are per token and change often: never cache them."""
    response.headers["Cache-Control"] = "no-store"
    return response


def api_user() -> User:
    """The owner of the token of the current request."""
    return g.api_user


def require_change() -> User:
    """The token's owner if it may change data (clerk, admin); otherwise a 403."""
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
