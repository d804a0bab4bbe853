"""Sign-in, sign-out, throttling, role checks and the signed-in home page."""

from __future__ import annotations

import datetime as dt
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from dispatch.accounts import auth, users
from dispatch.accounts.auth import role_required
from dispatch.extensions import db
from dispatch.models import AuditEntry, LoginAttempt, LoginThrottle, Role, User
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


def _attempt(email: str, password: str, ip: str, at: dt.datetime) -> str:
    """One sign-in attempt, committed: "ok", "failed" or "wait <seconds>"."""
    try:
        result = auth.authenticate(email, password, ip=ip, at=at)
    except auth.LoginThrottled as exc:
        db.session.commit()
        return f"wait {exc.retry_after.total_seconds():g}"
    db.session.commit()
    return "ok" if result.ok else "failed"


def test_failures_from_one_place_ask_for_growing_delays_not_a_lock(db_app, clerk_user):
    ip, email, at = "198.51.100.7", clerk_user.email, T0
    free = [_attempt(email, "wrong", ip, at) for _ in range(auth.PAIR.free)]
    assert free == ["failed"] * auth.PAIR.free
    # Past the free failures each one asks for twice the wait of the one before, and while it
    # runs even the right password is not checked (a guesser must not learn it was right).
    outcomes = []
    for wait in (1, 2, 4):
        outcomes.append(_attempt(email, "wrong", ip, at))
        outcomes.append(_attempt(email, PASSWORD, ip, at))
        at += dt.timedelta(seconds=wait)
    assert outcomes == ["failed", "wait 1", "failed", "wait 2", "failed", "wait 4"]
    # Once the wait is over the right password gets in, and the slate is clean again.
    assert _attempt(email, PASSWORD, ip, at) == "ok"
    assert [_attempt(email, "wrong", ip, at) for _ in range(auth.PAIR.free)] == ["failed"] * 3
    throttled = audit_actions("user.login_throttled")
    assert [e.details["rule"] for e in throttled] == ["pair"] * 3
    assert [e.details["retry_after_seconds"] for e in throttled] == [1, 2, 4]


def test_the_delay_is_capped(db_app):
    assert auth.PAIR.delay(auth.PAIR.free + 30) == dt.timedelta(minutes=15)
    assert auth.ACCOUNT.delay(auth.ACCOUNT.free + 30) == dt.timedelta(minutes=1)
    assert auth.SOURCE.delay(auth.SOURCE.free) == dt.timedelta(0)


def test_colleagues_behind_one_address_do_not_lock_each_other_out(db_app, make_user):
    # Seen: two typos by one user and three by another blocked a third user's right password.
    office = "203.0.113.50"
    first, second, third = (
        make_user(f"{name}@thh.example", Role.CLERK) for name in ("an", "binh", "chi")
    )
    for _ in range(2):
        assert _attempt(first.email, "typo", office, T0) == "failed"
    for _ in range(3):
        assert _attempt(second.email, "typo", office, T0) == "failed"
    assert _attempt(third.email, PASSWORD, office, T0) == "ok"
    assert _attempt(first.email, PASSWORD, office, T0) == "ok"


def test_guesses_elsewhere_never_lock_the_owner_out(db_app, clerk_user):
    email, home = clerk_user.email, "198.51.100.20"
    assert _attempt(email, PASSWORD, home, T0) == "ok"  # the owner's usual address
    at = T0 + dt.timedelta(hours=1)
    # Guesses from many addresses, more than the account allows free.
    for n in range(auth.ACCOUNT.free + 5):
        _attempt(email, f"guess-{n}", f"192.0.2.{n + 1}", at)
    # The owner, from their usual address, gets in at once.
    assert _attempt(email, PASSWORD, home, at) == "ok"


def test_the_right_password_from_a_new_place_waits_at_most_a_minute(db_app, clerk_user):
    email, at = clerk_user.email, T0
    for n in range(auth.ACCOUNT.free + 30):
        _attempt(email, f"guess-{n}", f"192.0.2.{n + 1}", at)
        at += dt.timedelta(minutes=1)  # within the window, each after the last wait
    # The last guess was a minute ago and asked for the longest wait, one minute.
    outcome = _attempt(email, PASSWORD, "203.0.113.99", at - dt.timedelta(seconds=30))
    assert outcome == "wait 30"
    assert _attempt(email, PASSWORD, "203.0.113.99", at) == "ok"


def test_one_address_trying_many_accounts_is_slowed(db_app, clerk_user):
    sprayer = "192.0.2.66"
    outcomes = [
        _attempt(f"khach{n}@thh.example", "Matkhau@2021", sprayer, T0)
        for n in range(auth.SOURCE.free + 2)
    ]
    assert outcomes[: auth.SOURCE.free] == ["failed"] * auth.SOURCE.free
    assert outcomes[auth.SOURCE.free] == "failed"
    assert outcomes[-1] == "wait 1"
    # Another address is not affected.
    assert _attempt(clerk_user.email, PASSWORD, "198.51.100.1", T0) == "ok"


def test_simultaneous_wrong_passwords_are_counted_one_by_one(app, db_app, clerk_user):
    """40 wrong passwords at the same moment from one place: only the free ones and the one
    that sets the first delay are checked; the others are told to wait."""
    email, ip = clerk_user.email, "198.51.100.40"
    barrier = threading.Barrier(40)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        with app.app_context():
            barrier.wait()
            try:
                outcome = _attempt(email, "wrong", ip, T0)
            finally:
                db.session.remove()
        with lock:
            outcomes.append(outcome.split()[0])

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(outcomes) == 40
    assert outcomes.count("failed") == auth.PAIR.free + 1
    assert len(audit_actions("user.login_failed")) == auth.PAIR.free + 1


def test_the_login_page_says_how_long_to_wait(client, clerk_user):
    for _ in range(auth.PAIR.free + 1):
        assert sign_in(client, clerk_user.email, "wrong-password").status_code == 200
    response = sign_in(client, clerk_user.email, PASSWORD)
    assert response.status_code == 429
    assert "vui lòng chờ" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    assert client.get("/").status_code == 302


def test_old_attempts_are_pruned(db_app, clerk_user):
    auth.authenticate(clerk_user.email, "wrong", ip="198.51.100.7", at=T0)
    auth.authenticate(clerk_user.email, PASSWORD, ip="198.51.100.7", at=T0 + dt.timedelta(days=2))
    db.session.commit()
    attempts = db.session.execute(select(LoginAttempt)).scalars().all()
    assert [(a.succeeded, a.at) for a in attempts] == [(True, T0 + dt.timedelta(days=2))]
    assert db.session.execute(select(LoginThrottle)).scalars().all() == []


# --- Roles --------------------------------------------------------------------------------

PUBLIC_ENDPOINTS = {"static", "health.healthz", "auth.login", "auth.logout"}
# Blueprints with their own guard: the API (bearer tokens) and the provinces' token links; and
# the public verification pages, open to anyone by design (they show no recipient data).
OWN_GUARD_BLUEPRINTS = {"api", "api-docs", "provinces", "verification"}


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


def test_a_leader_lands_on_the_leadership_view(client, leader_user):
    """Issue 14, point 3: a leader's home is /lanh-dao/, not the clerk's list of drafts."""
    response = sign_in(client, leader_user.email)
    assert response.status_code == 302
    assert response.headers["Location"] == "/lanh-dao/"
    assert client.get("/lanh-dao/").status_code == 200
