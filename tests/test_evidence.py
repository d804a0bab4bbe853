"""Tamper evidence: the audit log's guards and chain, and the evidence package of a dispatch."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import event as sqlalchemy_event
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
    assert "5 mục, chuỗi băm và chữ ký khớp" in result.output
    assert "Chưa có điểm neo nào" in result.output
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
        lane=entries[1].lane,
    )
    forged.hash = audit._entry_hash(forged.prev_hash, forged)
    forged.mac = "0" * 64  # without the audit key, the forger can only guess
    db.session.execute(
        insert(table).values(
            {column.key: getattr(forged, column.key) for column in AuditEntry.__mapper__.columns}
        )
    )

    result = _verify(runner)

    assert result.exit_code == 1
    assert "2 chỗ hỏng trong 6 mục" in result.output
    assert f"mục {forged.id}: mục bị chèn thêm vào giữa chuỗi" in result.output
    assert f"mục {forged.id}: mục không mang chữ ký bằng khoá nhật ký" in result.output
    assert sorted((p.entry_id, p.reason) for p in audit.verify_chain()) == [
        (forged.id, audit.INSERTED),
        (forged.id, audit.BAD_MAC),
    ]


# --- The key and the checkpoints ---------------------------------------------------------------


def _rechain_without_the_key(edited_id: int) -> None:
    """What someone with write access to the database but not the key can do: edit a row and
    recompute every hash after it, in every lane."""
    table = AuditEntry.__table__
    entries = list(db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars())
    heads: dict[int, str] = {}
    for entry in entries:
        values: dict = {"prev_hash": heads.get(entry.lane, "")}
        if entry.id == edited_id:
            values["actor"] = "ke-gia-mao@example.org"
        for name, value in values.items():
            setattr(entry, name, value)
        values["hash"] = heads[entry.lane] = audit._entry_hash(values["prev_hash"], entry)
        db.session.execute(update(table).where(table.c.id == entry.id).values(**values))
    db.session.commit()


def test_an_edit_with_every_hash_recomputed_is_caught_by_the_key(db_app, runner, audit_unguarded):
    entries = _write_entries()
    _rechain_without_the_key(entries[1].id)

    result = _verify(runner)

    assert result.exit_code == 1
    assert f"mục {entries[1].id}: mục không mang chữ ký bằng khoá nhật ký" in result.output
    # The chain holds again, but from the edited entry on no key does (one transaction wrote
    # them, so they share a lane).
    assert [(p.entry_id, p.reason) for p in audit.verify_chain()] == [
        (entry.id, audit.BAD_MAC) for entry in entries[1:]
    ]


def test_the_key_is_needed_to_verify(db_app, runner):
    _write_entries(2)
    db_app.config["DISPATCH_AUDIT_KEY"] = "another-key"
    result = _verify(runner)
    assert result.exit_code == 1
    assert "2 chỗ hỏng trong 2 mục" in result.output


def test_entries_cut_off_the_end_are_reported_against_a_checkpoint(db_app, runner, audit_unguarded):
    entries = _write_entries()
    checkpoint = runner.invoke(args=["audit", "checkpoint", "--at", "2021-11-15T17:00:00+07:00"])
    assert checkpoint.exit_code == 0, checkpoint.output
    folder = Path(db_app.config["DISPATCH_DATA_DIR"]) / audit.CHECKPOINT_DIR
    assert [p.name for p in folder.iterdir()] == ["checkpoint-20211115T100000Z.json"]
    ok = _verify(runner)
    assert ok.exit_code == 0, ok.output
    assert "Khớp với 1 điểm neo" in ok.output

    # The end of a lane is cut off, from its newest entry before the checkpoint (the log's own
    # record of the checkpoint follows it): every chain that is left is intact.
    last_id, lane = entries[-1].id, entries[-1].lane
    db.session.execute(
        AuditEntry.__table__.delete().where(AuditEntry.lane == lane, AuditEntry.id >= last_id)
    )
    db.session.commit()
    assert audit.verify_chain() == []

    result = _verify(runner)

    assert result.exit_code == 1
    assert (
        f"mục {last_id}, mục cuối của làn {lane} lúc 15/11/2021 10:00 UTC, không còn: "
        "nhật ký đã bị cắt bớt"
    ) in result.output


def test_a_forged_checkpoint_is_refused(db_app, runner):
    _write_entries(2)
    path = audit.write_checkpoint(AT)
    assert '"count": 2' in path.read_text()
    path.write_text(path.read_text().replace('"count": 2', '"count": 9'))

    result = _verify(runner)

    assert result.exit_code == 1
    assert "chữ ký của điểm neo không khớp khoá" in result.output


def test_a_checkpoint_taken_while_another_writer_opens_a_lane_is_whole(db_app):
    # The scheduler's checkpoint reads every lane's head while workers append: a lane's first
    # entry committed in the middle of that reading is either in the checkpoint, whole, or not.
    _write_entries(2)
    [own_lane] = set(db.session.execute(select(AuditEntry.lane)).scalars())

    def another_writer() -> None:
        with db_app.app_context():
            db_app.extensions["dispatch_audit_thread_lanes"][threading.get_native_id()] = (
                own_lane + 1
            ) % audit.LANES
            audit.record("test.other", actor="system", at=AT, object_type="x", object_id=9)
            db.session.commit()

    appended = []

    def append_once(conn, cursor, statement, parameters, context, executemany):
        if not appended and "audit_entry" in statement and "count(" in statement.lower():
            appended.append(True)
            writer = threading.Thread(target=another_writer)
            writer.start()
            writer.join(timeout=60)

    sqlalchemy_event.listen(db.engine, "after_cursor_execute", append_once)
    try:
        heads = audit.lane_heads()
    finally:
        sqlalchemy_event.remove(db.engine, "after_cursor_execute", append_once)

    assert appended
    assert heads[own_lane]["count"] == 2
    for head in heads.values():
        entry = db.session.get(AuditEntry, head["last_id"])
        assert head["hash"] == entry.hash
        assert head["count"] == db.session.scalar(
            select(func.count()).where(AuditEntry.lane == entry.lane, AuditEntry.id <= entry.id)
        )


def test_writers_in_different_lanes_and_one_transaction_in_one_lane(db_app):
    # Entries of one transaction stay in one lane, whatever their object.
    for n in range(5):
        audit.record("test.step", actor="system", at=AT, object_type="dispatch", object_id=n)
    db.session.commit()
    assert len(set(db.session.execute(select(AuditEntry.lane)).scalars())) == 1

    # Other writers (threads here, worker processes in production) append to lanes of their own.
    def write(n: int) -> None:
        with db_app.app_context():
            audit.record("test.other", actor="system", at=AT, object_type="x", object_id=n)
            db.session.commit()

    for n in range(4):
        thread = threading.Thread(target=write, args=(n,))
        thread.start()
        thread.join(timeout=60)
    assert len(set(db.session.execute(select(AuditEntry.lane)).scalars())) > 2
    assert audit.verify_chain() == []


def _another_process_appends_to_this_lane(db_app) -> int:
    """Append "test.first" in this process's lane, then "test.other" to the same lane as
    another process would (this process's record of the lane's end kept as it was); the lane."""
    audit.record("test.first", actor="system", at=AT, object_type="x", object_id=1)
    db.session.commit()
    [lane] = db.session.execute(select(AuditEntry.lane)).scalars()
    known = db_app.extensions["dispatch_audit_lane_ends"]
    saved = dict(known)
    known.clear()
    audit.record("test.other", actor="system", at=AT, object_type="x", object_id=2)
    db.session.commit()
    known.update(saved)
    return lane


def test_an_append_goes_on_from_wherever_another_process_left_its_lane(db_app):
    # Another process appends to this lane: where this process left the lane is no longer
    # its end.
    _another_process_appends_to_this_lane(db_app)

    audit.record("test.again", actor="system", at=AT, object_type="x", object_id=3)
    db.session.commit()

    entries = list(db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars())
    assert [e.action for e in entries] == ["test.first", "test.other", "test.again"]
    assert entries[2].prev_hash == entries[1].hash
    assert audit.verify_chain() == []


def test_a_writer_that_finds_another_in_its_lane_moves_to_another_lane(db_app):
    # Two worker processes whose ids give them the same lane would each keep moving the end the
    # other expects (and lose their one-statement appends): the one that finds out moves away.
    lane = _another_process_appends_to_this_lane(db_app)

    # This transaction finds the end moved: it goes on in its lane; the next one in another.
    audit.record("test.again", actor="system", at=AT, object_type="x", object_id=3)
    db.session.commit()
    audit.record("test.moved", actor="system", at=AT, object_type="x", object_id=4)
    audit.record("test.moved", actor="system", at=AT, object_type="x", object_id=5)
    db.session.commit()
    audit.record("test.stays", actor="system", at=AT, object_type="x", object_id=6)
    db.session.commit()

    entries = list(db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars())
    lanes = [e.lane for e in entries]
    assert lanes[:3] == [lane] * 3
    assert lanes[3] != lane and lanes[3:] == [lanes[3]] * 3
    assert audit.verify_chain() == []


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


# --- The evidence package --------------------------------------------------------------------

ISSUE_AT = "2021-11-15T08:30:00+07:00"
DELIVER_AT = "2021-11-15T08:31:00+07:00"


@pytest.fixture()
def delivered(seeded, letter_folder, smtp_app, smtp_server, runner):
    """A letter issued for real to the 63 offices, delivered (Hà Giang's address refused with
    550), opened and confirmed by Bạc Liêu; returns its id."""
    from dispatch.drafting import drafts
    from dispatch.models import DispatchRecipient
    from dispatch.receipts.acknowledgements import acknowledge, record_opened

    dispatch_id = drafts.create_draft(
        letter_folder(), group_code="so-tttt-2021", actor=seeded.clerk, at=seeded.at
    ).id
    db.session.commit()
    issued = runner.invoke(
        args=["issue", "--confirm-placeholders", str(dispatch_id), "--at", ISSUE_AT]
    )
    assert issued.exit_code == 0, issued.output
    ha_giang = db.session.execute(
        select(DispatchRecipient).where(
            DispatchRecipient.dispatch_id == dispatch_id, DispatchRecipient.province_code == "02"
        )
    ).scalar_one()
    smtp_server.handler.reject[ha_giang.email] = "550 5.1.1 Mailbox unavailable"
    delivered = runner.invoke(args=["deliver", "--at", DELIVER_AT])
    assert "Đã gửi: 62; đang chờ gửi lại: 0; thất bại: 1." in delivered.output
    bac_lieu = db.session.execute(
        select(DispatchRecipient).where(
            DispatchRecipient.dispatch_id == dispatch_id, DispatchRecipient.province_code == "95"
        )
    ).scalar_one()
    confirmed_at = dt.datetime(2021, 11, 15, 9, 10, tzinfo=dt.UTC)
    record_opened(bac_lieu, ip="203.0.113.7", user_agent="Firefox", at=confirmed_at)
    acknowledge(
        bac_lieu,
        "Trần Thị Bích",
        "Văn thư",
        "Đã nhận đủ công văn và phụ lục.",
        ip="203.0.113.7",
        user_agent="Firefox",
        at=confirmed_at,
    )
    db.session.commit()
    return dispatch_id


def _export(runner, dispatch_id: int, out) -> object:
    return runner.invoke(
        args=["export", str(dispatch_id), "--out", str(out), "--at", "2021-11-16T10:00:00+07:00"]
    )


def _unzip(path, target) -> Path:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        archive.extractall(target)
    (folder,) = {name.split("/", 1)[0] for name in names}
    return Path(target) / folder


@pytest.mark.slow
def test_the_evidence_package_holds_the_exact_files_mails_replies_receipts_and_log(
    delivered, runner, smtp_server, tmp_path
):
    import csv
    import hashlib
    import json
    import subprocess

    from dispatch.models import Document, OutboxMessage

    dispatch_id = delivered
    out = tmp_path / "evidence.zip"

    result = _export(runner, dispatch_id, out)

    assert result.exit_code == 0, result.output
    assert f"ra {out}" in result.output
    folder = _unzip(out, tmp_path / "unzipped")
    assert folder.name == "CV-01-THH-VP-2021-11-15-chung-cu"
    # The manifest, checked by the standard tool, covers every file in the package.
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "MANIFEST.sha256"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    listed = {
        line.split("  ", 1)[1] for line in (folder / "MANIFEST.sha256").read_text().splitlines()
    }
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert listed == present - {"MANIFEST.sha256"}

    # The PDF is the archived one: its SHA-256 is the Document row's and the status report's.
    status = json.loads(runner.invoke(args=["status", str(dispatch_id), "--json"]).output)
    pdf_row = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch_id, Document.kind == "pdf")
    ).scalar_one()
    pdf = (folder / "documents" / pdf_row.filename).read_bytes()
    assert hashlib.sha256(pdf).hexdigest() == pdf_row.sha256 == status["pdf_sha256"]
    assert json.loads((folder / "status.json").read_text())["pdf_sha256"] == pdf_row.sha256
    docx_row = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch_id, Document.kind == "docx")
    ).scalar_one()
    assert hashlib.sha256((folder / "documents" / docx_row.filename).read_bytes()).hexdigest() == (
        docx_row.sha256
    )

    # Every accepted e-mail, byte for byte as the server received it.
    received = {m.message_id: m.raw for m in smtp_server.messages}
    messages = {m["message_id"]: m for m in json.loads((folder / "messages.json").read_text())}
    assert len(messages) == 63
    emls = sorted((folder / "messages").iterdir())
    assert len(emls) == 62 and not any(p.name.endswith(".rebuilt.eml") for p in emls)
    for message_id, raw in received.items():
        entry = messages[message_id]
        kept = (folder / entry["file"]).read_bytes()
        assert kept == raw, entry["file"]
        assert entry["exact_bytes"] is True
        assert entry["sent_sha256"] == hashlib.sha256(raw).hexdigest()
    # The refused office: no e-mail, the server's reply on record.
    with (folder / "messages.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = {row["recipient"]: row for row in csv.DictReader(handle)}
    assert rows["02"]["status"] == "failed"
    assert rows["02"]["smtp_reply"] == "550 5.1.1 Mailbox unavailable"
    assert rows["02"]["file"] == ""
    assert rows["01"]["smtp_reply"].startswith("250 2.0.0 OK queued as Q")
    with (folder / "smtp-replies.csv").open(encoding="utf-8-sig", newline="") as handle:
        replies = list(csv.DictReader(handle))
    assert sum(r["action"] == "message.sent" for r in replies) == 62
    (failure,) = [r for r in replies if r["action"] == "message.failed"]
    assert failure["smtp_reply"] == "550 5.1.1 Mailbox unavailable"
    assert failure["error"].endswith("550 5.1.1 Mailbox unavailable")
    assert failure["to"] == rows["02"]["to"]

    # The receipt, as confirmed through the link.
    with (folder / "confirmations.csv").open(encoding="utf-8-sig", newline="") as handle:
        confirmations = {row["code"]: row for row in csv.DictReader(handle)}
    assert confirmations["95"]["acknowledged_by"] == "Trần Thị Bích"
    assert confirmations["95"]["acknowledged_position"] == "Văn thư"
    assert confirmations["95"]["acknowledged_method"] == "link"
    assert confirmations["01"]["acknowledged_at"] == ""

    # The audit entries of the dispatch with their hashes; each one recomputes.
    lines = (folder / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["dispatch_id"] for r in records} == {dispatch_id}
    actions = Counter(r["action"] for r in records)
    assert actions["dispatch.issued"] == 1
    assert actions["message.sent"] == 62 and actions["message.failed"] == 1
    assert actions["recipient.acknowledged"] == 1
    for record in records:
        entry = AuditEntry(
            at=dt.datetime.fromisoformat(record["at"]),
            **{k: record[k] for k in ("actor", "action", "object_type", "object_id")},
            dispatch_id=record["dispatch_id"],
            details=record["details"],
        )
        assert audit._entry_hash(record["prev_hash"], entry) == record["hash"]
    (issued,) = [r for r in records if r["action"] == "dispatch.issued"]
    assert issued["details"]["pdf_sha256"] == pdf_row.sha256
    sent_hashes = {
        r["details"]["message_id"]: r["details"]["sha256"]
        for r in records
        if r["action"] == "message.sent"
    }
    for message_id, raw in received.items():
        assert sent_hashes[message_id] == hashlib.sha256(raw).hexdigest()
    chain = json.loads((folder / "chain.json").read_text())
    assert chain["valid"] is True and chain["problems"] == []
    assert (
        chain["last_hash"]
        == db.session.execute(
            select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
        ).scalar_one()
    )

    readme = (folder / "README.txt").read_text(encoding="utf-8")
    assert readme.startswith("GÓI CHỨNG CỨ CÔNG VĂN")
    assert "Công văn số 01/THH-VP ngày 15/11/2021" in readme
    assert f"SHA-256 của bản PDF đã ban hành: {pdf_row.sha256}" in readme
    assert "sha256sum -c MANIFEST.sha256" in readme
    assert "mọi tệp khớp bản ghi" in readme
    assert (
        db.session.execute(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.sent_path.is_(None), OutboxMessage.status == "sent")
        ).scalar_one()
        == 0
    )


@pytest.mark.slow
def test_a_package_of_altered_records_says_so_and_still_holds_them(
    delivered, runner, smtp_app, tmp_path
):
    import json

    from dispatch.models import Document, OutboxMessage

    root = Path(smtp_app.config["DISPATCH_DATA_DIR"])
    # A kept e-mail is lost: the package rebuilds it and says it is not the bytes sent.
    lost = db.session.execute(
        select(OutboxMessage)
        .where(OutboxMessage.dispatch_id == delivered, OutboxMessage.sent_path.is_not(None))
        .order_by(OutboxMessage.id)
        .limit(1)
    ).scalar_one()
    (root / lost.sent_path).unlink()

    first = _export(runner, delivered, tmp_path / "first.zip")

    assert first.exit_code == 1
    assert f"không còn tệp đã gửi {lost.sent_path}" in first.output
    assert "1 thư không còn bản gốc đã gửi" in first.output
    folder = _unzip(tmp_path / "first.zip", tmp_path / "first")
    (entry,) = [
        m
        for m in json.loads((folder / "messages.json").read_text())
        if m["message_id"] == lost.message_id
    ]
    assert entry["file"].endswith(".rebuilt.eml") and entry["exact_bytes"] is False
    assert lost.message_id.encode() in (folder / entry["file"]).read_bytes()

    # The archived PDF is altered: the package holds it as it is now, and says so.
    pdf_row = db.session.execute(
        select(Document).where(Document.dispatch_id == delivered, Document.kind == "pdf")
    ).scalar_one()
    pdf_path = root / pdf_row.path
    pdf_path.chmod(0o644)
    pdf_path.write_bytes(pdf_path.read_bytes() + b"%altered")

    second = _export(runner, delivered, tmp_path / "second.zip")

    assert second.exit_code == 1
    assert "Cảnh báo: có điểm không khớp với bản ghi:" in second.output
    assert f"Tệp lưu trữ {pdf_row.path} đã bị thay đổi" in second.output
    folder = _unzip(tmp_path / "second.zip", tmp_path / "second")
    readme = (folder / "README.txt").read_text(encoding="utf-8")
    assert "CẢNH BÁO: phát hiện điểm không khớp khi lập gói" in readme
    assert pdf_row.path in readme
    documents = {d["kind"]: d for d in json.loads((folder / "documents.json").read_text())}
    assert documents["pdf"]["matches"] is False and documents["docx"]["matches"] is True
    assert (folder / "documents" / pdf_row.filename).read_bytes().endswith(b"%altered")


def test_export_refuses_a_draft_or_an_unknown_dispatch(seeded, letter_folder, runner, tmp_path):
    from dispatch.drafting import drafts

    draft = drafts.create_draft(
        letter_folder(), group_code="so-tttt-2021", actor=None, at=seeded.at
    )
    db.session.commit()
    out = tmp_path / "x.zip"

    unknown = runner.invoke(args=["export", "999999", "--out", str(out)])
    not_issued = runner.invoke(args=["export", str(draft.id), "--out", str(out)])

    assert unknown.exit_code == 1 and "Lỗi: Không có công văn mã 999999." in unknown.output
    assert not_issued.exit_code == 1 and "còn là bản nháp" in not_issued.output
    assert not out.exists()
