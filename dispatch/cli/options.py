"""What the ``dispatch`` commands share: ``--at``, the dispatch id, ``--as`` and the clerk's error.

Each command reads the clock once, at the edge: ``--at`` when given (to replay a moment), now
otherwise; the domain code below only ever receives that moment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
from flask import current_app

from dispatch import clock

if TYPE_CHECKING:
    from dispatch.models import User

F = TypeVar("F", bound=Callable[..., Any])

AT_HELP = "The moment to act at (default: now); without an offset, Vietnam time."


class CliError(click.ClickException):
    """An error for the clerk: printed as 'Lỗi: …', exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the message on stderr after the Vietnamese 'Lỗi:'."""
        click.echo(f"Lỗi: {self.format_message()}", err=True)


def parse_at(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime:
    """``--at``: an ISO-8601 moment (Vietnam time if no offset), or now when not given."""
    if value is None:
        return clock.now()
    try:
        return clock.parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"thời điểm không hợp lệ {value!r}, cần dạng ISO-8601, ví dụ 2021-11-15T08:30:00+07:00"
        ) from exc


def at_option(function: F | None = None, *, help: str = AT_HELP) -> Any:
    """The ``--at`` option (``@at_option`` or ``@at_option(help=…)``): an aware UTC moment."""
    decorator = click.option("--at", "at", callback=parse_at, metavar="ISO-8601", help=help)
    return decorator(function) if function is not None else decorator


def parse_date(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    """A calendar day, YYYY-MM-DD, or None when not given."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"ngày không hợp lệ {value!r}, cần dạng YYYY-MM-DD") from exc


def dispatch_id_argument(function: F) -> F:
    """The ``DISPATCH_ID`` argument: the number shown by ``dispatch draft create``."""
    return click.argument("dispatch_id", type=int)(function)


def resolve_actor(email: str | None) -> User | None:
    """The user named by ``--as``, or None (the audit log then says "system")."""
    if email is None:
        return None
    from dispatch.accounts.users import UserError, get_user

    try:
        return get_user(email)
    except UserError as exc:
        raise CliError(str(exc)) from exc


def check_calendar() -> None:
    """Stop at once, with the setting's name, on a malformed DISPATCH_EXTRA_* date."""
    from dispatch.calendar import CalendarConfigError, calendar_from_config

    try:
        calendar_from_config(current_app.config)
    except CalendarConfigError as exc:
        raise click.ClickException(str(exc)) from exc
