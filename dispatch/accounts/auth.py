"""Who is signed in and what they may do: Flask-Login set-up, role checks, password sign-in with
throttling, and the error pages (or JSON under ``/api``) for 400/401/403/404/429.

Sign-in is a plain function (``authenticate``) that the login view calls; attempts are stored in
``login_attempt`` so that throttling holds across web workers. Error messages never say which of
the e-mail or the password was wrong.
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, jsonify, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import delete, func, select
from werkzeug.exceptions import HTTPException

from dispatch import audit
from dispatch.accounts import users
from dispatch.extensions import db, login_manager
from dispatch.models import LoginAttempt, Role, User

# After MAX_FAILURES failed attempts for one e-mail or one IP address within WINDOW, further
# attempts are refused until the oldest of those failures is older than WINDOW.
MAX_FAILURES = 5
WINDOW = dt.timedelta(minutes=15)
# Attempts older than this are deleted when new ones are written; they no longer count.
KEEP_ATTEMPTS = dt.timedelta(days=1)

LOGIN_MESSAGE = "Vui lòng đăng nhập để tiếp tục."
BAD_CREDENTIALS_MESSAGE = "Thư điện tử hoặc mật khẩu không đúng."

# Messages for the error pages (and the JSON ``message`` under /api), by status code.
ERROR_MESSAGES = {
    400: "Yêu cầu không hợp lệ.",
    401: "Bạn cần đăng nhập để tiếp tục.",
    403: "Tài khoản của bạn không có quyền thực hiện thao tác này.",
    404: "Không tìm thấy trang hoặc dữ liệu được yêu cầu.",
    405: "Phương thức không được hỗ trợ cho địa chỉ này.",
    409: "Thao tác xung đột với trạng thái hiện tại của dữ liệu.",
    413: "Dữ liệu gửi lên quá lớn.",
    415: "Định dạng dữ liệu không được hỗ trợ.",
    422: "Dữ liệu không hợp lệ.",
    429: "Quá nhiều yêu cầu. Vui lòng thử lại sau.",
    500: "Lỗi máy chủ. Vui lòng thử lại sau.",
}
ERROR_TITLES = {
    400: "Yêu cầu không hợp lệ",
    401: "Cần đăng nhập",
    403: "Không có quyền truy cập",
    404: "Không tìm thấy",
    405: "Phương thức không được hỗ trợ",
    409: "Xung đột dữ liệu",
    413: "Dữ liệu quá lớn",
    415: "Định dạng không được hỗ trợ",
    422: "Dữ liệu không hợp lệ",
    429: "Tạm thời bị từ chối",
    500: "Lỗi máy chủ",
}
CSRF_MESSAGE = (
    "Biểu mẫu đã hết hạn hoặc thiếu mã bảo vệ. Vui lòng tải lại trang rồi gửi lại biểu mẫu."
)

F = TypeVar("F", bound=Callable[..., Any])


def init_app(app: Flask) -> None:
    """Configure Flask-Login and the error handlers of the signed-in pages."""
    login_manager.login_view = "auth.login"
    login_manager.login_message = LOGIN_MESSAGE
    login_manager.login_message_category = "info"
    login_manager.user_loader(load_user)
    app.context_processor(lambda: {"role_labels": users.ROLE_LABELS})
    app.before_request(forget_request_state)
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(HTTPException, handle_http_error)


# What Flask-Login and Flask-WTF cache in ``g`` for one request: the user and the CSRF token.
_REQUEST_STATE = ("_login_user", "csrf_token", "csrf_valid")


def forget_request_state() -> None:
    """Drop the per-request user and CSRF caches from ``g``.

    ``g`` belongs to the app context, which a request reuses when one is already pushed (the
    test client inside a pushed context, a CLI runner): without this, one request's user or
    CSRF token would leak into the next. With a fresh context per request it does nothing.
    """
    for name in _REQUEST_STATE:
        g.pop(name, None)


def load_user(user_id: str) -> User | None:
    """Flask-Login's user loader: the active user with this id, or None (signs the session out)."""
    try:
        key = int(user_id)
    except (TypeError, ValueError):
        return None
    user = db.session.get(User, key)
    if user is None or not user.active:
        return None
    return user


def normalise_email(email: str) -> str:
    """The form in which e-mail addresses are compared: NFC, trimmed, lower case."""
    return users.normalise_email(unicodedata.normalize("NFC", email))


def role_required(*roles: Role) -> Callable[[F], F]:
    """Let a view run only for a signed-in, active user holding one of ``roles`` (else 401/403)."""
    if not roles:
        raise ValueError("role_required needs at least one role")

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        wrapped.allowed_roles = frozenset(roles)  # type: ignore[attr-defined]  # for tests, docs
        return wrapped  # type: ignore[return-value]

    return decorator


def can_change(user: User) -> bool:
    """Whether the user may change dispatches (clerks and admins; leaders only read)."""
    return user.role in (Role.CLERK, Role.ADMIN)


def is_safe_next(target: str | None) -> bool:
    """Whether a ``next`` value is a local path on this site (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return False
    # Browsers treat "\" as "/" and ignore tabs and newlines: "/\evil.example" is off-site.
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


# --- Sign-in -------------------------------------------------------------------------------


class LoginThrottled(Exception):
    """Too many failed attempts for this e-mail or address; try again after ``retry_after``."""

    def __init__(self, retry_after: dt.timedelta) -> None:
        super().__init__("too many failed sign-in attempts")
        self.retry_after = retry_after

    @property
    def minutes(self) -> int:
        """Whole minutes to wait, at least one."""
        return max(1, math.ceil(self.retry_after.total_seconds() / 60))

    @property
    def message(self) -> str:
        """The message shown to the person signing in."""
        return (
            "Bạn đã nhập sai quá nhiều lần. Để bảo vệ tài khoản, việc đăng nhập tạm thời bị khoá; "
            f"vui lòng thử lại sau {self.minutes} phút."
        )


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a sign-in attempt: the user, or None when it failed."""

    user: User | None

    @property
    def ok(self) -> bool:
        """Whether the attempt succeeded."""
        return self.user is not None


def _throttle_wait(column: Any, value: str, at: dt.datetime) -> dt.timedelta | None:
    """How long attempts keyed by ``column == value`` must wait, or None if they may go on."""
    since = at - WINDOW
    if column is LoginAttempt.email:
        # A success for this e-mail wipes its slate: earlier failures were the user's typos.
        last_success = db.session.execute(
            select(func.max(LoginAttempt.at)).where(
                LoginAttempt.email == value, LoginAttempt.succeeded.is_(True)
            )
        ).scalar_one_or_none()
        if last_success is not None and last_success > since:
            since = last_success
    failures = (
        db.session.execute(
            select(LoginAttempt.at)
            .where(column == value, LoginAttempt.succeeded.is_(False), LoginAttempt.at > since)
            .order_by(LoginAttempt.at.desc())
            .limit(MAX_FAILURES)
        )
        .scalars()
        .all()
    )
    if len(failures) < MAX_FAILURES:
        return None
    # Refused until the oldest of the last MAX_FAILURES failures leaves the window.
    return max(failures[-1] + WINDOW - at, dt.timedelta(seconds=1))


def check_throttle(email: str, ip: str | None, at: dt.datetime) -> None:
    """Raise ``LoginThrottled`` when the e-mail or the address has failed too often lately."""
    waits = [_throttle_wait(LoginAttempt.email, normalise_email(email), at)]
    if ip:
        waits.append(_throttle_wait(LoginAttempt.ip, ip, at))
    longest = max((w for w in waits if w is not None), default=None)
    if longest is not None:
        raise LoginThrottled(longest)


def authenticate(email: str, password: str, *, ip: str | None, at: dt.datetime) -> LoginResult:
    """Check an e-mail and password, record the attempt and audit it; the caller commits.

    Raises ``LoginThrottled`` (after auditing "user.login_throttled") when too many attempts
    failed lately; a correct password is refused too while the throttle holds.
    """
    email = normalise_email(email)[:254]
    try:
        check_throttle(email, ip, at)
    except LoginThrottled as exc:
        audit.record(
            "user.login_throttled",
            actor=email or "anonymous",
            at=at,
            object_type="user",
            details={"ip": ip, "retry_after_seconds": int(exc.retry_after.total_seconds())},
        )
        raise

    user = users.find_user(email) if email else None
    reason = None
    if user is None or not user.password_hash:
        users.verify_password(None, password)  # same work as a real check: no timing oracle
        reason = "unknown_user" if user is None else "no_password"
    elif not users.verify_password(user.password_hash, password):
        reason = "bad_password"
    elif not user.active:
        reason = "inactive"

    _prune_attempts(at)
    db.session.add(LoginAttempt(at=at, email=email, ip=ip, succeeded=reason is None))
    if reason is not None:
        audit.record(
            "user.login_failed",
            actor=email or "anonymous",
            at=at,
            object_type="user",
            object_id=None if user is None else user.id,
            details={"ip": ip, "reason": reason},
        )
        return LoginResult(None)

    assert user is not None and user.password_hash is not None
    if users.password_needs_rehash(user.password_hash):
        # Hashing parameters were raised since this hash was made: upgrade it now.
        user.password_hash = users.hash_password(password)
    audit.record(
        "user.login",
        actor=user.email,
        at=at,
        object_type="user",
        object_id=user.id,
        details={"ip": ip},
    )
    return LoginResult(user)


def record_logout(user: User, *, ip: str | None, at: dt.datetime) -> None:
    """Audit a sign-out; the caller commits."""
    audit.record(
        "user.logout",
        actor=user.email,
        at=at,
        object_type="user",
        object_id=user.id,
        details={"ip": ip},
    )


def _prune_attempts(at: dt.datetime) -> None:
    """Delete attempts too old to count, so the table stays small."""
    db.session.execute(delete(LoginAttempt).where(LoginAttempt.at < at - KEEP_ATTEMPTS))


# --- Error pages ---------------------------------------------------------------------------


def is_api_request() -> bool:
    """Whether the current request is for the JSON API (errors answered as JSON, not HTML)."""
    return request.path == "/api" or request.path.startswith("/api/")


def error_payload(code: int, message: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON body of an API error: a Vietnamese ``message`` and the HTTP status ``code``."""
    return {"message": message or ERROR_MESSAGES.get(code, "Đã xảy ra lỗi."), "code": code, **extra}


def error_response(code: int, message: str | None = None, **extra: Any) -> tuple[Response, int]:
    """A JSON error response for the API."""
    return jsonify(error_payload(code, message, **extra)), code


def render_error(code: int, message: str | None = None) -> tuple[str, int]:
    """A Vietnamese error page."""
    return (
        render_template(
            "auth/error.html",
            code=code,
            title=ERROR_TITLES.get(code, "Đã xảy ra lỗi"),
            message=message or ERROR_MESSAGES.get(code, "Đã xảy ra lỗi."),
        ),
        code,
    )


def handle_csrf_error(error: CSRFError) -> Any:
    """A form posted without a valid CSRF token: 400 with a Vietnamese explanation."""
    if is_api_request():
        return error_response(400, CSRF_MESSAGE)
    return render_error(400, CSRF_MESSAGE)


def handle_http_error(error: HTTPException) -> Any:
    """Answer HTTP errors as JSON under /api and as Vietnamese pages elsewhere.

    Blueprints may register their own handlers for particular codes; those take precedence.
    """
    code = error.code or 500
    if is_api_request():
        body, status = error_response(code)
        allowed = getattr(error, "valid_methods", None)  # MethodNotAllowed says what is allowed
        if allowed:
            body.headers["Allow"] = ", ".join(allowed)
        return body, status
    if code in ERROR_MESSAGES:
        return render_error(code)
    return error
