"""Bearer tokens for the JSON API: created for a user, shown once, stored only as a SHA-256.

A token is 256 random bits in URL-safe base64 (43 characters). The database keeps its SHA-256,
so a leaked database cannot be replayed against the API; a lost token is revoked and replaced.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from dispatch import audit
from dispatch.accounts import users
from dispatch.extensions import db
from dispatch.models import ApiToken, User

TOKEN_BYTES = 32  # 256 bits
# ``last_used_at`` is written at most this often, so reads through the API stay reads.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class TokenError(ValueError):
    """A token cannot be created or revoked (unknown or inactive user, unknown token)."""


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


def create_token(email: str, *, actor: str, at: dt.datetime) -> NewToken:
    """Create a token for the active user with this e-mail and audit it; the caller commits."""
    user = _user_by_email(email)
    if not user.active:
        raise TokenError(f"Tài khoản {user.email} đã bị khoá, không thể tạo mã truy cập.")
    plain = secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken(user=user, token_hash=hash_token(plain), created_at=at)
    db.session.add(token)
    db.session.flush()
    audit.record(
        "api_token.created",
        actor=actor,
        at=at,
        object_type="api_token",
        object_id=token.id,
        details={"user": user.email, "role": str(user.role)},
    )
    return NewToken(token, plain)


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


def user_for_token(plain: str, at: dt.datetime) -> User | None:
    """The active user owning this unrevoked token, or None; notes when it was last used.

    The caller commits (the note of use is worth keeping even when the request only reads).
    """
    if not plain or len(plain) > 200:
        return None
    token = db.session.execute(
        select(ApiToken).where(ApiToken.token_hash == hash_token(plain))
    ).scalar_one_or_none()
    if token is None or token.revoked_at is not None or not token.user.active:
        return None
    if token.last_used_at is None or at - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = at
    return token.user
