"""``POST /api/edxml/status``: a recipient's system reports a status (edXML, QCVN 102:2016)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_smorest import abort

from dispatch import clock
from dispatch.edxml.exchange import receive_status
from dispatch.edxml.xml import MAX_BYTES, EdxmlError
from dispatch.transaction import unit_of_work
from dispatch.views.api.common import bp, documented_errors, require_change
from dispatch.views.api.schemas import EdxmlStatusResultSchema


@bp.route("/edxml/status", methods=["POST"])
@bp.response(200, EdxmlStatusResultSchema)
@bp.doc(
    requestBody={
        "required": True,
        "description": "Thông điệp trạng thái edXML (Status, QCVN 102:2016), UTF-8.",
        "content": {"application/xml": {"schema": {"type": "string"}}},
    }
)
@documented_errors(401, 403, 413, 415, 422)
def edxml_status() -> Any:
    """Record a status message: 01 đã đến … 06 hoàn thành, 15/16 on a recall."""
    require_change()
    if request.mimetype not in ("application/xml", "text/xml"):
        abort(415, message="Cần nội dung application/xml (thông điệp trạng thái edXML).")
    if (request.content_length or 0) > MAX_BYTES:
        abort(413, message=f"Thông điệp quá lớn (tối đa {MAX_BYTES} byte).")
    raw = request.get_data(cache=False)
    try:
        with unit_of_work():
            result = receive_status(raw, door="api", at=clock.now())
    except EdxmlError as exc:
        abort(422, message=f"Thông điệp edXML bị từ chối: {exc}")
    if result.recipient_id is None and not result.duplicate:
        abort(
            422,
            message=(
                "Thông điệp không khớp công văn hay cơ quan nào (đã lưu để quản trị xem): "
                "kiểm tra DocumentId và OrganId của cơ quan gửi."
            ),
        )
    return {
        "inbound_id": result.inbound_id,
        "duplicate": result.duplicate,
        "code": result.code,
        "meaning": result.meaning,
        "dispatch_id": result.dispatch_id,
        "recipient_id": result.recipient_id,
        "changed": result.changed,
    }
