"""The API's marshmallow schemas: what each operation takes and answers, in Vietnamese errors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import marshmallow as ma

from dispatch.directory import offices
from dispatch.models import DispatchStatus
from dispatch.reporting import listing


def vi_messages(**extra: str) -> dict[str, str]:
    """Vietnamese messages for marshmallow's common validation errors."""
    return {
        "required": "Thiếu trường bắt buộc.",
        "null": "Trường này không được để trống.",
        "invalid": "Giá trị không hợp lệ.",
        **extra,
    }


# JSON may spell half of a UTF-16 pair on its own ("\ud800"): Python decodes it to a string that
# no UTF-8 encoder, database driver or JSON response can carry. And "\u0000" is a NUL byte, which
# PostgreSQL refuses in any text column.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable_message(text: str, what: str) -> str:
    found = _UNSTORABLE.search(text)
    assert found is not None
    code = f"U+{ord(found.group()):04X}"
    if found.group() == "\x00":
        return f"{what} chứa ký tự rỗng NUL ({code}), không được phép."
    return f"{what} chứa ký tự Unicode không hợp lệ ({code})."


def unstorable_text_errors(data: Any) -> dict[Any, Any] | list[str]:
    """Where ``data`` (decoded JSON) holds a lone surrogate or a NUL, as marshmallow errors.

    Values are named by their path (``{"meta": {"subject": [...]}}``); a bad key is reported on
    the object holding it (its name cannot be shown). Walked without recursion: JSON nests as
    deep as its parser allowed.
    """
    errors: dict[Any, Any] = {}

    def add(path: tuple[Any, ...], message: str) -> None:
        target = errors
        for part in path:
            target = target.setdefault(part, {})
        target.setdefault("_schema", []).append(message)

    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                add(path, _unstorable_message(value, "Chuỗi"))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    add(path, _unstorable_message(key, "Tên trường"))
                else:
                    stack.append(((*path, key), item))
        elif isinstance(value, list | tuple):
            stack.extend(((*path, index), item) for index, item in enumerate(value))
    return _collapse(errors)


def _collapse(errors: dict[Any, Any]) -> dict[Any, Any] | list[str]:
    """marshmallow's shape: a field's messages as a list, an object's own under ``_schema``."""
    if set(errors) == {"_schema"}:
        return errors["_schema"]
    return {key: _collapse(value) if key != "_schema" else value for key, value in errors.items()}


class InputSchema(ma.Schema):
    """A request's parameters or body: unknown fields refused, messages in Vietnamese, and no
    string (or field name) let through that cannot be stored (``unstorable_text_errors``)."""

    class Meta:
        unknown = ma.RAISE

    error_messages = {  # noqa: RUF012  (marshmallow reads this class attribute)
        "unknown": "Trường không được hỗ trợ.",
        "type": "Dữ liệu phải là một đối tượng JSON.",
    }

    @ma.pre_load
    def refuse_unstorable_text(self, data: Any, **kwargs: Any) -> Any:
        """Refuse text that cannot be encoded or stored before any field (or message) uses it."""
        errors = unstorable_text_errors(data)
        if errors:
            raise ma.ValidationError(errors)
        return data


def _range(low: int, high: int) -> ma.validate.Range:
    return ma.validate.Range(min=low, max=high, error=f"Giá trị phải từ {low} đến {high}.")


def _one_of(choices: list[str]) -> ma.validate.OneOf:
    return ma.validate.OneOf(choices, error="Giá trị phải là một trong: {choices}.")


class ErrorSchema(ma.Schema):
    """An error: a Vietnamese message and the HTTP status; details for invalid input."""

    message = ma.fields.String(required=True, metadata={"description": "Thông báo lỗi"})
    code = ma.fields.Integer(required=True, metadata={"description": "Mã trạng thái HTTP"})
    errors = ma.fields.Dict(metadata={"description": "Lỗi theo từng trường (đầu vào sai)"})
    field = ma.fields.String(metadata={"description": "Trường (hoặc tệp) gây lỗi"})
    line = ma.fields.Integer(
        allow_none=True,  # a problem in the metadata has a field but no line of the body
        metadata={"description": "Dòng gây lỗi trong nội dung nguồn"},
    )


class CountsSchema(ma.Schema):
    """How many recipients there are and where they stand."""

    recipients = ma.fields.Integer(required=True)
    opened = ma.fields.Integer(required=True)
    acknowledged = ma.fields.Integer(required=True)
    overdue = ma.fields.Integer(required=True)
    pending = ma.fields.Integer(required=True)


class DispatchSummarySchema(ma.Schema):
    """One dispatch in the list."""

    id = ma.fields.Integer(required=True)
    number = ma.fields.Integer(allow_none=True)
    number_and_symbol = ma.fields.String(allow_none=True, metadata={"example": "05/THH-VP"})
    subject = ma.fields.String(required=True)
    status = ma.fields.String(
        required=True, validate=ma.validate.OneOf([s.value for s in DispatchStatus])
    )
    issued_on = ma.fields.Date(allow_none=True)
    issued_at = ma.fields.DateTime(allow_none=True)
    counts = ma.fields.Nested(CountsSchema, required=True)
    url = ma.fields.String(required=True, metadata={"description": "Địa chỉ API của công văn"})


class DispatchPageSchema(ma.Schema):
    """A page of the list of dispatches."""

    items = ma.fields.List(ma.fields.Nested(DispatchSummarySchema), required=True)
    page = ma.fields.Integer(required=True)
    page_size = ma.fields.Integer(required=True)
    total = ma.fields.Integer(required=True)
    pages = ma.fields.Integer(required=True)


class DispatchListArgs(InputSchema):
    """Query parameters of the list."""

    page = ma.fields.Integer(
        load_default=1, validate=_range(1, listing.MAX_PAGE), error_messages=vi_messages()
    )
    page_size = ma.fields.Integer(
        load_default=listing.DEFAULT_PAGE_SIZE,
        validate=_range(1, listing.MAX_PAGE_SIZE),
        error_messages=vi_messages(),
    )
    status = ma.fields.String(
        validate=_one_of([s.value for s in DispatchStatus]), error_messages=vi_messages()
    )


class LetterSourceSchema(InputSchema):
    """A letter source as JSON (``meta``, ``body``, ``appendices``) and the recipient group."""

    meta = ma.fields.Dict(
        required=True,
        error_messages=vi_messages(),
        metadata={"description": "Thông tin công văn (như phần đầu YAML của tệp nguồn)"},
    )
    body = ma.fields.String(
        required=True, error_messages=vi_messages(), metadata={"description": "Nội dung (Markdown)"}
    )
    appendices = ma.fields.List(
        ma.fields.Dict(),
        load_default=list,
        error_messages=vi_messages(),
        metadata={"description": "Phụ lục: mỗi phụ lục có tiêu đề và nội dung"},
    )
    origin = ma.fields.String(
        load_only=True,
        metadata={"description": "Bỏ qua (có trong dạng JSON của nguồn; API đặt nguồn riêng)"},
    )
    group = ma.fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=50, error="Mã nhóm dài từ {min} đến {max} ký tự."),
        error_messages=vi_messages(),
        metadata={"description": "Mã nhóm nơi nhận", "example": offices.DEFAULT_GROUP_CODE},
    )


class IssueArgs(InputSchema):
    """Issuing takes no parameters: the letter is issued at the server's time.

    ``at`` is declared only so that sending it gets its own clear 400 rather than the generic
    "unknown field": the moment of issue is never the caller's to choose.
    """

    at = ma.fields.Raw(
        allow_none=True,
        metadata={
            "description": (
                "Không được gửi (trả về lỗi 400): công văn được ban hành theo giờ của máy chủ."
            ),
            "deprecated": True,
        },
    )
    confirm_date = ma.fields.String(
        metadata={
            "description": (
                "Ngày sẽ ghi trên công văn (YYYY-MM-DD, ngày của máy chủ): bắt buộc khi ngày đó "
                "khác ngày (hoặc tháng) ghi trong bản nháp."
            ),
            "example": "2026-12-05",
        }
    )
    confirm_placeholders = ma.fields.Boolean(
        metadata={
            "description": (
                "true: vẫn ban hành dù có nơi nhận đang dùng địa chỉ tạm (tên miền .example); "
                "không gửi thì yêu cầu bị từ chối (409) nếu có."
            )
        }
    )
    to_successors = ma.fields.Boolean(
        metadata={
            "description": (
                "true: thay các nơi nhận không còn hiệu lực vào ngày ban hành bằng cơ quan kế "
                "nhiệm trước khi ban hành; không gửi thì yêu cầu bị từ chối (409) nếu có."
            )
        }
    )


class DocumentSchema(ma.Schema):
    """An archived file of an issued dispatch."""

    kind = ma.fields.String(required=True, metadata={"example": "pdf"})
    filename = ma.fields.String(required=True)
    media_type = ma.fields.String(required=True)
    sha256 = ma.fields.String(required=True)
    size = ma.fields.Integer(required=True)


class ReportCountsSchema(ma.Schema):
    """The recipients of a dispatch, counted by where they stand."""

    total = ma.fields.Integer(required=True)
    sent = ma.fields.Integer(required=True)
    failed = ma.fields.Integer(required=True)
    bounced = ma.fields.Integer(required=True, metadata={"description": "Thư bị trả lại"})
    refused = ma.fields.Integer(required=True, metadata={"description": "Bị từ chối tiếp nhận"})
    opened = ma.fields.Integer(required=True)
    acknowledged = ma.fields.Integer(required=True)
    overdue = ma.fields.Integer(required=True)


class RecipientReportSchema(ma.Schema):
    """One recipient: its letter's delivery and its confirmation of receipt."""

    id = ma.fields.Integer(required=True)
    code = ma.fields.String(required=True, metadata={"description": "Mã tỉnh"})
    name = ma.fields.String(required=True)
    email = ma.fields.String(required=True)
    cc = ma.fields.List(ma.fields.String(), required=True)
    delivery = ma.fields.String(
        allow_none=True,
        metadata={
            "description": "queued, sent, retrying, failed, cancelled, bounced; null: chưa gửi"
        },
    )
    smtp_reply = ma.fields.String(allow_none=True)
    last_error = ma.fields.String(allow_none=True)
    sent_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    opened_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    acknowledged_at = ma.fields.String(
        allow_none=True, metadata={"description": "ISO-8601, giờ VN"}
    )
    acknowledged_by = ma.fields.String(allow_none=True)
    acknowledged_method = ma.fields.String(allow_none=True, metadata={"example": "link"})
    reminders = ma.fields.Integer(required=True, metadata={"description": "Số lần đã nhắc"})
    overdue = ma.fields.Boolean(required=True)
    bounced_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    bounce_reason = ma.fields.String(allow_none=True, metadata={"description": "Lý do trả lại"})
    bounce_status = ma.fields.String(allow_none=True, metadata={"example": "5.1.1"})
    bounce_diagnostic = ma.fields.String(allow_none=True)
    bounce_reporter = ma.fields.String(allow_none=True)
    refused = ma.fields.Boolean(required=True)
    refused_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    refusal_reason = ma.fields.String(allow_none=True)
    processing = ma.fields.String(
        allow_none=True, metadata={"description": "assigned, in_progress, done (edXML 04–06)"}
    )
    processing_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601"})
    replies = ma.fields.Integer(required=True, metadata={"description": "Thư trả lời"})
    auto_replies = ma.fields.Integer(required=True, metadata={"description": "Trả lời tự động"})


class StatusReportSchema(ma.Schema):
    """A dispatch and every recipient's delivery and receipt (as ``dispatch status --json``)."""

    id = ma.fields.Integer(required=True)
    status = ma.fields.String(
        required=True, validate=ma.validate.OneOf([s.value for s in DispatchStatus])
    )
    number = ma.fields.String(allow_none=True, metadata={"example": "05/THH-VP"})
    symbol = ma.fields.String(required=True, metadata={"example": "THH-VP"})
    subject = ma.fields.String(required=True)
    issued_on = ma.fields.String(allow_none=True, metadata={"example": "15/11/2021"})
    issued_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    deadline = ma.fields.String(allow_none=True, metadata={"example": "18/11/2021 17:00"})
    deadline_at = ma.fields.String(allow_none=True, metadata={"description": "ISO-8601, giờ VN"})
    pdf_sha256 = ma.fields.String(allow_none=True)
    docx_sha256 = ma.fields.String(allow_none=True)
    documents = ma.fields.List(ma.fields.Nested(DocumentSchema), required=True)
    counts = ma.fields.Nested(ReportCountsSchema, required=True)
    recipients = ma.fields.List(ma.fields.Nested(RecipientReportSchema), required=True)


class OfficeSchema(ma.Schema):
    """An office in the directory of recipients."""

    id = ma.fields.Integer(required=True)
    code = ma.fields.String(required=True, metadata={"description": "Mã tỉnh", "example": "95"})
    name = ma.fields.String(required=True)
    province = ma.fields.String(required=True)
    province_kind = ma.fields.String(required=True)
    region = ma.fields.String(required=True)
    email = ma.fields.String(required=True)
    cc = ma.fields.List(ma.fields.String(), required=True)
    placeholder = ma.fields.Boolean(
        required=True, metadata={"description": "Địa chỉ thư là tạm (chưa phải địa chỉ thật)"}
    )
    agency_id = ma.fields.String(allow_none=True, metadata={"example": "000.00.00.H29"})
    valid_from = ma.fields.Date(allow_none=True)
    valid_to = ma.fields.Date(allow_none=True)
    groups = ma.fields.List(ma.fields.String(), required=True)


class DirectoryArgs(InputSchema):
    """Filters of the directory."""

    q = ma.fields.String(metadata={"description": "Tìm theo tên, tỉnh, mã, thư (không dấu)"})
    on = ma.fields.Date(
        error_messages=vi_messages(),
        metadata={"description": "Chỉ các đơn vị còn hiệu lực ngày này"},
    )
    group = ma.fields.String(metadata={"description": "Chỉ các đơn vị thuộc nhóm này"})


class DirectorySchema(ma.Schema):
    """The directory (filtered)."""

    items = ma.fields.List(ma.fields.Nested(OfficeSchema), required=True)
    total = ma.fields.Integer(required=True)


class EdxmlStatusResultSchema(ma.Schema):
    """What recording an edXML status message did."""

    inbound_id = ma.fields.Integer(required=True)
    duplicate = ma.fields.Boolean(required=True, metadata={"description": "Đã nhận trước đó"})
    code = ma.fields.String(required=True, metadata={"example": "03"})
    meaning = ma.fields.String(required=True, metadata={"example": "đã tiếp nhận"})
    dispatch_id = ma.fields.Integer(allow_none=True)
    recipient_id = ma.fields.Integer(allow_none=True)
    changed = ma.fields.Boolean(required=True, metadata={"description": "Trạng thái đã thay đổi"})


class SubmitArgs(InputSchema):
    """Trình ký: the leader who is to sign the draft."""

    leader = ma.fields.Email(
        required=True,
        metadata={
            "description": "Địa chỉ thư điện tử của lãnh đạo ký duyệt (đã có khoá ký số).",
            "example": "lanhdao@thh.example",
        },
    )


class ApprovalSchema(ma.Schema):
    """Where a draft's submission for signature stands."""

    dispatch_id = ma.fields.Integer(required=True)
    approval_id = ma.fields.Integer(required=True)
    status = ma.fields.String(
        required=True,
        metadata={"enum": ["submitted", "returned", "approved", "withdrawn"]},
    )
    leader = ma.fields.String(required=True)
    submitted_at = ma.fields.String(required=True, metadata={"format": "date-time"})
