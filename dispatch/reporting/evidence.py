"""The evidence package of a dispatch (``dispatch export ID``): everything needed to show, later
and to someone who does not trust this server, what was issued, what was sent, what the mail
server answered, who confirmed receipt, and that the record was not altered.

The package is a zip of one folder:

* ``documents/``: the archived PDF, DOCX and attachments, the exact bytes issued;
* ``messages/``: every accepted e-mail as sent (``.eml``): the exact bytes delivery kept at the
  time (``OutboxMessage.sent_path``, their SHA-256 in the row and in the audit log). A message
  whose bytes were not kept is rebuilt with ``dispatch.mail.compose.compose`` and named
  ``….rebuilt.eml``: the same content, but not the same bytes (the MIME boundaries are random);
* ``messages.csv``/``.json``: each outbox row (state, attempts, Message-ID, the server's reply);
  ``smtp-replies.csv``: every attempt's outcome from the audit log;
* ``confirmations.csv``/``.json`` and ``events.csv``: receipts, page openings and downloads;
* ``audit.jsonl``: the audit entries of the dispatch with their hashes, ``chain.json``: the
  result of checking the whole chain at export time and its last hash;
* ``status.json``: the status report (as ``dispatch status --json``);
* ``signatures/``: pyHanko's validation report of each digital signature of each archived PDF
  (the letter, and any signed PDF sent with it), one text file each, and ``signatures.json``
  listing them; a letter issued without signatures has an empty list, and the README says so;
* ``README.txt`` (Vietnamese) and ``MANIFEST.sha256`` (``sha256sum -c`` format) of every file.

Building the package reads only; what does not match its record is put in the package as it is
and listed in ``EvidencePackage.problems`` (and the README) rather than left out.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import unicodedata
import zipfile
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import select

from dispatch import audit
from dispatch.archive import ArchiveError, read_archived, safe_filename
from dispatch.clock import VN, format_local
from dispatch.extensions import db
from dispatch.issuing import base_filename
from dispatch.models import (
    AuditEntry,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
    OutboxMessage,
    RecipientEvent,
)
from dispatch.reporting import status
from dispatch.text import spreadsheet_text

MANIFEST = "MANIFEST.sha256"
README = "README.txt"
# Actions of the audit log that record an attempt to send and its outcome.
DELIVERY_ACTIONS = (
    "message.claimed",
    "message.sent",
    "message.retrying",
    "message.failed",
    "message.cancelled",
    "message.released",
)


class EvidenceError(LookupError):
    """The package cannot be made (no such dispatch, or not issued); message for clerks."""


@dataclass
class EvidencePackage:
    """A built package: the zip's bytes, its files' SHA-256 and what did not match its record."""

    folder: str
    data: bytes
    files: dict[str, str] = field(default_factory=dict)  # path in the folder -> SHA-256
    problems: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)  # messages whose bytes were not kept


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(VN).isoformat()


def _json(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n").encode()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return spreadsheet_text(value) if isinstance(value, str) else value


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([[_csv_cell(cell) for cell in row] for row in rows])
    # A BOM so that a spreadsheet opens the Vietnamese text as UTF-8.
    return ("\ufeff" + out.getvalue()).encode()


def _read(relative: str | None, sha256: str | None) -> tuple[bytes | None, bool]:
    """An archived file's bytes as they are now (None if gone), and whether they still have
    the recorded SHA-256."""
    try:
        return read_archived(relative, sha256), True
    except ArchiveError as exc:
        return exc.found, False


class _Builder:
    """Collects the package's files in order, then writes the zip."""

    def __init__(self, folder: str, at: dt.datetime) -> None:
        self.folder = folder
        self.at = at
        self.files: dict[str, bytes] = {}
        self.problems: list[str] = []
        self.rebuilt: list[str] = []

    def add(self, name: str, data: bytes) -> str:
        stem, dot, ext = name.rpartition(".")
        candidate, counter = name, 2
        while candidate in self.files:
            candidate = f"{stem}-{counter}{dot}{ext}" if dot else f"{name}-{counter}"
            counter += 1
        self.files[candidate] = data
        return candidate

    def zip(self) -> bytes:
        out = io.BytesIO()
        stamp = self.at.astimezone(VN).timetuple()[:6]
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in self.files.items():
                info = zipfile.ZipInfo(f"{self.folder}/{name}", date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o444 << 16  # read-only, as in the archive
                archive.writestr(info, data)
        return out.getvalue()


def _documents(builder: _Builder, dispatch: Dispatch) -> list[dict[str, Any]]:
    listed = []
    documents = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch.id).order_by(Document.id)
    ).scalars()
    for document in documents:
        data, matches = _read(document.path, document.sha256)
        entry: dict[str, Any] = {
            "id": document.id,
            "kind": document.kind,
            "filename": document.filename,
            "media_type": document.media_type,
            "size": document.size,
            "sha256": document.sha256,
            "archived_at": _iso(document.created_at),
            "archive_path": document.path,
            "file": None,
            "matches": False,
        }
        if data is None:
            builder.problems.append(f"Tệp lưu trữ {document.path} không còn: không có trong gói.")
        else:
            entry["file"] = builder.add(f"documents/{safe_filename(document.filename)}", data)
            entry["matches"] = matches
            if not entry["matches"]:
                builder.problems.append(
                    f"Tệp lưu trữ {document.path} đã bị thay đổi: SHA-256 {_sha256(data)} "
                    f"khác với bản ghi khi ban hành ({document.sha256})."
                )
        listed.append(entry)
    return listed


def _signatures(builder: _Builder, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each signature of each archived PDF, validated now: its report as a text file."""
    from dispatch.signing import pades, verification

    roots = verification.trust_roots(current_app.config)
    listed: list[dict[str, Any]] = []
    for document in documents:
        if document["media_type"] != "application/pdf" or document["file"] is None:
            continue
        data = builder.files[document["file"]]
        try:
            reports = pades.verify(data, roots)
        except pades.SigningError as exc:
            builder.problems.append(f"Không đọc được chữ ký số của {document['filename']}: {exc}")
            continue
        stem = safe_filename(document["filename"]).rsplit(".", 1)[0]
        for index, report in enumerate(reports, start=1):
            name = builder.add(
                f"signatures/{stem}-{index}-{report.role}.txt",
                (
                    f"Tệp: {document['filename']} (SHA-256 {document['sha256']})\n"
                    f"Chữ ký số thứ {index}: {report.role}, {report.name}\n"
                    f"Kiểm tra lúc: {format_local(builder.at)} (giờ Việt Nam)\n\n"
                    f"{report.report}\n"
                ).encode(),
            )
            listed.append(
                {"document": document["file"], "index": index, **report.as_json(), "report": name}
            )
            if not report.intact:
                builder.problems.append(
                    f"Chữ ký số thứ {index} ({report.name}) của {document['filename']} không còn "
                    "nguyên vẹn."
                )
    builder.add("signatures.json", _json(listed))
    return listed


def _message_name(row: OutboxMessage, codes: dict[int, str]) -> str:
    who = codes.get(row.recipient_id or 0, "chung")
    return f"messages/{row.id:05d}-{row.kind.value}-{row.sequence}-{who}"


def _messages(builder: _Builder, dispatch: Dispatch, codes: dict[int, str]) -> None:
    from dispatch.mail.compose import ComposeError, compose

    rows = list(
        db.session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.dispatch_id == dispatch.id)
            .order_by(OutboxMessage.id)
        ).scalars()
    )
    listed = []
    for row in rows:
        entry: dict[str, Any] = {
            "id": row.id,
            "kind": row.kind.value,
            "sequence": row.sequence,
            "recipient": codes.get(row.recipient_id or 0),
            "to": list(row.to_addrs),
            "cc": list(row.cc_addrs or []),
            "message_id": row.message_id,
            "status": row.status.value,
            "attempts": row.attempts,
            "created_at": _iso(row.created_at),
            "sent_at": _iso(row.sent_at),
            "smtp_reply": row.smtp_reply,
            "last_error": row.last_error,
            "sent_sha256": row.sent_sha256,
            "file": None,
            "file_sha256": None,
            "exact_bytes": None,
        }
        if row.sent_at is not None:
            data, exact = _read(row.sent_path, row.sent_sha256)
            if data is not None:
                entry["file"] = builder.add(_message_name(row, codes) + ".eml", data)
                entry["file_sha256"] = _sha256(data)
                entry["exact_bytes"] = exact
                if not entry["exact_bytes"]:
                    builder.problems.append(
                        f"Thư {row.message_id}: tệp đã gửi {row.sent_path} không khớp SHA-256 "
                        "ghi lúc gửi."
                    )
            else:
                if row.sent_path:
                    builder.problems.append(
                        f"Thư {row.message_id}: không còn tệp đã gửi {row.sent_path}."
                    )
                try:
                    rebuilt = compose(row, at=row.sent_at).as_bytes()
                except ComposeError as exc:
                    builder.problems.append(f"Thư {row.message_id}: không dựng lại được ({exc}).")
                else:
                    entry["file"] = builder.add(_message_name(row, codes) + ".rebuilt.eml", rebuilt)
                    entry["file_sha256"] = _sha256(rebuilt)
                    entry["exact_bytes"] = False
                    builder.rebuilt.append(row.message_id)
        listed.append(entry)
    builder.add("messages.json", _json(listed))
    columns = [
        "id",
        "kind",
        "sequence",
        "recipient",
        "to",
        "cc",
        "message_id",
        "status",
        "attempts",
        "created_at",
        "sent_at",
        "smtp_reply",
        "last_error",
        "sent_sha256",
        "file",
        "exact_bytes",
    ]
    builder.add(
        "messages.csv",
        _csv(
            columns,
            [
                [
                    "; ".join(e[c]) if isinstance(e[c], list) else e[c]
                    for c in columns  # lists of addresses on one cell
                ]
                for e in listed
            ],
        ),
    )


def _audit_entries(dispatch_id: int) -> list[AuditEntry]:
    return list(
        db.session.execute(
            select(AuditEntry).where(AuditEntry.dispatch_id == dispatch_id).order_by(AuditEntry.id)
        ).scalars()
    )


def _smtp_replies(builder: _Builder, entries: list[AuditEntry]) -> None:
    rows = []
    for entry in entries:
        if entry.action not in DELIVERY_ACTIONS:
            continue
        details = entry.details or {}
        rows.append(
            [
                format_local(entry.at),
                _iso(entry.at),
                entry.action,
                entry.object_id,
                details.get("message_id"),
                "; ".join(details.get("to") or []),
                details.get("attempt"),
                details.get("worker"),
                details.get("smtp_reply"),
                details.get("error") or details.get("reason"),
                details.get("sha256"),
            ]
        )
    header = [
        "thoi_diem",
        "at",
        "action",
        "outbox_id",
        "message_id",
        "to",
        "attempt",
        "worker",
        "smtp_reply",
        "error",
        "sha256",
    ]
    builder.add("smtp-replies.csv", _csv(header, rows))


def _confirmations(builder: _Builder, dispatch: Dispatch) -> None:
    recipients = list(
        db.session.execute(
            select(DispatchRecipient)
            .where(DispatchRecipient.dispatch_id == dispatch.id)
            .order_by(DispatchRecipient.province_code, DispatchRecipient.id)
        ).scalars()
    )
    listed = [
        {
            "recipient_id": r.id,
            "code": r.province_code,
            "name": r.name,
            "email": r.email,
            "cc": list(r.cc or []),
            "opened_at": _iso(r.opened_at),
            "acknowledged_at": _iso(r.acknowledged_at),
            "acknowledged_by": r.acknowledged_by,
            "acknowledged_position": r.acknowledged_position,
            "acknowledged_method": r.acknowledged_method.value if r.acknowledged_method else None,
            "acknowledgement_note": r.acknowledgement_note,
            "acknowledged_ip": r.acknowledged_ip,
            "acknowledged_user_agent": r.acknowledged_user_agent,
            "overdue_at": _iso(r.overdue_at),
        }
        for r in recipients
    ]
    builder.add("confirmations.json", _json(listed))
    columns = [
        "code",
        "name",
        "email",
        "opened_at",
        "acknowledged_at",
        "acknowledged_by",
        "acknowledged_position",
        "acknowledged_method",
        "acknowledgement_note",
        "acknowledged_ip",
    ]
    builder.add("confirmations.csv", _csv(columns, [[e[c] for c in columns] for e in listed]))
    ids = [r.id for r in recipients]
    events = (
        db.session.execute(
            select(RecipientEvent)
            .where(RecipientEvent.recipient_id.in_(ids))
            .order_by(RecipientEvent.at, RecipientEvent.id)
        )
        .scalars()
        .all()
        if ids
        else []
    )
    codes = {r.id: r.province_code for r in recipients}
    builder.add(
        "events.csv",
        _csv(
            ["at", "code", "kind", "detail", "ip", "user_agent"],
            [
                [_iso(e.at), codes.get(e.recipient_id), e.kind, e.detail, e.ip, e.user_agent]
                for e in events
            ],
        ),
    )


def _audit(builder: _Builder, entries: list[AuditEntry], at: dt.datetime) -> None:
    lines = []
    for entry in entries:
        record = {
            "id": entry.id,
            "at": entry.at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
            "actor": entry.actor,
            "action": entry.action,
            "object_type": entry.object_type,
            "object_id": entry.object_id,
            "dispatch_id": entry.dispatch_id,
            "details": entry.details,
            "prev_hash": entry.prev_hash,
            "hash": entry.hash,
            "lane": entry.lane,
            "mac": entry.mac,
        }
        lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
    builder.add("audit.jsonl", ("\n".join(lines) + "\n").encode() if lines else b"")
    problems = audit.verify_chain()
    last = db.session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    builder.add(
        "chain.json",
        _json(
            {
                "checked_at": _iso(at),
                "valid": not problems,
                "problems": [{"entry_id": p.entry_id, "reason": p.reason} for p in problems],
                "last_entry_id": last.id if last else None,
                "last_hash": last.hash if last else None,
                "entries_of_this_dispatch": len(entries),
            }
        ),
    )
    for problem in problems:
        builder.problems.append(
            f"Nhật ký kiểm tra hỏng ở mục {problem.entry_id} ({problem.reason})."
        )


def _readme(
    dispatch: Dispatch,
    builder: _Builder,
    report: dict[str, Any],
    signatures: list[dict[str, Any]],
) -> bytes:
    counts = report["counts"]
    lines = [
        "GÓI CHỨNG CỨ CÔNG VĂN",
        "=====================",
        "",
        f"Công văn số {dispatch.number_and_symbol} ngày {dispatch.issued_on:%d/%m/%Y}",
        f"V/v {unicodedata.normalize('NFC', dispatch.subject)}",
        f"Mã công văn trong hệ thống: {dispatch.id}",
        f"Thời điểm lập gói: {format_local(builder.at)} (giờ Việt Nam)",
        f"SHA-256 của bản PDF đã ban hành: {report.get('pdf_sha256') or '(không có)'}",
        "",
        f"Nơi nhận: {counts['total']}; đã gửi được: {counts['sent']}; gửi lỗi: "
        f"{counts['failed']}; đã mở: {counts['opened']}; đã xác nhận: {counts['acknowledged']}.",
        "",
        "Nội dung gói",
        "------------",
        "documents/           Bản PDF, DOCX và tài liệu gửi kèm đúng như đã lưu trữ khi ban hành.",
        "documents.json       Từng tệp lưu trữ: SHA-256 ghi khi ban hành, tệp có còn khớp không.",
        "messages/            Từng thư điện tử đúng từng byte đã gửi (tệp .eml, mở bằng trình",
        "                     đọc thư). Tệp có đuôi .rebuilt.eml là bản dựng lại từ dữ liệu vì",
        "                     không còn bản gốc: cùng nội dung nhưng không cùng từng byte.",
        "messages.csv, .json  Mỗi thư: người nhận, Message-ID, trạng thái, số lần thử, phản hồi",
        "                     của máy chủ thư, SHA-256 ghi lúc gửi.",
        "smtp-replies.csv     Mọi lần gửi và phản hồi của máy chủ thư, theo nhật ký kiểm tra.",
        "confirmations.csv    Xác nhận đã nhận của từng đơn vị (ai, chức vụ, lúc nào, cách nào);",
        "confirmations.json   cùng nội dung, dạng JSON.",
        "events.csv           Các lần mở trang và tải tệp qua đường liên kết riêng của đơn vị.",
        "audit.jsonl          Các mục nhật ký kiểm tra của công văn, mỗi dòng một mục kèm mã băm.",
        "chain.json           Kết quả kiểm tra toàn bộ chuỗi băm lúc lập gói và mã băm mục cuối.",
        "status.json          Báo cáo trạng thái (như lệnh dispatch status --json).",
        "signatures/          Báo cáo kiểm tra từng chữ ký số của từng tệp PDF (của pyHanko, lập",
        "signatures.json      lúc lập gói): toàn vẹn, tin cậy, thay đổi sau khi ký.",
        f"{MANIFEST}      SHA-256 của mọi tệp trong gói.",
        "",
        "Cách kiểm tra",
        "-------------",
        f"1. Trong thư mục này, chạy: sha256sum -c {MANIFEST}",
        "   Mọi dòng phải báo OK: không tệp nào bị sửa sau khi lập gói.",
        "2. SHA-256 của tệp PDF trong documents/ phải bằng SHA-256 ghi ở trên, trong status.json",
        "   và trong mục dispatch.issued của audit.jsonl; SHA-256 của mỗi tệp .eml phải bằng",
        "   sent_sha256 trong messages.csv và sha256 trong mục message.sent của nhật ký.",
        "3. Mỗi mục nhật ký có hash = SHA-256(prev_hash + xuống dòng + JSON chuẩn của mục: at,",
        "   actor, action, object_type, object_id, dispatch_id, details; khoá xếp theo thứ tự,",
        "   UTF-8). Nhật ký gồm nhiều chuỗi song song (lane): mục sau mang prev_hash của mục",
        "   trước trong cùng chuỗi, nên sửa, xoá hay chèn một mục đều làm đứt chuỗi. Mỗi mục còn",
        "   mang mac = HMAC-SHA256(khoá nhật ký, hash); khoá được giữ ngoài cơ sở dữ liệu, nên",
        "   người sửa được cơ sở dữ liệu cũng không tính lại được. Lệnh dispatch audit verify",
        "   kiểm tra cả chuỗi, chữ ký và các điểm neo ghi hằng ngày (phát hiện mục bị cắt bớt).",
        "",
    ]
    if signatures:
        lines.append(
            f"Chữ ký số: {len(signatures)} chữ ký, mỗi chữ ký một báo cáo trong signatures/."
        )
    else:
        lines.append(
            "Chữ ký số: công văn ban hành không có chữ ký số, nên không có báo cáo kiểm tra."
        )
    lines.append("")
    if builder.problems:
        lines += ["CẢNH BÁO: phát hiện điểm không khớp khi lập gói", "-" * 46]
        lines += [f"- {problem}" for problem in builder.problems]
        lines.append("")
    if builder.rebuilt:
        lines.append(
            f"Lưu ý: {len(builder.rebuilt)} thư không còn bản gốc đã gửi, gói chứa bản dựng lại."
        )
        lines.append("")
    if not builder.problems:
        lines.append("Khi lập gói, mọi tệp khớp bản ghi và chuỗi nhật ký kiểm tra toàn vẹn.")
    return ("\n".join(lines) + "\n").encode()


def build_evidence(dispatch_id: int, *, at: dt.datetime) -> EvidencePackage:
    """The evidence package of an issued dispatch at moment ``at`` (reads only)."""
    dispatch = db.session.get(Dispatch, dispatch_id)
    if dispatch is None:
        raise EvidenceError(f"Không có công văn mã {dispatch_id}.")
    if dispatch.status is DispatchStatus.DRAFT or dispatch.number is None:
        raise EvidenceError(
            f"Công văn mã {dispatch_id} còn là bản nháp: chưa ban hành nên chưa có chứng cứ."
        )
    assert dispatch.issued_on is not None
    folder = f"{base_filename(dispatch.symbol, dispatch.number, dispatch.issued_on)}-chung-cu"
    builder = _Builder(folder, at)
    report = status.status_report(dispatch_id, at=at)
    codes = {
        recipient.id: recipient.province_code
        for recipient in db.session.execute(
            select(DispatchRecipient).where(DispatchRecipient.dispatch_id == dispatch_id)
        ).scalars()
    }
    documents = _documents(builder, dispatch)
    builder.add("documents.json", _json(documents))
    signatures = _signatures(builder, documents)
    _messages(builder, dispatch, codes)
    entries = _audit_entries(dispatch_id)
    _smtp_replies(builder, entries)
    _confirmations(builder, dispatch)
    _audit(builder, entries, at)
    builder.add("status.json", _json(report))
    # The README first in the listing, the manifest last; the manifest covers every other file.
    builder.files = {README: _readme(dispatch, builder, report, signatures), **builder.files}
    digests = {name: _sha256(data) for name, data in builder.files.items()}
    builder.add(MANIFEST, "".join(f"{d}  {n}\n" for n, d in digests.items()).encode())
    return EvidencePackage(
        folder=folder,
        data=builder.zip(),
        files=digests,
        problems=list(builder.problems),
        rebuilt=list(builder.rebuilt),
    )


def default_filename(package: EvidencePackage) -> str:
    """The zip's default name: the folder's."""
    return f"{package.folder}.zip"
