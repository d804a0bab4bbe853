"""``dispatch seed``: the 2021 directory, the demo users and the seed letter as a draft; with
``--demo-pki`` (what ``make run`` does), the seed letter signed and issued and a second draft
waiting for the demo leader's signature."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from dispatch.cli.options import CliError, at_option
from dispatch.config import PROJECT_ROOT
from dispatch.extensions import db
from dispatch.models import Dispatch
from dispatch.transaction import unit_of_work

SEED_LETTER = Path("official_letters") / "pc-covid-2021"
# A DEMO draft that waits for the demo leader's signature (only with --demo-pki).
WAITING_LETTER = Path("official_letters") / "demo-bao-cao-pc-covid"


@click.command("seed")
@at_option
@click.option(
    "--demo-pki",
    "demo_pki",
    type=click.Path(file_okay=False, path_type=Path),
    help=(
        "A DEMO key folder made by 'dispatch dev' (instance/demo-pki): give the demo leader its "
        "key, sign and issue the seed letter with it (November 2021), leave a second draft "
        "waiting for signature. DISPATCH_AGENCY_KEY must be that folder's agency key."
    ),
)
@with_appcontext
def seed_command(at: dt.datetime, demo_pki: Path | None) -> None:
    """Load the 2021 directory, the demo users and the seed letter as a draft (idempotent)."""
    from dispatch.processes import demo_signing

    pki = None
    if demo_pki is not None:
        pki = demo_signing.open_demo_pki(demo_pki)
        if pki is None:
            raise CliError(f"{demo_pki} không phải thư mục khoá DEMO do 'dispatch dev' tạo.")
    _seed_directory(at)
    _seed_users(at)
    # The signed samples happen in November 2021, as the seed letter did: its draft too.
    _seed_letter(demo_signing.LETTER_CREATED_AT if pki is not None else at)
    if pki is not None:
        _seed_signed_letters(pki)


def _seed_directory(at: dt.datetime) -> None:
    """Load the bundled directory and its group, and say what changed."""
    from dispatch.clock import local
    from dispatch.directory import offices

    with unit_of_work():
        result = offices.seed_directory(actor="system", at=at)
    then = len(offices.recipients_for(offices.DEFAULT_GROUP_CODE, dt.date(2021, 11, 15)))
    today = local(at).date()
    now = len(offices.recipients_for(offices.CURRENT_GROUP_CODE, today))
    groups = (
        f"nhóm {offices.DEFAULT_GROUP_CODE}: {then} cơ quan ngày 15/11/2021; "
        f"nhóm {offices.CURRENT_GROUP_CODE}: {now} cơ quan ngày {today:%d/%m/%Y}"
    )
    if result.changed:
        click.echo(
            f"Danh bạ: đã thêm {len(result.created)} phiên bản cơ quan (2019 đến nay); {groups}."
        )
    else:
        click.echo(f"Danh bạ: đã có sẵn; {groups}.")


def _seed_users(at: dt.datetime) -> None:
    """Create the missing demo users and tell where their password comes from."""
    from dispatch.accounts import users

    # One password for the demo users: from the environment, or made up and shown once.
    password = os.environ.get("DISPATCH_DEMO_PASSWORD") or None
    generated = password is None
    if password is None:
        password = secrets.token_urlsafe(12)
    try:
        with unit_of_work():
            created = users.ensure_demo_users(password, at=at)
    except users.UserError as exc:
        raise CliError(str(exc)) from exc
    for email, role, _ in users.DEMO_USERS:
        if email in created:
            click.echo(f"Người dùng {email} ({users.ROLE_LABELS[role]}): đã tạo.")
        else:
            click.echo(f"Người dùng {email}: đã có.")
    if not created:
        return
    if generated:
        click.echo(
            f"Mật khẩu của người dùng mới tạo (chỉ hiện một lần, hãy đổi sau khi đăng nhập): "
            f"{password}"
        )
    elif os.environ.get("DISPATCH_DEMO_PASSWORD_ORIGIN"):
        click.echo(
            "Mật khẩu của người dùng mới tạo: được tạo ngẫu nhiên, lưu trong "
            f"{os.environ['DISPATCH_DEMO_PASSWORD_ORIGIN']} (hiện khi khởi động)."
        )
    else:
        click.echo("Mật khẩu của người dùng mới tạo: lấy từ DISPATCH_DEMO_PASSWORD.")


def _seed_letter(at: dt.datetime) -> None:
    """Create the seed letter as a draft from the demo clerk, unless it is there already."""
    from dispatch.accounts import users
    from dispatch.directory import offices
    from dispatch.drafting import drafts
    from dispatch.letters.source import LetterSourceError, build_letter, read_source

    folder = PROJECT_ROOT / SEED_LETTER
    if not (folder / "letter.md").is_file():
        click.echo(f"Công văn mẫu: không có thư mục {SEED_LETTER}, bỏ qua.")
        return
    try:
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
        with unit_of_work():
            dispatch = drafts.create_draft(
                source, group_code=offices.DEFAULT_GROUP_CODE, actor=clerk, at=at
            )
    except (drafts.DraftError, offices.DirectoryError, LetterSourceError) as exc:
        raise CliError(str(exc)) from exc
    click.echo(
        f"Công văn mẫu: đã tạo bản nháp mã {dispatch.id} gửi {len(dispatch.recipients)} nơi nhận."
    )


def _seed_signed_letters(pki) -> None:
    """Sign and issue the seed letter with the demo keys; leave a draft waiting (DEMO)."""
    from dispatch.accounts import users
    from dispatch.directory import offices
    from dispatch.drafting import drafts
    from dispatch.issuing import IssueError
    from dispatch.letters.source import LetterSourceError
    from dispatch.processes import demo_signing

    try:
        lines = demo_signing.seed_signed_letters(
            pki,
            seed_letter=PROJECT_ROOT / SEED_LETTER,
            waiting_letter=PROJECT_ROOT / WAITING_LETTER,
            group_code=offices.DEFAULT_GROUP_CODE,
            clerk_email=users.DEMO_USERS[0][0],
            leader_email=users.DEMO_USERS[1][0],
        )
    except (
        demo_signing.DemoSigningError,
        drafts.DraftError,
        IssueError,
        offices.DirectoryError,
        LetterSourceError,
    ) as exc:
        raise CliError(str(exc)) from exc
    for line in lines:
        click.echo(line)


commands = (seed_command,)
