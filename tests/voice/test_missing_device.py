"""A missing microphone at start: an error at once by hand, a wait under systemd."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.models


def listen(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[session]\nstore_dir = "{tmp_path / "sessions"}"\n'
        f'[input]\ncontrol_socket = "{tmp_path / "ptt.sock"}"\n'
        "[ui]\nstatus_line = false\n"
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voice.cli",
            "listen",
            "--agent",
            "echo",
            "--config",
            str(config),
            "--device",
            "no-such-microphone-anywhere",
        ],
        env={
            **{k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
            "HOME": str(tmp_path),
            **env,
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_by_hand_a_missing_microphone_is_a_clear_error(tmp_path: Path) -> None:
    process = listen(tmp_path, {})
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 2, out
    assert "no-such-microphone-anywhere" in out and "Traceback" not in out


def test_as_a_service_the_microphone_is_waited_for(tmp_path: Path) -> None:
    notify = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(notify))
    server.settimeout(120)
    process = listen(tmp_path, {"NOTIFY_SOCKET": str(notify)})
    try:
        messages = []
        deadline = time.monotonic() + 120
        while not any(b"EXTEND_TIMEOUT_USEC" in m for m in messages[1:]):
            assert time.monotonic() < deadline, messages
            messages.append(server.recv(4096))
        assert process.poll() is None, "it gave up instead of waiting for the microphone"
        assert not any(m.startswith(b"READY=1") for m in messages)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0, out
        assert "waiting for the microphone" in out
    finally:
        if process.poll() is None:
            process.kill()
        server.close()
