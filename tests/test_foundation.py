"""The app factory, the health check, the audit chain and the migrations."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from dispatch import audit
from dispatch.config import ConfigError, load_config
from dispatch.extensions import db
from dispatch.models import AuditEntry


def test_healthz_answers_ok(db_app):
    response = db_app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_reports_a_database_that_is_down(tmp_path):
    from dispatch import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "x",
            "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://nobody@127.0.0.1:1/none",
            "DISPATCH_DATA_DIR": str(tmp_path),
        }
    )
    assert app.test_client().get("/healthz").status_code == 503


@pytest.mark.nodb
def test_production_requires_its_settings(tmp_path):
    with pytest.raises(ConfigError, match=r"SECRET_KEY.*BASE_URL.*MAIL_SERVER"):
        load_config(tmp_path, {"DISPATCH_ENV": "production", "DATABASE_URL": "sqlite://"})


def test_models_match_the_migrations(db_app):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_audit_chain_detects_an_edited_and_a_deleted_row(db_app, audit_unguarded):
    at = dt.datetime(2021, 11, 15, 1, 30, tzinfo=dt.UTC)
    for i in range(3):
        audit.record("test.step", actor="system", at=at, object_type="test", object_id=i)
    db.session.commit()
    assert audit.verify_chain() == []

    second = db.session.execute(db.select(AuditEntry).order_by(AuditEntry.id)).scalars().all()[1]
    second.actor = "someone else"
    db.session.commit()
    assert [p.entry_id for p in audit.verify_chain()] == [second.id]

    second.actor = "system"
    db.session.delete(second)
    db.session.commit()
    assert len(audit.verify_chain()) == 1


@pytest.mark.postgres
@pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgres"),
    reason="needs PostgreSQL (TEST_DATABASE_URL)",
)
@pytest.mark.parametrize("checked", [True, False])
def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout(
    migrated_database, tmp_path, checked
):
    # Checked at checkout (the app's default), a connection the server ended while it rested in
    # the pool (a restart, an idle timeout) is replaced; unchecked, the request would fail.
    from dispatch import create_app

    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": migrated_database,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": checked},
            "SECRET_KEY": "test-secret",
            "DISPATCH_AUDIT_KEY": "test-audit-key",
            "DISPATCH_DATA_DIR": str(tmp_path / "data"),
        }
    )
    with app.app_context():
        try:
            with db.engine.connect() as conn:
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            other = create_engine(migrated_database, poolclass=NullPool)
            with other.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            other.dispose()
            time.sleep(0.5)  # the end of the connection reaches its socket
            with db.engine.connect() as conn:
                if checked:
                    assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
                else:
                    with pytest.raises(OperationalError):
                        conn.execute(text("SELECT pg_backend_pid()"))
        finally:
            db.engine.dispose()
