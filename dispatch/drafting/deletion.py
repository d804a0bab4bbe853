"""Deleting a draft never issued: the one function the web page, the API and the CLI call."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from dispatch import audit
from dispatch.audit import actor_name
from dispatch.drafting import uploads
from dispatch.drafting.drafts import DispatchFrozen, DraftError, ensure_editable, lock_dispatch
from dispatch.extensions import db
from dispatch.models import DispatchAmendment, DispatchStatus, User


def delete_draft(dispatch_id: int, *, actor: User | None, at: dt.datetime) -> str:
    """Delete a draft never issued, with its recipient rows and uploaded files; audited.

    Every door (web, API, CLI) calls this. An issued dispatch is refused (``DispatchFrozen``),
    and so is a draft that an amendment request names as its replacement. Returns the deleted
    draft's subject. The caller commits; the files go once the rows are flushed.
    """
    dispatch = lock_dispatch(dispatch_id)
    if dispatch.status is not DispatchStatus.DRAFT or dispatch.number is not None:
        raise DispatchFrozen(
            f"Công văn số {dispatch.number_and_symbol or f'#{dispatch.id}'} đã ban hành nên "
            "không xoá được; muốn thu hồi, hãy yêu cầu thu hồi hoặc ban hành văn bản thay thế."
        )
    ensure_editable(dispatch)  # a draft submitted or approved for signature is withdrawn first
    amendment = db.session.execute(
        select(DispatchAmendment).where(DispatchAmendment.new_id == dispatch_id).limit(1)
    ).scalar_one_or_none()
    if amendment is not None:
        raise DraftError(
            f"Bản nháp {dispatch_id} là văn bản thay thế của một yêu cầu sửa đổi "
            f"(công văn mã {amendment.original_id}) nên không xoá được."
        )
    subject = dispatch.subject
    details = {
        "subject": subject,
        "symbol": dispatch.symbol,
        "recipients": len(dispatch.recipients),
        "attachments": len(uploads.attachments_of(dispatch.source)),
    }
    db.session.delete(dispatch)
    db.session.flush()
    audit.record_dispatch(
        "dispatch.draft_deleted", dispatch_id, actor=actor_name(actor), at=at, details=details
    )
    uploads.discard_uploads(dispatch_id)
    return subject
