"""Dispatch: issue official letters (công văn) to the provinces and know who has received them."""

from __future__ import annotations

import os
import select
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from dispatch.config import PROJECT_ROOT


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Write-ahead logging on SQLite: a commit costs no fsync, and readers never block the writer.

    The sender commits every message's outcome on its own (so a crash loses at most the one in
    flight); with the default rollback journal each of those commits cost several fsyncs, which
    made delivery disk-bound (bench/issue_63). In WAL mode with synchronous=NORMAL a crashed
    process loses nothing committed and the database stays consistent; only a power cut may roll
    back the last commits. Production runs on PostgreSQL, which keeps its own durability.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _replace_closed_connections(engine: Engine) -> None:
    """PostgreSQL: at each checkout from the pool, a connection the server has closed since it
    was last used (a restart, a failover, an idle timeout, ``pg_terminate_backend``) is replaced,
    as ``pool_pre_ping`` would, without pre-ping's round trip (SELECT 1) on every request.

    A connection resting in the pool has nothing to read. If its socket is readable, the server
    has said something since (a closed connection's FATAL message and end of stream, or a
    notice): only then is it pinged, and one that fails the ping is replaced (the pool takes
    ``DisconnectionError`` to mean so). A connection cut without a word (a dropped network)
    is found by its next statement, as it would be by pre-ping's.
    """
    dialect = engine.dialect

    def check(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
        if dbapi_connection.closed or dbapi_connection.broken:
            raise DisconnectionError("connection closed")
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
        if not readable:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("connection closed by the server") from exc

    event.listen(engine, "checkout", check)


def _on_postgres(database_uri: str) -> bool:
    return make_url(database_uri).get_backend_name() == "postgresql"


def _guard_issued_dispatches() -> None:
    """Every session refuses to flush a change to an issued dispatch or its archived files."""
    from sqlalchemy.orm import Session

    from dispatch.drafting.drafts import refuse_edits_of_issued

    if not event.contains(Session, "before_flush", refuse_edits_of_issued):
        event.listen(Session, "before_flush", refuse_edits_of_issued)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create and wire the app; configuration comes from the environment or ``test_config``."""
    from dotenv import load_dotenv

    from dispatch import cli, models, views  # noqa: F401  (models: register the tables)
    from dispatch.config import load_config
    from dispatch.extensions import csrf, db, login_manager, mail, migrate

    app = Flask(
        __name__,
        # DISPATCH_INSTANCE_PATH moves the instance folder (SQLite file, mail sink, archive).
        instance_path=os.environ.get("DISPATCH_INSTANCE_PATH") or None,
        instance_relative_config=True,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder="static",
    )
    if test_config is None:
        load_dotenv(override=False)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.from_mapping(load_config(Path(app.instance_path)))
    if test_config:
        app.config.from_mapping(test_config)
    proxies = int(app.config.get("DISPATCH_TRUSTED_PROXIES") or 0)
    if proxies:
        # Only behind proxies we were told about: otherwise X-Forwarded-For is the client's lie.
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies
        )

    options = app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
    check_on_checkout = options.get("pool_pre_ping") and _on_postgres(
        app.config["SQLALCHEMY_DATABASE_URI"]
    )
    if check_on_checkout:
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {**options, "pool_pre_ping": False}
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
        if check_on_checkout:
            _replace_closed_connections(db.engine)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"))
    mail.init_app(app)
    login_manager.init_app(app)
    csrf.init_app(app)

    _guard_issued_dispatches()
    views.register_blueprints(app)
    cli.init_app(app)
    return app
