"""The JSON API: bearer tokens, roles, the endpoints, JSON errors, the OpenAPI document."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from dispatch.extensions import db
from dispatch.letters.source import read_source, source_to_json
from dispatch.models import ApiToken, AuditEntry, Dispatch, DispatchStatus, Role
from dispatch.reporting import status
from tests.fixtures.reminders import build_issued_dispatch
from tests.letter_samples import SEED_FOLDER

GROUP = "so-tttt-2021"
# The bundled directory's addresses are placeholders (.example): issuing says so explicitly.
CONFIRM = {"confirm_placeholders": True}
# The server's clock during the tests that issue: the bundled directory is 2021's.
SERVER_NOW = dt.datetime(2021, 11, 15, 2, 0, tzinfo=dt.UTC)  # 09:00 in Hà Nội


def seed_payload(**changes) -> dict:
    """The 2021 seed letter in the API's JSON form, addressed to the 63 offices."""
    data = source_to_json(read_source(SEED_FOLDER))
    data.pop("origin")
    data["group"] = GROUP
    data.update(changes)
    return data


def assert_json_error(response, code: int) -> dict:
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert "<html" not in response.get_data(as_text=True)
    return body


@pytest.fixture()
def server_clock(fixed_now) -> dt.datetime:
    """The app's clock stands at ``SERVER_NOW``: over HTTP, that is when a letter is issued."""
    fixed_now(SERVER_NOW)
    return SERVER_NOW


def actions(action: str) -> list[AuditEntry]:
    return list(
        db.session.execute(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        ).scalars()
    )


# --- Tokens ---------------------------------------------------------------------------------


def test_without_a_token_the_api_answers_401_json(client, db_app):
    for path in ("/api/dispatches", "/api/dispatches/1", "/api/directory", "/api/nothing"):
        response = client.get(path)
        body = assert_json_error(response, 401)
        assert "Bearer" in body["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_json_error(client.post("/api/dispatches/1/issue"), 401)


def test_a_bad_or_malformed_token_is_401(client, role_tokens):
    good = role_tokens[Role.CLERK]
    for header in (
        "Bearer not-a-token",
        f"Bearer {good[:-1]}",
        f"Basic {good}",
        good,
        "Bearer ",
    ):
        response = client.get("/api/dispatches", headers={"Authorization": header})
        assert_json_error(response, 401)
    assert (
        client.get("/api/dispatches", headers={"Authorization": f"bearer {good}"}).status_code
        == 200
    )


def test_a_signed_in_session_cookie_is_not_enough(clerk_client):
    assert clerk_client.get("/").status_code == 200
    response = clerk_client.get("/api/dispatches")
    assert_json_error(response, 401)
    # And a cookie without a CSRF token cannot make the API change anything either.
    assert_json_error(clerk_client.post("/api/dispatches", json=seed_payload()), 401)


def test_revoked_tokens_and_inactive_owners_are_refused(client, role_users, role_tokens):
    from dispatch.accounts import api_tokens

    headers = {"Authorization": f"Bearer {role_tokens[Role.CLERK]}"}
    assert client.get("/api/dispatches", headers=headers).status_code == 200
    api_tokens.revoke_tokens(
        actor="system", at=dt.datetime.now(dt.UTC), email="chuyenvien.web@thh.example"
    )
    db.session.commit()
    assert_json_error(client.get("/api/dispatches", headers=headers), 401)

    headers = {"Authorization": f"Bearer {role_tokens[Role.LEADER]}"}
    role_users[Role.LEADER].active = False
    db.session.commit()
    assert_json_error(client.get("/api/dispatches", headers=headers), 401)


def test_only_the_hash_of_a_token_is_stored_and_use_is_noted(client, role_tokens):
    token = role_tokens[Role.CLERK]
    rows = db.session.execute(select(ApiToken)).scalars().all()
    assert all(token not in row.token_hash for row in rows)
    assert len(token) >= 43  # 256 bits in URL-safe base64
    client.get("/api/dispatches", headers={"Authorization": f"Bearer {token}"})
    used = [row for row in rows if row.last_used_at is not None]
    db.session.expire_all()
    used = (
        db.session.execute(select(ApiToken).where(ApiToken.last_used_at.is_not(None)))
        .scalars()
        .all()
    )
    assert [row.user.email for row in used] == ["chuyenvien.web@thh.example"]


def test_api_responses_set_no_cookie(client, api_headers):
    response = client.get("/api/dispatches", headers=api_headers[Role.CLERK])
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


# --- Errors ---------------------------------------------------------------------------------


def test_unknown_addresses_and_methods_answer_json(client, api_headers):
    headers = api_headers[Role.CLERK]
    assert_json_error(client.get("/api/nothing/here", headers=headers), 404)
    assert_json_error(client.get("/api", headers=headers), 404)
    assert_json_error(client.get("/api/dispatches/999999", headers=headers), 404)
    response = client.delete("/api/dispatches", headers=headers)
    assert_json_error(response, 405)
    assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}
    assert_json_error(client.get("/api/dispatches/1/issue", headers=headers), 405)


def test_bad_query_parameters_are_422_with_the_field(client, api_headers):
    response = client.get("/api/dispatches?page_size=100000", headers=api_headers[Role.CLERK])
    body = assert_json_error(response, 422)
    assert body["field"] == "page_size"
    assert body["message"] == "Dữ liệu không hợp lệ."
    body = assert_json_error(
        client.get("/api/directory?on=15/11/2021", headers=api_headers[Role.CLERK]), 422
    )
    assert body["field"] == "on"


def test_a_body_that_is_not_json_is_refused_as_json(client, api_headers):
    response = client.post(
        "/api/dispatches",
        data="{not json",
        content_type="application/json",
        headers=api_headers[Role.CLERK],
    )
    assert_json_error(response, 400)


# --- Listing --------------------------------------------------------------------------------


def test_the_list_gives_numbers_status_and_counts_page_by_page(client, api_headers, db_app):
    first = build_issued_dispatch(63, acknowledged=range(10), number=1)
    second = build_issued_dispatch(
        2, number=2, issued_at=dt.datetime(2021, 11, 16, 9, 0, tzinfo=dt.UTC)
    )
    response = client.get("/api/dispatches?page_size=1", headers=api_headers[Role.LEADER])
    assert response.status_code == 200
    page = response.get_json()
    assert (page["page"], page["page_size"], page["total"], page["pages"]) == (1, 1, 2, 2)
    [item] = page["items"]
    assert item["id"] == second.id and item["number_and_symbol"] == "02/THH-VP"
    page = client.get("/api/dispatches?page=2&page_size=1", headers=api_headers[Role.LEADER])
    [item] = page.get_json()["items"]
    assert item == {
        "id": first.id,
        "number": 1,
        "number_and_symbol": "01/THH-VP",
        "subject": first.subject,
        "status": "issued",
        "issued_on": first.issued_on.isoformat(),
        "issued_at": item["issued_at"],
        "counts": {"recipients": 63, "opened": 0, "acknowledged": 10, "overdue": 0, "pending": 53},
        "url": f"/api/dispatches/{first.id}",
    }
    assert dt.datetime.fromisoformat(item["issued_at"]) == first.issued_at
    drafts_only = client.get("/api/dispatches?status=draft", headers=api_headers[Role.CLERK])
    assert drafts_only.get_json()["items"] == []


# --- Directory ------------------------------------------------------------------------------


def test_the_directory_lists_the_offices(client, api_headers, seeded):
    everything = client.get("/api/directory", headers=api_headers[Role.LEADER]).get_json()
    assert everything["total"] == 161  # every version of every office since 2019
    response = client.get("/api/directory?on=2021-11-15", headers=api_headers[Role.LEADER])
    assert response.status_code == 200
    data = response.get_json()
    assert data["total"] == 63 == len(data["items"])
    bac_lieu = next(item for item in data["items"] if item["code"] == "95")
    assert bac_lieu["name"].startswith("Sở Văn hoá, Thông tin, Thể thao và Du lịch")
    assert bac_lieu["province"] == "Bạc Liêu"
    assert set(bac_lieu) >= {
        "code",
        "name",
        "province",
        "region",
        "email",
        "placeholder",
        "agency_id",
        "valid_from",
        "valid_to",
        "groups",
    }
    assert GROUP in bac_lieu["groups"]
    found = client.get(
        "/api/directory?q=bac lieu&on=2021-11-15", headers=api_headers[Role.LEADER]
    ).get_json()
    assert [item["code"] for item in found["items"]] == ["95"]
    today = client.get("/api/directory?on=2026-12-05", headers=api_headers[Role.LEADER])
    assert today.get_json()["total"] == 34
    in_group = client.get(
        f"/api/directory?group={GROUP}&on=2021-11-15", headers=api_headers[Role.CLERK]
    )
    assert in_group.get_json()["total"] == 63
    body = assert_json_error(
        client.get("/api/directory?group=khong-co", headers=api_headers[Role.CLERK]), 404
    )
    assert body["field"] == "group"


# --- Create, read, issue ---------------------------------------------------------------------


def test_a_leader_can_neither_create_nor_issue(client, api_headers, seeded, server_clock):
    headers = api_headers[Role.LEADER]
    body = assert_json_error(
        client.post("/api/dispatches", json=seed_payload(), headers=headers), 403
    )
    assert "lãnh đạo" in body["message"]
    assert db.session.execute(select(Dispatch)).first() is None

    draft = client.post("/api/dispatches", json=seed_payload(), headers=api_headers[Role.CLERK])
    dispatch_id = draft.get_json()["id"]
    assert_json_error(
        client.post(f"/api/dispatches/{dispatch_id}/issue", json=CONFIRM, headers=headers),
        403,
    )
    assert db.session.get(Dispatch, dispatch_id).status is DispatchStatus.DRAFT
    assert actions("dispatch.issued") == []


def test_a_clerk_creates_a_draft_reads_it_and_issues_it(client, api_headers, seeded, server_clock):
    headers = api_headers[Role.CLERK]
    response = client.post("/api/dispatches", json=seed_payload(), headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    draft = response.get_json()
    assert response.headers["Location"] == f"/api/dispatches/{draft['id']}"
    assert draft["status"] == "draft" and draft["number"] is None
    assert draft["subject"].startswith("tổ chức hướng dẫn và truyền thông về ứng dụng PC-Covid")
    assert draft["counts"]["total"] == 63
    [drafted] = actions("dispatch.drafted")
    assert drafted.actor == "chuyenvien.web@thh.example"
    assert drafted.dispatch_id == draft["id"]

    read = client.get(f"/api/dispatches/{draft['id']}", headers=api_headers[Role.LEADER])
    assert read.status_code == 200
    assert read.get_json()["id"] == draft["id"]

    response = client.post(f"/api/dispatches/{draft['id']}/issue", json=CONFIRM, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    issued = response.get_json()
    assert issued["status"] == "issued"
    assert issued["number"] == "01/THH-VP"
    assert issued["issued_on"] == "15/11/2021"
    assert dt.datetime.fromisoformat(issued["issued_at"]) == SERVER_NOW
    assert issued["pdf_sha256"] and len(issued["documents"]) >= 2
    [entry] = actions("dispatch.issued")
    assert entry.actor == "chuyenvien.web@thh.example"

    # The API gives exactly what ``dispatch status --json`` gives (at the same moment).
    read = client.get(f"/api/dispatches/{draft['id']}", headers=headers).get_json()
    report = status.status_report(draft["id"], at=SERVER_NOW)
    assert set(read) == set(report)
    assert set(read["recipients"][0]) == set(report["recipients"][0])
    assert read["counts"] == report["counts"]
    assert read["number"] == report["number"]

    # Issuing again is a conflict, and takes no second number.
    again = client.post(f"/api/dispatches/{draft['id']}/issue", json=CONFIRM, headers=headers)
    body = assert_json_error(again, 409)
    assert "đã được ban hành" in body["message"]
    assert len(actions("register.number_taken")) == 1

    listed = client.get("/api/dispatches", headers=headers).get_json()
    assert [(i["number_and_symbol"], i["status"]) for i in listed["items"]] == [
        ("01/THH-VP", "issued")
    ]


def test_a_draft_is_deleted_once_issued_it_is_not(client, api_headers, seeded, server_clock):
    headers = api_headers[Role.CLERK]
    keep = client.post("/api/dispatches", json=seed_payload(), headers=headers).get_json()["id"]
    gone = client.post("/api/dispatches", json=seed_payload(), headers=headers).get_json()["id"]
    leader = client.delete(f"/api/dispatches/{gone}", headers=api_headers[Role.LEADER])
    assert_json_error(leader, 403)

    response = client.delete(f"/api/dispatches/{gone}", headers=headers)
    assert response.status_code == 204, response.get_data(as_text=True)
    assert db.session.get(Dispatch, gone) is None
    [entry] = actions("dispatch.draft_deleted")
    assert entry.dispatch_id == gone and entry.actor == "chuyenvien.web@thh.example"
    assert entry.details["recipients"] == 63
    assert_json_error(client.delete(f"/api/dispatches/{gone}", headers=headers), 404)

    assert (
        client.post(f"/api/dispatches/{keep}/issue", json=CONFIRM, headers=headers).status_code
        == 200
    )
    body = assert_json_error(client.delete(f"/api/dispatches/{keep}", headers=headers), 409)
    assert "đã ban hành nên không xoá được" in body["message"]
    assert db.session.get(Dispatch, keep).status is DispatchStatus.ISSUED


def test_an_admin_may_issue_too_once_placeholders_are_confirmed(
    client, api_headers, seeded, server_clock
):
    created = client.post("/api/dispatches", json=seed_payload(), headers=api_headers[Role.ADMIN])
    assert created.status_code == 201
    dispatch_id = created.get_json()["id"]
    # A bare POST does not issue to placeholder addresses: it says how to confirm.
    bare = client.post(f"/api/dispatches/{dispatch_id}/issue", headers=api_headers[Role.ADMIN])
    body = assert_json_error(bare, 409)
    assert body["field"] == "confirm_placeholders" and "63 nơi nhận" in body["message"]
    assert db.session.get(Dispatch, dispatch_id).status is DispatchStatus.DRAFT
    response = client.post(
        f"/api/dispatches/{dispatch_id}/issue", json=CONFIRM, headers=api_headers[Role.ADMIN]
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["number"].endswith("/THH-VP")
    assert actions("dispatch.issued")[0].actor == "quantri@thh.example"


def test_issue_refuses_an_unknown_dispatch_and_unknown_fields(client, api_headers, seeded):
    headers = api_headers[Role.CLERK]
    dispatch_id = client.post("/api/dispatches", json=seed_payload(), headers=headers).get_json()[
        "id"
    ]
    assert_json_error(
        client.post("/api/dispatches/999999/issue", json=CONFIRM, headers=headers), 404
    )
    body = assert_json_error(
        client.post(
            f"/api/dispatches/{dispatch_id}/issue",
            json={"when": "2021-11-15T09:00"},
            headers=headers,
        ),
        422,
    )
    assert body["field"] == "when"


@pytest.mark.parametrize("moment", ["1999-06-01T09:00", "2021-11-15T09:00:00+07:00", "hôm qua"])
def test_over_http_a_letter_is_issued_at_the_servers_time_not_at_one_it_is_given(
    client, api_headers, seeded, server_clock, moment
):
    headers = api_headers[Role.CLERK]
    dispatch_id = client.post("/api/dispatches", json=seed_payload(), headers=headers).get_json()[
        "id"
    ]
    body = assert_json_error(
        client.post(f"/api/dispatches/{dispatch_id}/issue", json={"at": moment}, headers=headers),
        400,
    )
    assert body["field"] == "at"
    assert "giờ của máy chủ" in body["message"] and "--at" in body["message"]
    db.session.expire_all()
    assert db.session.get(Dispatch, dispatch_id).status is DispatchStatus.DRAFT
    assert actions("register.number_taken") == [] and actions("dispatch.issued") == []

    # Without a moment it is issued now, by the server's clock, and audited at that moment.
    issued = client.post(f"/api/dispatches/{dispatch_id}/issue", json=CONFIRM, headers=headers)
    assert issued.status_code == 200, issued.get_data(as_text=True)
    assert dt.datetime.fromisoformat(issued.get_json()["issued_at"]) == SERVER_NOW
    [entry] = actions("dispatch.issued")
    assert entry.at == SERVER_NOW


@pytest.mark.parametrize(
    ("changes", "field", "line"),
    [
        ({"body": "Đoạn một.\n\nĐoạn hai không có dấu kết.\n"}, "body", 3),
        ({"meta": {"symbol": "THH-VP"}}, "meta", None),
    ],
)
def test_a_bad_letter_source_is_422_with_field_and_line(
    client, api_headers, seeded, changes, field, line
):
    response = client.post(
        "/api/dispatches", json=seed_payload(**changes), headers=api_headers[Role.CLERK]
    )
    body = assert_json_error(response, 422)
    assert body["field"].startswith(field)
    assert body["line"] == line
    assert db.session.execute(select(Dispatch)).first() is None


def test_a_missing_meta_key_names_it(client, api_headers, seeded):
    payload = seed_payload()
    del payload["meta"]["subject"]
    body = assert_json_error(
        client.post("/api/dispatches", json=payload, headers=api_headers[Role.CLERK]), 422
    )
    assert body["field"] == "meta.subject"
    assert "subject" in body["message"]


def test_an_appendix_problem_points_at_the_appendix(client, api_headers, seeded):
    payload = seed_payload()
    payload["appendices"][1]["body"] = "## I. MỤC\n\nthiếu dấu kết\n"
    body = assert_json_error(
        client.post("/api/dispatches", json=payload, headers=api_headers[Role.CLERK]), 422
    )
    assert body["field"] == "appendices.1.body"
    assert body["line"] is not None


def test_missing_fields_and_an_unknown_group_are_422(client, api_headers, seeded):
    headers = api_headers[Role.CLERK]
    body = assert_json_error(client.post("/api/dispatches", json={}, headers=headers), 422)
    assert set(body["errors"]) == {"meta", "body", "group"}
    assert body["errors"]["group"] == ["Thiếu trường bắt buộc."]
    body = assert_json_error(
        client.post("/api/dispatches", json=seed_payload(group="khong-co"), headers=headers), 422
    )
    assert body["field"] == "group"
    assert "khong-co" in body["message"]


# --- OpenAPI --------------------------------------------------------------------------------


@pytest.mark.nodb
def test_the_openapi_document_is_valid_and_complete(client):
    from openapi_spec_validator import validate

    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    validate(spec)
    assert spec["openapi"] == "3.0.3"
    assert spec["info"]["title"] == "Dispatch API" and spec["info"]["version"] == "v1"
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert spec["security"] == [{"bearerAuth": []}]
    expected = {
        ("/api/dispatches", "get"): {"200", "401", "422"},
        ("/api/dispatches", "post"): {"201", "401", "403", "422"},
        ("/api/dispatches/{dispatch_id}", "get"): {"200", "401", "404"},
        ("/api/dispatches/{dispatch_id}", "delete"): {"204", "401", "403", "404", "409"},
        ("/api/dispatches/{dispatch_id}/issue", "post"): {"200", "401", "403", "404", "409", "422"},
        ("/api/dispatches/{dispatch_id}/submit", "post"): {
            "200",
            "401",
            "403",
            "404",
            "409",
            "422",
        },
        ("/api/directory", "get"): {"200", "401", "422"},
        ("/api/edxml/status", "post"): {"200", "401", "403", "413", "415", "422"},
    }
    documented = {
        (path, method): set(operation["responses"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert set(documented) == set(expected)
    for key, codes in expected.items():
        assert codes <= documented[key], key
    error = spec["components"]["schemas"]["Error"]
    assert {"message", "code"} <= set(error["required"])


@pytest.mark.nodb
def test_the_openapi_document_needs_no_token_and_pages_keep_html_errors(client):
    assert client.get("/api/openapi.json").status_code == 200
    page = client.get("/khong-co-trang-nay")
    assert page.status_code == 404
    assert page.mimetype == "text/html" and "Không tìm thấy" in page.get_data(as_text=True)


# --- The tokens command ------------------------------------------------------------------------


def test_tokens_create_prints_the_token_last_and_it_works(runner, client, role_users):
    result = runner.invoke(args=["tokens", "create", "chuyenvien.web@thh.example"])
    assert result.exit_code == 0, result.output
    token = result.output.split()[-1]
    assert len(token) >= 43
    response = client.get("/api/dispatches", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    [created] = actions("api_token.created")
    assert created.details["user"] == "chuyenvien.web@thh.example"

    listed = runner.invoke(args=["tokens", "list", "chuyenvien.web@thh.example"])
    assert listed.exit_code == 0 and "còn hiệu lực" in listed.output
    assert token not in listed.output

    revoked = runner.invoke(args=["tokens", "revoke", "--token", token, "--at", "2021-11-20T10:00"])
    assert revoked.exit_code == 0, revoked.output
    assert "Đã thu hồi 1" in revoked.output
    assert_json_error(
        client.get("/api/dispatches", headers={"Authorization": f"Bearer {token}"}), 401
    )
    [entry] = actions("api_token.revoked")
    assert entry.at == dt.datetime(2021, 11, 20, 3, 0, tzinfo=dt.UTC)


def test_tokens_revoke_by_email_or_id_and_errors_in_vietnamese(runner, role_users, role_tokens):
    tokens = db.session.execute(select(ApiToken).order_by(ApiToken.id)).scalars().all()
    result = runner.invoke(args=["tokens", "revoke", "--id", str(tokens[0].id)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["tokens", "revoke", "lanhdao@thh.example"])
    assert result.exit_code == 0 and "Đã thu hồi 1" in result.output
    result = runner.invoke(args=["tokens", "revoke", "lanhdao@thh.example"])
    assert "Không có mã truy cập nào còn hiệu lực" in result.output
    db.session.expire_all()
    active = (
        db.session.execute(select(ApiToken).where(ApiToken.revoked_at.is_(None))).scalars().all()
    )
    assert [t.user.email for t in active] == ["chuyenvien.web@thh.example"]

    for args in (
        ["tokens", "create", "nobody@thh.example"],
        ["tokens", "revoke", "--id", "999999"],
        ["tokens", "revoke"],
        ["tokens", "revoke", "lanhdao@thh.example", "--id", "1"],
    ):
        result = runner.invoke(args=args)
        assert result.exit_code != 0, args
        assert "Error" in result.output or "Lỗi" in result.output or "Không" in result.output


def test_tokens_cannot_be_made_for_an_inactive_user(runner, role_users):
    role_users[Role.CLERK].active = False
    db.session.commit()
    result = runner.invoke(args=["tokens", "create", "chuyenvien.web@thh.example"])
    assert result.exit_code != 0
    assert "đã bị khoá" in result.output


# --- Expiry and scope ----------------------------------------------------------------------------

CREATED = dt.datetime(2021, 11, 1, 1, 0, tzinfo=dt.UTC)


def _token(email: str, *, scope: str = "write", **kwargs) -> str:
    from dispatch.accounts import api_tokens

    new = api_tokens.create_token(email, scope=scope, actor="system", at=CREATED, **kwargs)
    db.session.commit()
    return new.plain


def test_a_token_expires_after_90_days_by_default(client, role_users, fixed_now):
    token = _token("chuyenvien.web@thh.example")
    headers = {"Authorization": f"Bearer {token}"}
    [row] = db.session.execute(select(ApiToken)).scalars().all()
    assert row.expires_at == CREATED + dt.timedelta(days=90)

    fixed_now(row.expires_at - dt.timedelta(seconds=1))
    assert client.get("/api/dispatches", headers=headers).status_code == 200
    fixed_now(row.expires_at)
    response = client.get("/api/dispatches", headers=headers)
    body = assert_json_error(response, 401)
    assert "đã hết hạn" in body["message"] and "30/01/2022" in body["message"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    # An expired token is not noted as used.
    db.session.expire_all()
    assert db.session.get(ApiToken, row.id).last_used_at == row.expires_at - dt.timedelta(seconds=1)


def test_a_token_may_be_given_a_shorter_or_longer_life_within_limits(role_users):
    from dispatch.accounts import api_tokens

    _token("chuyenvien.web@thh.example", valid_for=dt.timedelta(days=7))
    [row] = db.session.execute(select(ApiToken)).scalars().all()
    assert row.expires_at == CREATED + dt.timedelta(days=7)
    for days in (0, -1, api_tokens.MAX_VALIDITY_DAYS + 1):
        with pytest.raises(api_tokens.TokenError, match="ngày"):
            api_tokens.create_token(
                "chuyenvien.web@thh.example",
                scope="read",
                valid_for=dt.timedelta(days=days),
                actor="system",
                at=CREATED,
            )
    with pytest.raises(api_tokens.TokenError, match="read"):
        api_tokens.create_token(
            "chuyenvien.web@thh.example", scope="admin", actor="system", at=CREATED
        )


def test_a_read_token_may_only_read(client, role_users, seeded, server_clock):
    write = {"Authorization": f"Bearer {_token('chuyenvien.web@thh.example')}"}
    read = {"Authorization": f"Bearer {_token('chuyenvien.web@thh.example', scope='read')}"}
    dispatch_id = client.post("/api/dispatches", json=seed_payload(), headers=write).get_json()[
        "id"
    ]

    assert client.get("/api/dispatches", headers=read).status_code == 200
    assert client.get(f"/api/dispatches/{dispatch_id}", headers=read).status_code == 200
    assert client.get("/api/directory", headers=read).status_code == 200
    for method, path, payload in (
        ("post", "/api/dispatches", seed_payload()),
        ("post", f"/api/dispatches/{dispatch_id}/issue", {}),
        ("put", f"/api/dispatches/{dispatch_id}", {}),
        ("delete", f"/api/dispatches/{dispatch_id}", None),
    ):
        response = getattr(client, method)(path, json=payload, headers=read)
        body = assert_json_error(response, 403)
        assert "chỉ có quyền đọc" in body["message"], (method, path)
    assert db.session.execute(select(func.count()).select_from(Dispatch)).scalar_one() == 1
    assert db.session.get(Dispatch, dispatch_id).status is DispatchStatus.DRAFT

    # The same clerk's write token may change things.
    issued = client.post(f"/api/dispatches/{dispatch_id}/issue", json=CONFIRM, headers=write)
    assert issued.status_code == 200, issued.status_code


def test_scope_and_expiry_are_audited_and_listed(runner, client, role_users, fixed_now):
    fixed_now(CREATED)
    result = runner.invoke(
        args=[
            "tokens",
            "create",
            "chuyenvien.web@thh.example",
            "--scope",
            "write",
            "--days",
            "30",
            "--at",
            "2021-11-01T08:00",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "đọc và ghi" in result.output and "01/12/2021 08:00" in result.output
    [created] = actions("api_token.created")
    assert created.details["scope"] == "write"
    assert created.details["expires_at"] == "2021-12-01T01:00:00+00:00"

    # Without --scope a token only reads; without --days it lasts 90 days.
    result = runner.invoke(
        args=["tokens", "create", "lanhdao@thh.example", "--at", "2021-11-01T08:00"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.split()[-1]
    assert "chỉ đọc" in result.output and "30/01/2022 08:00" in result.output
    assert actions("api_token.created")[1].details["scope"] == "read"

    listed = runner.invoke(args=["tokens", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert "lanhdao@thh.example" in lines[0] and "chỉ đọc" in lines[0]
    assert "hết hạn 30/01/2022 08:00" in lines[0] and "còn hiệu lực" in lines[0]
    assert "chuyenvien.web@thh.example" in lines[1] and "đọc và ghi" in lines[1]
    assert token not in listed.output

    fixed_now(dt.datetime(2021, 12, 2, tzinfo=dt.UTC))
    listed = runner.invoke(args=["tokens", "list"])
    assert "đã hết hạn" in listed.output.splitlines()[1]
    assert "còn hiệu lực" in listed.output.splitlines()[0]


def test_the_tokens_command_refuses_a_bad_scope_or_life(runner, role_users):
    for args in (["--scope", "admin"], ["--days", "0"], ["--days", "400"]):
        result = runner.invoke(args=["tokens", "create", "chuyenvien.web@thh.example", *args])
        assert result.exit_code != 0, args
    assert db.session.execute(select(ApiToken)).first() is None


@pytest.mark.nodb
def test_tokens_made_before_scopes_keep_writing_and_expire_90_days_after_the_upgrade(tmp_path):
    from flask_migrate import upgrade
    from sqlalchemy import text

    from tests.fixtures.database import scratch_app

    app = scratch_app(tmp_path)
    with app.app_context():
        upgrade(revision="0001")
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO user_account (id, email, name, role, active, created_at) "
                    "VALUES (1, 'cu@thh.example', '', 'clerk', 1, '2021-11-01 01:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO api_token (user_id, token_hash, created_at) "
                    "VALUES (1, :hash, '2021-11-01 01:00:00')"
                ),
                {"hash": "a" * 64},
            )
        before = dt.datetime.now(dt.UTC)
        upgrade()
        [token] = db.session.execute(select(ApiToken)).scalars().all()
        assert token.scope.value == "write"
        assert (
            before + dt.timedelta(days=89)
            < token.expires_at
            <= (dt.datetime.now(dt.UTC) + dt.timedelta(days=90))
        )
        db.session.remove()
        db.engine.dispose()


# --- Attachments name no server path -----------------------------------------------------------


def _attachment_error(client, headers, name: str) -> str:
    payload = seed_payload()
    payload["meta"]["attachments"] = [name]
    body = assert_json_error(client.post("/api/dispatches", json=payload, headers=headers), 422)
    assert body["field"] == "meta.attachments.0" or body["field"].startswith("meta")
    return body["message"]


@pytest.mark.parametrize(
    ("there", "not_there"),
    [
        ("../README.md", "../KHONG-CO.md"),
        ("../../../../../../../../etc/passwd", "../../../../../../../../etc/khong-co"),
        ("../dispatch/__init__.py", "../dispatch/khong_co.py"),
        ("attachments/../../setup.cfg", "attachments/../../khong-co.cfg"),
    ],
)
def test_attachments_do_not_tell_which_server_paths_exist(
    client, api_headers, seeded, there, not_there
):
    from dispatch.config import PROJECT_ROOT

    headers = api_headers[Role.CLERK]
    first = _attachment_error(client, headers, there)
    second = _attachment_error(client, headers, not_there)
    assert first.replace(there, "…") == second.replace(not_there, "…"), (first, second)
    assert "không tìm thấy" in first
    for message in (first, second):
        assert str(PROJECT_ROOT) not in message and "/root" not in message
    assert db.session.execute(select(Dispatch)).first() is None


def test_issuing_through_the_api_refuses_an_email_over_the_limit(
    client, api_headers, seeded, server_clock, app, tmp_path, monkeypatch
):
    import dispatch.config
    from tests.fixtures.files import png_bytes

    project = tmp_path / "project"
    (project / "attachments").mkdir(parents=True)
    (project / "attachments" / "ban-do.png").write_bytes(png_bytes(2 * 1024 * 1024))
    monkeypatch.setattr(dispatch.config, "PROJECT_ROOT", project)
    app.config["DISPATCH_MAIL_MAX_BYTES"] = 2 * 1024 * 1024
    headers = api_headers[Role.CLERK]
    payload = seed_payload()
    payload["meta"]["attachments"] = ["ban-do.png"]
    created = client.post("/api/dispatches", json=payload, headers=headers)
    assert created.status_code == 201, created.status_code
    dispatch_id = created.get_json()["id"]
    response = client.post(f"/api/dispatches/{dispatch_id}/issue", json=CONFIRM, headers=headers)
    body = assert_json_error(response, 422)
    assert "vượt giới hạn 2 MB" in body["message"] and body["field"] == "meta.attachments"
    assert db.session.get(Dispatch, dispatch_id).status is DispatchStatus.DRAFT
    assert actions("register.number_taken") == []
