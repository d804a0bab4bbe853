"""Tamper evidence: the audit log's guards and chain, and the evidence package of a dispatch."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from dispatch import audit
from dispatch.extensions import db
from dispatch.models import AuditEntry

on_postgres = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="needs PostgreSQL (TEST_DATABASE_URL)",
)

AT = dt.datetime(2021, 11, 15, 1, 30, tzinfo=dt.UTC)


def _write_entries(count: int = 5) -> list[AuditEntry]:
    for index in range(count):
        audit.record(
            "test.step",
            actor="chuyenvien@thh.example",
            at=AT + dt.timedelta(minutes=index),
            object_type="test",
            object_id=index,
            details={"bước": index},
        )
    db.session.commit()
    return list(db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars())


def _verify(runner):
    db.session.commit()
    db.session.expire_all()
    return runner.invoke(args=["audit", "verify"])


# --- The chain -------------------------------------------------------------------------------


def test_an_intact_log_verifies_and_names_its_last_hash(db_app, runner):
    entries = _write_entries()

    result = _verify(runner)

    assert result.exit_code == 0, result.output
    assert "5 mục, chuỗi băm khớp" in result.output
    assert f"Mục cuối: số {entries[-1].id}, mã băm {entries[-1].hash}." in result.output


def test_verify_names_an_edited_entry(db_app, runner, audit_unguarded):
    entries = _write_entries()
    db.session.execute(
        update(AuditEntry)
        .where(AuditEntry.id == entries[2].id)
        .values(details={"bước": 99})
        .execution_options(synchronize_session=False)
    )

    result = _verify(runner)

    assert result.exit_code == 1
    assert "KHÔNG toàn vẹn: 1 chỗ hỏng trong 5 mục" in result.output
    assert f"mục {entries[2].id}: mục bị sửa sau khi ghi" in result.output


def test_verify_names_an_edit_whose_hash_was_recomputed(db_app, runner, audit_unguarded):
    entries = _write_entries()
    forged = entries[1]
    forged.actor = "ke-gia-mao@example.org"
    forged.hash = audit._entry_hash(forged.prev_hash, forged)
    db.session.commit()

    result = _verify(runner)

    # The forged row is consistent in itself; the next one no longer links to it.
    assert result.exit_code == 1
    assert f"mục {entries[2].id}: mục trước bị xoá hoặc bị sửa" in result.output


def test_verify_names_the_entry_after_a_deleted_one(db_app, runner, audit_unguarded):
    entries = _write_entries()
    db.session.execute(AuditEntry.__table__.delete().where(AuditEntry.id == entries[3].id))

    result = _verify(runner)

    assert result.exit_code == 1
    assert "1 chỗ hỏng trong 4 mục" in result.output
    assert f"mục {entries[4].id}: mục trước bị xoá hoặc bị sửa" in result.output


def test_verify_names_an_entry_inserted_in_the_middle(db_app, runner, audit_unguarded):
    entries = _write_entries()
    table = AuditEntry.__table__
    # Make room after the second entry, as someone rewriting the table would.
    db.session.execute(update(table).where(table.c.id > entries[1].id).values(id=table.c.id + 1000))
    forged = AuditEntry(
        id=entries[1].id + 1,
        at=AT + dt.timedelta(minutes=1, seconds=30),
        actor="chuyenvien@thh.example",
        action="dispatch.issued",
        object_type="dispatch",
        object_id="7",
        dispatch_id=7,
        details={"number": "07/THH-VP"},
        prev_hash=entries[1].hash,
    )
    forged.hash = audit._entry_hash(forged.prev_hash, forged)
    db.session.execute(
        insert(table).values(
            {column.key: getattr(forged, column.key) for column in AuditEntry.__mapper__.columns}
        )
    )

    result = _verify(runner)

    assert result.exit_code == 1
    assert "1 chỗ hỏng trong 6 mục" in result.output
    assert f"mục {forged.id}: mục bị chèn thêm vào giữa chuỗi" in result.output
    assert [(p.entry_id, p.reason) for p in audit.verify_chain()] == [(forged.id, audit.INSERTED)]


# --- The database guard (PostgreSQL) ---------------------------------------------------------


@on_postgres
@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entry SET actor = 'ke-gia-mao' WHERE id = {id}",
        "DELETE FROM audit_entry WHERE id = {id}",
        "TRUNCATE audit_entry",
    ],
)
def test_postgres_refuses_changing_or_removing_audit_entries(db_app, statement):
    entries = _write_entries(2)

    with pytest.raises(DBAPIError, match="audit_entry is append-only"):
        db.session.execute(text(statement.format(id=entries[0].id)))
    db.session.rollback()

    count = db.session.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    assert count == 2
    assert audit.verify_chain() == []
    # Appending is what the log is for.
    audit.record("test.after", actor="system", at=AT, object_type="test")
    db.session.commit()
    assert audit.verify_chain() == []


@on_postgres
@pytest.mark.postgres
def test_with_the_trigger_disabled_the_chain_still_tells(db_app, runner):
    entries = _write_entries(3)
    db.session.commit()
    # An attacker with DDL rights: disable the guard, edit, enable it again to hide the trace.
    db.session.execute(text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only"))
    db.session.execute(
        text("UPDATE audit_entry SET actor = 'ke-gia-mao' WHERE id = :id"), {"id": entries[1].id}
    )
    db.session.execute(text("ALTER TABLE audit_entry ENABLE TRIGGER audit_entry_append_only"))
    db.session.commit()

    result = _verify(runner)

    assert result.exit_code == 1
    assert f"mục {entries[1].id}: mục bị sửa sau khi ghi" in result.output
