"""The verification QR code on the letter: it decodes (zbar, a reader that knows nothing of
segno) to the letter's page, it sits at the foot of the left margin of page 1 clear of every
word, the address is printed under it in the bottom margin, and nothing else moves."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
from pathlib import Path

import pdfplumber
import pytest
from PIL import Image

from dispatch.letters.pdf import RenderError, render_pdf
from tests.letter_samples import sample_letter, seed_letter
from tests.test_archival import archival_facts

pytestmark = pytest.mark.nodb

MM = 72 / 25.4
LEFT, BOTTOM = 30 * MM, (297 - 20) * MM
ISSUED = dict(number=4321, date=dt.date(2021, 11, 15))
URL = "https://congvan.thh.example/xac-minh/Xq3_kZ9-aB7cD1eF"
DPI = 300
needs_tools = pytest.mark.skipif(
    not (shutil.which("zbarimg") and shutil.which("pdftoppm")),
    reason="zbar-tools and poppler-utils are needed (scripts/system-deps.sh test)",
)


@pytest.fixture(scope="module")
def seed_pdfs() -> tuple[bytes, bytes]:
    """The seed letter without and with the QR code."""
    letter = seed_letter(**ISSUED)
    return render_pdf(letter), render_pdf(letter, verify_url=URL)


def _page_image(pdf: bytes, tmp_path: Path, page: int = 1) -> Path:
    source = tmp_path / "letter.pdf"
    source.write_bytes(pdf)
    stem = tmp_path / f"page-{page}"
    subprocess.run(
        ["pdftoppm", "-r", str(DPI), "-f", str(page), "-l", str(page), "-png", "-singlefile",
         "-gray", str(source), str(stem)],
        check=True,
    )  # fmt: skip
    return stem.with_suffix(".png")


def _zbar(image: Path) -> list[str]:
    run = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line for line in run.stdout.splitlines() if line]


def _dark_box(
    image: Path, region_mm: tuple[float, float, float, float]
) -> tuple[float, ...] | None:
    """The bounding box (mm from the page's top left) of the dark pixels inside ``region_mm``,
    or None when nothing is printed there."""
    scale = DPI / 25.4
    with Image.open(image) as im:
        x0, y0, x1, y1 = (round(v * scale) for v in region_mm)
        crop = im.convert("L").crop((x0, y0, x1, y1)).point(lambda v: 255 if v < 128 else 0)
        box = crop.getbbox()
    if box is None:
        return None
    return tuple(
        round(v / scale, 1)
        for v in (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)
    )  # fmt: skip


@needs_tools
def test_the_qr_code_decodes_to_the_verification_page(seed_pdfs, tmp_path: Path) -> None:
    plain, with_qr = seed_pdfs
    assert _zbar(_page_image(with_qr, tmp_path)) == [URL]
    # Only page 1 carries it; a letter rendered without an address carries none.
    assert _zbar(_page_image(with_qr, tmp_path, page=2)) == []
    assert _zbar(_page_image(plain, tmp_path)) == []


@needs_tools
def test_the_qr_code_sits_in_the_left_margin_at_the_foot_of_page_1(
    seed_pdfs, tmp_path: Path
) -> None:
    _, with_qr = seed_pdfs
    image = _page_image(with_qr, tmp_path)
    # Everything printed left of the text area, above the bottom margin: the code alone.
    found = _dark_box(image, (0, 20, 29.5, 277))
    assert found is not None, "nothing printed in the left margin"
    x0, y0, x1, y1 = found
    assert 17 <= x1 - x0 <= 20 and 17 <= y1 - y0 <= 20, (x0, y0, x1, y1)  # ~18 mm square
    assert x0 >= 5 and x1 <= 27  # clear of the text, which starts at 30 mm
    assert y1 <= 277 and y0 >= 240  # at the foot of the page, above the bottom margin
    # Nothing else in the left margin of page 1, and no more than the caption line under it.
    assert _dark_box(image, (0, 0, 29.5, y0 - 0.5)) is None
    caption = _dark_box(image, (0, 277, 210, 297))
    assert caption is not None and caption[1] > y1 and caption[3] < 287


def test_no_word_overlaps_the_code_and_the_address_is_under_it(seed_pdfs) -> None:
    _, with_qr = seed_pdfs
    page = pdfplumber.open(io.BytesIO(with_qr)).pages[0]
    drawn = [g for g in page.curves + page.lines + page.rects if g["x1"] < LEFT]
    assert drawn, "the QR code is not drawn as vector graphics in the left margin"
    qr = (
        min(g["x0"] for g in drawn),
        min(g["top"] for g in drawn),
        max(g["x1"] for g in drawn),
        max(g["bottom"] for g in drawn),
    )
    assert qr[2] < LEFT and qr[3] <= BOTTOM
    words = page.extract_words()
    caption = [w for w in words if w["top"] >= BOTTOM]
    assert " ".join(w["text"] for w in caption) == f"Xác minh văn bản: {URL}"
    assert all(w["top"] >= qr[3] for w in caption)  # beneath the code
    assert caption[0]["x0"] == pytest.approx(qr[0], abs=1)  # starting where it starts
    assert all(w["bottom"] <= 297 * MM - 10 * MM for w in caption)  # well inside the sheet
    for word in words:
        overlaps = not (
            word["x1"] <= qr[0] or word["x0"] >= qr[2] or word["bottom"] <= qr[1]
            or word["top"] >= qr[3]
        )  # fmt: skip
        assert not overlaps, word
    # Every other word is inside the text area, as without the code.
    assert all(w["x0"] >= LEFT - 0.5 for w in words if w not in caption)


def test_the_code_moves_nothing_else(seed_pdfs) -> None:
    """Each page's words are where they were without the code (the caption aside)."""
    plain, with_qr = seed_pdfs
    before = pdfplumber.open(io.BytesIO(plain))
    after = pdfplumber.open(io.BytesIO(with_qr))
    assert len(before.pages) == len(after.pages)

    def placed(page) -> list[tuple]:
        return [
            (w["text"], round(w["x0"], 1), round(w["top"], 1))
            for w in page.extract_words()
            if w["top"] < BOTTOM
        ]

    for old, new in zip(before.pages, after.pages, strict=True):
        assert placed(old) == placed(new)


def test_one_page_letter_carries_it_clear_of_the_signature_block() -> None:
    """On a one-page letter page 1 is also the last: the code stays clear of "Nơi nhận" and the
    signature block."""
    letter = sample_letter(**ISSUED, appendices=False)
    pdf = render_pdf(letter, verify_url=URL)
    doc = pdfplumber.open(io.BytesIO(pdf))
    assert len(doc.pages) == 1
    page = doc.pages[0]
    drawn = [g for g in page.curves + page.lines + page.rects if g["x1"] < LEFT]
    right = max(g["x1"] for g in drawn)
    label = page.search("Nơi nhận")
    assert label and label[0]["x0"] > right
    # Its name, the last line of the block, stays above the code's top: no overlap either way.
    name = page.search(letter.signer.name)
    assert name and (name[0]["bottom"] < min(g["top"] for g in drawn) or name[0]["x0"] > right)


def test_the_letter_with_the_code_is_still_archival(seed_pdfs) -> None:
    _, with_qr = seed_pdfs
    archival_facts(with_qr)


def test_a_strange_address_is_refused() -> None:
    with pytest.raises(RenderError, match="Địa chỉ xác minh không hợp lệ"):
        render_pdf(seed_letter(**ISSUED), verify_url="javascript:alert(1)")
