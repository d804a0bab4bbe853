"""Checking a PDF against its signatures and the register: what ``dispatch verify`` prints."""

from __future__ import annotations

import hashlib
import io
from typing import Any

from sqlalchemy import select

from dispatch.extensions import db
from dispatch.models import Dispatch, Document
from dispatch.signing import pades


def trust_roots(config: dict[str, Any]) -> list[bytes]:
    """The certificates ``DISPATCH_TRUST_ROOTS`` names (a PEM file; several certificates)."""
    return pades.read_trust_roots(config.get("DISPATCH_TRUST_ROOTS"))


def pdfa_level(pdf: bytes) -> str | None:
    """The PDF/A part and conformance the XMP metadata claims ("3u"), or None."""
    import re

    from pypdf import PdfReader

    try:
        root = PdfReader(io.BytesIO(pdf)).trailer["/Root"]
        xmp = root["/Metadata"].get_object().get_data().decode("utf-8", "replace")
    except Exception:
        return None
    part = re.search(r'pdfaid:part(?:="|>)(\d)', xmp)
    conformance = re.search(r'pdfaid:conformance(?:="|>)([ABUabu])', xmp)
    if not part:
        return None
    return part.group(1) + (conformance.group(1).lower() if conformance else "")


def register_entry(pdf: bytes) -> dict[str, str] | None:
    """The register's record of the issued dispatch whose PDF is exactly these bytes."""
    digest = hashlib.sha256(pdf).hexdigest()
    row = db.session.execute(
        select(Dispatch)
        .join(Document, Document.dispatch_id == Dispatch.id)
        .where(Document.sha256 == digest, Document.kind == "pdf")
    ).scalar()
    if row is None or row.number is None:
        return None
    return {
        "number": row.number_and_symbol,
        "date": row.issued_on.strftime("%d/%m/%Y") if row.issued_on else None,
        "subject": row.subject,
    }


def verify_file(pdf: bytes, config: dict[str, Any]) -> tuple[dict[str, Any], bool, list]:
    """The verification result (JSON-ready), whether it passes, and the full reports.

    It passes only when there are signatures, every one is intact, and the file is exactly an
    issued dispatch's PDF (its SHA-256 is in the register).
    """
    reports = pades.verify(pdf, trust_roots(config))
    entry = register_entry(pdf)
    result = {
        "signatures": [report.as_json() for report in reports],
        "pdfa": pdfa_level(pdf),
        "register": entry,
    }
    passed = bool(reports) and all(r.intact for r in reports) and entry is not None
    return result, passed, reports
