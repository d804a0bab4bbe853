"""Pages for admins: the people who sign in (create, role, password, deactivate, sign out)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from dispatch import clock
from dispatch.accounts import sessions, users
from dispatch.accounts.auth import role_required
from dispatch.extensions import db
from dispatch.models import Role, User
from dispatch.text import refused_characters_message
from dispatch.transaction import unit_of_work

bp = Blueprint("admin", __name__, url_prefix="/admin")

ROLE_CHOICES = [(role.value, users.ROLE_LABELS[role].capitalize()) for role in Role]


def _role_field(label: str) -> SelectField:
    return SelectField(label, choices=[SelectChoice(value, text) for value, text in ROLE_CHOICES])


class NewUserForm(FlaskForm):
    """A new person who signs in."""

    email = EmailField(
        "Thư điện tử", validators=[DataRequired("Vui lòng nhập thư điện tử."), Length(max=254)]
    )
    name = StringField("Họ và tên", validators=[Length(max=100)])
    role = _role_field("Vai trò")
    password = PasswordField(
        "Mật khẩu ban đầu",
        validators=[DataRequired("Vui lòng nhập mật khẩu."), Length(max=1024)],
        render_kw={"autocomplete": "new-password"},
    )
    submit = SubmitField("Tạo người dùng")


class RoleForm(FlaskForm):
    """Another role for a user."""

    role = _role_field("Vai trò")
    submit = SubmitField("Đổi vai trò")


class PasswordForm(FlaskForm):
    """A new password an admin sets for a user."""

    password = PasswordField(
        "Mật khẩu mới",
        validators=[DataRequired("Vui lòng nhập mật khẩu mới."), Length(max=1024)],
        render_kw={"autocomplete": "new-password"},
    )
    submit = SubmitField("Đặt mật khẩu")


class ActionForm(FlaskForm):
    """Only the CSRF token: deactivate, reactivate, end sessions."""

    submit = SubmitField("Thực hiện")


def _user_or_404(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    return user


def _actor() -> str:
    return current_user.email


def _rows() -> list[dict[str, Any]]:
    now = clock.now()
    return [
        {
            "user": user,
            "role_label": users.ROLE_LABELS.get(user.role, user.role),
            "open_sessions": sessions.open_count(user, at=now),
            "last_sign_in": sessions.last_sign_in(user),
            "is_me": user.id == current_user.id,
        }
        for user in users.all_users()
    ]


def _page(new_form: NewUserForm | None = None, error: str | None = None, status: int = 200):
    page = render_template(
        "admin/users.html",
        rows=_rows(),
        new_form=new_form or NewUserForm(formdata=None),
        role_choices=ROLE_CHOICES,
        action_form=ActionForm(formdata=None),
        min_length=users.MIN_PASSWORD_LENGTH,
        error=error,
    )
    return page, status


@bp.get("/users")
@role_required(Role.ADMIN)
def user_list() -> Any:
    """Every user: role, standing, last sign-in, open sessions, and what an admin can do."""
    return _page()


@bp.post("/users")
@role_required(Role.ADMIN)
def user_create() -> Any:
    """Create a user with a first password."""
    form = NewUserForm()
    if not form.validate_on_submit():
        errors = [e for field in form for e in field.errors]
        return _page(form, " ".join(errors) or "Biểu mẫu không hợp lệ.", 400)
    if refused := refused_characters_message(form.name.data or ""):
        return _page(form, f"Họ và tên {refused}.", 400)
    try:
        with unit_of_work():
            user = users.create_user(
                form.email.data or "",
                role=form.role.data,
                password=form.password.data,
                at=clock.now(),
                actor=_actor(),
                name=form.name.data or "",
            )
    except users.UserError as exc:
        return _page(form, str(exc), 400)
    flash(f"Đã tạo người dùng {user.email}.", "success")
    return redirect(url_for("admin.user_list"))


def _apply(user_id: int, form: FlaskForm, change: Any, done: str) -> Any:
    """Check the form, run ``change(user)`` in one transaction, flash ``done`` or the error."""
    user = _user_or_404(user_id)
    if not form.validate_on_submit():
        errors = [e for field in form for e in field.errors]
        return _page(error=" ".join(errors) or "Biểu mẫu không hợp lệ.", status=400)
    try:
        with unit_of_work():
            changed = change(user)
    except users.UserError as exc:
        return _page(error=str(exc), status=400)
    if changed is False:
        flash(f"Không có gì thay đổi cho {user.email}.", "info")
    else:
        flash(done.format(email=user.email), "success")
    if user.id == current_user.id and not current_user.is_active:
        return redirect(url_for("auth.login"))
    return redirect(url_for("admin.user_list"))


@bp.post("/users/<int:user_id>/role")
@role_required(Role.ADMIN)
def user_role(user_id: int) -> Any:
    """Give a user another role; their sessions end."""
    form = RoleForm()
    return _apply(
        user_id,
        form,
        lambda user: users.set_role(user, form.role.data, actor=_actor(), at=clock.now()),
        "Đã đổi vai trò của {email}; các phiên đăng nhập của người này đã kết thúc.",
    )


@bp.post("/users/<int:user_id>/password")
@role_required(Role.ADMIN)
def user_password(user_id: int) -> Any:
    """Set a new password for a user; their sessions end."""
    form = PasswordForm()
    return _apply(
        user_id,
        form,
        lambda user: users.set_password(
            user, form.password.data or "", actor=_actor(), at=clock.now()
        ),
        "Đã đặt mật khẩu mới cho {email}; các phiên đăng nhập của người này đã kết thúc.",
    )


@bp.post("/users/<int:user_id>/deactivate")
@role_required(Role.ADMIN)
def user_deactivate(user_id: int) -> Any:
    """Deactivate a user: they can no longer sign in and every session ends."""
    return _apply(
        user_id,
        ActionForm(),
        lambda user: users.set_active(user, False, actor=_actor(), at=clock.now()),
        "Đã vô hiệu hoá {email}.",
    )


@bp.post("/users/<int:user_id>/activate")
@role_required(Role.ADMIN)
def user_activate(user_id: int) -> Any:
    """Let a deactivated user sign in again."""
    return _apply(
        user_id,
        ActionForm(),
        lambda user: users.set_active(user, True, actor=_actor(), at=clock.now()),
        "Đã kích hoạt lại {email}.",
    )


@bp.post("/users/<int:user_id>/sessions/end")
@role_required(Role.ADMIN)
def user_end_sessions(user_id: int) -> Any:
    """Sign a user out everywhere."""
    return _apply(
        user_id,
        ActionForm(),
        lambda user: users.end_sessions(user, actor=_actor(), at=clock.now()),
        "Đã kết thúc mọi phiên đăng nhập của {email}.",
    )


# --- Inbound mail tied to nothing we sent -----------------------------------------------------


@bp.get("/inbound")
@role_required(Role.ADMIN)
def inbound_list() -> Any:
    """Inbound messages that match no e-mail we sent: kept, never dropped, for an admin to read."""
    from dispatch.inbound.handler import unmatched

    rows = [
        {
            "id": message.id,
            "received": clock.format_local(message.received_at),
            "door": message.door,
            "kind": message.kind.value,
            "sender": message.from_address or message.envelope_from or "",
            "subject": message.subject or "",
            "excerpt": message.excerpt or message.diagnostic or "",
            "path": message.archive_path,
        }
        for message in unmatched()
    ]
    return render_template("admin/inbound.html", rows=rows)
