"""Reminders to the offices that have not confirmed, and the escalation once the deadline passes.

``send_due_reminders(at)`` decides, for the moment ``at`` it is given, what is due and queues it
in the outbox (``dispatch.mail.outbox``); ``dispatch.mail.sender`` sends it after the commit.
It is safe to run as often as one likes, twice at once, or after days of downtime:

* a reminder is an outbox row unique per (dispatch, recipient, REMINDER, working day), so the
  same day's reminder is queued once however many runs there are;
* only the CURRENT working day's reminder is queued (a scheduler that was down catches up with
  one reminder, never the missed days), so a recipient gets at most one per working day;
* the escalation is queued once, by the run that sets ``Dispatch.escalated_at`` (a conditional
  UPDATE, so two concurrent runs cannot both win), and no reminder follows it.

Each dispatch is handled in its own transaction, its row locked (PostgreSQL) so concurrent runs
take turns; every change is audited in that transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import and_, exists, func, select, update

from dispatch import audit
from dispatch.calendar import (
    confirmation_deadline,
    current_calendar,
    is_working_day,
    reminder_day_index,
)
from dispatch.clock import local
from dispatch.extensions import db
from dispatch.mail import outbox
from dispatch.mail.compose import escalation_audience
from dispatch.models import (
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    MessageKind,
    OutboxMessage,
)

ACTOR = "system"


@dataclass
class DispatchOutcome:
    """What one run decided for one dispatch."""

    dispatch_id: int
    number: str | None
    day: int = 0  # the working day after issuing whose reminders were due (0: none)
    reminded: list[str] = field(default_factory=list)  # province codes queued by this run
    already_reminded: int = 0  # due today but queued by an earlier (or concurrent) run
    not_delivered: int = 0  # unconfirmed, but the letter was never accepted: not reminded
    # (nor is one whose address bounced, or whose office refused the letter)
    escalated: bool = False  # this run queued the escalation
    overdue: list[str] = field(default_factory=list)  # codes marked overdue by this run
    completed: bool = False  # this run found every recipient confirmed


@dataclass
class ReminderReport:
    """What ``send_due_reminders`` did, dispatch by dispatch."""

    at: dt.datetime
    outcomes: list[DispatchOutcome] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (dispatch id, what failed)

    @property
    def reminders_queued(self) -> int:
        """Reminders queued by this run, over all dispatches."""
        return sum(len(o.reminded) for o in self.outcomes)

    @property
    def already_reminded(self) -> int:
        """Reminders that were due but had been queued before."""
        return sum(o.already_reminded for o in self.outcomes)

    @property
    def not_delivered(self) -> int:
        """Unconfirmed recipients not reminded because their letter was never accepted."""
        return sum(o.not_delivered for o in self.outcomes)

    @property
    def escalations_queued(self) -> int:
        """Escalations queued by this run."""
        return sum(1 for o in self.outcomes if o.escalated)

    @property
    def overdue_marked(self) -> int:
        """Recipients marked overdue by this run."""
        return sum(len(o.overdue) for o in self.outcomes)

    @property
    def completed(self) -> int:
        """Dispatches completed by this run."""
        return sum(1 for o in self.outcomes if o.completed)


def escalation_addresses(dispatch: Dispatch) -> tuple[list[str], list[str]]:
    """(To, Cc) of the escalation: leadership (DISPATCH_LEADERSHIP_EMAIL, else the agency's
    mailbox), the issuing clerk in copy (``dispatch.mail.compose.escalation_audience``)."""
    return escalation_audience(dispatch)


def _letter_accepted():
    """SQL: the recipient's letter (first send or a resend) was accepted by the SMTP server."""
    return exists().where(
        and_(
            OutboxMessage.recipient_id == DispatchRecipient.id,
            OutboxMessage.kind == MessageKind.LETTER,
            OutboxMessage.status == DeliveryStatus.SENT,
        )
    )


def _unconfirmed(dispatch_id: int):
    # populate_existing: what another transaction committed wins over a stale identity map.
    return (
        select(DispatchRecipient)
        .where(
            DispatchRecipient.dispatch_id == dispatch_id,
            DispatchRecipient.acknowledged_at.is_(None),
        )
        .execution_options(populate_existing=True)
    )


def _complete_if_all_confirmed(dispatch: Dispatch, at: dt.datetime, outcome: DispatchOutcome):
    counts = db.session.execute(
        select(
            func.count(DispatchRecipient.id),
            func.count(DispatchRecipient.acknowledged_at),
        ).where(DispatchRecipient.dispatch_id == dispatch.id)
    ).one()
    total, confirmed = counts
    if total == 0 or confirmed < total:
        return
    changed = db.session.execute(
        update(Dispatch)
        .where(Dispatch.id == dispatch.id, Dispatch.status == DispatchStatus.ISSUED)
        .values(status=DispatchStatus.COMPLETED)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed:
        db.session.refresh(dispatch)
        audit.record_dispatch(
            "dispatch.completed",
            dispatch.id,
            actor=ACTOR,
            at=at,
            details={"recipients": total, "reason": "all confirmed"},
        )
        outcome.completed = True


def _escalate(dispatch: Dispatch, deadline: dt.datetime, at: dt.datetime, outcome: DispatchOutcome):
    # The conditional UPDATE decides the one run that escalates, even with two at once.
    won = db.session.execute(
        update(Dispatch)
        .where(Dispatch.id == dispatch.id, Dispatch.escalated_at.is_(None))
        .values(escalated_at=at)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not won:
        return
    db.session.refresh(dispatch)
    late = list(
        db.session.execute(_unconfirmed(dispatch.id).order_by(DispatchRecipient.id)).scalars()
    )
    for recipient in late:
        if recipient.overdue_at is None:
            recipient.overdue_at = deadline
            outcome.overdue.append(recipient.province_code)
    to_addrs, cc_addrs = escalation_addresses(dispatch)
    outcome.escalated = outbox.enqueue(
        dispatch_id=dispatch.id,
        kind=MessageKind.ESCALATION,
        to_addrs=to_addrs,
        cc_addrs=cc_addrs,
        at=at,
        recipient_id=None,
        sequence=0,
    )
    audit.record_dispatch(
        "dispatch.escalated",
        dispatch.id,
        actor=ACTOR,
        at=at,
        details={
            "deadline_at": deadline.isoformat(),
            "to": to_addrs,
            "cc": cc_addrs,
            "overdue": [
                {"recipient_id": r.id, "code": r.province_code, "name": r.name} for r in late
            ],
        },
    )


def _remind(dispatch: Dispatch, day: int, at: dt.datetime, outcome: DispatchOutcome) -> None:
    outcome.day = day
    due = (
        _unconfirmed(dispatch.id)
        .where(
            DispatchRecipient.reminders_stopped.is_(False),
            # A bounced address would only bounce again; a refusal is the office's answer.
            DispatchRecipient.bounced_at.is_(None),
            DispatchRecipient.refused_at.is_(None),
        )
        .order_by(DispatchRecipient.id)  # one order everywhere: concurrent runs cannot deadlock
    )
    reminded = []
    for recipient, accepted in db.session.execute(due.add_columns(_letter_accepted())):
        if not accepted:
            outcome.not_delivered += 1
            continue
        queued = outbox.enqueue(
            dispatch_id=dispatch.id,
            kind=MessageKind.REMINDER,
            to_addrs=[recipient.email],
            cc_addrs=list(recipient.cc or []),
            at=at,
            recipient_id=recipient.id,
            sequence=day,
        )
        if queued:
            outcome.reminded.append(recipient.province_code)
            reminded.append(
                {
                    "recipient_id": recipient.id,
                    "code": recipient.province_code,
                    "to": recipient.email,
                }
            )
        else:
            outcome.already_reminded += 1
    if reminded:
        audit.record_dispatch(
            "reminder.queued",
            dispatch.id,
            actor=ACTOR,
            at=at,
            details={"day": day, "count": len(reminded), "recipients": reminded},
        )


def _process(dispatch_id: int, at: dt.datetime) -> DispatchOutcome | None:
    # Lock the dispatch row (PostgreSQL; a no-op on SQLite): a concurrent run waits here, then
    # sees what this one committed.
    dispatch = db.session.execute(
        select(Dispatch)
        .where(Dispatch.id == dispatch_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if dispatch is None or dispatch.status != DispatchStatus.ISSUED or dispatch.issued_at is None:
        return None
    outcome = DispatchOutcome(dispatch.id, dispatch.number_and_symbol)
    _complete_if_all_confirmed(dispatch, at, outcome)
    if outcome.completed or not dispatch.reminders_enabled:
        return outcome
    calendar = current_calendar()
    deadline = confirmation_deadline(dispatch)  # the deadline the e-mails state
    if deadline is None:
        return outcome
    if at >= deadline:
        if dispatch.escalated_at is None:
            _escalate(dispatch, deadline, at, outcome)
        return outcome
    moment = local(at)
    if not is_working_day(moment.date(), calendar) or moment.hour < dispatch.reminder_hour:
        return outcome
    day = reminder_day_index(dispatch.issued_at, at, dispatch.reminder_hour, calendar)
    if day >= 1:
        _remind(dispatch, day, at, outcome)
    return outcome


def send_due_reminders(at: dt.datetime) -> ReminderReport:
    """Queue the reminders and escalations due at ``at``; commits on its own, once per dispatch.

    Also completes the dispatches every recipient has confirmed. Each dispatch is its own
    transaction, so one that fails is rolled back and reported while the others keep theirs.
    """
    if at.tzinfo is None:
        raise ValueError("send_due_reminders needs an aware datetime")
    report = ReminderReport(at=at)
    ids = db.session.execute(
        select(Dispatch.id)
        .where(Dispatch.status == DispatchStatus.ISSUED, Dispatch.issued_at <= at)
        .order_by(Dispatch.id)
    ).scalars()
    for dispatch_id in list(ids):
        try:
            outcome = _process(dispatch_id, at)
            db.session.commit()
        except Exception as exc:
            # One broken dispatch must not stop the reminders of all the others.
            db.session.rollback()
            current_app.logger.exception("reminders failed for dispatch %s", dispatch_id)
            report.errors.append((dispatch_id, f"{exc.__class__.__name__}: {exc}"))
            continue
        if outcome is not None:
            report.outcomes.append(outcome)
    return report
