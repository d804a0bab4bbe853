"""The signer's and the agency's PAdES signatures on the seed letter, checked by pyHanko, by
poppler's pdfsig (a second implementation), by ``dispatch verify`` and against tampering."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from dispatch.letters import formatting
from dispatch.letters.pdf import render_pdf
from dispatch.signing import keys, original, pades
from dispatch.signing.demo import AGENCY_NAME, LEADER_NAME
from tests.fixtures.originals import AT, DATE, NUMBER, sign_letter
from tests.fixtures.pki import PASSWORD
from tests.letter_samples import seed_letter

ISSUED = dict(number=NUMBER, date=DATE)


@pytest.fixture(scope="session")
def letters(pki):
    """The seed letter rendered for approval, approved with the leader's PKCS#12 key, then
    issued with the agency's key on the SoftHSM2 token."""
    signed = sign_letter(pki, seed_letter())
    return signed.prepared, signed.approved, signed.issued


def _tampered(issued: bytes, prepared: bytes) -> bytes:
    """One byte of the letter's own content (inside both signed ranges) flipped."""
    data = bytearray(issued)
    data[len(prepared) // 2] ^= 0x01
    return bytes(data)


def test_both_signatures_intact_trusted_in_order(letters, pki):
    _, _, issued = letters
    reports = pades.verify(issued, [pki.root_pem.read_bytes()])
    assert [r.role for r in reports] == ["signer", "agency"]
    assert reports[0].name == LEADER_NAME and reports[1].name == AGENCY_NAME
    assert all(r.intact and r.trusted for r in reports)
    # The signer's signature still validates after the agency's: the change after it is
    # a permitted form filling (signing the prepared field).
    assert reports[0].changes_after == "form_filling"
    assert reports[1].changes_after == "none"
    assert all(r.signed_at.endswith("+07:00") for r in reports)


def test_untrusted_without_the_root(letters):
    reports = pades.verify(letters[2], [])
    assert all(r.intact and not r.trusted for r in reports)


def test_approval_twice_and_issue_without_approval_are_refused(letters, pki):
    prepared, approved, _ = letters
    issued = seed_letter(**ISSUED)
    with keys.open_signer(str(pki.agency.p12), PASSWORD) as signer:
        with pytest.raises(pades.SigningError, match="chưa được lãnh đạo ký duyệt"):
            original.issue(
                prepared, signer, number_symbol=formatting.number_and_symbol(issued),
                place_date=formatting.place_date_line(issued), at=AT, seal=None,
            )  # fmt: skip
        with pytest.raises(pades.SigningError, match="đã có chữ ký"):
            original.approve(approved, signer, image=None)


def test_pdfsig_reports_both_valid_and_tampering_breaks_them(letters, tmp_path):
    prepared, _, issued = letters
    path = tmp_path / "cong-van.pdf"
    path.write_bytes(issued)
    out = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True).stdout
    assert out.count("Signature Validation: Signature is Valid.") == 2, out
    assert "KyDuyet" in out and "BanHanh" in out

    bad = tmp_path / "bi-sua.pdf"
    bad.write_bytes(_tampered(issued, prepared))
    out = subprocess.run(["pdfsig", str(bad)], capture_output=True, text=True).stdout
    assert "Signature is Valid." not in out, out
    assert all(not r.intact for r in pades.verify(bad.read_bytes()))


def test_text_still_reads_back_after_signing(letters, tmp_path):
    _, _, issued = letters
    texts = []
    for name, data in (("plain", render_pdf(seed_letter(**ISSUED))), ("signed", issued)):
        path = tmp_path / f"{name}.pdf"
        path.write_bytes(data)
        texts.append(
            subprocess.run(
                # In layout order: the filled fields are read where they are printed.
                ["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    assert texts[0] == texts[1]
    assert "4321/THH-VP" in texts[1] and "ngày 15 tháng 11 năm 2021" in texts[1]


def test_dispatch_verify_names_both_and_the_broken_one(letters, pki, db_app, runner, tmp_path):
    prepared, _, issued = letters
    db_app.config["DISPATCH_TRUST_ROOTS"] = str(pki.root_pem)
    good = tmp_path / "cong-van.pdf"
    good.write_bytes(issued)
    result = runner.invoke(args=["verify", str(good), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    data = json.loads(result.output)
    assert [s["role"] for s in data["signatures"]] == ["signer", "agency"]
    assert all(s["intact"] and s["trusted"] for s in data["signatures"])
    assert data["pdfa"] == "3u"
    # Signed, but not a file the register knows (never issued by this instance): not passed.
    assert data["register"] is None and result.exit_code == 1

    bad = tmp_path / "bi-sua.pdf"
    bad.write_bytes(_tampered(issued, prepared))
    text = runner.invoke(args=["verify", str(bad)])
    assert text.exit_code == 1
    assert LEADER_NAME in text.output and "BỊ HỎNG" in text.output


def test_dispatch_verify_finds_an_issued_letter_in_the_register(seeded, runner, app, tmp_path):
    """The unsigned path: the e-mailed PDF is in the register but carries no signature."""
    from sqlalchemy import select

    from dispatch.extensions import db
    from dispatch.models import Document
    from tests.test_cli import ISSUE_AT, _draft

    dispatch_id = _draft(runner)
    issued = runner.invoke(
        args=["issue", str(dispatch_id), "--confirm-placeholders", "--at", ISSUE_AT]
    )
    assert issued.exit_code == 0, issued.output
    document = db.session.scalars(
        select(Document).where(Document.dispatch_id == dispatch_id, Document.kind == "pdf")
    ).one()
    data = (Path(app.config["DISPATCH_DATA_DIR"]) / document.path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == document.sha256
    path = tmp_path / "ban-gui.pdf"
    path.write_bytes(data)
    result = runner.invoke(args=["verify", str(path), "--json"])
    verdict = json.loads(result.output)
    assert verdict["register"]["number"] == "01/THH-VP"
    assert verdict["register"]["date"] == "15/11/2021"
    assert verdict["signatures"] == [] and result.exit_code == 1


def test_dispatch_issue_says_unsigned_or_refuses_unapproved(seeded, runner, db_app, pki):
    from tests.test_cli import ISSUE_AT, _draft

    first = _draft(runner)
    db_app.config["DISPATCH_AGENCY_KEY"] = str(pki.agency.p12)
    refused = runner.invoke(args=["issue", str(first), "--confirm-placeholders", "--at", ISSUE_AT])
    assert refused.exit_code == 1 and "chưa được lãnh đạo ký duyệt" in refused.output
    db_app.config["DISPATCH_AGENCY_KEY"] = None
    issued = runner.invoke(args=["issue", str(first), "--confirm-placeholders", "--at", ISSUE_AT])
    assert issued.exit_code == 0, issued.output
    assert "Chưa cấu hình khoá ký số: văn bản được ban hành không ký số." in issued.output
