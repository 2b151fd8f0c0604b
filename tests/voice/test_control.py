"""The control socket, over real Unix sockets."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
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
    fallback = default_socket_path({}, run_user=tmp_path / "no-run-user")
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


def test_without_xdg_runtime_dir_the_users_own_run_dir_is_found(tmp_path: Path) -> None:
    """``ptt`` over ``su`` or SSH often lacks XDG_RUNTIME_DIR; the service has it. Both must
    name the same socket, or the command goes nowhere (and a second listener gets a socket
    of its own)."""
    run_user = tmp_path / "run-user"
    mine = run_user / str(os.getuid())
    mine.mkdir(parents=True, mode=0o700)
    assert default_socket_path({}, run_user=run_user) == mine / "voice-assistant/ptt.sock"
    mine.chmod(0o755)  # not private: not taken for a runtime directory
    home = {"HOME": str(tmp_path)}
    assert default_socket_path(home, run_user=run_user) == (
        tmp_path / ".local/state/voice-assistant/ptt.sock"
    )


def test_without_xdg_runtime_dir_the_socket_is_still_private(runtime_dir: Path) -> None:
    env = {"HOME": str(runtime_dir)}
    path = default_socket_path(env, run_user=runtime_dir / "none")
    assert path.is_relative_to(runtime_dir)  # per user: under their home
    with ControlServer(path, lambda c: "ok"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_a_directory_others_can_write_to_is_refused(runtime_dir: Path) -> None:
    shared = runtime_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could replace the socket
    with pytest.raises(DeviceError, match="not private"):
        ControlServer(shared / "ptt.sock", lambda c: "ok").start()
    shared.chmod(0o1777)  # sticky, like /tmp: nobody can remove another user's file
    with ControlServer(shared / "ptt.sock", lambda c: "ok"):
        assert send_command(shared / "ptt.sock", "status") == "ok"


def test_idle_connections_do_not_make_a_command_time_out(
    server: tuple[ControlServer, list[str]], sock_path: Path
) -> None:
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(12)]
    try:
        for s in idle:
            s.connect(str(sock_path))  # and say nothing
        # `ptt press` waits 2 s: served one at a time, 12 idle clients would take 12 s.
        assert send_command(sock_path, "press", timeout_s=2.0).startswith("ok pressd")
    finally:
        for s in idle:
            s.close()


def test_clients_beyond_the_cap_are_told_the_server_is_busy(sock_path: Path) -> None:
    with ControlServer(sock_path, lambda c: "ok", max_clients=2):
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        try:
            for s in idle:
                s.connect(str(sock_path))
            assert send_command(sock_path, "status") == "error: busy"
        finally:
            for s in idle:
                s.close()
        deadline = time.monotonic() + 10
        while send_command(sock_path, "status") != "ok":  # freed when they go
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_ptt_exits_non_zero_on_an_error_reply(runtime_dir: Path) -> None:
    path = runtime_dir / "ptt.sock"
    config = runtime_dir / "config.toml"
    config.write_text(f'[input]\ncontrol_socket = "{path}"\n')
    with ControlServer(path, lambda c: "error: permission denied"):
        result = subprocess.run(
            [sys.executable, "-m", "voice.cli", "ptt", "press", "--config", str(config)],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.stdout.strip() == "error: permission denied"
    assert result.returncode == 1


def test_a_full_backlog_waits_for_room_then_says_busy(runtime_dir: Path) -> None:
    path = runtime_dir / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(0)  # never accepts: one waiting connection fills it
        waiting: list[socket.socket] = []
        try:
            while True:  # fill the backlog, whatever the kernel counts as full
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                waiting.append(s)
                try:
                    s.connect(str(path))
                except BlockingIOError:
                    break
            with pytest.raises(DeviceError, match="busy: too many callers at once"):
                send_command(path, "status", timeout_s=0.3)

            # Room made while the caller waits: it gets through rather than failing at once.
            answered: list[str] = []

            def serve_one() -> None:
                for _ in waiting[:-1]:
                    listener.accept()[0].close()
                conn, _ = listener.accept()
                with conn:
                    conn.recv(64)
                    conn.sendall(b"ok served\n")

            def call() -> None:
                answered.append(send_command(path, "status", timeout_s=10))

            caller = threading.Thread(target=call)
            caller.start()
            time.sleep(0.2)  # the caller is refused at least once before room is made
            serve_one()
            caller.join(15)
            assert answered == ["ok served"]
        finally:
            for s in waiting:
                s.close()


def test_a_burst_of_callers_gets_answers_not_refusals(
    server: tuple[ControlServer, list[str]], sock_path: Path
) -> None:
    # Connected in one tight loop, faster than the server accepts: all must wait their turn.
    burst = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(60)]
    try:
        for s in burst:
            s.settimeout(10)
            s.connect(str(sock_path))
        replies = []
        for s in burst:
            # A caller told it is busy may be closed before it writes: its answer still reads.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(b"status\n")
            replies.append(s.makefile("rb").readline().decode())
    finally:
        for s in burst:
            s.close()
    assert all(r.startswith(("ok statusd", "error: busy")) for r in replies), set(replies)
