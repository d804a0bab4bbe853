"""The baseline of ``confirm_load``: a bare Flask app that answers the same two requests with
the least a confirmation must do, so that the ratio measures our overhead, not the database's.

``gunicorn bench._bare_app:app``. GET ``/r/<token>`` returns a small page with a form field
named ``csrf_token`` (so the load generator runs the same code against both); POST commits one
INSERT to the same PostgreSQL database (``DATABASE_URL``) and answers 303 like the real
confirmation: no template, no session, no ORM, no audit.
"""

from __future__ import annotations

import os

from flask import Flask, Response, redirect
from sqlalchemy import create_engine, text

from dispatch.config import normalise_database_url

app = Flask(__name__)

PAGE = (
    '<!doctype html><html lang="vi"><body><form method="post">'
    '<input type="hidden" name="csrf_token" value="bare"></form></body></html>'
)

# One pool per worker, made lazily (after gunicorn forks), like the app's own engine.
_engine = None


def _database():
    global _engine
    if _engine is None:
        _engine = create_engine(
            normalise_database_url(os.environ["DATABASE_URL"]), pool_pre_ping=True
        )
        with _engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE IF NOT EXISTS bench_bare_confirmation "
                    "(id serial PRIMARY KEY, token text NOT NULL, "
                    "at timestamptz NOT NULL DEFAULT now())"
                )
            )
    return _engine


@app.get("/r/<token>")
def page(token: str) -> Response:
    """A fixed page."""
    return Response(PAGE, mimetype="text/html")


@app.post("/r/<token>")
def confirm(token: str) -> Response:
    """One committed INSERT, then a redirect back to the page, as after a real confirmation."""
    with _database().begin() as conn:
        conn.execute(text("INSERT INTO bench_bare_confirmation (token) VALUES (:t)"), {"t": token})
    return redirect(f"/r/{token}", code=303)


@app.get("/healthz")
def healthz() -> Response:
    """Ready, with the database pool open."""
    _database()
    return Response("ok")
