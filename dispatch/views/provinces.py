"""The recipients' pages: a provincial office opens its personal link, downloads the letter and
confirms receipt. There is no account: the token in the URL is the credential.

Routes are thin: the work is in ``dispatch.receipts.acknowledgements``. Every response carries
headers that keep the token from leaking (no Referer, no caching) and a strict Content
Security Policy.

The page and its form need no session: the form's CSRF token is bound to the link
(``form_token``), so opening the page sets no cookie and confirming reads none. Only a form
refused for its contents keeps what was typed in the session, for the next GET.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from dispatch import archive, clock
from dispatch.extensions import csrf
from dispatch.mail.links import is_well_formed
from dispatch.models import (
    AcknowledgementMethod,
    AmendmentKind,
    Dispatch,
    DispatchRecipient,
    DispatchStatus,
    Document,
)
from dispatch.receipts import acknowledgements
from dispatch.text import clean_line, clean_note
from dispatch.transaction import statement_connection, unit_of_work
from dispatch.views.downloads import file_response
from dispatch.views.frame import branding

bp = Blueprint("provinces", __name__)

SECURITY_HEADERS = {
    # The token is in the URL: never send it on to another site, never keep the page in a cache.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
        "object-src 'none'"
    ),
}


# --- Throttling guesses -----------------------------------------------------------------------


class NotFoundThrottle:
    """A sliding window of 404s per client address, kept in this process.

    Behind several workers (gunicorn -w N) each worker keeps its own window, so an address may
    get up to N times the limit; with 256-bit tokens this only has to keep guessing noisy.
    """

    def __init__(self, limit: int, window: float, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._misses: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _prune(self, key: str, now: float) -> deque[float] | None:
        misses = self._misses.get(key)
        if misses is None:
            return None
        while misses and misses[0] <= now - self.window:
            misses.popleft()
        if not misses:
            del self._misses[key]
            return None
        return misses

    def retry_after(self, key: str, now: float) -> int | None:
        """Seconds until ``key`` may try again, or None if it is not blocked."""
        with self._lock:
            misses = self._prune(key, now)
            if misses is None or len(misses) < self.limit:
                return None
            return max(1, int(misses[-self.limit] + self.window - now) + 1)

    def miss(self, key: str, now: float) -> None:
        """Count a 404 for ``key``."""
        with self._lock:
            misses = self._prune(key, now) or deque()
            misses.append(now)
            self._misses[key] = misses
            self._misses.move_to_end(key)
            # Bounded memory: forget the addresses not seen for longest.
            while len(self._misses) > self.max_clients:
                self._misses.popitem(last=False)


def _throttle() -> NotFoundThrottle:
    return current_app.extensions["dispatch_link_throttle"]


def _client_key() -> str:
    return request.remote_addr or "-"


# --- Bookkeeping that must not fail a read ------------------------------------------------------


class PendingVisits:
    """Visits whose recording the database refused (a full disk, say), kept in this process.

    Opening the page or downloading a file is a read: the office gets its letter even when the
    note that it did cannot be written. The note waits here and is written, at its own moment,
    before the next link request's bookkeeping that the database accepts (``bookkeep``). Kept in
    memory because a full disk refuses a file as well; bounded, the oldest given up (logged).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._visits: deque[acknowledgements.LinkVisit] = deque()
        self._lock = threading.Lock()

    def take(self) -> list[acknowledgements.LinkVisit]:
        """All waiting visits, oldest first; they are no longer kept."""
        with self._lock:
            visits = list(self._visits)
            self._visits.clear()
            return visits

    def keep(self, visits: list[acknowledgements.LinkVisit]) -> None:
        """Keep ``visits`` (oldest first) ahead of any that arrived meanwhile."""
        with self._lock:
            self._visits.extendleft(reversed(visits))
            while len(self._visits) > self.limit:
                lost = self._visits.popleft()
                current_app.logger.error("gave up recording link visit: %s", lost.describe())

    def __len__(self) -> int:
        return len(self._visits)


def _pending() -> PendingVisits:
    return current_app.extensions["dispatch_pending_link_visits"]


def bookkeep(
    visit: acknowledgements.LinkVisit | None = None,
    recipient: DispatchRecipient | acknowledgements.Link | None = None,
    document: Document | None = None,
    connection: Connection | None = None,
) -> None:
    """Record the visits still waiting, then ``visit`` (of the rows already read), oldest first,
    each in its own transaction; if the database refuses one, log it and keep it and the rest
    for the next request. Never raises for a database failure: the caller has a page to serve.

    A link's first opening with nothing waiting is one statement on ``connection`` (see
    ``acknowledgements.record_first_open``).
    """
    visits = _pending().take()
    if (
        not visits
        and visit is not None
        and isinstance(recipient, acknowledgements.Link)
        and connection is not None
    ):
        try:
            if acknowledgements.record_first_open(connection, recipient, visit):
                return
        except SQLAlchemyError:
            current_app.logger.warning(
                "could not record link visit (%s), kept to record later: 1 waiting",
                visit.describe(),
                exc_info=True,
            )
            _pending().keep([visit])
            return
    if visit is not None:
        visits.append(visit)
    for index, item in enumerate(visits):
        try:
            with unit_of_work():
                if item is visit:
                    acknowledgements.record_visit(item, recipient, document)
                else:
                    acknowledgements.record_visit(item)
        except SQLAlchemyError:
            current_app.logger.warning(
                "could not record link visit (%s), kept to record later: %d waiting",
                item.describe(),
                len(visits) - index,
                exc_info=True,
            )
            _pending().keep(visits[index:])
            return


# --- The form's CSRF token, bound to the link -------------------------------------------------

# How long a page's form may be posted, unless WTF_CSRF_TIME_LIMIT says otherwise (Flask-WTF's
# default as well).
FORM_TOKEN_SECONDS = 3600
# Keeps these MACs apart from every other use of SECRET_KEY (the links' own tokens are MACs of
# "ack:…").
_FORM_TOKEN_PURPOSE = b"dispatch.provinces.form\x00"


def _form_mac(token: str, recipient_id: int, dispatch_id: int, expires: int) -> str:
    key = current_app.config["SECRET_KEY"]
    message = f"{token}\x00{recipient_id}\x00{dispatch_id}\x00{expires}".encode()
    digest = hmac.new(key.encode(), _FORM_TOKEN_PURPOSE + message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _form_token_seconds() -> int:
    return int(current_app.config.get("WTF_CSRF_TIME_LIMIT") or FORM_TOKEN_SECONDS)


def form_token(token: str, recipient_id: int, dispatch_id: int, now: float) -> str:
    """The CSRF token of the link ``token``'s form: until when it may be posted and the link's
    recipient and dispatch ids, under an HMAC-SHA256 with SECRET_KEY of all four.

    Flask-WTF binds its token to the browser's session, so that another site cannot make a
    browser post a form it has no token for. Here the form only does anything with the link's
    token, which is the credential: whoever can make a valid token for a link holds the link
    and can confirm through it anyway, and a site that does not hold it cannot make one (256
    bits of MAC). So a token bound to the link, and to a time window as Flask-WTF's is, protects
    as much, without a session: the page sets no cookie. The ids it carries let the
    confirmation be one statement (``acknowledge_link_at_once``, which checks them again).
    """
    expires = int(now) + _form_token_seconds()
    mac = _form_mac(token, recipient_id, dispatch_id, expires)
    return f"{recipient_id}.{dispatch_id}.{expires}.{mac}"


def _whole_number(text: str) -> int | None:
    if not text or len(text) > 12 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def form_link_ids(token: str, value: str | None, now: float) -> tuple[int, int] | None:
    """The link's (recipient id, dispatch id) if ``value`` is a token ``form_token`` made for the
    link ``token`` and it has not expired; None for anything else."""
    if not value or len(value) > 120:
        return None
    parts = value.split(".")
    if len(parts) != 4:
        return None
    recipient_id, dispatch_id, expires = (_whole_number(part) for part in parts[:3])
    if recipient_id is None or dispatch_id is None or expires is None:
        return None
    expected = _form_mac(token, recipient_id, dispatch_id, expires)
    if not hmac.compare_digest(parts[3].encode(), expected.encode()):
        return None
    if expires < now or expires > now + _form_token_seconds() + 60:
        return None
    return recipient_id, dispatch_id


def _form_refused() -> Response:
    """A POST without a token made for this link (none, expired, another link's, forged):
    nothing is recorded, and the browser is asked to reload. Counted as a guess, as an unknown
    link is: a token for a link only comes from that link's page."""
    blocked = _blocked("provinces/too_many_requests.html")
    if blocked is not None:
        return blocked
    _throttle().miss(_client_key(), time.monotonic())
    return Response(_render("provinces/bad_request.html"), status=400)


def _render(template: str, **context: Any) -> str:
    """A template of these pages with what it shows: the site's frame (``branding``) and the
    page's own values.

    The app's context processors are not run: they load the signed-in user and their roles
    (Flask-Login), which these public pages never show, on every page every office opens.
    """
    return current_app.jinja_env.get_template(template).render(**branding(), **context)


# --- The form -------------------------------------------------------------------------------


class Field:
    """One field of the confirmation form as the page shows it: what was typed (cleaned) and
    what is wrong with it."""

    __slots__ = ("data", "errors", "label", "name")

    def __init__(self, name: str, label: str, data: str) -> None:
        self.name = name
        self.label = label
        self.data = data
        self.errors: list[str] = []

    @property
    def id(self) -> str:
        """The input's id (its name, as WTForms would give it)."""
        return self.name


class ConfirmationForm:
    """The confirmation of receipt: who confirms, in which position, and an optional note.

    Read from the request by hand: three text fields do not need WTForms, whose form objects
    were a large share of a confirmation's CPU. The CSRF token is the link's own
    (``form_token``), checked by the view before anything else; the rules are the domain's own
    (``validate_confirmer``), so the page and the domain agree.
    """

    def __init__(self, formdata: Any = None) -> None:
        get = (formdata or {}).get
        self.name = Field("name", "Họ và tên người xác nhận", clean_line(get("name")))
        self.position = Field("position", "Chức vụ", clean_line(get("position")))
        self.note = Field("note", "Ghi chú (không bắt buộc)", clean_note(get("note")))

    def __getitem__(self, name: str) -> Field:
        if name not in _FORM_FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    @property
    def fields(self) -> tuple[Field, Field, Field]:
        """The fields in the page's order."""
        return (self.name, self.position, self.note)

    @property
    def errors(self) -> dict[str, list[str]]:
        """The messages of each field that has any."""
        return {field.name: field.errors for field in self.fields if field.errors}

    def validate(self) -> bool:
        """Check the fields with the domain's rules; True if they can be recorded."""
        errors = acknowledgements.validate_confirmer(
            self.name.data, self.position.data, self.note.data
        )
        for field in self.fields:
            field.errors = [errors[field.name]] if field.name in errors else []
        return not errors


# --- What the templates are given -----------------------------------------------------------


@dataclass(frozen=True)
class FileLink:
    """A downloadable file as the page lists it."""

    url: str
    filename: str
    label: str
    size: str


@dataclass(frozen=True)
class Receipt:
    """A confirmation on record, formatted for the page."""

    at: str
    by: str
    position: str
    method: str
    pdf_sha256: str | None


_KIND_LABELS = {
    "pdf": "Công văn (PDF)",
    "docx": "Công văn (DOCX)",
    "attachment": "Tài liệu kèm theo",
}
# When the letter is signed (``Dispatch.signed``): the PDF is the original, the DOCX a copy.
_SIGNED_KIND_LABELS = {
    **_KIND_LABELS,
    "pdf": "Bản gốc điện tử (PDF có chữ ký số)",
    "docx": "Bản để chỉnh sửa (DOCX)",
}
_METHOD_LABELS = {
    AcknowledgementMethod.LINK: "qua đường liên kết",
    AcknowledgementMethod.PHONE: "qua điện thoại, do văn thư ghi nhận",
    AcknowledgementMethod.EMAIL: "qua thư trả lời, do văn thư ghi nhận",
    AcknowledgementMethod.EDXML: "qua hệ thống quản lý văn bản (edXML)",
}


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} byte"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / 1024 / 1024:.1f} MB".replace(".", ",")


def _receipt(
    recipient: DispatchRecipient | acknowledgements.Link,
    files: tuple[acknowledgements.IssuedFile, ...],
) -> Receipt | None:
    if recipient.acknowledged_at is None:
        return None
    pdf = next((f for f in files if f.kind == "pdf"), None)
    method = recipient.acknowledged_method or AcknowledgementMethod.LINK
    return Receipt(
        at=clock.format_local(recipient.acknowledged_at),
        by=recipient.acknowledged_by or "",
        position=recipient.acknowledged_position or "",
        method=_METHOD_LABELS.get(method, ""),
        pdf_sha256=pdf.sha256 if pdf else None,
    )


def _page_data(token: str, recipient: DispatchRecipient | acknowledgements.Link) -> dict[str, Any]:
    """Plain data for the letter's page (templates never see ORM objects)."""
    dispatch = recipient.dispatch
    letter = acknowledgements.issued_letter(dispatch)
    # One URL built: the files' are under it (as the download route says).
    action = url_for("provinces.letter", token=token)
    return {
        "number": dispatch.number_and_symbol or "",
        "date": dispatch.issued_on.strftime("%d/%m/%Y") if dispatch.issued_on else "",
        "subject": dispatch.subject,
        "issuing_agency": letter.issuing_agency,
        "recipient_name": recipient.name,
        "deadline": clock.format_local(dispatch.deadline_at),
        "files": [
            FileLink(
                url=f"{action}/files/{file.id}",
                filename=file.filename,
                label=(_SIGNED_KIND_LABELS if dispatch.signed else _KIND_LABELS).get(
                    file.kind, "Tệp"
                ),
                size=_size(file.size),
            )
            for file in letter.files
        ],
        "receipt": _receipt(recipient, letter.files),
        "action": action,
        "notice": _amendment_notice(dispatch, letter),
        "signed": bool(dispatch.signed),
    }


def _amendment_notice(
    dispatch: Dispatch | acknowledgements.LinkDispatch, letter: acknowledgements.IssuedLetter
) -> str | None:
    """What became of this letter (recalled, replaced), or what this recall letter asks."""
    if dispatch.status in (DispatchStatus.RECALLED, DispatchStatus.REPLACED):
        from dispatch import amendments
        from dispatch.models import AmendmentStatus

        for amendment in amendments.amendments_of(dispatch.id):
            if (
                amendment.status is AmendmentStatus.APPROVED
                and amendment.original_id == dispatch.id
                and amendment.new is not None
                and (other := amendment.new.number_and_symbol)
            ):
                if dispatch.status is DispatchStatus.RECALLED:
                    return (
                        f"Công văn này đã bị thu hồi bằng Công văn số {other}: không thực hiện "
                        "nội dung của công văn này và huỷ văn bản đã nhận."
                    )
                return f"Công văn này đã được thay thế bằng Công văn số {other}."
    if letter.successor_of is None:
        return None
    kind, original = letter.successor_of
    if kind == AmendmentKind.RECALL.value:
        return (
            f"Đây là văn bản thu hồi Công văn số {original}. Xác nhận dưới đây là xác nhận "
            "đã nhận văn bản này và đã huỷ Công văn bị thu hồi."
        )
    return f"Công văn này thay thế Công văn số {original}."


# --- Responses that say nothing about the token -----------------------------------------------


def _not_found(template: str) -> Response:
    """The same page for a malformed, forged, unknown or draft token, and counts the miss."""
    _throttle().miss(_client_key(), time.monotonic())
    return Response(render_template(template), status=404)


def _too_many(retry_after: int, template: str) -> Response:
    response = Response(render_template(template), status=429)
    response.headers["Retry-After"] = str(retry_after)
    return response


def _blocked(template: str) -> Response | None:
    retry_after = _throttle().retry_after(_client_key(), time.monotonic())
    return None if retry_after is None else _too_many(retry_after, template)


def unknown_link(
    not_found: str = "provinces/not_found.html",
    too_many: str = "provinces/too_many_requests.html",
) -> Response:
    """A link that opens nothing: 429 to an address that guessed too often, else the counted 404.

    Only unknown links are throttled. A valid link works from any address, blocked or not:
    offices behind one NAT share an address, and one mistyped bookmark must not lock them out.
    Other public pages with codes in their URL (``/xac-minh/<code>``) count their misses in the
    same window, with their own wording (``not_found``, ``too_many``).
    """
    return _blocked(too_many) or _not_found(not_found)


# --- Routes ---------------------------------------------------------------------------------


@bp.after_request
def add_security_headers(response: Response) -> Response:
    """Every response of these pages keeps the token to itself."""
    for header, value in SECURITY_HEADERS.items():
        response.headers[header] = value
    return response


@bp.errorhandler(CSRFError)
def csrf_failed(error: CSRFError) -> tuple[str, int]:
    """A form without (or with an expired) CSRF token: ask to reload, in Vietnamese."""
    return render_template("provinces/bad_request.html"), 400


@bp.route("/r/<token>", methods=["GET", "POST"])
@csrf.exempt  # the form's token is the link's own: checked here, first (``form_link_ids``)
def letter(token: str) -> Any:
    """The letter's page and the confirmation form; after confirming, the receipt."""
    if request.method == "POST":
        link_ids = form_link_ids(token, request.form.get("csrf_token"), time.time())
        if link_ids is None and current_app.config.get("WTF_CSRF_ENABLED", True):
            return _form_refused()
        if (confirmed := _confirm_at_once(token, link_ids)) is not None:
            return confirmed
    at = clock.now()
    ip, user_agent = request.remote_addr, request.user_agent.string
    if request.method == "GET":
        if not is_well_formed(token):
            return unknown_link()  # not even a connection for it
        with statement_connection() as connection:
            link = acknowledgements.find_link(token, connection)
            if link is None:
                return unknown_link()
            form = ConfirmationForm()
            _restore_failed_form(form, token)
            # What the page shows is read first: the note that it was opened is bookkeeping,
            # written after (and kept for later if the database refuses it), and nothing is
            # read again.
            page = _page_data(token, link)
            visit = acknowledgements.LinkVisit(link.id, at, ip, user_agent)
            bookkeep(visit, recipient=link, connection=connection)
        return _letter_page(form, token, link, already=False, **page)
    recipient = acknowledgements.find_recipient(token)
    if recipient is None:
        return unknown_link()
    form = ConfirmationForm(request.form)
    already = False
    if recipient.acknowledged_at is not None:
        already = True
    elif form.validate():
        with unit_of_work():
            result = acknowledgements.acknowledge(
                recipient,
                form.name.data,
                form.position.data,
                form.note.data,
                ip=ip,
                user_agent=user_agent,
                at=at,
                method=AcknowledgementMethod.LINK,
            )
        if result.recorded:
            bookkeep()  # the database takes writes: record any visits still waiting
            # Post/Redirect/Get: reloading the receipt must not post the form again.
            return redirect(url_for("provinces.letter", token=token), code=303)
        already = True
    if not already:
        # Post/Redirect/Get on errors too: what was typed and what is wrong wait in the session
        # for the next GET, so Back or reload never meets the browser's "resend the form?".
        session[_FAILED_FORM_KEY] = {
            "token": token,
            "data": {name: form[name].data for name in _FORM_FIELDS},
            "errors": {name: list(form[name].errors) for name in _FORM_FIELDS},
        }
        return redirect(url_for("provinces.letter", token=token, _anchor="xac-nhan"), code=303)
    return _letter_page(form, token, recipient, already=already, **_page_data(token, recipient))


def _letter_page(
    form: ConfirmationForm,
    token: str,
    recipient: DispatchRecipient | acknowledgements.Link,
    **page: Any,
) -> str:
    csrf_token = form_token(token, recipient.id, recipient.dispatch_id, time.time())
    return _render("provinces/letter.html", form=form, csrf_token=csrf_token, **page)


def _confirm_at_once(token: str, link_ids: tuple[int, int] | None) -> Response | None:
    """The common confirmation: a valid form on a live link not yet confirmed, recorded without
    reading the link first (the 303 of Post/Redirect/Get); None for anything else, which
    ``letter`` then looks into (an unknown link, a confirmation already on record, errors).

    On PostgreSQL the confirmation and its audit entry are one statement, given the ids the
    form's token carries (``acknowledge_link_at_once``); otherwise, or if that wrote nothing,
    an UPDATE and the entry in one transaction (``acknowledge_link``).
    """
    form = ConfirmationForm(request.form)
    if not form.validate():
        return None
    fields = (token, form.name.data, form.position.data, form.note.data)
    context = {"ip": request.remote_addr, "user_agent": request.user_agent.string}
    at = clock.now()
    result = None
    if link_ids is not None and is_well_formed(token):
        with statement_connection() as connection:
            result = acknowledgements.acknowledge_link_at_once(
                connection, link_ids, *fields, **context, at=at
            )
    if result is None:
        with unit_of_work():
            result = acknowledgements.acknowledge_link(*fields, **context, at=at)
    if result is None:
        return None
    bookkeep()  # the database takes writes: record any visits still waiting
    return redirect(url_for("provinces.letter", token=token), code=303)


_FAILED_FORM_KEY = "failed_confirmation"
_FORM_FIELDS = ("name", "position", "note")


def _restore_failed_form(form: ConfirmationForm, token: str) -> None:
    """Put back what the last refused POST on this link typed, with its errors (once)."""
    saved = session.pop(_FAILED_FORM_KEY, None)
    if not isinstance(saved, dict) or saved.get("token") != token:
        return
    for name in _FORM_FIELDS:
        form[name].data = saved.get("data", {}).get(name) or ""
        form[name].errors = list(saved.get("errors", {}).get(name) or [])


@bp.get("/r/<token>/files/<ref>")
def download(token: str, ref: str) -> Response:
    """One archived file of the recipient's letter, by document id or file name."""
    recipient = acknowledgements.find_recipient(token)
    document = None if recipient is None else acknowledgements.find_document(recipient, ref)
    if recipient is None or document is None:
        return unknown_link()
    try:
        data = archive.read_archived(document.path, document.sha256)
    except archive.ArchiveError:
        current_app.logger.exception("archived file unavailable")
        return Response(render_template("provinces/file_unavailable.html"), status=500)
    response = file_response(data, document.media_type, document.filename)
    visit = acknowledgements.LinkVisit(
        recipient.id,
        clock.now(),
        request.remote_addr,
        request.user_agent.string,
        document_id=document.id,
    )
    bookkeep(visit, recipient=recipient, document=document)
    return response


@bp.route("/r/", defaults={"rest": ""}, methods=["GET", "POST"])
@bp.route("/r/<path:rest>", methods=["GET", "POST"])
def unknown(rest: str) -> Response:
    """Any other address under /r/ is a link that does not exist: same answer, same count."""
    return unknown_link()


def init_app(app: Flask) -> None:
    """Register the blueprint, its per-process guess throttle and its waiting visits."""
    app.extensions["dispatch_pending_link_visits"] = PendingVisits()
    app.extensions["dispatch_link_throttle"] = NotFoundThrottle(
        limit=int(app.config.get("DISPATCH_LINK_404_LIMIT", 20)),
        window=float(app.config.get("DISPATCH_LINK_404_WINDOW", 600)),
    )
    app.register_blueprint(bp)
