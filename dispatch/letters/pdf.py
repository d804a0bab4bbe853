"""The letter as a PDF laid out to Decree 30: a plain view-model, Jinja templates, WeasyPrint 70.

``render_pdf(letter)`` is a pure function from the document model to bytes. The words Decree 30
puts around the text come from ``dispatch.letters.formatting`` (the DOCX prints the same ones);
the layout lives in ``templates/letters/letter.html`` and ``letter.css``. WeasyPrint is imported
here only, and set up once per process (fonts loaded, stylesheet parsed) because importing it
and loading fonts costs far more than laying out a two-page letter.

Fonts are the Liberation Serif files shipped in ``dispatch/letters/fonts`` (Times New Roman
metrics, full Vietnamese), never whatever the machine has: a character they lack is refused
before rendering, and a PDF that somehow used another font is refused after.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from dispatch.clock import VN
from dispatch.config import PROJECT_ROOT
from dispatch.letters import formatting
from dispatch.letters.model import Block, BlockKind, Letter, Span

FONT_DIR = Path(__file__).resolve().parent / "fonts"
TEMPLATE_DIR = PROJECT_ROOT / "templates" / "letters"
ATTACHMENT_DIR = PROJECT_ROOT / "attachments"

# The CSS family name the stylesheet uses; it shows as the font name in the PDF.
FONT_FAMILY = "Liberation Serif"
FONT_FILES = {
    # (weight, style): file
    ("normal", "normal"): "LiberationSerif-Regular.ttf",
    ("bold", "normal"): "LiberationSerif-Bold.ttf",
    ("normal", "italic"): "LiberationSerif-Italic.ttf",
    ("bold", "italic"): "LiberationSerif-BoldItalic.ttf",
}


# Each appendix gets its own named page so that its numbering can restart (see letter.css).
MAX_APPENDICES = len(formatting.ROMAN)

# Words must not break after their "/" or "-": document numbers ("1015/TTg-KGVX",
# "30/2020/NĐ-CP"), dates ("15/11/2021"), hyphenated words ("vắc-xin", "PC-Covid"). A WORD
# JOINER after the mark forbids the break; it needs no glyph and text extraction drops it.
# (``white-space: nowrap`` spans do the same on paper, but WeasyPrint 70 then sometimes breaks
# a narrow table cell's first line after its first word.)
WORD_JOINER = "\u2060"
BREAK_AFTER_MARK = re.compile(r"([/\-])(?=\w)")

# Every PDF Dispatch prints is archival (Decree 30 keeps electronic documents in an archival
# format): PDF/A-3 level u, so that the text extracts, with an sRGB output intent, XMP metadata
# from the page's <title>, author, language and dcterms.created, and every font embedded.
# Level 3 lets the attached PDFs travel inside it.
PDF_VARIANT = "pdf/a-3u"
OUTPUT_INTENT = "dispatch-srgb"

# The verification QR code (``verify_url``): the caption printed under it, and its error
# correction level (M: 15 % of the symbol may be stained or creased and it still reads).
VERIFY_LABEL = "Xác minh văn bản:"
VERIFY_ERROR_LEVEL = "m"

# Characters that HTML collapses into ordinary spaces, so they never need a glyph.
COLLAPSIBLE = frozenset("\t\n\r")


class RenderError(RuntimeError):
    """The letter cannot be rendered faithfully (a missing glyph or font, a refused resource)."""


# --------------------------------------------------------------------------- view-model


@dataclass(frozen=True)
class _Text:
    """A piece of printed text and where it comes from, for the glyph check's message."""

    where: str
    text: str


def _nfc(text: str) -> str:
    """Text in NFC: NFD input renders the same but extracts (and searches) differently."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _runs(spans: tuple[Span, ...] | list[Span], blank: str = "") -> list[dict]:
    """Spans as template runs, with no line break after a "/" or "-" inside a word.

    ``blank`` is the unissued number ("      /THH-VP"): its spaces become no-break spaces so
    the blank keeps its width and stays on one line with the symbol.
    """
    runs: list[dict] = []
    for span in spans:
        text = _nfc(span.text)
        if blank and blank.startswith(formatting.BLANK):
            text = text.replace(blank, blank.replace(" ", "\u00a0"))
        text = BREAK_AFTER_MARK.sub(r"\1" + WORD_JOINER, text)
        classes = " ".join(c for c, on in (("b", span.bold), ("i", span.italic)) if on)
        runs.append({"text": text, "classes": classes})
    return runs


def _plain(text: str, blank: str = "") -> list[dict]:
    """A plain string as template runs."""
    return _runs((Span(text),), blank)


def _block(block: Block) -> dict[str, Any]:
    """One body block as plain template data."""
    if block.kind is BlockKind.TABLE:
        return {
            "kind": "table",
            "header": [_runs(cell) for cell in block.rows[0]] if block.rows else [],
            "rows": [[_runs(cell) for cell in row] for row in block.rows[1:]],
        }
    kind = {
        BlockKind.PARAGRAPH: "paragraph",
        BlockKind.HEADING: "heading",
    }.get(block.kind, "item")
    return {"kind": kind, "marker": _nfc(block.marker), "runs": _runs(block.spans)}


def _blocks_text(blocks: tuple[Block, ...], where: str, src: str) -> Iterator[_Text]:
    """The printed text of body blocks, each with its place."""
    for index, block in enumerate(blocks, start=1):
        if block.kind is BlockKind.TABLE:
            for r, row in enumerate(block.rows, start=1):
                for c, cell in enumerate(row, start=1):
                    text = "".join(span.text for span in cell)
                    yield _Text(f"{where}, đoạn {index} (bảng, hàng {r}, cột {c}){src}", text)
        else:
            yield _Text(f"{where}, đoạn {index}{src}", f"{block.marker} {block.text}")


def _source(path: Path | None) -> str:
    """Where the text came from, for a message: the source folder or file."""
    if path is None:
        return ""
    return f" (thư mục {path})" if path.is_dir() else f" (tệp {path})"


def printed_texts(letter: Letter) -> Iterator[_Text]:
    """Every text the PDF prints from the letter, as printed (upper case where it is)."""
    src = _source(letter.source)
    yield _Text(f"cơ quan chủ quản{src}", letter.parent_agency.upper())
    yield _Text(f"cơ quan ban hành{src}", letter.issuing_agency.upper())
    yield _Text(f"số, ký hiệu{src}", formatting.number_line(letter))
    yield _Text(f"địa danh, ngày tháng{src}", formatting.place_date_line(letter))
    yield _Text(f"trích yếu{src}", formatting.subject_line(letter))
    if letter.urgency is not None:
        yield _Text(f"độ khẩn{src}", letter.urgency.value)
    for i, line in enumerate(formatting.addressee_lines(letter), start=1):
        yield _Text(f"Kính gửi, dòng {i}{src}", line)
    yield from _blocks_text(letter.body, "thân công văn", src)
    for line in formatting.signer_title_lines(letter):
        yield _Text(f"chức vụ người ký{src}", line)
    yield _Text(f"tên người ký{src}", letter.signer.name)
    for i, line in enumerate(formatting.distribution_lines(letter), start=1):
        yield _Text(f"Nơi nhận, dòng {i}{src}", line)
    for appendix in letter.appendices:
        label = formatting.appendix_heading(appendix.numeral)
        asrc = _source(appendix.source) or src
        yield _Text(f"{label}, tiêu đề{asrc}", appendix.title.upper())
        yield _Text(f"{label}, dòng Kèm theo{asrc}", formatting.appendix_reference_line(letter))
        yield from _blocks_text(appendix.body, label, asrc)


def verify_block(url: str) -> dict[str, Any]:
    """The QR code that opens ``url`` (inline SVG, drawn by segno) and its caption.

    The SVG is our own markup, never the user's text: the URL is only encoded in the symbol's
    modules and printed (escaped) in the caption.
    """
    import markupsafe
    import segno

    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        raise RenderError(f"Địa chỉ xác minh không hợp lệ: {url[:200]!r}.")
    code = segno.make(url, error=VERIFY_ERROR_LEVEL, micro=False)
    svg = code.svg_inline(border=0, omitsize=True, svgclass=None, lineclass=None)
    return {"svg": markupsafe.Markup(svg), "label": VERIFY_LABEL, "url": url}


def letter_view(
    letter: Letter, *, verify_url: str | None = None, created: dt.datetime | None = None
) -> dict[str, Any]:
    """The plain data the letter template reads; every text is NFC and every word Decree 30's.

    With ``verify_url``, the first page carries a small QR code that opens it (``verify``).
    ``created``: the XMP creation date of a letter rendered before it has a date (the moment it
    was submitted for signature); a dated letter's is its date.
    """
    if len(letter.appendices) > MAX_APPENDICES:
        raise RenderError(f"Một công văn chỉ có tối đa {MAX_APPENDICES} phụ lục.")
    number = formatting.number_and_symbol(letter)
    subject = formatting.subject_line(letter)
    return {
        "title": _nfc(formatting.document_title(letter)),
        "author": _nfc(letter.issuing_agency),
        # The XMP creation date: the issuing date, or when an undated letter was made.
        "created": (
            f"{letter.date.isoformat()}T00:00:00+07:00"
            if letter.date is not None
            else created.astimezone(VN).isoformat(timespec="seconds")
            if created is not None
            else None
        ),
        "parent_agency": _nfc(letter.parent_agency.upper()),
        "issuing_agency": _nfc(letter.issuing_agency.upper()),
        "national_title": formatting.NATIONAL_TITLE,
        "motto": formatting.MOTTO,
        "fields": False,  # True: number, day and "Kèm theo" lines left to PDF form fields
        "number_line": _nfc(formatting.number_line(letter)),
        "place_date": _nfc(formatting.place_date_line(letter)),
        "subject": _plain(subject),
        "urgency": letter.urgency.value if letter.urgency is not None else None,
        "addressee_label": formatting.ADDRESSEE_LABEL,
        "addressees": [_plain(line) for line in formatting.addressee_lines(letter)],
        "body": [_block(block) for block in letter.body],
        "signer_titles": [_nfc(line) for line in formatting.signer_title_lines(letter)],
        "signer_name": _nfc(letter.signer.name),
        "distribution_label": formatting.DISTRIBUTION_LABEL,
        "distribution": [_plain(line) for line in formatting.distribution_lines(letter)],
        "appendices": [
            {
                "page": f"appendix-{index}",
                "heading": _nfc(formatting.appendix_heading(appendix.numeral)),
                "title": _plain(appendix.title.upper()),
                "reference": _plain(formatting.appendix_reference_line(letter), blank=_nfc(number)),
                "body": [_block(block) for block in appendix.body],
            }
            for index, appendix in enumerate(letter.appendices, start=1)
        ],
        "verify": verify_block(verify_url) if verify_url else None,
    }


# --------------------------------------------------------------------------- fonts


def font_paths() -> dict[tuple[str, str], Path]:
    """The shipped font files by (weight, style); RenderError if any is missing."""
    paths = {key: FONT_DIR / name for key, name in FONT_FILES.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise RenderError("Thiếu tệp phông chữ để in công văn: " + ", ".join(missing))
    return paths


def print_templates(folder: Path) -> jinja2.Environment:
    """The Jinja environment for printed documents in ``folder``: HTML autoescaped (text from
    users is text, never markup), stylesheets not (they hold only our own values)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html",), disabled_extensions=("css",), default=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def font_faces(paths: dict[tuple[str, str], Path]) -> list[dict[str, str]]:
    """The shipped faces as the stylesheets' @font-face rules want them."""
    return [
        {"weight": weight, "style": style, "url": path.as_uri()}
        for (weight, style), path in paths.items()
    ]


class FontCoverage:
    """What the shipped faces are: the characters all of them draw, and their fingerprints."""

    def __init__(self, paths: dict[tuple[str, str], Path]) -> None:
        from fontTools.ttLib import TTFont

        maps = []
        # (glyph count, units per em) of each face: WeasyPrint has subset the font data by
        # the time the PDF is written, but still knows these of the face it actually used.
        self.fingerprints: set[tuple[int, int]] = set()
        for path in paths.values():
            with TTFont(path, lazy=True) as font:
                maps.append(set(font.getBestCmap()))
                self.fingerprints.add((font["maxp"].numGlyphs, font["head"].unitsPerEm))
        # Any text may be set bold or italic, so a character must exist in every face.
        self.codepoints = frozenset(set.intersection(*maps))

    def check(self, texts: Iterator[_Text]) -> None:
        """Raise RenderError naming the first character the fonts lack and where it is."""
        for item in texts:
            text = _nfc(item.text)
            for position, char in enumerate(text):
                if char in COLLAPSIBLE or ord(char) in self.codepoints:
                    continue
                context = text[max(0, position - 20) : position + 20]
                raise RenderError(
                    f"Phông chữ {FONT_FAMILY} không có ký tự U+{ord(char):04X} «{char}» "
                    f"({unicodedata.name(char, 'không rõ tên')}) ở {item.where}: «{context}». "
                    "Hãy thay ký tự này trong văn bản nguồn."
                )


# --------------------------------------------------------------------------- rendering


class _Complaints(logging.Handler):
    """What WeasyPrint logs at WARNING or above: a font face it could not load, a resource
    it skipped, CSS it ignored. Any of these means the PDF is not the one we designed."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        # Other renderers (reports, register) may log from other threads meanwhile.
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def _complaints() -> Iterator[_Complaints]:
    """Collect WeasyPrint's warnings during a step (the caller turns them into an error)."""
    logger = logging.getLogger("weasyprint")
    # Hear the warnings even where logging was configured to hide them: Alembic's fileConfig,
    # for one, disables every logger that exists when the migrations run.
    disabled, level = logger.disabled, logger.level
    logger.disabled = False
    logger.setLevel(logging.WARNING)
    handler = _Complaints()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.disabled = disabled
        logger.setLevel(level)  # setLevel, not assignment: it clears the enabled-for cache


def _refuse(complaints: _Complaints) -> None:
    if complaints.messages:
        raise RenderError("Không in được công văn đúng mẫu: " + "; ".join(complaints.messages))


_srgb_profile: bytes | None = None


def write_archival(document: Any) -> bytes:
    """The PDF/A-3u bytes of a laid-out WeasyPrint document.

    The sRGB profile is WeasyPrint's own, read once and handed over in memory: WeasyPrint 70's
    built-in ``srgb`` output intent leaves the profile file open on every PDF.
    """
    global _srgb_profile
    from importlib.resources import files

    from weasyprint.css import ColorProfile

    if _srgb_profile is None:
        _srgb_profile = (files("weasyprint.pdf") / "sRGB2014.icc").read_bytes()
    document.color_profiles[OUTPUT_INTENT] = ColorProfile(
        io.BytesIO(_srgb_profile), "sRGB2014.icc", "relative-colorimetric", (["r"], ["g"], ["b"])
    )
    document.output_intent = OUTPUT_INTENT
    return document.write_pdf(pdf_variant=PDF_VARIANT, output_intent=OUTPUT_INTENT, pdf_tags=True)


class PrintEngine:
    """WeasyPrint set up once for one kind of printed document: the shipped fonts registered,
    its stylesheet parsed, its page template loaded from ``template_dir``, and a fetcher that
    reads only ``readable`` (folder → allowed media types). ``render`` prints a view and refuses
    any font but the shipped files (a silent fallback prints boxes for Vietnamese marks).

    ``error`` is raised with ``fetch_failed`` (``{exc}``, ``{cause}``) when WeasyPrint is
    refused a fetch, and with ``foreign_font`` (``{family}``) for a font not shipped.
    """

    def __init__(
        self,
        *,
        template_dir: Path,
        template: str,
        stylesheet: str,
        readable: dict[Path, Any],
        error: type[Exception],
        fetch_failed: str,
        foreign_font: str,
        **css: Any,
    ) -> None:
        import weasyprint
        from weasyprint.text.fonts import FontConfiguration

        from dispatch.letters.fetcher import RestrictedURLFetcher

        self.weasyprint = weasyprint
        self.error, self.fetch_failed, self.foreign_font = error, fetch_failed, foreign_font
        self.base_url = template_dir.as_uri() + "/"
        paths = font_paths()
        self.coverage = FontCoverage(paths)
        self.fetcher = RestrictedURLFetcher(readable)
        self.templates = print_templates(template_dir)
        self.html_template = self.templates.get_template(template)
        css_text = self.templates.get_template(stylesheet).render(
            font_family=FONT_FAMILY, fonts=font_faces(paths), **css
        )
        self.font_config = FontConfiguration()
        self.stylesheet = self._guarded(
            lambda: weasyprint.CSS(
                string=css_text,
                base_url=self.base_url,
                url_fetcher=self.fetcher,
                font_config=self.font_config,
            )
        )
        # Rendering shares the font configuration (Pango/Fontconfig objects): one at a time.
        # Re-entrant, so that a subclass can hold it around ``_print`` (``_Engine``).
        self.lock = threading.RLock()

    def _guarded(self, action):
        """Run a WeasyPrint step, turning a refused fetch into ``error``."""
        from weasyprint.urls import FatalURLFetchingError

        try:
            return action()
        except FatalURLFetchingError as exc:  # a BaseException: `except Exception` misses it
            raise self.error(self.fetch_failed.format(exc=exc, cause=exc.__cause__)) from exc

    def render(self, view: dict[str, Any]) -> bytes:
        """The PDF of the page template filled with ``view``."""
        document, pdf = self._print(view)
        self._check_fonts(document)
        return pdf

    def _print(self, view: dict[str, Any]) -> tuple[Any, bytes]:
        """The laid-out document and its PDF bytes."""
        html = self.html_template.render(**view)
        with self.lock:
            document = self._guarded(
                lambda: self.weasyprint.HTML(
                    string=html, base_url=self.base_url, url_fetcher=self.fetcher
                ).render(font_config=self.font_config, stylesheets=[self.stylesheet])
            )
            return document, self._guarded(lambda: write_archival(document))

    def _check_fonts(self, document: Any) -> None:
        """Refuse a PDF that used any font but the shipped files (a silent fallback)."""
        for font in document.fonts.values():
            fingerprint = (font.glyph_count, font.upem)
            if font.family != FONT_FAMILY or fingerprint not in self.coverage.fingerprints:
                raise self.error(self.foreign_font.format(family=font.family))


class _Engine(PrintEngine):
    """The letter's engine: its every text checked against the fonts first, and anything
    WeasyPrint complains about (CSS it ignores, a resource it skips) refused."""

    def __init__(self) -> None:
        from dispatch.letters.fetcher import FONT_TYPES, IMAGE_TYPES, STYLE_TYPES

        with _complaints() as complaints:
            super().__init__(
                template_dir=TEMPLATE_DIR,
                template="letter.html",
                stylesheet="letter.css",
                readable={
                    FONT_DIR: FONT_TYPES,
                    TEMPLATE_DIR: STYLE_TYPES,
                    ATTACHMENT_DIR: IMAGE_TYPES,
                },
                error=RenderError,
                fetch_failed="Không in được công văn: {exc} ({cause})",
                foreign_font=(
                    "Công văn đã dùng phông chữ ngoài bộ phông đi kèm ({family}); "
                    "kiểm tra lại các tệp phông chữ."
                ),
                appendix_pages=[f"appendix-{i}" for i in range(1, MAX_APPENDICES + 1)],
            )
        _refuse(complaints)

    def render_letter(self, letter: Letter, *, verify_url: str | None = None) -> bytes:
        """The PDF of ``letter`` (with the QR code of ``verify_url`` when given)."""
        return self._render(letter, fields=False, verify_url=verify_url)[1]

    def render_with_places(
        self,
        letter: Letter,
        *,
        verify_url: str | None = None,
        created: dt.datetime | None = None,
    ) -> tuple[bytes, dict[str, Place]]:
        """The PDF of ``letter`` with its number and day lines and its appendices' reference
        lines laid out but not drawn, and the places of those lines and of the signature space,
        read back from the layout."""
        document, pdf = self._render(letter, fields=True, verify_url=verify_url, created=created)
        return pdf, places_in(document)

    def _render(
        self,
        letter: Letter,
        *,
        fields: bool,
        verify_url: str | None,
        created: dt.datetime | None = None,
    ) -> tuple[Any, bytes]:
        self.coverage.check(printed_texts(letter))
        if verify_url:
            self.coverage.check(iter([_Text("dòng xác minh", f"{VERIFY_LABEL} {verify_url}")]))
        view = letter_view(letter, verify_url=verify_url, created=created)
        view["fields"] = fields
        with self.lock, _complaints() as complaints:
            document, pdf = self._print(view)
        _refuse(complaints)
        self._check_fonts(document)
        return document, pdf


# CSS px to PDF points.
PX = 0.75
# The marked boxes of the letter template whose places the signing code needs.
PLACES = {"number": "number", "place-date": "place_date", "signature-place": "signature"}
# Each appendix's "(Kèm theo Công văn số … ngày …)" line: one place per appendix, in order,
# named "reference-1", "reference-2", …
REFERENCE_CLASS = "appendix-reference"
REFERENCE_PLACE = "reference-{}"


@dataclass(frozen=True)
class Place:
    """A laid-out box in PDF points (origin bottom left): page index, content box, the first
    line's baseline and horizontal extent, and the font its text is set in."""

    page: int
    x1: float
    y1: float
    x2: float
    y2: float
    baseline: float
    font_size: float
    font: tuple[str, str]  # (weight, style) as in FONT_FILES
    # Each laid-out line: where its text starts, its baseline and its text as printed (word
    # joiners left out); filled for the appendices' reference lines, which may wrap.
    lines: tuple[tuple[float, float, str], ...] = ()


def _line_texts(line: Any) -> Iterator[Any]:
    """The text boxes of a laid-out line, in order."""
    if type(line).__name__ == "TextBox":
        yield line
    for child in getattr(line, "children", ()) or ():
        yield from _line_texts(child)


def places_in(document: Any) -> dict[str, Place]:
    """Where the boxes named in ``PLACES`` (by CSS class) were laid out."""
    found: dict[str, Place] = {}
    references: list[Place] = []
    for index, page in enumerate(document.pages):
        height = page.height
        stack = [page._page_box]  # WeasyPrint's layout tree (no public accessor)
        while stack:
            box = stack.pop()
            stack.extend(getattr(box, "children", ()) or ())
            element = getattr(box, "element", None)
            if element is None or type(box).__name__ != "BlockBox":
                continue
            classes = (element.get("class") or "").split()
            names = [PLACES[c] for c in classes if c in PLACES]
            reference = REFERENCE_CLASS in classes
            if not names and not reference:
                continue
            x, y = box.content_box_x(), box.content_box_y()
            lines = [c for c in box.children if type(c).__name__ == "LineBox"]
            baseline = lines[0].position_y + lines[0].baseline if lines else y + box.height
            style = box.style
            weight = "bold" if int(style["font_weight"]) >= 600 else "normal"
            laid_out = []
            for line in lines:
                texts = list(_line_texts(line))
                if texts:
                    laid_out.append(
                        (
                            texts[0].position_x * PX,
                            (height - line.position_y - line.baseline) * PX,
                            "".join(t.text for t in texts).replace(WORD_JOINER, ""),
                        )
                    )
            place = Place(
                page=index,
                x1=x * PX,
                y1=(height - y - box.height) * PX,
                x2=(x + box.width) * PX,
                y2=(height - y) * PX,
                baseline=(height - baseline) * PX,
                font_size=style["font_size"] * PX,
                font=(weight, "italic" if style["font_style"] == "italic" else "normal"),
                lines=tuple(laid_out),
            )
            if reference:
                references.append(place)
            else:
                found[names[0]] = place
    references.sort(key=lambda p: (p.page, -p.y2))
    for number, place in enumerate(references, start=1):
        found[REFERENCE_PLACE.format(number)] = place
    missing = set(PLACES.values()) - set(found)
    if missing:
        raise RenderError(f"Mẫu công văn thiếu vị trí: {', '.join(sorted(missing))}.")
    return found


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def warm_up() -> None:
    """Set WeasyPrint up now (a worker calls this at start so the first letter is fast)."""
    _get_engine()


def _get_engine() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def render_pdf(letter: Letter, *, verify_url: str | None = None) -> bytes:
    """The letter as PDF bytes, laid out to Decree 30 with the shipped fonts embedded.

    ``verify_url``: the address of the letter's public verification page; the first page then
    carries a small QR code that opens it, with the address printed under it, at the foot of
    the left margin, clear of the text, the signature block and the page numbers.
    """
    return _get_engine().render_letter(letter, verify_url=verify_url)


def render_with_places(letter: Letter, **options: Any) -> tuple[bytes, dict[str, Place]]:
    """The letter for the electronic original: as ``render_pdf`` but with the number and day
    lines laid out and not drawn, and the places (``PLACES``) where signing puts its fields."""
    return _get_engine().render_with_places(letter, **options)
