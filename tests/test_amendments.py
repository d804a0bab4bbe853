"""Recall and replacement: a clerk asks, a leader approves, a new numbered letter goes out, and
nothing that was issued is edited or deleted."""

from __future__ import annotations

import datetime as dt
import os
import re

import pytest
from sqlalchemy import func, select

from dispatch import amendments
from dispatch.archive import read_archived
from dispatch.clock import VN
from dispatch.drafting import approval, drafts
from dispatch.edxml.exchange import package_for
from dispatch.edxml.package import RECALL, REPLACE
from dispatch.extensions import db
from dispatch.mail.sender import deliver_due
from dispatch.models import (
    ApprovalStatus,
    AuditEntry,
    DeliveryStatus,
    Dispatch,
    DispatchAmendment,
    DispatchRecipient,
    DispatchStatus,
    Document,
    MessageKind,
    OutboxMessage,
    Role,
)
from dispatch.receipts.acknowledgements import acknowledge, find_recipient
from dispatch.receipts.reminders import send_due_reminders
from dispatch.signing import verification
from dispatch.signing.demo import AGENCY_NAME, LEADER_NAME
from tests.fixtures.clerks import placeholder_confirmation, post_form
from tests.fixtures.pki import PASSWORD
from tests.fixtures.signing import PASSWORD_ENV, configure_agency, give_key
from tests.fixtures.smtp import ISSUED_AT

SENT = ISSUED_AT + dt.timedelta(minutes=1)
NEXT_DAY = dt.datetime(2021, 11, 16, 9, 0, tzinfo=VN)
DECIDED = dt.datetime(2021, 11, 16, 10, 0, tzinfo=VN)
OUR_ID = "000.00.15.G14"
# The seeded offices' addresses are placeholders (.example): each issue confirms them.
PLACEHOLDERS = amendments.Confirmations(placeholders=True)


def _frozen(dispatch_id: int) -> dict:
    """Everything issuing froze about a dispatch, and its archived bytes."""
    db.session.expire_all()
    dispatch = db.session.get(Dispatch, dispatch_id)
    documents = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch_id).order_by(Document.id)
    ).scalars()
    return {
        "fields": {
            name: getattr(dispatch, name)
            for name in ("source", "subject", "symbol", "number", "issued_on", "issued_at")
        },
        "documents": [(d.filename, d.sha256, read_archived(d.path, d.sha256)) for d in documents],
    }


def _token_of(message) -> str:
    body = message.email.get_body(("plain",)).get_content()
    (token,) = set(re.findall(r"/r/([A-Za-z0-9_-]{43})", body))
    return token


@pytest.fixture()
def sent(smtp_app, smtp_server, outbox_dispatch, desk):
    """A dispatch issued to three offices and delivered; the desk's clerk and leader."""
    smtp_app.config["DISPATCH_ORGAN_ID"] = OUR_ID
    dispatch = outbox_dispatch(codes=["01", "79", "96"])
    assert deliver_due(SENT).sent == 3
    db.session.expire_all()
    return db.session.get(Dispatch, dispatch.id)


def test_a_recall_is_approved_by_a_leader_issued_sent_and_confirmed(
    sent, desk, smtp_server, client
):
    clerk, leader = desk.users[Role.CLERK], desk.users[Role.LEADER]
    before = _frozen(sent.id)
    # Each office reads the original first: what the page keeps of the issued letter between
    # requests must not hide, later, that it was recalled.
    for message in list(smtp_server.messages):
        page = client.get(f"/r/{_token_of(message)}").get_data(as_text=True)
        assert "Số hiệu" in page or "01/THH-VP" in page
        assert "đã bị thu hồi" not in page
    # A reminder already waiting for the original is cancelled by the recall.
    send_due_reminders(NEXT_DAY)
    db.session.commit()
    waiting = (
        db.session.execute(
            select(OutboxMessage).where(
                OutboxMessage.dispatch_id == sent.id, OutboxMessage.kind == MessageKind.REMINDER
            )
        )
        .scalars()
        .all()
    )
    assert len(waiting) == 3

    amendment = amendments.request_recall(
        sent.id, reason="Nhầm số liệu tại mục 2.", actor=clerk, at=NEXT_DAY
    )
    db.session.commit()
    with pytest.raises(amendments.AmendmentError, match="đang xử lý"):
        amendments.request_recall(sent.id, reason="Lần nữa", actor=clerk, at=NEXT_DAY)
    db.session.rollback()
    with pytest.raises(amendments.AmendmentError, match="Chỉ lãnh đạo"):
        amendments.approve(amendment.id, actor=clerk, at=DECIDED)
    db.session.rollback()

    # Issued like any letter: its offices' placeholder addresses are confirmed first.
    with pytest.raises(amendments.ConfirmationNeeded, match="địa chỉ tạm"):
        amendments.approve(amendment.id, actor=leader, at=DECIDED)
    assert db.session.get(DispatchAmendment, amendment.id).new_id is None
    approved = amendments.approve(amendment.id, actor=leader, at=DECIDED, confirm=PLACEHOLDERS)
    db.session.expire_all()
    recall = db.session.get(Dispatch, approved.new_id)
    original = db.session.get(Dispatch, sent.id)
    assert recall.status is DispatchStatus.ISSUED and approved.number == "02/THH-VP"
    assert recall.subject.startswith("thu hồi Công văn số 01/THH-VP ngày 15/11/2021 về việc ")
    assert "Lý do thu hồi: Nhầm số liệu tại mục 2." in recall.source["body"]
    assert "xác nhận đã huỷ" in recall.source["body"]
    assert sorted(r.province_code for r in recall.recipients) == ["01", "79", "96"]
    assert original.status is DispatchStatus.RECALLED
    # Nothing that was issued changed: the letter, its number, its files.
    assert _frozen(sent.id) == before
    assert {m.status for m in waiting if db.session.refresh(m) is None} == {
        DeliveryStatus.CANCELLED
    }
    actions = [
        e.action
        for e in db.session.execute(
            select(AuditEntry).where(AuditEntry.dispatch_id == sent.id).order_by(AuditEntry.id)
        ).scalars()
    ]
    for action in ("dispatch.recall_requested", "dispatch.amendment_approved", "dispatch.recalled"):
        assert action in actions
    # No more reminders for the recalled letter.
    later = send_due_reminders(dt.datetime(2021, 11, 17, 9, 0, tzinfo=VN))
    assert sent.id not in [o.dispatch_id for o in later.outcomes]

    # The recall letter goes to each office; each is asked to confirm it deleted the letter.
    report = deliver_due(DECIDED + dt.timedelta(minutes=1))
    assert report.sent == 3
    recall_mail = smtp_server.messages[-1]
    assert "thu hồi Công văn số 01/THH-VP" in str(recall_mail.email["Subject"])
    token = _token_of(recall_mail)
    page = client.get(f"/r/{token}").get_data(as_text=True)
    assert "Đây là văn bản thu hồi Công văn số 01/THH-VP" in page
    recipient = find_recipient(token)
    acknowledge(recipient, "Lê Văn Cường", "Văn thư", "Đã xoá", None, None, DECIDED)
    db.session.commit()
    assert find_recipient(token).acknowledged_by == "Lê Văn Cường"
    # The original's own link still opens and says it was recalled.
    first = next(m for m in smtp_server.messages if m.rcpt_tos == recall_mail.rcpt_tos)
    old_page = client.get(f"/r/{_token_of(first)}").get_data(as_text=True)
    assert "Công văn này đã bị thu hồi bằng Công văn số 02/THH-VP" in old_page

    # Both letters name each other, on the page and in edXML (business type 1).
    html = desk.clerk.get(f"/dispatches/{sent.id}").get_data(as_text=True)
    assert "Đề nghị thu hồi" in html and "công văn số 02/THH-VP" in html
    package = package_for(recall, recall.recipients[0], at=DECIDED)
    assert package.business_type == RECALL
    assert package.response_for.document_id == f"{OUR_ID},2021/11/15,01/THH-VP"
    assert package.business_reason == "Nhầm số liệu tại mục 2."
    # A recalled letter cannot be recalled or replaced again.
    with pytest.raises(amendments.AmendmentError, match="Chỉ công văn đã ban hành"):
        amendments.request_recall(sent.id, reason="x", actor=clerk, at=DECIDED)


def test_a_replacement_through_the_web_gets_a_new_number_and_links_both(sent, desk, fixed_now):
    # The next day, when the 2021 offices are still the ones a letter of November goes to.
    fixed_now(NEXT_DAY)
    before = _frozen(sent.id)
    url = f"/dispatches/{sent.id}"
    response = post_form(
        desk.clerk, f"{url}/replace", {"reason": "Sai hạn báo cáo."}, token_from=url
    )
    assert response.status_code == 303 and response.headers["Location"].endswith("/edit")
    draft_id = int(re.search(r"/dispatches/(\d+)/edit", response.headers["Location"]).group(1))
    draft = db.session.get(Dispatch, draft_id)
    assert draft.status is DispatchStatus.DRAFT
    assert draft.source["body"] == sent.source["body"]
    assert [d for d in draft.source["meta"].get("attachments", [])]  # the carried file too
    # The clerk corrects the letter in the draft.
    corrected = dict(draft.source)
    corrected["body"] = sent.source["body"].replace("phối hợp thực hiện", "phối hợp báo cáo")
    drafts.save_as_typed(
        draft_id, corrected, group_code=None, recipient_ids=None,
        actor=desk.users[Role.CLERK], at=NEXT_DAY,
    )  # fmt: skip
    db.session.commit()
    # A clerk cannot approve; a leader can.
    (amendment_id,) = re.findall(
        r'data-amendment-id="(\d+)"', desk.clerk.get(url).get_data(as_text=True)
    )
    assert desk.clerk.post(f"/amendments/{amendment_id}/approve").status_code in (400, 403)
    leader_page = desk.leader.get(url).get_data(as_text=True)
    assert "Duyệt và ban hành" in leader_page
    confirm_url = f"/amendments/{amendment_id}/approve"
    assert f'href="{confirm_url}"' in leader_page
    page = desk.leader.get(confirm_url).get_data(as_text=True)
    assert "Ngày ghi trên văn bản mới: 16/11/2021" in page and 'data-placeholders="3"' in page
    assert "không ký số" in page  # no key configured: issued unsigned, as before
    # Without the placeholders' tick: back to the confirmation page, nothing issued.
    bare = post_form(desk.leader, confirm_url, {}, token_from=confirm_url)
    assert bare.status_code == 303 and bare.headers["Location"].endswith(confirm_url)
    assert db.session.get(Dispatch, draft_id).status is DispatchStatus.DRAFT
    approved = post_form(
        desk.leader, confirm_url, placeholder_confirmation(page), token_from=confirm_url
    )
    assert approved.status_code == 303
    db.session.expire_all()
    new = db.session.get(Dispatch, draft_id)
    original = db.session.get(Dispatch, sent.id)
    assert new.status is DispatchStatus.ISSUED
    # A number of its own in the register (issued today, so in today's year's register).
    assert (new.register_year, new.number) != (original.register_year, original.number)
    assert original.status is DispatchStatus.REPLACED
    assert _frozen(sent.id) == before
    assert "phối hợp báo cáo" in new.source["body"]
    queued = (
        db.session.execute(
            select(OutboxMessage).where(
                OutboxMessage.dispatch_id == new.id, OutboxMessage.kind == MessageKind.LETTER
            )
        )
        .scalars()
        .all()
    )
    assert len(queued) == 3  # the offices are asked to confirm the new letter
    html = desk.clerk.get(f"/dispatches/{new.id}").get_data(as_text=True)
    assert "Văn bản này thay thế công văn số" in html and "01/THH-VP" in html
    package = package_for(new, new.recipients[0], at=DECIDED)
    assert package.business_type == REPLACE
    assert package.response_for.code == "01/THH-VP"
    listing = desk.leader.get("/lanh-dao/").get_data(as_text=True)
    assert "Đã bị thay thế" in listing


def test_a_leader_may_decline_and_the_draft_stays_a_draft(sent, desk):
    clerk, leader = desk.users[Role.CLERK], desk.users[Role.LEADER]
    amendment = amendments.start_replacement(
        sent.id, reason="Đổi người ký.", actor=clerk, at=NEXT_DAY
    )
    db.session.commit()
    amendments.reject(amendment.id, note="Không cần thay thế.", actor=leader, at=DECIDED)
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Dispatch, sent.id).status is DispatchStatus.ISSUED
    assert db.session.get(Dispatch, amendment.new_id).status is DispatchStatus.DRAFT
    with pytest.raises(amendments.AmendmentError, match="đã bị từ chối"):
        amendments.approve(amendment.id, actor=leader, at=DECIDED)
    with pytest.raises(amendments.AmendmentError, match="nêu lý do"):
        amendments.request_recall(sent.id, reason="  ", actor=clerk, at=DECIDED)
    db.session.rollback()
    # After a refusal a new request may be made.
    amendments.request_recall(sent.id, reason="Sai địa chỉ nơi nhận.", actor=clerk, at=DECIDED)
    db.session.commit()
    assert db.session.execute(select(DispatchRecipient).limit(1)).scalar_one() is not None


def test_the_register_keeps_a_recalled_letter_with_a_note(sent, desk):
    from dispatch.reporting.register import build_register

    amendment = amendments.request_recall(
        sent.id, reason="Nhầm nơi nhận.", actor=desk.users[Role.CLERK], at=NEXT_DAY
    )
    db.session.commit()
    amendments.approve(
        amendment.id, actor=desk.users[Role.LEADER], at=DECIDED, confirm=PLACEHOLDERS
    )
    register = build_register(2021)
    text = repr(register)
    assert "01/THH-VP" in text and "02/THH-VP" in text and "Đã thu hồi" in text


# --- the questions of the normal issue path -----------------------------------------------------


def _dispatch_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Dispatch))


def test_a_recall_years_later_goes_to_the_successors_once_confirmed(sent, desk):
    """The offices of 2021 merged on 01/03/2025: a recall issued in 2026 asks before it goes
    to the offices that answer for them that day, and changes nothing until confirmed."""
    clerk, leader = desk.users[Role.CLERK], desk.users[Role.LEADER]
    later = dt.datetime(2026, 12, 5, 9, 0, tzinfo=VN)
    amendment = amendments.request_recall(sent.id, reason="Hết hiệu lực.", actor=clerk, at=later)
    db.session.commit()
    pending = amendments.issue_check(amendment.id, later)
    assert len(pending.check.stale) == 3 and not pending.check.date_differs
    count = _dispatch_count()
    for confirm in (PLACEHOLDERS, amendments.Confirmations(successors=True)):
        with pytest.raises(amendments.ConfirmationNeeded):
            amendments.approve(amendment.id, actor=leader, at=later, confirm=confirm)
        db.session.expire_all()
        assert _dispatch_count() == count  # no recall letter drafted
        assert db.session.get(DispatchAmendment, amendment.id).status.value == "requested"
    approved = amendments.approve(
        amendment.id,
        actor=leader,
        at=later,
        confirm=amendments.Confirmations(successors=True, placeholders=True),
    )
    db.session.expire_all()
    recall = db.session.get(Dispatch, approved.new_id)
    assert recall.status is DispatchStatus.ISSUED and recall.issued_on == later.date()
    successors = {
        code for item in pending.check.stale for code, _ in item.successors
    }  # fmt: skip
    assert {r.province_code for r in recall.recipients} == successors
    assert db.session.scalars(
        select(AuditEntry.action).where(
            AuditEntry.dispatch_id == recall.id, AuditEntry.action == "dispatch.readdressed"
        )
    ).all() == ["dispatch.readdressed"]


def test_a_replacement_issued_in_another_month_confirms_its_date(sent, desk):
    clerk, leader = desk.users[Role.CLERK], desk.users[Role.LEADER]
    amendment = amendments.start_replacement(sent.id, reason="Sai hạn.", actor=clerk, at=NEXT_DAY)
    db.session.commit()
    december = dt.datetime(2021, 12, 1, 9, 0, tzinfo=VN)
    pending = amendments.issue_check(amendment.id, december)
    assert pending.check.date_differs and pending.check.draft_date == "11/2021"
    with pytest.raises(amendments.ConfirmationNeeded, match="khác ngày 11/2021"):
        amendments.approve(amendment.id, actor=leader, at=december, confirm=PLACEHOLDERS)
    db.session.expire_all()
    assert db.session.get(DispatchAmendment, amendment.id).status.value == "requested"
    approved = amendments.approve(
        amendment.id,
        actor=leader,
        at=december,
        confirm=amendments.Confirmations(date=True, placeholders=True),
    )
    assert db.session.get(Dispatch, approved.new_id).issued_on == december.date()


# --- with the agency's key: signed recall and replacement letters -------------------------------


@pytest.fixture()
def signed_desk(sent, desk, smtp_app, pki, tmp_path, monkeypatch):
    """``sent`` (issued before any key was configured), then the agency's key configured and
    the desk's leader given the demo leader's key, its password in the environment."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    give_key(desk.users[Role.LEADER], pki)
    db.session.commit()
    configure_agency(smtp_app, pki, tmp_path)
    return desk


def _pdf_of(dispatch: Dispatch) -> bytes:
    document = next(d for d in dispatch.documents if d.kind == "pdf")
    return read_archived(document.path, document.sha256)


def test_a_recall_with_a_key_is_signed_by_the_leader_who_approves_it(
    sent, signed_desk, smtp_app, smtp_server, fixed_now
):
    fixed_now(DECIDED)
    desk = signed_desk
    clerk, leader = desk.users[Role.CLERK], desk.users[Role.LEADER]
    amendment = amendments.request_recall(
        sent.id, reason="Nhầm số liệu tại mục 2.", actor=clerk, at=NEXT_DAY
    )
    db.session.commit()
    # The leader's confirmation page shows the recall letter's text and who signs it.
    confirm_url = f"/amendments/{amendment.id}/approve"
    page = desk.leader.get(confirm_url).get_data(as_text=True)
    assert "Văn bản thu hồi sẽ ban hành" in page and "Lý do thu hồi: Nhầm số liệu" in page
    assert "ký số bằng khoá của bạn" in page

    approved = post_form(
        desk.leader, confirm_url, placeholder_confirmation(page), token_from=confirm_url
    )
    assert approved.status_code == 303
    assert "Đã duyệt; đã ban hành" in desk.leader.get(approved.headers["Location"]).get_data(
        as_text=True
    )
    db.session.expire_all()
    amendment = db.session.get(DispatchAmendment, amendment.id)
    recall = db.session.get(Dispatch, amendment.new_id)
    assert recall.status is DispatchStatus.ISSUED and recall.signed is True
    assert db.session.get(Dispatch, sent.id).status is DispatchStatus.RECALLED

    # Submitted to the approving leader (rendered once, archived), signed by them, then issued
    # with the agency's signature: each step adds to the bytes before it.
    (row,) = approval.history(recall.id)
    assert row.status is ApprovalStatus.APPROVED and row.leader_id == leader.id
    assert row.submitted_by_id == clerk.id
    submitted = approval.submitted_pdf(row)
    approved_pdf = read_archived(row.pdf_path, row.pdf_sha256)
    issued = _pdf_of(recall)
    assert approved_pdf.startswith(submitted) and issued.startswith(approved_pdf)
    result, passed, _ = verification.verify_file(issued, smtp_app.config)
    assert passed, result
    assert [s["role"] for s in result["signatures"]] == ["signer", "agency"]
    assert [s["name"] for s in result["signatures"]] == [LEADER_NAME, AGENCY_NAME]
    assert all(s["intact"] and s["trusted"] for s in result["signatures"])
    assert result["register"]["number"] == recall.number_and_symbol
    recorded = [
        e.action
        for e in db.session.scalars(
            select(AuditEntry).where(AuditEntry.dispatch_id == recall.id).order_by(AuditEntry.id)
        )
    ]
    order = [
        "dispatch.amendment_approved",
        "dispatch.submitted_for_signature",
        "dispatch.approved_by_signer",
        "dispatch.issued",
    ]
    assert [a for a in recorded if a in order] == order

    # What the offices receive is that signed original.
    assert deliver_due(DECIDED + dt.timedelta(minutes=1)).sent >= 3
    db.session.expire_all()
    recall_mail = smtp_server.messages[-1]
    attached = [
        part.get_content()
        for part in recall_mail.email.iter_attachments()
        if part.get_filename().startswith("CV-") and part.get_content_type() == "application/pdf"
    ]
    assert attached == [issued]


def test_a_leader_without_a_key_cannot_approve_a_recall_once_signing_is_on(
    sent, signed_desk, make_user, monkeypatch
):
    desk = signed_desk
    other = make_user("lanhdao.chuacokhoa@thh.example", Role.LEADER)
    amendment = amendments.request_recall(
        sent.id, reason="Nhầm.", actor=desk.users[Role.CLERK], at=NEXT_DAY
    )
    db.session.commit()
    count = _dispatch_count()
    with pytest.raises(amendments.AmendmentError, match="chưa có khoá ký số"):
        amendments.approve(
            amendment.id, actor=other, at=DECIDED, environ=os.environ, confirm=PLACEHOLDERS
        )
    # The key's password missing from the server's environment: refused too, before anything.
    with pytest.raises(amendments.AmendmentError, match=PASSWORD_ENV):
        amendments.approve(
            amendment.id, actor=desk.users[Role.LEADER], at=DECIDED, environ={},
            confirm=PLACEHOLDERS,
        )  # fmt: skip
    db.session.expire_all()
    assert _dispatch_count() == count
    assert db.session.get(DispatchAmendment, amendment.id).status.value == "requested"
    assert db.session.get(Dispatch, sent.id).status is DispatchStatus.ISSUED


def test_a_replacement_with_a_key_is_issued_once_its_draft_is_signed(sent, signed_desk, smtp_app):
    desk = signed_desk
    clerk, leader = desk.users[Role.CLERK], desk.users[Role.LEADER]
    amendment = amendments.start_replacement(sent.id, reason="Sai hạn.", actor=clerk, at=NEXT_DAY)
    db.session.commit()
    with pytest.raises(amendments.AmendmentError, match="chưa được lãnh đạo ký duyệt"):
        amendments.approve(
            amendment.id, actor=leader, at=DECIDED, environ=os.environ, confirm=PLACEHOLDERS
        )
    db.session.expire_all()
    assert db.session.get(DispatchAmendment, amendment.id).status.value == "requested"
    # The corrected draft goes through approval like any draft.
    approval.submit(amendment.new_id, leader_email=leader.email, actor=clerk, at=NEXT_DAY)
    approval.approve(amendment.new_id, actor=leader, at=NEXT_DAY, environ=os.environ)
    approved = amendments.approve(
        amendment.id, actor=leader, at=DECIDED, environ=os.environ, confirm=PLACEHOLDERS
    )
    db.session.expire_all()
    new = db.session.get(Dispatch, approved.new_id)
    assert new.status is DispatchStatus.ISSUED and new.signed is True
    assert db.session.get(Dispatch, sent.id).status is DispatchStatus.REPLACED
    result, passed, _ = verification.verify_file(_pdf_of(new), smtp_app.config)
    assert passed, result
    assert [s["role"] for s in result["signatures"]] == ["signer", "agency"]
