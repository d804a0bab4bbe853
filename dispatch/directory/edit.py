"""Editing one office of the directory by hand (the admin's form), with the same checks as an
import: a valid address, a well-formed agency id, a valid period that overlaps no other record
of the province. A changed e-mail address is a real one: it clears the placeholder flag.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from dispatch.audit import actor_name
from dispatch.directory import offices
from dispatch.directory.addresses import parse_addresses
from dispatch.extensions import db
from dispatch.models import Organisation, User
from dispatch.text import clean_line, refused_characters_message

NAME_MAX = 200


class OfficeError(ValueError):
    """The office cannot be saved; ``errors`` maps form fields to Vietnamese messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


@dataclass(frozen=True)
class OfficeForm:
    """The office form as typed."""

    name: str
    email: str
    cc: str
    agency_id: str
    valid_from: str
    valid_to: str


def form_for(org: Organisation) -> OfficeForm:
    """The form's values for an office (dates as dd/mm/yyyy)."""
    return OfficeForm(
        name=org.name,
        email=org.email,
        cc="; ".join(org.cc or []),
        agency_id=org.agency_id or "",
        valid_from=f"{org.valid_from:%d/%m/%Y}" if org.valid_from else "",
        valid_to=f"{org.valid_to:%d/%m/%Y}" if org.valid_to else "",
    )


def _date(value: str, label: str, errors: dict[str, str], key: str) -> dt.date | None:
    if not value:
        return None
    try:
        return offices.parse_date(value)
    except ValueError:
        errors[key] = f"{label} “{value}” không phải ngày hợp lệ (dd/mm/yyyy)."
        return None


def update_office(org_id: int, form: OfficeForm, *, actor: User, at: dt.datetime) -> bool:
    """Check and apply the form to an office; False if nothing changed. The caller commits.

    Raises ``OfficeError`` (nothing changed) with a message per wrong field.
    """
    org = db.session.get(Organisation, org_id)
    if org is None:
        raise OfficeError({"name": f"Không có cơ quan mã {org_id} trong danh bạ."})
    errors: dict[str, str] = {}
    name = clean_line(form.name)
    if refused := refused_characters_message(form.name):
        errors["name"] = f"Tên cơ quan {refused}."
    elif not name:
        errors["name"] = "Vui lòng nhập tên cơ quan."
    elif len(name) > NAME_MAX:
        errors["name"] = f"Tên cơ quan dài tối đa {NAME_MAX} ký tự (đã nhập {len(name)})."
    email, cc, address_errors = parse_addresses(form.email, form.cc)
    errors.update(address_errors)
    agency_id = clean_line(form.agency_id).upper() or None
    if agency_id is not None and not offices.is_agency_id(agency_id):
        errors["agency_id"] = (
            f"Mã định danh “{agency_id}” phải có dạng XXX.YY.ZZ.Lnn, 13 ký tự "
            "(ví dụ 000.00.00.H29), hoặc để trống."
        )
    valid_from = _date(clean_line(form.valid_from), "Ngày bắt đầu", errors, "valid_from")
    valid_to = _date(clean_line(form.valid_to), "Ngày kết thúc", errors, "valid_to")
    if valid_from and valid_to and valid_from > valid_to:
        errors["valid_to"] = (
            f"Ngày kết thúc {valid_to:%d/%m/%Y} phải sau ngày bắt đầu {valid_from:%d/%m/%Y}."
        )
    if "valid_from" not in errors and "valid_to" not in errors:
        others = db.session.execute(
            select(Organisation).where(
                Organisation.province_code == org.province_code, Organisation.id != org.id
            )
        ).scalars()
        for other in others:
            if other.valid_from == valid_from:
                errors["valid_from"] = (
                    f"Đã có bản ghi khác của {org.province_name} bắt đầu cùng ngày."
                )
            elif offices.periods_overlap(other.valid_from, other.valid_to, valid_from, valid_to):
                errors["valid_to"] = (
                    "Thời gian hiệu lực chồng lên bản ghi khác của "
                    f"{org.province_name}: {other.name} "
                    f"({offices.period_text(other.valid_from, other.valid_to)})."
                )
    if errors:
        raise OfficeError(errors)

    before = offices.snapshot(org)
    email_changed = email != org.email
    org.name = name
    org.email = email
    org.cc = cc
    org.agency_id = agency_id
    org.valid_from = valid_from
    org.valid_to = valid_to
    if email_changed:
        org.email_is_placeholder = False
    org.search_text = offices.search_text_for(org)
    changed = offices.record_change(org, before, actor=actor_name(actor), at=at, via="form")
    db.session.flush()
    return changed


def apply_address(
    org: Organisation, *, email: str, cc: list[str], actor: User, at: dt.datetime
) -> bool:
    """Put an address already checked (a recipient's corrected one) into the directory."""
    before = offices.snapshot(org)
    if email != org.email:
        org.email_is_placeholder = False
    org.email = email
    org.cc = list(cc)
    org.search_text = offices.search_text_for(org)
    changed = offices.record_change(
        org, before, actor=actor_name(actor), at=at, via="recipient correction"
    )
    db.session.flush()
    return changed
