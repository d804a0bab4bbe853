"""The commands as a clerk types them: seed, directory, draft, issue, status, users, audit."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from sqlalchemy import func, select

from dispatch.accounts import users
from dispatch.extensions import db
from dispatch.models import AuditEntry, Dispatch, Organisation, Role, User
from tests.letter_samples import SEED_FOLDER

ISSUE_AT = "2021-11-15T08:30:00+07:00"


def _invoke(runner, *args, input=None, env=None):
    return runner.invoke(args=list(args), input=input, env=env, catch_exceptions=False)


def _draft(runner, folder: Path | str = SEED_FOLDER) -> int:
    result = _invoke(runner, "draft", "create", str(folder), "--group", "so-tttt-2021")
    assert result.exit_code == 0, result.output
    return int(result.output.strip().splitlines()[-1])


def test_seed_loads_directory_users_and_the_seed_letter_once(db_app, runner, monkeypatch):
    monkeypatch.setenv("DISPATCH_DEMO_PASSWORD", "mat-khau-demo-2021")
    first = _invoke(runner, "seed", "--at", "2021-11-01T08:00:00+07:00")
    assert first.exit_code == 0, first.output
    assert "đã thêm 161 phiên bản cơ quan" in first.output
    assert "nhóm so-tttt-2021: 63 cơ quan ngày 15/11/2021" in first.output
    assert "chuyenvien@thh.example (chuyên viên): đã tạo" in first.output
    assert "mat-khau-demo-2021" not in first.output
    assert "Công văn mẫu: đã tạo bản nháp mã" in first.output
    db.session.rollback()  # the command committed: a rollback here keeps the seed
    roles = {u.email: u.role for u in db.session.execute(select(User)).scalars()}
    assert roles == {
        "chuyenvien@thh.example": Role.CLERK,
        "lanhdao@thh.example": Role.LEADER,
        "quantri@thh.example": Role.ADMIN,
    }
    clerk = users.find_user("chuyenvien@thh.example")
    assert clerk.password_hash.startswith("$argon2id$")
    assert users.verify_password(clerk.password_hash, "mat-khau-demo-2021")
    seed_draft = db.session.execute(select(Dispatch)).scalar_one()
    assert seed_draft.created_by_id == clerk.id and len(seed_draft.recipients) == 63

    second = _invoke(runner, "seed")
    assert second.exit_code == 0, second.output
    assert "Danh bạ: đã có sẵn" in second.output
    assert "Công văn mẫu: đã có" in second.output
    assert db.session.execute(select(func.count()).select_from(Dispatch)).scalar_one() == 1
    assert db.session.execute(select(func.count()).select_from(Organisation)).scalar_one() == 161


def test_seed_without_a_password_prints_a_generated_one_once(db_app, runner, monkeypatch):
    monkeypatch.delenv("DISPATCH_DEMO_PASSWORD", raising=False)
    result = _invoke(runner, "seed")
    line = next(x for x in result.output.splitlines() if "chỉ hiện một lần" in x)
    password = line.rsplit(": ", 1)[1]
    for email in ("chuyenvien@thh.example", "lanhdao@thh.example", "quantri@thh.example"):
        assert users.verify_password(users.find_user(email).password_hash, password)
    assert "chỉ hiện một lần" not in _invoke(runner, "seed").output


def test_draft_create_prints_the_new_id_last(seeded, runner):
    dispatch_id = _draft(runner)
    dispatch = db.session.get(Dispatch, dispatch_id)
    assert dispatch.status.value == "draft" and len(dispatch.recipients) == 63
    assert dispatch.symbol == "THH-VP"


def test_draft_create_lists_the_offices_of_the_letters_date(seeded, runner, letter_folder):
    old = _invoke(runner, "draft", "create", str(SEED_FOLDER), "--group", "so-tttt-2021")
    assert old.exit_code == 0, old.output
    listed = [line for line in old.output.splitlines() if line.startswith("  ")]
    assert len(listed) == 63
    assert "  95  Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu" in listed
    assert "63 nơi nhận (so-tttt-2021)" in old.output

    today = _invoke(
        runner, "draft", "create", str(letter_folder(date="2026-12")), "--group", "so-khcn"
    )
    assert today.exit_code == 0, today.output
    listed = [line for line in today.output.splitlines() if line.startswith("  ")]
    assert len(listed) == 34 and "34 nơi nhận (so-khcn)" in today.output
    assert "  96  Sở Khoa học và Công nghệ tỉnh Cà Mau" in listed
    assert not any(" 95 " in line for line in listed)  # Bạc Liêu is part of Cà Mau


def test_draft_create_reports_a_bad_source_by_file_and_line(seeded, runner, letter_folder):
    folder = letter_folder(extra="urgency: rất khẩn\n")
    result = runner.invoke(args=["draft", "create", str(folder), "--group", "so-tttt-2021"])
    assert result.exit_code == 1
    assert f"Lỗi: nguồn công văn không hợp lệ: {folder / 'letter.md'}:16:" in result.output
    assert "độ khẩn" in result.output
    missing = runner.invoke(args=["draft", "create", "khong-co", "--group", "so-tttt-2021"])
    assert missing.exit_code == 1 and "không tìm thấy thư mục công văn" in missing.output
    group = runner.invoke(args=["draft", "create", str(SEED_FOLDER), "--group", "khong-co"])
    assert group.exit_code == 1 and "Không có nhóm nơi nhận mã 'khong-co'" in group.output
    unknown_user = runner.invoke(
        args=["draft", "create", str(SEED_FOLDER), "--group", "so-tttt-2021", "--as", "ai@x.vn"]
    )
    assert unknown_user.exit_code == 1 and "Không có người dùng 'ai@x.vn'" in unknown_user.output
    assert db.session.execute(select(func.count()).select_from(Dispatch)).scalar_one() == 0


def test_issue_then_status_json(seeded, runner, app):
    dispatch_id = _draft(runner)
    issued = _invoke(
        runner,
        "issue",
        "--confirm-placeholders",
        str(dispatch_id),
        "--at",
        ISSUE_AT,
        "--as",
        "chuyenvien@thh.example",
    )
    assert issued.exit_code == 0, issued.output
    assert "Đã ban hành công văn số 01/THH-VP ngày 15/11/2021" in issued.output
    assert "Hạn xác nhận đã nhận: 18/11/2021 17:00." in issued.output
    assert "Đã xếp 63 thư vào hàng đợi gửi" in issued.output

    again = runner.invoke(
        args=["issue", "--confirm-placeholders", str(dispatch_id), "--at", ISSUE_AT]
    )
    assert again.exit_code == 1 and "không ban hành lại được" in again.output

    status = _invoke(runner, "status", str(dispatch_id), "--json", "--at", ISSUE_AT)
    assert status.exit_code == 0
    assert "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu" in status.output  # not \u
    report = json.loads(status.output)
    assert report["number"] == "01/THH-VP"
    pdf = Path(app.config["DISPATCH_DATA_DIR"]) / f"dispatches/{dispatch_id}"
    pdf = pdf / "CV-01-THH-VP-2021-11-15.pdf"
    assert report["pdf_sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert report["counts"] == {
        "total": 63,
        "sent": 0,
        "failed": 0,
        "bounced": 0,
        "refused": 0,
        "opened": 0,
        "acknowledged": 0,
        "overdue": 0,
    }
    assert len(report["recipients"]) == 63
    first = report["recipients"][0]
    assert {
        "code",
        "name",
        "email",
        "delivery",
        "smtp_reply",
        "opened_at",
        "acknowledged_at",
        "acknowledged_by",
        "reminders",
    } <= first.keys()
    assert first["code"] == "01" and first["delivery"] == "queued" and first["reminders"] == 0
    bac_lieu = next(r for r in report["recipients"] if r["code"] == "95")
    assert bac_lieu["email"] == "sovhttdl.baclieu@tinh.example"

    table = _invoke(runner, "status", str(dispatch_id), "--at", ISSUE_AT)
    assert "Công văn số 01/THH-VP ngày 15/11/2021 — đã ban hành" in table.output
    assert "Tổng số nơi nhận: 63" in table.output

    missing = runner.invoke(args=["status", "999"])
    assert missing.exit_code == 1 and "Lỗi: Không có công văn mã 999." in missing.output
    bad_time = runner.invoke(
        args=["issue", "--confirm-placeholders", str(dispatch_id), "--at", "hôm qua"]
    )
    assert bad_time.exit_code == 2 and "thời điểm không hợp lệ" in bad_time.output


def test_users_create_with_option_or_prompt(db_app, runner):
    result = _invoke(
        runner,
        "users",
        "create",
        "LanhDao2@THH.example",
        "--role",
        "leader",
        "--password",
        "mot-mat-khau-dai",
    )
    assert result.exit_code == 0, result.output
    assert "Đã tạo người dùng lanhdao2@thh.example (lãnh đạo)." in result.output
    leader = users.find_user("lanhdao2@thh.example")
    assert leader.role is Role.LEADER
    assert users.verify_password(leader.password_hash, "mot-mat-khau-dai")
    assert not users.verify_password(leader.password_hash, "sai-mat-khau-roi")

    prompted = _invoke(
        runner,
        "users",
        "create",
        "admin2@thh.example",
        "--role",
        "admin",
        input="mat-khau-quan-tri\nmat-khau-quan-tri\n",
    )
    assert prompted.exit_code == 0, prompted.output
    assert "Nhập lại mật khẩu" in prompted.output
    assert users.verify_password(
        users.find_user("admin2@thh.example").password_hash, "mat-khau-quan-tri"
    )
    entries = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "user.created")
    ).scalars()
    for entry in entries:
        assert "mat-khau" not in json.dumps(entry.details)

    duplicate = runner.invoke(
        args=["users", "create", "admin2@thh.example", "--role", "admin", "--password", "x" * 12]
    )
    assert duplicate.exit_code == 1 and "đã có" in duplicate.output
    short = runner.invoke(
        args=["users", "create", "c@thh.example", "--role", "clerk", "--password", "ngan"]
    )
    assert short.exit_code == 1 and "ít nhất 10 ký tự" in short.output


def test_audit_verify_reports_a_broken_chain(seeded, runner, audit_unguarded):
    ok = _invoke(runner, "audit", "verify")
    assert ok.exit_code == 0 and "chuỗi băm và chữ ký khớp" in ok.output
    entry = db.session.execute(select(AuditEntry).order_by(AuditEntry.id).limit(1)).scalar_one()
    entry.actor = "kẻ giả mạo"
    db.session.commit()
    broken = runner.invoke(args=["audit", "verify"])
    assert broken.exit_code == 1
    assert f"mục {entry.id}: mục bị sửa sau khi ghi" in broken.output


def test_directory_export_and_import(seeded, runner, tmp_path):
    path = tmp_path / "danh-ba.csv"
    exported = _invoke(runner, "directory", "export", str(path))
    assert exported.exit_code == 0 and "Đã xuất 161 cơ quan" in exported.output
    assert path.read_bytes().startswith("\ufeff".encode())
    to_stdout = _invoke(runner, "directory", "export", "-")
    assert to_stdout.output.startswith("code,province,")

    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    rows[0]["email"] = "sotttt@hanoi.gov.vn"
    rows[0]["placeholder"] = "no"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    imported = _invoke(runner, "directory", "import", str(path))
    assert imported.exit_code == 0, imported.output
    assert "0 cơ quan mới, 1 cập nhật, 160 không đổi" in imported.output
    db.session.rollback()  # the command committed: a rollback here keeps the import
    assert db.session.execute(
        select(Organisation).where(Organisation.email == "sotttt@hanoi.gov.vn")
    ).scalar_one()

    rows[1]["email"] = "khong-phai-dia-chi"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    refused = runner.invoke(args=["directory", "import", str(path)])
    assert refused.exit_code == 1
    assert "Dòng 3: địa chỉ thư điện tử không hợp lệ: 'khong-phai-dia-chi'" in refused.output


def test_issue_with_an_unwritable_archive_exits_with_a_clear_error(
    seeded, runner, app, letter_folder, tmp_path
):
    dispatch_id = _draft(runner, letter_folder())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app.config["DISPATCH_DATA_DIR"] = str(blocker / "data")
    result = runner.invoke(
        args=["issue", "--confirm-placeholders", str(dispatch_id), "--at", ISSUE_AT]
    )
    assert result.exit_code == 1
    assert "Lỗi: Không tạo được thư mục lưu trữ" in result.output
    assert "DISPATCH_DATA_DIR" in result.output
    assert db.session.get(Dispatch, dispatch_id).number is None


def test_an_unreachable_database_is_one_vietnamese_line_and_exit_1(tmp_path):
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        # Nothing listens on port 1: the connection is refused at once.
        "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none",
        "DISPATCH_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    for args in (["status", "1"], ["deliver"], ["audit", "verify"]):
        done = subprocess.run(
            [str(Path(sys.executable).with_name("dispatch")), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("Lỗi: không kết nối được cơ sở dữ liệu"), (args, line)


def test_directory_list_and_successors_on_a_date(seeded, runner, tmp_path):
    listed = _invoke(runner, "directory", "list", "--group", "so-khcn", "--on", "2026-01-01")
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.output.splitlines() if "\t" in line]
    assert len(lines) == 34 and lines[0].startswith("01\tSở Khoa học và Công nghệ thành phố Hà Nội")
    in_2021 = _invoke(runner, "directory", "list", "--group", "so-tttt-2021", "--on", "2021-11-15")
    rows = [line for line in in_2021.output.splitlines() if "\t" in line]
    assert len(rows) == 63
    assert any(
        line.startswith("95\tSở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu")
        for line in rows
    )

    ca_mau = _invoke(runner, "directory", "successors", "95", "--on", "2026-01-01")
    assert ca_mau.exit_code == 0, ca_mau.output
    assert ca_mau.output.splitlines() == [
        "96\tSở Khoa học và Công nghệ tỉnh Cà Mau\tsokhcn.camau@tinh-2025.example"
    ]
    ha_noi = _invoke(runner, "directory", "successors", "01", "--on", "2025-04-01")
    assert ha_noi.output.startswith("01\tSở Khoa học và Công nghệ thành phố Hà Nội\t")
    unknown = runner.invoke(args=["directory", "successors", "99", "--on", "2026-01-01"])
    assert unknown.exit_code == 1 and "Không có cơ quan nào mang mã tỉnh '99'" in unknown.output
    bad_date = runner.invoke(args=["directory", "successors", "95", "--on", "31/02/2026"])
    assert bad_date.exit_code == 2 and "ngày không hợp lệ" in bad_date.output

    xlsx = tmp_path / "danh-ba.xlsx"
    exported = _invoke(runner, "directory", "export", str(xlsx))
    assert exported.exit_code == 0 and "Đã xuất 161 cơ quan" in exported.output
    imported = _invoke(runner, "directory", "import", str(xlsx))
    assert imported.exit_code == 0 and "161 không đổi, 0 liên kết kế nhiệm mới" in imported.output


def test_issuing_to_placeholder_addresses_needs_the_flag(seeded, runner, app):
    dispatch_id = _draft(runner)
    refused = runner.invoke(args=["issue", str(dispatch_id), "--at", ISSUE_AT])
    assert refused.exit_code == 1
    assert "63 nơi nhận đang dùng địa chỉ tạm" in refused.output
    assert "--confirm-placeholders" in refused.output
    with app.app_context():
        from dispatch.extensions import db
        from dispatch.models import Dispatch, DispatchStatus

        assert db.session.get(Dispatch, dispatch_id).status is DispatchStatus.DRAFT
    issued = runner.invoke(
        args=["issue", "--confirm-placeholders", str(dispatch_id), "--at", ISSUE_AT]
    )
    assert issued.exit_code == 0, issued.output


def test_draft_create_resolves_the_group_on_the_letters_date(seeded, runner, letter_folder):
    """The 2021 letter keeps its 63 offices, Bạc Liêu's combined department among them; a letter
    dated today goes to today's 34 Sở Khoa học và Công nghệ."""
    of_2021 = db.session.get(Dispatch, _draft(runner))
    names = {r.province_code: r.name for r in of_2021.recipients}
    assert len(names) == 63
    assert names["95"] == "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"

    today = letter_folder(date="2026-12")
    result = _invoke(runner, "draft", "create", str(today), "--group", "so-khcn")
    assert result.exit_code == 0, result.output
    of_today = db.session.get(Dispatch, int(result.output.strip().splitlines()[-1]))
    assert len(of_today.recipients) == 34
    assert all(r.name.startswith("Sở Khoa học và Công nghệ") for r in of_today.recipients)
    assert "95" not in {r.province_code for r in of_today.recipients}

    # Dated on the last day of the 63 provinces, the same group has the 63 departments.
    last_day = letter_folder(date="2025-06-30")
    result = _invoke(runner, "draft", "create", str(last_day), "--group", "so-khcn")
    assert result.exit_code == 0, result.output
    of_june = db.session.get(Dispatch, int(result.output.strip().splitlines()[-1]))
    assert len(of_june.recipients) == 63
