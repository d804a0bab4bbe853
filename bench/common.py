"""What every benchmark shares: recording its figures in ``bench/results.json``."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatch import clock

RESULTS = Path(__file__).resolve().parent / "results.json"


def record(name: str, figures: dict[str, Any], path: Path = RESULTS) -> dict[str, Any]:
    """Merge ``figures`` under ``name`` into the results file, with CPU count, date and load."""
    if "ratio" not in figures:
        raise ValueError(f"benchmark {name!r} must report a 'ratio'")
    entry = {
        **figures,
        "cpu_count": os.cpu_count(),
        "date": clock.local(clock.now()).date().isoformat(),
        # How busy the machine was (1, 5, 15 minutes) when the figures were recorded: other
        # processes competing for the CPUs slow the CPU-heavy side of a ratio more.
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    results[name] = entry
    # Write beside and rename, so an interrupted run never leaves half a file.
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(
        json.dumps(results, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    temporary.replace(path)
    return entry


def median_seconds(action: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    """The median wall time of ``runs`` calls of ``action``, and every time measured."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times
