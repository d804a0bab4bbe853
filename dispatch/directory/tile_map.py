"""The tile map of Vietnam's provinces: one square per province, placed roughly where it lies,
in both shapes of the country: the 63 provinces until 30/06/2025 and the 34 since 01/07/2025.

Positions are hand-made and kept in ``dispatch/data/tile-map.csv`` (the 63) and
``tile-map-2025.csv`` (the 34): code, short label, name, row, col, on a grid that follows the S
of the country, the north on the top rows, the central coast down the right-hand side with the
Central Highlands to its left, then Hồ Chí Minh and the Mekong delta, Cà Mau last. A tile map
gives every province the same weight, which is what a "who has confirmed" picture needs (Hà Nội
and Bắc Ninh would be dots on a real map). On both maps the Hoàng Sa archipelago (part of Đà
Nẵng) and the Trường Sa archipelago (part of Khánh Hòa) are drawn in the sea off their province
and labelled as such: they are part of Vietnam whatever a letter's recipients are.

``build_map`` turns per-province states into plain data the template draws as inline SVG; it
computes every coordinate, so the template only loops.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

DATA_FILE = "tile-map.csv"
DATA_FILE_2025 = "tile-map-2025.csv"
# The day the 63 provinces became 34: a dispatch dated from then on is drawn on the new map.
PROVINCES_MERGED_ON = dt.date(2025, 7, 1)


@dataclass(frozen=True)
class Archipelago:
    """An archipelago drawn in the sea beside the province it belongs to (not a tile)."""

    key: str
    name: str  # "Quần đảo Hoàng Sa"
    province: str  # "thành phố Đà Nẵng"
    row: int
    col: int


# Placed two columns east of the coast (a column of sea between), level with their province.
ARCHIPELAGOS = {
    DATA_FILE: (
        Archipelago("hoang-sa", "Quần đảo Hoàng Sa", "thành phố Đà Nẵng", 10, 8),
        Archipelago("truong-sa", "Quần đảo Trường Sa", "tỉnh Khánh Hòa", 17, 8),
    ),
    DATA_FILE_2025: (
        Archipelago("hoang-sa", "Quần đảo Hoàng Sa", "thành phố Đà Nẵng", 8, 8),
        Archipelago("truong-sa", "Quần đảo Trường Sa", "tỉnh Khánh Hòa", 13, 8),
    ),
}

# Geometry of the drawing, in SVG user units.
TILE = 40  # side of a tile
GAP = 4  # space between tiles
MARGIN = 4


class TileMapError(ValueError):
    """The tile map data is inconsistent (a code or a cell used twice, a bad number)."""


@dataclass(frozen=True)
class Tile:
    """Where one province sits on the grid, and the letters written on it."""

    code: str
    label: str
    name: str
    row: int
    col: int


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text.strip())


def parse_tiles(text: str) -> tuple[Tile, ...]:
    """Read tile positions from CSV text; TileMapError on a repeated code, label or cell."""
    tiles: list[Tile] = []
    seen_codes: set[str] = set()
    seen_labels: set[str] = set()
    seen_cells: set[tuple[int, int]] = set()
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            tile = Tile(
                code=row["code"].strip(),
                label=_nfc(row["label"]),
                name=_nfc(row["name"]),
                row=int(row["row"]),
                col=int(row["col"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TileMapError(f"line {line}: {exc}") from exc
        if tile.row < 0 or tile.col < 0:
            raise TileMapError(f"line {line}: negative row or column")
        if tile.code in seen_codes:
            raise TileMapError(f"line {line}: province {tile.code} placed twice")
        if tile.label in seen_labels:
            raise TileMapError(f"line {line}: label {tile.label} used twice")
        if (tile.row, tile.col) in seen_cells:
            raise TileMapError(f"line {line}: cell ({tile.row}, {tile.col}) used twice")
        seen_codes.add(tile.code)
        seen_labels.add(tile.label)
        seen_cells.add((tile.row, tile.col))
        tiles.append(tile)
    return tuple(tiles)


@functools.cache
def load_tiles(data_file: str = DATA_FILE) -> tuple[Tile, ...]:
    """The tiles shipped with the package (the 63 by default; read once per process)."""
    text = resources.files("dispatch").joinpath("data", data_file).read_text(encoding="utf-8-sig")
    return parse_tiles(text)


def layout_for(day: dt.date | None) -> str:
    """Which map a dispatch of ``day`` is drawn on: the 34 provinces from 01/07/2025, else the
    63 (a draft without a date yet: today's country)."""
    if day is None or day >= PROVINCES_MERGED_ON:
        return DATA_FILE_2025
    return DATA_FILE


def tiles_by_code(data_file: str = DATA_FILE) -> dict[str, Tile]:
    """Province code → tile."""
    return {tile.code: tile for tile in load_tiles(data_file)}


@dataclass(frozen=True)
class TileState:
    """What one province's tile shows: a status key and the texts for its tooltip."""

    status: str  # a key of the caller's legend, e.g. "confirmed"; "none" when not a recipient
    name: str  # the province's name, shown on hover
    detail: str = ""  # one line after the name, e.g. "Đã xác nhận lúc 15/11/2021 10:30"


def build_map(
    states: Mapping[str, TileState],
    legend: list[dict[str, Any]],
    *,
    tiles: tuple[Tile, ...] | None = None,
    empty: TileState | None = None,
    data_file: str = DATA_FILE,
) -> dict[str, Any]:
    """Plain SVG data: size, one entry per tile (position, class, texts), and the legend.

    ``states`` maps province codes to what their tile shows; provinces without a state are
    drawn as ``empty`` (by default status "none" with the tile's own name). ``legend`` is a list
    of dicts with at least ``key`` (the status), ``code`` (the letters printed on the tile) and
    ``label``; it is returned with each entry's count added.
    """
    tiles = load_tiles(data_file) if tiles is None else tiles
    islands = ARCHIPELAGOS.get(data_file, ()) if tiles is load_tiles(data_file) else ()
    rows = max([tile.row for tile in tiles] + [i.row for i in islands], default=0) + 1
    cols = max([tile.col for tile in tiles] + [i.col for i in islands], default=0) + 1
    codes = {entry["key"]: entry["code"] for entry in legend}
    counts = dict.fromkeys(codes, 0)
    drawn = []
    for tile in sorted(tiles, key=lambda t: (t.row, t.col)):
        state = states.get(tile.code) or empty or TileState("none", tile.name)
        counts[state.status] = counts.get(state.status, 0) + 1
        x = MARGIN + tile.col * (TILE + GAP)
        y = MARGIN + tile.row * (TILE + GAP)
        title = state.name if not state.detail else f"{state.name}: {state.detail}"
        drawn.append(
            {
                "code": tile.code,
                "label": tile.label,
                "name": state.name,
                "status": state.status,
                "status_code": codes.get(state.status, ""),
                "title": title,
                "x": x,
                "y": y,
                "size": TILE,
                # Text baselines: the label in the upper half, the status letters below it.
                "label_x": x + TILE / 2,
                "label_y": y + TILE * 0.45,
                "code_y": y + TILE * 0.82,
            }
        )
    archipelagos = []
    for island in islands:
        x = MARGIN + island.col * (TILE + GAP)
        y = MARGIN + island.row * (TILE + GAP)
        archipelagos.append(
            {
                "key": island.key,
                "name": island.name,
                "province": island.province,
                "title": f"{island.name} ({island.province}, Việt Nam)",
                # A few islets around the middle of the cell, the name under them.
                "dots": [
                    {"cx": x + TILE * fx, "cy": y + TILE * fy}
                    for fx, fy in ((0.3, 0.3), (0.6, 0.2), (0.5, 0.5), (0.75, 0.55), (0.35, 0.7))
                ],
                "label_x": x + TILE / 2,
                "label_y": y + TILE + 12,
                "short": island.name.removeprefix("Quần đảo "),
            }
        )
    return {
        "provinces": len(tiles),
        "period": "từ 01/07/2025" if data_file == DATA_FILE_2025 else "trước 01/07/2025",
        "archipelagos": archipelagos,
        "key": [
            {"label": tile.label, "name": tile.name, "code": tile.code}
            for tile in sorted(tiles, key=lambda t: (t.row, t.col))
        ],
        "width": 2 * MARGIN + cols * TILE + (cols - 1) * GAP,
        "height": 2 * MARGIN + rows * TILE + (rows - 1) * GAP,
        "rows": rows,
        "cols": cols,
        "tiles": drawn,
        "legend": [dict(entry, count=counts.get(entry["key"], 0)) for entry in legend],
    }
