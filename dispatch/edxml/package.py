"""An edXML document package (QCVN 102:2016) as plain data, written and read back (no database).

``build_package`` writes one package for one recipient: the header fields within the
standard's length limits (a field too long is refused, never cut), ``DocumentId`` as the
standard composes it ("<OrganId>,<yyyy/MM/dd>,<number>/<symbol>"), the business type (0 new,
1 recall, 3 replace) with, for a recall or a replacement, ``ResponseFor`` naming the letter it
concerns, and the files base64-encoded under ``AttachmentEncoded``, listed in the manifest.
``read_package`` parses a package back into the same data (the round trip the tests check).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass, field

from lxml import etree

from dispatch.edxml.xml import NSMAP, PREFIX, EdxmlError, child, parse, q, text_of

# BussinessDocType: what the package is to the recipient's system.
NEW, RECALL, UPDATE, REPLACE = 0, 1, 2, 3
# Priority from the letter's urgency stamp.
PRIORITIES = {None: 0, "KHẨN": 1, "THƯỢNG KHẨN": 2, "HỎA TỐC": 3}


@dataclass(frozen=True)
class Organ:
    """An agency as the header names it (From, To)."""

    organ_id: str = ""  # 13 characters, blank where unknown
    name: str = ""
    in_charge: str = ""  # OrganizationInCharge: the parent agency
    address: str = ""
    email: str = ""
    telephone: str = ""
    fax: str = ""
    website: str = ""


@dataclass(frozen=True)
class ResponseFor:
    """The document a package (or a status) is about."""

    organ_id: str
    code: str  # "01/THH-VP"
    promulgation_date: dt.date
    document_id: str


@dataclass(frozen=True)
class Attachment:
    """A file carried in the package."""

    content_id: str
    name: str
    content_type: str
    data: bytes
    description: str = ""


@dataclass(frozen=True)
class Package:
    """Everything one package says."""

    sender: Organ
    to: Organ
    code_number: str
    code_notation: str
    place: str
    promulgation_date: dt.date
    subject: str
    content: str
    signer_competence: str
    signer_position: str
    signer_name: str
    timestamp: dt.datetime
    type_name: str = "Công văn"
    type_code: str = "1"
    due_date: dt.date | None = None
    to_places: tuple[str, ...] = ()
    priority: int = 0
    business_type: int = NEW
    business_reason: str = ""
    response_for: ResponseFor | None = None
    page_amount: int = 1
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)

    @property
    def document_id(self) -> str:
        """'<OrganId>,<yyyy/MM/dd>,<number>/<symbol>' as QCVN 102 composes it."""
        return document_id(
            self.sender.organ_id, self.promulgation_date, self.code_number, self.code_notation
        )


def document_id(organ_id: str, date: dt.date, number: str, notation: str) -> str:
    """'<OrganId>,<yyyy/MM/dd>,<number>/<symbol>'."""
    return f"{organ_id},{date:%Y/%m/%d},{number}/{notation}"


def split_document_id(value: str) -> tuple[str, dt.date, str, str]:
    """(organ id, date, number, notation) of a DocumentId; ``EdxmlError`` if malformed."""
    try:
        organ_id, day, code = value.split(",", 2)
        number, notation = code.split("/", 1)
        date = dt.datetime.strptime(day, "%Y/%m/%d").date()
    except ValueError as exc:
        raise EdxmlError(
            f"DocumentId không đúng dạng <OrganId>,<yyyy/MM/dd>,<số/ký hiệu>: {value!r}"
        ) from exc
    return organ_id.strip(), date, number.strip(), notation.strip()


def _organ(parent: etree._Element, name: str, organ: Organ) -> None:
    element = child(parent, name)
    child(element, "OrganId", organ.organ_id)
    child(element, "OrganizationInCharge", organ.in_charge)
    child(element, "OrganName", organ.name)
    child(element, "OrganAdd", organ.address)
    child(element, "Email", organ.email)
    child(element, "Telephone", organ.telephone)
    child(element, "Fax", organ.fax)
    child(element, "Website", organ.website)


def build_package(package: Package) -> bytes:
    """The package as UTF-8 XML bytes; ``EdxmlError`` names a field beyond its limit."""
    root = etree.Element(q("edXML"), nsmap=NSMAP)
    envelope = child(root, "edXMLEnvelope")
    header = child(envelope, "edXMLHeader")
    message = child(header, "MessageHeader")
    _organ(message, "From", package.sender)
    _organ(message, "To", package.to)
    child(message, "DocumentId", package.document_id)
    code = child(message, "Code")
    child(code, "CodeNumber", package.code_number)
    child(code, "CodeNotation", package.code_notation)
    promulgation = child(message, "PromulgationInfo")
    child(promulgation, "Place", package.place)
    child(promulgation, "PromulgationDate", package.promulgation_date.isoformat())
    kind = child(message, "DocumentType")
    child(kind, "Type", package.type_code)
    child(kind, "TypeDetail", "0")
    child(kind, "TypeName", package.type_name)
    child(message, "Subject", package.subject)
    child(message, "Content", package.content)
    signer = child(message, "SignerInfo")
    child(signer, "Competence", package.signer_competence)
    child(signer, "Position", package.signer_position)
    child(signer, "FullName", package.signer_name)
    child(message, "DueDate", package.due_date.isoformat() if package.due_date else "")
    places = child(message, "ToPlaces")
    for place in package.to_places:
        child(places, "Place", place, limit=500)  # "Place 50" is the place of promulgation
    other = child(message, "OtherInfo")
    child(other, "Priority", package.priority)
    child(other, "SphereOfPromulgation", "")
    child(other, "TyperNotation", "")
    child(other, "PromulgationAmount", 1)
    child(other, "PageAmount", package.page_amount)
    appendixes = child(other, "Appendixes")
    for attachment in package.attachments[2:]:
        child(appendixes, "Appendix", attachment.name)
    response = child(message, "ResponseFor")
    if package.response_for is not None:
        child(response, "OrganId", package.response_for.organ_id)
        child(response, "Code", package.response_for.code)
        child(response, "PromulgationDate", package.response_for.promulgation_date.isoformat())
        child(response, "DocumentId", package.response_for.document_id)
    child(message, "SteeringType", 0)
    traces = child(header, "TraceHeaderList")
    trace = child(traces, "TraceHeader")
    child(trace, "OrganId", package.sender.organ_id)
    child(trace, "Timestamp", package.timestamp.astimezone(dt.UTC).isoformat(timespec="seconds"))
    business = child(traces, "Bussiness")
    child(business, "BussinessDocType", package.business_type)
    child(business, "BussinessDocReason", package.business_reason)
    body = child(envelope, "edXMLBody")
    manifest = child(body, "edXMLManifest")
    encoded = child(root, "AttachmentEncoded")
    for attachment in package.attachments:
        reference = child(manifest, "Reference")
        child(reference, "ContentId", f"cid:{attachment.content_id}")
        child(reference, "ContentType", attachment.content_type)
        child(reference, "Description", attachment.description)
        child(reference, "AttachmentName", attachment.name)
        item = child(encoded, "Attachment")
        child(item, "ContentId", attachment.content_id)
        child(item, "AttachmentName", attachment.name)
        child(item, "ContentType", attachment.content_type)
        # The file itself, base64-encoded (the standard's "ContentTransferEncoded = base64").
        child(item, "ContentTransferEncoded", base64.b64encode(attachment.data).decode("ascii"))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _read_organ(parent: etree._Element | None) -> Organ:
    def get(name: str) -> str:
        return text_of(parent, name) or ""

    return Organ(
        organ_id=get("OrganId"),
        name=get("OrganName"),
        in_charge=get("OrganizationInCharge"),
        address=get("OrganAdd"),
        email=get("Email"),
        telephone=get("Telephone"),
        fax=get("Fax"),
        website=get("Website"),
    )


def _date(value: str | None, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value or "")
    except ValueError as exc:
        raise EdxmlError(f"trường {name} không phải ngày yyyy-mm-dd: {value!r}") from exc


def read_package(data: bytes) -> Package:
    """A package from its bytes, checked by the safe parser."""
    root = parse(data, root="edXML")
    message = root.find(f"{q('edXMLEnvelope')}/{q('edXMLHeader')}/{q('MessageHeader')}")
    if message is None:
        raise EdxmlError("gói edXML thiếu MessageHeader.")
    trace = root.find(f"{q('edXMLEnvelope')}/{q('edXMLHeader')}/{q('TraceHeaderList')}")
    response = message.find(q("ResponseFor"))
    response_for = None
    if response is not None and text_of(response, "DocumentId"):
        response_for = ResponseFor(
            organ_id=text_of(response, "OrganId") or "",
            code=text_of(response, "Code") or "",
            promulgation_date=_date(text_of(response, "PromulgationDate"), "PromulgationDate"),
            document_id=text_of(response, "DocumentId") or "",
        )
    attachments = []
    for item in root.findall(f"{q('AttachmentEncoded')}/{q('Attachment')}"):
        try:
            payload = base64.b64decode(text_of(item, "ContentTransferEncoded") or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EdxmlError("tệp đính kèm trong gói edXML không phải base64 hợp lệ.") from exc
        attachments.append(
            Attachment(
                content_id=text_of(item, "ContentId") or "",
                name=text_of(item, "AttachmentName") or "",
                content_type=text_of(item, "ContentType") or "",
                data=payload,
            )
        )
    due = text_of(message, "DueDate")
    timestamp = text_of(trace, "TraceHeader", "Timestamp")
    package = Package(
        sender=_read_organ(message.find(q("From"))),
        to=_read_organ(message.find(q("To"))),
        code_number=text_of(message, "Code", "CodeNumber") or "",
        code_notation=text_of(message, "Code", "CodeNotation") or "",
        place=text_of(message, "PromulgationInfo", "Place") or "",
        promulgation_date=_date(
            text_of(message, "PromulgationInfo", "PromulgationDate"), "PromulgationDate"
        ),
        subject=text_of(message, "Subject") or "",
        content=text_of(message, "Content") or "",
        signer_competence=text_of(message, "SignerInfo", "Competence") or "",
        signer_position=text_of(message, "SignerInfo", "Position") or "",
        signer_name=text_of(message, "SignerInfo", "FullName") or "",
        timestamp=dt.datetime.fromisoformat(timestamp) if timestamp else dt.datetime.min,
        type_name=text_of(message, "DocumentType", "TypeName") or "",
        type_code=text_of(message, "DocumentType", "Type") or "",
        due_date=_date(due, "DueDate") if due else None,
        to_places=tuple(
            (node.text or "").strip() for node in message.findall(f"{q('ToPlaces')}/{q('Place')}")
        ),
        priority=int(text_of(message, "OtherInfo", "Priority") or 0),
        business_type=int(text_of(trace, "Bussiness", "BussinessDocType") or 0),
        business_reason=text_of(trace, "Bussiness", "BussinessDocReason") or "",
        response_for=response_for,
        page_amount=int(text_of(message, "OtherInfo", "PageAmount") or 1),
        attachments=tuple(attachments),
    )
    declared = text_of(message, "DocumentId")
    if declared != package.document_id:
        raise EdxmlError(f"DocumentId {declared!r} không khớp số, ký hiệu và ngày của gói.")
    return package


__all__ = [
    "NEW",
    "PREFIX",
    "RECALL",
    "REPLACE",
    "UPDATE",
    "Attachment",
    "Organ",
    "Package",
    "ResponseFor",
    "build_package",
    "document_id",
    "read_package",
    "split_document_id",
]
