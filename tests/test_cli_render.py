"""``dispatch render``: a letter source to files, and clear errors instead of tracebacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dispatch.cli import main
from tests.letter_samples import SEED_FOLDER

pytestmark = pytest.mark.nodb


def _render(*args: str):
    return CliRunner().invoke(main, ["render", *args], catch_exceptions=False)


def test_render_writes_both_files(tmp_path: Path):
    pdf, docx = tmp_path / "a.pdf", tmp_path / "a.docx"
    result = _render(
        str(SEED_FOLDER),
        "--number",
        "4321",
        "--date",
        "2021-11-15",
        "--pdf",
        str(pdf),
        "--docx",
        str(docx),
    )
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert docx.read_bytes().startswith(b"PK")


def test_a_character_the_font_lacks_is_a_clear_error(tmp_path: Path):
    folder = tmp_path / "letter"
    shutil.copytree(SEED_FOLDER, folder)
    letter = folder / "letter.md"
    letter.write_text(letter.read_text().replace("Trân trọng./.", "Trân trọng 中./."))
    result = _render(str(folder), "--pdf", str(tmp_path / "x.pdf"))
    assert result.exit_code == 1
    assert "Error:" in result.output and "U+4E2D" in result.output
    assert "Traceback" not in result.output


def test_a_number_needs_a_date(tmp_path: Path):
    result = _render(str(SEED_FOLDER), "--number", "3", "--pdf", str(tmp_path / "x.pdf"))
    assert result.exit_code == 2
    assert "--number needs --date" in result.output
