"""One blueprint per audience; ``register_blueprints`` is the only place they are attached."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    """Attach every blueprint to the app."""
    from dispatch.views import health, provinces

    app.register_blueprint(health.bp)
    provinces.init_app(app)
    from dispatch.views import api, auth, clerks

    auth.init_app(app)  # sign-in, roles and the error pages
    app.register_blueprint(clerks.bp)
    from dispatch.views import leadership

    app.register_blueprint(leadership.bp)  # read-only progress pages, map, chart, exports
    api.init_app(app)  # the JSON API and /api/openapi.json
