"""``dispatch draft create``, ``dispatch issue`` and ``dispatch status``: a letter's way out.

Each command parses its options, reads the clock once (``--at`` or now), calls the domain module
and prints the outcome in Vietnamese. Errors meant for the clerk exit with status 1 and a
"Lỗi: …" line on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option, dispatch_id_argument, resolve_actor
from dispatch.clock import format_local
from dispatch.transaction import unit_of_work

# --- drafts -------------------------------------------------------------------------------------


@click.group("draft")
def draft_group() -> None:
    """Drafts of letters."""


@draft_group.command("create")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--group", "group_code", help="Recipient group code (so-tttt-2021, so-khcn).")
@click.option(
    "--follow-up",
    "follow_up_of",
    type=int,
    help="A follow-up (công văn đôn đốc) of this issued dispatch: to whoever answers, on the "
    "letter's date, for its offices that have not confirmed; the original attached.",
)
@click.option("--as", "as_email", help="E-mail of the user who drafts (default: system).")
@at_option
@with_appcontext
def draft_create_command(
    source: Path,
    group_code: str | None,
    follow_up_of: int | None,
    as_email: str | None,
    at: dt.datetime,
) -> None:
    """Create a draft from the letter folder SOURCE; its id is printed on the last line."""
    from dispatch.directory import offices
    from dispatch.drafting import drafts, follow_up, uploads
    from dispatch.letters.source import LetterSourceError

    if (group_code is None) == (follow_up_of is None):
        raise click.UsageError("cần đúng một trong hai: --group hoặc --follow-up")
    actor = resolve_actor(as_email)
    try:
        with unit_of_work():
            if follow_up_of is not None:
                dispatch = follow_up.create_follow_up(
                    follow_up_of, actor=actor, at=at, source=source
                )
                group_code = dispatch.group.code if dispatch.group else ""
            else:
                dispatch = drafts.create_draft(source, group_code=group_code, actor=actor, at=at)
    except LetterSourceError as exc:
        raise CliError(f"nguồn công văn không hợp lệ: {exc}") from exc
    except (drafts.DraftError, offices.DirectoryError, uploads.UploadError) as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã tạo bản nháp: V/v {dispatch.subject}")
    click.echo(f"Ký hiệu {dispatch.symbol}, {len(dispatch.recipients)} nơi nhận ({group_code}):")
    # Which offices, as of the letter's date: the clerk checks them before issuing.
    for recipient in sorted(dispatch.recipients, key=lambda r: (r.province_code, r.name)):
        click.echo(f"  {recipient.province_code}  {recipient.name}")
    click.echo(f"Ban hành bằng: dispatch issue {dispatch.id}")
    click.echo(str(dispatch.id))


@draft_group.command("delete")
@dispatch_id_argument
@click.option("--as", "as_email", help="E-mail of the user who deletes (default: system).")
@click.option("--yes", is_flag=True, help="Delete without asking (scripts).")
@at_option
@with_appcontext
def draft_delete_command(
    dispatch_id: int, as_email: str | None, yes: bool, at: dt.datetime
) -> None:
    """Delete draft DISPATCH_ID (never issued) and its uploaded files."""
    from dispatch.drafting import deletion, drafts

    actor = resolve_actor(as_email)
    if not yes and not (
        sys.stdin.isatty() and click.confirm(f"Xoá hẳn bản nháp mã {dispatch_id}?")
    ):
        raise CliError(f"Chưa xoá bản nháp mã {dispatch_id}: thêm --yes để xác nhận.")
    try:
        with unit_of_work():
            subject = deletion.delete_draft(dispatch_id, actor=actor, at=at)
    except drafts.DraftError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã xoá bản nháp mã {dispatch_id}: V/v {subject}")


@draft_group.command("import")
@click.argument("docx_file", metavar="FILE.docx", type=click.Path(path_type=Path))
@click.option("--group", "group_code", required=True, help="Recipient group code (so-khcn).")
@click.option("--as", "as_email", help="E-mail of the user who drafts (default: system).")
@at_option
@with_appcontext
def draft_import_command(
    docx_file: Path, group_code: str, as_email: str | None, at: dt.datetime
) -> None:
    """Create a draft from a letter written in Word; prints what was recognised, then its id."""
    from dispatch.directory import offices
    from dispatch.drafting import drafts, word_import
    from dispatch.letters.docx_import import DocxImportError
    from dispatch.letters.source import LetterSourceError

    actor = resolve_actor(as_email)
    try:
        data = docx_file.read_bytes()
    except OSError as exc:
        raise CliError(f"không đọc được tệp {docx_file}: {exc.strerror}") from exc
    try:
        _source, report = word_import.read_word_letter(data, docx_file.name)
    except DocxImportError as exc:
        raise CliError(str(exc)) from exc
    for label, value, state in report.rows():
        mark = "✓" if state == "ok" else "✗"
        click.echo(f"{mark} {label}: {value}")
    for text in report.unrecognised:
        click.echo(f"? không xếp được: {text[:80]}")
    if not report.complete:
        raise CliError(word_import.missing_message(report))
    try:
        with unit_of_work():
            created = word_import.create_from_word(
                data, docx_file.name, group_code=group_code, actor=actor, at=at
            )
            dispatch = created.dispatch
    except LetterSourceError as exc:
        raise CliError(f"công văn trong tệp Word không hợp lệ: {exc}") from exc
    except (DocxImportError, drafts.DraftError, offices.DirectoryError) as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã tạo bản nháp: V/v {dispatch.subject}")
    click.echo(f"Ký hiệu {dispatch.symbol}, {len(dispatch.recipients)} nơi nhận ({group_code}).")
    click.echo(f"Giữ tệp Word gốc: {created.original.name}")
    click.echo(f"Ban hành bằng: dispatch issue {dispatch.id}")
    click.echo(str(dispatch.id))


# --- approval (trình ký) -------------------------------------------------------------------------


@draft_group.command("submit")
@dispatch_id_argument
@click.option("--to", "leader_email", required=True, help="E-mail of the leader who signs.")
@click.option("--as", "as_email", help="E-mail of the clerk who submits (default: system).")
@at_option
@with_appcontext
def draft_submit_command(
    dispatch_id: int, leader_email: str, as_email: str | None, at: dt.datetime
) -> None:
    """Submit draft DISPATCH_ID to a leader for signature (trình ký)."""
    from dispatch.drafting import approval
    from dispatch.drafting.drafts import DraftError

    actor = resolve_actor(as_email)
    try:
        with unit_of_work():
            submitted = approval.submit(dispatch_id, leader_email=leader_email, actor=actor, at=at)
            leader = submitted.leader.email
    except DraftError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã trình lãnh đạo {leader} ký duyệt bản nháp mã {dispatch_id}.")
    click.echo(f"Ký duyệt bằng: dispatch approve {dispatch_id} --as {leader}")


@draft_group.command("return")
@dispatch_id_argument
@click.option("--as", "as_email", required=True, help="E-mail of the leader it was submitted to.")
@click.option("--comment", required=True, help="Why it goes back (required).")
@at_option
@with_appcontext
def draft_return_command(dispatch_id: int, as_email: str, comment: str, at: dt.datetime) -> None:
    """Return draft DISPATCH_ID to the clerk with a comment (trả lại), as the leader."""
    from dispatch.drafting import approval
    from dispatch.drafting.drafts import DraftError

    actor = resolve_actor(as_email)
    assert actor is not None
    try:
        with unit_of_work():
            approval.return_draft(dispatch_id, comment=comment, actor=actor, at=at)
    except DraftError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã trả lại bản nháp mã {dispatch_id} kèm ý kiến.")


@draft_group.command("withdraw")
@dispatch_id_argument
@click.option("--as", "as_email", help="E-mail of the clerk who withdraws (default: system).")
@at_option
@with_appcontext
def draft_withdraw_command(dispatch_id: int, as_email: str | None, at: dt.datetime) -> None:
    """Withdraw draft DISPATCH_ID's submission or approval, to edit it (it becomes void)."""
    from dispatch.drafting import approval
    from dispatch.drafting.drafts import DraftError

    actor = resolve_actor(as_email)
    try:
        with unit_of_work():
            withdrawn = approval.withdraw(dispatch_id, actor=actor, at=at)
            was = "chữ ký duyệt" if withdrawn.pdf_sha256 else "lần trình ký"
    except DraftError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Đã rút lại {was} của bản nháp mã {dispatch_id}; bản nháp sửa được.")


# --- issuing ------------------------------------------------------------------------------------


@click.command("issue")
@dispatch_id_argument
@click.option("--as", "as_email", help="E-mail of the user who issues (default: system).")
@click.option(
    "--confirm-date",
    is_flag=True,
    help="Issue even though the printed date differs from the draft's date (or month).",
)
@click.option(
    "--confirm-placeholders",
    is_flag=True,
    help="Issue even though some recipients still have placeholder (.example) addresses.",
)
@click.option(
    "--to-successors",
    is_flag=True,
    help="Replace recipients no longer valid on the issuing day by their successors first.",
)
@at_option
@with_appcontext
def issue_command(
    dispatch_id: int,
    as_email: str | None,
    confirm_date: bool,
    confirm_placeholders: bool,
    to_successors: bool,
    at: dt.datetime,
) -> None:
    """Issue draft DISPATCH_ID: number it, render and archive it, queue its e-mails."""
    from dispatch import issuing
    from dispatch.drafting.drafts import DraftError
    from dispatch.issuing import issue_dispatch
    from dispatch.letters.source import LetterSourceError

    actor = resolve_actor(as_email)
    try:
        issuing.refuse_unapproved(dispatch_id)
        check = issuing.check_before_issue(dispatch_id, at)
    except DraftError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"Ngày ghi trên công văn: {check.printed_text}.")
    if check.stale:
        for item in check.stale:
            successors = "; ".join(f"{code} {name}" for code, name in item.successors) or "không có"
            click.echo(f"  {item.code} {item.name} → {successors}", err=True)
        if not to_successors:
            raise CliError(
                f"{len(check.stale)} nơi nhận không còn hiệu lực vào ngày {check.printed_text} "
                "(danh sách và cơ quan kế nhiệm ở trên): thêm --to-successors để gửi tới các cơ "
                "quan kế nhiệm, hoặc sửa bản nháp."
            )
    placeholders = issuing.placeholder_recipients(dispatch_id)
    if placeholders and not confirm_placeholders:
        question = f"{len(placeholders)} nơi nhận đang dùng địa chỉ tạm (.example). Vẫn ban hành?"
        if not (sys.stdin.isatty() and click.confirm(question)):
            raise CliError(
                issuing.placeholders_refusal(len(placeholders), "thêm --confirm-placeholders")
            )
    if check.date_differs and not confirm_date:
        question = (
            f"Bản nháp ghi ngày {check.draft_date}, công văn sẽ mang ngày {check.printed_text}. "
            "Vẫn ban hành?"
        )
        if not (sys.stdin.isatty() and click.confirm(question)):
            raise CliError(
                f"Công văn sẽ mang ngày {check.printed_text}, khác ngày {check.draft_date} của "
                "bản nháp: thêm --confirm-date để xác nhận, hoặc sửa ngày của bản nháp."
            )
    try:
        if check.stale:
            with unit_of_work():
                replaced = issuing.readdress_to_successors(dispatch_id, actor=actor, at=at)
            click.echo(f"Đã thay {replaced} nơi nhận bằng cơ quan kế nhiệm.")
        with unit_of_work():  # issuing commits on its own; this ends the command's session
            result = issue_dispatch(dispatch_id, actor=actor, at=at)
    except LetterSourceError as exc:
        raise CliError(f"nguồn công văn không hợp lệ: {exc}") from exc
    except DraftError as exc:  # IssueError, AlreadyIssued, ArchiveUnavailable, unknown id
        raise CliError(str(exc)) from exc
    click.echo(
        f"Đã ban hành công văn số {result.number_and_symbol} "
        f"ngày {result.issued_on:%d/%m/%Y} (mã {result.dispatch_id})."
    )
    if result.signed:
        click.echo("Bản PDF là bản gốc điện tử: có chữ ký số của người ký và của cơ quan ban hành.")
    else:
        click.echo(issuing.UNSIGNED_NOTICE)
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
@dispatch_id_argument
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


commands = (draft_group, issue_command, status_command)
