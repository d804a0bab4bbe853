"""Sign-in, sign-out, throttling, role checks and the signed-in home page."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from dispatch.accounts import auth, users
from dispatch.accounts.auth import role_required
from dispatch.extensions import db
from dispatch.models import AuditEntry, LoginAttempt, Role, User
from tests.fixtures.reminders import build_issued_dispatch
from tests.fixtures.web import PASSWORD, csrf_token_from, sign_in

T0 = dt.datetime(2021, 11, 15, 1, 0, tzinfo=dt.UTC)


def audit_actions(action: str) -> list[AuditEntry]:
    return list(
        db.session.execute(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        ).scalars()
    )


def logout(client) -> object:
    page = client.get("/")
    return client.post("/logout", data={"csrf_token": csrf_token_from(page.get_data(as_text=True))})


# --- The form ------------------------------------------------------------------------------


@pytest.mark.nodb
def test_login_form_has_the_agreed_fields_and_vietnamese_labels(client):
    response = client.get("/login")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    for name in ("email", "password", "csrf_token"):
        assert f'name="{name}"' in html
    for label in ("Thư điện tử", "Mật khẩu", "Đăng nhập"):
        assert label in html
    assert '<html lang="vi">' in html


@pytest.mark.nodb
@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "http:/evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "evil.example",
        "/\tevil",
        "javascript:alert(1)",
        "",
        None,
    ],
)
def test_unsafe_next_targets_are_refused(target):
    assert not auth.is_safe_next(target)


@pytest.mark.nodb
@pytest.mark.parametrize("target", ["/", "/dispatches/12", "/dispatches/12?tab=nhan#a"])
def test_local_next_targets_are_accepted(target):
    assert auth.is_safe_next(target)


# --- Signing in and out ---------------------------------------------------------------------


def test_sign_in_then_home_then_sign_out(client, clerk_user):
    response = sign_in(client, clerk_user.email)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    html = home.get_data(as_text=True)
    assert clerk_user.name in html and "Đăng xuất" in html
    assert [e.actor for e in audit_actions("user.login")] == [clerk_user.email]

    # Signing out is a POST: a GET (a link, an <img> elsewhere) cannot sign anyone out.
    assert client.get("/logout").status_code == 405
    response = logout(client)
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert "Bạn đã đăng xuất" in client.get("/login").get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert [e.actor for e in audit_actions("user.logout")] == [clerk_user.email]


def test_sign_in_accepts_any_case_and_surrounding_spaces(client, clerk_user):
    assert sign_in(client, f"  {clerk_user.email.upper()} ").status_code == 302


def test_wrong_password_and_unknown_email_get_the_same_answer(client, clerk_user):
    wrong = sign_in(client, clerk_user.email, "not-the-password")
    unknown = sign_in(client, "nobody@thh.example", PASSWORD)
    for response in (wrong, unknown):
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        assert auth.BAD_CREDENTIALS_MESSAGE in html
    assert client.get("/").status_code == 302  # still signed out
    failed = audit_actions("user.login_failed")
    assert [(e.actor, e.details["reason"]) for e in failed] == [
        (clerk_user.email, "bad_password"),
        ("nobody@thh.example", "unknown_user"),
    ]


def test_missing_csrf_token_is_refused_with_400(client, clerk_user):
    response = client.post("/login", data={"email": clerk_user.email, "password": PASSWORD})
    assert response.status_code == 400
    assert "tải lại trang" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert audit_actions("user.login") == []


def test_logout_without_csrf_token_is_refused(clerk_client):
    assert clerk_client.post("/logout").status_code == 400
    assert clerk_client.get("/").status_code == 200  # still signed in


def test_inactive_user_cannot_sign_in_and_is_signed_out(client, app, clerk_user):
    other = app.test_client()
    assert sign_in(other, clerk_user.email).status_code == 302
    clerk_user.active = False
    db.session.commit()
    assert other.get("/").status_code == 302  # the session no longer signs anyone in
    response = sign_in(client, clerk_user.email)
    assert auth.BAD_CREDENTIALS_MESSAGE in response.get_data(as_text=True)
    assert audit_actions("user.login_failed")[-1].details["reason"] == "inactive"


def test_session_is_renewed_on_sign_in(client, clerk_user):
    with client.session_transaction() as session:
        session["planted"] = "by-an-attacker"
    assert sign_in(client, clerk_user.email).status_code == 302
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session["_user_id"] == str(clerk_user.id)


def test_old_password_hash_is_upgraded_on_sign_in(client, make_user):
    user = make_user("cu@thh.example", Role.CLERK)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    user.password_hash = weak.hash(PASSWORD)
    db.session.commit()
    assert users.password_needs_rehash(user.password_hash)
    assert sign_in(client, user.email).status_code == 302
    db.session.refresh(user)
    assert not users.password_needs_rehash(user.password_hash)
    assert users.verify_password(user.password_hash, PASSWORD)


# --- next ---------------------------------------------------------------------------------


def test_signed_out_home_redirects_to_login_and_back(client, clerk_user):
    response = client.get("/")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == ["/"]
    assert "Vui lòng đăng nhập" in client.get("/login").get_data(as_text=True)

    response = sign_in(client, clerk_user.email, next="/dispatches/7")
    assert response.headers["Location"] == "/dispatches/7"


@pytest.mark.parametrize(
    "target", ["//evil.example/", "https://evil.example/x", "/\\evil.example", "http:evil"]
)
def test_no_open_redirect_after_sign_in(client, clerk_user, target):
    response = sign_in(client, clerk_user.email, next=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


# --- Throttling ---------------------------------------------------------------------------


def test_five_failures_for_an_email_lock_it_with_429(client, clerk_user):
    for _ in range(auth.MAX_FAILURES):
        assert sign_in(client, clerk_user.email, "wrong-password").status_code == 200
    # Even the right password is refused now: the guesser must not learn it was right.
    response = sign_in(client, clerk_user.email, PASSWORD)
    assert response.status_code == 429
    assert "thử lại sau" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    assert client.get("/").status_code == 302
    throttled = audit_actions("user.login_throttled")
    assert [e.actor for e in throttled] == [clerk_user.email]
    assert len(audit_actions("user.login_failed")) == auth.MAX_FAILURES


def test_five_failures_from_one_address_lock_that_address(app, client, clerk_user):
    for n in range(auth.MAX_FAILURES):
        sign_in(client, f"guess{n}@thh.example", "wrong-password")
    assert sign_in(client, clerk_user.email, PASSWORD).status_code == 429
    # From another address the same account still signs in: its e-mail never failed.
    other = app.test_client()
    response = other.post(
        "/login",
        data={
            "email": clerk_user.email,
            "password": PASSWORD,
            "csrf_token": csrf_token_from(other.get("/login").get_data(as_text=True)),
        },
        environ_base={"REMOTE_ADDR": "192.0.2.10"},
    )
    assert response.status_code == 302


def test_throttle_lifts_after_the_window_and_success_clears_the_email(db_app, clerk_user):
    ip = "198.51.100.7"
    for minute in range(auth.MAX_FAILURES):
        result = auth.authenticate(
            clerk_user.email, "wrong", ip=ip, at=T0 + dt.timedelta(minutes=minute)
        )
        assert not result.ok
    db.session.commit()
    with pytest.raises(auth.LoginThrottled) as caught:
        auth.authenticate(
            clerk_user.email, PASSWORD, ip="203.0.113.1", at=T0 + dt.timedelta(minutes=5)
        )
    # The first failure (at T0) leaves the window at T0 + 15 min.
    assert caught.value.retry_after == dt.timedelta(minutes=10)
    assert caught.value.minutes == 10
    later = T0 + auth.WINDOW + dt.timedelta(seconds=1)
    assert auth.authenticate(clerk_user.email, PASSWORD, ip="203.0.113.1", at=later).ok
    db.session.commit()
    # The success wiped the e-mail's slate: four new failures do not lock it.
    for n in range(auth.MAX_FAILURES - 1):
        auth.authenticate(
            clerk_user.email, "wrong", ip="203.0.113.2", at=later + dt.timedelta(seconds=n + 1)
        )
    assert auth.authenticate(
        clerk_user.email, PASSWORD, ip="203.0.113.3", at=later + dt.timedelta(minutes=1)
    ).ok


def test_old_attempts_are_pruned(db_app, clerk_user):
    auth.authenticate(clerk_user.email, "wrong", ip="198.51.100.7", at=T0)
    auth.authenticate(clerk_user.email, PASSWORD, ip="198.51.100.7", at=T0 + dt.timedelta(days=2))
    db.session.commit()
    attempts = db.session.execute(select(LoginAttempt)).scalars().all()
    assert [(a.succeeded, a.at) for a in attempts] == [(True, T0 + dt.timedelta(days=2))]


# --- Roles --------------------------------------------------------------------------------

PUBLIC_ENDPOINTS = {"static", "health.healthz", "auth.login", "auth.logout"}
# Blueprints with their own guard: the API (bearer tokens) and the provinces' token links.
OWN_GUARD_BLUEPRINTS = {"api", "api-docs", "provinces"}


def _staff_rules(app):
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rpartition(".")[0]
        if rule.endpoint in PUBLIC_ENDPOINTS or blueprint in OWN_GUARD_BLUEPRINTS:
            continue
        yield rule


def _url(rule) -> str:
    return rule.build({arg: 1 for arg in rule.arguments})[1]


@pytest.mark.nodb
def test_every_signed_in_page_checks_the_role_on_the_server(app):
    rules = list(_staff_rules(app))
    assert any(rule.endpoint == "clerks.home" for rule in rules)
    for rule in rules:
        view = app.view_functions[rule.endpoint]
        assert getattr(view, "allowed_roles", None), f"{rule.rule} has no role_required"


def test_signed_out_visitors_are_sent_to_login_from_every_staff_page(app, client, db_app):
    for rule in _staff_rules(app):
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(_url(rule), method=method)
            if method == "GET":
                assert response.status_code == 302, rule.rule
                assert urlsplit(response.headers["Location"]).path == "/login"
            else:  # no CSRF token: refused before anything else
                assert response.status_code in (302, 400), rule.rule


def test_leaders_are_refused_every_change_route(app, role_clients):
    leader = role_clients[Role.LEADER]
    token = csrf_token_from(leader.get("/").get_data(as_text=True))
    for rule in _staff_rules(app):
        roles = app.view_functions[rule.endpoint].allowed_roles
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = leader.open(_url(rule), method=method, data={"csrf_token": token})
            if Role.LEADER in roles:
                assert response.status_code != 403, rule.rule
            else:
                assert response.status_code == 403, rule.rule
                assert "Không có quyền truy cập" in response.get_data(as_text=True)


def test_role_required_refuses_other_roles_with_a_vietnamese_page(app, role_users):
    @role_required(Role.CLERK, Role.ADMIN)
    def change() -> str:
        return "changed"

    app.add_url_rule("/_test/change", "test_change", change, methods=["POST"])
    results = {}
    for role, user in role_users.items():
        client = app.test_client()
        sign_in(client, user.email)
        token = csrf_token_from(client.get("/").get_data(as_text=True))
        response = client.post("/_test/change", data={"csrf_token": token})
        results[role] = response.status_code
        if response.status_code == 403:
            html = response.get_data(as_text=True)
            assert "Không có quyền truy cập" in html and 'lang="vi"' in html
    assert results == {Role.ADMIN: 200, Role.CLERK: 200, Role.LEADER: 403}
    assert app.test_client().post("/_test/change").status_code == 400  # CSRF first


@pytest.mark.nodb
def test_role_required_needs_a_role():
    with pytest.raises(ValueError):
        role_required()


# --- Home page ----------------------------------------------------------------------------


def test_home_lists_dispatches_with_their_progress(role_clients, db_app):
    issued = build_issued_dispatch(63, acknowledged=range(5), number=7)
    home = role_clients[Role.LEADER].get("/")
    assert home.status_code == 200
    html = home.get_data(as_text=True)
    assert "đã xác nhận 5/63" in html
    assert f'href="/dispatches/{issued.id}"' in html
    assert "07/THH-VP" in html and issued.subject in html and "Đã ban hành" in html
    for role in (Role.CLERK, Role.ADMIN):
        assert "đã xác nhận 5/63" in role_clients[role].get("/").get_data(as_text=True)


def test_home_says_when_there_is_nothing_yet(clerk_client):
    assert "Chưa có công văn nào" in clerk_client.get("/").get_data(as_text=True)


def test_home_pages_through_many_dispatches(clerk_client, db_app, monkeypatch):
    from dispatch.reporting import listing

    monkeypatch.setattr(listing, "DEFAULT_PAGE_SIZE", 2)
    for number in range(1, 6):
        build_issued_dispatch(1, number=number, issued_at=T0 + dt.timedelta(hours=number))
    first = clerk_client.get("/").get_data(as_text=True)
    assert "05/THH-VP" in first and "04/THH-VP" in first and "03/THH-VP" not in first
    assert "Trang 1/3" in first
    last = clerk_client.get("/?page=3").get_data(as_text=True)
    assert "01/THH-VP" in last and "Trang 3/3" in last


def test_user_model_loader_ignores_garbage(db_app):
    assert auth.load_user("not-a-number") is None
    assert auth.load_user("999999") is None
    assert db.session.execute(select(User)).first() is None


def test_the_dispatch_page_shows_the_status_report(role_clients, seeded):
    from dispatch.drafting import drafts
    from tests.letter_samples import SEED_FOLDER

    draft = drafts.create_draft(SEED_FOLDER, group_code="so-tttt-2021", actor=None, at=T0)
    db.session.commit()
    issued = build_issued_dispatch(3, acknowledged=[1], number=9)
    for client in role_clients.values():
        page = client.get(f"/dispatches/{draft.id}")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert "Dự thảo công văn" in html and "PC-Covid" in html
        assert html.count("<tr data-code=") == 63
        assert "đã xác nhận 0/63" in html
        csrf_token_from(html)  # the sign-out form is on the page
    html = role_clients[Role.LEADER].get(f"/dispatches/{issued.id}").get_data(as_text=True)
    assert "Công văn số" in html and "09/THH-VP" in html and "Đã ban hành" in html
    assert "đã xác nhận 1/3" in html
    assert role_clients[Role.CLERK].get("/dispatches/999999").status_code == 404
