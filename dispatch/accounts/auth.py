"""Who is signed in and what they may do: Flask-Login set-up, role checks, password sign-in with
throttling, and the error pages (or JSON under ``/api``) for 400/401/403/404/429.

Sign-in is a plain function (``authenticate``) that the login view calls. Sessions live on the
server (``dispatch.accounts.sessions``): the user loader accepts a cookie only while the session
it names is open, so signing out or an admin's change ends it for good. Error messages never say
which of the e-mail or the password was wrong.

Throttling counts failed attempts in ``login_throttle`` under three keys: the account and
address together, the account alone and the address alone. Each attempt is charged before the
password is checked, by a compare-and-set update, so that simultaneous attempts are counted one
by one; a success refunds the charge. Past a few free failures every key asks for a growing
delay, never a hard lock:

- the pair (someone mistyping, or guessing from one place) waits 1 s, 2 s, 4 s … up to 15 min;
- the account (guesses spread over many addresses) makes addresses that never signed in to it
  wait up to one minute; addresses it was used from before are not held up;
- the address (one source trying many accounts, or many people behind one NAT) waits up to one
  minute for accounts it never signed in to.
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

from flask import Flask, Response, abort, current_app, g, jsonify, render_template, request
from flask import session as cookie_session
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user, logout_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from dispatch import audit, clock
from dispatch.accounts import sessions, users
from dispatch.extensions import db, login_manager
from dispatch.models import LoginAttempt, LoginThrottle, Role, User

# The cookie's key of the server-side session (see ``dispatch.accounts.sessions``).
SESSION_KEY = "session_key"


@dataclass(frozen=True)
class ThrottleRule:
    """Failures allowed free under one kind of key, then delays doubling from 1 s up to ``cap``."""

    prefix: str
    free: int
    cap: dt.timedelta

    def delay(self, failures: int) -> dt.timedelta:
        """The wait asked for after ``failures`` failures in a row."""
        if failures <= self.free:
            return dt.timedelta(0)
        seconds = 2 ** min(failures - self.free - 1, 20)
        return min(dt.timedelta(seconds=seconds), self.cap)


PAIR = ThrottleRule("pair", free=3, cap=dt.timedelta(minutes=15))
ACCOUNT = ThrottleRule("account", free=10, cap=dt.timedelta(minutes=1))
SOURCE = ThrottleRule("source", free=20, cap=dt.timedelta(minutes=1))
# Failures older than this are forgotten: the count starts again from zero.
WINDOW = dt.timedelta(minutes=15)
# A source that signed in to an account within this time is "known" to that account.
KNOWN_SOURCE = dt.timedelta(days=90)
# Failed attempts are kept a day (for the record); successes as long as they make a source known.
KEEP_FAILED = dt.timedelta(days=1)

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


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed cookie, skipping its signer where there is no cookie to read or write.

    Flask builds the signer (a key derivation included) for every request, with or without a
    cookie, and reads seven cookie settings before finding an empty session has nothing to save.
    The recipients' pages use no session at all: those requests now cost neither.
    """

    def open_session(self, app: Flask, request: Any) -> Any:
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if not session and not session.modified:
            if session.accessed:
                response.vary.add("Cookie")
            return
        super().save_session(app, session, response)


def init_app(app: Flask) -> None:
    """Configure Flask-Login and the error handlers of the signed-in pages."""
    app.session_interface = CookieSessions()
    login_manager.login_view = "auth.login"
    login_manager.login_message = LOGIN_MESSAGE
    login_manager.login_message_category = "info"
    login_manager.user_loader(load_user)
    app.context_processor(lambda: {"role_labels": users.ROLE_LABELS})
    app.before_request(forget_request_state)
    app.before_request(keep_session)
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
    """Flask-Login's user loader: the active user whose server-side session the cookie names.

    None (the request is treated as signed out) when the user is gone or inactive, or the session
    has ended or lapsed. The session found is kept in ``g.user_session`` for ``keep_session``.
    """
    try:
        key = int(user_id)
    except (TypeError, ValueError):
        return None
    user = db.session.get(User, key)
    if user is None or not user.active:
        return None
    record = sessions.find_live(cookie_session.get(SESSION_KEY), user.id, at=clock.now())
    if record is None:
        return None
    g.user_session = record
    return user


def keep_session() -> None:
    """Before each request: drop a cookie whose session is over, and note a live one's use.

    The note is written at most once a minute and in its own small transaction, before the view
    runs; if it cannot be written (a database that refuses writes) the request goes on.
    """
    if request.endpoint == "static" or "_user_id" not in cookie_session:
        return
    if not current_user.is_authenticated:
        logout_user()
        cookie_session.clear()
        return
    record = g.get("user_session")
    now = clock.now()
    if record is None or not sessions.needs_touch(record, now):
        return
    try:
        sessions.touch(record, now)
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        current_app.logger.warning("could not note the use of session %s", record.id)


def start_session(user: User, *, at: dt.datetime) -> None:
    """Open a server-side session for ``user`` and name it in the cookie; the caller commits."""
    cookie_session[SESSION_KEY] = sessions.start(
        user, ip=request.remote_addr, user_agent=request.user_agent.string, at=at
    )


def end_session(reason: str, *, at: dt.datetime) -> None:
    """End the session the cookie names; the caller commits."""
    sessions.end(cookie_session.get(SESSION_KEY), reason=reason, at=at)


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
    """Too many recent failures under one of the attempt's keys; try again after ``retry_after``."""

    def __init__(self, retry_after: dt.timedelta) -> None:
        super().__init__("too many failed sign-in attempts")
        self.retry_after = retry_after

    @property
    def minutes(self) -> int:
        """Whole minutes to wait, at least one."""
        return max(1, math.ceil(self.retry_after.total_seconds() / 60))

    @property
    def seconds(self) -> int:
        """Whole seconds to wait, at least one (for ``Retry-After``)."""
        return max(1, math.ceil(self.retry_after.total_seconds()))

    @property
    def wait_text(self) -> str:
        """The wait in words: seconds under a minute, else whole minutes."""
        return f"{self.seconds} giây" if self.seconds < 60 else f"{self.minutes} phút"

    @property
    def message(self) -> str:
        """The message shown to the person signing in."""
        return (
            "Đã có nhiều lần đăng nhập sai. Để bảo vệ tài khoản, vui lòng chờ "
            f"{self.wait_text} rồi thử lại."
        )


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a sign-in attempt: the user, or None when it failed."""

    user: User | None

    @property
    def ok(self) -> bool:
        """Whether the attempt succeeded."""
        return self.user is not None


def _throttle_keys(email: str, ip: str | None, known: bool) -> list[tuple[ThrottleRule, str]]:
    """The keys an attempt is counted under (the account-wide ones skip a known source)."""
    source = ip or "-"
    keys = [] if known else [(SOURCE, f"source:{source}"), (ACCOUNT, f"account:{email}")]
    return [*keys, (PAIR, f"pair:{email}|{source}")]


def _is_known_source(email: str, ip: str | None, at: dt.datetime) -> bool:
    """Whether someone signed in to this account from this address lately."""
    if not ip:
        return False
    found = db.session.execute(
        select(LoginAttempt.id)
        .where(
            LoginAttempt.email == email,
            LoginAttempt.ip == ip,
            LoginAttempt.succeeded.is_(True),
            LoginAttempt.at > at - KNOWN_SOURCE,
        )
        .limit(1)
    ).first()
    return found is not None


def _charge(rule: ThrottleRule, key: str, at: dt.datetime) -> dt.timedelta | None:
    """Count one more attempt under ``key``, unless it must wait: then how long.

    A compare-and-set on the row's failure count: of two simultaneous attempts that read the
    same count, only one update matches; the other reads again and sees the new count (and,
    past the free failures, the delay it set).
    """
    for _ in range(20):
        row = db.session.execute(
            select(
                LoginThrottle.failures,
                LoginThrottle.last_failure_at,
                LoginThrottle.next_allowed_at,
            ).where(LoginThrottle.key == key)
        ).first()
        if row is None:
            try:
                with db.session.begin_nested():
                    db.session.execute(
                        insert(LoginThrottle).values(
                            key=key,
                            failures=1,
                            last_failure_at=at,
                            next_allowed_at=at + rule.delay(1),
                        )
                    )
            except IntegrityError:
                continue  # another attempt wrote the row first: count on top of it
            return None
        failures, last_failure_at, next_allowed_at = row
        if next_allowed_at > at:
            return next_allowed_at - at
        counted = 0 if at - last_failure_at > WINDOW else failures
        changed = db.session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key, LoginThrottle.failures == failures)
            .values(
                failures=counted + 1,
                last_failure_at=at,
                next_allowed_at=at + rule.delay(counted + 1),
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed:
            return None
    return dt.timedelta(seconds=1)  # the row kept changing under us: ask to try again shortly


def _uncharge(key: str) -> None:
    """Take back one charge (the attempt was not a failure after all)."""
    db.session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == key, LoginThrottle.failures > 0)
        .values(failures=LoginThrottle.failures - 1)
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        delete(LoginThrottle).where(LoginThrottle.key == key, LoginThrottle.failures <= 0)
    )


def _refund(rule: ThrottleRule, key: str) -> None:
    """Undo a charge after a correct password: the pair and account start again; the address
    keeps its other failures."""
    if rule is SOURCE:
        _uncharge(key)
    else:
        db.session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))


def authenticate(email: str, password: str, *, ip: str | None, at: dt.datetime) -> LoginResult:
    """Check an e-mail and password, record the attempt and audit it; the caller commits.

    Raises ``LoginThrottled`` (after auditing "user.login_throttled") when the attempt must wait;
    the password is then not checked at all.
    """
    email = normalise_email(email)[:254]
    # A write first: on SQLite it takes the database's write lock now (BEGIN IMMEDIATE
    # semantics), so simultaneous attempts queue instead of failing to upgrade a read.
    _prune_attempts(at)
    keys = _throttle_keys(email, ip, known=_is_known_source(email, ip, at))
    charged: list[tuple[ThrottleRule, str]] = []
    for rule, key in keys:
        wait = _charge(rule, key, at)
        if wait is not None:
            for _, done_key in charged:
                _uncharge(done_key)  # the password is not checked: not a failure either
            audit.record(
                "user.login_throttled",
                actor=email or "anonymous",
                at=at,
                object_type="user",
                details={
                    "ip": ip,
                    "rule": rule.prefix,
                    "retry_after_seconds": math.ceil(wait.total_seconds()),
                },
            )
            raise LoginThrottled(wait)
        charged.append((rule, key))

    user = users.find_user(email) if email else None
    reason = None
    if user is None or not user.password_hash:
        users.verify_password(None, password)  # same work as a real check: no timing oracle
        reason = "unknown_user" if user is None else "no_password"
    elif not users.verify_password(user.password_hash, password):
        reason = "bad_password"
    elif not user.active:
        reason = "inactive"

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

    for rule, key in charged:
        _refund(rule, key)
    if not any(rule is ACCOUNT for rule, _ in charged):
        _refund(ACCOUNT, f"account:{email}")  # the owner is in: the account count starts again
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
    """Delete attempts too old to count, so the tables stay small."""
    db.session.execute(
        delete(LoginAttempt).where(
            LoginAttempt.at < at - KEEP_FAILED, LoginAttempt.succeeded.is_(False)
        )
    )
    db.session.execute(delete(LoginAttempt).where(LoginAttempt.at < at - KNOWN_SOURCE))
    db.session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.last_failure_at < at - WINDOW, LoginThrottle.next_allowed_at < at
        )
    )


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
