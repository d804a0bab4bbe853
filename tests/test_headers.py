"""Security headers on every response: every route of every role (from ``app.url_map``, so a
route added later is checked too), error pages and static files included; HSTS in production;
and no Content Security Policy violation reported by Chromium on the main pages."""

from __future__ import annotations

import pytest

from dispatch import create_app
from dispatch.models import Role
from tests.fixtures.routes import is_api, route_urls
from tests.fixtures.web import csrf_token_from

CHANGES = ("POST", "PUT", "PATCH", "DELETE")
# The composer shows its draft's PDF preview in a frame of its own page.
# (and the leader's submission page the letter to sign).
FRAMED_BY_THE_SITE = {"clerks.preview", "approvals.document"}


def assert_secure(response, where: str, *, endpoint: str | None = None) -> None:
    headers = response.headers
    policy = headers.get("Content-Security-Policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives.get("default-src") == ["'self'"], (where, policy)
    assert directives.get("object-src") == ["'none'"], (where, policy)
    assert directives.get("base-uri") == ["'none'"], (where, policy)
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, (where, policy)
    for kind in ("script-src", "style-src"):
        assert directives.get(kind, ["'self'"]) == ["'self'"], (where, policy)
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert "Referrer-Policy" in headers, where
    if endpoint in FRAMED_BY_THE_SITE:
        assert directives.get("frame-ancestors") == ["'self'"], (where, policy)
        assert headers.get("X-Frame-Options") == "SAMEORIGIN", where
    else:
        assert directives.get("frame-ancestors") == ["'none'"], (where, policy)
        assert headers.get("X-Frame-Options") == "DENY", where
    if endpoint == "static":
        assert "no-store" not in headers.get("Cache-Control", ""), where  # cacheable is fine
    else:
        assert headers.get("Cache-Control") == "no-store", (where, headers.get("Cache-Control"))
    assert "Strict-Transport-Security" not in headers, where  # development


def test_every_route_of_every_role_sends_the_security_headers(
    app, route_arguments, role_clients, api_headers
):
    anonymous = app.test_client()
    browsers = {**{role.value: client for role, client in role_clients.items()}, "": anonymous}
    tokens = {role.value: headers for role, headers in api_headers.items()}
    tokens[""] = {}
    checked = set()
    for method in ("GET", *CHANGES):
        for rule, url in route_urls(app, route_arguments, method):
            for who, client in browsers.items():
                if is_api(rule):
                    client, headers, data = anonymous, tokens[who], None
                else:
                    headers = {}
                    # A form post carries the session's CSRF token: it reaches the view.
                    data = (
                        {"csrf_token": csrf_token_from(client.get("/login").get_data(True))}
                        if method != "GET" and who == ""
                        else None
                    )
                response = client.open(url, method=method, headers=headers, data=data)
                response.close()
                assert response.status_code < 500, (method, url, who, response.status_code)
                where = f"{method} {url} as {who or 'anonymous'}"
                assert_secure(response, where, endpoint=rule.endpoint)
                checked.add(rule.endpoint)
    every = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert checked == every


def test_error_pages_and_refusals_send_them_too(client, clerk_client, db_app):
    for response, where in (
        (client.get("/khong-co-trang-nay"), "404 page"),
        (client.get("/api/dispatches"), "API 401"),
        (client.post("/logout"), "CSRF 400"),
        (clerk_client.get("/?page=0"), "bad page number"),
        (clerk_client.get("/directory?q=%00"), "NUL byte"),
        (client.get("/r/khong-co"), "unknown link"),
        (client.get("/healthz"), "health check"),
    ):
        assert response.status_code != 500, where
        assert_secure(response, where)


@pytest.mark.parametrize("env", ["production", "development"])
def test_hsts_only_in_production(app, env):
    keys = ("SQLALCHEMY_DATABASE_URI", "SECRET_KEY", "DISPATCH_AUDIT_KEY", "DISPATCH_DATA_DIR")
    config = {key: app.config[key] for key in keys}
    made = create_app({**config, "TESTING": True, "DISPATCH_ENV": env})
    client = made.test_client()
    for path in ("/login", "/static/css/site.css", "/r/khong-co", "/api/openapi.json"):
        response = client.get(path)
        response.close()
        hsts = response.headers.get("Strict-Transport-Security")
        if env == "production":
            assert hsts == "max-age=31536000; includeSubDomains", path
        else:
            assert hsts is None, path


def test_the_letter_links_keep_their_stricter_set(issued, client):
    response = client.get(f"/r/{issued.tokens[0]}")
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Pragma"] == "no-cache"
    assert_secure(response, "letter page")
    staff = client.get("/login")
    assert staff.headers["Referrer-Policy"] == "same-origin"


def test_only_the_composers_preview_may_be_framed_and_only_by_the_site(
    role_clients, route_arguments
):
    clerk = role_clients[Role.CLERK]
    preview = clerk.get(f"/dispatches/{route_arguments.draft_id}/preview.pdf")
    assert preview.status_code == 200 and preview.mimetype == "application/pdf"
    assert_secure(preview, "preview", endpoint="clerks.preview")
    composer = clerk.get(f"/dispatches/{route_arguments.draft_id}/edit")
    assert 'id="preview-frame"' in composer.get_data(as_text=True)
    assert_secure(composer, "composer")


# --- In a real browser: no page breaks its own policy ---------------------------------------

# What Chromium logs when a policy refuses something: "Refused to apply inline style …",
# "Refused to execute inline script …", "Framing … violates …".
_VIOLATION_WORDS = ("Content Security Policy", "Refused to", "violates")
# Records the policy's own violation events (inline handlers, styles set by markup …) as well.
_WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


@pytest.mark.slow
def test_chromium_reports_no_policy_violation_on_the_main_pages(
    live_server, browser_context, letter_folder, screenshot
):
    from dispatch import issuing
    from dispatch.accounts import users
    from dispatch.directory import offices
    from dispatch.drafting import drafts
    from dispatch.extensions import db
    from dispatch.mail.links import token_for
    from dispatch.models import Dispatch
    from tests.fixtures.browser import LIVE_START, SEED_AT, sign_in_page

    live = live_server
    issued_id = live.seed_draft_id
    issuing.issue_dispatch(issued_id, actor=None, at=LIVE_START)
    draft = drafts.create_draft(
        letter_folder(subject="kiểm tra chính sách bảo mật nội dung"),
        group_code=offices.DEFAULT_GROUP_CODE,
        actor=None,
        at=SEED_AT,
    )
    admin = users.create_user(
        "quantri.trinhduyet@thh.example", role=Role.ADMIN, password=live.password,
        at=SEED_AT, actor="system", name="Quản trị",
    )  # fmt: skip
    db.session.commit()
    dispatch = db.session.get(Dispatch, issued_id)
    recipient = dispatch.recipients[0]
    token, recipient_id, org_id = token_for(recipient), recipient.id, recipient.organisation_id

    pages = {
        None: ["/login", "/khong-co-trang-nay", f"/r/{token}"],
        live.clerk[0]: [
            "/",
            "/dispatches/new",
            f"/dispatches/{draft.id}/edit",
            f"/dispatches/{issued_id}",
            f"/dispatches/{issued_id}/recipients/{recipient_id}",
            "/directory",
            "/register",
            "/account/password",
        ],
        live.leader[0]: ["/lanh-dao/", f"/lanh-dao/cong-van/{issued_id}"],
        admin.email: ["/admin/users", "/directory/import", f"/directory/{org_id}/edit"],
    }
    seen: list[str] = []
    for who, paths in pages.items():
        context = browser_context()
        context.add_init_script(_WATCH_VIOLATIONS)
        page = context.new_page()
        messages: list[str] = []
        page.on("console", lambda message, into=messages: into.append(message.text))
        page.on("pageerror", lambda error, into=messages: into.append(str(error)))
        if who is not None:
            sign_in_page(page, live, who)
        for path in paths:
            response = page.goto(live(path))
            assert response is not None and response.status in (200, 404), path
            assert "content-security-policy" in response.headers, path
            page.wait_for_load_state("networkidle")
            if path.endswith("/edit") and "dispatches" in path:
                # The composer at work: a change autosaves and reloads the framed preview.
                page.fill("[name=subject]", "kiểm tra chính sách bảo mật nội dung, sửa lần hai")
                page.wait_for_timeout(2500)
                page.wait_for_load_state("networkidle")
                assert any("preview.pdf" in frame.url for frame in page.frames), path
            if path.startswith("/lanh-dao/cong-van/"):
                page.locator("[data-sortable-table] thead a").first.click()  # sorted by script
                page.wait_for_load_state("networkidle")
            violations = page.evaluate("window.__violations || []")
            assert violations == [], (path, violations)
            seen.append(path)
        screenshot(page, f"csp-{(who or 'khach').split('@')[0]}")
        refused = [text for text in messages if any(w in text for w in _VIOLATION_WORDS)]
        assert refused == [], refused
    assert len(seen) == sum(len(paths) for paths in pages.values())
