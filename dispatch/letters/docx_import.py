"""Reading a công văn written in Word (DOCX) back into a letter source: bytes in, source out.

The reader knows the Decree 30 layout, not one template: the header may be a table (as Dispatch
and most agencies write it) or tab-separated lines; body items are recognised by their marks
("1.", "-", "+") or by Word's List/Heading styles; emphasis comes from direct formatting or from
the paragraph's style; soft line breaks become spaces; each page break or new-page section after
the signature opens an appendix. The result is a ``LetterSource`` (what a draft stores) and a
report that says, field by field, what was recognised and what was not.

Untrusted input: the archive is checked (size, member count, uncompressed size, macros) before
python-docx opens it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass, field

from docx import Document
from docx.oxml.ns import qn
from docx.table import Table
from docx.text.paragraph import Paragraph

from dispatch.letters import formatting
from dispatch.letters.model import Authority, Urgency
from dispatch.letters.source import LETTER_KEYS, LetterSource

MAX_DOCX_BYTES = 10 * 1024 * 1024
MAX_UNCOMPRESSED_BYTES = 60 * 1024 * 1024
MAX_MEMBERS = 2000
MAX_RATIO = 200  # a member that expands more than this is a zip bomb, not a letter

REQUIRED = ("parent_agency", "issuing_agency", "symbol", "place", "date", "subject")
REPORTED = (
    *REQUIRED,
    "urgency",
    "number",
    "addressees",
    "body",
    "signer",
    "distribution",
    "appendices",
)

_NUMBER = re.compile(r"^Số\s*:\s*(?P<number>\d*)\s*/\s*(?P<symbol>\S+)\s*$")
_PLACE_DATE = re.compile(
    r"^(?P<place>[^,]+),\s*ngày\s*(?P<day>\d{1,2})?\s*tháng\s*(?P<month>\d{1,2})?\s*"
    r"năm\s*(?P<year>\d{4})?\s*$"
)
_SECTION = re.compile(r"^(\d{1,3}\.)\s+")
_APPENDIX = re.compile(r"^PHỤ LỤC(?:\s+([IVXLC]+))?\s*$", re.IGNORECASE)
_REFERENCE = re.compile(r"^\(Kèm theo .* của (?P<agency>.+)\)$")
_HEADING_STYLE = re.compile(r"^Heading\s*(\d)$", re.IGNORECASE)


class DocxImportError(ValueError):
    """A file that cannot be read as a letter; the message is Vietnamese, for the clerk."""


@dataclass
class ImportReport:
    """What the reader recognised (field → value as shown) and what it did not (field → why)."""

    recognised: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    unrecognised: list[str] = field(default_factory=list)  # paragraphs it did not place

    @property
    def complete(self) -> bool:
        return not self.missing

    def rows(self) -> list[tuple[str, str, str]]:
        """(label, value or problem, "ok" | "missing") per field, in the letter's order."""
        rows = []
        for key in REPORTED:
            label = LETTER_KEYS.get(key, "nội dung" if key == "body" else key)
            if key in self.recognised:
                rows.append((label, self.recognised[key], "ok"))
            elif key in self.missing:
                rows.append((label, self.missing[key], "missing"))
        return rows


@dataclass(frozen=True)
class DocxImport:
    source: LetterSource
    report: ImportReport


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text.replace("\u00a0", " "))


def check_archive(data: bytes) -> None:
    """Refuse what is too big, not a DOCX, a zip bomb, or carries macros."""
    if len(data) > MAX_DOCX_BYTES:
        raise DocxImportError(
            f"tệp Word quá lớn ({len(data) // 1024 // 1024} MB); tối đa "
            f"{MAX_DOCX_BYTES // 1024 // 1024} MB"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise DocxImportError("tệp không phải tệp Word .docx (không đọc được nội dung)") from exc
    if len(members) > MAX_MEMBERS:
        raise DocxImportError("tệp Word có quá nhiều thành phần; có thể là tệp độc hại")
    total = 0
    names = set()
    for member in members:
        total += member.file_size
        names.add(member.filename)
        if member.compress_size and member.file_size / member.compress_size > MAX_RATIO:
            raise DocxImportError("tệp Word nén bất thường (có thể là tệp nén độc hại)")
        if member.filename.lower().endswith("vbaproject.bin"):
            raise DocxImportError("tệp Word có macro (.docm): không nhận, hãy lưu lại dạng .docx")
    if total > MAX_UNCOMPRESSED_BYTES:
        raise DocxImportError("tệp Word khi giải nén quá lớn (có thể là tệp nén độc hại)")
    if "word/document.xml" not in names:
        raise DocxImportError("tệp không phải tệp Word .docx (thiếu word/document.xml)")


# --- reading paragraphs -------------------------------------------------------------------------


@dataclass
class _Line:
    """One paragraph as the reader sees it: text, runs with emphasis, style, breaks."""

    text: str
    runs: list[tuple[str, bool, bool]]
    style: str
    page_break_before: bool = False
    numbered: bool = False  # Word's automatic numbering (numPr) or a List style


def _style_flags(paragraph: Paragraph) -> tuple[bool, bool]:
    style = paragraph.style
    bold = italic = False
    while style is not None:
        if bold is False and style.font.bold is not None:
            bold = bool(style.font.bold)
        if italic is False and style.font.italic is not None:
            italic = bool(style.font.italic)
        style = style.base_style
    return bold, italic


def _read_paragraph(paragraph: Paragraph) -> _Line:
    style_bold, style_italic = _style_flags(paragraph)
    runs: list[tuple[str, bool, bool]] = []
    page_break = False
    for r in paragraph._p.iter(qn("w:r")):
        run_bold = run_italic = None
        rpr = r.find(qn("w:rPr"))
        if rpr is not None:
            for tag, name in (("w:b", "bold"), ("w:i", "italic")):
                element = rpr.find(qn(tag))
                if element is not None:
                    value = element.get(qn("w:val"), "true") not in ("0", "false", "off")
                    if name == "bold":
                        run_bold = value
                    else:
                        run_italic = value
        bold = style_bold if run_bold is None else run_bold
        italic = style_italic if run_italic is None else run_italic
        parts = []
        for child in r:
            if child.tag == qn("w:t"):
                parts.append(child.text or "")
            elif child.tag == qn("w:tab"):
                parts.append("\t")
            elif child.tag in (qn("w:br"), qn("w:cr")):
                if child.get(qn("w:type")) == "page":
                    page_break = True
                else:
                    parts.append(" ")  # a soft line break only wraps the line
            elif child.tag == qn("w:noBreakHyphen"):
                parts.append("-")
        text = _nfc("".join(parts))
        if text:
            runs.append((text, bold, italic))
    ppr = paragraph._p.pPr
    if ppr is not None and ppr.find(qn("w:pageBreakBefore")) is not None:
        page_break = True
    style = paragraph.style.name if paragraph.style is not None else ""
    numbered = (ppr is not None and ppr.find(qn("w:numPr")) is not None) or style.startswith("List")
    text = "".join(t for t, _, _ in runs)
    return _Line(text, runs, style, page_break, numbered)


def _items(document) -> list[_Line | Table | str]:
    """Body paragraphs and tables in order; "SECTION" marks a new-page section break."""
    out: list[_Line | Table | str] = []
    for child in document.element.body.iterchildren():
        if child.tag == qn("w:p"):
            line = _read_paragraph(Paragraph(child, document))
            if line.page_break_before:
                out.append("PAGE")
            if line.text.strip():
                out.append(line)
            ppr = child.pPr
            if ppr is not None and ppr.find(qn("w:sectPr")) is not None:
                out.append("PAGE")
        elif child.tag == qn("w:tbl"):
            out.append(Table(child, document))
    return out


def _table_lines(table: Table) -> list[list[list[_Line]]]:
    rows = []
    for row in table.rows:
        cells = []
        seen = set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append([_read_paragraph(p) for p in cell.paragraphs if p.text.strip()])
        rows.append(cells)
    return rows


# --- markdown -----------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return re.sub(r"([*_`\\|])", r"\\\1", text)


def _markdown(runs: list[tuple[str, bool, bool]], skip_bold: bool = False) -> str:
    """Runs as Markdown emphasis; neighbouring runs with the same emphasis are joined."""
    merged: list[list] = []
    for text, bold, italic in runs:
        bold = bold and not skip_bold
        if merged and merged[-1][1] == bold and merged[-1][2] == italic:
            merged[-1][0] += text
        else:
            merged.append([text, bold, italic])
    out = []
    for text, bold, italic in merged:
        core = text.strip()
        if not core or not (bold or italic):
            out.append(_escape(text))
            continue
        lead = text[: len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()) :]
        mark = "***" if bold and italic else "**" if bold else "*"
        out.append(f"{lead}{mark}{_escape(core)}{mark}{trail}")
    return "".join(out).replace("\t", " ")


def _strip_marker(runs: list[tuple[str, bool, bool]], marker: str) -> list[tuple[str, bool, bool]]:
    """The runs without the leading marker and its space."""
    left = len(marker)
    out = []
    for text, bold, italic in runs:
        if left > 0:
            stripped = text.lstrip()
            cut = min(left, len(stripped))
            left -= cut
            text = stripped[cut:]
            if left == 0:
                text = text.lstrip()
        if text:
            out.append((text, bold, italic))
    return out


def _block_markdown(line: _Line, *, appendix: bool, section_count: list[int]) -> str:
    text = line.text.strip()
    heading = _HEADING_STYLE.match(line.style)
    if line.style == "Letter Heading" or (heading and appendix):
        level = int(heading.group(1)) + 1 if heading else (2 if re.match(r"^[IVX]+\.", text) else 3)
        return f"{'#' * min(max(level, 2), 3)} {_markdown(line.runs, skip_bold=True).strip()}"
    section = _SECTION.match(text)
    if section:
        return f"{section.group(1)} {_markdown(_strip_marker(line.runs, section.group(1))).strip()}"
    for mark in ("-", "+", "–", "•"):
        if text.startswith(mark + " ") or text.startswith(mark + "\t"):
            out = "+" if mark == "+" else "-"
            return f"{out} {_markdown(_strip_marker(line.runs, mark)).strip()}"
    if heading:  # a Word heading in the letter body: a numbered section
        section_count[0] += 1
        return f"{section_count[0]}. {_markdown(line.runs).strip()}"
    if line.numbered:
        if line.style.startswith("List Number"):
            section_count[0] += 1
            return f"{section_count[0]}. {_markdown(line.runs).strip()}"
        return f"- {_markdown(line.runs).strip()}"
    return _markdown(line.runs).strip()


def _table_markdown(table: Table) -> str:
    rows = _table_lines(table)
    width = max(len(row) for row in rows)
    out = []
    for r, row in enumerate(rows):
        cells = []
        for cell in row + [[]] * (width - len(row)):
            text = " ".join(_markdown(p.runs, skip_bold=r == 0).strip() for p in cell)
            cells.append(text)
        out.append("| " + " | ".join(cells) + " |")
        if r == 0:
            out.append("|" + "---|" * width)
    return "\n".join(out)


def _join_blocks(blocks: list[str]) -> str:
    """Blocks as Markdown: items stay on consecutive lines, paragraphs are separated."""
    out: list[str] = []
    for block in blocks:
        item = re.match(r"^(\d+\.|[-+]) ", block) is not None
        if out and not (item and re.match(r"^(\d+\.|[-+]) ", out[-1].split("\n")[-1])):
            out.append("")
        elif out and item:
            pass
        out.append(block)
    return "\n".join(out).strip() + "\n"


# --- the letter ---------------------------------------------------------------------------------


def _cells_text(table: Table) -> list[list[_Line]]:
    """A layout table's cells, each as its non-empty lines."""
    return [cell for row in _table_lines(table) for cell in row]


def _header_lines(items: list) -> tuple[list[str], list[str], int]:
    """(left column lines, right column lines, index of the first item after the header)."""
    left: list[str] = []
    right: list[str] = []
    i = 0
    if items and isinstance(items[0], Table):
        for row in _table_lines(items[0]):
            if row:
                left += [p.text.strip() for p in row[0]]
                right += [p.text.strip() for cell in row[1:] for p in cell]
        return left, right, 1
    # Word without a table: "LEFT<tab>RIGHT" lines until "V/v" has been seen.
    while i < len(items) and isinstance(items[i], _Line):
        text = items[i].text
        if text.strip().startswith(formatting.ADDRESSEE_LABEL.rstrip(":")):
            break
        parts = [p.strip() for p in text.split("\t") if p.strip()]
        if len(parts) >= 2:
            left.append(parts[0])
            right.append(parts[-1])
        elif parts:
            only = parts[0]
            if only.upper() in (
                formatting.NATIONAL_TITLE,
                formatting.MOTTO.upper(),
            ) or _PLACE_DATE.match(only):
                right.append(only)
            else:
                left.append(only)
        i += 1
    return left, right, i


def _case_hints(data: bytes) -> list[str]:
    """The texts in their own case that the renderer records for what it prints in capitals."""
    from docx.oxml.parser import parse_xml

    from dispatch.letters.docx import CASE_PROPERTY_PREFIX

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if "docProps/custom.xml" not in archive.namelist():
            return []
        try:
            root = parse_xml(archive.read("docProps/custom.xml"))
        except Exception:  # a broken optional part only loses the hints
            return []
    hints = []
    for prop in root:
        if str(prop.get("name", "")).startswith(CASE_PROPERTY_PREFIX):
            hints.append(_nfc("".join(prop.itertext())).strip())
    return hints


def _recase(text: str, hints: list[str]) -> str:
    """A text printed in capitals back in its own case: the recorded one when it still matches
    what is printed, else sentence case (the first letter capital)."""
    if text != text.upper():
        return text
    for hint in hints:
        if hint.upper() == text.upper():
            return hint
    lower = text.lower()
    return lower[:1].upper() + lower[1:]


def read_docx(data: bytes, *, origin: str = "tệp Word", author: str | None = None) -> DocxImport:
    """The letter in a DOCX as a source, with a report of what was and was not recognised."""
    check_archive(data)
    try:
        document = Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises many kinds for a broken package
        raise DocxImportError(
            "không mở được tệp Word (tệp hỏng hoặc không đúng định dạng)"
        ) from exc
    report = ImportReport()
    meta: dict = {}
    hints = _case_hints(data)

    def _recase_now(text: str) -> str:
        return _recase(text, hints)

    items = _items(document)
    # The issuing agency in its own case: the document's author (Dispatch writes it there) and
    # the appendices' "(Kèm theo … của <agency>)" lines.
    hints.append(author if author is not None else _nfc(document.core_properties.author or ""))
    for item in items:
        if isinstance(item, _Line):
            reference = _REFERENCE.match(item.text.strip())
            if reference:
                hints.append(reference.group("agency").strip())

    left, right, i = _header_lines(items)
    left = [t for t in left if t]
    # Left column: parent agency (not bold), issuing agency, then Số, V/v (and urgency).
    agencies = []
    subject_lines: list[str] = []
    for text in left:
        number = _NUMBER.match(text)
        if number:
            meta["symbol"] = number.group("symbol")
            if number.group("number"):
                meta["number"] = int(number.group("number"))
        elif text.startswith("V/v"):
            subject_lines.append(text[3:].strip())
        elif subject_lines and "symbol" in meta and text.upper() not in {u.value for u in Urgency}:
            subject_lines.append(text)
        elif text.upper() in {u.value for u in Urgency}:
            meta["urgency"] = text.upper()
        elif "symbol" not in meta and set(text) != {"_"}:
            agencies.append(text)
    if subject_lines:
        meta["subject"] = " ".join(subject_lines)
    if len(agencies) >= 2:
        parent, issuing = agencies[0], " ".join(agencies[1:])
        meta["parent_agency"] = _recase_now(parent)
        meta["issuing_agency"] = _recase_now(issuing)
    elif len(agencies) == 1:
        meta["issuing_agency"] = _recase_now(agencies[0])
        report.missing["parent_agency"] = "không thấy cơ quan chủ quản ở đầu công văn"
    for text in right:
        match = _PLACE_DATE.match(text)
        if match:
            meta["place"] = match.group("place").strip()
            year, month, day = match.group("year"), match.group("month"), match.group("day")
            if year and month:
                meta["date"] = f"{int(year):04d}-{int(month):02d}" + (
                    f"-{int(day):02d}" if day else ""
                )

    # Addressees: "Kính gửi:" then dash lines (or the one addressee on the same line).
    addressees: list[str] = []
    while i < len(items):
        item = items[i]
        if isinstance(item, _Line) and item.text.strip().startswith("Kính gửi"):
            rest = item.text.split(":", 1)[1].strip() if ":" in item.text else ""
            if rest:
                addressees.append(rest)
            i += 1
            while i < len(items) and isinstance(items[i], _Line):
                text = items[i].text.strip()
                listed = text.startswith("-") and (not addressees or addressees[-1].startswith("-"))
                if listed or (not addressees and text):
                    addressees.append(text)
                    i += 1
                else:
                    break
            break
        if (
            isinstance(item, _Line)
            and item.text.strip().startswith("V/v")
            and "subject" not in meta
        ):
            meta["subject"] = item.text.strip()[3:].strip()
        i += 1
    if addressees:
        meta["addressees"] = [
            re.sub(r"^-\s*", "", a.replace("\t", " ")).strip().rstrip(";.").strip()
            for a in addressees
        ]

    # Body: until the signature table or "Nơi nhận:".
    body: list[str] = []
    sections = [0]
    signature_at = None
    while i < len(items):
        item = items[i]
        if isinstance(item, Table):
            cells = _cells_text(item)
            if any(
                p.text.strip().startswith(formatting.DISTRIBUTION_LABEL) for c in cells for p in c
            ):
                signature_at = i
                break
            body.append(_table_markdown(item))
        elif isinstance(item, _Line):
            if item.text.strip().startswith(formatting.DISTRIBUTION_LABEL):
                signature_at = i
                break
            body.append(_block_markdown(item, appendix=False, section_count=sections))
        i += 1
    body_text = _join_blocks(body) if body else ""

    # Signature block: a table (left: Nơi nhận, right: signer) or lines.
    distribution: list[str] = []
    signer_lines: list[str] = []
    if signature_at is not None:
        item = items[signature_at]
        if isinstance(item, Table):
            rows = _table_lines(item)
            for row in rows:
                if row:
                    distribution += [p.text.strip() for p in row[0]]
                    signer_lines += [p.text.strip() for cell in row[1:] for p in cell]
            i = signature_at + 1
        else:
            i = signature_at
            while i < len(items) and isinstance(items[i], _Line):
                text = items[i].text
                parts = [p.strip() for p in text.split("\t") if p.strip()]
                if text.strip().startswith("-") or text.strip().startswith(
                    formatting.DISTRIBUTION_LABEL
                ):
                    distribution.append(parts[0])
                    signer_lines += parts[1:]
                else:
                    signer_lines += parts
                i += 1
    distribution = [d for d in distribution if not d.startswith(formatting.DISTRIBUTION_LABEL)]
    if distribution:
        meta["distribution"] = [re.sub(r"^-\s*", "", d).rstrip(";.").strip() for d in distribution]
    signer = _signer(signer_lines, hints)
    if signer:
        meta["signer"] = signer

    # Appendices: each page break after the signature opens one.
    appendices: list[dict] = []
    current: dict | None = None
    blocks: list[str] = []
    sections = [0]

    def close() -> None:
        if current is not None:
            current["body"] = _join_blocks(blocks) if blocks else ""
            appendices.append(current)

    while i < len(items):
        item = items[i]
        if item == "PAGE":
            i += 1
            continue
        if isinstance(item, _Line) and _APPENDIX.match(item.text.strip()):
            close()
            current = {"title": "", "body": "", "file": f"phu-luc-{len(appendices) + 1}.md"}
            blocks = []
            sections = [0]
            i += 1
            # The title is the next line(s) until the "(Kèm theo …)" reference or a rule.
            titles = []
            while i < len(items) and isinstance(items[i], _Line):
                text = items[i].text.strip()
                reference = _REFERENCE.match(text)
                if reference:
                    i += 1
                    break
                if set(text) <= {"_", "-", " "}:
                    i += 1
                    break
                if titles and items[i].style not in ("Appendix Title", "Title"):
                    break
                titles.append(text)
                i += 1
            title = " ".join(titles)
            current["title"] = _recase_now(title)
            continue
        if current is None:
            if isinstance(item, _Line):
                report.unrecognised.append(item.text.strip())
            i += 1
            continue
        if isinstance(item, Table):
            blocks.append(_table_markdown(item))
        elif isinstance(item, _Line) and item.style != "Section End":
            blocks.append(_block_markdown(item, appendix=True, section_count=sections))
        i += 1
    close()
    if appendices:
        meta["appendices"] = [a["file"] for a in appendices]

    _fill_report(report, meta, body_text, appendices)
    ordered = {key: meta[key] for key in LETTER_KEYS if key in meta}
    return DocxImport(LetterSource(ordered, body_text, appendices, origin), report)


def _signer(lines: list[str], hints: list[str]) -> dict | None:
    """Authority and title lines, then the name (the last line)."""
    lines = [line for line in lines if line]
    if len(lines) < 2:
        return None
    name = lines[-1]
    titles = lines[:-1]
    signer: dict = {"title": "", "name": name}
    first = titles[0]
    authority = next((a for a in Authority if first.upper().startswith(a.value + " ")), None)
    if authority is not None and len(titles) >= 2:
        signer["authority"] = authority.value
        acting = first[len(authority.value) :].strip()
        signer["acting_for"] = _recase(acting, hints)
        title = " ".join(titles[1:])
    else:
        title = " ".join(titles)
    signer["title"] = _recase(title, hints)
    return {k: signer[k] for k in ("authority", "acting_for", "title", "name") if k in signer}


def _fill_report(report: ImportReport, meta: dict, body: str, appendices: list[dict]) -> None:
    problems = {
        "parent_agency": "không thấy cơ quan chủ quản (dòng đầu, cột trái của phần đầu)",
        "issuing_agency": "không thấy tên cơ quan ban hành (dòng thứ hai, cột trái)",
        "symbol": "không thấy dòng “Số: …/…” (số và ký hiệu)",
        "place": "không thấy dòng “<địa danh>, ngày … tháng … năm …”",
        "date": "không đọc được tháng và năm trong dòng “ngày … tháng … năm …”",
        "subject": "không thấy dòng trích yếu “V/v …”",
        "addressees": "không thấy “Kính gửi:”",
        "body": "không thấy nội dung công văn",
        "signer": "không thấy chức vụ và họ tên người ký",
        "distribution": "không thấy “Nơi nhận:”",
    }
    for key, problem in problems.items():
        value = body if key == "body" else meta.get(key)
        if not value:
            report.missing.setdefault(key, problem)
            continue
        report.missing.pop(key, None)
        if key == "body":
            report.recognised[key] = f"{len([b for b in body.split(chr(10)) if b.strip()])} dòng"
        elif key == "signer":
            parts = [value.get("authority", ""), value.get("acting_for", ""), value["title"]]
            report.recognised[key] = f"{' '.join(p for p in parts if p)} — {value['name']}"
        elif isinstance(value, list):
            report.recognised[key] = "; ".join(value)
        elif key == "date":
            parts = value.split("-")
            report.recognised[key] = (
                f"{parts[2]}/{parts[1]}/{parts[0]}"
                if len(parts) == 3
                else f"tháng {parts[1]}/{parts[0]}"
            )
        else:
            report.recognised[key] = str(value)
    for key in ("urgency", "number"):
        if key in meta:
            report.recognised[key] = str(meta[key])
    if appendices:
        report.recognised["appendices"] = "; ".join(a["title"] for a in appendices)


def today_month(moment: dt.date) -> str:
    """The draft date ("2021-11") to use when the letter gives none."""
    return f"{moment.year:04d}-{moment.month:02d}"
