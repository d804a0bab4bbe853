"""Signing keys: PKCS#12 files and a PKCS#11 token (SoftHSM2), a leader's key given from the
command line, and no secret in the database or the audit log."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from sqlalchemy import select

from dispatch.extensions import db
from dispatch.models import AuditEntry, User
from dispatch.signing import keys
from tests.fixtures.database import SEED_AT
from tests.fixtures.pki import PASSWORD

LEADER = "lanhdao@thh.example"


def _png(mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (120, 60), (0, 0, 255, 0) if mode == "RGBA" else (255, 255, 255)).save(
        out, format="PNG"
    )
    return out.getvalue()


def test_pkcs12_opens_with_its_password_only(pki):
    assert "Trần Văn Lãnh Đạo (DEMO)" in keys.describe(str(pki.leader.p12), PASSWORD)
    with pytest.raises(keys.SigningKeyError, match="sai mật khẩu") as wrong:
        keys.describe(str(pki.leader.p12), "sai")
    assert "sai" not in str(wrong.value).replace("sai mật khẩu", "")
    with pytest.raises(keys.SigningKeyError, match="Không tìm thấy tệp khoá"):
        keys.describe(str(pki.leader.p12) + ".missing", PASSWORD)


def test_pkcs12_signer_signs_as_pyhanko_does_and_verifies(pki):
    # The key is kept as loaded from the file; the raw signatures are pyHanko's own, byte for byte
    # (RSA PKCS#1 v1.5 is deterministic), and verify with the certificate's public key.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from pyhanko.sign import signers

    reference = signers.SimpleSigner.load_pkcs12(str(pki.leader.p12), passphrase=PASSWORD.encode())
    data = "Công văn số 4321/THH-VP".encode()
    with keys.open_signer(str(pki.leader.p12), PASSWORD) as signer:
        first, second = signer.sign_raw(data, "sha256"), signer.sign_raw(data, "sha512")
    assert first == reference.sign_raw(data, "sha256")
    assert second == reference.sign_raw(data, "sha512")
    public = pki.leader.cert.public_key()
    public.verify(first, data, PKCS1v15(), hashes.SHA256())
    public.verify(second, data, PKCS1v15(), hashes.SHA512())


def test_pkcs11_token_key_and_certificate(pki):
    if pki.agency_uri is None:
        pytest.fail("SoftHSM2 is not installed (scripts/system-deps.sh installs it)")
    assert "Cục Tin học hoá" in keys.describe(pki.agency_uri, PASSWORD)
    with pytest.raises(keys.SigningKeyError, match="Không mở được token"):
        keys.describe(pki.agency_uri, "000000")
    with pytest.raises(keys.SigningKeyError, match="không có khoá"):
        keys.describe(pki.agency_uri.replace("object=agency", "object=khong-co"), PASSWORD)


def test_pkcs11_uri_must_not_carry_the_pin():
    with pytest.raises(keys.SigningKeyError, match="PIN"):
        keys.parse_pkcs11("pkcs11:token=T;object=o?module-path=/x.so&pin-value=1234")
    with pytest.raises(keys.SigningKeyError, match="module-path"):
        keys.parse_pkcs11("pkcs11:token=T;object=o")


def test_signature_image_must_be_a_transparent_png():
    assert keys.check_signature_image(_png()) == (120, 60)
    with pytest.raises(keys.SigningKeyError, match="trong suốt"):
        keys.check_signature_image(_png("RGB"))
    with pytest.raises(keys.SigningKeyError, match="PNG"):
        keys.check_signature_image(b"not an image")


def test_users_signing_key_command(seeded, runner, pki, tmp_path, monkeypatch):
    from dispatch.accounts import users
    from dispatch.models import Role

    users.create_user(LEADER, role=Role.LEADER, password=None, at=SEED_AT, actor="system")
    db.session.commit()
    image = tmp_path / "chu-ky.png"
    image.write_bytes(_png())
    monkeypatch.setenv("LEADER_KEY_PASSWORD", PASSWORD)
    result = runner.invoke(
        args=["users", "signing-key", LEADER, str(pki.leader.p12), "--image", str(image),
              "--password-env", "LEADER_KEY_PASSWORD"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Trần Văn Lãnh Đạo" in result.output
    user = db.session.scalars(select(User).where(User.email == LEADER)).one()
    assert user.signing_key == str(pki.leader.p12)
    assert user.signing_password_env == "LEADER_KEY_PASSWORD"
    assert user.signature_image == image.read_bytes()
    event = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "user.signing_key_set")
    ).one()
    assert PASSWORD not in json.dumps(event.details)
    assert event.details["kind"] == "pkcs12" and event.details["image"] == "120x60"

    wrong = runner.invoke(
        args=["users", "signing-key", LEADER, str(pki.leader.p12), "--password-env", "KHONG_CO"]
    )
    assert wrong.exit_code != 0 and "KHONG_CO" in wrong.output
    clerk = runner.invoke(
        args=["users", "signing-key", "chuyenvien@thh.example", str(pki.leader.p12),
              "--password-env", "LEADER_KEY_PASSWORD"],
    )  # fmt: skip
    assert clerk.exit_code != 0 and "không phải lãnh đạo" in clerk.output


def test_every_demo_certificate_says_demo(pki):
    from cryptography.x509.oid import NameOID

    certificates = {
        "root": pki.root,
        "leader": pki.leader.cert,
        "agency": pki.agency.cert,
        "tsa": pki.tsa.cert,
    }
    for role, cert in certificates.items():
        subject = cert.subject
        common = subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        unit = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        assert common.endswith(" (DEMO)"), (role, common)
        assert unit == "DEMO – không dùng cho văn bản thật", (role, unit)
    # What a verifier shows is the common name: it says DEMO.
    assert "(DEMO)" in keys.describe(str(pki.leader.p12), PASSWORD)
