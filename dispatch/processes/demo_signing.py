"""The DEMO signing set-up of ``make run`` (``dispatch dev``): keys, images and signed samples.

So that the development server shows what the product is for, a signed electronic original,
``dispatch dev`` makes once, under ``instance/demo-pki/``, a demo public-key infrastructure
(``dispatch.signing.demo``): a root CA, the agency's key and the demo leader's key as PKCS#12
files, the seal and the leader's handwritten-signature image (``dispatch.signing.demo`` too),
their password and a README. Later starts reuse the folder.

With it the dev server sets ``DISPATCH_AGENCY_KEY`` and friends for its children
(``DemoPki.environment``), and ``dispatch seed --demo-pki FOLDER`` (``seed_signed_letters``)
gives the demo leader their key and signature image, takes the seed letter through the real
workflow (submit, approve, issue, at fixed November 2021 moments) and leaves a second draft
waiting in the leader's "Chờ ký duyệt" list.

Everything here says DEMO: the certificates (``CN=… (DEMO)``, ``OU=DEMO – không dùng cho văn
bản thật``), the files, the README. Its keys must never sign a real letter, so the samples are
signed only when the agency key configured is this folder's own; an operator's key
(``DISPATCH_AGENCY_KEY`` set before ``make run``) is used as it is and never for the samples.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

FOLDER_NAME = "demo-pki"
ROOT_FILE = "DEMO-root-ca.pem"
AGENCY_FILE = "DEMO-agency.p12"
LEADER_FILE = "DEMO-leader.p12"
SEAL_FILE = "DEMO-seal.png"
SIGNATURE_FILE = "DEMO-leader-signature.png"
PASSWORD_FILE = "DEMO-password"
README_FILE = "README.txt"
FILES = (ROOT_FILE, AGENCY_FILE, LEADER_FILE, SEAL_FILE, SIGNATURE_FILE, PASSWORD_FILE, README_FILE)
# The variable holding the demo leader's key password (its name is stored on the user, as
# ``dispatch users signing-key --password-env`` does; the value only ever in the environment).
LEADER_PASSWORD_ENV = "DISPATCH_DEMO_KEY_PASSWORD"


def _vn(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


# The sample data's moments (Vietnam time), in the week the seed letter was really issued.
KEY_SET_AT = _vn("2021-11-12T07:30:00+07:00")
LETTER_CREATED_AT = _vn("2021-11-12T08:00:00+07:00")
SUBMITTED_AT = _vn("2021-11-12T09:00:00+07:00")
APPROVED_AT = _vn("2021-11-15T08:30:00+07:00")
ISSUED_AT = _vn("2021-11-15T09:00:00+07:00")
WAITING_CREATED_AT = _vn("2021-11-22T08:00:00+07:00")
WAITING_SUBMITTED_AT = _vn("2021-11-22T09:00:00+07:00")

README = """\
DEMO - KHÔNG DÙNG THẬT / DEMO ONLY - NEVER USE FOR A REAL LETTER

Thư mục này do `make run` (dispatch dev) tạo để trình diễn văn bản điện tử có chữ ký số:
  {root}  chứng thư gốc (CA) DEMO, chỉ để kiểm tra các chữ ký dưới đây
  {agency}  khoá và chứng thư DEMO của cơ quan ban hành (PKCS#12)
  {leader}  khoá và chứng thư DEMO của lãnh đạo ký duyệt (PKCS#12)
  {seal}  con dấu DEMO (PNG nền trong suốt)
  {signature}  ảnh chữ ký DEMO của lãnh đạo (PNG nền trong suốt)
  {password}  mật khẩu của hai tệp PKCS#12 (chỉ dùng cho trình diễn)

Không ai ngoài máy này tin các chứng thư DEMO. Không bao giờ dùng chúng để ký một văn bản thật:
khoá thật của cơ quan do tổ chức cung cấp dịch vụ chứng thực cấp, đặt bằng DISPATCH_AGENCY_KEY
và DISPATCH_AGENCY_KEY_PASSWORD (xem README.md, mục “Signatures and verification”).
Xoá thư mục này (cùng cơ sở dữ liệu của instance/) để `make run` tạo bộ khoá DEMO mới.

This folder was made by `make run` (dispatch dev) to demonstrate signed letters. Nobody trusts
its certificates; never sign a real letter with these keys.
"""


class DemoSigningError(RuntimeError):
    """The demo samples cannot be signed; the message is Vietnamese."""


@dataclass(frozen=True)
class DemoPki:
    """The demo PKI kept in ``folder``: the files' paths and the PKCS#12 password."""

    folder: Path
    password: str = field(repr=False)
    created: bool = False  # made by this call (rather than found)

    @property
    def root(self) -> Path:
        return self.folder / ROOT_FILE

    @property
    def agency(self) -> Path:
        return self.folder / AGENCY_FILE

    @property
    def leader(self) -> Path:
        return self.folder / LEADER_FILE

    @property
    def seal(self) -> Path:
        return self.folder / SEAL_FILE

    @property
    def signature(self) -> Path:
        return self.folder / SIGNATURE_FILE

    def environment(self, *, trust_roots: bool = True) -> dict[str, str]:
        """The settings that make issuing sign with the demo agency's key and seal, the demo
        leader's password for approving, and (``trust_roots``) the demo root as trusted."""
        env = {
            "DISPATCH_AGENCY_KEY": str(self.agency),
            "DISPATCH_AGENCY_KEY_PASSWORD": self.password,
            "DISPATCH_AGENCY_SEAL": str(self.seal),
            LEADER_PASSWORD_ENV: self.password,
        }
        if trust_roots:
            env["DISPATCH_TRUST_ROOTS"] = str(self.root)
        return env


def open_demo_pki(folder: Path) -> DemoPki | None:
    """The demo PKI in ``folder`` when every one of its files is there, else None."""
    if not all((folder / name).is_file() for name in FILES):
        return None
    return DemoPki(folder, (folder / PASSWORD_FILE).read_text().strip())


def ensure_demo_pki(folder: Path) -> DemoPki:
    """The demo PKI in ``folder``, made now if it is not there yet (about a second: four RSA
    keys). It is built beside the folder and moved into place whole, so an interrupted start
    leaves no half-made PKI; an incomplete folder found there is moved aside, not deleted."""
    found = open_demo_pki(folder)
    if found is not None:
        return found
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from dispatch.signing.demo import make_pki, seal_png, signature_png

    folder.parent.mkdir(parents=True, exist_ok=True)
    building = folder.with_name(f"{folder.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    building.chmod(0o700)
    password = secrets.token_urlsafe(16)
    pki = make_pki(building / "work", token=False)
    for identity, name in ((pki.agency, AGENCY_FILE), (pki.leader, LEADER_FILE)):
        target = building / name
        target.write_bytes(
            pkcs12.serialize_key_and_certificates(
                identity.name.encode(),
                identity.key,
                identity.cert,
                [pki.root],
                serialization.BestAvailableEncryption(password.encode()),
            )
        )
        target.chmod(0o600)
    (building / ROOT_FILE).write_bytes(pki.root_pem.read_bytes())
    shutil.rmtree(building / "work")  # make_pki's own copies, under its fixed password
    (building / SEAL_FILE).write_bytes(seal_png())
    (building / SIGNATURE_FILE).write_bytes(signature_png())
    (building / PASSWORD_FILE).write_text(password + "\n")
    (building / PASSWORD_FILE).chmod(0o600)
    (building / README_FILE).write_text(
        README.format(
            root=ROOT_FILE,
            agency=AGENCY_FILE,
            leader=LEADER_FILE,
            seal=SEAL_FILE,
            signature=SIGNATURE_FILE,
            password=PASSWORD_FILE,
        )
    )
    if folder.exists():
        for n in itertools.count(1):
            aside = folder.with_name(f"{folder.name}.incomplete-{n}")
            if not aside.exists():
                folder.rename(aside)
                break
    building.rename(folder)
    return DemoPki(folder, password, created=True)


# --- the sample letters ----------------------------------------------------------------------


def _find_draft_of(folder: Path):
    """The dispatch made from the letter in ``folder`` (same symbol and subject), or None."""
    from sqlalchemy import select

    from dispatch.extensions import db
    from dispatch.letters.source import load_letter
    from dispatch.models import Dispatch

    letter = load_letter(folder)
    return db.session.execute(
        select(Dispatch)
        .where(Dispatch.symbol == letter.symbol, Dispatch.subject == letter.subject)
        .order_by(Dispatch.id)
        .limit(1)
    ).scalar_one_or_none()


def _leader_with_demo_key(pki: DemoPki, leader_email: str, out: list[str]):
    """The demo leader, given the demo key and signature image if they have no key yet; None
    (and why, in ``out``) when they have another key, which the samples must not use."""
    from dispatch.accounts.users import find_user
    from dispatch.signing.keys import SigningKeyError, set_signing_key
    from dispatch.transaction import unit_of_work

    leader = find_user(leader_email)
    if leader is None:
        raise DemoSigningError(f"Không có người dùng {leader_email} để ký duyệt mẫu.")
    if leader.signing_key == str(pki.leader):
        return leader
    if leader.signing_key:
        out.append(
            f"Lãnh đạo {leader.email} đã có khoá ký số khác: không ký văn bản mẫu bằng khoá đó."
        )
        return None
    try:
        with unit_of_work():
            subject = set_signing_key(
                leader,
                str(pki.leader),
                password_env=LEADER_PASSWORD_ENV,
                environ={LEADER_PASSWORD_ENV: pki.password},
                image=pki.signature.read_bytes(),
                actor="system",
                at=KEY_SET_AT,
            )
    except SigningKeyError as exc:
        raise DemoSigningError(f"Không gán được khoá DEMO cho {leader.email}: {exc}") from exc
    out.append(f"Lãnh đạo {leader.email}: đã gán khoá ký số DEMO ({subject}) và ảnh chữ ký DEMO.")
    return leader


def seed_signed_letters(
    pki: DemoPki,
    *,
    seed_letter: Path,
    waiting_letter: Path,
    group_code: str,
    clerk_email: str,
    leader_email: str,
) -> list[str]:
    """The signed sample data, through the real workflow; returns what it did (Vietnamese).

    1. the demo leader gets the demo key and signature image (unless they have a key already);
    2. the seed letter's draft (made by ``dispatch seed``) is submitted by the demo clerk,
       approved by the demo leader and issued with the agency's demo key and seal;
    3. the letter in ``waiting_letter`` becomes a draft submitted to the demo leader, waiting.

    Idempotent: a step already done is left as it is. Refused unless the agency key configured
    is this demo PKI's own: a real key never signs a sample.
    """
    from flask import current_app

    from dispatch import issuing
    from dispatch.accounts.users import find_user
    from dispatch.drafting import approval, drafts
    from dispatch.models import ApprovalStatus, DispatchStatus
    from dispatch.transaction import unit_of_work

    if current_app.config.get("DISPATCH_AGENCY_KEY") != str(pki.agency):
        raise DemoSigningError(
            "Chỉ ký văn bản mẫu bằng khoá DEMO: DISPATCH_AGENCY_KEY phải là "
            f"{pki.agency} (đang là {current_app.config.get('DISPATCH_AGENCY_KEY') or 'trống'})."
        )
    out: list[str] = []
    leader = _leader_with_demo_key(pki, leader_email, out)
    if leader is None:
        return out
    clerk = find_user(clerk_email)
    if clerk is None:
        raise DemoSigningError(f"Không có người dùng {clerk_email} để trình ký mẫu.")
    environ = {LEADER_PASSWORD_ENV: pki.password}

    seed = _find_draft_of(seed_letter)
    if seed is None:
        out.append("Công văn mẫu: chưa có bản nháp, bỏ qua ký số.")
    elif seed.status is not DispatchStatus.DRAFT:
        out.append(f"Công văn mẫu: đã ban hành (số {seed.number_and_symbol}).")
    else:
        seed_id = seed.id
        current = approval.open_approval(seed_id)
        if current is None:
            with unit_of_work():
                current = approval.submit(
                    seed_id, leader_email=leader.email, actor=clerk, at=SUBMITTED_AT
                )
        if current.status is ApprovalStatus.SUBMITTED:
            approval.approve(seed_id, actor=leader, at=APPROVED_AT, environ=environ)
        result = issuing.issue_dispatch(seed_id, actor=clerk, at=ISSUED_AT)
        out.append(
            f"Công văn mẫu: {leader.email} đã ký duyệt, cơ quan đã ký số và đóng dấu DEMO, ban "
            f"hành số {result.number_and_symbol} ngày {result.issued_on:%d/%m/%Y} "
            f"(mã {seed_id}, {result.recipients} nơi nhận)."
        )

    waiting = _find_draft_of(waiting_letter)
    if waiting is None:
        with unit_of_work():
            waiting = drafts.create_draft(
                waiting_letter, group_code=group_code, actor=clerk, at=WAITING_CREATED_AT
            )
    if waiting.status is DispatchStatus.DRAFT and approval.open_approval(waiting.id) is None:
        with unit_of_work():
            approval.submit(
                waiting.id, leader_email=leader.email, actor=clerk, at=WAITING_SUBMITTED_AT
            )
        out.append(
            f"Bản nháp mã {waiting.id} đã trình {leader.email} ký duyệt: đang chờ ở trang "
            "“Chờ ký duyệt”."
        )
    return out
