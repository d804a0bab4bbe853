"""The tile map: 63 provinces, one cell each, placed in the S shape of the country."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from dispatch.directory import offices, tile_map
from dispatch.directory.tile_map import TileMapError, TileState, build_map, load_tiles, parse_tiles

pytestmark = pytest.mark.nodb

# The 63 provinces of 2021 by their administrative codes.
# fmt: off
PROVINCE_CODES_2021 = [
    "01", "02", "04", "06", "08", "10", "11", "12", "14", "15", "17", "19", "20", "22", "24", "25",
    "26", "27", "30", "31", "33", "34", "35", "36", "37", "38", "40", "42", "44", "45", "46", "48",
    "49", "51", "52", "54", "56", "58", "60", "62", "64", "66", "67", "68", "70", "72", "74", "75",
    "77", "79", "80", "82", "83", "84", "86", "87", "89", "91", "92", "93", "94", "95", "96",
]
# fmt: on


def _by_name() -> dict[str, tile_map.Tile]:
    return {tile.name: tile for tile in load_tiles()}


def test_every_province_of_2021_has_exactly_one_tile_with_its_name():
    tiles = load_tiles()
    known = offices.known_provinces()
    assert len(tiles) == 63 == len(known)
    assert {tile.code: tile.name for tile in tiles} == known


def test_the_tile_map_and_the_bundled_directory_name_the_same_63_provinces():
    rows = [
        row
        for row in offices.parse_csv(offices.bundled_csv_text())
        if row.valid_on(dt.date(2021, 11, 15))
    ]
    assert sorted(tile.code for tile in load_tiles()) == PROVINCE_CODES_2021
    assert {tile.code: tile.name for tile in load_tiles()} == {
        row.code: row.province for row in rows
    }


def test_the_2025_map_has_the_34_provinces_and_both_archipelagos():
    tiles = load_tiles(tile_map.DATA_FILE_2025)
    provinces = {p["code"]: p["name"] for p in offices.provinces_2025()}
    assert {tile.code: tile.name for tile in tiles} == provinces and len(tiles) == 34
    for data_file in (tile_map.DATA_FILE, tile_map.DATA_FILE_2025):
        drawn = tile_map.build_map({}, [], data_file=data_file)
        names = {a["key"]: a["title"] for a in drawn["archipelagos"]}
        assert names == {
            "hoang-sa": "Quần đảo Hoàng Sa (thành phố Đà Nẵng, Việt Nam)",
            "truong-sa": "Quần đảo Trường Sa (tỉnh Khánh Hòa, Việt Nam)",
        }
        # In the sea: east of every tile, and no tile in their cells.
        east = max(t["x"] for t in drawn["tiles"])
        assert all(
            dot["cx"] > east + tile_map.TILE for a in drawn["archipelagos"] for dot in a["dots"]
        )
        assert len(drawn["key"]) == len(drawn["tiles"])  # every tile named beside the map


@pytest.mark.parametrize(
    ("day", "provinces"),
    [(dt.date(2025, 6, 30), 63), (dt.date(2025, 7, 1), 34), (None, 34)],
)
def test_a_dispatch_is_drawn_on_the_map_of_its_date(day, provinces):
    assert len(load_tiles(tile_map.layout_for(day))) == provinces


def test_no_two_tiles_share_a_cell_and_labels_are_short_and_unique():
    tiles = load_tiles()
    cells = [(tile.row, tile.col) for tile in tiles]
    assert len(set(cells)) == len(cells) == 63
    labels = [tile.label for tile in tiles]
    assert len(set(labels)) == 63
    assert all(re.fullmatch(r"[A-Z]{2,3}", label) for label in labels), labels
    assert {"HN", "HCM", "HG"} <= set(labels)


def test_the_grid_follows_the_s_shape_from_the_north_to_the_mekong():
    tiles = load_tiles()
    rows = max(tile.row for tile in tiles) + 1
    cols = max(tile.col for tile in tiles) + 1
    assert 18 <= rows <= 24 and 6 <= cols <= 10
    tile = _by_name()
    top = min(t.row for t in tiles)
    # The far north on the top rows, Cà Mau on the bottom row.
    for name in ("Hà Giang", "Cao Bằng", "Lào Cai"):
        assert tile[name].row == top, name
    assert tile["Cà Mau"].row == rows - 1
    # North to south along the country.
    order = ["Hà Giang", "Hà Nội", "Thanh Hóa", "Thừa Thiên Huế", "Đà Nẵng", "Khánh Hòa"]
    order += ["Hồ Chí Minh", "Cần Thơ", "Cà Mau"]
    assert [tile[n].row for n in order] == sorted(tile[n].row for n in order)
    # The Red River delta sits around Hà Nội; the Highlands west of the central coast.
    assert abs(tile["Bắc Ninh"].row - tile["Hà Nội"].row) <= 1
    for highland, coast in (("Kon Tum", "Quảng Ngãi"), ("Gia Lai", "Bình Định")):
        assert tile[highland].row == tile[coast].row and tile[highland].col < tile[coast].col
    # The Mekong delta lies west of Hồ Chí Minh City, the central coast east of Hà Nội.
    assert tile["An Giang"].col < tile["Hồ Chí Minh"].col
    assert tile["Đà Nẵng"].col > tile["Hà Nội"].col


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("code,label,name,row,col\n01,HN,Hà Nội,0,0\n01,HX,Hà Nội,0,1\n", "placed twice"),
        ("code,label,name,row,col\n01,HN,Hà Nội,0,0\n02,HN,Hà Giang,0,1\n", "label HN"),
        ("code,label,name,row,col\n01,HN,Hà Nội,3,3\n02,HG,Hà Giang,3,3\n", "cell (3, 3)"),
        ("code,label,name,row,col\n01,HN,Hà Nội,x,0\n", "line 2"),
        ("code,label,name,row,col\n01,HN,Hà Nội,-1,0\n", "negative"),
    ],
)
def test_bad_tile_data_is_refused(text, message):
    with pytest.raises(TileMapError, match=re.escape(message)):
        parse_tiles(text)


def test_build_map_lays_out_tiles_without_overlap_and_counts_the_legend():
    legend = [
        {"key": "confirmed", "code": "XN", "label": "Đã xác nhận"},
        {"key": "none", "code": "–", "label": "Không thuộc nơi nhận"},
    ]
    drawing = build_map({"01": TileState("confirmed", "Hà Nội", "Đã xác nhận")}, legend)
    tiles = drawing["tiles"]
    assert len(tiles) == 63
    boxes = [(t["x"], t["y"], t["x"] + t["size"], t["y"] + t["size"]) for t in tiles]
    for i, a in enumerate(boxes):
        assert a[0] >= 0 and a[1] >= 0
        assert a[2] <= drawing["width"] and a[3] <= drawing["height"]
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    hanoi = next(t for t in tiles if t["code"] == "01")
    assert hanoi["status"] == "confirmed" and hanoi["status_code"] == "XN"
    assert hanoi["title"] == "Hà Nội: Đã xác nhận"
    camau = next(t for t in tiles if t["code"] == "96")
    assert camau["status"] == "none" and camau["title"] == "Cà Mau"
    assert {e["key"]: e["count"] for e in drawing["legend"]} == {"confirmed": 1, "none": 62}


def test_the_leader_page_draws_a_2026_dispatch_on_the_34_province_map(
    issued_dispatch, leader_client
):
    at = dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    dispatch = issued_dispatch(at=at, date="2026-12", group_code="so-khcn", draft_at=at)
    assert len(dispatch.recipients) == 34
    page = leader_client.get(f"/lanh-dao/cong-van/{dispatch.id}").get_data(as_text=True)
    assert page.count('<g class="tile ') == 34
    assert "Bản đồ ô 34 tỉnh, thành phố" in page
    assert 'data-archipelago="hoang-sa"' in page and 'data-archipelago="truong-sa"' in page
    assert "Quần đảo Hoàng Sa (thành phố Đà Nẵng, Việt Nam)" in page
    # Every tile's full name beside the map, readable without hovering.
    assert "<li><abbr>CM</abbr> Cà Mau</li>" in page and "<li><abbr>HUE</abbr> Huế</li>" in page
