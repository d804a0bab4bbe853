"""Responses that hand a file to the browser: the header that names it, archived documents."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

from flask import Response, abort

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


def file_response(
    data: bytes | str, media_type: str, filename: str, *, inline: bool = False
) -> Response:
    """A file to save (or, ``inline``, to show): named with ``content_disposition``, never cached,
    its type never sniffed. ``media_type`` may carry a charset ("text/csv; charset=utf-8")."""
    disposition = content_disposition(filename)
    if inline:
        disposition = disposition.replace("attachment;", "inline;", 1)
    return Response(
        data,
        content_type=media_type,
        headers={
            "Content-Disposition": disposition,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def send_document(document: Document, *, inline: bool = False) -> Response:
    """An archived file as it was kept; a 500 page naming the problem if it no longer matches."""
    try:
        data = archive.read_archived(document.path, document.sha256)
    except archive.ArchiveError as exc:
        abort(Response(render_error(500, str(exc))[0], status=500))
    return file_response(data, document.media_type, document.filename, inline=inline)
