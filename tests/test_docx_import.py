"""Reading a công văn written in Word back into a letter (``dispatch.letters.docx_import``).

Two kinds of file: the DOCX that Dispatch renders (the round trip must give back the same
letter) and files laid out the way Word users write them, built here with python-docx: styles,
direct bold and italic runs, a tab-separated header instead of a table, soft line breaks, page
breaks before the appendices.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from dataclasses import replace

import pytest
from docx import Document
from docx.enum.text import WD_BREAK

from dispatch.letters.docx import render_docx
from dispatch.letters.docx_import import (
    MAX_DOCX_BYTES,
    DocxImportError,
    check_archive,
    read_docx,
)
from dispatch.letters.model import Authority, BlockKind, Signer, Span, Urgency
from dispatch.letters.source import build_letter, load_letter
from tests.letter_samples import SEED_FOLDER


@pytest.fixture(scope="module")
def seed():
    return load_letter(SEED_FOLDER)


def _plain(letter):
    """The letter without where it was read from."""
    appendices = tuple(replace(appendix, source=None) for appendix in letter.appendices)
    return replace(letter, source=None, appendices=appendices)


def _same(letter):
    imported = read_docx(render_docx(letter))
    back = build_letter(imported.source)
    assert _plain(back) == _plain(letter)
    assert imported.report.complete, imported.report.missing
    assert imported.report.unrecognised == []
    return imported


def test_a_draft_dispatch_wrote_comes_back_as_the_same_letter(seed):
    draft = replace(seed, number=None, date=None)
    imported = _same(draft)
    assert imported.source.meta["date"] == "2021-11"
    assert "number" not in imported.source.meta


def test_an_issued_letter_comes_back_with_its_number_and_date(seed):
    imported = _same(seed.issued_as(7, dt.date(2021, 11, 15)))
    assert imported.source.meta["number"] == 7
    assert imported.source.meta["date"] == "2021-11-15"


def test_signing_authority_urgency_and_one_addressee_come_back(seed):
    letter = replace(
        seed,
        addressees=seed.addressees[:1],
        urgency=Urgency.URGENT,
        signer=Signer(
            title="Phó Cục trưởng",
            name="Nguyễn Phú Tiến",
            authority=Authority.DEPUTY,
            acting_for="Cục trưởng",
        ),
        appendices=(),
    )
    imported = _same(letter)
    rows = {label: (value, state) for label, value, state in imported.report.rows()}
    assert rows["người ký"] == ("KT. Cục trưởng Phó Cục trưởng — Nguyễn Phú Tiến", "ok")
    assert rows["độ khẩn"] == ("KHẨN", "ok")


def test_the_report_says_field_by_field_what_was_recognised(seed):
    imported = read_docx(render_docx(seed))
    rows = {label: (value, state) for label, value, state in imported.report.rows()}
    assert rows["cơ quan chủ quản"] == ("Bộ Thông tin và Truyền thông", "ok")
    assert rows["ký hiệu"] == ("THH-VP", "ok")
    assert rows["ngày ban hành"] == ("tháng 11/2021", "ok")
    assert rows["phụ lục"][0].startswith("Hướng dẫn cài đặt")


def test_a_header_edited_in_word_wins_over_the_recorded_case(seed):
    """The recorded case is used only while it still matches what is printed."""
    document = Document(io.BytesIO(render_docx(seed)))
    cell = document.tables[0].cell(0, 0)
    cell.paragraphs[0].runs[0].text = "ỦY BAN NHÂN DÂN TỈNH BẮC NINH"
    buffer = io.BytesIO()
    document.save(buffer)
    imported = read_docx(buffer.getvalue())
    assert imported.source.meta["parent_agency"] == "Ủy ban nhân dân tỉnh bắc ninh"
    assert imported.source.meta["issuing_agency"] == "Cục Tin học hoá"


# --- files written the way Word users write them ------------------------------------------------


def word_letter(*, appendix: bool = True) -> bytes:
    """A letter typed in Word: tabs instead of a header table, styles, direct formatting."""
    document = Document()
    add = document.add_paragraph
    add("BỘ THÔNG TIN VÀ TRUYỀN THÔNG\tCỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM")
    first = add()
    first.add_run("CỤC TIN HỌC HOÁ").bold = True
    first.add_run("\t")
    first.add_run("Độc lập - Tự do - Hạnh phúc").bold = True
    add("Số:      /THH-VP\tHà Nội, ngày      tháng 11 năm 2021")
    subject = add()
    subject.add_run("V/v triển khai ứng dụng PC-Covid")
    subject.add_run().add_break()  # Shift+Enter: a soft line break
    subject.add_run("trên địa bàn")
    add("Kính gửi:")
    add("- Sở Thông tin và Truyền thông các tỉnh;")
    add("- Văn phòng Ủy ban nhân dân các tỉnh.")
    opening = add("Thực hiện chỉ đạo của Thủ tướng Chính phủ, ")
    opening.add_run("Cục Tin học hoá").bold = True
    opening.add_run(" đề nghị Quý Sở ")
    opening.add_run("phối hợp").italic = True
    opening.add_run(" thực hiện:")
    add("1. Tuyên truyền, hướng dẫn người dân cài đặt ứng dụng.")
    document.add_paragraph("Thống kê mã QR đã cấp;", style="List Bullet")
    add("+ Cơ sở chưa có mã đăng ký trên Cổng thông tin.")
    add("2. Báo cáo kết quả trước ngày 30/11/2021.")
    wrapped = add("Trân trọng")
    wrapped.add_run().add_break()
    wrapped.add_run("cảm ơn./.")
    add("Nơi nhận:\tKT. CỤC TRƯỞNG")
    add("- Như trên;\tPHÓ CỤC TRƯỞNG")
    add("- Lưu: VT, THH.")
    add("\tNguyễn Phú Tiến")
    if appendix:
        breaker = add()
        breaker.add_run().add_break(WD_BREAK.PAGE)
        add("Phụ lục")
        add("BIỂU MẪU BÁO CÁO")
        add("(Kèm theo Công văn số      /THH-VP ngày      tháng 11 năm 2021 của Cục Tin học hoá)")
        document.add_heading("I. ĐỐI VỚI CƠ QUAN", level=1)
        table = document.add_table(rows=2, cols=2)
        table.cell(0, 0).text, table.cell(0, 1).text = "TT", "Nội dung"
        table.cell(1, 0).text = "1"
        run = table.cell(1, 1).paragraphs[0].add_run("Rà soát mã QR")
        run.italic = True
        add("Các đơn vị báo cáo theo biểu mẫu./.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_a_letter_typed_in_word_is_read_field_by_field():
    imported = read_docx(word_letter())
    letter = build_letter(imported.source)
    assert imported.report.complete, imported.report.missing
    assert letter.parent_agency == "Bộ thông tin và truyền thông"  # only capitals were printed
    assert letter.issuing_agency == "Cục Tin học hoá"  # the "Kèm theo" line gives its case
    assert letter.symbol == "THH-VP" and letter.number is None
    assert (letter.place, letter.month, letter.year, letter.date) == ("Hà Nội", 11, 2021, None)
    assert letter.subject == "triển khai ứng dụng PC-Covid trên địa bàn"
    assert letter.addressees == (
        "Sở Thông tin và Truyền thông các tỉnh",
        "Văn phòng Ủy ban nhân dân các tỉnh",
    )
    assert letter.signer == Signer(
        title="Phó cục trưởng",
        name="Nguyễn Phú Tiến",
        authority=Authority.DEPUTY,
        acting_for="Cục trưởng",
    )
    assert letter.distribution == ("Như trên", "Lưu: VT, THH")


def test_direct_formatting_items_and_soft_breaks_become_the_body():
    letter = build_letter(read_docx(word_letter()).source)
    opening = letter.body[0]
    assert opening.kind is BlockKind.PARAGRAPH
    assert Span("Cục Tin học hoá", bold=True) in opening.spans
    assert Span("phối hợp", italic=True) in opening.spans
    kinds = [(block.kind, block.marker) for block in letter.body]
    assert kinds[1:5] == [
        (BlockKind.SECTION, "1."),
        (BlockKind.DASH, "-"),  # Word's List Bullet style, no typed mark
        (BlockKind.PLUS, "+"),
        (BlockKind.SECTION, "2."),
    ]
    assert letter.body[-1].text == "Trân trọng cảm ơn./."


def test_an_appendix_after_a_page_break_with_its_heading_and_table():
    letter = build_letter(read_docx(word_letter()).source)
    (appendix,) = letter.appendices
    assert appendix.title == "Biểu mẫu báo cáo"
    heading, table, closing = appendix.body
    assert closing.text == "Các đơn vị báo cáo theo biểu mẫu./."
    assert heading.kind is BlockKind.HEADING and heading.text == "I. ĐỐI VỚI CƠ QUAN"
    assert table.kind is BlockKind.TABLE
    assert table.rows[1][1] == (Span("Rà soát mã QR", italic=True),)


def test_what_is_not_there_is_reported_not_invented():
    document = Document()
    document.add_paragraph("Kính gửi: Sở Y tế")
    document.add_paragraph("Đề nghị Quý Sở báo cáo.")
    buffer = io.BytesIO()
    document.save(buffer)
    report = read_docx(buffer.getvalue()).report
    assert set(report.missing) >= {"parent_agency", "symbol", "subject", "signer", "date"}
    assert report.recognised["addressees"] == "Sở Y tế"
    assert "Số:" in report.missing["symbol"]


# --- untrusted files ----------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"%PDF-1.7 not a word file", "không phải tệp Word"),
        (_zip({"hello.txt": b"hi"}), "thiếu word/document.xml"),
        (_zip({"word/document.xml": b"<w/>", "word/vbaProject.bin": b"x"}), "macro"),
        (_zip({"word/document.xml": b"\0" * (50 * 1024 * 1024)}), "nén"),
        (b"PK" + b"\0" * (MAX_DOCX_BYTES + 1), "quá lớn"),
    ],
)
def test_bad_files_get_a_clear_vietnamese_error(data, words):
    with pytest.raises(DocxImportError, match=words):
        check_archive(data)
    with pytest.raises(DocxImportError):
        read_docx(data)


def test_a_broken_docx_package_is_refused_cleanly():
    data = _zip({"word/document.xml": b"<not-xml", "[Content_Types].xml": b"<bad"})
    with pytest.raises(DocxImportError, match="không mở được"):
        read_docx(data)
