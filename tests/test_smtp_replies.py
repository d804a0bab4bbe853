"""Mail servers' replies said in plain Vietnamese (one place for the page and the exports)."""

from __future__ import annotations

import pytest

from dispatch.reporting import smtp_replies


@pytest.mark.nodb
@pytest.mark.parametrize(
    ("reply", "error", "expected"),
    [
        ("250 2.0.0 Ok: queued as 4FQ", None, "Máy chủ thư đã nhận"),
        ("250 OK", None, "Máy chủ thư đã nhận"),
        ("451 4.7.1 Greylisted, try again", None, "Máy chủ thư tạm hoãn nhận; hệ thống sẽ gửi lại"),
        (None, "421 Service not available", "Máy chủ thư tạm hoãn nhận; hệ thống sẽ gửi lại"),
        ("550 5.1.1 User unknown", None, "Máy chủ thư từ chối nhận"),
        (None, "Connection refused", "Chưa liên lạc được với máy chủ thư"),
        (None, None, ""),
    ],
)
def test_common_replies_are_said_plainly(reply, error, expected):
    assert smtp_replies.explain(reply, error=error) == expected


@pytest.mark.nodb
def test_a_bounce_after_acceptance_says_why():
    text = smtp_replies.explain(
        "250 2.0.0 Ok", delivery="bounced", bounce_status="5.1.1", bounce_diagnostic="550 5.1.1"
    )
    assert text.startswith("Thư bị trả lại sau khi gửi: ")
    assert "không tồn tại" in text
