"""One document model that the PDF and DOCX renderers both read.

Everything here is plain, immutable data in NFC. Marks that Decree 30 requires around the text
("Số:", "V/v", the "- " and ";" of the addressee and distribution lists, "Phụ lục I") are not
stored: ``dispatch.letters.formatting`` produces them, so both renderers print the same words.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path


class BlockKind(StrEnum):
    """The kinds of block a letter or appendix body is made of."""

    PARAGRAPH = "paragraph"  # an ordinary justified paragraph with a first-line indent
    SECTION = "section"  # a numbered item ("1. …"); ``marker`` holds "1."
    DASH = "dash"  # a "- " item; ``marker`` holds "-"
    PLUS = "plus"  # a "+ " item; ``marker`` holds "+"
    HEADING = "heading"  # a Markdown heading inside an appendix ("I. ĐỐI VỚI NGƯỜI DÂN")
    TABLE = "table"  # a table (appendices); ``rows`` holds it, the first row is the header


class Urgency(StrEnum):
    """The urgency stamp (độ khẩn); the value is the text printed in the box."""

    URGENT = "KHẨN"
    VERY_URGENT = "THƯỢNG KHẨN"
    IMMEDIATE = "HỎA TỐC"


class Authority(StrEnum):
    """The signing authority prefix (quyền hạn ký) when the head does not sign personally."""

    ON_BEHALF = "TM."  # on behalf of a collective body
    ACTING = "Q."  # acting head
    DEPUTY = "KT."  # a deputy signing for the head
    BY_ORDER = "TL."  # by order
    BY_DELEGATION = "TUQ."  # by delegation


@dataclass(frozen=True)
class Span:
    """A run of text with its emphasis."""

    text: str
    bold: bool = False
    italic: bool = False


@dataclass(frozen=True)
class Block:
    """A paragraph-like unit of a body, or a table.

    ``marker`` is the literal mark that starts the block ("1.", "-", "+"); renderers print it,
    then a space, then the spans. ``level`` is the heading level (2, 3, …) for headings and the
    nesting depth (0 = top) for items. ``rows`` is used by tables only: rows of cells, each cell
    a tuple of spans; ``rows[0]`` is the header row.
    """

    kind: BlockKind
    spans: tuple[Span, ...] = ()
    marker: str = ""
    level: int = 0
    rows: tuple[tuple[tuple[Span, ...], ...], ...] = ()

    @property
    def text(self) -> str:
        """The block's plain text without its marker."""
        return "".join(span.text for span in self.spans)


@dataclass(frozen=True)
class Signer:
    """Who signs: optional authority prefix and the body it acts for, the title, the name.

    "KT. CỤC TRƯỞNG / PHÓ CỤC TRƯỞNG" is ``Signer(authority=Authority.DEPUTY,
    acting_for="Cục trưởng", title="Phó Cục trưởng", name=…)``; the head signing personally
    is ``Signer(title="Cục trưởng", name=…)``.
    """

    title: str
    name: str
    authority: Authority | None = None
    acting_for: str | None = None


@dataclass(frozen=True)
class Appendix:
    """A Phụ lục: its numeral ("I", "II"; empty when the letter has only one), title and body."""

    numeral: str
    title: str
    body: tuple[Block, ...]
    source: Path | None = None


@dataclass(frozen=True)
class Attachment:
    """A file that the letter carries as it is (an image, an existing PDF)."""

    path: Path
    name: str
    media_type: str


@dataclass(frozen=True)
class Letter:
    """A công văn, ready to render.

    ``number`` and ``date`` are None until the letter is issued; ``month`` and ``year`` give
    the draft's "ngày      tháng 11 năm 2021" line while ``date`` is None.
    """

    parent_agency: str
    issuing_agency: str
    symbol: str
    place: str
    subject: str
    addressees: tuple[str, ...]
    body: tuple[Block, ...]
    signer: Signer
    distribution: tuple[str, ...]
    appendices: tuple[Appendix, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    urgency: Urgency | None = None
    number: int | None = None
    date: dt.date | None = None
    month: int | None = None
    year: int | None = None
    source: Path | None = field(default=None, compare=False)

    def issued_as(self, number: int, date: dt.date) -> Letter:
        """Return a copy of this letter carrying its register number and date."""
        return replace(self, number=number, date=date, month=date.month, year=date.year)
