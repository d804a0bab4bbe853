"""The JSON API for other systems: bearer tokens, marshmallow schemas, an OpenAPI 3 document.

flask-smorest builds ``/api/openapi.json`` from the schemas and decorators below. Every request
needs ``Authorization: Bearer <token>`` (``dispatch tokens create EMAIL``); a session cookie is
never accepted here, and the blueprint is exempt from CSRF because no cookie authenticates it.
Errors are always JSON: ``{"message": "<Vietnamese>", "code": <HTTP status>}``, with ``errors``,
``field`` and ``line`` when a request body is invalid. The views are thin: they call the same
domain functions as the CLI (``drafts``, ``issuing``, ``status``, ``directory``, ``listing``).
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# Importing each module registers its operations on ``bp``.
from dispatch.views.api import directory, dispatches, edxml
from dispatch.views.api.common import API_CONFIG, BEARER_SCHEME, bp
from dispatch.views.api.schemas import ErrorSchema

__all__ = ["directory", "dispatches", "edxml", "init_app"]


class DispatchApi(Api):
    """flask-smorest's Api with our error schema, and no app-wide error handler.

    flask-smorest would answer every HTTP error of the whole app as JSON; the API's errors are
    handled by its own blueprint instead, and the HTML pages keep theirs
    (``dispatch.accounts.auth``).
    """

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        return None


def init_app(app: Flask) -> None:
    """Configure flask-smorest, declare the bearer scheme and register the API blueprint."""
    for key, value in API_CONFIG.items():
        app.config.setdefault(key, value)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # Vietnamese stays readable
    api = DispatchApi(app)
    api.spec.components.security_scheme("bearerAuth", BEARER_SCHEME)
    api.register_blueprint(bp)
    app.extensions["dispatch_api"] = api
