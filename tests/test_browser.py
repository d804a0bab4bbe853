"""The whole story in a real headless Chromium against the live app (issue 4's acceptance).

A clerk signs in, composes a letter with an appendix, previews it, issues it to the 63 offices
of group so-tttt-2021 and sends it now; the SMTP sink receives 63 e-mails; two provinces open
their links on a phone (one with JavaScript off) and confirm; the leader watches their tiles on
the map turn "confirmed" and the count go up; a leader can neither see nor use "issue".
Every page is saved as a screenshot under ``test-artifacts/browser/``.
"""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from pypdf import PdfReader

from dispatch import clock
from dispatch.clock import VN
from tests.fixtures.browser import (
    PHONE,
    LiveServer,
    RunningClock,
    confirmation_link,
    sign_in_page,
)
from tests.fixtures.smtp import offices_2021

pytestmark = pytest.mark.slow

SUBJECT = "thử nghiệm quy trình ban hành trên trình duyệt"
APPENDIX_TITLE = "Danh sách đầu mối kỹ thuật tại địa phương"
APPENDIX_BODY = (
    "| STT | Đơn vị | Đầu mối |\n"
    "|---|---|---|\n"
    "| 1 | Sở Thông tin và Truyền thông | Phòng Công nghệ thông tin |\n"
    "\n"
    "Đề nghị Quý Sở cập nhật danh sách khi có thay đổi./.\n"
)
BODY = (
    "Thực hiện chỉ đạo của Bộ Thông tin và Truyền thông, Cục Tin học hoá đề nghị Quý Sở "
    "rà soát đầu mối kỹ thuật theo Phụ lục kèm theo.\n\n"
    "Trân trọng./."
)
EDIT_URL = re.compile(r"/dispatches/(\d+)/edit")
DISPATCH_URL = re.compile(r"/dispatches/(\d+)$")


def offices_by_email() -> dict[str, dict[str, str]]:
    """The shipped directory's 63 offices of 2021 keyed by e-mail address."""
    return {row["email"].lower(): row for row in offices_2021()}


def fits_width(page) -> bool:
    """No horizontal scrolling: the page is no wider than the window."""
    return page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth + 1"
    )  # fmt: skip


def count_value(page, key: str) -> int:
    """A number of the leader page's summary (``count-<key>``)."""
    return int(page.locator(f".count-{key} .count-value").inner_text().strip())


def tile_status(page, code: str) -> str:
    """The status class of a province's tile on the map (``status-…``)."""
    classes = page.locator(f'svg.tile-map g.tile[data-code="{code}"]').get_attribute("class")
    found = [c for c in (classes or "").split() if c.startswith("status-")]
    assert len(found) == 1, classes
    return found[0].removeprefix("status-")


def compose_and_issue(page, live: LiveServer, screenshot) -> int:
    """Steps 1-2 through the clerk's pages; returns the issued dispatch's id."""
    sign_in_page(page, live, live.clerk[0])
    screenshot(page, "02-clerk-home")
    page.get_by_role("link", name="Soạn công văn mới").click()
    page.wait_for_url(live("/dispatches/new"))

    page.fill("#f-subject", SUBJECT)
    page.fill("#f-addressees", "Các Sở Thông tin và Truyền thông")
    page.fill("#f-body", BODY)
    page.fill("#f-signer_name", "Nguyễn Văn An")
    page.fill("#f-appendix-0-title", APPENDIX_TITLE)
    page.fill("#f-appendix-0-body", APPENDIX_BODY)
    # The first autosave creates the draft and turns this page into its editor.
    page.wait_for_url(EDIT_URL)
    page.locator("#autosave-status", has_text="Đã tự động lưu").wait_for()
    dispatch_id = int(EDIT_URL.search(page.url).group(1))
    assert page.locator('input[name="recipient"]:checked').count() == 63
    screenshot(page, "03-compose-filled")

    # "Xem trước" saves the form and comes back to the editor, whose preview is the PDF.
    page.locator('button[name="action"][value="preview"]').click()
    page.wait_for_url(EDIT_URL)
    assert page.locator(".error-summary").count() == 0, page.locator(".error-summary").inner_text()
    # Everything typed reached the server: the page offers no browser copy to restore.
    assert page.locator("#restore-banner").is_hidden()
    preview_src = page.locator("#preview-frame").get_attribute("src")
    assert preview_src == f"/dispatches/{dispatch_id}/preview.pdf"
    preview = page.request.get(live(preview_src))
    assert preview.status == 200
    assert preview.headers["content-type"] == "application/pdf"
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(preview.body())).pages)
    assert "Phụ lục" in text
    assert "thử nghiệm quy trình ban hành" in " ".join(text.split())
    screenshot(page, "04-compose-saved-with-preview")

    # The confirmation step, then issuing.
    page.locator('button[name="action"][value="issue"]').first.click()
    page.wait_for_url(live(f"/dispatches/{dispatch_id}/issue"))
    assert "63 cơ quan" in page.inner_text("main")
    expected = page.locator(".expected-number").inner_text()
    assert re.search(r"Số dự kiến: \d+/THH-VP", expected), expected
    # The placeholder addresses: a count, the list folded until asked for, a tick of their own.
    names = page.locator("details.placeholder-list li")
    assert names.count() == 63 and not names.first.is_visible()
    page.get_by_text("Xem danh sách 63 cơ quan").click()
    assert names.first.is_visible()
    screenshot(page, "05-issue-confirmation")
    page.get_by_label(re.compile("nơi nhận đang dùng địa chỉ tạm và vẫn ban hành")).check()
    page.get_by_role("button", name=re.compile(r"^Ban hành số")).click()
    page.wait_for_url(live(f"/dispatches/{dispatch_id}"))
    notice = page.locator(".flashes").inner_text()
    assert "Đã ban hành công văn số" in notice
    assert "63 thư đã được xếp hàng gửi" in notice
    screenshot(page, "06-dispatch-issued")

    # Step 3: "Gửi ngay" sends the queued letters to the SMTP sink.
    page.get_by_role("button", name="Gửi ngay").click()
    page.wait_for_url(live(f"/dispatches/{dispatch_id}"))
    assert "Gửi ngay: đã gửi 63 thư." in page.locator(".flashes").inner_text()
    assert page.locator('[data-count="sent"]').inner_text().strip() == "63"
    screenshot(page, "07-dispatch-sent")
    return dispatch_id


def confirm_on_phone(context, link: str, screenshot, name: str, person: str) -> None:
    """Open the e-mailed link on a phone-sized page and confirm receipt."""
    page = context.new_page()
    response = page.goto(link)
    assert response is not None and response.status == 200
    assert "Xác nhận đã nhận công văn" in page.inner_text("body")
    assert fits_width(page), "the province page scrolls sideways on a phone"
    screenshot(page, f"{name}-open")
    page.fill("#name", person)
    page.fill("#position", "Chánh Văn phòng Sở")
    page.get_by_role("button", name="Xác nhận đã nhận").click()
    page.locator("#bien-nhan").wait_for()
    body = page.inner_text("body")
    assert "Biên nhận xác nhận đã nhận công văn" in body
    assert person in body
    assert fits_width(page)
    screenshot(page, f"{name}-confirmed")


def test_clerk_issues_provinces_confirm_and_leader_watches_the_map(
    live_server: LiveServer, browser_context, screenshot, monkeypatch
):
    live = live_server
    clerk = browser_context().new_page()
    clerk.goto(live("/login"))
    screenshot(clerk, "01-login")
    dispatch_id = compose_and_issue(clerk, live, screenshot)

    # The sink received one e-mail per office, each with its own link back to the live server.
    messages = live.wait_for_messages(63)
    assert len(messages) == 63
    offices = offices_by_email()
    by_code = {}
    for message in messages:
        assert "thử nghiệm quy trình ban hành" in str(message["Subject"])
        address = message["To"].addresses[0].addr_spec.lower()
        by_code[offices[address]["code"]] = confirmation_link(message)
    assert len(by_code) == 63
    assert len(set(by_code.values())) == 63
    assert all(link.startswith(live.url + "/r/") for link in by_code.values())

    # The leader's page before any confirmation.
    leader = browser_context().new_page()
    sign_in_page(leader, live, live.leader[0])
    map_url = live(f"/lanh-dao/cong-van/{dispatch_id}")
    leader.goto(map_url)
    assert count_value(leader, "total") == 63
    assert count_value(leader, "acknowledged") == 0
    first, second = "96", "11"  # Cà Mau, Điện Biên
    assert tile_status(leader, first) != "confirmed"
    assert tile_status(leader, second) != "confirmed"
    screenshot(leader, "10-leader-map-before")

    # Step 4: Cà Mau on a phone; Điện Biên on a phone with JavaScript off.
    confirm_on_phone(
        browser_context(**PHONE), by_code[first], screenshot, "11-province-phone", "Lê Thị Hồng"
    )
    leader.reload()
    assert tile_status(leader, first) == "confirmed"
    assert count_value(leader, "acknowledged") == 1
    screenshot(leader, "12-leader-map-one-confirmed")

    confirm_on_phone(
        browser_context(**PHONE, java_script_enabled=False),
        by_code[second],
        screenshot,
        "13-province-phone-no-js",
        "Phạm Văn Đức",
    )
    leader.reload()
    assert tile_status(leader, first) == "confirmed"
    assert tile_status(leader, second) == "confirmed"
    assert count_value(leader, "acknowledged") == 2
    screenshot(leader, "14-leader-map-two-confirmed")

    # On a phone the map fits the screen and every tile is named without hovering: the key
    # beside it gives each tile's label with the province's full name, and both archipelagos.
    leader_phone = browser_context(**PHONE).new_page()
    sign_in_page(leader_phone, live, live.leader[0])
    leader_phone.goto(map_url)
    assert fits_width(leader_phone), "the leader's page scrolls sideways on a phone"
    key = leader_phone.locator("ul.map-key li")
    assert key.count() == 63
    assert all(item.is_visible() for item in key.all())
    key_text = leader_phone.inner_text("ul.map-key")
    assert "Bà Rịa - Vũng Tàu" in key_text or "Bà Rịa-Vũng Tàu" in key_text
    assert "Hoàng Sa" in leader_phone.inner_text(".map-card")
    assert "Trường Sa" in leader_phone.inner_text(".map-card")
    screenshot(leader_phone, "14b-leader-map-phone")

    # The leader reads the clerk's status page too, without its "Gửi ngay" button.
    leader.goto(live(f"/dispatches/{dispatch_id}"))
    assert leader.locator("[data-count-confirmed]").inner_text().strip() == "đã xác nhận 2/63"
    assert leader.get_by_role("button", name="Gửi ngay").count() == 0
    screenshot(leader, "16-leader-dispatch")

    # The clerk's status page agrees.
    clerk.goto(live(f"/dispatches/{dispatch_id}"))
    assert clerk.locator("[data-count-confirmed]").inner_text().strip() == "đã xác nhận 2/63"
    screenshot(clerk, "15-dispatch-two-confirmed")

    # Five years on (December 2026: 34 provinces, each Sở TTTT merged into its Sở Khoa học và
    # Công nghệ), the clerk chases the 61 late offices with a follow-up letter (công văn đôn đốc)
    # that cites and carries the original. It goes to whoever answers for them today, each once:
    # the 34 provinces but Điện Biên, which confirmed and was not merged (Cà Mau confirmed, but
    # Bạc Liêu, merged into it, did not). The leader sees it, and its progress, on the original.
    monkeypatch.setattr(clock, "now", RunningClock(dt.datetime(2026, 12, 7, 9, 0, tzinfo=VN)))
    # Years later both sessions have long expired: each signs in again.
    sign_in_page(clerk, live, live.clerk[0])
    sign_in_page(leader, live, live.leader[0])
    clerk.goto(live(f"/dispatches/{dispatch_id}"))
    assert "61 nơi nhận chưa xác nhận" in clerk.inner_text("main")
    clerk.get_by_role("button", name="Soạn công văn đôn đốc").click()
    clerk.wait_for_url(EDIT_URL)
    follow_up_id = int(EDIT_URL.search(clerk.url).group(1))
    assert "Đã tạo bản nháp công văn đôn đốc gửi 33 cơ quan" in clerk.inner_text(".flashes")
    assert clerk.locator('input[name="recipient"]:checked').count() == 33
    screenshot(clerk, "17-follow-up-draft")
    leader.goto(map_url)
    entry = leader.locator(f'[data-follow-up-id="{follow_up_id}"]')
    assert "Dự thảo công văn đôn đốc" in entry.inner_text()
    assert "đã xác nhận 0/33" in entry.inner_text()
    screenshot(leader, "18-leader-sees-the-follow-up")


def test_a_leader_cannot_issue(live_server: LiveServer, browser_context, screenshot):
    live = live_server
    draft = live.seed_draft_id
    assert draft is not None, "the seed letter (official_letters/pc-covid-2021) is missing"
    page = browser_context().new_page()
    sign_in_page(page, live, live.leader[0])
    screenshot(page, "20-leader-home")
    assert page.get_by_role("link", name="Soạn công văn mới").count() == 0

    # The draft's page offers no way to issue it.
    page.goto(live(f"/dispatches/{draft}"))
    main = page.locator("main")
    assert main.get_by_role("button", name=re.compile("Ban hành")).count() == 0
    assert main.get_by_role("link", name=re.compile("Ban hành")).count() == 0
    assert page.locator(f'a[href$="/dispatches/{draft}/issue"]').count() == 0
    screenshot(page, "21-leader-draft")

    # Going there anyway, or to the composer, or posting the form with a valid CSRF token: 403.
    response = page.goto(live("/dispatches/new"))
    assert response is not None and response.status == 403
    response = page.goto(live(f"/dispatches/{draft}/issue"))
    assert response is not None and response.status == 403
    assert page.locator("button", has_text="Ban hành").count() == 0
    screenshot(page, "22-leader-issue-forbidden")
    page.goto(live("/"))
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    posted = page.request.post(
        live(f"/dispatches/{draft}/issue"), form={"csrf_token": token}, max_redirects=0
    )
    assert posted.status == 403

    # The draft is still a draft (nothing issued, no number).
    page.goto(live(f"/dispatches/{draft}"))
    assert page.locator("h1").inner_text().strip() == "Dự thảo công văn"


def test_clerk_imports_a_word_letter_and_issues_it(
    live_server: LiveServer, browser_context, screenshot, tmp_path
):
    """Issue 14: a letter written in Word becomes a draft, its report shown, and is issued."""
    from dispatch.letters.docx import render_docx
    from dispatch.letters.source import load_letter
    from tests.letter_samples import SEED_FOLDER

    live = live_server
    # The seed letter of November 2021 (the live app's month) as a .docx.
    letter = load_letter(SEED_FOLDER)
    path = tmp_path / "Công văn từ Word.docx"
    path.write_bytes(render_docx(letter))

    page = browser_context().new_page()
    sign_in_page(page, live, live.clerk[0])
    page.goto(live("/dispatches/new"))
    page.select_option("#f-group", "so-tttt-2021")  # the offices of that month
    page.set_input_files("#f-word_file", str(path))
    page.get_by_role("button", name="Đọc tệp").click()
    page.wait_for_url(re.compile(r"/dispatches/\d+/edit\?tu-word=1"))
    report = page.locator("table.import-report").inner_text()
    assert "Bộ Thông tin và Truyền thông" in report and "Chưa nhận ra" not in report
    assert page.input_value("#f-subject") == letter.subject
    summary = page.locator(".error-summary")
    assert summary.count() == 0, summary.inner_text()
    dispatch_id = int(EDIT_URL.search(page.url).group(1))
    screenshot(page, "30-word-letter-imported")

    # Saved as it was read, then issued through the confirmation page.
    page.locator('button[name="action"][value="save"]').first.click()
    page.wait_for_url(EDIT_URL)
    assert "Đã lưu bản nháp lúc" in page.locator(".flashes").inner_text()
    assert page.locator(".error-summary").count() == 0
    page.locator('button[name="action"][value="issue"]').first.click()
    page.wait_for_url(live(f"/dispatches/{dispatch_id}/issue"))
    assert page.locator(".error-summary").count() == 0
    assert "V/v " + letter.subject in page.inner_text("main")
    screenshot(page, "31-word-letter-issue-confirmation")
    for confirmation in ("#confirm-date", "#confirm-placeholders"):
        if page.locator(confirmation).count():
            page.check(confirmation)
    page.get_by_role("button", name=re.compile(r"^Ban hành số")).click()
    page.wait_for_url(live(f"/dispatches/{dispatch_id}"))
    assert "Đã ban hành công văn số" in page.locator(".flashes").inner_text()
    assert page.locator("h1").inner_text().strip() != "Dự thảo công văn"
    screenshot(page, "32-word-letter-issued")

    # The Word file it came from is archived with the dispatch.
    from dispatch.drafting import word_import

    with live.app.app_context():
        archived = word_import.archived_original(dispatch_id)
        assert archived is not None and archived.read_bytes() == path.read_bytes()
