"""Issuing to a national directory: the ``issue_63`` measurement at 63, 1,000 and 10,000 offices
(a generated directory of commune-level offices in one group), with the sender's peak memory.

``python -m bench issue_10000``. At each size: a fresh SQLite instance with that many offices
and a draft of the seed letter to them; then, in a warm child process, ``issue_dispatch`` and
``deliver_due`` until the counting aiosmtpd server (its own process) has accepted every letter;
and the baseline (render the PDF once, send as many identical messages with ``smtplib`` over one
connection) in another child. The child's peak RSS is read after its warm-up (WeasyPrint,
fonts, templates) and at the end: the difference is what issuing and sending N letters cost in
memory, and it must not grow with N (the recipients are streamed, not loaded at once).

Figures go to ``bench/results.json`` under "issue_10000": ``ratio`` is our time over the
baseline's at 10,000; ``per_recipient_ms`` and ``marginal_ms`` show the growth (the marginal
cost of an office between two sizes: constant when the cost is linear), ``linearity`` is the
marginal cost from 1,000 to 10,000 over that from 63 to 1,000 (about 1 when linear), and
``memory_growth_mb`` the peak RSS above the warmed-up process at each size. The same growth in
the sending process's CPU time (``cpu_per_recipient_ms``, ``linearity_cpu``) is less disturbed
by whatever else the machine runs.
"""

from __future__ import annotations

import os
from typing import Any

from bench._sending import measure_baseline, measure_ours, smtp_sink
from bench.common import record

# BENCH_ISSUE_SIZES="63,1000" for a quick look; the recorded figures use the three sizes.
SIZES = tuple(int(n) for n in os.environ.get("BENCH_ISSUE_SIZES", "63,1000,10000").split(","))


def main() -> dict[str, Any]:
    """Measure, print and record the issue_10000 benchmark."""
    ours: dict[int, dict[str, Any]] = {}
    baseline: dict[int, dict[str, Any]] = {}
    with smtp_sink() as sink:
        for size in SIZES:
            baseline[size] = measure_baseline(sink, size)
            ours[size] = measure_ours(sink, size)

    largest, smallest = max(SIZES), min(SIZES)
    middle = sorted(SIZES)[len(SIZES) // 2] if len(SIZES) > 2 else smallest

    def marginal(low: int, high: int, key: str = "seconds") -> float:
        return (ours[high][key] - ours[low][key]) / (high - low) * 1000

    figures: dict[str, Any] = {
        "ratio": ours[largest]["seconds"] / baseline[largest]["seconds"],
        "recipients": largest,
        "seconds": ours[largest]["seconds"],
        "baseline_seconds": baseline[largest]["seconds"],
        "sizes": list(SIZES),
        "per_recipient_ms": {n: ours[n]["seconds"] / n * 1000 for n in SIZES},
        # CPU time of the sending process: less disturbed than wall time by other load.
        "cpu_per_recipient_ms": {n: ours[n]["cpu_seconds"] / n * 1000 for n in SIZES},
        "baseline_per_recipient_ms": {n: baseline[n]["seconds"] / n * 1000 for n in SIZES},
        "ratio_by_size": {n: ours[n]["seconds"] / baseline[n]["seconds"] for n in SIZES},
        "issue_seconds": {n: ours[n]["issue_seconds"] for n in SIZES},
        "deliver_seconds": {n: ours[n]["deliver_seconds"] for n in SIZES},
        "messages_per_second": {n: n / ours[n]["deliver_seconds"] for n in SIZES},
        "peak_rss_mb": {n: ours[n]["peak_rss_mb"] for n in SIZES},
        "memory_growth_mb": {
            n: round(ours[n]["peak_rss_mb"] - ours[n]["rss_after_warm_up_mb"], 1) for n in SIZES
        },
        "baseline_peak_rss_mb": {n: baseline[n]["peak_rss_mb"] for n in SIZES},
        "message_bytes": round(ours[largest]["accepted_bytes"] / largest),
        "smtp_connections": {n: ours[n]["smtp_connections"] for n in SIZES},
    }
    if len(SIZES) > 2:
        figures["marginal_ms"] = {
            f"{smallest}-{middle}": marginal(smallest, middle),
            f"{middle}-{largest}": marginal(middle, largest),
        }
        figures["linearity"] = marginal(middle, largest) / marginal(smallest, middle)
        figures["marginal_cpu_ms"] = {
            f"{smallest}-{middle}": marginal(smallest, middle, "cpu_seconds"),
            f"{middle}-{largest}": marginal(middle, largest, "cpu_seconds"),
        }
        figures["linearity_cpu"] = marginal(middle, largest, "cpu_seconds") / marginal(
            smallest, middle, "cpu_seconds"
        )
    entry = record("issue_10000", figures)

    print(f"seed letter to generated offices, {entry['cpu_count']} CPUs, {entry['date']}")
    print("  offices   ours (s)  per office  baseline (s)  ratio  msg/s  peak RSS  growth")
    for n in SIZES:
        print(
            f"  {n:7d}  {ours[n]['seconds']:9.1f}  {figures['per_recipient_ms'][n]:7.1f} ms"
            f"  {baseline[n]['seconds']:12.1f}  {figures['ratio_by_size'][n]:5.2f}"
            f"  {figures['messages_per_second'][n]:5.0f}  {ours[n]['peak_rss_mb']:5.0f} MB"
            f"  {figures['memory_growth_mb'][n]:+5.0f} MB"
        )
    if "linearity" in figures:
        low, high = figures["marginal_ms"].values()
        print(
            f"  marginal cost of an office: {low:.1f} ms ({smallest}→{middle}), "
            f"{high:.1f} ms ({middle}→{largest}); linearity {figures['linearity']:.2f}"
        )
        low, high = figures["marginal_cpu_ms"].values()
        print(
            f"  the same in CPU time of the sender: {low:.1f} ms, {high:.1f} ms; "
            f"linearity {figures['linearity_cpu']:.2f}"
        )
    print(f"  ratio ours / baseline at {largest}: {figures['ratio']:.2f}")
    return entry


if __name__ == "__main__":
    main()
