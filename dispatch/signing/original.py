"""The electronic original at PDF level: the letter prepared for approval, the signer's and the
agency's signatures placed as Decree 30 (Phụ lục I, phần II) shows them, and the number and date
filled in at issuance without breaking the signer's signature.

How it is built, and why:

- ``render_for_approval`` lays the letter out as usual (PDF/A-3u) but leaves the number line
  ("Số: …") and the day line ("Hà Nội, ngày … tháng … năm …") undrawn (``visibility: hidden`` keeps
  their place in the layout). Two PDF text fields (``SoKyHieu``, ``NgayThang``) lie over those
  lines, each as wide as its header column and as high as the line. Their initial appearance
  prints the blank line exactly as a draft prints it, so the leader reads the usual draft. The
  renderer reports where WeasyPrint laid out those lines and the fixed-size empty signature box
  between the title and the name (``dispatch.letters.pdf.places_in``): no position is guessed.
  The signature box becomes the signer's empty signature field ``KyDuyet``. Each appendix's
  "(Kèm theo Công văn số … ngày …)" line, which may wrap, is hidden the same way under a
  multi-line text field (``KemTheo1``, …) whose initial appearance prints the draft's lines
  where WeasyPrint laid them out.
- The field text is set in the letter's own typeface: the shipped Liberation Serif face the line
  uses (regular for the number, italic for the date), embedded once in the form's default
  resources as a subset holding every digit and every character of both lines. WeasyPrint's own
  font subsets hold only the glyphs the page used, which need not include the digits of the
  number to come. Text is shaped with HarfBuzz like WeasyPrint's, kerning included, and set on
  the baseline WeasyPrint used, centred in the column as the CSS centres it, so the filled line
  looks as if printed.
- ``approve`` places the handwritten-signature image at its natural size, centred in the
  signature box, and lays out the agency's empty signature field ``BanHanh`` for the seal so that
  the seal's right edge falls on the first third of the signature image, then certifies the
  document (DocMDP level 2: form filling and signing allowed).
- ``issue`` fills the fields (new values and appearance streams: pyHanko's modification
  analysis calls this form filling, which the certification permits; the reference lines are
  broken and centred as the plain render of the issued letter breaks and centres them) and
  signs ``BanHanh`` with the seal, in one incremental update. Poppler's ``pdftotext`` reads
  widget appearances (found by experiment with poppler 22.12), so the number and the date
  extract with the page's text: no flattening into the page content (which DocMDP level 2
  forbids) is needed.
- ``sign_attachment`` stamps the number and symbol and the signing time in 10 pt Liberation Serif
  (Times New Roman metrics) at the top right of an attached PDF's first page and adds the
  agency's invisible signature.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import re
import unicodedata
from dataclasses import dataclass

from dispatch.letters import formatting
from dispatch.letters.pdf import (
    FONT_DIR,
    FONT_FILES,
    REFERENCE_PLACE,
    Place,
    render_with_places,
)
from dispatch.signing.pades import (
    APPROVAL_FIELD,
    ISSUANCE_FIELD,
    VIETNAM,
    SigningError,
    long_term_options,
    signatures_in,
    signing_failure,
    timestamper_for,
)

NUMBER_FIELD = "SoKyHieu"
DATE_FIELD = "NgayThang"
TEXT_FIELDS = (NUMBER_FIELD, DATE_FIELD)
# Each appendix's "(Kèm theo Công văn số … ngày …)" line: "KemTheo1", "KemTheo2", …
REFERENCE_FIELD = "KemTheo"
MULTILINE = 1 << 12  # the text field flag "Multiline" (ISO 32000-1, table 228)
# A reference line that no longer fits in the lines the draft gave it is set smaller, by this
# step, down to MIN_REFERENCE_SIZE (the page cannot reflow after the leader has signed).
SHRINK_STEP = 0.25
MIN_REFERENCE_SIZE = 8.0
NUMBER_PREFIX = "Số: "
DIGITS = "0123456789"
DEFAULT_DPI = 96
# The agency's seal field: a square as large as the largest usual office seal (42 mm); the seal
# image is drawn in it at its real size, right-aligned and centred vertically.
SEAL_FIELD = 42 / 25.4 * 72
# Where the attachment stamp goes: its right edge and first line's top, from the page's top right.
STAMP_MARGIN_RIGHT = 15 / 25.4 * 72
STAMP_MARGIN_TOP = 10 / 25.4 * 72
STAMP_SIZE = 10.0
# Room left in a signature's placeholder beyond the size of pyHanko's dry run of it, in hex
# digits (two a byte): 512 bytes. A real signature differs from its dry run only where a value's
# length may: an ECDSA signature's integers (a byte or two) and, from the same TSA, a time-stamp
# token's serial number, time and nonce (a few bytes); a PKCS#11 key's dry run reserves more
# than its RSA signature takes (512 bytes, 256 for 2,048 bits). pyHanko's own margin is half
# the whole signature, certificates included: 5.9 KB of zeros in each time-stamped signature of
# the seed letter, carried by every e-mail of it.
PLACEHOLDER_MARGIN = 1024


# --------------------------------------------------------------------------- text


@dataclass(frozen=True)
class _Shaped:
    glyphs: list[tuple[int, float]]  # (glyph id, adjustment in TJ units after the glyph)
    width: float  # in text space units at size 1 (em)


def _font_path(font: tuple[str, str]):
    return FONT_DIR / FONT_FILES[font]


@functools.cache
def _shaper(font: tuple[str, str]):
    """The shipped face as HarfBuzz shapes it, with its units per em and natural advances."""
    import uharfbuzz as hb
    from fontTools.ttLib import TTFont

    data = _font_path(font).read_bytes()
    face = hb.Face(data)
    with TTFont(io.BytesIO(data), lazy=True) as tt:
        metrics = tt["hmtx"].metrics
        advances = [metrics[name][0] for name in tt.getGlyphOrder()]
    return hb.Font(face), face.upem, advances


def _shape(font: tuple[str, str], text: str) -> _Shaped:
    """``text`` shaped by HarfBuzz with the shipped face (kerning on, as Pango does)."""
    import uharfbuzz as hb

    hb_font, units, advances = _shaper(font)
    buf = hb.Buffer()
    buf.add_str(text)
    buf.guess_segment_properties()
    hb.shape(hb_font, buf, {})
    glyphs = []
    total = 0
    for info, pos in zip(buf.glyph_infos, buf.glyph_positions, strict=True):
        glyphs.append((info.codepoint, (advances[info.codepoint] - pos.x_advance) * 1000 / units))
        total += pos.x_advance
    return _Shaped(glyphs, total / units)


def _break_lines(font: tuple[str, str], size: float, width: float, text: str) -> list[str]:
    """``text`` broken into lines no wider than ``width`` as the letter's stylesheet breaks a
    ``white-space: pre-wrap`` paragraph: at spaces only (the renderer joins a word to its "/"
    and "-"), as many words on a line as fit, the spaces after the last word kept and hanging."""
    words = re.findall(r"\s*\S+\s*", text)
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = current + word
        if current and _shape(font, candidate.rstrip()).width * size > width + 0.01:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current or not lines:
        lines.append(current)
    return lines


def _text_ops(resource: str, size: float, x: float, y: float, shaped: _Shaped) -> bytes:
    parts = []
    for gid, adjust in shaped.glyphs:
        parts.append(f"<{gid:04x}>")
        if abs(adjust) > 0.001:
            parts.append(f"{adjust:.3f}")
    return (f"BT {resource} {size:g} Tf 0 g {x:.3f} {y:.3f} Td [{' '.join(parts)}] TJ ET").encode()


@functools.cache
def _unhinted(font: tuple[str, str]) -> bytes:
    """The shipped face without its TrueType hinting (``fpgm``, ``prep``, ``cvt`` and each
    glyph's instructions), every glyph kept at its id: what the fields' subsets are cut from.
    Hinting only steers rasterising at small pixel sizes, which PDF viewers do without, and it
    was two thirds of each compressed subset (about 6 KB a face, three faces in every signed
    original and so in every e-mail)."""
    import logging

    from fontTools import subset
    from fontTools.ttLib import TTFont

    logging.getLogger("fontTools.subset").setLevel(logging.ERROR)
    options = subset.Options(
        hinting=False, retain_gids=True, layout_features=["*"], name_IDs=["*"], notdef_outline=True
    )
    with TTFont(_font_path(font)) as face:
        subsetter = subset.Subsetter(options)
        subsetter.populate(gids=range(len(face.getGlyphOrder())))
        subsetter.subset(face)
        out = io.BytesIO()
        face.save(out)
    return out.getvalue()


def _embed_font(writer, font: tuple[str, str], texts: list[str]):
    """A subset of the shipped face holding the glyphs of ``texts`` (each character shaped on its
    own too), as a Type 0 font with widths and a ToUnicode map; returns its reference."""
    import logging

    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.font.opentype import GlyphAccumulator
    from pyhanko.pdf_utils.generic import pdf_name

    # fontTools names each table it drops (FFTM, a FontForge timestamp): not our concern.
    logging.getLogger("fontTools.subset").setLevel(logging.ERROR)
    with io.BytesIO(_unhinted(font)) as handle:
        accumulator = GlyphAccumulator(writer, handle, 12)
        for text in texts:
            accumulator.shape(text, with_actual_text=False)
            for char in set(text):
                accumulator.shape(char, with_actual_text=False)
        accumulator.prepare_write()
        ref = accumulator.as_resource()
    # pyHanko writes the widths in font units; PDF wants thousandths of an em.
    descendant = ref.get_object()["/DescendantFonts"][0].get_object()
    scale = 1000 / accumulator.units_per_em
    descendant[pdf_name("/W")] = generic.ArrayObject(
        generic.ArrayObject(generic.FloatObject(round(float(w) * scale, 3)) for w in item)
        if isinstance(item, list)
        else item
        for item in descendant["/W"]
    )
    return ref


def _font_glyphs(font_ref) -> set[int]:
    """The glyph ids (CIDs) an embedded Type 0 font has widths for."""
    descendant = font_ref.get_object()["/DescendantFonts"][0].get_object()
    widths = list(descendant.get("/W", []))
    found: set[int] = set()
    i = 0
    while i < len(widths):
        first = int(widths[i])
        item = widths[i + 1]
        if isinstance(item, list):
            found.update(range(first, first + len(item)))
            i += 2
        else:
            found.update(range(first, int(item) + 1))
            i += 3
    return found


def _appearance(writer, font_ref, resource: str, place: Place, text: str, font) -> object:
    """A field appearance printing ``text`` centred in ``place`` on its baseline."""
    width = place.x2 - place.x1
    shaped = _shape(font, text)
    x = place.x1 + (width - shaped.width * place.font_size) / 2
    return _lines_appearance(
        writer, font_ref, resource, place, place.font_size, [(x, place.baseline, text)]
    )


def _lines_appearance(writer, font_ref, resource: str, place: Place, size: float, lines) -> object:
    """A field appearance printing each of ``lines`` (start x, baseline, text; page
    coordinates) in ``place.font`` at ``size``."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.generic import pdf_name

    width, height = place.x2 - place.x1, place.y2 - place.y1
    ops = [b"/Tx BMC q"]
    for x, baseline, text in lines:
        shaped = _shape(place.font, text)
        ops.append(_text_ops(resource, size, x - place.x1, baseline - place.y1, shaped))
    ops.append(b"Q EMC")
    stream = generic.StreamObject(
        {
            pdf_name("/Type"): pdf_name("/XObject"),
            pdf_name("/Subtype"): pdf_name("/Form"),
            pdf_name("/BBox"): generic.ArrayObject(
                [generic.FloatObject(v) for v in (0, 0, width, height)]
            ),
            pdf_name("/Resources"): generic.DictionaryObject(
                {pdf_name("/Font"): generic.DictionaryObject({pdf_name(resource): font_ref})}
            ),
        },
        stream_data=b" ".join(ops),
    )
    stream.compress()
    return writer.add_object(stream)


def _rect(x1: float, y1: float, x2: float, y2: float):
    from pyhanko.pdf_utils import generic

    return generic.ArrayObject([generic.FloatObject(round(v, 3)) for v in (x1, y1, x2, y2)])


# --------------------------------------------------------------------------- approval render


def render_for_approval(letter, **render_options) -> bytes:
    """The unissued letter as PDF/A-3u with empty text fields where the number line and the day
    line go, and the signer's empty signature field in the signature block."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.generic import pdf_name, pdf_string
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    rendered, places = render_with_places(letter, **render_options)
    writer = IncrementalPdfFileWriter(io.BytesIO(rendered), strict=False)
    symbol_chars = f"{NUMBER_PREFIX}{formatting.number_line(letter)}/{letter.symbol}"
    date_chars = f"{formatting.place_date_line(letter)} {letter.place}, ngày tháng năm"
    lines = {
        NUMBER_FIELD: (places["number"], formatting.number_line(letter), symbol_chars),
        DATE_FIELD: (places["place_date"], formatting.place_date_line(letter), date_chars),
    }
    references = [
        places[name]
        for number in range(1, len(places) + 1)
        if (name := REFERENCE_PLACE.format(number)) in places
    ]
    for place in references:
        if place.font != references[0].font or not place.lines:
            raise SigningError("Dòng “Kèm theo” của các phụ lục không cùng một kiểu chữ.")
    # One subset per face, shared by the fields set in it (the day line and the appendices'
    # lines are both italic): what each field prints now, what issuance will fill in, digits.
    texts: dict[tuple[str, str], list[str]] = {}
    for place, blank, chars in lines.values():
        texts.setdefault(place.font, []).extend([blank, chars + DIGITS])
    if references:
        texts.setdefault(references[0].font, []).extend(
            [text for place in references for _, _, text in place.lines]
            + [formatting.appendix_reference_line(letter) + DIGITS]
        )
    embedded = {
        font: (f"/DispatchF{index}", _embed_font(writer, font, font_texts))
        for index, (font, font_texts) in enumerate(texts.items(), start=1)
    }
    fonts = generic.DictionaryObject(
        {pdf_name(resource): font_ref for resource, font_ref in embedded.values()}
    )
    widgets = []
    for name, (place, blank, _) in lines.items():
        resource, font_ref = embedded[place.font]
        ap_ref = _appearance(writer, font_ref, resource, place, blank, place.font)
        widget = _text_widget(writer, name, place, resource, ap_ref)
        widgets.append((place.page, writer.add_object(widget)))
    for number, place in enumerate(references, start=1):
        resource, font_ref = embedded[place.font]
        widget = _text_widget(
            writer,
            f"{REFERENCE_FIELD}{number}",
            place,
            resource,
            _lines_appearance(writer, font_ref, resource, place, place.font_size, place.lines),
            flags=MULTILINE,
        )
        widgets.append((place.page, writer.add_object(widget)))
    signature = places["signature"]
    empty = generic.StreamObject(
        {
            pdf_name("/Type"): pdf_name("/XObject"),
            pdf_name("/Subtype"): pdf_name("/Form"),
            pdf_name("/BBox"): _rect(
                0, 0, signature.x2 - signature.x1, signature.y2 - signature.y1
            ),
        },
        stream_data=b"",
    )
    sig_widget = generic.DictionaryObject(
        {
            pdf_name("/Type"): pdf_name("/Annot"),
            pdf_name("/Subtype"): pdf_name("/Widget"),
            pdf_name("/FT"): pdf_name("/Sig"),
            pdf_name("/T"): pdf_string(APPROVAL_FIELD),
            pdf_name("/F"): generic.NumberObject(4),
            pdf_name("/P"): writer.find_page_for_modification(signature.page)[0],
            pdf_name("/Rect"): _rect(signature.x1, signature.y1, signature.x2, signature.y2),
            pdf_name("/AP"): generic.DictionaryObject({pdf_name("/N"): writer.add_object(empty)}),
        }
    )
    widgets.append((signature.page, writer.add_object(sig_widget)))
    for page_index in sorted({page for page, _ in widgets}):
        page_ref = writer.find_page_for_modification(page_index)[0]
        page = page_ref.get_object()
        annots = list(page.get("/Annots", generic.ArrayObject()))
        page[pdf_name("/Annots")] = generic.ArrayObject(
            annots + [ref for p, ref in widgets if p == page_index]
        )
        writer.update_container(page)
    root = writer.root
    root[pdf_name("/AcroForm")] = generic.DictionaryObject(
        {
            pdf_name("/Fields"): generic.ArrayObject([ref for _, ref in widgets]),
            pdf_name("/DR"): generic.DictionaryObject({pdf_name("/Font"): fonts}),
            pdf_name("/DA"): pdf_string("/DispatchF1 13 Tf 0 g"),
        }
    )
    writer.update_root()
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _text_widget(writer, name: str, place: Place, resource: str, ap_ref, flags: int = 0):
    """An empty, centred text field over ``place`` whose appearance is ``ap_ref``."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.generic import pdf_name, pdf_string

    widget = generic.DictionaryObject(
        {
            pdf_name("/Type"): pdf_name("/Annot"),
            pdf_name("/Subtype"): pdf_name("/Widget"),
            pdf_name("/FT"): pdf_name("/Tx"),
            pdf_name("/T"): pdf_string(name),
            pdf_name("/V"): pdf_string(""),
            pdf_name("/DA"): pdf_string(f"{resource} {place.font_size:g} Tf 0 g"),
            pdf_name("/Q"): generic.NumberObject(1),
            pdf_name("/F"): generic.NumberObject(4),  # print
            pdf_name("/P"): writer.find_page_for_modification(place.page)[0],
            pdf_name("/Rect"): _rect(place.x1, place.y1, place.x2, place.y2),
            pdf_name("/AP"): generic.DictionaryObject({pdf_name("/N"): ap_ref}),
        }
    )
    if flags:
        widget[pdf_name("/Ff")] = generic.NumberObject(flags)
    return widget


# --------------------------------------------------------------------------- fields read back


def _fields(reader_or_writer) -> dict[str, object]:
    """The form's top-level fields by name (references)."""
    root = reader_or_writer.root
    form = root.get("/AcroForm")
    if form is None:
        return {}
    form = form.get_object()
    return {str(ref.get_object().get("/T")): ref for ref in form.get("/Fields", [])}


def _rect_of(ref) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in ref.get_object()["/Rect"])


def _page_of(writer, ref) -> int:
    page = ref.get_object().raw_get("/P")
    for index in range(int(writer.root["/Pages"]["/Count"])):
        if writer.find_page_for_modification(index)[0].idnum == page.idnum:
            return index
    raise SigningError("Không tìm thấy trang của ô ký.")


def _image_size(image: bytes) -> tuple[float, float]:
    """The natural size of a PNG in points: its pixels at its own dpi, else at 96 dpi."""
    from PIL import Image

    picture = Image.open(io.BytesIO(image))
    dpi = picture.info.get("dpi", (DEFAULT_DPI, DEFAULT_DPI))
    xdpi = float(dpi[0]) or DEFAULT_DPI
    ydpi = float(dpi[1]) or DEFAULT_DPI
    return picture.width * 72 / xdpi, picture.height * 72 / ydpi


def _image_style(image: bytes, align_right: bool = False):
    """A pyHanko stamp style drawing ``image`` at its natural size, opaque, no border."""
    from PIL import Image
    from pyhanko.pdf_utils import layout
    from pyhanko.pdf_utils.images import PdfImage
    from pyhanko.stamp import StaticStampStyle

    width, height = _image_size(image)
    picture = Image.open(io.BytesIO(image))
    picture.load()
    if picture.mode not in ("RGBA", "RGB"):
        picture = picture.convert("RGBA")
    return StaticStampStyle(
        background=PdfImage(picture, box=layout.BoxConstraints(width, height)),
        border_width=0,
        background_opacity=1.0,
        background_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MAX
            if align_right
            else layout.AxisAlignment.ALIGN_MID,
            y_align=layout.AxisAlignment.ALIGN_MID,
            margins=layout.Margins.uniform(0),
            inner_content_scaling=layout.InnerScaling.NO_SCALING,
        ),
    )


class _SignerAt:
    """A pyHanko PdfSigner whose signing time is ``at`` instead of the machine's clock."""

    @staticmethod
    def make(meta, signer, *, at, **kwargs):
        from pyhanko.sign import signers

        # A PKCS#11 key's dry run reserves 512 bytes for its signature: enough for RSA keys of
        # up to 4,096 bits (and ECDSA); a larger key keeps pyHanko's own margin.
        key = signer.signing_cert.public_key
        dry_run_exact = not (key.algorithm == "rsa" and key.bit_size > 4096)

        class TimedPdfSigner(signers.PdfSigner):
            def init_signing_session(self, pdf_out, existing_fields_only=False):
                session = super().init_signing_session(pdf_out, existing_fields_only)
                if at is not None:
                    session.system_time = at.astimezone(VIETNAM)
                if not dry_run_exact:
                    return session
                exact = session.estimate_signature_container_size

                async def with_margin(validation_info, tight=False):
                    return await exact(validation_info, tight=True) + PLACEHOLDER_MARGIN

                session.estimate_signature_container_size = with_margin
                return session

        return TimedPdfSigner(meta, signer=signer, **kwargs)


@dataclass(frozen=True)
class Evidence:
    """What makes a signature last (PAdES B-T, B-LT): the RFC 3161 time-stamp authority, what to
    do about revocation information (``pades.REVOCATION_MODES``) and the roots to walk the
    chain to when fetching it. The default is neither (B-B)."""

    tsa_url: str | None = None
    revocation: str = "embed"
    trust_roots: tuple[bytes, ...] = ()

    @classmethod
    def from_config(cls, config) -> Evidence:
        """DISPATCH_TSA_URL, DISPATCH_REVOCATION and DISPATCH_TRUST_ROOTS."""
        from dispatch.signing.pades import evidence_options

        options = evidence_options(config)
        return cls(options["tsa_url"], options["revocation"], tuple(options["trust_roots"]))


def _sign(pdf_signer, writer, evidence: Evidence, **options) -> bytes:
    """``pdf_signer`` signs ``writer``'s document; a failure (TSA down, a revoked certificate)
    is a Vietnamese ``SigningError`` and nothing is written."""
    out = io.BytesIO()
    try:
        pdf_signer.sign_pdf(writer, output=out, **options)
    except Exception as exc:
        raise signing_failure(exc, pdf_signer.default_timestamper, evidence.revocation) from exc
    return out.getvalue()


def _sign_field(
    writer,
    field: str,
    signer,
    *,
    at: dt.datetime | None,
    evidence: Evidence,
    certify: bool = False,
    locks: bool = False,
    stamp_style=None,
    **options,
) -> bytes:
    """``signer`` signs ``field`` of ``writer``'s document, at ``at`` (None: now), time-stamped
    and with revocation information as ``evidence`` says; ``certify``, ``locks`` as for
    ``_metadata``, ``stamp_style`` the image drawn in the field; ``options`` go to pyHanko."""
    timestamper = timestamper_for(evidence.tsa_url)
    meta = _metadata(
        field,
        certify=certify,
        signer=signer,
        evidence=evidence,
        timestamper=timestamper,
        locks=locks,
    )
    pdf_signer = _SignerAt.make(
        meta, signer, at=at, timestamper=timestamper, stamp_style=stamp_style
    )
    return _sign(pdf_signer, writer, evidence, **options)


def _metadata(
    field: str, *, certify: bool, signer, evidence: Evidence, timestamper, locks: bool = False
):
    """``locks``: the signature's field lock forbids any change after it (the agency's).
    With a time-stamp, revocation information is embedded as ``evidence`` says (B-LT)."""
    from pyhanko.sign import fields, signers

    return signers.PdfSignatureMetadata(
        field_name=field,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        certify=certify,
        docmdp_permissions=fields.MDPPerm.NO_CHANGES if locks else fields.MDPPerm.FILL_FORMS,
        location="Việt Nam",
        use_pades_lta=False,
        **long_term_options(signer, timestamper, evidence.revocation, evidence.trust_roots),
    )


# --------------------------------------------------------------------------- approval


def approve(
    pdf: bytes,
    signer,
    *,
    image: bytes | None,
    at: dt.datetime | None = None,
    evidence: Evidence = Evidence(),
) -> bytes:
    """The signer's certification signature (ký duyệt) on a PDF from ``render_for_approval``,
    with the handwritten-signature image at its natural size in the signature block, and the
    agency's empty signature field where the seal goes; time-stamped and with revocation
    information as ``evidence`` says."""
    from pyhanko.pdf_utils.generic import pdf_name
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields

    if signatures_in(pdf):
        raise SigningError("Văn bản đã có chữ ký: không ký duyệt lại.")
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    found = _fields(writer)
    if APPROVAL_FIELD not in found or not all(name in found for name in TEXT_FIELDS):
        raise SigningError("Tệp này không phải bản công văn chuẩn bị để ký duyệt.")
    sig_ref = found[APPROVAL_FIELD]
    x1, y1, x2, y2 = _rect_of(sig_ref)
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    if image is not None:
        width, height = _image_size(image)
    else:
        width, height = 0.0, 0.0
    box = (centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2)
    widget = sig_ref.get_object()
    widget[pdf_name("/Rect")] = _rect(*box)
    widget.pop("/AP", None)
    writer.update_container(widget)
    # The seal's right edge on the first third of the signature image, centred on its height.
    seal_right = box[0] + width / 3 if image is not None else centre_x + SEAL_FIELD / 2
    seal_box = (
        seal_right - SEAL_FIELD,
        centre_y - SEAL_FIELD / 2,
        seal_right,
        centre_y + SEAL_FIELD / 2,
    )
    # The agency's field locks every field and the document once signed (FieldMDP, all
    # fields; DocMDP no changes): after issuance, a new number or date is a change its signature
    # does not permit, whatever the leader's certification allowed before.
    fields.append_signature_field(
        writer,
        fields.SigFieldSpec(
            ISSUANCE_FIELD,
            on_page=_page_of(writer, sig_ref),
            box=tuple(round(v, 3) for v in seal_box),
            field_mdp_spec=fields.FieldMDPSpec(fields.FieldMDPAction.ALL),
            doc_mdp_update_value=fields.MDPPerm.NO_CHANGES,
        ),
    )
    return _sign_field(
        writer,
        APPROVAL_FIELD,
        signer,
        at=at,
        evidence=evidence,
        certify=True,
        stamp_style=_image_style(image) if image is not None else None,
        existing_fields_only=True,
    )


# --------------------------------------------------------------------------- issuance


def printed_lines(letter) -> dict[str, str]:
    """What issuance fills in, as the numbered and dated ``letter`` prints it: ``issue``'s
    ``number_symbol``, ``place_date`` and ``reference`` (the appendices' "Kèm theo" line)."""
    return {
        "number_symbol": formatting.number_and_symbol(letter),
        "place_date": formatting.place_date_line(letter),
        "reference": formatting.appendix_reference_line(letter),
    }


def issue(
    approved: bytes,
    agency_signer,
    *,
    number_symbol: str,
    place_date: str,
    at: dt.datetime,
    seal: bytes | None,
    reference: str | None = None,
    evidence: Evidence = Evidence(),
) -> bytes:
    """Number and date filled in (form filling, permitted by the certification) and the agency's
    signature with the seal (ban hành), in one incremental update.

    ``reference`` is the appendices' "(Kèm theo Công văn số … ngày …)" line as the issued letter
    prints it (``formatting.appendix_reference_line``); required when the letter has
    appendices, whose reference fields it fills."""
    from pyhanko.pdf_utils.generic import pdf_name, pdf_string
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    signed = signatures_in(approved)  # read once: reading a signed PDF is not cheap
    if APPROVAL_FIELD not in signed:
        raise SigningError("Văn bản chưa được lãnh đạo ký duyệt.")
    if ISSUANCE_FIELD in signed:
        raise SigningError("Văn bản đã được ban hành.")
    writer = IncrementalPdfFileWriter(io.BytesIO(approved), strict=False)
    found = _fields(writer)
    if not all(name in found for name in TEXT_FIELDS):
        raise SigningError("Văn bản không có ô số, ký hiệu và ngày tháng để điền.")
    fonts = writer.root["/AcroForm"]["/DR"]["/Font"]
    values = {NUMBER_FIELD: NUMBER_PREFIX + number_symbol, DATE_FIELD: place_date}
    for name, text in values.items():
        ref = found[name]
        widget = ref.get_object()
        if str(widget.get("/V", "")):
            raise SigningError("Số, ký hiệu và ngày tháng đã được điền.")
        resource = str(widget["/DA"]).split()[0]
        font_ref = fonts.raw_get(pdf_name(resource))
        x1, y1, x2, y2 = _rect_of(ref)
        size = float(str(widget["/DA"]).split()[1])
        font = _font_of(font_ref)
        baseline = _baseline_of(widget, y1)
        place = Place(0, x1, y1, x2, y2, baseline, size, font)
        shaped = _shape(font, text)
        missing = {gid for gid, _ in shaped.glyphs} - _font_glyphs(font_ref)
        if missing:
            raise SigningError(f"Phông chữ của ô {name} không có đủ ký tự để in “{text}”.")
        ap_ref = _appearance(writer, font_ref, resource, place, text, font)
        widget[pdf_name("/V")] = pdf_string(text)
        widget[pdf_name("/AP")][pdf_name("/N")] = ap_ref
        writer.update_container(widget)
    references = sorted(
        (name for name in found if re.fullmatch(rf"{REFERENCE_FIELD}\d+", name)),
        key=lambda name: int(name[len(REFERENCE_FIELD) :]),
    )
    if references and not reference:
        raise SigningError("Thiếu dòng “Kèm theo Công văn số …” để điền vào các phụ lục.")
    for name in references:
        _fill_reference(writer, fonts, found[name], unicodedata.normalize("NFC", reference))
    return _sign_field(
        writer,
        ISSUANCE_FIELD,
        agency_signer,
        at=at,
        evidence=evidence,
        locks=True,
        stamp_style=_image_style(seal, align_right=True) if seal is not None else None,
        existing_fields_only=True,
    )


def _fill_reference(writer, fonts, ref, text: str) -> None:
    """An appendix's reference field filled with ``text``: broken into lines as the plain
    render breaks it, each centred in the field on the baselines the draft's lines used, set
    smaller only if it no longer fits in as many lines."""
    from pyhanko.pdf_utils.generic import pdf_name, pdf_string

    widget = ref.get_object()
    if str(widget.get("/V", "")):
        raise SigningError("Dòng “Kèm theo” của phụ lục đã được điền.")
    resource, size = str(widget["/DA"]).split()[0], float(str(widget["/DA"]).split()[1])
    font_ref = fonts.raw_get(pdf_name(resource))
    font = _font_of(font_ref)
    x1, y1, x2, y2 = _rect_of(ref)
    width = x2 - x1
    baselines = _baselines_of(widget, y1)
    missing = {gid for gid, _ in _shape(font, text).glyphs} - _font_glyphs(font_ref)
    if missing:
        raise SigningError(f"Phông chữ của dòng “Kèm theo” không có đủ ký tự để in “{text}”.")
    lines = _break_lines(font, size, width, text)
    while len(lines) > len(baselines) and size - SHRINK_STEP >= MIN_REFERENCE_SIZE:
        size -= SHRINK_STEP
        lines = _break_lines(font, size, width, text)
    if len(lines) > len(baselines):
        raise SigningError(f"Dòng “Kèm theo” không vừa chỗ dành cho nó: «{text}».")
    placed = [
        (x1 + max(0.0, (width - _shape(font, line).width * size) / 2), baseline, line)
        for line, baseline in zip(lines, baselines, strict=False)
    ]
    place = Place(0, x1, y1, x2, y2, baselines[0], size, font)
    ap_ref = _lines_appearance(writer, font_ref, resource, place, size, placed)
    widget[pdf_name("/V")] = pdf_string(text)
    widget[pdf_name("/AP")][pdf_name("/N")] = ap_ref
    writer.update_container(widget)


def _font_of(font_ref) -> tuple[str, str]:
    """Which shipped face an embedded field font is, by its PostScript name."""
    descendant = font_ref.get_object()["/DescendantFonts"][0].get_object()
    name = str(descendant["/BaseFont"]).lstrip("/").split("+")[-1]
    for key, _file in FONT_FILES.items():
        weight, style = key
        expected = (
            "LiberationSerif"
            + {
                ("normal", "normal"): "",
                ("bold", "normal"): "-Bold",
                ("normal", "italic"): "-Italic",
                ("bold", "italic"): "-BoldItalic",
            }[key]
        )
        if name == expected:
            return (weight, style)
    raise SigningError(f"Ô điền số/ngày dùng phông chữ lạ: {name}.")


def _baseline_of(widget, y1: float) -> float:
    """The baseline the field's current appearance prints on (set at approval render)."""
    return _baselines_of(widget, y1)[0]


def _baselines_of(widget, y1: float) -> list[float]:
    """The baselines of the lines the field's current appearance prints (set at approval
    render), top to bottom."""
    stream = widget["/AP"]["/N"].get_object()
    found = re.findall(rb"Tf 0 g [-\d.]+ ([-\d.]+) Td", stream.data)
    if not found:
        raise SigningError("Không đọc được vị trí dòng của ô điền số/ngày.")
    return [y1 + float(y) for y in found]


# --------------------------------------------------------------------------- attachments


def sign_attachment(
    pdf: bytes,
    agency_signer,
    *,
    number_symbol: str,
    at: dt.datetime,
    evidence: Evidence = Evidence(),
) -> bytes:
    """An attached PDF with the letter's number and symbol and the signing time stamped at the
    top right of its first page, and the agency's signature without an image."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.generic import pdf_name
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    page_ref = writer.find_page_for_modification(0)[0]
    page = page_ref.get_object()
    box = [float(v) for v in page.get("/CropBox", page["/MediaBox"])]
    when = at.astimezone(VIETNAM).replace(microsecond=0).isoformat()
    lines = [number_symbol, when]
    font = ("normal", "normal")
    font_ref = _embed_font(writer, font, lines)
    resource = "/DispatchStamp"
    right = box[2] - STAMP_MARGIN_RIGHT
    baseline = box[3] - STAMP_MARGIN_TOP - STAMP_SIZE
    ops = [b"q"]
    for index, line in enumerate(lines):
        shaped = _shape(font, line)
        x = right - shaped.width * STAMP_SIZE
        y = baseline - index * STAMP_SIZE * 1.2
        ops.append(_text_ops(resource, STAMP_SIZE, x, y, shaped))
    ops.append(b"Q")
    resources = generic.DictionaryObject(
        {pdf_name("/Font"): generic.DictionaryObject({pdf_name(resource): font_ref})}
    )
    if "/Contents" not in page:  # a page with nothing drawn on it (pyHanko expects contents)
        page[pdf_name("/Contents")] = writer.add_object(generic.StreamObject(stream_data=b""))
        writer.update_container(page)
    # The page's own content may leave its transformation changed: fence it in q … Q first.
    writer.add_stream_to_page(
        0, writer.add_object(generic.StreamObject(stream_data=b"q")), prepend=True
    )
    stream = generic.StreamObject(stream_data=b"Q\n" + b"\n".join(ops))
    stream.compress()
    writer.add_stream_to_page(0, writer.add_object(stream), resources=resources)
    return _sign_field(writer, ISSUANCE_FIELD, agency_signer, at=at, evidence=evidence)
