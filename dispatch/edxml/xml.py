"""Reading and writing edXML (QCVN 102:2016) safely: the namespace, its length limits, and a
parser that refuses what a hostile file could do.

Every edXML file from outside goes through ``parse``: larger than ``MAX_BYTES``, with a DOCTYPE
(and so any entity, internal or external: "billion laughs", file and network reads), with a
processing instruction that is not the XML declaration, not well-formed, or whose root is not
in the standard's namespace, it is refused with ``EdxmlError`` and a Vietnamese message. The
check is done twice: defusedxml first (it names entity and DTD tricks), then lxml with every
network, DTD and entity feature off.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import defusedxml.ElementTree as safe_tree
from defusedxml import DefusedXmlException
from lxml import etree

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
PREFIX = "edXML"
NSMAP = {PREFIX: NS}
MAX_BYTES = 50 * 1024 * 1024  # a package carries the PDF and the DOCX in base64

# Length limits seen in a validator of the standard (characters).
LIMITS = {
    "CodeNumber": 11,
    "CodeNotation": 30,
    "Subject": 500,
    "OrganName": 200,
    "FullName": 50,
    "Position": 100,
    "Place": 50,
    "AttachmentName": 200,
    "OrganId": 13,
    "Description": 2000,
    "Staff": 100,
    "Department": 200,
}


class EdxmlError(ValueError):
    """An edXML file cannot be written or read; the message is for people (Vietnamese)."""


def q(name: str) -> str:
    """The qualified name of an element of the standard."""
    return f"{{{NS}}}{name}"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=False,
        collect_ids=False,
    )


def parse(data: bytes, *, root: str) -> etree._Element:
    """The root element of an edXML file from outside, checked (see the module docstring)."""
    if not isinstance(data, bytes | bytearray):
        raise EdxmlError("tệp edXML phải là dữ liệu nhị phân")
    if len(data) > MAX_BYTES:
        raise EdxmlError(f"tệp edXML quá lớn ({len(data)} byte, tối đa {MAX_BYTES}).")
    if not data.strip():
        raise EdxmlError("tệp edXML rỗng.")
    try:
        safe_tree.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise EdxmlError(
            f"tệp edXML bị từ chối: có khai báo DTD hoặc thực thể ({exc.__class__.__name__})."
        ) from exc
    except safe_tree.ParseError as exc:
        raise EdxmlError(f"tệp edXML không đúng cú pháp XML: {exc}") from exc
    try:
        element = etree.fromstring(bytes(data), _parser())
    except etree.XMLSyntaxError as exc:
        raise EdxmlError(f"tệp edXML không đúng cú pháp XML: {exc}") from exc
    if element.getroottree().docinfo.doctype:
        raise EdxmlError("tệp edXML bị từ chối: có khai báo DTD.")
    for node in element.getroottree().getroot().itersiblings(preceding=True):
        if isinstance(node, etree._ProcessingInstruction):
            raise EdxmlError("tệp edXML bị từ chối: có chỉ thị xử lý (processing instruction).")
    if element.tag != q(root):
        found = etree.QName(element)
        raise EdxmlError(
            f"tệp edXML sai không gian tên hoặc phần tử gốc: cần {{{NS}}}{root}, "
            f"gặp {{{found.namespace or ''}}}{found.localname}."
        )
    return element


def text_of(parent: etree._Element | None, *path: str) -> str | None:
    """The NFC text of the element at ``path`` under ``parent`` (namespaced names), or None."""
    node = parent
    for name in path:
        if node is None:
            return None
        node = node.find(q(name))
    if node is None or node.text is None:
        return None
    value = unicodedata.normalize("NFC", node.text.strip())
    return value or None


def child(
    parent: etree._Element, name: str, value: Any = None, *, limit: int | None = None
) -> etree._Element:
    """Append ``<edXML:name>value</edXML:name>``, checking the standard's length limit (or
    ``limit``, for an element whose name the limits table means elsewhere)."""
    element = etree.SubElement(parent, q(name))
    if value is not None:
        text = unicodedata.normalize("NFC", str(value))
        limit = limit or LIMITS.get(name)
        if limit is not None and len(text) > limit:
            raise EdxmlError(
                f"trường {name} dài {len(text)} ký tự, vượt giới hạn {limit} của QCVN 102:2016."
            )
        element.text = text
    return element
