"""Confirmation of receipt: what each recipient's personal link (``dispatch.mail.links``) records.

Through the link a recipient opens the letter's page, downloads the archived files and confirms
receipt (``acknowledge``). These functions write in the caller's transaction, audit included;
the caller (view or command) commits.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import Connection, Integer, bindparam, func, insert, literal, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import contains_eager
from sqlalchemy.orm.attributes import set_committed_value

from dispatch import audit
from dispatch.extensions import db
from dispatch.letters.source import issuing_agency_in
from dispatch.mail.links import hash_token, is_well_formed
from dispatch.models import (
    AcknowledgementMethod,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
    RecipientEvent,
)
from dispatch.text import (
    clean_line,
    clean_note,
    refused_characters_message,
    without_controls,
)

# --- Looking a recipient up by its link, and what the link records ---------------------------

# Limits of what a confirmer types (the columns are sized to match).
NAME_MAX = 100
POSITION_MAX = 100
NOTE_MAX = 1000
USER_AGENT_MAX = 300
IP_MAX = 45

# Opening the page again within this interval (same address, same browser) adds no event:
# reloads and mail scanners would otherwise flood the history.
OPENED_EVENT_INTERVAL = dt.timedelta(minutes=1)

# A dispatch whose letter has gone out; a draft never has a working link.
# A recalled or replaced letter's link still opens: the office reads there what became of it.
_LIVE_STATUSES = (
    DispatchStatus.ISSUED,
    DispatchStatus.COMPLETED,
    DispatchStatus.RECALLED,
    DispatchStatus.REPLACED,
)


class AcknowledgementError(ValueError):
    """What was typed cannot be recorded; ``errors`` maps each field to a Vietnamese message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


@dataclass(frozen=True)
class AckResult:
    """The confirmation on record after ``acknowledge``: ``recorded`` is False if it was earlier."""

    recorded: bool
    acknowledged_at: dt.datetime
    acknowledged_by: str
    acknowledged_position: str | None
    method: AcknowledgementMethod


def validate_confirmer(name: str, position: str, note: str) -> dict[str, str]:
    """Vietnamese error messages for cleaned confirmation fields, keyed by field; {} if valid."""
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "Vui lòng nhập họ và tên người xác nhận."
    elif len(name) > NAME_MAX:
        errors["name"] = f"Họ và tên dài tối đa {NAME_MAX} ký tự (đã nhập {len(name)})."
    if not position:
        errors["position"] = "Vui lòng nhập chức vụ của người xác nhận."
    elif len(position) > POSITION_MAX:
        errors["position"] = f"Chức vụ dài tối đa {POSITION_MAX} ký tự (đã nhập {len(position)})."
    if len(note) > NOTE_MAX:
        errors["note"] = f"Ghi chú dài tối đa {NOTE_MAX} ký tự (đã nhập {len(note)})."
    return errors


def _clip(value: str | None, limit: int) -> str | None:
    """Header values are the client's to choose: keep what fits the column."""
    if not value:
        return None
    return without_controls(unicodedata.normalize("NFC", value))[:limit] or None


def find_recipient(token: str) -> DispatchRecipient | None:
    """The recipient whose link this token is, on an issued dispatch (loaded with it, in one
    query); None for any other token."""
    if not is_well_formed(token):
        return None
    # Looking up the SHA-256 rather than comparing tokens leaks nothing through timing: the
    # attacker does not control the hash being compared.
    # The letter source (a large JSON document) is not read here: what the page needs of it
    # is in ``issued_letter``, read once per process.
    return db.session.execute(
        select(DispatchRecipient)
        .join(DispatchRecipient.dispatch)
        .options(contains_eager(DispatchRecipient.dispatch).defer(Dispatch.source))
        .where(
            DispatchRecipient.token_hash == hash_token(token),
            Dispatch.status.in_(_LIVE_STATUSES),
        )
    ).scalar_one_or_none()


@dataclass(frozen=True)
class LinkDispatch:
    """What a link's page reads of its dispatch on every request (plain values, no ORM)."""

    id: int
    status: DispatchStatus
    subject: str
    symbol: str
    number: int | None
    issued_on: dt.date | None
    issued_at: dt.datetime | None
    deadline_at: dt.datetime | None
    signed: bool  # issued as a signed original: the PDF is the original, the DOCX a copy

    @property
    def number_and_symbol(self) -> str | None:
        """'01/THH-VP' once issued (as ``Dispatch.number_and_symbol``)."""
        return None if self.number is None else f"{self.number:02d}/{self.symbol}"


@dataclass(frozen=True)
class Link:
    """A recipient as its link's page reads it, with its dispatch (``find_link``)."""

    id: int
    dispatch_id: int
    name: str
    opened_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    acknowledged_position: str | None
    acknowledged_method: AcknowledgementMethod | None
    dispatch: LinkDispatch


_DISPATCHES = Dispatch.__table__
_LINK_RECIPIENT_COLUMNS = (
    "id",
    "dispatch_id",
    "name",
    "opened_at",
    "acknowledged_at",
    "acknowledged_by",
    "acknowledged_position",
    "acknowledged_method",
)
_LINK_DISPATCH_COLUMNS = (
    "id",
    "status",
    "subject",
    "symbol",
    "number",
    "issued_on",
    "issued_at",
    "deadline_at",
    "signed",
)
# Built once: every opening of a link runs it.
_FIND_LINK = (
    select(
        *(DispatchRecipient.__table__.c[name] for name in _LINK_RECIPIENT_COLUMNS),
        *(_DISPATCHES.c[name].label(f"of_dispatch_{name}") for name in _LINK_DISPATCH_COLUMNS),
    )
    .join_from(DispatchRecipient.__table__, _DISPATCHES)
    .where(
        DispatchRecipient.__table__.c.token_hash == bindparam("token_hash"),
        _DISPATCHES.c.status.in_(_LIVE_STATUSES),
    )
)


def find_link(token: str, connection: Connection | None = None) -> Link | None:
    """What the page of the link ``token`` shows of its recipient and dispatch, as plain values
    read in one query (through ``connection`` if given, else the session); None for a token
    that is not a live link (as ``find_recipient``)."""
    if not is_well_formed(token):
        return None
    parameters = {"token_hash": hash_token(token)}
    if connection is None:
        row = db.session.execute(_FIND_LINK, parameters).first()
    else:
        row = connection.execute(_FIND_LINK, parameters).first()
    if row is None:
        return None
    values = row._mapping
    return Link(
        **{name: values[name] for name in _LINK_RECIPIENT_COLUMNS},
        dispatch=LinkDispatch(
            **{name: values[f"of_dispatch_{name}"] for name in _LINK_DISPATCH_COLUMNS}
        ),
    )


def _actor(recipient: DispatchRecipient | Link) -> str:
    """How the audit log names someone acting through a recipient's link."""
    return f"recipient:{recipient.id}"


_RECIPIENTS = DispatchRecipient.__table__
_EVENTS = RecipientEvent.__table__
_EVENT_COLUMNS = ("recipient_id", "kind", "detail", "at", "ip", "user_agent")
_INSERT_EVENT = insert(_EVENTS)


def _first_open_statement():
    """PostgreSQL: set ``opened_at`` if unset and, only then, add the "opened" event, in one
    statement; returns the event's id (no row if the link had been opened already)."""
    opened = (
        update(_RECIPIENTS)
        .where(
            _RECIPIENTS.c.id == bindparam("event_recipient_id"),
            _RECIPIENTS.c.opened_at.is_(None),
        )
        .values(opened_at=bindparam("event_at"))
        .returning(_RECIPIENTS.c.id)
        .cte("opened")
    )
    # Parameters named apart from every column: an UPDATE sets the columns its parameters name.
    values = select(
        *(bindparam(f"event_{name}", type_=_EVENTS.c[name].type) for name in _EVENT_COLUMNS)
    ).select_from(opened)
    return insert(_EVENTS).from_select(list(_EVENT_COLUMNS), values).returning(_EVENTS.c.id)


_FIRST_OPEN = _first_open_statement()


def _audited_statement(change: Any, *others: Any) -> Any:
    """PostgreSQL: one statement that makes ``change`` (a CTE returning a row when it changed
    something), the ``others`` that depend on it, and its audit entry (``audit.gated_append``),
    all or nothing.

    It returns how many rows the change touched, and fails as a whole (a division by zero,
    ``GUARD_FAILED``) if it changed something without appending its entry, which happens when
    another process moved the lane's end: nothing is then written, and the caller takes the
    ordinary way (a transaction that reads the lane's end).
    """
    entry = audit.gated_append(change)
    changed = select(func.count()).select_from(change).scalar_subquery()
    entries = select(func.count()).select_from(entry).scalar_subquery()
    # Every CTE is named in the statement (an unnamed one would not be sent); 1 / 0 when a
    # change has no entry (entries is never more than changed).
    return select(
        changed.label("changed"),
        (literal(1, Integer) // (literal(1, Integer) + entries - changed)).label("guard"),
        *(select(func.count()).select_from(other).scalar_subquery() for other in others),
    )


# SQLSTATE of the guard of ``_audited_statement`` (division_by_zero).
GUARD_FAILED = "22012"


def _run_audited(connection: Connection, statement: Any, parameters: dict[str, Any]) -> int | None:
    """Run an ``_audited_statement`` on its own (``connection`` in autocommit); how many rows it
    changed, or None if it wrote nothing because the audit lane had moved."""
    try:
        return connection.execute(statement, parameters).scalar_one()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == GUARD_FAILED:
            return None
        raise


def _first_open_audited_statement():
    """PostgreSQL: ``_FIRST_OPEN`` and the "recipient.opened" entry, in one statement."""
    opened = (
        update(_RECIPIENTS)
        .where(
            _RECIPIENTS.c.id == bindparam("event_recipient_id"),
            _RECIPIENTS.c.opened_at.is_(None),
        )
        .values(opened_at=bindparam("event_at"))
        .returning(_RECIPIENTS.c.id)
        .cte("opened")
    )
    values = select(
        *(bindparam(f"event_{name}", type_=_EVENTS.c[name].type) for name in _EVENT_COLUMNS)
    ).select_from(opened)
    event = (
        insert(_EVENTS)
        .from_select(list(_EVENT_COLUMNS), values)
        .returning(_EVENTS.c.id)
        .cte("event")
    )
    return _audited_statement(opened, event)


_FIRST_OPEN_AUDITED = _first_open_audited_statement()


def record_first_open(connection: Connection | None, link: Link, visit: LinkVisit) -> bool:
    """The common case of ``record_visit`` in one statement of its own: the link's first
    opening, its event and its audit entry, on PostgreSQL, through ``connection`` (in
    autocommit: the statement is its own transaction). True if it recorded the visit; False if
    nothing was written and ``record_visit`` must (the link was opened before, or is being
    opened by another request; the audit lane's end is not where this process left it; or
    another database).
    """
    if (
        connection is None
        or link.opened_at is not None
        or visit.document_id is not None
        or connection.dialect.name != "postgresql"
    ):
        return False
    append = audit.prepare_gated(
        "recipient.opened",
        actor=_actor(link),
        at=visit.at,
        object_type="dispatch_recipient",
        object_id=link.id,
        dispatch_id=link.dispatch_id,
        details={"via": "page"},
    )
    if append is None:
        return False
    parameters = {
        "event_recipient_id": link.id,
        "event_kind": "opened",
        "event_detail": None,
        "event_at": visit.at,
        "event_ip": _clip(visit.ip, IP_MAX),
        "event_user_agent": _clip(visit.user_agent, USER_AGENT_MAX),
        **append.parameters,
    }
    if not _run_audited(connection, _FIRST_OPEN_AUDITED, parameters):
        return False
    append.appended()
    return True


def _audit_opened(recipient: DispatchRecipient | Link, at: dt.datetime, via: str) -> None:
    audit.record(
        "recipient.opened",
        actor=_actor(recipient),
        at=at,
        object_type="dispatch_recipient",
        object_id=recipient.id,
        dispatch_id=recipient.dispatch_id,
        details={"via": via},
    )


def _learn_opened(recipient: DispatchRecipient | Link, at: dt.datetime) -> None:
    """Written just now: the object learns it without reading the row back."""
    if isinstance(recipient, DispatchRecipient):
        set_committed_value(recipient, "opened_at", at)


def _mark_opened(recipient: DispatchRecipient | Link, at: dt.datetime, via: str) -> bool:
    """Set ``opened_at`` if it is unset (once, even under concurrency); True if this call did.

    A recipient already read as opened costs no query: ``opened_at`` is never unset.
    """
    if recipient.opened_at is not None:
        return False
    result = db.session.execute(
        update(_RECIPIENTS)
        .where(_RECIPIENTS.c.id == recipient.id, _RECIPIENTS.c.opened_at.is_(None))
        .values(opened_at=at)
    )
    if result.rowcount != 1:
        return False
    _audit_opened(recipient, at, via)
    return True


def record_opened(
    recipient: DispatchRecipient | Link, *, ip: str | None, user_agent: str | None, at: dt.datetime
) -> bool:
    """Record that the link's page was opened; False if an identical open was just recorded.

    ``recipient`` is the row as read (``opened_at`` decides whether this may be the first open).
    The first open costs, on PostgreSQL, one statement for the mark and its event and the audit
    entry's own (its lane's end, the entry).
    """
    ip, user_agent = _clip(ip, IP_MAX), _clip(user_agent, USER_AGENT_MAX)
    event = {
        "recipient_id": recipient.id,
        "kind": "opened",
        "detail": None,
        "at": at,
        "ip": ip,
        "user_agent": user_agent,
    }
    if recipient.opened_at is None:
        if db.engine.dialect.name == "postgresql":
            named = {f"event_{name}": value for name, value in event.items()}
            first = db.session.execute(_FIRST_OPEN, named).first() is not None
            if first:
                _audit_opened(recipient, at, "page")
                _learn_opened(recipient, at)
                return True
        elif _mark_opened(recipient, at, via="page"):
            _learn_opened(recipient, at)
            db.session.execute(_INSERT_EVENT, event)
            return True
    # Opened before (or just now, by another request): an event unless an identical one is
    # recent.
    recent = db.session.execute(
        select(RecipientEvent.id)
        .where(
            RecipientEvent.recipient_id == recipient.id,
            RecipientEvent.kind == "opened",
            RecipientEvent.ip.is_(None) if ip is None else RecipientEvent.ip == ip,
            RecipientEvent.user_agent.is_(None)
            if user_agent is None
            else RecipientEvent.user_agent == user_agent,
            RecipientEvent.at > at - OPENED_EVENT_INTERVAL,
            RecipientEvent.at <= at,
        )
        .limit(1)
    ).first()
    if recent is not None:
        return False
    db.session.execute(_INSERT_EVENT, event)
    return True


@dataclass(frozen=True)
class IssuedFile:
    """One archived file of an issued dispatch, as its link page lists it."""

    id: int
    kind: str
    filename: str
    size: int | None
    sha256: str


@dataclass(frozen=True)
class IssuedLetter:
    """What a link page shows of its dispatch that can no longer change once it is issued: the
    frozen letter, its archived files, and what it is to another letter (a recall or a
    replacement is issued only after its amendment is approved). Whether the letter itself was
    later recalled or replaced is not here: that is read from its status on every request."""

    issuing_agency: str
    files: tuple[IssuedFile, ...]
    successor_of: tuple[str, str] | None  # (kind, number of the original) for a recall/replacement


# Kept per process in the app (by dispatch id and moment of issue), at most this many letters:
# a process serving many letters keeps the most recently read ones.
_ISSUED_LETTERS_MAX = 256


def issued_letter(dispatch: Dispatch | LinkDispatch) -> IssuedLetter:
    """The frozen facts of an issued ``dispatch`` (read from the database once per process)."""
    cache = current_app.extensions.setdefault("dispatch_issued_letters", {})
    key = (dispatch.id, dispatch.issued_at)
    cached = cache.get(key)
    if cached is not None:
        return cached
    from dispatch.models import AmendmentStatus, DispatchAmendment

    files = tuple(
        IssuedFile(d.id, d.kind, d.filename, d.size, d.sha256)
        for d in db.session.execute(
            select(Document).where(Document.dispatch_id == dispatch.id).order_by(Document.id)
        ).scalars()
    )
    amendment = db.session.execute(
        select(DispatchAmendment)
        .where(
            DispatchAmendment.new_id == dispatch.id,
            DispatchAmendment.status == AmendmentStatus.APPROVED,
        )
        .limit(1)
    ).scalar_one_or_none()
    successor_of = (
        None
        if amendment is None
        else (amendment.kind.value, amendment.original.number_and_symbol or "")
    )
    source = db.session.execute(
        select(Dispatch.source).where(Dispatch.id == dispatch.id)
    ).scalar_one()
    letter = IssuedLetter(issuing_agency_in(source), files, successor_of)
    if dispatch.status in _LIVE_STATUSES:
        if len(cache) >= _ISSUED_LETTERS_MAX:
            cache.pop(next(iter(cache)))
        cache[key] = letter
    return letter


def find_document(recipient: DispatchRecipient, ref: str) -> Document | None:
    """One of the recipient's dispatch's files, by its id or its file name; None otherwise."""
    # Both look-ups are limited to this recipient's dispatch: a token opens only its own files.
    condition = Document.filename == unicodedata.normalize("NFC", ref)
    if ref.isascii() and ref.isdigit() and len(ref) < 10:
        condition = or_(Document.id == int(ref), condition)
    return db.session.execute(
        select(Document)
        .where(Document.dispatch_id == recipient.dispatch_id, condition)
        .order_by(Document.id)
        .limit(1)
    ).scalar_one_or_none()


def record_download(
    recipient: DispatchRecipient | Link,
    document: Document,
    *,
    ip: str | None,
    user_agent: str | None,
    at: dt.datetime,
) -> None:
    """Record that a file was downloaded through the link (and that the link was opened)."""
    ip, user_agent = _clip(ip, IP_MAX), _clip(user_agent, USER_AGENT_MAX)
    if _mark_opened(recipient, at, via="download"):
        _learn_opened(recipient, at)
    db.session.add(
        RecipientEvent(
            recipient_id=recipient.id,
            kind="downloaded",
            detail=document.filename[:200],
            at=at,
            ip=ip,
            user_agent=user_agent,
        )
    )
    audit.record_recipient(
        "recipient.downloaded",
        recipient,
        actor=_actor(recipient),
        at=at,
        details={"document_id": document.id, "filename": document.filename, "ip": ip},
    )
    db.session.flush()


@dataclass(frozen=True)
class LinkVisit:
    """A use of a link to record, now or later: the page opened, or (``document_id``) a file
    downloaded, with the moment it happened and who asked."""

    recipient_id: int
    at: dt.datetime
    ip: str | None
    user_agent: str | None
    document_id: int | None = None

    def describe(self) -> str:
        """For the log: what, whose, when."""
        what = "opened" if self.document_id is None else f"downloaded {self.document_id}"
        return f"recipient {self.recipient_id} {what} at {self.at.isoformat()}"


def record_visit(
    visit: LinkVisit,
    recipient: DispatchRecipient | Link | None = None,
    document: Document | None = None,
) -> None:
    """Record ``visit`` at its own moment (``record_opened`` or ``record_download``).

    ``recipient`` and ``document`` are the rows already read, if any; otherwise they are looked
    up, and a visit whose recipient or file no longer exists records nothing.
    """
    if recipient is None:
        recipient = db.session.get(DispatchRecipient, visit.recipient_id)
    if recipient is None:
        return
    common = {"ip": visit.ip, "user_agent": visit.user_agent, "at": visit.at}
    if visit.document_id is None:
        record_opened(recipient, **common)
        return
    if document is None:
        document = db.session.get(Document, visit.document_id)
    if document is not None:
        record_download(recipient, document, **common)


def _checked_confirmer(name: str, position: str, note: str | None) -> tuple[str, str, str]:
    """The confirmer's fields as stored; AcknowledgementError if they cannot be."""
    refused = {
        field: f"{label} {message}."
        for field, label, value in (("name", "Họ và tên", name), ("position", "Chức vụ", position))
        if (message := refused_characters_message(value or ""))
    }
    name, position, note = clean_line(name), clean_line(position), clean_note(note)
    errors = validate_confirmer(name, position, note) | refused
    if errors:
        raise AcknowledgementError(errors)
    return name, position, note


# What a confirmation sets on its recipient's row (``_confirmation_values``).
_CONFIRMATION_COLUMNS = (
    "acknowledged_at",
    "acknowledged_by",
    "acknowledged_position",
    "acknowledgement_note",
    "acknowledged_ip",
    "acknowledged_user_agent",
    "acknowledged_method",
)


def _confirmation_values(
    name: str,
    position: str,
    note: str,
    ip: str | None,
    user_agent: str | None,
    at: dt.datetime,
    method: AcknowledgementMethod,
) -> dict[str, object]:
    return {
        "acknowledged_at": at,
        "acknowledged_by": name,
        "acknowledged_position": position,
        "acknowledgement_note": note or None,
        "acknowledged_ip": ip,
        "acknowledged_user_agent": user_agent,
        "acknowledged_method": method,
    }


def _acknowledged_entry(
    recipient_id: int, dispatch_id: int, values: dict[str, object], actor: str
) -> dict[str, Any]:
    """The "recipient.acknowledged" audit entry of a confirmation (``audit.record``'s keywords)."""
    method = values["acknowledged_method"]
    assert isinstance(method, AcknowledgementMethod)
    return {
        "actor": actor,
        "at": values["acknowledged_at"],
        "object_type": "dispatch_recipient",
        "object_id": recipient_id,
        "dispatch_id": dispatch_id,
        "details": {
            "name": values["acknowledged_by"],
            "position": values["acknowledged_position"],
            "note": values["acknowledgement_note"],
            "method": method.value,
            "ip": values["acknowledged_ip"],
            "user_agent": values["acknowledged_user_agent"],
        },
    }


def _audit_acknowledged(
    recipient_id: int, dispatch_id: int, values: dict[str, object], actor: str
) -> None:
    audit.record(
        "recipient.acknowledged", **_acknowledged_entry(recipient_id, dispatch_id, values, actor)
    )


def _acknowledge_link_statement():
    """Record a confirmation on the live link whose token hash is given, if it has none yet;
    returns the recipient's id and dispatch id (no row otherwise)."""
    return (
        update(_RECIPIENTS)
        .where(
            _RECIPIENTS.c.token_hash == bindparam("link_token_hash"),
            _RECIPIENTS.c.acknowledged_at.is_(None),
            _RECIPIENTS.c.dispatch_id == _DISPATCHES.c.id,
            _DISPATCHES.c.status.in_(_LIVE_STATUSES),
        )
        # Parameters named apart from the columns: an UPDATE sets the columns its parameters name.
        .values({name: bindparam(f"set_{name}") for name in _CONFIRMATION_COLUMNS})
        .returning(_RECIPIENTS.c.id, _RECIPIENTS.c.dispatch_id)
    )


# Built once: every confirmation through a link runs it.
_ACKNOWLEDGE_LINK = _acknowledge_link_statement()


def acknowledge_link(
    token: str,
    name: str,
    position: str,
    note: str | None,
    ip: str | None,
    user_agent: str | None,
    at: dt.datetime,
) -> AckResult | None:
    """Record a confirmation through the link ``token`` if its recipient has none yet; None if
    nothing was recorded (an unknown or dead link, or a confirmation already on record: look
    the link up to tell which).

    The link's common case without reading first: one UPDATE finds the recipient by its token
    and records the confirmation, under the same condition as ``acknowledge`` (of two at once,
    the second matches nothing), then the audit entry.
    """
    if not is_well_formed(token):
        return None
    name, position, note = _checked_confirmer(name, position, note)
    ip, user_agent = _clip(ip, IP_MAX), _clip(user_agent, USER_AGENT_MAX)
    method = AcknowledgementMethod.LINK
    values = _confirmation_values(name, position, note, ip, user_agent, at, method)
    parameters = {f"set_{name}": value for name, value in values.items()}
    parameters["link_token_hash"] = hash_token(token)
    row = db.session.execute(_ACKNOWLEDGE_LINK, parameters).first()
    if row is None:
        return None
    _audit_acknowledged(row.id, row.dispatch_id, values, f"recipient:{row.id}")
    return AckResult(
        recorded=True,
        acknowledged_at=at,
        acknowledged_by=name,
        acknowledged_position=position,
        method=method,
    )


def _acknowledge_link_audited_statement():
    """PostgreSQL: ``_ACKNOWLEDGE_LINK`` for a recipient whose ids are given as well, and its
    audit entry, in one statement (``_audited_statement``)."""
    acknowledged = (
        _acknowledge_link_statement()
        .where(
            _RECIPIENTS.c.id == bindparam("link_recipient_id"),
            _RECIPIENTS.c.dispatch_id == bindparam("link_dispatch_id"),
        )
        .cte("acknowledged")
    )
    return _audited_statement(acknowledged)


_ACKNOWLEDGE_LINK_AUDITED = _acknowledge_link_audited_statement()


def acknowledge_link_at_once(
    connection: Connection | None,
    link_ids: tuple[int, int] | None,
    token: str,
    name: str,
    position: str,
    note: str | None,
    ip: str | None,
    user_agent: str | None,
    at: dt.datetime,
) -> AckResult | None:
    """``acknowledge_link`` in one statement of its own: the confirmation and its audit entry,
    on PostgreSQL, through ``connection`` (in autocommit), for the link whose recipient and
    dispatch ids the page gave (``link_ids``, as the form sent them back: the statement finds
    the recipient by its token and checks them). None if nothing was written: then
    ``acknowledge_link`` (in a transaction) does what is left, or finds why not.
    """
    if (
        connection is None
        or link_ids is None
        or not is_well_formed(token)
        or connection.dialect.name != "postgresql"
    ):
        return None
    recipient_id, dispatch_id = link_ids
    name, position, note = _checked_confirmer(name, position, note)
    ip, user_agent = _clip(ip, IP_MAX), _clip(user_agent, USER_AGENT_MAX)
    method = AcknowledgementMethod.LINK
    values = _confirmation_values(name, position, note, ip, user_agent, at, method)
    append = audit.prepare_gated(
        "recipient.acknowledged",
        **_acknowledged_entry(recipient_id, dispatch_id, values, f"recipient:{recipient_id}"),
    )
    if append is None:
        return None
    parameters = {f"set_{name}": value for name, value in values.items()}
    parameters |= {
        "link_token_hash": hash_token(token),
        "link_recipient_id": recipient_id,
        "link_dispatch_id": dispatch_id,
        **append.parameters,
    }
    if not _run_audited(connection, _ACKNOWLEDGE_LINK_AUDITED, parameters):
        return None
    append.appended()
    return AckResult(
        recorded=True,
        acknowledged_at=at,
        acknowledged_by=name,
        acknowledged_position=position,
        method=method,
    )


def acknowledge(
    recipient: DispatchRecipient,
    name: str,
    position: str,
    note: str | None,
    ip: str | None,
    user_agent: str | None,
    at: dt.datetime,
    method: AcknowledgementMethod = AcknowledgementMethod.LINK,
    actor: str | None = None,
) -> AckResult:
    """Record a confirmation of receipt once; later calls change nothing and return the first."""
    name, position, note = _checked_confirmer(name, position, note)
    ip, user_agent = _clip(ip, IP_MAX), _clip(user_agent, USER_AGENT_MAX)
    values = _confirmation_values(name, position, note, ip, user_agent, at, method)
    # The condition makes the database the referee: of two confirmations at once, the second
    # waits for the first's row lock, re-reads the row and matches nothing.
    result = db.session.execute(
        update(_RECIPIENTS)
        .where(_RECIPIENTS.c.id == recipient.id, _RECIPIENTS.c.acknowledged_at.is_(None))
        .values(values)
    )
    recorded = result.rowcount == 1
    if recorded:
        _audit_acknowledged(recipient.id, recipient.dispatch_id, values, actor or _actor(recipient))
        # Written just now: the object learns the values without reading the row back.
        for key, value in values.items():
            set_committed_value(recipient, key, value)
    else:
        # A lost race: the row holds the winner's confirmation.
        db.session.refresh(recipient)
    assert recipient.acknowledged_at is not None and recipient.acknowledged_by is not None
    return AckResult(
        recorded=recorded,
        acknowledged_at=recipient.acknowledged_at,
        acknowledged_by=recipient.acknowledged_by,
        acknowledged_position=recipient.acknowledged_position,
        method=recipient.acknowledged_method or method,
    )
