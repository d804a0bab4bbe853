"""Drafts: a letter source and its recipients, editable until the dispatch is issued.

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

import datetime as dt
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
    read_source,
    register_of,
    source_from_json,
    source_to_json,
)
from dispatch.models import (
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
    Organisation,
    User,
)

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
)
FROZEN_DOCUMENT_FIELDS = ("dispatch_id", "kind", "filename", "media_type", "sha256", "size", "path")


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


def ensure_editable(dispatch: Dispatch) -> None:
    """Raise ``DispatchFrozen`` unless the dispatch is still a draft."""
    if dispatch.status is not DispatchStatus.DRAFT:
        raise DispatchFrozen(frozen_message(dispatch))


def recipients_date(letter: Letter, at: dt.datetime) -> dt.date:
    """The day whose directory a draft is addressed from: the letter's date, else its month."""
    if letter.date is not None:
        return letter.date
    if letter.year is not None:
        return dt.date(letter.year, letter.month or 1, 1)
    return local(at).date()


def _load_source(source: LetterSource | Path | str) -> LetterSource:
    if isinstance(source, LetterSource):
        return source
    return read_source(Path(source))


def _checked(source: LetterSource) -> tuple[Letter, str]:
    """The built letter and its register; every problem as a ``LetterSourceError``."""
    letter = build_letter(source)
    try:
        register = register_of(letter.symbol)
    except ValueError as exc:  # build_letter checked the symbol already; kept for safety
        raise LetterSourceError(source.origin, None, str(exc)) from exc
    return letter, register


def _recipient_rows(orgs: list[Organisation]) -> list[DispatchRecipient]:
    return [
        DispatchRecipient(
            organisation_id=org.id,
            name=org.name,
            province_code=org.province_code,
            email=org.email,
            cc=list(org.cc or []),
        )
        for org in orgs
    ]


def _members(group_code: str, on: dt.date) -> tuple[int, list[Organisation]]:
    group = offices.get_group(group_code)
    orgs = offices.recipients_for(group_code, on)
    if not orgs:
        raise DraftError(
            f"Nhóm {group_code!r} không có cơ quan nào còn hiệu lực vào ngày {on:%d/%m/%Y}."
        )
    return group.id, orgs


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
    letter_source = _load_source(source)
    letter, register = _checked(letter_source)
    on = recipients_date(letter, at)
    group_id, orgs = _members(group_code, on)
    dispatch = Dispatch(
        status=DispatchStatus.DRAFT,
        source=source_to_json(letter_source),
        subject=letter.subject,
        symbol=letter.symbol,
        register=register,
        created_at=at,
        updated_at=at,
        created_by_id=actor.id if actor is not None else None,
        group_id=group_id,
    )
    dispatch.recipients = _recipient_rows(orgs)
    db.session.add(dispatch)
    db.session.flush()
    audit.record_dispatch(
        "dispatch.drafted",
        dispatch.id,
        actor=actor_name(actor),
        at=at,
        details={
            "origin": letter_source.origin,
            "subject": letter.subject,
            "symbol": letter.symbol,
            "register": register,
            "group": group_code,
            "recipients_on": on.isoformat(),
            "recipients": [org.province_code for org in orgs],
        },
    )
    return dispatch


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

    ``source`` may also be the JSON form (a dict, as the web composer posts it). A new group,
    or a letter whose date moves to another month, re-selects the recipients. The caller commits.
    """
    dispatch = lock_dispatch(dispatch_id)
    ensure_editable(dispatch)
    changes: dict[str, Any] = {}
    letter: Letter | None = None
    if source is not None:
        if isinstance(source, dict):
            letter_source = source_from_json(source, origin=f"bản nháp {dispatch_id}")
        else:
            letter_source = _load_source(source)
        letter, register = _checked(letter_source)
        payload = source_to_json(letter_source)
        if payload != dispatch.source:
            changes["source"] = True
            dispatch.source = payload
        for field, value in (
            ("subject", letter.subject),
            ("symbol", letter.symbol),
            ("register", register),
        ):
            if getattr(dispatch, field) != value:
                changes[field] = {"from": getattr(dispatch, field), "to": value}
                setattr(dispatch, field, value)
    for field, value, low, high in (
        ("deadline_working_days", deadline_working_days, 1, 30),
        ("deadline_hour", deadline_hour, 0, 23),
        ("reminder_hour", reminder_hour, 0, 23),
    ):
        if value is None:
            continue
        if not low <= value <= high:
            raise DraftError(f"Giá trị {field} = {value} phải từ {low} đến {high}.")
        if getattr(dispatch, field) != value:
            changes[field] = {"from": getattr(dispatch, field), "to": value}
            setattr(dispatch, field, value)
    if reminders_enabled is not None and dispatch.reminders_enabled != reminders_enabled:
        changes["reminders_enabled"] = {"from": dispatch.reminders_enabled, "to": reminders_enabled}
        dispatch.reminders_enabled = reminders_enabled

    if group_code is not None or letter is not None:
        if letter is None:
            letter = build_letter(source_from_json(dispatch.source))
        on = recipients_date(letter, at)
        code = group_code or (dispatch.group.code if dispatch.group else None)
        if code is not None:
            group_id, orgs = _members(code, on)
            before = sorted(r.organisation_id for r in dispatch.recipients)
            if group_id != dispatch.group_id or before != sorted(org.id for org in orgs):
                changes["recipients"] = {"group": code, "on": on.isoformat(), "count": len(orgs)}
                dispatch.group_id = group_id
                dispatch.recipients.clear()
                db.session.flush()  # remove the old rows before the unique key sees new ones
                dispatch.recipients.extend(_recipient_rows(orgs))

    if changes:
        dispatch.updated_at = at
        db.session.flush()
        audit.record_dispatch(
            "dispatch.draft_updated",
            dispatch.id,
            actor=actor_name(actor),
            at=at,
            details=changes,
        )
    return dispatch


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
