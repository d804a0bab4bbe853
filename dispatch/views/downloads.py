"""Responses that hand a file to the browser: the header that names it, archived documents, and
the routes of a file offered in several formats."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import quote

from flask import Blueprint, Response, abort

from dispatch import archive
from dispatch.accounts.auth import render_error
from dispatch.models import Document


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266 / RFC 5987)."""
    name = unicodedata.normalize("NFC", filename).replace("/", "_").replace("\\", "_")
    # "đ" has no decomposition, so the generic ASCII folding would drop it.
    folded = unicodedata.normalize("NFKD", name.replace("đ", "d").replace("Đ", "D"))
    fallback = "".join(c for c in folded.encode("ascii", "ignore").decode() if c.isprintable())
    fallback = fallback.replace('"', "").strip() or "tep"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


# Headers a caller adds to a file response: never keep it in a cache, never guess its type.
NO_STORE = {"Cache-Control": "no-store"}
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def file_response(
    data: bytes | str,
    media_type: str,
    filename: str,
    *,
    inline: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A file to save (or, ``inline``, to show), named by ``content_disposition``."""
    # A media type with its charset ("text/csv; charset=utf-8") is sent as given; Flask adds
    # "; charset=utf-8" to a bare text/… type. ``headers`` are added as given (NO_STORE …).
    disposition = content_disposition(filename)
    if inline:
        disposition = disposition.replace("attachment;", "inline;", 1)
    all_headers = {"Content-Disposition": disposition, **(headers or {})}
    if ";" in media_type:
        return Response(data, content_type=media_type, headers=all_headers)
    return Response(data, mimetype=media_type, headers=all_headers)


def add_file_routes(
    bp: Blueprint,
    rule: str,
    endpoint: str,
    view_func: Callable[..., Response],
    extensions: Iterable[str],
) -> None:
    """Route GET ``<rule>.<extension>`` to ``view_func(extension=…)`` for every extension."""
    for extension in extensions:
        # One rule and one endpoint (``<endpoint>_<extension>``) per format, so templates ask
        # url_for for "the PDF" by name and an unknown extension is a plain 404.
        bp.add_url_rule(
            f"{rule}.{extension}",
            endpoint=f"{endpoint}_{extension}",
            view_func=view_func,
            defaults={"extension": extension},
            methods=["GET"],
        )


def send_document(document: Document, *, inline: bool = False) -> Response:
    """An archived file as it was kept; a 500 page naming the problem if it no longer matches."""
    try:
        data = archive.read_archived(document.path, document.sha256)
    except archive.ArchiveError as exc:
        abort(Response(render_error(500, str(exc))[0], status=500))
    return file_response(
        data, document.media_type, document.filename, inline=inline, headers=NOSNIFF
    )
