"""The data: typed SQLAlchemy 2.0 models and their status enums.

Times are stored in UTC (``UTCDateTime``) and shown in Asia/Ho_Chi_Minh by the views. Rules that
keep the product honest under concurrency live in the schema: a register number is unique per
register and year, an outbox row is unique per (dispatch, recipient, kind, sequence), so that a
job run twice, or by two schedulers at once, cannot send anything twice.
"""

from __future__ import annotations

import datetime as dt
import secrets
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dispatch.extensions import db


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC (for defaults only: domain code is given its time)."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """An aware datetime stored as naive UTC, so SQLite and PostgreSQL behave the same."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


# The verification code's length in random bytes: 12 bytes are 16 URL-safe characters (96 bits,
# beyond guessing), short enough for a small QR code.
VERIFICATION_CODE_BYTES = 12


def new_verification_code() -> str:
    """A fresh random, URL-safe code for a dispatch's public verification page."""
    return secrets.token_urlsafe(VERIFICATION_CODE_BYTES)


def _enum(enum_cls: type[StrEnum]) -> sa.Enum:
    """Store a StrEnum by its value as a plain string (no native enum type to migrate)."""
    return sa.Enum(
        enum_cls,
        native_enum=False,
        length=20,
        values_callable=lambda cls: [member.value for member in cls],
        validate_strings=True,
    )


class Role(StrEnum):
    """What a signed-in user may do."""

    ADMIN = "admin"  # users and the directory
    CLERK = "clerk"  # compose, issue, manage deliveries
    LEADER = "leader"  # read everything, change nothing


class DispatchStatus(StrEnum):
    """Where a dispatch stands."""

    DRAFT = "draft"
    ISSUED = "issued"
    COMPLETED = "completed"  # every recipient confirmed (or was closed by a clerk)
    # Superseded by a later letter (dispatch.amendments): the issued letter itself is untouched.
    RECALLED = "recalled"  # thu hồi: a recall letter was issued for it
    REPLACED = "replaced"  # thay thế: a corrected letter with a new number replaces it


class DeliveryStatus(StrEnum):
    """The state of one outgoing e-mail."""

    QUEUED = "queued"
    SENDING = "sending"  # claimed by a sender; if that sender died, it is retried
    SENT = "sent"  # accepted by the SMTP server
    RETRYING = "retrying"  # a temporary failure; ``next_attempt_at`` says when
    FAILED = "failed"  # a permanent failure; ``last_error`` says why
    CANCELLED = "cancelled"  # no longer needed when its turn came (the office had confirmed)
    # Accepted by the first server, then returned by a later one (a delivery status
    # notification that it failed, found by dispatch.inbound); ``last_error`` says why.
    BOUNCED = "bounced"


class MessageKind(StrEnum):
    """What an outgoing e-mail is."""

    LETTER = "letter"  # the letter itself, to a recipient
    REMINDER = "reminder"  # a reminder to a recipient who has not confirmed
    ESCALATION = "escalation"  # the list of late recipients, to the clerk and leadership


class AcknowledgementMethod(StrEnum):
    """How a confirmation of receipt reached us."""

    LINK = "link"  # the recipient's personal link
    PHONE = "phone"  # recorded by a clerk on the recipient's word
    EMAIL = "email"  # an e-mail reply that a clerk marked as the office's confirmation
    EDXML = "edxml"  # an edXML status message 03 (đã tiếp nhận) from the office's system


class User(UserMixin, db.Model):
    """A person who signs in: an admin, a clerk or a leader."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100), default="")
    role: Mapped[Role] = mapped_column(_enum(Role))
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A leader's signing key (dispatch.signing): its reference (PKCS#12 path or pkcs11: URI)
    # and the name of the environment variable holding its password; never the key or password.
    signing_key: Mapped[str | None] = mapped_column(sa.String(1000))
    signing_password_env: Mapped[str | None] = mapped_column(sa.String(100))
    # The handwritten signature printed in the signature block: a PNG, transparent background.
    signature_image: Mapped[bytes | None] = mapped_column(sa.LargeBinary)

    @property
    def is_active(self) -> bool:  # Flask-Login
        return self.active


class TokenScope(StrEnum):
    """What an API token may do, within what its owner's role allows."""

    READ = "read"  # GET only
    WRITE = "write"  # also POST, PUT, PATCH, DELETE


class ApiToken(db.Model):
    """A bearer token for the JSON API; only its SHA-256 is kept. It stops working at
    ``expires_at`` or when revoked, whichever comes first."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("user_account.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scope: Mapped[TokenScope] = mapped_column(_enum(TokenScope))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class LoginAttempt(db.Model):
    """One sign-in attempt, kept in the database so throttling holds across web workers."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        sa.Index("ix_login_attempt_email_at", "email", "at"),
        sa.Index("ix_login_attempt_ip_at", "ip", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    email: Mapped[str] = mapped_column(sa.String(254))  # as typed, normalised (lower case, NFC)
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    succeeded: Mapped[bool] = mapped_column(default=False)


class UserSession(db.Model):
    """One signed-in session: the browser holds a random key, the server its SHA-256 and state.

    A session ends when its user signs out, when an admin changes the user's role, password or
    standing, when the user changes their password, or after an idle time (derived from
    ``last_seen_at``; nothing is written when it lapses).
    """

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("user_account.id"), index=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(sa.String(30))
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    user_agent: Mapped[str] = mapped_column(sa.String(200), default="")

    user: Mapped[User] = relationship()


class LoginThrottle(db.Model):
    """Recent failed sign-ins for one key (an account and address pair, an account, an address).

    Changed only by compare-and-set updates, so simultaneous attempts are counted one by one.
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(sa.String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    next_allowed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


group_member = sa.Table(
    "group_member",
    db.metadata,
    sa.Column(
        "group_id", sa.ForeignKey("recipient_group.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "organisation_id", sa.ForeignKey("organisation.id", ondelete="CASCADE"), primary_key=True
    ),
)


organisation_succession = sa.Table(
    "organisation_succession",
    db.metadata,
    sa.Column(
        "predecessor_id",
        sa.ForeignKey("organisation.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "successor_id",
        sa.ForeignKey("organisation.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)


class Organisation(db.Model):
    """An office in the directory of recipients, valid between two dates."""

    __tablename__ = "organisation"
    __table_args__ = (sa.UniqueConstraint("province_code", "name", "valid_from"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))  # as addressed: "Sở Thông tin và …"
    province_code: Mapped[str] = mapped_column(sa.String(2), index=True)  # "01" … "96"
    province_name: Mapped[str] = mapped_column(sa.String(100))  # "Hà Nội"
    province_kind: Mapped[str] = mapped_column(sa.String(20))  # "tỉnh" / "thành phố"
    region: Mapped[str] = mapped_column(sa.String(100))
    email: Mapped[str] = mapped_column(sa.String(254))
    cc: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    email_is_placeholder: Mapped[bool] = mapped_column(default=False)
    agency_id: Mapped[str | None] = mapped_column(sa.String(13))  # mã định danh, e.g. 000.00.00.H29
    valid_from: Mapped[dt.date | None] = mapped_column(sa.Date)
    valid_to: Mapped[dt.date | None] = mapped_column(sa.Date)  # inclusive; None: still valid
    search_text: Mapped[str] = mapped_column(sa.String(400), default="")  # accent-folded
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    groups: Mapped[list[RecipientGroup]] = relationship(
        secondary=group_member, back_populates="members"
    )
    # The versions that took over from this one: one when a department was renamed or merged
    # into another, the same one for several predecessors when provinces merged.
    successors: Mapped[list[Organisation]] = relationship(
        secondary=organisation_succession,
        primaryjoin=lambda: Organisation.id == organisation_succession.c.predecessor_id,
        secondaryjoin=lambda: Organisation.id == organisation_succession.c.successor_id,
        back_populates="predecessors",
        order_by=lambda: Organisation.province_code,
    )
    predecessors: Mapped[list[Organisation]] = relationship(
        secondary=organisation_succession,
        primaryjoin=lambda: Organisation.id == organisation_succession.c.successor_id,
        secondaryjoin=lambda: Organisation.id == organisation_succession.c.predecessor_id,
        back_populates="successors",
        order_by=lambda: Organisation.province_code,
    )


class RecipientGroup(db.Model):
    """A named set of offices that a letter is usually sent to ("so-tttt-2021")."""

    __tablename__ = "recipient_group"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(50), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))

    members: Mapped[list[Organisation]] = relationship(
        secondary=group_member, back_populates="groups", order_by=Organisation.province_code
    )


class Dispatch(db.Model):
    """A letter and its sending: a draft, then an issued, frozen, numbered document."""

    __tablename__ = "dispatch"
    __table_args__ = (sa.UniqueConstraint("register", "register_year", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[DispatchStatus] = mapped_column(
        _enum(DispatchStatus), default=DispatchStatus.DRAFT, index=True
    )
    # The letter source (metadata, body and appendices as the clerk wrote them), see
    # dispatch.letters.source; frozen once issued.
    source: Mapped[dict] = mapped_column(sa.JSON)
    subject: Mapped[str] = mapped_column(sa.String(500))
    symbol: Mapped[str] = mapped_column(sa.String(30))
    register: Mapped[str] = mapped_column(sa.String(30))  # the issuing body's register, e.g. "THH"
    register_year: Mapped[int | None] = mapped_column()
    number: Mapped[int | None] = mapped_column()
    issued_on: Mapped[dt.date | None] = mapped_column(sa.Date)  # the date printed on the letter
    issued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("user_account.id"))
    issued_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("user_account.id"))
    group_id: Mapped[int | None] = mapped_column(sa.ForeignKey("recipient_group.id"))
    # A follow-up letter (công văn đôn đốc) names the dispatch whose late offices it chases.
    follow_up_of_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("dispatch.id", ondelete="SET NULL"), index=True
    )
    # The code of the public verification page (/xac-minh/<code>) that the letter's QR code
    # opens: random, so that the issued letters cannot be listed by counting.
    verification_code: Mapped[str] = mapped_column(
        sa.String(32), unique=True, default=new_verification_code
    )

    # Reminder policy (editable per dispatch until issued; defaults from Decree 30 practice).
    deadline_working_days: Mapped[int] = mapped_column(default=3)
    deadline_hour: Mapped[int] = mapped_column(default=17)
    reminder_hour: Mapped[int] = mapped_column(default=8)
    reminders_enabled: Mapped[bool] = mapped_column(default=True)
    deadline_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Issued as the electronic original: its PDF carries the leader's and the agency's digital
    # signatures (dispatch.drafting.approval, dispatch.issuing); False: issued unsigned.
    signed: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    escalated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    issued_by: Mapped[User | None] = relationship(foreign_keys=[issued_by_id])
    group: Mapped[RecipientGroup | None] = relationship()
    recipients: Mapped[list[DispatchRecipient]] = relationship(
        back_populates="dispatch", order_by="DispatchRecipient.id", cascade="all, delete-orphan"
    )
    documents: Mapped[list[Document]] = relationship(
        back_populates="dispatch", order_by="Document.id"
    )

    @property
    def number_and_symbol(self) -> str | None:
        """'01/THH-VP' once issued."""
        return None if self.number is None else f"{self.number:02d}/{self.symbol}"


class DispatchRecipient(db.Model):
    """One office that a dispatch goes to, with a snapshot of its address and its receipt."""

    __tablename__ = "dispatch_recipient"
    __table_args__ = (sa.UniqueConstraint("dispatch_id", "organisation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dispatch_id: Mapped[int] = mapped_column(
        sa.ForeignKey("dispatch.id", ondelete="CASCADE"), index=True
    )
    organisation_id: Mapped[int] = mapped_column(sa.ForeignKey("organisation.id"))
    # Snapshot at issue time: the directory may change later, the record of what was sent may not.
    name: Mapped[str] = mapped_column(sa.String(200))
    province_code: Mapped[str] = mapped_column(sa.String(2))
    email: Mapped[str] = mapped_column(sa.String(254))
    cc: Mapped[list[str]] = mapped_column(sa.JSON, default=list)

    # The confirmation link: token = HMAC(SECRET_KEY, id + salt); only its SHA-256 is stored.
    token_salt: Mapped[str | None] = mapped_column(sa.String(32))
    token_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)

    opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(sa.String(100))
    acknowledged_position: Mapped[str | None] = mapped_column(sa.String(100))
    acknowledgement_note: Mapped[str | None] = mapped_column(sa.Text)
    acknowledged_ip: Mapped[str | None] = mapped_column(sa.String(45))
    acknowledged_user_agent: Mapped[str | None] = mapped_column(sa.String(300))
    acknowledged_method: Mapped[AcknowledgementMethod | None] = mapped_column(
        _enum(AcknowledgementMethod)
    )
    reminders_stopped: Mapped[bool] = mapped_column(default=False)
    overdue_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # The address bounced after the first server accepted it (dispatch.inbound): the status
    # code, the reporting server's diagnostic and name, and which address. Cleared when a clerk
    # corrects the address or resends; the inbound message and the audit log keep the history.
    bounced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    bounced_address: Mapped[str | None] = mapped_column(sa.String(254))
    bounce_status: Mapped[str | None] = mapped_column(sa.String(20))  # "5.1.1"
    bounce_diagnostic: Mapped[str | None] = mapped_column(sa.Text)  # "smtp; 550 5.1.1 …"
    bounce_reporter: Mapped[str | None] = mapped_column(sa.String(255))  # "dns; mx.example"
    # The office's own system refused the letter (edXML status 02), with its reason.
    refused_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    refused_by: Mapped[str | None] = mapped_column(sa.String(100))
    refusal_reason: Mapped[str | None] = mapped_column(sa.Text)
    # How far the office's handling has got (edXML status 04 assigned, 05 in progress, 06 done).
    processing_state: Mapped[str | None] = mapped_column(sa.String(20))
    processing_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    dispatch: Mapped[Dispatch] = relationship(back_populates="recipients")
    organisation: Mapped[Organisation] = relationship()
    messages: Mapped[list[OutboxMessage]] = relationship(
        back_populates="recipient", order_by="OutboxMessage.id"
    )


class OutboxMessage(db.Model):
    """An e-mail to send: written in the transaction that decides it, sent after the commit."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        # One letter, one reminder per working day, one escalation: enforced here.
        sa.UniqueConstraint("dispatch_id", "recipient_key", "kind", "sequence"),
        sa.Index("ix_outbox_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dispatch_id: Mapped[int] = mapped_column(
        sa.ForeignKey("dispatch.id", ondelete="CASCADE"), index=True
    )
    recipient_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("dispatch_recipient.id", ondelete="CASCADE"), index=True
    )
    # recipient_id, or 0 for a message with no single recipient (escalation), so that the
    # unique constraint also holds where recipient_id is NULL.
    recipient_key: Mapped[int] = mapped_column(default=0)
    kind: Mapped[MessageKind] = mapped_column(_enum(MessageKind))
    sequence: Mapped[int] = mapped_column(default=0)  # the resend count or reminder's working day
    to_addrs: Mapped[list[str]] = mapped_column(sa.JSON)
    cc_addrs: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    message_id: Mapped[str] = mapped_column(sa.String(255), unique=True)  # stable across retries
    # The opaque, unguessable id of this e-mail's own envelope sender (VERP,
    # ``bounces+<token>@domain``, see dispatch.mail.verp): a bounce names its row without parsing.
    bounce_token: Mapped[str | None] = mapped_column(sa.String(40), unique=True)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus), default=DeliveryStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(100))
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    smtp_reply: Mapped[str | None] = mapped_column(sa.Text)  # the server's last answer
    # The exact bytes the server accepted: their SHA-256 (audited too) and where they are kept,
    # relative to DISPATCH_DATA_DIR (``dispatch.archive.sent_message_path``).
    sent_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    sent_path: Mapped[str | None] = mapped_column(sa.String(500))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    dispatch: Mapped[Dispatch] = relationship()
    recipient: Mapped[DispatchRecipient | None] = relationship(back_populates="messages")


class Document(db.Model):
    """An archived file of an issued dispatch: the exact bytes sent, with their SHA-256."""

    __tablename__ = "document"
    __table_args__ = (sa.UniqueConstraint("dispatch_id", "filename"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dispatch_id: Mapped[int] = mapped_column(
        sa.ForeignKey("dispatch.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(sa.String(20))  # "pdf", "docx", "attachment"
    filename: Mapped[str] = mapped_column(sa.String(200))  # as attached to the e-mail
    media_type: Mapped[str] = mapped_column(sa.String(100))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column()
    path: Mapped[str] = mapped_column(sa.String(500))  # relative to DISPATCH_DATA_DIR
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    dispatch: Mapped[Dispatch] = relationship(back_populates="documents")


class RegisterCounter(db.Model):
    """The last number taken in a register (sổ đăng ký văn bản đi) in a year."""

    __tablename__ = "register_counter"

    register: Mapped[str] = mapped_column(sa.String(30), primary_key=True)
    year: Mapped[int] = mapped_column(primary_key=True)
    last_number: Mapped[int] = mapped_column(default=0)


class RecipientEvent(db.Model):
    """Something a recipient did through its link: opened the page, downloaded a file."""

    __tablename__ = "recipient_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    recipient_id: Mapped[int] = mapped_column(
        sa.ForeignKey("dispatch_recipient.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(sa.String(20))  # "opened", "downloaded"
    detail: Mapped[str | None] = mapped_column(sa.String(200))  # e.g. the file downloaded
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    user_agent: Mapped[str | None] = mapped_column(sa.String(300))


class AuditEntry(db.Model):
    """Who changed what, when; append-only, each row chained to the previous one of its lane by
    its hash, and keyed (``mac``) with a key kept outside the database (see dispatch.audit)."""

    __tablename__ = "audit_entry"
    __table_args__ = (sa.Index("ix_audit_entry_lane_id", "lane", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(sa.String(254))  # a user's e-mail, or "system"
    action: Mapped[str] = mapped_column(sa.String(50))  # "dispatch.issued", "message.sent", …
    object_type: Mapped[str] = mapped_column(sa.String(50))
    object_id: Mapped[str | None] = mapped_column(sa.String(50))
    dispatch_id: Mapped[int | None] = mapped_column(index=True)
    details: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(sa.String(64), default="")
    hash: Mapped[str] = mapped_column(sa.String(64), default="")
    lane: Mapped[int] = mapped_column(default=0, server_default="0")
    mac: Mapped[str] = mapped_column(sa.String(64), default="", server_default="")


class AuditLane(db.Model):
    """Where one lane of the audit log ends: the hash of its last entry. An append locks this row
    for the rest of its transaction as it reads the end, and moves it in the statement that
    inserts the entry (see dispatch.audit). A cache of ``audit_entry``: verification never
    trusts it."""

    __tablename__ = "audit_lane"

    lane: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(sa.String(64), default="", server_default="")


class SchedulerHeartbeat(db.Model):
    """The scheduler's last sign of life, shown to admins."""

    __tablename__ = "scheduler_heartbeat"

    name: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(100))
    pid: Mapped[int] = mapped_column()
    beat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_job: Mapped[str | None] = mapped_column(sa.String(100))


class InboundKind(StrEnum):
    """What an inbound e-mail (or edXML status) turned out to be."""

    BOUNCE = "bounce"  # a delivery status notification: the message could not be delivered
    DELAY = "delay"  # a DSN: delivery is delayed, still being tried
    DELIVERED = "delivered"  # a DSN: delivered or relayed (asked for or not)
    AUTO_REPLY = "auto_reply"  # RFC 3834 automatic reply, out-of-office: never a confirmation
    REPLY = "reply"  # a person's reply
    EDXML_STATUS = "edxml_status"  # an edXML status message (dispatch.edxml)


class InboundMessage(db.Model):
    """One message received (an e-mail through IMAP, the SMTP listener or a file, or an edXML
    status), kept as received in the archive and classified once.

    Unique by the SHA-256 of its bytes: a message handed over twice (a poller killed before it
    filed the message, a relay that retries) is handled once. One with no recipient found is
    kept and listed for an admin, never dropped.
    """

    __tablename__ = "inbound_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    door: Mapped[str] = mapped_column(sa.String(10))  # "imap", "smtp", "file", "api"
    sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    size: Mapped[int] = mapped_column()
    archive_path: Mapped[str] = mapped_column(sa.String(500))  # relative to DISPATCH_DATA_DIR
    envelope_from: Mapped[str | None] = mapped_column(sa.String(254))
    envelope_to: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    header_message_id: Mapped[str | None] = mapped_column(sa.String(500))
    from_address: Mapped[str | None] = mapped_column(sa.String(254))
    from_name: Mapped[str | None] = mapped_column(sa.String(200))
    subject: Mapped[str | None] = mapped_column(sa.String(500))
    kind: Mapped[InboundKind] = mapped_column(_enum(InboundKind), index=True)
    # How it was tied to what we sent ("verp", "in-reply-to", "references", "dsn-headers",
    # "edxml"); None: not tied to anything (listed for an admin).
    matched_by: Mapped[str | None] = mapped_column(sa.String(20))
    outbox_message_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("outbox_message.id", ondelete="SET NULL"), index=True
    )
    recipient_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("dispatch_recipient.id", ondelete="SET NULL"), index=True
    )
    dispatch_id: Mapped[int | None] = mapped_column(index=True)
    # For a DSN: the status code, the remote server's diagnostic, who reported it, for whom.
    dsn_status: Mapped[str | None] = mapped_column(sa.String(20))
    diagnostic: Mapped[str | None] = mapped_column(sa.Text)
    reporting_mta: Mapped[str | None] = mapped_column(sa.String(255))
    failed_recipient: Mapped[str | None] = mapped_column(sa.String(254))
    excerpt: Mapped[str | None] = mapped_column(sa.Text)  # the start of a reply's text
    details: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    # A reply a clerk marked as the office's confirmation of receipt.
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    confirmed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("user_account.id"))

    recipient: Mapped[DispatchRecipient | None] = relationship()
    confirmed_by: Mapped[User | None] = relationship()


class ImapCursor(db.Model):
    """How far the IMAP poller has read a mailbox: the last UID handled under a UIDVALIDITY.

    Written in the same transaction as the messages it covers, so a poller killed at any point
    resumes where the database says; a message handled but not yet counted here is recognised
    by its SHA-256 (``InboundMessage``) and not handled twice.
    """

    __tablename__ = "imap_cursor"

    mailbox: Mapped[str] = mapped_column(sa.String(300), primary_key=True)  # user@host/INBOX
    uidvalidity: Mapped[int] = mapped_column(sa.BigInteger)
    last_uid: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class AmendmentKind(StrEnum):
    """How an issued letter is corrected: never edited, recalled or replaced by a new one."""

    RECALL = "recall"  # thu hồi
    REPLACE = "replace"  # thay thế


class AmendmentStatus(StrEnum):
    """Where a request to recall or replace stands."""

    REQUESTED = "requested"  # by a clerk, waiting for a leader
    APPROVED = "approved"  # by a leader: the recall letter or the replacement is issued
    REJECTED = "rejected"  # by a leader


class DispatchAmendment(db.Model):
    """A clerk's request, and a leader's decision, to recall or replace an issued dispatch.

    ``new_id`` is the recall letter (made when approved) or the replacement (a draft the clerk
    prepared). Nothing of the original is edited: it only becomes ``recalled``/``replaced``.
    """

    __tablename__ = "dispatch_amendment"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[AmendmentKind] = mapped_column(_enum(AmendmentKind))
    status: Mapped[AmendmentStatus] = mapped_column(_enum(AmendmentStatus), index=True)
    original_id: Mapped[int] = mapped_column(sa.ForeignKey("dispatch.id"), index=True)
    new_id: Mapped[int | None] = mapped_column(sa.ForeignKey("dispatch.id"), index=True)
    reason: Mapped[str] = mapped_column(sa.Text)
    requested_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("user_account.id"))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("user_account.id"))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str | None] = mapped_column(sa.Text)

    original: Mapped[Dispatch] = relationship(foreign_keys=[original_id])
    new: Mapped[Dispatch | None] = relationship(foreign_keys=[new_id])
    requested_by: Mapped[User | None] = relationship(foreign_keys=[requested_by_id])
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])


class ApprovalStatus(StrEnum):
    """Where one submission of a draft for signature (trình ký) stands."""

    SUBMITTED = "submitted"  # by a clerk, waiting for the leader it is addressed to
    RETURNED = "returned"  # trả lại: the leader sent it back with a comment
    APPROVED = "approved"  # ký duyệt: the leader signed the rendered letter
    WITHDRAWN = "withdrawn"  # the clerk took it back (to edit): the submission or signature is void


class DispatchApproval(db.Model):
    """One submission of a draft to a leader for signature, and what became of it.

    A draft has at most one open submission (``submitted`` or ``approved``) at a time; while it
    has one its letter cannot be edited. The rows are the history: each submission, the leader's
    decision (who, when, the comment when returned) and a withdrawal (who, when). The PDF
    submitted (the letter rendered once, at submission, number and date still blank) is kept in
    the archive: ``submitted_pdf_path`` relative to DISPATCH_DATA_DIR, its
    ``submitted_pdf_sha256``; the leader reads exactly those bytes and signs exactly them. The
    approved PDF (those bytes plus the leader's signature, an incremental update) is kept beside
    it: ``pdf_path``, its ``pdf_sha256``.
    """

    __tablename__ = "dispatch_approval"

    id: Mapped[int] = mapped_column(primary_key=True)
    dispatch_id: Mapped[int] = mapped_column(
        sa.ForeignKey("dispatch.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[ApprovalStatus] = mapped_column(_enum(ApprovalStatus), index=True)
    leader_id: Mapped[int] = mapped_column(sa.ForeignKey("user_account.id"), index=True)
    submitted_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("user_account.id"))
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    comment: Mapped[str | None] = mapped_column(sa.Text)  # the leader's, when returned
    withdrawn_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("user_account.id"))
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    certificate: Mapped[str | None] = mapped_column(sa.String(500))  # the signer's subject
    submitted_pdf_path: Mapped[str | None] = mapped_column(sa.String(500))
    submitted_pdf_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    submitted_pdf_size: Mapped[int | None] = mapped_column()
    pdf_path: Mapped[str | None] = mapped_column(sa.String(500))
    pdf_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    pdf_size: Mapped[int | None] = mapped_column()

    dispatch: Mapped[Dispatch] = relationship()
    leader: Mapped[User] = relationship(foreign_keys=[leader_id])
    submitted_by: Mapped[User | None] = relationship(foreign_keys=[submitted_by_id])
    withdrawn_by: Mapped[User | None] = relationship(foreign_keys=[withdrawn_by_id])
