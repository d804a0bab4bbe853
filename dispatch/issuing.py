"""Issuing: number a draft in the outgoing register, render it once, archive it, queue its e-mails.

``issue_dispatch`` does it all in ONE database transaction, and commits it:

1. lock the dispatch row (PostgreSQL ``FOR UPDATE``; on SQLite a first write takes the database
   write lock, which serialises issuers the same way) and refuse anything but a draft;
2. check the letter source (before any number is taken, so a bad source costs no number);
3. take the next number of (register, year of issuing in Vietnam time) from ``RegisterCounter``:
   ``INSERT … ON CONFLICT DO NOTHING`` creates the counter, ``UPDATE … SET last_number =
   last_number + 1 … RETURNING`` takes the row lock and the number. A second issuer waits on
   that row until the first commits or rolls back, so numbers are unique and gapless;
4. render the PDF and the DOCX of the numbered, dated letter, once; or, when the agency's
   signing key is configured (``DISPATCH_AGENCY_KEY``), take the PDF the leader signed
   (``drafting.approval``), fill in its number and date and add the agency's signature with
   the seal (``signing.original.issue``), render only the DOCX, and sign each attached PDF
   (``signing.original.sign_attachment``): the archived PDF is the signed original;
5. write them (and the files the letter carries) to the archive, with a ``Document`` row each;
6. copy each recipient's address from the directory again, give it its confirmation token, and
   queue its letter e-mail in the outbox;
7. audit every step, and commit.

Any failure rolls everything back (the number included) and removes the files written.

The trade-off: the number is printed in the documents, so rendering (about a second) happens
while the counter row is locked; another issue in the same register and year waits that long.
Issuing is rare and the wait is short, and the alternative (render, then number) would need a
second render or a number that is not on the page.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dispatch import audit
from dispatch.archive import ArchivedFile, ArchiveError, ArchiveWriter
from dispatch.audit import actor_name
from dispatch.calendar import deadline_for
from dispatch.clock import format_local, local
from dispatch.directory import offices
from dispatch.drafting.drafts import (
    DispatchFrozen,
    DraftError,
    lock_dispatch,
)
from dispatch.drafting.uploads import human_size, letter_root, mail_max_bytes
from dispatch.drafting.word_import import ORIGINAL_FOLDER, original_path
from dispatch.extensions import db
from dispatch.letters import formatting
from dispatch.letters.model import Letter
from dispatch.letters.source import build_letter, source_from_json
from dispatch.mail import outbox
from dispatch.mail.links import assign_token
from dispatch.models import (
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
    MessageKind,
    Organisation,
    RegisterCounter,
    User,
)
from dispatch.signing import verification

PDF_MEDIA_TYPE = "application/pdf"
DOCX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


class IssueError(DraftError):
    """The dispatch cannot be issued; nothing was changed. The message is for clerks."""


class AlreadyIssued(IssueError, DispatchFrozen):
    """The dispatch was issued before."""


class ArchiveUnavailable(IssueError, ArchiveError):
    """The archive folder cannot be written: nothing was issued."""


class NotApproved(IssueError):
    """Signing is configured and the draft has no leader's approval to issue with."""


class SigningFailed(IssueError):
    """The agency's key, seal or signature failed: nothing was issued."""


class MailTooLarge(IssueError):
    """The letter's e-mail (PDF, DOCX and attachments) would pass DISPATCH_MAIL_MAX_BYTES."""


@dataclass(frozen=True)
class IssueResult:
    """What issuing did, for the CLI and the web to report."""

    dispatch_id: int
    number: int
    number_and_symbol: str
    issued_on: dt.date
    issued_at: dt.datetime
    deadline_at: dt.datetime
    pdf_sha256: str
    docx_sha256: str
    documents: tuple[ArchivedFile, ...]
    recipients: int
    queued: int
    placeholder_addresses: int
    # Offices whose directory record is not valid on the day of issue (warned, not refused).
    not_valid_on_issue_day: tuple[str, ...] = field(default=())
    # The PDF is the signed electronic original (the leader's and the agency's signatures).
    signed: bool = False


def _is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


def _lock_for_issue(dispatch_id: int, at: dt.datetime) -> Dispatch:
    """Lock the dispatch (and, on SQLite, the database for writing) and re-read it."""
    if not _is_postgres():
        # SQLite has no row locks and ignores FOR UPDATE. A write as the first statement makes
        # the driver BEGIN and take the database's write lock now, so that the status read below
        # cannot be overtaken by a concurrent issuer (BEGIN IMMEDIATE semantics).
        db.session.execute(
            update(Dispatch)
            .where(Dispatch.id == dispatch_id)
            .values(updated_at=at)
            .execution_options(synchronize_session=False)
        )
    return lock_dispatch(dispatch_id)


def take_number(register: str, year: int) -> int:
    """The next number of a register in a year, locking its counter until the transaction ends."""
    dialect = postgresql if _is_postgres() else sqlite
    db.session.execute(
        dialect.insert(RegisterCounter)
        .values(register=register, year=year, last_number=0)
        .on_conflict_do_nothing(index_elements=["register", "year"])
    )
    return db.session.execute(
        update(RegisterCounter)
        .where(RegisterCounter.register == register, RegisterCounter.year == year)
        .values(last_number=RegisterCounter.last_number + 1)
        .returning(RegisterCounter.last_number)
        .execution_options(synchronize_session=False)
    ).scalar_one()


def _refuse_backdating(register: str, year: int, at: dt.datetime) -> None:
    """Refuse a moment earlier than the register's last entry of the year: its numbers follow
    time. Called with the counter locked, so no other issuer can slip in between."""
    last = db.session.execute(
        select(Dispatch.issued_at, Dispatch.number, Dispatch.symbol)
        .where(
            Dispatch.register == register,
            Dispatch.register_year == year,
            Dispatch.issued_at.is_not(None),
        )
        .order_by(Dispatch.issued_at.desc())
        .limit(1)
    ).first()
    if last is not None and at < last.issued_at:
        raise IssueError(
            f"Không thể ban hành lúc {format_local(at)}: sổ {register} năm {year} đã có công văn "
            f"số {last.number:02d}/{last.symbol} ban hành lúc {format_local(last.issued_at)}. "
            "Số trong sổ đăng ký phải theo thứ tự thời gian."
        )


def _refuse_oversized_mail(dispatch_id: int, files: list[tuple[str, str, str, bytes]]) -> None:
    """Refuse a letter whose e-mail (its PDF, DOCX and attachments, as every office receives
    them) would pass ``DISPATCH_MAIL_MAX_BYTES``. Checked here as well as at upload: only now
    do the rendered documents exist, and the cap or the files may have changed since."""
    limit = mail_max_bytes()
    sizes = {kind: 0 for kind in ("pdf", "docx", "attachment")}
    for kind, _, _, data in files:
        sizes[kind] += len(data)
    total = sum(sizes.values())
    if total <= limit:
        return
    count = sum(1 for kind, *_ in files if kind == "attachment")
    raise MailTooLarge(
        f"Không ban hành được công văn mã {dispatch_id}: mỗi thư gửi tới nơi nhận sẽ dài "
        f"{human_size(total)} (bản PDF {human_size(sizes['pdf'])}, bản DOCX "
        f"{human_size(sizes['docx'])}, {count} tệp gửi kèm {human_size(sizes['attachment'])}), "
        f"vượt giới hạn {human_size(limit)} của một thư. Chưa lấy số nào; hãy gỡ bớt hoặc nén "
        "tệp gửi kèm rồi ban hành lại."
    )


def base_filename(symbol: str, number: int, issued_on: dt.date) -> str:
    """'CV-01-THH-VP-2021-11-15': the archived files' names without extension."""
    return f"CV-{number:02d}-{symbol.replace('/', '-')}-{issued_on.isoformat()}"


def _unique_name(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    counter = 2
    while True:
        candidate = f"{stem}-{counter}{dot}{ext}"
        if candidate not in taken:
            return candidate
        counter += 1


UNSIGNED_NOTICE = "Chưa cấu hình khoá ký số: văn bản được ban hành không ký số."


@dataclass(frozen=True)
class AgencySigning:
    """The agency's signing configuration: the key's reference and password, the time-stamp
    authority and revocation settings (``evidence``), the seal image. Only ever held for one
    issue; never stored or logged."""

    key: str
    password: str | None = field(repr=False)
    evidence: Any
    seal: bytes | None = field(repr=False)


def signing_configured() -> bool:
    """Whether the agency's key is configured: issued letters are then signed originals."""
    return bool(current_app.config.get("DISPATCH_AGENCY_KEY"))


def agency_signing() -> AgencySigning | None:
    """The agency's signing configuration, or None when no key is configured (letters are then
    issued unsigned). ``DISPATCH_AGENCY_SEAL`` names the seal's PNG (transparent background)."""
    from dispatch.signing.keys import SigningKeyError, check_signature_image
    from dispatch.signing.original import Evidence

    config = current_app.config
    key = config.get("DISPATCH_AGENCY_KEY")
    if not key:
        return None
    seal = None
    if seal_path := config.get("DISPATCH_AGENCY_SEAL"):
        try:
            seal = Path(seal_path).read_bytes()
            check_signature_image(seal)
        except OSError as exc:
            raise SigningFailed(
                f"Không đọc được ảnh con dấu {seal_path} (DISPATCH_AGENCY_SEAL): {exc.strerror}."
            ) from exc
        except SigningKeyError as exc:
            raise SigningFailed(
                f"Ảnh con dấu (DISPATCH_AGENCY_SEAL) không dùng được: "
                f"{str(exc).replace('Ảnh chữ ký', 'ảnh')}"
            ) from exc
    return AgencySigning(
        key=key,
        password=config.get("DISPATCH_AGENCY_KEY_PASSWORD"),
        evidence=Evidence.from_config(config),
        seal=seal,
    )


def refuse_unapproved(dispatch_id: int) -> None:
    """Before any other check: with the agency's key configured, ``NotApproved`` for a draft
    its leader has not signed (issuing would refuse it anyway, after the other questions)."""
    from dispatch.drafting import approval
    from dispatch.models import ApprovalStatus

    if not signing_configured():
        return
    current = approval.open_approval(dispatch_id)
    if current is None or current.status is not ApprovalStatus.APPROVED:
        try:
            approval.approved_pdf(dispatch_id)
        except approval.NotApproved as exc:
            raise NotApproved(str(exc)) from exc


def _approved(dispatch_id: int) -> tuple[int, bytes]:
    """The draft's approval id and the PDF its leader signed; ``NotApproved`` without one."""
    from dispatch.drafting import approval

    try:
        row, pdf = approval.approved_pdf(dispatch_id)
    except approval.NotApproved as exc:
        raise NotApproved(str(exc)) from exc
    except approval.ApprovalError as exc:
        raise SigningFailed(str(exc)) from exc
    return row.id, pdf


def _render_docx(letter: Letter) -> bytes:
    from dispatch.letters.docx import render_docx

    return render_docx(letter)


def _render(letter: Letter, verify_url: str) -> tuple[bytes, bytes]:
    """The PDF (with the QR code of its verification page) and the DOCX of the letter."""
    # Imported here: WeasyPrint takes about a second to import, and only issuing needs it.
    from dispatch.letters.docx import render_docx
    from dispatch.letters.pdf import RenderError, render_pdf

    try:
        return render_pdf(letter, verify_url=verify_url), render_docx(letter)
    except RenderError as exc:
        raise IssueError(f"Không tạo được bản PDF của công văn: {exc}") from exc


def issue_dispatch(dispatch_id: int, *, actor: User | None, at: dt.datetime) -> IssueResult:
    """Number, render, archive, freeze and queue a draft at ``at``; commits on its own.

    It commits because it alone knows the archived files: they are removed if the transaction
    fails, so the number, the files and the queued e-mails exist together or not at all.

    Raises ``AlreadyIssued`` for a dispatch that is not a draft, ``IssueError`` (among them
    ``ArchiveUnavailable``) when it cannot be issued, ``LetterSourceError`` for a bad source; in
    every case the database and the archive are left as they were.
    """
    who = actor_name(actor)
    writer: ArchiveWriter | None = None
    # Audit entries are appended last: on PostgreSQL appending takes a lock that serialises all
    # audited writes, and it should not be held while the letter renders.
    entries: list[dict[str, Any]] = []
    originals: ArchiveWriter | None = None
    stack = contextlib.ExitStack()
    try:
        dispatch = _lock_for_issue(dispatch_id, at)
        if dispatch.status is not DispatchStatus.DRAFT:
            raise AlreadyIssued(
                f"Công văn mã {dispatch_id} đã được ban hành (số {dispatch.number_and_symbol} "
                f"ngày {dispatch.issued_on:%d/%m/%Y}), không ban hành lại được."
            )
        # Counted, not loaded: a national directory has ~10,000 offices (see _freeze_recipients).
        recipients = db.session.execute(
            select(func.count())
            .select_from(DispatchRecipient)
            .where(DispatchRecipient.dispatch_id == dispatch.id)
        ).scalar_one()
        if not recipients:
            raise IssueError(f"Công văn mã {dispatch_id} chưa có nơi nhận, không thể ban hành.")

        letter = build_letter(
            source_from_json(dispatch.source, origin=f"bản nháp {dispatch_id}"),
            # Files uploaded through the web composer live in the draft's own folder.
            project_root=letter_root(dispatch_id),
        )
        # Signed or not is settled before a number is taken: an unapproved draft costs none.
        agency = agency_signing()
        approval_id, approved = _approved(dispatch_id) if agency is not None else (None, None)
        issued_on = local(at).date()
        deadline_at = deadline_for(
            at, working_days=dispatch.deadline_working_days, hour=dispatch.deadline_hour
        )

        number = take_number(dispatch.register, issued_on.year)
        _refuse_backdating(dispatch.register, issued_on.year, at)
        entries.append(
            {
                "action": "register.number_taken",
                "object_type": "register",
                "object_id": f"{dispatch.register}/{issued_on.year}",
                "details": {
                    "register": dispatch.register,
                    "year": issued_on.year,
                    "number": number,
                },
            }
        )
        issued = letter.issued_as(number, issued_on)
        if agency is None:
            pdf, docx = _render(issued, verification.verify_url(dispatch, current_app.config))
            agency_signer = None
        else:
            from dispatch.signing import keys

            docx = _render_docx(issued)
            try:
                agency_signer = stack.enter_context(keys.open_signer(agency.key, agency.password))
            except keys.SigningKeyError as exc:
                raise SigningFailed(f"Không mở được khoá ký số của cơ quan: {exc}") from exc
            pdf = _signed(
                lambda original: original.issue(
                    approved,
                    agency_signer,
                    **original.printed_lines(issued),
                    at=at,
                    seal=agency.seal,
                    evidence=agency.evidence,
                )
            )

        writer = ArchiveWriter(dispatch.id)
        base = base_filename(dispatch.symbol, number, issued_on)
        files: list[tuple[str, str, str, bytes]] = [
            ("pdf", f"{base}.pdf", PDF_MEDIA_TYPE, pdf),
            ("docx", f"{base}.docx", DOCX_MEDIA_TYPE, docx),
        ]
        taken = {name for _, name, _, _ in files}
        for attachment in issued.attachments:
            try:
                data = attachment.path.read_bytes()
            except OSError as exc:
                raise IssueError(
                    f"Không đọc được tệp gửi kèm {attachment.name}: {exc.strerror}."
                ) from exc
            name = _unique_name(attachment.name, taken)
            taken.add(name)
            if agency_signer is not None and attachment.media_type == PDF_MEDIA_TYPE:
                data = _signed(
                    lambda original, data=data: original.sign_attachment(
                        data,
                        agency_signer,
                        number_symbol=formatting.number_and_symbol(issued),
                        at=at,
                        evidence=agency.evidence,
                    ),
                    what=f"tệp gửi kèm {attachment.name}",
                )
            files.append(("attachment", name, attachment.media_type, data))
        _refuse_oversized_mail(dispatch_id, files)

        archived: list[ArchivedFile] = []
        for kind, name, media_type, data in files:
            try:
                stored = writer.write(name, data)
            except ArchiveError as exc:
                raise ArchiveUnavailable(str(exc)) from exc
            archived.append(stored)
            db.session.add(
                Document(
                    dispatch_id=dispatch.id,
                    kind=kind,
                    filename=stored.filename,
                    media_type=media_type,
                    sha256=stored.sha256,
                    size=stored.size,
                    path=stored.path,
                    created_at=at,
                )
            )
            entries.append(
                {
                    "action": "document.archived",
                    "object_type": "document",
                    "object_id": stored.path,
                    "details": {
                        "kind": kind,
                        "filename": stored.filename,
                        "sha256": stored.sha256,
                        "size": stored.size,
                    },
                }
            )

        # The Word file the letter was imported from is kept with the dispatch, read-only,
        # beside what was sent (not sent itself: the letter was rendered again from the draft).
        original = original_path(dispatch_id)
        if original is not None:
            originals = ArchiveWriter(dispatch.id, ORIGINAL_FOLDER)
            try:
                kept = originals.write(original.name, original.read_bytes())
            except (ArchiveError, OSError) as exc:
                raise ArchiveUnavailable(str(exc)) from exc
            entries.append(
                {
                    "action": "document.archived",
                    "object_type": "document",
                    "object_id": kept.path,
                    "details": {
                        "kind": "original",
                        "filename": kept.filename,
                        "sha256": kept.sha256,
                        "size": kept.size,
                    },
                }
            )

        dispatch.status = DispatchStatus.ISSUED
        dispatch.number = number
        dispatch.register_year = issued_on.year
        dispatch.issued_on = issued_on
        dispatch.issued_at = at
        dispatch.issued_by_id = actor.id if actor is not None else None
        dispatch.deadline_at = deadline_at
        dispatch.signed = agency is not None
        dispatch.updated_at = at
        db.session.flush()

        queued, placeholders, stale = _freeze_recipients(dispatch, issued_on, entries, at)

        number_and_symbol = dispatch.number_and_symbol or ""
        pdf_sha256, docx_sha256 = archived[0].sha256, archived[1].sha256
        entries.append(
            {
                "action": "dispatch.issued",
                "object_type": "dispatch",
                "object_id": dispatch.id,
                "details": {
                    "number": number_and_symbol,
                    "register": dispatch.register,
                    "year": issued_on.year,
                    "issued_on": issued_on.isoformat(),
                    "deadline_at": deadline_at.isoformat(),
                    "pdf_sha256": pdf_sha256,
                    "docx_sha256": docx_sha256,
                    "documents": {doc.filename: doc.sha256 for doc in archived},
                    "recipients": recipients,
                    "letters_queued": queued,
                    "signed": agency is not None,
                    "approval_id": approval_id,
                },
            }
        )
        for entry in entries:
            audit.record(entry.pop("action"), actor=who, at=at, dispatch_id=dispatch.id, **entry)
        db.session.commit()
    except BaseException:
        # BaseException too: WeasyPrint's fatal fetch error and Ctrl-C must not leave files.
        db.session.rollback()
        for written in (writer, originals):
            if written is not None:
                written.discard()
        raise
    finally:
        stack.close()  # the agency's key (a PKCS#11 session) is closed whatever happened
    return IssueResult(
        dispatch_id=dispatch_id,
        number=number,
        number_and_symbol=number_and_symbol,
        issued_on=issued_on,
        issued_at=at,
        deadline_at=deadline_at,
        pdf_sha256=pdf_sha256,
        docx_sha256=docx_sha256,
        documents=tuple(archived),
        recipients=recipients,
        queued=queued,
        placeholder_addresses=placeholders,
        not_valid_on_issue_day=tuple(stale),
        signed=agency is not None,
    )


def _signed(sign, what: str = "công văn") -> bytes:
    """``sign(original)``'s bytes; a signing failure becomes ``SigningFailed`` (Vietnamese)."""
    from dispatch.signing import original, pades

    try:
        return sign(original)
    except pades.SigningError as exc:
        raise SigningFailed(f"Không ký số được {what}: {exc}") from exc
    except Exception as exc:  # pyHanko and the token raise many kinds; no secret is in them
        raise SigningFailed(f"Không ký số được {what}: {type(exc).__name__}.") from exc


# Recipients frozen and queued at a time: memory stays flat for any number of offices.
FREEZE_CHUNK = 500


def _freeze_recipients(
    dispatch: Dispatch, issued_on: dt.date, entries: list[dict[str, Any]], at: dt.datetime
) -> tuple[int, int, list[str]]:
    """Copy the addresses again, assign tokens and queue one letter e-mail per recipient.

    A chunk of recipients at a time, with their offices, and one INSERT for each chunk's
    e-mails: issuing to a national directory (~10,000 offices) neither holds every ORM object
    at once nor makes one round trip per e-mail (bench/issue_10000).
    """
    queued = placeholders = 0
    stale: list[str] = []
    last_id = 0
    while True:
        chunk = db.session.execute(
            select(DispatchRecipient, Organisation)
            .join(Organisation, Organisation.id == DispatchRecipient.organisation_id)
            .where(DispatchRecipient.dispatch_id == dispatch.id, DispatchRecipient.id > last_id)
            .order_by(DispatchRecipient.id)
            .limit(FREEZE_CHUNK)
        ).all()
        if not chunk:
            break
        letters: list[tuple[int, list[str], list[str]]] = []
        for recipient, org in chunk:
            before = {"name": recipient.name, "email": recipient.email, "cc": list(recipient.cc)}
            recipient.name = org.name
            recipient.province_code = org.province_code
            recipient.email = org.email
            recipient.cc = list(org.cc or [])
            after = {"name": recipient.name, "email": recipient.email, "cc": list(recipient.cc)}
            if after != before:
                entries.append(
                    {
                        "action": "recipient.address_updated",
                        "object_type": "dispatch_recipient",
                        "object_id": recipient.id,
                        "details": {
                            key: {"from": before[key], "to": after[key]}
                            for key in after
                            if after[key] != before[key]
                        },
                    }
                )
            if org.email_is_placeholder:
                placeholders += 1
            if not offices.valid_on(org, issued_on):
                stale.append(org.province_code)
            assign_token(recipient)
            letters.append((recipient.id, [recipient.email], list(recipient.cc)))
        db.session.flush()  # this chunk's addresses and tokens, before its e-mails
        queued += outbox.enqueue_many(
            dispatch_id=dispatch.id, kind=MessageKind.LETTER, messages=letters, at=at
        )
        last_id = chunk[-1][0].id
        del chunk, letters  # nothing else holds them: the session keeps only weak references
    db.session.flush()
    entries.append(
        {
            "action": "outbox.letters_queued",
            "object_type": "dispatch",
            "object_id": dispatch.id,
            "details": {
                "queued": queued,
                "placeholder_addresses": placeholders,
                "not_valid_on_issue_day": stale,
            },
        }
    )
    return queued, placeholders, stale


# --- before issuing: the date that will be printed, and offices that no longer exist -----------


@dataclass(frozen=True)
class StaleRecipient:
    """A recipient whose office is no longer valid on the issuing day, and who answers for it."""

    recipient_id: int
    code: str
    name: str
    successors: tuple[tuple[str, str], ...]  # (province code, name), each valid that day
    successor_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class IssueCheck:
    """What a clerk must see and confirm before issuing on ``printed_on``."""

    printed_on: dt.date
    draft_date: str  # the letter's date as the draft gives it: "11/2021", "15/11/2021" or ""
    date_differs: bool
    stale: tuple[StaleRecipient, ...]

    @property
    def printed_text(self) -> str:
        """The printed date as clerks read it: dd/mm/yyyy."""
        return f"{self.printed_on:%d/%m/%Y}"

    @property
    def confirmation_token(self) -> str:
        """What a confirming form sends back: the date it was shown."""
        return self.printed_on.isoformat()


def _draft_date(value: Any) -> tuple[str, tuple[int, ...] | None]:
    """The draft's date as clerks read it, and its (year, month[, day]) to compare."""
    text = str(value or "").strip()
    parts = text.split("-")
    if len(parts) in (2, 3) and all(part.isdigit() for part in parts):
        numbers = tuple(int(part) for part in parts)
        shown = "/".join(f"{n:02d}" for n in reversed(numbers[1:])) + f"/{numbers[0]}"
        return shown, numbers
    return text, None


def check_before_issue(dispatch_id: int, at: dt.datetime) -> IssueCheck:
    """The date issuing at ``at`` prints, whether it differs from the draft's own date (its day,
    or its month when it gives only the month), and the recipients no longer valid that day
    with their successors (``directory.offices``)."""
    dispatch = db.session.get(Dispatch, dispatch_id)
    if dispatch is None:
        raise IssueError(f"Không có công văn mã {dispatch_id}.")
    printed_on = local(at).date()
    meta = (dispatch.source or {}).get("meta") or {}
    shown, numbers = _draft_date(meta.get("date"))
    differs = False
    if numbers is not None:
        issued = (printed_on.year, printed_on.month, printed_on.day)[: len(numbers)]
        differs = issued != numbers
    stale: list[StaleRecipient] = []
    for recipient, org in db.session.execute(
        select(DispatchRecipient, Organisation)
        .join(Organisation, Organisation.id == DispatchRecipient.organisation_id)
        .where(DispatchRecipient.dispatch_id == dispatch_id)
        .order_by(DispatchRecipient.province_code, DispatchRecipient.id)
    ).all():
        if offices.valid_on(org, printed_on):
            continue
        successors = offices.successors_on(org, printed_on)
        stale.append(
            StaleRecipient(
                recipient.id,
                org.province_code,
                org.name,
                tuple((s.province_code, s.name) for s in successors),
                tuple(s.id for s in successors),
            )
        )
    return IssueCheck(printed_on, shown, differs, tuple(stale))


def readdress_to_successors(dispatch_id: int, *, actor: User | None, at: dt.datetime) -> int:
    """Replace a draft's recipients that are no longer valid on the issuing day by the offices
    that answer for them that day, each once (an office already addressed is not added again);
    audited; the caller commits. Returns how many recipients were replaced."""
    from dispatch.drafting import drafts
    from dispatch.drafting.drafts import ensure_editable, lock_dispatch

    dispatch = lock_dispatch(dispatch_id)
    ensure_editable(dispatch, letter=False)
    check = check_before_issue(dispatch_id, at)
    if not check.stale:
        return 0
    stale_ids = {item.recipient_id for item in check.stale}
    keep = [r.organisation_id for r in dispatch.recipients if r.id not in stale_ids]
    codes = {code for item in check.stale for code, _ in item.successors}
    added = {org_id for item in check.stale for org_id in item.successor_ids} - set(keep)
    drafts.readdress(dispatch, [*keep, *sorted(added)], actor=actor, at=at)
    audit.record_dispatch(
        "dispatch.readdressed",
        dispatch_id,
        actor=actor_name(actor),
        at=at,
        details={
            "on": check.printed_on.isoformat(),
            "replaced": [item.code for item in check.stale],
            "by": sorted(codes),
        },
    )
    return len(check.stale)


# --- placeholder addresses: issuing to them needs its own confirmation ----------------------


def placeholder_recipients(dispatch_id: int) -> list[str]:
    """The draft's offices whose address is still a placeholder (the reserved ``.example``
    domain), by name: mail to them reaches nobody, so every door asks for a confirmation."""
    return list(
        db.session.execute(
            select(Organisation.name)
            .join(DispatchRecipient, DispatchRecipient.organisation_id == Organisation.id)
            .where(
                DispatchRecipient.dispatch_id == dispatch_id,
                Organisation.email_is_placeholder.is_(True),
            )
            .order_by(DispatchRecipient.province_code, DispatchRecipient.id)
        ).scalars()
    )


def placeholders_refusal(count: int, how: str) -> str:
    """Why issuing waits: ``count`` recipients use placeholder addresses; ``how`` says how the
    door confirms it."""
    return (
        f"{count} nơi nhận đang dùng địa chỉ tạm (tên miền .example), thư tới đó sẽ không đến "
        f"ai: {how} để vẫn ban hành, hoặc nhập địa chỉ thật vào danh bạ trước."
    )
