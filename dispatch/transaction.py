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
