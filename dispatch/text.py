"""How typed text is stored: NFC, on one line or several, without control characters.

Every door that takes text from a person (the web forms, the token pages, CSV imports) cleans it
with these, so the same name is stored the same way whichever way it came in.
"""

from __future__ import annotations

import re
import unicodedata

_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x85]+")
_SPACES = re.compile(r"[ \t\u00a0]+")


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
