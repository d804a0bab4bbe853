"""``dispatch dev`` (``make run``): migrate, seed, run three children, stop them all; the DEMO
key set it makes once, and the seed letter it shows approved, sealed and verifiable."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from tests.fixtures.smtp import free_port

pytestmark = [pytest.mark.nodb, pytest.mark.slow]

DISPATCH = str(Path(sys.executable).with_name("dispatch"))
WAIT = 120.0  # start-up imports WeasyPrint and friends: slow on a busy machine
DEMO_FILES = (
    "DEMO-root-ca.pem",
    "DEMO-agency.p12",
    "DEMO-leader.p12",
    "DEMO-seal.png",
    "DEMO-leader-signature.png",
    "DEMO-password",
    "README.txt",
)


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process (zombies excluded)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (in parentheses) may hold spaces: split after its closing ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        state, ppid, pgrp = fields[0], int(fields[1]), int(fields[2])
        if state != "Z":
            table[int(entry.name)] = (ppid, pgrp)
    return table


def descendants(pid: int) -> set[int]:
    table = process_table()
    found, frontier = set(), {pid}
    while frontier:
        children = {p for p, (ppid, _) in table.items() if ppid in frontier}
        frontier = children - found
        found |= children
    return found


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status
    except OSError:
        return None


def smtp_accepts(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
            return client.noop()[0] == 250
    except OSError:
        return False


def sign_in_and_list(port: int, email: str, password: str) -> tuple[str, str, str]:
    """Sign in through /login like a browser (cookie jar, CSRF token from the form); returns
    the login page, the address signed in to and the page it shows."""
    return sign_in(port, email, password)[1:]


def sign_in(port: int, email: str, password: str):
    """``sign_in_and_list``, with the signed-in opener first (for the pages after)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    base = f"http://127.0.0.1:{port}"
    with opener.open(f"{base}/login", timeout=30) as response:
        assert response.status == 200
        login_page = response.read().decode("utf-8")
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login_page)
    assert match, "no CSRF token on the sign-in page"
    form = {"csrf_token": match.group(1), "email": email, "password": password}
    data = urllib.parse.urlencode(form).encode()
    with opener.open(f"{base}/login", data=data, timeout=30) as response:
        return opener, login_page, response.url, response.read().decode("utf-8")


def fetch(opener, url: str) -> tuple[int, bytes]:
    with opener.open(url, timeout=30) as response:
        return response.status, response.read()


def dev_app(instance: Path):
    """An app on the dev server's own database and archive, trusting its DEMO root."""
    from dispatch import create_app

    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'dispatch.db'}",
            "DISPATCH_DATA_DIR": str(instance / "data"),
            "DISPATCH_TRUST_ROOTS": str(instance / "demo-pki" / "DEMO-root-ca.pem"),
            "SECRET_KEY": "test-secret",
            "DISPATCH_AUDIT_KEY": "test-audit-key",
        }
    )


def wait_for(predicate, what: str, process: subprocess.Popen, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"dispatch dev exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture()
def dev_env(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAIL_", "DATABASE_URL", "BASE_URL", "DISPATCH_", "FLASK_"))
    }
    instance = tmp_path / "instance"
    env.update(DISPATCH_INSTANCE_PATH=str(instance), PYTHONUNBUFFERED="1")
    return env


def start_dev(env: dict[str, str], log: Path, web: int, sink: int) -> subprocess.Popen:
    with log.open("wb") as output:
        return subprocess.Popen(
            [DISPATCH, "dev", "--port", str(web), "--smtp-port", str(sink)],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_everything(process: subprocess.Popen, pids: set[int]) -> None:
    for pid in pids | {process.pid}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    process.wait(WAIT)


def test_dev_runs_the_stack_and_ctrl_c_stops_every_child(dev_env, tmp_path):
    web, sink = free_port(), free_port()
    log = tmp_path / "dev.log"
    process = start_dev(dev_env, log, web, sink)
    children: set[int] = set()
    try:
        wait_for(lambda: healthz(web) == 200, "/healthz to answer 200", process)
        wait_for(lambda: smtp_accepts(sink), "the SMTP sink to accept", process)
        wait_for(lambda: "Nhấn Ctrl-C để dừng" in log.read_text(), "the banner", process)
        # The printed demo account signs in: the seed letter is issued, signed, 63 recipients.
        printed = re.search(r"mật khẩu chung, nếu chưa đổi: (\S+)\)", log.read_text())
        assert printed, log.read_text()
        clerk, login_page, landed, home = sign_in(web, "chuyenvien@thh.example", printed[1])
        assert "Đăng nhập" in login_page
        assert landed == f"http://127.0.0.1:{web}/"
        assert "Chuyên viên Văn phòng Cục" in home  # signed in as the demo clerk
        rows = re.findall(r'<tr data-dispatch-id="(\d+)">(.*?)</tr>', home, re.S)
        issued = [(i, row) for i, row in rows if "01/THH-VP" in row]
        assert len(issued) == 1, home
        seed_id, seed_row = issued[0]
        assert "tổ chức hướng dẫn và truyền thông về ứng dụng PC-Covid" in seed_row
        assert "15/11/2021" in seed_row
        assert "/63" in seed_row  # confirmations counted over its 63 recipients
        waiting_rows = [row for _, row in rows if "báo cáo kết quả triển khai" in row]
        assert len(waiting_rows) == 1 and "Chưa cấp số" in waiting_rows[0], home

        # Its page links the archived PDF: the signed original, as the e-mails carry it.
        status, page = fetch(clerk, f"http://127.0.0.1:{web}/dispatches/{seed_id}")
        assert status == 200
        link = re.search(r'href="([^"]+)">CV-01-THH-VP-2021-11-15\.pdf<', page.decode())
        assert link, page.decode()
        status, served_pdf = fetch(clerk, f"http://127.0.0.1:{web}{link[1]}")
        assert status == 200 and served_pdf.startswith(b"%PDF")

        # The public verification page of the letter (the QR code's target) names its number.
        instance = Path(dev_env["DISPATCH_INSTANCE_PATH"])
        app = dev_app(instance)
        with app.app_context():
            from dispatch.extensions import db
            from dispatch.models import Dispatch

            code = db.session.get(Dispatch, int(seed_id)).verification_code
            db.session.remove()
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/xac-minh/{code}", timeout=30) as r:
            assert r.status == 200
            public = r.read().decode("utf-8")
        assert "Công văn số 01/THH-VP" in public and "15/11/2021" in public

        # The demo leader finds the second draft waiting for their signature.
        leader, *_ = sign_in(web, "lanhdao@thh.example", printed[1])
        status, waiting = fetch(leader, f"http://127.0.0.1:{web}/lanh-dao/trinh-ky/")
        assert status == 200
        assert "báo cáo kết quả triển khai ứng dụng PC-Covid" in waiting.decode()

        children = descendants(process.pid)
        assert len(children) >= 3  # web, scheduler, sink (and nothing they left behind)
        commands = " ".join(
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for pid in children
        )
        assert "flask --app wsgi run" in commands
        assert "dispatch scheduler" in commands
        assert "smtp-sink" in commands

        process.send_signal(signal.SIGINT)
        assert process.wait(WAIT) == 0
        alive = set(process_table())
        assert children & alive == set(), "a child outlived dispatch dev"
        groups = {pgrp for pid, (_, pgrp) in process_table().items()}
        assert children & groups == set(), "a grandchild outlived dispatch dev"
    finally:
        kill_everything(process, children)

    output = log.read_text()
    instance = Path(dev_env["DISPATCH_INSTANCE_PATH"])
    # The DEMO key set, labelled as such, said so on the banner.
    pki = instance / "demo-pki"
    made = {name: (pki / name).read_bytes() for name in DEMO_FILES}
    assert "DEMO" in (pki / "README.txt").read_text()
    assert f"Ký số: khoá, chứng thư và con dấu DEMO tại {pki}" in output
    assert "không bao giờ dùng ký văn bản thật" in output
    assert (pki / "DEMO-password").stat().st_mode & 0o077 == 0
    from cryptography import x509

    root = x509.load_pem_x509_certificate(made["DEMO-root-ca.pem"])
    assert "DEMO" in root.subject.rfc4514_string()

    # The served PDF is the archived original: both signatures intact, trusted against the
    # demo root, the leader's first; the register knows it.
    from dispatch.signing.verification import verify_file

    app = dev_app(instance)
    with app.app_context():
        result, passed, _ = verify_file(served_pdf, app.config)
    assert passed, result
    signatures = result["signatures"]
    assert [s["role"] for s in signatures] == ["signer", "agency"]
    assert all(s["intact"] and s["trusted"] for s in signatures), signatures
    # Signed by the demo leader's and the demo agency's keys.
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    secret = made["DEMO-password"].strip()
    for signature, name in zip(signatures, ("DEMO-leader.p12", "DEMO-agency.p12"), strict=True):
        cert = pkcs12.load_key_and_certificates(made[name], secret)[1]
        subject = cert.subject
        assert signature["name"] == subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert "DEMO" in subject.rfc4514_string()
    assert result["register"]["number"] == "01/THH-VP"
    assert result["register"]["date"] == "15/11/2021"

    # Migrated, seeded (the 63 offices, demo users), and said how to sign in.
    assert (instance / "dispatch.db").exists()
    assert "Running upgrade" in output
    assert "63 cơ quan" in output
    assert f"http://127.0.0.1:{web}" in output
    password = (instance / "demo-password").read_text().strip()
    assert f"mật khẩu chung, nếu chưa đổi: {password}" in output
    assert "chuyenvien@thh.example" in output
    assert "Đã dừng." in output

    # A second start keeps the data: no second seeding, the same accounts shown.
    log2 = tmp_path / "dev2.log"
    process = start_dev(dev_env, log2, web, sink)
    children = set()
    try:
        wait_for(lambda: "Nhấn Ctrl-C để dừng" in log2.read_text(), "the banner", process)
        children = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        kill_everything(process, children)
    second = log2.read_text()
    assert "dữ liệu mẫu" not in second
    assert f"mật khẩu chung, nếu chưa đổi: {password}" in second
    # The DEMO key set is made once: the second start uses the same files.
    assert "Đã tạo bộ khoá ký số DEMO" not in second
    assert f"con dấu DEMO tại {pki}" in second
    assert {name: (pki / name).read_bytes() for name in DEMO_FILES} == made


def test_dev_stops_everything_when_one_child_dies(dev_env, tmp_path):
    web, sink = free_port(), free_port()
    log = tmp_path / "dev.log"
    process = start_dev(dev_env, log, web, sink)
    children: set[int] = set()
    try:
        wait_for(lambda: "Nhấn Ctrl-C để dừng" in log.read_text(), "the banner", process)
        children = descendants(process.pid)
        table = process_table()
        scheduler = next(
            pid
            for pid in children
            if b"scheduler" in Path(f"/proc/{pid}/cmdline").read_bytes()
            and table.get(pid, (0, 0))[0] == process.pid
        )
        os.kill(scheduler, signal.SIGKILL)
        assert process.wait(WAIT) != 0
        assert children & set(process_table()) == set()
    finally:
        kill_everything(process, children)
    assert "Tiến trình 'scheduler' đã dừng" in log.read_text()


def test_dev_refuses_a_port_in_use(dev_env, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [DISPATCH, "dev", "--port", str(port), "--smtp-port", str(free_port())],
            env=dev_env,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
    assert result.returncode != 0
    assert f"cổng {port}" in result.stderr


def scratch_app(tmp_path, monkeypatch, **config):
    from dispatch import create_app

    monkeypatch.setenv("DISPATCH_INSTANCE_PATH", str(tmp_path / "instance"))
    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'unused.db'}",
            "SECRET_KEY": "test-secret",
            "DISPATCH_AUDIT_KEY": "test-audit-key",
            **config,
        }
    )


def test_an_operator_key_is_used_as_it_is_and_no_demo_key_is_made(tmp_path, monkeypatch):
    from dispatch.processes.devserver import signing_setup

    real = str(tmp_path / "agency.p12")
    app = scratch_app(tmp_path, monkeypatch, DISPATCH_AGENCY_KEY=real)
    signing = signing_setup(app)
    assert signing.pki is None
    assert signing.env == {}  # the children inherit the operator's own settings
    assert "DISPATCH_AGENCY_KEY" in signing.banner[0] and "không tạo khoá DEMO" in signing.banner[0]
    assert not (tmp_path / "instance" / "demo-pki").exists()


def test_the_demo_key_set_is_made_whole_and_the_samples_refuse_another_key(tmp_path, monkeypatch):
    from dispatch.processes import demo_signing
    from dispatch.processes.devserver import signing_setup

    folder = tmp_path / "instance" / "demo-pki"
    folder.mkdir(parents=True)
    (folder / "DEMO-root-ca.pem").write_text("left by an interrupted start")
    app = scratch_app(tmp_path, monkeypatch)
    signing = signing_setup(app)
    # The incomplete folder is kept aside, a whole new set is in place.
    assert (tmp_path / "instance" / "demo-pki.incomplete-1" / "DEMO-root-ca.pem").exists()
    assert signing.pki is not None and signing.pki.created
    assert all((folder / name).is_file() for name in DEMO_FILES)
    assert signing.env["DISPATCH_AGENCY_KEY"] == str(folder / "DEMO-agency.p12")
    assert signing.env["DISPATCH_AGENCY_SEAL"] == str(folder / "DEMO-seal.png")
    assert signing.env["DISPATCH_TRUST_ROOTS"] == str(folder / "DEMO-root-ca.pem")
    assert signing.env["DISPATCH_AGENCY_KEY_PASSWORD"] == signing.pki.password
    assert any("DISPATCH_TSA_URL" in line for line in signing.banner)
    # The seal is pure red on a transparent background, 38 mm across at its dpi (its real size).
    from PIL import Image

    seal = Image.open(folder / "DEMO-seal.png")
    assert seal.mode == "RGBA"
    assert [colour for _, colour in seal.convert("RGB").getcolors()] == [(255, 0, 0)]
    assert seal.getchannel("A").getextrema() == (0, 255)
    assert abs(seal.width / seal.info["dpi"][0] * 2.54 - 3.8) < 0.05
    # Found again, not made again.
    again = demo_signing.ensure_demo_pki(folder)
    assert not again.created and again.password == signing.pki.password

    # A key that is not the demo folder's own never signs a sample.
    other = scratch_app(tmp_path, monkeypatch, DISPATCH_AGENCY_KEY=str(tmp_path / "real.p12"))
    with other.app_context(), pytest.raises(demo_signing.DemoSigningError, match="khoá DEMO"):
        demo_signing.seed_signed_letters(
            again,
            seed_letter=Path("official_letters/pc-covid-2021"),
            waiting_letter=Path("official_letters/demo-bao-cao-pc-covid"),
            group_code="so-tttt-2021",
            clerk_email="chuyenvien@thh.example",
            leader_email="lanhdao@thh.example",
        )
