"""Each recipient's personal confirmation link, carried by every e-mail it is sent.

A token is HMAC-SHA256(SECRET_KEY, "<recipient id>:<random salt>"), 256 bits in URL-safe base64.
Only its SHA-256 is stored (``DispatchRecipient.token_hash``) with the salt, so the database alone
cannot rebuild a link, while the sender (which has the key) can put it in every e-mail, resend
included, without keeping it anywhere. What the link records is ``dispatch.receipts``' business.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from flask import current_app

from dispatch.models import DispatchRecipient


def derive_token(recipient_id: int, salt: str, key: str) -> str:
    """The token of a recipient: HMAC-SHA256 of its id and salt under ``key``, URL-safe base64."""
    digest = hmac.new(key.encode(), f"ack:{recipient_id}:{salt}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


def assign_token(recipient: DispatchRecipient) -> None:
    """Give a recipient (already flushed, so it has an id) a fresh salt and token hash."""
    recipient.token_salt = secrets.token_hex(16)
    recipient.token_hash = hash_token(token_for(recipient))


def token_for(recipient: DispatchRecipient) -> str:
    """The recipient's token, rebuilt from its salt and the app's secret key."""
    if recipient.token_salt is None:
        raise ValueError(f"recipient {recipient.id} has no token")
    return derive_token(recipient.id, recipient.token_salt, current_app.config["SECRET_KEY"])


def confirmation_url(recipient: DispatchRecipient) -> str:
    """The personal link e-mailed to the recipient (under ``BASE_URL``)."""
    return f"{current_app.config['BASE_URL']}/r/{token_for(recipient)}"


_WELL_FORMED = re.compile(r"[A-Za-z0-9_-]{43}")


def is_well_formed(token: str) -> bool:
    """Cheap shape check before any database look-up (43 URL-safe base64 characters)."""
    return _WELL_FORMED.fullmatch(token) is not None
