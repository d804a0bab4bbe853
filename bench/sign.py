"""How long the electronic original of the seed letter takes, against rendering it plainly, on
the product's path (``dispatch.signing.original``, as ``drafting.approval`` and ``issuing`` call
it), with PKCS#12 keys from the demo CA (``dispatch.signing.demo.make_pki``):

* ``render``: ``render_pdf`` of the issued letter (what an unsigned issue renders);
* ``render_for_approval``: the letter without number and day, with the two text fields and the
  leader's empty signature field (what submitting for signature renders);
* ``approve``: the leader's certification signature with the handwritten-signature image;
* ``issue``: the number and date filled in and the agency's signature with the seal;
* ``verify``: ``pades.verify`` of the issued original (both signatures, no fetching);

each signature without a time-stamp (PAdES B-B) and, as with ``DISPATCH_TSA_URL`` and the default
``DISPATCH_REVOCATION=embed``, time-stamped by the demo TSA with the OCSP answers embedded (B-LT,
``demo_services`` on loopback): the ``_lt`` figures.

``python -m bench sign``. Every step runs once per round, rounds alternate the steps (so a slow
moment of the shared machine falls on all of them), median of ``RUNS`` rounds after one warm
round. Figures go to ``bench/results.json`` under "sign": ``ratio`` is the whole original
(render for approval + approve + issue, B-B) over the plain render, ``ratio_lt`` the same with
long-term signatures, ``signing_ratio`` the signatures alone (approve + issue) over the render.

What the time-stamp costs beyond the TSA's answer is mostly asn1crypto re-encoding each
signature's CMS twice (pyHanko's dry run that sizes the placeholder, then the signature):
asn1crypto takes any header whose last byte is 0x80 for an indefinite length
(wbond/asn1crypto#249) and then re-encodes the whole structure, defaults and all. With the demo
PKI a time-stamped CMS is often 5,504 bytes (0x1580) long, so it is hit most of the time; with
other certificates, or another TSA, only when the length happens to end in 0x80.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import record

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "official_letters" / "pc-covid-2021"
NUMBER, DATE = 4321, dt.date(2021, 11, 15)
AT = dt.datetime(2021, 11, 15, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=7)))
VERIFY_URL = "https://congvan.thh.example/xac-minh/bench-sign"
RUNS = 7


def alternating(steps: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Each step timed once per round, ``runs`` rounds; every time, by step."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(runs):
        for name, action in steps.items():
            start = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> dict[str, Any]:
    """Measure, print and record the sign benchmark."""
    from dispatch.letters.pdf import render_pdf
    from dispatch.letters.source import load_letter
    from dispatch.signing import keys, original, pades
    from dispatch.signing.demo import PASSWORD, make_pki, seal_png, signature_png
    from dispatch.signing.demo_services import DemoServices

    letter = load_letter(SEED)
    unissued = replace(letter, number=None, date=None)
    issued = letter.issued_as(NUMBER, DATE)
    printed = original.printed_lines(issued)
    signature, seal = signature_png(), seal_png()
    services = DemoServices.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sign-") as folder:
            pki = make_pki(Path(folder), services_url=services.url, token=False)
            services.attach(pki)
            roots = [pki.root_pem.read_bytes()]
            with (
                keys.open_signer(str(pki.leader.p12), PASSWORD) as leader,
                keys.open_signer(str(pki.agency.p12), PASSWORD) as agency,
            ):
                plain = original.Evidence()
                lasting = original.Evidence(pki.tsa_url, "embed", tuple(roots))
                prepared = original.render_for_approval(unissued, verify_url=VERIFY_URL)

                def approve(evidence: original.Evidence) -> bytes:
                    return original.approve(
                        prepared, leader, image=signature, at=AT, evidence=evidence
                    )

                def issue(approved: bytes, evidence: original.Evidence) -> bytes:
                    return original.issue(
                        approved,
                        agency,
                        **printed,
                        at=AT,
                        seal=seal,
                        evidence=evidence,
                    )

                approved, approved_lt = approve(plain), approve(lasting)
                signed, stamped = issue(approved, plain), issue(approved_lt, lasting)
                for pdf, expected in ((signed, ["B-B", "B-B"]), (stamped, ["B-LT", "B-LT"])):
                    reports = pades.verify(pdf, roots)
                    levels = [report.level for report in reports]
                    if levels != expected or not all(r.intact and r.trusted for r in reports):
                        raise RuntimeError(f"the issued original does not verify: {levels}")
                steps = {
                    "render": lambda: render_pdf(issued, verify_url=VERIFY_URL),
                    "render_for_approval": lambda: original.render_for_approval(
                        unissued, verify_url=VERIFY_URL
                    ),
                    "approve": lambda: approve(plain),
                    "approve_lt": lambda: approve(lasting),
                    "issue": lambda: issue(approved, plain),
                    "issue_lt": lambda: issue(approved_lt, lasting),
                    "verify": lambda: pades.verify(signed, roots),
                    "verify_lt": lambda: pades.verify(stamped, roots),
                }
                alternating(steps, 1)  # warm: imports, fonts, the TSA's first connection
                times = alternating(steps, RUNS)
                rendered = render_pdf(issued, verify_url=VERIFY_URL)
    finally:
        services.stop()

    median = {name: statistics.median(values) for name, values in times.items()}
    whole = median["render_for_approval"] + median["approve"] + median["issue"]
    whole_lt = median["render_for_approval"] + median["approve_lt"] + median["issue_lt"]
    figures: dict[str, Any] = {
        **{f"{name}_s": round(value, 4) for name, value in median.items()},
        "ratio": round(whole / median["render"], 3),
        "ratio_lt": round(whole_lt / median["render"], 3),
        "signing_ratio": round((median["approve"] + median["issue"]) / median["render"], 3),
        "runs": {name: [round(v, 4) for v in values] for name, values in times.items()},
        "rendered_bytes": len(rendered),
        "approval_render_bytes": len(prepared),
        "approved_bytes": len(approved),
        "issued_bytes": len(signed),
        "issued_lt_bytes": len(stamped),
        "levels_lt": levels,
    }
    entry = record("sign", figures)
    print(f"seed letter, {entry['cpu_count']} CPUs, {entry['date']}, median of {RUNS} rounds")
    for name, label in (
        ("render", "render (plain PDF/A-3u)"),
        ("render_for_approval", "render for approval (fields)"),
        ("approve", "approve B-B (leader, image)"),
        ("approve_lt", "approve B-LT (+ TSA, OCSP)"),
        ("issue", "issue B-B (fill + agency + seal)"),
        ("issue_lt", "issue B-LT (+ TSA, OCSP)"),
        ("verify", "verify B-B"),
        ("verify_lt", "verify B-LT"),
    ):
        low, high = min(times[name]), max(times[name])
        print(f"  {label:34} {median[name] * 1000:7.0f} ms  ({low * 1000:.0f}–{high * 1000:.0f})")
    print(
        f"  sizes: plain {len(rendered) // 1024} KB, for approval {len(prepared) // 1024} KB, "
        f"approved {len(approved) // 1024} KB, issued {len(signed) // 1024} KB "
        f"(B-LT {len(stamped) // 1024} KB)"
    )
    print(f"  ratio original (B-B) / render       {figures['ratio']:.2f}")
    print(f"  ratio original (B-LT) / render      {figures['ratio_lt']:.2f}")
    print(f"  ratio approve + issue / render      {figures['signing_ratio']:.2f}")
    return entry


if __name__ == "__main__":
    main()
