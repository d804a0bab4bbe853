"""Checking a PDF against its signatures and the register: what ``dispatch verify`` prints and
the public page ``/xac-minh`` shows.

Every dispatch has a random ``verification_code``; its letter carries a QR code that opens
``BASE_URL/xac-minh/<code>`` (``verify_url``), where anyone sees the public record of the issued
letter (``public_record``): number, date, subject, issuer, the SHA-256 of the original and
whether it was recalled or replaced. Never anything about its recipients.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from dispatch.extensions import db
from dispatch.letters.source import issuing_agency_in
from dispatch.models import (
    AmendmentKind,
    AmendmentStatus,
    Dispatch,
    DispatchAmendment,
    DispatchStatus,
    Document,
)
from dispatch.signing import pades

# The public verification page, under BASE_URL: the form at VERIFY_PATH, a letter's record at
# VERIFY_PATH/<code>.
VERIFY_PATH = "/xac-minh"


def verify_url(dispatch: Dispatch, config: dict[str, Any]) -> str:
    """The address the letter's QR code opens: its public verification page."""
    return f"{config['BASE_URL'].rstrip('/')}{VERIFY_PATH}/{dispatch.verification_code}"


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


def sha256_of(data: bytes) -> str:
    """The SHA-256 of a file, in hex, as the register keeps it."""
    return hashlib.sha256(data).hexdigest()


def issued_with_pdf(pdf: bytes) -> Dispatch | None:
    """The issued dispatch whose archived PDF is exactly these bytes, or None."""
    digest = sha256_of(pdf)
    row = db.session.execute(
        select(Dispatch)
        .join(Document, Document.dispatch_id == Dispatch.id)
        .where(Document.sha256 == digest, Document.kind == "pdf")
    ).scalar()
    if row is None or row.number is None:
        return None
    return row


def register_entry(pdf: bytes) -> dict[str, str] | None:
    """The register's record of the issued dispatch whose PDF is exactly these bytes."""
    row = issued_with_pdf(pdf)
    if row is None:
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


# --- The public record of an issued letter ------------------------------------------------------


@dataclass(frozen=True)
class PublicRecord:
    """What anyone may know of an issued letter: nothing about whom it was sent to."""

    code: str
    number: str
    date: str  # dd/mm/yyyy
    subject: str
    issuer: str
    pdf_sha256: str | None
    status: str  # "issued" (in force), "recalled" or "replaced"
    status_text: str  # the status in Vietnamese, with the letter that recalled or replaced it
    amends: str | None  # what this letter itself does to an earlier one, in Vietnamese

    @property
    def in_force(self) -> bool:
        return self.status == "issued"


def _approved_amendments(dispatch_id: int, *, as_original: bool) -> list[DispatchAmendment]:
    column = DispatchAmendment.original_id if as_original else DispatchAmendment.new_id
    return list(
        db.session.execute(
            select(DispatchAmendment)
            .where(column == dispatch_id, DispatchAmendment.status == AmendmentStatus.APPROVED)
            .order_by(DispatchAmendment.id)
        ).scalars()
    )


def _status(dispatch: Dispatch) -> tuple[str, str]:
    if dispatch.status not in (DispatchStatus.RECALLED, DispatchStatus.REPLACED):
        return "issued", "Đang có hiệu lực: chưa bị thu hồi hay thay thế."
    other = next(
        (
            a.new.number_and_symbol
            for a in _approved_amendments(dispatch.id, as_original=True)
            if a.new is not None and a.new.number_and_symbol
        ),
        None,
    )
    by = f" bằng Công văn số {other}" if other else ""
    if dispatch.status is DispatchStatus.RECALLED:
        return "recalled", f"Đã bị thu hồi{by}: không còn hiệu lực."
    return "replaced", f"Đã được thay thế{by}: không còn hiệu lực."


def _amends(dispatch: Dispatch) -> str | None:
    for amendment in _approved_amendments(dispatch.id, as_original=False):
        original = amendment.original.number_and_symbol
        if not original:
            continue
        if amendment.kind is AmendmentKind.RECALL:
            return f"Văn bản này thu hồi Công văn số {original}."
        return f"Văn bản này thay thế Công văn số {original}."
    return None


def public_record(dispatch: Dispatch) -> PublicRecord | None:
    """The public record of an issued dispatch; None for a draft (it is not public)."""
    if dispatch.status is DispatchStatus.DRAFT or dispatch.number is None:
        return None
    pdf_sha256 = db.session.execute(
        select(Document.sha256)
        .where(Document.dispatch_id == dispatch.id, Document.kind == "pdf")
        .order_by(Document.id)
        .limit(1)
    ).scalar()
    status, status_text = _status(dispatch)
    return PublicRecord(
        code=dispatch.verification_code,
        number=dispatch.number_and_symbol or "",
        date=dispatch.issued_on.strftime("%d/%m/%Y") if dispatch.issued_on else "",
        subject=dispatch.subject,
        issuer=issuing_agency_in(dispatch.source),
        pdf_sha256=pdf_sha256,
        status=status,
        status_text=status_text,
        amends=_amends(dispatch),
    )


def record_by_code(code: str) -> PublicRecord | None:
    """The public record of the issued dispatch with this verification code, or None."""
    if not code or len(code) > 64:
        return None
    dispatch = db.session.execute(
        select(Dispatch).where(Dispatch.verification_code == code)
    ).scalar_one_or_none()
    return None if dispatch is None else public_record(dispatch)


# --- A verdict in words, for people ------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking an uploaded file, for the public page."""

    passed: bool
    headline: str  # one sentence
    details: tuple[str, ...]  # what else a reader must know


ROLE_LABELS = {"signer": "Người ký (ký duyệt)", "agency": "Cơ quan ban hành", "other": "Khác"}


def verdict(result: dict[str, Any], passed: bool, record: PublicRecord | None) -> Verdict:
    """The result of ``verify_file`` (and the record of the letter it matched) in words."""
    signatures = result["signatures"]
    broken = [s for s in signatures if not s["intact"]]
    details: list[str] = []
    if broken:
        names = ", ".join(f"{ROLE_LABELS.get(s['role'], s['role'])} ({s['name']})" for s in broken)
        headline = (
            f"KHÔNG HỢP LỆ: chữ ký số của {names} không còn nguyên vẹn, tệp đã bị sửa sau khi ký."
        )
    elif passed and record is not None:
        headline = (
            f"HỢP LỆ: tệp đúng là bản gốc điện tử của Công văn số {record.number} ngày "
            f"{record.date}, mọi chữ ký số còn nguyên vẹn."
        )
    elif record is not None:
        headline = (
            f"Tệp trùng từng byte với bản PDF đã ban hành của Công văn số {record.number} ngày "
            f"{record.date}, nhưng không có chữ ký số: đây chưa phải bản gốc điện tử đã ký."
        )
    elif signatures:
        headline = (
            "CHƯA XÁC NHẬN ĐƯỢC: các chữ ký số còn nguyên vẹn, nhưng tệp không trùng với bản gốc "
            "của công văn nào đã ban hành trên hệ thống này."
        )
    else:
        headline = (
            "KHÔNG XÁC MINH ĐƯỢC: tệp không có chữ ký số và không trùng với công văn nào đã ban "
            "hành trên hệ thống này."
        )
    untrusted = [s for s in signatures if s["intact"] and not s["trusted"]]
    if untrusted:
        details.append(
            "Chưa xác định được nguồn tin cậy của chứng thư số: "
            + ", ".join(s["name"] for s in untrusted)
            + ". Hãy kiểm tra chứng thư bằng phần mềm của tổ chức cung cấp dịch vụ chứng thực."
        )
    if record is not None and not record.in_force:
        details.append(
            f"Lưu ý: Công văn số {record.number} {record.status_text[0].lower()}"
            f"{record.status_text[1:]}"
        )
    return Verdict(passed=passed and not broken, headline=headline, details=tuple(details))
