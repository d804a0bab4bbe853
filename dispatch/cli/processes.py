"""``dispatch scheduler``, ``dispatch smtp-sink`` and ``dispatch dev``: the long-running processes.

Each command hands the app it runs in to ``dispatch.processes``, which never builds one itself.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo, with_appcontext

from dispatch.cli.options import check_calendar


def running_app() -> Flask:
    """The app this command runs in, as the ``dispatch`` (or ``flask``) command loaded it."""
    return click.get_current_context().ensure_object(ScriptInfo).load_app()


@click.command("scheduler")
@click.option("--deliver-every", default=60.0, show_default=True, help="Seconds between sends.")
@click.option(
    "--remind-every", default=600.0, show_default=True, help="Seconds between reminder runs."
)
@click.option(
    "--heartbeat-every", default=60.0, show_default=True, help="Seconds between heartbeats."
)
@click.option(
    "--standby-poll",
    default=15.0,
    show_default=True,
    help="Seconds between tries for the lock while another scheduler holds it (PostgreSQL).",
)
@with_appcontext
def scheduler_command(
    deliver_every: float, remind_every: float, heartbeat_every: float, standby_poll: float
) -> None:
    """Run the scheduler (sending, reminders, heartbeat) in this process until Ctrl-C."""
    from dispatch.processes.scheduler import Intervals, run_scheduler

    check_calendar()
    logging.basicConfig(
        level=os.environ.get("DISPATCH_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # APScheduler logs every run at INFO: keep its warnings and errors only.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    code = run_scheduler(
        running_app(),
        Intervals(
            imap=float(current_app.config.get("DISPATCH_IMAP_EVERY") or 60),
            deliver=deliver_every,
            remind=remind_every,
            heartbeat=heartbeat_every,
            standby_poll=standby_poll,
        ),
    )
    sys.exit(code)


@click.command("smtp-sink")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to keep the messages (default: <instance>/mail).",
)
@with_appcontext
def smtp_sink_command(host: str, port: int, folder: Path | None) -> None:
    """Run a local SMTP server that keeps every message as an .eml file, until Ctrl-C."""
    from dispatch.processes.smtp_sink import run_sink

    folder = folder or Path(current_app.instance_path) / "mail"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line per SMTP command
    click.echo(
        f"Máy chủ thư thử nghiệm đang nghe tại {host}:{port}; thư được lưu vào {folder}. "
        "Bấm Ctrl-C để dừng."
    )
    try:
        run_sink(folder, host=host, port=port)
    except OSError as exc:
        raise click.ClickException(f"không mở được cổng {host}:{port}: {exc}") from exc
    click.echo("Đã dừng máy chủ thư thử nghiệm.")


@click.command("dev")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address of the web app and sink."
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=5000,
    show_default=True,
    envvar="DISPATCH_DEV_PORT",
    help="Web app port (env DISPATCH_DEV_PORT).",
)
@click.option(
    "--smtp-port",
    type=click.IntRange(1, 65535),
    default=8025,
    show_default=True,
    envvar="DISPATCH_DEV_SMTP_PORT",
    help="SMTP sink port (env DISPATCH_DEV_SMTP_PORT).",
)
@with_appcontext
def dev_command(host: str, port: int, smtp_port: int) -> None:
    """Run everything on this machine: migrate, seed, then the web app, scheduler and sink."""
    from dispatch.processes.devserver import DevError, run_dev

    try:
        code = run_dev(running_app(), host=host, port=port, smtp_port=smtp_port)
    except DevError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


commands = (scheduler_command, smtp_sink_command, dev_command)
