"""The web composer: a letter typed in a form, kept as a draft even while it is still wrong.

The form and the stored draft are two views of one thing. ``form_from_source`` turns a draft's
letter source (``Dispatch.source``, the JSON form of ``dispatch.letters.source``) into the text
of each field; ``source_from_form`` does the reverse and keeps every value as typed, valid or not,
so a clerk never loses what was typed: only ``validate`` (and issuing, which calls
``build_letter`` again) refuses a wrong letter, saving never does. ``save_draft`` turns what was
posted into a letter source and a choice of recipients and hands them to
``drafts.save_as_typed``, the draft's one write path.

``validate`` reports every problem at once, each on its field: the source is checked field by
field, each field's value put into an otherwise valid letter and passed through the same
``build_letter`` that issuing uses, so the messages are the parser's own.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dispatch.clock import local
from dispatch.directory import offices
from dispatch.drafting import drafts, uploads
from dispatch.extensions import db
from dispatch.letters.formatting import ROMAN
from dispatch.letters.model import Authority, Letter
from dispatch.letters.source import (
    URGENCIES,
    LetterSourceError,
    build_letter,
    check_symbol,
    source_from_json,
)
from dispatch.models import (
    Dispatch,
    RecipientGroup,
    RegisterCounter,
    User,
)

WEB_ORIGIN = drafts.DRAFT_ORIGIN

# The one-line fields of the form, in the order of the page, with their Vietnamese labels.
TEXT_FIELDS: dict[str, str] = {
    "parent_agency": "Cơ quan chủ quản",
    "issuing_agency": "Cơ quan ban hành",
    "symbol": "Ký hiệu",
    "place": "Địa danh",
    "date": "Tháng hoặc ngày ban hành",
    "subject": "Trích yếu",
    "signer_authority": "Quyền hạn ký",
    "signer_acting_for": "Chức vụ người đứng đầu (khi ký thay)",
    "signer_title": "Chức vụ người ký",
    "signer_name": "Họ và tên người ký",
    "urgency": "Độ khẩn",
}
# Multi-line fields: lists typed one item per line, and the Markdown body.
LIST_FIELDS: dict[str, str] = {
    "addressees": "Kính gửi",
    "distribution": "Nơi nhận",
}
BODY_FIELD = "body"
FIELDS = (*TEXT_FIELDS, *LIST_FIELDS, BODY_FIELD)

# Meta keys filled straight from a one-line field of the same name.
_META_TEXT = ("parent_agency", "issuing_agency", "symbol", "place", "subject")
# Required one-line fields and what to ask for when one is left empty.
_REQUIRED_TEXT = {
    "parent_agency": "Vui lòng nhập tên cơ quan chủ quản.",
    "issuing_agency": "Vui lòng nhập tên cơ quan ban hành.",
    "symbol": "Vui lòng nhập ký hiệu công văn (ví dụ THH-VP).",
    "place": "Vui lòng nhập địa danh (ví dụ Hà Nội).",
    "date": "Vui lòng nhập tháng ban hành (ví dụ 11/2021) hoặc ngày (15/11/2021).",
    "subject": "Vui lòng nhập trích yếu nội dung công văn.",
    "signer_title": "Vui lòng nhập chức vụ của người ký.",
    "signer_name": "Vui lòng nhập họ và tên người ký.",
}

AUTHORITY_CHOICES: tuple[tuple[str, str], ...] = (
    ("", "Không (người đứng đầu ký)"),
    (Authority.ON_BEHALF.value, "TM. (thay mặt tập thể)"),
    (Authority.ACTING.value, "Q. (quyền)"),
    (Authority.DEPUTY.value, "KT. (ký thay)"),
    (Authority.BY_ORDER.value, "TL. (thừa lệnh)"),
    (Authority.BY_DELEGATION.value, "TUQ. (thừa uỷ quyền)"),
)
URGENCY_CHOICES: tuple[tuple[str, str], ...] = (
    ("", "Không khẩn"),
    ("khẩn", "Khẩn"),
    ("thượng khẩn", "Thượng khẩn"),
    ("hỏa tốc", "Hoả tốc"),
)

# How many empty appendix slots the form shows without JavaScript; "Thêm phụ lục" adds one.
EMPTY_APPENDIX_SLOTS = 1
MAX_APPENDICES = len(ROMAN)

# What a new draft starts with: the values of almost every letter this office writes.
DEFAULTS: dict[str, str] = {
    "parent_agency": "Bộ Thông tin và Truyền thông",
    "issuing_agency": "Cục Tin học hoá",
    "symbol": "THH-VP",
    "place": "Hà Nội",
    "addressees": "",
    "distribution": "Như trên;\nLưu: VT, THH.",
    "signer_title": "Cục trưởng",
}

# A letter that passes every check; ``validate`` puts one typed field into it at a time.
_VALID_META: dict[str, Any] = {
    "parent_agency": "Bộ Thông tin và Truyền thông",
    "issuing_agency": "Cục Tin học hoá",
    "symbol": "THH-VP",
    "place": "Hà Nội",
    "date": "2021-11",
    "subject": "kiểm tra",
    "addressees": ["Các Sở Thông tin và Truyền thông"],
    "signer": {"title": "Cục trưởng", "name": "Nguyễn Văn An"},
    "distribution": ["Như trên", "Lưu: VT"],
}
_VALID_BODY = "Trân trọng./.\n"

_DMY = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_MY = re.compile(r"^(\d{1,2})/(\d{4})$")
_ISO = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")


class FormError(ValueError):
    """What the compose form asks cannot be saved (an unknown group); the message is for clerks
    (Vietnamese)."""


@dataclass
class ComposeForm:
    """What the compose page posts, as typed (NFC)."""

    fields: dict[str, str]
    appendices: list[dict[str, str]] = field(default_factory=list)  # [{"title", "body"}]
    group: str = ""
    # The offices picked; None: take the members of ``group`` (a new draft, or a new group).
    recipients: list[int] | None = None


@dataclass(frozen=True)
class SaveResult:
    """What saving did: the draft, whether it was new or changed, what still blocks issuing."""

    dispatch: Dispatch
    created: bool
    changed: tuple[str, ...]
    errors: dict[str, str]

    @property
    def valid(self) -> bool:
        """Whether the draft could be issued as it stands."""
        return not self.errors


# --- text and dates ---------------------------------------------------------------------------


def _nfc(value: Any) -> str:
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else ""


def clean_text(value: Any) -> str:
    """A one-line value as stored: NFC, line breaks and surrounding spaces removed."""
    return " ".join(_nfc(value).split())


def clean_multiline(value: Any) -> str:
    """A multi-line value as stored: NFC, LF line ends, no trailing spaces at the end."""
    text = _nfc(value).replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip() + ("\n" if text.strip() else "")


def lines_of(value: Any) -> list[str]:
    """The non-empty lines of a list field, each trimmed."""
    return [" ".join(line.split()) for line in _nfc(value).splitlines() if line.strip()]


def parse_letter_date(text: str) -> tuple[str | None, str | None]:
    """(ISO value for the source, error) from "11/2021", "15/11/2021" or the ISO forms."""
    text = text.strip()
    if not text:
        return None, _REQUIRED_TEXT["date"]
    day = None
    if match := _DMY.match(text):
        day, month, year = (int(part) for part in match.groups())
    elif match := _MY.match(text):
        month, year = (int(part) for part in match.groups())
    elif match := _ISO.match(text):
        year, month = int(match.group(1)), int(match.group(2))
        day = int(match.group(3)) if match.group(3) else None
    else:
        return None, (
            "Ngày ban hành phải có dạng tháng/năm (ví dụ 11/2021, khi chưa có ngày) "
            "hoặc ngày/tháng/năm (ví dụ 15/11/2021)."
        )
    try:
        dt.date(year, month, day or 1)
    except ValueError:
        return None, f"Ngày “{text}” không có thật trên lịch."
    if day is None:
        return f"{year:04d}-{month:02d}", None
    return f"{year:04d}-{month:02d}-{day:02d}", None


def display_letter_date(value: Any) -> str:
    """The source's date as the form shows it: "11/2021" or "15/11/2021" (else as stored)."""
    if isinstance(value, str) and (match := _ISO.match(value.strip())):
        year, month, day = match.groups()
        return f"{day}/{month}/{year}" if day else f"{month}/{year}"
    return "" if value is None else str(value)


# --- form <-> source --------------------------------------------------------------------------


def blank_form(at: dt.datetime, group: str | None = None) -> ComposeForm:
    """The form of a new letter: the office's usual values, this month, and the group whose
    offices exist this month (today the 34 Sở Khoa học và Công nghệ, not the defunct Sở TTTT)."""
    group = group or offices.usual_group(local(at).date())
    fields = {name: "" for name in FIELDS}
    fields.update(DEFAULTS)
    fields["date"] = f"{local(at):%m/%Y}"
    return ComposeForm(fields=fields, appendices=[], group=group, recipients=None)


def form_from_source(source: Mapping[str, Any], group: str = "") -> ComposeForm:
    """The form's text for a stored letter source (whatever it holds, valid or not)."""
    meta = source.get("meta") if isinstance(source.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    fields = {name: "" for name in FIELDS}
    for key in _META_TEXT:
        value = meta.get(key)
        fields[key] = "" if value is None else str(value)
    fields["date"] = display_letter_date(meta.get("date"))
    signer = meta.get("signer") if isinstance(meta.get("signer"), dict) else {}
    assert isinstance(signer, dict)
    for key in ("authority", "acting_for", "title", "name"):
        value = signer.get(key)
        fields[f"signer_{key}"] = "" if value is None else str(value)
    fields["signer_authority"] = _canonical_authority(fields["signer_authority"])
    urgency = meta.get("urgency")
    fields["urgency"] = _canonical_urgency("" if urgency is None else str(urgency))
    for key in LIST_FIELDS:
        value = meta.get(key)
        if isinstance(value, list):
            fields[key] = "\n".join(str(item) for item in value)
        elif value is not None:
            fields[key] = str(value)
    body = source.get("body")
    fields[BODY_FIELD] = body if isinstance(body, str) else ""
    appendices = []
    for item in source.get("appendices") or []:
        if isinstance(item, dict):
            title, body = item.get("title"), item.get("body")
            appendices.append(
                {
                    "title": "" if title is None else str(title),
                    "body": body if isinstance(body, str) else "",
                }
            )
    return ComposeForm(fields=fields, appendices=appendices, group=group, recipients=None)


def _canonical_authority(value: str) -> str:
    """The authority as the select lists it ("KT."), from "kt" or "KT" as a file may write it."""
    text = value.strip().upper()
    text = text if not text or text.endswith(".") else text + "."
    return text if text in {v for v, _ in AUTHORITY_CHOICES} else value


def _canonical_urgency(value: str) -> str:
    """The urgency as the select lists it ("hỏa tốc"), from "Hoả tốc" or any other spelling."""
    text = value.strip().lower()
    if text in URGENCIES:
        wanted = URGENCIES[text]
        return next(v for v, _ in URGENCY_CHOICES if v and URGENCIES[v] is wanted)
    return value


def form_from_post(data: Any, *, remove_appendix: int | None = None) -> ComposeForm:
    """Read the compose form from posted data (a MultiDict or a plain dict of lists/strings);
    ``remove_appendix`` is the posted appendix slot whose "Xoá phụ lục" button was pressed."""

    def get(name: str) -> str:
        value = data.get(name, "")
        return value if isinstance(value, str) else ""

    def get_list(name: str) -> list[str]:
        if hasattr(data, "getlist"):
            return [v for v in data.getlist(name) if isinstance(v, str)]
        value = data.get(name, [])
        return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]

    fields = {}
    for name in TEXT_FIELDS:
        fields[name] = clean_text(get(name))
    for name in LIST_FIELDS:
        fields[name] = "\n".join(lines_of(get(name)))
    fields[BODY_FIELD] = clean_multiline(get(BODY_FIELD))

    appendices = []
    count = min(parse_int(get("appendix_count"), 0), MAX_APPENDICES + EMPTY_APPENDIX_SLOTS + 10)
    for index in range(count):
        if index == remove_appendix:
            continue
        title = clean_text(get(f"appendix-{index}-title"))
        body = clean_multiline(get(f"appendix-{index}-body"))
        if title or body.strip():  # an empty slot is not an appendix
            appendices.append({"title": title, "body": body})

    recipients: list[int] | None = None
    group = clean_text(get("group"))
    shown_for = clean_text(get("recipients_group"))
    if shown_for and shown_for == group:
        # The checkboxes were drawn for this group: what is ticked is the choice.
        recipients = sorted({parse_int(v, 0) for v in get_list("recipient")} - {0})
    return ComposeForm(fields=fields, appendices=appendices, group=group, recipients=recipients)


def is_untouched(form: ComposeForm, at: dt.datetime) -> bool:
    """Whether a new letter's form is still the blank one (``blank_form``): nothing typed, no
    appendix, the usual group with all its offices; or emptied of every word. Saving it would
    only leave an empty draft."""
    if not any(value.strip() for value in form.fields.values()) and not any(
        item["title"].strip() or item["body"].strip() for item in form.appendices
    ):
        return True  # emptied: not one word of a letter
    blank = blank_form(at)
    if form.fields != blank.fields or form.appendices or form.group != blank.group:
        return False
    if form.recipients is None:
        return True
    day = drafts.recipients_date(parse_letter_date(form.fields.get("date", ""))[0], at)
    members = {org.id for org in offices.recipients_for(form.group, day)}
    return set(form.recipients) == members


def parse_int(value: Any, default: int) -> int:
    """A posted whole number, or ``default`` if it is not one."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def source_from_form(
    form: ComposeForm, *, attachments: Iterable[str] = (), origin: str = WEB_ORIGIN
) -> dict[str, Any]:
    """The letter source (JSON form) of what was typed, every value kept even if invalid."""
    fields = form.fields
    meta: dict[str, Any] = {key: fields.get(key, "") for key in _META_TEXT}
    iso, _ = parse_letter_date(fields.get("date", ""))
    # An unreadable date is kept as typed, so the clerk finds it again to correct it.
    meta["date"] = iso if iso is not None else fields.get("date", "")
    for key in LIST_FIELDS:
        meta[key] = lines_of(fields.get(key, ""))
    signer: dict[str, Any] = {
        "title": fields.get("signer_title", ""),
        "name": fields.get("signer_name", ""),
    }
    if fields.get("signer_authority"):
        signer["authority"] = fields["signer_authority"]
    if fields.get("signer_acting_for"):
        signer["acting_for"] = fields["signer_acting_for"]
    meta["signer"] = signer
    if fields.get("urgency"):
        meta["urgency"] = fields["urgency"]
    names = [name for name in attachments]
    if names:
        meta["attachments"] = names
    return {
        "meta": meta,
        "body": fields.get(BODY_FIELD, ""),
        "appendices": [
            {"title": item.get("title", ""), "body": item.get("body", "")}
            for item in form.appendices
        ],
        "origin": origin,
    }


# --- validation -------------------------------------------------------------------------------


# The letter source's names for what the form calls by its labels: the parser's messages name
# them (“subject” (trích yếu), “addressees, mục 2”), which is right in a letter.md file and
# wrong on a page, where the clerk sees only the labels.
_SOURCE_LABELS: dict[str, str] = {
    **TEXT_FIELDS,
    **LIST_FIELDS,
    "signer.authority": TEXT_FIELDS["signer_authority"],
    "signer.acting_for": TEXT_FIELDS["signer_acting_for"],
    "signer.title": TEXT_FIELDS["signer_title"],
    "signer.name": TEXT_FIELDS["signer_name"],
    "title": "Tên phụ lục",
    "attachments": "Tài liệu gửi kèm",
    "number": "Số",
}
_SOURCE_NAME = re.compile(
    r"(?:(?P<field>[Tt]rường) )?“(?P<key>[a-z_]+(?:\.[a-z_]+)?)(?:, mục (?P<item>\d+))?”"
    r"(?: \([^()]*\))?"
)


def _in_form_words(message: str) -> str:
    """A parser message with the source's field names replaced by the form's labels."""

    def label(match: re.Match[str]) -> str:
        name = _SOURCE_LABELS.get(match["key"])
        if name is None:
            return match[0]
        said = f"mục “{name}”" if match["field"] else f"“{name}”"
        return said + (f" (dòng {match['item']})" if match["item"] else "")

    return _SOURCE_NAME.sub(label, message)


def _capitalised(message: str) -> str:
    message = _in_form_words(message.strip())
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


def _probe(
    *,
    meta: Mapping[str, Any] | None = None,
    body: str | None = None,
    appendices: list[dict[str, Any]] | None = None,
    project_root: Path | None,
) -> LetterSourceError | None:
    """The error ``build_letter`` finds in a valid letter with the given parts replaced."""
    data = {
        "meta": {**copy.deepcopy(_VALID_META), **(meta or {})},
        "body": _VALID_BODY if body is None else body,
        "appendices": appendices or [],
    }
    for key, value in list(data["meta"].items()):
        if value is None:
            del data["meta"][key]
    try:
        build_letter(source_from_json(data, origin=WEB_ORIGIN), project_root=project_root)
    except LetterSourceError as exc:
        return exc
    return None


def _body_message(exc: LetterSourceError) -> str:
    message = _capitalised(exc.message)
    return f"Dòng {exc.line}: {message}" if exc.line is not None else message


def validate(source: Mapping[str, Any], project_root: Path | None = None) -> dict[str, str]:
    """Every problem that blocks issuing, keyed by form field ("subject", "appendix-0-body" …)."""
    meta = source.get("meta") if isinstance(source.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    form = form_from_source(source)
    fields = form.fields
    errors: dict[str, str] = {}

    for key in _META_TEXT:
        if not fields[key].strip():
            errors[key] = _REQUIRED_TEXT[key]
        elif (exc := _probe(meta={key: meta.get(key)}, project_root=project_root)) is not None:
            errors[key] = _capitalised(exc.message)
    if "symbol" not in errors and (problem := check_symbol(fields["symbol"])) is not None:
        errors["symbol"] = _capitalised(problem)

    _, date_error = parse_letter_date(fields["date"])
    if date_error is not None:
        errors["date"] = date_error
    elif (exc := _probe(meta={"date": meta.get("date")}, project_root=project_root)) is not None:
        errors["date"] = _capitalised(exc.message)

    for key, label in LIST_FIELDS.items():
        if not lines_of(fields[key]):
            errors[key] = f"Vui lòng nhập ít nhất một dòng ở mục “{label}”."
        elif (exc := _probe(meta={key: meta.get(key)}, project_root=project_root)) is not None:
            errors[key] = _capitalised(exc.message)

    errors.update(_signer_errors(fields, project_root))

    if fields["urgency"] and fields["urgency"] not in {v for v, _ in URGENCY_CHOICES}:
        errors["urgency"] = "Độ khẩn phải là khẩn, thượng khẩn hoặc hoả tốc (hoặc để trống)."

    if meta.get("attachments") is not None:
        exc = _probe(meta={"attachments": meta.get("attachments")}, project_root=project_root)
        if exc is not None:
            errors["attachments"] = _capitalised(exc.message)

    if not fields[BODY_FIELD].strip():
        errors[BODY_FIELD] = "Vui lòng nhập nội dung công văn (đoạn cuối kết thúc bằng “./.”)."
    elif (exc := _probe(body=fields[BODY_FIELD], project_root=project_root)) is not None:
        errors[BODY_FIELD] = _body_message(exc)

    if len(form.appendices) > MAX_APPENDICES:
        errors["appendices"] = f"Một công văn có tối đa {MAX_APPENDICES} phụ lục."
    for index, item in enumerate(form.appendices[:MAX_APPENDICES]):
        if not item["title"].strip():
            errors[f"appendix-{index}-title"] = "Vui lòng nhập tên phụ lục."
        if not item["body"].strip():
            errors[f"appendix-{index}-body"] = "Vui lòng nhập nội dung phụ lục."
            continue
        probe_item = {"title": item["title"].strip() or "Phụ lục", "body": item["body"]}
        exc = _probe(appendices=[probe_item], project_root=project_root)
        if exc is not None:
            target = "body" if exc.line is not None else "title"
            errors.setdefault(f"appendix-{index}-{target}", _body_message(exc))

    if not errors:
        # Each part is right on its own; the whole is checked too (one path to the truth).
        try:
            build_letter(source_from_json(dict(source), origin=WEB_ORIGIN), project_root)
        except LetterSourceError as exc:
            errors["letter"] = _body_message(exc)
    return errors


def _signer_errors(fields: Mapping[str, str], project_root: Path | None) -> dict[str, str]:
    errors: dict[str, str] = {}
    authority, acting_for = fields["signer_authority"], fields["signer_acting_for"]
    if authority and authority not in {v for v, _ in AUTHORITY_CHOICES}:
        errors["signer_authority"] = "Quyền hạn ký phải là TM., Q., KT., TL., TUQ. hoặc để trống."
    if authority and not acting_for:
        errors["signer_acting_for"] = (
            f"Khi ký {authority} cần ghi chức vụ của người đứng đầu (ví dụ “Cục trưởng”)."
        )
    elif acting_for and not authority:
        errors["signer_acting_for"] = (
            "Chỉ ghi chức vụ người đứng đầu khi có quyền hạn ký (TM., Q., KT., TL., TUQ.)."
        )
    elif authority and "signer_authority" not in errors:
        signer = {"title": "Phó Cục trưởng", "name": "Nguyễn Văn An"}
        signer.update(authority=authority, acting_for=acting_for)
        if (exc := _probe(meta={"signer": signer}, project_root=project_root)) is not None:
            errors["signer_acting_for"] = _capitalised(exc.message)
    for key in ("title", "name"):
        name = f"signer_{key}"
        if not fields[name].strip():
            errors[name] = _REQUIRED_TEXT[name]
            continue
        signer = {**_VALID_META["signer"], key: fields[name]}
        if (exc := _probe(meta={"signer": signer}, project_root=project_root)) is not None:
            errors[name] = _capitalised(exc.message)
    return errors


# --- saving -----------------------------------------------------------------------------------


def groups() -> list[RecipientGroup]:
    """Every recipient group, by name, for the group picker."""
    return list(db.session.execute(select(RecipientGroup).order_by(RecipientGroup.name)).scalars())


def save_draft(
    dispatch_id: int | None,
    form: ComposeForm,
    *,
    actor: User | None,
    at: dt.datetime,
    project_root: Path | None = None,
) -> SaveResult:
    """Create or update a draft from the form, keeping every value as typed; the caller commits.

    Raises ``DispatchFrozen`` for an issued dispatch and ``FormError`` for an unknown group;
    a wrong letter is saved all the same and its problems returned in ``errors``.
    """
    try:
        saved = drafts.save_as_typed(
            dispatch_id,
            source_from_form(form),
            group_code=form.group or None,
            recipient_ids=form.recipients,
            actor=actor,
            at=at,
        )
    except offices.DirectoryError as exc:
        raise FormError(f"Không có nhóm nơi nhận mã “{form.group}”.") from exc
    errors = draft_errors(saved.dispatch, project_root=project_root)
    return SaveResult(
        dispatch=saved.dispatch, created=saved.created, changed=saved.changed, errors=errors
    )


def draft_errors(dispatch: Dispatch, project_root: Path | None = None) -> dict[str, str]:
    """What blocks issuing this draft: the letter's problems, a missing recipient list, and
    attachments that leave the letter e-mail no room under its cap."""
    errors = validate(dispatch.source or {}, project_root=project_root)
    if not dispatch.recipients:
        errors["recipients"] = (
            "Chưa chọn nơi nhận: chọn một nhóm hoặc đánh dấu ít nhất một cơ quan."
        )
    room = uploads.mail_room(dispatch.id, uploads.attachments_of(dispatch.source))
    if room.over and "attachments" not in errors:
        errors["attachments"] = room.over_message()
    return errors


def preview_letter(dispatch: Dispatch, project_root: Path | None = None) -> Letter:
    """The draft's letter as the preview shows it: no number and no day yet (blank on the page).

    Raises ``LetterSourceError`` while the draft is not a valid letter.
    """
    letter = build_letter(
        source_from_json(dispatch.source or {}, origin=drafts.draft_origin(dispatch.id)),
        project_root=project_root,
    )
    return dataclasses.replace(letter, number=None, date=None)


@dataclass(frozen=True)
class ExpectedNumber:
    """The number issuing would take now (it is taken for real, under lock, at issuing)."""

    register: str
    year: int
    number: int
    number_and_symbol: str


def expected_number(dispatch: Dispatch, at: dt.datetime) -> ExpectedNumber | None:
    """The next number of the draft's register for the year of ``at`` (read only); None if the
    symbol is not valid yet."""
    register = drafts.register_for(dispatch.symbol)
    if not register:
        return None
    year = local(at).year
    last = db.session.execute(
        select(RegisterCounter.last_number).where(
            RegisterCounter.register == register, RegisterCounter.year == year
        )
    ).scalar_one_or_none()
    number = (last or 0) + 1
    return ExpectedNumber(register, year, number, f"{number:02d}/{dispatch.symbol}")
