"""What every page's frame (``base.html``) shows, given to every template of the app."""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for

from dispatch.config import DEFAULT_PRODUCT_NAME


def branding() -> dict[str, Any]:
    """What every page's frame shows: the product's name, the emblem, whom to contact."""
    config = current_app.config
    emblem = config.get("DISPATCH_EMBLEM") or ""
    if emblem and not emblem.startswith(("https://", "http://", "/")):
        emblem = url_for("static", filename=emblem)
    return {
        "product_name": config.get("DISPATCH_PRODUCT_NAME") or DEFAULT_PRODUCT_NAME,
        "emblem_url": emblem,
        "contact": {
            "name": config.get("DISPATCH_CONTACT_NAME") or "",
            "email": config.get("DISPATCH_CONTACT_EMAIL")
            or config.get("MAIL_DEFAULT_SENDER")
            or "",
            "phone": config.get("DISPATCH_CONTACT_PHONE") or "",
        },
    }
