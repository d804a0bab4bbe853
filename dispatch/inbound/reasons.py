"""A bounce's status code (RFC 3463) said in plain Vietnamese, for clerks and leaders."""

from __future__ import annotations

import re

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")

# Most specific first: "5.1.1" before "5.1", before "5".
_REASONS: tuple[tuple[str, str], ...] = (
    ("5.1.1", "Địa chỉ thư không tồn tại trên máy chủ thư của cơ quan nhận."),
    ("5.1.10", "Địa chỉ thư không tồn tại trên máy chủ thư của cơ quan nhận."),
    ("5.1.2", "Tên miền của địa chỉ thư không tồn tại hoặc không nhận thư."),
    ("5.1.3", "Địa chỉ thư viết sai quy cách."),
    ("5.1.6", "Hộp thư đã chuyển đi nơi khác, không còn dùng địa chỉ này."),
    ("5.2.1", "Hộp thư của cơ quan nhận đã bị khoá hoặc ngừng nhận thư."),
    ("5.2.2", "Hộp thư của cơ quan nhận đã đầy."),
    ("5.2.3", "Thư quá lớn so với giới hạn của máy chủ nhận."),
    ("5.3.4", "Thư quá lớn so với giới hạn của máy chủ nhận."),
    ("5.4", "Không tìm được đường chuyển thư tới máy chủ của cơ quan nhận."),
    ("5.7", "Máy chủ nhận từ chối thư vì chính sách an ninh hoặc lọc thư rác."),
    ("5.1", "Địa chỉ người nhận không hợp lệ."),
    ("5.2", "Hộp thư của cơ quan nhận không nhận được thư."),
    ("5.3", "Máy chủ thư của cơ quan nhận đang gặp sự cố."),
    ("5.5", "Máy chủ thư của cơ quan nhận không chấp nhận cách gửi thư."),
    ("5.6", "Máy chủ thư của cơ quan nhận không chấp nhận nội dung thư."),
    ("4.2.2", "Hộp thư của cơ quan nhận đã đầy; máy chủ vẫn đang thử gửi lại."),
    ("4", "Máy chủ thư trên đường chuyển tạm thời chưa chuyển được; thư vẫn đang được thử lại."),
    ("5", "Máy chủ thư của cơ quan nhận trả lại thư."),
)
UNKNOWN = "Thư bị trả lại, không rõ lý do (xem thông báo gốc của máy chủ)."


def status_in(text: str | None) -> str | None:
    """The first enhanced status code ("5.1.1") in ``text``, or None."""
    if not text:
        return None
    match = _STATUS.search(text)
    return ".".join(match.groups()) if match else None


def bounce_reason(status: str | None, diagnostic: str | None = None) -> str:
    """Why a message bounced, in one Vietnamese sentence, from its status code (or, failing
    that, a code found in the diagnostic)."""
    code = status if status and _STATUS.fullmatch(status) else status_in(diagnostic)
    if code is None:
        basic = re.search(r"\b([45])\d\d\b", diagnostic or "")
        code = basic.group(1) if basic else None
    if code is None:
        return UNKNOWN
    for prefix, reason in _REASONS:
        if code == prefix or code.startswith(prefix + "."):
            return reason
    return UNKNOWN
