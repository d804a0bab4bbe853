"""Time-stamped signatures (PAdES B-T) with their revocation information (B-LT), against the demo
PKI's RFC 3161 TSA and OCSP responder served over HTTP on loopback (dispatch/signing/
demo_services.py): checked by pyHanko without fetching anything, by poppler's pdfsig and by
``dispatch verify``; a TSA that is down; and the audit checkpoints' time-stamp tokens."""

from __future__ import annotations

import datetime as dt
import gc
import io
import json
import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from dispatch import audit
from dispatch.extensions import db
from dispatch.signing import keys, original, pades, reading, timestamps
from dispatch.signing.demo import TSA_NAME
from dispatch.signing.original import Evidence
from tests.fixtures.originals import DATE, NUMBER, issue, sign_letter
from tests.fixtures.pki import PASSWORD
from tests.letter_samples import seed_letter

AT = dt.datetime(2021, 11, 15, 1, 30, tzinfo=dt.UTC)


def _sign_both(pki, **evidence) -> tuple[bytes, bytes]:
    """The seed letter approved and issued now (the time-stamps say now), with ``evidence``."""
    signed = sign_letter(pki, seed_letter(), at=None, evidence=Evidence(**evidence))
    return signed.approved, signed.issued


@pytest.fixture(scope="session")
def rendered():
    """The seed letter rendered for approval."""
    return original.render_for_approval(seed_letter())


@pytest.fixture(scope="session")
def long_term(pki, trust_services):
    """The seed letter approved and issued with the local TSA, revocation info embedded."""
    before = len(trust_services.requests)
    approved, issued = _sign_both(
        pki, tsa_url=pki.tsa_url, trust_roots=(pki.root_pem.read_bytes(),)
    )
    asked = trust_services.requests[before:]
    return approved, issued, asked


def _closed_port_url() -> str:
    """An address on loopback where nothing listens (connection refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/tsa"


def test_demo_certificates_name_the_responder_and_the_tsa_may_only_time_stamp(pki):
    aia = pki.leader.cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    assert [
        d.access_location.value
        for d in aia.value
        if d.access_method == AuthorityInformationAccessOID.OCSP
    ] == [pki.ocsp_url]
    usage = pki.tsa.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert usage.critical and list(usage.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    assert pki.tsa.cert.issuer == pki.root.subject


def test_both_signatures_are_b_lt_and_pyhanko_validates_them_offline(long_term, pki):
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.dss import DocumentSecurityStore
    from pyhanko_certvalidator import ValidationContext

    _, issued, asked = long_term
    # Both signatures were time-stamped and their certificates' status asked over HTTP.
    assert asked.count("tsa") >= 2 and asked.count("ocsp") >= 2

    reports = pades.verify(issued, [pki.root_pem.read_bytes()])
    assert [(r.role, r.level) for r in reports] == [("signer", "B-LT"), ("agency", "B-LT")]
    assert all(r.intact and r.trusted for r in reports)
    assert reports[0].changes_after == "form_filling"
    for report in reports:
        assert report.timestamp.endswith("+07:00") and report.signed_at.endswith("+07:00")
        stamped = dt.datetime.fromisoformat(report.timestamp)
        signed = dt.datetime.fromisoformat(report.signed_at)
        assert abs((stamped - signed).total_seconds()) < 60

    # pyHanko on its own: with only what the file carries (the DSS), no fetching, and
    # revocation information required for every certificate, both signatures hold.
    root = timestamps.load_roots([pki.root_pem.read_bytes()])
    reader = reading.open_pdf(issued)
    dss = DocumentSecurityStore.read_dss(reader)
    assert dss.ocsps, "no OCSP response embedded"
    for sig in reader.embedded_signatures:
        context = dss.as_validation_context(
            {"trust_roots": root, "allow_fetching": False, "revocation_mode": "require"}
        )
        status = validate_pdf_signature(sig, context)
        assert status.bottom_line, status.pretty_print_details()
        assert status.timestamp_validity is not None and status.timestamp_validity.trusted
        # The same check without the embedded responses fails: they are what makes it hold.
        bare = ValidationContext(
            trust_roots=root, allow_fetching=False, revocation_mode="require", ocsps=[], crls=[]
        )
        assert not validate_pdf_signature(sig, bare).trusted


def test_a_time_stamp_without_revocation_info_is_b_t(pki):
    _, issued = _sign_both(pki, tsa_url=pki.tsa_url, revocation="off")
    reports = pades.verify(issued, [pki.root_pem.read_bytes()])
    assert [r.level for r in reports] == ["B-T", "B-T"]
    assert all(r.intact and r.trusted and r.timestamp for r in reports)
    assert b"/DSS" not in issued


def test_without_a_tsa_the_level_is_b_b(pki):
    _, issued = _sign_both(pki)
    reports = pades.verify(issued, [pki.root_pem.read_bytes()])
    assert [(r.level, r.timestamp) for r in reports] == [("B-B", None), ("B-B", None)]


def test_each_placeholder_is_its_signature_and_a_small_margin(long_term, pki):
    # The placeholder is sized on pyHanko's dry run of the signature, plus PLACEHOLDER_MARGIN:
    # the zeros left over travel in every e-mail (pyHanko alone leaves half the signature's size:
    # 5.9 KB in each time-stamped signature of the seed letter).
    _, issued_long_term, _ = long_term
    _, issued_basic = _sign_both(pki)
    for issued in (issued_long_term, issued_basic):
        placeholders = re.findall(rb"/Contents\s*<([0-9a-fA-F]*)>", issued)
        assert len(placeholders) == 2
        for hexed in placeholders:
            unused = len(hexed) - len(hexed.rstrip(b"0"))
            # (a signature's own last digits may be zeros too; the agency's key is on a PKCS#11
            # token, whose dry run reserves 512 bytes for a 256-byte RSA signature)
            assert original.PLACEHOLDER_MARGIN <= unused <= original.PLACEHOLDER_MARGIN + 520
    assert [r.level for r in pades.verify(issued_basic, [pki.root_pem.read_bytes()])] == [
        "B-B",
        "B-B",
    ]


def test_pdfsig_reports_the_time_stamped_signatures_valid(long_term, rendered, tmp_path):
    _, issued, _ = long_term
    path = tmp_path / "cong-van-lt.pdf"
    path.write_bytes(issued)
    out = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True).stdout
    assert out.count("Signature Validation: Signature is Valid.") == 2, out
    bad = tmp_path / "bi-sua.pdf"
    data = bytearray(issued)
    data[len(rendered) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    out = subprocess.run(["pdfsig", str(bad)], capture_output=True, text=True).stdout
    assert "Signature is Valid." not in out, out
    assert all(not r.intact for r in pades.verify(bytes(data)))


def test_a_tsa_that_is_down_signs_nothing(pki, rendered, long_term):
    down = _closed_port_url()
    with (
        keys.open_signer(str(pki.leader.p12), PASSWORD) as signer,
        pytest.raises(pades.SigningError) as refused,
    ):
        original.approve(rendered, signer, image=None, evidence=Evidence(tsa_url=down))
    message = str(refused.value)
    assert "Không lấy được dấu thời gian" in message and down in message
    assert "Văn bản chưa được ký" in message
    # Issuing an approved letter with the TSA down leaves it as it was: approved, not issued.
    approved = long_term[0]
    with pytest.raises(pades.SigningError, match="Không lấy được dấu thời gian"):
        issue(
            pki,
            approved,
            seed_letter(NUMBER, DATE),
            key=str(pki.agency.p12),
            evidence=Evidence(tsa_url=down),
        )
    assert pades.signatures_in(approved) == [pades.APPROVAL_FIELD]


def test_a_revoked_certificate_is_refused_unless_revocation_is_off(tmp_path, rendered, monkeypatch):
    """A PKI and services of its own: revoking the session's leader would break other tests."""
    from tests.fixtures.pki import DemoServices, make_pki

    services = DemoServices.start()
    try:
        own = make_pki(tmp_path / "pki", services_url=services.url, token=False)
        services.attach(own)
        services.revoke(own.leader.cert.serial_number, AT)
        for mode in ("embed", "require"):
            with (
                keys.open_signer(str(own.leader.p12), PASSWORD) as signer,
                pytest.raises(pades.SigningError, match=r"đã bị thu hồi.*Văn bản chưa được ký"),
            ):
                original.approve(
                    rendered, signer, image=None,
                    evidence=Evidence(tsa_url=own.tsa_url, revocation=mode),
                )  # fmt: skip
        with keys.open_signer(str(own.leader.p12), PASSWORD) as signer:
            signed = original.approve(
                rendered, signer, image=None,
                evidence=Evidence(tsa_url=own.tsa_url, revocation="off"),
            )  # fmt: skip
        assert [r.level for r in pades.verify(signed, [own.root_pem.read_bytes()])] == ["B-T"]
    finally:
        services.stop()


def test_dispatch_verify_gives_level_and_time_stamp(long_term, pki, db_app, runner, tmp_path):
    _, issued, _ = long_term
    db_app.config["DISPATCH_TRUST_ROOTS"] = str(pki.root_pem)
    path = tmp_path / "cong-van.pdf"
    path.write_bytes(issued)
    data = json.loads(runner.invoke(args=["verify", str(path), "--json"]).output)
    signatures = data["signatures"]
    assert [s["level"] for s in signatures] == ["B-LT", "B-LT"]
    for sig in signatures:
        assert {"role", "name", "signed_at", "intact", "trusted", "changes_after"} <= set(sig)
        assert dt.datetime.fromisoformat(sig["timestamp"]).utcoffset() == dt.timedelta(hours=7)
    text = runner.invoke(args=["verify", str(path)]).output
    assert text.count("Mức chữ ký: PAdES B-LT") == 2, text
    stamped = dt.datetime.fromisoformat(signatures[0]["timestamp"])
    assert f"dấu thời gian lúc {stamped:%d/%m/%Y %H:%M:%S} (+07:00)" in text


def test_the_indexed_reader_reads_every_object_as_pyhanko_does(long_term):
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.reader import PdfFileReader

    issued = long_term[1]
    plain = PdfFileReader(io.BytesIO(issued), strict=False)
    indexed = reading.open_pdf(issued)
    compared = 0
    for number in range(1, int(plain.trailer["/Size"])):
        ours = indexed.get_object(generic.Reference(number, 0, indexed))
        theirs = plain.get_object(generic.Reference(number, 0, plain))
        if isinstance(theirs, generic.NullObject):
            assert isinstance(ours, generic.NullObject), number
            continue
        assert type(ours) is type(theirs) and ours == theirs, number
        compared += 1
    assert compared > 400  # the tagged letter's structure elements, most in object streams
    assert indexed._object_stream_index, "no object stream was indexed"


# --- The audit checkpoints -----------------------------------------------------------------


def _entries(count: int = 3) -> None:
    for index in range(count):
        audit.record(
            "test.step",
            actor="chuyenvien@thh.example",
            at=AT + dt.timedelta(minutes=index),
            object_type="test",
            object_id=index,
        )
    db.session.commit()


def _audit_verify(runner):
    db.session.commit()
    db.session.expire_all()
    return runner.invoke(args=["audit", "verify"])


def test_a_checkpoint_is_time_stamped_and_checked(db_app, runner, pki):
    db_app.config["DISPATCH_TSA_URL"] = pki.tsa_url
    db_app.config["DISPATCH_TRUST_ROOTS"] = str(pki.root_pem)
    _entries()
    written = runner.invoke(args=["audit", "checkpoint", "--at", "2021-11-15T17:00:00+07:00"])
    assert written.exit_code == 0, written.output
    assert "dấu thời gian RFC 3161" in written.output
    path = Path(db_app.config["DISPATCH_DATA_DIR"]) / audit.CHECKPOINT_DIR
    (checkpoint,) = path.iterdir()
    assert "rfc3161" in json.loads(checkpoint.read_text())

    result = _audit_verify(runner)
    assert result.exit_code == 0, result.output
    assert "Điểm neo mới nhất có dấu thời gian RFC 3161 lúc" in result.output
    assert f"{TSA_NAME} (chứng thư tin cậy)" in result.output

    # Whoever holds the audit key rewrites the checkpoint, MAC and all, keeping its token:
    # the token no longer matches what it covered.
    payload = json.loads(checkpoint.read_text())
    token = payload.pop("rfc3161")
    payload.pop("mac")
    next(iter(payload["lanes"].values()))["count"] += 1
    payload["mac"] = audit._mac(audit._checkpoint_body(payload))
    payload["rfc3161"] = token
    checkpoint.write_bytes(audit._checkpoint_body(payload))

    tampered = _audit_verify(runner)
    assert tampered.exit_code == 1, tampered.output
    assert "dấu thời gian RFC 3161 không khớp" in tampered.output
    assert "nội dung đã khác so với lúc đóng dấu thời gian" in tampered.output


def test_a_checkpoint_stripped_of_its_token_or_removed_is_reported(db_app, runner, pki):
    db_app.config["DISPATCH_TSA_URL"] = pki.tsa_url
    db_app.config["DISPATCH_TRUST_ROOTS"] = str(pki.root_pem)
    _entries()
    folder = Path(db_app.config["DISPATCH_DATA_DIR"]) / audit.CHECKPOINT_DIR
    for at in ("2021-11-15T17:00:00+07:00", "2021-11-16T17:00:00+07:00"):
        written = runner.invoke(args=["audit", "checkpoint", "--at", at])
        assert written.exit_code == 0, written.output
    first, second = sorted(folder.iterdir())
    assert _audit_verify(runner).exit_code == 0

    # Whoever holds the audit key takes the token off the first checkpoint (its MAC does not
    # cover the token) to rewrite it later without one: the log recorded it time-stamped.
    payload = json.loads(first.read_text())
    del payload["rfc3161"]
    first.write_bytes(audit._checkpoint_body(payload))
    stripped = _audit_verify(runner)
    assert stripped.exit_code == 1, stripped.output
    assert (
        f"{first.name}: dấu thời gian RFC 3161 ghi trong nhật ký đã bị gỡ hoặc thay khỏi tệp"
    ) in stripped.output

    # The second checkpoint's file is removed.
    second.unlink()
    removed = _audit_verify(runner)
    assert removed.exit_code == 1, removed.output
    assert f"{second.name}: tệp điểm neo đã ghi trong nhật ký không còn" in removed.output


def test_a_checkpoint_when_the_tsa_is_down_is_written_keyed_and_says_so(db_app, runner):
    down = _closed_port_url()
    db_app.config["DISPATCH_TSA_URL"] = down
    _entries(2)
    written = runner.invoke(args=["audit", "checkpoint", "--at", "2021-11-15T17:00:00+07:00"])
    assert written.exit_code == 1
    assert f"Không lấy được dấu thời gian từ máy chủ cấp dấu thời gian (TSA) {down}" in (
        written.output
    )
    (checkpoint,) = (Path(db_app.config["DISPATCH_DATA_DIR"]) / audit.CHECKPOINT_DIR).iterdir()
    assert "rfc3161" not in json.loads(checkpoint.read_text())
    assert _audit_verify(runner).exit_code == 0


def test_a_token_checked_against_other_bytes_is_not_intact(pki):
    token = timestamps.stamp(b"diem neo", pki.tsa_url)
    good = timestamps.check(token, b"diem neo", [pki.root_pem.read_bytes()])
    assert good.intact and good.trusted and good.tsa == TSA_NAME
    assert good.at_vietnam.endswith("+07:00")
    assert not timestamps.check(token, b"diem neo!", [pki.root_pem.read_bytes()]).intact
    untrusted = timestamps.check(token, b"diem neo")
    assert untrusted.intact and not untrusted.trusted


# --- The HTTP clients and the demo services ---------------------------------------------------


def _calls_of(monkeypatch, owner, name: str) -> list[int]:
    """A list that grows by one at each call of ``owner.name``, which still does its work."""
    calls: list[int] = []
    function = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_time_stamps_from_several_threads_share_one_tls_context_and_close_their_sessions(
    pki, rendered, monkeypatch
):
    # One client serves every signature of the process, from any thread, each request in its
    # own event loop on a session of its own, closed after it (an unclosed aiohttp session is a
    # ResourceWarning, an error here); the TLS context is built once for all of them, and for
    # the OCSP fetching of a B-LT signature too.
    made = _calls_of(monkeypatch, ssl, "create_default_context")
    roots = [pki.root_pem.read_bytes()]
    tokens: dict[int, bytes] = {}

    def request(n: int) -> None:
        tokens[n] = timestamps.stamp(f"điểm neo {n}".encode(), pki.tsa_url)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with keys.open_signer(str(pki.leader.p12), PASSWORD) as signer:
        signed = original.approve(
            rendered, signer, image=None, evidence=Evidence(tsa_url=pki.tsa_url)
        )
    gc.collect()

    assert sorted(tokens) == [0, 1, 2, 3]
    for n, token in tokens.items():
        checked = timestamps.check(token, f"điểm neo {n}".encode(), roots)
        assert checked.intact and checked.trusted
    assert [r.level for r in pades.verify(signed, roots)] == ["B-LT"]
    assert len(made) <= 1


def test_the_demo_services_parse_their_keys_once(pki, rendered, monkeypatch):
    # A real TSA or responder keeps its key loaded; certomancer alone parses it (and checks it,
    # tens of milliseconds) for every answer.
    from cryptography.hazmat.primitives import serialization

    parsed = _calls_of(monkeypatch, serialization, "load_der_private_key")
    for _ in range(3):
        with keys.open_signer(str(pki.leader.p12), PASSWORD) as signer:
            signed = original.approve(
                rendered, signer, image=None, evidence=Evidence(tsa_url=pki.tsa_url)
            )
        assert [r.level for r in pades.verify(signed, [pki.root_pem.read_bytes()])] == ["B-LT"]

    # Three signatures, each with a time-stamp and OCSP answers: the TSA's key and the root's
    # (which signs the OCSP answers) parsed at most once each, whatever came before.
    assert len(parsed) <= 2
