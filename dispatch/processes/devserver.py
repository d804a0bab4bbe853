"""``make run`` / ``dispatch dev``: the whole product on one machine, with nothing configured.

On the embedded defaults (SQLite in the instance folder, the built-in SMTP sink) it does what a
deployment does, in order: migrate the database (the deploy step, never inside ``create_app``),
seed it when it is empty, then start three child processes, each with one role:

* the web app (``flask --app wsgi run``),
* the scheduler (``dispatch scheduler``),
* the SMTP sink (``dispatch smtp-sink``), which keeps every e-mail as an ``.eml`` file.

Unless the operator configured the agency's key (``DISPATCH_AGENCY_KEY``), letters are signed
with a DEMO key set made once under ``instance/demo-pki/`` (``processes.demo_signing``), and
the sample data shows the seed letter approved by the demo leader and issued with the DEMO seal.

Ctrl-C or SIGTERM stops all three. If one of them dies, the others are stopped and ``dispatch
dev`` exits non-zero, so a broken piece is never hidden behind a running one. Each child runs in
a process group of its own, which is signalled as a whole, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from dispatch.config import PROJECT_ROOT
from dispatch.extensions import db
from dispatch.processes import demo_signing

STOP_TIMEOUT = 10.0  # seconds a child is given to exit after SIGTERM, before SIGKILL
READY_TIMEOUT = 120.0  # seconds to wait for the web app and the sink to accept connections


class DevError(RuntimeError):
    """The development stack cannot start (a port is taken, a command is missing)."""


@dataclass
class Child:
    """A child process of the development stack."""

    name: str
    argv: list[str]
    process: subprocess.Popen | None = None


def dispatch_executable() -> list[str]:
    """How to run the ``dispatch`` command: the script beside this Python, or the one on PATH."""
    beside = Path(sys.executable).with_name("dispatch")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("dispatch")
    if found:
        return [found]
    raise DevError("không tìm thấy lệnh 'dispatch' (hãy chạy 'make install')")


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port yet."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def migrate_database(app: Flask) -> None:
    """Bring the database to the head migration (the deploy step of this one-machine mode)."""
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()
        db.engine.dispose()


def database_is_empty(app: Flask) -> bool:
    """True when there is neither a user nor an office in the directory."""
    from dispatch.models import Organisation, User

    with app.app_context():
        users = db.session.execute(select(func.count(User.id))).scalar_one()
        offices = db.session.execute(select(func.count(Organisation.id))).scalar_one()
        db.session.remove()
        db.engine.dispose()
    return users == 0 and offices == 0


def seed_database(env: dict[str, str], demo_pki: Path | None = None) -> str:
    """Run ``dispatch seed`` (directory, group, demo accounts; with ``demo_pki`` the signed
    samples too); returns what it printed."""
    extra = ["--demo-pki", str(demo_pki)] if demo_pki is not None else []
    result = subprocess.run(
        [*dispatch_executable(), "seed", *extra],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DevError(f"'dispatch seed' thất bại:\n{result.stdout}{result.stderr}")
    return result.stdout


def demo_password(instance_path: Path, *, create: bool) -> str | None:
    """The demo accounts' password: DISPATCH_DEMO_PASSWORD, or the one kept in the instance
    folder by the seeding run of ``make run`` (made up when ``create``), so each start shows it."""
    configured = os.environ.get("DISPATCH_DEMO_PASSWORD")
    if configured:
        return configured
    path = instance_path / "demo-password"
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    password = secrets.token_urlsafe(12)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


@dataclass
class Signing:
    """How the stack signs: the variables the children get, the demo PKI (None when the
    operator configured the agency's key), and what the banner says about it."""

    env: dict[str, str]
    pki: demo_signing.DemoPki | None
    banner: list[str]


def signing_setup(app: Flask) -> Signing:
    """The operator's agency key when configured; otherwise the DEMO PKI under the instance
    folder (made on the first start, reused later) and its settings for the children."""
    config = app.config
    if config.get("DISPATCH_AGENCY_KEY"):
        return Signing(
            {},
            None,
            [
                "Ký số: dùng khoá của cơ quan đã cấu hình (DISPATCH_AGENCY_KEY), không tạo khoá "
                "DEMO; văn bản mẫu không được ký."
            ],
        )
    folder = Path(app.instance_path) / demo_signing.FOLDER_NAME
    pki = demo_signing.ensure_demo_pki(folder)
    if pki.created:
        print(f"Đã tạo bộ khoá ký số DEMO tại {folder}", flush=True)
    own_roots = bool(config.get("DISPATCH_TRUST_ROOTS"))
    banner = [
        f"Ký số: khoá, chứng thư và con dấu DEMO tại {folder}",
        "  (chỉ để trình diễn, không ai tin các chứng thư này: không bao giờ dùng ký văn bản thật)",
    ]
    if own_roots:
        banner.append(
            "  DISPATCH_TRUST_ROOTS đã được đặt: giữ nguyên, chứng thư DEMO sẽ không được tin cậy."
        )
    if config.get("DISPATCH_TSA_URL"):
        banner.append(f"  Dấu thời gian: {config['DISPATCH_TSA_URL']} (DISPATCH_TSA_URL).")
    else:
        banner.append(
            "  Dấu thời gian: không có (chưa đặt DISPATCH_TSA_URL), chữ ký ở mức PAdES B-B."
        )
    return Signing(pki.environment(trust_roots=not own_roots), pki, banner)


def demo_accounts(app: Flask) -> list[tuple[str, str]]:
    """(e-mail, role label) of the demo users present in the database."""
    from dispatch.accounts.users import DEMO_USERS, ROLE_LABELS
    from dispatch.models import User

    emails = [email for email, _, _ in DEMO_USERS]
    with app.app_context():
        present = {
            user.email: ROLE_LABELS.get(user.role, str(user.role))
            for user in db.session.execute(select(User).where(User.email.in_(emails))).scalars()
        }
        db.session.remove()
    return [(email, present[email]) for email in emails if email in present]


def child_environment(app: Flask, host: str, port: int, smtp_port: int) -> dict[str, str]:
    """The environment of the children: this app's instance, the sink as the mail server."""
    env = dict(os.environ)
    env.update(
        {
            "DISPATCH_INSTANCE_PATH": app.instance_path,
            "BASE_URL": f"http://{host}:{port}",
            # Never real mail from a developer's machine: everything goes to the sink.
            "MAIL_SERVER": host,
            "MAIL_PORT": str(smtp_port),
            "MAIL_USE_TLS": "0",
            "MAIL_USE_SSL": "0",
            "MAIL_USERNAME": "",
            "MAIL_PASSWORD": "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("FLASK_DEBUG", None)  # the reloader would start a second web process
    return env


def children(host: str, port: int, smtp_port: int, mail_folder: Path) -> list[Child]:
    """The three processes of the stack, the sink first (the scheduler sends to it)."""
    dispatch = dispatch_executable()
    return [
        Child(
            "smtp-sink",
            [
                *dispatch,
                "smtp-sink",
                "--host",
                host,
                "--port",
                str(smtp_port),
                "--dir",
                str(mail_folder),
            ],
        ),
        Child(
            "web",
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "wsgi",
                "run",
                "--host",
                host,
                "--port",
                str(port),
                "--no-reload",
                "--no-debugger",
            ],
        ),
        Child("scheduler", [*dispatch, "scheduler"]),
    ]


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    # The group may be gone already (its leader exited and reaped, no member left).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop_children(started: list[Child], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every child's process group, wait, then SIGKILL whatever is left."""
    for child in reversed(started):
        if child.process is not None and child.process.poll() is None:
            _signal_group(child.process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in started:
        if child.process is None:
            continue
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child.process, signal.SIGKILL)
            child.process.wait()
        # A grandchild may outlive its parent: the group goes in any case.
        _signal_group(child.process, signal.SIGKILL)


def run_dev(app: Flask, *, host: str = "127.0.0.1", port: int = 5000, smtp_port: int = 8025) -> int:
    """Migrate, seed if empty, start the web app, scheduler and sink; returns the exit status."""
    for name, number in (("web", port), ("SMTP", smtp_port)):
        if not port_is_free(host, number):
            raise DevError(
                f"cổng {number} ({name}) trên {host} đang được dùng; "
                f"chọn cổng khác bằng --port / --smtp-port"
            )
    env = child_environment(app, host, port, smtp_port)
    mail_folder = Path(app.instance_path) / "mail"

    print("Cập nhật cơ sở dữ liệu …", flush=True)
    migrate_database(app)
    signing = signing_setup(app)
    env.update(signing.env)
    if database_is_empty(app):
        print("Cơ sở dữ liệu trống: nạp dữ liệu mẫu (dispatch seed) …", flush=True)
        password = demo_password(Path(app.instance_path), create=True)
        assert password is not None
        seed_env = {**env, "DISPATCH_DEMO_PASSWORD": password}
        if not os.environ.get("DISPATCH_DEMO_PASSWORD"):
            # Made up here, not set by the person: the seed must not say it came from the variable.
            seed_env["DISPATCH_DEMO_PASSWORD_ORIGIN"] = str(
                Path(app.instance_path) / "demo-password"
            )
        output = seed_database(seed_env, signing.pki.folder if signing.pki else None)
        if output.strip():
            print(output.rstrip(), flush=True)
    accounts = demo_accounts(app)
    password = demo_password(Path(app.instance_path), create=False)

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    started: list[Child] = []
    try:
        for child in children(host, port, smtp_port, mail_folder):
            # A group of its own: Ctrl-C reaches only us, and we stop each group as a whole.
            child.process = subprocess.Popen(
                child.argv, env=env, cwd=PROJECT_ROOT, start_new_session=True
            )
            started.append(child)
        code = _wait_until_ready(started, stop, [(host, port), (host, smtp_port)])
        if code is not None:
            return code
        lines = [
            "",
            f"Dispatch đang chạy: http://{host}:{port}",
            f"Thư điện tử gửi đi được lưu tại: {mail_folder} (SMTP {host}:{smtp_port})",
        ]
        if accounts:
            if password:
                lines.append(f"Tài khoản dùng thử (mật khẩu chung, nếu chưa đổi: {password}):")
            else:
                lines.append("Tài khoản dùng thử (mật khẩu: như khi chạy 'dispatch seed'):")
            lines += [f"  {email}  ({role})" for email, role in accounts]
        lines += signing.banner
        lines += [
            f"Xác minh văn bản đã ban hành: http://{host}:{port}/xac-minh",
            "Nhấn Ctrl-C để dừng.",
            "",
        ]
        print("\n".join(lines), flush=True)
        while not stop.wait(0.2):
            code = _exit_code_if_one_died(started)
            if code is not None:
                return code
        return 0
    finally:
        stop_children(started)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("Đã dừng.", flush=True)


def _exit_code_if_one_died(started: list[Child]) -> int | None:
    """None while every child runs; else report the dead one(s) and return a non-zero status."""
    dead = [c for c in started if c.process is not None and c.process.poll() is not None]
    if not dead:
        return None
    for child in dead:
        assert child.process is not None
        print(
            f"Tiến trình '{child.name}' đã dừng (mã {child.process.returncode}); "
            "dừng các tiến trình còn lại.",
            file=sys.stderr,
            flush=True,
        )
    returncode = dead[0].process.returncode if dead[0].process else None
    return returncode if returncode and returncode > 0 else 1


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_until_ready(
    started: list[Child], stop: threading.Event, addresses: list[tuple[str, int]]
) -> int | None:
    """Wait until every address accepts connections; an exit status if a child died or we were
    stopped meanwhile, None once ready (or after READY_TIMEOUT, when we carry on anyway)."""
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = list(addresses)
    while waiting and time.monotonic() < deadline:
        code = _exit_code_if_one_died(started)
        if code is not None:
            return code
        waiting = [address for address in waiting if not _accepts(*address)]
        if waiting and stop.wait(0.2):
            return 0
    if waiting:
        print(
            "Chưa kết nối được tới: " + ", ".join(f"{h}:{p}" for h, p in waiting),
            file=sys.stderr,
            flush=True,
        )
    return 0 if stop.is_set() else None
