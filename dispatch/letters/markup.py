"""The Markdown of a letter or appendix body, turned into the document model's blocks.

markdown-it-py does the parsing (CommonMark plus tables, raw HTML off, no autolinking); this
module only walks its token stream. Nothing here knows about files: problems are reported with
a line number inside the Markdown text, and ``dispatch.letters.source`` adds the file and the
front matter's offset.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.token import Token

from dispatch.letters.model import Block, BlockKind, Span

# Decree 30: the last paragraph of a công văn (and of each appendix) ends with this mark.
CLOSING_MARK = "./."

# Headings are allowed in appendices only, and only these levels ("## I. …", "### 1. …").
HEADING_LEVELS = (2, 3)

_BULLETS = {"-": BlockKind.DASH, "+": BlockKind.PLUS}


class MarkupError(ValueError):
    """A body that cannot be a letter's text; ``line`` is 1-based within that body."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(line, message)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.line}: {self.message}"


@dataclass(frozen=True)
class PlacedBlock:
    """A block and the 1-based line of the body it starts on."""

    block: Block
    line: int


def _parser() -> MarkdownIt:
    # "commonmark" turns raw HTML on: switch it off so "<script>" stays literal text. linkify
    # stays off so e-mail addresses and "v.v.." are never turned into links.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
        "table"
    )


_MD = _parser()


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def inline_spans(token: Token, line: int) -> tuple[Span, ...]:
    """The spans of an ``inline`` token: emphasis kept, links reduced to their text."""
    spans: list[Span] = []
    strong = emphasis = 0

    def add(text: str) -> None:
        if not text:
            return
        bold, italic = strong > 0, emphasis > 0
        if spans and spans[-1].bold == bold and spans[-1].italic == italic:
            spans[-1] = Span(spans[-1].text + text, bold, italic)
        else:
            spans.append(Span(text, bold, italic))

    for child in token.children or ():
        kind = child.type
        if kind == "strong_open":
            strong += 1
        elif kind == "strong_close":
            strong -= 1
        elif kind == "em_open":
            emphasis += 1
        elif kind == "em_close":
            emphasis -= 1
        elif kind == "softbreak":
            add(" ")
        elif kind == "hardbreak":
            add("\n")
        elif kind == "image":
            # A printed letter carries pictures as attachments, not inside its paragraphs.
            raise MarkupError(
                line,
                "không chèn hình ảnh vào nội dung; hãy khai báo tệp ở trường attachments",
            )
        elif kind in ("link_open", "link_close"):
            # The letter is printed: only the link's text is kept, never the address.
            continue
        else:
            # text, text_special (escapes, entities), code_inline and anything else: literal.
            add(child.content)
    # Entities and escapes may have produced decomposed characters: normalise once more.
    return tuple(Span(_nfc(span.text), span.bold, span.italic) for span in spans)


@dataclass
class _Item:
    """An open list item while walking the tokens."""

    kind: BlockKind
    marker: str
    level: int
    line: int
    used: bool = False


@dataclass
class _List:
    """An open list: ordered lists count their items to check the written numbers."""

    ordered: bool
    kind: BlockKind
    next_number: int = 1
    delimiter: str = "."
    items: list[_Item] = field(default_factory=list)


def _line(token: Token, fallback: int) -> int:
    return token.map[0] + 1 if token.map else fallback


def _code_text(content: str) -> str:
    # An indented or fenced block is almost always a paragraph indented by mistake: keep its
    # words as one paragraph rather than as code.
    return " ".join(part.strip() for part in content.splitlines() if part.strip())


def parse_blocks(text: str, *, headings: bool = False) -> list[PlacedBlock]:
    """Turn a Markdown body into placed blocks; ``headings`` allows "##"/"###" (appendices)."""
    tokens = _MD.parse(_nfc(text))
    placed: list[PlacedBlock] = []
    lists: list[_List] = []
    items: list[_Item] = []
    last_line = 1
    i = 0

    def emit(block: Block, line: int) -> None:
        placed.append(PlacedBlock(block, line))

    def flush_item_marker() -> None:
        # A list item that opens with a nested list or a table: its marker still has to show.
        if items and not items[-1].used:
            raise MarkupError(items[-1].line, "mục danh sách không có nội dung ngay sau dấu mục")

    while i < len(tokens):
        token = tokens[i]
        kind = token.type
        line = _line(token, last_line)
        last_line = line
        if kind == "bullet_list_open":
            flush_item_marker()
            if token.markup not in _BULLETS:
                raise MarkupError(
                    line, f"dùng “- ” hoặc “+ ” để mở đầu các ý, không dùng “{token.markup} ”"
                )
            lists.append(_List(ordered=False, kind=_BULLETS[token.markup]))
        elif kind == "ordered_list_open":
            flush_item_marker()
            start = token.attrs.get("start", 1)
            lists.append(
                _List(
                    ordered=True,
                    kind=BlockKind.SECTION,
                    next_number=int(start),
                    delimiter=token.markup,
                )
            )
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            current = lists[-1]
            if current.ordered:
                written = int(token.info) if token.info.isdigit() else current.next_number
                if written != current.next_number:
                    # The printed number is the one the clerk wrote; a gap means a mistake.
                    raise MarkupError(
                        line,
                        f"mục đánh số {written}{current.delimiter} nhưng theo thứ tự phải là "
                        f"{current.next_number}{current.delimiter}",
                    )
                marker = f"{current.next_number}{current.delimiter}"
                current.next_number += 1
            else:
                marker = token.markup
            items.append(_Item(current.kind, marker, len(lists) - 1, line))
        elif kind == "list_item_close":
            item = items.pop()
            if not item.used:
                raise MarkupError(item.line, "mục danh sách không có nội dung")
        elif kind == "paragraph_open":
            spans = inline_spans(tokens[i + 1], line)
            if items and not items[-1].used:
                item = items[-1]
                item.used = True
                emit(Block(item.kind, spans, marker=item.marker, level=item.level), line)
            else:
                level = items[-1].level if items else 0
                emit(Block(BlockKind.PARAGRAPH, spans, level=level), line)
            i += 3  # paragraph_open, inline, paragraph_close
            continue
        elif kind in ("code_block", "fence"):
            content = _code_text(token.content)
            if content:
                spans = (Span(_nfc(content)),)
                if items and not items[-1].used:
                    item = items[-1]
                    item.used = True
                    emit(Block(item.kind, spans, marker=item.marker, level=item.level), line)
                else:
                    emit(
                        Block(BlockKind.PARAGRAPH, spans, level=items[-1].level if items else 0),
                        line,
                    )
        elif kind == "heading_open":
            level = int(token.tag[1:])
            if not headings:
                raise MarkupError(
                    line,
                    "công văn không dùng tiêu đề (#); nếu dòng dưới đoạn văn là '---' hoặc '===', "
                    "hãy bỏ dòng đó",
                )
            if level not in HEADING_LEVELS:
                raise MarkupError(
                    line,
                    "phụ lục chỉ dùng tiêu đề cấp ## và ###; tên phụ lục khai báo ở trường title",
                )
            flush_item_marker()
            emit(Block(BlockKind.HEADING, inline_spans(tokens[i + 1], line), level=level), line)
            i += 3
            continue
        elif kind == "table_open":
            flush_item_marker()
            end, rows = _table(tokens, i, line)
            emit(Block(BlockKind.TABLE, rows=rows, level=items[-1].level if items else 0), line)
            i = end + 1
            continue
        # Everything else (blockquote and hr tokens, list closes handled above) carries no text.
        i += 1
    return placed


def _table(
    tokens: list[Token], start: int, line: int
) -> tuple[int, tuple[tuple[tuple[Span, ...], ...], ...]]:
    """Collect a table's rows from ``table_open`` at ``start``; return its close index too."""
    rows: list[tuple[tuple[Span, ...], ...]] = []
    row: list[tuple[Span, ...]] = []
    i = start + 1
    while tokens[i].type != "table_close":
        token = tokens[i]
        if token.type == "tr_open":
            row = []
            line = _line(token, line)
        elif token.type == "tr_close":
            rows.append(tuple(row))
        elif token.type == "inline":
            row.append(inline_spans(token, line))
        i += 1
    return i, tuple(rows)


def check_closing(placed: list[PlacedBlock], end_line: int) -> None:
    """Decree 30: a body must have text and its last paragraph must end with "./."."""
    if not placed:
        raise MarkupError(end_line, "nội dung trống")
    last = placed[-1]
    if last.block.kind == BlockKind.TABLE:
        raise MarkupError(
            last.line,
            f"sau bảng phải có một đoạn văn cuối kết thúc bằng “{CLOSING_MARK}” (Nghị định 30)",
        )
    if not last.block.text.rstrip().endswith(CLOSING_MARK):
        raise MarkupError(
            last.line,
            f"đoạn cuối phải kết thúc bằng “{CLOSING_MARK}” (Nghị định 30)",
        )


def plain_text(blocks: tuple[Block, ...] | list[Block]) -> list[str]:
    """One line per block ("1. Phổ biến …", "- Phương thức …"); table cells joined by " | "."""
    lines = []
    for block in blocks:
        if block.kind == BlockKind.TABLE:
            for row in block.rows:
                lines.append(" | ".join("".join(span.text for span in cell) for cell in row))
        elif block.marker:
            lines.append(f"{block.marker} {block.text}")
        else:
            lines.append(block.text)
    return lines
