"""The leadership pages: the list with progress, one dispatch's tile map, chart, counts and
sortable table, read-only for every role, with a fixed number of queries."""

from __future__ import annotations

import datetime as dt
import html
import re
import unicodedata
from contextlib import contextmanager

import pytest
from sqlalchemy import event, select

from dispatch.clock import parse_moment
from dispatch.directory import offices
from dispatch.extensions import db
from dispatch.models import DispatchRecipient, Organisation, Role
from dispatch.receipts import acknowledgements
from dispatch.reporting import dashboard
from dispatch.reporting.dashboard import build_chart, office_status, sort_rows, vietnamese_sort_key
from tests.fixtures.leadership import (
    AFTER_DEADLINE,
    ISSUE_AT,
    Office,
    add_dispatch,
    extra_organisations,
)
from tests.fixtures.web import csrf_token_from

REGIONS = [
    "Trung du và miền núi phía Bắc",
    "Đồng bằng sông Hồng",
    "Bắc Trung Bộ và Duyên hải miền Trung",
    "Tây Nguyên",
    "Đông Nam Bộ",
    "Đồng bằng sông Cửu Long",
]
TILE = re.compile(
    r'<g class="tile status-(?P<status>[a-z]+)" data-code="(?P<code>\d+)" '
    r'data-status="(?P=status)">\s*<title>(?P<title>[^<]*)</title>'
)
OFFICE_ROW = re.compile(r'<tr data-code="(\d+)" data-status="([a-z]+)">')
COUNT = re.compile(r'class="count count-([a-z]+)[^"]*"><span class="count-value">(\d+)</span>')


def get_page(client, board, **query: str) -> str:
    response = client.get(f"/lanh-dao/cong-van/{board.dispatch_id}", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    text = response.get_data(as_text=True)
    assert unicodedata.is_normalized("NFC", text)
    return text


def tiles_of(page: str) -> dict[str, tuple[str, str]]:
    return {m["code"]: (m["status"], html.unescape(m["title"])) for m in TILE.finditer(page)}


def office_codes(page: str) -> list[str]:
    return [code for code, _ in OFFICE_ROW.findall(page)]


# --- one dispatch: the map ------------------------------------------------------------------


def test_the_map_has_63_tiles_coloured_by_status_with_the_province_names(
    board, leader_client, artifacts_dir
):
    page = get_page(leader_client, board)
    (artifacts_dir / "leadership-dispatch.html").write_text(page, encoding="utf-8")

    tiles = tiles_of(page)
    assert len(tiles) == 63 and len(TILE.findall(page)) == 63
    assert {code: status for code, (status, _) in tiles.items()} == board.statuses
    names = offices.known_provinces()
    for code, (_, title) in tiles.items():
        assert title.startswith(names[code]), (code, title)
    assert tiles["01"][1] == "Hà Nội: Đã xác nhận lúc 15/11/2021 10:30 (Nguyễn Văn Bình)"
    assert tiles["02"][1] == "Hà Giang: Gửi lỗi"
    # Accessible: the drawing is an image named by its title and description, with a legend of
    # letter codes and a table of the same data.
    assert re.search(
        r'<svg class="tile-map" role="img" aria-labelledby="ban-do-ten ban-do-mo-ta"', page
    )
    assert '<title id="ban-do-ten">' in page and '<desc id="ban-do-mo-ta">' in page
    for code, label in (("XN", "Đã xác nhận"), ("QH", "Quá hạn"), ("GL", "Gửi lỗi")):
        assert f"<strong>{code}</strong> — {label}:" in page
    assert "<strong>QH</strong> — Quá hạn: 1</span>" in page
    assert "<strong>ĐG</strong> — Đã gửi: 52</span>" in page
    map_rows = re.findall(r'<tr data-code="(\d+)"><td>', page)
    assert len(map_rows) == 63


def test_a_province_tile_turns_confirmed_after_its_acknowledgement(board, leader_client):
    assert tiles_of(get_page(leader_client, board))["06"][0] == "opened"
    recipient = db.session.execute(
        select(DispatchRecipient).where(
            DispatchRecipient.dispatch_id == board.dispatch_id,
            DispatchRecipient.province_code == "06",
        )
    ).scalar_one()
    moment = parse_moment("2021-11-16T09:30:00+07:00")
    acknowledgements.acknowledge(
        recipient, "Phạm Minh Tuấn", "Chánh Văn phòng", None, "203.0.113.9", "Firefox", moment
    )
    db.session.commit()

    page = get_page(leader_client, board)
    status, title = tiles_of(page)["06"]
    assert status == "confirmed"
    assert title == "Bắc Kạn: Đã xác nhận lúc 16/11/2021 09:30 (Phạm Minh Tuấn)"
    assert dict(COUNT.findall(page))["acknowledged"] == "5"


def test_after_the_deadline_every_unconfirmed_tile_is_overdue(board, leader_client):
    board.set_now(AFTER_DEADLINE)
    tiles = tiles_of(get_page(leader_client, board))
    confirmed = {code for code, status in board.statuses.items() if status == "confirmed"}
    assert {code for code, (status, _) in tiles.items() if status == "confirmed"} == confirmed
    assert {status for code, (status, _) in tiles.items() if code not in confirmed} == {"overdue"}


# --- one dispatch: counts, chart ------------------------------------------------------------


def test_the_counts_summary(board, leader_client):
    page = get_page(leader_client, board)
    assert dict(COUNT.findall(page)) == {
        "total": "63",
        "sent": "58",
        "failed": "2",
        "opened": "4",
        "acknowledged": "4",
        "overdue": "1",
    }
    for label in ("Tổng số", "Đã gửi", "Gửi lỗi", "Đã mở", "Đã xác nhận", "Quá hạn"):
        assert f'<span class="count-label">{label}</span>' in page


def _chart(page: str) -> str:
    match = re.search(r'<svg class="chart".*?</svg>', page, re.S)
    assert match, "no chart"
    return match.group(0)


def test_the_chart_steps_up_with_each_confirmation_and_marks_the_deadline(board, leader_client):
    chart = _chart(get_page(leader_client, board))
    assert 'role="img" aria-labelledby="bieu-do-ten bieu-do-mo-ta"' in chart
    # The deadline is the right end of the time axis while it is still ahead.
    deadline = re.search(
        r'<line x1="([\d.]+)" x2="\1" y1="[\d.]+" y2="([\d.]+)" class="deadline-line">', chart
    )
    assert deadline, chart
    plot_right = dashboard.CHART_WIDTH - dashboard.PLOT_RIGHT
    assert float(deadline.group(1)) == plot_right
    assert "Hạn xác nhận 18/11 17:00" in chart
    points = re.search(r'<polyline points="([^"]+)" class="progress-line">', chart).group(1)
    pairs = [tuple(map(float, p.split(","))) for p in points.split()]
    assert len(pairs) == 1 + 2 * 4 + 1  # start, two corners per confirmation, now
    ys = [y for _, y in pairs]
    assert ys == sorted(ys, reverse=True)  # never goes down
    assert len(set(ys)) == 5  # 0, 1, 2, 3, 4 confirmations
    xs = [x for x, _ in pairs]
    assert xs == sorted(xs) and xs[-1] < float(deadline.group(1))
    for label in ("16/11", "17/11", "18/11", "Thời gian (giờ Việt Nam)", "Số đơn vị đã xác nhận"):
        assert label in chart
    assert "Tổng số 63" in chart
    assert "4/63 đơn vị đã xác nhận, trong đó 4 xác nhận đúng hạn" in chart


def test_after_the_deadline_the_chart_runs_past_the_deadline_line(board, leader_client):
    board.set_now(AFTER_DEADLINE)
    chart = _chart(get_page(leader_client, board))
    x = float(re.search(r'<line x1="([\d.]+)" x2="\1"[^>]*class="deadline-line"', chart).group(1))
    assert dashboard.PLOT_LEFT < x < dashboard.CHART_WIDTH - dashboard.PLOT_RIGHT


@pytest.mark.nodb
def test_build_chart_geometry_and_short_spans_use_hours():
    issued = parse_moment("2021-11-15T08:30:00+07:00")
    chart = build_chart(
        issued_at=issued,
        deadline_at=issued + dt.timedelta(hours=6),
        acknowledged=[issued + dt.timedelta(hours=1), issued + dt.timedelta(hours=8)],
        total=2,
        at=issued + dt.timedelta(hours=3),
    )
    # The confirmation after "now" is not drawn; the axis ends at the deadline.
    assert chart["acknowledged"] == 1 and chart["on_time"] == 1
    assert chart["deadline"]["x"] == chart["plot"]["right"]
    assert [t["label"] for t in chart["x_ticks"]][:3] == ["09:00", "10:00", "11:00"]
    assert [t["label"] for t in chart["y_ticks"]] == ["0", "1", "2"]
    assert chart["end_label"] == "15/11 14:30"


# --- one dispatch: the table of offices ---------------------------------------------------


def _expected_order(board, key: str, descending: bool) -> list[str]:
    orgs = board.organisations
    codes = sorted(orgs)
    if key == "code":
        return sorted(codes, reverse=descending)
    if key == "region":
        return sorted(codes, key=lambda c: REGIONS.index(orgs[c].region), reverse=descending)
    if key == "status":
        order = ["confirmed", "overdue", "failed", "opened", "sent", "queued"]
        return sorted(codes, key=lambda c: order.index(board.statuses[c]), reverse=descending)
    if key == "time":
        confirmed = ["01", "48", "95", "79"]  # by confirmation time
        if descending:
            confirmed.reverse()
        return confirmed + [c for c in codes if c not in confirmed]
    raise AssertionError(key)


@pytest.mark.parametrize("key", ["code", "region", "status", "time"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_the_table_sorts_by_each_key(board, leader_client, key, direction):
    page = get_page(leader_client, board, sort=key, dir=direction)
    assert office_codes(page) == _expected_order(board, key, direction == "desc")
    aria = "descending" if direction == "desc" else "ascending"
    headers = re.findall(r'<th scope="col"( aria-sort="(\w+)")?><a href="([^"]+)">', page)
    sorted_headers = [(a, href) for _, a, href in headers if a]
    assert len(sorted_headers) == 1 and sorted_headers[0][0] == aria
    href = html.unescape(sorted_headers[0][1])
    assert f"sort={key}" in href
    assert ("dir=asc" if direction == "desc" else "dir=desc") in href  # the link flips it
    assert len(headers) == 5 and all("#don-vi" in h for _, _, h in headers)


def test_sorting_by_name_follows_the_vietnamese_alphabet(board, leader_client):
    page = get_page(leader_client, board, sort="name", dir="asc")
    names = offices.known_provinces()
    ordered = [names[code] for code in office_codes(page)]
    assert ordered[:14] == [
        "An Giang",
        "Bà Rịa - Vũng Tàu",
        "Bạc Liêu",
        "Bắc Giang",
        "Bắc Kạn",
        "Bắc Ninh",
        "Bến Tre",
        "Bình Dương",
        "Bình Định",
        "Bình Phước",
        "Bình Thuận",
        "Cà Mau",
        "Cao Bằng",
        "Cần Thơ",
    ]
    # Đ after every D… and C…, before G.
    assert ordered[14:20] == [
        "Đà Nẵng",
        "Đắk Lắk",
        "Đắk Nông",
        "Điện Biên",
        "Đồng Nai",
        "Đồng Tháp",
    ]
    assert ordered[20] == "Gia Lai"
    descending = get_page(leader_client, board, sort="name", dir="desc")
    assert office_codes(descending) == list(reversed(office_codes(page)))


def test_the_table_shows_each_office_with_vietnamese_labels(board, leader_client):
    page = get_page(leader_client, board, sort="code")
    rows = re.findall(r'<tr data-code="(\d+)" data-status="[a-z]+">(.*?)</tr>', page, re.S)
    cells = {
        code: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip() for code, body in rows
    }
    assert cells["01"].startswith("01 Hà Nội Sở Thông tin và Truyền thông thành phố Hà Nội")
    assert "Đồng bằng sông Hồng" in cells["01"]
    assert "15/11/2021 09:40 15/11/2021 10:30 Nguyễn Văn Bình" in cells["01"]
    assert "XN Đã xác nhận" in cells["01"]
    assert "Gửi lỗi 550 5.1.1 mailbox unavailable" in cells["02"]
    assert "Chờ gửi" in cells["08"] and "Đang thử lại" in cells["11"]
    assert "Chờ gửi" in cells["12"]  # being sent shows as waiting
    assert cells["10"].endswith("2 Quá hạn")
    assert "Đã gửi" in cells["14"] and "sotttt.sonla@tinh.example" in cells["14"]
    assert "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu" in cells["95"]
    # Default order: by region, north to south.
    assert office_codes(get_page(leader_client, board)) == _expected_order(board, "region", False)


def test_an_unknown_dispatch_is_404_and_a_bad_sort_falls_back(board, leader_client):
    for dispatch_id in ("999999", "2147483648", "99999999999999999999"):
        for suffix in ("", "/bao-cao.csv", "/bao-cao.pdf"):
            url = f"/lanh-dao/cong-van/{dispatch_id}{suffix}"
            assert leader_client.get(url).status_code == 404, url
    page = get_page(leader_client, board, sort="'; drop table", dir="sideways")
    assert office_codes(page) == _expected_order(board, "region", False)


# --- the list of dispatches -----------------------------------------------------------------


def test_the_list_shows_progress_deadline_overdue_and_keeps_drafts_apart(
    board, leader_client, seeded
):
    draft_id = add_dispatch(seeded.offices[:5], number=None, subject="dự thảo thử nghiệm")
    done_id = add_dispatch(
        seeded.offices[:3],
        number=2,
        subject="báo cáo số liệu",
        issued_at=ISSUE_AT + dt.timedelta(hours=1),
        offices=_all_confirmed(["01", "02", "04"]),
    )
    response = leader_client.get("/lanh-dao/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    rows = dict(re.findall(r'<tr data-dispatch-id="(\d+)"[^>]*>(.*?)</tr>', page, re.S))
    assert set(rows) == {str(board.dispatch_id), str(done_id)}
    assert list(rows) == [str(done_id), str(board.dispatch_id)]  # newest first
    main = rows[str(board.dispatch_id)]
    assert "01/THH-VP" in main and "15/11/2021" in main and "18/11/2021 17:00" in main
    assert 'max="63" value="4"' in main and "<progress" in main
    assert "4/63 (6%)" in main
    assert re.search(r'<td class="num late">1</td>', main)
    assert "Có đơn vị quá hạn" in main
    done = rows[str(done_id)]
    assert "3/3 (100%)" in done and "Đã xác nhận đủ" in done and '<td class="num">0</td>' in done

    drafts = leader_client.get("/lanh-dao/", query_string={"loai": "du-thao"})
    draft_rows = re.findall(r'<tr data-dispatch-id="(\d+)"', drafts.get_data(as_text=True))
    assert draft_rows == [str(draft_id)]
    assert "Dự thảo" in drafts.get_data(as_text=True)


def _all_confirmed(codes: list[str]) -> dict[str, Office]:
    moment = ISSUE_AT + dt.timedelta(hours=2)
    return {code: Office(acknowledged_at=moment, acknowledged_by="Văn thư") for code in codes}


def test_the_list_is_paginated(seeded, leader_client, fixed_now):
    members = seeded.offices[:2]
    for number in range(1, 56):
        add_dispatch(members, number=number, issued_at=ISSUE_AT + dt.timedelta(minutes=number))
    first = leader_client.get("/lanh-dao/").get_data(as_text=True)
    assert len(re.findall(r"<tr data-dispatch-id=", first)) == 50
    assert "Trang 1/2" in first and 'rel="next"' in first
    second = leader_client.get("/lanh-dao/", query_string={"page": 2}).get_data(as_text=True)
    numbers = re.findall(r'">(\d\d)/THH-VP</a>', second)
    assert numbers == ["05", "04", "03", "02", "01"]
    # Past the end (however far): the last page.
    for page in (3, 10**30):
        beyond = leader_client.get("/lanh-dao/", query_string={"page": page})
        assert beyond.status_code == 200
        assert re.findall(r'">(\d\d)/THH-VP</a>', beyond.get_data(as_text=True)) == numbers


# --- a fixed number of queries --------------------------------------------------------------


@contextmanager
def counting_queries():
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def _queries_for(client, url: str) -> int:
    client.get(url)  # warm up: a fresh connection may ask the server about itself
    db.session.expunge_all()
    with counting_queries() as statements:
        response = client.get(url)
    assert response.status_code == 200
    return len(statements)


def test_the_dispatch_page_costs_the_same_queries_for_10_or_200_offices(
    seeded, leader_client, fixed_now
):
    organisations = extra_organisations(200)
    few = add_dispatch(organisations[:10], number=1)
    many = add_dispatch(
        organisations,
        number=2,
        offices={"01": _all_confirmed(["01"])["01"]},
    )
    small = _queries_for(leader_client, f"/lanh-dao/cong-van/{few}")
    large = _queries_for(leader_client, f"/lanh-dao/cong-van/{many}")
    assert small == large
    assert large <= 7  # the user, the report's three queries, the regions, the follow-ups
    page = leader_client.get(f"/lanh-dao/cong-van/{many}").get_data(as_text=True)
    assert len(office_codes(page)) == 200 and len(TILE.findall(page)) == 63


def test_the_list_costs_the_same_queries_for_10_or_200_dispatches(seeded, leader_client, fixed_now):
    def offices() -> list[Organisation]:
        # Fresh rows each time: counting detaches everything the session held.
        query = select(Organisation).order_by(Organisation.province_code).limit(10)
        return list(db.session.execute(query).scalars())

    for number in range(1, 11):
        add_dispatch(offices(), number=number)
    small = _queries_for(leader_client, "/lanh-dao/")
    members = offices()
    for number in range(11, 201):
        add_dispatch(members, number=number)
    large = _queries_for(leader_client, "/lanh-dao/")
    assert small == large <= 4  # the user, the count, the page


# --- roles ----------------------------------------------------------------------------------


def _urls(board) -> list[str]:
    base = f"/lanh-dao/cong-van/{board.dispatch_id}"
    return ["/lanh-dao/", base, f"{base}/bao-cao.csv", f"{base}/bao-cao.xlsx"]


def test_leaders_cannot_post_anything(board, leader_client):
    token = csrf_token_from(leader_client.get("/lanh-dao/").get_data(as_text=True))
    for url in [*_urls(board), f"/lanh-dao/cong-van/{board.dispatch_id}/bao-cao.pdf"]:
        for data in ({}, {"csrf_token": token}):
            assert leader_client.post(url, data=data).status_code == 405, url
        for method in (leader_client.put, leader_client.delete, leader_client.patch):
            assert method(url).status_code == 405, url
    page = get_page(leader_client, board)
    # Nothing on the page changes anything: the only form is signing out.
    assert re.findall(r'<form[^>]*action="([^"]+)"', page) == ["/logout"]


def test_clerks_and_admins_read_the_pages_too(board, role_clients):
    for role in (Role.CLERK, Role.ADMIN, Role.LEADER):
        for url in _urls(board):
            assert role_clients[role].get(url).status_code == 200, (role, url)


def test_signed_out_visitors_are_sent_to_the_login_page(board, client):
    for url in [*_urls(board), f"/lanh-dao/cong-van/{board.dispatch_id}/bao-cao.pdf"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login")


def test_every_route_checks_the_role_on_the_server(app):
    from dispatch.views import leadership

    for name, view in app.view_functions.items():
        if name.startswith("leadership."):
            assert getattr(view, "allowed_roles", None) == frozenset(leadership.READ_ROLES), name


# --- plain logic ----------------------------------------------------------------------------


@pytest.mark.nodb
def test_vietnamese_sort_key_orders_like_a_dictionary():
    words = ["Đà Nẵng", "Cần Thơ", "Ăn", "An Giang", "Âu", "Bạc Liêu", "Bà Rịa", "Dung", "Ba"]
    assert sorted(words, key=vietnamese_sort_key) == [
        "An Giang",
        "Ăn",
        "Âu",
        "Ba",
        "Bà Rịa",
        "Bạc Liêu",
        "Cần Thơ",
        "Dung",
        "Đà Nẵng",
    ]
    # Tones break ties only: ma, mà, mả, mã, má, mạ.
    tones = ["mạ", "má", "mã", "mả", "mà", "ma"]
    assert sorted(tones, key=vietnamese_sort_key) == ["ma", "mà", "mả", "mã", "má", "mạ"]
    # NFD input sorts as its NFC form.
    assert vietnamese_sort_key(unicodedata.normalize("NFD", "Đắk Lắk")) == vietnamese_sort_key(
        "Đắk Lắk"
    )


@pytest.mark.nodb
@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        (
            {"acknowledged_at": "x", "overdue": True, "delivery": "failed", "opened_at": "x"},
            "confirmed",
        ),
        (
            {"acknowledged_at": None, "overdue": True, "delivery": "failed", "opened_at": "x"},
            "overdue",
        ),
        (
            {"acknowledged_at": None, "overdue": False, "delivery": "failed", "opened_at": "x"},
            "failed",
        ),
        (
            {"acknowledged_at": None, "overdue": False, "delivery": "sent", "opened_at": "x"},
            "opened",
        ),
        (
            {"acknowledged_at": None, "overdue": False, "delivery": "sent", "opened_at": None},
            "sent",
        ),
        (
            {"acknowledged_at": None, "overdue": False, "delivery": "retrying", "opened_at": None},
            "queued",
        ),
        (
            {"acknowledged_at": None, "overdue": False, "delivery": None, "opened_at": None},
            "queued",
        ),
    ],
)
def test_office_status_precedence(recipient, expected):
    assert office_status(recipient) == expected


@pytest.mark.nodb
def test_sort_rows_refuses_an_unknown_key():
    with pytest.raises(ValueError):
        sort_rows([], "colour")


def test_a_draft_has_a_page_without_chart(seeded, leader_client, fixed_now):
    draft_id = add_dispatch(seeded.offices[:3], number=None)
    response = leader_client.get(f"/lanh-dao/cong-van/{draft_id}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Dự thảo công văn" in page and "chưa có số liệu xác nhận" in page
    tiles = tiles_of(page)
    assert len(tiles) == 63
    assert sum(1 for status, _ in tiles.values() if status == "queued") == 3
    assert sum(1 for status, _ in tiles.values() if status == "none") == 60
