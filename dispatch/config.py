"""Configuration: defaults for a single machine, the environment (or ``.env``) for the rest.

In production (``DISPATCH_ENV=production``) every setting in ``REQUIRED_IN_PRODUCTION`` must come
from the environment; start-up stops with a message that names the missing one. On a developer's
machine the embedded defaults (SQLite, the built-in SMTP sink on port 8025, a secret key kept in
the instance folder) make ``make run`` work with nothing configured.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

REQUIRED_IN_PRODUCTION = (
    "SECRET_KEY",
    "DISPATCH_AUDIT_KEY",
    "DATABASE_URL",
    "BASE_URL",
    "MAIL_SERVER",
    "MAIL_DEFAULT_SENDER",
)

TIMEZONE = "Asia/Ho_Chi_Minh"
# The product's name in page headers, tab titles and printed reports (DISPATCH_PRODUCT_NAME).
DEFAULT_PRODUCT_NAME = "Công văn điện tử"

# The checkout the package runs from: templates, letters, attachments and migrations live here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from exc


def _persistent_secret(instance_path: Path, name: str = "secret_key") -> str:
    """Return a secret kept in the instance folder, creating it on first use (development)."""
    path = instance_path / name
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


def normalise_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgres://`` and ``postgresql://`` addresses."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_config(instance_path: Path, env: os._Environ[str] | dict[str, str] | None = None) -> dict:
    """Build the Flask configuration from the environment, failing on a missing required key."""
    env = os.environ if env is None else env
    production = env.get("DISPATCH_ENV", "development") == "production"
    if production:
        missing = [name for name in REQUIRED_IN_PRODUCTION if not env.get(name)]
        if missing:
            raise ConfigError(
                "Missing required setting(s): "
                + ", ".join(missing)
                + " (set them in the environment or in .env)"
            )

    data_dir = Path(env.get("DISPATCH_DATA_DIR") or instance_path / "data")
    database_url = env.get("DATABASE_URL") or f"sqlite:///{instance_path / 'dispatch.db'}"
    mail_port = _int("MAIL_PORT", env.get("MAIL_PORT"), 8025)
    config: dict[str, Any] = {
        "DISPATCH_ENV": "production" if production else "development",
        "SECRET_KEY": env.get("SECRET_KEY") or _persistent_secret(instance_path),
        # Keys the audit log (dispatch.audit); kept outside the database, never rotated away.
        "DISPATCH_AUDIT_KEY": env.get("DISPATCH_AUDIT_KEY")
        or _persistent_secret(instance_path, "audit_key"),
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "BASE_URL": (env.get("BASE_URL") or "http://127.0.0.1:5000").rstrip("/"),
        "DISPATCH_DATA_DIR": str(data_dir),
        "DISPATCH_TIMEZONE": TIMEZONE,
        # Signing (dispatch.signing): the agency's key, a PKCS#12 path or a ``pkcs11:`` URI, and
        # the RFC 3161 time-stamp authority. No key: letters are issued unsigned, as before.
        "DISPATCH_AGENCY_KEY": env.get("DISPATCH_AGENCY_KEY") or None,
        "DISPATCH_AGENCY_KEY_PASSWORD": env.get("DISPATCH_AGENCY_KEY_PASSWORD") or None,
        "DISPATCH_TSA_URL": env.get("DISPATCH_TSA_URL") or None,
        # With a TSA: embed the certificates' revocation information (OCSP/CRL) fetched at
        # signing time (PAdES B-LT): "embed" what can be had, "require" it, or "off".
        "DISPATCH_REVOCATION": (env.get("DISPATCH_REVOCATION") or "embed").strip().lower(),
        # The agency's seal (a red PNG, transparent background) on the agency's signature.
        "DISPATCH_AGENCY_SEAL": env.get("DISPATCH_AGENCY_SEAL") or None,
        # The root certificates (a PEM file) that ``dispatch verify`` trusts.
        "DISPATCH_TRUST_ROOTS": env.get("DISPATCH_TRUST_ROOTS") or None,
        "MAIL_SERVER": env.get("MAIL_SERVER") or "127.0.0.1",
        "MAIL_PORT": mail_port,
        "MAIL_USE_TLS": _bool(env.get("MAIL_USE_TLS")),
        "MAIL_USE_SSL": _bool(env.get("MAIL_USE_SSL")),
        "MAIL_USERNAME": env.get("MAIL_USERNAME") or None,
        "MAIL_PASSWORD": env.get("MAIL_PASSWORD") or None,
        "MAIL_DEFAULT_SENDER": env.get("MAIL_DEFAULT_SENDER") or "van-thu@thh.example",
        "MAIL_TIMEOUT": _int("MAIL_TIMEOUT", env.get("MAIL_TIMEOUT"), 30),
        # A temporary failure is retried until either limit is reached, then marked failed.
        "DELIVERY_MAX_ATTEMPTS": _int(
            "DELIVERY_MAX_ATTEMPTS", env.get("DELIVERY_MAX_ATTEMPTS"), 30
        ),
        "DELIVERY_GIVE_UP_HOURS": _int(
            "DELIVERY_GIVE_UP_HOURS", env.get("DELIVERY_GIVE_UP_HOURS"), 24
        ),
        "DISPATCH_LEADERSHIP_EMAIL": env.get("DISPATCH_LEADERSHIP_EMAIL") or None,
        # What every page's header and tab title call the product, and the agency's emblem (a
        # file under dispatch/static/, e.g. "emblem.png", or a path on this site: the Content
        # Security Policy loads images from the site alone, so another site's address is blocked).
        "DISPATCH_PRODUCT_NAME": env.get("DISPATCH_PRODUCT_NAME") or DEFAULT_PRODUCT_NAME,
        "DISPATCH_EMBLEM": env.get("DISPATCH_EMBLEM") or "",
        # Who a lost visitor (the 404 page) should ask: the issuing office's name, e-mail and
        # telephone; the e-mail falls back to MAIL_DEFAULT_SENDER.
        "DISPATCH_CONTACT_NAME": env.get("DISPATCH_CONTACT_NAME") or "Văn phòng Cục Tin học hoá",
        "DISPATCH_CONTACT_EMAIL": env.get("DISPATCH_CONTACT_EMAIL") or "",
        "DISPATCH_CONTACT_PHONE": env.get("DISPATCH_CONTACT_PHONE") or "",
        # Inbound mail (dispatch.inbound): each e-mail's envelope sender is this address with
        # its own token ("bounces+<token>@domain"), so bounces find their message; replies go
        # to the Reply-To mailbox; the scheduler polls DISPATCH_IMAP_URL for both.
        "DISPATCH_BOUNCE_ADDRESS": env.get("DISPATCH_BOUNCE_ADDRESS") or None,
        "DISPATCH_REPLY_TO": env.get("DISPATCH_REPLY_TO") or None,
        "DISPATCH_IMAP_URL": env.get("DISPATCH_IMAP_URL") or None,
        "DISPATCH_IMAP_CA_FILE": env.get("DISPATCH_IMAP_CA_FILE") or None,
        # Where handled messages are moved; set it empty to leave them, flagged, where they are.
        "DISPATCH_IMAP_FILED": env.get("DISPATCH_IMAP_FILED", "Dispatch-Processed"),
        "DISPATCH_IMAP_EVERY": _int("DISPATCH_IMAP_EVERY", env.get("DISPATCH_IMAP_EVERY"), 60),
        "DISPATCH_INBOUND_MAX_BYTES": _int(
            "DISPATCH_INBOUND_MAX_BYTES", env.get("DISPATCH_INBOUND_MAX_BYTES"), 40 * 1024 * 1024
        ),
        # This agency's mã định danh (QCVN 102, 13 characters) for edXML; no default: a wrong
        # one would misaddress every package, so edXML export asks for it.
        "DISPATCH_ORGAN_ID": env.get("DISPATCH_ORGAN_ID") or "",
        # How many reverse proxies in front of the app to believe (X-Forwarded-For …); 0: none.
        "DISPATCH_TRUSTED_PROXIES": _int(
            "DISPATCH_TRUSTED_PROXIES", env.get("DISPATCH_TRUSTED_PROXIES"), 0
        ),
        # Unknown confirmation links allowed per client address in the window (per worker).
        "DISPATCH_LINK_404_LIMIT": _int(
            "DISPATCH_LINK_404_LIMIT", env.get("DISPATCH_LINK_404_LIMIT"), 20
        ),
        "DISPATCH_LINK_404_WINDOW": _int(
            "DISPATCH_LINK_404_WINDOW", env.get("DISPATCH_LINK_404_WINDOW"), 600
        ),
        # Comma-separated ISO dates the holidays package does not know (see dispatch.calendar).
        "DISPATCH_EXTRA_HOLIDAYS": env.get("DISPATCH_EXTRA_HOLIDAYS") or "",
        "DISPATCH_EXTRA_WORKING_DAYS": env.get("DISPATCH_EXTRA_WORKING_DAYS") or "",
        # A signed-in session ends after this long without a request (see accounts/sessions).
        "DISPATCH_SESSION_IDLE_MINUTES": _int(
            "DISPATCH_SESSION_IDLE_MINUTES", env.get("DISPATCH_SESSION_IDLE_MINUTES"), 8 * 60
        ),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_SECURE": production,
        "MAX_CONTENT_LENGTH": _int(
            "DISPATCH_MAX_UPLOAD", env.get("DISPATCH_MAX_UPLOAD"), 20 * 1024 * 1024
        ),
        # The largest file the public verification page (/xac-minh) takes.
        "DISPATCH_VERIFY_MAX_UPLOAD": _int(
            "DISPATCH_VERIFY_MAX_UPLOAD", env.get("DISPATCH_VERIFY_MAX_UPLOAD"), 30 * 1024 * 1024
        ),
        # The largest letter e-mail, in bytes of files: the letter's PDF and DOCX and every
        # attachment, as each office receives them. Checked at upload and again at issuing. On
        # the wire the files are base64, a third larger: the relay must accept about 1.4 times
        # this.
        "DISPATCH_MAIL_MAX_BYTES": _int(
            "DISPATCH_MAIL_MAX_BYTES", env.get("DISPATCH_MAIL_MAX_BYTES"), 20 * 1024 * 1024
        ),
    }
    if config["DISPATCH_REVOCATION"] not in ("off", "embed", "require"):
        raise ConfigError(
            "DISPATCH_REVOCATION must be off, embed or require, "
            f"got {config['DISPATCH_REVOCATION']!r}"
        )
    return config
