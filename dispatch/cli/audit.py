"""``dispatch audit verify`` and ``dispatch audit checkpoint``: the audit log's integrity."""

from __future__ import annotations

import datetime as dt

import click
from flask.cli import with_appcontext

from dispatch.cli.options import at_option

# How ``audit verify`` words each kind of break.
REASONS = {
    "previous entry missing or changed": "mục trước bị xoá hoặc bị sửa",
    "entry changed after it was written": "mục bị sửa sau khi ghi",
    "entry inserted into the chain": "mục bị chèn thêm vào giữa chuỗi",
    "entry not signed with the audit key": "mục không mang chữ ký bằng khoá nhật ký",
    "unkeyed entry after keyed ones": "mục không có chữ ký nằm sau các mục đã có chữ ký",
}


@click.group("audit")
def audit_group() -> None:
    """The audit log."""


@audit_group.command("verify")
@with_appcontext
def audit_verify_command() -> None:
    """Check the chains, the key of every entry and the checkpoints; exit 1 listing every break."""
    from dispatch import audit

    report = audit.check_chain()
    checkpoints, checkpoint_problems = audit.verify_checkpoints()
    broken = bool(report.problems or checkpoint_problems)
    if not report.problems:
        click.echo(f"Nhật ký kiểm tra toàn vẹn: {report.entries} mục, chuỗi băm và chữ ký khớp.")
    else:
        click.echo(
            f"Nhật ký kiểm tra KHÔNG toàn vẹn: {len(report.problems)} chỗ hỏng trong "
            f"{report.entries} mục:"
        )
        for problem in report.problems:
            click.echo(f"  - mục {problem.entry_id}: {REASONS.get(problem.reason, problem.reason)}")
    if report.unkeyed:
        click.echo(f"{report.unkeyed} mục đầu được ghi trước khi có khoá nhật ký (chỉ có mã băm).")
    if checkpoint_problems:
        click.echo(f"Điểm neo: {len(checkpoint_problems)} điểm không khớp với nhật ký:")
        for problem in checkpoint_problems:
            click.echo(f"  - {problem.checkpoint}: {problem.message}")
    if checkpoints:
        newest = checkpoints[-1]
        click.echo(
            f"Khớp với {len(checkpoints)} điểm neo; điểm mới nhất lúc "
            f"{newest.at.astimezone(dt.UTC):%d/%m/%Y %H:%M} UTC ({newest.name}): "
            "không mục nào trước thời điểm đó bị cắt bớt."
        )
    elif not checkpoint_problems:
        click.echo(
            "Chưa có điểm neo nào: chưa thể biết các mục cuối có bị cắt bớt hay không "
            "(chạy `dispatch audit checkpoint`; bộ lập lịch ghi mỗi ngày một điểm)."
        )
    heads = audit.lane_heads()
    if heads:
        last_id = max(head["last_id"] for head in heads.values())
        last = next(head for head in heads.values() if head["last_id"] == last_id)
        # Noted elsewhere (a register, an e-mail), the last hash shows later that no entry was
        # cut off the end, even after the newest checkpoint.
        click.echo(f"Mục cuối: số {last_id}, mã băm {last['hash']}.")
    if broken:
        raise SystemExit(1)


@audit_group.command("checkpoint")
@at_option
@with_appcontext
def audit_checkpoint_command(at: dt.datetime) -> None:
    """Write the heads of the audit log's chains, keyed, to a file in the archive."""
    from dispatch import audit

    path = audit.write_checkpoint(at)
    click.echo(f"Đã ghi điểm neo nhật ký: {path}")


commands = (audit_group,)
