"""The interface's Vietnamese is written one way (issue 14, point 9): typographic quotes “…”
rather than straight ones in what people read, and one tone-mark style, the one of the agency's
own name "Cục Tin học hoá" (hoá, hoà, hoả, uỷ, thuỷ, khoẻ: the mark on the vowel it has always
been written on), in the templates and in every message of the code.

Straight quotes stay where they are code: HTML attributes, Jinja expressions, JSON, docstrings
and comments. The letter's own fixed wording follows Decree 30 ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT
NAM", "HỎA TỐC"), and place names are written as the State writes them ("Khánh Hòa")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.fixtures.wording import visible_text

pytestmark = pytest.mark.nodb

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
PACKAGE = ROOT / "dispatch"
VIETNAMESE = re.compile(
    "[àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ]", re.I
)
# The new-style placement: the mark on the second vowel of a final oa, oe, uy ("hóa", "khỏe",
# "thủy"); the interface writes "hoá", "khoẻ", "thuỷ".
NEW_STYLE = re.compile(r"\w*(?:[óòỏõọ][ae]|[úùủũụ]y)(?!\w)", re.I)
# Written as the decree or the State writes them, whatever the interface's style.
FIXED_WORDS = {"HÒA", "HỎA", "hỏa", "Hòa"}
FIXED_CONTEXT = re.compile(
    r"CỘNG HÒA|HỎA TỐC|\"hỏa tốc\"|Khánh Hòa|Hòa Bình|Thanh Hóa|Đông Hòa|Hòa Vang"
)
# Code the reader reads or types as it is: in `backticks` (JSON in the API's description), and
# a YAML value in straight quotes.
TYPED_AS_IS = re.compile(r'`[^`]*`|ngoặc kép "…"')
# An attribute a macro writes from inside a Jinja block ({% if %} aria-invalid="true").
ATTRIBUTE = re.compile(r'[\w-]+="[^"]*"')


def _template_text(source: str) -> str:
    """A template's text as the reader gets it: Jinja comments, statements and expressions
    taken out, then the HTML's visible text."""
    source = re.sub(r"\{#.*?#\}", " ", source, flags=re.S)
    source = re.sub(r"\{%.*?%\}", " ", source, flags=re.S)
    source = re.sub(r"\{\{.*?\}\}", " ", source, flags=re.S)
    return ATTRIBUTE.sub(" ", visible_text(source))


def _templates() -> list[Path]:
    return sorted(p for p in TEMPLATES.rglob("*") if p.suffix in (".html", ".txt"))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _messages() -> list[tuple[str, int, str]]:
    """Every Vietnamese string of the package's code (not docstrings): (file, line, text)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
                and VIETNAMESE.search(node.value)
            ):
                found.append((name, node.lineno, node.value))
    return found


def _new_style(text: str) -> list[str]:
    text = FIXED_CONTEXT.sub(" ", text)
    return [w for w in NEW_STYLE.findall(text) if w not in FIXED_WORDS]


def test_templates_use_typographic_quotes():
    straight = {}
    for path in _templates():
        text = _template_text(path.read_text(encoding="utf-8"))
        lines = [line for line in text.splitlines() if '"' in line]
        if lines:
            straight[path.relative_to(ROOT).as_posix()] = lines
    assert straight == {}


def test_messages_use_typographic_quotes():
    straight = [
        f"{name}:{line}: {text[:90]!r}"
        for name, line, text in _messages()
        if '"' in TYPED_AS_IS.sub("", text) and not text.lstrip().startswith("<")
    ]
    assert straight == [], "\n".join(straight)


def test_one_tone_mark_style():
    found = []
    for path in _templates():
        for word in _new_style(_template_text(path.read_text(encoding="utf-8"))):
            found.append(f"{path.relative_to(ROOT)}: {word}")
    for name, line, text in _messages():
        found += [f"{name}:{line}: {word}" for word in _new_style(text)]
    assert found == [], "\n".join(found)


def test_the_checks_catch_what_they_look_for():
    assert '"V/v"' in _template_text('<p title="x">Ghi "V/v" ở đầu {{ "a" }}</p>')
    assert _template_text('<a href="/x">{% if a == "b" %}Xem{% endif %}</a>') == "Xem"
    assert _new_style("Cục Tin học hóa, thủy lợi, khỏe") == ["hóa", "thủy", "khỏe"]
    assert _new_style("Cục Tin học hoá, thuỷ lợi, khoẻ, hoàn thành, quý, tỉnh Khánh Hòa") == []
