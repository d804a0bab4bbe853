"""``dispatch users``: people who sign in (create, list, role, password, deactivate, sign out)."""

from __future__ import annotations

import datetime as dt

import click
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option, resolve_actor
from dispatch.models import Role
from dispatch.transaction import unit_of_work


@click.group("users")
def users_group() -> None:
    """People who sign in."""


@users_group.command("create")
@click.argument("email")
@click.option(
    "--role",
    required=True,
    type=click.Choice([role.value for role in Role]),
    help="admin, clerk or leader.",
)
@click.option("--name", default="", help="Full name.")
@click.option("--password", help="The password (asked for, twice, when not given).")
@click.option("--as", "as_email", help="E-mail of the admin who creates (default: system).")
@at_option
@with_appcontext
def users_create_command(
    email: str,
    role: str,
    name: str,
    password: str | None,
    as_email: str | None,
    at: dt.datetime,
) -> None:
    """Create a user; the password is stored as an argon2 hash."""
    from dispatch.accounts import users

    actor = resolve_actor(as_email)
    if password is None:
        password = click.prompt(
            "Mật khẩu",
            hide_input=True,
            confirmation_prompt="Nhập lại mật khẩu",
        )
    try:
        with unit_of_work():
            user = users.create_user(
                email,
                role=role,
                password=password,
                at=at,
                actor=actor.email if actor else "system",
                name=name,
            )
    except users.UserError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã tạo người dùng {user.email} ({users.ROLE_LABELS[user.role]}).")


def _change(email: str, as_email: str | None, at: dt.datetime, change) -> object:
    """Run ``change(user, actor)`` for the user with ``email`` in one transaction."""
    from dispatch.accounts import users

    actor = resolve_actor(as_email)
    try:
        with unit_of_work():
            return change(users.get_user(email), actor.email if actor else "system", at)
    except users.UserError as exc:
        raise CliError(str(exc)) from exc


_as_option = click.option(
    "--as", "as_email", help="E-mail of the admin who acts (default: system)."
)


@users_group.command("list")
@at_option
@with_appcontext
def users_list_command(at: dt.datetime) -> None:
    """Every user: role, standing, open sessions."""
    from dispatch.accounts import sessions, users

    for user in users.all_users():
        standing = "đang hoạt động" if user.active else "đã vô hiệu hoá"
        open_sessions = sessions.open_count(user, at=at)
        click.echo(
            f"{user.email}\t{users.ROLE_LABELS[user.role]}\t{standing}\t"
            f"{open_sessions} phiên đang mở\t{user.name}"
        )


@users_group.command("set-role")
@click.argument("email")
@click.option(
    "--role",
    required=True,
    type=click.Choice([role.value for role in Role]),
    help="admin, clerk or leader.",
)
@_as_option
@at_option
@with_appcontext
def users_set_role_command(email: str, role: str, as_email: str | None, at: dt.datetime) -> None:
    """Give a user another role; every session of theirs ends."""
    from dispatch.accounts import users

    changed = _change(
        email, as_email, at, lambda user, actor, at: users.set_role(user, role, actor=actor, at=at)
    )
    label = users.ROLE_LABELS[Role(role)]
    if changed:
        click.echo(f"Đã đổi vai trò của {email} thành {label}; các phiên đăng nhập đã kết thúc.")
    else:
        click.echo(f"{email} đã có vai trò {label}: không có gì thay đổi.")


@users_group.command("set-password")
@click.argument("email")
@click.option("--password", help="The new password (asked for, twice, when not given).")
@_as_option
@at_option
@with_appcontext
def users_set_password_command(
    email: str, password: str | None, as_email: str | None, at: dt.datetime
) -> None:
    """Set a new password for a user; every session of theirs ends."""
    from dispatch.accounts import users

    if password is None:
        password = click.prompt(
            "Mật khẩu mới", hide_input=True, confirmation_prompt="Nhập lại mật khẩu mới"
        )
    _change(
        email,
        as_email,
        at,
        lambda user, actor, at: users.set_password(user, password, actor=actor, at=at),
    )
    click.echo(f"Đã đặt mật khẩu mới cho {email}; các phiên đăng nhập đã kết thúc.")


def _activation_command(name: str, active: bool, doc: str, done: str, already: str) -> None:
    """``dispatch users activate|deactivate EMAIL``: ``done`` or ``already`` ({email}) said."""

    @users_group.command(name, help=doc)
    @click.argument("email")
    @_as_option
    @at_option
    @with_appcontext
    def command(email: str, as_email: str | None, at: dt.datetime) -> None:
        from dispatch.accounts import users

        changed = _change(
            email,
            as_email,
            at,
            lambda user, actor, at: users.set_active(user, active, actor=actor, at=at),
        )
        click.echo((done if changed else already).format(email=email))


_activation_command(
    "deactivate",
    False,
    "Stop a user from signing in; every session of theirs ends.",
    "Đã vô hiệu hoá {email}.",
    "{email} đã bị vô hiệu hoá từ trước.",
)
_activation_command(
    "activate",
    True,
    "Let a deactivated user sign in again.",
    "Đã kích hoạt lại {email}.",
    "{email} vẫn đang hoạt động.",
)


@users_group.command("end-sessions")
@click.argument("email")
@_as_option
@at_option
@with_appcontext
def users_end_sessions_command(email: str, as_email: str | None, at: dt.datetime) -> None:
    """Sign a user out of every browser."""
    from dispatch.accounts import users

    ended = _change(
        email, as_email, at, lambda user, actor, at: users.end_sessions(user, actor=actor, at=at)
    )
    click.echo(f"Đã kết thúc {ended} phiên đăng nhập của {email}.")


commands = (users_group,)


@users_group.command("signing-key")
@click.argument("email")
@click.argument("key")
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False),
    help="PNG of the handwritten signature, transparent background.",
)
@click.option(
    "--password-env",
    help="Name of the environment variable holding the key's password or PIN.",
)
@_as_option
@at_option
@with_appcontext
def users_signing_key_command(
    email: str,
    key: str,
    image: str | None,
    password_env: str | None,
    as_email: str | None,
    at: dt.datetime,
) -> None:
    """Give a leader a signing key: a PKCS#12 path or a pkcs11: URI (only the reference is kept)."""
    import os
    from pathlib import Path

    from dispatch.signing import keys

    if not keys.is_pkcs11(key):
        key = str(Path(key).resolve())
    data = Path(image).read_bytes() if image else None
    try:
        subject = _change(
            email,
            as_email,
            at,
            lambda user, actor, at: keys.set_signing_key(
                user,
                key,
                password_env=password_env,
                environ=os.environ,
                image=data,
                actor=actor,
                at=at,
            ),
        )
    except keys.SigningKeyError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã gán khoá ký cho {email}: {subject}.")
