"""One blueprint per audience; ``register_blueprints`` is the only place they are attached."""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter

from dispatch.views.frame import branding

# The largest id an INTEGER column holds (PostgreSQL's, and so ours).
MAX_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    """``<int:…>`` up to ``MAX_ID``: a larger number is a 404, not a database error (500)."""

    def __init__(self, map, *args, **kwargs) -> None:  # werkzeug names it "map"
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def register_blueprints(app: Flask) -> None:
    """Attach every blueprint to the app."""
    app.context_processor(branding)
    from dispatch.views import health, provinces

    # Before any rule is added: every <int:…> of every blueprint gets the bound.
    app.url_map.converters["int"] = IdConverter
    from dispatch.views import headers, params

    app.before_request(params.refuse_nul_bytes)
    headers.init_app(app)  # the security headers of every response

    app.register_blueprint(health.bp)
    provinces.init_app(app)
    from dispatch.views import verification

    verification.init_app(app)  # the public /xac-minh pages (share the provinces' throttle)
    from dispatch.views import api, auth, clerks

    auth.init_app(app)  # sign-in, roles and the error pages
    app.register_blueprint(clerks.bp)
    from dispatch.views import leadership

    app.register_blueprint(leadership.bp)  # read-only progress pages, map, chart, exports
    from dispatch.views import approvals

    app.register_blueprint(approvals.bp)  # ký duyệt: the drafts submitted to a leader
    from dispatch.views import admin

    app.register_blueprint(admin.bp)  # the people who sign in
    api.init_app(app)  # the JSON API and /api/openapi.json
