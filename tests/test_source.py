"""The letter source format: the seed letter, validation errors with file and line, JSON form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatch.letters import formatting
from dispatch.letters.markup import plain_text
from dispatch.letters.model import Authority, BlockKind, Letter, Span, Urgency
from dispatch.letters.source import (
    LetterSource,
    LetterSourceError,
    build_letter,
    load_letter,
    read_source,
    register_of,
    source_from_json,
    source_to_json,
)
from tests.fixtures.letter_source import APPENDIX, BODY, FRONT, line_of

pytestmark = pytest.mark.nodb

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "official_letters" / "pc-covid-2021"

# The 2021 letter as it was sent, line for line (the header's blank number and day collapse to
# one space when compared); kept in a file because its paragraphs are single long lines.
SEED_TEXT = (Path(__file__).parent / "data" / "pc-covid-2021.txt").read_text(encoding="utf-8")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def letter_lines(letter: Letter) -> list[str]:
    """The letter's words in reading order, one line per printed line or block."""
    return [
        f"{letter.parent_agency.upper()} / {letter.issuing_agency.upper()}",
        _collapse(formatting.number_line(letter)),
        _collapse(formatting.place_date_line(letter)),
        formatting.subject_line(letter),
        "Kính gửi:",
        *formatting.addressee_lines(letter),
        *plain_text(letter.body),
        "Nơi nhận:",
        *formatting.distribution_lines(letter),
        *formatting.signer_title_lines(letter),
        letter.signer.name,
    ]


def _sentences() -> list[str]:
    """Every sentence (or clause ending in ".", ":" or ";") of the original letter."""
    pieces = []
    for line in SEED_TEXT.splitlines():
        pieces.extend(piece for piece in re.split(r"(?<=[.:;])\s+", line) if piece)
    return pieces


@pytest.fixture(scope="module")
def seed() -> Letter:
    return load_letter(SEED)


# --- the seed letter -------------------------------------------------------------------------


def test_seed_files_are_nfc_utf8() -> None:
    for path in SEED.glob("*.md"):
        text = path.read_bytes().decode("utf-8")
        assert unicodedata.is_normalized("NFC", text), path
    assert unicodedata.is_normalized("NFC", SEED_TEXT)


def test_seed_metadata(seed: Letter) -> None:
    assert seed.parent_agency == "Bộ Thông tin và Truyền thông"
    assert seed.issuing_agency == "Cục Tin học hoá"
    assert seed.symbol == "THH-VP"
    assert register_of(seed.symbol) == "THH"
    assert seed.place == "Hà Nội"
    assert (seed.number, seed.date, seed.month, seed.year) == (None, None, 11, 2021)
    assert seed.subject == (
        "tổ chức hướng dẫn và truyền thông về ứng dụng PC-Covid, quét mã QR tại địa phương"
    )
    assert seed.addressees == (
        "Các Sở Thông tin và Truyền thông",
        "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu",
    )
    assert seed.distribution == ("Như trên", "Thứ trưởng Nguyễn Huy Dũng (để b/c)", "Lưu: VT, THH")
    assert seed.signer.title == "Cục trưởng"
    assert seed.signer.name == "Đỗ Công Anh"
    assert seed.signer.authority is None
    assert seed.urgency is None
    assert seed.attachments == ()
    assert seed.source == SEED


def test_seed_letter_line_by_line(seed: Letter) -> None:
    expected = [line for line in SEED_TEXT.splitlines() if line.strip()]
    assert letter_lines(seed) == expected


@pytest.mark.parametrize("sentence", _sentences())
def test_seed_sentence_present(seed: Letter, sentence: str) -> None:
    text = "\n".join(letter_lines(seed))
    assert sentence in text
    assert unicodedata.is_normalized("NFC", text)


def test_seed_kinds_markers_and_emphasis(seed: Letter) -> None:
    P, S, D, A = BlockKind.PARAGRAPH, BlockKind.SECTION, BlockKind.DASH, BlockKind.PLUS
    assert [(b.kind, b.marker, b.level) for b in seed.body] == [
        (P, "", 0),
        (P, "", 0),
        (S, "1.", 0),
        (D, "-", 0),
        (D, "-", 0),
        (S, "2.", 0),
        (D, "-", 0),
        (A, "+", 0),
        (A, "+", 0),
        (D, "-", 0),
        (P, "", 0),
        (P, "", 0),
    ]
    sections = [b for b in seed.body if b.kind == S]
    assert all(len(b.spans) == 1 and b.spans[0].bold for b in sections)
    assert sections[0].text.startswith("Phổ biến hướng dẫn")
    assert sections[1].text.startswith("Tổ chức truyền thông")
    italics = [
        (block.text, span.text) for block in seed.body for span in block.spans if span.italic
    ]
    assert italics == [
        ("Tư liệu hướng dẫn: Tại phụ lục I (gửi kèm)", "(gửi kèm)"),
        ("Tư liệu truyền thông: Tại phụ lục II (gửi kèm)", "(gửi kèm)"),
    ]
    bold = [span.text for block in seed.body for span in block.spans if span.bold]
    assert bold == [sections[0].text, sections[1].text]
    assert seed.body[-1].spans == (Span("Trân trọng./."),)


def test_seed_appendices(seed: Letter) -> None:
    first, second = seed.appendices
    assert (first.numeral, first.title) == (
        "I",
        "Hướng dẫn cài đặt và sử dụng ứng dụng PC-Covid, quét mã QR",
    )
    assert (second.numeral, second.title) == ("II", "Tư liệu truyền thông")
    assert first.source == SEED / "phu-luc-1.md"
    assert second.source == SEED / "phu-luc-2.md"
    for appendix in seed.appendices:
        assert appendix.body[-1].text.endswith("./.")
        headings = [b for b in appendix.body if b.kind == BlockKind.HEADING]
        assert headings and headings[0].level == 2
    headings = [(b.level, b.text) for b in first.body if b.kind == BlockKind.HEADING]
    assert headings[0] == (2, "I. ĐỐI VỚI NGƯỜI DÂN")
    assert (3, "1. Cài đặt ứng dụng PC-Covid") in headings
    assert any(level == 2 and text.startswith("II. ") for level, text in headings)
    kinds = {b.kind for b in first.body}
    assert {BlockKind.DASH, BlockKind.HEADING, BlockKind.PARAGRAPH} <= kinds
    text = "\n".join(plain_text(first.body))
    for needle in ("App Store", "Google Play", "OTP", "khai báo y tế", "mã QR cá nhân"):
        assert needle in text
    tables = [b for b in second.body if b.kind == BlockKind.TABLE]
    assert len(tables) == 2
    for table in tables:
        header = ["".join(s.text for s in cell) for cell in table.rows[0]]
        assert header[:3] == ["STT", "Tư liệu", "Mục đích"]
        assert header[3].startswith("Nơi ")
        numbers = ["".join(s.text for s in row[0]) for row in table.rows[1:]]
        assert numbers == [str(n) for n in range(1, len(numbers) + 1)]
        assert all(len(row) == 4 for row in table.rows)


def test_render_helpers_on_seed(seed: Letter) -> None:
    assert formatting.appendix_heading(seed.appendices[0].numeral) == "Phụ lục I"
    issued = seed.issued_as(4321, dt.date(2021, 11, 15))
    assert formatting.appendix_reference_line(issued) == (
        "(Kèm theo Công văn số 4321/THH-VP ngày 15 tháng 11 năm 2021 của Cục Tin học hoá)"
    )


# --- a valid minimal source, and each field's checks -------------------------------------------


def test_minimal_letter(write_letter, letter_project: Path) -> None:
    letter = build_letter(read_source(write_letter()), letter_project)
    assert letter.subject == "thử nghiệm định dạng nguồn công văn"
    assert plain_text(letter.body) == [
        "Đoạn mở đầu của công văn.",
        "1. Mục thứ nhất",
        "- Ý thứ nhất.",
        "Trân trọng./.",
    ]
    assert letter.appendices == ()


def _error(folder: Path, letter_project: Path | None = None) -> LetterSourceError:
    with pytest.raises(LetterSourceError) as caught:
        build_letter(read_source(folder), letter_project)
    return caught.value


def _front(replace: dict[str, str] | None = None, add: str = "") -> str:
    """FRONT with whole lines replaced ("old line" → "new line(s)") and lines appended."""
    text = FRONT
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    return text + add


def test_missing_key_names_file_and_closing_line(write_letter) -> None:
    front = _front({"subject: thử nghiệm định dạng nguồn công văn\n": ""})
    folder = write_letter(front)
    error = _error(folder)
    closing = front.count("\n") + 2  # the "---" after the front matter
    assert error.path == str(folder / "letter.md")
    assert error.line == closing
    assert error.message == "thiếu trường bắt buộc “subject” (trích yếu)"
    assert str(error) == f"{folder / 'letter.md'}:{closing}: {error.message}"


def test_unknown_key_on_its_line(write_letter) -> None:
    front = _front(add="subjekt: sai tên\n")
    error = _error(write_letter(front))
    assert error.line == line_of("---\n" + front, "subjekt:")
    assert "“subjekt”" in error.message and "“subject”" in error.message


@pytest.mark.parametrize(
    ("old", "new", "needle", "words"),
    [
        ("place: Hà Nội\n", "place: 2021\n", "place:", "phải là một chuỗi"),
        ("place: Hà Nội\n", 'place: ""\n', "place:", "để trống"),
        ("place: Hà Nội\n", "place:\n  - Hà Nội\n", "place:", "phải là một chuỗi"),
        ("symbol: THH-VP\n", "symbol: THH VP\n", "symbol:", "ký hiệu"),
        ("symbol: THH-VP\n", "symbol: 05/THH-VP\n", "symbol:", "ký hiệu"),
        ("symbol: THH-VP\n", "symbol: THH--VP\n", "symbol:", "ký hiệu"),
        ("symbol: THH-VP\n", f"symbol: {'A' * 31}\n", "symbol:", "tối đa 30"),
        (
            "subject: thử nghiệm định dạng nguồn công văn\n",
            f"subject: {'a' * 501}\n",
            "subject:",
            "tối đa 500",
        ),
        ("subject: thử nghiệm định dạng nguồn công văn\n", "subject: V/v thử\n", "subject:", "V/v"),
        (
            "issuing_agency: Cục Tin học hoá\n",
            f"issuing_agency: {'C' * 201}\n",
            "issuing_agency:",
            "tối đa 200",
        ),
        ("  name: Đỗ Công Anh\n", f"  name: {'Đ' * 51}\n", "  name:", "tối đa 50"),
        ("  name: Đỗ Công Anh\n", "  name: TS. Đỗ Công Anh\n", "  name:", "học hàm"),
        ("  title: Cục trưởng\n", f"  title: {'c' * 101}\n", "  title:", "tối đa 100"),
        (
            "  title: Cục trưởng\n",
            "  title: Cục trưởng\n  authority: KT.\n",
            "signer:",
            "acting_for",
        ),
        (
            "  title: Cục trưởng\n",
            "  title: Cục trưởng\n  authority: XX\n",
            "  authority:",
            "TM., Q., KT., TL., TUQ.",
        ),
        (
            "  title: Cục trưởng\n",
            "  title: Cục trưởng\n  acting_for: Cục trưởng\n",
            "  acting_for:",
            "authority",
        ),
        ("  title: Cục trưởng\n", "  title: Cục trưởng\n  seal: có\n", "  seal:", "“seal”"),
        ("  name: Đỗ Công Anh\n", "", "signer:", "“signer.name”"),
        (
            "signer:\n  title: Cục trưởng\n  name: Đỗ Công Anh\n",
            "signer: Đỗ Công Anh\n",
            "signer:",
            "signer",
        ),
        ("date: 2021-11\n", "date: 2021-13\n", "date:", "không có thật"),
        ("date: 2021-11\n", "date: 2021-02-30\n", "date:", "không có thật"),
        ("date: 2021-11\n", "date: 15/11/2021\n", "date:", "2021-11-15"),
        ("date: 2021-11\n", "date: 2021-11-15 10:00\n", "date:", "2021-11-15"),
        ("date: 2021-11\n", "date: 2021-11\nnumber: 12\n", "number:", "đủ ngày"),
        ("date: 2021-11\n", "date: 2021-11-15\nnumber: mười\n", "number:", "số nguyên"),
        ("date: 2021-11\n", "date: 2021-11-15\nnumber: 0\n", "number:", "từ 1"),
        (
            "addressees:\n  - Các Sở Thông tin và Truyền thông\n",
            "addressees: Các Sở\n",
            "addressees:",
            "danh sách",
        ),
        (
            "addressees:\n  - Các Sở Thông tin và Truyền thông\n",
            "addressees: []\n",
            "addressees:",
            "trống",
        ),
        ("  - Như trên\n", "  - Như trên\n  - \n", "  - \n", "để trống"),
        ('  - "Lưu: VT, THH"\n', "  - Lưu: VT, THH\n", "  - Lưu", "ngoặc kép"),
        ('  - "Lưu: VT, THH"\n', '  - "Lưu: VT, THH"\nurgency: gấp\n', "urgency:", "khẩn"),
    ],
)
def test_field_errors_on_their_line(write_letter, old, new, needle, words) -> None:
    front = _front({old: new})
    error = _error(write_letter(front))
    assert error.line == line_of("---\n" + front, needle), error
    assert words in error.message, error


def test_list_items_and_values_are_normalised(write_letter) -> None:
    front = _front(
        {
            "  - Như trên\n": "  - '- Như trên;'\n  - Thứ trưởng   Nguyễn Huy Dũng (để b/c);\n",
            "  title: Cục trưởng\n": (
                "  authority: kt\n  acting_for: Cục trưởng\n  title: Phó Cục trưởng\n"
            ),
            "date: 2021-11\n": "date: 2021-11-05\nnumber: 010\nurgency: HOẢ TỐC\n",
        }
    )
    letter = load_letter(write_letter(front))
    assert letter.distribution == (
        "Như trên",
        "Thứ trưởng Nguyễn Huy Dũng (để b/c)",
        "Lưu: VT, THH",
    )
    assert letter.signer.authority == Authority.DEPUTY
    assert letter.signer.acting_for == "Cục trưởng"
    assert formatting.signer_title_lines(letter) == ["KT. CỤC TRƯỞNG", "PHÓ CỤC TRƯỞNG"]
    # "010" is ten, not YAML 1.1's octal eight.
    assert (letter.number, letter.date.isoformat()) == (10, "2021-11-05")
    assert letter.urgency == Urgency.IMMEDIATE


@pytest.mark.parametrize(
    ("value", "urgency"),
    [
        ("khẩn", Urgency.URGENT),
        ("Thượng khẩn", Urgency.VERY_URGENT),
        ("hỏa tốc", Urgency.IMMEDIATE),
    ],
)
def test_urgencies(write_letter, value: str, urgency: Urgency) -> None:
    assert load_letter(write_letter(_front(add=f"urgency: {value}\n"))).urgency == urgency


# --- malformed files ---------------------------------------------------------------------------


def test_bad_yaml_reports_the_yaml_line(write_letter) -> None:
    front = _front({"place: Hà Nội\n": "place: [Hà Nội\n"})
    error = _error(write_letter(front))
    assert error.path.endswith("letter.md")
    # PyYAML notices the unclosed bracket at the next key.
    assert error.line == line_of("---\n" + front, "date:")
    assert error.message.startswith("phần khai báo không hợp lệ")


def test_tab_indentation_is_explained(write_letter) -> None:
    front = _front({"  name: Đỗ Công Anh\n": "\tname: Đỗ Công Anh\n"})
    error = _error(write_letter(front))
    assert error.line == line_of("---\n" + front, "\tname")
    assert "Tab" in error.message


def test_duplicate_key_and_alias_are_refused(write_letter) -> None:
    front = _front(add="place: Huế\n")
    error = _error(write_letter(front))
    assert error.line == front.count("\n") + 1
    assert "hai lần" in error.message
    front = _front({"place: Hà Nội\n": "place: &p Hà Nội\n"}, add="subject2: *p\n")
    error = _error(write_letter(front))
    assert error.line == line_of("---\n" + front, "subject2")
    assert "tham chiếu" in error.message


def test_front_matter_must_be_a_mapping(write_letter) -> None:
    error = _error(write_letter("- một\n- hai\n"))
    assert (error.line, "tên: giá trị" in error.message) == (2, True)


def test_missing_front_matter(write_letter) -> None:
    error = _error(write_letter(raw="Chỉ có nội dung./.\n".encode()))
    assert (error.line, error.path.endswith("letter.md")) == (1, True)
    assert "---" in error.message
    error = _error(write_letter(raw=f"---\n{FRONT}{BODY}".encode()))
    assert error.line == 1
    assert "đóng lại" in error.message


def test_invalid_utf8_names_the_line(write_letter) -> None:
    # "Trân trọng" as a legacy 8-bit encoding would write it: 0xE2 is not UTF-8 here.
    data = f"---\n{FRONT}---\nĐoạn một.\n\n".encode() + b"Tr\xe2n tr\xf4ng./.\n"
    error = _error(write_letter(raw=data))
    assert error.line == FRONT.count("\n") + 5
    assert "UTF-8" in error.message


def test_body_must_end_with_closing_mark(write_letter) -> None:
    body = "Đoạn một./.\n\n- Ý cuối cùng.\n"
    folder = write_letter(body=body)
    error = _error(folder)
    assert error.path == str(folder / "letter.md")
    text = (folder / "letter.md").read_text()
    assert error.line == line_of(text, "- Ý cuối cùng.")
    assert "./." in error.message


def test_empty_body_and_heading_in_body(write_letter) -> None:
    error = _error(write_letter(body="\n\n"))
    assert "trống" in error.message
    folder = write_letter(body="Đoạn.\n\n## Tiêu đề\n\nTrân trọng./.\n")
    error = _error(folder)
    assert error.line == line_of((folder / "letter.md").read_text(), "## Tiêu đề")


def test_raw_html_is_kept_as_literal_text(write_letter) -> None:
    body = (
        'Mở đầu <script>alert("x")</script> và <b>đậm</b>.\n\n'
        "<img src=x onerror=y>\n\nTrân trọng./.\n"
    )
    letter = load_letter(write_letter(body=body))
    assert plain_text(letter.body) == [
        'Mở đầu <script>alert("x")</script> và <b>đậm</b>.',
        "<img src=x onerror=y>",
        "Trân trọng./.",
    ]


def test_nfd_input_is_normalised_to_nfc(write_letter) -> None:
    data = f"---\n{FRONT}---\n{BODY}"
    folder = write_letter(raw=unicodedata.normalize("NFD", data).encode())
    assert not unicodedata.is_normalized("NFC", (folder / "letter.md").read_text())
    source = read_source(folder)
    letter = build_letter(source)
    assert letter.issuing_agency == "Cục Tin học hoá"
    assert letter.signer.name == "Đỗ Công Anh"
    for text in (
        source.body,
        letter.subject,
        *letter.addressees,
        *letter.distribution,
        *plain_text(letter.body),
    ):
        assert unicodedata.is_normalized("NFC", text), text
    assert source.meta["place"] == "Hà Nội"


def test_crlf_and_bom_are_accepted(write_letter) -> None:
    data = "\ufeff" + f"---\n{FRONT}---\n{BODY}".replace("\n", "\r\n")
    assert load_letter(write_letter(raw=data.encode())).place == "Hà Nội"


# --- appendices ------------------------------------------------------------------------------


def _with_appendices(*names: str) -> str:
    return _front(add="appendices:\n" + "".join(f"  - {name}\n" for name in names))


def test_one_appendix_has_no_numeral(write_letter) -> None:
    folder = write_letter(_with_appendices("phu-luc.md"), appendices={"phu-luc.md": APPENDIX})
    letter = load_letter(folder)
    (appendix,) = letter.appendices
    assert (appendix.numeral, appendix.title, appendix.source) == (
        "",
        "Phụ lục thử",
        folder / "phu-luc.md",
    )
    assert plain_text(appendix.body) == ["I. PHẦN MỘT", "Nội dung phụ lục./."]


def test_missing_appendix_file(write_letter) -> None:
    front = _with_appendices("phu-luc-1.md", "phu-luc-2.md")
    folder = write_letter(front, appendices={"phu-luc-1.md": APPENDIX})
    error = _error(folder)
    assert error.path == str(folder / "letter.md")
    assert error.line == line_of("---\n" + front, "phu-luc-2.md")
    assert "không tìm thấy tệp phụ lục “phu-luc-2.md”" in error.message


@pytest.mark.parametrize(
    ("name", "words"),
    [("../ngoai.md", "trong thư mục"), ("phu-luc.txt", ".md"), ("thu-muc.md", "không phải là tệp")],
)
def test_appendix_file_checks(write_letter, name: str, words: str) -> None:
    front = _with_appendices(name)
    folder = write_letter(front)
    (folder / "thu-muc.md").mkdir(exist_ok=True)
    (folder.parent / "ngoai.md").write_text(APPENDIX)
    error = _error(folder)
    assert error.line == line_of("---\n" + front, name)
    assert words in error.message


def test_appendix_problems_name_the_appendix_file(write_letter) -> None:
    bad_end = "---\ntitle: Phụ lục\n---\n## I. MỘT\n\n- ý không kết thúc đúng\n"
    folder = write_letter(
        _with_appendices("a.md", "b.md"), appendices={"a.md": APPENDIX, "b.md": bad_end}
    )
    error = _error(folder)
    assert error.path == str(folder / "b.md")
    assert error.line == 6
    no_title = "---\nten: Phụ lục\n---\nNội dung./.\n"
    folder = write_letter(_with_appendices("a.md"), appendices={"a.md": no_title}, name="khac")
    error = _error(folder)
    assert (error.path, error.line) == (str(folder / "a.md"), 2)
    assert "“ten”" in error.message
    empty_title = "---\ntitle: ''\n---\nNội dung./.\n"
    folder = write_letter(_with_appendices("a.md"), appendices={"a.md": empty_title}, name="ba")
    error = _error(folder)
    assert (error.path, error.line) == (str(folder / "a.md"), 2)


# --- attachments -----------------------------------------------------------------------------


def test_attachments_resolve_under_attachments(write_letter, letter_project: Path) -> None:
    (letter_project / "attachments" / "ma-qr.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (letter_project / "attachments" / "tai-lieu.pdf").write_bytes(b"%PDF-1.7\n")
    front = _front(add="attachments:\n  - ma-qr.png\n  - attachments/tai-lieu.pdf\n")
    letter = build_letter(read_source(write_letter(front)), letter_project)
    assert [(a.name, a.media_type) for a in letter.attachments] == [
        ("ma-qr.png", "image/png"),
        ("tai-lieu.pdf", "application/pdf"),
    ]
    assert letter.attachments[0].path == (letter_project / "attachments" / "ma-qr.png").resolve()


def test_attachment_names_mean_the_attachments_folder(write_letter, letter_project: Path) -> None:
    (letter_project / "README.md").write_text("không gửi đi")
    front = _front(add="attachments:\n  - README.md\n")
    error = _error(write_letter(front), letter_project)
    assert "attachments/" in error.message
    (letter_project / "attachments" / "README.md").write_text("# Hướng dẫn\n")
    letter = build_letter(read_source(write_letter(front)), letter_project)
    (attachment,) = letter.attachments
    assert attachment.path == (letter_project / "attachments" / "README.md").resolve()
    assert attachment.media_type in ("text/markdown", "application/octet-stream")


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("khong-co.pdf", "không tìm thấy"),
        ("official_letters/thu-nghiem/letter.md", "attachments/"),
        ("../../../etc/passwd", "attachments/"),
        ("/etc/passwd", "tương đối"),
        ("thu-muc", "không phải là tệp"),
    ],
)
def test_attachment_errors(write_letter, letter_project: Path, item: str, words: str) -> None:
    (letter_project / "attachments" / "thu-muc").mkdir()
    front = _front(add=f"attachments:\n  - {item}\n")
    error = _error(write_letter(front), letter_project)
    assert error.line == line_of("---\n" + front, f"  - {item}")
    assert words in error.message


# --- the JSON form ---------------------------------------------------------------------------


def _without_paths(letter: Letter) -> Letter:
    appendices = tuple(dataclasses.replace(a, source=None) for a in letter.appendices)
    return dataclasses.replace(letter, appendices=appendices)


def test_json_round_trip_of_the_seed() -> None:
    source = read_source(SEED)
    data = json.loads(json.dumps(source_to_json(source), ensure_ascii=False))
    again = source_from_json(data)
    assert again == source
    assert data["meta"]["date"] == "2021-11"
    assert [a["file"] for a in data["appendices"]] == ["phu-luc-1.md", "phu-luc-2.md"]
    assert source_to_json(again) == data
    assert _without_paths(build_letter(again)) == _without_paths(build_letter(source))


def test_json_full_date_is_an_iso_string(write_letter) -> None:
    source = read_source(write_letter(_front({"date: 2021-11\n": "date: 2021-11-15\n"})))
    assert source.meta["date"] == "2021-11-15"
    data = source_to_json(source)
    assert json.loads(json.dumps(data)) == data
    assert source_from_json(data) == source
    # A date object put in by code also becomes ISO text in the JSON form.
    source.meta["date"] = dt.date(2021, 11, 16)
    assert source_to_json(source)["meta"]["date"] == "2021-11-16"
    assert build_letter(source).date.isoformat() == "2021-11-16"


def test_json_form_errors_have_body_relative_lines() -> None:
    data = source_to_json(read_source(SEED))
    data["body"] = "Đoạn một.\n\nĐoạn hai không có dấu kết.\n"
    source = source_from_json(data, origin="bản nháp 12")
    with pytest.raises(LetterSourceError) as caught:
        build_letter(source)
    assert (caught.value.path, caught.value.line) == ("bản nháp 12", 3)
    data = source_to_json(read_source(SEED))
    data["appendices"][1]["body"] = "## I. MỤC\n\nthiếu dấu kết\n"
    with pytest.raises(LetterSourceError) as caught:
        build_letter(source_from_json(data, origin="bản nháp 12"))
    assert (caught.value.path, caught.value.line) == ("bản nháp 12, phụ lục II", 3)
    data = source_to_json(read_source(SEED))
    del data["meta"]["subject"]
    with pytest.raises(LetterSourceError) as caught:
        build_letter(source_from_json(data, origin="bản nháp 12"))
    assert str(caught.value) == "bản nháp 12: thiếu trường bắt buộc “subject” (trích yếu)"


def test_json_form_normalises_composer_input() -> None:
    data = source_to_json(read_source(SEED))
    data["body"] = unicodedata.normalize("NFD", data["body"]).replace("\n", "\r\n")
    data["meta"]["place"] = unicodedata.normalize("NFD", "Hà Nội")
    source = source_from_json(data)
    assert source == read_source(SEED)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"meta": [], "body": ""},
        {"meta": {}, "body": 3},
        {"meta": {}, "body": "", "appendices": ["x"]},
        {"meta": {}, "body": "", "appendices": [{"title": "t", "body": 1}]},
    ],
)
def test_json_form_shape_errors(data) -> None:
    with pytest.raises(LetterSourceError) as caught:
        source_from_json(data, origin="bản nháp 3")
    assert caught.value.path == "bản nháp 3"


def test_meta_and_appendix_list_must_agree() -> None:
    source = read_source(SEED)
    short = LetterSource(
        meta=source.meta, body=source.body, appendices=source.appendices[:1], origin="bản nháp 1"
    )
    with pytest.raises(LetterSourceError) as caught:
        build_letter(short)
    assert "2 phụ lục" in caught.value.message


# --- the register key --------------------------------------------------------------------------


def test_register_of() -> None:
    assert register_of("THH-VP") == "THH"
    assert register_of("BTTTT-THH") == "BTTTT"
    assert register_of("QĐ") == "QĐ"
    for bad in ("", "THH VP", "05/THH-VP", "-VP", "A" * 31):
        with pytest.raises(ValueError):
            register_of(bad)


# --- anything at all as letter.md ------------------------------------------------------------


def _mutations() -> st.SearchStrategy[str]:
    """Arbitrary text, and the seed letter with a random stretch replaced by arbitrary text."""
    seed_text = (SEED / "letter.md").read_text(encoding="utf-8")
    spliced = st.tuples(
        st.integers(0, len(seed_text)), st.integers(0, 200), st.text(max_size=40)
    ).map(lambda t: seed_text[: t[0]] + t[2] + seed_text[t[0] + t[1] :])
    framed = st.text(max_size=200).map(lambda t: f"---\n{t}\n---\n")
    yaml_like = st.lists(
        st.sampled_from(
            [
                "---",
                "subject:",
                "- ",
                "  ",
                ": ",
                "[",
                "]",
                "{",
                "&a",
                "*a",
                "!!",
                "\t",
                "|",
                "2021-11",
                "1.",
                "**",
                "<b>",
                "./.",
                "\n",
                "appendices:",
                "signer:",
                '"',
                "'",
            ]
        ),
        max_size=40,
    ).map("".join)
    front = seed_text[: seed_text.index("\n---\n") + 5]
    markdown_like = st.lists(
        st.sampled_from(
            [
                "- ",
                "+ ",
                "* ",
                "1. ",
                "2) ",
                "**",
                "*",
                "_",
                "`",
                "| a |",
                "|---|",
                "---",
                "\n",
                "## ",
                "# ",
                "> ",
                "    ",
                "![a](b)",
                "[x](y)",
                "<b>",
                "&amp;",
                "./.",
                "chữ",
                " ",
            ]
        ),
        max_size=40,
    ).map(lambda parts: front + "".join(parts))
    return st.one_of(st.text(max_size=300), spliced, framed, yaml_like, markdown_like)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=_mutations())
def test_any_text_gives_a_letter_or_a_source_error(tmp_path_factory, text: str) -> None:
    folder = tmp_path_factory.getbasetemp() / "hypothesis-letter"
    if not folder.exists():
        folder.mkdir()
        for name in ("phu-luc-1.md", "phu-luc-2.md"):
            shutil.copy(SEED / name, folder / name)
    (folder / "letter.md").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        letter = load_letter(folder)
    except LetterSourceError as error:
        assert error.message and error.path
        assert error.line is None or error.line >= 1
    else:
        assert isinstance(letter, Letter)


def test_a_link_out_of_attachments_reads_as_a_missing_file(
    write_letter, letter_project: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "bi-mat.txt"
    secret.write_text("không gửi đi")
    (letter_project / "attachments" / "lien-ket.txt").symlink_to(secret)
    (letter_project / "attachments" / "lien-ket-hong.txt").symlink_to(tmp_path / "khong-co.txt")
    messages = []
    for name in ("lien-ket.txt", "lien-ket-hong.txt"):
        error = _error(write_letter(_front(add=f"attachments:\n  - {name}\n")), letter_project)
        messages.append(error.message.replace(name, "…"))
        assert str(secret) not in str(error) and "khong-co.txt" not in error.message
    assert messages[0] == messages[1] and "không tìm thấy" in messages[0]
