"""``dispatch directory``: import and export (CSV or XLSX, every version with its lineage), the
offices of a group on a date, and who answers today for an office that no longer exists."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from flask.cli import with_appcontext

from dispatch.cli.options import CliError, at_option, parse_date, resolve_actor
from dispatch.transaction import unit_of_work


@click.group("directory")
def directory_group() -> None:
    """The directory of recipient offices."""


@directory_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--group", "group_code", default="so-tttt-2021", show_default=True)
@click.option("--as", "as_email", help="E-mail of the admin who imports (default: system).")
@at_option
@with_appcontext
def import_command(path: Path, group_code: str, as_email: str | None, at: dt.datetime) -> None:
    """Import offices from a CSV or XLSX file: all rows or, if any row is wrong, none.

    Rows without a "groups" column join --group; "predecessors" links each version to the ones
    it took over from (CODE@YYYY-MM-DD)."""
    from dispatch.directory import offices

    actor = resolve_actor(as_email)
    try:
        with unit_of_work():
            result = offices.import_csv(
                path, actor=actor.email if actor else "system", at=at, group_code=group_code
            )
    except offices.DirectoryError as exc:
        raise CliError(str(exc)) from exc
    click.echo(
        f"Đã nhập danh bạ: {len(result.created)} cơ quan mới, "
        f"{len(result.updated)} cập nhật, {len(result.unchanged)} không đổi, "
        f"{result.links_added} liên kết kế nhiệm mới."
    )


@directory_group.command("export")
@click.argument("path", required=False, default="-")
@click.option("--group", "group_code", help="Only the offices of this group.")
@with_appcontext
def export_command(path: str, group_code: str | None) -> None:
    """Write the directory, every version with its groups and predecessors, as CSV to PATH
    (with a BOM, for Excel), as XLSX if PATH ends in .xlsx, or to stdout ('-', no BOM)."""
    from dispatch.directory import offices

    if path.lower().endswith(".xlsx"):
        data = offices.export_xlsx(group_code=group_code)
        try:
            Path(path).write_bytes(data)
        except OSError as exc:
            raise CliError(f"Không ghi được tệp {path}: {exc.strerror}") from exc
        count = sum(1 for _ in offices.export_rows(group_code=group_code))
        click.echo(f"Đã xuất {count} cơ quan ra {path}.")
        return
    if path == "-":
        click.echo(offices.export_csv(group_code=group_code, bom=False), nl=False)
        return
    text = offices.export_csv(group_code=group_code, bom=True)
    try:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    except OSError as exc:
        raise CliError(f"Không ghi được tệp {path}: {exc.strerror}") from exc
    click.echo(f"Đã xuất {text.count(chr(10)) - 1} cơ quan ra {path}.")


def _on(value: dt.date | None) -> dt.date:
    from dispatch import clock

    return value or clock.local(clock.now()).date()


@directory_group.command("list")
@click.option("--group", "group_code", default="so-khcn", show_default=True)
@click.option("--on", "on", callback=parse_date, help="The date, YYYY-MM-DD (default: today).")
@with_appcontext
def list_command(group_code: str, on: dt.date | None) -> None:
    """The offices of a group valid on a date: code, name, e-mail, one line each."""
    from dispatch.directory import offices

    day = _on(on)
    try:
        members = offices.recipients_for(group_code, day)
    except offices.DirectoryError as exc:
        raise CliError(str(exc)) from exc
    for org in members:
        placeholder = " (địa chỉ tạm)" if org.email_is_placeholder else ""
        click.echo(f"{org.province_code}\t{org.name}\t{org.email}{placeholder}")
    click.echo(f"{len(members)} cơ quan của nhóm {group_code} ngày {day:%d/%m/%Y}.", err=True)


@directory_group.command("successors")
@click.argument("code")
@click.option("--on", "on", callback=parse_date, help="The date, YYYY-MM-DD (default: today).")
@with_appcontext
def successors_command(code: str, on: dt.date | None) -> None:
    """Who answers on a date for the office of province CODE: one line per office, code first."""
    from dispatch.directory import offices

    day = _on(on)
    try:
        found = offices.successors_of_code(code.strip(), day)
    except offices.DirectoryError as exc:
        raise CliError(str(exc)) from exc
    if not found:
        raise CliError(f"Không có cơ quan nào tiếp nhận thay mã {code} vào ngày {day:%d/%m/%Y}.")
    for org in found:
        click.echo(f"{org.province_code}\t{org.name}\t{org.email}")


commands = (directory_group,)
