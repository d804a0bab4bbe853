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
# The columns of a directory file before versions had groups and lineage: still accepted.
HEADER = ",".join(offices.COLUMNS[:11])
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


def _orgs(on: dt.date = dt.date(2021, 11, 15)) -> dict[str, Organisation]:
    """The offices valid on a day (by default the seed letter's), by province code."""
    return {
        o.province_code: o
        for o in db.session.execute(select(Organisation)).scalars().all()
        if offices.valid_on(o, on)
    }


def _bundled_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(offices.bundled_csv_text())))


# --- the bundled file (no database) -------------------------------------------------------------


@pytest.mark.nodb
def test_bundled_file_has_the_63_offices_checked_and_in_nfc():
    text = offices.bundled_csv_text()
    assert unicodedata.normalize("NFC", text) == text
    every_version = offices.parse_csv(text)
    assert len(every_version) == 63 + 1 + 63 + 34
    rows = [row for row in every_version if row.valid_on(dt.date(2021, 11, 15))]
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
        dt.date(2023, 3, 14),
    )
    assert all(row.placeholder and row.email.endswith(".example") for row in rows)
    assert all(row.email.isascii() for row in rows)
    assert all(row.valid_on(dt.date(2021, 11, 15)) for row in rows)


@pytest.mark.nodb
def test_bundled_file_names_each_office_after_its_department_and_province():
    rows = [
        row
        for row in offices.parse_csv(offices.bundled_csv_text())
        if row.valid_on(dt.date(2021, 11, 15))
    ]
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
    assert len(result.created) == 161 and result.group_created
    group = offices.get_group("so-tttt-2021")
    assert group.name == "Sở TTTT và tương đương các tỉnh, thành phố (2021)"
    # The 63 of 2021, and Bạc Liêu's Sở TTTT re-established in 2023.
    assert len(group.members) == 64
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
    assert not again.changed and len(again.unchanged) == 161
    assert db.session.execute(select(func.count()).select_from(Organisation)).scalar_one() == 161
    assert db.session.execute(select(func.count()).select_from(RecipientGroup)).scalar_one() == 2


def test_valid_periods_decide_who_is_a_recipient_on_a_date(db_app):
    offices.seed_directory(actor="system", at=AT)
    on_2024 = {
        o.province_code: o for o in offices.recipients_for("so-tttt-2021", dt.date(2024, 1, 1))
    }
    assert len(on_2024) == 63
    assert on_2024["95"].name == "Sở Thông tin và Truyền thông tỉnh Bạc Liêu"
    assert len(offices.recipients_for("so-tttt-2021", dt.date(2020, 6, 1))) == 1  # Bạc Liêu
    # Bạc Liêu's combined department begins on 01/01/2019: nobody the day before.
    assert offices.recipients_for("so-tttt-2021", dt.date(2018, 12, 31)) == []
    (combined,) = offices.recipients_for("so-tttt-2021", dt.date(2019, 1, 1))
    assert combined.name == "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"
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
            "sotttt@hanoi.gov.vn,,,2021-01-01,2025-02-28,",
            "02,Hà Giang,tỉnh,Trung du và miền núi phía Bắc,Sở Thông tin và Truyền thông tỉnh "
            "Hà Giang,sotttt@hagiang@gov.vn,,,2021-01-01,2025-02-28,",
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
                "vanthu@hanoi.gov.vn,000.00.10.H26,2021-01-01,2025-02-28,",
                "95,Bạc Liêu,tỉnh,Đồng bằng sông Cửu Long,"
                '"Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu",'
                "vhtttdl@baclieu.gov.vn,,,2019-01-01,2023-03-14,yes",
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
    assert orgs["95"].valid_to == dt.date(2023, 3, 14)
    assert orgs["02"].email_is_placeholder  # untouched
    assert db.session.execute(select(func.count()).select_from(Organisation)).scalar_one() == 161
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
    hanoi = "01,Hà Nội,thành phố,Đồng bằng sông Hồng,Sở Khoa học và Công nghệ thành phố Hà Nội"
    # Hà Nội's department renamed on 01/01/2027: the current version ends, the new one follows.
    new_period = (
        f"{offices.COLUMNS_HEADER}\n"
        f"{hanoi},sokhcn.hanoi@tinh-2025.example,,,2025-07-01,2026-12-31,yes,so-khcn,"
        "01@2025-03-01\n"
        "01,Hà Nội,thành phố,Đồng bằng sông Hồng,Sở Khoa học và Đổi mới sáng tạo thành phố Hà Nội,"
        "sokhdmst@hanoi.gov.vn,,,2027-01-01,,no,so-khcn,01@2025-07-01\n"
    )
    result = offices.import_csv(new_period, actor="system", at=AT)
    assert result.created == ["01"] and result.updated == ["01"]
    assert len(offices.get_group("so-khcn").members) == 63 + 34 + 1
    on_2027 = {o.province_code: o for o in offices.recipients_for("so-khcn", dt.date(2027, 1, 1))}
    assert len(on_2027) == 34
    assert on_2027["01"].name == "Sở Khoa học và Đổi mới sáng tạo thành phố Hà Nội"
    assert [o.name for o in offices.successors_of_code("01", dt.date(2027, 1, 1))] == [
        "Sở Khoa học và Đổi mới sáng tạo thành phố Hà Nội"
    ]

    overlapping = new_period.replace("2027-01-01", "2026-06-01").replace(
        "2025-07-01,2026-12-31", "2025-07-01,2027-12-31"
    )
    with pytest.raises(offices.DirectoryImportError, match="chồng"):
        offices.import_csv(overlapping, actor="system", at=AT)
    assert db.session.execute(select(func.count()).select_from(Organisation)).scalar_one() == 162


def test_export_then_import_round_trips(db_app, tmp_path):
    offices.seed_directory(actor="system", at=AT)
    offices.import_csv(
        f"{HEADER}\n01,Hà Nội,thành phố,Đồng bằng sông Hồng,"
        "Sở Thông tin và Truyền thông thành phố Hà Nội,sotttt@hanoi.gov.vn,"
        "a@hanoi.gov.vn;b@hanoi.gov.vn,000.00.10.H26,2021-01-01,2025-02-28,no\n",
        actor="system",
        at=AT,
    )
    exported = offices.export_csv()
    assert exported.startswith("\ufeff" + offices.COLUMNS_HEADER + "\r\n")
    assert len(exported.strip().splitlines()) == 162
    path = tmp_path / "export.csv"
    path.write_text(exported, encoding="utf-8")
    result = offices.import_csv(path, actor="system", at=AT)
    assert len(result.unchanged) == 161 and not result.updated and not result.created
    assert not result.links_added
    assert offices.export_csv() == exported
    assert offices.export_csv(bom=False) == exported.removeprefix("\ufeff")
    assert "a@hanoi.gov.vn;b@hanoi.gov.vn" in exported


def test_search_ignores_accents_and_case(db_app):
    offices.seed_directory(actor="system", at=AT)
    (found,) = offices.search("bac lieu", on=dt.date(2021, 11, 15))
    assert found.province_name == "Bạc Liêu"
    assert {o.province_code for o in offices.search("BẠC   LIÊU")} == {"95"}
    assert [o.province_code for o in offices.search("thua thien hue")] == ["46"]
    assert {o.province_code for o in offices.search("khanh hoa")} == {"56"}
    assert {o.province_code for o in offices.search("Khánh Hoà")} == {"56"}  # other tone mark
    assert len(offices.search("bac")) > 1  # Bắc Giang, Bắc Kạn, Bắc Ninh, Bạc Liêu …
    assert offices.search("bac lieu", on=dt.date(2025, 7, 1)) == []
    assert offices.search("100%") == []
    assert [o.province_code for o in offices.search("sotttt.hagiang")] == ["02"]


# --- the directory through time ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "group", "count", "bac_lieu"),
    [
        (dt.date(2021, 11, 15), "so-tttt-2021", 63, "Sở Văn hoá, Thông tin, Thể thao và Du lịch"),
        (dt.date(2023, 3, 14), "so-tttt-2021", 63, "Sở Văn hoá, Thông tin, Thể thao và Du lịch"),
        (dt.date(2023, 3, 15), "so-tttt-2021", 63, "Sở Thông tin và Truyền thông"),
        (dt.date(2025, 2, 28), "so-tttt-2021", 63, "Sở Thông tin và Truyền thông"),
        (dt.date(2025, 3, 1), "so-tttt-2021", 0, None),
        (dt.date(2025, 2, 28), "so-khcn", 0, None),
        (dt.date(2025, 3, 1), "so-khcn", 63, "Sở Khoa học và Công nghệ"),
        (dt.date(2025, 6, 30), "so-khcn", 63, "Sở Khoa học và Công nghệ"),
        (dt.date(2025, 7, 1), "so-khcn", 34, None),
        (dt.date(2026, 12, 5), "so-khcn", 34, None),
    ],
)
def test_a_group_resolves_to_the_offices_of_its_date_on_each_side_of_every_change(
    db_app, day, group, count, bac_lieu
):
    offices.seed_directory(actor="system", at=AT)
    members = {o.province_code: o for o in offices.recipients_for(group, day)}
    assert len(members) == count
    if bac_lieu is not None:
        assert members["95"].name.startswith(bac_lieu + " ")
    elif count == 34:
        assert "95" not in members and members["96"].name == "Sở Khoa học và Công nghệ tỉnh Cà Mau"


@pytest.mark.parametrize(
    ("code", "day", "expected"),
    [
        ("95", dt.date(2026, 1, 1), ["96 Sở Khoa học và Công nghệ tỉnh Cà Mau"]),
        ("01", dt.date(2025, 4, 1), ["01 Sở Khoa học và Công nghệ thành phố Hà Nội"]),
        ("01", dt.date(2025, 2, 28), ["01 Sở Thông tin và Truyền thông thành phố Hà Nội"]),
        (
            "95",
            dt.date(2023, 3, 14),
            ["95 Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"],
        ),
        ("95", dt.date(2023, 3, 15), ["95 Sở Thông tin và Truyền thông tỉnh Bạc Liêu"]),
        ("95", dt.date(2025, 6, 30), ["95 Sở Khoa học và Công nghệ tỉnh Bạc Liêu"]),
        ("95", dt.date(2025, 7, 1), ["96 Sở Khoa học và Công nghệ tỉnh Cà Mau"]),
        ("10", dt.date(2025, 7, 1), ["15 Sở Khoa học và Công nghệ tỉnh Lào Cai"]),
        ("02", dt.date(2026, 12, 5), ["08 Sở Khoa học và Công nghệ tỉnh Tuyên Quang"]),
        ("95", dt.date(2018, 1, 1), []),
        # Bạc Liêu's combined department began on 01/01/2019: nothing of it the day before.
        ("95", dt.date(2018, 12, 31), []),
        (
            "95",
            dt.date(2019, 1, 1),
            ["95 Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"],
        ),
        ("95", dt.date(2025, 2, 28), ["95 Sở Thông tin và Truyền thông tỉnh Bạc Liêu"]),
        ("95", dt.date(2025, 3, 1), ["95 Sở Khoa học và Công nghệ tỉnh Bạc Liêu"]),
        ("01", dt.date(2025, 3, 1), ["01 Sở Khoa học và Công nghệ thành phố Hà Nội"]),
        ("01", dt.date(2025, 6, 30), ["01 Sở Khoa học và Công nghệ thành phố Hà Nội"]),
        ("01", dt.date(2025, 7, 1), ["01 Sở Khoa học và Công nghệ thành phố Hà Nội"]),
        ("10", dt.date(2025, 6, 30), ["10 Sở Khoa học và Công nghệ tỉnh Lào Cai"]),
    ],
)
def test_successors_follow_the_lineage_to_the_date(db_app, code, day, expected):
    offices.seed_directory(actor="system", at=AT)
    found = offices.successors_of_code(code, day)
    assert [f"{o.province_code} {o.name}" for o in found] == expected


def test_a_2021_office_inherited_by_a_merged_province_is_found_once(db_app):
    offices.seed_directory(actor="system", at=AT)
    on = dt.date(2026, 12, 5)
    everyone = offices.recipients_for("so-tttt-2021", dt.date(2021, 11, 15))
    successors = {successor.id for org in everyone for successor in offices.successors_on(org, on)}
    assert len(successors) == 34
    ho_chi_minh = {
        org.province_code
        for org in everyone
        if [s.province_code for s in offices.successors_on(org, on)] == ["79"]
    }
    assert ho_chi_minh == {"79", "74", "77"}


def test_lineage_import_refuses_gaps_overlaps_and_loops_by_line(db_app):
    offices.seed_directory(actor="system", at=AT)
    before = offices.export_csv()
    header = offices.COLUMNS_HEADER
    gap = (
        f"{header}\n"
        "96,Cà Mau,tỉnh,Vùng,Sở A tỉnh Cà Mau,a@tinh.example,,,2025-07-05,,yes,so-khcn,"
        "96@2025-03-01\n"
    )
    with pytest.raises(offices.DirectoryImportError) as caught:
        offices.import_csv(gap, actor="system", at=AT)
    assert any(p.line == 2 and "để trống từ 01/07/2025" in p.message for p in caught.value.problems)
    unknown = gap.replace("96@2025-03-01", "96@2020-01-01").replace("2025-07-05", "2030-01-01")
    with pytest.raises(offices.DirectoryImportError, match="không có cơ quan tiền thân 96@2020"):
        offices.import_csv(unknown, actor="system", at=AT)
    loop = (
        f"{header}\n"
        "01,Hà Nội,thành phố,Vùng,Sở A,a@tinh.example,,,2030-01-01,2030-12-31,,x,01@2031-01-01\n"
        "01,Hà Nội,thành phố,Vùng,Sở B,b@tinh.example,,,2031-01-01,2031-12-31,,x,01@2030-01-01\n"
    )
    with pytest.raises(offices.DirectoryImportError) as caught:
        offices.import_csv(loop, actor="system", at=AT)
    assert any("vòng lặp" in p.message for p in caught.value.problems)
    with pytest.raises(offices.DirectoryImportError, match="MÃ@YYYY-MM-DD"):
        offices.import_csv(gap.replace("96@2025-03-01", "Cà Mau"), actor="system", at=AT)
    assert offices.export_csv() == before


def test_xlsx_export_and_import_carry_versions_and_lineage(db_app, tmp_path):
    from openpyxl import load_workbook

    offices.seed_directory(actor="system", at=AT)
    path = tmp_path / "danh-ba.xlsx"
    path.write_bytes(offices.export_xlsx())
    sheet = load_workbook(path).active
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == list(offices.COLUMNS) and len(rows) == 162
    ca_mau = next(r for r in rows if r[0] == "96" and r[8] == "2025-07-01")
    assert ca_mau[-1] == "96@2025-03-01;95@2025-03-01" or set(ca_mau[-1].split(";")) == {
        "96@2025-03-01",
        "95@2025-03-01",
    }
    result = offices.import_csv(path, actor="system", at=AT)
    assert len(result.unchanged) == 161 and not result.links_added
    path.write_bytes(b"PK\x03\x04 not a workbook")
    with pytest.raises(offices.DirectoryImportError, match="không đọc được tệp Excel"):
        offices.import_csv(path, actor="system", at=AT)
