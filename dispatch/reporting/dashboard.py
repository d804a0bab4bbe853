"""The leadership pages as plain data: the list of dispatches with their progress, and one
dispatch's map, chart, counts and table of offices. Views, exports and templates only read what
these builders return; every date is already written dd/mm/yyyy in Vietnam time.

The number of SQL queries is fixed, whatever the number of dispatches or recipients: the list
runs a count and one grouped query for the page; a dispatch runs ``status.status_report`` (three
queries) and one join for the offices' regions and province names.

One status per office, for the map, the table and the exports, by precedence (the first that
holds wins): confirmed (đã xác nhận) > refused (từ chối tiếp nhận: the office's system refused
it) > bounced (bị trả lại: accepted by the first server, returned by a later one) > overdue
(quá hạn) > failed (gửi lỗi) > opened (đã mở) > sent (đã gửi) > queued (chờ gửi: not sent yet,
being sent or being retried). A province with
several offices shows "confirmed" only when all of them have confirmed, else the first status
in that order among those that have not.
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, or_, select

from dispatch import clock
from dispatch.directory import tile_map
from dispatch.extensions import db
from dispatch.models import Dispatch, DispatchRecipient, DispatchStatus, Organisation
from dispatch.reporting import listing, status

PAGE_SIZE = 50

# The office statuses in precedence order, with the letters printed on the map's tiles and in
# the table (so that status never depends on colour alone) and the label shown to people.
STATUSES: tuple[dict[str, str], ...] = (
    {"key": "confirmed", "code": "XN", "label": "Đã xác nhận"},
    {"key": "refused", "code": "TC", "label": "Từ chối tiếp nhận"},
    {"key": "bounced", "code": "TL", "label": "Thư bị trả lại"},
    {"key": "overdue", "code": "QH", "label": "Quá hạn"},
    {"key": "failed", "code": "GL", "label": "Gửi lỗi"},
    {"key": "opened", "code": "ĐM", "label": "Đã mở"},
    {"key": "sent", "code": "ĐG", "label": "Đã gửi"},
    {"key": "queued", "code": "CG", "label": "Chờ gửi"},
)
NOT_A_RECIPIENT = {"key": "none", "code": "–", "label": "Không thuộc nơi nhận"}
STATUS_BY_KEY = {entry["key"]: entry for entry in (*STATUSES, NOT_A_RECIPIENT)}
STATUS_RANK = {entry["key"]: rank for rank, entry in enumerate(STATUSES)}

# The state of the letter e-mail, as the table shows it.
DELIVERY_LABELS = {
    None: "Chưa gửi",
    "queued": "Chờ gửi",
    "sent": "Đã gửi",
    "retrying": "Đang thử lại",
    "failed": "Gửi lỗi",
    "cancelled": "Đã huỷ",
    "bounced": "Bị trả lại",
}

# How far the office's own handling has got (edXML status 04–06).
PROCESSING_LABELS = {
    "assigned": "Đã phân công xử lý",
    "in_progress": "Đang xử lý",
    "done": "Đã xử lý xong",
}

# The six socio-economic regions, north to south: "sort by region" follows the country's shape
# rather than the alphabet. A region the directory names that is not here comes after them.
REGION_ORDER = (
    "Trung du và miền núi phía Bắc",
    "Đồng bằng sông Hồng",
    "Bắc Trung Bộ và Duyên hải miền Trung",
    "Tây Nguyên",
    "Đông Nam Bộ",
    "Đồng bằng sông Cửu Long",
)

SORT_KEYS = ("region", "name", "status", "time", "code")
DEFAULT_SORT = "region"
SORT_LABELS = {
    "code": "Mã",
    "name": "Đơn vị",
    "region": "Vùng",
    "status": "Trạng thái",
    "time": "Xác nhận lúc",
}

DISPATCH_LIST_LABELS = {
    "draft": "Dự thảo",
    "completed": "Đã hoàn thành",
    "recalled": "Đã thu hồi",
    "replaced": "Đã bị thay thế",
    "all_confirmed": "Đã xác nhận đủ",
    "overdue": "Có đơn vị quá hạn",
    "waiting": "Đang chờ xác nhận",
    "no_recipients": "Chưa có nơi nhận",
}


# --- Vietnamese collation -------------------------------------------------------------------

_ALPHABET = "aăâbcdđeêfghijklmnoôơpqrstuưvwxyz"
_LETTER_RANK = {letter: rank for rank, letter in enumerate(_ALPHABET)}
# Dictionary order of the tones: ngang, huyền, hỏi, ngã, sắc, nặng.
_TONES = {"\u0300": 1, "\u0309": 2, "\u0303": 3, "\u0301": 4, "\u0323": 5}
_MODIFIED = {
    ("a", "\u0306"): "ă",
    ("a", "\u0302"): "â",
    ("e", "\u0302"): "ê",
    ("o", "\u0302"): "ô",
    ("o", "\u031b"): "ơ",
    ("u", "\u031b"): "ư",
}


def vietnamese_sort_key(text: str) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """A key that orders Vietnamese words as a dictionary does (a < ă < â < b …, d < đ).

    Letters decide first; tones only break ties. Python's plain string order puts "Đ" after "Z"
    and "Ă" after every unaccented letter.
    """
    letters: list[tuple[int, int]] = []
    tones: list[int] = []
    for char in unicodedata.normalize("NFC", text).lower():
        decomposed = unicodedata.normalize("NFD", char)
        base, marks = decomposed[0], decomposed[1:]
        tone = 0
        for mark in marks:
            if mark in _TONES:
                tone = _TONES[mark]
            else:
                base = _MODIFIED.get((base, mark), base)
        rank = _LETTER_RANK.get(base)
        if rank is not None:
            letters.append((1, rank))
        elif base.isdigit():
            letters.append((0, ord(base)))
        else:
            letters.append((-1, ord(base)))  # spaces and punctuation before any letter
        tones.append(tone)
    return tuple(letters), tuple(tones)


# --- the list of dispatches -----------------------------------------------------------------


@dataclass(frozen=True)
class DispatchLine:
    """One dispatch in the list, with its receipt progress as of the moment of the page."""

    id: int
    status: str
    number: str | None
    subject: str
    issued_on: str  # dd/mm/yyyy, '' for a draft
    deadline: str  # dd/mm/yyyy HH:MM, Vietnam time
    created: str
    total: int
    acknowledged: int
    opened: int
    overdue: int
    state: str  # a key of DISPATCH_LIST_LABELS

    @property
    def state_label(self) -> str:
        """Where the dispatch stands, in Vietnamese."""
        return DISPATCH_LIST_LABELS[self.state]

    @property
    def percent(self) -> int:
        """Confirmed recipients as a whole percentage."""
        return 0 if not self.total else math.floor(100 * self.acknowledged / self.total)


@dataclass(frozen=True)
class DispatchListPage:
    """A page of the list and where it sits in the whole."""

    lines: list[DispatchLine]
    drafts: bool
    page: int
    page_size: int
    total: int
    at_text: str

    @property
    def pages(self) -> int:
        """How many pages there are (at least one)."""
        return max(1, -(-self.total // self.page_size))


def _list_state(status_value: str, total: int, acknowledged: int, overdue: int) -> str:
    if status_value == DispatchStatus.DRAFT.value:
        return "draft"
    if status_value == DispatchStatus.COMPLETED.value:
        return "completed"
    if status_value in (DispatchStatus.RECALLED.value, DispatchStatus.REPLACED.value):
        return status_value
    if not total:
        return "no_recipients"
    if acknowledged >= total:
        return "all_confirmed"
    return "overdue" if overdue else "waiting"


def dispatch_list(
    *, at: dt.datetime, page: int = 1, drafts: bool = False, page_size: int = PAGE_SIZE
) -> DispatchListPage:
    """Issued dispatches (or drafts), newest first, with their counts at ``at``: two queries.

    An office is overdue when it has not confirmed and was marked overdue or the deadline has
    passed at ``at`` (as ``status.status_report`` counts it).
    """
    page = max(1, page)
    if drafts:
        filters = [Dispatch.status == DispatchStatus.DRAFT]
        order = (Dispatch.created_at.desc(), Dispatch.id.desc())
    else:
        # Recalled and replaced letters stay on the list: leaders see what became of them.
        issued = (
            DispatchStatus.ISSUED,
            DispatchStatus.COMPLETED,
            DispatchStatus.RECALLED,
            DispatchStatus.REPLACED,
        )
        filters = [Dispatch.status.in_(issued)]
        order = (Dispatch.issued_at.desc(), Dispatch.id.desc())
    total = db.session.execute(select(func.count(Dispatch.id)).where(*filters)).scalar_one()
    # A page past the end shows the last one (and a huge ?page= cannot overflow OFFSET).
    page = min(page, max(1, -(-total // page_size)))

    # Aggregate only the recipients of the dispatches on this page, not the whole table.
    page_ids = (
        select(Dispatch.id)
        .where(*filters)
        .order_by(*order)
        .limit(page_size)
        .offset((page - 1) * page_size)
        .scalar_subquery()
    )
    unconfirmed = DispatchRecipient.acknowledged_at.is_(None)
    late = and_(
        unconfirmed,
        or_(
            DispatchRecipient.overdue_at.is_not(None),
            and_(Dispatch.deadline_at.is_not(None), Dispatch.deadline_at <= at),
        ),
    )
    counts = (
        select(
            DispatchRecipient.dispatch_id.label("dispatch_id"),
            func.count(DispatchRecipient.id).label("total"),
            cast(func.sum(case((~unconfirmed, 1), else_=0)), Integer).label("acknowledged"),
            cast(
                func.sum(case((DispatchRecipient.opened_at.is_not(None), 1), else_=0)), Integer
            ).label("opened"),
            cast(func.sum(case((late, 1), else_=0)), Integer).label("overdue"),
        )
        .join(Dispatch, Dispatch.id == DispatchRecipient.dispatch_id)
        .where(DispatchRecipient.dispatch_id.in_(page_ids))
        .group_by(DispatchRecipient.dispatch_id)
        .subquery()
    )
    rows = db.session.execute(
        select(
            Dispatch.id,
            Dispatch.status,
            Dispatch.number,
            Dispatch.symbol,
            Dispatch.subject,
            Dispatch.issued_on,
            Dispatch.deadline_at,
            Dispatch.created_at,
            counts.c.total,
            counts.c.acknowledged,
            counts.c.opened,
            counts.c.overdue,
        )
        .outerjoin(counts, counts.c.dispatch_id == Dispatch.id)
        .where(Dispatch.id.in_(page_ids))
        .order_by(*order)
    ).all()
    lines = []
    for row in rows:
        total_r, ack, opened, overdue = (int(v or 0) for v in row[8:12])
        status_value = DispatchStatus(row.status).value
        lines.append(
            DispatchLine(
                id=row.id,
                status=status_value,
                number=None if row.number is None else f"{row.number:02d}/{row.symbol}",
                subject=row.subject,
                issued_on=row.issued_on.strftime("%d/%m/%Y") if row.issued_on else "",
                deadline=clock.format_local(row.deadline_at),
                created=clock.format_local(row.created_at),
                total=total_r,
                acknowledged=ack,
                opened=opened,
                overdue=overdue,
                state=_list_state(status_value, total_r, ack, overdue),
            )
        )
    return DispatchListPage(
        lines=lines,
        drafts=drafts,
        page=page,
        page_size=page_size,
        total=total,
        at_text=clock.format_local(at),
    )


# --- one dispatch ---------------------------------------------------------------------------


def office_status(recipient: dict[str, Any]) -> str:
    """One office's status key by precedence (see the module docstring)."""
    if recipient["acknowledged_at"]:
        return "confirmed"
    if recipient.get("refused"):
        return "refused"
    if recipient.get("delivery") == "bounced":
        return "bounced"
    if recipient["overdue"]:
        return "overdue"
    if recipient["delivery"] == "failed":
        return "failed"
    if recipient["opened_at"]:
        return "opened"
    if recipient["delivery"] == "sent":
        return "sent"
    return "queued"


def _moment(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def _directory_facts(dispatch_id: int) -> dict[int, tuple[str, str]]:
    """Recipient id → (region, province name) from the directory: one query."""
    rows = db.session.execute(
        select(DispatchRecipient.id, Organisation.region, Organisation.province_name)
        .join(Organisation, Organisation.id == DispatchRecipient.organisation_id)
        .where(DispatchRecipient.dispatch_id == dispatch_id)
    ).all()
    return {row.id: (row.region, row.province_name) for row in rows}


def _office_rows(report: dict[str, Any], facts: dict[int, tuple[str, str]]) -> list[dict]:
    """The report's recipients as table rows: status, labels and dd/mm/yyyy HH:MM texts."""
    tiles = tile_map.tiles_by_code()
    rows = []
    for recipient in report["recipients"]:
        key = office_status(recipient)
        entry = STATUS_BY_KEY[key]
        tile = tiles.get(recipient["code"])
        region, province = facts.get(
            recipient["id"], ("", tile.name if tile is not None else recipient["code"])
        )
        sent_at = _moment(recipient["sent_at"])
        opened_at = _moment(recipient["opened_at"])
        acknowledged_at = _moment(recipient["acknowledged_at"])
        rows.append(
            {
                "id": recipient["id"],
                "code": recipient["code"],
                "province": province,
                "name": recipient["name"],
                "region": region,
                "email": recipient["email"],
                "delivery": recipient["delivery"],
                "delivery_label": DELIVERY_LABELS.get(recipient["delivery"], "Không rõ"),
                "smtp_reply": recipient["smtp_reply"] or "",
                "bounce_reason": recipient.get("bounce_reason") or "",
                "refusal_reason": recipient.get("refusal_reason") or "",
                "processing_label": PROCESSING_LABELS.get(recipient.get("processing") or "", ""),
                "replies": recipient.get("replies", 0),
                "status": key,
                "status_code": entry["code"],
                "status_label": entry["label"],
                "sent_at": sent_at,
                "opened_at": opened_at,
                "acknowledged_at": acknowledged_at,
                "sent_text": clock.format_local(sent_at),
                "opened_text": clock.format_local(opened_at),
                "acknowledged_text": clock.format_local(acknowledged_at),
                "acknowledged_by": recipient["acknowledged_by"] or "",
                "acknowledged_method": recipient["acknowledged_method"],
                "reminders": recipient["reminders"],
                "overdue": bool(recipient["overdue"]),
                "overdue_label": "Quá hạn" if recipient["overdue"] else "",
            }
        )
    return rows


def _region_rank(region: str) -> tuple[int, Any]:
    try:
        return (REGION_ORDER.index(region), ())
    except ValueError:
        return (len(REGION_ORDER), vietnamese_sort_key(region))


def sort_rows(rows: list[dict], key: str, descending: bool = False) -> list[dict]:
    """The rows ordered by ``key`` (one of SORT_KEYS), ties broken by province code.

    ``region`` goes north to south (REGION_ORDER), ``name`` by the province's name in Vietnamese
    dictionary order, ``status`` in precedence order (confirmed first), ``time`` by confirmation
    time; offices that have not confirmed come last in both directions.
    """
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r}")
    by_code = sorted(rows, key=lambda r: (r["code"], r["id"]))
    if key == "time":
        confirmed = [r for r in by_code if r["acknowledged_at"] is not None]
        waiting = [r for r in by_code if r["acknowledged_at"] is None]
        confirmed.sort(key=lambda r: r["acknowledged_at"], reverse=descending)
        return confirmed + waiting
    sort_key: Any = {
        "code": lambda r: r["code"],
        "name": lambda r: (vietnamese_sort_key(r["province"]), vietnamese_sort_key(r["name"])),
        "region": lambda r: _region_rank(r["region"]),
        "status": lambda r: STATUS_RANK[r["status"]],
    }[key]
    # Python's sort is stable: equal keys keep the code order, also when reversed.
    return sorted(by_code, key=sort_key, reverse=descending)


def _sort_headers(key: str, descending: bool) -> dict[str, dict[str, Any]]:
    """Per sortable column: its aria-sort value and the direction its link asks for."""
    headers = {}
    for column, label in SORT_LABELS.items():
        active = column == key
        headers[column] = {
            "key": column,
            "label": label,
            "active": active,
            "aria_sort": ("descending" if descending else "ascending") if active else None,
            "next_dir": "asc" if active and descending else ("desc" if active else "asc"),
            "indicator": ("▼" if descending else "▲") if active else "",
        }
    return headers


def _letter_day(report: dict[str, Any]) -> dt.date | None:
    """The day a dispatch is drawn for: its issuing day, or for a draft its letter's date."""
    issued_on = report.get("issued_on") or ""
    if issued_on:
        return dt.datetime.strptime(issued_on, "%d/%m/%Y").date()
    return None


def _tile_states(rows: list[dict]) -> dict[str, tile_map.TileState]:
    """One state per province: confirmed only if every office there confirmed."""
    by_province: dict[str, list[dict]] = {}
    for row in rows:
        by_province.setdefault(row["code"], []).append(row)
    states = {}
    for code, offices in by_province.items():
        waiting = [r for r in offices if r["status"] != "confirmed"]
        if not waiting:
            key = "confirmed"
        else:
            key = min((r["status"] for r in waiting), key=STATUS_RANK.__getitem__)
        label = STATUS_BY_KEY[key]["label"]
        if len(offices) == 1:
            office = offices[0]
            detail = label
            if key == "confirmed":
                detail = f"{label} lúc {office['acknowledged_text']}"
                if office["acknowledged_by"]:
                    detail += f" ({office['acknowledged_by']})"
        else:
            done = len(offices) - len(waiting)
            detail = f"{label} — {done}/{len(offices)} đơn vị đã xác nhận"
        states[code] = tile_map.TileState(key, offices[0]["province"], detail)
    return states


# --- the chart of confirmations over time ---------------------------------------------------

CHART_WIDTH = 640
CHART_HEIGHT = 280
PLOT_LEFT = 56
PLOT_RIGHT = 24
PLOT_TOP = 28
PLOT_BOTTOM = 56
_NICE_STEPS = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)


@dataclass
class _Scale:
    start: dt.datetime
    end: dt.datetime
    total: int
    left: float = PLOT_LEFT
    top: float = PLOT_TOP
    width: float = CHART_WIDTH - PLOT_LEFT - PLOT_RIGHT
    height: float = CHART_HEIGHT - PLOT_TOP - PLOT_BOTTOM
    span: float = field(init=False)

    def __post_init__(self) -> None:
        self.span = (self.end - self.start).total_seconds()

    def x(self, moment: dt.datetime) -> float:
        seconds = (moment - self.start).total_seconds()
        return round(self.left + self.width * seconds / self.span, 1)

    def y(self, count: int) -> float:
        return round(self.top + self.height * (1 - count / max(self.total, 1)), 1)


def _x_ticks(scale: _Scale) -> list[dict[str, Any]]:
    """Day ticks (dd/mm at midnight, Vietnam time) for spans over a day and a half, else hours."""
    start, end = clock.local(scale.start), clock.local(scale.end)
    ticks = []
    if scale.span >= 36 * 3600:
        step = max(1, math.ceil(scale.span / 86400 / 8))
        day = start.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
        while day <= end:
            ticks.append({"x": scale.x(day), "label": day.strftime("%d/%m")})
            day += dt.timedelta(days=step)
    else:
        hours = max(1, math.ceil(scale.span / 3600 / 8))
        moment = start.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        while moment <= end:
            ticks.append({"x": scale.x(moment), "label": moment.strftime("%H:%M")})
            moment += dt.timedelta(hours=hours)
    return ticks


def _y_ticks(scale: _Scale) -> list[dict[str, Any]]:
    step = next((s for s in _NICE_STEPS if scale.total / s <= 5), _NICE_STEPS[-1])
    return [{"y": scale.y(v), "label": str(v)} for v in range(0, scale.total + 1, step)]


def build_chart(
    *,
    issued_at: dt.datetime,
    deadline_at: dt.datetime | None,
    acknowledged: list[dt.datetime],
    total: int,
    at: dt.datetime,
) -> dict[str, Any]:
    """An SVG step chart of confirmations as of ``at``: geometry and Vietnamese labels.

    The time axis runs from issuing to the deadline or the last confirmation, whichever is
    later; once ``at`` is past that, it follows ``at`` for up to half as long again, so that a
    report read weeks later is not squashed into a corner.
    """
    seen = sorted(max(moment, issued_at) for moment in acknowledged if moment <= at)
    end = max([deadline_at or issued_at, *seen])
    if at > end:
        end = min(at, end + (end - issued_at) / 2)
    if end - issued_at < dt.timedelta(hours=1):
        end = issued_at + dt.timedelta(hours=1)
    scale = _Scale(issued_at, end, total)

    points = [(scale.x(issued_at), scale.y(0))]
    for count, moment in enumerate(seen, start=1):
        x = scale.x(min(moment, end))
        points.append((x, points[-1][1]))
        points.append((x, scale.y(count)))
    points.append((scale.x(min(max(at, issued_at), end)), scale.y(len(seen))))

    deadline = None
    if deadline_at is not None:
        deadline = {
            "x": scale.x(min(deadline_at, end)),
            "label": f"Hạn xác nhận {clock.local(deadline_at):%d/%m %H:%M}",
        }
    on_time = sum(1 for m in seen if deadline_at is None or m <= deadline_at)
    summary = (
        f"Từ khi ban hành lúc {clock.format_local(issued_at)} đến {clock.format_local(at)}: "
        f"{len(seen)}/{total} đơn vị đã xác nhận"
    )
    if deadline_at is not None:
        summary += (
            f", trong đó {on_time} xác nhận đúng hạn "
            f"(hạn xác nhận {clock.format_local(deadline_at)})"
        )
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "plot": {
            "left": scale.left,
            "top": scale.top,
            "right": scale.left + scale.width,
            "bottom": scale.top + scale.height,
        },
        "points": " ".join(f"{x},{y}" for x, y in points),
        "x_ticks": _x_ticks(scale),
        "y_ticks": _y_ticks(scale),
        "total_y": scale.y(total),
        "deadline": deadline,
        "start_label": f"{clock.local(issued_at):%d/%m %H:%M}",
        "end_label": f"{clock.local(end):%d/%m %H:%M}",
        "x_title": "Thời gian (giờ Việt Nam)",
        "y_title": "Số đơn vị đã xác nhận",
        "summary": summary + ".",
        "acknowledged": len(seen),
        "on_time": on_time,
        "total": total,
    }


# --- the page of one dispatch ---------------------------------------------------------------


def _count_items(counts: dict[str, int]) -> list[dict[str, Any]]:
    # Bounced and refused offices are rare: counted on the page only when there are some.
    return [
        {"key": key, "label": label, "value": counts[key]}
        for key, label in (
            ("total", "Tổng số"),
            ("sent", "Đã gửi"),
            ("failed", "Gửi lỗi"),
            ("bounced", "Bị trả lại"),
            ("refused", "Từ chối"),
            ("opened", "Đã mở"),
            ("acknowledged", "Đã xác nhận"),
            ("overdue", "Quá hạn"),
        )
        if counts[key] or key not in ("bounced", "refused")
    ]


def follow_up_links(dispatch_id: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The letter this one follows up (if it is a công văn đôn đốc), and the follow-ups of this
    one with their progress: one query for both."""
    parent = select(Dispatch.follow_up_of_id).where(Dispatch.id == dispatch_id).scalar_subquery()
    rows = db.session.execute(
        select(
            Dispatch.id,
            Dispatch.follow_up_of_id,
            Dispatch.status,
            Dispatch.symbol,
            Dispatch.number,
            Dispatch.issued_on,
            func.count(DispatchRecipient.id),
            func.count(DispatchRecipient.acknowledged_at),
        )
        .outerjoin(DispatchRecipient, DispatchRecipient.dispatch_id == Dispatch.id)
        .where(or_(Dispatch.follow_up_of_id == dispatch_id, Dispatch.id == parent))
        .group_by(Dispatch.id)
        .order_by(Dispatch.id)
    ).all()
    follow_up_of: dict[str, Any] | None = None
    follow_ups: list[dict[str, Any]] = []
    for id_, of, state, symbol, number, issued_on, total, confirmed in rows:
        entry = {
            "id": id_,
            "title": (
                f"Công văn số {number:02d}/{symbol} ngày {issued_on:%d/%m/%Y}"
                if number is not None and issued_on is not None
                else "Dự thảo công văn đôn đốc"
            ),
            "status": state.value,
            "status_label": listing.STATUS_LABELS[state],
            "confirmed": confirmed,
            "total": total,
        }
        if of == dispatch_id:
            follow_ups.append(entry)
        else:
            follow_up_of = entry
    return follow_up_of, follow_ups


def dispatch_dashboard(
    dispatch_id: int, *, at: dt.datetime, sort: str | None = None, direction: str | None = None
) -> dict[str, Any]:
    """Everything the page of one dispatch shows, as of ``at``: four queries.

    Raises ``status.StatusError`` for an unknown dispatch. An unknown ``sort`` falls back to
    the region order, an unknown ``direction`` to ascending.
    """
    report = status.status_report(dispatch_id, at=at)
    facts = _directory_facts(dispatch_id)
    key = sort if sort in SORT_KEYS else DEFAULT_SORT
    descending = direction == "desc"
    rows = sort_rows(_office_rows(report, facts), key, descending)

    legend = [dict(entry) for entry in STATUSES] + [dict(NOT_A_RECIPIENT)]
    day = _letter_day(report)
    layout = tile_map.layout_for(day)
    if day is None and not {r["code"] for r in rows} <= set(tile_map.tiles_by_code(layout)):
        layout = tile_map.DATA_FILE  # a draft to the offices of before 01/07/2025
    drawn_map = tile_map.build_map(_tile_states(rows), legend, data_file=layout)
    map_rows = [
        {
            "code": tile["code"],
            "label": tile["label"],
            "name": tile["name"],
            "status_code": tile["status_code"],
            "status_label": STATUS_BY_KEY[tile["status"]]["label"],
            "detail": tile["title"],
        }
        for tile in sorted(drawn_map["tiles"], key=lambda t: t["code"])
    ]
    issued_at = _moment(report["issued_at"])
    deadline_at = _moment(report["deadline_at"])
    chart = None
    if issued_at is not None:
        chart = build_chart(
            issued_at=issued_at,
            deadline_at=deadline_at,
            acknowledged=[r["acknowledged_at"] for r in rows if r["acknowledged_at"]],
            total=len(rows),
            at=at,
        )
    number = report["number"]
    follow_up_of, follow_ups = follow_up_links(dispatch_id)
    return {
        "id": report["id"],
        "follow_up_of": follow_up_of,
        "follow_ups": follow_ups,
        "status": report["status"],
        "status_label": listing.STATUS_LABELS[DispatchStatus(report["status"])],
        "number": number,
        "title": f"Công văn số {number}" if number else "Dự thảo công văn",
        "subject": report["subject"],
        "issued_on": report["issued_on"] or "",
        "issued_at": issued_at,
        "issued_at_text": clock.format_local(issued_at),
        "deadline_at": deadline_at,
        "deadline_text": report["deadline"] or "",
        "pdf_sha256": report["pdf_sha256"],
        "counts": report["counts"],
        "count_items": _count_items(report["counts"]),
        "rows": rows,
        "sort": key,
        "direction": "desc" if descending else "asc",
        "headers": _sort_headers(key, descending),
        "map": drawn_map,
        "map_rows": map_rows,
        "chart": chart,
        "at": at,
        "at_text": clock.format_local(at),
    }
