"""The national exchange from the database's side: a dispatch's packages out, status messages in.

``package_for`` reads an issued dispatch and one recipient into a ``Package`` (the archived PDF
and DOCX, and the files sent with them, byte for byte; the business type 1 recall or 3 replace
with the letter it concerns when the dispatch is a recall letter or a replacement).
``export_packages`` writes one file per recipient. ``receive_status`` keeps a status message as
received, finds its dispatch by ``DocumentId`` and its recipient by the sender's ``OrganId``
(the directory's ``agency_id``), and records what the code means:

* 01 đã đến: an event in the recipient's history;
* 02 từ chối: the recipient is refused, with the reason and the staff named (shown in red);
* 03 đã tiếp nhận: the confirmation of receipt, by the channel ``edxml``, with the staff named;
* 04, 05, 06 (assigned, in progress, done): the office's handling, in its history and on the
  leader's page (a later message never goes back to an earlier state);
* 15 / 16 on a recall letter: the office confirms it deleted the recalled letter / refuses.

It writes in the caller's transaction (the caller commits). A status message that names no
dispatch or office we know is kept all the same and listed for an admin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

from flask import current_app
from sqlalchemy import select

from dispatch import audit
from dispatch.archive import ArchiveError, keep_inbound, read_archived, safe_filename
from dispatch.clock import local
from dispatch.edxml.package import (
    NEW,
    PRIORITIES,
    RECALL,
    REPLACE,
    Attachment,
    Organ,
    Package,
    ResponseFor,
    build_package,
    document_id,
    split_document_id,
)
from dispatch.edxml.status import StatusMessage, parse_status
from dispatch.edxml.xml import EdxmlError
from dispatch.extensions import db
from dispatch.inbound.handler import record_inbound
from dispatch.models import (
    AcknowledgementMethod,
    AmendmentKind,
    AmendmentStatus,
    Dispatch,
    DispatchAmendment,
    DispatchRecipient,
    DispatchStatus,
    Document,
    InboundKind,
    InboundMessage,
    Organisation,
    RecipientEvent,
)
from dispatch.receipts.acknowledgements import AcknowledgementError, acknowledge

PROCESSING = {"04": "assigned", "05": "in_progress", "06": "done"}
PROCESSING_RANK = {"assigned": 1, "in_progress": 2, "done": 3}
_ISSUED = (
    DispatchStatus.ISSUED,
    DispatchStatus.COMPLETED,
    DispatchStatus.RECALLED,
    DispatchStatus.REPLACED,
)


def our_organ_id() -> str:
    """This agency's OrganId (``DISPATCH_ORGAN_ID``); ``EdxmlError`` when it is not set."""
    organ_id = (current_app.config.get("DISPATCH_ORGAN_ID") or "").strip()
    if not organ_id:
        raise EdxmlError(
            "chưa cấu hình DISPATCH_ORGAN_ID (mã định danh 13 ký tự của cơ quan ban hành)."
        )
    return organ_id


def _meta(dispatch: Dispatch) -> dict:
    source = dispatch.source if isinstance(dispatch.source, dict) else {}
    meta = source.get("meta")
    return meta if isinstance(meta, dict) else {}


def _sender(dispatch: Dispatch) -> Organ:
    meta = _meta(dispatch)
    sender = current_app.config.get("MAIL_DEFAULT_SENDER") or ""
    address = sender[1] if isinstance(sender, tuple | list) else parseaddr(str(sender))[1]
    return Organ(
        organ_id=our_organ_id(),
        name=str(meta.get("issuing_agency") or ""),
        in_charge=str(meta.get("parent_agency") or ""),
        email=address,
    )


def _code_number(dispatch: Dispatch) -> str:
    return f"{dispatch.number:02d}"


def reference_of(dispatch: Dispatch) -> ResponseFor:
    """How a package or a status names an issued dispatch."""
    assert dispatch.number is not None and dispatch.issued_on is not None
    organ_id = our_organ_id()
    return ResponseFor(
        organ_id=organ_id,
        code=dispatch.number_and_symbol or "",
        promulgation_date=dispatch.issued_on,
        document_id=document_id(
            organ_id, dispatch.issued_on, _code_number(dispatch), dispatch.symbol
        ),
    )


def _business(dispatch: Dispatch) -> tuple[int, str, ResponseFor | None]:
    """The business type of a dispatch's packages: a recall letter or a replacement names the
    letter it concerns."""
    amendment = db.session.execute(
        select(DispatchAmendment).where(
            DispatchAmendment.new_id == dispatch.id,
            DispatchAmendment.status == AmendmentStatus.APPROVED,
        )
    ).scalar_one_or_none()
    if amendment is None:
        return NEW, "", None
    kind = RECALL if amendment.kind is AmendmentKind.RECALL else REPLACE
    return kind, amendment.reason[:2000], reference_of(amendment.original)


def _documents(dispatch: Dispatch) -> tuple[Attachment, ...]:
    order = {"pdf": 0, "docx": 1}
    documents = sorted(
        db.session.execute(select(Document).where(Document.dispatch_id == dispatch.id))
        .scalars()
        .all(),
        key=lambda doc: (order.get(doc.kind, 2), doc.id),
    )
    attachments = []
    for index, doc in enumerate(documents, start=1):
        try:
            data = read_archived(doc.path, doc.sha256)
        except ArchiveError as exc:
            raise EdxmlError(str(exc)) from exc
        attachments.append(
            Attachment(
                content_id=f"{index}",
                name=doc.filename,
                content_type=doc.media_type,
                data=data,
                description={"pdf": "Văn bản (PDF)", "docx": "Văn bản (DOCX)"}.get(
                    doc.kind, "Tài liệu gửi kèm"
                ),
            )
        )
    return tuple(attachments)


def package_for(
    dispatch: Dispatch,
    recipient: DispatchRecipient,
    *,
    at: dt.datetime,
    attachments: tuple[Attachment, ...] | None = None,
) -> Package:
    """The package of an issued dispatch for one recipient (``at``: its trace timestamp)."""
    if dispatch.status not in _ISSUED or dispatch.number is None or dispatch.issued_on is None:
        raise EdxmlError("chỉ công văn đã ban hành mới có gói edXML.")
    meta = _meta(dispatch)
    signer = meta.get("signer") if isinstance(meta.get("signer"), dict) else {}
    authority = " ".join(
        part for part in (signer.get("authority"), signer.get("acting_for")) if part
    )
    urgency = (meta.get("urgency") or None) and str(meta.get("urgency")).upper()
    business, reason, response_for = _business(dispatch)
    organisation = db.session.get(Organisation, recipient.organisation_id)
    addressees = meta.get("addressees") if isinstance(meta.get("addressees"), list) else []
    return Package(
        sender=_sender(dispatch),
        to=Organ(
            organ_id=(organisation.agency_id if organisation else None) or "",
            name=recipient.name,
            email=recipient.email,
        ),
        code_number=_code_number(dispatch),
        code_notation=dispatch.symbol,
        place=str(meta.get("place") or ""),
        promulgation_date=dispatch.issued_on,
        subject=dispatch.subject,
        content=str((dispatch.source or {}).get("body") or ""),
        signer_competence=authority,
        signer_position=str(signer.get("title") or ""),
        signer_name=str(signer.get("name") or ""),
        timestamp=at,
        due_date=local(dispatch.deadline_at).date() if dispatch.deadline_at else None,
        to_places=tuple(str(a) for a in addressees),
        priority=PRIORITIES.get(urgency, 0),
        business_type=business,
        business_reason=reason,
        response_for=response_for,
        attachments=attachments if attachments is not None else _documents(dispatch),
    )


def package_filename(dispatch: Dispatch, recipient: DispatchRecipient) -> str:
    """'CV-01-THH-VP-2021-11-15-79.edxml': the letter and the recipient's province code."""
    number = (dispatch.number_and_symbol or "").replace("/", "-")
    return safe_filename(f"CV-{number}-{dispatch.issued_on}-{recipient.province_code}.edxml")


def packages(dispatch_id: int, *, at: dt.datetime) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every recipient's package, the files read once."""
    dispatch = db.session.get(Dispatch, dispatch_id)
    if dispatch is None:
        raise EdxmlError(f"Không có công văn mã {dispatch_id}.")
    if dispatch.status not in _ISSUED:
        raise EdxmlError("chỉ công văn đã ban hành mới có gói edXML.")
    files = _documents(dispatch)
    return [
        (
            package_filename(dispatch, recipient),
            build_package(package_for(dispatch, recipient, at=at, attachments=files)),
        )
        for recipient in dispatch.recipients
    ]


def export_packages(dispatch_id: int, folder: Path, *, at: dt.datetime) -> list[Path]:
    """Write one package per recipient into ``folder``; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in packages(dispatch_id, at=at):
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written


# --- Status messages in -----------------------------------------------------------------------


@dataclass(frozen=True)
class StatusResult:
    """What receiving one status message did."""

    inbound_id: int
    duplicate: bool
    code: str
    meaning: str
    dispatch_id: int | None
    recipient_id: int | None
    changed: bool  # the recipient's state changed (False: noted only, or already so)


def _find(message: StatusMessage) -> tuple[Dispatch | None, DispatchRecipient | None]:
    organ_id, date, number, notation = split_document_id(message.response_for.document_id)
    if organ_id != our_organ_id() or not number.isdigit():
        return None, None
    dispatch = db.session.execute(
        select(Dispatch).where(
            Dispatch.symbol == notation,
            Dispatch.number == int(number),
            Dispatch.issued_on == date,
            Dispatch.status.in_(_ISSUED),
        )
    ).scalar_one_or_none()
    if dispatch is None:
        return None, None
    recipient = db.session.execute(
        select(DispatchRecipient)
        .join(Organisation, Organisation.id == DispatchRecipient.organisation_id)
        .where(
            DispatchRecipient.dispatch_id == dispatch.id,
            Organisation.agency_id == message.sender.organ_id,
        )
    ).scalar_one_or_none()
    return dispatch, recipient


def _actor(message: StatusMessage) -> str:
    return f"edxml:{message.sender.organ_id}"


def _is_recall_letter(dispatch: Dispatch) -> bool:
    return (
        db.session.execute(
            select(DispatchAmendment.id).where(
                DispatchAmendment.new_id == dispatch.id,
                DispatchAmendment.kind == AmendmentKind.RECALL,
            )
        ).first()
        is not None
    )


def _apply(
    message: StatusMessage, dispatch: Dispatch, recipient: DispatchRecipient, at: dt.datetime
) -> bool:
    """Record what the code means for the recipient; True if its state changed."""
    code, staff = message.code, message.staff
    who = staff.staff or message.sender.name or message.sender.organ_id
    db.session.add(
        RecipientEvent(
            recipient_id=recipient.id,
            kind=f"edxml-{code}",
            detail=f"{message.meaning}: {who}"[:200],
            at=at,
        )
    )
    changed = False
    if code in ("03", "15") and (code == "03" or _is_recall_letter(dispatch)):
        try:
            result = acknowledge(
                recipient,
                who[:100],
                (staff.department or "Văn thư")[:100],
                f"edXML {code} ({message.meaning}). {message.description}".strip()[:1000],
                ip=None,
                user_agent=None,
                at=at,
                method=AcknowledgementMethod.EDXML,
                actor=_actor(message),
            )
        except AcknowledgementError as exc:
            raise EdxmlError("; ".join(exc.errors.values())) from exc
        changed = result.recorded
    elif code in ("02", "16") and recipient.acknowledged_at is None:
        changed = recipient.refused_at is None
        recipient.refused_at = recipient.refused_at or at
        recipient.refused_by = who[:100]
        recipient.refusal_reason = message.description or None
    elif code in PROCESSING:
        state = PROCESSING[code]
        current = PROCESSING_RANK.get(recipient.processing_state or "", 0)
        if PROCESSING_RANK[state] >= current:
            changed = recipient.processing_state != state
            recipient.processing_state = state
            recipient.processing_at = message.timestamp
    audit.record_recipient(
        f"recipient.edxml_{code}",
        recipient,
        actor=_actor(message),
        at=at,
        details={
            "code": code,
            "meaning": message.meaning,
            "description": message.description,
            "timestamp": message.timestamp.isoformat(),
            "staff": {
                "department": staff.department,
                "staff": staff.staff,
                "mobile": staff.mobile,
                "email": staff.email,
            },
            "changed": changed,
        },
    )
    db.session.flush()
    return changed


def receive_status(raw: bytes, *, door: str, at: dt.datetime) -> StatusResult:
    """Keep and apply one status message once (by the SHA-256 of its bytes); the caller commits.

    ``EdxmlError`` for a malformed or hostile file (nothing is kept). A well-formed message that
    names no dispatch or office of ours is kept, listed for an admin, and reported unmatched.
    """
    message = parse_status(raw)
    sha256 = hashlib.sha256(raw).hexdigest()
    known = db.session.execute(
        select(InboundMessage).where(InboundMessage.sha256 == sha256)
    ).scalar_one_or_none()
    if known is not None:
        return StatusResult(
            known.id, True, message.code, message.meaning, known.dispatch_id,
            known.recipient_id, False,
        )  # fmt: skip
    dispatch, recipient = _find(message)
    path = keep_inbound(raw, sha256, at, suffix=".xml")
    inbound_id, again = record_inbound(
        {
            "received_at": at,
            "door": door,
            "sha256": sha256,
            "size": len(raw),
            "archive_path": path,
            "envelope_to": [],
            "from_address": (message.staff.email or message.sender.email or None),
            "from_name": (message.staff.staff or message.sender.name or None),
            "subject": f"edXML {message.code}: {message.meaning}",
            "kind": InboundKind.EDXML_STATUS,
            "matched_by": "edxml" if recipient is not None else None,
            "recipient_id": recipient.id if recipient is not None else None,
            "dispatch_id": dispatch.id if dispatch is not None else None,
            "excerpt": message.description or None,
            "details": {
                "code": message.code,
                "document_id": message.response_for.document_id,
                "organ_id": message.sender.organ_id,
                "timestamp": message.timestamp.isoformat(),
            },
        },
        actor=_actor(message),
        at=at,
        details={
            "code": message.code,
            "document_id": message.response_for.document_id,
            "organ_id": message.sender.organ_id,
            "recipient_id": recipient.id if recipient is not None else None,
        },
    )
    if again is not None:
        return StatusResult(
            again.id, True, message.code, message.meaning, again.dispatch_id,
            again.recipient_id, False,
        )  # fmt: skip
    changed = False
    if dispatch is not None and recipient is not None:
        changed = _apply(message, dispatch, recipient, at)
    return StatusResult(
        inbound_id,
        False,
        message.code,
        message.meaning,
        dispatch.id if dispatch is not None else None,
        recipient.id if recipient is not None else None,
        changed,
    )
