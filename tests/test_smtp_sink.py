"""The built-in SMTP sink: every accepted message kept as an .eml file that parses back."""

from __future__ import annotations

import datetime as dt
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from dispatch.processes.smtp_sink import eml_name, start_sink, write_atomically
from tests.fixtures.smtp import free_port

BIN = Path(sys.executable).parent


def read_eml(path: Path) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())  # type: ignore[return-value]


def vietnamese_message(message_id: str | None = "<abc.123@thh.example>") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "van-thu@thh.example"
    message["To"] = "sotttt.hanoi@tinh.example"
    message["Subject"] = "Công văn số 01/THH-VP ngày 15/11/2021 V/v triển khai PC-Covid"
    if message_id:
        message["Message-ID"] = message_id
    message.set_content("Kính gửi: Sở Thông tin và Truyền thông thành phố Hà Nội.")
    message.add_attachment(
        b"%PDF-1.7 test", maintype="application", subtype="pdf", filename="Công văn 01.pdf"
    )
    return message


@pytest.fixture()
def sink(tmp_path):
    folder = tmp_path / "mail"
    port = free_port()
    controller = start_sink(folder, host="127.0.0.1", port=port)
    try:
        yield folder, port
    finally:
        controller.stop()


@pytest.mark.nodb
def test_eml_names_sort_by_time_and_name_the_message():
    at = dt.datetime(2021, 11, 15, 1, 30, 5, 123456, tzinfo=dt.UTC)
    assert eml_name(at, "<d1.r2.letter.0@thh.example>") == (
        "20211115T013005.123456Z-d1.r2.letter.0@thh.example.eml"
    )
    assert eml_name(at, "\r\n <a/b\\c:d@x>") == "20211115T013005.123456Z-a_b_c_d@x.eml"
    assert eml_name(at, None).endswith("-no-message-id.eml")
    assert eml_name(at, "<../../etc/passwd>").count("/") == 0


@pytest.mark.nodb
def test_atomic_write_never_replaces_a_file(tmp_path):
    first = write_atomically(tmp_path, "same.eml", b"one")
    second = write_atomically(tmp_path, "same.eml", b"two")
    assert first != second
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same-2.eml", "same.eml"]


@pytest.mark.nodb
def test_the_sink_keeps_each_message_as_an_eml_that_parses_back(sink):
    folder, port = sink
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(vietnamese_message())
        client.send_message(vietnamese_message(None))
        client.send_message(vietnamese_message())  # the same Message-ID again: a second file
        code, _ = client.noop()
    assert code == 250

    files = sorted(folder.glob("*.eml"))
    assert len(files) == 3
    assert not [p for p in folder.iterdir() if p.suffix != ".eml"]  # no temporary left
    assert sum(p.name.endswith("-abc.123@thh.example.eml") for p in files) == 2
    assert sum(p.name.endswith("-no-message-id.eml") for p in files) == 1
    for path in files:
        mail = read_eml(path)
        assert str(mail["Subject"]).startswith("Công văn số 01/THH-VP ngày 15/11/2021")
        assert mail["Return-Path"] == "<van-thu@thh.example>"
        assert mail["X-Original-To"] == "sotttt.hanoi@tinh.example"
        body = mail.get_body(preferencelist=("plain",)).get_content()
        assert "Sở Thông tin và Truyền thông thành phố Hà Nội" in body
        (attachment,) = mail.iter_attachments()
        assert attachment.get_filename() == "Công văn 01.pdf"
        assert attachment.get_content() == b"%PDF-1.7 test"


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"smtp-sink exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("smtp-sink never listened")


def _sink_command(tmp_path: Path, port: int, folder: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAIL_", "DISPATCH_"))}
    env.update({"DISPATCH_INSTANCE_PATH": str(tmp_path / "instance"), "SECRET_KEY": "x"})
    return subprocess.Popen(
        [str(BIN / "dispatch"), "smtp-sink", "--port", str(port), "--dir", str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


STOP_SIGNALS = pytest.mark.parametrize(
    "stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)


@pytest.mark.nodb
@pytest.mark.slow
@STOP_SIGNALS
def test_the_smtp_sink_command_runs_until_interrupted(tmp_path, stop_signal):
    port = free_port()
    folder = tmp_path / "inbox"
    process = _sink_command(tmp_path, port, folder)
    try:
        _wait_for_port(port, process)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(vietnamese_message())
        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    assert f"đang nghe tại 127.0.0.1:{port}" in text
    assert "<abc.123@thh.example>" in text  # one log line per message
    assert "Đã dừng máy chủ thư thử nghiệm." in text
    (path,) = folder.glob("*.eml")
    assert read_eml(path)["Message-ID"] == "<abc.123@thh.example>"


@pytest.mark.nodb
@pytest.mark.slow
@STOP_SIGNALS
def test_the_smtp_sink_command_stops_as_soon_as_it_listens_with_a_client_left_connected(
    tmp_path, stop_signal
):
    port = free_port()
    process = _sink_command(tmp_path, port, tmp_path / "inbox")
    try:
        _wait_for_port(port, process)  # the signal comes the moment the port opens
        with socket.create_connection(("127.0.0.1", port), timeout=10):  # never says QUIT
            process.send_signal(stop_signal)
            output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    assert "Đã dừng máy chủ thư thử nghiệm." in text


@pytest.mark.nodb
@pytest.mark.slow
def test_the_smtp_sink_command_says_when_its_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAIL_", "DISPATCH_"))}
        env.update({"DISPATCH_INSTANCE_PATH": str(tmp_path / "instance"), "SECRET_KEY": "x"})
        result = subprocess.run(
            [str(BIN / "dispatch"), "smtp-sink", "--port", str(port), "--dir", str(tmp_path)],
            env=env,
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "không mở được cổng" in result.stderr.decode()
