"""The list of dispatches with their receipt counts, for the signed-in home page and the API."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Integer, case, cast, func, select

from dispatch.extensions import db
from dispatch.models import Dispatch, DispatchRecipient, DispatchStatus

STATUS_LABELS = {
    DispatchStatus.DRAFT: "Dự thảo",
    DispatchStatus.ISSUED: "Đã ban hành",
    DispatchStatus.COMPLETED: "Đã hoàn thành",
    DispatchStatus.RECALLED: "Đã thu hồi",
    DispatchStatus.REPLACED: "Đã bị thay thế",
}

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# The highest page number a list is asked for (a larger OFFSET is no use and may overflow).
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class ReceiptCounts:
    """How many recipients a dispatch has, and how many opened, confirmed, are overdue."""

    recipients: int = 0
    opened: int = 0
    acknowledged: int = 0
    overdue: int = 0

    @property
    def pending(self) -> int:
        """Recipients that have not confirmed yet."""
        return self.recipients - self.acknowledged


@dataclass(frozen=True)
class DispatchSummary:
    """One line of the list: what the dispatch is, where it stands, who confirmed."""

    id: int
    number: int | None
    number_and_symbol: str | None
    subject: str
    status: DispatchStatus
    issued_on: dt.date | None
    issued_at: dt.datetime | None
    created_at: dt.datetime
    counts: ReceiptCounts

    @property
    def status_label(self) -> str:
        """The status in Vietnamese."""
        return STATUS_LABELS[self.status]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (dates as ``date``/``datetime``; the caller serialises)."""
        data = asdict(self)
        data["status"] = str(self.status)
        data["counts"]["pending"] = self.counts.pending
        return data


@dataclass(frozen=True)
class SummaryPage:
    """One page of the list and where it sits in the whole."""

    items: list[DispatchSummary]
    page: int
    page_size: int
    total: int

    @property
    def pages(self) -> int:
        """How many pages there are (at least one, even when empty)."""
        return max(1, -(-self.total // self.page_size))


def _counts_query() -> Any:
    acknowledged = func.sum(case((DispatchRecipient.acknowledged_at.is_not(None), 1), else_=0))
    opened = func.sum(case((DispatchRecipient.opened_at.is_not(None), 1), else_=0))
    overdue = func.sum(
        case(
            (
                DispatchRecipient.overdue_at.is_not(None)
                & DispatchRecipient.acknowledged_at.is_(None),
                1,
            ),
            else_=0,
        )
    )
    return (
        select(
            DispatchRecipient.dispatch_id.label("dispatch_id"),
            func.count(DispatchRecipient.id).label("recipients"),
            cast(opened, Integer).label("opened"),
            cast(acknowledged, Integer).label("acknowledged"),
            cast(overdue, Integer).label("overdue"),
        )
        .group_by(DispatchRecipient.dispatch_id)
        .subquery()
    )


def list_dispatches(
    page: int = 1, page_size: int = DEFAULT_PAGE_SIZE, status: DispatchStatus | None = None
) -> SummaryPage:
    """Dispatches, newest first (issued ones by their issue time, drafts by creation)."""
    page = max(1, page)
    page_size = min(max(1, page_size), MAX_PAGE_SIZE)
    counts = _counts_query()
    filters = [] if status is None else [Dispatch.status == status]
    total = db.session.execute(select(func.count(Dispatch.id)).where(*filters)).scalar_one()
    rows = db.session.execute(
        select(
            Dispatch,
            counts.c.recipients,
            counts.c.opened,
            counts.c.acknowledged,
            counts.c.overdue,
        )
        .outerjoin(counts, counts.c.dispatch_id == Dispatch.id)
        .where(*filters)
        .order_by(func.coalesce(Dispatch.issued_at, Dispatch.created_at).desc(), Dispatch.id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    items = [
        DispatchSummary(
            id=dispatch.id,
            number=dispatch.number,
            number_and_symbol=dispatch.number_and_symbol,
            subject=dispatch.subject,
            status=dispatch.status,
            issued_on=dispatch.issued_on,
            issued_at=dispatch.issued_at,
            created_at=dispatch.created_at,
            counts=ReceiptCounts(
                recipients=recipients or 0,
                opened=opened or 0,
                acknowledged=acknowledged or 0,
                overdue=overdue or 0,
            ),
        )
        for dispatch, recipients, opened, acknowledged, overdue in rows
    ]
    return SummaryPage(items=items, page=page, page_size=page_size, total=total)
