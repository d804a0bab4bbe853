"""Opening a signing key from its reference: a PKCS#12 file or a ``pkcs11:`` URI.

``pkcs11:token=Dispatch;object=agency?module-path=/usr/lib/softhsm/libsofthsm2.so`` names the
token by label, the key and certificate by their label (``object``) and the PKCS#11 library by
``module-path``; the PIN is the password given alongside, never part of the URI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote


class SigningKeyError(RuntimeError):
    """A key that cannot be opened; the message is Vietnamese and names no secret."""


@dataclass(frozen=True)
class Pkcs11Reference:
    module_path: str
    token_label: str
    object_label: str


def is_pkcs11(reference: str) -> bool:
    return reference.startswith("pkcs11:")


def parse_pkcs11(reference: str) -> Pkcs11Reference:
    """The library, token label and object label of a ``pkcs11:`` URI."""
    body = reference[len("pkcs11:") :]
    path_part, _, query = body.partition("?")
    attributes = {}
    for pair in filter(None, path_part.split(";")):
        name, _, value = pair.partition("=")
        attributes[name] = unquote(value)
    options = dict(parse_qsl(query))
    if "pin-value" in options:
        raise SigningKeyError("Không ghi mã PIN trong URI pkcs11: hãy đưa qua biến môi trường.")
    missing = [
        label
        for label, value in (
            ("token", attributes.get("token")),
            ("object", attributes.get("object")),
            ("module-path", options.get("module-path")),
        )
        if not value
    ]
    if missing:
        raise SigningKeyError(f"URI pkcs11 thiếu: {', '.join(missing)}.")
    return Pkcs11Reference(options["module-path"], attributes["token"], attributes["object"])


@contextlib.contextmanager
def open_signer(reference: str, password: str | None) -> Iterator[object]:
    """A pyHanko signer for the key ``reference`` names, open for the ``with`` block."""
    if is_pkcs11(reference):
        from pyhanko.config.pkcs11 import TokenCriteria
        from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session

        where = parse_pkcs11(reference)
        if not Path(where.module_path).is_file():
            raise SigningKeyError(f"Không tìm thấy thư viện PKCS#11 {where.module_path}.")
        try:
            session = open_pkcs11_session(
                where.module_path,
                token_criteria=TokenCriteria(label=where.token_label),
                user_pin=password,
            )
        except Exception as exc:  # python-pkcs11 raises many kinds; the PIN is not in them
            raise SigningKeyError(
                f"Không mở được token {where.token_label!r}: {type(exc).__name__}."
            ) from exc
        try:
            signer = PKCS11Signer(
                session, cert_label=where.object_label, key_label=where.object_label
            )
            try:
                signer.signing_cert  # noqa: B018 - loads the certificate now, to fail here
            except Exception as exc:
                raise SigningKeyError(
                    f"Token {where.token_label!r} không có khoá/chứng thư "
                    f"{where.object_label!r}: {type(exc).__name__}."
                ) from exc
            yield signer
        finally:
            session.close()
        return
    path = Path(reference)
    if not path.is_file():
        raise SigningKeyError(f"Không tìm thấy tệp khoá {reference}.")
    yield _pkcs12_signer(path, password)


def _pkcs12_signer(path: Path, password: str | None):
    """A pyHanko in-memory signer for the PKCS#12 file at ``path``, its private key kept parsed.

    What ``SimpleSigner.load_pkcs12`` does (the key, its certificate and the file's other
    certificates, the chain, as the signer's registry), except that the key ``cryptography``
    loaded from the file, checks included, signs: pyHanko keeps only its DER and parses it again,
    checking an RSA key anew (tens of milliseconds for 2048 bits), for every signature, and a PDF
    signature signs twice (a dry run sizes the signature's placeholder). RSA PKCS#1 v1.5 is
    signed with the kept key; any other mechanism goes to pyHanko's own method.
    """
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import pkcs12
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore
    from pyhanko_certvalidator.util import get_pyca_cryptography_hash

    refused = f"Không mở được tệp PKCS#12 {path.name}: sai mật khẩu hoặc tệp hỏng."
    try:
        key, cert, others = pkcs12.load_key_and_certificates(
            path.read_bytes(), password.encode("utf-8") if password else None
        )
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(refused) from exc
    if key is None or cert is None:
        raise SigningKeyError(refused)

    def asn1_cert(certificate):
        return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))

    class KeptKeySigner(signers.SimpleSigner):
        def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
            mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
            try:
                algorithm = mechanism.signature_algo
            except ValueError:
                algorithm = mechanism["algorithm"].native
            if algorithm == "rsassa_pkcs1v15" and isinstance(key, RSAPrivateKey):
                hash_algorithm = get_pyca_cryptography_hash(digest_algorithm)
                return key.sign(data, PKCS1v15(), hash_algorithm)
            return super().sign_raw(data, digest_algorithm)

    registry = SimpleCertificateStore()
    registry.register_multiple([asn1_cert(other) for other in others])
    private = asn1_keys.PrivateKeyInfo.load(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return KeptKeySigner(signing_cert=asn1_cert(cert), signing_key=private, cert_registry=registry)


def describe(reference: str, password: str | None) -> str:
    """The subject of the key's certificate, after opening it (checks key and password)."""
    with open_signer(reference, password) as signer:
        return signer.signing_cert.subject.human_friendly


def check_signature_image(data: bytes) -> tuple[int, int]:
    """The pixel size of a handwritten-signature image: a PNG with a transparent background."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise SigningKeyError("Ảnh chữ ký không đọc được: cần một tệp PNG.") from exc
    if image.format != "PNG":
        raise SigningKeyError(f"Ảnh chữ ký phải là PNG (tệp này là {image.format}).")
    if "A" not in image.getbands() and "transparency" not in image.info:
        raise SigningKeyError("Ảnh chữ ký phải có nền trong suốt (PNG có kênh alpha).")
    return image.size


def set_signing_key(
    user,
    reference: str,
    *,
    password_env: str | None,
    environ,
    image: bytes | None,
    actor: str,
    at,
) -> str:
    """Give a leader a signing key (and optionally the image of their handwritten signature).

    The key is opened first with the password from ``environ[password_env]``, so a wrong path,
    URI or password is refused now rather than at signing time. Only the reference and the
    variable's name are kept; audited with the certificate's subject. Returns that subject.
    """
    from dispatch import audit
    from dispatch.models import Role

    if user.role is not Role.LEADER:
        raise SigningKeyError(f"{user.email} không phải lãnh đạo: chỉ lãnh đạo ký duyệt.")
    password = None
    if password_env:
        if password_env not in environ:
            raise SigningKeyError(f"Biến môi trường {password_env} chưa được đặt.")
        password = environ[password_env]
    subject = describe(reference, password)
    size = check_signature_image(image) if image is not None else None
    user.signing_key = reference
    user.signing_password_env = password_env or None
    if image is not None:
        user.signature_image = image
    audit.record(
        "user.signing_key_set",
        actor=actor,
        at=at,
        object_type="user",
        object_id=user.id,
        details={
            "email": user.email,
            "kind": "pkcs11" if is_pkcs11(reference) else "pkcs12",
            "certificate": subject,
            "image": f"{size[0]}x{size[1]}" if size else None,
        },
    )
    return subject
