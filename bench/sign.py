"""How long signing the seed letter takes, against rendering it: the signer's approval and the
agency's issuance signature, each with its image, with PKCS#12 keys from the demo CA.

``python -m bench sign``. Figures go to ``bench/results.json`` under "sign"; ``ratio`` is
(approve + issue) over rendering.
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from pathlib import Path
from typing import Any

from bench.common import median_seconds, record

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "official_letters" / "pc-covid-2021"
NUMBER, DATE = 4321, dt.date(2021, 11, 15)
RUNS = 7


def _png(size: tuple[int, int], colour: tuple[int, int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", size, colour).save(out, format="PNG")
    return out.getvalue()


def main() -> dict[str, Any]:
    from dispatch.letters.pdf import render_pdf
    from dispatch.letters.source import load_letter
    from dispatch.signing import keys, pades
    from dispatch.signing.demo import PASSWORD, make_pki

    letter = load_letter(SEED).issued_as(NUMBER, DATE)
    signature, seal = _png((150, 60), (0, 0, 160, 200)), _png((120, 120), (255, 0, 0, 180))
    box, seal_box = pades.Box(-1, 330, 300, 480, 360), pades.Box(-1, 290, 280, 410, 400)
    with tempfile.TemporaryDirectory(prefix="bench-sign-") as folder:
        pki = make_pki(Path(folder))
        rendered = render_pdf(letter)  # warm
        render_s, _ = median_seconds(lambda: render_pdf(letter), RUNS)
        with (
            keys.open_signer(str(pki.leader.p12), PASSWORD) as leader,
            keys.open_signer(str(pki.agency.p12), PASSWORD) as agency,
        ):
            approved = pades.approve(rendered, leader, image=signature, box=box, seal_box=seal_box)
            approve_s, _ = median_seconds(
                lambda: pades.approve(
                    rendered, leader, image=signature, box=box, seal_box=seal_box
                ),
                RUNS,
            )
            issue_s, _ = median_seconds(lambda: pades.issue(approved, agency, seal=seal), RUNS)
            issued = pades.issue(approved, agency, seal=seal)
        verify_s, _ = median_seconds(
            lambda: pades.verify(issued, [pki.root_pem.read_bytes()]), RUNS
        )
    figures = {
        "render_s": round(render_s, 4),
        "approve_s": round(approve_s, 4),
        "issue_sign_s": round(issue_s, 4),
        "verify_s": round(verify_s, 4),
        "ratio": round((approve_s + issue_s) / render_s, 3),
        "signed_bytes": len(issued),
        "rendered_bytes": len(rendered),
    }
    print(
        f"render {render_s * 1000:.0f} ms, approve {approve_s * 1000:.0f} ms, "
        f"issue {issue_s * 1000:.0f} ms, verify {verify_s * 1000:.0f} ms "
        f"(signing/rendering {figures['ratio']}×)"
    )
    return record("sign", figures)
