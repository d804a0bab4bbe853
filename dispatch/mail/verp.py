"""Each e-mail's own envelope sender (VERP): ``bounces+<token>@<domain>``.

A bounce is sent to the envelope sender (MAIL FROM) of the message it reports. Giving every
outbox row its own address, built from ``DISPATCH_BOUNCE_ADDRESS`` and a random token kept on
the row (``OutboxMessage.bounce_token``), lets the inbound handler find the row, and so its
recipient, from the address alone, without reading the bounce's prose. The token is 120 random
bits in lower-case base32: unguessable (nobody can forge a bounce for a row they have not seen)
and saying nothing about the recipient; lower case because some relays fold local parts.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any

TOKEN_BYTES = 15  # 120 bits: 24 base32 characters
_TOKEN = re.compile(r"[a-z2-7]{24}")


def new_token() -> str:
    """A fresh token for an outbox row."""
    return base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").lower()


def is_token(text: str) -> bool:
    """Whether ``text`` has the shape of a token (checked before any look-up)."""
    return bool(_TOKEN.fullmatch(text))


def base_address(config: Mapping[str, Any]) -> str | None:
    """``DISPATCH_BOUNCE_ADDRESS`` as a bare address ('bounces@thh.example'), or None."""
    value = config.get("DISPATCH_BOUNCE_ADDRESS")
    if not value:
        return None
    address = parseaddr(str(value))[1]
    return address if "@" in address else None


def bounce_address(token: str | None, config: Mapping[str, Any]) -> str | None:
    """The envelope sender of the row with ``token``: 'bounces+<token>@domain'; None when no
    bounce address is configured or the row has no token (then the From address is used)."""
    base = base_address(config)
    if base is None or not token:
        return None
    local, domain = base.rsplit("@", 1)
    local = local.split("+", 1)[0]
    return f"{local}+{token}@{domain}"


def token_in(address: str | None, config: Mapping[str, Any]) -> str | None:
    """The token of a VERP address of ours ('bounces+<token>@domain', any case), or None."""
    base = base_address(config)
    if base is None or not address:
        return None
    address = parseaddr(address)[1] or address
    if "@" not in address:
        return None
    local, domain = address.rsplit("@", 1)
    base_local, base_domain = base.rsplit("@", 1)
    if domain.lower() != base_domain.lower():
        return None
    prefix = base_local.split("+", 1)[0].lower() + "+"
    if not local.lower().startswith(prefix):
        return None
    token = local[len(prefix) :].lower()
    return token if is_token(token) else None
