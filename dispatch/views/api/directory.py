"""The API's directory: the offices valid on a day, searchable, by group."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask_smorest import abort

from dispatch.directory import offices
from dispatch.views.api.common import bp, documented_errors
from dispatch.views.api.schemas import DirectoryArgs, DirectorySchema


def _office_dict(org: Any) -> dict[str, Any]:
    return {
        "id": org.id,
        "code": org.province_code,
        "name": org.name,
        "province": org.province_name,
        "province_kind": org.province_kind,
        "region": org.region,
        "email": org.email,
        "cc": list(org.cc or []),
        "placeholder": org.email_is_placeholder,
        "agency_id": org.agency_id,
        "valid_from": org.valid_from,
        "valid_to": org.valid_to,
        "groups": sorted(group.code for group in org.groups),
    }


@bp.route("/directory", methods=["GET"])
@bp.arguments(DirectoryArgs, location="query", as_kwargs=True)
@bp.response(200, DirectorySchema)
@documented_errors(401, 404, 422)
def get_directory(
    q: str | None = None, on: dt.date | None = None, group: str | None = None
) -> dict[str, Any]:
    """The offices of the directory: code, name, province, region, address, validity."""
    if group is not None:
        try:
            offices.get_group(group)
        except offices.DirectoryError as exc:
            abort(404, message=str(exc), field="group")
    found = offices.search(q or "", on=on, limit=10_000)
    if group is not None:
        found = [org for org in found if any(g_.code == group for g_ in org.groups)]
    return {"items": [_office_dict(org) for org in found], "total": len(found)}
