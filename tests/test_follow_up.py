"""The follow-up letter (công văn đôn đốc, dispatch.drafting.follow_up): from an issued dispatch to
the offices that answer today for its recipients that have not confirmed, each once, with the
original cited and attached; the two dispatches show each other."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from sqlalchemy import select

from dispatch.clock import VN
from dispatch.directory import offices
from dispatch.drafting import drafts, follow_up
from dispatch.extensions import db
from dispatch.models import AuditEntry, Dispatch, DispatchStatus
from dispatch.receipts.acknowledgements import acknowledge
from tests.fixtures.web import csrf_token_from

TODAY = dt.datetime(2026, 12, 5, 9, 0, tzinfo=VN)
CONFIRMED = ["01", "79", "95", "96", "48", "02", "10", "15", "92", "94"]


def _expected_codes(late: set[str]) -> set[str]:
    """The 2025 provinces formed from at least one late 2021 province."""
    text = offices.resources.files("dispatch").joinpath("data", "provinces-2025.csv").read_text()
    return {
        row["code"]
        for row in csv.DictReader(io.StringIO(text))
        if late & set(row["merged_from"].split())
    }


@pytest.fixture()
def chased(issued_dispatch):
    """The letter issued to the 63 offices of 2021, ten of which have confirmed."""
    original = issued_dispatch()
    for recipient in original.recipients:
        if recipient.province_code in CONFIRMED:
            acknowledge(recipient, "Nguyễn Văn A", "Văn thư", None, None, None, TODAY)
    db.session.commit()
    return original


def test_a_follow_up_goes_to_the_successors_of_the_53_late_offices_each_once(chased):
    late = {r.province_code for r in chased.recipients if r.acknowledged_at is None}
    assert len(late) == 53
    draft = follow_up.create_follow_up(chased.id, actor=None, at=TODAY)
    db.session.commit()
    codes = [r.province_code for r in draft.recipients]
    assert len(codes) == len(set(codes))  # each successor once
    assert set(codes) == _expected_codes(late)
    # Cà Mau confirmed, Bạc Liêu too: their merged province is not chased again.
    assert "96" not in codes
    # Hồ Chí Minh confirmed, but Bà Rịa-Vũng Tàu (77) and Bình Dương (74) did not.
    assert "79" in codes
    assert all(r.name.startswith("Sở Khoa học và Công nghệ") for r in draft.recipients)
    assert draft.group.code == "so-khcn" and draft.status is DispatchStatus.DRAFT
    assert draft.follow_up_of_id == chased.id

    number = chased.number_and_symbol
    assert draft.subject.startswith(f"đôn đốc thực hiện Công văn số {number} ngày 15/11/2021")
    assert f"Công văn số {number} về việc {chased.subject}" in draft.source["body"]
    (attached,) = draft.source["meta"]["attachments"]
    assert attached.endswith(".pdf")
    actions = {
        e.action: e
        for e in db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()
    }
    assert actions["dispatch.follow_up_drafted"].details["original_id"] == chased.id
    assert len(actions["dispatch.follow_up_drafted"].details["late"]) == 53
    assert actions["dispatch.followed_up"].dispatch_id == chased.id


def test_a_follow_up_dated_before_the_merger_goes_to_the_63_departments(chased):
    before_merger = dt.datetime(2025, 5, 5, 9, 0, tzinfo=VN)
    draft = follow_up.create_follow_up(chased.id, actor=None, at=before_merger)
    codes = sorted(r.province_code for r in draft.recipients)
    assert len(codes) == 53 and "95" not in codes
    assert all(r.name.startswith("Sở Khoa học và Công nghệ") for r in draft.recipients)


def test_nothing_to_chase_and_drafts_are_refused(issued_dispatch, letter_folder):
    original = issued_dispatch(codes=["01", "02"])
    for recipient in original.recipients:
        acknowledge(recipient, "Nguyễn Văn A", "Văn thư", None, None, None, TODAY)
    db.session.commit()
    with pytest.raises(follow_up.FollowUpError, match="Mọi nơi nhận đã xác nhận"):
        follow_up.create_follow_up(original.id, actor=None, at=TODAY)
    draft = drafts.create_draft(letter_folder(), group_code="so-tttt-2021", actor=None, at=TODAY)
    db.session.commit()
    with pytest.raises(follow_up.FollowUpError, match="đã ban hành"):
        follow_up.create_follow_up(draft.id, actor=None, at=TODAY)
    with pytest.raises(follow_up.FollowUpError, match="Không có công văn mã 9999"):
        follow_up.create_follow_up(9999, actor=None, at=TODAY)


def test_the_clerk_drafts_it_from_the_dispatch_page_and_the_leader_sees_its_progress(
    chased, clerk_client, leader_client, monkeypatch
):
    monkeypatch.setattr("dispatch.clock.now", lambda: TODAY)
    page = clerk_client.get(f"/dispatches/{chased.id}").get_data(as_text=True)
    assert "Soạn công văn đôn đốc" in page and "53 nơi nhận chưa xác nhận" in page
    response = clerk_client.post(
        f"/dispatches/{chased.id}/follow-up", data={"csrf_token": csrf_token_from(page)}
    )
    assert response.status_code == 303
    draft_id = int(re.search(r"/dispatches/(\d+)/edit", response.headers["Location"]).group(1))
    draft = db.session.get(Dispatch, draft_id)
    assert draft.follow_up_of_id == chased.id

    leader_page = leader_client.get(f"/lanh-dao/cong-van/{chased.id}").get_data(as_text=True)
    assert f'data-follow-up-id="{draft_id}"' in leader_page
    assert f"đã xác nhận 0/{len(draft.recipients)}" in leader_page
    back = leader_client.get(f"/lanh-dao/cong-van/{draft_id}").get_data(as_text=True)
    assert f"Công văn số {chased.number_and_symbol} ngày 15/11/2021" in back
    assert "đã xác nhận 10/63" in back


def test_the_cli_drafts_a_follow_up_from_a_letter_folder(chased, runner, letter_folder):
    folder = letter_folder(date="2026-12", subject="đôn đốc triển khai ứng dụng")
    result = runner.invoke(
        args=[
            "draft",
            "create",
            str(folder),
            "--follow-up",
            str(chased.id),
            "--at",
            TODAY.isoformat(),
        ]
    )
    assert result.exit_code == 0, result.output
    draft = db.session.get(Dispatch, int(result.output.strip().splitlines()[-1]))
    assert draft.follow_up_of_id == chased.id
    assert draft.source["body"].startswith(
        f"Tiếp theo Công văn số {chased.number_and_symbol} ngày 15/11/2021"
    )
    assert len(draft.recipients) == len(
        _expected_codes({r.province_code for r in chased.recipients if not r.acknowledged_at})
    )
    both = runner.invoke(
        args=["draft", "create", str(folder), "--group", "so-khcn", "--follow-up", "1"]
    )
    assert both.exit_code == 2 and "--group hoặc --follow-up" in both.output
