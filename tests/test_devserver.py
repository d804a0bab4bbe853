"""``dispatch dev`` (``make run``): migrate, seed, run three children, stop them all."""

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
        return login_page, response.url, response.read().decode("utf-8")


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
        # The printed demo account signs in, and the seed letter waits there as a draft.
        printed = re.search(r"mật khẩu chung, nếu chưa đổi: (\S+)\)", log.read_text())
        assert printed, log.read_text()
        login_page, landed, home = sign_in_and_list(web, "chuyenvien@thh.example", printed[1])
        assert "Đăng nhập" in login_page
        assert landed == f"http://127.0.0.1:{web}/"
        assert "Chuyên viên Văn phòng Cục" in home  # signed in as the demo clerk
        draft_row = re.search(r'<tr data-dispatch-id="\d+">.*?</tr>', home, re.S)
        assert draft_row, home
        assert "PC-Covid" in draft_row[0]
        assert "Dự thảo" in draft_row[0]
        assert "63 nơi nhận" in draft_row[0]
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
