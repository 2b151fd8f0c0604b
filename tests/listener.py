"""Runs ``voice-assistant listen`` as a real subprocess inside a :class:`PulseRig`.

Shared by the end-to-end tests and the latency benchmarks: the process gets its own config,
session store, control socket and home, and its log is kept in a file to wait on.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from tests.rig import PulseRig

READY = "ready in"
TURN_DONE = "turn timings:"
SAID = "you said: "  # a request went to the agent


def toml_tables(tables: dict[str, dict[str, object]]) -> str:
    """Enough TOML for test configs: tables of strings, numbers, booleans and string lists."""
    lines: list[str] = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def story(log: str, chars: int = 4000) -> str:
    """The end of a listener's log for a failure message, without ALSA's lines (counted):
    one stalled stream prints dozens of "underrun occurred", which pushed the listener's own
    lines out of CI's log."""
    lines = log.splitlines()
    own = [line for line in lines if not line.startswith("ALSA lib")]
    left_out = len(lines) - len(own)
    return ("\n".join(own) + (f"\n[{left_out} ALSA lines left out]" if left_out else ""))[-chars:]


class Listener:
    def __init__(
        self,
        rig: PulseRig,
        workdir: Path,
        config: dict[str, dict[str, object]] | None = None,
        *,
        argv: list[str] | None = None,
        agent: str = "echo",
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: more environment for the listener (and so its agent), applied last."""
        self.rig = rig
        self.extra_env = dict(env or {})
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "ptt.sock"
        tables: dict[str, dict[str, object]] = {
            "session": {"store_dir": str(workdir / "sessions")},
            "input": {"control_socket": str(self.socket)},
            "ui": {"status_line": False, "log_level": "info"},
        }
        for name, values in (config or {}).items():
            tables[name] = {**tables.get(name, {}), **values}
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(toml_tables(tables))
        self.log_path = workdir / "listen.log"
        self.argv = [
            *(argv or [sys.executable, "-m", "voice.cli"]),
            "listen",
            "--config",
            str(self.config_path),
            "--agent",
            agent,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.started_s = 0.0
        self.ready_s = 0.0

    def start(self, timeout_s: float = 120.0) -> Listener:
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env = self.rig.subprocess_env()
        env.update({"HOME": str(home), "XDG_STATE_HOME": str(home / "state")})
        env.pop("VOICE_ASSISTANT_CONFIG", None)
        env.update(self.extra_env)
        self.started_s = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.workdir,
            )
        self.wait_for_log(READY, timeout_s=timeout_s)
        self.ready_s = time.monotonic()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def story(self, chars: int = 4000) -> str:
        """The end of the log for a failure message (see :func:`story`)."""
        return story(self.log(), chars)

    def count(self, needle: str) -> int:
        return self.log().count(needle)

    def wait_for_log(self, needle: str, *, count: int = 1, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.count(needle) >= count:
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"listener exited ({self.process.returncode}) before {needle!r}:\n"
                    + self.story()
                )
            time.sleep(0.05)
        raise AssertionError(f"no {needle!r} x{count} within {timeout_s} s:\n{self.story()}")

    def settled(self, quiet_s: float = 2.0, timeout_s: float = 30.0) -> int:
        """Wait until every request heard has had its turn, and nothing new for ``quiet_s``
        (longer than a request takes to be heard after its last word); the turns done. A
        request that went on after a pause is one request in two turns (the first stopped),
        so counting turns per request would lose step with the runs."""
        deadline = time.monotonic() + timeout_s
        last, since = (-1, -1), time.monotonic()
        while time.monotonic() < deadline:
            now = (self.count(SAID), self.count(TURN_DONE))
            if now != last:
                last, since = now, time.monotonic()
            if now[0] == now[1] and time.monotonic() - since >= quiet_s:
                return now[1]
            time.sleep(0.05)
        raise AssertionError(f"turns still unfinished after {timeout_s:.0f} s:\n{self.story()}")

    def turns(self) -> list[dict[str, str]]:
        """The 'you said' / 'reply' pairs from the log, in order."""
        said = re.findall(r"you said: (.*)", self.log())
        replies = re.findall(r"voice\.turns: reply: (.*)", self.log())
        return [{"said": s, "reply": r} for s, r in zip(said, replies, strict=False)]

    def stall(self, seconds: float) -> None:
        """Stop the process for ``seconds`` (a busy machine: its audio callback underruns)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        self.process.send_signal(signal.SIGCONT)

    def ptt(self, command: str) -> str:
        from voice.control import send_command

        return send_command(self.socket, command)

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError("listener ignored SIGTERM:\n" + self.story()) from None
        return self.process.returncode

    def sessions(self) -> list[dict[str, object]]:
        root = self.workdir / "sessions"
        return [
            json.loads(p.read_text())
            for p in sorted(root.glob("*.json"))
            if p.name != "_index.json"
        ]

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
