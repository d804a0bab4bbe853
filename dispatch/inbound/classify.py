"""What an inbound e-mail is, read from its bytes alone (no database): a bounce, a delay, an
automatic reply or a person's reply, and what ties it to an e-mail we sent.

The standards first:

1. **RFC 3464 delivery status notifications** (``multipart/report; report-type=
   delivery-status``): each per-recipient block gives the action (failed, delayed, delivered,
   relayed, expanded), the status code, the remote server's diagnostic; the per-message block
   names the reporting server; the returned headers carry our Message-ID.
2. **Bounces that are not standard** (older or odd servers): flufl.bounce's detectors, run only
   on a message that looks like a mailer's (a null envelope sender, a mailer-daemon or
   postmaster From, a message to one of our bounce addresses, a bounce-like subject), so that
   a person's reply quoting an error is never taken for a bounce.
3. **RFC 3834 automatic replies** (``Auto-Submitted`` other than ``no``) and the usual
   out-of-office marks (``X-Autoreply``, ``X-Autorespond``, ``Precedence: auto_reply``, an
   "Automatic reply" / "Out of Office" / "Trả lời tự động" subject).
4. Anything else is a person's **reply**.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from dispatch.inbound.reasons import status_in
from dispatch.models import InboundKind

EXCERPT_CHARS = 2000
_MSGID = re.compile(r"<[^<>\s]+>")
_MAILER = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliver|undelivered|delivery (status )?notification|delivery failure|failure notice|"
    r"returned mail|mail delivery (failed|system)|non[- ]?delivery|rejected|"
    r"không (thể )?gửi được|thư bị trả lại)",
    re.I,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|autoreply|"
    r"vắng mặt|trả lời tự động|thư trả lời tự động)",
    re.I,
)
_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")


@dataclass(frozen=True)
class RecipientReport:
    """One per-recipient block of a delivery status notification (or a detector's finding)."""

    action: str  # failed, delayed, delivered, relayed, expanded
    recipient: str | None  # the address it is about (Final-Recipient, else Original-Recipient)
    original_recipient: str | None = None
    status: str | None = None  # "5.1.1"
    diagnostic: str | None = None  # "smtp; 550 5.1.1 <x>: Recipient address rejected"
    remote_mta: str | None = None


@dataclass
class Classified:
    """What ``classify`` read from a message."""

    kind: InboundKind
    message_id: str | None = None
    from_address: str | None = None
    from_name: str | None = None
    subject: str | None = None
    # Our Message-IDs it refers to, most telling first: the returned message's (a DSN's), then
    # In-Reply-To, then References from the newest.
    refers_to: list[str] = field(default_factory=list)
    refers_by: dict[str, str] = field(default_factory=dict)  # Message-ID -> how it was found
    reports: list[RecipientReport] = field(default_factory=list)
    reporting_mta: str | None = None
    standard: bool = False  # an RFC 3464 report (False: a detector's guess, or not a DSN)
    addressed_to: list[str] = field(default_factory=list)  # headers naming the mailbox it hit
    excerpt: str | None = None
    auto_reason: str | None = None  # why it was taken for an automatic reply

    @property
    def failed(self) -> list[RecipientReport]:
        """The per-recipient reports that say delivery failed."""
        return [report for report in self.reports if report.action == "failed"]


def parse(raw: bytes) -> Message:
    """The message as the standard library reads it (compat32: forgiving of broken mail)."""
    return BytesParser(policy=policy.compat32).parsebytes(raw)


def _text(value: object) -> str | None:
    """A header value as one NFC line of text (encoded words decoded), None if absent."""
    if value is None:
        return None
    raw = str(value)
    if any("\udc80" <= char <= "\udcff" for char in raw):
        # Raw 8-bit (UTF-8) header bytes, as the parser keeps them: read them as UTF-8.
        raw = raw.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    try:
        text = str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError):
        text = raw
    text = " ".join(text.split())
    return unicodedata.normalize("NFC", text) or None


def _header(message: Message, name: str) -> str | None:
    """A header's value as it was written (raw 8-bit text kept), None if absent."""
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            return str(value)
    return None


def _ids(value: object) -> list[str]:
    """The Message-IDs written in a header ('<a@b> <c@d>'), in order."""
    return _MSGID.findall(str(value)) if value else []


def _field(block: Message, name: str) -> str | None:
    """A DSN field's value without its type ("rfc822; a@b" → "a@b", "dns; mx" kept whole)."""
    value = _text(block.get(name))
    if value is None:
        return None
    if name.lower() in ("final-recipient", "original-recipient") and ";" in value:
        value = value.split(";", 1)[1].strip()
    return value.strip("<> ") or None


def _delivery_status(message: Message) -> tuple[Message | None, Message | None]:
    """The message/delivery-status part and the returned message (or its headers)."""
    status = returned = None
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in ("message/delivery-status", "message/global-delivery-status"):
            status = part
        elif content_type in ("text/rfc822-headers", "message/rfc822", "message/global-headers"):
            returned = part
    return status, returned


def _status_blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part (the standard library parses it into a list
    of header blocks; a part it could not parse is read by hand)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        return [block for block in payload if isinstance(block, Message)]
    text = payload if isinstance(payload, str) else ""
    if part.get("Content-Transfer-Encoding", "").lower() in ("base64", "quoted-printable"):
        decoded = part.get_payload(decode=True)
        text = decoded.decode("utf-8", "replace") if isinstance(decoded, bytes) else text
    blocks = re.split(r"\r?\n\s*\r?\n", text.strip())
    return [parse(block.encode("utf-8", "replace") + b"\n") for block in blocks if block.strip()]


def _returned_message_id(part: Message | None) -> str | None:
    """The Message-ID of the message a DSN returns (its headers, or the whole message)."""
    if part is None:
        return None
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        ids = _ids(payload[0].get("Message-ID"))
        return ids[0] if ids else None
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        raw = str(payload).encode("utf-8", "replace")
    headers = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
    ids = _ids(headers.get("Message-ID"))
    return ids[0] if ids else None


def _standard_reports(status_part: Message) -> tuple[str | None, list[RecipientReport]]:
    blocks = _status_blocks(status_part)
    if not blocks:
        return None, []
    reporting = _field(blocks[0], "Reporting-MTA")
    reports = []
    for block in blocks[1:] if len(blocks) > 1 else blocks:
        action = (_field(block, "Action") or "").lower().split()[0:1]
        if not action or action[0] not in _ACTIONS:
            continue
        final = _field(block, "Final-Recipient")
        original = _field(block, "Original-Recipient")
        diagnostic = _field(block, "Diagnostic-Code")
        status = _field(block, "Status")
        reports.append(
            RecipientReport(
                action=action[0],
                recipient=final or original,
                original_recipient=original,
                status=status_in(status) or status_in(diagnostic),
                diagnostic=diagnostic,
                remote_mta=_field(block, "Remote-MTA"),
            )
        )
    return reporting, reports


def _body_text(message: Message) -> str:
    """The first text/plain part (or the text of the first text/html one), decoded."""
    chosen = None
    for part in message.walk():
        if part.get_content_maintype() == "multipart":
            continue
        if part.get_content_type() == "text/plain":
            chosen = part
            break
        if chosen is None and part.get_content_type() == "text/html":
            chosen = part
    if chosen is None:
        return ""
    data = chosen.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = chosen.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset, "replace")
    except LookupError:
        text = data.decode("utf-8", "replace")
    if chosen.get_content_type() == "text/html":
        text = re.sub(r"<[^>]+>", " ", text)
    return unicodedata.normalize("NFC", text)


def _excerpt(message: Message) -> str | None:
    """The start of a reply's text without the quoted message below it."""
    lines = []
    for line in _body_text(message).splitlines():
        stripped = line.strip()
        if stripped.startswith(">") or re.match(r"^(On|Vào) .+(wrote|viết):\s*$", stripped):
            break
        if stripped.startswith("-----Original Message") or stripped.startswith("-----"):
            break
        lines.append(line.rstrip())
    text = "\n".join(lines).strip()
    return text[:EXCERPT_CHARS] or None


def _looks_like_a_mailer(message: Message, envelope_from: str | None, to_bounce: bool) -> bool:
    sender = parseaddr(str(message.get("From", "")))[1]
    return (
        envelope_from in ("", "<>")
        or bool(_MAILER.match(sender))
        or to_bounce
        or bool(_BOUNCE_SUBJECT.search(_text(_header(message, "Subject")) or ""))
    )


def _detected_reports(message: Message) -> list[RecipientReport]:
    """Failures found by flufl.bounce's detectors in a bounce that is not standard."""
    temporary, permanent = all_failures(message)
    body = _body_text(message)
    reports = []
    for action, found in (("failed", permanent), ("delayed", temporary)):
        for address in sorted(found):
            text = address.decode("utf-8", "replace") if isinstance(address, bytes) else address
            diagnostic = _diagnostic_near(body, text)
            reports.append(
                RecipientReport(
                    action=action,
                    recipient=text,
                    status=status_in(diagnostic) or status_in(body),
                    diagnostic=diagnostic,
                )
            )
    return reports


def _diagnostic_near(body: str, address: str) -> str | None:
    """The server's words about ``address`` in a bounce's prose: the first line that carries
    an SMTP reply code, preferring one that names the address."""
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    coded = [line for line in lines if re.search(r"\b[45]\d\d\b|\b[45]\.\d+\.\d+\b", line)]
    for line in coded:
        if address.lower() in line.lower():
            return line[:1000]
    return coded[0][:1000] if coded else None


def _auto_reason(message: Message) -> str | None:
    auto = (_text(message.get("Auto-Submitted")) or "").lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if message.get(name) is not None:
            return name
    precedence = (_text(message.get("Precedence")) or "").lower()
    if precedence in ("auto_reply", "bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    if message.get("X-Auto-Response-Suppress") is not None and message.get("In-Reply-To") is None:
        return "X-Auto-Response-Suppress"
    subject = _text(_header(message, "Subject")) or ""
    if _AUTO_SUBJECT.search(subject):
        return "subject"
    return None


def _mailbox_headers(message: Message) -> list[str]:
    """The headers that may name the mailbox a message reached, most reliable first."""
    names = ("Delivered-To", "X-Original-To", "Envelope-To", "To")
    return [str(value) for name in names for value in message.get_all(name, [])]


def classify(
    raw: bytes,
    *,
    envelope_from: str | None = None,
    to_bounce_address: bool = False,
) -> Classified:
    """Read one inbound message: what it is and what it refers to.

    ``envelope_from``: MAIL FROM as the door saw it ('' for the null sender of a bounce; None
    when unknown). ``to_bounce_address``: it was sent to one of our bounce (VERP) addresses.
    """
    message = parse(raw)
    name, address = parseaddr(_header(message, "From") or "")
    ids = _ids(message.get("Message-ID"))
    result = Classified(
        kind=InboundKind.REPLY,
        message_id=ids[0] if ids else None,
        from_address=address.lower() or None,
        from_name=_text(name),
        subject=_text(_header(message, "Subject")),
        addressed_to=[
            addr
            for _, addr in getaddresses(
                [
                    str(v)
                    for key in ("Delivered-To", "X-Original-To", "To")
                    for v in message.get_all(key, [])
                ]
            )
            if addr
        ],
    )

    status_part, returned = _delivery_status(message)
    if status_part is not None:
        result.standard = True
        result.reporting_mta, result.reports = _standard_reports(status_part)
    elif _looks_like_a_mailer(message, envelope_from, to_bounce_address):
        result.reports = _detected_reports(message)
        if returned is None:
            returned = next(
                (p for p in message.walk() if p.get_content_type() == "message/rfc822"), None
            )

    if result.reports or status_part is not None:
        actions = {report.action for report in result.reports}
        if "failed" in actions:
            result.kind = InboundKind.BOUNCE
        elif "delayed" in actions:
            result.kind = InboundKind.DELAY
        else:
            result.kind = InboundKind.DELIVERED
        returned_id = _returned_message_id(returned)
        if returned_id:
            result.refers_to.append(returned_id)
            result.refers_by[returned_id] = "dsn-headers"
        return result

    reason = _auto_reason(message)
    if reason is None and envelope_from in ("", "<>"):
        reason = "null envelope sender"
    if reason is not None:
        result.kind = InboundKind.AUTO_REPLY
        result.auto_reason = reason
    for header, how in (("In-Reply-To", "in-reply-to"), ("References", "references")):
        found = _ids(message.get(header))
        if how == "references":
            found = list(reversed(found))  # the newest reference last in the header
        for message_id in found:
            if message_id not in result.refers_by:
                result.refers_to.append(message_id)
                result.refers_by[message_id] = how
    result.excerpt = _excerpt(message)
    return result
