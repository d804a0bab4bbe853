"""The only way WeasyPrint may read anything while rendering a letter.

WeasyPrint's default fetcher follows every URL the HTML or CSS names (``http:``, ``ftp:``, any
``file:`` path) and ``<link rel="attachment">`` even embeds the fetched file in the PDF. Letter
text is escaped before it reaches the HTML, but the fetcher is the second wall: it serves files
from a fixed allow-list of folders (the shipped fonts, the letter stylesheet, images under the
project's ``attachments/``), only with the expected file types, and refuses everything else with
an exception. Built with ``fail_on_errors=True``, a refusal stops the render instead of being
logged and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from weasyprint.urls import URLFetcher, URLFetcherResponse

# What each kind of asset may be; anything else in an allowed folder is still refused.
FONT_TYPES = {".ttf": "font/ttf"}
STYLE_TYPES = {".css": "text/css"}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


class ForbiddenResource(ValueError):
    """The renderer asked for something outside the allow-list."""


class RestrictedURLFetcher(URLFetcher):
    """Serve local files from allowed folders by type; refuse every other URL."""

    def __init__(self, allowed: Mapping[Path, Mapping[str, str]]) -> None:
        """``allowed`` maps each folder to the suffixes (and media types) served from it."""
        super().__init__(allowed_protocols=("file",), allow_redirects=False, fail_on_errors=True)
        # Resolved once, so a symlink or "../" in a request cannot step outside.
        self._allowed = {Path(folder).resolve(): dict(types) for folder, types in allowed.items()}

    @property
    def folders(self) -> Iterable[Path]:
        """The folders this fetcher serves from."""
        return tuple(self._allowed)

    def resolve(self, url: str) -> tuple[Path, str]:
        """The allowed file and media type behind ``url``; raise ForbiddenResource otherwise."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "file":
            raise ForbiddenResource(f"refused a non-local URL: {url[:200]}")
        if parts.netloc not in ("", "localhost"):
            raise ForbiddenResource(f"refused a file on another host: {url[:200]}")
        path = Path(url2pathname(unquote(parts.path))).resolve()
        for folder, types in self._allowed.items():
            if path.is_relative_to(folder):
                media_type = types.get(path.suffix.lower())
                if media_type is None:
                    raise ForbiddenResource(f"refused a file of this type: {path}")
                if not path.is_file():
                    raise ForbiddenResource(f"no such file: {path}")
                return path, media_type
        raise ForbiddenResource(f"refused a file outside the allowed folders: {path}")

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> URLFetcherResponse:
        """Return the allowed file's bytes; raise ForbiddenResource for anything else."""
        path, media_type = self.resolve(url)
        return URLFetcherResponse(
            path.as_uri(), body=path.read_bytes(), headers={"Content-Type": media_type}
        )
