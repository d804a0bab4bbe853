"""The Markdown body → blocks mapping (dispatch.letters.markup), without files."""

from __future__ import annotations

import unicodedata

import pytest

from dispatch.letters.markup import MarkupError, check_closing, parse_blocks, plain_text
from dispatch.letters.model import Block, BlockKind, Span

pytestmark = pytest.mark.nodb


def blocks(text: str, *, headings: bool = False) -> list[Block]:
    return [placed.block for placed in parse_blocks(text, headings=headings)]


def test_paragraphs_soft_and_hard_breaks() -> None:
    result = blocks("một\nhai  \nba\\\nbốn\n\nđoạn hai\n")
    assert [b.kind for b in result] == [BlockKind.PARAGRAPH, BlockKind.PARAGRAPH]
    # A soft break is a space; a hard break (two spaces or a backslash) is a new line.
    assert result[0].spans == (Span("một hai\nba\nbốn"),)
    assert result[1].text == "đoạn hai"


def test_emphasis_spans() -> None:
    (block,) = blocks("thường **đậm** *nghiêng* _nghiêng_ ***cả hai*** **đậm *và nghiêng***")
    assert block.spans == (
        Span("thường "),
        Span("đậm", bold=True),
        Span(" "),
        Span("nghiêng", italic=True),
        Span(" "),
        Span("nghiêng", italic=True),
        Span(" "),
        Span("cả hai", bold=True, italic=True),
        Span(" "),
        Span("đậm ", bold=True),
        Span("và nghiêng", bold=True, italic=True),
    )


def test_code_links_and_addresses_stay_plain_text() -> None:
    (block,) = blocks(
        "mã `a*b*c`, [cổng thông tin](https://example.vn) <https://mic.gov.vn> "
        "email dlhien@mic.gov.vn, www.mic.gov.vn, v.v.. và v.v... 1015/TTg-KGVX tỉnh/ thành phố"
    )
    assert block.spans == (
        Span(
            "mã a*b*c, cổng thông tin https://mic.gov.vn email dlhien@mic.gov.vn, www.mic.gov.vn, "
            "v.v.. và v.v... 1015/TTg-KGVX tỉnh/ thành phố"
        ),
    )


def test_raw_html_is_literal_text() -> None:
    (block,) = blocks('<script>alert("x")</script> và <b>đậm</b> &amp; \\*sao\\*')
    assert block.text == '<script>alert("x")</script> và <b>đậm</b> & *sao*'
    assert all(not span.bold for span in block.spans)
    # A raw HTML block on its own line is also kept as a paragraph of text.
    (html_block,) = blocks("<div>\nxin chào\n</div>\n")
    assert html_block.kind == BlockKind.PARAGRAPH
    assert html_block.text == "<div> xin chào </div>"


def test_entities_and_nfd_come_out_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Hoá đơn")
    (block,) = blocks(decomposed + " e&#x301;")
    assert block.text == "Hoá đơn é"
    assert unicodedata.is_normalized("NFC", block.text)


def test_literal_numbering_sections_dashes_pluses() -> None:
    text = "1. **Một**\n- dấu gạch\n+ dấu cộng\n\n2. Hai\n- tiếp\n"
    result = blocks(text)
    assert [(b.kind, b.marker, b.level, b.text) for b in result] == [
        (BlockKind.SECTION, "1.", 0, "Một"),
        (BlockKind.DASH, "-", 0, "dấu gạch"),
        (BlockKind.PLUS, "+", 0, "dấu cộng"),
        # "2." after a bullet list is a new ordered list that starts at 2.
        (BlockKind.SECTION, "2.", 0, "Hai"),
        (BlockKind.DASH, "-", 0, "tiếp"),
    ]
    assert result[0].spans == (Span("Một", bold=True),)
    assert plain_text(result) == ["1. Một", "- dấu gạch", "+ dấu cộng", "2. Hai", "- tiếp"]


def test_ordered_list_counts_from_its_start() -> None:
    result = blocks("3. ba\n4. bốn\n5) năm\n")
    assert [b.marker for b in result] == ["3.", "4.", "5)"]


def test_a_number_gap_is_an_error() -> None:
    with pytest.raises(MarkupError) as caught:
        parse_blocks("đoạn\n\n1. một\n3. ba\n")
    assert caught.value.line == 4
    assert "3." in caught.value.message and "2." in caught.value.message


def test_nesting_depth_and_multi_paragraph_items() -> None:
    text = "- ngoài\n\n  đoạn thứ hai của mục\n\n  + trong\n    - sâu hơn\n- ngoài hai\n"
    result = blocks(text)
    assert [(b.kind, b.marker, b.level, b.text) for b in result] == [
        (BlockKind.DASH, "-", 0, "ngoài"),
        (BlockKind.PARAGRAPH, "", 0, "đoạn thứ hai của mục"),
        (BlockKind.PLUS, "+", 1, "trong"),
        (BlockKind.DASH, "-", 2, "sâu hơn"),
        (BlockKind.DASH, "-", 0, "ngoài hai"),
    ]


def test_number_and_dot_inside_a_paragraph() -> None:
    # Only "1." may interrupt a paragraph in CommonMark: "2021." at a line start stays text.
    (block,) = blocks("Ngày 15 tháng 11 năm\n2021. Tiếp theo.\n")
    assert block.text == "Ngày 15 tháng 11 năm 2021. Tiếp theo."
    result = blocks("Các nội dung sau:\n1. Phổ biến\n")
    assert [(b.kind, b.marker) for b in result] == [
        (BlockKind.PARAGRAPH, ""),
        (BlockKind.SECTION, "1."),
    ]


def test_indented_paragraph_is_not_code() -> None:
    (block,) = blocks("    Đoạn thụt lề bốn dấu cách\n    dòng hai.\n")
    assert block.kind == BlockKind.PARAGRAPH
    assert block.text == "Đoạn thụt lề bốn dấu cách dòng hai."


def test_headings_only_in_appendices() -> None:
    with pytest.raises(MarkupError) as caught:
        parse_blocks("đoạn\n\n## Tiêu đề\n")
    assert caught.value.line == 3
    # A setext heading: a paragraph underlined by "---" is a heading in Markdown.
    with pytest.raises(MarkupError) as caught:
        parse_blocks("đoạn\n---\n")
    assert caught.value.line == 1
    result = blocks("## I. PHẦN MỘT\n\n### 1. Mục *một*\n\nchữ\n", headings=True)
    assert [(b.kind, b.level, b.text) for b in result] == [
        (BlockKind.HEADING, 2, "I. PHẦN MỘT"),
        (BlockKind.HEADING, 3, "1. Mục một"),
        (BlockKind.PARAGRAPH, 0, "chữ"),
    ]
    assert result[1].spans[1] == Span("một", italic=True)
    with pytest.raises(MarkupError):
        parse_blocks("# Cấp một\n", headings=True)


def test_tables_rows_and_cells() -> None:
    text = "Trước bảng.\n\n| STT | Tư liệu |\n|---|:--|\n| 1 | **Áp phích** in |\n| 2 | |\n"
    result = blocks(text, headings=True)
    table = result[1]
    assert table.kind == BlockKind.TABLE
    assert table.rows == (
        ((Span("STT"),), (Span("Tư liệu"),)),
        ((Span("1"),), (Span("Áp phích", bold=True), Span(" in"))),
        ((Span("2"),), ()),
    )
    assert parse_blocks(text)[1].line == 3


def test_star_bullets_images_and_empty_items_are_errors() -> None:
    with pytest.raises(MarkupError) as caught:
        parse_blocks("đoạn\n\n* sao\n")
    assert caught.value.line == 3
    with pytest.raises(MarkupError) as caught:
        parse_blocks("xem ![ảnh](anh.png)\n")
    assert caught.value.line == 1
    with pytest.raises(MarkupError) as caught:
        parse_blocks("đoạn\n\n-\n")
    assert caught.value.line == 3


def test_block_lines() -> None:
    placed = parse_blocks("\n\nmột\n\n- hai\n\n  ba\n")
    assert [(p.block.text, p.line) for p in placed] == [("một", 3), ("hai", 5), ("ba", 7)]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("Đoạn một./.\n\nĐoạn hai.\n", 3),
        ("Trân trọng.\n", 1),
        ("| a |\n|---|\n| b./. |\n", 1),
        ("", 1),
    ],
)
def test_check_closing_rejects(text: str, line: int) -> None:
    with pytest.raises(MarkupError) as caught:
        check_closing(parse_blocks(text, headings=True), 1)
    assert caught.value.line == line


@pytest.mark.parametrize(
    "text",
    [
        "Đoạn.\n\n- Trân trọng./.\n",
        "Trân trọng./.   \n",
        "| a |\n|---|\n| b |\n\nTrân trọng./.\n",
    ],
)
def test_check_closing_accepts_closing_mark(text: str) -> None:
    placed = parse_blocks(text, headings=True)
    assert check_closing(placed, 5) is None
    # The mark is what makes it pass: the same body without it is refused at its last block.
    with pytest.raises(MarkupError) as caught:
        check_closing(parse_blocks(text.replace("./.", "."), headings=True), 5)
    assert caught.value.line == placed[-1].line
