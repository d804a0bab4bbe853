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

import base64
import datetime as dt
import email.message
import io
import re
import secrets
import unicodedata
from dataclasses import dataclass
from email import policy
from email.charset import QP, Charset
from email.encoders import encode_base64
from email.generator import BytesGenerator
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import (
    format_datetime,
    formatdate,
    getaddresses,
    make_msgid,
    parseaddr,
)
from functools import lru_cache, partial
from typing import Any
from urllib.parse import quote

import flask_mail
from flask import current_app, render_template
from flask_mail import Attachment, Message
from sqlalchemy import func, select

from dispatch.archive import ArchiveError, read_archived
from dispatch.calendar import confirmation_deadline, deadline_words
from dispatch.clock import VN, format_local
from dispatch.drafting.follow_up import late_recipients
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
from dispatch.text import ascii_filename

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
    """'Name <addr>' on one line, a non-ASCII name as encoded words of at most 75 characters."""
    return " ".join(address_tokens(value))


# --- Header values as the wire carries them ------------------------------------------------
#
# RFC 2047: an encoded word is at most 75 characters; RFC 5322: a line SHOULD be at most 78.
# Python's ``Header`` writes encoded words of 76, and a display name given to ``formataddr`` is
# one encoded word however long. Every header we write goes through ``_Folded``: its tokens are
# joined by single spaces, and a line is folded at one of those spaces when the next token would
# pass 78 characters.

_MAX_WORD = 75
_MAX_LINE = 78
_EW_PREFIX = "=?utf-8?b?"
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


class _Folded:
    """A header value as tokens, folded at the spaces between them (never inside one)."""

    def __init__(self, name: str, tokens: list[str]) -> None:
        self.name = name
        self.tokens = [token for token in tokens if token]

    def encode(self, linesep: str = "\n", maxlinelen: int | None = None) -> str:
        limit = maxlinelen or _MAX_LINE
        lines: list[str] = []
        line = ""
        used = len(self.name) + 2  # "Name: "
        for token in self.tokens:
            if not line:
                line = token
            elif used + len(line) + 1 + len(token) <= limit:
                line += " " + token
            else:
                lines.append(line)
                line, used = token, 1  # a continuation line starts with one space
        lines.append(line)
        return (linesep + " ").join(lines)

    def __str__(self) -> str:
        return " ".join(self.tokens)


def _b_word(text: str) -> str:
    return _EW_PREFIX + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _word_length(text: str) -> int:
    return len(_EW_PREFIX) + 2 + 4 * -(-len(text.encode("utf-8")) // 3)


def encoded_words(text: str, first: int = _MAX_WORD) -> list[str]:
    """``text`` as RFC 2047 B words of at most 75 characters (the first at most ``first``),
    split between characters, never inside one (nor before a combining mark)."""
    words: list[str] = []
    chunk = ""
    room = min(first, _MAX_WORD)
    for char in text:
        if chunk and _word_length(chunk + char) > room and not unicodedata.combining(char):
            words.append(_b_word(chunk))
            chunk, room = "", _MAX_WORD
        chunk += char
    if chunk or not words:
        words.append(_b_word(chunk))
    return words


def _plain_word(word: str) -> str | None:
    """An ASCII word that may stand as it is in a phrase (an atom), None if it cannot."""
    return word if _ATEXT.fullmatch(word) else None


def phrase_tokens(name: str) -> list[str]:
    """A display name as phrase tokens: encoded words of at most 75 characters, split only at
    an ASCII word written as it is between them.

    Two encoded words side by side are joined with no space by RFC 2047 readers, while
    Python's address parser keeps the space between them: a name split between two encoded
    words reads differently in one or the other. An ASCII word between them ("tin", "Du",
    "thao") is read with its spaces by both.
    """
    words = name.split(" ")
    if name.isascii():
        return words if all(_ATEXT.fullmatch(w) for w in words) else [_quoted(name)]
    n = len(words)
    # best[i]: the fewest tokens for words[i:], starting with a run to encode or a plain word.
    best: list[tuple[int, list[str]] | None] = [None] * (n + 1)
    best[n] = (0, [])
    for i in range(n - 1, -1, -1):
        options: list[tuple[int, list[str]]] = []
        plain = _plain_word(words[i])
        if plain and best[i + 1] is not None:
            cost, tokens = best[i + 1]  # type: ignore[misc]
            options.append((cost + 1, [plain, *tokens]))
        for j in range(i + 1, n + 1):
            run = " ".join(words[i:j])
            if _word_length(run) > _MAX_WORD:
                break
            if j == n:
                options.append((1, [_b_word(run)]))
                continue
            after = _plain_word(words[j])
            if after and best[j + 1] is not None:
                cost, tokens = best[j + 1]  # type: ignore[misc]
                options.append((cost + 2, [_b_word(run), after, *tokens]))
        if options:
            best[i] = min(options, key=lambda option: option[0])
    if best[0] is not None:
        return best[0][1]
    # No ASCII word where one is needed: split at spaces, each space kept at the end of its
    # word, as RFC 2047 says (its readers join the words; Python's shows one space more).
    tokens: list[str] = []
    run = ""
    for word in (w + " " for w in words[:-1]):
        if run and _word_length(run + word) > _MAX_WORD:
            tokens += encoded_words(run)
            run = ""
        run += word
    run += words[-1]
    return tokens + encoded_words(run)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def address_tokens(value: str | tuple[str, str]) -> list[str]:
    """'Name <addr>' as header tokens; a non-ASCII name as encoded words of at most 75."""
    return list(_address_tokens(value))


@lru_cache(maxsize=1024)
def _address_tokens(value: str | tuple[str, str]) -> tuple[str, ...]:
    """``address_tokens``, computed once per address: From is the same on every e-mail of a
    run, and a retried e-mail's To is the same as its first try's."""
    return tuple(_tokens_of_address(value))


def _tokens_of_address(value: str | tuple[str, str]) -> list[str]:
    name, address = (value if isinstance(value, tuple) else parseaddr(value))[:2]
    name, address = header_text(name or ""), header_text(address)
    if not address.isascii() and "@" in address:
        local, domain = address.rsplit("@", 1)
        address = f"{local}@{domain.encode('idna').decode('ascii')}"
    if not name:
        return [address]
    return [*phrase_tokens(name), f"<{address}>"]


def address_list(name: str, values: list[str | tuple[str, str]]) -> _Folded:
    """An address header (From, To, Cc, Reply-To), folded between tokens."""
    tokens: list[str] = []
    for index, value in enumerate(values):
        part = address_tokens(value)
        if index < len(values) - 1:
            part[-1] += ","
        tokens += part
    return _Folded(name, tokens)


def unstructured(name: str, text: str) -> _Folded | str:
    """A text header (Subject): as it is when ASCII, else encoded words of at most 75."""
    if text.isascii():
        return _Folded(name, text.split(" ")) if " " in text else text
    first = _MAX_LINE - len(name) - 2
    return _Folded(name, encoded_words(text, first))


class _OneLine:
    """A header value written whole, never folded inside (a Message-ID has no place to fold);
    when ``Name: value`` would pass 78 characters, the value goes on a line of its own."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def encode(self, linesep: str = "\n", maxlinelen: int | None = None) -> str:
        if len(self.name) + 2 + len(self.value) <= (maxlinelen or _MAX_LINE):
            return self.value
        return linesep + " " + self.value

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
def _encoded_subject(subject: str) -> _Folded | str:
    """The Subject header's value, encoded once: every letter of a dispatch has the same."""
    return unstructured("Subject", subject)


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
        return _text_part(text or "", subtype)

    def _message(self) -> MIMEBase:
        if self.alts:
            msg = self._multipart()
        else:  # no HTML: the shapes Flask-Mail builds, with our headers put in
            msg = super()._message()
            self._put_headers(msg, replace=True)
        msg.policy = _WIRE_POLICY
        if not self.alts:  # ``_multipart`` chose its boundaries as it built the parts
            for part in msg.walk():
                if part.is_multipart() and part.get_boundary() is None:
                    part.set_boundary(_boundary())
        return msg

    def _multipart(self) -> MIMEBase:
        """What Flask-Mail builds for a message with an HTML body, built here.

        The same tree and headers in the same order (multipart/mixed holding the text and
        HTML alternatives, then the attachments), without Flask-Mail's own Subject, From and
        To that were replaced at once (computing them was a tenth of a message's cost), and
        with each attachment's part built once per file (``_part``).
        """
        # Boundaries chosen here rather than in ``_message`` (see there): given to the
        # constructor, no Content-Type is parsed again to set them.
        msg = MIMEMultipart(boundary=_boundary())
        alternative = MIMEMultipart("alternative", boundary=_boundary())
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
            put("Subject", _encoded_subject(subject))
        put("From", address_list("From", [self.sender]))
        put("To", address_list("To", list(self.recipients)))
        if self.date is not None:
            # In Vietnam time, as the recipients read it (Flask-Mail uses the machine's zone).
            put("Date", format_datetime(dt.datetime.fromtimestamp(self.date, VN)))
        elif not replace:
            put("Date", formatdate(None, localtime=True))
        put("Message-ID", _OneLine("Message-ID", header_text(self.msgId)))
        if self.cc:
            put("Cc", address_list("Cc", list(self.cc)))
        if replace:
            return  # Flask-Mail wrote the rest
        if self.reply_to:
            msg["Reply-To"] = address_list("Reply-To", [self.reply_to])
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


def leadership_addresses() -> list[tuple[str, str]]:
    """DISPATCH_LEADERSHIP_EMAIL as (name, address) pairs: it may hold "Name <address>" or
    several addresses separated by commas."""
    value = current_app.config.get("DISPATCH_LEADERSHIP_EMAIL") or ""
    return [(header_text(n), a) for n, a in getaddresses([header_text(value)]) if a]


def escalation_audience(dispatch: Dispatch) -> tuple[list[str], list[str]]:
    """(To, Cc) of a dispatch's escalation: leadership (DISPATCH_LEADERSHIP_EMAIL; without it
    the agency's own mailbox, MAIL_DEFAULT_SENDER), the issuing clerk in copy; once each."""
    to = [address for _, address in leadership_addresses()] or [_address(_sender_text())]
    seen = {address.lower() for address in to}
    cc = []
    clerk = dispatch.issued_by.email if dispatch.issued_by is not None else None
    if clerk and clerk.lower() not in seen:
        cc.append(clerk)
    return _unique_addresses(to), cc


def _unique_addresses(addresses: list[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


def _escalation_people(
    dispatch: Dispatch, addresses: list[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Each address of an escalation with the name it is greeted by: leadership, the agency's
    mailbox, or the clerk following the letter; (display name, address) pairs and greetings."""
    agency = issuing_agency(dispatch)
    leaders = {address.lower(): name for name, address in leadership_addresses()}
    sender = _address(_sender_text()).lower()
    issuer = dispatch.issued_by
    pairs: list[tuple[str, str]] = []
    greetings: list[str] = []
    for value in addresses:
        address = _address(value)
        key = address.lower()
        if key in leaders:
            name = leaders[key] or f"Lãnh đạo {agency}"
            greeting = f"Lãnh đạo {agency}"
        elif issuer is not None and issuer.email and key == issuer.email.lower():
            name = issuer.name or ""
            greeting = (
                f"{issuer.name} (người theo dõi văn bản)"
                if issuer.name
                else ("Người theo dõi văn bản")
            )
        elif key == sender:
            name = greeting = f"Văn thư {agency}"
        else:
            name, greeting = "", address
        pairs.append((header_text(name), address) if name else ("", address))
        if greeting not in greetings:
            greetings.append(greeting)
    return pairs, greetings


def _letter_context(dispatch: Dispatch) -> dict[str, Any]:
    return {
        "dispatch_id": dispatch.id,
        "number": dispatch.number_and_symbol or "",
        "issued_on": dispatch.issued_on.strftime("%d/%m/%Y") if dispatch.issued_on else "",
        "subject": unicodedata.normalize("NFC", dispatch.subject),
        "title": letter_title(dispatch),
        # One deadline (dispatch.calendar): stated as a date and in the sentence asking for it.
        "deadline": format_local(confirmation_deadline(dispatch)),
        "deadline_words": deadline_words(confirmation_deadline(dispatch)),
        "contact": _contact(dispatch),
        "base_url": current_app.config["BASE_URL"],
        # Signed: the PDF is the electronic original (bản gốc điện tử), the DOCX a copy to edit.
        "signed": bool(dispatch.signed),
    }


def _read_document(document: Document | _Doc) -> bytes:
    """The archived bytes of ``document``, checked against the SHA-256 recorded at issue."""
    try:
        return read_archived(document.path, document.sha256)
    except ArchiveError as exc:
        raise ComposeError(f"archived file {document.path} unreadable: {exc}") from exc


def _boundary() -> str:
    """A multipart boundary chosen by us: the generator need not search the whole flattened
    message for it (as it does for a boundary it picks itself); 128 random bits cannot occur in
    a body by chance, and base64 lines never start with "--". Short enough for its Content-Type
    line to need no folding (``_WirePolicy``)."""
    return f"=_{secrets.token_urlsafe(16)}"


_QP_UTF8 = Charset("utf-8")
_QP_UTF8.body_encoding = QP


def _text_part(text: str, subtype: str) -> MIMEText:
    """What ``MIMEText(text, subtype, utf-8 in quoted-printable)`` builds, the same headers
    in the same order and the same encoded body, without setting and parsing its Content-Type
    parameters again on the way (a third of writing a message's text parts, bench/issue_63)."""
    part = MIMEText.__new__(MIMEText)
    email.message.Message.__init__(part)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["MIME-Version"] = "1.0"
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part._charset = _QP_UTF8  # type: ignore[attr-defined]
    part._payload = _QP_UTF8.body_encode(text) if text else text  # type: ignore[attr-defined]
    return part


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
        part[key] = value  # a ``_Folded`` value is written as it folds itself
    if isinstance(attachment, _SharedAttachment):
        # Every message carrying it writes the same bytes for it: write them once, keep them
        # on the part (``_WireGenerator.flatten`` writes them as they are).
        out = io.BytesIO()
        _WireGenerator(out, mangle_from_=False, policy=_WIRE_POLICY).flatten(part)
        part._wire_bytes = out.getvalue()  # type: ignore[attr-defined]
        attachment.part = part
    return part


def _percent_units(name: str) -> list[str]:
    """``name`` percent-encoded for RFC 2231, one unit per character (never split)."""
    return [quote(char, safe="") for char in name]


def content_disposition(name: str) -> _Folded:
    """``attachment`` naming the file twice: ``filename*`` with the exact UTF-8 name (RFC 2231,
    in numbered pieces when one line cannot hold it) and ``filename`` with an ASCII stand-in
    for readers that know no RFC 2231.

    ``filename*`` comes first: Python's parser (and any reader that keeps the first of two
    values) then reads the exact name, and readers that prefer ``filename*`` do so anyway.
    """
    fallback = _quoted(ascii_filename(name, limit=_MAX_LINE - len(' filename="";') - 1))
    if name.isascii() and _quoted(name) == f'"{name}"' and len(name) <= 60:
        return _Folded("Content-Disposition", ["attachment;", f"filename={_quoted(name)}"])
    units = _percent_units(name)
    single = "filename*=utf-8''" + "".join(units) + ";"
    if 1 + len(single) <= _MAX_LINE:
        params = [single]
    else:
        params = []
        piece = ""
        for unit in units:
            head = f"filename*{len(params)}*=" + ("utf-8''" if not params else "")
            if piece and 1 + len(head) + len(piece) + len(unit) + 1 > _MAX_LINE:
                params.append(head + piece + ";")
                piece = ""
            piece += unit
        params.append(f"filename*{len(params)}*=" + ("utf-8''" if not params else "") + piece + ";")
    return _Folded("Content-Disposition", ["attachment;", *params, f"filename={fallback}"])


def _attachment(document: Document | _Doc) -> Attachment:
    """The document as a MIME part, named by ``content_disposition``."""
    return _SharedAttachment(
        filename=None,
        content_type=document.media_type,
        data=_read_document(document),
        headers={"Content-Disposition": content_disposition(header_text(document.filename))},
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
    recipients = late_recipients(dispatch)
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
        # Greeted as who receives it: leadership in To, the clerk following the letter in Cc.
        to_people, context["greeting_to"] = _escalation_people(dispatch, row.to_addrs)
        cc_people, context["greeting_cc"] = _escalation_people(dispatch, row.cc_addrs or [])

    text, html = _render(kind.value, context)
    extra_headers = {
        "X-Dispatch-Id": str(row.dispatch_id),
        "X-Dispatch-Kind": kind.value,
        "Content-Language": "vi",
    }
    if kind is not MessageKind.LETTER:
        # RFC 3834: written by the system, not by a person; an auto-responder keeps quiet.
        extra_headers["Auto-Submitted"] = "auto-generated"
    if recipient is not None:
        extra_headers["X-Dispatch-Recipient"] = header_text(recipient.province_code)
    if kind is MessageKind.ESCALATION:
        recipients: list[str | tuple[str, str]] = [p if p[0] else p[1] for p in to_people]
        copies: list[str | tuple[str, str]] = [p if p[0] else p[1] for p in cc_people]
    else:
        recipients = _recipient_addresses(row, display_name)
        copies = [_address(value) for value in row.cc_addrs or []]
    message = OfficialMessage(
        subject=context["mail_subject"],
        # The agency's name on From, as the provinces know it, beside the sending mailbox.
        sender=(context["contact"].agency, context["contact"].sender),
        recipients=recipients,
        cc=copies,
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
