"""The leadership pages on a year of dispatches: 1,000 dispatches to the 63 offices (63,000
recipients, their letters, reminders and confirmations) against the same pages on 10 dispatches.

``python -m bench dashboard``. The data is written straight into PostgreSQL (the database
``dispatch_bench``, emptied first) with Core inserts: issued and completed dispatches with
offices in every state (confirmed, opened, overdue, letter failed, retrying, queued) and a few
drafts. A leader signs in through ``/login`` and each page is requested through the app (Flask's
test client, so the page's own cost is measured, not a server's): the time (median of
``RUNS``) and the number of SQL statements it made, counted by an engine event listener. The
number of statements must be the same with 1,000 dispatches as with 10: it may not grow with
the data (the benchmark fails otherwise).

Figures go to ``bench/results.json`` under "dashboard": ``ratio`` is the slowest page's time
with 1,000 dispatches over the same page's with 10; ``queries`` the most statements any page
made with 1,000 dispatches, ``queries_small`` the same with 10; each page's figures under
``pages``.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._setup import SEED, make_app, migrate, reset_postgres
from bench.common import record

DISPATCHES = 1000
SMALL = 10
OFFICES = 63
RUNS = 5
PDF_RUNS = 2  # the printable report renders with WeasyPrint: about a second each
LEADER = "lanhdao@thh.example"
PASSWORD = "mat-khau-lanh-dao-2021"
FIRST_ISSUE = "2021-01-04T08:30:00+07:00"
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def _fill(dispatches: int) -> dict[str, Any]:
    """Write ``dispatches`` dispatches (one in 20 a draft) to the 63 offices; call in an app
    context on an empty migrated database. Returns ids the pages need."""
    import sqlalchemy as sa

    from dispatch.accounts import users
    from dispatch.clock import parse_moment
    from dispatch.directory import offices
    from dispatch.extensions import db
    from dispatch.letters.source import read_source, source_to_json
    from dispatch.models import (
        AcknowledgementMethod,
        DeliveryStatus,
        Dispatch,
        DispatchRecipient,
        DispatchStatus,
        Document,
        MessageKind,
        Organisation,
        OutboxMessage,
        Role,
    )

    first = parse_moment(FIRST_ISSUE)
    offices.seed_directory(actor="system", at=first)
    users.create_user(LEADER, role=Role.LEADER, password=PASSWORD, at=first, actor="system")
    group = offices.get_group(offices.DEFAULT_GROUP_CODE)
    offices = db.session.execute(
        sa.select(
            Organisation.id, Organisation.name, Organisation.province_code, Organisation.email
        ).order_by(Organisation.province_code)
    ).all()
    source = source_to_json(read_source(SEED))
    dispatch_table, recipient_table = Dispatch.__table__, DispatchRecipient.__table__

    # A year of letters, newest last: issued every few hours, due three days later.
    step = dt.timedelta(days=360) / dispatches
    rows, plans = [], []
    for number in range(1, dispatches + 1):
        issued_at = first + step * (number - 1)
        draft = number % 20 == 10  # 1 of the 10, 50 of the 1,000
        completed = not draft and number % 7 == 0
        plans.append((draft, completed, issued_at))
        rows.append(
            {
                "status": DispatchStatus.DRAFT
                if draft
                else (DispatchStatus.COMPLETED if completed else DispatchStatus.ISSUED),
                "source": source,
                "subject": f"triển khai nhiệm vụ số {number} về chuyển đổi số tại địa phương",
                "symbol": "THH-VP",
                "register": "THH",
                "register_year": None if draft else 2021,
                "number": None if draft else number,
                "issued_on": None if draft else issued_at.date(),
                "issued_at": None if draft else issued_at,
                "deadline_at": None if draft else issued_at + dt.timedelta(days=3),
                "created_at": issued_at - dt.timedelta(days=1),
                "updated_at": issued_at,
                "group_id": group.id,
                "deadline_working_days": 3,
                "deadline_hour": 17,
                "reminder_hour": 8,
                "reminders_enabled": True,
            }
        )
    dispatch_ids = list(
        db.session.execute(
            sa.insert(dispatch_table).returning(dispatch_table.c.id, sort_by_parameter_order=True),
            rows,
        ).scalars()
    )

    recipients, documents = [], []
    for dispatch_id, (draft, completed, issued_at) in zip(dispatch_ids, plans, strict=True):
        if not draft:
            for kind, media in (("pdf", "application/pdf"), ("docx", "application/octet-stream")):
                documents.append(
                    {
                        "dispatch_id": dispatch_id,
                        "kind": kind,
                        "filename": f"CV-{dispatch_id}.{kind}",
                        "media_type": media,
                        "sha256": f"{dispatch_id:064x}",
                        "size": 40000,
                        "path": f"dispatches/{dispatch_id}/CV-{dispatch_id}.{kind}",
                        "created_at": issued_at,
                    }
                )
        for index, office in enumerate(offices):
            confirmed = not draft and (completed or index % 5 < 3)
            opened = not draft and (confirmed or index % 5 == 3)
            recipients.append(
                {
                    "dispatch_id": dispatch_id,
                    "organisation_id": office.id,
                    "name": office.name,
                    "province_code": office.province_code,
                    "email": office.email,
                    "cc": [],
                    "opened_at": issued_at + dt.timedelta(hours=1 + index % 7) if opened else None,
                    "acknowledged_at": issued_at + dt.timedelta(hours=2 + index % 40)
                    if confirmed
                    else None,
                    "acknowledged_by": "Nguyễn Văn An" if confirmed else None,
                    "acknowledged_position": "Chánh Văn phòng" if confirmed else None,
                    "acknowledged_method": AcknowledgementMethod.LINK if confirmed else None,
                    "overdue_at": issued_at + dt.timedelta(days=3)
                    if not draft and not confirmed and index % 2
                    else None,
                    "reminders_stopped": False,
                }
            )
    db.session.execute(sa.insert(Document.__table__), documents)
    recipient_ids = list(
        db.session.execute(
            sa.insert(recipient_table).returning(
                recipient_table.c.id, sort_by_parameter_order=True
            ),
            recipients,
        ).scalars()
    )

    letters = []
    for recipient_id, recipient in zip(recipient_ids, recipients, strict=True):
        never_queued = recipient["opened_at"] is None and recipient["overdue_at"] is None
        if never_queued and recipient_id % 3 == 0:
            continue  # "not sent yet" on the page
        state = (
            DeliveryStatus.FAILED
            if recipient_id % 41 == 0
            else DeliveryStatus.RETRYING
            if recipient_id % 43 == 0
            else DeliveryStatus.SENT
        )
        letters.append((recipient_id, recipient, MessageKind.LETTER, 0, state))
        if recipient["acknowledged_at"] is None and recipient["overdue_at"] is not None:
            letters.append((recipient_id, recipient, MessageKind.REMINDER, 1, DeliveryStatus.SENT))
    issued = {
        dispatch_id: issued_at
        for dispatch_id, (draft, _, issued_at) in zip(dispatch_ids, plans, strict=True)
        if not draft
    }
    outbox = [
        {
            "dispatch_id": recipient["dispatch_id"],
            "recipient_id": recipient_id,
            "recipient_key": recipient_id,
            "kind": kind,
            "sequence": sequence,
            "to_addrs": [recipient["email"]],
            "cc_addrs": [],
            "message_id": f"<d{recipient['dispatch_id']}.r{recipient_id}.{kind.value}"
            f".{sequence}@thh.example>",
            "status": state,
            "attempts": 1,
            "next_attempt_at": None,
            "sent_at": issued[recipient["dispatch_id"]] + dt.timedelta(minutes=1 + sequence)
            if state is DeliveryStatus.SENT
            else None,
            "smtp_reply": "250 2.0.0 OK"
            if state is DeliveryStatus.SENT
            else "550 5.1.1 mailbox unavailable",
            "created_at": issued[recipient["dispatch_id"]],
        }
        for recipient_id, recipient, kind, sequence, state in letters
        if recipient["dispatch_id"] in issued
    ]
    # Core inserts (the ORM's bulk insert spends minutes splicing RETURNING results here).
    db.session.execute(sa.insert(OutboxMessage.__table__), outbox)
    db.session.commit()
    issued_ids = [dispatch_id for dispatch_id in dispatch_ids if dispatch_id in issued]
    return {
        "dispatch_id": issued_ids[len(issued_ids) // 2],
        "last_page": -(-len(issued_ids) // 50),
        "recipients": len(recipients),
        "outbox": len(outbox),
    }


def _pages(ids: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Each page measured: its address and how many times it is timed."""
    one = f"/lanh-dao/cong-van/{ids['dispatch_id']}"
    return {
        "list": ("/lanh-dao/", RUNS),
        "list_last_page": (f"/lanh-dao/?page={ids['last_page']}", RUNS),
        "drafts": ("/lanh-dao/?loai=du-thao", RUNS),
        "dispatch": (one, RUNS),
        "dispatch_by_status": (f"{one}?sort=status&dir=desc", RUNS),
        "csv": (f"{one}/bao-cao.csv", RUNS),
        "xlsx": (f"{one}/bao-cao.xlsx", RUNS),
        "pdf": (f"{one}/bao-cao.pdf", PDF_RUNS),
    }


def _measure(dispatches: int) -> dict[str, Any]:
    """Fill a fresh database with ``dispatches`` and time every leadership page on it."""
    from sqlalchemy import event

    from dispatch.extensions import db

    database_url = reset_postgres()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as name:
        app = make_app(Path(name), database_url=database_url)
        migrate(app)
        with app.app_context():
            ids = _fill(dispatches)
            statements = {"count": 0}

            def count(*args: Any) -> None:
                statements["count"] += 1

            event.listen(db.engine, "before_cursor_execute", count)
            client = app.test_client()
            page = client.get("/login")
            token = CSRF.search(page.get_data(as_text=True))
            assert token is not None, "no CSRF token on /login"
            signed_in = client.post(
                "/login",
                data={"email": LEADER, "password": PASSWORD, "csrf_token": token.group(1)},
            )
            if signed_in.status_code != 302:
                raise RuntimeError(f"sign-in failed: {signed_in.status_code}")
            figures: dict[str, Any] = {}
            for label, (url, runs) in _pages(ids).items():
                client.get(url)  # warm: templates compiled, fonts loaded, pool connected
                statements["count"] = 0
                response = client.get(url)
                made = statements["count"]
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code}")
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    client.get(url)
                    times.append(time.perf_counter() - start)
                figures[label] = {
                    "url": url,
                    "ms": statistics.median(times) * 1000,
                    "queries": made,
                    "bytes": len(response.get_data()),
                }
            event.remove(db.engine, "before_cursor_execute", count)
            db.session.remove()
            db.engine.dispose()
    return {"pages": figures, **ids}


def main() -> dict[str, Any]:
    """Measure, print and record the dashboard benchmark."""
    small = _measure(SMALL)
    big = _measure(DISPATCHES)
    pages = {}
    for label, figures in big["pages"].items():
        before = small["pages"][label]
        pages[label] = {
            "ms": figures["ms"],
            "ms_small": before["ms"],
            "ratio": figures["ms"] / before["ms"],
            "queries": figures["queries"],
            "queries_small": before["queries"],
        }
    growing = {k: v for k, v in pages.items() if v["queries"] != v["queries_small"]}
    slowest = max(pages, key=lambda label: pages[label]["ratio"])
    result = {
        "ratio": pages[slowest]["ratio"],
        "slowest_page": slowest,
        "queries": max(page["queries"] for page in pages.values()),
        "queries_small": max(page["queries_small"] for page in pages.values()),
        "queries_constant": not growing,
        "dispatches": DISPATCHES,
        "dispatches_small": SMALL,
        "recipients": big["recipients"],
        "outbox_rows": big["outbox"],
        "database": "postgresql",
        "pages": pages,
    }
    entry = record("dashboard", result)
    print(
        f"leadership pages, {DISPATCHES} dispatches × {OFFICES} offices ({big['recipients']} "
        f"recipients) against {SMALL}, PostgreSQL, {entry['cpu_count']} CPUs, {entry['date']}"
    )
    print("  page                  ms (1000)  ms (10)  ratio  queries (1000 / 10)")
    for label, page in pages.items():
        print(
            f"  {label:<20} {page['ms']:10.1f} {page['ms_small']:8.1f} {page['ratio']:6.2f}"
            f"  {page['queries']:4d} / {page['queries_small']}"
        )
    print(f"  slowest growth: {slowest} ×{result['ratio']:.2f}; most queries {result['queries']}")
    if growing:
        raise RuntimeError(f"the number of queries grows with the data: {growing}")
    return entry


if __name__ == "__main__":
    main()
