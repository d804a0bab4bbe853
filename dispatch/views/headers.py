"""The security headers of every response, set in one place.

``add_security_headers`` runs after every request of every blueprint, error pages and static
files included. It only adds what a response does not already say: a blueprint or a route with
a stricter set (the provinces' links send no Referer at all) keeps it, and the one page that
must be framed by the site itself (the composer's PDF preview) says so with ``frameable``.

The Content Security Policy allows scripts, styles, images and fonts from the site alone, with
no inline script or style (pages link their CSS and JavaScript from /static), no plugins, and
no framing by another site. Pages are per person and change often: nothing is kept in a cache
(``no-store``), except static files, which Flask serves with their own validators. In production
(``DISPATCH_ENV=production``, behind HTTPS) browsers are also told to use HTTPS only (HSTS).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, Response, after_this_request, current_app, request

POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
NO_STORE = "no-store"
HSTS = "max-age=31536000; includeSubDomains"


def add_security_headers(response: Response) -> Response:
    """Add every security header the response does not set itself."""
    for header, value in SECURITY_HEADERS.items():
        response.headers.setdefault(header, value)
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", NO_STORE)
    if current_app.config.get("DISPATCH_ENV") == "production":
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def _framed_by_the_site(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = POLICY.replace(
        "frame-ancestors 'none'", "frame-ancestors 'self'"
    )
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


def frameable(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let the site's own pages (and no other site) show this route in a frame."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        after_this_request(_framed_by_the_site)
        return view(*args, **kwargs)

    return wrapped


def init_app(app: Flask) -> None:
    """Attach ``add_security_headers`` to every response of the app."""
    app.after_request(add_security_headers)
