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

``request_recall``, ``start_replacement`` and ``reject`` write in the caller's transaction;
``approve`` commits on its own, because issuing does (``issuing.issue_dispatch``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, update

from dispatch import audit, issuing
from dispatch.archive import read_archived
from dispatch.audit import actor_name
from dispatch.clock import local
from dispatch.drafting import drafts, uploads
from dispatch.extensions import db
from dispatch.models import (
    AmendmentKind,
    AmendmentStatus,
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


def approve(amendment_id: int, *, actor: User, at: dt.datetime) -> Approved:
    """A leader approves: the recall letter (drafted now) or the replacement is issued, and the
    original marked recalled or replaced; commits on its own, as issuing does.

    Safe to call again for an approval whose issue failed (an invalid replacement draft, an
    archive that could not be written): it issues what is still a draft.
    """
    amendment = _decided(amendment_id, actor)
    if amendment.status is AmendmentStatus.REJECTED:
        raise AmendmentError("Đề nghị này đã bị từ chối.")
    requester = (
        db.session.get(User, amendment.requested_by_id) if amendment.requested_by_id else None
    )
    if amendment.status is AmendmentStatus.REQUESTED:
        original = db.session.get(Dispatch, amendment.original_id)
        assert original is not None
        if amendment.kind is AmendmentKind.RECALL:
            saved = drafts.save_as_typed(
                None,
                recall_source(original, amendment.reason, at),
                group_code=_group_code(original),
                recipient_ids=_recipient_ids(original),
                actor=requester,
                at=at,
            )
            amendment.new_id = saved.dispatch.id
        amendment.status = AmendmentStatus.APPROVED
        amendment.decided_by_id = actor.id
        amendment.decided_at = at
        db.session.flush()
        _record("dispatch.amendment_approved", amendment, actor, at)
        db.session.commit()
    assert amendment.new_id is not None
    new = db.session.get(Dispatch, amendment.new_id)
    assert new is not None
    if new.status is DispatchStatus.DRAFT:
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
