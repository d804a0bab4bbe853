"""Before issuing (dispatch.issuing.check_before_issue): the date that will be printed, said out
loud when it differs from the draft's, and recipients that no longer exist on the issuing day,
shown with their successors; the page, the CLI and the API each ask before issuing."""

from __future__ import annotations

import datetime as dt

import pytest

from dispatch import issuing
from dispatch.clock import VN
from dispatch.drafting import drafts
from dispatch.extensions import db
from dispatch.models import Dispatch, DispatchStatus
from tests.fixtures.web import csrf_token_from

DRAFTED = dt.datetime(2021, 11, 1, 8, 0, tzinfo=VN)
TODAY = dt.datetime(2026, 12, 5, 9, 0, tzinfo=VN)


@pytest.fixture()
def old_draft(seeded, letter_folder):
    """A letter of November 2021 to the 63 offices of that month, still a draft today."""
    draft = drafts.create_draft(
        letter_folder(date="2021-11"), group_code="so-tttt-2021", actor=None, at=DRAFTED
    )
    db.session.commit()
    assert len(draft.recipients) == 63
    return draft.id


def _now(monkeypatch, moment: dt.datetime) -> None:
    monkeypatch.setattr("dispatch.clock.now", lambda: moment)


def test_the_check_names_the_printed_date_and_the_successors(old_draft):
    check = issuing.check_before_issue(old_draft, TODAY)
    assert check.printed_text == "05/12/2026" and check.draft_date == "11/2021"
    assert check.date_differs and len(check.stale) == 63
    bac_lieu = next(item for item in check.stale if item.code == "95")
    assert bac_lieu.name == "Sở Văn hoá, Thông tin, Thể thao và Du lịch tỉnh Bạc Liêu"
    assert bac_lieu.successors == (("96", "Sở Khoa học và Công nghệ tỉnh Cà Mau"),)
    # The same month: nothing to confirm, every office still valid.
    same_month = issuing.check_before_issue(old_draft, dt.datetime(2021, 11, 15, 9, tzinfo=VN))
    assert not same_month.date_differs and not same_month.stale


@pytest.mark.parametrize(
    ("day", "stale"),
    [
        (dt.date(2023, 3, 14), 0),  # Bạc Liêu's combined department, its last day
        (dt.date(2023, 3, 15), 1),  # Bạc Liêu's Sở TTTT re-established
        (dt.date(2025, 2, 28), 1),  # the last day of the Sở TTTT
        (dt.date(2025, 3, 1), 63),  # merged into the Sở KHCN
    ],
)
def test_stale_recipients_on_each_side_of_the_merger(old_draft, day, stale):
    moment = dt.datetime.combine(day, dt.time(9), tzinfo=VN)
    assert len(issuing.check_before_issue(old_draft, moment).stale) == stale


def test_the_page_refuses_a_bare_post_then_readdresses_and_asks_to_confirm_the_date(
    old_draft, clerk_client, monkeypatch
):
    _now(monkeypatch, TODAY)
    page = clerk_client.get(f"/dispatches/{old_draft}/issue").get_data(as_text=True)
    assert "Ngày ghi trên công văn: 05/12/2026" in page
    assert "Bản nháp ghi ngày 11/2021, công văn sẽ mang ngày 05/12/2026" in page
    assert 'data-stale="63"' in page and "Gửi tới các cơ quan kế nhiệm" in page
    assert "Sở Khoa học và Công nghệ tỉnh Cà Mau" in page
    token = csrf_token_from(page)

    bare = clerk_client.post(f"/dispatches/{old_draft}/issue", data={"csrf_token": token})
    assert bare.status_code == 303
    db.session.expire_all()
    assert db.session.get(Dispatch, old_draft).status is DispatchStatus.DRAFT

    moved = clerk_client.post(f"/dispatches/{old_draft}/readdress", data={"csrf_token": token})
    assert moved.status_code == 303
    db.session.expire_all()
    draft = db.session.get(Dispatch, old_draft)
    assert len(draft.recipients) == 34
    assert {r.province_code for r in draft.recipients} >= {"96", "79", "01"}

    page = clerk_client.get(f"/dispatches/{old_draft}/issue").get_data(as_text=True)
    assert "data-stale" not in page and 'name="confirm_date"' in page
    unconfirmed = clerk_client.post(f"/dispatches/{old_draft}/issue", data={"csrf_token": token})
    assert unconfirmed.status_code == 303
    db.session.expire_all()
    assert db.session.get(Dispatch, old_draft).status is DispatchStatus.DRAFT
    confirmed = clerk_client.post(
        f"/dispatches/{old_draft}/issue", data={"csrf_token": token, "confirm_date": "2026-12-05"}
    )
    assert confirmed.status_code == 303
    db.session.expire_all()
    issued = db.session.get(Dispatch, old_draft)
    assert issued.status is DispatchStatus.ISSUED and issued.issued_on == dt.date(2026, 12, 5)
    assert len(issued.recipients) == 34


def test_the_cli_says_the_date_and_asks_for_both_flags(old_draft, runner):
    at = ["--at", TODAY.isoformat()]
    refused = runner.invoke(args=["issue", str(old_draft), *at])
    assert refused.exit_code == 1
    assert "Ngày ghi trên công văn: 05/12/2026." in refused.output
    assert (
        "63 nơi nhận không còn hiệu lực" in refused.output and "--to-successors" in refused.output
    )
    dated = runner.invoke(args=["issue", str(old_draft), "--to-successors", *at])
    assert dated.exit_code == 1 and "--confirm-date" in dated.output
    done = runner.invoke(args=["issue", str(old_draft), "--to-successors", "--confirm-date", *at])
    assert done.exit_code == 0, done.output
    assert "Đã ban hành công văn số" in done.output and "ngày 05/12/2026" in done.output
    db.session.expire_all()
    assert len(db.session.get(Dispatch, old_draft).recipients) == 34


def test_the_api_refuses_with_409_until_both_are_given(old_draft, client, api_headers, monkeypatch):
    from dispatch.models import Role

    _now(monkeypatch, TODAY)
    url = f"/api/dispatches/{old_draft}/issue"
    headers = api_headers[Role.CLERK]
    stale = client.post(url, json={}, headers=headers)
    assert stale.status_code == 409 and "to_successors" in stale.get_json()["message"]
    dated = client.post(url, json={"to_successors": True}, headers=headers)
    assert dated.status_code == 409 and "2026-12-05" in dated.get_json()["message"]
    db.session.expire_all()
    assert db.session.get(Dispatch, old_draft).status is DispatchStatus.DRAFT
    done = client.post(
        url, json={"to_successors": True, "confirm_date": "2026-12-05"}, headers=headers
    )
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["counts"]["total"] == 34
