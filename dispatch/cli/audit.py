"""``dispatch audit verify`` and ``dispatch audit checkpoint``: the audit log's integrity."""

from __future__ import annotations

import datetime as dt

import click
from flask import current_app
from flask.cli import with_appcontext

from dispatch.cli.options import at_option

VIETNAM = dt.timezone(dt.timedelta(hours=7))

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
    from dispatch.signing import pades, timestamps

    report = audit.check_chain()
    roots = pades.read_trust_roots(current_app.config.get("DISPATCH_TRUST_ROOTS"))
    checkpoints, checkpoint_problems = audit.verify_checkpoints(timestamps.checker(roots))
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
        stamped = [checkpoint for checkpoint in checkpoints if checkpoint.stamp is not None]
        if newest.stamp is not None:
            trust = "tin cậy" if newest.stamp.trusted else "chưa xác định được nguồn tin cậy"
            click.echo(
                f"Điểm neo mới nhất có dấu thời gian RFC 3161 lúc "
                f"{newest.stamp.at.astimezone(VIETNAM):%d/%m/%Y %H:%M:%S} (+07:00) của "
                f"{newest.stamp.tsa or 'TSA'} (chứng thư {trust}); "
                f"{len(stamped)}/{len(checkpoints)} điểm neo có dấu thời gian khớp."
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
    from dispatch.signing import timestamps
    from dispatch.transaction import unit_of_work

    url = current_app.config.get("DISPATCH_TSA_URL")
    with unit_of_work():
        written = audit.write_checkpoint_report(at, stamp=timestamps.stamper(url))
    click.echo(f"Đã ghi điểm neo nhật ký: {written.path}")
    if written.stamped:
        click.echo(f"Điểm neo có dấu thời gian RFC 3161 của {url}.")
    if written.stamp_error:
        click.echo(
            f"Lỗi: {written.stamp_error}. Điểm neo chỉ có chữ ký bằng khoá nhật ký, "
            "không có dấu thời gian.",
            err=True,
        )
        raise SystemExit(1)


commands = (audit_group,)
