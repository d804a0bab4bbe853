"""The follow-up letter (công văn đôn đốc): a new draft that chases the offices of an issued
dispatch that have not confirmed, addressed to whoever answers for them on the new letter's date.

An office of 2021 may no longer exist: the directory's lineage (``directory.offices``) gives its
successors on the new date, and a successor that inherits several late offices gets the letter
once. The draft cites the original (number, date, subject), carries its signed PDF as an
attachment, and names it (``Dispatch.follow_up_of_id``); the two dispatches show each other.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dispatch import audit
from dispatch.archive import ArchiveError, read_archived
from dispatch.audit import actor_name
from dispatch.clock import local
from dispatch.directory import offices
from dispatch.drafting import drafts, uploads
from dispatch.extensions import db
from dispatch.letters.source import LetterSource
from dispatch.models import (
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
    Organisation,
    User,
)

SUBJECT_MAX = 500
# What a follow-up can chase: a letter that went out and is not withdrawn.
_CHASEABLE = (DispatchStatus.ISSUED, DispatchStatus.COMPLETED)


_STATUS_WORDS = {
    DispatchStatus.DRAFT: "còn là bản nháp",
    DispatchStatus.RECALLED: "đã bị thu hồi",
    DispatchStatus.REPLACED: "đã được thay thế",
}


class FollowUpError(drafts.DraftError):
    """A follow-up letter cannot be drafted, with a message for clerks (Vietnamese)."""


def _original(original_id: int) -> Dispatch:
    original = db.session.get(Dispatch, original_id)
    if original is None:
        raise FollowUpError(f"Không có công văn mã {original_id}.")
    if original.status not in _CHASEABLE:
        raise FollowUpError(
            "Chỉ soạn công văn đôn đốc cho công văn đã ban hành và còn hiệu lực "
            f"(công văn mã {original_id}: {_STATUS_WORDS.get(original.status, original.status)})."
        )
    return original


def late_recipients(original: Dispatch) -> list[DispatchRecipient]:
    """The recipients of ``original`` that have not confirmed receipt, by province code."""
    return list(
        db.session.execute(
            select(DispatchRecipient)
            .where(
                DispatchRecipient.dispatch_id == original.id,
                DispatchRecipient.acknowledged_at.is_(None),
            )
            .order_by(DispatchRecipient.province_code, DispatchRecipient.id)
        ).scalars()
    )


def answering_for(recipients: list[DispatchRecipient], on: dt.date) -> list[Organisation]:
    """The offices that answer on ``on`` for these recipients' offices, each once."""
    found: dict[int, Organisation] = {}
    for recipient in recipients:
        for successor in offices.successors_on(recipient.organisation, on):
            found.setdefault(successor.id, successor)
    return sorted(found.values(), key=lambda o: (o.province_code, o.id))


def citation(original: Dispatch) -> str:
    """How the follow-up names the original: "Công văn số 01/THH-VP ngày 15/11/2021"."""
    issued_on = f"{original.issued_on:%d/%m/%Y}" if original.issued_on else ""
    return f"Công văn số {original.number_and_symbol} ngày {issued_on}"


def follow_up_source(original: Dispatch, successors: list[Organisation], at: dt.datetime) -> dict:
    """The follow-up's letter source: the original's agency, symbol and signer; a subject and a
    body that cite the original and ask for it to be carried out and confirmed."""
    meta = dict((original.source or {}).get("meta") or {})
    agency = meta.get("issuing_agency") or "Cơ quan ban hành"
    cited = citation(original)
    subject = f"đôn đốc thực hiện {cited}"
    about = f" về việc {original.subject}"
    if len(subject) + len(about) <= SUBJECT_MAX:
        subject += about
    departments = sorted({_department(org.name) for org in successors})
    addressees = [f"{name} các tỉnh, thành phố" for name in departments]
    body = (
        f"Ngày {original.issued_on:%d/%m/%Y}, {agency} đã ban hành Công văn số "
        f"{original.number_and_symbol} về việc {original.subject} (gửi kèm). Đến nay, "
        f"{agency} chưa nhận được xác nhận đã nhận văn bản của Quý cơ quan.\n\n"
        f"{agency} đề nghị Quý cơ quan khẩn trương triển khai các nội dung của {cited} và xác "
        "nhận đã nhận văn bản này qua đường liên kết gửi kèm thư.\n\n"
        "Trân trọng./."
    )
    keep = ("parent_agency", "issuing_agency", "symbol", "place", "signer")
    new_meta: dict[str, Any] = {key: meta[key] for key in keep if key in meta}
    new_meta["date"] = f"{local(at):%Y-%m}"
    new_meta["subject"] = subject
    new_meta["addressees"] = addressees
    new_meta["distribution"] = ["Như trên", f"Lưu: VT, {_register_unit(meta)}"]
    return {"meta": new_meta, "body": body, "appendices": []}


def _department(name: str) -> str:
    """ "Sở Khoa học và Công nghệ tỉnh Cà Mau" → "Sở Khoa học và Công nghệ"."""
    for marker in (" tỉnh ", " thành phố ", " Thành phố "):
        if marker in name:
            return name.split(marker, 1)[0]
    return name


def _register_unit(meta: dict[str, Any]) -> str:
    symbol = str(meta.get("symbol") or "")
    return symbol.split("-", 1)[0] or "VT"


def _with_citation(source: dict[str, Any], original: Dispatch) -> dict[str, Any]:
    """A clerk's own text keeps its words; a body that does not name the original gets a first
    paragraph that does."""
    cited = f"{original.number_and_symbol}"
    body = str(source.get("body") or "")
    if cited in body:
        return source
    opening = f"Tiếp theo {citation(original)} về việc {original.subject} (gửi kèm),"
    return {**source, "body": f"{opening}\n\n{body}" if body else opening}


def create_follow_up(
    original_id: int,
    *,
    actor: User | None,
    at: dt.datetime,
    source: LetterSource | Path | str | None = None,
) -> Dispatch:
    """Draft the follow-up of an issued dispatch; the caller commits.

    ``source`` (a letter folder) gives the letter's own text; without it the text is written
    from the original. Raises ``FollowUpError`` when there is nothing to chase or no office
    answers for the late ones on the new letter's date.
    """
    original = _original(original_id)
    late = late_recipients(original)
    if not late:
        raise FollowUpError("Mọi nơi nhận đã xác nhận: không cần công văn đôn đốc.")
    if source is not None:
        read, letter, origin = drafts.checked_source(source)
        typed = _with_citation(read, original)
    else:
        letter, typed, origin = None, None, None
    meta = (typed or {}).get("meta") or {}
    on = drafts.recipients_date(meta.get("date"), at)
    successors = answering_for(late, on)
    if not successors:
        raise FollowUpError(
            f"Không có cơ quan nào tiếp nhận thay {len(late)} nơi nhận chưa xác nhận "
            f"vào ngày {on:%d/%m/%Y}."
        )
    if typed is None:
        typed = follow_up_source(original, successors, at)
    groups = [group.code for group in successors[0].groups]
    group_code = groups[0] if groups else (original.group.code if original.group else None)
    if group_code is None:
        raise FollowUpError("Các cơ quan tiếp nhận không thuộc nhóm nơi nhận nào.")
    follow_up = drafts.create_addressed(
        typed,
        letter=letter,
        origin=origin,
        group_code=group_code,
        recipient_ids=[org.id for org in successors],
        actor=actor,
        at=at,
    )
    follow_up.follow_up_of_id = original.id
    _attach_original(original, follow_up, actor=actor, at=at)
    db.session.flush()
    details = {
        "original_id": original.id,
        "original": original.number_and_symbol,
        "late": [recipient.province_code for recipient in late],
        "recipients": [org.province_code for org in successors],
        "on": on.isoformat(),
    }
    audit.record_dispatch(
        "dispatch.follow_up_drafted", follow_up.id, actor=actor_name(actor), at=at, details=details
    )
    audit.record_dispatch(
        "dispatch.followed_up",
        original.id,
        actor=actor_name(actor),
        at=at,
        details={"follow_up_id": follow_up.id, "late": len(late), "recipients": len(successors)},
    )
    return follow_up


def _attach_original(
    original: Dispatch, follow_up: Dispatch, *, actor: User | None, at: dt.datetime
) -> None:
    pdf = db.session.execute(
        select(Document)
        .where(Document.dispatch_id == original.id, Document.kind == "pdf")
        .order_by(Document.id)
        .limit(1)
    ).scalar_one_or_none()
    if pdf is None:
        raise FollowUpError(f"{citation(original)} không còn bản PDF đã lưu để gửi kèm.")
    try:
        data = read_archived(pdf.path, pdf.sha256)
    except ArchiveError as exc:
        raise FollowUpError(f"Không đọc được bản PDF đã lưu của {citation(original)}.") from exc
    uploads.add_attachment(follow_up.id, pdf.filename, data, actor=actor, at=at)


def follow_ups_of(dispatch_id: int) -> list[Dispatch]:
    """The follow-up letters drafted from a dispatch, oldest first."""
    return list(
        db.session.execute(
            select(Dispatch).where(Dispatch.follow_up_of_id == dispatch_id).order_by(Dispatch.id)
        ).scalars()
    )
