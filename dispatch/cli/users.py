"""``dispatch users create``: people who sign in."""

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


commands = (users_group,)
