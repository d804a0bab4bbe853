"""Composing the e-mails: the letter, the reminder and the escalation, from an outbox row.

``compose(row)`` builds a Flask-Mail ``Message`` from the database as it is when the message
leaves (so a resend carries the same archived bytes and the same Message-ID). Templates under
``templates/mail/`` get plain data, never ORM objects; the HTML ones are autoescaped.

What each kind carries:

* LETTER: the archived PDF and DOCX and every archived attachment, exactly the archived bytes;
* REMINDER: the archived PDF only (so whoever lost the first e-mail still has the letter) and the
  personal link, where the DOCX and the attachments can be downloaded again;
* ESCALATION: no file, the table of the offices that have not confirmed.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import secrets
import unicodedata
from dataclasses import dataclass
from email import policy
from email.charset import QP, Charset
from email.encoders import encode_base64
from email.generator import BytesGenerator
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import (
    encode_rfc2231,
    format_datetime,
    formataddr,
    formatdate,
    make_msgid,
    parseaddr,
)
from functools import lru_cache, partial
from typing import Any

import flask_mail
from flask import current_app, render_template
from flask_mail import Attachment, Message, sanitize_address
from sqlalchemy import func, select

from dispatch.archive import ArchiveError, read_archived
from dispatch.clock import VN, format_local
from dispatch.extensions import db
from dispatch.mail.links import confirmation_url
from dispatch.mail.verp import bounce_address
from dispatch.models import (
    DeliveryStatus,
    Dispatch,
    DispatchRecipient,
    Document,
    MessageKind,
    OutboxMessage,
)

# What a clerk reads for each state of a letter's e-mail.
DELIVERY_LABELS = {
    DeliveryStatus.QUEUED: "Đang chờ gửi",
    DeliveryStatus.SENDING: "Đang gửi",
    DeliveryStatus.SENT: "Đã gửi",
    DeliveryStatus.RETRYING: "Đang thử gửi lại",
    DeliveryStatus.FAILED: "Gửi thất bại",
    DeliveryStatus.CANCELLED: "Đã huỷ",
    DeliveryStatus.BOUNCED: "Bị trả lại",
}

# Only for a source without its issuing agency (every real source names it).
DEFAULT_AGENCY = "Cục Tin học hoá"

# Attachment order in the e-mail: the letter, its editable copy, then the files it carries.
_DOCUMENT_ORDER = {"pdf": 0, "docx": 1}

_HEADER_BREAKS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_SPACES = re.compile(r"\s+")


# Flask-Mail serialises with ``policy.SMTP``, whose re-folding of long encoded headers drops or
# moves spaces in Vietnamese text ("tại địa phương" → "tạiđịa phương", "thành ph ố"); measured
# with Python 3.11 on the 63 directory names. compat32 with CRLF folds only at whitespace.
class _WirePolicy(policy.Compat32):
    """compat32, writing a short one-line ASCII header as it is without building a ``Header``.

    compat32 turns every header into an ``email.header.Header`` to fold it, which for a header
    that needs no folding nor encoding gives back the same text; doing that for the ~30 headers
    of a message was a sixth of the cost of sending it (bench/issue_63).
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (
            isinstance(value, str)
            and value.isascii()
            and len(name) + 2 + len(value) <= (self.max_line_length or 0)
            and "\r" not in value
            and "\n" not in value
            # compat32 drops a trailing blank: leave the edges to it.
            and value[:1] not in (" ", "\t")
            and value[-1:] not in (" ", "\t")
        ):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


_WIRE_POLICY = _WirePolicy(linesep="\r\n", mangle_from_=False)


def format_address(value: str | tuple[str, str]) -> str:
    """'Name <addr>' for a header; a non-ASCII name becomes ONE RFC 2047 encoded-word.

    One word, because Python's own parser reads the space between two encoded-words of a name
    as a space ("Truyền thông  thành phố"), and splitting inside a word shows up as "ph ố".
    """
    name, address = (value if isinstance(value, tuple) else parseaddr(value))[:2]
    name, address = header_text(name or ""), header_text(address)
    if not address.isascii() and "@" in address:
        local, domain = address.rsplit("@", 1)
        address = f"{local}@{domain.encode('idna').decode('ascii')}"
    if not name:
        return address
    return formataddr((name, address), charset="utf-8")


class _OneLine:
    """A header value written as it is, never folded (the Message-ID has no place to fold)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def encode(self, linesep: str = "\n", maxlinelen: int | None = None) -> str:
        return self.value

    def __str__(self) -> str:
        return self.value


_LINE_ENDS = re.compile(r"\r\n|\r|\n")


class _WireGenerator(BytesGenerator):
    """``BytesGenerator`` writing each body in one piece: the same bytes, several times faster.

    The standard generator writes a body line by line, each line then its line end; a letter's
    PDF and DOCX are ~1,400 base64 lines, and writing them one by one was the largest cost of
    sending a message (bench/issue_63). Replacing the line ends in one pass writes the same bytes.
    """

    def _write_lines(self, lines: str) -> None:
        if lines:
            self.write(_LINE_ENDS.sub(self._NL, lines))

    def flatten(self, msg: Any, unixfrom: bool = False, linesep: str | None = None) -> None:
        """Write ``msg``; a shared attachment part is written from its bytes kept on it."""
        wire = getattr(msg, "_wire_bytes", None)
        if wire is not None and not unixfrom and (linesep or self.policy.linesep) == "\r\n":
            self._fp.write(wire)
            return
        super().flatten(msg, unixfrom=unixfrom, linesep=linesep)


@lru_cache(maxsize=64)
def _encoded_subject(subject: str) -> _OneLine:
    """A non-ASCII subject as ``_WIRE_POLICY`` writes it (RFC 2047 words, folded), encoded once:
    every letter of a dispatch has the same subject."""
    header = Header(subject, "utf-8", header_name="Subject")
    return _OneLine(
        header.encode(linesep=_WIRE_POLICY.linesep, maxlinelen=_WIRE_POLICY.max_line_length)
    )


# Flask-Mail gives every new Message a Message-ID of its own from ``make_msgid()``, which looks
# this host's name up (``socket.getfqdn``: a reverse DNS query where /etc/hosts does not know
# it) for every e-mail. Ours replace it at once with the outbox row's, so the look-up is pure
# cost, and on a host whose reverse DNS is slow or broken it would hold up every e-mail of a
# run by the resolver's time-out. Flask-Mail's throw-away ids get a fixed domain instead.
flask_mail.make_msgid = partial(make_msgid, domain="dispatch.invalid")


class OfficialMessage(Message):
    """A Flask-Mail message whose headers keep Vietnamese text intact on the wire."""

    def as_bytes(self) -> bytes:
        """The message as sent: what ``Message.as_bytes`` gives, written by ``_WireGenerator``."""
        msg = self._message()
        out = io.BytesIO()
        _WireGenerator(out, mangle_from_=False, policy=msg.policy).flatten(msg, unixfrom=False)
        return out.getvalue()

    def _mimetext(self, text: str | None, subtype: str = "plain") -> MIMEText:
        # Flask-Mail registers utf-8 with no body encoding, i.e. raw 8-bit lines; quoted-
        # printable keeps the message 7-bit clean for any relay on the way.
        charset = Charset("utf-8")
        charset.body_encoding = QP
        return MIMEText(text or "", _subtype=subtype, _charset=charset)  # type: ignore[arg-type]

    def _message(self) -> MIMEBase:
        if self.alts:
            msg = self._multipart()
        else:  # no HTML: the shapes Flask-Mail builds, with our headers put in
            msg = super()._message()
            self._put_headers(msg, replace=True)
        msg.policy = _WIRE_POLICY
        for part in msg.walk():
            if part.is_multipart() and part.get_boundary() is None:
                # Chosen here, the generator need not search the whole flattened message for
                # it (as it does for a boundary it picks itself); 128 random bits cannot occur
                # in a body by chance, and base64 lines never start with "--". Short enough for
                # its Content-Type line to need no folding (``_WirePolicy``).
                part.set_boundary(f"=_{secrets.token_urlsafe(16)}")
        return msg

    def _multipart(self) -> MIMEBase:
        """What Flask-Mail builds for a message with an HTML body, built here.

        The same tree and headers in the same order (multipart/mixed holding the text and
        HTML alternatives, then the attachments), without Flask-Mail's own Subject, From and
        To that were replaced at once (computing them was a tenth of a message's cost), and
        with each attachment's part built once per file (``_part``).
        """
        msg = MIMEMultipart()
        alternative = MIMEMultipart("alternative")
        alternative.attach(self._mimetext(self.body, "plain"))
        for mimetype, content in self.alts.items():
            alternative.attach(self._mimetext(content, mimetype))
        msg.attach(alternative)
        self._put_headers(msg, replace=False)
        for attachment in self.attachments or []:
            msg.attach(_part(attachment))
        return msg

    def _put_headers(self, msg: MIMEBase, *, replace: bool) -> None:
        """Subject, From, To, Date, Message-ID and Cc as they go on the wire, then Reply-To and
        the extra headers; ``replace``: put ours in place of those Flask-Mail wrote."""
        put = msg.replace_header if replace else msg.__setitem__
        if self.subject:
            subject = header_text(self.subject)
            put("Subject", subject if subject.isascii() else _encoded_subject(subject))
        put("From", format_address(self.sender))
        put("To", ", ".join(format_address(a) for a in self.recipients))
        if self.date is not None:
            # In Vietnam time, as the recipients read it (Flask-Mail uses the machine's zone).
            put("Date", format_datetime(dt.datetime.fromtimestamp(self.date, VN)))
        elif not replace:
            put("Date", formatdate(None, localtime=True))
        put("Message-ID", _OneLine(header_text(self.msgId)))
        if self.cc:
            put("Cc", ", ".join(format_address(a) for a in self.cc))
        if replace:
            return  # Flask-Mail wrote the rest
        if self.reply_to:
            msg["Reply-To"] = sanitize_address(self.reply_to, self.charset or "utf-8")
        for key, value in (self.extra_headers or {}).items():
            msg[key] = value


class ComposeError(RuntimeError):
    """The e-mail cannot be built (an archived file is missing or its bytes changed)."""


def header_text(value: str) -> str:
    """NFC text on one line: CR, LF and other control characters become spaces."""
    value = unicodedata.normalize("NFC", value)
    return _SPACES.sub(" ", _HEADER_BREAKS.sub(" ", value)).strip()


def letter_title(dispatch: Dispatch) -> str:
    """'Công văn số 01/THH-VP ngày 15/11/2021 V/v <trích yếu>'."""
    number = dispatch.number_and_symbol or f"/{dispatch.symbol}"
    date = f" ngày {dispatch.issued_on:%d/%m/%Y}" if dispatch.issued_on else ""
    return header_text(f"Công văn số {number}{date} V/v {dispatch.subject}")


def subject_for(kind: MessageKind, dispatch: Dispatch) -> str:
    """The subject line of each kind of e-mail."""
    title = letter_title(dispatch)
    if kind is MessageKind.REMINDER:
        return f"Nhắc: xác nhận đã nhận {title}"
    if kind is MessageKind.ESCALATION:
        return f"Quá hạn xác nhận: {title}"
    return title


def _address(value: str) -> str:
    """The bare address of ``value`` ('Name <a@b>' or 'a@b'), on one line."""
    return parseaddr(header_text(value))[1] or header_text(value)


def issuing_agency(dispatch: Dispatch) -> str:
    """The issuing agency's name as the letter's source writes it ("Cục Tin học hoá")."""
    source = dispatch.source if isinstance(dispatch.source, dict) else {}
    meta = source.get("meta")  # the shape of dispatch.letters.source.source_to_json
    name = meta.get("issuing_agency") if isinstance(meta, dict) else None
    if isinstance(name, str) and name.strip():
        return header_text(name)
    return DEFAULT_AGENCY


@dataclass(frozen=True)
class _Contact:
    agency: str
    sender: str
    clerk_name: str | None
    clerk_email: str | None


def _contact(dispatch: Dispatch) -> _Contact:
    issuer = dispatch.issued_by or dispatch.created_by
    return _Contact(
        agency=issuing_agency(dispatch),
        sender=_address(_sender_text()),
        clerk_name=(issuer.name or None) if issuer else None,
        clerk_email=issuer.email if issuer else None,
    )


def _sender_text() -> str:
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    if isinstance(sender, tuple | list):
        return f"{sender[0]} <{sender[1]}>"
    return str(sender)


def _letter_context(dispatch: Dispatch) -> dict[str, Any]:
    return {
        "dispatch_id": dispatch.id,
        "number": dispatch.number_and_symbol or "",
        "issued_on": dispatch.issued_on.strftime("%d/%m/%Y") if dispatch.issued_on else "",
        "subject": unicodedata.normalize("NFC", dispatch.subject),
        "title": letter_title(dispatch),
        "deadline": format_local(dispatch.deadline_at),
        "contact": _contact(dispatch),
        "base_url": current_app.config["BASE_URL"],
    }


def _read_document(document: Document | _Doc) -> bytes:
    """The archived bytes of ``document``, checked against the SHA-256 recorded at issue."""
    try:
        return read_archived(document.path, document.sha256)
    except ArchiveError as exc:
        raise ComposeError(f"archived file {document.path} unreadable: {exc}") from exc


class _SharedAttachment(Attachment):
    """An attachment whose MIME part is built once and shared by every message carrying it."""

    part: MIMEBase | None = None


def _part(attachment: Attachment) -> MIMEBase:
    """The MIME part of an attachment, as Flask-Mail builds it (filename given in headers)."""
    if isinstance(attachment, _SharedAttachment) and attachment.part is not None:
        return attachment.part
    part = MIMEBase(*attachment.content_type.split("/"))
    part.set_payload(attachment.data)
    encode_base64(part)
    for key, value in attachment.headers.items():
        part.add_header(key, value)
    if isinstance(attachment, _SharedAttachment):
        # Every message carrying it writes the same bytes for it: write them once, keep them
        # on the part (``_WireGenerator.flatten`` writes them as they are).
        out = io.BytesIO()
        _WireGenerator(out, mangle_from_=False, policy=_WIRE_POLICY).flatten(part)
        part._wire_bytes = out.getvalue()  # type: ignore[attr-defined]
        attachment.part = part
    return part


def _attachment(document: Document | _Doc) -> Attachment:
    """The document as a MIME part, named in UTF-8 per RFC 2231."""
    name = header_text(document.filename)
    # Flask-Mail labels non-ASCII names "UTF8"; we write the registered "utf-8" ourselves.
    disposition = f"attachment; filename*={encode_rfc2231(name, 'utf-8')}"
    if name.isascii():
        disposition = f'attachment; filename="{name}"'
    return _SharedAttachment(
        filename=None,
        content_type=document.media_type,
        data=_read_document(document),
        headers={"Content-Disposition": disposition},
    )


def _documents(dispatch: Dispatch, kinds: set[str] | None) -> list[Document]:
    documents = db.session.execute(
        select(Document).where(Document.dispatch_id == dispatch.id).order_by(Document.id)
    ).scalars()
    chosen = [doc for doc in documents if kinds is None or doc.kind in kinds]
    return sorted(chosen, key=lambda doc: (_DOCUMENT_ORDER.get(doc.kind, 2), doc.id))


def letter_delivery_status(recipient_id: int) -> DeliveryStatus | None:
    """The state of the recipient's letter e-mail (its latest LETTER row), None if none."""
    return db.session.execute(
        select(OutboxMessage.status)
        .where(
            OutboxMessage.recipient_id == recipient_id,
            OutboxMessage.kind == MessageKind.LETTER,
        )
        .order_by(OutboxMessage.sequence.desc())
        .limit(1)
    ).scalar_one_or_none()


def _reminder_number(row: OutboxMessage) -> int:
    """Which reminder this is for its recipient: 1 for the first."""
    return db.session.execute(
        select(func.count())
        .select_from(OutboxMessage)
        .where(
            OutboxMessage.recipient_id == row.recipient_id,
            OutboxMessage.kind == MessageKind.REMINDER,
            OutboxMessage.sequence <= row.sequence,
        )
    ).scalar_one()


def _sent_reminders(recipient_ids: list[int]) -> dict[int, int]:
    if not recipient_ids:
        return {}
    rows = db.session.execute(
        select(OutboxMessage.recipient_id, func.count())
        .where(
            OutboxMessage.recipient_id.in_(recipient_ids),
            OutboxMessage.kind == MessageKind.REMINDER,
            OutboxMessage.status == DeliveryStatus.SENT,
        )
        .group_by(OutboxMessage.recipient_id)
    ).all()
    return {recipient_id: count for recipient_id, count in rows}


def unconfirmed_recipients(dispatch: Dispatch) -> list[dict[str, Any]]:
    """Every recipient that has not confirmed, as plain rows for the escalation's table."""
    recipients = (
        db.session.execute(
            select(DispatchRecipient)
            .where(
                DispatchRecipient.dispatch_id == dispatch.id,
                DispatchRecipient.acknowledged_at.is_(None),
            )
            .order_by(DispatchRecipient.province_code, DispatchRecipient.id)
        )
        .scalars()
        .all()
    )
    reminders = _sent_reminders([r.id for r in recipients])
    rows = []
    for recipient in recipients:
        status = letter_delivery_status(recipient.id)
        rows.append(
            {
                "code": recipient.province_code,
                "name": unicodedata.normalize("NFC", recipient.name),
                "email": recipient.email,
                "delivery": status.value if status else "",
                "delivery_label": DELIVERY_LABELS[status] if status else "Chưa xếp hàng gửi",
                "opened": format_local(recipient.opened_at),
                "reminders": reminders.get(recipient.id, 0),
                "reminders_stopped": recipient.reminders_stopped,
            }
        )
    return rows


def _render(name: str, context: dict[str, Any]) -> tuple[str, str]:
    """The plain-text and HTML bodies from ``templates/mail/<name>.txt`` and ``.html``."""
    text = render_template(f"mail/{name}.txt", **context)
    html = render_template(f"mail/{name}.html", **context)
    return unicodedata.normalize("NFC", text), unicodedata.normalize("NFC", html)


def _recipient_addresses(row: OutboxMessage, name: str | None) -> list[str | tuple[str, str]]:
    """The To list: the office's address with its name as display name."""
    addresses: list[str | tuple[str, str]] = []
    for value in row.to_addrs:
        address = _address(value)
        addresses.append((header_text(name), address) if name else address)
    return addresses


@dataclass(frozen=True)
class _Doc:
    """A ``Document``'s fields, kept as plain values (a cached ORM object would be reloaded
    after every commit)."""

    id: int
    kind: str
    filename: str
    media_type: str
    sha256: str
    path: str


class _Letter:
    """What every letter and reminder e-mail of one dispatch has in common."""

    def __init__(self, dispatch: Dispatch) -> None:
        self.context = _letter_context(dispatch)
        self.subjects = {
            kind: subject_for(kind, dispatch) for kind in (MessageKind.LETTER, MessageKind.REMINDER)
        }
        self._documents = [
            _Doc(doc.id, doc.kind, doc.filename, doc.media_type, doc.sha256, doc.path)
            for doc in _documents(dispatch, None)
        ]
        self._attachments: dict[int, Attachment] = {}

    def files(self, kind: MessageKind) -> tuple[list[str], list[Attachment]]:
        """The names and attachments an e-mail of ``kind`` carries; each file is read (and its
        SHA-256 checked) the first time an e-mail needs it."""
        kinds = None if kind is MessageKind.LETTER else {"pdf"}
        chosen = [doc for doc in self._documents if kinds is None or doc.kind in kinds]
        for doc in chosen:
            if doc.id not in self._attachments:
                self._attachments[doc.id] = _attachment(doc)
        return [header_text(doc.filename) for doc in chosen], [
            self._attachments[doc.id] for doc in chosen
        ]


class ComposeCache:
    """The shared part of a dispatch's letters and reminders, read once for a run of sends.

    Composing each e-mail from scratch re-read the dispatch, listed its documents, read and
    hashed every archived file and base64-encoded it again, for every recipient
    (bench/issue_63). A sender keeps one cache per run: the few dispatches it is sending are
    read once, their files checked against their SHA-256 once, and their MIME parts built
    once. Escalations, whose table changes with every confirmation, are never cached.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._letters: dict[int, _Letter] = {}

    def letter(self, dispatch_id: int) -> _Letter:
        """The shared part of a dispatch's letters, read on first use."""
        shared = self._letters.get(dispatch_id)
        if shared is None:
            shared = _Letter(_dispatch(dispatch_id))
            if len(self._letters) >= self.size:  # oldest out: rows come grouped by dispatch
                del self._letters[next(iter(self._letters))]
            self._letters[dispatch_id] = shared
        return shared


def _dispatch(dispatch_id: int) -> Dispatch:
    dispatch = db.session.get(Dispatch, dispatch_id)
    if dispatch is None:
        raise ComposeError(f"dispatch {dispatch_id} not found")
    return dispatch


def compose(
    row: OutboxMessage,
    at: dt.datetime | None = None,
    cache: ComposeCache | None = None,
    recipient: DispatchRecipient | None = None,
) -> Message:
    """The e-mail for an outbox row; ``at`` is the moment written in its Date header.

    ``cache`` (one per run of sends) shares what a dispatch's e-mails have in common.
    ``recipient``: the row's recipient when the caller read it with the row (the sender reads
    a whole batch at once); otherwise it is read here. Either may be a plain copy with the
    same fields (``dispatch.mail.sender``).
    """
    kind = MessageKind(row.kind)
    if recipient is None and row.recipient_id:
        recipient = db.session.get(DispatchRecipient, row.recipient_id)
    attachments: list[Attachment] = []
    display_name: str | None = None

    if kind in (MessageKind.LETTER, MessageKind.REMINDER):
        if recipient is None:
            raise ComposeError(f"outbox row {row.id}: a {kind.value} needs a recipient")
        try:
            shared = (cache or ComposeCache()).letter(row.dispatch_id)
        except ComposeError as exc:
            raise ComposeError(f"outbox row {row.id}: {exc}") from exc
        context = dict(shared.context)
        display_name = recipient.name
        context["recipient_name"] = unicodedata.normalize("NFC", recipient.name)
        try:
            context["link"] = confirmation_url(recipient)
        except ValueError as exc:  # no token: the recipient was never given its link
            raise ComposeError(f"outbox row {row.id}: {exc}") from exc
        context["documents"], attachments = shared.files(kind)
        if kind is MessageKind.REMINDER:
            context["reminder_number"] = _reminder_number(row)
        context["mail_subject"] = shared.subjects[kind]
    else:
        try:
            dispatch = _dispatch(row.dispatch_id)
        except ComposeError as exc:
            raise ComposeError(f"outbox row {row.id}: {exc}") from exc
        context = _letter_context(dispatch)
        context["late"] = unconfirmed_recipients(dispatch)
        context["total"] = len(dispatch.recipients)
        context["as_of"] = format_local(at) if at else ""
        context["mail_subject"] = subject_for(kind, dispatch)

    text, html = _render(kind.value, context)
    extra_headers = {
        "X-Dispatch-Id": str(row.dispatch_id),
        "X-Dispatch-Kind": kind.value,
        "Content-Language": "vi",
    }
    if recipient is not None:
        extra_headers["X-Dispatch-Recipient"] = header_text(recipient.province_code)
    message = OfficialMessage(
        subject=context["mail_subject"],
        recipients=_recipient_addresses(row, display_name),
        cc=[_address(value) for value in row.cc_addrs or []],
        body=text,
        html=html,
        attachments=attachments,
        date=at.timestamp() if at else None,
        extra_headers=extra_headers,
    )
    # Stable across retries, so a resend after a lost reply can be recognised as the same e-mail.
    message.msgId = row.message_id
    reply_to = current_app.config.get("DISPATCH_REPLY_TO")
    if reply_to:
        message.reply_to = reply_to
    # The envelope sender the sender passes to MAIL FROM: this row's own (VERP), so that a
    # bounce names the row; None keeps the From address (no DISPATCH_BOUNCE_ADDRESS).
    message.envelope_sender = bounce_address(getattr(row, "bounce_token", None), current_app.config)
    return message
