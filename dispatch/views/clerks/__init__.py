"""Signed-in pages for clerks (and admins; leaders read only), one module per part of the day:
``dispatches`` (the list, issuing, watching delivery), ``drafts`` (the composer with its live
preview and autosave), ``recipients`` (what a clerk does for one office), ``directory`` and
``register`` (the outgoing register). They share this blueprint, so every endpoint is
``clerks.<name>``.

Routes are thin: the work is in the domain packages. Every route checks the role on the server
with ``role_required``; routes that change anything use ``CHANGE_ROLES`` (the directory's edits
``ADMIN_ROLES``). Every POST carries the CSRF token (Flask-WTF checks it for the whole app; the
autosave script sends it in the ``X-CSRFToken`` header).
"""

from __future__ import annotations

# Importing each module registers its routes on ``bp``.
from dispatch.views.clerks import (
    amendments,
    approval,
    directory,
    dispatches,
    drafts,
    recipients,
    register,
    word_import,
)
from dispatch.views.clerks.common import bp

__all__ = [
    "amendments",
    "approval",
    "bp",
    "directory",
    "dispatches",
    "drafts",
    "recipients",
    "register",
    "word_import",
]
