"""The electronic original at PDF level (dispatch.signing.original): the letter rendered for
approval with its number and date as form fields, approved with the signer's image, issued with
the number and date filled in and the agency's seal; checked by pyHanko, poppler's pdfsig and
pdftotext, and by comparing page images with the plain render of the issued letter."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import zlib

import pytest
from PIL import Image, ImageChops

from dispatch.letters import formatting
from dispatch.letters.pdf import render_pdf
from dispatch.signing import demo, keys, original, pades
from dispatch.signing.original import Evidence
from dispatch.signing.verification import pdfa_level
from tests.fixtures.originals import AT, DATE, NUMBER, issue, refilled, sign_letter
from tests.fixtures.pki import PASSWORD, DemoServices
from tests.letter_samples import seed_letter

NUMBER_SYMBOL = "4321/THH-VP"
PLACE_DATE = "Hà Nội, ngày 15 tháng 11 năm 2021"
DPI = 100


def _run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True).stdout


def _pages(tmp_path, name: str, pdf: bytes) -> list[Image.Image]:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", str(DPI), "-png", str(path), str(tmp_path / name)], check=True
    )
    return [Image.open(p).convert("RGB") for p in sorted(tmp_path.glob(f"{name}-*.png"))]


def _issue(pki, agency_key: str, number: int = NUMBER) -> dict[str, bytes]:
    return dataclasses.asdict(sign_letter(pki, seed_letter(), number=number, key=agency_key))


@pytest.fixture(scope="module")
def originals(pki):
    """Approved with the leader's PKCS#12 key, issued with the agency's key on SoftHSM2."""
    if pki.agency_uri is None:
        pytest.fail("SoftHSM2 is not installed (scripts/system-deps.sh installs it)")
    return _issue(pki, pki.agency_uri)


def test_both_signatures_intact_signer_followed_only_by_form_filling(originals, pki):
    reports = pades.verify(originals["issued"], [pki.root_pem.read_bytes()])
    assert [r.role for r in reports] == ["signer", "agency"]
    assert all(r.intact and r.trusted for r in reports), [r.report for r in reports]
    assert reports[0].changes_after == "form_filling"
    assert reports[1].changes_after == "none"
    assert reports[1].signed_at == "2021-11-15T09:30:00+07:00"


def test_pkcs12_agency_key_works_too(pki):
    issued = _issue(pki, str(pki.agency.p12))["issued"]
    reports = pades.verify(issued, [pki.root_pem.read_bytes()])
    assert [(r.intact, r.changes_after) for r in reports] == [
        (True, "form_filling"),
        (True, "none"),
    ]


def test_pdfsig_valid_and_one_flipped_byte_breaks_both(originals, tmp_path):
    issued = originals["issued"]
    path = tmp_path / "ban-goc.pdf"
    path.write_bytes(issued)
    out = _run("pdfsig", str(path))
    assert out.count("Signature Validation: Signature is Valid.") == 2, out
    # A byte of the letter's own content: inside both signed ranges.
    data = bytearray(issued)
    data[len(originals["prepared"]) // 2] ^= 0x01
    bad = tmp_path / "bi-sua.pdf"
    bad.write_bytes(bytes(data))
    out = _run("pdfsig", str(bad))
    assert "Signature is Valid." not in out, out
    assert all(not r.intact for r in pades.verify(bytes(data)))


def test_text_reads_back_number_date_and_every_sentence(originals, tmp_path):
    plain = render_pdf(seed_letter(NUMBER, DATE))
    texts = {}
    for name, data in (("plain", plain), ("issued", originals["issued"])):
        path = tmp_path / f"{name}.pdf"
        path.write_bytes(data)
        texts[name] = _run("pdftotext", "-layout", "-enc", "UTF-8", str(path), "-")
    issued = texts["issued"]
    assert f"Số: {NUMBER_SYMBOL}" in issued and PLACE_DATE in issued
    header = issued.split("V/v", 1)[0]
    assert "   /THH-VP" not in header  # the blank of the approval render is gone
    # The whole text reads as the plain render's, line for line: the appendices' "(Kèm theo
    # Công văn số 4321/THH-VP ngày 15 …)" lines are filled in too.
    assert issued.count(f"Kèm theo Công văn số {NUMBER_SYMBOL} ngày 15 tháng 11") == 2
    assert issued == texts["plain"]


def _reference_lines(tmp_path, name: str, pdf: bytes) -> list[str]:
    """The text lines of the appendices' reference paragraphs, as pdftotext lays them out."""
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    lines = _run("pdftotext", "-layout", "-enc", "UTF-8", str(path), "-").splitlines()
    found = []
    for index, line in enumerate(lines):
        if "(Kèm theo" in line:
            found += [line, lines[index + 1]]
    return found


def test_reference_line_breaks_where_the_plain_render_breaks_it(pki, tmp_path):
    # "07" is narrower than the blank the leader saw: the plain render pulls the next word
    # up onto the first line; the signed original must break it the same way.
    issued = _issue(pki, str(pki.agency.p12), number=7)["issued"]
    plain = render_pdf(seed_letter(7, DATE))
    expected = _reference_lines(tmp_path, "plain7", plain)
    assert len(expected) == 4 and "07/THH-VP" in expected[0]
    assert _reference_lines(tmp_path, "issued7", issued) == expected
    reports = pades.verify(issued, [pki.root_pem.read_bytes()])
    assert [(r.intact, r.trusted) for r in reports] == [(True, True), (True, True)]


def test_approval_render_shows_the_blank_number_and_day(originals, tmp_path):
    path = tmp_path / "duyet.pdf"
    path.write_bytes(originals["prepared"])
    text = _run("pdftotext", "-layout", str(path), "-")
    header = text.split("V/v", 1)[0]
    assert re.search(r"Số:\s+/THH-VP", header), header
    assert re.search(r"Hà Nội, ngày\s+tháng 11 năm 2021", header), header


def test_page_looks_as_printed_plus_seal_and_signature(originals, tmp_path):
    plain = _pages(tmp_path, "plain", render_pdf(seed_letter(NUMBER, DATE)))
    issued = _pages(tmp_path, "issued", originals["issued"])
    assert len(plain) == len(issued)
    # Page 1: the number and the date filled in are drawn as the plain render prints them
    # (anti-aliasing may differ by a few levels where glyph positions round differently).
    diff = ImageChops.difference(plain[0], issued[0]).convert("L")
    assert diff.getextrema()[1] <= 32, diff.getbbox()
    # The signature page: only the signature block changed, and there by the images.
    rects = _widget_rects(originals["issued"])
    last = rects[pades.APPROVAL_FIELD][0]
    assert rects[pades.ISSUANCE_FIELD][0] == last
    for index in range(1, len(plain)):
        if index != last:
            # The appendices' "(Kèm theo Công văn số … ngày …)" lines look as printed too
            # (a glyph may fall a fraction of a pixel apart: anti-aliasing differs there).
            diff = ImageChops.difference(plain[index], issued[index]).convert("L")
            assert diff.getextrema()[1] <= 64, (index, diff.getbbox())
            assert sum(diff.point(lambda v: v > 32).convert("1").get_flattened_data()) <= 20
    changed = ImageChops.difference(plain[last], issued[last]).getbbox()
    assert changed is not None
    height_pt = 842
    scale = DPI / 72

    def px(rect):
        x1, y1, x2, y2 = rect
        return (x1 * scale, (height_pt - y2) * scale, x2 * scale, (height_pt - y1) * scale)

    sig = px(rects[pades.APPROVAL_FIELD][1])
    seal = px(rects[pades.ISSUANCE_FIELD][1])
    union = (min(sig[0], seal[0]), min(sig[1], seal[1]), max(sig[2], seal[2]), max(sig[3], seal[3]))
    assert changed[0] >= union[0] - 2 and changed[1] >= union[1] - 2
    assert changed[2] <= union[2] + 2 and changed[3] <= union[3] + 2
    page = issued[last]
    # The seal is red (255, 0, 0, give or take poppler's rounding) and reaches over the left
    # third of the signature image, not beyond.
    third = sig[0] + (sig[2] - sig[0]) / 3
    reds = [
        (x, y)
        for x in range(int(seal[0]), int(seal[2]))
        for y in range(int(seal[1]), int(seal[3]))
        if (lambda p: p[0] >= 250 and p[1] <= 5 and p[2] <= 5)(page.getpixel((x, y)))
    ]
    assert reds and max(x for x, _ in reds) <= third + 2
    assert any(x > sig[0] + 2 for x, _ in reds)  # overlapping the signature image
    # The signature image is blue where the seal does not cover it.
    blues = [
        (x, y)
        for x in range(int(third) + 2, int(sig[2]))
        for y in range(int(sig[1]), int(sig[3]))
        if (lambda p: p[2] > 100 and p[0] < 100 and p[1] < 120)(page.getpixel((x, y)))
    ]
    assert len(blues) > 50
    # Natural size: 190 × 80 px at 96 dpi.
    assert round(sig[2] - sig[0]) == round(190 * DPI / 96)
    assert round(sig[3] - sig[1]) == round(80 * DPI / 96)


def _widget_rects(pdf: bytes) -> dict[str, tuple[int, tuple[float, ...]]]:
    """Each form field's page index and rectangle."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    pages = [
        reader.find_page_for_modification(i)[0].idnum
        for i in range(reader.root["/Pages"]["/Count"])
    ]
    result = {}
    for ref in reader.root["/AcroForm"]["/Fields"]:
        field = ref.get_object()
        page = pages.index(field.raw_get("/P").idnum)
        result[str(field["/T"])] = (page, tuple(float(v) for v in field["/Rect"]))
    return result


def test_pdfa_identification_kept(originals):
    assert all(pdfa_level(originals[name]) == "3u" for name in originals)


def test_the_fields_fonts_are_small_subsets_without_hinting(originals):
    # Every signed original goes to every office: the fields' faces carry the glyphs of their
    # lines and digits, without the hinting programs PDF viewers do without.
    from fontTools.ttLib import TTFont
    from pypdf import PdfReader

    form = PdfReader(io.BytesIO(originals["issued"])).trailer["/Root"]["/AcroForm"]
    fonts = form["/DR"]["/Font"]
    assert len(fonts) >= 2
    # One subset per face: the day line and the appendices' lines (both italic) share theirs.
    faces = [str(font.get_object()["/BaseFont"]).split("+", 1)[1] for font in fonts.values()]
    assert len(faces) == len(set(faces)), faces
    for font in fonts.values():
        descendant = font.get_object()["/DescendantFonts"][0].get_object()
        stream = descendant["/FontDescriptor"].get_object()["/FontFile2"].get_object()
        data = stream.get_data()
        assert not {"fpgm", "prep", "cvt "} & set(TTFont(io.BytesIO(data)).keys())
        assert len(zlib.compress(data)) < 6000  # with hinting: about 10 KB


def test_issue_refuses_unapproved_and_filled(originals, pki):
    with keys.open_signer(str(pki.agency.p12), PASSWORD) as signer:
        with pytest.raises(pades.SigningError, match="chưa được lãnh đạo ký duyệt"):
            original.issue(
                originals["prepared"], signer, number_symbol="1/THH-VP",
                place_date=PLACE_DATE, at=AT, seal=None,
            )  # fmt: skip
        with pytest.raises(pades.SigningError, match="đã được ban hành"):
            original.issue(
                originals["issued"], signer, number_symbol="1/THH-VP",
                place_date=PLACE_DATE, at=AT, seal=None,
            )  # fmt: skip
        with pytest.raises(pades.SigningError, match="chuẩn bị để ký duyệt"):
            original.approve(render_pdf(seed_letter()), signer, image=None)


def test_time_stamped_issues_ask_the_tsa_once_each_after_the_first(originals, pki):
    # A TSA of its own (a new address), so that no earlier test has asked it anything.
    services = DemoServices.start()
    services.attach(pki)
    letter = seed_letter(NUMBER, DATE)
    try:
        stamped = Evidence(f"{services.url}/tsa", "off")
        issued = [
            issue(pki, originals["approved"], letter, evidence=stamped, key=str(pki.agency.p12))
            for _ in range(2)
        ]
        # pyHanko sizes the signature with one token over a dummy digest: asked for once, then
        # one token per signature, not two.
        assert services.requests == ["tsa"] * 3
    finally:
        services.stop()
    for pdf in issued:
        reports = pades.verify(pdf, [pki.root_pem.read_bytes()])
        assert [(r.level, r.intact, r.trusted) for r in reports] == [
            ("B-B", True, True),
            ("B-T", True, True),
        ]


def test_attachment_stamped_top_right_and_signed(pki, tmp_path):
    attachment = render_pdf(seed_letter(NUMBER, DATE))
    with keys.open_signer(str(pki.agency.p12), PASSWORD) as signer:
        signed = original.sign_attachment(attachment, signer, number_symbol=NUMBER_SYMBOL, at=AT)
    reports = pades.verify(signed, [pki.root_pem.read_bytes()])
    assert [(r.role, r.intact, r.trusted) for r in reports] == [("agency", True, True)]
    path = tmp_path / "kem-theo.pdf"
    path.write_bytes(signed)
    assert "Signature is Valid." in _run("pdfsig", str(path))
    assert pdfa_level(signed) == "3u"
    words: dict[str, list[dict[str, float]]] = {}
    bbox = _run("pdftotext", "-bbox", "-f", "1", "-l", "1", str(path), "-")
    for match in re.finditer(
        r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>',
        bbox,
    ):
        x1, y1, x2, y2 = (float(v) for v in match.groups()[:4])
        words.setdefault(match.group(5), []).append(
            {"xMin": x1, "yMin": y1, "xMax": x2, "yMax": y2}
        )
    stamp_time = words["2021-11-15T09:30:00+07:00"][0]
    stamp_number = min(words[NUMBER_SYMBOL], key=lambda w: w["yMin"])
    for word in (stamp_time, stamp_number):
        assert word["xMax"] > 595 - 60 and word["yMax"] < 80  # top right of an A4 page
    assert stamp_number["yMin"] < stamp_time["yMin"]
    # The attachment's own text is still there, and only the top right changed.
    before = _pages(tmp_path, "att-before", attachment)
    after = _pages(tmp_path, "att-after", signed)
    box = ImageChops.difference(before[0], after[0]).getbbox()
    assert box is not None and box[0] > before[0].width * 0.6 and box[3] < before[0].height * 0.1
    assert all(
        ImageChops.difference(a, b).getbbox() is None
        for a, b in zip(before[1:], after[1:], strict=True)
    )


def test_demo_images():
    seal = Image.open(io.BytesIO(demo.seal_png()))
    assert seal.mode == "RGBA"
    colours = {pixel[:3] for pixel in seal.get_flattened_data() if pixel[3] > 0}
    assert colours == {(255, 0, 0)}
    mm = seal.width / seal.info["dpi"][0] * 25.4
    assert 35 <= mm <= 40
    signature = Image.open(io.BytesIO(demo.signature_png()))
    assert keys.check_signature_image(demo.signature_png()) == (190, 80)
    assert signature.getpixel((0, 0))[3] == 0


def test_issue_needs_the_reference_line_of_the_appendices(originals, pki):
    with (
        keys.open_signer(str(pki.agency.p12), PASSWORD) as signer,
        pytest.raises(pades.SigningError, match="Kèm theo"),
    ):
        original.issue(
            originals["approved"], signer, number_symbol=NUMBER_SYMBOL,
            place_date=PLACE_DATE, at=AT, seal=None,
        )  # fmt: skip


def test_a_reference_longer_than_its_lines_is_set_smaller(originals, pki, tmp_path):
    longer = formatting.appendix_reference_line(seed_letter(NUMBER, DATE)).replace(
        "của Cục Tin học hoá", "của Cục Tin học hoá Cục Tin học hoá Cục Tin học hoá"
    )
    with keys.open_signer(str(pki.agency.p12), PASSWORD) as signer:
        issued = original.issue(
            originals["approved"], signer, number_symbol=NUMBER_SYMBOL,
            place_date=PLACE_DATE, reference=longer, at=AT, seal=None,
        )  # fmt: skip
    lines = _reference_lines(tmp_path, "longer", issued)
    assert " ".join(" ".join(lines[:2]).split()) == longer
    assert all(r.intact for r in pades.verify(issued))


def test_fields_are_locked_once_the_agency_signs(originals, pki, db_app, runner, tmp_path):
    issued = originals["issued"]
    # Before issuance the fields are meant to be filled: the leader's signature permits it.
    approved = refilled(originals["approved"], original.NUMBER_FIELD, "Số: 9999/THH-VP")
    assert [r.intact for r in pades.verify(approved)] == [True]
    # After issuance a new number is a change the agency's signature does not permit.
    changed = refilled(issued, original.NUMBER_FIELD, "Số: 9999/THH-VP")
    reports = pades.verify(changed, [pki.root_pem.read_bytes()])
    assert [r.role for r in reports] == ["signer", "agency"]
    assert not reports[1].intact and reports[1].changes_after.endswith("(not permitted)")
    db_app.config["DISPATCH_TRUST_ROOTS"] = str(pki.root_pem)
    path = tmp_path / "sua-so.pdf"
    path.write_bytes(changed)
    result = runner.invoke(args=["verify", str(path)])
    assert result.exit_code == 1
    agency_line = next(line for line in result.output.splitlines() if "Cục Tin học hoá" in line)
    assert "thay đổi không được phép" in agency_line, result.output
    # The date too.
    dated = refilled(issued, original.DATE_FIELD, "Hà Nội, ngày 16 tháng 11 năm 2021")
    assert not pades.verify(dated)[1].intact


def test_title_of_the_unnumbered_original_is_its_subject(originals):
    """The original is rendered before it has a number: its title is the trích yếu, which stays
    true once issued (the signed file's metadata cannot change), never "Công văn số /THH-VP"."""
    from pypdf import PdfReader

    subject = formatting.subject_line(seed_letter())
    for name in ("prepared", "issued"):
        reader = PdfReader(io.BytesIO(originals[name]))
        assert reader.metadata.title == subject, name
        xmp = reader.trailer["/Root"]["/Metadata"].get_object().get_data().decode()
        assert subject in xmp and "Công văn số" not in xmp, name
        assert reader.metadata.author == "Cục Tin học hoá"
