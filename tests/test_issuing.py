"""Drafts and issuing: register numbers, rendering once, the archive, the freeze, the outbox."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import stat
import threading
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import create_engine, func, select, text

from dispatch import archive, audit, issuing
from dispatch.archive import ArchiveError
from dispatch.calendar import deadline_for
from dispatch.clock import VN, parse_moment
from dispatch.directory import offices
from dispatch.drafting import drafts
from dispatch.extensions import db
from dispatch.letters.source import LetterSourceError
from dispatch.models import (
    AuditEntry,
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
    MessageKind,
    OutboxMessage,
    RegisterCounter,
)
from tests.letter_samples import SEED_FOLDER

ISSUE_AT = parse_moment("2021-11-15T08:30:00+07:00")
DRAFT_AT = parse_moment("2021-11-12T10:00:00+07:00")

postgres_only = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="needs PostgreSQL (TEST_DATABASE_URL)",
)


def _draft(folder: Path, actor=None, at: dt.datetime = DRAFT_AT) -> int:
    dispatch = drafts.create_draft(folder, group_code="so-tttt-2021", actor=actor, at=at)
    db.session.commit()
    return dispatch.id


def _count(model, *where) -> int:
    return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def _actions(dispatch_id: int | None = None) -> list[str]:
    query = select(AuditEntry.action).order_by(AuditEntry.id)
    if dispatch_id is not None:
        query = query.where(AuditEntry.dispatch_id == dispatch_id)
    return list(db.session.execute(query).scalars())


# --- drafts -------------------------------------------------------------------------------------


def test_a_draft_from_the_seed_folder_addresses_the_63_offices(seeded):
    dispatch = drafts.create_draft(
        SEED_FOLDER, group_code="so-tttt-2021", actor=seeded.clerk, at=DRAFT_AT
    )
    db.session.commit()
    assert dispatch.status is DispatchStatus.DRAFT
    assert dispatch.symbol == "THH-VP" and dispatch.register == "THH"
    assert dispatch.subject.startswith("tổ chức hướng dẫn và truyền thông về ứng dụng PC-Covid")
    assert dispatch.source["meta"]["symbol"] == "THH-VP"
    assert dispatch.number is None and dispatch.created_by_id == seeded.clerk.id
    assert len(dispatch.recipients) == 63
    bac_lieu = next(r for r in dispatch.recipients if r.province_code == "95")
    assert bac_lieu.name == "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"
    assert bac_lieu.email == "sovhttdl.baclieu@tinh.example"
    assert all(r.token_hash is None for r in dispatch.recipients)
    assert _count(OutboxMessage) == 0
    (entry,) = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "dispatch.drafted")
    ).scalars()
    assert entry.actor == "chuyenvien@thh.example" and entry.dispatch_id == dispatch.id
    assert entry.details["recipients_on"] == "2021-11-01"


def test_a_bad_source_names_its_file_and_line(seeded, letter_folder):
    folder = letter_folder(extra="signer_name: sai\n")
    with pytest.raises(LetterSourceError) as caught:
        drafts.create_draft(folder, group_code="so-tttt-2021", actor=None, at=DRAFT_AT)
    assert caught.value.path.endswith("letter.md")
    assert caught.value.line == 16
    assert "signer_name" in str(caught.value)
    assert _count(Dispatch) == 0


def test_an_unknown_group_is_refused_in_vietnamese(seeded, letter_folder):
    with pytest.raises(offices.DirectoryError, match="Không có nhóm nơi nhận mã 'khong-co'"):
        drafts.create_draft(letter_folder(), group_code="khong-co", actor=None, at=DRAFT_AT)


def test_the_letter_month_decides_which_offices_are_addressed(seeded, letter_folder):
    dispatch = drafts.create_draft(
        letter_folder(date="2024-03"), group_code="so-tttt-2021", actor=None, at=DRAFT_AT
    )
    names = {r.province_code: r.name for r in dispatch.recipients}
    assert len(names) == 63
    # Bạc Liêu's combined office closed in March 2023: its Sở TTTT is addressed instead.
    assert names["95"] == "Sở Thông tin và Truyền thông tỉnh Bạc Liêu"


def test_a_draft_can_be_updated_until_it_is_issued(seeded, letter_folder):
    dispatch_id = _draft(letter_folder())
    changed = drafts.update_draft(
        dispatch_id,
        actor=seeded.clerk,
        at=DRAFT_AT,
        source=letter_folder(subject="tiêu đề đã sửa", date="2024-03"),
        deadline_working_days=5,
    )
    db.session.commit()
    assert changed.subject == "tiêu đề đã sửa"
    assert changed.deadline_working_days == 5
    # Re-selected for the new month: Bạc Liêu's Sở TTTT of 2023 instead of its combined office.
    bac_lieu = next(r for r in changed.recipients if r.province_code == "95")
    assert len(changed.recipients) == 63 and bac_lieu.name.startswith("Sở Thông tin")
    (entry,) = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "dispatch.draft_updated")
    ).scalars()
    assert entry.details["subject"] == {
        "from": "thử nghiệm ban hành công văn",
        "to": "tiêu đề đã sửa",
    }
    assert entry.details["recipients"] == {"group": "so-tttt-2021", "on": "2024-03-01", "count": 63}
    with pytest.raises(drafts.DraftError, match="deadline_hour = 25"):
        drafts.update_draft(dispatch_id, actor=None, at=DRAFT_AT, deadline_hour=25)


def test_a_letter_kept_as_typed_goes_through_the_same_write_path(seeded, letter_folder):
    """The web composer's door: a wrong letter is kept, dated and addressed by the same rules
    as one from a folder, and audited in the same shape."""
    source = {"meta": {"symbol": "THH-VP", "date": "2024-03", "subject": "  chưa  xong "}}
    saved = drafts.save_as_typed(
        None,
        {**source, "body": "", "appendices": []},
        group_code="so-tttt-2021",
        recipient_ids=None,
        actor=seeded.clerk,
        at=DRAFT_AT,
    )
    db.session.commit()
    dispatch = saved.dispatch
    assert saved.created and dispatch.source["origin"] == f"bản nháp {dispatch.id}"
    assert (dispatch.subject, dispatch.register) == ("chưa xong", "THH")
    assert len(dispatch.recipients) == 63  # the offices of 01/03/2024, as for a folder
    assert next(r for r in dispatch.recipients if r.province_code == "95").name.startswith(
        "Sở Thông tin"
    )
    (drafted,) = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "dispatch.drafted")
    ).scalars()
    assert drafted.details["recipients_on"] == "2024-03-01"

    hanoi = next(r.organisation_id for r in dispatch.recipients if r.province_code == "01")
    again = drafts.save_as_typed(
        dispatch.id,
        {**source, "body": "", "appendices": []},
        group_code="so-tttt-2021",
        recipient_ids=[hanoi],
        actor=seeded.clerk,
        at=DRAFT_AT,
    )
    db.session.commit()
    assert again.changed == ("recipients",)
    assert [r.province_code for r in again.dispatch.recipients] == ["01"]
    (updated,) = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "dispatch.draft_updated")
    ).scalars()
    assert updated.details["recipients"]["count"] == 1
    assert updated.details["changed"] == ["recipients"]


@pytest.mark.nodb
def test_the_recipients_date_is_the_letter_day_else_its_month_else_today():
    assert drafts.recipients_date("2021-11-15", DRAFT_AT) == dt.date(2021, 11, 15)
    assert drafts.recipients_date("2021-11", DRAFT_AT) == dt.date(2021, 11, 1)
    assert drafts.recipients_date(dt.date(2022, 1, 3), DRAFT_AT) == dt.date(2022, 1, 3)
    for unreadable in ("11/2021", "2021-13", "", None):
        assert drafts.recipients_date(unreadable, DRAFT_AT) == dt.date(2021, 11, 12)


# --- issuing ------------------------------------------------------------------------------------


def test_issuing_numbers_renders_archives_freezes_and_queues(seeded, app):
    dispatch_id = _draft(SEED_FOLDER, actor=seeded.clerk)
    assert _count(OutboxMessage) == 0
    result = issuing.issue_dispatch(dispatch_id, actor=seeded.clerk, at=ISSUE_AT)
    db.session.expire_all()

    assert result.number == 1 and result.number_and_symbol == "01/THH-VP"
    assert result.issued_on == dt.date(2021, 11, 15)
    dispatch = db.session.get(Dispatch, dispatch_id)
    assert dispatch.status is DispatchStatus.ISSUED
    assert (dispatch.register, dispatch.register_year, dispatch.number) == ("THH", 2021, 1)
    assert dispatch.issued_on == dt.date(2021, 11, 15) and dispatch.issued_at == ISSUE_AT
    assert dispatch.issued_by_id == seeded.clerk.id
    assert dispatch.deadline_at == deadline_for(ISSUE_AT, working_days=3, hour=17)
    assert dispatch.deadline_at.astimezone(VN) == dt.datetime(2021, 11, 18, 17, 0, tzinfo=VN)

    # The archive: the exact bytes, read-only, named after the number, matching their rows.
    documents = {d.kind: d for d in dispatch.documents}
    assert set(documents) == {"pdf", "docx"}
    assert documents["pdf"].filename == "CV-01-THH-VP-2021-11-15.pdf"
    assert documents["docx"].filename == "CV-01-THH-VP-2021-11-15.docx"
    root = Path(app.config["DISPATCH_DATA_DIR"])
    for document in documents.values():
        path = root / document.path
        assert document.path.startswith(f"dispatches/{dispatch_id}/")
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == document.sha256
        assert len(data) == document.size
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert documents["pdf"].media_type == "application/pdf"
    assert result.pdf_sha256 == documents["pdf"].sha256
    assert not [p for p in (root / f"dispatches/{dispatch_id}").iterdir() if p.name.startswith(".")]

    pdf_text = "".join(
        page.extract_text() for page in PdfReader(root / documents["pdf"].path).pages
    )
    assert "Số: 01/THH-VP" in pdf_text
    assert "ngày 15 tháng 11 năm 2021" in pdf_text
    from docx import Document as Docx

    docx_text = "\n".join(
        cell.text
        for table in Docx(io.BytesIO((root / documents["docx"].path).read_bytes())).tables
        for row in table.rows
        for cell in row.cells
    )
    assert "Số: 01/THH-VP" in docx_text

    # One letter e-mail queued per recipient, each recipient with its confirmation token.
    messages = db.session.execute(select(OutboxMessage)).scalars().all()
    assert len(messages) == 63
    assert {m.kind for m in messages} == {MessageKind.LETTER}
    assert {m.status for m in messages} == {DeliveryStatus.QUEUED}
    recipients = {r.id: r for r in dispatch.recipients}
    assert {m.recipient_id for m in messages} == set(recipients)
    for message in messages:
        assert message.to_addrs == [recipients[message.recipient_id].email]
        assert message.next_attempt_at == ISSUE_AT
    assert all(r.token_hash and r.token_salt for r in recipients.values())
    assert len({r.token_hash for r in recipients.values()}) == 63

    # Every step audited, in order, and the chain intact.
    actions = _actions(dispatch_id)
    assert actions[0] == "dispatch.drafted"
    assert actions[1:] == [
        "register.number_taken",
        "document.archived",
        "document.archived",
        "outbox.letters_queued",
        "dispatch.issued",
    ]
    issued = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "dispatch.issued")
    ).scalar_one()
    assert issued.actor == "chuyenvien@thh.example"
    assert issued.details["number"] == "01/THH-VP"
    assert issued.details["pdf_sha256"] == documents["pdf"].sha256
    assert issued.details["docx_sha256"] == documents["docx"].sha256
    assert issued.details["recipients"] == 63
    assert audit.verify_chain() == []
    assert result.placeholder_addresses == 63


def test_an_archived_file_is_read_back_only_with_its_recorded_hash(seeded, app):
    dispatch_id = _draft(SEED_FOLDER)
    issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)
    pdf = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch_id, Document.kind == "pdf")
    ).scalar_one()
    path = Path(app.config["DISPATCH_DATA_DIR"]) / pdf.path
    assert archive.read_archived(pdf.path, pdf.sha256) == path.read_bytes()

    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"%altered")
    with pytest.raises(ArchiveError, match="SHA-256 không khớp") as altered:
        archive.read_archived(pdf.path, pdf.sha256)
    assert altered.value.found == path.read_bytes()
    with pytest.raises(ArchiveError, match="Không đọc được") as missing:
        archive.read_archived(f"dispatches/{dispatch_id}/khong-co.pdf", pdf.sha256)
    assert missing.value.found is None
    with pytest.raises(ArchiveError, match="ngoài thư mục lưu trữ"):
        archive.read_archived("../secret_key", pdf.sha256)


def test_numbers_run_per_register_and_vietnam_year(seeded, letter_folder):
    def issue(at: str, symbol: str = "THH-VP", date: str = "2021-12") -> Dispatch:
        dispatch_id = _draft(letter_folder(symbol=symbol, date=date))
        issuing.issue_dispatch(dispatch_id, actor=None, at=parse_moment(at))
        return db.session.get(Dispatch, dispatch_id)

    first = issue("2021-12-31T09:00:00+07:00")
    second = issue("2021-12-31T23:30:00+07:00")  # 16:30 UTC: still 2021 in Vietnam
    third = issue("2022-01-01T00:10:00+07:00", date="2022-01")  # 2021-12-31 17:10 UTC
    other = issue("2022-01-01T08:00:00+07:00", symbol="TTCN-KT", date="2022-01")
    fourth = issue("2022-01-03T08:00:00+07:00", symbol="THH-KH", date="2022-01")

    assert [(d.register, d.register_year, d.number) for d in (first, second, third)] == [
        ("THH", 2021, 1),
        ("THH", 2021, 2),
        ("THH", 2022, 1),
    ]
    assert third.number_and_symbol == "01/THH-VP" and third.issued_on == dt.date(2022, 1, 1)
    assert (other.register, other.number_and_symbol) == ("TTCN", "01/TTCN-KT")
    # Another drafting unit of the same body ("THH-KH") shares the body's register.
    assert (fourth.register, fourth.register_year, fourth.number) == ("THH", 2022, 2)
    counters = {
        (c.register, c.year): c.last_number
        for c in db.session.execute(select(RegisterCounter)).scalars()
    }
    assert counters == {("THH", 2021): 2, ("THH", 2022): 2, ("TTCN", 2022): 1}


def test_issuing_twice_is_refused(seeded, letter_folder):
    dispatch_id = _draft(letter_folder())
    issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)
    with pytest.raises(issuing.AlreadyIssued, match="đã được ban hành \\(số 01/THH-VP"):
        issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT + dt.timedelta(hours=1))
    assert db.session.get(RegisterCounter, ("THH", 2021)).last_number == 1
    assert _count(OutboxMessage) == 63
    assert _count(Document) == 2


def test_an_unknown_dispatch_is_refused(seeded):
    with pytest.raises(drafts.DraftError, match="Không có công văn mã 999"):
        issuing.issue_dispatch(999, actor=None, at=ISSUE_AT)


def test_an_issued_dispatch_refuses_every_edit(seeded, letter_folder):
    dispatch_id = _draft(letter_folder())
    issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)

    with pytest.raises(drafts.DispatchFrozen, match="01/THH-VP ngày 15/11/2021 đã ban hành"):
        drafts.update_draft(dispatch_id, actor=None, at=ISSUE_AT, source=letter_folder())
    db.session.rollback()

    # Any other path too: the flush itself refuses.
    dispatch = db.session.get(Dispatch, dispatch_id)
    for field, value in (
        ("subject", "sửa sau khi ban hành"),
        ("number", 7),
        ("source", {"meta": {}, "body": "", "appendices": []}),
        ("status", DispatchStatus.DRAFT),
    ):
        setattr(dispatch, field, value)
        with pytest.raises(drafts.DispatchFrozen):
            db.session.flush()
        db.session.rollback()
        dispatch = db.session.get(Dispatch, dispatch_id)

    document = dispatch.documents[0]
    document.sha256 = "0" * 64
    with pytest.raises(drafts.DispatchFrozen):
        db.session.flush()
    db.session.rollback()
    db.session.delete(db.session.get(Dispatch, dispatch_id).documents[0])
    with pytest.raises(drafts.DispatchFrozen):
        db.session.flush()
    db.session.rollback()

    # What may change after issuing still can: completion, the reminder switch.
    dispatch = db.session.get(Dispatch, dispatch_id)
    dispatch.status = DispatchStatus.COMPLETED
    dispatch.reminders_enabled = False
    db.session.commit()
    assert db.session.get(Dispatch, dispatch_id).number_and_symbol == "01/THH-VP"


def test_an_unwritable_archive_fails_cleanly_and_consumes_no_number(seeded, letter_folder, app):
    dispatch_id = _draft(letter_folder())
    good_dir = app.config["DISPATCH_DATA_DIR"]
    blocker = Path(good_dir).parent / "not-a-folder"
    blocker.write_text("a regular file: nothing can be created below it, even by root")
    app.config["DISPATCH_DATA_DIR"] = str(blocker / "data")

    with pytest.raises(issuing.ArchiveUnavailable, match="Không tạo được thư mục lưu trữ") as e:
        issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)
    assert isinstance(e.value, issuing.IssueError) and isinstance(e.value, ArchiveError)
    db.session.expire_all()
    dispatch = db.session.get(Dispatch, dispatch_id)
    assert dispatch.status is DispatchStatus.DRAFT and dispatch.number is None
    assert _count(RegisterCounter) == 0
    assert _count(Document) == 0 and _count(OutboxMessage) == 0
    assert "dispatch.issued" not in _actions()
    assert all(r.token_hash is None for r in dispatch.recipients)

    app.config["DISPATCH_DATA_DIR"] = good_dir
    result = issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)
    assert result.number_and_symbol == "01/THH-VP"  # no number was lost


def test_a_failure_after_queueing_rolls_back_queue_files_and_number(
    seeded, letter_folder, app, monkeypatch, test_database_url
):
    dispatch_id = _draft(letter_folder())
    folder = Path(app.config["DISPATCH_DATA_DIR"]) / f"dispatches/{dispatch_id}"
    seen: dict[str, int] = {}
    real_record = audit.record
    observer = create_engine(test_database_url)

    def failing_record(action, **kwargs):
        if action == "dispatch.issued":
            # Inside the issuing transaction: the rows are there for it, not for anyone else.
            seen["inside"] = _count(OutboxMessage)
            seen["files"] = len(list(folder.iterdir()))
            with observer.connect() as conn:
                seen["outside"] = conn.execute(
                    text("SELECT count(*) FROM outbox_message")
                ).scalar_one()
            raise RuntimeError("the database went away")
        return real_record(action, **kwargs)

    monkeypatch.setattr(issuing.audit, "record", failing_record)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)
    finally:
        observer.dispose()
    assert seen == {"inside": 63, "files": 2, "outside": 0}
    assert _count(OutboxMessage) == 0
    assert _count(RegisterCounter) == 0
    assert not folder.exists()
    assert db.session.get(Dispatch, dispatch_id).status is DispatchStatus.DRAFT

    monkeypatch.setattr(issuing.audit, "record", real_record)
    assert issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT).number == 1


def test_addresses_corrected_after_drafting_are_the_ones_sent_to(seeded, letter_folder):
    dispatch_id = _draft(letter_folder())
    offices.import_csv(
        ",".join(offices.COLUMNS[:11]) + "\n02,Hà Giang,tỉnh,Trung du và miền núi phía Bắc,"
        "Sở Thông tin và Truyền thông tỉnh Hà Giang,sotttt@hagiang.gov.vn,"
        "vanthu@hagiang.gov.vn,,2021-01-01,2025-02-28,no\n",
        actor="quantri@thh.example",
        at=DRAFT_AT,
    )
    issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)
    recipient = db.session.execute(
        select(DispatchRecipient).where(
            DispatchRecipient.dispatch_id == dispatch_id, DispatchRecipient.province_code == "02"
        )
    ).scalar_one()
    assert recipient.email == "sotttt@hagiang.gov.vn"
    assert recipient.cc == ["vanthu@hagiang.gov.vn"]
    message = db.session.execute(
        select(OutboxMessage).where(OutboxMessage.recipient_id == recipient.id)
    ).scalar_one()
    assert message.to_addrs == ["sotttt@hagiang.gov.vn"]
    assert message.cc_addrs == ["vanthu@hagiang.gov.vn"]
    entry = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "recipient.address_updated")
    ).scalar_one()
    assert entry.details["email"] == {
        "from": "sotttt.hagiang@tinh.example",
        "to": "sotttt@hagiang.gov.vn",
    }


def test_attachments_listed_in_the_letter_are_archived_too(
    seeded, letter_folder, app, tmp_path, monkeypatch
):
    project = tmp_path / "project"
    (project / "attachments").mkdir(parents=True)
    poster = b"\x89PNG\r\n\x1a\n a poster"
    (project / "attachments" / "ap-phich.png").write_bytes(poster)
    monkeypatch.setattr("dispatch.config.PROJECT_ROOT", project)
    dispatch_id = _draft(letter_folder(extra="attachments:\n  - ap-phich.png\n"))
    result = issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)
    attachment = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch_id, Document.kind == "attachment")
    ).scalar_one()
    assert attachment.filename == "ap-phich.png" and attachment.media_type == "image/png"
    assert attachment.sha256 == hashlib.sha256(poster).hexdigest()
    assert (Path(app.config["DISPATCH_DATA_DIR"]) / attachment.path).read_bytes() == poster
    assert len(result.documents) == 3


# --- PostgreSQL: two clerks at the same instant --------------------------------------------------


def _issue_in_thread(app, dispatch_id: int, barrier: threading.Barrier, results: dict) -> None:
    with app.app_context():
        try:
            barrier.wait()
            results[dispatch_id] = issuing.issue_dispatch(dispatch_id, actor=None, at=ISSUE_AT)
        except Exception as exc:  # reported to the test thread
            results[dispatch_id] = exc
        finally:
            db.session.remove()


@postgres_only
def test_two_issues_at_once_get_consecutive_numbers(seeded, letter_folder, app):
    first, second = _draft(letter_folder()), _draft(letter_folder())
    barrier = threading.Barrier(2)
    results: dict = {}
    threads = [
        threading.Thread(target=_issue_in_thread, args=(app, dispatch_id, barrier, results))
        for dispatch_id in (first, second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, issuing.IssueResult) for r in results.values()), results
    assert sorted(r.number for r in results.values()) == [1, 2]
    db.session.expire_all()
    numbers = sorted(
        db.session.execute(select(Dispatch.number).where(Dispatch.number.is_not(None))).scalars()
    )
    assert numbers == [1, 2]
    assert db.session.get(RegisterCounter, ("THH", 2021)).last_number == 2
    assert _count(OutboxMessage) == 126


@postgres_only
def test_the_same_draft_issued_twice_at_once_is_issued_once(seeded, letter_folder, app):
    dispatch_id = _draft(letter_folder())
    barrier = threading.Barrier(2)
    results: list = []

    def attempt() -> None:
        outcome: dict = {}
        _issue_in_thread(app, dispatch_id, barrier, outcome)
        results.append(outcome[dispatch_id])

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    successes = [r for r in results if isinstance(r, issuing.IssueResult)]
    refusals = [r for r in results if isinstance(r, issuing.AlreadyIssued)]
    assert len(successes) == 1 and len(refusals) == 1, results
    db.session.expire_all()
    assert db.session.get(RegisterCounter, ("THH", 2021)).last_number == 1
    assert _count(OutboxMessage) == 63
    assert _count(Document) == 2


def _small_draft(letter_folder, **letter) -> int:
    dispatch = drafts.create_draft(
        letter_folder(**letter), group_code=offices.DEFAULT_GROUP_CODE, actor=None, at=DRAFT_AT
    )
    db.session.commit()
    return dispatch.id


def test_issuing_earlier_than_the_registers_last_entry_is_refused(seeded, letter_folder):
    first, second, third = (_small_draft(letter_folder) for _ in range(3))
    issuing.issue_dispatch(first, actor=None, at=ISSUE_AT)

    with pytest.raises(issuing.IssueError, match="theo thứ tự thời gian") as caught:
        issuing.issue_dispatch(second, actor=None, at=ISSUE_AT - dt.timedelta(hours=1))
    assert "01/THH-VP" in str(caught.value) and "15/11/2021 08:30" in str(caught.value)
    db.session.rollback()
    assert db.session.get(Dispatch, second).number is None  # no number used up

    issuing.issue_dispatch(second, actor=None, at=ISSUE_AT)  # the same moment is in order
    issuing.issue_dispatch(third, actor=None, at=ISSUE_AT + dt.timedelta(days=1))
    numbers = [db.session.get(Dispatch, i).number for i in (first, second, third)]
    assert numbers == [1, 2, 3]
