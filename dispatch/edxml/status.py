"""An edXML status message (what a recipient's system sends back), read and written (no
database). ``parse_status`` refuses a hostile or malformed file (see ``dispatch.edxml.xml``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from lxml import etree

from dispatch.edxml.package import Organ, ResponseFor
from dispatch.edxml.xml import NSMAP, EdxmlError, child, parse, q, text_of

# The codes of QCVN 102:2016 this product acts on, with their meaning in Vietnamese.
CODES = {
    "01": "đã đến",
    "02": "từ chối tiếp nhận",
    "03": "đã tiếp nhận",
    "04": "phân công",
    "05": "đang xử lý",
    "06": "hoàn thành",
    "15": "đồng ý thu hồi, cập nhật",
    "16": "từ chối thu hồi, cập nhật",
}


@dataclass(frozen=True)
class StaffInfo:
    """Who, at the recipient, the status is from."""

    department: str = ""
    staff: str = ""
    mobile: str = ""
    email: str = ""


@dataclass(frozen=True)
class StatusMessage:
    """One status message."""

    response_for: ResponseFor
    sender: Organ
    code: str
    description: str
    timestamp: dt.datetime
    staff: StaffInfo

    @property
    def meaning(self) -> str:
        """The code in Vietnamese."""
        return CODES.get(self.code, self.code)


def build_status(message: StatusMessage) -> bytes:
    """The status message as UTF-8 XML bytes."""
    root = etree.Element(q("Status"), nsmap=NSMAP)
    response = child(root, "ResponseFor")
    child(response, "OrganId", message.response_for.organ_id)
    child(response, "Code", message.response_for.code)
    child(response, "PromulgationDate", message.response_for.promulgation_date.isoformat())
    child(response, "DocumentId", message.response_for.document_id)
    sender = child(root, "From")
    child(sender, "OrganId", message.sender.organ_id)
    child(sender, "OrganName", message.sender.name)
    child(sender, "OrganizationInCharge", message.sender.in_charge)
    child(sender, "Email", message.sender.email)
    child(root, "StatusCode", message.code)
    child(root, "Description", message.description)
    child(root, "Timestamp", message.timestamp.isoformat(timespec="seconds"))
    staff = child(root, "StaffInfo")
    child(staff, "Department", message.staff.department)
    child(staff, "Staff", message.staff.staff)
    child(staff, "Mobile", message.staff.mobile)
    child(staff, "Email", message.staff.email)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _required(parent: etree._Element | None, *path: str) -> str:
    value = text_of(parent, *path)
    if not value:
        raise EdxmlError(f"thông điệp trạng thái thiếu trường {'/'.join(path)}.")
    return value


def parse_status(data: bytes) -> StatusMessage:
    """A status message from its bytes; ``EdxmlError`` (Vietnamese) for anything wrong."""
    root = parse(data, root="Status")
    code = _required(root, "StatusCode")
    if code not in CODES:
        raise EdxmlError(f"mã trạng thái {code!r} không được hỗ trợ (01–06, 15, 16).")
    response = root.find(q("ResponseFor"))
    try:
        promulgated = dt.date.fromisoformat(_required(response, "PromulgationDate"))
        timestamp = dt.datetime.fromisoformat(_required(root, "Timestamp"))
    except ValueError as exc:
        raise EdxmlError(f"ngày giờ trong thông điệp trạng thái không hợp lệ: {exc}") from exc
    if timestamp.tzinfo is None:
        raise EdxmlError("Timestamp của thông điệp trạng thái phải có múi giờ.")
    sender = root.find(q("From"))
    staff = root.find(q("StaffInfo"))
    for name, limit in (("Description", 2000),):
        value = text_of(root, name) or ""
        if len(value) > limit:
            raise EdxmlError(f"trường {name} dài quá {limit} ký tự.")
    return StatusMessage(
        response_for=ResponseFor(
            organ_id=text_of(response, "OrganId") or "",
            code=text_of(response, "Code") or "",
            promulgation_date=promulgated,
            document_id=_required(response, "DocumentId"),
        ),
        sender=Organ(
            organ_id=_required(sender, "OrganId"),
            name=text_of(sender, "OrganName") or "",
            in_charge=text_of(sender, "OrganizationInCharge") or "",
            email=text_of(sender, "Email") or "",
        ),
        code=code,
        description=text_of(root, "Description") or "",
        timestamp=timestamp,
        staff=StaffInfo(
            department=(text_of(staff, "Department") or "")[:200],
            staff=(text_of(staff, "Staff") or "")[:100],
            mobile=(text_of(staff, "Mobile") or "")[:30],
            email=(text_of(staff, "Email") or "")[:254],
        ),
    )
