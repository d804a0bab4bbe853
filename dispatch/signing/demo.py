"""A DEMO public-key infrastructure made with ``cryptography``, for the tests, the benchmarks and
the development server: a root CA named "DEMO", a leader's and the agency's certificates as
PKCS#12 files, the agency's key on a SoftHSM2 token (PKCS#11) when SoftHSM2 is installed, and a
time-stamping certificate (extended key usage timeStamping) for the demo TSA.

Made with ``services_url``, every certificate it issues names ``{services_url}/ocsp`` as its OCSP
responder (Authority Information Access): ``dispatch.signing.demo_services`` serves that
responder and the RFC 3161 TSA (``{services_url}/tsa``) from this same root, so a signature made
with the demo keys can be time-stamped (PAdES B-T) and carry its revocation information (B-LT).

Nothing made here is trusted by anyone else: its certificates say DEMO (common name "… (DEMO)",
organisation unit "DEMO – không dùng cho văn bản thật") and must never sign a real letter. RSA
key generation and token set-up are slow: make it once and share it."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PASSWORD = "mat-khau-demo"  # the demo PKCS#12 password and token PIN
NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2040, 1, 1, tzinfo=dt.UTC)


# Every certificate made here says DEMO where a reader of a signature looks first: its common
# name (the name verifiers show) ends with DEMO_MARK, its organisation and unit say DEMO.
DEMO_MARK = " (DEMO)"
DEMO_UNIT = "DEMO – không dùng cho văn bản thật"
DEMO_ORGANISATION = "Cục Tin học hoá" + DEMO_MARK
ROOT_NAME = "Dispatch Root CA" + DEMO_MARK
LEADER_NAME = "Trần Văn Lãnh Đạo" + DEMO_MARK
AGENCY_NAME = "Cục Tin học hoá" + DEMO_MARK
TSA_NAME = "Dispatch TSA" + DEMO_MARK


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEMO_ORGANISATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, DEMO_UNIT),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


@dataclass(frozen=True)
class Identity:
    name: str
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    p12: Path


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    root_pem: Path
    leader: Identity
    agency: Identity
    token_dir: Path | None  # SOFTHSM2_CONF's folder when the token is set up
    agency_uri: str | None
    tsa: Identity | None = None  # the demo TSA's time-stamping certificate
    root_key: rsa.RSAPrivateKey | None = None  # signs the demo OCSP responses
    services_url: str | None = None  # where the demo OCSP responder and TSA answer

    @property
    def tsa_url(self) -> str | None:
        return f"{self.services_url}/tsa" if self.services_url else None

    @property
    def ocsp_url(self) -> str | None:
        return f"{self.services_url}/ocsp" if self.services_url else None


def _issue(
    common: str,
    issuer_key,
    issuer_name: x509.Name,
    *,
    ca: bool = False,
    usage=ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ocsp_url: str | None = None,
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(issuer_name if issuer_key is not None else _name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        # RFC 3161 §2.3: a TSA's certificate has timeStamping as its only, critical, usage.
        time_stamping = usage == ExtendedKeyUsageOID.TIME_STAMPING
        builder = builder.add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), True
        ).add_extension(x509.ExtendedKeyUsage([usage]), time_stamping)
    if ocsp_url and not ca:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(ocsp_url),
                    )
                ]
            ),
            False,
        )
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def make_pki(folder: Path, services_url: str | None = None, *, token: bool = True) -> Pki:
    """The demo PKI under ``folder``; with ``services_url`` (e.g. ``http://127.0.0.1:8091``)
    its certificates name that server's ``/ocsp`` as their OCSP responder. ``token=False``
    leaves the SoftHSM2 token out (a second PKI in one process must: the PKCS#11 library,
    once loaded, sees every token labelled "Dispatch")."""
    folder.mkdir(parents=True, exist_ok=True)
    services_url = services_url.rstrip("/") if services_url else None
    ocsp_url = f"{services_url}/ocsp" if services_url else None
    root_key, root = _issue(ROOT_NAME, None, None, ca=True)
    root_pem = folder / "root.pem"
    root_pem.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    identities = {}
    for role, common, usage in (
        ("leader", LEADER_NAME, ExtendedKeyUsageOID.EMAIL_PROTECTION),
        ("agency", AGENCY_NAME, ExtendedKeyUsageOID.EMAIL_PROTECTION),
        ("tsa", TSA_NAME, ExtendedKeyUsageOID.TIME_STAMPING),
    ):
        key, cert = _issue(common, root_key, root.subject, usage=usage, ocsp_url=ocsp_url)
        p12 = folder / f"{role}.p12"
        p12.write_bytes(
            pkcs12.serialize_key_and_certificates(
                common.encode(),
                key,
                cert,
                [root],
                serialization.BestAvailableEncryption(PASSWORD.encode()),
            )
        )
        identities[role] = Identity(common, key, cert, p12)
    token_dir, uri = (
        _softhsm_token(folder / "softhsm", identities["agency"]) if token else (None, None)
    )
    return Pki(
        root,
        root_pem,
        identities["leader"],
        identities["agency"],
        token_dir,
        uri,
        tsa=identities["tsa"],
        root_key=root_key,
        services_url=services_url,
    )


def _softhsm_token(folder: Path, identity: Identity) -> tuple[Path | None, str | None]:
    """A SoftHSM2 token labelled "Dispatch" holding the agency's key and certificate."""
    if not SOFTHSM_MODULE.is_file() or not shutil.which("softhsm2-util"):
        return None, None
    import pkcs11
    from pkcs11 import Attribute, CertificateType, ObjectClass

    tokens = folder / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    os.environ["SOFTHSM2_CONF"] = str(conf)  # the library reads it when first loaded
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "Dispatch",
         "--so-pin", PASSWORD, "--pin", PASSWORD],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    key_pem = folder / "agency-key.pem"
    key_pem.write_bytes(
        identity.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    subprocess.run(
        ["softhsm2-util", "--import", str(key_pem), "--token", "Dispatch",
         "--label", "agency", "--id", "01", "--pin", PASSWORD],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    key_pem.unlink()
    lib = pkcs11.lib(str(SOFTHSM_MODULE))
    token = lib.get_token(token_label="Dispatch")
    with token.open(rw=True, user_pin=PASSWORD) as session:
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True,
                Attribute.LABEL: "agency",
                Attribute.ID: b"\x01",
                Attribute.SUBJECT: identity.cert.subject.public_bytes(),
                Attribute.ISSUER: identity.cert.issuer.public_bytes(),
                Attribute.VALUE: identity.cert.public_bytes(serialization.Encoding.DER),
            }
        )
    uri = f"pkcs11:token=Dispatch;object=agency?module-path={SOFTHSM_MODULE}"
    return folder, uri


# --------------------------------------------------------------------------- demo images

SEAL_DPI = 300
SEAL_DIAMETER_MM = 38  # a usual round office seal
SIGNATURE_DPI = 96
RED = (255, 0, 0, 255)
BLUE = (0, 40, 160, 255)


def _png(image, dpi: int) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="PNG", dpi=(dpi, dpi))
    return out.getvalue()


def _label_font(size: int):
    from PIL import ImageFont

    from dispatch.letters.pdf import FONT_DIR, FONT_FILES

    return ImageFont.truetype(str(FONT_DIR / FONT_FILES[("bold", "normal")]), size)


def seal_png() -> bytes:
    """A DEMO seal: two red (255, 0, 0) rings, "DEMO" and the demo agency's name on a
    transparent background, 38 mm across at 300 dpi (its real size)."""
    from PIL import Image, ImageDraw

    side = round(SEAL_DIAMETER_MM / 25.4 * SEAL_DPI)
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, side - 5, side - 5), outline=RED, width=12)
    draw.ellipse((70, 70, side - 71, side - 71), outline=RED, width=5)
    draw.text((side / 2, side / 2), "DEMO", fill=RED, font=_label_font(110), anchor="mm")
    draw.text((side / 2, side / 2 + 95), "KHÔNG DÙNG THẬT", fill=RED,
              font=_label_font(34), anchor="mm")  # fmt: skip
    draw.text((side / 2, 130), "CỤC TIN HỌC HOÁ", fill=RED, font=_label_font(40), anchor="mm")
    # Pure red only: anti-aliasing goes into the alpha channel, never into the colour.
    alpha = image.getchannel("A")
    solid = Image.new("RGBA", image.size, RED)
    solid.putalpha(alpha)
    return _png(solid, SEAL_DPI)


def signature_png() -> bytes:
    """A DEMO handwritten signature: a blue stroke and "DEMO" on a transparent background,
    190 × 80 px at 96 dpi (about 50 × 21 mm)."""
    import math

    from PIL import Image, ImageDraw

    width, height = 190, 80
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    points = [(10 + t * 1.7, 48 - 22 * math.sin(t / 9) * math.exp(-t / 160)) for t in range(0, 100)]
    draw.line(points, fill=BLUE, width=3, joint="curve")
    draw.line([(20, 66), (175, 58)], fill=BLUE, width=2)
    draw.text((150, 30), "DEMO", fill=BLUE, font=_label_font(16), anchor="mm")
    return _png(image, SIGNATURE_DPI)
