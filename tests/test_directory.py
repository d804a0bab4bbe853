"""The directory: the bundled 2021 offices, CSV import and export, search, valid periods."""

from __future__ import annotations

import csv
import datetime as dt
import io
import unicodedata

import pytest
from sqlalchemy import func, select

from dispatch import audit
from dispatch.directory import offices
from dispatch.extensions import db
from dispatch.models import AuditEntry, Organisation, RecipientGroup

AT = dt.datetime(2021, 11, 10, 2, 0, tzinfo=dt.UTC)
HEADER = ",".join(offices.COLUMNS)
# The 63 provinces of 2021 by their administrative codes, north to south.
# fmt: off
PROVINCE_CODES_2021 = [
    "01", "02", "04", "06", "08", "10", "11", "12", "14", "15", "17", "19", "20", "22", "24", "25",
    "26", "27", "30", "31", "33", "34", "35", "36", "37", "38", "40", "42", "44", "45", "46", "48",
    "49", "51", "52", "54", "56", "58", "60", "62", "64", "66", "67", "68", "70", "72", "74", "75",
    "77", "79", "80", "82", "83", "84", "86", "87", "89", "91", "92", "93", "94", "95", "96",
]
# fmt: on
REGIONS = {
    "Trung du và miền núi phía Bắc",
    "Đồng bằng sông Hồng",
    "Bắc Trung Bộ và Duyên hải miền Trung",
    "Tây Nguyên",
    "Đông Nam Bộ",
    "Đồng bằng sông Cửu Long",
}
# The five cities governed by the centre: Hà Nội, Hải Phòng, Đà Nẵng, Hồ Chí Minh, Cần Thơ.
CENTRAL_CITIES = {"01", "31", "48", "79", "92"}


def _orgs() -> dict[str, Organisation]:
    return {o.province_code: o for o in db.session.execute(select(Organisation)).scalars().all()}


def _bundled_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(offices.bundled_csv_text())))


# --- the bundled file (no database) -------------------------------------------------------------


@pytest.mark.nodb
def test_bundled_file_has_the_63_offices_checked_and_in_nfc():
    text = offices.bundled_csv_text()
    assert unicodedata.normalize("NFC", text) == text
    rows = offices.parse_csv(text)
    assert len(rows) == 63
    assert len({row.code for row in rows}) == 63
    assert len({row.email for row in rows}) == 63
    by_code = {row.code: row for row in rows}
    assert by_code["02"].name == "Sở Thông tin và Truyền thông tỉnh Hà Giang"
    assert by_code["02"].email == "sotttt.hagiang@tinh.example"
    assert by_code["01"].name == "Sở Thông tin và Truyền thông thành phố Hà Nội"
    assert by_code["79"].name == "Sở Thông tin và Truyền thông Thành phố Hồ Chí Minh"
    assert by_code["95"].name == "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"
    assert (by_code["95"].valid_from, by_code["95"].valid_to) == (
        dt.date(2019, 1, 1),
        dt.date(2023, 12, 31),
    )
    assert all(row.placeholder and row.email.endswith(".example") for row in rows)
    assert all(row.email.isascii() for row in rows)
    assert all(row.valid_on(dt.date(2021, 11, 15)) for row in rows)


@pytest.mark.nodb
def test_bundled_file_names_each_office_after_its_department_and_province():
    rows = offices.parse_csv(offices.bundled_csv_text())
    assert [row.code for row in rows] == PROVINCE_CODES_2021
    assert {row.region for row in rows} == REGIONS
    assert {row.code for row in rows if row.kind == "thành phố"} == CENTRAL_CITIES
    for row in rows:
        department = "Sở Thông tin và Truyền thông"
        if row.code == "95":  # Bạc Liêu's department also covers culture, sports and tourism
            department = "Sở Văn hoá, Thông tin, Thể thao và Du lịch"
        assert row.name.startswith(department + " "), row.name
        assert row.name.lower().endswith(f"{row.kind} {row.province}".lower()), row.name


@pytest.mark.nodb
def test_fold_drops_accents_and_treats_both_tone_placements_alike():
    assert offices.fold("Bạc Liêu") == "bac lieu"
    assert offices.fold("ĐẮK LẮK") == "dak lak"
    assert offices.fold("Hoá") == offices.fold("Hóa") == "hoa"
    assert offices.fold(unicodedata.normalize("NFD", "Thừa  Thiên Huế")) == "thua thien hue"


@pytest.mark.nodb
def test_a_file_with_many_faults_reports_each_by_line():
    text = "\n".join(
        [
            HEADER,
            "02,Hà Giang,tỉnh,Vùng,Sở TTTT tỉnh Hà Giang,a@tinh.example,,,2021-01-01,,yes",
            "2,Hà Giang,tỉnh,Vùng,Sở A,a@tinh.example,,,2021-01-01,,yes",
            "03,Không có,tỉnh,Vùng,Sở B,b@tinh.example,,,2021-01-01,,yes",
            "04,Hà Nội,tỉnh,Vùng,Sở C,c@tinh.example,,,,,",
            "06,Bắc Kạn,huyện,Vùng,Sở D,khong-hop-le,x@y;z,000.00.00.H2,2021-13-01,,perhaps",
            "08,Tuyên Quang,tỉnh,Vùng,Sở E,e@tinh.example,,,2022-01-01,2021-01-01,",
            "02,Hà Giang,tỉnh,Vùng,Sở F,f@tinh.example,,,2021-01-01,,",
            "10,Lào Cai,tỉnh,,,g@tinh.example,,,,,",
            "11,Điện Biên,tỉnh,Vùng,Sở H,h@tinh.example,,,",
        ]
    )
    with pytest.raises(offices.DirectoryImportError) as caught:
        offices.parse_csv(text)
    by_line: dict[int, list[str]] = {}
    for problem in caught.value.problems:
        by_line.setdefault(problem.line, []).append(problem.message)
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert "2 chữ số" in by_line[3][0]
    assert "không có trong danh mục" in by_line[4][0]
    assert "không khớp mã 04" in by_line[5][0]
    joined = " | ".join(by_line[6])
    for expected in ("loại 'huyện'", "thư điện tử không hợp lệ", "cc", "mã định danh", "ngày"):
        assert expected in joined
    assert "placeholder" in joined
    assert "sau ngày kết thúc" in by_line[7][0]
    assert "trùng với dòng 2" in by_line[8][0]
    assert any("vùng" in m for m in by_line[9]) and any("tên cơ quan" in m for m in by_line[9])
    assert "cột" in by_line[10][0]
    message = str(caught.value)
    assert message.startswith("Không nhập được danh bạ")
    assert "Dòng 3:" in message and "Dòng 10:" in message


@pytest.mark.nodb
def test_missing_and_unknown_columns_are_reported_on_line_1():
    with pytest.raises(offices.DirectoryImportError) as caught:
        offices.parse_csv("code,province,name,phone\n01,Hà Nội,Sở,1\n")
    messages = [str(p) for p in caught.value.problems]
    assert any("Dòng 1: thiếu cột bắt buộc: kind, region, email" in m for m in messages)
    assert any("phone" in m for m in messages)


@pytest.mark.nodb
def test_overlapping_periods_of_one_province_are_refused():
    text = "\n".join(
        [
            HEADER,
            "95,Bạc Liêu,tỉnh,Vùng,Sở A,a@tinh.example,,,2019-01-01,2023-12-31,",
            "95,Bạc Liêu,tỉnh,Vùng,Sở B,b@tinh.example,,,2023-06-01,,",
        ]
    )
    with pytest.raises(offices.DirectoryImportError) as caught:
        offices.parse_csv(text)
    assert [p.line for p in caught.value.problems] == [3]
    assert "chồng lên dòng 2" in caught.value.problems[0].message


@pytest.mark.nodb
def test_semicolons_dates_in_vietnamese_form_bom_and_nfd_are_accepted():
    name = unicodedata.normalize("NFD", "Sở Thông tin và Truyền thông tỉnh Cà Mau")
    text = (
        "\ufeff" + HEADER.replace(",", ";") + "\r\n"
        f"96;Cà Mau;tỉnh;Đồng bằng sông Cửu Long;{name};SoTTTT@CaMau.gov.vn;"
        '"a@camau.gov.vn; b@camau.gov.vn";000.00.01.H12;01/01/2021;;no\r\n'
    )
    (row,) = offices.parse_csv(text)
    assert row.name == unicodedata.normalize("NFC", name)
    assert row.email == "sotttt@camau.gov.vn"
    assert row.cc == ("a@camau.gov.vn", "b@camau.gov.vn")
    assert row.agency_id == "000.00.01.H12"
    assert row.valid_from == dt.date(2021, 1, 1) and row.valid_to is None
    assert row.placeholder is False


# --- seeding, importing, exporting ------------------------------------------------------------


def test_seed_gives_63_offices_in_the_group_with_bac_lieu_by_its_combined_name(db_app):
    result = offices.seed_directory(actor="system", at=AT)
    assert len(result.created) == 63 and result.group_created
    group = offices.get_group("so-tttt-2021")
    assert group.name == "Sở TTTT và tương đương các tỉnh, thành phố (2021)"
    assert len(group.members) == 63
    members = offices.recipients_for("so-tttt-2021", dt.date(2021, 11, 15))
    assert len(members) == 63
    bac_lieu = next(o for o in members if o.province_code == "95")
    assert bac_lieu.name == "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"
    assert bac_lieu.email == "sovhttdl.baclieu@tinh.example"
    assert bac_lieu.email_is_placeholder
    assert (
        db.session.execute(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "directory.seeded")
        ).scalar_one()
        == 1
    )

    again = offices.seed_directory(actor="system", at=AT)
    assert not again.changed and len(again.unchanged) == 63
    assert db.session.execute(select(func.count()).select_from(Organisation)).scalar_one() == 63
    assert db.session.execute(select(func.count()).select_from(RecipientGroup)).scalar_one() == 1


def test_valid_periods_decide_who_is_a_recipient_on_a_date(db_app):
    offices.seed_directory(actor="system", at=AT)
    codes_2024 = {
        o.province_code for o in offices.recipients_for("so-tttt-2021", dt.date(2024, 1, 1))
    }
    assert len(codes_2024) == 62 and "95" not in codes_2024
    assert len(offices.recipients_for("so-tttt-2021", dt.date(2020, 6, 1))) == 1  # Bạc Liêu
    with pytest.raises(offices.DirectoryError, match="Không có nhóm nơi nhận mã 'khong-co'"):
        offices.recipients_for("khong-co", dt.date(2021, 11, 15))


def test_an_import_with_one_bad_row_reports_its_line_and_changes_nothing(db_app):
    offices.seed_directory(actor="system", at=AT)
    before = offices.export_csv()
    audit_count = db.session.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    text = "\n".join(
        [
            HEADER,
            "01,Hà Nội,thành phố,Đồng bằng sông Hồng,Sở Thông tin và Truyền thông thành phố Hà Nội,"
            "sotttt@hanoi.gov.vn,,,2021-01-01,,",
            "02,Hà Giang,tỉnh,Trung du và miền núi phía Bắc,Sở Thông tin và Truyền thông tỉnh "
            "Hà Giang,sotttt@hagiang@gov.vn,,,2021-01-01,,",
        ]
    )
    with pytest.raises(offices.DirectoryImportError) as caught:
        offices.import_csv(text, actor="quantri@thh.example", at=AT)
    assert [p.line for p in caught.value.problems] == [3]
    assert "sotttt@hagiang@gov.vn" in str(caught.value)
    assert offices.export_csv() == before
    assert _orgs()["01"].email == "sotttt.hanoi@tinh.example"
    assert (
        db.session.execute(select(func.count()).select_from(AuditEntry)).scalar_one() == audit_count
    )


def test_a_good_import_replaces_placeholders_and_is_audited(db_app, tmp_path):
    offices.seed_directory(actor="system", at=AT)
    hanoi_id = _orgs()["01"].id
    path = tmp_path / "so-tttt.csv"
    path.write_text(
        "\n".join(
            [
                HEADER,
                "01,Hà Nội,thành phố,Đồng bằng sông Hồng,"
                "Sở Thông tin và Truyền thông thành phố Hà Nội,SoTTTT@HaNoi.gov.vn,"
                "vanthu@hanoi.gov.vn,000.00.10.H26,2021-01-01,,",
                "95,Bạc Liêu,tỉnh,Đồng bằng sông Cửu Long,"
                '"Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu",'
                "vhtttdl@baclieu.gov.vn,,,2019-01-01,2023-09-30,yes",
            ]
        ),
        encoding="utf-8",
    )
    result = offices.import_csv(path, actor="quantri@thh.example", at=AT)
    assert sorted(result.updated) == ["01", "95"] and not result.created
    orgs = _orgs()
    assert orgs["01"].id == hanoi_id
    assert orgs["01"].email == "sotttt@hanoi.gov.vn"
    assert orgs["01"].cc == ["vanthu@hanoi.gov.vn"]
    assert orgs["01"].agency_id == "000.00.10.H26"
    assert not orgs["01"].email_is_placeholder
    # Still marked "yes", but the address was corrected: it is a real one now.
    assert not orgs["95"].email_is_placeholder
    assert orgs["95"].valid_to == dt.date(2023, 9, 30)
    assert orgs["02"].email_is_placeholder  # untouched
    assert db.session.execute(select(func.count()).select_from(Organisation)).scalar_one() == 63
    updates = (
        db.session.execute(select(AuditEntry).where(AuditEntry.action == "organisation.updated"))
        .scalars()
        .all()
    )
    assert {u.object_id for u in updates} == {str(orgs["01"].id), str(orgs["95"].id)}
    hanoi = next(u for u in updates if u.object_id == str(orgs["01"].id))
    assert hanoi.details["email"] == {
        "from": "sotttt.hanoi@tinh.example",
        "to": "sotttt@hanoi.gov.vn",
    }
    assert hanoi.actor == "quantri@thh.example"
    assert audit.verify_chain() == []


def test_an_import_adds_new_periods_but_refuses_overlaps_with_the_database(db_app):
    offices.seed_directory(actor="system", at=AT)
    new_period = (
        f"{HEADER}\n95,Bạc Liêu,tỉnh,Đồng bằng sông Cửu Long,"
        "Sở Thông tin và Truyền thông tỉnh Bạc Liêu,sotttt@baclieu.gov.vn,,,2024-01-01,,no\n"
    )
    result = offices.import_csv(new_period, actor="system", at=AT)
    assert result.created == ["95"]
    assert len(offices.get_group("so-tttt-2021").members) == 64
    on_2024 = {
        o.province_code: o for o in offices.recipients_for("so-tttt-2021", dt.date(2024, 3, 1))
    }
    assert on_2024["95"].name == "Sở Thông tin và Truyền thông tỉnh Bạc Liêu"

    overlapping = new_period.replace("2024-01-01", "2023-06-01")
    with pytest.raises(offices.DirectoryImportError, match="chồng lên bản ghi đã có"):
        offices.import_csv(overlapping, actor="system", at=AT)
    assert db.session.execute(select(func.count()).select_from(Organisation)).scalar_one() == 64


def test_export_then_import_round_trips(db_app, tmp_path):
    offices.seed_directory(actor="system", at=AT)
    offices.import_csv(
        f"{HEADER}\n01,Hà Nội,thành phố,Đồng bằng sông Hồng,"
        "Sở Thông tin và Truyền thông thành phố Hà Nội,sotttt@hanoi.gov.vn,"
        "a@hanoi.gov.vn;b@hanoi.gov.vn,000.00.10.H26,2021-01-01,,no\n",
        actor="system",
        at=AT,
    )
    exported = offices.export_csv()
    assert exported.startswith("\ufeff" + HEADER + "\r\n")
    assert len(exported.strip().splitlines()) == 64
    path = tmp_path / "export.csv"
    path.write_text(exported, encoding="utf-8")
    result = offices.import_csv(path, actor="system", at=AT)
    assert len(result.unchanged) == 63 and not result.updated and not result.created
    assert offices.export_csv() == exported
    assert offices.export_csv(bom=False) == exported.removeprefix("\ufeff")
    assert "a@hanoi.gov.vn;b@hanoi.gov.vn" in exported


def test_search_ignores_accents_and_case(db_app):
    offices.seed_directory(actor="system", at=AT)
    (found,) = offices.search("bac lieu")
    assert found.province_name == "Bạc Liêu"
    assert [o.province_code for o in offices.search("BẠC   LIÊU")] == ["95"]
    assert [o.province_code for o in offices.search("thua thien hue")] == ["46"]
    assert {o.province_code for o in offices.search("khanh hoa")} == {"56"}
    assert {o.province_code for o in offices.search("Khánh Hoà")} == {"56"}  # other tone mark
    assert len(offices.search("bac")) > 1  # Bắc Giang, Bắc Kạn, Bắc Ninh, Bạc Liêu …
    assert offices.search("bac lieu", on=dt.date(2024, 1, 1)) == []
    assert offices.search("100%") == []
    assert [o.province_code for o in offices.search("sotttt.hagiang")] == ["02"]
