"""The PDF renderer, checked by reading the PDF back: text, positions, sizes, fonts, safety.

Positions are in PDF points from the top-left corner (pdfplumber's ``top``/``bottom``/``x0``/
``x1``); a baseline is read from each character's text matrix. 1 mm = 72 / 25.4 pt.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import itertools
import re
import shutil
import socket
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pdfplumber
import pytest
from pypdf import PdfReader

from dispatch.letters import formatting, pdf
from dispatch.letters.model import Block, BlockKind, Letter, Span, Urgency
from dispatch.letters.pdf import RenderError, render_pdf
from tests.letter_samples import sample_letter, seed_letter

pytestmark = pytest.mark.nodb

MM = 72 / 25.4
PAGE_W, PAGE_H = 595.28, 841.89
LEFT, RIGHT, TOP, BOTTOM = 30 * MM, (210 - 15) * MM, 20 * MM, (297 - 20) * MM
TEXT_CENTRE = (LEFT + RIGHT) / 2
ISSUED = dict(number=4321, date=dt.date(2021, 11, 15))
POPPLER = shutil.which("pdftotext") and shutil.which("pdffonts") and shutil.which("pdftoppm")
needs_poppler = pytest.mark.skipif(not POPPLER, reason="poppler-utils is not installed")


# --------------------------------------------------------------------------- reading helpers


class Doc:
    """A rendered PDF opened with pdfplumber, with the lookups the tests need."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.plumber = pdfplumber.open(io.BytesIO(data))
        self.pages = self.plumber.pages

    def find(self, text: str, page: int = 0) -> list[dict]:
        """Every occurrence of ``text`` on a page, with its chars."""
        return self.pages[page].search(text, regex=False, return_chars=True)

    def one(self, text: str, page: int = 0) -> dict:
        """The first occurrence of ``text`` on the page; fails if there is none."""
        found = self.find(text, page)
        assert found, f"{text!r} not found on page {page + 1}"
        return found[0]

    def heading_page(self, text: str) -> int:
        """The first page (0-based) with a line that reads exactly ``text``."""
        for index in range(len(self.pages)):
            if any(line["text"] == text for line in self.lines(index)):
                return index
        raise AssertionError(f"no line reads {text!r}")

    def page_of(self, text: str) -> int:
        """The first page (0-based) that shows ``text``."""
        for index in range(len(self.pages)):
            if self.find(text, index):
                return index
        raise AssertionError(f"{text!r} is on no page")

    def lines(self, page: int = 0) -> list[dict]:
        """Text lines of a page, top to bottom."""
        return self.pages[page].extract_text_lines(return_chars=True)

    def body_text(self) -> str:
        """All text inside the margins (page numbers left out), whitespace collapsed."""
        parts = []
        for page in self.pages:
            inside = page.crop((0, TOP - 1, page.width, page.height))
            parts.append(inside.extract_text())
        return " ".join(" ".join(parts).split())


def baseline(char: dict, page_height: float = PAGE_H) -> float:
    """The char's baseline, measured from the top of the page."""
    return page_height - char["matrix"][5]


def style_of(match: dict) -> set[tuple[float, str]]:
    """(size rounded to 0.1 pt, face) of the non-space chars of a match."""
    faces = set()
    for char in match["chars"]:
        if char["text"].isspace():
            continue
        face = char["fontname"].split("+", 1)[-1]
        faces.add((round(char["size"], 1), face))
    return faces


REGULAR, BOLD = "Liberation-Serif", "Liberation-Serif-Bold"
ITALIC, BOLD_ITALIC = "Liberation-Serif-Italic", "Liberation-Serif-Bold-Italic"


def horizontal_rules(doc: Doc, page: int = 0) -> list[dict]:
    """Thin horizontal filled rectangles or lines (the drawn rules)."""
    shapes = doc.pages[page].rects + doc.pages[page].lines
    return [s for s in shapes if s["bottom"] - s["top"] < 1.5 and s["x1"] - s["x0"] > 10]


def pdftotext(data: bytes, tmp_path: Path, *, crop: bool = True) -> str:
    """pdftotext's reading of the PDF; ``crop`` leaves out the top and bottom margins."""
    path = tmp_path / "out.pdf"
    path.write_bytes(data)
    args = ["pdftotext", "-enc", "UTF-8"]
    if crop:
        args += ["-x", "0", "-y", str(int(TOP)), "-W", "596", "-H", str(int(BOTTOM - TOP) + 1)]
    return subprocess.run(
        [*args, str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def collapse(text: str) -> str:
    return " ".join(text.split())


def long_letter(**issued) -> Letter:
    """A letter whose body runs over two pages and whose first appendix does too."""
    letter = sample_letter(**issued)
    extra = tuple(
        Block(
            BlockKind.PARAGRAPH,
            (
                Span(
                    f"Nội dung bổ sung thứ {i}: các Sở phối hợp kiểm tra, đôn đốc việc triển "
                    "khai và tổng hợp kết quả thực hiện trên địa bàn tỉnh, thành phố."
                ),
            ),
        )
        for i in range(1, 14)
    )
    first = letter.appendices[0]
    first = dataclasses.replace(first, body=extra + extra + first.body)
    return dataclasses.replace(
        letter, body=extra + letter.body, appendices=(first, *letter.appendices[1:])
    )


def seed_or_skip(**issued) -> Letter:
    """The seed letter; skipped only while the source parser is the placeholder."""
    from dispatch.letters.source import LetterSourceError

    try:
        return seed_letter(**issued)
    except LetterSourceError as exc:
        if "parser not written yet" in str(exc):
            pytest.skip("dispatch/letters/source.py is still the placeholder (no parser yet)")
        raise


def block_sentences(blocks: tuple[Block, ...]) -> Iterator[str]:
    """The printed text of each non-table block, marker included."""
    for block in blocks:
        if block.kind is BlockKind.TABLE:
            continue
        yield f"{block.marker} {block.text}".strip()


def table_words(blocks: tuple[Block, ...]) -> Iterator[str]:
    for block in blocks:
        for row in block.rows:
            for cell in row:
                yield from "".join(span.text for span in cell).split()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sample() -> Letter:
    return sample_letter(**ISSUED)


@pytest.fixture(scope="module")
def sample_doc(sample: Letter) -> Doc:
    return Doc(render_pdf(sample))


@pytest.fixture(scope="module")
def long_doc() -> Doc:
    return Doc(render_pdf(long_letter(**ISSUED)))


@pytest.fixture(scope="module")
def seed() -> Letter:
    return seed_or_skip(**ISSUED)


@pytest.fixture(scope="module")
def seed_doc(seed: Letter) -> Doc:
    return Doc(render_pdf(seed))


@pytest.fixture(params=["sample", "long", "seed"])
def any_doc(request: pytest.FixtureRequest) -> Doc:
    return request.getfixturevalue(f"{request.param}_doc")


# --------------------------------------------------------------------------- page and text


def test_pages_are_a4(any_doc: Doc) -> None:
    for page in any_doc.pages:
        assert page.width == pytest.approx(PAGE_W, abs=0.01)
        assert page.height == pytest.approx(PAGE_H, abs=0.01)


def test_text_stays_inside_the_margins(any_doc: Doc) -> None:
    # A justified line's end wanders by up to ~0.8 pt around the margin as read back (glyph
    # widths in the PDF are rounded to thousandths of an em): allow 1.5 pt, about 0.5 mm.
    tolerance = 1.5
    for number, page in enumerate(any_doc.pages, start=1):
        for char in page.chars:
            if char["text"].isspace():
                continue
            assert char["x0"] >= LEFT - tolerance, (number, char["text"], char["x0"])
            assert char["x1"] <= RIGHT + tolerance, (number, char["text"], char["x1"])
            assert char["bottom"] <= BOTTOM + tolerance, (number, char["text"], char["bottom"])
            if char["top"] < TOP - tolerance:
                # Only the page number lives in the top margin.
                assert char["text"].isdigit() and char["bottom"] < TOP, (number, char)


def test_every_sentence_of_the_sample_is_printed_in_nfc(sample: Letter, sample_doc: Doc) -> None:
    text = sample_doc.body_text()
    assert unicodedata.is_normalized("NFC", text)
    expected = [
        formatting.number_line(sample),
        formatting.place_date_line(sample),
        *formatting.addressee_lines(sample),
        *block_sentences(sample.body),
        *formatting.signer_title_lines(sample),
        sample.signer.name,
        *formatting.distribution_lines(sample),
    ]
    for appendix in sample.appendices:
        expected += [
            formatting.appendix_heading(appendix.numeral),
            appendix.title.upper(),
            formatting.appendix_reference_line(sample),
            *block_sentences(appendix.body),
        ]
    for sentence in expected:
        assert collapse(sentence) in text, sentence
    for word in table_words(sample.appendices[0].body):
        assert word in text


@needs_poppler
def test_pdftotext_reads_the_letter(sample: Letter, sample_doc: Doc, tmp_path: Path) -> None:
    text = collapse(pdftotext(sample_doc.data, tmp_path))
    assert unicodedata.is_normalized("NFC", text)
    for sentence in block_sentences(sample.body):
        assert collapse(sentence) in text
    assert "Số: 4321/THH-VP" in text
    assert "Hà Nội, ngày 15 tháng 11 năm 2021" in text


def test_nfd_input_comes_out_nfc() -> None:
    sentence = "Đề nghị Quý Sở triển khai ứng dụng trên địa bàn tỉnh Thừa Thiên Huế."
    decomposed = unicodedata.normalize("NFD", sentence)
    assert decomposed != sentence
    letter = sample_letter(appendices=False)
    letter = dataclasses.replace(
        letter, body=(Block(BlockKind.PARAGRAPH, (Span(decomposed),)), *letter.body)
    )
    assert sentence in Doc(render_pdf(letter)).body_text()


def test_metadata(sample_doc: Doc) -> None:
    reader = PdfReader(io.BytesIO(sample_doc.data))
    assert reader.metadata.title == (
        "Công văn số 4321/THH-VP V/v triển khai ứng dụng PC-Covid trên địa bàn các tỉnh, thành phố"
    )
    assert reader.metadata.author == "Cục Tin học hoá"
    assert reader.trailer["/Root"]["/Lang"] == "vi"


# --------------------------------------------------------------------------- fonts


@needs_poppler
def test_only_embedded_liberation_serif(any_doc: Doc, tmp_path: Path) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(any_doc.data)
    report = subprocess.run(
        ["pdffonts", str(path)], check=True, capture_output=True, text=True
    ).stdout
    rows = report.splitlines()[2:]
    assert rows, report
    faces = set()
    for row in rows:
        name, *_, emb, sub, _uni, _obj, _gen = row.split()
        assert (emb, sub) == ("yes", "yes"), row
        faces.add(name.split("+", 1)[1])
    assert faces <= {REGULAR, BOLD, ITALIC, BOLD_ITALIC}, faces
    assert {REGULAR, BOLD, ITALIC} <= faces


@pytest.mark.parametrize(
    ("where", "char", "name"),
    [
        ("body", "𝕏", "U+1D54F"),
        ("subject", "中", "U+4E2D"),
        ("appendix", "✓", "U+2713"),
    ],
)
def test_a_character_the_font_lacks_is_refused(where: str, char: str, name: str) -> None:
    letter = sample_letter(**ISSUED)
    if where == "body":
        body = list(letter.body)
        body[2] = Block(BlockKind.SECTION, (Span(f"Theo dõi mục {char} trên bảng."),), "2.")
        letter = dataclasses.replace(letter, body=tuple(body))
        place = "thân công văn, đoạn 3"
    elif where == "subject":
        letter = dataclasses.replace(letter, subject=f"triển khai {char} ứng dụng")
        place = "trích yếu"
    else:
        first = letter.appendices[0]
        first = dataclasses.replace(first, title=f"Danh mục {char}")
        letter = dataclasses.replace(letter, appendices=(first, *letter.appendices[1:]))
        place = "Phụ lục I, tiêu đề"
    with pytest.raises(RenderError) as raised:
        render_pdf(letter)
    message = str(raised.value)
    assert name in message and char in message and place in message


def test_missing_font_files_are_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(pdf.FONT_FILES.values())[1:]:
        shutil.copy(pdf.FONT_DIR / name, tmp_path / name)
    monkeypatch.setattr(pdf, "FONT_DIR", tmp_path)
    with pytest.raises(RenderError, match=r"LiberationSerif-Regular\.ttf"):
        pdf.font_paths()
    with pytest.raises(RenderError, match=r"LiberationSerif-Regular\.ttf"):
        pdf._Engine()


def test_a_fallback_font_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even past the glyph check, a PDF that used a system font is refused."""
    if (
        not shutil.which("fc-list")
        or not subprocess.run(
            ["fc-list", ":charset=2713"], capture_output=True, text=True
        ).stdout.strip()
    ):
        pytest.skip("no system font has U+2713, so nothing to fall back to here")
    engine = pdf._get_engine()
    monkeypatch.setattr(engine.coverage, "codepoints", engine.coverage.codepoints | {ord("✓")})
    letter = dataclasses.replace(sample_letter(appendices=False), subject="kiểm tra ✓")
    with pytest.raises(RenderError, match="phông chữ ngoài"):
        render_pdf(letter)


# --------------------------------------------------------------------------- header


def test_header_sizes_and_faces(any_doc: Doc) -> None:
    doc = any_doc
    assert style_of(doc.one("BỘ THÔNG TIN VÀ TRUYỀN THÔNG")) == {(12.0, REGULAR)}
    assert style_of(doc.one("CỤC TIN HỌC HOÁ")) == {(12.0, BOLD)}
    assert style_of(doc.one("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM")) == {(12.0, BOLD)}
    assert style_of(doc.one("Độc lập - Tự do - Hạnh phúc")) == {(13.0, BOLD)}
    assert style_of(doc.one("Số: 4321/THH-VP")) == {(13.0, REGULAR)}
    assert style_of(doc.one("Hà Nội, ngày 15 tháng 11 năm 2021")) == {(13.0, ITALIC)}
    assert style_of(doc.one("V/v ")) == {(12.0, REGULAR)}


def test_number_and_date_share_a_line_and_the_subject_follows(sample_doc: Doc) -> None:
    number = sample_doc.one("Số: 4321/THH-VP")
    date = sample_doc.one("Hà Nội, ngày 15 tháng 11 năm 2021")
    assert baseline(number["chars"][0]) == pytest.approx(baseline(date["chars"][0]), abs=0.1)
    subject = sample_doc.one("V/v triển khai")
    assert subject["top"] - number["bottom"] >= 6 - 0.5
    # The subject wraps over lines centred like the number, inside the left column.
    lines = [
        line
        for line in sample_doc.lines()
        if subject["top"] - 1 <= line["top"] and line["bottom"] < sample_doc.one("Kính gửi")["top"]
    ]
    assert len(lines) >= 2
    number_centre = (number["x0"] + number["x1"]) / 2
    for line in lines:
        assert (line["x0"] + line["x1"]) / 2 == pytest.approx(number_centre, abs=1)
        assert line["x1"] < TEXT_CENTRE


def test_header_columns_never_touch(any_doc: Doc) -> None:
    doc = any_doc
    pairs = [
        ("BỘ THÔNG TIN VÀ TRUYỀN THÔNG", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"),
        ("CỤC TIN HỌC HOÁ", "Độc lập - Tự do - Hạnh phúc"),
        ("Số: 4321/THH-VP", "Hà Nội, ngày 15 tháng 11 năm 2021"),
    ]
    for left_text, right_text in pairs:
        left, right = doc.one(left_text), doc.one(right_text)
        assert right["x0"] - left["x1"] >= 4 * MM, (left_text, right["x0"] - left["x1"])
    # Nothing of the left column (subject lines included) reaches within 4 mm of the right one.
    right_x0 = min(doc.one(text)["x0"] for _, text in pairs)
    limit = doc.one("Kính gửi")["top"]
    for char in doc.pages[0].chars:
        if char["top"] < limit and char["x0"] < TEXT_CENTRE - 30 and not char["text"].isspace():
            assert char["x1"] <= right_x0 - 4 * MM, char["text"]


def test_rules_under_the_agency_and_the_motto(any_doc: Doc) -> None:
    doc = any_doc
    agency = doc.one("CỤC TIN HỌC HOÁ")
    motto = doc.one("Độc lập - Tự do - Hạnh phúc")
    number = doc.one("Số: 4321/THH-VP")
    rules = horizontal_rules(doc)

    def under(text: dict) -> dict:
        found = [
            r
            for r in rules
            if text["bottom"] - 1 <= r["top"] < number["top"]
            and r["x0"] < (text["x0"] + text["x1"]) / 2 < r["x1"]
        ]
        assert len(found) == 1, found
        return found[0]

    agency_rule, motto_rule = under(agency), under(motto)
    agency_width = agency["x1"] - agency["x0"]
    assert agency_width / 3 - 1 <= agency_rule["x1"] - agency_rule["x0"] <= agency_width / 2 + 1
    assert (agency_rule["x0"] + agency_rule["x1"]) / 2 == pytest.approx(
        (agency["x0"] + agency["x1"]) / 2, abs=1
    )
    assert motto_rule["x0"] == pytest.approx(motto["x0"], abs=2)
    assert motto_rule["x1"] == pytest.approx(motto["x1"], abs=2)


def test_blank_number_and_day_before_issuing(tmp_path: Path) -> None:
    draft = Doc(render_pdf(sample_letter()))
    number = draft.one("Số:")
    symbol = draft.one("/THH-VP")
    assert baseline(number["chars"][0]) == pytest.approx(baseline(symbol["chars"][0]), abs=0.1)
    # The blank is a visible gap (spaces), not digits.
    assert symbol["x0"] - number["x1"] > 10
    between = [
        c
        for c in draft.pages[0].chars
        if number["x1"] <= c["x0"] < symbol["x0"] and abs(c["top"] - number["top"]) < 2
    ]
    assert all(c["text"].isspace() for c in between)
    day = draft.one("ngày")
    month = draft.one("tháng 11 năm 2021")
    assert month["x0"] - day["x1"] > 10
    text = draft.body_text()
    assert re.search(r"Số:\s+/THH-VP", text)
    assert re.search(r"ngày\s+tháng 11 năm 2021", text)
    assert re.search(r"Kèm theo Công văn số\s+/THH-VP ngày\s+tháng 11 năm 2021", text)
    if POPPLER:
        read = pdftotext(draft.data, tmp_path)
        assert re.search(r"Số:\s+/THH-VP", read)
        assert re.search(r"Hà Nội, ngày\s+tháng 11 năm 2021", read)


def test_number_seven_on_3_february_2022() -> None:
    doc = Doc(render_pdf(sample_letter(number=7, date=dt.date(2022, 2, 3))))
    doc.one("Số: 07/THH-VP")
    doc.one("Hà Nội, ngày 03 tháng 02 năm 2022")
    assert "(Kèm theo Công văn số 07/THH-VP ngày 03 tháng 02 năm 2022 của Cục Tin học hoá)" in (
        doc.body_text()
    )


def test_urgency_stamp_is_boxed_under_the_subject() -> None:
    letter = dataclasses.replace(sample_letter(**ISSUED), urgency=Urgency.VERY_URGENT)
    doc = Doc(render_pdf(letter))
    stamp = doc.one("THƯỢNG KHẨN")
    assert style_of(stamp) <= {(13.0, BOLD)}
    subject = doc.one("V/v triển khai")
    assert stamp["top"] > subject["bottom"]
    assert stamp["x1"] < TEXT_CENTRE
    boxes = [
        r
        for r in doc.pages[0].rects
        if r["x0"] < stamp["x0"]
        and r["x1"] > stamp["x1"]
        and r["top"] < stamp["top"]
        and r["bottom"] > stamp["bottom"]
        and r["bottom"] - r["top"] < 30
    ]
    assert boxes
    assert not Doc(render_pdf(sample_letter(**ISSUED))).find("KHẨN")


# --------------------------------------------------------------------------- addressees, body


def test_several_addressees_have_aligned_dashes(sample_doc: Doc) -> None:
    label = sample_doc.one("Kính gửi:")
    assert style_of(label) == {(14.0, REGULAR)}
    first = sample_doc.one("- Sở Thông tin và Truyền thông các tỉnh")
    second = sample_doc.one("- Sở Văn hoá, Thông tin")
    assert baseline(first["chars"][0]) == pytest.approx(baseline(label["chars"][0]), abs=0.1)
    assert second["top"] > first["bottom"]
    assert first["x0"] == pytest.approx(second["x0"], abs=0.3)
    assert 0 <= first["x0"] - label["x1"] <= 8


def test_one_addressee_stands_on_the_label_line() -> None:
    doc = Doc(render_pdf(sample_letter(addressees=1, appendices=False)))
    label = doc.one("Kính gửi:")
    addressee = doc.one("Sở Thông tin và Truyền thông các tỉnh")
    assert baseline(addressee["chars"][0]) == pytest.approx(baseline(label["chars"][0]), abs=0.1)
    assert not doc.find("- Sở Thông tin")


def paragraph_starts(doc: Doc, letter_blocks: tuple[Block, ...], page_count: int) -> list[dict]:
    starts = []
    for sentence in block_sentences(letter_blocks):
        head = sentence[:18]
        for page in range(page_count):
            found = doc.find(head, page)
            if found:
                starts.append(found[0])
                break
        else:
            raise AssertionError(head)
    return starts


def test_body_is_14pt_with_a_first_line_indent(sample: Letter, sample_doc: Doc) -> None:
    for start in paragraph_starts(sample_doc, sample.body, 1):
        assert {size for size, _ in style_of(start)} == {14.0}
        assert start["x0"] - LEFT == pytest.approx(12.7 * MM, abs=0.5)


def test_body_is_justified(sample_doc: Doc) -> None:
    lines = sample_doc.lines()
    first = sample_doc.one("Thực hiện chỉ đạo")["top"]
    # Stop above the signature block (its title line sits a little higher than "Nơi nhận:").
    end = sample_doc.one("Nơi nhận:")["top"] - 5
    body = [line for line in lines if first - 1 <= line["top"] < end]
    checked = 0
    for line, following in itertools.pairwise(body):
        if abs(following["x0"] - LEFT) < 1:  # the next line continues this paragraph
            assert line["x1"] == pytest.approx(RIGHT, abs=1), line["text"]
            checked += 1
    assert checked >= 5
    # Last lines of paragraphs are left ragged, not stretched.
    assert any(line["x1"] < RIGHT - 20 for line in body)


def test_paragraphs_are_at_least_6pt_apart(sample: Letter, sample_doc: Doc) -> None:
    starts = paragraph_starts(sample_doc, sample.body, 1)
    lines = sample_doc.lines()
    for start in starts[1:]:
        above = [line for line in lines if line["bottom"] <= start["top"] + 0.1]
        previous = max(above, key=lambda line: line["bottom"])
        line_pitch = 14 * 1.25
        gap = baseline(start["chars"][0]) - baseline(previous["chars"][0])
        assert gap >= line_pitch + 6 - 0.5, (start["text"], gap)


def test_body_ends_with_the_closing_mark(sample_doc: Doc) -> None:
    label = sample_doc.one("Nơi nhận:")
    above = [line for line in sample_doc.lines() if line["bottom"] < label["top"]]
    assert above[-1]["text"].endswith("./.")


def test_bold_and_italic_spans(sample_doc: Doc) -> None:
    assert style_of(sample_doc.one("trước ngày 30 tháng 11 năm 2021")) == {(14.0, BOLD)}
    assert style_of(sample_doc.one("vanthu@thh.gov.vn")) == {(14.0, ITALIC)}
    assert style_of(sample_doc.one("Thời hạn báo cáo:")) == {(14.0, REGULAR)}


def test_document_numbers_do_not_break(sample_doc: Doc) -> None:
    for token in ("1015/TTg-KGVX", "vắc-xin", "PC-Covid", "024.3943.6789"):
        match = sample_doc.one(token)
        assert len({round(c["top"]) for c in match["chars"]}) == 1, token


def test_no_line_of_the_seed_breaks_inside_a_number_or_hyphenated_word(
    seed: Letter, seed_doc: Doc
) -> None:
    lines = "\n".join(
        line["text"] for page in range(len(seed_doc.pages)) for line in seed_doc.lines(page)
    )
    texts = list(block_sentences(seed.body)) + list(table_words(seed.body))
    for appendix in seed.appendices:
        texts += list(block_sentences(appendix.body)) + list(table_words(appendix.body))
    tokens = {t for text in texts for t in re.findall(r"\w+(?:[/-]\w+)+", text)}
    assert len(tokens) > 10
    for token in tokens:
        assert token in lines, token


def test_table_block_is_bordered_13pt(sample_doc: Doc) -> None:
    page = sample_doc.page_of("Đơn vị chủ trì")
    header = sample_doc.one("Đơn vị chủ trì", page)
    cell = sample_doc.one("Rà soát mã QR địa điểm", page)
    assert style_of(header) == {(13.0, BOLD)}
    assert style_of(cell) == {(13.0, REGULAR)}
    shapes = sample_doc.pages[page].rects + sample_doc.pages[page].lines
    verticals = [s for s in shapes if s["x1"] - s["x0"] < 1.5 and s["bottom"] - s["top"] > 10]
    horizontals = [s for s in shapes if s["bottom"] - s["top"] < 1.5 and s["x1"] - s["x0"] > 10]
    assert len(verticals) >= 5 and len(horizontals) >= 4


# --------------------------------------------------------------------------- signature


def test_signature_block(sample: Letter, sample_doc: Doc) -> None:
    doc = sample_doc
    label = doc.one("Nơi nhận:")
    assert style_of(label) == {(12.0, BOLD_ITALIC)}
    assert label["x0"] == pytest.approx(LEFT, abs=0.5)
    for line in formatting.distribution_lines(sample):
        match = doc.one(line)
        assert style_of(match) == {(11.0, REGULAR)}
        assert match["x0"] == pytest.approx(LEFT, abs=0.5)
    title_lines = [doc.one(line) for line in formatting.signer_title_lines(sample)]
    name = doc.one(sample.signer.name)
    for match in (*title_lines, name):
        assert style_of(match) == {(14.0, BOLD)}
    # "Nơi nhận:" is level with the first title line.
    assert baseline(label["chars"][0]) == pytest.approx(
        baseline(title_lines[0]["chars"][0]), abs=0.5
    )
    # Title and name are centred on one axis in the right half, with room to sign between.
    centres = [(m["x0"] + m["x1"]) / 2 for m in (*title_lines, name)]
    assert max(centres) - min(centres) < 1
    assert centres[0] > TEXT_CENTRE
    assert 25 * MM <= name["top"] - title_lines[-1]["bottom"] <= 32 * MM


def test_head_signing_personally_has_one_title_line() -> None:
    letter = sample_letter(**ISSUED, appendices=False)
    letter = dataclasses.replace(
        letter, signer=dataclasses.replace(letter.signer, authority=None, title="Cục trưởng")
    )
    doc = Doc(render_pdf(letter))
    assert style_of(doc.one("CỤC TRƯỞNG")) == {(14.0, BOLD)}
    assert not doc.find("KT.")


# --------------------------------------------------------------------------- pages


def page_number_of(doc: Doc, page: int) -> str | None:
    """The page number printed in the top margin (checked 13 pt and centred), if any."""
    chars = [c for c in doc.pages[page].chars if c["bottom"] < TOP and not c["text"].isspace()]
    if not chars:
        return None
    assert {round(c["size"], 1) for c in chars} == {13.0}
    centre = (min(c["x0"] for c in chars) + max(c["x1"] for c in chars)) / 2
    assert centre == pytest.approx(TEXT_CENTRE, abs=1)
    return "".join(c["text"] for c in chars)


def test_page_numbers(long_doc: Doc) -> None:
    doc = long_doc
    appendix_i, appendix_ii = doc.heading_page("Phụ lục I"), doc.heading_page("Phụ lục II")
    assert appendix_i == 2, "the letter itself spans two pages"
    assert appendix_ii == appendix_i + 2, "appendix I spans two pages"
    assert [page_number_of(doc, page) for page in range(len(doc.pages))] == [
        None,  # the letter's first page
        "2",
        None,  # appendix I restarts at 1, unprinted on its first page
        "2",
        None,  # appendix II restarts too
    ]


def test_seed_page_numbers(seed: Letter, seed_doc: Doc) -> None:
    starts = [0] + [
        seed_doc.heading_page(formatting.appendix_heading(a.numeral)) for a in seed.appendices
    ]
    assert starts == sorted(set(starts)), "each appendix starts its own page"
    expected = []
    for page in range(len(seed_doc.pages)):
        first = max(start for start in starts if start <= page)
        expected.append(None if page == first else str(page - first + 1))
    assert [page_number_of(seed_doc, page) for page in range(len(seed_doc.pages))] == expected
    assert expected[1] == "2", "the seed letter itself runs over two pages"


@pytest.mark.parametrize("name", ["long", "seed"])
def test_each_appendix_starts_a_new_page(name: str, request: pytest.FixtureRequest) -> None:
    doc = request.getfixturevalue(f"{name}_doc")
    for numeral in ("I", "II"):
        page = doc.heading_page(f"Phụ lục {numeral}")
        lines = [line for line in doc.lines(page) if line["top"] > TOP]
        assert lines[0]["text"] == f"Phụ lục {numeral}"
        assert lines[0]["top"] == pytest.approx(TOP, abs=3)
        heading = lines[0]
        assert style_of(doc.one(f"Phụ lục {numeral}", page)) == {(14.0, BOLD)}
        assert (heading["x0"] + heading["x1"]) / 2 == pytest.approx(TEXT_CENTRE, abs=1)
        title = lines[1]
        assert title["text"] == title["text"].upper()
        assert {face for _, face in style_of(title)} == {BOLD}
        assert (title["x0"] + title["x1"]) / 2 == pytest.approx(TEXT_CENTRE, abs=1)
        reference = doc.one("(Kèm theo Công văn số 4321/THH-VP", page)
        assert style_of(reference) == {(14.0, ITALIC)}
        rule = next(r for r in horizontal_rules(doc, page) if r["top"] > reference["bottom"])
        assert (rule["x0"] + rule["x1"]) / 2 == pytest.approx(TEXT_CENTRE, abs=1)
        assert rule["x1"] - rule["x0"] < (RIGHT - LEFT) / 2
    # The appendix content's own last paragraph closes with "./.".
    last_page = doc.lines(len(doc.pages) - 1)
    assert last_page[-1]["text"].endswith("./.")


def test_a_letter_without_appendices_is_one_page() -> None:
    doc = Doc(render_pdf(sample_letter(**ISSUED, appendices=False)))
    assert len(doc.pages) == 1
    assert "Kèm theo" not in doc.body_text()


# --------------------------------------------------------------------------- safety


HOSTILE = (
    '<script>alert("x")</script> <img src=file:///etc/passwd> '
    '<link rel=attachment href=file:///etc/passwd> <a rel="attachment" '
    'href="file:///etc/hostname">tệp</a> <style>@import url(http://127.0.0.1:9/x.css);</style>'
)


def test_hostile_text_is_printed_literally_and_nothing_is_embedded() -> None:
    letter = sample_letter(**ISSUED)
    letter = dataclasses.replace(
        letter,
        subject="<b>in đậm</b> & <i>nghiêng</i>",
        body=(Block(BlockKind.PARAGRAPH, (Span(HOSTILE),)), *letter.body),
        appendices=(
            dataclasses.replace(letter.appendices[0], title='<link rel="attachment" href="x">'),
        ),
    )
    data = render_pdf(letter)
    doc = Doc(data)
    text = doc.body_text()
    # Lines may break after a "/" inside the URLs: compare without any whitespace.
    assert "".join(HOSTILE.split()) in "".join(text.split())
    assert "V/v <b>in đậm</b> & <i>nghiêng</i>" in text
    assert '<LINK REL="ATTACHMENT" HREF="X">' in text
    reader = PdfReader(io.BytesIO(data))
    assert reader.attachments == {}
    names = reader.trailer["/Root"].get("/Names")
    assert names is None or "/EmbeddedFiles" not in names
    for page in reader.pages:
        for annotation in page.get("/Annots") or []:
            assert annotation.get_object().get("/Subtype") != "/FileAttachment"
    assert b"/EmbeddedFile" not in data
    root_line = Path("/etc/passwd").read_text().splitlines()[0]
    assert root_line not in text


# --------------------------------------------------------------------------- the fetcher


@pytest.fixture()
def fetcher():
    from dispatch.letters.fetcher import FONT_TYPES, STYLE_TYPES, RestrictedURLFetcher

    return RestrictedURLFetcher({pdf.FONT_DIR: FONT_TYPES, pdf.TEMPLATE_DIR: STYLE_TYPES})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x.css",
        "https://example.org/font.ttf",
        "ftp://example.org/x",
        "data:text/css,body{}",
        "file:///etc/passwd",
        "file:///etc/hostname",
        "file://evil.example/share/x.ttf",
        f"{pdf.FONT_DIR.as_uri()}/../../../../../etc/passwd",
        f"{pdf.FONT_DIR.as_uri()}/LICENSE-OFL.txt",
        f"{pdf.FONT_DIR.as_uri()}/missing.ttf",
        f"{pdf.TEMPLATE_DIR.as_uri()}/letter.html",
    ],
)
def test_fetcher_refuses(fetcher, url: str) -> None:
    from dispatch.letters.fetcher import ForbiddenResource

    with pytest.raises(ForbiddenResource):
        fetcher.fetch(url)


def test_fetcher_serves_the_fonts_and_the_stylesheet(fetcher) -> None:
    font = pdf.FONT_DIR / "LiberationSerif-Regular.ttf"
    response = fetcher.fetch(font.as_uri())
    assert response.read() == font.read_bytes()
    assert response.content_type == "font/ttf"
    css = fetcher.fetch((pdf.TEMPLATE_DIR / "letter.css").as_uri())
    assert css.content_type == "text/css"


def test_fetcher_refuses_a_symlink_out_of_an_allowed_folder(tmp_path: Path) -> None:
    from dispatch.letters.fetcher import IMAGE_TYPES, ForbiddenResource, RestrictedURLFetcher

    allowed = tmp_path / "attachments"
    allowed.mkdir()
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG secret")
    (allowed / "link.png").symlink_to(outside)
    (allowed / "ok.png").write_bytes(b"\x89PNG fine")
    fetcher = RestrictedURLFetcher({allowed: IMAGE_TYPES})
    assert fetcher.fetch((allowed / "ok.png").as_uri()).read() == b"\x89PNG fine"
    with pytest.raises(ForbiddenResource):
        fetcher.fetch((allowed / "link.png").as_uri())


@pytest.fixture()
def listener() -> Iterator[socket.socket]:
    """A loopback port that would record any connection the renderer attempted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    yield server
    server.close()


@pytest.mark.parametrize(
    "html",
    [
        '<img src="file:///etc/passwd">',
        "<style>@import url(http://127.0.0.1:{port}/x.css);</style><p>x</p>",
        '<div style="background: url(file:///etc/hostname)">x</div>',
        '<link rel="attachment" href="file:///etc/passwd"><p>x</p>',
        '<a rel="attachment" href="file:///etc/passwd">x</a>',
        '<img src="http://127.0.0.1:{port}/x.png">',
    ],
)
def test_weasyprint_with_the_fetcher_stops_on_any_outside_url(
    fetcher, listener: socket.socket, html: str
) -> None:
    import weasyprint
    from weasyprint.urls import FatalURLFetchingError

    from dispatch.letters.fetcher import ForbiddenResource

    port = listener.getsockname()[1]
    document = weasyprint.HTML(string=html.format(port=port), url_fetcher=fetcher)
    with pytest.raises(FatalURLFetchingError) as raised:
        document.write_pdf()
    assert isinstance(raised.value.__cause__, ForbiddenResource)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected


def test_a_refused_fetch_during_a_render_is_a_render_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A template that named an outside resource would stop the render with a RenderError."""
    engine = pdf._get_engine()
    original = engine.html_template

    class Hostile:
        def render(self, **view):
            return original.render(**view).replace(
                "</head>", '<link rel="attachment" href="file:///etc/passwd"></head>'
            )

    monkeypatch.setattr(engine, "html_template", Hostile())
    with pytest.raises(RenderError, match="/etc/passwd"):
        render_pdf(sample_letter(appendices=False))


def test_anything_weasyprint_complains_about_is_a_render_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CSS it ignores or a resource it skips would change the layout silently."""
    engine = pdf._get_engine()
    original = engine.html_template

    class Sloppy:
        def render(self, **view):
            return original.render(**view).replace("<body>", '<body style="colr: red">')

    monkeypatch.setattr(engine, "html_template", Sloppy())
    with pytest.raises(RenderError, match="colr"):
        render_pdf(sample_letter(appendices=False))


# --------------------------------------------------------------------------- the seed letter


def test_seed_letter_prints_every_sentence(seed: Letter, seed_doc: Doc) -> None:
    text = seed_doc.body_text()
    assert unicodedata.is_normalized("NFC", text)
    for sentence in block_sentences(seed.body):
        assert collapse(sentence) in text, sentence
    for appendix in seed.appendices:
        for sentence in block_sentences(appendix.body):
            assert collapse(sentence) in text, sentence
        assert formatting.appendix_reference_line(seed) in text
    closing = [s for s in block_sentences(seed.body)][-1]
    assert closing.endswith("./.")


@needs_poppler
def test_seed_letter_artifacts(seed_doc: Doc, sample_doc: Doc, artifacts_dir: Path) -> None:
    """Leave the seed and sample PDFs and their pages as PNG for people to look at."""
    for name, doc in (("seed-letter", seed_doc), ("sample-letter", sample_doc)):
        target = artifacts_dir / f"{name}.pdf"
        target.write_bytes(doc.data)
        for old in artifacts_dir.glob(f"{name}-page-*.png"):
            old.unlink()
        subprocess.run(
            ["pdftoppm", "-r", "60", "-png", str(target), str(artifacts_dir / f"{name}-page")],
            check=True,
        )
        pages = sorted(artifacts_dir.glob(f"{name}-page-*.png"))
        assert len(pages) == len(doc.pages)
