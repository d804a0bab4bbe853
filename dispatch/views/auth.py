"""Sign-in, sign-out and change-of-password pages for clerks, leaders and admins."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Length

from dispatch import clock
from dispatch.accounts import auth, sessions, users
from dispatch.models import Role
from dispatch.transaction import unit_of_work

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    """E-mail and password; the CSRF token comes with FlaskForm."""

    email = EmailField(
        "Thư điện tử",
        validators=[DataRequired("Vui lòng nhập thư điện tử."), Length(max=254)],
        render_kw={"autocomplete": "username", "autofocus": True},
    )
    password = PasswordField(
        "Mật khẩu",
        validators=[DataRequired("Vui lòng nhập mật khẩu."), Length(max=1024)],
        render_kw={"autocomplete": "current-password"},
    )
    submit = SubmitField("Đăng nhập")


class PasswordForm(FlaskForm):
    """The current password and the new one, twice."""

    current = PasswordField(
        "Mật khẩu hiện tại",
        validators=[DataRequired("Vui lòng nhập mật khẩu hiện tại."), Length(max=1024)],
        render_kw={"autocomplete": "current-password"},
    )
    new = PasswordField(
        "Mật khẩu mới",
        validators=[DataRequired("Vui lòng nhập mật khẩu mới."), Length(max=1024)],
        render_kw={"autocomplete": "new-password"},
    )
    confirm = PasswordField(
        "Nhập lại mật khẩu mới",
        validators=[DataRequired("Vui lòng nhập lại mật khẩu mới."), Length(max=1024)],
        render_kw={"autocomplete": "new-password"},
    )
    submit = SubmitField("Đổi mật khẩu")


class LogoutForm(FlaskForm):
    """Only the CSRF token: signing out is a POST so no other site can sign a user out."""

    submit = SubmitField("Đăng xuất")


def _next_target() -> str | None:
    target = request.args.get("next") or request.form.get("next")
    return target if auth.is_safe_next(target) else None


def _home() -> str:
    """Where signing in lands: a leader's home is the leadership view, not the clerk's list."""
    if current_user.is_authenticated and current_user.role == Role.LEADER:
        return url_for("leadership.dispatches")
    return url_for("clerks.home")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Show the sign-in form; on a correct e-mail and password, sign in and go on."""
    next_target = _next_target()
    if current_user.is_authenticated:
        return redirect(next_target or _home())
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        throttled: auth.LoginThrottled | None = None
        with unit_of_work():  # the attempt is recorded (and audited) even when it is refused
            try:
                result = auth.authenticate(
                    form.email.data or "",
                    form.password.data or "",
                    ip=request.remote_addr,
                    at=clock.now(),
                )
            except auth.LoginThrottled as exc:
                throttled = exc
        if throttled is not None:
            response = render_template(
                "auth/login.html", form=form, error=throttled.message, next_target=next_target
            )
            return response, 429, {"Retry-After": str(throttled.seconds)}
        if result.user is not None:
            # A fresh session on sign-in: nothing set before (by anyone) carries over.
            session.clear()
            g.pop("csrf_token", None)  # made from the old session's secret: no longer valid
            with unit_of_work():
                auth.start_session(result.user, at=clock.now())
            login_user(result.user)
            return redirect(next_target or _home())
        error = auth.BAD_CREDENTIALS_MESSAGE
    return render_template("auth/login.html", form=form, error=error, next_target=next_target)


@bp.post("/logout")
@login_required
def logout() -> Any:
    """Sign out (a POST with the CSRF token, from the button in the page header)."""
    form = LogoutForm()
    if not form.validate_on_submit():
        return auth.render_error(400, auth.CSRF_MESSAGE)
    now = clock.now()
    with unit_of_work():
        auth.end_session(sessions.LOGOUT, at=now)
        auth.record_logout(current_user._get_current_object(), ip=request.remote_addr, at=now)
    logout_user()
    session.clear()
    flash("Bạn đã đăng xuất.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@auth.role_required(*Role)
def change_password() -> Any:
    """A signed-in user replaces their own password; their other sessions end."""
    form = PasswordForm()
    error = None
    if form.validate_on_submit():
        user = current_user._get_current_object()
        if form.new.data != form.confirm.data:
            error = "Hai lần nhập mật khẩu mới không khớp nhau."
        else:
            now = clock.now()
            try:
                with unit_of_work():
                    users.change_own_password(
                        user, form.current.data or "", form.new.data or "", at=now
                    )
                    auth.start_session(user, at=now)  # every old one ended, this one too
            except users.UserError as exc:
                error = str(exc)
            else:
                flash("Đã đổi mật khẩu. Các phiên đăng nhập khác đã kết thúc.", "success")
                return redirect(_home())
    page = render_template(
        "auth/password.html", form=form, error=error, min_length=users.MIN_PASSWORD_LENGTH
    )
    return page, (400 if error else 200)


def init_app(app: Flask) -> None:
    """Set up sign-in (Flask-Login, error pages) and register the sign-in pages."""
    auth.init_app(app)
    app.register_blueprint(bp)
