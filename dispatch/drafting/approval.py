"""Approval (trình ký, ký duyệt): a clerk submits a finished draft to a leader, who reads the
rendered letter and signs it, or returns it with a comment.

The order Decree 30 sets for an electronic original (Appendix I, part II): the person with
authority signs first; the number and date are given, and the agency signs, at issuance
(``dispatch.issuing``). Here:

* ``submit``: a clerk addresses a draft that validates and renders to a leader who has a signing
  key; one open submission per draft at a time. The letter is rendered ONCE, here, and those
  exact bytes are archived with their SHA-256 (``submitted_pdf``): they are what the leader reads
  and what the leader signs. Commits on its own.
* ``return_draft``: the addressed leader sends it back, with a comment (required).
* ``approve``: the addressed leader signs the submitted PDF, read back from the archive with its
  SHA-256 checked (an altered or missing file is refused: nothing is signed), with
  ``signing.original.approve`` (the image of their handwritten signature) and their key, whose
  password comes from the environment variable named in ``User.signing_password_env`` (never
  stored, never logged). The signature is an incremental update: the approved PDF is the
  submitted bytes followed by the signature. Its exact bytes are archived with their SHA-256.
  Commits on its own.
* ``withdraw``: the clerk takes a submission or an approval back, to edit the draft; it is void.

Sign what you read: nothing renders the letter again between the submission and the signature,
so the bytes the leader viewed are the bytes signed, whatever may change in the renderer, its
fonts or the letter's files meanwhile. A returned or withdrawn submission keeps its files and
its row: the history.

While a draft is submitted or approved its letter cannot be edited (``drafts.ensure_editable``).
Every change is audited. ``return_draft`` and ``withdraw`` do not commit: the caller ends the
transaction; ``submit`` and ``approve`` commit on their own, because they alone know the files
they archived (removed again if their transaction fails).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

from sqlalchemy import select

from dispatch import audit
from dispatch.archive import ArchivedFile, ArchiveError, ArchiveWriter, read_archived
from dispatch.audit import actor_name
from dispatch.drafting import drafts
from dispatch.drafting.drafts import DraftError, lock_dispatch
from dispatch.drafting.uploads import letter_root
from dispatch.extensions import db
from dispatch.letters.model import Letter
from dispatch.letters.source import LetterSourceError, build_letter, source_from_json
from dispatch.models import (
    ApprovalStatus,
    Dispatch,
    DispatchApproval,
    DispatchStatus,
    Role,
    User,
)
from dispatch.text import clean_note

COMMENT_MAX = 1000
APPROVALS_FOLDER = "approvals"
STATUS_LABELS = {
    ApprovalStatus.SUBMITTED: "đang chờ lãnh đạo ký duyệt",
    ApprovalStatus.RETURNED: "lãnh đạo trả lại",
    ApprovalStatus.APPROVED: "lãnh đạo đã ký duyệt",
    ApprovalStatus.WITHDRAWN: "đã rút lại",
}


class ApprovalError(DraftError):
    """The submission or decision cannot be made; the message is for people (Vietnamese)."""


class LeaderRefused(ApprovalError):
    """The chosen leader cannot sign: unknown, inactive, not a leader, or without a key."""


class DraftNotReady(ApprovalError):
    """The draft is not a finished letter: it does not validate or does not render."""


class NotApproved(ApprovalError):
    """The draft has no approval (the leader's signature) to issue with."""


class SubmittedPdfUnavailable(ApprovalError):
    """The submitted PDF is not in the archive as it was submitted (missing or altered), or the
    submission was made before submissions kept it: nothing can be signed."""


# --- looking up --------------------------------------------------------------------------------


def open_approval(dispatch_id: int) -> DispatchApproval | None:
    """The draft's open submission: waiting for the leader, or approved; None otherwise."""
    return db.session.execute(
        select(DispatchApproval)
        .where(
            DispatchApproval.dispatch_id == dispatch_id,
            DispatchApproval.status.in_(drafts.OPEN_APPROVAL),
        )
        .order_by(DispatchApproval.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def history(dispatch_id: int) -> list[DispatchApproval]:
    """Every submission of the draft, oldest first, with its decision and withdrawal."""
    return list(
        db.session.execute(
            select(DispatchApproval)
            .where(DispatchApproval.dispatch_id == dispatch_id)
            .order_by(DispatchApproval.id)
        ).scalars()
    )


def waiting_for(leader: User) -> list[DispatchApproval]:
    """The submissions waiting for this leader's signature, oldest first."""
    return list(
        db.session.execute(
            select(DispatchApproval)
            .join(Dispatch, Dispatch.id == DispatchApproval.dispatch_id)
            .where(
                DispatchApproval.leader_id == leader.id,
                DispatchApproval.status == ApprovalStatus.SUBMITTED,
                Dispatch.status == DispatchStatus.DRAFT,
            )
            .order_by(DispatchApproval.submitted_at, DispatchApproval.id)
        ).scalars()
    )


def leaders_who_sign() -> list[User]:
    """The active leaders who have a signing key: those a draft can be submitted to."""
    return list(
        db.session.execute(
            select(User)
            .where(
                User.role == Role.LEADER,
                User.active.is_(True),
                User.signing_key.is_not(None),
            )
            .order_by(User.name, User.email)
        ).scalars()
    )


def submitted_pdf(approval: DispatchApproval) -> bytes:
    """The PDF submitted for signature, exactly as archived at submission (its SHA-256 checked):
    what the leader reads and signs. ``SubmittedPdfUnavailable`` otherwise."""
    if not approval.submitted_pdf_path:
        raise SubmittedPdfUnavailable(
            f"Lần trình ký mã {approval.id} không có bản PDF trình ký được lưu (trình trước khi "
            "hệ thống lưu bản trình ký): văn thư hãy rút lại rồi trình ký lại."
        )
    try:
        return read_archived(approval.submitted_pdf_path, approval.submitted_pdf_sha256)
    except ArchiveError as exc:
        raise SubmittedPdfUnavailable(
            f"Bản PDF trình ký không còn đúng như khi trình (lần trình ký mã {approval.id}): "
            f"{exc} Không ký duyệt văn bản này; hãy báo quản trị viên, văn thư rút lại rồi "
            "trình ký lại."
        ) from exc


def approved_pdf(dispatch_id: int) -> tuple[DispatchApproval, bytes]:
    """The draft's approval and its signed PDF, read back from the archive with its SHA-256
    checked; ``NotApproved`` when the draft is not approved."""
    approval = open_approval(dispatch_id)
    if approval is None or approval.status is not ApprovalStatus.APPROVED:
        state = (
            "đang chờ lãnh đạo ký duyệt"
            if approval is not None
            else "chưa được trình lãnh đạo ký duyệt"
        )
        raise NotApproved(
            f"Văn bản chưa được lãnh đạo ký duyệt (công văn mã {dispatch_id} {state}): khi đã "
            "cấu hình khoá ký số của cơ quan (DISPATCH_AGENCY_KEY), chỉ ban hành văn bản đã "
            "ký duyệt. Hãy trình ký (dispatch draft submit) và chờ lãnh đạo ký duyệt."
        )
    try:
        return approval, read_archived(approval.pdf_path, approval.pdf_sha256)
    except ArchiveError as exc:
        raise ApprovalError(f"Không đọc được bản đã ký duyệt: {exc}") from exc


# --- the letter the leader reads and signs -------------------------------------------------------


def letter_for_approval(dispatch: Dispatch) -> Letter:
    """The draft's letter with no number and no day yet, as it is signed; ``LetterSourceError``
    while the draft is not a valid letter."""
    letter = build_letter(
        source_from_json(dispatch.source or {}, origin=drafts.draft_origin(dispatch.id)),
        project_root=letter_root(dispatch.id),
    )
    return replace(letter, number=None, date=None)


def render(dispatch: Dispatch, at: dt.datetime) -> bytes:
    """The draft rendered as it will be signed, with the QR code of the page that will verify
    it once issued and ``at`` (the submission) as its creation date: called once, at
    submission (``submit`` archives it)."""
    from flask import current_app

    from dispatch.letters.pdf import RenderError
    from dispatch.signing import original, verification

    try:
        return original.render_for_approval(
            letter_for_approval(dispatch),
            verify_url=verification.verify_url(dispatch, current_app.config),
            created=at,
        )
    except LetterSourceError as exc:
        raise ApprovalError(f"Bản nháp còn lỗi, chưa trình ký được: {exc.message}") from exc
    except RenderError as exc:
        raise ApprovalError(f"Không tạo được bản PDF của công văn: {exc}") from exc


# --- the steps ---------------------------------------------------------------------------------


def _details(approval: DispatchApproval, **extra) -> dict:
    leader = db.session.get(User, approval.leader_id)
    return {
        "approval_id": approval.id,
        "leader": leader.email if leader else None,
        "status": approval.status.value,
        **extra,
    }


def _leader(email: str) -> User:
    from dispatch.accounts.users import find_user

    user = find_user(email or "")
    if user is None or not user.active:
        raise LeaderRefused(f"Không có người dùng {email or '(trống)'} đang hoạt động.")
    if user.role is not Role.LEADER:
        raise LeaderRefused(f"{user.email} không phải lãnh đạo: chỉ trình ký lãnh đạo.")
    if not user.signing_key:
        raise LeaderRefused(
            f"Lãnh đạo {user.email} chưa có khoá ký số: quản trị viên cấu hình bằng "
            "“dispatch users signing-key” trước khi trình ký."
        )
    return user


def ready_to_sign(leader: User, environ: Mapping[str, str]) -> None:
    """``ApprovalError`` unless ``leader`` can sign now: a signing key, and its password's
    environment variable set (the key itself is opened only when signing)."""
    if not leader.signing_key:
        raise ApprovalError(
            f"{leader.email} chưa có khoá ký số: quản trị viên cấu hình bằng "
            "“dispatch users signing-key”."
        )
    _password(leader, environ)


def _may_submit(actor: User | None) -> None:
    if actor is not None and actor.role not in (Role.CLERK, Role.ADMIN):
        raise ApprovalError("Chỉ văn thư, chuyên viên mới trình ký hoặc rút lại bản nháp.")


def _draft(dispatch_id: int) -> Dispatch:
    dispatch = lock_dispatch(dispatch_id)
    if dispatch.status is not DispatchStatus.DRAFT:
        raise ApprovalError(drafts.frozen_message(dispatch))
    return dispatch


@contextmanager
def _committed_with_file(dispatch_id: int) -> Iterator[Callable[[str, bytes], ArchivedFile]]:
    """One transaction that also writes a file to the draft's approvals folder: the body's
    changes are committed at the end with the file in place, or, on any failure, rolled back
    and the file removed. Yields ``store(name, data)``, which writes the file."""
    writer = ArchiveWriter(dispatch_id, APPROVALS_FOLDER)

    def store(filename: str, data: bytes) -> ArchivedFile:
        try:
            return writer.write(filename, data)
        except ArchiveError as exc:
            raise ApprovalError(str(exc)) from exc

    try:
        yield store
        db.session.commit()
    except BaseException:
        db.session.rollback()
        writer.discard()
        raise


def submit(
    dispatch_id: int, *, leader_email: str, actor: User | None, at: dt.datetime
) -> DispatchApproval:
    """A clerk submits a finished draft to a leader with a signing key; commits on its own.

    The letter is rendered once (a draft that does not render is not a finished letter:
    ``DraftNotReady``) and the PDF's exact bytes are archived read-only with their SHA-256:
    the leader reads them, and ``approve`` signs them. Audited
    ("dispatch.submitted_for_signature", with the PDF's SHA-256). On any failure nothing is
    recorded and the file written is removed.
    """
    with _committed_with_file(dispatch_id) as store:
        _may_submit(actor)
        dispatch = _draft(dispatch_id)
        current = open_approval(dispatch_id)
        if current is not None:
            raise ApprovalError(drafts.signature_lock_message(current.status))
        leader = _leader(leader_email)
        try:
            pdf = render(dispatch, at)
        except ApprovalError as exc:
            raise DraftNotReady(str(exc)) from exc
        approval = DispatchApproval(
            dispatch_id=dispatch.id,
            status=ApprovalStatus.SUBMITTED,
            leader_id=leader.id,
            submitted_by_id=actor.id if actor is not None else None,
            submitted_at=at,
        )
        db.session.add(approval)
        db.session.flush()
        stored = store(f"trinh-ky-{approval.id}.pdf", pdf)
        approval.submitted_pdf_path = stored.path
        approval.submitted_pdf_sha256 = stored.sha256
        approval.submitted_pdf_size = stored.size
        db.session.flush()
        audit.record_dispatch(
            "dispatch.submitted_for_signature",
            dispatch.id,
            actor=actor_name(actor),
            at=at,
            details=_details(
                approval,
                subject=dispatch.subject,
                pdf_path=stored.path,
                pdf_sha256=stored.sha256,
                size=stored.size,
            ),
        )
    return approval


def _addressed(dispatch_id: int, actor: User, approval_id: int | None) -> DispatchApproval:
    """The submission waiting for ``actor``: refused to anyone but the leader addressed."""
    if actor.role is not Role.LEADER:
        raise ApprovalError("Chỉ lãnh đạo được trình ký mới ký duyệt hoặc trả lại bản nháp.")
    _draft(dispatch_id)
    approval = open_approval(dispatch_id)
    if approval is None or (approval_id is not None and approval.id != approval_id):
        raise ApprovalError(
            f"Bản nháp mã {dispatch_id} không có lần trình ký nào đang chờ (đã được xử lý "
            "hoặc đã rút lại)."
        )
    if approval.status is not ApprovalStatus.SUBMITTED:
        raise ApprovalError("Bản nháp này đã được ký duyệt.")
    if approval.leader_id != actor.id:
        leader = db.session.get(User, approval.leader_id)
        raise ApprovalError(
            f"Bản nháp được trình {leader.email if leader else 'lãnh đạo khác'} ký duyệt, "
            f"không phải {actor.email}."
        )
    return approval


def return_draft(
    dispatch_id: int,
    *,
    comment: str,
    actor: User,
    at: dt.datetime,
    approval_id: int | None = None,
) -> DispatchApproval:
    """The addressed leader sends the draft back (trả lại) with a comment, which is required;
    audited. The clerk may then edit it and submit again. The caller commits."""
    approval = _addressed(dispatch_id, actor, approval_id)
    text = clean_note(comment or "")
    if not text:
        raise ApprovalError("Vui lòng ghi ý kiến khi trả lại bản nháp.")
    if len(text) > COMMENT_MAX:
        raise ApprovalError(f"Ý kiến dài tối đa {COMMENT_MAX} ký tự (đã nhập {len(text)}).")
    approval.status = ApprovalStatus.RETURNED
    approval.decided_at = at
    approval.comment = text
    db.session.flush()
    audit.record_dispatch(
        "dispatch.returned_by_signer",
        dispatch_id,
        actor=actor_name(actor),
        at=at,
        details=_details(approval, comment=text),
    )
    return approval


def _password(user: User, environ: Mapping[str, str]) -> str | None:
    name = user.signing_password_env
    if not name:
        return None
    if name not in environ:
        raise ApprovalError(
            f"Biến môi trường {name} (mật khẩu khoá ký số của {user.email}) chưa được đặt "
            "trên máy chủ: chưa ký duyệt được."
        )
    return environ[name]


@dataclass(frozen=True)
class Signed:
    """What an approval did: the archived, signed PDF."""

    approval_id: int
    dispatch_id: int
    pdf_path: str
    pdf_sha256: str
    certificate: str


def approve(
    dispatch_id: int,
    *,
    actor: User,
    at: dt.datetime,
    environ: Mapping[str, str],
    approval_id: int | None = None,
) -> Signed:
    """The addressed leader signs the submitted PDF (ký duyệt); commits on its own.

    What is signed is exactly the PDF archived at submission, the one the leader's page shows,
    read back with its SHA-256 checked: nothing is rendered again. It commits because it alone
    knows the archived file: the signed PDF is written read-only to the archive, and removed
    again if the transaction fails. The key's password is read from ``environ`` under the name
    the leader's ``signing_password_env`` gives; it is neither stored nor written anywhere.
    Raises ``ApprovalError`` (wrong person, no key, a key that does not open, a submitted PDF
    missing or altered: ``SubmittedPdfUnavailable``); nothing is changed then.
    """
    from flask import current_app

    from dispatch.signing import keys, original, pades

    with _committed_with_file(dispatch_id) as store:
        approval = _addressed(dispatch_id, actor, approval_id)
        dispatch = db.session.get(Dispatch, dispatch_id)
        assert dispatch is not None
        ready_to_sign(actor, environ)
        pdf = submitted_pdf(approval)
        try:
            with keys.open_signer(actor.signing_key, _password(actor, environ)) as signer:
                certificate = signer.signing_cert.subject.human_friendly
                signed = original.approve(
                    pdf,
                    signer,
                    image=actor.signature_image,
                    at=at,
                    evidence=original.Evidence.from_config(current_app.config),
                )
        except (keys.SigningKeyError, pades.SigningError) as exc:
            raise ApprovalError(f"Chưa ký duyệt được: {exc}") from exc
        stored = store(f"ky-duyet-{approval.id}.pdf", signed)
        approval.status = ApprovalStatus.APPROVED
        approval.decided_at = at
        approval.certificate = certificate[:500]
        approval.pdf_path = stored.path
        approval.pdf_sha256 = stored.sha256
        approval.pdf_size = stored.size
        dispatch.updated_at = at
        db.session.flush()
        audit.record_dispatch(
            "dispatch.approved_by_signer",
            dispatch_id,
            actor=actor_name(actor),
            at=at,
            details=_details(
                approval,
                certificate=approval.certificate,
                submitted_pdf_sha256=approval.submitted_pdf_sha256,
                pdf_path=stored.path,
                pdf_sha256=stored.sha256,
                size=stored.size,
            ),
        )
    return Signed(approval.id, dispatch_id, stored.path, stored.sha256, certificate)


def withdraw(dispatch_id: int, *, actor: User | None, at: dt.datetime) -> DispatchApproval:
    """A clerk takes back the draft's submission or approval, to edit it: the submission (or
    the leader's signature) is void and the draft is editable again; audited with what was
    withdrawn. The caller commits."""
    _may_submit(actor)
    _draft(dispatch_id)
    approval = open_approval(dispatch_id)
    if approval is None:
        raise ApprovalError(f"Bản nháp mã {dispatch_id} không có lần trình ký nào để rút lại.")
    was = approval.status
    approval.status = ApprovalStatus.WITHDRAWN
    approval.withdrawn_at = at
    approval.withdrawn_by_id = actor.id if actor is not None else None
    db.session.flush()
    audit.record_dispatch(
        "dispatch.signature_withdrawn",
        dispatch_id,
        actor=actor_name(actor),
        at=at,
        details=_details(
            approval,
            was=was.value,
            submitted_pdf_sha256=approval.submitted_pdf_sha256,
            pdf_sha256=approval.pdf_sha256,
        ),
    )
    return approval
