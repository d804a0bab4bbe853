"""Every page at a desktop width (1366 px) and on a phone (390 × 844), in a real headless Chromium:

* no page scrolls sideways on the phone (``document.documentElement.scrollWidth <= 390``);
* axe-core (``node_modules/axe-core``, injected by Playwright) finds no serious or critical
  violation at either width;
* the Nu Html Checker (``node_modules/vnu-jar``, run once on Java) finds no error in any page's
  HTML nor in the letter e-mail's HTML body;
* Back after a refused confirmation does not land on Chromium's "resend the form?" page.

Each page is saved as ``<name>-<width>.png`` under ``test-artifacts/pages/`` (or under
``DISPATCH_PAGES_DIR``: ``make preview`` points it at ``preview/``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dispatch import amendments
from dispatch.accounts import users
from dispatch.archive import read_archived
from dispatch.extensions import db
from dispatch.letters.docx import render_docx
from dispatch.letters.source import load_letter
from dispatch.models import Dispatch, Document, Organisation, Role
from tests.fixtures.browser import PHONE, SEED_AT, LiveServer, confirmation_link, sign_in_page
from tests.fixtures.checkers import AXE, VNU, require, vnu_errors
from tests.letter_samples import SEED_FOLDER

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ADMIN = ("quantri.trang@thh.example", "Lê Văn Quản Trị")
WIDE = {"viewport": {"width": 1366, "height": 900}, "locale": "vi-VN"}
SERIOUS = ("serious", "critical")

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations
    .filter((v) => ["serious", "critical"].includes(v.impact))
    .map((v) => ({id: v.id, impact: v.impact,
                  nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" "))}));
}"""


def _tools() -> None:
    require(AXE, VNU)


def _pages(
    live: LiveServer,
    dispatch_id: int,
    draft_id: int,
    recipient_id: int,
    org_id: int,
    imported: str,
):
    """(name, path, who) for every page a person can see; ``who`` is None when signed out.
    (The verification result, a POST, is checked after these, in ``_verify_result``.)"""
    return [
        ("login", "/login", None),
        ("not-found", "/khong-co-trang-nay", None),
        ("province-letter", live.ids["link"].removeprefix(live.url), None),
        ("province-unknown-link", "/r/khong-co-lien-ket-nay", None),
        ("verify-upload", "/xac-minh", None),
        ("verify-record", f"/xac-minh/{live.ids['code']}", None),
        ("verify-unknown", "/xac-minh/khong-co-ma-nay", None),
        ("clerk-list", "/", "admin"),
        ("clerk-list-drafts", "/?status=draft", "admin"),
        ("compose-new", "/dispatches/new", "admin"),
        ("compose-edit", f"/dispatches/{draft_id}/edit", "admin"),
        ("compose-word-imported", imported, "admin"),
        ("preview-not-ready", f"/dispatches/{draft_id}/preview.pdf", "admin"),
        ("delete-draft", f"/dispatches/{draft_id}/delete", "admin"),
        ("draft", f"/dispatches/{draft_id}", "admin"),
        ("issue-confirm", f"/dispatches/{draft_id}/issue", "admin"),
        ("dispatch", f"/dispatches/{dispatch_id}", "admin"),
        ("recipient", f"/dispatches/{dispatch_id}/recipients/{recipient_id}", "admin"),
        ("directory", "/directory", "admin"),
        ("office-edit", f"/directory/{org_id}/edit", "admin"),
        ("directory-import", "/directory/import", "admin"),
        ("register", "/register", "admin"),
        ("admin-users", "/admin/users", "admin"),
        ("admin-inbound", "/admin/inbound", "admin"),
        ("password", "/account/password", "admin"),
        ("staff-not-found", "/dispatches/999999", "admin"),
        ("leader-list", "/lanh-dao/", "leader"),
        ("leader-dispatch", f"/lanh-dao/cong-van/{dispatch_id}", "leader"),
        ("draft-submitted", f"/dispatches/{live.ids['submitted']}", "admin"),
        ("leader-approvals", "/lanh-dao/trinh-ky/", "leader"),
        ("leader-approval", f"/lanh-dao/trinh-ky/{live.ids['approval']}", "leader"),
        ("amendment-confirm", f"/amendments/{live.ids['amendment']}/approve", "leader"),
    ]


def _issue_and_send(page, live: LiveServer) -> int:
    """Issue the seed draft to its 63 offices and send it now; returns its id."""
    draft = live.seed_draft_id
    assert draft is not None
    page.goto(live(f"/dispatches/{draft}/issue"))
    page.get_by_label(re.compile("nơi nhận đang dùng địa chỉ tạm và vẫn ban hành")).check()
    page.locator("main button[type=submit]", has_text="Ban hành số").click()
    page.wait_for_url(live(f"/dispatches/{draft}"))
    page.get_by_role("button", name="Gửi ngay").click()
    page.wait_for_url(live(f"/dispatches/{draft}"))
    return draft


def _verify_result(
    page, live: LiveServer, pdf: Path, width: int, shots: Path, html_dir: Path
) -> list[str]:
    """Upload the issued PDF on /xac-minh and check the result page as the others."""
    page.goto(live("/xac-minh"))
    page.set_input_files("#file", str(pdf))
    page.get_by_role("button", name="Xác minh", exact=True).click()
    page.wait_for_load_state()
    problems = []
    if "Kết quả xác minh" not in page.inner_text("h1"):
        problems.append(f"verify-result at {width} px: no result ({page.inner_text('main')[:200]})")
    if width == 1366:
        (html_dir / "verify-result.html").write_text(page.content(), encoding="utf-8")
    wide = page.evaluate("document.documentElement.scrollWidth")
    if width == 390 and wide > 390:
        problems.append(f"verify-result at 390 px is {wide} px wide")
    page.add_script_tag(path=str(AXE))
    for violation in page.evaluate(AXE_RUN):
        problems.append(f"verify-result at {width} px: axe {violation}")
    page.screenshot(path=str(shots / f"verify-result-{width}.png"), full_page=True)
    return problems


def _submit_for_signature(live: LiveServer, pki) -> None:
    """The live leader given the demo key, and a second copy of the seed letter submitted to
    them: the clerk's page of a submitted draft, the leader's list and submission page."""
    from dispatch.cli.seed import SEED_LETTER
    from dispatch.config import PROJECT_ROOT
    from dispatch.directory import offices
    from dispatch.drafting import approval, drafts
    from dispatch.signing import keys
    from tests.fixtures.pki import PASSWORD

    # In the live app: the submitted PDF is archived under its data folder, where its pages
    # read it back.
    with live.app.app_context():
        leader = users.get_user(live.leader[0])
        keys.set_signing_key(
            leader, str(pki.leader.p12), password_env="PAGES_LEADER_KEY_PASSWORD",
            environ={"PAGES_LEADER_KEY_PASSWORD": PASSWORD}, image=None, actor="system",
            at=SEED_AT,
        )  # fmt: skip
        clerk = users.get_user(live.clerk[0])
        draft = drafts.create_draft(
            PROJECT_ROOT / SEED_LETTER,
            group_code=offices.DEFAULT_GROUP_CODE,
            actor=clerk,
            at=SEED_AT,
        )
        db.session.flush()
        submitted = approval.submit(draft.id, leader_email=leader.email, actor=clerk, at=SEED_AT)
        db.session.commit()
        live.ids["submitted"], live.ids["approval"] = draft.id, submitted.id


def test_every_page_fits_a_phone_and_passes_axe_and_the_html_checker(
    live_server: LiveServer, browser_context, artifacts_dir: Path, tmp_path: Path, pki
):
    _tools()
    live = live_server
    users.create_user(
        ADMIN[0], role=Role.ADMIN, password=live.password, at=SEED_AT, actor="system",
        name=ADMIN[1],
    )  # fmt: skip
    db.session.commit()
    _submit_for_signature(live, pki)
    shots = Path(os.environ.get("DISPATCH_PAGES_DIR") or artifacts_dir / "pages")
    shots.mkdir(parents=True, exist_ok=True)
    html_dir = tmp_path / "html"
    html_dir.mkdir()

    sessions: dict[tuple[str, int], Any] = {}

    def page_for(who: str | None, width: int) -> Any:
        key = (who or "anonymous", width)
        if key not in sessions:
            options = WIDE if width == 1366 else PHONE
            context = browser_context(**options, bypass_csp=True)
            page = context.new_page()
            if who == "admin":
                sign_in_page(page, live, ADMIN[0])
            elif who == "leader":
                sign_in_page(page, live, live.leader[0])
            sessions[key] = page
        return sessions[key]

    dispatch_id = _issue_and_send(page_for("admin", 1366), live)
    messages = live.wait_for_messages(63)
    live.ids["link"] = confirmation_link(messages[0])
    email_html = messages[0].get_body(preferencelist=("html",))
    assert email_html is not None
    (html_dir / "email-letter.html").write_text(email_html.get_content(), encoding="utf-8")
    # A second draft, for the compose and issue pages.
    admin = page_for("admin", 1366)
    admin.goto(live("/dispatches/new"))
    admin.fill("#f-subject", "dự thảo để xem trang soạn thảo")
    admin.wait_for_url("**/edit")
    draft_id = int(admin.url.rsplit("/", 2)[-2])
    # A letter read from Word: the composer with what was recognised.
    word = tmp_path / "Công văn từ Word.docx"
    word.write_bytes(render_docx(load_letter(SEED_FOLDER)))
    admin.goto(live("/dispatches/new"))
    admin.set_input_files("#f-word_file", str(word))
    admin.get_by_role("button", name="Đọc tệp").click()
    admin.wait_for_url(re.compile(r"/dispatches/\d+/edit\?tu-word=1"))
    imported = admin.url.removeprefix(live.url)
    with live.app.app_context():
        org_id = db.session.query(Organisation.id).order_by(Organisation.id).first()[0]
    recipient_id = int(
        admin.goto(live(f"/dispatches/{dispatch_id}"))
        and admin.locator("a[href*='/recipients/']").first.get_attribute("href").rsplit("/", 1)[1]
    )

    with live.app.app_context():
        issued = db.session.get(Dispatch, dispatch_id)
        live.ids["code"] = issued.verification_code
        # A recall asked for: the leader's confirmation page before approving it.
        recall = amendments.request_recall(
            dispatch_id, reason="Nhầm số liệu.", actor=users.get_user(live.clerk[0]), at=SEED_AT
        )
        db.session.commit()
        live.ids["amendment"] = recall.id
        pdf = db.session.execute(
            select(Document).where(Document.dispatch_id == dispatch_id, Document.kind == "pdf")
        ).scalar_one()
        pdf_file = tmp_path / pdf.filename
        pdf_file.write_bytes(read_archived(pdf.path, pdf.sha256))

    problems: list[str] = []
    for width in (1366, 390):
        for name, path, who in _pages(live, dispatch_id, draft_id, recipient_id, org_id, imported):
            page = page_for(who, width)
            response = page.goto(live(path))
            assert response is not None, path
            if width == 1366:
                (html_dir / f"{name}.html").write_bytes(response.body())
            wide = page.evaluate("document.documentElement.scrollWidth")
            if width == 390 and wide > 390:
                problems.append(f"{name} at 390 px is {wide} px wide")
            page.add_script_tag(path=str(AXE))
            for violation in page.evaluate(AXE_RUN):
                problems.append(f"{name} at {width} px: axe {violation}")
            page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
        problems += _verify_result(page_for(None, width), live, pdf_file, width, shots, html_dir)

    problems += [f"vnu: {error}" for error in vnu_errors(sorted(html_dir.glob("*.html")))]
    (artifacts_dir / "pages-problems.txt").write_text("\n".join(problems), encoding="utf-8")
    assert not problems, "\n".join(problems)


def test_back_after_a_refused_confirmation_is_the_form_again(
    live_server: LiveServer, browser_context
):
    """A refused POST redirects to the page (303): Back and reload never resend the form."""
    live = live_server
    page = browser_context(**PHONE).new_page()
    sign_in_page(page, live, live.clerk[0])
    _issue_and_send(page, live)
    link = confirmation_link(live.wait_for_messages(1)[0])
    page.goto(live("/"))
    province = browser_context(**PHONE).new_page()
    province.goto(link)
    province.get_by_role("button", name="Xác nhận đã nhận").click()
    province.locator(".error-summary").wait_for()
    assert province.url.split("#")[0] == link
    province.fill("#position", "Chánh Văn phòng")
    province.get_by_role("button", name="Xác nhận đã nhận").click()
    province.locator(".error-summary").wait_for()
    assert province.input_value("#position") == "Chánh Văn phòng"
    province.go_back()
    body = province.content()
    assert "ERR_CACHE_MISS" not in body
    assert "Xác nhận đã nhận công văn" in province.inner_text("body")
    province.reload()
    assert "ERR_CACHE_MISS" not in province.content()
