"""Signed-in sessions, kept on the server.

The browser's session cookie holds only a random key; the server keeps its SHA-256 with the user,
when it was last used and whether it has ended. A copied cookie is worth nothing once its session
has ended: on sign-out, when an admin changes the user's role or password or deactivates them,
when the user changes their own password, and after ``idle`` without a request (the lapse is
derived from ``last_seen_at``: nothing is written when it happens).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from flask import current_app
from sqlalchemy import select, update

from dispatch.extensions import db
from dispatch.models import User, UserSession

# How often ``last_seen_at`` is written: often enough for the idle limit, not on every request.
TOUCH_EVERY = dt.timedelta(minutes=1)
DEFAULT_IDLE_MINUTES = 8 * 60

# Why a session ended, as stored in ``end_reason``.
LOGOUT = "logout"
PASSWORD_CHANGED = "password_changed"
PASSWORD_SET = "password_set"
ROLE_CHANGED = "role_changed"
DEACTIVATED = "deactivated"
ENDED_BY_ADMIN = "ended_by_admin"


def idle_limit() -> dt.timedelta:
    """How long a session may go unused before it lapses (``DISPATCH_SESSION_IDLE_MINUTES``)."""
    minutes = int(current_app.config.get("DISPATCH_SESSION_IDLE_MINUTES", DEFAULT_IDLE_MINUTES))
    return dt.timedelta(minutes=minutes)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def start(user: User, *, ip: str | None, user_agent: str, at: dt.datetime) -> str:
    """Open a session for ``user``; returns the key for the cookie. The caller commits."""
    key = secrets.token_urlsafe(32)
    db.session.add(
        UserSession(
            user_id=user.id,
            key_hash=_hash(key),
            created_at=at,
            last_seen_at=at,
            ip=ip,
            user_agent=(user_agent or "")[:200],
        )
    )
    db.session.flush()
    return key


def find_live(key: str | None, user_id: int, *, at: dt.datetime) -> UserSession | None:
    """The open, recently used session of ``user_id`` with this key, or None."""
    if not key or not isinstance(key, str) or len(key) > 100:
        return None
    record = db.session.execute(
        select(UserSession).where(UserSession.key_hash == _hash(key))
    ).scalar_one_or_none()
    if record is None or record.user_id != user_id or record.ended_at is not None:
        return None
    if at - record.last_seen_at >= idle_limit():
        return None
    return record


def needs_touch(record: UserSession, at: dt.datetime) -> bool:
    """Whether ``last_seen_at`` is old enough to be written again."""
    return at - record.last_seen_at >= TOUCH_EVERY


def touch(record: UserSession, at: dt.datetime) -> None:
    """Note that the session was used at ``at``; the caller commits."""
    record.last_seen_at = at


def end(key: str | None, *, reason: str, at: dt.datetime) -> bool:
    """End the session with this key (if open); the caller commits."""
    if not key or not isinstance(key, str):
        return False
    result = db.session.execute(
        update(UserSession)
        .where(UserSession.key_hash == _hash(key), UserSession.ended_at.is_(None))
        .values(ended_at=at, end_reason=reason)
    )
    return result.rowcount > 0


def end_all(user: User, *, reason: str, at: dt.datetime) -> int:
    """End every open session of ``user``; how many there were. The caller commits."""
    result = db.session.execute(
        update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
        .values(ended_at=at, end_reason=reason)
    )
    return result.rowcount


def open_count(user: User, *, at: dt.datetime) -> int:
    """How many sessions of ``user`` are open and not idle past the limit."""
    since = at - idle_limit()
    return len(
        db.session.execute(
            select(UserSession.id).where(
                UserSession.user_id == user.id,
                UserSession.ended_at.is_(None),
                UserSession.last_seen_at > since,
            )
        ).all()
    )


def last_sign_in(user: User) -> dt.datetime | None:
    """When ``user`` last signed in (the newest session's start), or None."""
    return db.session.execute(
        select(UserSession.created_at)
        .where(UserSession.user_id == user.id)
        .order_by(UserSession.created_at.desc())
        .limit(1)
    ).scalar_one_or_none()
