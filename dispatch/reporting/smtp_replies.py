"""A mail server's reply said in plain Vietnamese, for the recipient page and the exports.

The raw reply ("250 2.0.0 Ok: queued as 4F…") stays available behind it (a disclosure on the
page, a column of its own in the CSV/XLSX); this is what a person reads first.
"""

from __future__ import annotations

import re

from dispatch.inbound.reasons import bounce_reason

ACCEPTED = "Máy chủ thư đã nhận"
DEFERRED = "Máy chủ thư tạm hoãn nhận; hệ thống sẽ gửi lại"
REFUSED = "Máy chủ thư từ chối nhận"
BOUNCED = "Thư bị trả lại sau khi gửi"
UNREACHABLE = "Chưa liên lạc được với máy chủ thư"

_CODE = re.compile(r"^\s*([245])\d\d\b")


def explain(
    reply: str | None,
    *,
    delivery: str | None = None,
    error: str | None = None,
    bounce_status: str | None = None,
    bounce_diagnostic: str | None = None,
) -> str:
    """What ``reply`` (the SMTP server's answer, "250 …", "451 …", "550 …") means for the
    letter; ``delivery`` "bounced" (a report received later) wins over an accepted reply, and
    an ``error`` with no reply is a server never reached. Empty when there is nothing to say."""
    if delivery == "bounced":
        return f"{BOUNCED}: {bounce_reason(bounce_status, bounce_diagnostic)}"
    match = _CODE.match(reply or "") or _CODE.match(error or "")
    if match is None:
        return UNREACHABLE if error else ""
    return {"2": ACCEPTED, "4": DEFERRED, "5": REFUSED}[match.group(1)]
