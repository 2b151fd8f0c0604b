"""Running the real Claude Code CLI against :class:`tests.claude_api.ClaudeApi` in tests.

Fixtures (imported by ``tests/core/conftest.py``):

- ``claude_cli``: the path of the CLI (``make setup`` installs it in ``.tools``);
- ``claude_api``: a running scripted API, closed after the test;
- ``claude_home`` / ``claude_cwd``: a fresh HOME and working directory under ``tmp_path``;
- ``claude_env``: the offline environment for the CLI (``claude_api.env(claude_home)``);
- ``claude_process``: a factory, ``claude_process(*args, stdin_text=None)``, that starts the
  CLI with those arguments in ``claude_cwd`` and returns a :class:`CliProcess`; every process
  it started is stopped (its whole process group) after the test.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.claude_api import ClaudeApi

REPO = Path(__file__).resolve().parents[1]
# The CLI's first start on a busy 2-core machine can take several seconds.
START_TIMEOUT_S = 60.0

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

STREAM_JSON = ("-p", "--output-format", "stream-json", "--verbose")
STREAM_JSON_IO = (*STREAM_JSON, "--input-format", "stream-json")


def find_claude() -> str:
    """``VOICE_ASSISTANT_CLAUDE``, else ``.tools``, else ``claude`` on PATH; skips when npm is
    missing (the CLI cannot be installed), fails when it just was not installed."""
    explicit = os.environ.get("VOICE_ASSISTANT_CLAUDE")
    if explicit:
        return explicit
    local = REPO / ".tools" / "node_modules" / ".bin" / "claude"
    if local.exists():
        return str(local)
    on_path = shutil.which("claude")
    if on_path:
        return on_path
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed, so the Claude Code CLI cannot be installed here")
    pytest.fail("the Claude Code CLI is not installed: run `make setup`")


def is_stream(kind: str) -> Predicate:
    """A ``stream_event`` whose inner event has this type (``content_block_stop``...)."""
    return lambda e: e.get("type") == "stream_event" and e["event"].get("type") == kind


def is_type(kind: str, subtype: str | None = None) -> Predicate:
    return lambda e: e.get("type") == kind and (subtype is None or e.get("subtype") == subtype)


def text_delta(event: Event) -> str | None:
    """The text of a ``text_delta`` stream event, else None."""
    if event.get("type") != "stream_event":
        return None
    delta = event["event"].get("delta") or {}
    return delta.get("text") if delta.get("type") == "text_delta" else None


def content_types(event: Event) -> list[str]:
    """The block types of an ``assistant`` or ``user`` event's message."""
    content = event.get("message", {}).get("content")
    return [b.get("type") for b in content] if isinstance(content, list) else []


class CliProcess:
    """The CLI as a subprocess in its own process group: stdout read line by line as JSON on
    a thread (with the time each line came), stdin open for stream-json input."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: Path, stdin_text: str | None = None
    ) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.events: list[tuple[float, Event]] = []
        self.non_json: list[str] = []
        self.stderr: list[str] = []
        self._queue: queue.Queue[tuple[float, Event] | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        if stdin_text is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin_text)
            self.proc.stdin.close()

    # Input.

    def send(self, message: Event) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def send_user(self, text: str) -> None:
        """One user turn in stream-json input, in the form the official SDKs write."""
        message = {"role": "user", "content": text}
        self.send({"type": "user", "message": message, "parent_tool_use_id": None})

    def control(self, subtype: str, **fields: Any) -> str:
        """Sends a ``control_request``; returns its request_id."""
        request_id = f"req_{uuid.uuid4().hex[:12]}"
        request = {"subtype": subtype, **fields}
        self.send({"type": "control_request", "request_id": request_id, "request": request})
        return request_id

    def answer(self, request: Event, response: Event) -> None:
        """Answers a ``control_request`` of the CLI (``can_use_tool``) with ``response``."""
        reply = {"subtype": "success", "request_id": request["request_id"], "response": response}
        self.send({"type": "control_response", "response": reply})

    def end_input(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    # Output.

    def next(self, predicate: Predicate, timeout_s: float = START_TIMEOUT_S) -> Event:
        """The next event (after those already taken) that matches; fails on timeout or EOF."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(left, 0.001))
            except queue.Empty:
                pytest.fail(f"no matching event from the CLI within {timeout_s} s{self._tail()}")
            if item is None:
                pytest.fail(f"the CLI ended its output before a matching event{self._tail()}")
            if predicate(item[1]):
                return item[1]

    def result(self, timeout_s: float = START_TIMEOUT_S) -> Event:
        return self.next(is_type("result"), timeout_s)

    def seen(self, predicate: Predicate) -> list[Event]:
        """Every event so far that matches (whether taken by :meth:`next` or not)."""
        return [e for _, e in list(self.events) if predicate(e)]

    def wait(self, timeout_s: float = 30.0) -> int:
        code = self.proc.wait(timeout_s)
        for reader in self._readers:
            reader.join(5)
        return code

    def stop(self) -> None:
        """Ends the whole process group: SIGTERM, then SIGKILL after a grace period."""
        self.end_input()
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        _signal_group(self.proc.pid, signal.SIGKILL)  # tools the CLI left behind

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            stamp = time.monotonic() - self.started
            try:
                event = json.loads(line)
            except ValueError:
                self.non_json.append(line)
                continue
            self.events.append((stamp, event))
            self._queue.put((stamp, event))
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def _tail(self) -> str:
        last = [json.dumps(e)[:200] for _, e in self.events[-3:]]
        return f"; last events: {last}; stderr: {''.join(self.stderr)[-500:]!r}"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture
def claude_cli() -> str:
    return find_claude()


@pytest.fixture
def claude_api() -> Iterator[ClaudeApi]:
    with ClaudeApi() as api:
        yield api


@pytest.fixture
def claude_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def claude_cwd(tmp_path: Path) -> Path:
    cwd = tmp_path / "work"
    cwd.mkdir()
    return cwd


@pytest.fixture
def claude_env(claude_api: ClaudeApi, claude_home: Path) -> dict[str, str]:
    return claude_api.env(claude_home)


@pytest.fixture
def claude_process(
    claude_cli: str, claude_env: dict[str, str], claude_cwd: Path
) -> Iterator[Callable[..., CliProcess]]:
    started: list[CliProcess] = []

    def start(*args: str, stdin_text: str | None = None) -> CliProcess:
        process = CliProcess([claude_cli, *args], claude_env, claude_cwd, stdin_text)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
