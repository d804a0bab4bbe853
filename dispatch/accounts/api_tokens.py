"""Bearer tokens for the JSON API: created for a user, shown once, stored only as a SHA-256.

A token is 256 random bits in URL-safe base64 (43 characters). The database keeps its SHA-256,
so a leaked database cannot be replayed against the API; a lost token is revoked and replaced.

Every token has a scope and an expiry, both chosen when it is made and audited with it. A
"read" token may only GET; a "write" token may also change data, as far as its owner's role
allows (a leader's never can). A token lasts ``DEFAULT_VALIDITY`` (90 days) unless given a
life of 1 to ``MAX_VALIDITY_DAYS`` days: a forgotten token stops working by itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from dispatch import audit
from dispatch.accounts import users
from dispatch.clock import format_local
from dispatch.extensions import db
from dispatch.models import ApiToken, TokenScope, User

TOKEN_BYTES = 32  # 256 bits
# ``last_used_at`` is written at most this often, so reads through the API stay reads.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
DEFAULT_VALIDITY_DAYS = 90
DEFAULT_VALIDITY = dt.timedelta(days=DEFAULT_VALIDITY_DAYS)
MAX_VALIDITY_DAYS = 365
SCOPE_LABELS = {TokenScope.READ: "chỉ đọc", TokenScope.WRITE: "đọc và ghi"}


class TokenError(ValueError):
    """A token cannot be created or revoked (unknown or inactive user, unknown token, a wrong
    scope or life)."""


class TokenRefused(Exception):
    """A request's token opens nothing; the message (Vietnamese) says why."""


@dataclass(frozen=True)
class NewToken:
    """A freshly created token: its row and the plain token, which is never stored."""

    token: ApiToken
    plain: str


def hash_token(plain: str) -> str:
    """The SHA-256 (hex) under which a token is stored and looked up."""
    return hashlib.sha256(plain.encode()).hexdigest()


def _user_by_email(email: str) -> User:
    try:
        return users.get_user(email)
    except users.UserError as exc:
        raise TokenError(str(exc)) from exc


def _scope(value: TokenScope | str) -> TokenScope:
    try:
        return TokenScope(value)
    except ValueError as exc:
        allowed = ", ".join(member.value for member in TokenScope)
        raise TokenError(
            f"Phạm vi {value!r} không hợp lệ; chọn một trong: {allowed} "
            "(read: chỉ đọc, write: đọc và ghi)."
        ) from exc


def create_token(
    email: str,
    *,
    scope: TokenScope | str,
    actor: str,
    at: dt.datetime,
    valid_for: dt.timedelta = DEFAULT_VALIDITY,
) -> NewToken:
    """Create a token for the active user with this e-mail, with its scope and a life of
    ``valid_for`` from ``at`` (1 to ``MAX_VALIDITY_DAYS`` days), and audit it; the caller
    commits."""
    scope = _scope(scope)
    if not dt.timedelta(days=1) <= valid_for <= dt.timedelta(days=MAX_VALIDITY_DAYS):
        raise TokenError(
            f"Thời hạn của mã truy cập phải từ 1 đến {MAX_VALIDITY_DAYS} ngày "
            f"(mặc định {DEFAULT_VALIDITY_DAYS} ngày)."
        )
    user = _user_by_email(email)
    if not user.active:
        raise TokenError(f"Tài khoản {user.email} đã bị khoá, không thể tạo mã truy cập.")
    plain = secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken(
        user=user,
        token_hash=hash_token(plain),
        scope=scope,
        created_at=at,
        expires_at=at + valid_for,
    )
    db.session.add(token)
    db.session.flush()
    audit.record(
        "api_token.created",
        actor=actor,
        at=at,
        object_type="api_token",
        object_id=token.id,
        details={
            "user": user.email,
            "role": str(user.role),
            "scope": scope.value,
            "expires_at": token.expires_at.isoformat(),
        },
    )
    return NewToken(token, plain)


def is_expired(token: ApiToken, at: dt.datetime) -> bool:
    """Whether the token's life is over at ``at``."""
    return at >= token.expires_at


def list_tokens(email: str | None = None) -> list[ApiToken]:
    """Tokens, newest first, optionally only those of one user."""
    query = select(ApiToken).join(ApiToken.user).order_by(ApiToken.id.desc())
    if email is not None:
        query = query.where(User.id == _user_by_email(email).id)
    return list(db.session.execute(query).scalars())


def revoke_tokens(
    *,
    actor: str,
    at: dt.datetime,
    email: str | None = None,
    token_id: int | None = None,
    plain: str | None = None,
) -> list[ApiToken]:
    """Revoke one token (by id or by its plain value) or all of a user's; the caller commits.

    Returns the tokens revoked now (already revoked ones are left as they were).
    """
    if sum(x is not None for x in (email, token_id, plain)) != 1:
        raise TokenError("Cần chỉ rõ đúng một trong: thư điện tử, số hiệu mã, hoặc chính mã.")
    query = select(ApiToken).where(ApiToken.revoked_at.is_(None))
    if email is not None:
        query = query.where(ApiToken.user_id == _user_by_email(email).id)
    elif token_id is not None:
        if db.session.get(ApiToken, token_id) is None:
            raise TokenError(f"Không có mã truy cập số {token_id}.")
        query = query.where(ApiToken.id == token_id)
    else:
        assert plain is not None
        by_value = ApiToken.token_hash == hash_token(plain)
        if db.session.execute(select(ApiToken.id).where(by_value)).first() is None:
            raise TokenError("Không có mã truy cập này.")
        query = query.where(by_value)
    revoked = list(db.session.execute(query.order_by(ApiToken.id)).scalars())
    for token in revoked:
        token.revoked_at = at
        audit.record(
            "api_token.revoked",
            actor=actor,
            at=at,
            object_type="api_token",
            object_id=token.id,
            details={"user": token.user.email},
        )
    return revoked


INVALID = "Mã truy cập không hợp lệ hoặc đã bị thu hồi."


def token_for(plain: str, at: dt.datetime) -> ApiToken:
    """The unrevoked, unexpired token of an active user with this value; notes its use.

    ``TokenRefused`` otherwise: an expired token is told so (its holder knows the token, so
    the date leaks nothing), anything else gets one message. The caller commits (the note of
    use is worth keeping even when the request only reads).
    """
    if not plain or len(plain) > 200:
        raise TokenRefused(INVALID)
    token = db.session.execute(
        select(ApiToken).where(ApiToken.token_hash == hash_token(plain))
    ).scalar_one_or_none()
    if token is None or token.revoked_at is not None or not token.user.active:
        raise TokenRefused(INVALID)
    if is_expired(token, at):
        raise TokenRefused(
            f"Mã truy cập đã hết hạn lúc {format_local(token.expires_at)}; "
            "hãy đề nghị quản trị tạo mã mới (dispatch tokens create)."
        )
    if token.last_used_at is None or at - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = at
    return token
