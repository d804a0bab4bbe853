"""How long rendering the seed letter takes: our PDF and DOCX in a warm process, against
LibreOffice converting that DOCX to PDF (what a "just convert the Word file" design would cost).

``python -m bench render``. Figures go to ``bench/results.json`` under "render"; ``ratio`` is
our PDF time over LibreOffice's, ``ratio_docx_and_pdf`` both our renderings over LibreOffice's.
"""

from __future__ import annotations

import datetime as dt
import io
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.common import median_seconds, record

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "official_letters" / "pc-covid-2021"
NUMBER, DATE = 4321, dt.date(2021, 11, 15)  # as `make preview` renders it
WARM_RUNS = 7
LIBREOFFICE_RUNS = 3
LIBREOFFICE_TIMEOUT = 120  # seconds


def _pages(pdf: bytes) -> int:
    import pypdf

    return len(pypdf.PdfReader(io.BytesIO(pdf)).pages)


def _convert(soffice: str, profile: Path, docx: Path, outdir: Path) -> Path:
    """One LibreOffice process converting ``docx`` to PDF in ``outdir``."""
    pdf = outdir / f"{docx.stem}.pdf"
    pdf.unlink(missing_ok=True)
    subprocess.run(
        [
            soffice,
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            "pdf",
            "--outdir",
            str(outdir),
            str(docx),
        ],
        check=True,
        capture_output=True,
        timeout=LIBREOFFICE_TIMEOUT,
    )
    if not pdf.is_file():
        raise RuntimeError(f"LibreOffice wrote no PDF for {docx}")
    return pdf


def libreoffice_figures(docx_bytes: bytes) -> dict[str, Any]:
    """Median time of LibreOffice converting the DOCX, in a fresh profile warmed once."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        raise SystemExit("LibreOffice (soffice) is not installed: run `make system-deps-test`")
    with tempfile.TemporaryDirectory(prefix="bench-render-") as folder:
        folder = Path(folder)
        profile, docx = folder / "lo-profile", folder / "letter.docx"
        docx.write_bytes(docx_bytes)
        # The first run creates the profile (several seconds); a real converter keeps one.
        first = _convert(soffice, profile, docx, folder)
        median, times = median_seconds(
            lambda: _convert(soffice, profile, docx, folder), LIBREOFFICE_RUNS
        )
        pages = _pages(first.read_bytes())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return {
        "libreoffice_seconds": median,
        "libreoffice_runs": times,
        "libreoffice_pages": pages,
        "libreoffice_peak_rss_mb": round(peak),
    }


def main() -> dict[str, Any]:
    """Measure, print and record the render benchmark."""
    from dispatch.letters.docx import render_docx
    from dispatch.letters.pdf import render_pdf
    from dispatch.letters.source import load_letter

    letter = load_letter(SEED).issued_as(NUMBER, DATE)
    # One warm-up each: imports, WeasyPrint's fonts and stylesheet, the DOCX template.
    pdf = render_pdf(letter)
    docx = render_docx(letter)
    pdf_median, pdf_times = median_seconds(lambda: render_pdf(letter), WARM_RUNS)
    docx_median, docx_times = median_seconds(lambda: render_docx(letter), WARM_RUNS)
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    office = libreoffice_figures(docx)

    figures = {
        "letter": str(SEED.relative_to(ROOT)),
        "ratio": pdf_median / office["libreoffice_seconds"],
        "ratio_docx_and_pdf": (pdf_median + docx_median) / office["libreoffice_seconds"],
        "pdf_seconds": pdf_median,
        "pdf_runs": pdf_times,
        "pdf_pages": _pages(pdf),
        "pdf_bytes": len(pdf),
        "docx_seconds": docx_median,
        "docx_runs": docx_times,
        "docx_bytes": len(docx),
        "renderer_peak_rss_mb": round(own_peak),
        **office,
    }
    entry = record("render", figures)
    print(f"seed letter {figures['letter']}, {entry['cpu_count']} CPUs, {entry['date']}")
    pages = figures["pdf_pages"]
    print(f"  PDF (WeasyPrint, warm)       {pdf_median * 1000:8.0f} ms  {pages} pages")
    print(f"  DOCX (python-docx, warm)     {docx_median * 1000:8.0f} ms")
    print(
        f"  LibreOffice DOCX -> PDF      {office['libreoffice_seconds'] * 1000:8.0f} ms  "
        f"{office['libreoffice_pages']} pages, {office['libreoffice_peak_rss_mb']} MB"
    )
    print(f"  ratio PDF / LibreOffice              {figures['ratio']:.3f}")
    print(f"  ratio (DOCX + PDF) / LibreOffice     {figures['ratio_docx_and_pdf']:.3f}")
    return entry


if __name__ == "__main__":
    main()
