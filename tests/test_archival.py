"""Every PDF Dispatch prints is archival: PDF/A-3u, tagged, with XMP metadata and an output
intent, all fonts embedded, no JavaScript, no encryption (Decree 30 keeps electronic documents in
an archival format)."""

from __future__ import annotations

import datetime as dt
import io
import unicodedata

from pypdf import PdfReader

from dispatch.letters.pdf import render_pdf
from tests.letter_samples import seed_letter

ISSUED = dict(number=4321, date=dt.date(2021, 11, 15))


def archival_facts(data: bytes) -> tuple[PdfReader, str]:
    """The reader and the XMP packet, after checking what every archival PDF must have."""
    reader = PdfReader(io.BytesIO(data))
    assert not reader.is_encrypted
    root = reader.trailer["/Root"]
    xmp = root["/Metadata"].get_object().get_data().decode("utf-8")
    assert 'pdfaid:part="3"' in xmp
    assert 'pdfaid:conformance="U"' in xmp
    assert root["/Lang"] == "vi"
    intents = root["/OutputIntents"]
    assert intents[0].get_object()["/S"] == "/GTS_PDFA1"
    assert "/DestOutputProfile" in intents[0].get_object()
    text = data.decode("latin-1")
    assert "/JavaScript" not in text and "/JS " not in text
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            if "/DescendantFonts" in font:
                font = font["/DescendantFonts"][0].get_object()
            descriptor = font["/FontDescriptor"].get_object()
            assert any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3"))
    return reader, xmp


def test_letter_is_tagged_pdf_a_3u_with_metadata():
    letter = seed_letter(**ISSUED)
    reader, xmp = archival_facts(render_pdf(letter))
    assert " ".join(unicodedata.normalize("NFC", letter.subject).split()) in xmp
    assert letter.issuing_agency in xmp
    assert "2021-11-15T00:00:00+07:00" in xmp
    assert "/StructTreeRoot" in reader.trailer["/Root"]  # tagged


def test_draft_has_no_creation_date_yet():
    _, xmp = archival_facts(render_pdf(seed_letter()))
    assert "CreateDate" not in xmp


def test_same_letter_prints_to_the_same_bytes():
    assert render_pdf(seed_letter(**ISSUED)) == render_pdf(seed_letter(**ISSUED))
