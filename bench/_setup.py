"""Building the instances the benchmarks measure: an app on a given database and archive folder,
its schema by the migrations, a generated directory of N offices, a draft of the seed letter.

Nothing here is timed. Data the benchmarks need in bulk is written with Core inserts; what the
product itself must do (drafting, issuing) goes through the domain functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "official_letters" / "pc-covid-2021"
SECRET_KEY = "bench-secret-key"
AUDIT_KEY = "bench-audit-key"
SENDER = "van-thu@thh.example"
BENCH_GROUP = "xa-phuong-bench"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Its own database: the tests' "test" database may be in use by a test run at the same time.
POSTGRES_BENCH_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/dispatch_bench"
PREPARED_AT = "2021-11-01T08:00:00+07:00"


def app_environment(folder: Path) -> dict[str, str]:
    """What ``create_app`` reads from the environment even with a test configuration."""
    return {
        "DISPATCH_INSTANCE_PATH": str(folder / "instance"),
        "SECRET_KEY": SECRET_KEY,
        "DISPATCH_AUDIT_KEY": AUDIT_KEY,
    }


def make_app(folder: Path, database_url: str | None = None, smtp_port: int = 25) -> Any:
    """The app on ``database_url`` (default: a SQLite file in ``folder``), its archive in
    ``folder``, sending to ``smtp_port`` on loopback."""
    os.environ.update(app_environment(folder))
    from dispatch import create_app

    return create_app(
        {
            "SQLALCHEMY_DATABASE_URI": database_url or f"sqlite:///{folder / 'dispatch.db'}",
            "DISPATCH_DATA_DIR": str(folder / "data"),
            "SECRET_KEY": SECRET_KEY,
            "DISPATCH_AUDIT_KEY": AUDIT_KEY,
            "BASE_URL": "https://congvan.thh.example",
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": smtp_port,
            "MAIL_DEFAULT_SENDER": SENDER,
            "MAIL_TIMEOUT": 120,
        }
    )


def migrate(app: Any) -> None:
    """Build the schema with the migrations, without Alembic's progress lines."""
    from flask_migrate import upgrade

    logging.disable(logging.INFO)
    try:
        with app.app_context():
            upgrade()
    finally:
        logging.disable(logging.NOTSET)


def reset_postgres(url: str = POSTGRES_BENCH_URL) -> str:
    """Create the benchmark database if it is missing and empty it; return its URL."""
    import sqlalchemy as sa

    name = sa.make_url(url).database
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).first()
        if exists is None:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def generated_directory(count: int, at: dt.datetime, group_code: str = BENCH_GROUP) -> str:
    """Insert ``count`` offices (commune level, as a national directory has) in a new group;
    call in an app context, the caller commits. Returns the group's code."""
    import sqlalchemy as sa

    from dispatch.directory.offices import fold, known_provinces
    from dispatch.extensions import db
    from dispatch.models import Organisation, RecipientGroup, group_member

    provinces = sorted(known_provinces().items())
    group_id = db.session.execute(
        sa.insert(RecipientGroup)
        .values(code=group_code, name="Uỷ ban nhân dân các xã, phường (thử tải)")
        .returning(RecipientGroup.id)
    ).scalar_one()
    rows = []
    for number in range(1, count + 1):
        code, province = provinces[number % len(provinces)]
        name = f"Uỷ ban nhân dân xã Số {number}, {province}"
        rows.append(
            {
                "name": name,
                "province_code": code,
                "province_name": province,
                "province_kind": "tỉnh",
                "region": "",
                "email": f"ubnd.xa{number:05d}@xa.example",
                "cc": [],
                "email_is_placeholder": False,
                "search_text": fold(name),
                "updated_at": at,
            }
        )
    ids: list[int] = []
    for start in range(0, len(rows), 1000):
        ids += db.session.execute(
            sa.insert(Organisation).returning(Organisation.id), rows[start : start + 1000]
        ).scalars()
    db.session.execute(
        sa.insert(group_member), [{"group_id": group_id, "organisation_id": i} for i in ids]
    )
    return group_code


def prepare_draft(app: Any, recipients: int | None) -> int:
    """Migrate, fill the directory and draft the seed letter to it; return the draft's id.

    ``recipients``: that many generated offices, or None for the bundled 63 departments.
    """
    from dispatch.clock import parse_moment
    from dispatch.directory import offices
    from dispatch.drafting import drafts
    from dispatch.extensions import db

    at = parse_moment(PREPARED_AT)
    migrate(app)
    with app.app_context():
        if recipients is None:
            offices.seed_directory(actor="system", at=at)
            group = offices.DEFAULT_GROUP_CODE
        else:
            group = generated_directory(recipients, at)
        draft = drafts.create_draft(SEED, group_code=group, actor=None, at=at)
        dispatch_id = draft.id
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return dispatch_id
