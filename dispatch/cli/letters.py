"""``dispatch render``: a letter source to PDF and DOCX, no database needed."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import click

from dispatch.cli.options import parse_date
from dispatch.letters.source import LetterSourceError, load_letter


@click.command("render")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--number", type=click.IntRange(1), help="Register number (blank when omitted).")
@click.option("--date", "date", callback=parse_date, help="Date of issue, YYYY-MM-DD.")
@click.option("--pdf", "pdf_out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--docx", "docx_out", type=click.Path(dir_okay=False, path_type=Path))
def render_command(
    source: Path,
    number: int | None,
    date: dt.date | None,
    pdf_out: Path | None,
    docx_out: Path | None,
) -> None:
    """Render the letter in SOURCE (a folder under official_letters/) to PDF and/or DOCX."""
    if pdf_out is None and docx_out is None:
        raise click.UsageError("give --pdf OUT.pdf, --docx OUT.docx or both")
    if number is not None and date is None:
        raise click.UsageError("--number needs --date too")
    try:
        letter = load_letter(source)
    except LetterSourceError as exc:
        raise click.ClickException(str(exc)) from exc
    if date is not None:
        # A date alone dates a draft; with a number it is the letter as issued.
        letter = replace(letter.issued_as(number or 0, date), number=number)
    from dispatch.letters.docx import render_docx
    from dispatch.letters.pdf import RenderError, render_pdf

    try:
        if pdf_out is not None:
            pdf_out.write_bytes(render_pdf(letter))
            click.echo(f"PDF: {pdf_out}")
        if docx_out is not None:
            docx_out.write_bytes(render_docx(letter))
            click.echo(f"DOCX: {docx_out}")
    except (RenderError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


commands = (render_command,)
