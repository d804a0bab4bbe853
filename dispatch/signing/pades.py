"""PAdES at the signature level, shared by the electronic original (``signing.original``, which
places the two signatures of a công văn in the order Decree 30 sets) and its verification.

- ``long_term_options`` and ``timestamper_for``: with a time-stamp authority each signature
  carries an RFC 3161 signature time-stamp (PAdES B-T); when the revocation information of the
  signer's and the TSA's certificates can be fetched (OCSP or CRL, from the addresses the
  certificates give), it is embedded in the document security store (DSS) right after the
  signature (PAdES B-LT), so the signature can be checked later without asking anyone.
- ``signing_failure``: why a signature could not be made, in Vietnamese.
- ``verify`` reads every signature back with pyHanko: whether the signed bytes are intact,
  whether the certificate chains to a trusted root, what changed after it (pyHanko's
  modification analysis), its PAdES level and the time its time-stamp vouches for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

APPROVAL_FIELD = "KyDuyet"  # the signer's signature field
ISSUANCE_FIELD = "BanHanh"  # the agency's
ROLES = {APPROVAL_FIELD: "signer", ISSUANCE_FIELD: "agency"}

# What to do about revocation information when signing with a time-stamp (DISPATCH_REVOCATION):
# "embed" what can be fetched (B-LT when it can, B-T otherwise), "require" it (refuse to sign
# without it), or leave it "off" (B-T).
REVOCATION_MODES = ("off", "embed", "require")


class SigningError(RuntimeError):
    """A PDF that cannot be signed as asked (Vietnamese message)."""


def long_term_options(signer, timestamper, revocation: str, trust_roots) -> dict:
    """PdfSignatureMetadata's arguments for embedding revocation information (B-LT).

    Only with a time-stamp: PAdES B-LT builds on B-T. The validation context fetches OCSP
    responses and CRLs from the addresses in the certificates; it trusts ``trust_roots`` or,
    without any, the self-signed root the key itself carries: at signing time the chain is only
    walked to know what to fetch, trust is judged by whoever verifies.
    """
    if revocation not in REVOCATION_MODES:
        raise SigningError(
            f"Chế độ thông tin thu hồi {revocation!r} không hợp lệ: "
            f"chọn một trong {', '.join(REVOCATION_MODES)}."
        )
    if timestamper is None or revocation == "off":
        return {}
    from pyhanko_certvalidator import ValidationContext

    from dispatch.signing.http import fetcher_backend
    from dispatch.signing.timestamps import load_roots

    roots = load_roots(trust_roots)
    if not roots:
        roots = [cert for cert in signer.cert_registry if cert.self_signed]
    if not roots:
        if revocation == "require":
            raise SigningError(
                "Không xác định được chứng thư gốc để lấy thông tin thu hồi: đặt "
                "DISPATCH_TRUST_ROOTS. Văn bản chưa được ký."
            )
        return {}  # no chain to walk: a time-stamp only (B-T)
    context = ValidationContext(
        trust_roots=roots,
        other_certs=list(signer.cert_registry),
        allow_fetching=True,
        fetcher_backend=fetcher_backend(),
        revocation_mode="require" if revocation == "require" else "soft-fail",
    )
    return {"embed_validation_info": True, "validation_context": context}


def signing_failure(exc: Exception, timestamper, revocation: str) -> SigningError:
    """A Vietnamese error for a signature that could not be made."""
    from pyhanko.sign.general import SigningError as PyHankoSigningError
    from pyhanko.sign.timestamps import TimestampRequestError
    from pyhanko_certvalidator.errors import InsufficientRevinfoError, RevokedError

    from dispatch.signing.timestamps import unavailable

    unsigned = "Văn bản chưa được ký."
    if _caused_by(exc, (RevokedError,)):
        return SigningError(f"Chứng thư của người ký đã bị thu hồi: {_cause(exc)}. {unsigned}")
    if timestamper is not None and _caused_by(exc, (TimestampRequestError, OSError)):
        return SigningError(f"{unavailable(timestamper.url, exc)}. {unsigned}")
    if revocation == "require" and _caused_by(exc, (InsufficientRevinfoError,)):
        return SigningError(
            "Không lấy được thông tin thu hồi chứng thư (OCSP/CRL) mà cấu hình "
            f"DISPATCH_REVOCATION=require đòi hỏi: {_cause(exc)}. {unsigned}"
        )
    if isinstance(exc, PyHankoSigningError):
        return SigningError(
            f"Chứng thư của người ký không kiểm tra được khi ký: {_cause(exc)}. {unsigned}"
        )
    return SigningError(f"Không ký được văn bản: {type(exc).__name__}: {exc}")


def _cause(exc: BaseException) -> str:
    """The innermost reason of a chain of exceptions."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _caused_by(exc: BaseException, kinds: tuple) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def read_trust_roots(path: str | None) -> list[bytes]:
    """The certificates of a PEM file (several may follow one another); none without a path."""
    from pathlib import Path

    if not path:
        return []
    text = Path(path).read_bytes()
    marker = b"-----END CERTIFICATE-----"
    return [part + marker for part in text.split(marker) if b"-----BEGIN" in part]


def evidence_options(config) -> dict:
    """``approve``'s and ``issue``'s time-stamp and revocation arguments from the settings:
    DISPATCH_TSA_URL, DISPATCH_REVOCATION and DISPATCH_TRUST_ROOTS."""
    return {
        "tsa_url": config.get("DISPATCH_TSA_URL") or None,
        "revocation": config.get("DISPATCH_REVOCATION") or "embed",
        "trust_roots": read_trust_roots(config.get("DISPATCH_TRUST_ROOTS")),
    }


def timestamper_for(url: str | None):
    """An RFC 3161 client for ``url`` (PAdES B-T), or None."""
    from dispatch.signing.timestamps import timestamper_for as client

    return client(url)


def signatures_in(pdf: bytes) -> list[str]:
    """The names of the filled signature fields, in signing order."""
    from dispatch.signing.reading import open_pdf

    reader = open_pdf(pdf)
    return [sig.field_name for sig in reader.embedded_signatures]


@dataclass(frozen=True)
class SignatureReport:
    role: str
    name: str
    signed_at: str | None
    intact: bool
    trusted: bool
    changes_after: str  # pyHanko's modification level: "none", "form_filling", "other", …
    report: str  # pyHanko's full validation summary, for the evidence package
    level: str = "B-B"  # the PAdES baseline level the signature reaches: "B-B", "B-T", "B-LT"
    timestamp: str | None = None  # the signature time-stamp's time, in Vietnam time

    def as_json(self) -> dict:
        data = asdict(self)
        data.pop("report")
        order = ("role", "name", "signed_at", "timestamp", "level", "intact", "trusted")
        return {name: data.pop(name) for name in order} | data


VIETNAM = dt.timezone(dt.timedelta(hours=7))


def verify(pdf: bytes, trust_roots: list[bytes] = ()) -> list[SignatureReport]:
    """Every signature of ``pdf``, validated; ``trust_roots`` are DER or PEM certificates.

    Nothing is fetched: trust is judged against ``trust_roots`` and what the file carries. One
    reader serves every signature, so the document's structure is analysed once.
    """
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    from dispatch.signing.reading import open_pdf
    from dispatch.signing.timestamps import load_roots

    roots = load_roots(trust_roots)
    reports = []
    try:
        reader = open_pdf(pdf)
        embedded = list(reader.embedded_signatures)
        revoked_info = _revocation_info_in(reader) if embedded else _RevocationInfo()
    except Exception as exc:  # a broken file is reported, not raised
        raise SigningError(f"Không đọc được tệp PDF: {type(exc).__name__}.") from exc
    for sig in embedded:
        context = ValidationContext(trust_roots=roots, allow_fetching=False)
        level, stamped_at = "B-B", None
        try:
            status = validate_pdf_signature(sig, context)
            intact = bool(status.intact and status.valid)
            trusted = bool(status.trusted)
            modified = status.modification_level
            changes = modified.name.lower() if modified is not None else "unknown"
            if status.docmdp_ok is False:
                changes = f"{changes} (not permitted)"
                intact = False
            summary = status.pretty_print_details()
            when = status.signer_reported_dt
            stamp = status.timestamp_validity
            if stamp is not None and stamp.intact and stamp.valid:
                level, stamped_at = "B-T", stamp.timestamp
                if revoked_info.covers(sig.signer_cert):
                    level = "B-LT"
            elif stamp is not None:
                intact = False  # a time-stamp token that does not match the signature
        except Exception as exc:
            intact, trusted, changes, summary, when = False, False, "unknown", repr(exc), None
        cert = sig.signer_cert
        reports.append(
            SignatureReport(
                role=ROLES.get(sig.field_name, "other"),
                name=cert.subject.native.get("common_name", cert.subject.human_friendly),
                signed_at=when.astimezone(VIETNAM).isoformat() if when else None,
                intact=intact,
                trusted=trusted,
                changes_after=changes,
                report=summary,
                level=level,
                timestamp=(
                    stamped_at.astimezone(VIETNAM).isoformat(timespec="seconds")
                    if stamped_at
                    else None
                ),
            )
        )
    return reports


@dataclass
class _RevocationInfo:
    """The revocation information a document's DSS holds: which certificates it speaks for."""

    # (hash algorithm, the issuer name's hash, serial number) of each OCSP response's subject
    ocsp: set[tuple[str, bytes, int]] = field(default_factory=set)
    crl_issuers: list = field(default_factory=list)  # asn1crypto Names

    def covers(self, cert) -> bool:
        for algorithm, name_hash, serial in self.ocsp:
            if serial == cert.serial_number and getattr(cert.issuer, algorithm) == name_hash:
                return True
        return any(issuer == cert.issuer for issuer in self.crl_issuers)


def _revocation_info_in(reader) -> _RevocationInfo:
    """What the document security store (DSS) carries: OCSP responses and CRLs (PAdES B-LT)."""
    from asn1crypto import crl, ocsp
    from pyhanko.pdf_utils.reader import DecodePurpose
    from pyhanko.sign.validation.dss import DocumentSecurityStore
    from pyhanko.sign.validation.errors import NoDSSFoundError

    info = _RevocationInfo()
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        return info
    for ref in dss.ocsps:
        response = ocsp.OCSPResponse.load(ref.get_object().read_data(DecodePurpose.OCSP_RESPONSE))
        if response["response_status"].native != "successful":
            continue
        basic = response["response_bytes"]["response"].parsed
        for single in basic["tbs_response_data"]["responses"]:
            cert_id = single["cert_id"]
            algorithm = cert_id["hash_algorithm"]["algorithm"].native
            if algorithm in ("sha1", "sha256"):
                info.ocsp.add(
                    (algorithm, cert_id["issuer_name_hash"].native, cert_id["serial_number"].native)
                )
    for ref in dss.crls:
        listing = crl.CertificateList.load(ref.get_object().read_data(DecodePurpose.CRL))
        info.crl_issuers.append(listing["tbs_cert_list"]["issuer"])
    return info
