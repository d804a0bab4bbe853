"""The ``dispatch`` command: a Flask CLI group whose commands are thin calls into the modules."""

from __future__ import annotations

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
        evidence,
        letters,
        processes,
        reminders,
        seed,
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
        *users.commands,
        *audit.commands,
        *evidence.commands,
    ):
        app.cli.add_command(command)


def _create_app() -> Flask:
    from dispatch import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False)
def main() -> None:
    """Dispatch: issue công văn to the provinces and track their receipt."""
