"""The electronic original's PDF mechanics, in the order Decree 30 sets (Appendix I, part II):
render the letter for approval, the signer's signature (ký duyệt), then at issuance the number
and date and the agency's signature with its seal (ban hành); and the agency's signature on
each PDF sent with the letter.

Provisional bodies built on ``pades`` and ``letters.pdf``: the number/date fields are filled by
the real implementation (``render_for_approval`` lays them out as empty form fields, ``issue``
fills them in an incremental update the signer's certification permits, ``sign_attachment``
adds the text stamp). The workflow (``dispatch.drafting.approval``, ``dispatch.issuing``)
calls only this interface.
"""

from __future__ import annotations

import datetime
import io

from dispatch.signing import pades

# Where the signer's image and the agency's seal go on the last page, in PDF points (provisional:
# the real implementation places them in the signature block from the rendered layout).
SIGNATURE_BOX = pades.Box(-1, 330, 300, 480, 360)
SEAL_BOX = pades.Box(-1, 290, 280, 410, 400)


def render_for_approval(letter, **render_options) -> bytes:
    """The letter's PDF as the leader reads and signs it: number and date still blank."""
    from dispatch.letters.pdf import render_pdf

    return render_pdf(letter, **render_options)


def approve(pdf: bytes, signer, *, image: bytes | None) -> bytes:
    """The signer's certification signature, with the image of their handwritten signature."""
    return pades.approve(
        pdf,
        signer,
        image=image,
        box=SIGNATURE_BOX if image is not None else None,
        seal_box=SEAL_BOX,
    )


def issue(
    approved: bytes,
    agency_signer,
    *,
    number_symbol: str,
    place_date: str,
    at: datetime.datetime,
    seal: bytes | None,
    tsa_url: str | None = None,
) -> bytes:
    """The agency's signature with the seal on the approved PDF (ban hành)."""
    return pades.issue(approved, agency_signer, seal=seal, tsa_url=tsa_url)


def sign_attachment(
    pdf: bytes,
    agency_signer,
    *,
    number_symbol: str,
    at: datetime.datetime,
    tsa_url: str | None = None,
) -> bytes:
    """The agency's signature, without an image, on a PDF sent with the letter."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    except Exception as exc:  # pyHanko raises several kinds for a file it cannot read
        raise pades.SigningError(
            f"Không ký được tệp gửi kèm: tệp PDF không đọc được ({type(exc).__name__})."
        ) from exc
    meta = signers.PdfSignatureMetadata(
        field_name=pades.ISSUANCE_FIELD,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        location="Việt Nam",
    )
    out = io.BytesIO()
    signers.PdfSigner(
        meta,
        signer=agency_signer,
        timestamper=pades.timestamper_for(tsa_url),
        new_field_spec=fields.SigFieldSpec(pades.ISSUANCE_FIELD),
    ).sign_pdf(writer, output=out)
    return out.getvalue()
