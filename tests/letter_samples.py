"""Sample letters for the renderer tests, built in Python or loaded from the seed source.

``sample_letter`` needs nothing but the model, so the renderers can be tested before (and
independently of) the source parser; ``seed_letter`` is the real 2021 PC-Covid letter.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

from dispatch.letters.model import (
    Appendix,
    Authority,
    Block,
    BlockKind,
    Letter,
    Signer,
    Span,
)

ROOT = Path(__file__).resolve().parent.parent
SEED_FOLDER = ROOT / "official_letters" / "pc-covid-2021"

ADDRESSEES = (
    "Sở Thông tin và Truyền thông các tỉnh, thành phố trực thuộc Trung ương",
    "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu",
    "Trung tâm Công nghệ thông tin và Truyền thông các tỉnh, thành phố",
    "Văn phòng Ủy ban nhân dân các tỉnh, thành phố trực thuộc Trung ương",
)


def _p(*spans: Span) -> Block:
    return Block(BlockKind.PARAGRAPH, spans)


def _item(kind: BlockKind, marker: str, text: str, level: int = 0) -> Block:
    return Block(kind, (Span(text),), marker=marker, level=level)


def _body() -> tuple[Block, ...]:
    return (
        _p(
            Span(
                "Thực hiện chỉ đạo của Thủ tướng Chính phủ tại Công văn số 1015/TTg-KGVX ngày "
                "08 tháng 11 năm 2021 về việc triển khai ứng dụng PC-Covid thống nhất trên toàn "
                "quốc, Cục Tin học hoá đề nghị Quý Sở phối hợp thực hiện một số nội dung sau:"
            )
        ),
        _item(
            BlockKind.SECTION,
            "1.",
            "Tuyên truyền, hướng dẫn người dân cài đặt và sử dụng ứng dụng PC-Covid để khai "
            "báo y tế, quét mã QR tại các địa điểm công cộng và cập nhật thông tin tiêm vắc-xin.",
        ),
        _item(
            BlockKind.SECTION,
            "2.",
            "Chủ trì, phối hợp với Sở Y tế rà soát các điểm kiểm soát dịch trên địa bàn:",
        ),
        _item(
            BlockKind.DASH,
            "-",
            "Thống kê số lượng mã QR địa điểm đã cấp cho cơ quan, doanh nghiệp, cơ sở kinh doanh;",
            level=1,
        ),
        _item(
            BlockKind.PLUS,
            "+",
            "Đối với cơ sở chưa có mã, hướng dẫn đăng ký trên Cổng thông tin quốc gia.",
            level=2,
        ),
        _p(
            Span("Thời hạn báo cáo: "),
            Span("trước ngày 30 tháng 11 năm 2021", bold=True),
            Span(", gửi về Cục Tin học hoá qua địa chỉ thư điện tử "),
            Span("vanthu@thh.gov.vn", italic=True),
            Span(". Nội dung chi tiết tại Phụ lục I và Phụ lục II kèm theo."),
        ),
        _p(
            Span(
                "Trong quá trình thực hiện, nếu có vướng mắc, đề nghị liên hệ Văn phòng Cục "
                "(đồng chí Nguyễn Thị Hằng, điện thoại 024.3943.6789) để được hướng dẫn./."
            )
        ),
    )


def _appendices() -> tuple[Appendix, ...]:
    table = Block(
        BlockKind.TABLE,
        rows=(
            ((Span("TT"),), (Span("Nội dung"),), (Span("Đơn vị chủ trì"),), (Span("Thời hạn"),)),
            (
                (Span("1"),),
                (Span("Hướng dẫn cài đặt ứng dụng PC-Covid"),),
                (Span("Sở Thông tin và Truyền thông"),),
                (Span("15/11/2021"),),
            ),
            (
                (Span("2"),),
                (Span("Rà soát mã QR địa điểm"),),
                (Span("Sở Y tế"),),
                (Span("30/11/2021", bold=True),),
            ),
        ),
    )
    first = Appendix(
        numeral="I",
        title="Hướng dẫn triển khai ứng dụng PC-Covid",
        body=(
            Block(BlockKind.HEADING, (Span("I. ĐỐI VỚI NGƯỜI DÂN"),), level=2),
            _p(
                Span(
                    "Tải ứng dụng PC-Covid từ kho ứng dụng, đăng ký bằng số điện thoại và "
                    "khai báo y tế điện tử trước khi đến các địa điểm công cộng."
                )
            ),
            Block(BlockKind.HEADING, (Span("II. ĐỐI VỚI CƠ QUAN, ĐƠN VỊ"),), level=2),
            table,
            _p(Span("Các đơn vị báo cáo kết quả theo biểu mẫu tại Phụ lục II./.")),
        ),
    )
    second = Appendix(
        numeral="II",
        title="Biểu mẫu báo cáo kết quả triển khai",
        body=(
            _p(
                Span("Tên đơn vị báo cáo: "),
                Span("Sở Thông tin và Truyền thông tỉnh …", italic=True),
            ),
            _item(BlockKind.DASH, "-", "Số người dân đã cài đặt ứng dụng: …;"),
            _item(BlockKind.DASH, "-", "Số mã QR địa điểm đã cấp: …./."),
        ),
    )
    return (first, second)


def sample_letter(
    number: int | None = None,
    date: dt.date | None = None,
    *,
    appendices: bool = True,
    addressees: int = 2,
) -> Letter:
    """A realistic letter built in Python: issued when ``date`` is given, else a 11/2021 draft."""
    if not 1 <= addressees <= len(ADDRESSEES):
        raise ValueError(f"addressees must be between 1 and {len(ADDRESSEES)}")
    letter = Letter(
        parent_agency="Bộ Thông tin và Truyền thông",
        issuing_agency="Cục Tin học hoá",
        symbol="THH-VP",
        place="Hà Nội",
        subject="triển khai ứng dụng PC-Covid trên địa bàn các tỉnh, thành phố",
        addressees=ADDRESSEES[:addressees],
        body=_body(),
        signer=Signer(
            title="Phó Cục trưởng",
            name="Nguyễn Phú Tiến",
            authority=Authority.DEPUTY,
            acting_for="Cục trưởng",
        ),
        distribution=(
            "Như trên",
            "Bộ trưởng (để b/c)",
            "Thứ trưởng Nguyễn Huy Dũng (để b/c)",
            "Cục trưởng (để b/c)",
            "Lưu: VT, THH",
        ),
        appendices=_appendices() if appendices else (),
        month=11,
        year=2021,
    )
    if date is not None:
        letter = replace(letter.issued_as(number or 0, date), number=number)
    return letter


def seed_letter(number: int | None = None, date: dt.date | None = None) -> Letter:
    """The seed letter ``official_letters/pc-covid-2021``, issued when ``date`` is given."""
    from dispatch.letters.source import load_letter

    letter = load_letter(SEED_FOLDER)
    if date is not None:
        letter = replace(letter.issued_as(number or 0, date), number=number)
    return letter
