"""RFC 3161 time-stamps: the client that makes signatures PAdES B-T, and stand-alone tokens over
any bytes (the audit log's checkpoints), with their verification.

A token is the DER of the TSA's ``ContentInfo`` (a CMS ``SignedData`` over a ``TSTInfo``) whose
message imprint is the SHA-256 of the stamped bytes. Checking it means: the imprint matches the
bytes (``intact``), the TSA's signature holds (``valid``), and the TSA's certificate chains to a
trusted root (``trusted``); its ``at`` is the time the TSA vouches for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
from dataclasses import dataclass

VIETNAM = dt.timezone(dt.timedelta(hours=7))


class TimestampError(RuntimeError):
    """No time-stamp could be had from the TSA (Vietnamese message, names the TSA's address)."""


def timestamper_for(url: str | None, timeout: float = 10):
    """An RFC 3161 client for ``url`` (pyHanko's, over HTTP), or None without a URL.

    One client per address for the process's life: to size a signature's placeholder before
    signing, pyHanko's client asks its TSA for a token over a dummy digest, once per client. A
    new client for every signature doubled the requests to the TSA (and their wait); a kept one
    asks once, and every signature still gets its own token over its own digest. The dummy token
    only sizes the placeholder (with ``original.PLACEHOLDER_MARGIN``); it is never embedded.
    The client is ``signing.http.TimeStamper``: each request on its own session, with the
    process's one TLS context.
    """
    if not url:
        return None
    return _client(url, timeout)


@functools.lru_cache(maxsize=8)
def _client(url: str, timeout: float):
    from dispatch.signing.http import TimeStamper

    return TimeStamper(url, timeout=timeout)


def unavailable(url: str, exc: BaseException) -> TimestampError:
    """The error for a TSA that did not give a token: down, refusing, or answering nonsense."""
    reason = str(exc).strip() or type(exc).__name__
    return TimestampError(
        f"Không lấy được dấu thời gian từ máy chủ cấp dấu thời gian (TSA) {url}: "
        f"{type(exc).__name__}: {reason[:200]}"
    )


def stamp(data: bytes, url: str) -> bytes:
    """A time-stamp token over ``data`` from the TSA at ``url`` (DER); TimestampError if none."""
    stamper = timestamper_for(url)
    digest = hashlib.sha256(data).digest()
    try:
        token = asyncio.run(stamper.async_timestamp(digest, "sha256"))
    except Exception as exc:  # aiohttp, TimestampRequestError, a malformed answer …
        raise unavailable(url, exc) from exc
    return token.dump()


@dataclass(frozen=True)
class TokenCheck:
    """What a stand-alone token says about the bytes it was checked against."""

    intact: bool  # the token is over exactly these bytes, and its signature holds
    trusted: bool  # the TSA's certificate chains to a trusted root
    at: dt.datetime | None  # the time the TSA vouches for
    tsa: str  # the TSA's name, from its certificate
    problem: str | None = None  # why it is not intact (Vietnamese), when it is not

    @property
    def at_vietnam(self) -> str | None:
        return self.at.astimezone(VIETNAM).isoformat() if self.at else None


def load_roots(trust_roots) -> list:
    """asn1crypto certificates from DER or PEM bytes."""
    from asn1crypto import pem, x509

    roots = []
    for data in trust_roots:
        if pem.detect(data):
            _, _, data = pem.unarmor(data)
        roots.append(x509.Certificate.load(data))
    return roots


def check(token: bytes, data: bytes, trust_roots=()) -> TokenCheck:
    """Check the token ``token`` against ``data`` (no fetching: roots only)."""
    from asn1crypto import cms
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
    from pyhanko_certvalidator import ValidationContext

    try:
        signed_data = cms.ContentInfo.load(token)["content"]
        tst_info = signed_data["encap_content_info"]["content"].parsed
        at = tst_info["gen_time"].native
        tsa = _tsa_name(signed_data)
    except Exception as exc:
        return TokenCheck(False, False, None, "", f"dấu thời gian không đọc được ({exc})")
    context = ValidationContext(trust_roots=load_roots(trust_roots), allow_fetching=False)
    try:
        status = asyncio.run(
            validate_tst_signed_data(
                signed_data, context, lambda algorithm: hashlib.new(algorithm, data).digest()
            )
        )
    except Exception as exc:
        return TokenCheck(False, False, at, tsa, f"dấu thời gian không kiểm tra được ({exc})")
    intact = bool(status.get("intact") and status.get("valid"))
    trusted = intact and status.get("trust_problem_indic") is None
    problem = None if intact else "nội dung đã khác so với lúc đóng dấu thời gian"
    return TokenCheck(intact, trusted, at, tsa, problem)


def _tsa_name(signed_data) -> str:
    sid = signed_data["signer_infos"][0]["sid"]
    for cert in signed_data["certificates"] or ():
        chosen = cert.chosen
        if sid.name == "issuer_and_serial_number" and (
            chosen.serial_number == sid.chosen["serial_number"].native
        ):
            return chosen.subject.native.get("common_name", chosen.subject.human_friendly)
    return ""


def stamper(url: str | None):
    """``stamp`` bound to the TSA at ``url`` (for the audit checkpoints), or None without one."""
    if not url:
        return None
    return lambda data: stamp(data, url)


def checker(trust_roots=()):
    """``check`` bound to ``trust_roots`` (for the audit checkpoints)."""
    return lambda token, data: check(token, data, trust_roots)
