"""Recall and replacement (thu hồi, thay thế): how a wrong letter is corrected without editing it.

An issued letter is never edited or deleted. A clerk asks, a leader decides:

* **Recall.** ``request_recall`` records the clerk's reason. When a leader approves, a short
  recall letter is drafted from the original (same agency, signer, symbol and offices; its
  subject "thu hồi Công văn số …", its body asking each office to delete the recalled letter
  and to confirm through its link) and issued with a number of its own; every office is asked
  to confirm, like any letter.
* **Replacement.** ``start_replacement`` drafts a copy of the original (its files included) for
  the clerk to correct in the composer. When a leader approves, the corrected draft is issued
  with a new number; the offices are asked to confirm the new letter.

Either way the original becomes ``recalled`` or ``replaced`` (only its status changes: its
number, text and files stay as they were), its e-mails still waiting are cancelled and its
reminders stop; the two letters name each other (``DispatchAmendment``) on the pages, in the
audit log and in edXML (business type 1 recall, 3 replace, ``ResponseFor`` the original).

The new letter is issued like any other (``issuing``), with the same questions first
(``issue_check``): the date it will carry when it differs from its draft's, the offices no
longer valid that day (readdressed to their successors when confirmed), the placeholder
addresses. Without the confirmation ``approve`` refuses (``ConfirmationNeeded``) and changes
nothing.

With the agency's signing key configured (``issuing.signing_configured``) the new letter is a
signed electronic original, in the order Decree 30 sets:

* **Recall.** The leader who approves the recall is the person with authority over it, and signs
  the recall letter in the same act: the draft is submitted to them (rendered once, archived:
  ``drafting.approval.submit``) and those archived bytes are signed with their key
  (``drafting.approval.approve``), then issued with the agency's signature. A leader without a
  usable key (or whose key's password is not in the server's environment) is refused before
  anything changes.
* **Replacement.** The corrected draft goes through approval like any draft: the clerk submits
  it, a leader reads and signs it (trình ký, ký duyệt); the amendment is approved, and the
  letter issued, only once it is signed.

``request_recall``, ``start_replacement`` and ``reject`` write in the caller's transaction;
``approve`` commits on its own, because signing and issuing do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import or_, select, update

from dispatch import audit, issuing
from dispatch.archive import read_archived
from dispatch.audit import actor_name
from dispatch.clock import local
from dispatch.drafting import approval as signing_approval
from dispatch.drafting import drafts, uploads
from dispatch.extensions import db
from dispatch.models import (
    AmendmentKind,
    AmendmentStatus,
    ApprovalStatus,
    DeliveryStatus,
    Dispatch,
    DispatchAmendment,
    DispatchStatus,
    Document,
    OutboxMessage,
    Role,
    User,
)
from dispatch.text import clean_note

REASON_MAX = 1000
SUBJECT_MAX = 500
_AMENDABLE = (DispatchStatus.ISSUED, DispatchStatus.COMPLETED)
_WAITING = (DeliveryStatus.QUEUED, DeliveryStatus.RETRYING)
LABELS = {AmendmentKind.RECALL: "thu hồi", AmendmentKind.REPLACE: "thay thế"}
STATUS_LABELS = {
    AmendmentStatus.REQUESTED: "chờ lãnh đạo duyệt",
    AmendmentStatus.APPROVED: "đã duyệt",
    AmendmentStatus.REJECTED: "lãnh đạo không duyệt",
}


class AmendmentError(ValueError):
    """The request or decision cannot be made; the message is for people (Vietnamese)."""


class ConfirmationNeeded(AmendmentError):
    """Issuing the new letter needs a confirmation that was not given (its printed date, its
    offices no longer valid that day, placeholder addresses): nothing was changed."""


@dataclass(frozen=True)
class Confirmations:
    """What the leader confirmed for issuing the new letter, as on the normal issue path: the
    printed date that differs from the draft's, sending to the successors of offices no longer
    valid that day, and sending to placeholder addresses."""

    date: bool = False
    successors: bool = False
    placeholders: bool = False


@dataclass(frozen=True)
class PendingIssue:
    """What issuing the amendment's new letter at a moment will ask: the check of
    ``issuing.check_before_issue`` and the offices with placeholder addresses."""

    check: issuing.IssueCheck
    placeholders: tuple[str, ...]


@dataclass(frozen=True)
class Approved:
    """What an approval did: the letter issued for it."""

    amendment_id: int
    new_id: int
    number: str


def _original(dispatch_id: int) -> Dispatch:
    dispatch = drafts.lock_dispatch(dispatch_id)
    if dispatch.status not in _AMENDABLE:
        raise AmendmentError(
            "Chỉ công văn đã ban hành (chưa bị thu hồi hay thay thế) mới thu hồi, thay thế được."
        )
    return dispatch


def _reason(reason: str) -> str:
    text = clean_note(reason)
    if not text:
        raise AmendmentError("Vui lòng nêu lý do thu hồi hoặc thay thế.")
    if len(text) > REASON_MAX:
        raise AmendmentError(f"Lý do dài tối đa {REASON_MAX} ký tự (đã nhập {len(text)}).")
    return text


def _refuse_if_open(dispatch_id: int) -> None:
    open_one = db.session.execute(
        select(DispatchAmendment.id).where(
            DispatchAmendment.original_id == dispatch_id,
            DispatchAmendment.status.in_((AmendmentStatus.REQUESTED, AmendmentStatus.APPROVED)),
        )
    ).first()
    if open_one is not None:
        raise AmendmentError("Công văn này đã có đề nghị thu hồi hoặc thay thế đang xử lý.")


def _may_request(actor: User) -> None:
    if actor.role not in (Role.CLERK, Role.ADMIN):
        raise AmendmentError("Chỉ văn thư, chuyên viên mới đề nghị thu hồi hoặc thay thế.")


def _record(action: str, amendment: DispatchAmendment, actor: User, at: dt.datetime) -> None:
    details = {
        "amendment_id": amendment.id,
        "kind": amendment.kind.value,
        "reason": amendment.reason,
        "original_id": amendment.original_id,
        "new_id": amendment.new_id,
        "status": amendment.status.value,
    }
    audit.record_dispatch(action, amendment.original_id, actor=actor_name(actor), at=at,
                          details=details)  # fmt: skip
    if amendment.new_id is not None:
        audit.record_dispatch(action, amendment.new_id, actor=actor_name(actor), at=at,
                              details=details)  # fmt: skip


def _recipient_ids(original: Dispatch) -> list[int]:
    return [recipient.organisation_id for recipient in original.recipients]


def _group_code(original: Dispatch) -> str:
    if original.group is None:
        raise AmendmentError("Công văn gốc không có nhóm nơi nhận; không tạo được văn bản mới.")
    return original.group.code


def request_recall(
    dispatch_id: int, *, reason: str, actor: User, at: dt.datetime
) -> DispatchAmendment:
    """A clerk asks to recall an issued dispatch, with the reason; the caller commits."""
    _may_request(actor)
    original = _original(dispatch_id)
    _refuse_if_open(original.id)
    amendment = DispatchAmendment(
        kind=AmendmentKind.RECALL,
        status=AmendmentStatus.REQUESTED,
        original_id=original.id,
        reason=_reason(reason),
        requested_by_id=actor.id,
        requested_at=at,
    )
    db.session.add(amendment)
    db.session.flush()
    _record("dispatch.recall_requested", amendment, actor, at)
    return amendment


def start_replacement(
    dispatch_id: int, *, reason: str, actor: User, at: dt.datetime
) -> DispatchAmendment:
    """A clerk starts a replacement: a draft copying the original (text and carried files) to
    correct, and the request for a leader to approve it; the caller commits."""
    _may_request(actor)
    original = _original(dispatch_id)
    _refuse_if_open(original.id)
    text = _reason(reason)
    source = dict(original.source or {})
    meta = dict(source.get("meta") or {})
    meta.pop("attachments", None)
    meta["date"] = f"{local(at):%Y-%m}"  # dated when it is issued, not on the original's day
    saved = drafts.save_as_typed(
        None,
        {"meta": meta, "body": source.get("body", ""), "appendices": source.get("appendices", [])},
        group_code=_group_code(original),
        recipient_ids=_recipient_ids(original),
        actor=actor,
        at=at,
    )
    draft = saved.dispatch
    for document in db.session.execute(
        select(Document).where(Document.dispatch_id == original.id, Document.kind == "attachment")
    ).scalars():
        uploads.add_attachment(
            draft.id,
            document.filename,
            read_archived(document.path, document.sha256),
            actor=actor,
            at=at,
        )
    amendment = DispatchAmendment(
        kind=AmendmentKind.REPLACE,
        status=AmendmentStatus.REQUESTED,
        original_id=original.id,
        new_id=draft.id,
        reason=text,
        requested_by_id=actor.id,
        requested_at=at,
    )
    db.session.add(amendment)
    db.session.flush()
    _record("dispatch.replacement_requested", amendment, actor, at)
    return amendment


def recall_source(original: Dispatch, reason: str, at: dt.datetime) -> dict:
    """The recall letter's source: the original's agency, signer, symbol and addressees; a
    subject and a body that name the recalled letter, the reason, and what to do."""
    meta = dict((original.source or {}).get("meta") or {})
    number = original.number_and_symbol
    issued_on = f"{original.issued_on:%d/%m/%Y}" if original.issued_on else ""
    agency = meta.get("issuing_agency") or "Cơ quan ban hành"
    subject = f"thu hồi Công văn số {number} ngày {issued_on}"
    about = f" về việc {original.subject}"
    if len(subject) + len(about) <= SUBJECT_MAX:
        subject += about
    body = (
        f"Ngày {issued_on}, {agency} đã ban hành Công văn số {number} về việc "
        f"{original.subject}.\n\n"
        f"Lý do thu hồi: {reason}\n\n"
        f"{agency} thu hồi Công văn số {number} nêu trên. Đề nghị Quý cơ quan không thực hiện "
        "nội dung của Công văn đã bị thu hồi, huỷ (xoá) văn bản đó khỏi hệ thống và hộp thư, "
        "và xác nhận đã huỷ qua đường liên kết gửi kèm thư này.\n\n"
        "Trân trọng./."
    )
    keep = ("parent_agency", "issuing_agency", "symbol", "place", "addressees", "signer",
            "distribution")  # fmt: skip
    new_meta = {key: meta[key] for key in keep if key in meta}
    new_meta["date"] = f"{local(at):%Y-%m}"
    new_meta["subject"] = subject
    return {"meta": new_meta, "body": body, "appendices": []}


def _decided(amendment_id: int, actor: User) -> DispatchAmendment:
    if actor.role is not Role.LEADER:
        raise AmendmentError("Chỉ lãnh đạo mới duyệt đề nghị thu hồi, thay thế.")
    amendment = db.session.execute(
        select(DispatchAmendment)
        .where(DispatchAmendment.id == amendment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if amendment is None:
        raise AmendmentError(f"Không có đề nghị mã {amendment_id}.")
    return amendment


def reject(amendment_id: int, *, note: str, actor: User, at: dt.datetime) -> DispatchAmendment:
    """A leader declines the request (a replacement's draft stays a draft); the caller commits."""
    amendment = _decided(amendment_id, actor)
    if amendment.status is not AmendmentStatus.REQUESTED:
        raise AmendmentError("Đề nghị này đã được quyết định.")
    amendment.status = AmendmentStatus.REJECTED
    amendment.decided_by_id = actor.id
    amendment.decided_at = at
    amendment.decision_note = clean_note(note) or None
    db.session.flush()
    _record("dispatch.amendment_rejected", amendment, actor, at)
    return amendment


def _supersede(amendment: DispatchAmendment, new: Dispatch, actor: User, at: dt.datetime) -> None:
    """Mark the original recalled or replaced and cancel what it still had waiting to go."""
    original = db.session.get(Dispatch, amendment.original_id)
    assert original is not None
    original.status = (
        DispatchStatus.RECALLED
        if amendment.kind is AmendmentKind.RECALL
        else DispatchStatus.REPLACED
    )
    cancelled = db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.dispatch_id == original.id, OutboxMessage.status.in_(_WAITING))
        .values(
            status=DeliveryStatus.CANCELLED,
            last_error=f"superseded by {new.number_and_symbol}",
            next_attempt_at=None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    audit.record_dispatch(
        "dispatch.recalled" if amendment.kind is AmendmentKind.RECALL else "dispatch.replaced",
        original.id,
        actor=actor_name(actor),
        at=at,
        details={
            "amendment_id": amendment.id,
            "by": new.id,
            "by_number": new.number_and_symbol,
            "cancelled_messages": cancelled or 0,
        },
    )


def _pending_draft(amendment: DispatchAmendment) -> Dispatch | None:
    """The amendment's new letter while it is still a draft to issue; None once issued."""
    if amendment.new_id is None:
        return None
    new = db.session.get(Dispatch, amendment.new_id)
    return new if new is not None and new.status is DispatchStatus.DRAFT else None


def issue_check(amendment_id: int, at: dt.datetime) -> PendingIssue | None:
    """What approving the amendment at ``at`` will ask before its new letter is issued; None
    when there is nothing left to issue (decided and issued, or declined).

    For a recall not yet approved the letter is not drafted yet: it will carry ``at``'s month
    and go to the original's offices, so the check is the original's offices on that day, with
    no date to confirm.
    """
    amendment = db.session.get(DispatchAmendment, amendment_id)
    if amendment is None or amendment.status is AmendmentStatus.REJECTED:
        return None
    draft = _pending_draft(amendment)
    if draft is not None:
        return PendingIssue(
            issuing.check_before_issue(draft.id, at),
            tuple(issuing.placeholder_recipients(draft.id)),
        )
    if (
        amendment.status is not AmendmentStatus.REQUESTED
        or amendment.kind is not AmendmentKind.RECALL
    ):
        return None
    check = issuing.check_before_issue(amendment.original_id, at)
    return PendingIssue(
        replace(check, draft_date=f"{check.printed_on:%m/%Y}", date_differs=False),
        tuple(issuing.placeholder_recipients(amendment.original_id)),
    )


def _confirm_issue(draft_id: int, confirm: Confirmations, actor: User, at: dt.datetime) -> None:
    """Ask what the normal issue path asks before the new letter is issued at ``at``; readdress
    to the successors when that was confirmed. ``ConfirmationNeeded`` otherwise."""
    check = issuing.check_before_issue(draft_id, at)
    if check.stale:
        if not confirm.successors:
            names = "; ".join(
                f"{item.name} → "
                + (", ".join(name for _, name in item.successors) or "không có cơ quan kế nhiệm")
                for item in check.stale
            )
            raise ConfirmationNeeded(
                f"{len(check.stale)} nơi nhận không còn hiệu lực vào ngày {check.printed_text} "
                f"({names}): hãy xác nhận gửi tới các cơ quan kế nhiệm."
            )
        issuing.readdress_to_successors(draft_id, actor=actor, at=at)
    if check.date_differs and not confirm.date:
        raise ConfirmationNeeded(
            f"Văn bản mới sẽ mang ngày {check.printed_text}, khác ngày {check.draft_date} của "
            "bản nháp: hãy xác nhận ngày ban hành."
        )
    placeholders = issuing.placeholder_recipients(draft_id)
    if placeholders and not confirm.placeholders:
        raise ConfirmationNeeded(
            issuing.placeholders_refusal(len(placeholders), "hãy xác nhận gửi tới địa chỉ tạm")
        )


def _refuse_unsigned(
    amendment: DispatchAmendment, draft: Dispatch | None, actor: User, environ: Mapping[str, str]
) -> None:
    """With the agency's key configured, refuse before any change what could not be signed: a
    recall whose approving leader cannot sign it now, a replacement not yet signed (ký duyệt)."""
    if not issuing.signing_configured():
        return
    if amendment.kind is AmendmentKind.RECALL:
        current = signing_approval.open_approval(draft.id) if draft is not None else None
        if current is not None and current.status is ApprovalStatus.APPROVED:
            return
        try:
            signing_approval.ready_to_sign(actor, environ)
        except signing_approval.ApprovalError as exc:
            raise AmendmentError(
                "Văn bản thu hồi được ban hành có chữ ký số: lãnh đạo duyệt thu hồi ký số văn "
                f"bản thu hồi. {exc}"
            ) from exc
        return
    assert draft is not None
    try:
        issuing.refuse_unapproved(draft.id)
    except issuing.NotApproved as exc:
        raise AmendmentError(
            f"Văn bản thay thế (bản nháp mã {draft.id}) chưa được lãnh đạo ký duyệt: văn thư "
            "trình ký bản nháp, lãnh đạo ký duyệt rồi mới duyệt thay thế và ban hành."
        ) from exc


def _sign_recall(
    draft_id: int, *, leader: User, requester: User | None, at: dt.datetime,
    environ: Mapping[str, str],
) -> None:  # fmt: skip
    """The approving leader signs the recall letter: submitted to them (rendered once and
    archived), then those archived bytes signed with their key. Each step commits; a retry
    goes on from where it stopped."""
    current = signing_approval.open_approval(draft_id)
    if current is None:
        signing_approval.submit(draft_id, leader_email=leader.email, actor=requester, at=at)
        current = signing_approval.open_approval(draft_id)
        assert current is not None
    if current.status is ApprovalStatus.SUBMITTED:
        signing_approval.approve(
            draft_id, actor=leader, at=at, environ=environ, approval_id=current.id
        )


def approve(
    amendment_id: int,
    *,
    actor: User,
    at: dt.datetime,
    environ: Mapping[str, str] | None = None,
    confirm: Confirmations = Confirmations(),
) -> Approved:
    """A leader approves: the recall letter (drafted now) or the replacement is issued, and the
    original marked recalled or replaced; commits on its own, as issuing does.

    Before anything changes: the questions of the normal issue path (``confirm`` answers them;
    ``ConfirmationNeeded`` otherwise) and, with the agency's key configured, whether the new
    letter can be signed (``environ`` holds the leader's key's password, under the variable
    their ``signing_password_env`` names). A signed recall is signed by ``actor``.

    Safe to call again for an approval whose signing or issue failed (an invalid replacement
    draft, an archive that could not be written, a key that did not open): it goes on with what
    is still a draft.
    """
    environ = environ if environ is not None else {}
    try:
        amendment = _decided(amendment_id, actor)
        if amendment.status is AmendmentStatus.REJECTED:
            raise AmendmentError("Đề nghị này đã bị từ chối.")
        deciding = amendment.status is AmendmentStatus.REQUESTED
        draft = _pending_draft(amendment)
        pending = draft is not None or (deciding and amendment.kind is AmendmentKind.RECALL)
        if pending:
            _refuse_unsigned(amendment, draft, actor, environ)
        requester = (
            db.session.get(User, amendment.requested_by_id) if amendment.requested_by_id else None
        )
        if deciding and amendment.kind is AmendmentKind.RECALL:
            original = db.session.get(Dispatch, amendment.original_id)
            assert original is not None
            saved = drafts.save_as_typed(
                None,
                recall_source(original, amendment.reason, at),
                group_code=_group_code(original),
                recipient_ids=_recipient_ids(original),
                actor=requester,
                at=at,
            )
            amendment.new_id = saved.dispatch.id
            db.session.flush()
        if pending:
            assert amendment.new_id is not None
            _confirm_issue(amendment.new_id, confirm, actor, at)
        if deciding:
            amendment.status = AmendmentStatus.APPROVED
            amendment.decided_by_id = actor.id
            amendment.decided_at = at
            db.session.flush()
            _record("dispatch.amendment_approved", amendment, actor, at)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    assert amendment.new_id is not None
    new = db.session.get(Dispatch, amendment.new_id)
    assert new is not None
    if new.status is DispatchStatus.DRAFT:
        if issuing.signing_configured() and amendment.kind is AmendmentKind.RECALL:
            _sign_recall(new.id, leader=actor, requester=requester, at=at, environ=environ)
        # Issued in the name of the clerk who prepared it, on the leader's approval.
        issuing.issue_dispatch(new.id, actor=requester, at=at)
        db.session.expire_all()
        new = db.session.get(Dispatch, amendment.new_id)
        amendment = db.session.get(DispatchAmendment, amendment_id)
        assert new is not None and amendment is not None
    original = db.session.get(Dispatch, amendment.original_id)
    assert original is not None
    if original.status in _AMENDABLE:
        _supersede(amendment, new, actor, at)
        db.session.commit()
    return Approved(amendment.id, new.id, new.number_and_symbol or "")


def amendments_of(dispatch_id: int) -> list[DispatchAmendment]:
    """The requests that concern a dispatch, as the original or as the new letter, oldest first."""
    return list(
        db.session.execute(
            select(DispatchAmendment)
            .where(
                or_(
                    DispatchAmendment.original_id == dispatch_id,
                    DispatchAmendment.new_id == dispatch_id,
                )
            )
            .order_by(DispatchAmendment.id)
        ).scalars()
    )
