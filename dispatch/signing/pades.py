"""The two PAdES signatures of an electronic công văn, in the order Decree 30 sets, and their
verification.

1. ``approve``: the signer's (ký duyệt) certification signature, with the image of their
   handwritten signature; its DocMDP permissions allow form filling and later signatures, so the
   agency's signature added at issuance does not break it.
2. ``issue``: the agency's (ban hành) approval signature with the seal image.

``verify`` reads every signature back with pyHanko: whether the signed bytes are intact, whether
the certificate chains to a trusted root, and what changed after it (pyHanko's modification
analysis).
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import asdict, dataclass

APPROVAL_FIELD = "KyDuyet"  # the signer's signature field
ISSUANCE_FIELD = "BanHanh"  # the agency's
ROLES = {APPROVAL_FIELD: "signer", ISSUANCE_FIELD: "agency"}


class SigningError(RuntimeError):
    """A PDF that cannot be signed as asked (Vietnamese message)."""


@dataclass(frozen=True)
class Box:
    """Where a signature's image goes: page index (-1 = last) and a box in PDF points."""

    page: int
    x1: float
    y1: float
    x2: float
    y2: float


def _stamp(image: bytes | None):
    from PIL import Image
    from pyhanko.pdf_utils.images import PdfImage
    from pyhanko.stamp import StaticStampStyle

    if image is None:
        return None
    return StaticStampStyle(background=PdfImage(Image.open(io.BytesIO(image))), border_width=0)


def _page_index(pdf: bytes, page: int) -> int:
    from pyhanko.pdf_utils.reader import PdfFileReader

    if page >= 0:
        return page
    reader = PdfFileReader(io.BytesIO(pdf))
    count = int(reader.root["/Pages"]["/Count"])
    return count + page


def _sign(
    pdf: bytes,
    signer,
    *,
    field: str,
    certify: bool,
    image: bytes | None,
    box: Box | None,
    timestamper=None,
    name: str | None = None,
    later: tuple[str, Box | None] | None = None,
) -> bytes:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    if not certify:
        # Signing into the empty field laid out before the certification: a new field after
        # it would be a change the certification does not permit.
        spec = None
    elif box is not None:
        spec = fields.SigFieldSpec(
            field,
            on_page=_page_index(pdf, box.page),
            box=(int(box.x1), int(box.y1), int(box.x2), int(box.y2)),
        )
    else:
        spec = fields.SigFieldSpec(field)
    if later is not None:
        later_field, later_box = later
        fields.append_signature_field(
            writer,
            fields.SigFieldSpec(
                later_field,
                on_page=_page_index(pdf, later_box.page) if later_box else 0,
                box=(
                    (int(later_box.x1), int(later_box.y1), int(later_box.x2), int(later_box.y2))
                    if later_box
                    else None
                ),
            ),
        )
    meta = signers.PdfSignatureMetadata(
        field_name=field,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        certify=certify,
        docmdp_permissions=fields.MDPPerm.FILL_FORMS,
        name=name,
        location="Việt Nam",
        use_pades_lta=False,
    )
    pdf_signer = signers.PdfSigner(
        meta,
        signer=signer,
        timestamper=timestamper,
        stamp_style=_stamp(image),
        new_field_spec=spec,
    )
    out = io.BytesIO()
    pdf_signer.sign_pdf(writer, output=out)
    return out.getvalue()


def timestamper_for(url: str | None):
    """An RFC 3161 client for ``url`` (PAdES B-T), or None."""
    if not url:
        return None
    from pyhanko.sign.timestamps import HTTPTimeStamper

    return HTTPTimeStamper(url)


def approve(
    pdf: bytes,
    signer,
    *,
    image: bytes | None,
    box: Box | None,
    seal_box: Box | None = None,
    tsa_url: str | None = None,
) -> bytes:
    """The signer's certification signature on the rendered letter (ký duyệt).

    The agency's empty signature field (where the seal will go, ``seal_box``) is laid out in
    the same revision, before the certification, so that issuance only fills it in.
    """
    if signatures_in(pdf):
        raise SigningError("Văn bản đã có chữ ký: không ký duyệt lại.")
    return _sign(
        pdf,
        signer,
        field=APPROVAL_FIELD,
        certify=True,
        image=image,
        box=box,
        timestamper=timestamper_for(tsa_url),
        later=(ISSUANCE_FIELD, seal_box),
    )


def issue(pdf: bytes, signer, *, seal: bytes | None, tsa_url: str | None = None) -> bytes:
    """The agency's signature (ban hành) after the signer's; refuses an unapproved PDF."""
    if APPROVAL_FIELD not in signatures_in(pdf):
        raise SigningError("Văn bản chưa được lãnh đạo ký duyệt.")
    return _sign(
        pdf,
        signer,
        field=ISSUANCE_FIELD,
        certify=False,
        image=seal,
        box=None,
        timestamper=timestamper_for(tsa_url),
    )


def signatures_in(pdf: bytes) -> list[str]:
    """The names of the filled signature fields, in signing order."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
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

    def as_json(self) -> dict:
        data = asdict(self)
        data.pop("report")
        return data


VIETNAM = dt.timezone(dt.timedelta(hours=7))


def verify(pdf: bytes, trust_roots: list[bytes] = ()) -> list[SignatureReport]:
    """Every signature of ``pdf``, validated; ``trust_roots`` are DER or PEM certificates."""
    from asn1crypto import pem, x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    roots = []
    for data in trust_roots:
        if pem.detect(data):
            _, _, data = pem.unarmor(data)
        roots.append(x509.Certificate.load(data))
    reports = []
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        embedded = list(reader.embedded_signatures)
    except Exception as exc:  # a broken file is reported, not raised
        raise SigningError(f"Không đọc được tệp PDF: {type(exc).__name__}.") from exc
    for sig in embedded:
        context = ValidationContext(trust_roots=roots, allow_fetching=False)
        try:
            status = validate_pdf_signature(sig, context)
            intact = bool(status.intact and status.valid)
            trusted = bool(status.trusted)
            level = status.modification_level
            changes = level.name.lower() if level is not None else "unknown"
            if status.docmdp_ok is False:
                changes = f"{changes} (not permitted)"
                intact = False
            summary = status.pretty_print_details()
            when = status.signer_reported_dt
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
            )
        )
    return reports
