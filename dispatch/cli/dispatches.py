"""``dispatch seed``, ``draft create``, ``issue``, ``status``, ``users create``, ``audit verify``.

Each command parses its options, reads the clock once (``--at`` or now), calls the domain module
and prints the outcome in Vietnamese. Errors meant for the clerk exit with status 1 and a
"Lỗi: …" line on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from pathlib import Path

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from dispatch.clock import format_local, now, parse_moment
from dispatch.config import PROJECT_ROOT
from dispatch.extensions import db
from dispatch.models import Dispatch, Role, User

SEED_LETTER = Path("official_letters") / "pc-covid-2021"


class CliError(click.ClickException):
    """An error for the clerk: printed as 'Lỗi: …', exit status 1."""

    def show(self, file=None) -> None:
        click.echo(f"Lỗi: {self.format_message()}", err=True)


def moment_option(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime:
    """``--at``: an ISO-8601 moment (Vietnam time if no offset), or now."""
    if value is None:
        return now()
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"thời điểm không hợp lệ {value!r}, cần dạng ISO-8601, ví dụ 2021-11-15T08:30:00+07:00"
        ) from exc


def at_option(function):
    """The shared ``--at`` option."""
    return click.option(
        "--at",
        "at",
        callback=moment_option,
        help="The moment to act at, ISO-8601 (default: now).",
    )(function)


def resolve_actor(email: str | None) -> User | None:
    """The user named by ``--as``, or None (the audit log then says "system")."""
    if email is None:
        return None
    from dispatch.accounts.users import UserError, get_user

    try:
        return get_user(email)
    except UserError as exc:
        raise CliError(str(exc)) from exc


# --- seed ---------------------------------------------------------------------------------------


@click.command("seed")
@at_option
@with_appcontext
def seed_command(at: dt.datetime) -> None:
    """Load the 2021 directory, the demo users and the seed letter as a draft (idempotent)."""
    from dispatch.accounts import users
    from dispatch.directory import offices
    from dispatch.drafting import drafts
    from dispatch.letters.source import LetterSourceError

    result = offices.seed_directory(actor="system", at=at)
    group = offices.get_group(offices.DEFAULT_GROUP_CODE)
    if result.changed:
        click.echo(
            f"Danh bạ: đã thêm {len(result.created)} cơ quan vào nhóm {group.code} "
            f"({group.name}), nhóm có {len(group.members)} cơ quan."
        )
    else:
        click.echo(f"Danh bạ: đã có sẵn, nhóm {group.code} có {len(group.members)} cơ quan.")

    # One password for the demo users: from the environment, or made up and shown once.
    password = os.environ.get("DISPATCH_DEMO_PASSWORD") or None
    generated = password is None
    if password is None:
        password = secrets.token_urlsafe(12)
    created = []
    for email, role, name in users.DEMO_USERS:
        if users.find_user(email) is not None:
            click.echo(f"Người dùng {email}: đã có.")
            continue
        try:
            users.create_user(email, role=role, password=password, at=at, actor="system", name=name)
        except users.UserError as exc:
            db.session.rollback()
            raise CliError(str(exc)) from exc
        created.append(email)
        click.echo(f"Người dùng {email} ({users.ROLE_LABELS[role]}): đã tạo.")
    db.session.commit()
    if created:
        if generated:
            click.echo(
                f"Mật khẩu của người dùng mới tạo (chỉ hiện một lần, hãy đổi sau khi đăng nhập): "
                f"{password}"
            )
        else:
            click.echo("Mật khẩu của người dùng mới tạo: lấy từ DISPATCH_DEMO_PASSWORD.")

    folder = PROJECT_ROOT / SEED_LETTER
    if not (folder / "letter.md").is_file():
        click.echo(f"Công văn mẫu: không có thư mục {SEED_LETTER}, bỏ qua.")
        return
    try:
        from dispatch.letters.source import build_letter, read_source

        source = read_source(folder)
        letter = build_letter(source)
    except LetterSourceError as exc:
        raise CliError(f"công văn mẫu không hợp lệ: {exc}") from exc
    existing = db.session.execute(
        select(Dispatch.id)
        .where(Dispatch.symbol == letter.symbol, Dispatch.subject == letter.subject)
        .order_by(Dispatch.id)
        .limit(1)
    ).scalar_one_or_none()
    if existing is not None:
        click.echo(f"Công văn mẫu: đã có (mã {existing}).")
        return
    clerk = users.find_user(users.DEMO_USERS[0][0])
    try:
        dispatch = drafts.create_draft(
            source, group_code=offices.DEFAULT_GROUP_CODE, actor=clerk, at=at
        )
        db.session.commit()
    except (drafts.DraftError, offices.DirectoryError, LetterSourceError) as exc:
        db.session.rollback()
        raise CliError(str(exc)) from exc
    click.echo(
        f"Công văn mẫu: đã tạo bản nháp mã {dispatch.id} gửi {len(dispatch.recipients)} nơi nhận."
    )


# --- drafts -------------------------------------------------------------------------------------


@click.group("draft")
def draft_group() -> None:
    """Drafts of letters."""


@draft_group.command("create")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--group", "group_code", required=True, help="Recipient group code (so-tttt-2021).")
@click.option("--as", "as_email", help="E-mail of the user who drafts (default: system).")
@at_option
@with_appcontext
def draft_create_command(
    source: Path, group_code: str, as_email: str | None, at: dt.datetime
) -> None:
    """Create a draft from the letter folder SOURCE; its id is printed on the last line."""
    from dispatch.directory import offices
    from dispatch.drafting import drafts
    from dispatch.letters.source import LetterSourceError

    actor = resolve_actor(as_email)
    try:
        dispatch = drafts.create_draft(source, group_code=group_code, actor=actor, at=at)
        db.session.commit()
    except LetterSourceError as exc:
        db.session.rollback()
        raise CliError(f"nguồn công văn không hợp lệ: {exc}") from exc
    except (drafts.DraftError, offices.DirectoryError) as exc:
        db.session.rollback()
        raise CliError(str(exc)) from exc
    click.echo(f"Đã tạo bản nháp: V/v {dispatch.subject}")
    click.echo(f"Ký hiệu {dispatch.symbol}, {len(dispatch.recipients)} nơi nhận ({group_code}).")
    click.echo(f"Ban hành bằng: dispatch issue {dispatch.id}")
    click.echo(str(dispatch.id))


# --- issuing ------------------------------------------------------------------------------------


@click.command("issue")
@click.argument("dispatch_id", type=int)
@click.option("--as", "as_email", help="E-mail of the user who issues (default: system).")
@at_option
@with_appcontext
def issue_command(dispatch_id: int, as_email: str | None, at: dt.datetime) -> None:
    """Issue draft DISPATCH_ID: number it, render and archive it, queue its e-mails."""
    from dispatch.drafting.drafts import DraftError
    from dispatch.issuing import issue_dispatch
    from dispatch.letters.source import LetterSourceError

    actor = resolve_actor(as_email)
    try:
        result = issue_dispatch(dispatch_id, actor=actor, at=at)
    except LetterSourceError as exc:
        raise CliError(f"nguồn công văn không hợp lệ: {exc}") from exc
    except DraftError as exc:  # IssueError, AlreadyIssued, ArchiveUnavailable, unknown id
        raise CliError(str(exc)) from exc
    click.echo(
        f"Đã ban hành công văn số {result.number_and_symbol} "
        f"ngày {result.issued_on:%d/%m/%Y} (mã {result.dispatch_id})."
    )
    click.echo(f"Hạn xác nhận đã nhận: {format_local(result.deadline_at)}.")
    for document in result.documents:
        click.echo(f"  {document.path}  SHA-256 {document.sha256}")
    click.echo(f"Đã xếp {result.queued} thư vào hàng đợi gửi; chạy 'dispatch deliver' để gửi.")
    if result.placeholder_addresses:
        click.echo(
            f"Lưu ý: {result.placeholder_addresses} nơi nhận còn dùng địa chỉ giả định (.example); "
            "nhập địa chỉ thật bằng 'dispatch directory import'.",
            err=True,
        )
    if result.not_valid_on_issue_day:
        click.echo(
            "Lưu ý: danh bạ của các tỉnh sau không còn hiệu lực vào ngày ban hành: "
            + ", ".join(result.not_valid_on_issue_day),
            err=True,
        )


# --- status -------------------------------------------------------------------------------------


@click.command("status")
@click.argument("dispatch_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@at_option
@with_appcontext
def status_command(dispatch_id: int, as_json: bool, at: dt.datetime) -> None:
    """Show a dispatch: delivery and confirmation of each recipient."""
    from dispatch.reporting.status import StatusError, format_report, status_report

    try:
        report = status_report(dispatch_id, at=at)
    except StatusError as exc:
        raise CliError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        click.echo(format_report(report))


# --- users --------------------------------------------------------------------------------------


@click.group("users")
def users_group() -> None:
    """People who sign in."""


@users_group.command("create")
@click.argument("email")
@click.option(
    "--role",
    required=True,
    type=click.Choice([role.value for role in Role]),
    help="admin, clerk or leader.",
)
@click.option("--name", default="", help="Full name.")
@click.option("--password", help="The password (asked for, twice, when not given).")
@click.option("--as", "as_email", help="E-mail of the admin who creates (default: system).")
@at_option
@with_appcontext
def users_create_command(
    email: str,
    role: str,
    name: str,
    password: str | None,
    as_email: str | None,
    at: dt.datetime,
) -> None:
    """Create a user; the password is stored as an argon2 hash."""
    from dispatch.accounts import users

    actor = resolve_actor(as_email)
    if password is None:
        password = click.prompt(
            "Mật khẩu",
            hide_input=True,
            confirmation_prompt="Nhập lại mật khẩu",
        )
    try:
        user = users.create_user(
            email,
            role=role,
            password=password,
            at=at,
            actor=actor.email if actor else "system",
            name=name,
        )
        db.session.commit()
    except users.UserError as exc:
        db.session.rollback()
        raise CliError(str(exc)) from exc
    click.echo(f"Đã tạo người dùng {user.email} ({users.ROLE_LABELS[user.role]}).")


# --- audit --------------------------------------------------------------------------------------


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


commands = (
    seed_command,
    draft_group,
    issue_command,
    status_command,
    users_group,
    audit_group,
)
