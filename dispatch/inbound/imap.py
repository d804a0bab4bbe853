"""The IMAP door: read a mailbox over TLS, handle each new message once, file it.

``DISPATCH_IMAP_URL`` names the mailbox: ``imaps://user:password@host[:993]/INBOX`` (TLS from
the first byte) or ``imap://…:143/INBOX`` (STARTTLS, required: a server that does not offer it
is refused). ``DISPATCH_IMAP_CA_FILE`` adds a certificate authority to trust (a department's own).

**Once each, across restarts.** The last UID handled, under the mailbox's UIDVALIDITY, is kept in
the database (``ImapCursor``) and written in the same transaction as the message it covers, so
a poller killed at any moment resumes where the database says:

* a message with a UID above the cursor is fetched (without setting \\Seen), handled and the
  cursor moved, in one commit, then filed;
* a message at or below the cursor that is still in the mailbox was handled and not yet filed
  (the poller died in between): it is only filed; if a MOVE cut off by that death had already
  copied it (its Message-ID is in the filed folder), it is only removed, so it is filed once;
* a new UIDVALIDITY (the mailbox was rebuilt) starts the cursor again from 0; messages handled
  before are recognised by the SHA-256 of their bytes and not handled twice.

**Filing.** With ``DISPATCH_IMAP_FILED`` (default "Dispatch-Processed") each message is moved
there (IMAP MOVE, or COPY, \\Deleted and UID EXPUNGE); with it empty the message stays and is
flagged \\Seen and ``$DispatchProcessed``, and flagged messages are not read again.

``poll_mailbox`` commits on its own, once per message, so that each outcome is on record before
the next message is read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import imaplib
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from dispatch.extensions import db
from dispatch.inbound.handler import handle_message
from dispatch.models import ImapCursor

log = logging.getLogger(__name__)

PROCESSED_FLAG = "$DispatchProcessed"
DEFAULT_TIMEOUT = 60.0


class ImapError(RuntimeError):
    """The mailbox cannot be read (address, TLS, sign-in, mailbox); Vietnamese for people."""


@dataclass(frozen=True)
class ImapSettings:
    """Where the mailbox is and how to reach it."""

    host: str
    port: int
    implicit_tls: bool  # imaps://; False: STARTTLS on imap://
    username: str
    password: str
    mailbox: str = "INBOX"
    filed: str = ""  # the folder handled messages go to; "": flag them instead
    cafile: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def key(self) -> str:
        """The mailbox's name in ``ImapCursor``: user@host:port/mailbox (no password)."""
        return f"{self.username}@{self.host}:{self.port}/{self.mailbox}"[:300]

    @classmethod
    def from_url(cls, url: str, *, filed: str = "", cafile: str | None = None) -> ImapSettings:
        """Settings from ``imaps://user:password@host:port/MAILBOX``."""
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps"):
            raise ImapError(f"DISPATCH_IMAP_URL phải bắt đầu bằng imaps:// hoặc imap://: {url!r}")
        if not parts.hostname or not parts.username or parts.password is None:
            raise ImapError("DISPATCH_IMAP_URL cần đủ tên đăng nhập, mật khẩu và máy chủ.")
        implicit = parts.scheme == "imaps"
        return cls(
            host=parts.hostname,
            port=parts.port or (993 if implicit else 143),
            implicit_tls=implicit,
            username=unquote(parts.username),
            password=unquote(parts.password),
            mailbox=unquote(parts.path.lstrip("/")) or "INBOX",
            filed=filed,
            cafile=cafile or None,
        )

    @classmethod
    def from_config(cls, config: Any) -> ImapSettings | None:
        """The app's settings, or None when no mailbox is configured."""
        url = config.get("DISPATCH_IMAP_URL")
        if not url:
            return None
        return cls.from_url(
            url,
            filed=config.get("DISPATCH_IMAP_FILED", "Dispatch-Processed") or "",
            cafile=config.get("DISPATCH_IMAP_CA_FILE"),
        )


@dataclass
class PollReport:
    """What one pass over the mailbox did."""

    handled: int = 0  # new messages handled
    duplicates: int = 0  # new UIDs whose bytes had been handled before
    filed: int = 0  # messages moved or flagged
    refiled: int = 0  # handled by an earlier pass that died before filing them
    kinds: dict[str, int] = field(default_factory=dict)


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def connect(settings: ImapSettings) -> imaplib.IMAP4:
    """A signed-in connection over TLS, its certificate checked."""
    context = ssl.create_default_context(cafile=settings.cafile)
    try:
        if settings.implicit_tls:
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                settings.host, settings.port, ssl_context=context, timeout=settings.timeout
            )
        else:
            conn = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout)
            if "STARTTLS" not in conn.capabilities:
                conn.shutdown()
                raise ImapError(
                    f"máy chủ {settings.host}:{settings.port} không hỗ trợ STARTTLS: "
                    "không đăng nhập khi chưa mã hoá."
                )
            conn.starttls(ssl_context=context)
        conn.login(settings.username, settings.password)
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
        raise ImapError(
            f"không kết nối được hộp thư {settings.username}@{settings.host}:{settings.port}: {exc}"
        ) from exc
    return conn


def _check(response: tuple[str, list[Any]], what: str) -> list[Any]:
    typ, data = response
    if typ != "OK":
        raise ImapError(f"{what}: {data!r}")
    return data


def _uidvalidity(conn: imaplib.IMAP4, mailbox: str) -> int:
    value = conn.response("UIDVALIDITY")[1]
    if value and value[0]:
        return int(value[0])
    data = _check(conn.status(_quote(mailbox), "(UIDVALIDITY)"), "STATUS")
    match = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
    if not match:
        raise ImapError("máy chủ không cho biết UIDVALIDITY của hộp thư")
    return int(match.group(1))


def _cursor(settings: ImapSettings, uidvalidity: int, at: dt.datetime) -> ImapCursor:
    cursor = db.session.get(ImapCursor, settings.key, populate_existing=True)
    if cursor is None:
        cursor = ImapCursor(
            mailbox=settings.key, uidvalidity=uidvalidity, last_uid=0, updated_at=at
        )
        db.session.add(cursor)
    elif cursor.uidvalidity != uidvalidity:
        log.warning("mailbox %s has a new UIDVALIDITY: reading it again", settings.key)
        cursor.uidvalidity = uidvalidity
        cursor.last_uid = 0
        cursor.updated_at = at
    db.session.commit()
    return cursor


def _uids(conn: imaplib.IMAP4, criteria: str) -> list[int]:
    data = _check(conn.uid("SEARCH", None, criteria), "SEARCH")
    return sorted(int(uid) for uid in (data[0] or b"").split())


def _fetch(conn: imaplib.IMAP4, uid: int) -> bytes | None:
    data = _check(conn.uid("FETCH", str(uid), "(BODY.PEEK[])"), "FETCH")
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None  # expunged meanwhile by someone else


def _remove(conn: imaplib.IMAP4, uid: int) -> None:
    _check(conn.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
    if "UIDPLUS" in conn.capabilities:
        _check(conn.uid("EXPUNGE", str(uid)), "UID EXPUNGE")
    else:
        conn.expunge()


def _header_message_id(conn: imaplib.IMAP4, uid: int) -> str | None:
    data = _check(conn.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"), "FETCH")
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            found = re.search(rb"<[^<>\s]+>", item[1])
            return found.group(0).decode("ascii", "replace") if found else None
    return None


def _already_filed(
    conn: imaplib.IMAP4, settings: ImapSettings, message_ids: dict[int, str]
) -> set[int]:
    """Of the UIDs (with their Message-IDs) a dead pass left behind, those whose copy is in the
    filed folder already: a MOVE cut off by the poller's death may have copied without
    removing. Looks in the filed folder, then selects the mailbox again."""
    found: set[int] = set()
    if not message_ids or not settings.filed:
        return found
    _check(conn.select(_quote(settings.filed), readonly=True), f"EXAMINE {settings.filed}")
    for uid, message_id in message_ids.items():
        data = _check(conn.uid("SEARCH", None, "HEADER", "Message-ID", message_id), "SEARCH")
        if (data[0] or b"").split():
            found.add(uid)
    _check(conn.select(_quote(settings.mailbox)), f"SELECT {settings.mailbox}")
    return found


def _file(conn: imaplib.IMAP4, settings: ImapSettings, uid: int) -> None:
    _check(conn.uid("STORE", str(uid), "+FLAGS.SILENT", f"(\\Seen {PROCESSED_FLAG})"), "STORE")
    if not settings.filed:
        return
    if "MOVE" in conn.capabilities:
        _check(conn.uid("MOVE", str(uid), _quote(settings.filed)), "MOVE")
        return
    _check(conn.uid("COPY", str(uid), _quote(settings.filed)), "COPY")
    _remove(conn, uid)


def poll_mailbox(
    settings: ImapSettings,
    *,
    now: Callable[[], dt.datetime],
    limit: int | None = None,
) -> PollReport:
    """Handle the mailbox's new messages; commits on its own, once per message.

    ``now`` gives each message's moment of arrival as it is read (the edge's clock, or a
    replayed one). At most ``limit`` new messages.
    """
    report = PollReport()
    conn = connect(settings)
    try:
        _check(conn.select(_quote(settings.mailbox)), f"SELECT {settings.mailbox}")
        if settings.filed:
            typ, data = conn.create(_quote(settings.filed))
            if typ != "OK" and b"exist" not in b" ".join(d or b"" for d in data).lower():
                raise ImapError(f"không tạo được thư mục {settings.filed!r}: {data!r}")
        cursor = _cursor(settings, _uidvalidity(conn, settings.mailbox), now())
        criteria = "ALL" if settings.filed else f"UNKEYWORD {PROCESSED_FLAG}"
        uids = _uids(conn, criteria)
        # Handled by a pass that died before filing them: file them now, once.
        left = [uid for uid in uids if uid <= cursor.last_uid]
        ids = {uid: mid for uid in left if (mid := _header_message_id(conn, uid))}
        copied = _already_filed(conn, settings, ids)
        for uid in left:
            if uid in copied:
                _remove(conn, uid)
            else:
                _file(conn, settings, uid)
            report.refiled += 1
        for uid in uids:
            if uid <= cursor.last_uid:
                continue
            if limit is not None and report.handled + report.duplicates >= limit:
                break
            raw = _fetch(conn, uid)
            if raw is None:
                continue
            try:
                result = handle_message(raw, door="imap", at=now())
                cursor.last_uid = uid
                cursor.updated_at = now()
                db.session.commit()
            except BaseException:
                db.session.rollback()
                raise
            if result.duplicate:
                report.duplicates += 1
            else:
                report.handled += 1
                report.kinds[result.kind.value] = report.kinds.get(result.kind.value, 0) + 1
            _file(conn, settings, uid)
            report.filed += 1
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.logout()
    return report
