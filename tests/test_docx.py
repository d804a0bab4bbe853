"""The DOCX renderer: Word structure read back with python-docx, and LibreOffice's view of it.

Every property is read from the saved file, resolving what a run inherits the way Word does
(run, paragraph style and its bases, table style, document defaults), so a style that forgets
a script's font or a theme font that overrides Times New Roman is caught.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pdfplumber
import pypdf
import pytest
from docx import Document
from docx.document import Document as DocxDocument
from docx.enum.section import WD_SECTION
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml.ns import qn
from docx.shared import Cm, Emu, Mm, Pt
from docx.table import Table
from docx.text.paragraph import Paragraph
from fontTools.ttLib import TTFont

from dispatch.letters import formatting
from dispatch.letters.docx import FONT_DIR, render_docx, text_width
from dispatch.letters.formatting import (
    ADDRESSEE_LABEL,
    DISTRIBUTION_LABEL,
    MOTTO,
    NATIONAL_TITLE,
)
from dispatch.letters.model import Block, BlockKind, Letter, Urgency
from tests.letter_samples import sample_letter, seed_letter

pytestmark = pytest.mark.nodb

ISSUED = dt.date(2021, 11, 15)
BLANK = formatting.BLANK  # the blank number or day of a draft
FONT = "Times New Roman"
SCRIPTS = ("ascii", "hAnsi", "eastAsia", "cs")
THEME_ATTRIBUTES = ("asciiTheme", "hAnsiTheme", "eastAsiaTheme", "cstheme")


# --- reading the document back ----------------------------------------------------------------


def read(data: bytes) -> DocxDocument:
    return Document(io.BytesIO(data))


def document_order(document: DocxDocument) -> Iterator[Paragraph]:
    """Every body paragraph, table cells included, in reading order."""

    def walk(container) -> Iterator[Paragraph]:
        for item in container.iter_inner_content():
            if isinstance(item, Paragraph):
                yield item
            else:
                for row in item.rows:
                    seen = set()
                    for cell in row.cells:
                        if id(cell._tc) in seen:
                            continue
                        seen.add(id(cell._tc))
                        yield from walk(cell)

    yield from walk(document)


def texts(document: DocxDocument) -> list[str]:
    return [p.text for p in document_order(document) if p.text]


def block_texts(blocks: tuple[Block, ...]) -> list[str]:
    """What each block prints: marker and text, or each table cell."""
    out = []
    for block in blocks:
        if block.kind is BlockKind.TABLE:
            out.extend("".join(span.text for span in cell) for row in block.rows for cell in row)
        elif block.marker:
            out.append(f"{block.marker} {block.text}")
        else:
            out.append(block.text)
    return out


def expected_texts(letter: Letter) -> list[str]:
    """Every paragraph the letter must print, in document order."""
    addressees = formatting.addressee_lines(letter)
    out = [
        letter.parent_agency.upper(),
        letter.issuing_agency.upper(),
        NATIONAL_TITLE,
        MOTTO,
        formatting.number_line(letter),
        formatting.subject_line(letter),
        *([f"\u00a0{letter.urgency.value}\u00a0"] if letter.urgency else []),
        formatting.place_date_line(letter),
        f"{ADDRESSEE_LABEL}\t{addressees[0]}",
        *addressees[1:],
        *block_texts(letter.body),
        DISTRIBUTION_LABEL,
        *formatting.distribution_lines(letter),
        *formatting.signer_title_lines(letter),
        letter.signer.name,
    ]
    for appendix in letter.appendices:
        out += [
            formatting.appendix_heading(appendix.numeral),
            appendix.title.upper(),
            formatting.appendix_reference_line(letter),
            *block_texts(appendix.body),
        ]
    return [unicodedata.normalize("NFC", text) for text in out if text]


def find(document: DocxDocument, text: str) -> Paragraph:
    matches = [p for p in document_order(document) if p.text == text]
    assert len(matches) == 1, f"{text!r} found {len(matches)} times"
    return matches[0]


def style_chain(paragraph: Paragraph) -> Iterator:
    style = paragraph.style
    while style is not None:
        yield style.element
        style = style.base_style


def table_style_of(paragraph: Paragraph):
    """The style of the table holding ``paragraph`` (None outside tables)."""
    tbl = next(paragraph._p.iterancestors(qn("w:tbl")), None)
    if tbl is None:
        return None
    return Table(tbl, paragraph._parent).style


def rpr_sources(document: DocxDocument, paragraph: Paragraph, run=None) -> Iterator:
    """The ``w:rPr`` elements a run's formatting comes from, strongest first."""
    if run is not None:
        yield run._r.rPr
    for style in style_chain(paragraph):
        yield style.rPr
    table_style = table_style_of(paragraph)
    while table_style is not None:
        yield table_style.element.rPr
        table_style = table_style.base_style
    defaults = document.styles.element.find(qn("w:docDefaults"))
    yield defaults.find(qn("w:rPrDefault")).find(qn("w:rPr"))


def effective(document, paragraph, run, tag: str, attribute: str = "val"):
    """The value of ``tag``'s ``attribute`` as Word resolves it for ``run``."""
    for rpr in rpr_sources(document, paragraph, run):
        element = None if rpr is None else rpr.find(qn(f"w:{tag}"))
        if element is None:
            continue
        if tag == "rFonts":
            theme = f"{attribute}Theme" if attribute != "cs" else "cstheme"
            assert element.get(qn(f"w:{theme}")) is None, "a theme font overrides the name"
        value = element.get(qn(f"w:{attribute}"))
        if value is not None:
            return value
    return None


def toggle(document, paragraph, run, tag: str) -> bool:
    """Bold or italic as resolved for ``run``: the strongest source that says anything."""
    for rpr in rpr_sources(document, paragraph, run):
        element = None if rpr is None else rpr.find(qn(f"w:{tag}"))
        if element is not None:
            return element.get(qn("w:val")) not in ("0", "false", "off")
    return False


def formatting_of(document, paragraph: Paragraph) -> tuple[float, bool, bool]:
    """Size in pt, bold, italic of the paragraph's text (all its runs must agree)."""
    found = {
        (
            int(effective(document, paragraph, run, "sz")) / 2,
            toggle(document, paragraph, run, "b"),
            toggle(document, paragraph, run, "i"),
        )
        for run in paragraph.runs
        if run.text
    }
    assert len(found) == 1, f"{paragraph.text!r}: {found}"
    return found.pop()


def paragraph_value(paragraph: Paragraph, name: str):
    """A paragraph format value, from the paragraph or else its styles."""
    value = getattr(paragraph.paragraph_format, name)
    style = paragraph.style
    while value is None and style is not None:
        value = getattr(style.paragraph_format, name)
        style = style.base_style
    return value


def measure(text: str, size: float, bold: bool = False, italic: bool = False) -> float:
    """Width in mm of ``text`` in the shipped Liberation Serif (Times New Roman metrics)."""
    name = {
        (False, False): "Regular",
        (True, False): "Bold",
        (False, True): "Italic",
        (True, True): "BoldItalic",
    }[(bold, italic)]
    with TTFont(FONT_DIR / f"LiberationSerif-{name}.ttf") as font:
        cmap, metrics = font.getBestCmap(), font["hmtx"].metrics
        units = sum(metrics[cmap[ord(c)]][0] for c in text)
        return units / font["head"].unitsPerEm * size * 25.4 / 72


def mm(length: int) -> float:
    return Emu(length).mm


# --- the letters ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> Letter:
    return seed_letter(4321, ISSUED)


@pytest.fixture(scope="module")
def seed_docx(seed: Letter) -> bytes:
    return render_docx(seed)


@pytest.fixture(scope="module")
def sample_docx() -> bytes:
    return render_docx(sample_letter(4321, ISSUED))


def long_letter(date: dt.date | None = ISSUED) -> Letter:
    """A letter whose body and first appendix each run over two pages."""
    letter = sample_letter(4321, date, addressees=4)
    first = letter.appendices[0]
    return replace(
        letter,
        body=letter.body * 3,
        appendices=(replace(first, body=first.body * 6), *letter.appendices[1:]),
    )


# --- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["seed", "sample"])
def test_every_text_of_the_letter_is_there_in_document_order(which, seed, seed_docx, sample_docx):
    letter, data = (
        (seed, seed_docx) if which == "seed" else (sample_letter(4321, ISSUED), sample_docx)
    )
    assert texts(read(data)) == expected_texts(letter)


def test_the_seed_letter_has_its_substance(seed, seed_docx):
    # Guards the comparison above against a seed that parsed into (almost) nothing.
    assert len(seed.body) >= 3 and seed.appendices
    assert texts(read(seed_docx))[-1] == expected_texts(seed)[-1]


def test_text_is_nfc_even_from_decomposed_input():
    letter = sample_letter(4321, ISSUED)

    def nfd(text: str) -> str:
        return unicodedata.normalize("NFD", text)

    def blocks(items):
        return tuple(
            replace(
                b,
                spans=tuple(replace(s, text=nfd(s.text)) for s in b.spans),
                rows=tuple(
                    tuple(tuple(replace(s, text=nfd(s.text)) for s in cell) for cell in row)
                    for row in b.rows
                ),
            )
            for b in items
        )

    decomposed = replace(
        letter,
        parent_agency=nfd(letter.parent_agency),
        issuing_agency=nfd(letter.issuing_agency),
        subject=nfd(letter.subject),
        addressees=tuple(nfd(a) for a in letter.addressees),
        body=blocks(letter.body),
        appendices=tuple(
            replace(a, title=nfd(a.title), body=blocks(a.body)) for a in letter.appendices
        ),
    )
    assert decomposed.subject != letter.subject
    document = read(render_docx(decomposed))
    assert texts(document) == expected_texts(letter)
    with zipfile.ZipFile(io.BytesIO(render_docx(decomposed))) as package:
        xml = package.read("word/document.xml").decode()
    assert unicodedata.is_normalized("NFC", xml)


def test_the_package_holds_only_parts_a_letter_uses(seed_docx):
    with zipfile.ZipFile(io.BytesIO(seed_docx)) as package:
        names = package.namelist()
        types = package.read("[Content_Types].xml").decode()
        relationships = package.read("word/_rels/document.xml.rels").decode()
    # Word 2010's styles with effects (~430 KB of XML) and the template's empty custom XML item
    # would ride along in every e-mail; the thumbnail would preview an empty page.
    for unused in ("stylesWithEffects", "customXml", "thumbnail"):
        assert not [name for name in names if unused in name]
        assert unused not in types and unused not in relationships
    # Every part named in the content types is in the package, and every related part too.
    for part in re.findall(r'PartName="/([^"]+)"', types):
        assert part in names
    for target in re.findall(r'Target="([^"]+)"', relationships):
        assert f"word/{target}" in names
    assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in package.infolist())


def test_hyphens_in_numbers_and_compound_words_do_not_break_lines(sample_docx):
    document = read(sample_docx)
    first = find(document, block_texts(sample_letter().body)[0])
    xml = first._p.xml
    # "1015/TTg-KGVX" and "PC-Covid" keep their hyphen on the line; python-docx reads "-".
    assert xml.count("<w:noBreakHyphen/>") == 2
    assert "1015/TTg-KGVX" in first.text and "‑" not in first.text


# --- number and date forms --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "date", "number_line", "date_text"),
    [
        (None, None, f"Số: {BLANK}/THH-VP", f"ngày {BLANK} tháng 11 năm 2021"),
        (4321, ISSUED, "Số: 4321/THH-VP", "ngày 15 tháng 11 năm 2021"),
        (7, dt.date(2022, 2, 3), "Số: 07/THH-VP", "ngày 03 tháng 02 năm 2022"),
    ],
)
def test_number_and_date_as_drafted_and_as_issued(number, date, number_line, date_text):
    letter = sample_letter(number, date)
    document = read(render_docx(letter))
    header = document.tables[0]
    if number is None:
        assert re.fullmatch(r"Số: {6,}/THH-VP", number_line)
    assert header.cell(1, 0).paragraphs[0].text == number_line
    assert header.cell(1, 1).paragraphs[0].text == f"Hà Nội, {date_text}"
    symbol = number_line.removeprefix("Số: ")
    reference = f"(Kèm theo Công văn số {symbol} {date_text} của Cục Tin học hoá)"
    assert [p.text for p in document_order(document)].count(reference) == 2


def test_the_number_line_never_wraps(seed_docx):
    document = read(seed_docx)
    cell = document.tables[0].cell(1, 0)
    paragraph = cell.paragraphs[0]
    room = mm(cell.width) - mm(paragraph.paragraph_format.right_indent or 0)
    for number in (None, 7, 4321, 99999):
        line = formatting.number_line(replace(sample_letter(), number=number))
        assert measure(line, 13) < room


# --- sections, pages, page numbers ------------------------------------------------------------


@pytest.mark.parametrize("which", ["seed", "long"])
def test_sections_pages_and_page_numbers(which, seed, seed_docx):
    letter, data = (seed, seed_docx) if which == "seed" else (long_letter(), None)
    document = read(data or render_docx(letter))
    sections = document.sections
    assert len(sections) == 1 + len(letter.appendices)
    for index, section in enumerate(sections):
        assert (round(mm(section.page_width), 1), round(mm(section.page_height), 1)) == (
            210.0,
            297.0,
        )
        margins = [section.top_margin, section.bottom_margin, section.left_margin]
        assert [abs(mm(m) - v) < 0.1 for m, v in zip(margins, (20, 20, 30), strict=True)] == [
            True
        ] * 3
        assert abs(mm(section.right_margin) - 15) < 0.1
        assert 0 < mm(section.header_distance) < 20  # the number sits inside the top margin
        assert section.different_first_page_header_footer is True

        header_xml = section.header._element.xml
        assert re.search(
            r'fldCharType="begin".*<w:instrText[^>]*> PAGE </w:instrText>.*'
            r'fldCharType="separate".*fldCharType="end"',
            header_xml,
            re.S,
        )
        assert "PAGE" not in section.first_page_header._element.xml
        assert not section.header.is_linked_to_previous
        assert not section.first_page_header.is_linked_to_previous
        page_number = section.header.paragraphs[0]
        assert paragraph_value(page_number, "alignment") == WD_ALIGN_PARAGRAPH.CENTER
        assert formatting_of(document, page_number)[0] == 13

        numbering = section._sectPr.find(qn("w:pgNumType"))
        if index == 0:
            assert numbering is None or numbering.get(qn("w:start")) is None
        else:
            assert numbering.get(qn("w:start")) == "1"
            assert section.start_type == WD_SECTION.NEW_PAGE
            assert section.page_width == sections[0].page_width


def test_a_letter_without_appendices_is_one_section():
    letter = sample_letter(4321, ISSUED, appendices=False)
    document = read(render_docx(letter))
    assert len(document.sections) == 1
    assert texts(document) == expected_texts(letter)
    # Word wants a paragraph, not the signature table, right before the document's end.
    assert document.element.body[-2].tag == qn("w:p")


def test_a_single_appendix_is_just_phu_luc():
    letter = sample_letter(4321, ISSUED)
    only = replace(letter.appendices[0], numeral="")
    letter = replace(letter, appendices=(only,))
    document = read(render_docx(letter))
    assert len(document.sections) == 2
    assert find(document, "Phụ lục").style.name == "Appendix Heading"
    assert texts(document) == expected_texts(letter)


def test_each_appendix_begins_its_own_section(seed, seed_docx):
    document = read(seed_docx)
    body = document.element.body
    headings = [formatting.appendix_heading(a.numeral) for a in seed.appendices]
    # The paragraph just before each "Phụ lục" heading carries the previous section's end.
    for heading in headings:
        paragraph = find(document, heading)
        previous = paragraph._p.getprevious()
        assert (
            previous.tag == qn("w:p")
            and previous.find(qn("w:pPr")).find(qn("w:sectPr")) is not None
        )
    assert body[-1].tag == qn("w:sectPr")


# --- fonts and language -----------------------------------------------------------------------


def all_paragraphs(document: DocxDocument) -> Iterator[Paragraph]:
    yield from document_order(document)
    for section in document.sections:
        for header in (section.header, section.first_page_header):
            yield from header.paragraphs


def test_every_run_is_times_new_roman_for_every_script_in_vietnamese(seed_docx):
    document = read(seed_docx)
    runs = 0
    for paragraph in all_paragraphs(document):
        for run in paragraph.runs:
            runs += 1
            for script in SCRIPTS:
                assert effective(document, paragraph, run, "rFonts", script) == FONT, (
                    paragraph.text,
                    script,
                )
            assert effective(document, paragraph, run, "lang") == "vi-VN"
    assert runs > 50


def test_styles_and_defaults_name_times_new_roman_and_vietnamese(seed_docx):
    document = read(seed_docx)
    styles = document.styles.element
    defaults = styles.find(qn("w:docDefaults")).find(qn("w:rPrDefault")).find(qn("w:rPr"))
    fonts = defaults.find(qn("w:rFonts"))
    assert [fonts.get(qn(f"w:{s}")) for s in SCRIPTS] == [FONT] * 4
    lang = defaults.find(qn("w:lang"))
    assert lang.get(qn("w:val")) == lang.get(qn("w:eastAsia")) == "vi-VN"
    assert lang.get(qn("w:bidi")) == "vi-VN"
    for element in styles.iter(qn("w:rFonts")):
        assert not any(element.get(qn(f"w:{a}")) for a in THEME_ATTRIBUTES)
    used = {p.style.name for p in all_paragraphs(document)}
    assert {"Letter Body", "Letter Item", "Header Agency", "Signer Name", "Page Number"} <= used
    for name in used | {"Normal", "Table Grid"}:
        rpr = document.styles[name].element.rPr
        assert rpr is not None, name
        fonts = rpr.find(qn("w:rFonts"))
        assert [fonts.get(qn(f"w:{s}")) for s in SCRIPTS] == [FONT] * 4, name
        assert rpr.find(qn("w:lang")).get(qn("w:val")) == "vi-VN", name


# --- what each element looks like -------------------------------------------------------------

CENTER, LEFT, JUSTIFY = (
    WD_ALIGN_PARAGRAPH.CENTER,
    WD_ALIGN_PARAGRAPH.LEFT,
    WD_ALIGN_PARAGRAPH.JUSTIFY,
)


def element_specs(letter: Letter) -> list[tuple[str, str, float, bool, bool, object]]:
    """(text, style, size, bold, italic, alignment) of the decree's fixed elements."""
    titles = formatting.signer_title_lines(letter)
    distribution = formatting.distribution_lines(letter)
    appendix = letter.appendices[0]
    return [
        (letter.parent_agency.upper(), "Header Agency", 12, False, False, CENTER),
        (letter.issuing_agency.upper(), "Issuing Agency", 12, True, False, CENTER),
        (formatting.number_line(letter), "Number", 13, False, False, CENTER),
        (formatting.subject_line(letter), "Subject", 12, False, False, CENTER),
        (NATIONAL_TITLE, "National Title", 12, True, False, CENTER),
        (MOTTO, "Motto", 13, True, False, CENTER),
        (formatting.place_date_line(letter), "Place Date", 13, False, True, CENTER),
        (DISTRIBUTION_LABEL, "Distribution Heading", 12, True, True, LEFT),
        (distribution[0], "Distribution", 11, False, False, LEFT),
        (distribution[-1], "Distribution", 11, False, False, LEFT),
        *[(line, "Signer Title", 14, True, False, CENTER) for line in titles],
        (letter.signer.name, "Signer Name", 14, True, False, CENTER),
        (
            formatting.appendix_heading(appendix.numeral),
            "Appendix Heading",
            14,
            True,
            False,
            CENTER,
        ),
        (appendix.title.upper(), "Appendix Title", 14, True, False, CENTER),
        (formatting.appendix_reference_line(letter), "Appendix Reference", 14, False, True, CENTER),
    ]


def test_each_element_has_its_size_weight_slant_and_alignment(seed, seed_docx):
    document = read(seed_docx)
    for text, style, size, bold, italic, alignment in element_specs(seed):
        paragraph = (
            find(document, text)
            if "Kèm theo" not in text
            else next(p for p in document_order(document) if p.text == text)
        )
        assert paragraph.style.name == style, text
        assert formatting_of(document, paragraph) == (size, bold, italic), text
        assert paragraph_value(paragraph, "alignment") == alignment, text


def test_upper_case_is_in_the_text_not_in_a_caps_property(seed, seed_docx):
    document = read(seed_docx)
    for text in (seed.issuing_agency.upper(), NATIONAL_TITLE, seed.appendices[0].title.upper()):
        assert text == text.upper() and find(document, text) is not None
    assert "<w:caps" not in document.styles.element.xml


def test_body_is_justified_14pt_with_a_first_line_indent(seed, seed_docx):
    document = read(seed_docx)
    body = [p for p in document_order(document) if p.style.name in ("Letter Body", "Letter Item")]
    assert len(body) >= len([b for b in seed.body if b.kind is not BlockKind.TABLE])
    for paragraph in body:
        assert paragraph_value(paragraph, "alignment") == JUSTIFY
        assert abs(paragraph_value(paragraph, "first_line_indent") - Cm(1.27)) < Emu(500)
        assert paragraph_value(paragraph, "space_after") >= Pt(6)
        assert 1.0 <= paragraph_value(paragraph, "line_spacing") <= 1.5
        sizes = {effective(document, paragraph, run, "sz") for run in paragraph.runs}
        assert sizes == {"28"}  # half-points


def test_items_print_their_literal_marker_and_emphasis_survives(sample_docx):
    document = read(sample_docx)
    letter = sample_letter(4321, ISSUED)
    for block in letter.body:
        if block.marker:
            paragraph = find(document, f"{block.marker} {block.text}")
            assert paragraph.style.name == "Letter Item"
    emphasised = find(document, block_texts(letter.body)[5])
    bold = [r.text for r in emphasised.runs if r.bold]
    italic = [r.text for r in emphasised.runs if r.italic]
    assert bold == ["trước ngày 30 tháng 11 năm 2021"]
    assert italic == ["vanthu@thh.gov.vn"]
    heading = find(document, "I. ĐỐI VỚI NGƯỜI DÂN")
    assert heading.style.name == "Letter Heading"
    assert paragraph_value(heading, "alignment") == LEFT
    assert abs(paragraph_value(heading, "first_line_indent") - Cm(1.27)) < Emu(500)
    assert paragraph_value(heading, "keep_with_next")
    assert formatting_of(document, heading) == (14, True, False)


def test_a_body_table_is_a_real_word_table_with_borders(sample_docx):
    document = read(sample_docx)
    grid = [t for t in document.tables if t.style is not None and t.style.name == "Table Grid"]
    assert len(grid) == 1
    table = grid[0]
    assert [c.text for c in table.rows[0].cells] == ["TT", "Nội dung", "Đơn vị chủ trì", "Thời hạn"]
    assert table.rows[2].cells[3].text == "30/11/2021"
    assert formatting_of(document, table.rows[0].cells[1].paragraphs[0]) == (13, True, False)
    assert formatting_of(document, table.rows[1].cells[1].paragraphs[0]) == (13, False, False)
    assert table.rows[2].cells[3].paragraphs[0].runs[0].bold
    widths = [c.width for c in table.columns]
    assert all(widths) and abs(mm(sum(widths)) - 165) < 0.5
    for row in table.rows:
        assert [c.width for c in row.cells] == widths
    borders = document.styles["Table Grid"].element.find(qn("w:tblPr")).find(qn("w:tblBorders"))
    assert borders.find(qn("w:insideH")).get(qn("w:val")) == "single"


# --- the header table -------------------------------------------------------------------------


def table_margins(table: Table) -> dict[str, str]:
    margins = table._tbl.tblPr.find(qn("w:tblCellMar"))
    return {child.tag.split("}")[1]: child.get(qn("w:w")) for child in margins}


def table_borders(table: Table) -> set[str]:
    borders = table._tbl.tblPr.find(qn("w:tblBorders"))
    return {child.get(qn("w:val")) for child in borders}


def test_header_is_a_borderless_two_column_table_with_fixed_widths(seed_docx):
    document = read(seed_docx)
    header = document.tables[0]
    assert len(header.columns) == 2
    grid = [int(col.get(qn("w:w"))) for col in header._tbl.tblGrid.iterchildren(qn("w:gridCol"))]
    widths = [col.width for col in header.columns]
    assert [Emu(w).twips for w in widths] == grid
    for row in header.rows:
        assert [cell.width for cell in row.cells] == widths
        for cell in row.cells:
            assert cell._tc.tcPr.find(qn("w:tcW")).get(qn("w:type")) == "dxa"
    share = widths[0] / sum(widths)
    assert 0.42 < share < 0.48
    assert mm(sum(widths)) <= 165.05  # twips round a little
    assert table_margins(header) == {"top": "0", "left": "0", "bottom": "0", "right": "0"}
    assert table_borders(header) == {"nil"}
    assert header._tbl.tblPr.find(qn("w:tblLayout")).get(qn("w:type")) == "fixed"


def test_header_lines_fit_their_columns_with_a_gap_between(seed, seed_docx):
    document = read(seed_docx)
    header = document.tables[0]
    left, right = (mm(c.width) for c in header.columns)
    for paragraph in header.cell(0, 0).paragraphs[:2]:
        assert mm(paragraph.paragraph_format.right_indent) >= 0.9  # off the middle
    for paragraph in header.cell(0, 1).paragraphs[:2]:
        assert mm(paragraph.paragraph_format.left_indent) >= 0.9
    parent = measure(seed.parent_agency.upper(), 12)
    title = measure(NATIONAL_TITLE, 12, bold=True)
    assert parent < left - 1 and title < right - 1
    # Centred in their columns, the two lines leave at least 2 mm between them.
    gap = (left - 1 - parent) / 2 + 1 + (right - 1 - title) / 2 + 1
    assert gap > 2


def rule_of(paragraph: Paragraph, width: float) -> tuple[float, float]:
    """(length, centre) in mm of a rule drawn as a paragraph's bottom border."""
    borders = paragraph._p.pPr.find(qn("w:pBdr"))
    assert borders.find(qn("w:bottom")).get(qn("w:val")) == "single"
    left = mm(paragraph.paragraph_format.left_indent)
    right = mm(paragraph.paragraph_format.right_indent)
    return width - left - right, left + (width - left - right) / 2


def test_rules_under_the_agency_and_the_motto(seed, seed_docx):
    document = read(seed_docx)
    header = document.tables[0]
    left, right = (mm(c.width) for c in header.columns)
    agency_rule = header.cell(0, 0).paragraphs[2]
    length, centre = rule_of(agency_rule, left)
    agency = measure(seed.issuing_agency.upper(), 12, bold=True)
    assert agency / 3 <= length <= agency / 2
    assert abs(centre - (left - 1) / 2) < 0.1  # under the centred agency name
    motto_rule = header.cell(0, 1).paragraphs[2]
    length, centre = rule_of(motto_rule, right)
    assert abs(length - measure(MOTTO, 13, bold=True)) < 0.2
    assert abs(centre - (1 + (right - 1) / 2)) < 0.1
    assert formatting_of(document, header.cell(0, 0).paragraphs[1])[1]  # the agency is bold


def test_text_width_agrees_with_the_font():
    assert abs(Emu(text_width(MOTTO, 13, bold=True)).mm - measure(MOTTO, 13, bold=True)) < 0.01
    assert abs(Emu(text_width("Kính gửi:", 14)).mm - measure("Kính gửi:", 14)) < 0.01


def test_urgency_stamp_is_bold_and_boxed():
    letter = replace(sample_letter(4321, ISSUED), urgency=Urgency.VERY_URGENT)
    document = read(render_docx(letter))
    stamp = find(document, "\u00a0THƯỢNG KHẨN\u00a0")
    assert stamp.style.name == "Urgency"
    assert formatting_of(document, stamp)[:2] == (13, True)
    border = stamp.runs[0]._r.rPr.find(qn("w:bdr"))
    assert border.get(qn("w:val")) == "single"
    assert "KHẨN" not in texts(read(render_docx(sample_letter(4321, ISSUED))))


# --- addressees -------------------------------------------------------------------------------


def test_several_addressees_one_per_line_dashes_under_the_colon():
    letter = sample_letter(4321, ISSUED, addressees=3)
    document = read(render_docx(letter))
    lines = formatting.addressee_lines(letter)
    first = find(document, f"{ADDRESSEE_LABEL}\t{lines[0]}")
    others = [find(document, line) for line in lines[1:]]
    list_start = first.paragraph_format.left_indent
    tab_stops = [t.position for t in first.paragraph_format.tab_stops]
    assert tab_stops == [list_start]
    # "Kính gửi:" hangs out by its own width plus a small space, so the first dash stands
    # right after the colon and every other dash under it.
    label_start = list_start + first.paragraph_format.first_line_indent
    after_colon = mm(list_start) - mm(label_start) - measure(ADDRESSEE_LABEL, 14)
    assert 0.5 < after_colon < 2.5
    for paragraph in others:
        assert paragraph.paragraph_format.left_indent == list_start
        assert not paragraph.paragraph_format.first_line_indent
        assert paragraph.text.startswith("- ")
    assert lines[-1].endswith(".") and all(line.endswith(";") for line in lines[:-1])
    assert formatting_of(document, first) == (14, False, False)


def test_one_addressee_stands_on_the_label_line():
    letter = sample_letter(4321, ISSUED, addressees=1)
    document = read(render_docx(letter))
    line = f"{ADDRESSEE_LABEL}\t{letter.addressees[0]}."
    assert find(document, line).style.name == "Addressee"
    assert sum(p.style.name == "Addressee" for p in document_order(document)) == 1


# --- signature block --------------------------------------------------------------------------


def test_signature_block_is_a_borderless_two_column_table(seed, seed_docx):
    document = read(seed_docx)
    table = next(
        t for t in document.tables if t.cell(0, 0).paragraphs[0].text == DISTRIBUTION_LABEL
    )
    assert len(table.columns) == 2 and len(table.rows) == 1
    assert table_borders(table) == {"nil"}
    assert table_margins(table) == {"top": "0", "left": "0", "bottom": "0", "right": "0"}
    widths = [c.width for c in table.columns]
    assert [c.width for c in table.rows[0].cells] == widths
    left = [p.text for p in table.cell(0, 0).paragraphs]
    right = [p.text for p in table.cell(0, 1).paragraphs]
    assert left == [DISTRIBUTION_LABEL, *formatting.distribution_lines(seed)]
    assert right == [*formatting.signer_title_lines(seed), seed.signer.name]
    name = table.cell(0, 1).paragraphs[-1]
    assert name.paragraph_format.space_before >= Mm(20)  # room for the signature
    assert table.rows[0]._tr.trPr.find(qn("w:cantSplit")) is not None


# --- core properties and determinism ----------------------------------------------------------


def test_core_properties_name_the_letter():
    letter = sample_letter(4321, ISSUED)
    properties = read(render_docx(letter)).core_properties
    assert properties.title == (
        "Công văn số 4321/THH-VP V/v triển khai ứng dụng PC-Covid trên địa bàn các tỉnh, thành phố"
    )
    assert properties.author == "Cục Tin học hoá"
    assert properties.language == "vi-VN"
    # Midnight of 15/11/2021 in Vietnam.
    assert properties.created == dt.datetime(2021, 11, 14, 17, 0, tzinfo=dt.UTC)
    assert properties.modified == properties.created
    draft = read(render_docx(sample_letter())).core_properties
    assert draft.title == formatting.subject_line(sample_letter())  # no blank number
    assert draft.created == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def test_the_same_letter_gives_the_same_bytes(seed):
    first = render_docx(seed)
    assert render_docx(seed) == first
    with zipfile.ZipFile(io.BytesIO(first)) as package:
        stamps = {info.date_time for info in package.infolist()}
        names = package.namelist()
    assert stamps == {(2021, 11, 14, 17, 0, 0)}
    assert "docProps/thumbnail.jpeg" not in names
    other = render_docx(replace(seed, number=4322))
    assert other != first


# --- LibreOffice round trip ---------------------------------------------------------------------


TOP_MARGIN = Mm(18).pt  # a little less than the 20 mm margin: only a page number stands there


def split_page(page: pypdf.PageObject) -> tuple[list[str], str]:
    """(texts printed in the top margin, the rest of the page's text)."""
    height = float(page.mediabox.height)
    top: list[str] = []
    rest: list[str] = []

    def visit(text, cm, tm, font, size) -> None:
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        (top if y > height - TOP_MARGIN else rest).append(text)

    page.extract_text(visitor_text=visit)
    return [t.strip() for t in top if t.strip()], "".join(rest)


def collapse(text: str) -> str:
    return " ".join(text.split())


def missing_sentences(letter: Letter, reader: pypdf.PdfReader) -> list[str]:
    """The letter's sentences that the PDF's text (page numbers left out) does not hold."""
    text = collapse(" ".join(split_page(page)[1] for page in reader.pages))
    out = []
    for paragraph in expected_texts(letter):
        for sentence in re.split(r"(?<=[.;:!?])\s+", paragraph.replace("\t", " ")):
            if sentence.strip() and collapse(sentence) not in text:
                out.append(sentence)
    return out


def save_pages(pdf: Path, prefix: Path) -> list[Path]:
    subprocess.run(["pdftoppm", "-r", "60", "-png", str(pdf), str(prefix)], check=True)
    return sorted(prefix.parent.glob(f"{prefix.name}-*.png"))


@pytest.mark.slow
def test_libreoffice_shows_the_seed_letter_as_the_pdf_does(
    seed, seed_docx, libreoffice, artifacts_dir, tmp_path
):
    from dispatch.letters.pdf import render_pdf

    docx = tmp_path / "seed-letter.docx"
    docx.write_bytes(seed_docx)
    converted = libreoffice(docx)
    (artifacts_dir / "docx-seed-letter.docx").write_bytes(seed_docx)
    (artifacts_dir / "docx-seed-letter-libreoffice.pdf").write_bytes(converted.read_bytes())
    for old in artifacts_dir.glob("docx-seed-letter-libreoffice-*.png"):
        old.unlink()
    assert save_pages(converted, artifacts_dir / "docx-seed-letter-libreoffice")

    ours = pypdf.PdfReader(io.BytesIO(render_pdf(seed)))
    theirs = pypdf.PdfReader(converted)
    assert len(theirs.pages) == len(ours.pages)
    assert missing_sentences(seed, theirs) == []
    assert split_page(theirs.pages[0])[0] == []  # no number on page 1
    assert split_page(theirs.pages[1])[0] == ["2"]


@pytest.mark.slow
def test_libreoffice_numbers_pages_from_two_and_restarts_in_each_appendix(
    libreoffice, artifacts_dir, tmp_path
):
    from dispatch.letters.pdf import render_pdf

    letter = long_letter()
    data = render_docx(letter)
    docx = tmp_path / "long-letter.docx"
    docx.write_bytes(data)
    converted = libreoffice(docx)
    for old in artifacts_dir.glob("docx-long-letter-libreoffice-*.png"):
        old.unlink()
    save_pages(converted, artifacts_dir / "docx-long-letter-libreoffice")

    ours = pypdf.PdfReader(io.BytesIO(render_pdf(letter)))
    reader = pypdf.PdfReader(converted)
    assert len(reader.pages) == len(ours.pages)
    assert missing_sentences(letter, reader) == []

    pages = [split_page(page) for page in reader.pages]
    # Where each section starts: the letter on page 1, each appendix on a fresh page.
    starts = [0] + [i for i, (_, text) in enumerate(pages) if text.lstrip().startswith("Phụ lục")]
    assert len(starts) == 1 + len(letter.appendices)
    ends = [*starts[1:], len(pages)]
    for start, end in zip(starts, ends, strict=True):
        assert pages[start][0] == []  # no number on a first page
        for offset in range(1, end - start):
            assert pages[start + offset][0] == [str(offset + 1)]
    assert ends[0] - starts[0] >= 2 and ends[1] - starts[1] >= 2  # both run over a page
    # The number is centred over the text (30 mm from the left edge, 165 mm wide).
    with pdfplumber.open(converted) as document:
        number = next(w for w in document.pages[1].extract_words() if w["text"] == "2")
    centre = (number["x0"] + number["x1"]) / 2
    assert abs(centre - Mm(30 + 165 / 2).pt) < Mm(2).pt
