"""From ``issue_dispatch`` to the SMTP server accepting the 63 letters, against the baseline of
rendering the PDF once and sending 63 identical messages with ``smtplib`` over one connection.

``python -m bench issue_63``. Ours: a fresh SQLite instance in a temporary folder with the
bundled directory and a draft of the seed letter, then, timed, ``issue_dispatch`` (number,
render PDF and DOCX, archive, tokens, outbox, audit) and ``deliver_due`` until nothing is due
(63 personalised messages carrying the PDF, the DOCX and the personal link, claimed in one
batch, each recorded in its own commit before the next one leaves). Both run warm (see
``bench._sending``), in child processes, against the same counting aiosmtpd server in a third
process; runs alternate, seven of each.

Figures go to ``bench/results.json`` under "issue_63": ``ratio`` is the median, over the runs,
of our time over the baseline's measured next to it (goal: at most 1.5; ``ratio_of_medians``
divides the medians instead), ``ratio_same_files`` the same against a baseline whose identical
messages carry the DOCX as well as the PDF (what our messages carry), and ``ratio_floor`` that
second baseline over the first: the ratio a sender with no cost at all beyond rendering and
sending our files would reach (the DOCX makes every message bigger, and the server's reading
of each message is most of the baseline's sending time).
"""

from __future__ import annotations

import statistics
from typing import Any

from bench._sending import measure_baseline, measure_ours, smtp_sink
from bench.common import record

RECIPIENTS = 63
RUNS = 7
GOAL = 1.5


def main() -> dict[str, Any]:
    """Measure, print and record the issue_63 benchmark."""
    ours: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    same_files: list[dict[str, Any]] = []
    with smtp_sink() as sink:
        for _ in range(RUNS):
            baseline.append(measure_baseline(sink, RECIPIENTS))
            ours.append(measure_ours(sink, None))
            same_files.append(measure_baseline(sink, RECIPIENTS, with_docx=True))

    def median(runs: list[dict[str, Any]], key: str = "seconds") -> float:
        return statistics.median(run[key] for run in runs)

    def paired(over: list[dict[str, Any]], under: list[dict[str, Any]]) -> float:
        # Each run against the baseline measured next to it: the machine's slower and faster
        # moments fall on both sides of a pair, and the median leaves the odd pair out.
        pairs = zip(over, under, strict=True)
        return statistics.median(a["seconds"] / b["seconds"] for a, b in pairs)

    ours_s, base_s, same_s = median(ours), median(baseline), median(same_files)
    figures = {
        "recipients": RECIPIENTS,
        "ratio": paired(ours, baseline),
        "ratio_same_files": paired(ours, same_files),
        "ratio_floor": paired(same_files, baseline),
        "ratio_of_medians": ours_s / base_s,
        "goal": GOAL,
        "seconds": ours_s,
        "issue_seconds": median(ours, "issue_seconds"),
        "deliver_seconds": median(ours, "deliver_seconds"),
        "ms_per_message": median(ours, "deliver_seconds") / RECIPIENTS * 1000,
        "message_bytes": round(ours[0]["accepted_bytes"] / RECIPIENTS),
        "smtp_connections": ours[0]["smtp_connections"],
        "runs": [run["seconds"] for run in ours],
        "cpu_seconds": median(ours, "cpu_seconds"),
        "baseline_seconds": base_s,
        "baseline_render_seconds": median(baseline, "render_seconds"),
        "baseline_send_seconds": median(baseline, "send_seconds"),
        "baseline_message_bytes": baseline[0]["message_bytes"],
        "baseline_runs": [run["seconds"] for run in baseline],
        "baseline_same_files_seconds": same_s,
        "baseline_same_files_message_bytes": same_files[0]["message_bytes"],
        "peak_rss_mb": max(run["peak_rss_mb"] for run in ours),
    }
    entry = record("issue_63", figures)
    print(f"63 offices, seed letter, {entry['cpu_count']} CPUs, {entry['date']}, median of {RUNS}")
    print(
        f"  ours: issue + deliver          {ours_s * 1000:8.0f} ms  "
        f"(issue {figures['issue_seconds'] * 1000:.0f} ms, deliver "
        f"{figures['deliver_seconds'] * 1000:.0f} ms, "
        f"{figures['message_bytes'] // 1024} KB/message)"
    )
    print(
        f"  baseline: render PDF + 63 sends {base_s * 1000:8.0f} ms  "
        f"({figures['baseline_message_bytes'] // 1024} KB/message)"
    )
    print(
        f"  baseline with the DOCX too     {same_s * 1000:8.0f} ms  "
        f"({figures['baseline_same_files_message_bytes'] // 1024} KB/message)"
    )
    verdict = "ok" if figures["ratio"] <= GOAL else f"ABOVE the goal of {GOAL}"
    print(f"  ratio ours / baseline                {figures['ratio']:.2f}  {verdict}")
    print(f"  ratio ours / baseline (same files)   {figures['ratio_same_files']:.2f}")
    print(f"  floor: same files / baseline         {figures['ratio_floor']:.2f}")
    return entry


if __name__ == "__main__":
    main()
