"""The ``dispatch`` command: a Flask CLI group whose commands are thin calls into the modules."""

from __future__ import annotations

from typing import Any

import click
from flask import Flask
from flask.cli import FlaskGroup


def init_app(app: Flask) -> None:
    """Attach every command to ``app.cli`` (so ``flask --app wsgi …`` has them too)."""
    from dispatch.cli import (
        audit,
        delivery,
        directory,
        drafts,
        edxml,
        evidence,
        inbound,
        letters,
        processes,
        reminders,
        seed,
        signing,
        tokens,
        users,
    )

    for command in (
        *letters.commands,
        *delivery.commands,
        *reminders.commands,
        *processes.commands,
        *tokens.commands,
        *directory.commands,
        *seed.commands,
        *drafts.commands,
        *edxml.commands,
        *users.commands,
        *audit.commands,
        *evidence.commands,
        *inbound.commands,
        *signing.commands,
    ):
        app.cli.add_command(command)


def _create_app() -> Flask:
    from dispatch import create_app

    return create_app()


class DispatchGroup(FlaskGroup):
    """The command group: a database that cannot be reached is one Vietnamese line, not a trace."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn a lost or refused database connection into ``CliError``."""
        from sqlalchemy.exc import InterfaceError, OperationalError

        from dispatch.cli.options import CliError

        try:
            return super().invoke(ctx)
        except (OperationalError, InterfaceError) as exc:
            # The driver's own first line says why (refused, timed out, locked …).
            reason = (str(exc.orig or exc).strip().splitlines() or ["?"])[0]
            raise CliError(
                "không kết nối được cơ sở dữ liệu, hoặc cơ sở dữ liệu không phản hồi "
                f"({reason}). Kiểm tra DATABASE_URL và máy chủ cơ sở dữ liệu rồi chạy lại."
            ) from exc


@click.group(cls=DispatchGroup, create_app=_create_app, add_version_option=False)
def main() -> None:
    """Dispatch: issue công văn to the provinces and track their receipt."""
