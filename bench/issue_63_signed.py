"""``issue_63`` with signing on: the seed letter to the 63 offices, approved by a leader, issued
as the signed electronic original and delivered, against the same run unsigned and against
``issue_63``'s baseline (render the PDF once + 63 identical messages with ``smtplib``).

``python -m bench issue_63_signed``. Each run builds a fresh SQLite instance as ``issue_63``
does (``bench._sending.prepare``), then, not timed, a leader with the demo PKCS#12 key and
signature image (``dispatch.signing.demo``) submits and approves (``drafting.approval``) both
drafts the run will issue, the warm-up one and the measured one, as a clerk and a leader would
before issuing. Timed, in a child process warmed as ``issue_63``'s (``python -m
bench._sending ours``, unchanged), is ``issue_dispatch`` + ``deliver_due`` with the agency's
signing configured from the environment: ``DISPATCH_AGENCY_KEY`` (the demo agency's PKCS#12),
its password, ``DISPATCH_AGENCY_SEAL`` (the demo seal) and, for the time-stamped run,
``DISPATCH_TSA_URL`` (the demo TSA of ``dispatch.signing.demo_services``, served by this
process on loopback). Issuing then fills in the number and date of the PDF the leader signed
and adds the agency's signature with the seal (``signing.original.issue``) instead of rendering
the PDF; the DOCX is rendered as before, and the 63 messages carry the signed PDF. The
time-stamped issue asks the demo services three times (the token, the OCSP status of the
agency's and of the TSA's certificates); on loopback they answer in 2–3 ms each: a TSA
elsewhere adds its round trips.

Four kinds of run alternate, ``RUNS`` of each, against the same counting SMTP sink: the
baseline, unsigned (``issue_63``'s run), signed without a time-stamp (PAdES B-B), signed with
one and, as ``DISPATCH_REVOCATION`` defaults to, the OCSP answers of the demo responder
embedded (the agency's signature B-LT). Figures go to
``bench/results.json`` under "issue_63_signed": ``ratio`` is the median over the runs of the
time-stamped signed run over the baseline measured next to it (the issue's goal: at most 1.5),
``ratio_to_unsigned`` the same over the unsigned run, ``ratio_no_tsa`` and
``ratio_no_tsa_to_unsigned`` the same for the run without a time-stamp. ``approval_seconds`` is
the submit + approve of the measured draft (render for approval, leader's signature, archive;
done before issuing, not in the timed runs).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._sending import Sink, measure_baseline, prepare, run_child, smtp_sink
from bench._setup import PREPARED_AT, make_app
from bench.common import record

RECIPIENTS = 63
# The paired ratios of one run spread from 1.1 to 1.6 on a 2-core machine (the relay, the
# sender and the bench share it), so that the median of seven moved from 1.29 to 1.57 between
# runs of the same code: eleven pairs.
RUNS = 11
GOAL = 1.5
LEADER = "lanhdao.kyduyet@thh.example"
PASSWORD_ENV = "BENCH_LEADER_KEY_PASSWORD"
KINDS = ("baseline", "unsigned", "signed_no_tsa", "signed")


def approve_drafts(folder: Path, pki: Any, ids: tuple[int, int]) -> float:
    """A leader with the demo key submits and approves each draft of ``ids``; returns the
    seconds the last one's submit + approve took."""
    from dispatch.accounts import users
    from dispatch.clock import parse_moment
    from dispatch.drafting import approval
    from dispatch.extensions import db
    from dispatch.models import Role
    from dispatch.signing import keys
    from dispatch.signing.demo import PASSWORD, signature_png

    environ = {PASSWORD_ENV: PASSWORD}
    at = parse_moment(PREPARED_AT)
    app = make_app(folder)
    with app.app_context():
        leader = users.create_user(
            LEADER, role=Role.LEADER, password=None, at=at, actor="system", name="Lãnh Đạo"
        )
        keys.set_signing_key(
            leader,
            str(pki.leader.p12),
            password_env=PASSWORD_ENV,
            environ=environ,
            image=signature_png(),
            actor="system",
            at=at,
        )
        db.session.commit()
        seconds = 0.0
        for dispatch_id in ids:
            start = time.perf_counter()
            approval.submit(dispatch_id, leader_email=LEADER, actor=None, at=at)
            approval.approve(dispatch_id, actor=leader, at=at, environ=environ)
            seconds = time.perf_counter() - start
        db.session.remove()
        db.engine.dispose()
    return seconds


def signing_environment(pki: Any, seal: Path, tsa: bool) -> dict[str, str]:
    """The agency's signing settings, as the environment gives them to the app."""
    from dispatch.signing.demo import PASSWORD

    settings = {
        "DISPATCH_AGENCY_KEY": str(pki.agency.p12),
        "DISPATCH_AGENCY_KEY_PASSWORD": PASSWORD,
        "DISPATCH_AGENCY_SEAL": str(seal),
    }
    if tsa:
        settings["DISPATCH_TSA_URL"] = pki.tsa_url
    return settings


def measure_signed(sink: Sink, pki: Any, seal: Path, tsa: bool | None) -> dict[str, Any]:
    """One issue-and-deliver of the seed letter to the 63 offices on a fresh instance: unsigned
    (``tsa`` None), or approved and signed, time-stamped or not; checks that the sink got every
    message once (as ``bench._sending.measure_ours``)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    with tempfile.TemporaryDirectory(prefix="bench-issue-signed-") as name:
        folder = Path(name)
        warm_up_id, dispatch_id = prepare(folder, None)
        approval_seconds = None
        if tsa is not None:
            approval_seconds = approve_drafts(folder, pki, (warm_up_id, dispatch_id))
            environment.update(signing_environment(pki, seal, tsa))
        sink.reset()
        args = ["ours", str(folder), str(sink.port), str(warm_up_id), str(dispatch_id)]
        figures = run_child(args, env=environment)
        signed = _issued_signed(folder, dispatch_id)
    expected = figures["recipients"]
    accepted = sink.messages - figures["warm_up_messages"]
    if expected != RECIPIENTS or figures["sent"] != expected or accepted != expected:
        raise RuntimeError(
            f"{expected} letters to send, {figures['sent']} reported sent, "
            f"{accepted} accepted by the SMTP server"
        )
    if signed is not (tsa is not None):
        raise RuntimeError(f"the letter was issued {'signed' if signed else 'unsigned'}")
    figures["accepted_bytes"] = sink.size - figures["warm_up_bytes"]
    figures["approval_seconds"] = approval_seconds
    return figures


def _issued_signed(folder: Path, dispatch_id: int) -> bool:
    """Whether the dispatch went out as a signed original (read back from the instance)."""
    from dispatch.extensions import db
    from dispatch.models import Dispatch

    app = make_app(folder)
    with app.app_context():
        signed = bool(db.session.get(Dispatch, dispatch_id).signed)
        db.session.remove()
        db.engine.dispose()
    return signed


def main() -> dict[str, Any]:
    """Measure, print and record the issue_63_signed benchmark."""
    from dispatch.signing.demo import make_pki, seal_png
    from dispatch.signing.demo_services import DemoServices

    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    services = DemoServices.start()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-pki-") as pki_folder,
            smtp_sink() as sink,
        ):
            pki = make_pki(Path(pki_folder), services_url=services.url, token=False)
            services.attach(pki)
            seal = Path(pki_folder) / "con-dau.png"
            seal.write_bytes(seal_png())
            for _ in range(RUNS):
                runs["baseline"].append(measure_baseline(sink, RECIPIENTS))
                runs["unsigned"].append(measure_signed(sink, pki, seal, None))
                runs["signed_no_tsa"].append(measure_signed(sink, pki, seal, False))
                runs["signed"].append(measure_signed(sink, pki, seal, True))
    finally:
        services.stop()

    def median(kind: str, key: str = "seconds") -> float:
        return statistics.median(run[key] for run in runs[kind])

    def paired(over: str, under: str) -> float:
        pairs = zip(runs[over], runs[under], strict=True)
        return statistics.median(a["seconds"] / b["seconds"] for a, b in pairs)

    def ratios(over: str, under: str) -> list[float]:
        pairs = zip(runs[over], runs[under], strict=True)
        return sorted(round(a["seconds"] / b["seconds"], 3) for a, b in pairs)

    figures: dict[str, Any] = {
        "recipients": RECIPIENTS,
        "ratio": paired("signed", "baseline"),
        "ratio_to_unsigned": paired("signed", "unsigned"),
        "ratio_no_tsa": paired("signed_no_tsa", "baseline"),
        "ratio_no_tsa_to_unsigned": paired("signed_no_tsa", "unsigned"),
        "ratio_unsigned": paired("unsigned", "baseline"),
        "ratios": ratios("signed", "baseline"),
        "ratios_to_unsigned": ratios("signed", "unsigned"),
        "goal": GOAL,
        "approval_seconds": median("signed", "approval_seconds"),
        "baseline_seconds": median("baseline"),
    }
    for kind in KINDS[1:]:
        figures[f"{kind}_seconds"] = median(kind)
        figures[f"{kind}_issue_seconds"] = median(kind, "issue_seconds")
        figures[f"{kind}_deliver_seconds"] = median(kind, "deliver_seconds")
        figures[f"{kind}_message_bytes"] = round(runs[kind][0]["accepted_bytes"] / RECIPIENTS)
        figures[f"{kind}_runs"] = [round(run["seconds"], 4) for run in runs[kind]]
        figures[f"{kind}_peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs[kind])
    figures["baseline_runs"] = [round(run["seconds"], 4) for run in runs["baseline"]]
    figures["baseline_message_bytes"] = runs["baseline"][0]["message_bytes"]
    entry = record("issue_63_signed", figures)

    print(f"63 offices, seed letter, {entry['cpu_count']} CPUs, {entry['date']}, median of {RUNS}")
    for kind, label in (
        ("unsigned", "unsigned (issue_63)"),
        ("signed_no_tsa", "signed, no TSA (B-B)"),
        ("signed", "signed + TSA, OCSP (B-LT)"),
    ):
        print(
            f"  {label:26} {figures[f'{kind}_seconds'] * 1000:6.0f} ms  "
            f"(issue {figures[f'{kind}_issue_seconds'] * 1000:.0f} ms, deliver "
            f"{figures[f'{kind}_deliver_seconds'] * 1000:.0f} ms, "
            f"{figures[f'{kind}_message_bytes'] // 1024} KB/message)"
        )
    print(
        f"  baseline: render + 63 sends {figures['baseline_seconds'] * 1000:6.0f} ms  "
        f"({figures['baseline_message_bytes'] // 1024} KB/message)"
    )
    print(
        f"  before issuing, submit + approve (not timed above) "
        f"{figures['approval_seconds'] * 1000:.0f} ms"
    )
    verdict = "ok" if figures["ratio"] <= GOAL else f"ABOVE the goal of {GOAL}"
    print(f"  issue_63 signed / baseline           {figures['ratio']:.2f}  {verdict}")
    print(f"  issue_63 signed / unsigned           {figures['ratio_to_unsigned']:.2f}")
    print(f"  signed without TSA / baseline        {figures['ratio_no_tsa']:.2f}")
    print(f"  signed without TSA / unsigned        {figures['ratio_no_tsa_to_unsigned']:.2f}")
    print(f"  unsigned / baseline (issue_63)       {figures['ratio_unsigned']:.2f}")
    return entry


if __name__ == "__main__":
    main()
