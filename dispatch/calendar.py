"""Working days in Vietnam: weekends, public holidays, and the days-off the government moves.

Public holidays come from the ``holidays`` package (``country_holidays("VN")``): New Year, Tết
Nguyên Đán (five days and more, with the observed days when one falls on a weekend), Giỗ Tổ Hùng
Vương, 30/4, 1/5, 2/9 and the extra day around it (from 2021), and the swaps it knows about (a
weekday off against a working Saturday, e.g. 29/04/2024 off and 04/05/2024 worked).

Each year the government also decrees compensatory days-off and working Saturdays that the
package may not know yet. They are added by configuration, as comma-separated ISO dates:

* ``DISPATCH_EXTRA_HOLIDAYS``: days that are not working days (e.g. ``2026-02-14,2026-02-21``);
* ``DISPATCH_EXTRA_WORKING_DAYS``: days that are working days even on a weekend or a holiday
  (a Saturday worked in exchange); this wins over everything else.

The functions are pure: the calendar is passed in, or taken from the current app's configuration
(the package alone when there is no app context).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import holidays
from flask import current_app, has_app_context

from dispatch.clock import VN

# A guard against a runaway loop on a calendar configured to have no working day at all.
_MAX_DAYS_SEARCHED = 3660


class CalendarConfigError(ValueError):
    """A date in DISPATCH_EXTRA_HOLIDAYS or DISPATCH_EXTRA_WORKING_DAYS is not an ISO date."""


@dataclass(frozen=True)
class WorkCalendar:
    """Vietnamese public holidays plus the configured extra days-off and working days."""

    extra_holidays: frozenset[dt.date] = field(default_factory=frozenset)
    extra_working_days: frozenset[dt.date] = field(default_factory=frozenset)


def parse_dates(value: str | Iterable[str | dt.date] | None, setting: str = "") -> frozenset:
    """Dates from a comma-separated string of ISO dates (or an iterable of them)."""
    if value is None or value == "":
        return frozenset()
    items = value.split(",") if isinstance(value, str) else list(value)
    dates: set[dt.date] = set()
    for item in items:
        if isinstance(item, dt.date):
            dates.add(item)
            continue
        text = item.strip()
        if not text:
            continue
        try:
            dates.add(dt.date.fromisoformat(text))
        except ValueError as exc:
            # Read by whoever configures the server: say it in Vietnamese, name the setting.
            raise CalendarConfigError(
                f"{setting or 'danh sách ngày'}: {text!r} không phải là ngày (cần dạng YYYY-MM-DD)"
            ) from exc
    return frozenset(dates)


def calendar_from_config(config: dict) -> WorkCalendar:
    """The calendar described by an app configuration (DISPATCH_EXTRA_* settings)."""
    return WorkCalendar(
        extra_holidays=parse_dates(
            config.get("DISPATCH_EXTRA_HOLIDAYS"), "DISPATCH_EXTRA_HOLIDAYS"
        ),
        extra_working_days=parse_dates(
            config.get("DISPATCH_EXTRA_WORKING_DAYS"), "DISPATCH_EXTRA_WORKING_DAYS"
        ),
    )


def current_calendar() -> WorkCalendar:
    """The current app's calendar, or the package's holidays alone outside an app context."""
    if has_app_context():
        return calendar_from_config(current_app.config)
    return WorkCalendar()


@lru_cache(maxsize=64)
def _public_holidays(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("VN", years=year)


def public_holiday_name(day: dt.date) -> str | None:
    """The package's name for a public holiday on ``day``, or None."""
    return _public_holidays(day.year).get(day)


def is_working_day(day: dt.date, calendar: WorkCalendar | None = None) -> bool:
    """Monday–Friday and not a public holiday, unless configured otherwise."""
    calendar = calendar or current_calendar()
    if day in calendar.extra_working_days:
        return True
    if day in calendar.extra_holidays:
        return False
    public = _public_holidays(day.year)
    # Saturdays the government has swapped for a weekday off (known to the package).
    if day in getattr(public, "weekend_workdays", ()):
        return True
    return day.weekday() < 5 and day not in public


def next_working_day(day: dt.date, calendar: WorkCalendar | None = None) -> dt.date:
    """The first working day strictly after ``day``."""
    return working_days_after(day, 1, calendar)


def working_days_after(day: dt.date, n: int, calendar: WorkCalendar | None = None) -> dt.date:
    """The n-th working day strictly after ``day`` (``day`` itself for n = 0)."""
    if n < 0:
        raise ValueError("n must not be negative")
    calendar = calendar or current_calendar()
    current = day
    for _ in range(_MAX_DAYS_SEARCHED):
        if n == 0:
            return current
        current += dt.timedelta(days=1)
        if is_working_day(current, calendar):
            n -= 1
    raise ValueError(f"no {n} working day(s) found within {_MAX_DAYS_SEARCHED} days of {day}")


def deadline_for(
    issued_at: dt.datetime,
    working_days: int = 3,
    hour: int = 17,
    calendar: WorkCalendar | None = None,
) -> dt.datetime:
    """The end (``hour``:00, Vietnam time) of the n-th working day after issuing, in UTC."""
    issue_day = issued_at.astimezone(VN).date()
    last_day = working_days_after(issue_day, working_days, calendar)
    return dt.datetime.combine(last_day, dt.time(hour), tzinfo=VN).astimezone(dt.UTC)


def reminder_day_index(
    issued_at: dt.datetime,
    at: dt.datetime,
    reminder_hour: int = 8,
    calendar: WorkCalendar | None = None,
) -> int:
    """Which working day after the day of issuing ``at`` is in (1, 2, …), once its reminder hour
    has passed; 0 before the first."""
    calendar = calendar or current_calendar()
    issue_day = issued_at.astimezone(VN).date()
    local_at = at.astimezone(VN)
    today = local_at.date()
    if today <= issue_day:
        return 0
    count = 0
    day = issue_day
    while day < today:
        day += dt.timedelta(days=1)
        if is_working_day(day, calendar):
            count += 1
    # Today counts only from its reminder hour on (a working day "starts" at 08:00).
    if is_working_day(today, calendar) and local_at.hour < reminder_hour:
        count -= 1
    return count


def confirmation_deadline(dispatch: Any) -> dt.datetime | None:
    """The moment a dispatch's recipients must confirm by: the one recorded at issue, else the
    one its settings give. The e-mails state it and the reminders escalate at it."""
    if dispatch.deadline_at is not None:
        return dispatch.deadline_at
    if dispatch.issued_at is None:
        return None
    return deadline_for(dispatch.issued_at, dispatch.deadline_working_days, dispatch.deadline_hour)


def deadline_words(moment: dt.datetime | None) -> str:
    """'17:00 ngày 18/11/2021' in Vietnam time, as a sentence says it; '' for None."""
    if moment is None:
        return ""
    local_moment = moment.astimezone(VN)
    return f"{local_moment:%H:%M} ngày {local_moment:%d/%m/%Y}"
