"""Sessions live on the server: signing out, an admin's change or idleness ends them for good,
and admins manage the people who sign in (page and CLI)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from dispatch.accounts import sessions, users
from dispatch.extensions import db
from dispatch.models import AuditEntry, Role, User, UserSession
from tests.fixtures.web import PASSWORD, csrf_token_from, sign_in

NEW_PASSWORD = "mat-khau-moi-2021-rat-dai"


def copy_of(app, client):
    """Another browser holding a copy of ``client``'s session cookie."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie("session", cookie.value)
    return thief


def post_form(client, url: str, data: dict | None = None, page: str = "/"):
    token = csrf_token_from(client.get(page).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **(data or {})})


def signed_in(client) -> bool:
    return client.get("/").status_code == 200


def actions(action: str) -> list[AuditEntry]:
    return list(db.session.execute(select(AuditEntry).where(AuditEntry.action == action)).scalars())


def test_a_copied_cookie_stops_working_after_sign_out(app, clerk_client):
    thief = copy_of(app, clerk_client)
    assert signed_in(thief)  # the copy works while the session is open
    assert post_form(clerk_client, "/logout").status_code == 302
    assert not signed_in(clerk_client)
    assert not signed_in(thief)
    ended = db.session.execute(select(UserSession)).scalars().all()
    clerk_sessions = [s for s in ended if s.user.role is Role.CLERK]
    assert [s.end_reason for s in clerk_sessions] == [sessions.LOGOUT]


def test_a_cookie_from_before_server_sessions_signs_nobody_in(app, clerk_user):
    # A cookie that names a user but no server-side session (as an old or forged one would).
    client = app.test_client()
    with client.session_transaction() as cookie:
        cookie["_user_id"] = str(clerk_user.id)
        cookie["_fresh"] = True
    assert not signed_in(client)


def test_each_sign_in_is_its_own_session(app, clerk_user):
    first, second = app.test_client(), app.test_client()
    sign_in(first, clerk_user.email)
    sign_in(second, clerk_user.email)
    post_form(first, "/logout")
    assert not signed_in(first)
    assert signed_in(second)


@pytest.mark.parametrize(
    ("url", "data", "reason"),
    [
        ("role", {"role": "leader"}, sessions.ROLE_CHANGED),
        ("password", {"password": NEW_PASSWORD}, sessions.PASSWORD_SET),
        ("deactivate", {}, sessions.DEACTIVATED),
        ("sessions/end", {}, sessions.ENDED_BY_ADMIN),
    ],
)
def test_an_admin_change_ends_every_session_of_that_user(
    app, admin_client, clerk_client, clerk_user, url, data, reason
):
    elsewhere = app.test_client()
    sign_in(elsewhere, clerk_user.email)
    thief = copy_of(app, clerk_client)
    response = post_form(admin_client, f"/admin/users/{clerk_user.id}/{url}", data, "/admin/users")
    assert response.status_code == 302, response.get_data(as_text=True)
    for client in (clerk_client, elsewhere, thief):
        assert not signed_in(client)
    reasons = db.session.execute(
        select(UserSession.end_reason).where(UserSession.user_id == clerk_user.id)
    ).scalars()
    assert set(reasons) == {reason}
    assert signed_in(admin_client)


def test_admin_changes_are_applied_and_audited(admin_client, clerk_user, admin_user):
    post_form(
        admin_client, f"/admin/users/{clerk_user.id}/role", {"role": "leader"}, "/admin/users"
    )
    post_form(
        admin_client,
        f"/admin/users/{clerk_user.id}/password",
        {"password": NEW_PASSWORD},
        "/admin/users",
    )
    post_form(admin_client, f"/admin/users/{clerk_user.id}/deactivate", {}, "/admin/users")
    db.session.expire_all()
    user = db.session.get(User, clerk_user.id)
    assert user.role is Role.LEADER and not user.active
    assert users.verify_password(user.password_hash, NEW_PASSWORD)
    for action in ("user.role_changed", "user.password_set", "user.deactivated"):
        [entry] = actions(action)
        assert entry.actor == admin_user.email
        assert entry.object_id == str(clerk_user.id)
        assert NEW_PASSWORD not in str(entry.details)
    assert actions("user.role_changed")[0].details["before"] == "clerk"

    post_form(admin_client, f"/admin/users/{clerk_user.id}/activate", {}, "/admin/users")
    db.session.expire_all()
    assert db.session.get(User, clerk_user.id).active
    assert len(actions("user.activated")) == 1


def test_the_admin_page_lists_users_and_creates_one(admin_client, clerk_user):
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert clerk_user.email in page and "Phiên đang mở" in page and "Vô hiệu hoá" in page
    response = post_form(
        admin_client,
        "/admin/users",
        {"email": "moi@thh.example", "name": "Trần Văn Mới", "role": "clerk", "password": PASSWORD},
        "/admin/users",
    )
    assert response.status_code == 302
    assert users.find_user("moi@thh.example").name == "Trần Văn Mới"


def test_the_admin_page_explains_what_it_refuses(admin_client, admin_user):
    short = post_form(
        admin_client,
        "/admin/users",
        {"email": "moi@thh.example", "role": "clerk", "password": "ngan"},
        "/admin/users",
    )
    assert short.status_code == 400
    assert "ít nhất 10 ký tự" in short.get_data(as_text=True)
    assert users.find_user("moi@thh.example") is None
    # The last active admin cannot lock everyone out.
    last = post_form(admin_client, f"/admin/users/{admin_user.id}/deactivate", {}, "/admin/users")
    assert last.status_code == 400
    assert "quản trị viên cuối cùng" in last.get_data(as_text=True)
    assert db.session.get(User, admin_user.id).active


def test_only_admins_reach_the_admin_page(clerk_client, leader_client):
    assert clerk_client.get("/admin/users").status_code == 403
    assert leader_client.get("/admin/users").status_code == 403


def test_changing_ones_own_password_ends_the_other_sessions(app, clerk_client, clerk_user):
    elsewhere = app.test_client()
    sign_in(elsewhere, clerk_user.email)
    response = post_form(
        clerk_client,
        "/account/password",
        {"current": PASSWORD, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        "/account/password",
    )
    assert response.status_code == 302
    assert signed_in(clerk_client)  # this browser goes on, in a new session
    assert not signed_in(elsewhere)
    assert sign_in(app.test_client(), clerk_user.email, NEW_PASSWORD).status_code == 302
    [entry] = actions("user.password_changed")
    assert entry.actor == clerk_user.email


@pytest.mark.parametrize(
    ("current", "new", "confirm", "message"),
    [
        ("sai-mat-khau-cu", NEW_PASSWORD, NEW_PASSWORD, "Mật khẩu hiện tại không đúng."),
        (PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x", "không khớp"),
        (PASSWORD, "ngan", "ngan", "ít nhất 10 ký tự"),
    ],
)
def test_a_wrong_change_of_password_is_explained(
    clerk_client, clerk_user, current, new, confirm, message
):
    response = post_form(
        clerk_client,
        "/account/password",
        {"current": current, "new": new, "confirm": confirm},
        "/account/password",
    )
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    db.session.expire_all()
    assert users.verify_password(db.session.get(User, clerk_user.id).password_hash, PASSWORD)
    assert signed_in(clerk_client)


def test_a_session_lapses_after_the_idle_time(app, clerk_client, clerk_user):
    idle = dt.timedelta(minutes=app.config["DISPATCH_SESSION_IDLE_MINUTES"])
    assert idle == dt.timedelta(hours=8)
    record = db.session.execute(
        select(UserSession).where(UserSession.user_id == clerk_user.id)
    ).scalar_one()
    seen = record.last_seen_at
    # Used 7 h 59 min ago: still open, and this request is noted.
    db.session.execute(
        update(UserSession)
        .where(UserSession.id == record.id)
        .values(last_seen_at=seen - idle + dt.timedelta(minutes=1))
    )
    db.session.commit()
    assert signed_in(clerk_client)
    db.session.expire_all()
    assert db.session.get(UserSession, record.id).last_seen_at >= seen
    # Unused for the whole idle time: over.
    db.session.execute(
        update(UserSession)
        .where(UserSession.id == record.id)
        .values(last_seen_at=seen - idle - dt.timedelta(seconds=1))
    )
    db.session.commit()
    assert not signed_in(clerk_client)


def test_the_idle_time_is_configurable(app, clerk_client, clerk_user):
    app.config["DISPATCH_SESSION_IDLE_MINUTES"] = 30
    record = db.session.execute(
        select(UserSession).where(UserSession.user_id == clerk_user.id)
    ).scalar_one()
    record.last_seen_at -= dt.timedelta(minutes=31)
    db.session.commit()
    assert not signed_in(clerk_client)


# --- The same from the command line -----------------------------------------------------------


def cli(runner, *args: str):
    return runner.invoke(args=["users", *args], catch_exceptions=False)


def test_the_cli_manages_users_and_ends_their_sessions(app, runner, clerk_client, clerk_user):
    result = cli(runner, "list")
    assert result.exit_code == 0
    assert f"{clerk_user.email}\tchuyên viên\tđang hoạt động\t1 phiên đang mở" in result.output

    result = cli(runner, "set-role", clerk_user.email, "--role", "leader")
    assert result.exit_code == 0 and "Đã đổi vai trò" in result.output
    assert not signed_in(clerk_client)
    assert (
        "không có gì thay đổi"
        in cli(runner, "set-role", clerk_user.email, "--role", "leader").output
    )

    sign_in(clerk_client, clerk_user.email)
    result = cli(runner, "set-password", clerk_user.email, "--password", NEW_PASSWORD)
    assert result.exit_code == 0
    assert not signed_in(clerk_client)
    assert sign_in(clerk_client, clerk_user.email, NEW_PASSWORD).status_code == 302

    assert cli(runner, "end-sessions", clerk_user.email).output.startswith("Đã kết thúc 1 phiên")
    assert not signed_in(clerk_client)

    assert cli(runner, "deactivate", clerk_user.email).exit_code == 0
    assert sign_in(clerk_client, clerk_user.email, NEW_PASSWORD).status_code == 200  # refused
    assert "đã vô hiệu hoá" in cli(runner, "list").output
    assert cli(runner, "activate", clerk_user.email).exit_code == 0
    assert sign_in(clerk_client, clerk_user.email, NEW_PASSWORD).status_code == 302
    actors = {e.actor for e in actions("user.deactivated") + actions("user.activated")}
    assert actors == {"system"}


def test_the_cli_refuses_clearly(runner, admin_user, clerk_user):
    result = cli(runner, "deactivate", "khong-co@thh.example")
    assert result.exit_code != 0 and "Không có người dùng" in result.output
    result = cli(runner, "set-password", clerk_user.email, "--password", "ngan")
    assert result.exit_code != 0 and "ít nhất 10 ký tự" in result.output
    result = cli(runner, "set-role", admin_user.email, "--role", "clerk")
    assert result.exit_code != 0 and "quản trị viên cuối cùng" in result.output
    assert db.session.get(User, admin_user.id).role is Role.ADMIN
