"""Sending at scale, as the benchmarks measure it (bench/issue_63, bench/issue_10000): claims in
batches, the sent bytes kept from a thread, the shared parts of a dispatch's e-mails read once,
issuing in chunks, the audit appended in bulk, SQLite in WAL mode, headers written fast."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from bench.common import record
from dispatch import audit, create_app, issuing
from dispatch.drafting.drafts import create_draft
from dispatch.extensions import db
from dispatch.mail import outbox, sender, smtp
from dispatch.mail.compose import _WIRE_POLICY, ComposeCache, ComposeError, compose
from dispatch.models import (
    AuditEntry,
    DeliveryStatus,
    DispatchRecipient,
    Document,
    MessageKind,
    OutboxMessage,
)
from tests.fixtures.smtp import ISSUED_AT

AT = ISSUED_AT + dt.timedelta(minutes=1)


def outbox_rows(dispatch_id: int) -> list[OutboxMessage]:
    db.session.expire_all()
    return list(
        db.session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.dispatch_id == dispatch_id)
            .order_by(OutboxMessage.id)
        ).scalars()
    )


# --- Delivery in batches --------------------------------------------------------------------


def test_a_run_claims_batch_after_batch_and_sends_all_over_one_connection(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    monkeypatch.setattr(sender, "CLAIM_BATCH", 3)
    dispatch = outbox_dispatch(8)
    dispatch_id = dispatch.id

    report = sender.deliver_due(AT)

    assert (report.claimed, report.sent, report.errors) == (8, 8, [])
    assert smtp_server.handler.connections == 1
    rows = outbox_rows(dispatch_id)
    assert [r.status for r in rows] == [DeliveryStatus.SENT] * 8
    # In the outbox's order, each exactly once, each kept byte for byte as accepted.
    assert [m.message_id for m in smtp_server.messages] == [r.message_id for r in rows]
    root = Path(smtp_app.config["DISPATCH_DATA_DIR"])
    for row, received in zip(rows, smtp_server.messages, strict=True):
        kept = (root / row.sent_path).read_bytes()
        assert hashlib.sha256(kept).hexdigest() == row.sent_sha256
        assert kept.replace(b"\r\n", b"\n") == received.raw.replace(b"\r\n", b"\n")
    # Three batches: three claim moments, one audit entry per claim, the chain whole.
    claims = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "message.claimed").order_by(AuditEntry.id)
    ).scalars()
    claims = list(claims)
    assert [int(entry.object_id) for entry in claims] == [r.id for r in rows]
    assert len({entry.at for entry in claims}) == 3
    assert audit.verify_chain() == []


def test_an_unreachable_server_leaves_the_later_batches_queued(
    smtp_app, dead_smtp_port, outbox_dispatch, monkeypatch
):
    monkeypatch.setattr(sender, "CLAIM_BATCH", 2)
    dispatch = outbox_dispatch(5)
    smtp_app.config["MAIL_PORT"] = dead_smtp_port

    report = sender.deliver_due(AT)

    assert (report.claimed, report.retrying, report.sent) == (2, 2, 0)
    assert [r.status.value for r in outbox_rows(dispatch.id)] == [
        "retrying",
        "retrying",
        "queued",
        "queued",
        "queued",
    ]


def test_each_reply_is_recorded_for_its_own_message_while_the_next_is_prepared(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    dispatch = outbox_dispatch(3)
    hand_over = smtp.SmtpSession.hand_over
    begun = []

    def hand_over_counting(self, envelope, data, *rest):
        headers = BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True)
        begun.append("".join(headers["Message-ID"].split()))
        if len(begun) == 2:
            smtp_server.handler.fail_data = 1  # this message's DATA will get a 451
        return hand_over(self, envelope, data, *rest)

    monkeypatch.setattr(smtp.SmtpSession, "hand_over", hand_over_counting)
    report = sender.deliver_due(AT)

    assert (report.sent, report.retrying) == (2, 1)
    rows = outbox_rows(dispatch.id)
    assert [r.status.value for r in rows] == ["sent", "retrying", "sent"]
    assert "451" in rows[1].last_error and rows[1].sent_at is None
    assert [m.message_id for m in smtp_server.messages] == [rows[0].message_id, rows[2].message_id]
    assert begun == [r.message_id for r in rows]


def test_each_outcome_is_committed_before_the_next_message_reaches_the_server(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    dispatch = outbox_dispatch(5)
    db.session.commit()
    # Another connection, as anyone reading the database sees it: only committed rows.
    observer = create_engine(smtp_app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool)
    handler = smtp_server.handler
    accept = handler.handle_DATA
    recorded_before: list[int] = []

    async def handle_data(server, session, envelope):
        with observer.connect() as conn:
            recorded_before.append(
                conn.execute(
                    text("SELECT count(*) FROM outbox_message WHERE status = 'sent'")
                ).scalar_one()
            )
        return await accept(server, session, envelope)

    monkeypatch.setattr(handler, "handle_DATA", handle_data)  # read as each connection opens
    try:
        report = sender.deliver_due(AT)
    finally:
        observer.dispose()

    assert report.sent == 5
    # When the server had a message's last byte, every earlier one was recorded sent.
    assert recorded_before == [0, 1, 2, 3, 4]
    assert [r.status.value for r in outbox_rows(dispatch.id)] == ["sent"] * 5
    assert audit.verify_chain() == []


class SendingObserver:
    """What the sender had done, and what another connection saw committed, at each e-mail
    composed and each message's data about to leave."""

    def __init__(self, app, server, monkeypatch) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        # Another connection, as anyone reading the database sees it: only committed rows.
        self.engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool)
        self.replies = 0
        self.sending = False  # a message's data is leaving: the line that ends it not yet
        # At each e-mail composed: whether a message's data was leaving, replies read,
        # recorded, accepted by the server.
        self.composed: list[tuple[bool, int, int, int]] = []
        self.before_data: list[tuple[int, int]] = []  # replies read, recorded
        send_data, read_reply, compose_message = (
            smtp._send_data,
            smtp.SmtpSession.read_reply,
            sender.compose,
        )

        def counting_send_data(*args):
            self.before_data.append((self.replies, self.recorded()))
            self.sending = True
            try:
                send_data(*args)
            finally:
                self.sending = False

        def counting_read_reply(session, handover):
            reply = read_reply(session, handover)
            self.replies += 1
            return reply

        def composing(row, **kwargs):
            self.composed.append(
                (self.sending, self.replies, self.recorded(), len(server.messages))
            )
            return compose_message(row, **kwargs)

        monkeypatch.setattr(smtp, "_send_data", counting_send_data)
        monkeypatch.setattr(smtp.SmtpSession, "read_reply", counting_read_reply)
        monkeypatch.setattr(sender, "compose", composing)

    def recorded(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT count(*) FROM outbox_message WHERE status = 'sent'")
            ).scalar_one()

    def close(self) -> None:
        self.engine.dispose()


def test_each_250_is_on_record_before_the_next_data_and_e_mails_are_composed_before_its_end(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    """The window in which a killed sender leaves an accepted message without its record (to
    go again after the lease) spans the server's 250 and its commit, taken while the server
    answers the next message's commands: no message's data leaves before every 250 read is
    on record. The next e-mails are composed while the server reads a message, before the line
    that ends it: nothing of that message can be accepted then."""
    count = sender.KEEP_AHEAD + 6  # more than the first messages composed in a row
    dispatch = outbox_dispatch(count)
    db.session.commit()
    observer = SendingObserver(smtp_app, smtp_server, monkeypatch)
    try:
        report = sender.deliver_due(AT)
    finally:
        observer.close()

    assert report.sent == count and len(observer.composed) == count
    # Whenever a message's data left, every reply read before was on record.
    assert observer.before_data == [(n, n) for n in range(count)]
    # Whenever an e-mail was composed, every message the server had accepted was on record.
    assert all(
        answered == recorded == accepted for _, answered, recorded, accepted in observer.composed
    ), observer.composed
    # Those composed after the first few were composed while a message's data was leaving.
    assert [sending for sending, *_ in observer.composed[-5:]] == [True] * 5
    assert [r.status.value for r in outbox_rows(dispatch.id)] == ["sent"] * count
    assert audit.verify_chain() == []


def test_a_database_failing_while_the_server_reads_a_message_sends_nothing_more(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    """An e-mail composed while the server reads another meets a database that fails: that
    other one is dropped before the line that ends it, so nothing of it is accepted, and it
    goes back to the queue untried with the rest."""
    from sqlalchemy.exc import OperationalError

    count = sender.KEEP_AHEAD + 4
    dispatch = outbox_dispatch(count)
    db.session.commit()
    ids = [row.id for row in outbox_rows(dispatch.id)]
    # The first e-mail composed while the server reads a message: the second message's, the
    # first message's companions having been composed before it went.
    failing = ids[sender.KEEP_AHEAD + 1]
    compose_claimed = sender._compose_claimed

    def failing_compose(claimed, *args):
        if claimed[0].id == failing:
            assert len(smtp_server.messages) == 1  # the second one is with the server
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        return compose_claimed(claimed, *args)

    monkeypatch.setattr(sender, "_compose_claimed", failing_compose)
    report = sender.deliver_due(AT)

    assert report.stopped is not None and "database is locked" in report.stopped
    # The second was dropped before the line that ends it: not accepted, back in the queue.
    assert (report.sent, report.released) == (1, count - 1)
    rows = outbox_rows(dispatch.id)
    assert [r.status.value for r in rows] == ["sent"] + ["queued"] * (count - 1)
    assert [r.attempts for r in rows[1:]] == [0] * (count - 1)
    assert [m.message_id for m in smtp_server.messages] == [rows[0].message_id]
    smtp_server.handler.wait_until(lambda h: h.holding == 0)
    assert len(smtp_server.messages) == 1
    assert audit.verify_chain() == []


def test_an_outcome_recorded_in_steps_survives_the_next_message_refused_or_a_failed_commit(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    """The outcome of one message is written while the server answers the next one's
    commands: whether that next one is refused there, or the database refuses the first try,
    each outcome is on record once, and the audit chain holds."""
    from sqlalchemy.exc import OperationalError

    dispatch = outbox_dispatch(4)
    db.session.commit()
    rows = outbox_rows(dispatch.id)
    smtp_server.handler.reject[rows[2].to_addrs[0].lower()] = "550 5.1.1 no such mailbox"
    marking_sent = sender._marking_sent
    tries = []

    def failing_once(row, *args):
        tries.append(row.id)
        if row.id == rows[0].id and tries.count(row.id) == 1:
            yield from marking_sent(row, *args)
            raise OperationalError("COMMIT", {}, Exception("database is locked"))
        yield from marking_sent(row, *args)

    monkeypatch.setattr(sender, "_marking_sent", failing_once)
    report = sender.deliver_due(AT)

    assert (report.sent, report.failed, report.stopped) == (3, 1, None)
    rows = outbox_rows(dispatch.id)
    assert [r.status.value for r in rows] == ["sent", "sent", "failed", "sent"]
    assert "550" in rows[2].last_error
    assert tries.count(rows[0].id) == 2  # tried again, patiently, before the next data left
    entries = db.session.execute(
        select(AuditEntry.object_id, AuditEntry.action).where(
            AuditEntry.object_type == "outbox_message"
        )
    ).all()
    outcomes = ["message.sent", "message.sent", "message.failed", "message.sent"]
    assert sorted(e for e in entries if e[1] != "message.claimed") == sorted(
        (str(row.id), action) for row, action in zip(rows, outcomes, strict=True)
    )
    assert [m.message_id for m in smtp_server.messages] == [
        rows[0].message_id,
        rows[1].message_id,
        rows[3].message_id,
    ]
    assert audit.verify_chain() == []


def test_each_message_is_kept_before_the_server_has_its_data(
    smtp_app, smtp_server, outbox_dispatch, monkeypatch
):
    dispatch = outbox_dispatch(4)
    ids = {row.message_id: row.id for row in outbox_rows(dispatch.id)}
    folder = Path(smtp_app.config["DISPATCH_DATA_DIR"]) / f"dispatches/{dispatch.id}/sent"
    # A temporary file a killed sender left behind, read-only, for the third message.
    folder.mkdir(parents=True)
    leftover = folder / f".tmp-{sorted(ids.values())[2]}.eml"
    leftover.write_bytes(b"half an e-mail")
    leftover.chmod(0o444)
    handler = smtp_server.handler
    accept = handler.handle_DATA
    kept_when_received = []

    async def handle_data(server, session, envelope):
        headers = BytesParser(policy=policy.compat32).parsebytes(
            envelope.original_content, headersonly=True
        )
        row_id = ids["".join(headers["Message-ID"].split())]
        kept = (folder / f"{row_id}.eml").read_bytes()
        kept_when_received.append(
            kept.replace(b"\r\n", b"\n") == envelope.original_content.replace(b"\r\n", b"\n")
        )
        return await accept(server, session, envelope)

    monkeypatch.setattr(handler, "handle_DATA", handle_data)
    report = sender.deliver_due(AT)

    assert report.sent == 4
    # When the server had each message's data, its exact bytes were already in the archive.
    assert kept_when_received == [True] * 4
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.eml" for i in ids.values())
    for row in outbox_rows(dispatch.id):
        assert hashlib.sha256((folder / f"{row.id}.eml").read_bytes()).hexdigest() == (
            row.sent_sha256
        )


def test_nothing_goes_without_its_copy_kept(smtp_app, smtp_server, outbox_dispatch):
    dispatch = outbox_dispatch(3)
    # The sent folder cannot be made: a file is in its way.
    folder = Path(smtp_app.config["DISPATCH_DATA_DIR"]) / f"dispatches/{dispatch.id}"
    (folder / "sent").write_text("not a folder")

    result = smtp_app.test_cli_runner().invoke(
        args=["deliver", "--at", "2021-11-15T08:31:00+07:00"]
    )

    assert result.exit_code == 1
    assert "Lỗi: Đã dừng gửi: không lưu được bản thư sẽ gửi vào kho lưu trữ" in result.output
    assert smtp_server.handler.mail_commands == 0 and smtp_server.messages == []
    rows = outbox_rows(dispatch.id)
    assert [(r.status.value, r.attempts) for r in rows] == [("queued", 0)] * 3


# --- Composing: what a dispatch's e-mails share ------------------------------------------------


def test_a_reminder_needs_only_the_pdf_even_from_the_shared_cache(smtp_app, outbox_dispatch):
    dispatch = outbox_dispatch(2)
    recipient = dispatch.recipients[0]
    outbox.enqueue(
        dispatch_id=dispatch.id,
        kind=MessageKind.REMINDER,
        to_addrs=[recipient.email],
        at=AT,
        recipient_id=recipient.id,
        sequence=1,
    )
    db.session.commit()
    docx = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch.id, Document.kind == "docx")
    ).scalar_one()
    (Path(smtp_app.config["DISPATCH_DATA_DIR"]) / docx.path).unlink()
    letter, _, reminder = outbox_rows(dispatch.id)
    cache = ComposeCache()

    mail = compose(reminder, at=AT, cache=cache)
    assert [a.content_type for a in mail.attachments] == ["application/pdf"]
    with pytest.raises(ComposeError, match="unreadable"):
        compose(letter, at=AT, cache=cache)
    # What the cache shares is the same as composing each e-mail from scratch.
    again = compose(reminder, at=AT, cache=cache)
    assert [a.data for a in again.attachments] == [a.data for a in compose(reminder).attachments]


def test_the_shared_parts_give_the_same_e_mails(smtp_app, outbox_dispatch):
    dispatch = outbox_dispatch(3)
    cache = ComposeCache()
    for row in outbox_rows(dispatch.id):
        shared = compose(row, at=AT, cache=cache)
        alone = compose(row, at=AT)
        first, second = _parse(shared.as_bytes()), _parse(alone.as_bytes())
        assert first["To"] == second["To"] and first["Subject"] == second["Subject"]
        assert [p.get_content() for p in first.iter_attachments()] == [
            p.get_content() for p in second.iter_attachments()
        ]
        assert first.get_body(("plain",)).get_content() == second.get_body(("plain",)).get_content()


def _parse(raw: bytes):
    from email.parser import BytesParser

    return BytesParser(policy=policy.default).parsebytes(raw)


@pytest.mark.nodb
@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["Subject", "To", "Content-Type", "X-Dispatch-Id", "Message-ID"]),
    value=st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("\t"),
        max_size=90,
    ),
)
def test_short_ascii_headers_are_written_as_compat32_writes_them(name, value):
    standard = policy.compat32.clone(linesep="\r\n", mangle_from_=False)
    assert _WIRE_POLICY.fold(name, value) == standard.fold(name, value)
    assert _WIRE_POLICY.fold_binary(name, value) == standard.fold_binary(name, value)


# --- Issuing in chunks ------------------------------------------------------------------------


def test_issuing_freezes_and_queues_the_recipients_chunk_by_chunk(
    seeded, letter_folder, monkeypatch
):
    monkeypatch.setattr(issuing, "FREEZE_CHUNK", 10)
    draft = create_draft(letter_folder(), group_code="so-tttt-2021", actor=None, at=seeded.at)
    db.session.commit()

    result = issuing.issue_dispatch(draft.id, actor=None, at=AT)

    assert (result.recipients, result.queued) == (63, 63)
    recipients = db.session.execute(
        select(DispatchRecipient).where(DispatchRecipient.dispatch_id == draft.id)
    ).scalars()
    hashes = [r.token_hash for r in recipients]
    assert len(hashes) == 63 and None not in hashes and len(set(hashes)) == 63
    letters = db.session.execute(
        select(func.count(), func.count(func.distinct(OutboxMessage.recipient_id))).where(
            OutboxMessage.dispatch_id == draft.id, OutboxMessage.kind == MessageKind.LETTER
        )
    ).one()
    assert tuple(letters) == (63, 63)
    queued = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "outbox.letters_queued")
    ).scalar_one()
    assert queued.details["queued"] == 63
    # Queued a second time, nothing new: the outbox's uniqueness holds for the bulk insert.
    again = outbox.enqueue_many(
        dispatch_id=draft.id,
        kind=MessageKind.LETTER,
        messages=[(r.id, [r.email], []) for r in draft.recipients],
        at=AT,
    )
    assert again == 0


# --- The audit log, appended in bulk ----------------------------------------------------------


def test_record_many_chains_exactly_as_record_would(db_app):
    audit.record("test.first", actor="system", at=AT, object_type="test", object_id=1)
    written = audit.record_many(
        [
            {
                "action": f"test.bulk.{n}",
                "actor": "system",
                "at": AT + dt.timedelta(seconds=n),
                "object_type": "test",
                "object_id": n,
                "details": {"n": n, "tên": "Bạc Liêu"},
            }
            for n in range(5)
        ]
    )
    audit.record("test.last", actor="system", at=AT, object_type="test", object_id=9)
    db.session.commit()

    entries = list(db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars())
    assert [e.action for e in entries] == ["test.first"] + [f"test.bulk.{n}" for n in range(5)] + [
        "test.last"
    ]
    assert written == [e.id for e in entries[1:6]]
    for before, entry in itertools.pairwise(entries):
        assert entry.prev_hash == before.hash
    assert audit.verify_chain() == []
    assert audit.record_many([]) == []


# --- SQLite and the benchmark results file ----------------------------------------------------


@pytest.mark.nodb
def test_sqlite_runs_in_write_ahead_logging_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("DISPATCH_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.db'}", "SECRET_KEY": "x"}
    )
    with app.app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        db.session.remove()
        db.engine.dispose()


@pytest.mark.nodb
def test_benchmark_figures_carry_the_machine_and_need_a_ratio(tmp_path):
    results = tmp_path / "results.json"
    entry = record("one", {"ratio": 1.25, "seconds": 2.0}, path=results)
    record("two", {"ratio": 0.5}, path=results)

    saved = json.loads(results.read_text(encoding="utf-8"))
    assert set(saved) == {"one", "two"}
    assert saved["one"] == entry
    assert entry["cpu_count"] >= 1 and len(entry["load_average"]) == 3
    assert dt.date.fromisoformat(entry["date"])
    with pytest.raises(ValueError, match="ratio"):
        record("three", {"seconds": 1.0}, path=results)
