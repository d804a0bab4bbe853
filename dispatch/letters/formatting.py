"""The words that Decree 30 puts around a letter's text, shared by both renderers."""

from __future__ import annotations

import datetime as dt

from dispatch.letters.model import Letter

# The fixed wording of every Vietnamese official document (Quốc hiệu, Tiêu ngữ) and the labels
# of the two lists (Decree 30, Phụ lục I).
NATIONAL_TITLE = "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"
MOTTO = "Độc lập - Tự do - Hạnh phúc"
ADDRESSEE_LABEL = "Kính gửi:"
DISTRIBUTION_LABEL = "Nơi nhận:"

# What stands for the blank number and day of a letter that is not issued yet.
BLANK = "      "


def format_number(number: int | None) -> str:
    """Two digits at least ("07"), or the blank of an unissued letter."""
    return BLANK if number is None else f"{number:02d}"


def number_and_symbol(letter: Letter) -> str:
    """'07/THH-VP', or '      /THH-VP' before issuing."""
    return f"{format_number(letter.number)}/{letter.symbol}"


def number_line(letter: Letter) -> str:
    """The header's 'Số: 07/THH-VP' line."""
    return f"Số: {number_and_symbol(letter)}"


def day_month_year(date: dt.date | None, month: int | None, year: int | None) -> str:
    """'ngày 03 tháng 02 năm 2022'; the day below 10 and months 1 and 2 take a leading zero."""
    if date is not None:
        day, month, year = f"{date.day:02d}", date.month, date.year
    else:
        day = BLANK
    month_text = BLANK if month is None else (f"{month:02d}" if month <= 2 else str(month))
    year_text = "      " if year is None else str(year)
    return f"ngày {day} tháng {month_text} năm {year_text}"


def place_date_line(letter: Letter) -> str:
    """'Hà Nội, ngày 15 tháng 11 năm 2021'."""
    return f"{letter.place}, {day_month_year(letter.date, letter.month, letter.year)}"


def subject_line(letter: Letter) -> str:
    """'V/v tổ chức …'."""
    return f"V/v {letter.subject}"


def document_title(letter: Letter) -> str:
    """The PDF's and the DOCX's title: 'Công văn số 07/THH-VP V/v …' once numbered; before,
    the trích yếu alone ('V/v …'), never a blank number. The electronic original is rendered
    unnumbered and its signed metadata cannot change at issuance: its title is its subject."""
    if letter.number is None:
        return " ".join(subject_line(letter).split())
    return " ".join(f"Công văn số {number_and_symbol(letter)} {subject_line(letter)}".split())


def _listed(items: tuple[str, ...]) -> list[str]:
    """Each item as '- item;', the last ending with '.'."""
    return [f"- {item}{'.' if i == len(items) - 1 else ';'}" for i, item in enumerate(items)]


def addressee_lines(letter: Letter) -> list[str]:
    """The lines after 'Kính gửi:'; one addressee stands alone on the same line."""
    if len(letter.addressees) == 1:
        return [f"{letter.addressees[0]}."]
    return _listed(letter.addressees)


def distribution_lines(letter: Letter) -> list[str]:
    """The 'Nơi nhận:' list: '- Như trên;' … '- Lưu: VT, THH.'."""
    return _listed(letter.distribution)


def signer_title_lines(letter: Letter) -> list[str]:
    """The upper-case lines above the signature: 'KT. CỤC TRƯỞNG', 'PHÓ CỤC TRƯỞNG'."""
    signer = letter.signer
    if signer.authority is None:
        return [signer.title.upper()]
    return [f"{signer.authority.value} {(signer.acting_for or '').upper()}", signer.title.upper()]


def appendix_heading(numeral: str) -> str:
    """'Phụ lục I', or 'Phụ lục' for a letter's only appendix."""
    return f"Phụ lục {numeral}".rstrip()


def appendix_reference_line(letter: Letter) -> str:
    """'(Kèm theo Công văn số 07/THH-VP ngày 15 tháng 11 năm 2021 của Cục Tin học hoá)'."""
    date = day_month_year(letter.date, letter.month, letter.year)
    return f"(Kèm theo Công văn số {number_and_symbol(letter)} {date} của {letter.issuing_agency})"


def short_date(date: dt.date) -> str:
    """dd/mm/yyyy, as the interface and e-mail subjects show dates."""
    return date.strftime("%d/%m/%Y")


ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")


def appendix_numeral(index: int, count: int) -> str:
    """The Roman numeral of the appendix at ``index`` (0-based); none when there is only one."""
    if count <= 1:
        return ""
    if index >= len(ROMAN):
        raise ValueError("a letter carries at most twelve appendices")
    return ROMAN[index]
