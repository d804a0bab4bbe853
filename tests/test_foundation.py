"""The app factory, the health check, the audit chain and the migrations."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

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
