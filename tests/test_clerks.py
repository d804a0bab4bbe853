"""The clerks' pages through the Flask test client, on the real database: compose (invalid drafts
kept), preview, issue with its confirmation, autosave, the status page, the directory, roles
and CSRF."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from dispatch.directory import offices
from dispatch.extensions import db
from dispatch.models import (
    AuditEntry,
    Dispatch,
    DispatchStatus,
    Organisation,
    OutboxMessage,
    Role,
)
from tests.fixtures.clerks import (
    csrf_of,
    draft_id_from,
    field_value,
    form_values,
    office,
    placeholder_confirmation,
    post_form,
    valid_fields,
)


def _actions(dispatch_id: int | None = None) -> list[str]:
    query = select(AuditEntry.action).order_by(AuditEntry.id)
    if dispatch_id is not None:
        query = query.where(AuditEntry.dispatch_id == dispatch_id)
    return list(db.session.execute(query).scalars())


def _pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def _compose(client, data: dict, url: str = "/dispatches/new"):
    return post_form(client, url, data, token_from=url if url.endswith("/new") else "/")


# --- compose, preview, issue -------------------------------------------------------------------


def test_compose_keeps_an_invalid_draft_then_issues_it_as_number_01(desk, fixed_now):
    # The day the letter of November 2021 is issued: no other date to confirm.
    fixed_now(dt.datetime(2021, 11, 15, 2, 0, tzinfo=dt.UTC))
    clerk = desk.clerk
    page = clerk.get("/dispatches/new")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Soạn công văn mới" in html and 'name="body"' in html
    assert field_value(html, "issuing_agency") == "Cục Tin học hoá"  # the office's usual values
    assert "<legend>Người ký</legend>" in html and 'for="f-subject"' in html

    # 1. A wrong letter is saved all the same, with every value as typed.
    body = "Đoạn văn chưa có dấu kết thúc"
    response = _compose(
        clerk,
        valid_fields(
            subject="",
            date="32/13/2021",
            body=body,
            signer_name="TS. Nguyễn Văn A",
        ),
    )
    assert response.status_code == 303
    draft_id = draft_id_from(response)
    draft = db.session.get(Dispatch, draft_id)
    # No readable date: the offices valid today are taken (it is the date that is wrong).
    assert draft.status is DispatchStatus.DRAFT and len(draft.recipients) == 63
    assert draft.source["meta"]["date"] == "32/13/2021"  # kept as typed
    assert draft.source["body"].startswith(body)

    html = clerk.get(f"/dispatches/{draft_id}/edit").get_data(as_text=True)
    assert "chưa thể ban hành" in html
    assert field_value(html, "date") == "32/13/2021"
    assert field_value(html, "body").startswith(body)
    assert field_value(html, "signer_name") == "TS. Nguyễn Văn A"
    assert field_value(html, "addressees").startswith("Các Sở Thông tin và Truyền thông")
    # Each error sits next to its field and is tied to it for screen readers.
    assert 'id="f-subject-loi"' in html and "Vui lòng nhập trích yếu" in html
    assert re.search(r'id="f-subject"[^>]*aria-describedby="[^"]*f-subject-loi', html)
    assert 'id="f-date-loi"' in html and "ngày/tháng/năm" in html
    assert 'id="f-body-loi"' in html and "./." in html
    assert 'id="f-signer_name-loi"' in html and "học hàm, học vị" in html
    assert 'href="#f-subject"' in html  # the summary links to the field

    # The preview of an invalid draft says why in Vietnamese instead of failing.
    preview = clerk.get(f"/dispatches/{draft_id}/preview.pdf")
    assert preview.status_code == 422 and "Chưa xem trước được" in preview.get_data(as_text=True)
    # Said once, on the form: the preview pane neither repeats the list nor names raw fields.
    text = preview.get_data(as_text=True)
    assert "mục cần sửa" in text and "<li>" not in text
    assert "trường" not in text and not re.search(r"\b[a-z]+_[a-z_]+\b", text.split("<body>")[1])

    # 2. Corrected: no more errors, and the preview is a PDF with a blank number and day.
    response = _compose(
        clerk, valid_fields(recipients_group=""), url=f"/dispatches/{draft_id}/edit"
    )
    assert response.status_code == 303 and draft_id_from(response) == draft_id
    html = clerk.get(f"/dispatches/{draft_id}/edit").get_data(as_text=True)
    assert "error-summary" not in html
    db.session.expire_all()
    assert len(db.session.get(Dispatch, draft_id).recipients) == 63  # the offices of 11/2021
    preview = clerk.get(f"/dispatches/{draft_id}/preview.pdf")
    assert preview.status_code == 200 and preview.mimetype == "application/pdf"
    assert preview.data.startswith(b"%PDF-")
    text = _pdf_text(preview.data)
    assert re.search(r"Số:\s+/THH-VP", text)
    assert re.search(r"ngày\s+tháng 11 năm 2021", text)
    assert "KT. CỤC TRƯỞNG" in text and "Nguyễn Phú Tiến" in text

    # 3. The confirmation step shows the number issuing will take.
    page = clerk.get(f"/dispatches/{draft_id}/issue")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Số dự kiến: 01/THH-VP" in html and "63 cơ quan" in html
    assert "xác nhận khi bấm" in html

    # 4. Issuing: number 01 of the year, frozen, letters queued.
    # The 63 placeholder addresses: a count, the names folded away, and a tick of their own.
    warning = re.search(
        r'<section class="card warning" aria-labelledby="dia-chi-tam".*?</section>', html, re.S
    ).group(0)
    assert "63 nơi nhận đang dùng địa chỉ tạm" in warning
    assert re.search(r"<details[^>]*>\s*<summary>Xem danh sách 63 cơ quan</summary>", warning)
    assert len(re.findall(r"<li>", warning)) == 63
    token = csrf_token = csrf_of(clerk, f"/dispatches/{draft_id}/issue")
    bare = clerk.post(f"/dispatches/{draft_id}/issue", data={"csrf_token": token})
    assert bare.status_code == 303 and bare.headers["Location"].endswith("/issue")
    assert "địa chỉ tạm" in clerk.get(bare.headers["Location"]).get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id).status is DispatchStatus.DRAFT
    response = clerk.post(
        f"/dispatches/{draft_id}/issue",
        data={"csrf_token": token, **placeholder_confirmation(html)},
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/dispatches/{draft_id}")
    db.session.expire_all()
    issued = db.session.get(Dispatch, draft_id)
    assert issued.status is DispatchStatus.ISSUED and issued.number == 1
    assert issued.number_and_symbol == "01/THH-VP"
    assert issued.issued_by_id == desk.users[Role.CLERK].id
    queued = db.session.execute(
        select(OutboxMessage).where(OutboxMessage.dispatch_id == draft_id)
    ).scalars()
    assert len(list(queued)) == 63
    page = clerk.get(f"/dispatches/{draft_id}").get_data(as_text=True)
    assert "01/THH-VP" in page and "Đã ban hành công văn số 01/THH-VP" in page

    # 5. Frozen: the composer refuses it and nothing changes.
    response = clerk.get(f"/dispatches/{draft_id}/edit")
    assert response.status_code == 303
    assert "không sửa được" in clerk.get(f"/dispatches/{draft_id}").get_data(as_text=True)
    before = dict(issued.source)
    response = post_form(
        clerk, f"/dispatches/{draft_id}/edit", valid_fields(subject="đổi sau khi ban hành")
    )
    assert response.status_code == 303
    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id).source == before
    again = post_form(clerk, f"/dispatches/{draft_id}/autosave", valid_fields(subject="đổi"))
    assert again.status_code == 409 and "đã ban hành" in again.get_json()["message"]
    assert csrf_token

    # The next draft of the year would take 02.
    response = _compose(clerk, valid_fields(subject="công văn thứ hai"))
    second = draft_id_from(response)
    assert "Số dự kiến: 02/THH-VP" in clerk.get(f"/dispatches/{second}/issue").get_data(
        as_text=True
    )
    actions = _actions(draft_id)
    assert actions[0] == "dispatch.drafted" and "dispatch.draft_updated" in actions
    assert "dispatch.issued" in actions


def test_appendices_are_added_and_removed_without_javascript(desk):
    clerk = desk.clerk
    draft_id = draft_id_from(_compose(clerk, valid_fields()))
    url = f"/dispatches/{draft_id}/edit"
    html = clerk.get(url).get_data(as_text=True)
    assert 'name="appendix-0-title"' in html and 'name="appendix-1-title"' not in html

    # "Thêm phụ lục" saves and shows one more empty slot.
    response = post_form(
        clerk,
        url,
        valid_fields(
            **{"appendix-0-title": "Danh sách đầu mối", "appendix-0-body": "Nội dung./."},
            action="add_appendix",
        ),
    )
    assert response.status_code == 303 and "slots=2" in response.headers["Location"]
    html = clerk.get(response.headers["Location"]).get_data(as_text=True)
    assert field_value(html, "appendix-0-title") == "Danh sách đầu mối"
    assert 'name="appendix-2-title"' in html  # the appendix and two empty slots
    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id).source["appendices"] == [
        {"title": "Danh sách đầu mối", "body": "Nội dung./.\n"}
    ]

    # An appendix without its closing mark is kept, with the error on its body.
    post_form(
        clerk,
        url,
        valid_fields(
            appendix_count="2",
            **{
                "appendix-0-title": "Danh sách đầu mối",
                "appendix-0-body": "Nội dung./.",
                "appendix-1-title": "Bảng tổng hợp",
                "appendix-1-body": "Chưa xong",
            },
        ),
    )
    html = clerk.get(url).get_data(as_text=True)
    assert 'id="f-appendix-1-body-loi"' in html and "Phụ lục 2: nội dung" in html

    # "Xoá phụ lục 2" removes it.
    post_form(
        clerk,
        url,
        valid_fields(
            appendix_count="2",
            action="remove_appendix:1",
            **{
                "appendix-0-title": "Danh sách đầu mối",
                "appendix-0-body": "Nội dung./.",
                "appendix-1-title": "Bảng tổng hợp",
                "appendix-1-body": "Chưa xong",
            },
        ),
    )
    db.session.expire_all()
    assert [a["title"] for a in db.session.get(Dispatch, draft_id).source["appendices"]] == [
        "Danh sách đầu mối"
    ]


def test_recipients_are_picked_from_the_group_and_the_search(desk):
    clerk = desk.clerk
    draft_id = draft_id_from(_compose(clerk, valid_fields()))
    url = f"/dispatches/{draft_id}/edit"
    ca_mau, bac_lieu = office("96"), office("95")
    ticked = [str(r.organisation_id) for r in db.session.get(Dispatch, draft_id).recipients]
    assert len(ticked) == 63

    # Untick Cà Mau: the checkboxes were drawn for this group, so what is ticked is the choice.
    keep = [i for i in ticked if i != str(ca_mau.id)]
    post_form(clerk, url, {**valid_fields(recipients_group="so-tttt-2021"), "recipient": keep})
    db.session.expire_all()
    chosen = {r.organisation_id for r in db.session.get(Dispatch, draft_id).recipients}
    assert len(chosen) == 62 and ca_mau.id not in chosen

    # The search (without JavaScript) saves and lists matches, accents ignored.
    response = post_form(
        clerk,
        url,
        {
            **valid_fields(recipients_group="so-tttt-2021"),
            "recipient": keep,
            "action": "search",
            "q": "ca mau",
        },
    )
    assert response.status_code == 303 and "q=ca+mau" in response.headers["Location"]
    html = clerk.get(response.headers["Location"]).get_data(as_text=True)
    assert "Kết quả tìm" in html and "Cà Mau" in html
    assert re.search(rf'<input type="checkbox" name="recipient" value="{ca_mau.id}"', html)

    # JSON search for the script.
    found = clerk.get("/directory/search.json?q=bac lieu&on=2021-11-15").get_json()["offices"]
    assert [o["id"] for o in found] == [bac_lieu.id]

    # Nobody ticked: saved, but it cannot be issued.
    post_form(clerk, url, valid_fields(recipients_group="so-tttt-2021"))
    html = clerk.get(f"/dispatches/{draft_id}/issue").get_data(as_text=True)
    assert "Chưa thể ban hành" in html and "Chưa chọn nơi nhận" in html
    assert f'action="/dispatches/{draft_id}/issue"' not in html


def test_autosave_creates_then_updates_a_draft_as_json(desk):
    clerk = desk.clerk
    token = csrf_of(clerk, "/dispatches/new")
    headers = {"X-CSRFToken": token, "Accept": "application/json"}
    fields = valid_fields(subject="")
    response = clerk.post("/dispatches/autosave", data=fields, headers=headers)
    assert response.status_code == 201
    data = response.get_json()
    draft_id = data["id"]
    assert data["created"] is True and data["valid"] is False
    assert "subject" in data["errors"] and "trích yếu" in data["errors"]["subject"]
    assert data["urls"]["edit"] == f"/dispatches/{draft_id}/edit"
    assert data["urls"]["autosave"] == f"/dispatches/{draft_id}/autosave"

    fields["subject"] = "tự động lưu"
    response = clerk.post(f"/dispatches/{draft_id}/autosave", data=fields, headers=headers)
    assert response.status_code == 200
    data = response.get_json()
    assert data["changed"] is True and data["valid"] is True and data["errors"] == {}
    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id).subject == "tự động lưu"

    # The same content again changes nothing and writes no audit entry.
    count = len(_actions(draft_id))
    response = clerk.post(f"/dispatches/{draft_id}/autosave", data=fields, headers=headers)
    assert response.get_json()["changed"] is False
    assert len(_actions(draft_id)) == count
    assert _actions(draft_id)[:2] == ["dispatch.drafted", "dispatch.draft_updated"]
    entry = db.session.execute(
        select(AuditEntry).where(
            AuditEntry.dispatch_id == draft_id, AuditEntry.action == "dispatch.draft_updated"
        )
    ).scalar_one()
    assert entry.actor == desk.users[Role.CLERK].email and "subject" in entry.details["changed"]

    # Without the token: refused.
    response = clerk.post(f"/dispatches/{draft_id}/autosave", data=fields)
    assert response.status_code == 400


# --- watching delivery ------------------------------------------------------------------------


def test_the_status_page_refreshes_while_letters_are_in_flight(
    desk, issued_dispatch, smtp_server, app
):
    dispatch = issued_dispatch()
    page = desk.clerk.get(f"/dispatches/{dispatch.id}").get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="15">' in page  # inside <noscript>
    assert f'data-status-url="/dispatches/{dispatch.id}/status.json"' in page
    assert "Gửi ngay" in page and page.count("Xử lý") == 63
    status = desk.clerk.get(f"/dispatches/{dispatch.id}/status.json").get_json()
    assert status["in_flight"] is True and status["counts"]["total"] == 63
    assert {r["delivery"] for r in status["recipients"]} == {"queued"}

    # "Gửi ngay" sends the due letters over SMTP at once.
    smtp_server.configure(app)
    smtp_server.handler.reject["sotttt.camau@tinh.example"] = "550 5.1.1 Hộp thư không tồn tại"
    response = post_form(desk.clerk, f"/dispatches/{dispatch.id}/deliver", {})
    assert response.status_code == 303
    assert len(smtp_server.messages) >= 62
    status = desk.clerk.get(f"/dispatches/{dispatch.id}/status.json").get_json()
    assert status["in_flight"] is False
    page = desk.clerk.get(f"/dispatches/{dispatch.id}").get_data(as_text=True)
    assert 'http-equiv="refresh"' not in page
    assert "Gửi ngay: đã gửi" in page
    failed = [r for r in status["recipients"] if r["delivery"] == "failed"]
    for row in failed:
        assert row["delivery_label"] == "gửi lỗi" and row["delivery_detail"].startswith("5")
    assert _actions(dispatch.id).count("outbox.delivery_requested") == 1

    # Leaders read the page, without the buttons.
    page = desk.leader.get(f"/dispatches/{dispatch.id}").get_data(as_text=True)
    assert "Gửi ngay" not in page and "Xử lý" not in page


def test_the_list_has_tabs_by_status(desk, issued_dispatch):
    issued = issued_dispatch()
    draft_id = draft_id_from(_compose(desk.clerk, valid_fields(subject="bản nháp trong danh sách")))
    drafts_tab = desk.clerk.get("/?status=draft").get_data(as_text=True)
    assert "bản nháp trong danh sách" in drafts_tab and issued.subject not in drafts_tab
    assert f"/dispatches/{draft_id}/edit" in drafts_tab  # "Soạn tiếp"
    issued_tab = desk.clerk.get("/?status=issued").get_data(as_text=True)
    assert issued.subject in issued_tab and "bản nháp trong danh sách" not in issued_tab
    assert "đã xác nhận 0/63" in issued_tab
    assert 'aria-current="page"' in issued_tab
    leader_home = desk.leader.get("/").get_data(as_text=True)
    assert "Soạn công văn mới" not in leader_home and "Soạn tiếp" not in leader_home
    assert "Soạn công văn mới" in desk.clerk.get("/").get_data(as_text=True)


# --- directory ---------------------------------------------------------------------------------


def test_directory_search_ignores_accents(desk):
    html = desk.clerk.get("/directory?q=bac lieu").get_data(as_text=True)
    assert "Bạc Liêu" in html and "Sở Văn hoá, Thông tin, Thể thao và Du lịch" in html
    assert "Hà Nội" not in html.split("<tbody>")[1]
    # Every version: the combined department, its Sở TTTT of 2023, the Sở KHCN of 2025.
    assert "3 kết quả" in html
    assert "/directory/import" not in html  # a clerk reads, only an admin edits
    assert "/directory/import" in desk.admin.get("/directory").get_data(as_text=True)
    export = desk.clerk.get("/directory/export.csv")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    assert export.get_data(as_text=True).lstrip("\ufeff").startswith("code,province,")


def test_an_admin_edits_an_office(desk):
    ca_mau = office("96")
    assert ca_mau.email_is_placeholder
    url = f"/directory/{ca_mau.id}/edit"
    assert desk.clerk.get(url).status_code == 403
    page = desk.admin.get(url).get_data(as_text=True)
    assert field_value(page, "email") == ca_mau.email

    bad = post_form(
        desk.admin,
        url,
        {
            "name": ca_mau.name,
            "email": "khong-phai-dia-chi",
            "cc": "",
            "agency_id": "123",
            "valid_from": "31/02/2021",
            "valid_to": "",
        },
        token_from=url,
    )
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert "không hợp lệ" in html and "XXX.YY.ZZ.Lnn" in html and "không phải ngày hợp lệ" in html
    assert field_value(html, "email") == "khong-phai-dia-chi"  # what was typed stays
    db.session.expire_all()
    assert office("96").email == ca_mau.email

    good = post_form(
        desk.admin,
        url,
        {
            "name": ca_mau.name,
            "email": "stttt@camau.gov.vn",
            "cc": "vanthu@camau.gov.vn",
            "agency_id": "000.00.00.H12",
            "valid_from": "01/01/2021",
            "valid_to": "28/02/2025",
        },
        token_from=url,
    )
    assert good.status_code == 303
    db.session.expire_all()
    edited = office("96")
    assert edited.email == "stttt@camau.gov.vn" and edited.cc == ["vanthu@camau.gov.vn"]
    assert not edited.email_is_placeholder
    assert "camau gov vn" in edited.search_text.replace(".", " ")
    entry = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "organisation.updated")
    ).scalar_one()
    assert entry.actor == desk.users[Role.ADMIN].email
    assert entry.details["email"]["to"] == "stttt@camau.gov.vn"


def test_directory_import_lists_bad_rows_and_imports_nothing(desk):
    csv_text = desk.admin.get("/directory/export.csv").get_data(as_text=True)
    lines = csv_text.lstrip("\ufeff").splitlines()
    broken = list(lines)
    broken[2] = broken[2].replace("@", " at ", 1)  # line 3: a bad address
    response = post_form(
        desk.admin,
        "/directory/import",
        {"file": (io.BytesIO("\n".join(broken).encode()), "danh-ba.csv")},
        token_from="/directory/import",
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Dòng 3:" in html and "chưa có thay đổi nào" in html

    changed = [line.replace("sotttt.hanoi@tinh.example", "stttt@hanoi.gov.vn") for line in lines]
    response = post_form(
        desk.admin,
        "/directory/import",
        {"file": (io.BytesIO("\n".join(changed).encode("utf-8-sig")), "danh-ba.csv")},
        token_from="/directory/import",
    )
    assert response.status_code == 303
    db.session.expire_all()
    hanoi = offices.office_on("01", dt.date(2021, 11, 15))
    assert hanoi.email == "stttt@hanoi.gov.vn" and not hanoi.email_is_placeholder
    assert (
        post_form(
            desk.clerk,
            "/directory/import",
            {"file": (io.BytesIO(b"code\n"), "x.csv")},
        ).status_code
        == 403
    )


# --- roles and CSRF ----------------------------------------------------------------------------


def test_a_leader_cannot_compose_issue_or_change_anything(desk, issued_dispatch):
    issued = issued_dispatch()
    draft_id = draft_id_from(_compose(desk.clerk, valid_fields()))
    recipient = issued.recipients[0]
    leader = desk.leader
    for url in (
        "/dispatches/new",
        f"/dispatches/{draft_id}/edit",
        f"/dispatches/{draft_id}/issue",
        f"/dispatches/{draft_id}/preview.pdf",
        f"/dispatches/{issued.id}/recipients/{recipient.id}",
        "/directory",
        "/register",
        f"/directory/{recipient.organisation_id}/edit",
        "/directory/import",
    ):
        response = leader.get(url)
        assert response.status_code == 403, url
        assert "không có quyền" in response.get_data(as_text=True)
    token = csrf_of(leader, "/")
    posts = (
        "/dispatches/new",
        "/dispatches/autosave",
        f"/dispatches/{draft_id}/edit",
        f"/dispatches/{draft_id}/autosave",
        f"/dispatches/{draft_id}/issue",
        f"/dispatches/{issued.id}/deliver",
        f"/dispatches/{issued.id}/recipients/{recipient.id}/resend",
        f"/dispatches/{issued.id}/recipients/{recipient.id}/address",
        f"/dispatches/{issued.id}/recipients/{recipient.id}/phone",
        f"/dispatches/{issued.id}/recipients/{recipient.id}/reminders",
        f"/directory/{recipient.organisation_id}/edit",
        "/directory/import",
    )
    audit_before = len(_actions())
    for url in posts:
        response = leader.post(url, data={**valid_fields(), "csrf_token": token})
        assert response.status_code == 403, url
    assert len(_actions()) == audit_before
    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id).status is DispatchStatus.DRAFT
    # Leaders still read the dispatch page.
    assert leader.get(f"/dispatches/{issued.id}").status_code == 200


def test_a_post_without_the_csrf_token_is_refused(desk):
    response = desk.clerk.post("/dispatches/new", data=valid_fields())
    assert response.status_code == 400
    assert "mã bảo vệ" in response.get_data(as_text=True)
    assert db.session.execute(select(Dispatch)).first() is None


@pytest.mark.parametrize("url", ["/dispatches/new", "/register", "/directory"])
def test_signed_out_visitors_are_sent_to_sign_in(client, db_app, url):
    response = client.get(url)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


# --- the scripts, in a real browser ------------------------------------------------------------


@pytest.mark.slow
def test_autosave_in_a_browser_creates_the_draft_and_survives_going_offline(clerk_browser):
    base, page = clerk_browser
    page.goto(base + "/dispatches/new")
    page.fill("#f-subject", "lưu tự động trong trình duyệt")
    page.fill("#f-body", "Cục Tin học hoá đề nghị Quý Sở phối hợp.\n\nTrân trọng./.")
    page.fill("#f-signer_name", "Nguyễn Văn An")
    page.fill("#f-addressees", "Các Sở Thông tin và Truyền thông")
    # The first autosave creates the draft; the address bar then names it.
    page.wait_for_url(re.compile(r"/dispatches/\d+/edit$"))
    draft_id = int(re.search(r"/dispatches/(\d+)/edit", page.url).group(1))
    page.wait_for_function(
        "document.getElementById('autosave-status').textContent.includes('Có thể ban hành')"
    )
    db.session.expire_all()
    draft = db.session.get(Dispatch, draft_id)
    assert draft.subject == "lưu tự động trong trình duyệt"
    assert draft.source["meta"]["signer"]["name"] == "Nguyễn Văn An"
    # The preview frame shows the draft's PDF once it is valid.
    page.wait_for_function(
        "(document.getElementById('preview-frame').src || '').includes('/preview.pdf')"
    )

    # A wrong value: the error appears next to its field, and the draft is saved all the same.
    page.fill("#f-date", "ngày mai")
    page.wait_for_selector("#f-date-loi")
    assert page.get_attribute("#f-date", "aria-invalid") == "true"
    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id).source["meta"]["date"] == "ngày mai"

    # Offline: what is typed stays in this browser, and is saved once back online.
    page.context.set_offline(True)
    page.fill("#f-subject", "viết khi mất mạng")
    page.wait_for_function(
        "document.getElementById('autosave-status').classList.contains('is-error')"
    )
    kept = page.evaluate(f"window.localStorage.getItem('dispatch:draft:{draft_id}')")
    assert kept and "viết khi mất mạng" in kept
    page.context.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    page.wait_for_function(
        "document.getElementById('autosave-status').textContent.includes('Đã tự động lưu')"
    )
    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id).subject == "viết khi mất mạng"
    assert page.evaluate(f"window.localStorage.getItem('dispatch:draft:{draft_id}')") is None
    actions = _actions(draft_id)
    assert actions[0] == "dispatch.drafted" and actions.count("dispatch.drafted") == 1


@pytest.mark.slow
def test_the_directory_search_in_the_composer_adds_offices_without_reloading(clerk_browser):
    import datetime as dt

    from dispatch.directory import offices

    # An office outside the group: the search is how it joins the list.
    centre = Organisation(
        name="Trung tâm Công nghệ thông tin và Truyền thông tỉnh Cà Mau",
        province_code="96",
        province_name="Cà Mau",
        province_kind="tỉnh",
        region="Đồng bằng sông Cửu Long",
        email="ttcntt@camau.gov.vn",
        cc=[],
        valid_from=dt.date(2000, 1, 1),
    )
    centre.search_text = offices.search_text_for(centre)
    db.session.add(centre)
    db.session.commit()
    base, page = clerk_browser
    draft_id = draft_id_from(_compose_via(page, base))
    before = len(db.session.get(Dispatch, draft_id).recipients)  # the group's offices
    page.goto(f"{base}/dispatches/{draft_id}/edit")
    page.fill("#f-q", "trung tam ca mau")
    page.press("#f-q", "Enter")  # searched by the script: the page stays
    page.wait_for_selector(f"#search-results #r-{centre.id}")
    assert page.url.endswith(f"/dispatches/{draft_id}/edit")
    page.check(f"#search-results #r-{centre.id}")
    page.wait_for_function(
        "document.getElementById('autosave-status').textContent.includes('Đã tự động lưu')"
    )
    db.session.expire_all()
    chosen = {r.organisation_id for r in db.session.get(Dispatch, draft_id).recipients}
    assert centre.id in chosen and len(chosen) == before + 1


@pytest.mark.slow
def test_the_status_page_updates_itself_while_letters_go_out(
    clerk_browser, issued_dispatch, smtp_server, app
):
    from dispatch.clock import now
    from dispatch.mail.sender import deliver_due

    dispatch = issued_dispatch()
    hanoi = next(r for r in dispatch.recipients if r.province_code == "01")
    base, page = clerk_browser
    page.goto(f"{base}/dispatches/{dispatch.id}")
    cell = f'tr[data-recipient-id="{hanoi.id}"] [data-field="delivery_label"]'
    assert page.text_content(cell) == "chờ gửi"
    smtp_server.configure(app)
    deliver_due(now())
    # No reload: the script asks status.json and rewrites the row and the counts. A poll may
    # land while the batch is still going out, so wait for the last count, not the first row.
    page.wait_for_function(
        f"document.querySelector('{cell}').textContent === 'đã gửi'"
        " && document.querySelector('[data-count=\"sent\"]').textContent === '63'",
        timeout=120_000,
    )
    assert "Không còn thư nào đang chờ gửi" in page.text_content("[data-refresh-note]")


def _compose_via(page, base):
    """Create a valid draft through the no-JavaScript path (a plain form post from the page)."""

    class Response:
        headers: dict

    page.goto(base + "/dispatches/new")
    page.fill("#f-subject", "tìm cơ quan")
    page.fill("#f-body", "Nội dung.\n\nTrân trọng./.")
    page.fill("#f-signer_name", "Nguyễn Văn An")
    page.fill("#f-addressees", "Các Sở Thông tin và Truyền thông")
    page.click("button[value=save]")
    page.wait_for_url(re.compile(r"/dispatches/\d+/edit"))
    result = Response()
    result.headers = {"Location": page.url}
    return result


def test_the_seed_letter_goes_through_the_form_unchanged(desk):
    """A draft made from the 2021 letter's folder, opened and saved as a browser would, is the
    same letter: every field of the source has its place in the form."""
    from werkzeug.datastructures import MultiDict

    from dispatch.clock import now
    from dispatch.directory import offices
    from dispatch.drafting import drafts
    from dispatch.letters.source import build_letter, source_from_json
    from tests.letter_samples import SEED_FOLDER

    draft = drafts.create_draft(
        SEED_FOLDER, group_code=offices.DEFAULT_GROUP_CODE, actor=None, at=now()
    )
    db.session.commit()
    before = build_letter(source_from_json(draft.source))
    html = desk.clerk.get(f"/dispatches/{draft.id}/edit").get_data(as_text=True)
    assert "error-summary" not in html
    pairs = form_values(html)
    assert ("appendix-1-title", before.appendices[1].title) in pairs
    response = desk.clerk.post(f"/dispatches/{draft.id}/edit", data=MultiDict(pairs))
    assert response.status_code == 303
    db.session.expire_all()
    saved = db.session.get(Dispatch, draft.id)
    after = build_letter(source_from_json(saved.source))
    for name in (
        "parent_agency",
        "issuing_agency",
        "symbol",
        "place",
        "subject",
        "addressees",
        "body",
        "signer",
        "distribution",
        "urgency",
        "month",
        "year",
        "date",
    ):
        assert getattr(after, name) == getattr(before, name), name
    assert [(a.numeral, a.title, a.body) for a in after.appendices] == [
        (a.numeral, a.title, a.body) for a in before.appendices
    ]
    assert len(saved.recipients) == 63
    assert "error-summary" not in desk.clerk.get(f"/dispatches/{draft.id}/edit").get_data(
        as_text=True
    )


def test_the_list_runs_the_same_queries_whatever_the_number_of_dispatches(desk, letter_folder):
    from sqlalchemy import event

    from dispatch.clock import now
    from dispatch.directory import offices
    from dispatch.drafting import drafts

    def queries_for_home() -> int:
        seen: list[str] = []

        def count(*args) -> None:
            seen.append(args[2])

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert desk.clerk.get("/").status_code == 200
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        return len(seen)

    def add(n: int) -> None:
        for _ in range(n):
            drafts.create_draft(
                letter_folder(), group_code=offices.DEFAULT_GROUP_CODE, actor=None, at=now()
            )
        db.session.commit()

    add(2)
    few = queries_for_home()
    add(5)
    assert queries_for_home() == few


def test_ids_beyond_the_database_range_are_not_found(desk):
    for url in (
        "/dispatches/9223372036854775808",
        "/dispatches/2147483648/edit",
        "/dispatches/99999999999999999999/status.json",
        "/directory/9223372036854775808/edit",
    ):
        assert desk.admin.get(url).status_code == 404, url


# --- deleting a draft --------------------------------------------------------------------------


def test_a_draft_is_deleted_after_a_confirmation_with_its_files(desk, runner):
    from dispatch.drafting import uploads
    from tests.fixtures.files import pdf_bytes

    clerk = desk.clerk
    draft_id = draft_id_from(_compose(clerk, valid_fields()))
    response = post_form(
        clerk,
        f"/dispatches/{draft_id}/edit",
        {
            **valid_fields(),
            "action": "upload",
            "attachment": (io.BytesIO(pdf_bytes()), "Kế hoạch.pdf"),
        },
    )
    assert response.status_code == 303
    folder = uploads.upload_root(draft_id)
    assert any(folder.rglob("*.pdf"))

    # The draft's page and the composer offer it; a GET only asks.
    assert f"/dispatches/{draft_id}/delete" in clerk.get(f"/dispatches/{draft_id}").get_data(True)
    assert f"/dispatches/{draft_id}/delete" in clerk.get(f"/dispatches/{draft_id}/edit").get_data(
        True
    )
    page = clerk.get(f"/dispatches/{draft_id}/delete")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Xoá bản nháp?" in html and "Kế hoạch" not in html
    assert re.search(r"<dt>Tệp gửi kèm</dt><dd>1</dd>", html)
    assert db.session.get(Dispatch, draft_id) is not None

    # Without the CSRF token nothing happens; a leader may not delete.
    assert clerk.post(f"/dispatches/{draft_id}/delete").status_code == 400
    leader = desk.clients[Role.LEADER]
    assert leader.get(f"/dispatches/{draft_id}/delete").status_code == 403

    response = post_form(clerk, f"/dispatches/{draft_id}/delete", {"confirm": "yes"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/")
    db.session.expire_all()
    assert db.session.get(Dispatch, draft_id) is None
    assert not folder.exists()
    entry = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "dispatch.draft_deleted")
    ).scalar_one()
    assert entry.dispatch_id == draft_id and entry.actor == desk.users[Role.CLERK].email
    assert entry.details["attachments"] == 1 and entry.details["subject"]
    home = clerk.get("/").get_data(as_text=True)
    assert "Đã xoá bản nháp" in home
    assert clerk.get(f"/dispatches/{draft_id}/delete").status_code == 404

    # The command line deletes through the same function, and refuses an issued letter.
    other = draft_id_from(_compose(clerk, valid_fields()))
    result = runner.invoke(args=["draft", "delete", str(other)])
    assert result.exit_code == 1 and "--yes" in result.output
    result = runner.invoke(args=["draft", "delete", str(other), "--yes"])
    assert result.exit_code == 0, result.output
    assert f"Đã xoá bản nháp mã {other}" in result.output
    db.session.expire_all()
    assert db.session.get(Dispatch, other) is None
    assert len(_actions(other)) >= 2 and _actions(other)[-1] == "dispatch.draft_deleted"


def test_an_issued_dispatch_cannot_be_deleted(desk, issued_dispatch, runner):
    dispatch_id = issued_dispatch().id
    clerk = desk.clerk
    assert "/delete" not in clerk.get(f"/dispatches/{dispatch_id}").get_data(as_text=True)
    response = post_form(clerk, f"/dispatches/{dispatch_id}/delete", {"confirm": "yes"})
    assert response.status_code == 303
    follow = clerk.get(response.headers["Location"]).get_data(as_text=True)
    assert "không xoá được" in follow
    result = runner.invoke(args=["draft", "delete", str(dispatch_id), "--yes"])
    assert result.exit_code == 1 and "đã ban hành nên không xoá được" in result.output
    db.session.expire_all()
    assert db.session.get(Dispatch, dispatch_id).status is not DispatchStatus.DRAFT
    assert "dispatch.draft_deleted" not in _actions(dispatch_id)


def test_an_untouched_new_letter_leaves_no_draft_behind(desk):
    from werkzeug.datastructures import MultiDict

    clerk = desk.clerk
    page = clerk.get("/dispatches/new").get_data(as_text=True)
    pairs = form_values(page)
    token = csrf_of(clerk, "/dispatches/new")
    count = db.session.execute(select(Dispatch.id)).all()

    # "Lưu" (or "Ban hành…") on the form as it was opened: nothing is created.
    for action in ("save", "issue"):
        data = MultiDict([*pairs, ("action", action)])
        response = clerk.post("/dispatches/new", data=data)
        assert response.status_code == 303
        assert response.headers["Location"].endswith("/dispatches/new")
    html = clerk.get("/dispatches/new").get_data(as_text=True)
    assert "Chưa có gì để lưu" in html and "Đã lưu bản nháp" not in html

    # Autosave of the blank form creates nothing either.
    headers = {"X-CSRFToken": token, "Accept": "application/json"}
    response = clerk.post("/dispatches/autosave", data=MultiDict(pairs), headers=headers)
    assert response.status_code == 200
    assert response.get_json()["id"] is None and response.get_json()["created"] is False
    assert db.session.execute(select(Dispatch.id)).all() == count
    assert "dispatch.drafted" not in _actions()

    # One typed word is a draft.
    typed = MultiDict([(k, "gửi thử" if k == "subject" else v) for k, v in pairs])
    response = clerk.post("/dispatches/autosave", data=typed, headers=headers)
    assert response.status_code == 201 and response.get_json()["id"]


def test_a_letter_with_errors_says_so_once(desk):
    clerk = desk.clerk
    draft_id = draft_id_from(_compose(clerk, valid_fields(subject="", body="")))
    for action in ("save", "issue"):
        response = _compose(
            clerk,
            {**valid_fields(subject="", body=""), "action": action},
            f"/dispatches/{draft_id}/edit",
        )
        assert response.status_code == 303 and response.headers["Location"].endswith("/edit")
        html = clerk.get(response.headers["Location"]).get_data(as_text=True)
        # No notice beside the summary: its heading says the draft was saved, and what is left.
        assert re.findall(r'<p class="notice notice-\w+">(.*?)</p>', html, re.S) == []
        assert "Đã lưu bản nháp lúc" not in html
        assert len(re.findall(r'class="error-summary"', html)) == 1
        heading = re.search(r'<h2 id="tom-tat-loi">(.*?)</h2>', html, re.S).group(1)
        assert heading == "Bản nháp đã được lưu nhưng chưa thể ban hành: 2 mục cần sửa"


# Every kind of mistake the form can hold at once, each in a field of its own.
WRONG = valid_fields(
    parent_agency="Bộ\u202eThông tin",
    issuing_agency="",
    symbol="thh vp",
    place="p" * 150,
    date="32/13/2021",
    urgency="gấp",
    subject="V/v " + "a" * 600,
    addressees="x" * 250,
    body="* một ý\n\nkhông có dấu kết thúc",
    signer_authority="KT.",
    signer_acting_for="",
    signer_title="c" * 120,
    signer_name="TS. Nguyễn Văn A",
    distribution="Như trên\n" + "y" * 250,
    recipients_group="",
    **{"appendix-0-title": "t" * 600, "appendix-0-body": "| a | b |\n|---|---|\n| 1 | 2 |"},
)


def test_errors_are_said_once_in_the_forms_order_and_words(desk):
    """Issue 14, point 5: one summary in the order of the page, each message also beside its
    field, none in the preview pane, and no internal name anywhere a clerk reads."""
    from tests.fixtures.wording import internal_names, visible_text

    clerk = desk.clerk
    response = _compose(clerk, {**WRONG, "action": "issue"})
    assert response.status_code == 303
    draft_id = draft_id_from(response)
    html = clerk.get(response.headers["Location"]).get_data(as_text=True)
    summary = re.search(r'<div class="error-summary".*?</div>', html, re.S).group(0)
    items = re.findall(r'<li><a href="#([^"]+)">([^<]*)</a>: (.*?)</li>', summary, re.S)
    assert len(items) >= 14, items
    # The summary's order is the page's: each anchor's field comes after the one before.
    form = html[html.index('id="compose-form"') :]
    positions = [form.index(f'id="{anchor}"') for anchor, _, _ in items]
    assert positions == sorted(positions), [anchor for anchor, _, _ in items]
    # Each message is also said beside its field, in the same words.
    for anchor, _, message in items:
        if anchor.startswith("f-"):
            inline = re.search(rf'<p class="field-error" id="{anchor}-loi">(.*?)</p>', html, re.S)
            assert inline is not None and inline.group(1) == message, anchor
    text = visible_text(html)
    assert internal_names(text) == [], internal_names(text)
    assert '"' not in text, [line for line in text.splitlines() if '"' in line]
    assert "Đã lưu bản nháp lúc" not in text
    for expected in (
        "Mục “Trích yếu” dài",
        "Mục “Kính gửi” (dòng 1) dài 250 ký tự",
        "Mục “Tên phụ lục” dài 600 ký tự",
        "Mục “Cơ quan chủ quản” chứa ký tự không được phép",
    ):
        assert expected in text, expected

    # The preview pane says the draft is not ready, and neither lists nor names anything.
    preview = clerk.get(f"/dispatches/{draft_id}/preview.pdf")
    assert preview.status_code == 422
    said = visible_text(preview.get_data(as_text=True))
    assert "mục cần sửa" in said and "<li>" not in preview.get_data(as_text=True)
    assert internal_names(said) == []
    # The issue page sends a letter with errors back to the form, which says what is left.
    issue = clerk.get(f"/dispatches/{draft_id}/issue")
    if issue.status_code == 303:
        issue = clerk.get(issue.headers["Location"])
    said = visible_text(issue.get_data(as_text=True))
    assert internal_names(said) == [], internal_names(said)


def test_an_emptied_new_letter_saves_nothing(desk):
    clerk = desk.clerk
    emptied = {key: "" for key in valid_fields()}
    for action in ("save", "issue"):
        response = _compose(clerk, {**emptied, "action": action})
        assert response.status_code == 303
        assert response.headers["Location"].endswith("/dispatches/new")
        html = clerk.get("/dispatches/new").get_data(as_text=True)
        assert "Chưa có gì để lưu" in html
        assert "Đã lưu bản nháp" not in html and "error-summary" not in html
    assert db.session.execute(select(Dispatch.id)).first() is None
