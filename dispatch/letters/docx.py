"""The letter as a Word document (DOCX): a pure function from the document model to bytes.

Layout follows Decree 30 (Nghị định 30/2020/NĐ-CP, its Appendix I) with the decree's sample
values; the words around the text come from ``dispatch.letters.formatting`` so that the PDF and
the DOCX say the same thing. Everything is built from named paragraph styles so that a clerk who
opens the file in Word or LibreOffice finds "Letter Body", "Signer Name" and so on, not ad-hoc
formatting. The same letter always gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docx import Document
from docx.document import Document as DocxDocument
from docx.enum.section import WD_ORIENT, WD_SECTION
from docx.enum.style import WD_STYLE_TYPE
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH, WD_TAB_ALIGNMENT
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.section import Section
from docx.shared import Cm, Length, Mm, Pt
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph
from docx.text.run import Run

from dispatch.clock import VN
from dispatch.letters import formatting
from dispatch.letters.model import Appendix, Block, BlockKind, Letter, Span

FONT = "Times New Roman"
LANGUAGE = "vi-VN"


# Page: A4 portrait with the decree's sample margins.
PAGE_WIDTH, PAGE_HEIGHT = Mm(210), Mm(297)
MARGIN_TOP, MARGIN_BOTTOM, MARGIN_LEFT, MARGIN_RIGHT = Mm(20), Mm(20), Mm(30), Mm(15)
# The page number sits inside the top margin: 10 mm from the edge, a 13 pt line ends ~15 mm.
HEADER_DISTANCE = Mm(10)
FOOTER_DISTANCE = Mm(10)
TEXT_WIDTH = Mm(210 - 30 - 15)

# The header table is about 45/55 %. "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in 12 pt bold is
# 88.3 mm wide and "BỘ THÔNG TIN VÀ TRUYỀN THÔNG" in 12 pt 71.1 mm, so 73.9 + 91.1 mm keeps
# each on one line (as the PDF does); every paragraph keeps 1 mm off the middle of the table
# so that the two columns' texts never touch.
HEADER_COLUMNS = (Mm(73.9), Mm(91.1))
COLUMN_GAP = Mm(1)
SIGNATURE_COLUMNS = (Mm(74.25), Mm(90.75))

# The rule under the issuing agency is 40 % of the name's width (the decree wants 1/3–1/2);
# the motto's rule is exactly as long as the motto.
AGENCY_RULE_FRACTION = 0.4
APPENDIX_RULE_WIDTH = Mm(40)
RULE_SIZE_EIGHTHS = 5  # a 0.6 pt line, as in the PDF

BODY_INDENT = Cm(1.27)
BODY_SPACE_AFTER = Pt(6)
# Word's "single" line for Times New Roman is 1.15 em; 1.09 of it is the PDF's 1.25 em.
BODY_LINE_SPACING = 1.09
# Vertical room left for the handwritten or image signature and the seal.
SIGNATURE_SPACE = Mm(25)
TABLE_FONT_SIZE = 13  # pt
TABLE_CELL_PADDING = Pt(4)
# A space of 0.25 em (at 14 pt) between "Kính gửi:" and the addressees' dashes.
ADDRESSEE_GAP = Pt(3.5)

# Deterministic timestamps: drafts have no date, so they get a fixed one.
DRAFT_EPOCH = dt.datetime(2020, 1, 1, 0, 0, 0)

# Hyphens inside document numbers ("1015/TTg-KGVX") and compound words ("vắc-xin") must not
# end a line; Word and LibreOffice print a ``w:noBreakHyphen`` as "-" and extract it as "-".
UNBREAKABLE = re.compile(r"\w+(?:[/\-]\w+)+")

# The shipped Liberation Serif faces have Times New Roman's metrics: measuring with them tells
# how wide a line will be in Word and in LibreOffice.
FONT_DIR = Path(__file__).resolve().parent / "fonts"
FONT_FILES = {
    (False, False): "LiberationSerif-Regular.ttf",
    (True, False): "LiberationSerif-Bold.ttf",
    (False, True): "LiberationSerif-Italic.ttf",
    (True, True): "LiberationSerif-BoldItalic.ttf",
}


@dataclass(frozen=True)
class _StyleSpec:
    """How one named paragraph style looks."""

    name: str
    size: float
    bold: bool = False
    italic: bool = False
    align: WD_ALIGN_PARAGRAPH = WD_ALIGN_PARAGRAPH.CENTER
    before: float = 0
    after: float = 0
    first_line: Length | None = None
    keep_with_next: bool = False
    # Word's "single" is 1.15 em for Times New Roman; 1.04 of it is the PDF's 1.2 em.
    line_spacing: float = 1.04


_BODY = {
    "size": 14,
    "align": WD_ALIGN_PARAGRAPH.JUSTIFY,
    "after": 6,
    "first_line": BODY_INDENT,
    "line_spacing": BODY_LINE_SPACING,
}

STYLES = (
    _StyleSpec("Header Agency", 12),
    _StyleSpec("Issuing Agency", 12, bold=True),
    _StyleSpec("Header Rule", 2),
    _StyleSpec("Number", 13, before=6),
    _StyleSpec("Subject", 12, before=6, line_spacing=1.0),
    _StyleSpec("Urgency", 13, bold=True, before=8),
    _StyleSpec("National Title", 12, bold=True),
    _StyleSpec("Motto", 13, bold=True),
    _StyleSpec("Place Date", 13, italic=True, before=6),
    _StyleSpec("Addressee", 14, align=WD_ALIGN_PARAGRAPH.LEFT),
    _StyleSpec("Letter Body", **_BODY),
    _StyleSpec("Letter Item", **_BODY),
    _StyleSpec(
        "Letter Heading",
        **{**_BODY, "align": WD_ALIGN_PARAGRAPH.LEFT},
        bold=True,
        keep_with_next=True,
    ),
    _StyleSpec(
        "Table Text", 13, align=WD_ALIGN_PARAGRAPH.LEFT, before=2, after=2, line_spacing=1.0
    ),
    _StyleSpec("Table Heading", 13, bold=True, before=2, after=2, line_spacing=1.0),
    _StyleSpec("Signer Title", 14, bold=True, keep_with_next=True),
    _StyleSpec("Signer Name", 14, bold=True),
    _StyleSpec("Distribution Heading", 12, bold=True, italic=True, align=WD_ALIGN_PARAGRAPH.LEFT),
    _StyleSpec("Distribution", 11, align=WD_ALIGN_PARAGRAPH.LEFT, line_spacing=1.0),
    _StyleSpec("Appendix Heading", 14, bold=True, keep_with_next=True),
    _StyleSpec("Appendix Title", 14, bold=True, keep_with_next=True),
    _StyleSpec("Appendix Reference", 14, italic=True, keep_with_next=True),
    _StyleSpec("Page Number", 13),
    # Carries section breaks and the space after a table: 1 pt, so it never adds a page.
    _StyleSpec("Section End", 1, align=WD_ALIGN_PARAGRAPH.LEFT, line_spacing=1.0),
)

_STYLE_IDS = {spec.name: spec.name.replace(" ", "") for spec in STYLES} | {
    "Table Grid": "TableGrid"
}


def render_docx(letter: Letter) -> bytes:
    """The letter as DOCX bytes: page 1 header, body, signature, each appendix in a section."""
    document = Document(io.BytesIO(_template()))
    _describe(document, letter)
    _record_case(document, letter)
    _set_up_section(document.sections[0], restart_numbering=False)

    _add_header_table(document, letter)
    _add_addressees(document, letter)
    _add_blocks(document, letter.body)
    _add_signature_table(document, letter)

    for appendix in letter.appendices:
        section = document.add_section(WD_SECTION.NEW_PAGE)
        # python-docx carries the break on a new empty paragraph: make it too small to matter.
        document.element.body[-2].style = _STYLE_IDS["Section End"]
        _set_up_section(section, restart_numbering=True)
        _add_appendix(document, letter, appendix)
    if document.element.body[-2].tag == qn("w:tbl"):
        # Word wants a paragraph between a final table and the end of the document.
        _paragraph(document, "Section End")

    buffer = io.BytesIO()
    document.save(buffer)
    return _normalise_zip(buffer.getvalue(), _timestamp(letter))


# --- text -------------------------------------------------------------------------------------


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _append_text(run: Run, text: str) -> None:
    """Append ``text`` to ``run``, hyphens inside numbers and compound words unbreakable."""
    position = 0
    for match in UNBREAKABLE.finditer(text):
        if match.start() > position:
            run.add_text(text[position : match.start()])
        for i, part in enumerate(match.group().split("-")):
            if i:
                run._r.append(OxmlElement("w:noBreakHyphen"))
            if part:
                run.add_text(part)
        position = match.end()
    if position < len(text):
        run.add_text(text[position:])


def _add_text(paragraph: Paragraph, text: str, bold: bool = False, italic: bool = False) -> Run:
    """Append ``text`` as one run (line breaks become ``w:br``); emphasis only when asked."""
    run = paragraph.add_run()
    for i, line in enumerate(_nfc(text).split("\n")):
        if i:
            run.add_break()
        _append_text(run, line)
    # Unset rather than False, so a bold style (a heading) stays bold.
    if bold:
        run.bold = True
    if italic:
        run.italic = True
    return run


def _add_spans(paragraph: Paragraph, spans: Iterable[Span]) -> None:
    for span in spans:
        _add_text(paragraph, span.text, bold=span.bold, italic=span.italic)


def _paragraph(container: Any, style: str, text: str = "") -> Paragraph:
    """A paragraph at the end of ``container`` (document, cell, header) with ``style``."""
    paragraph = container.add_paragraph()
    # By id: python-docx's lookup by name scans every style of the document for each call.
    paragraph._p.style = _STYLE_IDS[style]
    if text:
        _add_text(paragraph, text)
    return paragraph


@functools.cache
def _advances(bold: bool, italic: bool) -> tuple[dict[int, int], int]:
    """Glyph advances by code point of one shipped face, and its units per em."""
    from fontTools.ttLib import TTFont

    with TTFont(FONT_DIR / FONT_FILES[(bold, italic)], lazy=True) as font:
        metrics = font["hmtx"].metrics
        advances = {code: metrics[glyph][0] for code, glyph in font.getBestCmap().items()}
        return advances, font["head"].unitsPerEm


def text_width(text: str, size: float, bold: bool = False, italic: bool = False) -> Length:
    """How wide ``text`` is on one line in Times New Roman at ``size`` pt (no kerning)."""
    advances, units = _advances(bold, italic)
    fallback = advances.get(ord("n"), units // 2)
    total = sum(advances.get(ord(char), fallback) for char in _nfc(text))
    return Length(round(Pt(size) * total / units))


# --- document set-up --------------------------------------------------------------------------


@functools.cache
def _template() -> bytes:
    """The empty document every letter starts from: styles, language, settings.

    Built once per process: python-docx's own template parses slowly (it holds ~160 styles).
    """
    document = Document()
    _prune_styles(document)
    _strip_theme_fonts(document)
    defaults = document.styles.element.find(qn("w:docDefaults"))
    _set_run_properties(defaults.find(qn("w:rPrDefault")).find(qn("w:rPr")), size=14)
    spacing = defaults.find(qn("w:pPrDefault")).find(qn("w:pPr")).find(qn("w:spacing"))
    # The template's 10 pt after and 1.15 lines would leak into every paragraph.
    spacing.set(qn("w:after"), "0")
    spacing.set(qn("w:line"), "240")
    spacing.set(qn("w:lineRule"), "auto")

    normal = document.styles["Normal"]
    _set_run_properties(normal.element.get_or_add_rPr(), size=14)
    normal.paragraph_format.space_before = Pt(0)
    normal.paragraph_format.space_after = Pt(0)
    normal.paragraph_format.line_spacing = 1.0
    normal.paragraph_format.widow_control = True
    for spec in STYLES:
        _define_style(document, spec)
    # Tables take their fonts from the table style before the paragraph style.
    _set_run_properties(document.styles["Table Grid"].element.get_or_add_rPr(), size=None)

    settings = document.settings.element
    for setting in settings.iter(qn("w:compatSetting")):
        if setting.get(qn("w:name")) == "compatibilityMode":
            # Word 2013 layout: a table's border, not its text, lines up with the margin.
            setting.set(qn("w:val"), "15")
    theme_lang = settings.find(qn("w:themeFontLang"))
    if theme_lang is not None:
        theme_lang.set(qn("w:val"), LANGUAGE)
        theme_lang.set(qn("w:eastAsia"), LANGUAGE)
    _drop_thumbnail(document)
    _drop_unused_parts(document)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _describe(document: DocxDocument, letter: Letter) -> None:
    """Core properties: title, author, language, and dates that make the bytes repeatable."""
    properties = document.core_properties
    moment = _timestamp(letter)
    number = formatting.number_and_symbol(letter)
    properties.title = _nfc(formatting.document_title(letter))  # as the PDF's
    properties.subject = _nfc(letter.subject)
    properties.author = _nfc(letter.issuing_agency)
    properties.last_modified_by = _nfc(letter.issuing_agency)
    properties.category = "Công văn"
    properties.keywords = _nfc(number.strip())
    properties.comments = ""
    properties.language = LANGUAGE
    properties.revision = 1
    properties.created = moment
    properties.modified = moment
    properties.last_printed = moment


# Custom document properties (Word: File > Properties > Custom) carrying, in their own case,
# the texts that the letter prints in capitals; ``docx_import`` reads them back when they still
# match what is printed, so a letter Dispatch wrote comes back exactly as it was.
CASE_PROPERTY_PREFIX = "Dispatch "
_CUSTOM_PROPERTIES = "http://schemas.openxmlformats.org/officeDocument/2006/custom-properties"
_CUSTOM_TYPE = "application/vnd.openxmlformats-officedocument.custom-properties+xml"
_CUSTOM_REL = (
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships/custom-properties"
)
_VT = "http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"
_PROPERTY_FMTID = "{D5CDD505-2E9C-101B-9397-08002B2CF9AE}"


def case_properties(letter: Letter) -> dict[str, str]:
    """The printed-in-capitals texts of a letter, by property name."""
    values = {
        "parent_agency": letter.parent_agency,
        "issuing_agency": letter.issuing_agency,
        "signer_title": letter.signer.title,
    }
    if letter.signer.acting_for:
        values["signer_acting_for"] = letter.signer.acting_for
    for i, appendix in enumerate(letter.appendices, start=1):
        values[f"appendix_{i}_title"] = appendix.title
    return {f"{CASE_PROPERTY_PREFIX}{key}": _nfc(value) for key, value in values.items()}


def _record_case(document: DocxDocument, letter: Letter) -> None:
    from xml.sax.saxutils import escape, quoteattr

    from docx.opc.packuri import PackURI
    from docx.opc.part import Part

    rows = "".join(
        f'<property fmtid="{_PROPERTY_FMTID}" pid="{pid}" name={quoteattr(name)}>'
        f"<vt:lpwstr>{escape(value)}</vt:lpwstr></property>"
        for pid, (name, value) in enumerate(case_properties(letter).items(), start=2)
    )
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Properties xmlns="{_CUSTOM_PROPERTIES}" xmlns:vt="{_VT}">{rows}</Properties>'
    )
    package = document.part.package
    part = Part(PackURI("/docProps/custom.xml"), _CUSTOM_TYPE, xml.encode("utf-8"), package)
    package.relate_to(part, _CUSTOM_REL)


def _strip_theme_fonts(document: DocxDocument) -> None:
    """Remove the template's theme font references: in Word they override named fonts."""
    names = ("asciiTheme", "hAnsiTheme", "eastAsiaTheme", "cstheme")
    attributes = [qn(f"w:{name}") for name in names]
    for rfonts in document.styles.element.iter(qn("w:rFonts")):
        for attribute in attributes:
            rfonts.attrib.pop(attribute, None)


def _set_run_properties(rpr: Any, size: float | None) -> None:
    """Times New Roman for every script and Vietnamese as the language on a ``w:rPr``."""
    rfonts = rpr.find(qn("w:rFonts"))
    if rfonts is None:
        rfonts = OxmlElement("w:rFonts")
        rpr.append(rfonts)
    for script in ("ascii", "hAnsi", "eastAsia", "cs"):
        rfonts.set(qn(f"w:{script}"), FONT)
    if size is not None:
        for tag in ("w:sz", "w:szCs"):
            element = rpr.find(qn(tag))
            if element is None:
                element = OxmlElement(tag)
                rpr.append(element)
            element.set(qn("w:val"), str(round(size * 2)))
    lang = rpr.find(qn("w:lang"))
    if lang is None:
        lang = OxmlElement("w:lang")
        rpr.append(lang)
    # Vietnamese is written in Latin script; no script should fall back to another language.
    for attribute in ("val", "eastAsia", "bidi"):
        lang.set(qn(f"w:{attribute}"), LANGUAGE)
    _sort_children(rpr, _RPR_ORDER)


# The schema fixes the order of these elements' children; Word refuses files that break it.
_RPR_ORDER = [
    qn(f"w:{tag}")
    for tag in [
        "rStyle",
        "rFonts",
        "b",
        "bCs",
        "i",
        "iCs",
        "caps",
        "smallCaps",
        "strike",
        "dstrike",
        "outline",
        "shadow",
        "emboss",
        "imprint",
        "noProof",
        "snapToGrid",
        "vanish",
        "webHidden",
        "color",
        "spacing",
        "w",
        "kern",
        "position",
        "sz",
        "szCs",
        "highlight",
        "u",
        "effect",
        "bdr",
        "shd",
        "fitText",
        "vertAlign",
        "rtl",
        "cs",
        "em",
        "lang",
        "eastAsianLayout",
        "specVanish",
        "oMath",
    ]
]
_PPR_ORDER = [
    qn(f"w:{tag}")
    for tag in [
        "pStyle",
        "keepNext",
        "keepLines",
        "pageBreakBefore",
        "framePr",
        "widowControl",
        "numPr",
        "suppressLineNumbers",
        "pBdr",
        "shd",
        "tabs",
        "suppressAutoHyphens",
        "kinsoku",
        "wordWrap",
        "overflowPunct",
        "topLinePunct",
        "autoSpaceDE",
        "autoSpaceDN",
        "bidi",
        "adjustRightInd",
        "snapToGrid",
        "spacing",
        "ind",
        "contextualSpacing",
        "mirrorIndents",
        "suppressOverlap",
        "jc",
        "textDirection",
        "textAlignment",
        "textboxTightWrap",
        "outlineLvl",
        "divId",
        "cnfStyle",
        "rPr",
        "sectPr",
        "pPrChange",
    ]
]
_TBLPR_ORDER = [
    qn(f"w:{tag}")
    for tag in [
        "tblStyle",
        "tblpPr",
        "tblOverlap",
        "bidiVisual",
        "tblStyleRowBandSize",
        "tblStyleColBandSize",
        "tblW",
        "jc",
        "tblCellSpacing",
        "tblInd",
        "tblBorders",
        "shd",
        "tblLayout",
        "tblCellMar",
        "tblLook",
        "tblCaption",
        "tblDescription",
    ]
]


def _sort_children(element: Any, order: list[str]) -> None:
    """Reorder ``element``'s children into schema order (stable for unknown ones)."""
    rank = {tag: index for index, tag in enumerate(order)}
    for child in sorted(element, key=lambda e: rank.get(e.tag, len(order))):
        element.append(child)


def _prune_styles(document: DocxDocument) -> None:
    """Drop the template's ~160 styles that a letter never uses (Word lists what remains)."""
    keep = {"Normal", "DefaultParagraphFont", "TableNormal", "NoList", "TableGrid"}
    styles = document.styles.element
    for style in styles.findall(qn("w:style")):
        if style.get(qn("w:styleId")) not in keep:
            styles.remove(style)


def _define_style(document: DocxDocument, spec: _StyleSpec) -> None:
    style = document.styles.add_style(spec.name, WD_STYLE_TYPE.PARAGRAPH)
    style.style_id = _STYLE_IDS[spec.name]
    style.base_style = document.styles["Normal"]
    style.quick_style = True
    style.font.bold = spec.bold
    style.font.italic = spec.italic
    _set_run_properties(style.element.get_or_add_rPr(), size=spec.size)
    paragraph_format = style.paragraph_format
    paragraph_format.alignment = spec.align
    paragraph_format.space_before = Pt(spec.before)
    paragraph_format.space_after = Pt(spec.after)
    paragraph_format.line_spacing = spec.line_spacing
    if spec.first_line is not None:
        paragraph_format.first_line_indent = spec.first_line
    if spec.keep_with_next:
        paragraph_format.keep_with_next = True


def _drop_thumbnail(document: DocxDocument) -> None:
    """The template's thumbnail shows an empty page: file browsers would preview that."""
    relationships = document.part.package.rels
    for r_id, relationship in list(relationships.items()):
        if relationship.reltype.endswith("/thumbnail"):
            relationships.pop(r_id)


# Parts of python-docx's template that no letter uses, by the end of their relationship type:
# Word 2010's copy of every style with its effects (428 KB of XML, 40 % of a letter's DOCX once
# compressed, and so of every e-mail carrying it, bench/issue_63), and an empty custom XML item.
# Word and LibreOffice open the document the same without them.
_UNUSED_PARTS = ("/stylesWithEffects", "/customXml")


def _drop_unused_parts(document: DocxDocument) -> None:
    """Leave out the template's parts that nothing in a letter refers to."""
    relationships = document.part.rels
    for r_id, relationship in list(relationships.items()):
        if relationship.reltype.endswith(_UNUSED_PARTS):
            relationships.pop(r_id)


def _timestamp(letter: Letter) -> dt.datetime:
    """Midnight of the letter's date in Vietnam, as naive UTC; the fixed epoch for drafts."""
    if letter.date is None:
        return DRAFT_EPOCH
    midnight = dt.datetime.combine(letter.date, dt.time(0, 0), tzinfo=VN)
    return midnight.astimezone(dt.UTC).replace(tzinfo=None)


def _normalise_zip(data: bytes, moment: dt.datetime) -> bytes:
    """Rewrite the package with fixed member timestamps: equal letters give equal bytes."""
    stamp = (max(moment.year, 1980), moment.month, moment.day, moment.hour, moment.minute, 0)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=stamp)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            # The best compression: written once per letter, carried by every e-mail.
            target.writestr(member, source.read(info.filename), compresslevel=9)
    return out.getvalue()


# --- sections and page numbers ----------------------------------------------------------------


def _set_up_section(section: Section, restart_numbering: bool) -> None:
    """A4 with the decree's margins, the page number centred in the header except on page 1."""
    section.orientation = WD_ORIENT.PORTRAIT
    section.page_width, section.page_height = PAGE_WIDTH, PAGE_HEIGHT
    section.top_margin, section.bottom_margin = MARGIN_TOP, MARGIN_BOTTOM
    section.left_margin, section.right_margin = MARGIN_LEFT, MARGIN_RIGHT
    section.header_distance, section.footer_distance = HEADER_DISTANCE, FOOTER_DISTANCE
    section.gutter = Length(0)
    section.different_first_page_header_footer = True

    # Every section defines its own headers rather than inheriting them, so that Word and
    # LibreOffice agree on what each first page shows.
    header = section.header
    header.is_linked_to_previous = False
    _clear(header)
    _add_page_field(_paragraph(header, "Page Number"))
    first = section.first_page_header
    first.is_linked_to_previous = False
    _clear(first)
    _paragraph(first, "Page Number")

    sect_pr = section._sectPr
    pg_num = sect_pr.find(qn("w:pgNumType"))
    if restart_numbering:
        if pg_num is None:
            pg_num = OxmlElement("w:pgNumType")
            # In the schema pgNumType follows pgMar (and pgBorders, lnNumType).
            sect_pr.find(qn("w:pgMar")).addnext(pg_num)
        pg_num.set(qn("w:start"), "1")
    elif pg_num is not None:
        sect_pr.remove(pg_num)


def _clear(container: Any) -> None:
    for paragraph in list(container.paragraphs):
        paragraph._element.getparent().remove(paragraph._element)


def _add_page_field(paragraph: Paragraph) -> None:
    """A real PAGE field: begin, instruction, separate, a placeholder result, end."""

    def field_char(kind: str) -> None:
        char = OxmlElement("w:fldChar")
        char.set(qn("w:fldCharType"), kind)
        paragraph.add_run()._r.append(char)

    field_char("begin")
    instruction = OxmlElement("w:instrText")
    instruction.set(qn("xml:space"), "preserve")
    instruction.text = " PAGE "
    paragraph.add_run()._r.append(instruction)
    field_char("separate")
    paragraph.add_run("2")  # what a reader without field support shows; Word recomputes it
    field_char("end")


# --- borders, widths and tables ---------------------------------------------------------------


def _border(tag: str, value: str = "single") -> Any:
    element = OxmlElement(tag)
    element.set(qn("w:val"), value)
    if value != "nil":
        element.set(qn("w:sz"), str(RULE_SIZE_EIGHTHS))
        element.set(qn("w:space"), "0")
        element.set(qn("w:color"), "000000")
    return element


def _add_rule(container: Any, width: Length, center: Length, column: Length) -> Paragraph:
    """A solid rule ``width`` long, centred at ``center`` across a ``column`` wide area.

    It is the bottom border of a tiny paragraph indented to the rule's length: Word and
    LibreOffice both draw paragraph borders between the indents.
    """
    paragraph = _paragraph(container, "Header Rule")
    _inset(paragraph, left=center - width / 2, right=column - center - width / 2)
    borders = OxmlElement("w:pBdr")
    borders.append(_border("w:bottom"))
    ppr = paragraph._p.get_or_add_pPr()
    ppr.append(borders)
    _sort_children(ppr, _PPR_ORDER)
    return paragraph


def _inset(paragraph: Paragraph, left: float = 0, right: float = 0) -> Paragraph:
    """Indent ``paragraph`` from both sides (EMU)."""
    paragraph.paragraph_format.left_indent = Length(round(left))
    paragraph.paragraph_format.right_indent = Length(round(right))
    return paragraph


def _borderless(table: Table) -> None:
    """No borders and zero cell margins, as the decree's layout tables have."""
    tbl_pr = table._tbl.tblPr
    borders = OxmlElement("w:tblBorders")
    for side in ("top", "left", "bottom", "right", "insideH", "insideV"):
        borders.append(_border(f"w:{side}", "nil"))
    tbl_pr.append(borders)
    _sort_children(tbl_pr, _TBLPR_ORDER)
    _cell_padding(table, Length(0))


def _fixed_widths(table: Table, widths: list[Length]) -> None:
    """Widths on the grid AND on every cell: LibreOffice ignores one without the other."""
    table.autofit = False
    table.alignment = WD_TABLE_ALIGNMENT.LEFT
    tbl_pr = table._tbl.tblPr
    tbl_w = tbl_pr.find(qn("w:tblW"))
    if tbl_w is None:
        tbl_w = OxmlElement("w:tblW")
        tbl_pr.append(tbl_w)
    tbl_w.set(qn("w:w"), str(sum(width.twips for width in widths)))
    tbl_w.set(qn("w:type"), "dxa")
    for column, width in zip(table.columns, widths, strict=True):
        column.width = width
    for row in table.rows:
        for cell, width in zip(row.cells, widths, strict=True):
            cell.width = width
    _sort_children(tbl_pr, _TBLPR_ORDER)


def _layout_table(document: DocxDocument, rows: int, widths: tuple[Length, ...]) -> Table:
    """A borderless table of fixed columns whose rows never split across pages."""
    table = document.add_table(rows=rows, cols=len(widths))
    _borderless(table)
    _fixed_widths(table, list(widths))
    for row in table.rows:
        row._tr.get_or_add_trPr().append(OxmlElement("w:cantSplit"))
    return table


def _cell_padding(table: Table, side: Length) -> None:
    """Left and right cell margins of ``side``, none above and below (paragraphs space)."""
    margins = OxmlElement("w:tblCellMar")
    for name, width in (("top", 0), ("left", side), ("bottom", 0), ("right", side)):
        margin = OxmlElement(f"w:{name}")
        margin.set(qn("w:w"), str(Length(width).twips))
        margin.set(qn("w:type"), "dxa")
        margins.append(margin)
    tbl_pr = table._tbl.tblPr
    tbl_pr.append(margins)
    _sort_children(tbl_pr, _TBLPR_ORDER)


def _cell(table: Table, row: int, column: int) -> _Cell:
    """A cell emptied of the paragraph python-docx puts in every new cell."""
    cell = table.cell(row, column)
    _clear(cell)
    return cell


# --- page 1 header ----------------------------------------------------------------------------


def _add_header_table(document: DocxDocument, letter: Letter) -> None:
    """Agencies | national title and motto; number | place and date; subject (and urgency)."""
    left_width, right_width = HEADER_COLUMNS
    table = _layout_table(document, rows=2, widths=HEADER_COLUMNS)
    # The left column's texts stay COLUMN_GAP off the middle of the table, the right's too.
    left_center = (left_width - COLUMN_GAP) / 2
    right_center = COLUMN_GAP + (right_width - COLUMN_GAP) / 2

    agencies = _cell(table, 0, 0)
    issuing = letter.issuing_agency.upper()
    _inset(_paragraph(agencies, "Header Agency", letter.parent_agency.upper()), right=COLUMN_GAP)
    _inset(_paragraph(agencies, "Issuing Agency", issuing), right=COLUMN_GAP)
    agency_width = min(text_width(issuing, 12, bold=True), left_width - COLUMN_GAP)
    _add_rule(agencies, agency_width * AGENCY_RULE_FRACTION, left_center, left_width)

    nation = _cell(table, 0, 1)
    _inset(_paragraph(nation, "National Title", formatting.NATIONAL_TITLE), left=COLUMN_GAP)
    _inset(_paragraph(nation, "Motto", formatting.MOTTO), left=COLUMN_GAP)
    _add_rule(nation, text_width(formatting.MOTTO, 13, bold=True), right_center, right_width)

    # Number and date open the second row, so they stand on the same line.
    reference = _cell(table, 1, 0)
    _inset(_paragraph(reference, "Number", formatting.number_line(letter)), right=COLUMN_GAP)
    _inset(_paragraph(reference, "Subject", formatting.subject_line(letter)), right=COLUMN_GAP)
    if letter.urgency is not None:
        stamp = _inset(_paragraph(reference, "Urgency"), right=COLUMN_GAP)
        # A character border boxes just the word; the spaces pad it inside the box.
        run = _add_text(stamp, f"\u00a0{letter.urgency.value}\u00a0")
        rpr = run._r.get_or_add_rPr()
        rpr.append(_border("w:bdr"))
        _sort_children(rpr, _RPR_ORDER)

    place = _cell(table, 1, 1)
    _inset(_paragraph(place, "Place Date", formatting.place_date_line(letter)), left=COLUMN_GAP)


# --- addressees and body ----------------------------------------------------------------------


def _add_addressees(document: DocxDocument, letter: Letter) -> None:
    """'Kính gửi:' and the addressees, the block centred, the dashes under the colon's end.

    "Kính gửi:" hangs out to the left of the list; a tab stop where the list starts brings
    the first addressee level with the others, and long ones wrap under their own text.
    """
    lines = [_nfc(line) for line in formatting.addressee_lines(letter)]
    label_width = text_width(formatting.ADDRESSEE_LABEL, 14) + ADDRESSEE_GAP
    widest = max(text_width(line, 14) for line in lines)
    block = min(label_width + widest, TEXT_WIDTH)
    start = Length(round((TEXT_WIDTH - block) / 2))
    list_start = Length(start + label_width)
    for i, line in enumerate(lines):
        paragraph = _paragraph(document, "Addressee")
        paragraph_format = paragraph.paragraph_format
        paragraph_format.left_indent = list_start
        paragraph_format.tab_stops.add_tab_stop(list_start, WD_TAB_ALIGNMENT.LEFT)
        if i == 0:
            paragraph_format.first_line_indent = Length(start - list_start)
            paragraph_format.space_before = Pt(12)
            _add_text(paragraph, f"{formatting.ADDRESSEE_LABEL}\t{line}")
        else:
            _add_text(paragraph, line)
        if i == len(lines) - 1:
            paragraph_format.space_after = Pt(6)


def _add_blocks(document: DocxDocument, blocks: Iterable[Block]) -> None:
    """Body blocks: paragraphs, items with their literal marks, headings, tables."""
    for block in blocks:
        if block.kind is BlockKind.TABLE:
            _add_table(document, block)
            continue
        if block.kind is BlockKind.HEADING:
            paragraph = _paragraph(document, "Letter Heading")
        elif block.kind is BlockKind.PARAGRAPH:
            paragraph = _paragraph(document, "Letter Body")
        else:
            paragraph = _paragraph(document, "Letter Item", f"{block.marker} ")
        _add_spans(paragraph, block.spans)


def _table_widths(block: Block) -> list[Length]:
    """Column widths laid out as a browser lays out an automatic table (CSS 2.1, 17.5.2.2).

    Each column gets at least its longest word and, as far as the text width allows, its
    longest cell on one line; what is left over is shared in proportion. Word and
    LibreOffice then keep these widths, and the PDF's table comes out alike.
    """
    columns = max(len(row) for row in block.rows)
    # Both cell margins, plus the borders and rounding to twips, which Word and LibreOffice
    # also take off the cell: without it "STT" wraps in a column made just for it.
    padding = 2 * TABLE_CELL_PADDING + Pt(2)
    least = [padding] * columns
    most = [padding] * columns
    for r, row in enumerate(block.rows):
        for c, cell in enumerate(row):
            words, line = Length(0), Length(0)
            for span in cell:
                bold = span.bold or r == 0  # the header row is bold
                for word in span.text.split():
                    words = max(words, text_width(word, TABLE_FONT_SIZE, bold, span.italic))
                line += text_width(span.text, TABLE_FONT_SIZE, bold, span.italic)
            least[c] = max(least[c], words + padding)
            most[c] = max(most[c], line + padding)
    if sum(most) <= TEXT_WIDTH:
        shares = [TEXT_WIDTH * width / sum(most) for width in most]
    elif sum(least) >= TEXT_WIDTH:
        shares = [TEXT_WIDTH * width / sum(least) for width in least]
    else:
        spare = TEXT_WIDTH - sum(least)
        stretch = [m - n for m, n in zip(most, least, strict=True)]
        shares = [n + spare * s / sum(stretch) for n, s in zip(least, stretch, strict=True)]
    return [Length(round(share)) for share in shares]


def _add_table(document: DocxDocument, block: Block) -> None:
    """A body table as a real Word table in the "Table Grid" style, header row repeated."""
    if not block.rows:
        return
    widths = _table_widths(block)
    table = document.add_table(rows=len(block.rows), cols=len(widths))
    table._tbl.tblPr.style = _STYLE_IDS["Table Grid"]
    _fixed_widths(table, widths)
    _cell_padding(table, TABLE_CELL_PADDING)
    table.rows[0]._tr.get_or_add_trPr().append(OxmlElement("w:tblHeader"))
    for r, (row, table_row) in enumerate(zip(block.rows, table.rows, strict=True)):
        table_row._tr.get_or_add_trPr().append(OxmlElement("w:cantSplit"))
        for c, cell in enumerate(table_row.cells):
            _clear(cell)
            paragraph = _paragraph(cell, "Table Heading" if r == 0 else "Table Text")
            if c < len(row):
                _add_spans(paragraph, row[c])
    # What follows keeps its distance from the table's bottom border.
    _paragraph(document, "Section End").paragraph_format.space_after = BODY_SPACE_AFTER


# --- signature and distribution ---------------------------------------------------------------


def _add_signature_table(document: DocxDocument, letter: Letter) -> None:
    """Left: 'Nơi nhận:' and the list; right: authority and title, room to sign, name."""
    table = _layout_table(document, rows=1, widths=SIGNATURE_COLUMNS)
    distribution = _cell(table, 0, 0)
    heading = _paragraph(distribution, "Distribution Heading", formatting.DISTRIBUTION_LABEL)
    # 6 pt plus ~1.5 pt so that its 12 pt baseline sits on the 14 pt title's.
    heading.paragraph_format.space_before = Pt(7.5)
    for line in formatting.distribution_lines(letter):
        _inset(_paragraph(distribution, "Distribution", line), right=COLUMN_GAP)

    signer = _cell(table, 0, 1)
    for i, line in enumerate(formatting.signer_title_lines(letter)):
        title = _inset(_paragraph(signer, "Signer Title", line), left=COLUMN_GAP)
        if i == 0:
            title.paragraph_format.space_before = Pt(6)
    name = _inset(_paragraph(signer, "Signer Name", letter.signer.name), left=COLUMN_GAP)
    name.paragraph_format.space_before = SIGNATURE_SPACE


# --- appendices -------------------------------------------------------------------------------


def _add_appendix(document: DocxDocument, letter: Letter, appendix: Appendix) -> None:
    """'Phụ lục I', the title, the 'Kèm theo' line, a short rule, then the content."""
    _paragraph(document, "Appendix Heading", formatting.appendix_heading(appendix.numeral))
    _paragraph(document, "Appendix Title", appendix.title.upper())
    _paragraph(document, "Appendix Reference", formatting.appendix_reference_line(letter))
    rule = _add_rule(document, APPENDIX_RULE_WIDTH, TEXT_WIDTH / 2, TEXT_WIDTH)
    rule.paragraph_format.space_after = Pt(6)
    _add_blocks(document, appendix.body)
