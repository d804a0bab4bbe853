"""Liveness for load balancers and monitors."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from dispatch.extensions import csrf, db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@csrf.exempt
def healthz():
    """Answer 200 when the app and its database are up, 503 otherwise."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:  # any database failure means "not healthy"
        # Reading changes nothing; the rollback only makes the session usable again.
        db.session.rollback()
        return jsonify(status="error", database=str(exc.__class__.__name__)), 503
    return jsonify(status="ok", database="ok")
