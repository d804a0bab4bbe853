"""Time as the product sees it: Vietnam's time zone, and moments passed in rather than read deep
inside the domain code (so ``--at`` can replay any moment)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

VN = ZoneInfo("Asia/Ho_Chi_Minh")


def now() -> dt.datetime:
    """The current moment, aware, in UTC: read once at the edge (CLI, view, job)."""
    return dt.datetime.now(dt.UTC)


def parse_moment(value: str) -> dt.datetime:
    """An ISO-8601 moment; one without an offset is taken as Vietnam time."""
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=VN)
    return moment.astimezone(dt.UTC)


def local(moment: dt.datetime) -> dt.datetime:
    """The moment in Vietnam time."""
    return moment.astimezone(VN)


def format_local(moment: dt.datetime | None, with_time: bool = True) -> str:
    """dd/mm/yyyy HH:MM in Vietnam time, as the interface shows it; '' for None."""
    if moment is None:
        return ""
    return local(moment).strftime("%d/%m/%Y %H:%M" if with_time else "%d/%m/%Y")
