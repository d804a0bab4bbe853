"""The ``dispatch`` command: a Flask CLI group whose commands are thin calls into the modules."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import FlaskGroup


def init_app(app: Flask) -> None:
    """Attach every command to ``app.cli`` (so ``flask --app wsgi …`` has them too)."""
    from dispatch.cli import (
        delivery,
        directory,
        dispatches,
        evidence,
        letters,
        reminders,
        tokens,
    )

    for command in (
        *letters.commands,
        *delivery.commands,
        *reminders.commands,
        *tokens.commands,
        *directory.commands,
        *dispatches.commands,
        *evidence.commands,
    ):
        app.cli.add_command(command)


def _create_app() -> Flask:
    from dispatch import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False)
def main() -> None:
    """Dispatch: issue công văn to the provinces and track their receipt."""
