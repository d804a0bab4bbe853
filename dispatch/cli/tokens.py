"""``dispatch tokens``: create, list and revoke bearer tokens for the JSON API."""

from __future__ import annotations

import datetime as dt

import click

from dispatch import clock
from dispatch.accounts import api_tokens, users
from dispatch.cli import options
from dispatch.models import Role, TokenScope
from dispatch.transaction import unit_of_work

CLI_ACTOR = "system"


def _role(role: Role) -> str:
    return users.ROLE_LABELS.get(role, str(role))


# What ``--at`` means here: when the token was created or revoked, as the audit log keeps it.
at_option = options.at_option(
    help="The moment to record (default: now); without an offset, Vietnam time."
)


@click.group("tokens")
def tokens_group() -> None:
    """Bearer tokens for the JSON API (Authorization: Bearer <token>)."""


@tokens_group.command("create")
@click.argument("email")
@click.option(
    "--scope",
    type=click.Choice([scope.value for scope in TokenScope]),
    default=TokenScope.READ.value,
    show_default=True,
    help="read: GET only; write: may also create and issue dispatches (clerk, admin).",
)
@click.option(
    "--days",
    type=click.IntRange(1, api_tokens.MAX_VALIDITY_DAYS),
    default=api_tokens.DEFAULT_VALIDITY_DAYS,
    show_default=True,
    help="How many days the token works, from its creation.",
)
@at_option
def create_command(email: str, scope: str, days: int, at: dt.datetime) -> None:
    """Create a token for the user EMAIL; it is printed once, as the last word of the output."""
    try:
        with unit_of_work():
            new = api_tokens.create_token(
                email, scope=scope, valid_for=dt.timedelta(days=days), actor=CLI_ACTOR, at=at
            )
    except api_tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    token = new.token
    click.echo(
        f"Đã tạo mã truy cập API số {token.id} cho {token.user.email} "
        f"({_role(token.user.role)}), quyền {api_tokens.SCOPE_LABELS[token.scope]}, "
        f"hết hạn {clock.format_local(token.expires_at)}. "
        "Mã chỉ hiển thị một lần, hãy lưu lại ngay:"
    )
    click.echo(new.plain)


@tokens_group.command("list")
@click.argument("email", required=False)
def list_command(email: str | None) -> None:
    """List tokens (id, owner, scope, created, expiry, last used, state), optionally of one
    user."""
    now = clock.now()
    try:
        tokens = api_tokens.list_tokens(email)
    except api_tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    if not tokens:
        click.echo("Chưa có mã truy cập nào.")
        return
    for token in tokens:
        state = "còn hiệu lực"
        if token.revoked_at is not None:
            state = f"thu hồi {clock.format_local(token.revoked_at)}"
        elif api_tokens.is_expired(token, now):
            state = "đã hết hạn"
        used = clock.format_local(token.last_used_at) or "chưa dùng"
        click.echo(
            f"{token.id}\t{token.user.email}\t{_role(token.user.role)}\t"
            f"{api_tokens.SCOPE_LABELS[token.scope]}\t"
            f"tạo {clock.format_local(token.created_at)}\t"
            f"hết hạn {clock.format_local(token.expires_at)}\t"
            f"dùng lần cuối {used}\t{state}"
        )


@tokens_group.command("revoke")
@click.argument("email", required=False)
@click.option("--id", "token_id", type=int, help="Revoke only the token with this id.")
@click.option("--token", "plain", help="Revoke the token with this value (e.g. a leaked one).")
@at_option
def revoke_command(
    email: str | None, token_id: int | None, plain: str | None, at: dt.datetime
) -> None:
    """Revoke every token of the user EMAIL, or one token given by --id or --token."""
    try:
        with unit_of_work():
            revoked = api_tokens.revoke_tokens(
                actor=CLI_ACTOR, at=at, email=email, token_id=token_id, plain=plain
            )
    except api_tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    if not revoked:
        click.echo("Không có mã truy cập nào còn hiệu lực để thu hồi.")
        return
    ids = ", ".join(str(token.id) for token in revoked)
    click.echo(f"Đã thu hồi {len(revoked)} mã truy cập: {ids}.")


commands = (tokens_group,)
