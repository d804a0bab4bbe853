"""What a clerk does for one recipient: resend, correct the address, record a phone confirmation,
stop reminders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from dispatch import archive, clock
from dispatch.accounts.auth import role_required
from dispatch.extensions import db
from dispatch.inbound import handler as inbound
from dispatch.models import DispatchRecipient, InboundMessage
from dispatch.receipts import recipient_actions
from dispatch.reporting import smtp_replies, status
from dispatch.transaction import unit_of_work
from dispatch.views.clerks.common import CHANGE_ROLES, READ_ROLES, bp, signed_in_user
from dispatch.views.clerks.dispatches import status_data
from dispatch.views.downloads import NOSNIFF, file_response

# What the recipient's history calls each kind of message received.
INBOUND_LABELS = {
    "bounce": "Thư bị trả lại",
    "delay": "Báo chậm chuyển thư",
    "delivered": "Báo đã chuyển thư",
    "auto_reply": "Trả lời tự động (không tính là xác nhận)",
    "reply": "Thư trả lời",
    "edxml_status": "Trạng thái từ hệ thống văn bản (edXML)",
}


def _inbound_rows(recipient: DispatchRecipient) -> list[dict[str, Any]]:
    """The messages received about the recipient, as the page shows them."""
    rows = []
    for message in inbound.for_recipient(recipient.id):
        kind = message.kind.value
        rows.append(
            {
                "id": message.id,
                "kind": kind,
                "label": INBOUND_LABELS.get(kind, kind),
                "received": clock.format_local(message.received_at),
                "sender": message.from_name or message.from_address or "",
                "subject": message.subject or "",
                "excerpt": message.excerpt or message.diagnostic or "",
                "confirmed": message.confirmed_at is not None,
                "confirmed_by": (message.confirmed_by.email if message.confirmed_by else ""),
                "can_confirm": kind == "reply"
                and message.confirmed_at is None
                and recipient.acknowledged_at is None,
                "name": message.from_name or "",
            }
        )
    return rows


KIND_LABELS = {"letter": "Công văn", "reminder": "Nhắc việc", "escalation": "Báo cáo"}


def _message_rows(recipient: DispatchRecipient) -> list[dict[str, Any]]:
    """The e-mails sent to the recipient, oldest first, as the page shows them: which sending
    it was ("Lần đầu", "Gửi lại lần 1", "Nhắc lần 2") and the server's reply in plain words."""
    rows = []
    seen: dict[str, int] = {}
    for message in recipient.messages:  # oldest first (the relationship's order)
        kind = message.kind.value
        count = seen[kind] = seen.get(kind, 0) + 1
        if kind == "letter":
            which = "Lần đầu" if count == 1 else f"Gửi lại lần {count - 1}"
        elif kind == "reminder":
            which = f"Nhắc lần {count}"
        else:
            which = f"Lần {count}"
        state = message.status.value
        rows.append(
            {
                "kind": KIND_LABELS.get(kind, kind),
                "which": which,
                "to": ", ".join(message.to_addrs or []),
                "status": "đang gửi"
                if state == "sending"
                else status.DELIVERY_LABELS.get(state, state),
                "sent_at": message.sent_at,
                "meaning": smtp_replies.explain(message.smtp_reply, error=message.last_error),
                "raw": message.smtp_reply or message.last_error or "",
            }
        )
    return rows


# --- Per-recipient actions ---------------------------------------------------------------------


def _recipient_or_404(dispatch_id: int, recipient_id: int) -> DispatchRecipient:
    recipient = recipient_actions.get_recipient(dispatch_id, recipient_id)
    if recipient is None:
        abort(404)
    return recipient


def _recipient_page(
    recipient: DispatchRecipient,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    message: str | None = None,
    code: int = 200,
) -> Any:
    data = status_data(recipient.dispatch_id)
    row = next(r for r in data["rows"] if r["id"] == recipient.id)
    return (
        render_template(
            "clerks/recipient.html",
            dispatch=recipient.dispatch,
            recipient=recipient,
            row=row,
            messages=_message_rows(recipient),
            confirmed=recipient.acknowledged_at is not None,
            received=_inbound_rows(recipient),
            errors=errors or {},
            values=values or {},
            message=message,
            delivery_labels=status.DELIVERY_LABELS,
        ),
        code,
    )


@bp.get("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>")
@role_required(*CHANGE_ROLES)
def recipient(dispatch_id: int, recipient_id: int) -> Any:
    """One recipient: its e-mails and receipt, and what a clerk can do about them."""
    return _recipient_page(_recipient_or_404(dispatch_id, recipient_id))


def _act(recipient: DispatchRecipient, values: dict, change: Callable[[], str]) -> Any:
    """Make one change to a recipient in its own transaction, then show its page with the
    message ``change`` returns; a refused change leaves nothing behind and shows why."""
    try:
        with unit_of_work():
            message = change()
    except recipient_actions.RecipientActionError as exc:
        db.session.refresh(recipient)
        return _recipient_page(
            recipient, errors=exc.errors, values=values, message=exc.message, code=422
        )
    flash(message, "info")
    return redirect(
        url_for("clerks.recipient", dispatch_id=recipient.dispatch_id, recipient_id=recipient.id),
        code=303,
    )


@bp.post("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/resend")
@role_required(*CHANGE_ROLES)
def resend(dispatch_id: int, recipient_id: int) -> Any:
    """Send the letter again to this recipient."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)

    def change() -> str:
        result = recipient_actions.resend_letter(recipient, actor=signed_in_user(), at=clock.now())
        return f"Đã xếp hàng gửi lại công văn tới {recipient.email} (lần {result.sequence})."

    return _act(recipient, {}, change)


@bp.post("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/address")
@role_required(*CHANGE_ROLES)
def correct_address(dispatch_id: int, recipient_id: int) -> Any:
    """Correct the recipient's address (and maybe the directory's) and resend the letter."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)
    values = {
        "email": request.form.get("email", ""),
        "cc": request.form.get("cc", ""),
        "update_directory": request.form.get("update_directory", ""),
    }

    def change() -> str:
        recipient_actions.correct_address(
            recipient,
            email=values["email"],
            cc=values["cc"],
            update_directory=bool(values["update_directory"]),
            actor=signed_in_user(),
            at=clock.now(),
        )
        message = f"Đã sửa địa chỉ thành {recipient.email} và xếp hàng gửi lại công văn."
        if values["update_directory"]:
            message += " Danh bạ cũng đã được cập nhật."
        return message

    return _act(recipient, values, change)


@bp.post("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/phone")
@role_required(*CHANGE_ROLES)
def phone_confirmation(dispatch_id: int, recipient_id: int) -> Any:
    """Record a confirmation of receipt given by phone."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)
    values = {key: request.form.get(key, "") for key in ("name", "position", "note")}

    def change() -> str:
        recipient_actions.record_phone_confirmation(
            recipient, **values, actor=signed_in_user(), at=clock.now()
        )
        return "Đã ghi nhận xác nhận qua điện thoại."

    return _act(recipient, values, change)


@bp.post("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/reminders")
@role_required(*CHANGE_ROLES)
def reminders(dispatch_id: int, recipient_id: int) -> Any:
    """Stop (or resume) the reminders to this recipient."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)
    stop = request.form.get("stop", "1") != "0"

    def change() -> str:
        recipient_actions.set_reminders_stopped(
            recipient, stop, actor=signed_in_user(), at=clock.now()
        )
        return "Đã dừng nhắc việc cho nơi nhận này." if stop else "Đã bật lại nhắc việc."

    return _act(recipient, {}, change)


def _inbound_or_404(recipient: DispatchRecipient, inbound_id: int) -> InboundMessage:
    message = db.session.get(InboundMessage, inbound_id)
    if message is None or message.recipient_id != recipient.id:
        abort(404)
    return message


@bp.post("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/received/<int:inbound_id>")
@role_required(*CHANGE_ROLES)
def confirm_by_reply(dispatch_id: int, recipient_id: int, inbound_id: int) -> Any:
    """Record an office's e-mail reply as its confirmation of receipt (the clerk marks it)."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)
    message = _inbound_or_404(recipient, inbound_id)
    values = {key: request.form.get(key, "") for key in ("reply_name", "reply_position")}

    def change() -> str:
        try:
            inbound.mark_reply_as_confirmation(
                message,
                name=values["reply_name"],
                position=values["reply_position"],
                actor=signed_in_user(),
                at=clock.now(),
            )
        except inbound.InboundError as exc:
            raise recipient_actions.RecipientActionError(
                "Chưa ghi nhận được thư trả lời là xác nhận.", {"reply": str(exc)}
            ) from exc
        return "Đã ghi nhận thư trả lời là xác nhận đã nhận công văn."

    return _act(recipient, values, change)


@bp.get("/dispatches/<int:dispatch_id>/recipients/<int:recipient_id>/received/<int:inbound_id>.eml")
@role_required(*READ_ROLES)
def received_eml(dispatch_id: int, recipient_id: int, inbound_id: int) -> Any:
    """A message received about the recipient, exactly as it was received."""
    recipient = _recipient_or_404(dispatch_id, recipient_id)
    message = _inbound_or_404(recipient, inbound_id)
    try:
        data = archive.read_archived(message.archive_path, message.sha256)
    except archive.ArchiveError:
        abort(404)
    return file_response(data, "message/rfc822", f"thu-den-{message.id}.eml", headers=NOSNIFF)
