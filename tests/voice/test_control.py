"""The control socket, over real Unix sockets."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigError, DeviceError
from voice.control import (
    ControlServer,
    default_socket_path,
    send_command,
    socket_path,
)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def press(self) -> None:
        with self._lock:
            self.calls.append("press")

    def release(self) -> None:
        with self._lock:
            self.calls.append("release")


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    # Short: a Unix socket path must fit in 107 bytes, and pytest's tmp paths are long.
    d = Path(tempfile.mkdtemp(prefix="va-", dir="/tmp"))
    yield d
    shutil.rmtree(d)


@pytest.fixture
def sock_path(runtime_dir: Path) -> Path:
    return default_socket_path({"XDG_RUNTIME_DIR": str(runtime_dir)})


@pytest.fixture
def server(sock_path: Path) -> Iterator[tuple[ControlServer, list[str]]]:
    seen: list[str] = []

    def handler(command: str) -> str:
        seen.append(command)
        return f"ok {command}d\nsecond line is folded"

    srv = ControlServer(sock_path, handler)
    srv.start()
    yield srv, seen
    srv.close()


def raw_exchange(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def test_default_paths(tmp_path: Path) -> None:
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path(
        "/run/user/1000/voice-assistant/ptt.sock"
    )
    fallback = default_socket_path({})
    assert fallback == Path.home() / ".local/state/voice-assistant/ptt.sock"
    assert socket_path("~/x.sock") == Path.home() / "x.sock"
    assert socket_path("", {"XDG_RUNTIME_DIR": "/r"}) == Path("/r/voice-assistant/ptt.sock")


def test_socket_is_private(server: tuple[ControlServer, list[str]], sock_path: Path) -> None:
    mode = os.stat(sock_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700


def test_commands_reach_the_handler_in_order(
    server: tuple[ControlServer, list[str]], sock_path: Path
) -> None:
    _, seen = server
    replies = [send_command(sock_path, c) for c in ("press", "release", "toggle", "status")]
    assert seen == ["press", "release", "toggle", "status"]
    assert replies[0] == "ok pressd second line is folded"  # one reply line, always


def test_bad_input_gets_an_error_line(
    server: tuple[ControlServer, list[str]], sock_path: Path
) -> None:
    _, seen = server
    assert send_command(sock_path, "explode").startswith("error: unknown command 'explode'")
    too_long = raw_exchange(sock_path, b"p" * 10_000 + b"\n")
    assert too_long.startswith(b"error: command too long")
    assert raw_exchange(sock_path, b"press") == b"ok pressd second line is folded\n"  # no \n
    assert raw_exchange(sock_path, b"").startswith(b"error: unknown command ''")
    assert seen == ["press"]


def test_a_silent_client_does_not_block_others(
    server: tuple[ControlServer, list[str]], sock_path: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(sock_path))  # says nothing; the server gives up on it after 1 s
        assert send_command(sock_path, "status", timeout_s=10) == "ok statusd second line is folded"


def test_close_removes_the_socket(sock_path: Path) -> None:
    with ControlServer(sock_path, lambda c: "ok"):
        assert sock_path.exists()
    assert not sock_path.exists()


def test_stale_socket_is_replaced(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(sock_path))  # bound, never listening: what a crash leaves behind
    crashed.close()
    assert sock_path.exists()
    with ControlServer(sock_path, lambda c: "ok fresh"):
        assert send_command(sock_path, "status") == "ok fresh"


def test_live_socket_is_not_stolen(sock_path: Path) -> None:
    with ControlServer(sock_path, lambda c: "ok first"):
        second = ControlServer(sock_path, lambda c: "ok second")
        with pytest.raises(DeviceError, match="already listening"):
            second.start()
        second.close()  # must not remove the first one's socket
        assert send_command(sock_path, "status") == "ok first"


def test_refuses_to_replace_a_regular_file(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    sock_path.write_text("precious")
    with pytest.raises(DeviceError, match="not a socket"):
        ControlServer(sock_path, lambda c: "ok").start()
    assert sock_path.read_text() == "precious"


def test_client_errors(sock_path: Path) -> None:
    with pytest.raises(DeviceError, match="is `voice-assistant listen` running"):
        send_command(sock_path, "press")
    sock_path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()
    with pytest.raises(DeviceError, match="nothing is listening"):
        send_command(sock_path, "press")
    with pytest.raises(ConfigError):
        send_command(sock_path, "press\nrelease")


def test_client_times_out_on_a_mute_server(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(sock_path))
        mute.listen(1)  # accepts connections, never answers
        with pytest.raises(DeviceError, match=r"gave no reply within 0\.3 s"):
            send_command(sock_path, "status", timeout_s=0.3)


def test_path_too_long_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="107 bytes"):
        ControlServer(Path("/tmp") / ("x" * 120) / "ptt.sock", lambda c: "ok")
