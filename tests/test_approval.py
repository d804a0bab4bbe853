"""Approval (trình ký, ký duyệt) before issuing a signed original: a clerk submits a draft to a
leader with a signing key; the leader signs it or returns it with a comment; the clerk withdraws
it to edit. With the agency's key configured only an approved draft is issued, as the signed PDF
the leader approved plus the agency's signature; without one, letters go out unsigned.

Real parts: the demo PKI (PKCS#12 leader key, the agency's key on SoftHSM2 when installed),
pyHanko, poppler's pdfsig, a real SMTP server on loopback, the archive on disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatch.accounts import users
from dispatch.archive import read_archived
from dispatch.clock import VN
from dispatch.drafting import approval, drafts, uploads
from dispatch.drafting.drafts import AwaitingSignature
from dispatch.extensions import db
from dispatch.models import ApprovalStatus, AuditEntry, Dispatch, DispatchApproval, Role
from dispatch.signing import pades
from dispatch.signing.demo import AGENCY_NAME, LEADER_NAME
from tests.fixtures.database import SEED_AT
from tests.fixtures.dispatches import DRAFT_AT, group_of
from tests.fixtures.files import pdf_bytes
from tests.fixtures.pki import PASSWORD
from tests.fixtures.signing import PASSWORD_ENV, configure_agency, give_key
from tests.fixtures.web import csrf_token_from
from tests.test_archival import archival_facts

LEADER = "lanhdao.kyduyet@thh.example"
OTHER_LEADER = "phocuctruong@thh.example"
CODES = ("01", "79", "48")
ISSUE_AT_TEXT = "2021-11-15T08:30:00+07:00"
ATTACHMENT = "Hướng dẫn kèm theo.pdf"


@pytest.fixture()
def signing(seeded, letter_folder, pki, monkeypatch):
    """A leader with a key (its password in the environment), another without one, and a
    finished draft (with a PDF attachment) from the seeded clerk to three offices."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    leader = users.create_user(
        LEADER, role=Role.LEADER, password=None, at=SEED_AT, actor="system", name="Lãnh Đạo"
    )
    other = users.create_user(OTHER_LEADER, role=Role.LEADER, password=None, at=SEED_AT,
                              actor="system")  # fmt: skip
    give_key(leader, pki)
    draft = drafts.create_draft(
        letter_folder(), group_code=group_of(CODES), actor=seeded.clerk, at=DRAFT_AT
    )
    db.session.flush()
    uploads.add_attachment(draft.id, ATTACHMENT, pdf_bytes(), actor=seeded.clerk, at=DRAFT_AT)
    db.session.commit()

    class Desk:
        pass

    desk = Desk()
    desk.clerk, desk.leader, desk.other, desk.draft_id, desk.pki = (
        seeded.clerk, leader, other, draft.id, pki,
    )  # fmt: skip
    return desk


def actions(dispatch_id: int) -> list[str]:
    return list(
        db.session.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.dispatch_id == dispatch_id)
            .order_by(AuditEntry.id)
        )
    )


# --- the states ------------------------------------------------------------------------------


def test_submit_return_resubmit_approve_withdraw_with_history_and_audit(signing):
    d = signing
    first = approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    db.session.commit()
    assert first.status is ApprovalStatus.SUBMITTED
    assert [a.id for a in approval.waiting_for(d.leader)] == [first.id]
    assert approval.waiting_for(d.other) == []

    # Under submission the letter cannot be edited, through any door.
    with pytest.raises(AwaitingSignature, match="đang trình lãnh đạo ký duyệt"):
        drafts.update_draft(d.draft_id, actor=d.clerk, at=DRAFT_AT, deadline_hour=16)
    db.session.rollback()
    with pytest.raises(AwaitingSignature):
        uploads.add_attachment(d.draft_id, "khac.pdf", pdf_bytes(), actor=d.clerk, at=DRAFT_AT)
    db.session.rollback()
    with pytest.raises(approval.ApprovalError, match="đang trình"):
        approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    db.session.rollback()

    with pytest.raises(approval.ApprovalError, match="ý kiến"):
        approval.return_draft(d.draft_id, comment="  ", actor=d.leader, at=DRAFT_AT)
    db.session.rollback()
    approval.return_draft(d.draft_id, comment="Sửa lại đoạn 2.", actor=d.leader, at=DRAFT_AT)
    db.session.commit()
    # Returned: editable again.
    drafts.update_draft(d.draft_id, actor=d.clerk, at=DRAFT_AT, deadline_hour=16)
    db.session.commit()

    approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    db.session.commit()
    signed = approval.approve(d.draft_id, actor=d.leader, at=DRAFT_AT, environ=os.environ)
    row = db.session.get(DispatchApproval, signed.approval_id)
    assert row.status is ApprovalStatus.APPROVED and row.pdf_sha256 == signed.pdf_sha256
    assert LEADER_NAME in row.certificate
    # The archived approved PDF is the exact signed bytes, and carries the leader's signature.
    _, data = approval.approved_pdf(d.draft_id)
    assert pades.signatures_in(data) == [pades.APPROVAL_FIELD]
    reports = pades.verify(data, [d.pki.root_pem.read_bytes()])
    assert reports[0].role == "signer" and reports[0].intact and reports[0].trusted
    with pytest.raises(AwaitingSignature, match="đã được lãnh đạo ký duyệt"):
        drafts.update_draft(d.draft_id, actor=d.clerk, at=DRAFT_AT, deadline_hour=15)
    db.session.rollback()

    withdrawn = approval.withdraw(d.draft_id, actor=d.clerk, at=DRAFT_AT)
    db.session.commit()
    assert withdrawn.status is ApprovalStatus.WITHDRAWN and withdrawn.withdrawn_by_id == d.clerk.id
    with pytest.raises(approval.NotApproved):
        approval.approved_pdf(d.draft_id)
    drafts.update_draft(d.draft_id, actor=d.clerk, at=DRAFT_AT, deadline_hour=15)
    db.session.commit()

    history = approval.history(d.draft_id)
    assert [h.status for h in history] == [ApprovalStatus.RETURNED, ApprovalStatus.WITHDRAWN]
    assert history[0].comment == "Sửa lại đoạn 2." and history[0].decided_at is not None
    assert history[1].pdf_sha256 == signed.pdf_sha256  # the void approval stays on record
    recorded = actions(d.draft_id)
    for action in (
        "dispatch.submitted_for_signature",
        "dispatch.returned_by_signer",
        "dispatch.approved_by_signer",
        "dispatch.signature_withdrawn",
    ):
        assert action in recorded
    assert recorded.count("dispatch.submitted_for_signature") == 2
    entries = db.session.scalars(
        select(AuditEntry).where(AuditEntry.dispatch_id == d.draft_id)
    ).all()
    # The key's password never reaches the audit log.
    assert all(PASSWORD not in json.dumps(e.details, ensure_ascii=False) for e in entries)
    approved = next(e for e in entries if e.action == "dispatch.approved_by_signer")
    assert approved.actor == LEADER and approved.details["pdf_sha256"] == signed.pdf_sha256


def test_refusals_wrong_leader_no_key_clerk_unfinished_draft(signing, letter_folder):
    d = signing
    with pytest.raises(approval.LeaderRefused, match="chưa có khoá ký số"):
        approval.submit(d.draft_id, leader_email=OTHER_LEADER, actor=d.clerk, at=DRAFT_AT)
    db.session.rollback()
    with pytest.raises(approval.LeaderRefused, match="không phải lãnh đạo"):
        approval.submit(d.draft_id, leader_email=d.clerk.email, actor=d.clerk, at=DRAFT_AT)
    db.session.rollback()
    with pytest.raises(approval.ApprovalError, match="Chỉ văn thư"):
        approval.submit(d.draft_id, leader_email=LEADER, actor=d.leader, at=DRAFT_AT)
    db.session.rollback()

    approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    db.session.commit()
    # Another leader (even one with a key) and a clerk cannot sign or return it.
    give_key(d.other, d.pki)
    db.session.commit()
    with pytest.raises(approval.ApprovalError, match="không phải " + OTHER_LEADER):
        approval.approve(d.draft_id, actor=d.other, at=DRAFT_AT, environ=os.environ)
    with pytest.raises(approval.ApprovalError, match="Chỉ lãnh đạo"):
        approval.approve(d.draft_id, actor=d.clerk, at=DRAFT_AT, environ=os.environ)
    with pytest.raises(approval.ApprovalError, match="không phải"):
        approval.return_draft(d.draft_id, comment="Không", actor=d.other, at=DRAFT_AT)
    db.session.rollback()
    # The password's variable missing from the environment: refused, nothing signed.
    with pytest.raises(approval.ApprovalError, match=PASSWORD_ENV):
        approval.approve(d.draft_id, actor=d.leader, at=DRAFT_AT, environ={})
    assert approval.open_approval(d.draft_id).status is ApprovalStatus.SUBMITTED
    assert "dispatch.approved_by_signer" not in actions(d.draft_id)

    # A draft that is not a finished letter cannot be submitted.
    unfinished = drafts.save_as_typed(
        None, {"meta": {"subject": "chưa xong"}, "body": ""}, group_code=None,
        recipient_ids=[], actor=d.clerk, at=DRAFT_AT,
    ).dispatch  # fmt: skip
    db.session.commit()
    with pytest.raises(approval.DraftNotReady, match="còn lỗi"):
        approval.submit(unfinished.id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)


def test_issuing_refuses_an_unapproved_draft_once_a_key_is_configured(
    signing, db_app, runner, tmp_path
):
    d = signing
    configure_agency(db_app, d.pki, tmp_path)
    refused = runner.invoke(
        args=["issue", str(d.draft_id), "--confirm-placeholders", "--at", ISSUE_AT_TEXT]
    )
    assert refused.exit_code == 1
    assert "chưa được lãnh đạo ký duyệt" in refused.output
    approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    db.session.commit()
    waiting = runner.invoke(
        args=["issue", str(d.draft_id), "--confirm-placeholders", "--at", ISSUE_AT_TEXT]
    )
    assert waiting.exit_code == 1 and "đang chờ lãnh đạo ký duyệt" in waiting.output
    db.session.expire_all()
    assert db.session.get(Dispatch, d.draft_id).number is None  # no number was taken


def test_with_a_tsa_both_signatures_of_the_original_are_long_term(
    signing, db_app, runner, tmp_path
):
    """DISPATCH_TSA_URL time-stamps the leader's signature as well as the agency's, each with
    its revocation information embedded (PAdES B-LT), as the signing settings promise."""
    d = signing
    configure_agency(db_app, d.pki, tmp_path)
    db_app.config["DISPATCH_TSA_URL"] = d.pki.tsa_url
    approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    db.session.commit()
    signed = approval.approve(d.draft_id, actor=d.leader, at=DRAFT_AT, environ=os.environ)
    _, approved = approval.approved_pdf(d.draft_id)
    reports = pades.verify(approved, [d.pki.root_pem.read_bytes()])
    assert [(r.role, r.level) for r in reports] == [("signer", "B-LT")], signed
    result = runner.invoke(
        args=["issue", str(d.draft_id), "--confirm-placeholders", "--at", ISSUE_AT_TEXT]
    )
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    document = next(
        doc for doc in db.session.get(Dispatch, d.draft_id).documents if doc.kind == "pdf"
    )
    issued = read_archived(document.path, document.sha256)
    reports = pades.verify(issued, [d.pki.root_pem.read_bytes()])
    assert [(r.role, r.level, r.intact) for r in reports] == [
        ("signer", "B-LT", True),
        ("agency", "B-LT", True),
    ]


def test_without_a_key_issuing_is_unsigned_and_says_so(signing, db_app, runner):
    d = signing
    assert not db_app.config.get("DISPATCH_AGENCY_KEY")
    result = runner.invoke(
        args=["issue", str(d.draft_id), "--confirm-placeholders", "--at", ISSUE_AT_TEXT]
    )
    assert result.exit_code == 0, result.output
    assert "Chưa cấu hình khoá ký số: văn bản được ban hành không ký số." in result.output
    db.session.expire_all()
    dispatch = db.session.get(Dispatch, d.draft_id)
    assert dispatch.signed is False
    pdf = next(doc for doc in dispatch.documents if doc.kind == "pdf")
    data = (Path(db_app.config["DISPATCH_DATA_DIR"]) / pdf.path).read_bytes()
    assert pades.signatures_in(data) == []


# --- the whole way from the command line -------------------------------------------------------


def _pdf_attachments(raw: bytes) -> dict[str, bytes]:
    import email
    from email import policy

    message = email.message_from_bytes(raw, policy=policy.default)
    return {
        part.get_filename(): part.get_content()
        for part in message.iter_attachments()
        if part.get_content_type() == "application/pdf"
    }


def test_cli_submit_approve_issue_deliver_verify(signing, smtp_app, smtp_server, runner, tmp_path):
    """dispatch draft submit → dispatch approve → dispatch issue (agency key on SoftHSM2 when
    installed) → dispatch deliver; the PDF the office receives verifies with both signers."""
    d = signing
    configure_agency(smtp_app, d.pki, tmp_path)
    clerk = d.clerk.email
    submit = runner.invoke(
        args=["draft", "submit", str(d.draft_id), "--to", LEADER, "--as", clerk,
              "--at", "2021-11-12T09:00:00+07:00"],
    )  # fmt: skip
    assert submit.exit_code == 0, submit.output
    wrong = runner.invoke(args=["approve", str(d.draft_id), "--as", OTHER_LEADER])
    assert wrong.exit_code == 1 and "không phải" in wrong.output
    approve = runner.invoke(
        args=["approve", str(d.draft_id), "--as", LEADER, "--at", "2021-11-12T10:00:00+07:00"]
    )
    assert approve.exit_code == 0, approve.output
    assert "Đã ký duyệt" in approve.output and PASSWORD not in approve.output

    issued = runner.invoke(
        args=["issue", str(d.draft_id), "--as", clerk, "--confirm-placeholders",
              "--at", ISSUE_AT_TEXT],
    )  # fmt: skip
    assert issued.exit_code == 0, issued.output
    assert "bản gốc điện tử" in issued.output and "không ký số" not in issued.output
    db.session.expire_all()
    dispatch = db.session.get(Dispatch, d.draft_id)
    assert dispatch.signed is True
    issued_entry = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.dispatch_id == d.draft_id, AuditEntry.action == "dispatch.issued"
        )
    ).one()
    assert issued_entry.details["signed"] is True

    delivered = runner.invoke(args=["deliver"])
    assert delivered.exit_code == 0, delivered.output
    messages = smtp_server.messages
    assert len(messages) == len(CODES)
    raw = messages[0].raw
    text = messages[0].email.get_body(preferencelist=("plain",)).get_content()
    assert "bản gốc điện tử" in text and "bản để chỉnh sửa" in text
    files = _pdf_attachments(raw)
    letter_name = next(name for name in files if name.startswith("CV-"))
    letter = tmp_path / "ban-nhan.pdf"
    letter.write_bytes(files[letter_name])

    verified = runner.invoke(args=["verify", str(letter), "--json"])
    assert verified.exit_code == 0, verified.output
    result = json.loads(verified.output)
    assert [s["role"] for s in result["signatures"]] == ["signer", "agency"]
    assert [s["name"] for s in result["signatures"]] == [LEADER_NAME, AGENCY_NAME]
    assert all(s["intact"] and s["trusted"] for s in result["signatures"])
    assert result["register"]["number"] == dispatch.number_and_symbol
    named = runner.invoke(args=["verify", str(letter)])
    assert named.exit_code == 0
    assert LEADER_NAME in named.output and AGENCY_NAME in named.output

    out = subprocess.run(["pdfsig", str(letter)], capture_output=True, text=True).stdout
    assert out.count("Signature Validation: Signature is Valid.") == 2, out

    # The attached PDF carries the agency's signature, intact.
    attached = files[ATTACHMENT]
    reports = pades.verify(attached, [d.pki.root_pem.read_bytes()])
    assert [(r.role, r.name, r.intact) for r in reports] == [("agency", AGENCY_NAME, True)]


# --- the web: the clerk's form and the leader's forms ------------------------------------------


@pytest.fixture()
def web(desk, letter_folder, pki, monkeypatch):
    """The web desk's leader given the demo key, and a finished draft from its clerk."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    leader = desk.users[Role.LEADER]
    give_key(leader, pki)
    draft = drafts.create_draft(
        letter_folder(), group_code=group_of(CODES), actor=desk.users[Role.CLERK], at=DRAFT_AT
    )
    db.session.commit()
    desk.draft_id = draft.id
    return desk


def _post(client, page_url: str, action: str, **data):
    token = csrf_token_from(client.get(page_url).get_data(as_text=True))
    return client.post(action, data={"csrf_token": token, **data})


def test_web_submit_then_leader_returns_then_signs(web):
    clerk, leader = web.clerk, web.leader
    leader_email = web.users[Role.LEADER].email
    page = f"/dispatches/{web.draft_id}"
    html = clerk.get(page).get_data(as_text=True)
    assert "Trình ký" in html and f'value="{leader_email}"' in html

    response = _post(clerk, page, f"/dispatches/{web.draft_id}/submit", leader=leader_email)
    assert response.status_code == 303 and response.location.endswith(f"{page}#trinh-ky")
    assert "Đang chờ" in clerk.get(page).get_data(as_text=True)
    # The composer is closed while it waits.
    edit = clerk.get(f"/dispatches/{web.draft_id}/edit")
    assert edit.status_code == 303 and "#trinh-ky" in edit.location

    listing = leader.get("/lanh-dao/trinh-ky/").get_data(as_text=True)
    approval_id = approval.open_approval(web.draft_id).id
    assert f"/lanh-dao/trinh-ky/{approval_id}" in listing
    sub = f"/lanh-dao/trinh-ky/{approval_id}"
    html = leader.get(sub).get_data(as_text=True)
    assert "Ký duyệt" in html and "Trả lại" in html and f"{sub}/van-ban.pdf" in html
    pdf = leader.get(f"{sub}/van-ban.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert pdf.headers["Content-Disposition"].startswith("inline")

    # A clerk cannot sign; no CSRF token, no change.
    assert _post(clerk, page, f"{sub}/ky-duyet").status_code == 403
    assert leader.post(f"{sub}/ky-duyet").status_code == 400
    # Returning needs a comment.
    empty = _post(leader, sub, f"{sub}/tra-lai", comment=" ")
    assert empty.status_code == 303 and empty.location.endswith(sub)
    assert "Vui lòng ghi ý kiến" in leader.get(sub).get_data(as_text=True)
    returned = _post(leader, sub, f"{sub}/tra-lai", comment="Bổ sung căn cứ.")
    assert returned.status_code == 303 and returned.location.endswith("/lanh-dao/trinh-ky/")
    html = clerk.get(page).get_data(as_text=True)
    assert "lãnh đạo trả lại" in html and "Bổ sung căn cứ." in html

    _post(clerk, page, f"/dispatches/{web.draft_id}/submit", leader=leader_email)
    second = approval.open_approval(web.draft_id).id
    assert second != approval_id
    # The old submission's forms no longer act.
    stale = _post(leader, f"/lanh-dao/trinh-ky/{second}", f"{sub}/ky-duyet")
    assert stale.status_code == 303
    signed = _post(leader, f"/lanh-dao/trinh-ky/{second}", f"/lanh-dao/trinh-ky/{second}/ky-duyet")
    assert signed.status_code == 303 and signed.location.endswith("/lanh-dao/trinh-ky/")
    db.session.expire_all()
    assert approval.open_approval(web.draft_id).status is ApprovalStatus.APPROVED
    assert "đã ký duyệt" in clerk.get(page).get_data(as_text=True)
    signed_pdf = clerk.get(f"/lanh-dao/trinh-ky/{second}/van-ban.pdf")
    assert pades.signatures_in(signed_pdf.data) == [pades.APPROVAL_FIELD]

    withdrawn = _post(clerk, page, f"/dispatches/{web.draft_id}/withdraw")
    assert withdrawn.status_code == 303
    assert clerk.get(f"/dispatches/{web.draft_id}/edit").status_code == 200


def test_web_only_the_addressed_leader_sees_and_signs(web, make_user):
    other = make_user("lanhdao.khac@thh.example", Role.LEADER)
    from tests.fixtures.web import sign_in

    approval.submit(
        web.draft_id, leader_email=web.users[Role.LEADER].email, actor=None, at=DRAFT_AT
    )
    db.session.commit()
    approval_id = approval.open_approval(web.draft_id).id
    client = web.leader.application.test_client()
    assert sign_in(client, other.email).status_code == 302
    assert client.get(f"/lanh-dao/trinh-ky/{approval_id}").status_code == 404
    assert client.get(f"/lanh-dao/trinh-ky/{approval_id}/van-ban.pdf").status_code == 404
    token = csrf_token_from(client.get("/lanh-dao/trinh-ky/").get_data(as_text=True))
    refused = client.post(f"/lanh-dao/trinh-ky/{approval_id}/ky-duyet", data={"csrf_token": token})
    assert refused.status_code == 404
    assert approval.open_approval(web.draft_id).status is ApprovalStatus.SUBMITTED


def test_api_submit(web, api_headers):
    client = web.clerk.application.test_client()
    url = f"/api/dispatches/{web.draft_id}/submit"
    leader = web.users[Role.LEADER].email
    bad = client.post(url, json={"leader": web.users[Role.CLERK].email},
                      headers=api_headers[Role.CLERK])  # fmt: skip
    assert bad.status_code == 422 and bad.get_json()["field"] == "leader"
    ok = client.post(url, json={"leader": leader}, headers=api_headers[Role.CLERK])
    assert ok.status_code == 200, ok.get_json()
    assert ok.get_json()["status"] == "submitted" and ok.get_json()["leader"] == leader
    again = client.post(url, json={"leader": leader}, headers=api_headers[Role.CLERK])
    assert again.status_code == 409
    as_leader = client.post(url, json={"leader": leader}, headers=api_headers[Role.LEADER])
    assert as_leader.status_code == 403


def test_api_issue_refuses_unapproved_with_a_key(web, api_headers, app, pki, tmp_path):
    configure_agency(app, pki, tmp_path)
    client = web.clerk.application.test_client()
    response = client.post(
        f"/api/dispatches/{web.draft_id}/issue", json={}, headers=api_headers[Role.CLERK]
    )
    assert response.status_code == 409
    assert "chưa được lãnh đạo ký duyệt" in response.get_json()["message"]


# --- sign what you read: the submitted PDF, rendered once ---------------------------------------


def _signed_prefix(approved: bytes) -> bytes:
    """The bytes the leader's signature was laid over: the approved PDF before its incremental
    update, the revision the signature's byte range starts with (read with pyHanko)."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(approved))
    (signature,) = reader.embedded_signatures
    start, first, _, _ = signature.sig_object["/ByteRange"]
    assert start == 0 and signature.signed_revision >= 1
    previous = reader.xrefs.get_startxref_for_revision(signature.signed_revision - 1)
    end = approved.index(b"%%EOF", previous) + len(b"%%EOF")
    end += len(approved[end:]) - len(approved[end:].lstrip(b"\r\n"))
    assert end <= first  # the whole previous revision lies in the signed range
    return approved[:end]


def test_the_leader_reads_and_signs_exactly_the_pdf_archived_at_submission(web, monkeypatch):
    leader_email = web.users[Role.LEADER].email
    submitted = approval.submit(
        web.draft_id, leader_email=leader_email, actor=web.users[Role.CLERK], at=DRAFT_AT
    )
    row = db.session.get(DispatchApproval, submitted.id)
    archived = read_archived(row.submitted_pdf_path, row.submitted_pdf_sha256)
    assert archived.startswith(b"%PDF") and len(archived) == row.submitted_pdf_size
    assert hashlib.sha256(archived).hexdigest() == row.submitted_pdf_sha256
    entry = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.dispatch_id == web.draft_id,
            AuditEntry.action == "dispatch.submitted_for_signature",
        )
    ).one()
    assert entry.details["pdf_sha256"] == row.submitted_pdf_sha256

    # The leader's page shows those bytes, not a fresh rendering.
    shown = web.leader.get(f"/lanh-dao/trinh-ky/{submitted.id}/van-ban.pdf")
    assert shown.status_code == 200 and shown.data == archived

    # Nothing renders again from here on: a renderer that now fails cannot matter.
    def no_second_rendering(*args, **kwargs):
        raise AssertionError("the letter was rendered again after its submission")

    monkeypatch.setattr(approval, "render", no_second_rendering)
    signed = _post(
        web.leader,
        f"/lanh-dao/trinh-ky/{submitted.id}",
        f"/lanh-dao/trinh-ky/{submitted.id}/ky-duyet",
    )
    assert signed.status_code == 303 and signed.location.endswith("/lanh-dao/trinh-ky/")
    db.session.expire_all()
    row = db.session.get(DispatchApproval, submitted.id)
    assert row.status is ApprovalStatus.APPROVED
    _, approved = approval.approved_pdf(web.draft_id)
    # The approved PDF is the submitted bytes plus the signature's incremental update: the
    # bytes the signature covers before its own revision are those the leader was shown.
    assert approved.startswith(archived) and len(approved) > len(archived)
    assert _signed_prefix(approved) == archived == shown.data
    reports = pades.verify(approved, [])
    assert reports[0].role == "signer" and reports[0].intact
    approved_entry = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.dispatch_id == web.draft_id,
            AuditEntry.action == "dispatch.approved_by_signer",
        )
    ).one()
    assert approved_entry.details["submitted_pdf_sha256"] == row.submitted_pdf_sha256


def test_the_submitted_pdf_is_archival_and_dated_by_its_submission(signing):
    d = signing
    submitted = approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    db.session.commit()
    pdf = read_archived(submitted.submitted_pdf_path, submitted.submitted_pdf_sha256)

    _, xmp = archival_facts(pdf)
    # The letter has no date yet: the file's creation date is when it was submitted (the moment
    # given, so a replay with --at gives the same date).
    moment = re.escape(DRAFT_AT.astimezone(VN).isoformat(timespec="seconds"))
    assert re.search(f'xmp:CreateDate(="|>){moment}', xmp), xmp


def test_an_altered_submitted_pdf_is_not_signed(signing, db_app):
    d = signing
    submitted = approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    path = Path(db_app.config["DISPATCH_DATA_DIR"]) / submitted.submitted_pdf_path
    original = path.read_bytes()
    # Someone with access to the archive changes one byte of the letter the leader will sign.
    path.chmod(0o644)
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    path.write_bytes(bytes(changed))

    with pytest.raises(approval.SubmittedPdfUnavailable, match="không còn đúng như khi trình"):
        approval.approve(d.draft_id, actor=d.leader, at=DRAFT_AT, environ=os.environ)
    db.session.expire_all()
    row = db.session.get(DispatchApproval, submitted.id)
    assert row.status is ApprovalStatus.SUBMITTED and row.pdf_path is None
    assert "dispatch.approved_by_signer" not in actions(d.draft_id)
    assert not list(path.parent.glob("ky-duyet-*"))  # nothing signed was archived
    # A missing file is refused the same way.
    path.unlink()
    with pytest.raises(approval.SubmittedPdfUnavailable, match="Không đọc được tệp lưu trữ"):
        approval.approve(d.draft_id, actor=d.leader, at=DRAFT_AT, environ=os.environ)


def test_returned_and_withdrawn_submissions_keep_their_pdfs(signing, db_app):
    d = signing
    first = approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    approval.return_draft(d.draft_id, comment="Sửa trích yếu.", actor=d.leader, at=DRAFT_AT)
    db.session.commit()
    second = approval.submit(d.draft_id, leader_email=LEADER, actor=d.clerk, at=DRAFT_AT)
    approval.withdraw(d.draft_id, actor=d.clerk, at=DRAFT_AT)
    db.session.commit()
    history = approval.history(d.draft_id)
    assert [h.id for h in history] == [first.id, second.id]
    assert [h.status for h in history] == [ApprovalStatus.RETURNED, ApprovalStatus.WITHDRAWN]
    assert history[0].submitted_pdf_path != history[1].submitted_pdf_path
    for row in history:  # each submission's PDF stays in the archive as it was submitted
        assert approval.submitted_pdf(row).startswith(b"%PDF")
