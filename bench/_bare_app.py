"""The baseline of ``confirm_load``: a bare Flask app answering the same two requests trivially.

``gunicorn bench._bare_app:app``. GET ``/r/<token>`` returns a small page with a form field
named ``csrf_token`` (so the load generator runs the same code against both), POST answers 303
like the real confirmation: no database, no template, no session.
"""

from __future__ import annotations

from flask import Flask, Response, redirect

app = Flask(__name__)

PAGE = (
    '<!doctype html><html lang="vi"><body><form method="post">'
    '<input type="hidden" name="csrf_token" value="bare"></form></body></html>'
)


@app.get("/r/<token>")
def page(token: str) -> Response:
    """A fixed page."""
    return Response(PAGE, mimetype="text/html")


@app.post("/r/<token>")
def confirm(token: str) -> Response:
    """A redirect back to the page, as after a real confirmation."""
    return redirect(f"/r/{token}", code=303)


@app.get("/healthz")
def healthz() -> Response:
    """Ready."""
    return Response("ok")
