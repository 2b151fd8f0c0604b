"""sd_notify against real datagram sockets bound by the test, as systemd binds its own."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from voice.service import SystemdNotifier


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def systemd_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that reaches it."""
    d = Path(tempfile.mkdtemp(prefix="va-notify-", dir="/tmp"))
    path = d / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()
    shutil.rmtree(d)


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``."""
    out = [sock.recv(4096).decode()]
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(5)


def test_ready_status_stopping(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, address = systemd_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("listening on mic 2")
    assert notifier.status("thinking\nabout it")
    assert notifier.extend_timeout(30)
    assert notifier.stopping()
    notifier.close()
    assert received(sock) == [
        "READY=1\nSTATUS=listening on mic 2",
        "STATUS=thinking about it",  # a newline would have started a new assignment
        "EXTEND_TIMEOUT_USEC=30000000",
        "STOPPING=1",
    ]


def test_abstract_namespace_socket() -> None:
    name = f"voice-assistant-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
        notifier.close()


def test_watchdog_is_rate_limited_to_half_the_timeout(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, address = systemd_socket
    clock = FakeClock()
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}
    notifier = SystemdNotifier(env, clock=clock)
    assert notifier.watchdog_interval_s() == 15.0
    sent = []
    for step_s in [0.0] + [0.03] * 1010:  # 30.3 s of a 30 ms audio loop
        clock.now += step_s
        sent.append(notifier.watchdog())
    notifier.close()
    assert sent.count(True) == 3  # at 0 s, 15 s and 30 s
    assert received(sock) == ["WATCHDOG=1"] * 3


def test_watchdog_for_another_process_is_ignored(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    _, address = systemd_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    notifier = SystemdNotifier(env)
    assert notifier.watchdog_interval_s() is None
    assert not notifier.watchdog()
    mine = SystemdNotifier({**env, "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval_s() == 0.5


def test_outside_systemd_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s() is None
    assert not any([notifier.ready(), notifier.status("x"), notifier.watchdog()])
    assert not SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_missing_listener_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level("WARNING", logger="voice.service"):
        assert not notifier.ready()
        assert not notifier.status("still here")
    assert len(caplog.records) == 1  # warned once, not on every call
    notifier.close()
