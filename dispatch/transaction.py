"""Where a transaction ends: one ``unit_of_work`` per request, CLI command or scheduler job.

The top floor owns the commit. A view, a ``dispatch`` command and a scheduler job each wrap the
domain calls that make one change in ``with unit_of_work():``; the domain functions they call
only add and flush, so the change and its audit entries commit (or roll back) together. The few
domain functions that must commit on their own say so in the first line of their docstring:
the sender (each outcome before the next message leaves), issuing (the number, the archive and
the outbox at once, before any e-mail can leave), the reminder run (one dispatch at a time),
submitting and approving for signature (each with the PDF it archived) and approving a recall
or replacement (it signs and issues).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from dispatch.extensions import db


@contextmanager
def unit_of_work() -> Iterator[None]:
    """Commit what the block changed when it ends normally; roll it all back if it raises."""
    try:
        yield
        db.session.commit()
    except BaseException:
        # Also when the commit itself fails: the session must not carry a half-done change.
        db.session.rollback()
        raise


@contextmanager
def statement_connection() -> Iterator[Connection | None]:
    """A pooled connection of its own on which each statement commits by itself (autocommit),
    for a request whose every change is one statement (a confirmation link's): no BEGIN and
    no COMMIT to wait for. None on SQLite, where those requests use the session as any other.

    Only statements that are whole changes may run on it: a change and its audit entry go in
    one statement (``receipts.acknowledgements``), or in a ``unit_of_work``.
    """
    if db.engine.dialect.name != "postgresql":
        yield None
        return
    with db.engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")
