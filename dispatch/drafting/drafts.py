"""Drafts: a letter source and its recipients, editable until the dispatch is issued.

This module is the one that writes a draft, whichever door it comes through: ``create_draft``
and ``update_draft`` (a letter that must be valid: the CLI, the API) and ``save_as_typed`` (the
web composer, which keeps a letter as typed even while it is wrong) all go through ``_write``,
which holds the date rule, the recipient rows, the register and the audit entries
("dispatch.drafted", "dispatch.draft_updated", whose ``origin`` names the door). Nothing here
commits: the caller ends the transaction.

A draft stores the letter's editable source (``source_to_json``) and one ``DispatchRecipient``
per office of the chosen group valid on the letter's date (its day if the source gives one, else
the first of its month: "date: 2021-11" takes the offices of 01/11/2021). Their addresses are
copied again at issuing, since the directory may be corrected in between.

Once issued, a dispatch is frozen: ``update_draft`` raises ``DispatchFrozen``, and so does any
flush that would change an issued dispatch's letter fields or an archived ``Document`` (a
``before_flush`` guard ``refuse_edits_of_issued``, attached to every session by
``create_app``, so no other code path can edit them by mistake). A wrong letter is
corrected by a new one (Decree 30), never by editing what was sent.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from dispatch import audit
from dispatch.audit import actor_name
from dispatch.clock import local
from dispatch.directory import offices
from dispatch.extensions import db
from dispatch.letters.model import Letter
from dispatch.letters.source import (
    LetterSource,
    LetterSourceError,
    build_letter,
    check_symbol,
    read_source,
    register_of,
    source_from_json,
    source_to_json,
)
from dispatch.models import (
    ApprovalStatus,
    Dispatch,
    DispatchApproval,
    DispatchRecipient,
    DispatchStatus,
    Document,
    Organisation,
    RecipientGroup,
    User,
    new_verification_code,
)
from dispatch.text import without_refused_characters

# What an issued dispatch may never change: the letter as numbered, dated and sent.
FROZEN_FIELDS = (
    "source",
    "subject",
    "symbol",
    "register",
    "register_year",
    "number",
    "issued_on",
    "issued_at",
    "issued_by_id",
    "group_id",
    "signed",
)
FROZEN_DOCUMENT_FIELDS = ("dispatch_id", "kind", "filename", "media_type", "sha256", "size", "path")

# A submission that holds the draft's letter still: waiting for the leader, or signed.
OPEN_APPROVAL = (ApprovalStatus.SUBMITTED, ApprovalStatus.APPROVED)

# How a draft's letter is named in error messages, followed by its id ("bản nháp 12").
DRAFT_ORIGIN = "bản nháp"

_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")


class DraftError(ValueError):
    """A draft cannot be created or changed; the message is for clerks (Vietnamese)."""


class DispatchFrozen(DraftError):
    """The dispatch is issued: what was sent cannot change."""


def frozen_message(dispatch: Dispatch) -> str:
    """Why an issued dispatch cannot be edited, for the clerk."""
    number = dispatch.number_and_symbol or f"#{dispatch.id}"
    day = f" ngày {dispatch.issued_on:%d/%m/%Y}" if dispatch.issued_on else ""
    return (
        f"Công văn số {number}{day} đã ban hành, không thể sửa. "
        "Muốn thay đổi, hãy ban hành văn bản thay thế hoặc đính chính."
    )


class AwaitingSignature(DispatchFrozen):
    """The draft is submitted to a leader for signature, or signed: withdraw it to edit it."""


def signature_lock_message(status: ApprovalStatus) -> str:
    """Why a draft under submission or approved cannot be edited, for the clerk."""
    state = (
        "đang trình lãnh đạo ký duyệt"
        if status is ApprovalStatus.SUBMITTED
        else "đã được lãnh đạo ký duyệt"
    )
    return (
        f"Bản nháp {state} nên không sửa được. Muốn sửa, hãy rút lại trước "
        "(việc rút lại huỷ lần trình ký hoặc chữ ký duyệt; sửa xong trình ký lại)."
    )


def open_approval_status(dispatch_id: int) -> ApprovalStatus | None:
    """The state of the draft's open submission for signature (submitted or approved), if any."""
    return db.session.execute(
        select(DispatchApproval.status)
        .where(
            DispatchApproval.dispatch_id == dispatch_id,
            DispatchApproval.status.in_(OPEN_APPROVAL),
        )
        .limit(1)
    ).scalar_one_or_none()


def ensure_editable(dispatch: Dispatch, *, letter: bool = True) -> None:
    """Raise ``DispatchFrozen`` unless the dispatch is still a draft; with ``letter`` (the
    default) also ``AwaitingSignature`` while it is submitted for signature or approved: what
    the leader reads and signs does not change under them. Readdressing to successors at
    issue (``letter=False``) changes no part of the signed letter."""
    if dispatch.status is not DispatchStatus.DRAFT:
        raise DispatchFrozen(frozen_message(dispatch))
    if letter and dispatch.id is not None:
        status = open_approval_status(dispatch.id)
        if status is not None:
            raise AwaitingSignature(signature_lock_message(status))


# --- the rules every door shares -----------------------------------------------------------------


def draft_origin(dispatch_id: int) -> str:
    """How error messages name a draft's letter: "bản nháp 12"."""
    return f"{DRAFT_ORIGIN} {dispatch_id}"


def recipients_date(letter_date: Any, at: dt.datetime) -> dt.date:
    """The day whose offices a draft addresses: the letter's date, else the 1st of its month
    ("2021-11" takes the offices of 01/11/2021), else (no readable date yet) today in Vietnam.

    ``letter_date`` is the source's ``meta.date`` as stored: "2021-11", "2021-11-15" or a date.
    """
    if isinstance(letter_date, dt.date) and not isinstance(letter_date, dt.datetime):
        return letter_date
    if isinstance(letter_date, str) and (match := _ISO_DATE.match(letter_date.strip())):
        year, month, day = match.groups()
        try:
            return dt.date(int(year), int(month), int(day or 1))
        except ValueError:
            pass
    return local(at).date()


def register_for(symbol: str) -> str:
    """The register a symbol numbers in (its first group, "THH" for "THH-VP"); "" while the
    symbol is not valid yet."""
    return "" if check_symbol(symbol) is not None else register_of(symbol)


def _load_source(source: LetterSource | Path | str) -> LetterSource:
    if isinstance(source, LetterSource):
        return source
    return read_source(Path(source))


def _checked(source: LetterSource) -> Letter:
    """The built letter; every problem (its register included) as a ``LetterSourceError``."""
    letter = build_letter(source)
    problem = check_symbol(letter.symbol)
    if problem is not None:  # build_letter checked the symbol already; kept for safety
        raise LetterSourceError(source.origin, None, problem)
    return letter


def _recipient_row(org: Organisation) -> DispatchRecipient:
    return DispatchRecipient(
        organisation_id=org.id,
        name=org.name,
        province_code=org.province_code,
        email=org.email,
        cc=list(org.cc or []),
    )


def _set_recipients(dispatch: Dispatch, orgs: list[Organisation]) -> bool:
    """Make the draft's recipients exactly ``orgs``; True if anything changed."""
    wanted = {org.id: org for org in orgs}
    current = {recipient.organisation_id: recipient for recipient in dispatch.recipients}
    removed = [r for org_id, r in current.items() if org_id not in wanted]
    added = [org for org_id, org in wanted.items() if org_id not in current]
    if not removed and not added:
        return False
    for recipient in removed:
        dispatch.recipients.remove(recipient)
    db.session.flush()  # the unique (dispatch, office) key must not see a row twice
    dispatch.recipients.extend(_recipient_row(org) for org in added)
    return True


def _text(value: Any, limit: int) -> str:
    """A value typed into the composer as the draft's columns keep it for lists and the audit
    log: one line, without the characters that would reorder how it reads there (the letter
    source keeps it as typed, and the composer shows what is wrong with it)."""
    if not isinstance(value, str):
        return ""
    return " ".join(without_refused_characters(value).split())[:limit]


def _source_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The parts of a letter source that differ: each meta key, "body", "appendices"."""
    old_meta, new_meta = before.get("meta") or {}, after.get("meta") or {}
    changed = sorted(k for k in set(old_meta) | set(new_meta) if old_meta.get(k) != new_meta.get(k))
    changed += [part for part in ("body", "appendices") if before.get(part) != after.get(part)]
    return changed


@dataclass(frozen=True)
class DraftSaved:
    """What writing a draft did: the draft, whether it is new, which of its parts changed."""

    dispatch: Dispatch
    created: bool
    changed: tuple[str, ...]


def _write(
    dispatch: Dispatch | None,
    source: dict[str, Any] | None,
    *,
    letter: Letter | None,
    origin: str | None,
    group_code: str | None,
    recipient_ids: Iterable[int] | None,
    policy: Mapping[str, Any],
    actor: User | None,
    at: dt.datetime,
) -> DraftSaved:
    """The one write path of a draft, whichever door it comes through.

    ``dispatch`` None creates the draft. ``source`` (JSON form, None: unchanged) is stored with
    ``origin`` (None: "bản nháp <id>"). ``letter`` is the source's built letter when the door
    asks for a valid one: subject, symbol and register come from it and a group without any
    office on the letter's date is refused; without it they are taken as typed. The recipients
    are re-chosen when a group is given or the letter changes: the offices ``recipient_ids``,
    or else every member of the group valid on ``recipients_date``. ``policy``: checked
    reminder settings to set. Writes "dispatch.drafted" or "dispatch.draft_updated"; flushes.
    """
    created = dispatch is None
    before: dict[str, Any] = {} if dispatch is None else copy.deepcopy(dispatch.source or {})
    current = source if source is not None else before
    meta = current.get("meta") if isinstance(current.get("meta"), dict) else {}
    on = recipients_date(meta.get("date"), at)

    # Resolve the recipients before writing anything: a bad group leaves no half-made draft.
    code = group_code
    if code is None and source is not None and dispatch is not None and dispatch.group:
        code = dispatch.group.code
    group: RecipientGroup | None = None
    orgs: list[Organisation] = []
    if code is not None:
        group = offices.get_group(code)
        if recipient_ids is None:
            orgs = offices.recipients_for(code, on)
            if letter is not None and not orgs:
                raise DraftError(
                    f"Nhóm {code!r} không có cơ quan nào còn hiệu lực vào ngày {on:%d/%m/%Y}."
                )
        else:
            orgs = offices.organisations_by_id(recipient_ids)

    if dispatch is None:
        dispatch = Dispatch(
            status=DispatchStatus.DRAFT,
            source={},
            subject="",
            symbol="",
            register="",
            created_at=at,
            updated_at=at,
            created_by_id=actor.id if actor is not None else None,
            # The draft knows its verification page before approval: the PDF a leader signs
            # already carries the QR code that opens it.
            verification_code=new_verification_code(),
        )
        db.session.add(dispatch)
        db.session.flush()

    changed: list[str] = []
    details: dict[str, Any] = {}
    if source is not None:
        changed += _source_changes(before, source)
        if changed or created:
            dispatch.source = {**source, "origin": origin or draft_origin(dispatch.id)}
        if letter is not None:
            subject, symbol = letter.subject, letter.symbol
        else:
            subject, symbol = _text(meta.get("subject"), 500), _text(meta.get("symbol"), 30)
        for name, value in (
            ("subject", subject),
            ("symbol", symbol),
            ("register", register_for(symbol)),
        ):
            if getattr(dispatch, name) != value:
                if not created:
                    details[name] = {"from": getattr(dispatch, name), "to": value}
                    if name not in changed:
                        changed.append(name)
                setattr(dispatch, name, value)
    for name, value in policy.items():
        if getattr(dispatch, name) != value:
            details[name] = {"from": getattr(dispatch, name), "to": value}
            changed.append(name)
            setattr(dispatch, name, value)
    if group is not None:
        regrouped = group.id != dispatch.group_id
        if regrouped:
            dispatch.group_id = group.id
            changed.append("group")
        reselected = _set_recipients(dispatch, orgs)
        if reselected:
            changed.append("recipients")
        if regrouped or reselected:
            details["recipients"] = {"group": code, "on": on.isoformat(), "count": len(orgs)}

    if changed and not created:
        dispatch.updated_at = at
    db.session.flush()
    stored_origin = (dispatch.source or {}).get("origin")
    if created:
        audit.record_dispatch(
            "dispatch.drafted",
            dispatch.id,
            actor=actor_name(actor),
            at=at,
            details={
                "origin": stored_origin,
                "subject": dispatch.subject,
                "symbol": dispatch.symbol,
                "register": dispatch.register,
                "verification_code": dispatch.verification_code,
                "group": code,
                "recipients_on": on.isoformat(),
                "recipients": [recipient.province_code for recipient in dispatch.recipients],
            },
        )
    elif changed:
        audit.record_dispatch(
            "dispatch.draft_updated",
            dispatch.id,
            actor=actor_name(actor),
            at=at,
            details={**details, "changed": changed, "origin": stored_origin},
        )
    return DraftSaved(dispatch=dispatch, created=created, changed=tuple(changed))


# --- the doors ------------------------------------------------------------------------------------


def create_draft(
    source: LetterSource | Path | str,
    *,
    group_code: str,
    actor: User | None,
    at: dt.datetime,
) -> Dispatch:
    """A new draft from a source folder (or a ``LetterSource``) to a group; the caller commits.

    Raises ``LetterSourceError`` (naming file and line) for a bad source and ``DraftError`` or
    ``offices.DirectoryError`` for a bad group.
    """
    stored, letter, origin = checked_source(source)
    return _write(
        None,
        stored,
        letter=letter,
        origin=origin,
        group_code=group_code,
        recipient_ids=None,
        policy={},
        actor=actor,
        at=at,
    ).dispatch


def checked_source(
    source: LetterSource | Path | str,
) -> tuple[dict[str, Any], Letter, str | None]:
    """A letter folder checked and in its stored (JSON) form, its built letter and its origin;
    ``LetterSourceError`` (naming file and line) for a bad source."""
    letter_source = _load_source(source)
    letter = _checked(letter_source)
    return source_to_json(letter_source), letter, letter_source.origin


def create_addressed(
    source: dict[str, Any],
    *,
    letter: Letter | None,
    origin: str | None,
    group_code: str,
    recipient_ids: Iterable[int],
    actor: User | None,
    at: dt.datetime,
) -> Dispatch:
    """A new draft to chosen offices of a group (a follow-up letter); the caller commits."""
    return _write(
        None,
        source,
        letter=letter,
        origin=origin,
        group_code=group_code,
        recipient_ids=list(recipient_ids),
        policy={},
        actor=actor,
        at=at,
    ).dispatch


def readdress(
    dispatch: Dispatch, organisation_ids: Iterable[int], *, actor: User | None, at: dt.datetime
) -> None:
    """Make a draft's recipients exactly these offices (the issuing check's "send to the
    successors"); the caller audits and commits. Allowed on a draft submitted or approved for
    signature: the recipients' rows are not part of the signed letter."""
    ensure_editable(dispatch, letter=False)
    if _set_recipients(dispatch, offices.organisations_by_id(organisation_ids)):
        dispatch.updated_at = at
    db.session.flush()


def save_as_typed(
    dispatch_id: int | None,
    source: dict[str, Any],
    *,
    group_code: str | None,
    recipient_ids: Iterable[int] | None,
    actor: User | None,
    at: dt.datetime,
) -> DraftSaved:
    """Create (``dispatch_id`` None) or update a draft from a letter source kept as typed, valid
    or not (the web composer); the caller commits.

    The attachments the stored source lists are kept: they change through ``uploads`` only.
    ``recipient_ids`` None takes every member of the group on the letter's date. Raises
    ``DispatchFrozen`` for an issued dispatch and ``offices.DirectoryError`` for an unknown group.
    """
    dispatch = None
    meta = dict(source.get("meta") or {})
    meta.pop("attachments", None)
    if dispatch_id is not None:
        dispatch = lock_dispatch(dispatch_id)
        ensure_editable(dispatch)
        stored = (dispatch.source or {}).get("meta") or {}
        if stored.get("attachments"):
            meta["attachments"] = stored["attachments"]
    return _write(
        dispatch,
        {**source, "meta": meta},
        letter=None,
        origin=None,
        group_code=group_code,
        recipient_ids=recipient_ids,
        policy={},
        actor=actor,
        at=at,
    )


def list_attachments(dispatch: Dispatch, names: list[str], *, at: dt.datetime) -> None:
    """Make a draft's letter source list exactly ``names`` as its attachments (the files
    themselves are ``uploads``' business); the caller audits and flushes."""
    ensure_editable(dispatch)
    source = dict(dispatch.source or {})
    meta = dict(source.get("meta") or {})
    if names:
        meta["attachments"] = list(names)
    else:
        meta.pop("attachments", None)
    source["meta"] = meta
    dispatch.source = source
    dispatch.updated_at = at


def lock_dispatch(dispatch_id: int) -> Dispatch:
    """The dispatch, re-read and locked for this transaction (PostgreSQL: FOR UPDATE)."""
    dispatch = db.session.execute(
        select(Dispatch)
        .where(Dispatch.id == dispatch_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if dispatch is None:
        raise DraftError(f"Không có công văn mã {dispatch_id}.")
    return dispatch


def update_draft(
    dispatch_id: int,
    *,
    actor: User | None,
    at: dt.datetime,
    source: LetterSource | Path | str | dict | None = None,
    group_code: str | None = None,
    deadline_working_days: int | None = None,
    deadline_hour: int | None = None,
    reminder_hour: int | None = None,
    reminders_enabled: bool | None = None,
) -> Dispatch:
    """Change a draft's letter, group or reminder policy; ``DispatchFrozen`` once issued.

    ``source`` may also be the JSON form (a dict, as the web composer posts it); it must be a
    valid letter. A new group, or a letter whose date moves to another month, re-selects the
    recipients. The caller commits.
    """
    dispatch = lock_dispatch(dispatch_id)
    ensure_editable(dispatch)
    policy: dict[str, Any] = {}
    for name, value, low, high in (
        ("deadline_working_days", deadline_working_days, 1, 30),
        ("deadline_hour", deadline_hour, 0, 23),
        ("reminder_hour", reminder_hour, 0, 23),
    ):
        if value is None:
            continue
        if not low <= value <= high:
            raise DraftError(f"Giá trị {name} = {value} phải từ {low} đến {high}.")
        policy[name] = value
    if reminders_enabled is not None:
        policy["reminders_enabled"] = reminders_enabled

    payload: dict[str, Any] | None = None
    origin: str | None = None
    letter: Letter | None = None
    if source is not None:
        if isinstance(source, dict):
            letter_source = source_from_json(source, origin=draft_origin(dispatch_id))
        else:
            letter_source = _load_source(source)
        letter = _checked(letter_source)
        payload, origin = source_to_json(letter_source), letter_source.origin
    elif group_code is not None:
        # The group's offices are those of the letter's date: the stored letter must be valid.
        letter = build_letter(source_from_json(dispatch.source, origin=draft_origin(dispatch_id)))
    return _write(
        dispatch,
        payload,
        letter=letter,
        origin=origin,
        group_code=group_code,
        recipient_ids=None,
        policy=policy,
        actor=actor,
        at=at,
    ).dispatch


# --- the guard: an issued dispatch cannot be edited through any path ---------------------------


def _changed(state: Any, name: str) -> bool:
    history = state.attrs[name].history
    if not history.has_changes():
        return False
    if history.added and history.deleted:
        return history.added[0] != history.deleted[0]
    return True  # the old value was not loaded: assume the worst


def _status_before(obj: Dispatch) -> DispatchStatus | None:
    history = inspect(obj).attrs.status.history
    if history.deleted:
        return history.deleted[0]
    return obj.status


def refuse_edits_of_issued(session: Session, flush_context: Any, instances: Any) -> None:
    """``before_flush`` guard (attached in ``create_app``): an issued dispatch never changes."""
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, Dispatch):
            state = inspect(obj)
            if not state.persistent or _status_before(obj) in (None, DispatchStatus.DRAFT):
                continue
            if obj in session.deleted:
                raise DispatchFrozen(frozen_message(obj))
            if any(_changed(state, name) for name in FROZEN_FIELDS):
                raise DispatchFrozen(frozen_message(obj))
            if obj.status is DispatchStatus.DRAFT:
                raise DispatchFrozen(frozen_message(obj))
        elif isinstance(obj, Document):
            state = inspect(obj)
            if not state.persistent:
                continue
            if obj in session.deleted or any(
                _changed(state, name) for name in FROZEN_DOCUMENT_FIELDS
            ):
                raise DispatchFrozen(
                    f"Tệp {obj.filename} của công văn đã ban hành không thể sửa hoặc xoá."
                )
