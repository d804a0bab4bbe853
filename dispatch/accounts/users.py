"""People who sign in: creating and managing them, and checking their passwords (argon2id).

Every change of a user's password, role or standing ends all their sessions
(``dispatch.accounts.sessions``), so that a copied cookie or a forgotten browser stops working the
moment an admin acts. An admin cannot deactivate or demote the last active admin.

Only the argon2 hash of a password is stored. Sign-in (``dispatch.accounts.auth``) calls
``verify_password`` and, when ``password_needs_rehash`` says so, stores a fresh hash, so that
raising the parameters later needs no migration.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select

from dispatch import audit
from dispatch.accounts import sessions
from dispatch.extensions import db
from dispatch.models import Role, User
from dispatch.text import clean_line, refused_characters_message

MIN_PASSWORD_LENGTH = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,63}$")
_hasher = PasswordHasher()

ROLE_LABELS = {Role.ADMIN: "quản trị", Role.CLERK: "chuyên viên", Role.LEADER: "lãnh đạo"}

# The accounts `dispatch seed` creates for a demonstration: (e-mail, role, display name).
DEMO_USERS = (
    ("chuyenvien@thh.example", Role.CLERK, "Chuyên viên Văn phòng Cục"),
    ("lanhdao@thh.example", Role.LEADER, "Lãnh đạo Cục"),
    ("quantri@thh.example", Role.ADMIN, "Quản trị hệ thống"),
)


class UserError(ValueError):
    """A user could not be created or found; the message is for clerks (Vietnamese)."""


def normalise_email(email: str) -> str:
    """Addresses are compared without case and surrounding spaces."""
    return email.strip().lower()


def hash_password(password: str) -> str:
    """The argon2id hash stored for a password."""
    return _hasher.hash(password)


def check_password_rules(password: str) -> None:
    """Refuse a password too short to be safe."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"Mật khẩu phải có ít nhất {MIN_PASSWORD_LENGTH} ký tự.")


def find_user(email: str) -> User | None:
    """The user with this e-mail address (any case), or None."""
    return db.session.execute(
        select(User).where(func.lower(User.email) == normalise_email(email))
    ).scalar_one_or_none()


def get_user(email: str) -> User:
    """The user with this e-mail address, or a ``UserError`` naming it."""
    user = find_user(email)
    if user is None:
        raise UserError(f"Không có người dùng {email!r}.")
    return user


def create_user(
    email: str,
    *,
    role: Role | str,
    password: str | None,
    at: dt.datetime,
    actor: str,
    name: str = "",
) -> User:
    """Add a user, password hashed with argon2 (None: no sign-in yet); audited, caller commits."""
    email = normalise_email(email)
    if not _EMAIL.fullmatch(email) or len(email) > 254:
        raise UserError(f"Địa chỉ thư điện tử không hợp lệ: {email!r}.")
    try:
        role = Role(role)
    except ValueError as exc:
        allowed = ", ".join(member.value for member in Role)
        raise UserError(f"Vai trò {role!r} không hợp lệ; chọn một trong: {allowed}.") from exc
    if find_user(email) is not None:
        raise UserError(f"Người dùng {email} đã có.")
    if refused := refused_characters_message(name):
        raise UserError(f"Họ và tên {refused}.")
    if password is not None:
        check_password_rules(password)
    user = User(
        email=email,
        name=clean_line(name),
        role=role,
        password_hash=None if password is None else hash_password(password),
        active=True,
        created_at=at,
    )
    db.session.add(user)
    db.session.flush()
    audit.record(
        "user.created",
        actor=actor,
        at=at,
        object_type="user",
        object_id=user.id,
        details={"email": email, "role": role.value, "has_password": password is not None},
    )
    return user


def _other_active_admins(user: User) -> int:
    return len(
        db.session.execute(
            select(User.id).where(
                User.role == Role.ADMIN, User.active.is_(True), User.id != user.id
            )
        ).all()
    )


def _audit_change(
    action: str, user: User, *, actor: str, at: dt.datetime, **details: object
) -> None:
    audit.record(
        action,
        actor=actor,
        at=at,
        object_type="user",
        object_id=user.id,
        details={"email": user.email, **details},
    )


def set_role(user: User, role: Role | str, *, actor: str, at: dt.datetime) -> bool:
    """Give ``user`` another role and end their sessions; False if it is already theirs.

    Audited; the caller commits. Refuses to demote the last active admin.
    """
    try:
        role = Role(role)
    except ValueError as exc:
        allowed = ", ".join(member.value for member in Role)
        raise UserError(f"Vai trò {role!r} không hợp lệ; chọn một trong: {allowed}.") from exc
    if role is user.role:
        return False
    if user.role is Role.ADMIN and user.active and not _other_active_admins(user):
        raise UserError(f"{user.email} là quản trị viên cuối cùng: không thể đổi vai trò.")
    before = user.role
    user.role = role
    ended = sessions.end_all(user, reason=sessions.ROLE_CHANGED, at=at)
    _audit_change(
        "user.role_changed",
        user,
        actor=actor,
        at=at,
        before=before.value,
        after=role.value,
        sessions_ended=ended,
    )
    return True


def set_password(user: User, password: str, *, actor: str, at: dt.datetime) -> None:
    """An admin sets a new password for ``user``; every session of theirs ends.

    Audited (never the password); the caller commits.
    """
    check_password_rules(password)
    user.password_hash = hash_password(password)
    ended = sessions.end_all(user, reason=sessions.PASSWORD_SET, at=at)
    _audit_change("user.password_set", user, actor=actor, at=at, sessions_ended=ended)


def change_own_password(user: User, current: str, new: str, *, at: dt.datetime) -> None:
    """The user replaces their own password; all their sessions end (the caller opens a new one).

    Raises ``UserError`` when ``current`` is wrong or ``new`` breaks the rules. Audited; the
    caller commits.
    """
    if not verify_password(user.password_hash, current):
        raise UserError("Mật khẩu hiện tại không đúng.")
    check_password_rules(new)
    if new == current:
        raise UserError("Mật khẩu mới phải khác mật khẩu hiện tại.")
    user.password_hash = hash_password(new)
    ended = sessions.end_all(user, reason=sessions.PASSWORD_CHANGED, at=at)
    _audit_change("user.password_changed", user, actor=user.email, at=at, sessions_ended=ended)


def set_active(user: User, active: bool, *, actor: str, at: dt.datetime) -> bool:
    """Deactivate (every session ends) or reactivate ``user``; False if nothing changed.

    Audited; the caller commits. Refuses to deactivate the last active admin.
    """
    if user.active == active:
        return False
    if not active and user.role is Role.ADMIN and not _other_active_admins(user):
        raise UserError(f"{user.email} là quản trị viên cuối cùng: không thể vô hiệu hoá.")
    user.active = active
    if active:
        _audit_change("user.activated", user, actor=actor, at=at)
    else:
        ended = sessions.end_all(user, reason=sessions.DEACTIVATED, at=at)
        _audit_change("user.deactivated", user, actor=actor, at=at, sessions_ended=ended)
    return True


def end_sessions(user: User, *, actor: str, at: dt.datetime) -> int:
    """An admin signs ``user`` out everywhere; how many sessions ended. Audited, caller commits."""
    ended = sessions.end_all(user, reason=sessions.ENDED_BY_ADMIN, at=at)
    _audit_change("user.sessions_ended", user, actor=actor, at=at, sessions_ended=ended)
    return ended


def all_users() -> list[User]:
    """Every user, admins first, then by e-mail."""
    order = {Role.ADMIN: 0, Role.CLERK: 1, Role.LEADER: 2}
    found = db.session.execute(select(User)).scalars().all()
    return sorted(found, key=lambda user: (order.get(user.role, 9), user.email))


def ensure_demo_users(password: str, *, at: dt.datetime) -> list[str]:
    """Create the missing ``DEMO_USERS``, all with ``password``; their e-mails, caller commits.

    Users already there are left as they are (their password is not reset).
    """
    created = []
    for email, role, name in DEMO_USERS:
        if find_user(email) is not None:
            continue
        create_user(email, role=role, password=password, at=at, actor="system", name=name)
        created.append(email)
    return created


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches the stored hash; with no hash, the same work and False."""
    if password_hash is None:
        # Verify against a throw-away hash so that an unknown user costs as much as a known one.
        password_hash, password = _dummy_hash(), password + "\x00not-this"
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    """Whether a stored hash was made with weaker parameters than the current ones."""
    return _hasher.check_needs_rehash(password_hash)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_hex(16))
