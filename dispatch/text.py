"""How typed text is stored: NFC, on one line or several, without control characters.

Every door that takes text from a person (the web forms, the token pages, CSV imports) cleans it
with these, so the same name is stored the same way whichever way it came in.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x85]+")
_SPACES = re.compile(r"[ \t\u00a0]+")


# Characters that reorder how the text around them is shown (U+202E makes "fdp.exe" read
# "exe.pdf"): a subject or a name must read as it is stored.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def refused_characters(text: str) -> list[str]:
    """The characters a subject or a name may not carry, as "U+XXXX", in order, once each:
    bidirectional controls and lone surrogates (which no UTF-8 database can store)."""
    found: list[str] = []
    for char in text:
        if char in BIDI_CONTROLS or unicodedata.category(char) == "Cs":
            code = f"U+{ord(char):04X}"
            if code not in found:
                found.append(code)
    return found


def refused_characters_message(text: str) -> str | None:
    """A Vietnamese sentence naming the refused characters of ``text``; None if it has none."""
    found = refused_characters(text)
    if not found:
        return None
    return (
        f"chứa ký tự không được phép ({', '.join(found)}: "
        "ký tự điều khiển hướng chữ hoặc lỗi mã hoá)"
    )


def without_refused_characters(text: str) -> str:
    """``text`` without the characters ``refused_characters`` names (to show a refused value
    safely, or to keep a display copy of a value that is refused elsewhere)."""
    return "".join(c for c in text if c not in BIDI_CONTROLS and unicodedata.category(c) != "Cs")


def without_controls(text: str, keep: str = "") -> str:
    """Drop control characters (other than those in ``keep``) a browser or a paste may carry."""
    return "".join(c for c in text if c in keep or unicodedata.category(c)[0] != "C")


def clean_line(value: str | None) -> str:
    """One line of text as stored: NFC, CR/LF and controls removed, spaces collapsed."""
    if value is None:
        return ""
    text = unicodedata.normalize("NFC", value)
    text = _LINE_BREAKS.sub(" ", text)
    text = without_controls(text)
    return _SPACES.sub(" ", text).strip()


def clean_note(value: str | None) -> str:
    """A free-text note as stored: NFC, line breaks kept as LF, other controls removed."""
    if value is None:
        return ""
    text = unicodedata.normalize("NFC", value).replace("\r\n", "\n").replace("\r", "\n")
    return without_controls(text, keep="\n\t").strip()


# A cell that begins with one of these is read as a formula by Excel, LibreOffice or Sheets
# (a tab or CR in front of "=" too): text we export must never run as one.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """Text as a spreadsheet must show it, never run it: a leading "'" before a formula start."""
    return "'" + value if value.startswith(FORMULA_START) else value


def from_spreadsheet_text(value: str) -> str:
    """Undo ``spreadsheet_text`` on a cell read back from a file we exported."""
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_START) else value


def text_cells_only(sheet: Any) -> None:
    """Store every cell of an openpyxl sheet that it took for a formula (text "=…") as text.

    openpyxl writes a string beginning with "=" as a formula; none of our sheets has one, so any
    such cell is text that someone typed (a confirmer's name, say) and is kept as typed.
    """
    for row in sheet.iter_rows():
        for cell in row:
            if cell.data_type == "f":
                cell.data_type = "s"


def ascii_filename(name: str, limit: int = 60) -> str:
    """An ASCII stand-in for a file name ("Hướng dẫn.pdf" → "Huong dan.pdf"), at most ``limit``
    characters with its extension kept: the fallback beside the exact UTF-8 name."""
    name = unicodedata.normalize("NFC", name).replace("/", "_").replace("\\", "_")
    # "đ" has no decomposition, so the generic ASCII folding would drop it.
    folded = unicodedata.normalize("NFKD", name.replace("đ", "d").replace("Đ", "D"))
    fallback = "".join(c for c in folded.encode("ascii", "ignore").decode() if c.isprintable())
    fallback = " ".join(fallback.replace('"', "").split()) or "tep"
    if len(fallback) > limit:
        stem, dot, extension = fallback.rpartition(".")
        if not dot or len(extension) > 10:
            stem, extension = fallback, ""
        keep = limit - (len(extension) + 1 if extension else 0)
        fallback = stem[:keep].rstrip() + (f".{extension}" if extension else "")
    return fallback
