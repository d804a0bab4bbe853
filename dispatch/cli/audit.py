"""``dispatch audit verify``: check the hash chain of the audit log."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from dispatch.extensions import db


@click.group("audit")
def audit_group() -> None:
    """The audit log."""


@audit_group.command("verify")
@with_appcontext
def audit_verify_command() -> None:
    """Check the audit log's hash chain; exit 1 listing every break."""
    from dispatch.audit import verify_chain
    from dispatch.models import AuditEntry

    problems = verify_chain()
    count = db.session.execute(select(db.func.count()).select_from(AuditEntry)).scalar_one()
    if not problems:
        click.echo(f"Nhật ký kiểm tra toàn vẹn: {count} mục, chuỗi băm khớp.")
        last = db.session.execute(
            select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
        ).first()
        if last is not None:
            # Noted elsewhere (a register, an e-mail), the last hash shows later that no entry
            # was cut off the end: the chain alone cannot tell.
            click.echo(f"Mục cuối: số {last.id}, mã băm {last.hash}.")
        return
    reasons = {
        "previous entry missing or changed": "mục trước bị xoá hoặc bị sửa",
        "entry changed after it was written": "mục bị sửa sau khi ghi",
        "entry inserted into the chain": "mục bị chèn thêm vào giữa chuỗi",
    }
    click.echo(f"Nhật ký kiểm tra KHÔNG toàn vẹn: {len(problems)} chỗ hỏng trong {count} mục:")
    for problem in problems:
        click.echo(f"  - mục {problem.entry_id}: {reasons.get(problem.reason, problem.reason)}")
    raise SystemExit(1)


commands = (audit_group,)
