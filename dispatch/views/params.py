"""Whole numbers from the query string, read in one place for every page.

``request.args.get(name, type=int)`` hands a view any integer Python can hold: a page number
past 64 bits then reaches the database as an OFFSET it cannot represent (a 500). Here a number
is checked against the range the view can use, and anything else is a 400 with a Vietnamese
message that names the parameter: a JSON error under /api, the error page elsewhere.
"""

from __future__ import annotations

from flask import Response, abort, request

from dispatch.accounts.auth import error_response, is_api_request, render_error
from dispatch.reporting.listing import MAX_PAGE

# A number written with more digits than this is out of every range we accept: it is read as
# this bound (with its sign) rather than converted, however long it is.
_MAX_DIGITS = 12
_BEYOND = 10**_MAX_DIGITS


def _parse(text: str) -> int | None:
    """A whole number written in ASCII digits with an optional sign; None for anything else."""
    text = text.strip()
    sign = -1 if text[:1] == "-" else 1
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    if len(digits.lstrip("0")) > _MAX_DIGITS:
        return sign * _BEYOND
    return int(text)


def refuse(name: str, message: str) -> None:
    """Answer the request with a 400 naming the query parameter ``name``."""
    if is_api_request():
        body, status = error_response(400, message, field=name)
        body.status_code = status
        abort(body)
    abort(Response(render_error(400, message)[0], status=400))


def _number(n: int) -> str:
    """As Vietnamese writes it: 1.000.000 (a year stays 2021)."""
    return str(n) if abs(n) < 10_000 else f"{n:,}".replace(",", ".")


def int_arg(
    name: str,
    default: int | None,
    *,
    low: int,
    high: int,
    strict: bool = True,
    clamp: bool = False,
) -> int | None:
    """The query parameter ``name`` as a whole number from ``low`` to ``high``.

    ``default`` when it is absent or empty. Anything else is a 400 (``refuse``), unless the page
    shows something sensible instead: with ``clamp`` a number out of range becomes the nearest
    bound; when not ``strict`` whatever is still wrong gives ``default``.
    """
    raw = request.args.get(name, "")
    if raw.strip() == "":
        return default
    value = _parse(raw)
    if value is not None and clamp:
        value = min(max(value, low), high)
    if value is None or not low <= value <= high:
        if not strict:
            return default
        refuse(name, f"Tham số “{name}” phải là số nguyên từ {_number(low)} đến {_number(high)}.")
    return value


def refuse_nul_bytes() -> None:
    """Before every request: a query string with a NUL byte (%00) is a 400.

    No page has a use for one, and PostgreSQL refuses it in any text it compares with.
    """
    for name, value in request.args.items(multi=True):
        if "\x00" in name or "\x00" in value:
            shown = name.replace("\x00", "") or "?"
            refuse(name, f"Tham số “{shown}” chứa ký tự rỗng NUL (U+0000), không được phép.")


def page_arg(name: str = "page", *, clamp: bool = False) -> int:
    """The page number asked for: 1 when absent; a 400 below 1 or past ``MAX_PAGE`` (with
    ``clamp``, the nearest of those, for a list that shows its last page past the end)."""
    page = int_arg(name, 1, low=1, high=MAX_PAGE, clamp=clamp)
    assert page is not None
    return page
