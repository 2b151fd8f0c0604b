"""The lifecycle of one agent subprocess: start, feed, drain, time out, clean up.

- argv list, never a shell; its own session, hence its own process group.
- Started through :mod:`core.lifeline`, so neither the agent nor its group outlives this
  process, even when it is killed with SIGKILL.
- The prompt goes to stdin from a writer thread, then stdin is closed, so a huge prompt cannot
  deadlock against a child that is busy writing output.
- stdout and stderr are drained by their own threads; complete stdout lines are handed to the
  caller's thread in order, through a queue, so callbacks never run on a worker thread.
- On timeout (or too much output, or an error in a callback) the whole group gets SIGTERM,
  then SIGKILL after a grace period. When the leader exits normally, whatever is left of its
  group is killed too, so no grandchild outlives the turn.
- A tool that daemonised (fork, setsid, fork, exit) is init's, out of reach of the group and
  of the parent links, but may still hold the agent's output open: it is found by the pipes it
  holds. A stopped agent's are killed; one that outlives an agent that exited normally is left
  running, as the reaper leaves strays, but no longer read: the readers end, the pipes close.
- The leader is only reaped after the last signal to the group: until then it is a zombie that
  keeps the group id reserved, so a signal can never reach an unrelated, recycled group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, NoReturn, Protocol

from core.errors import AgentError, AgentMissing, AgentTimeout
from core.lifeline import Lifeline, default_lifeline
from core.reaper import kill_strays, kill_tree, pipe_holders, strays

log = logging.getLogger(__name__)

STDERR_KEEP_BYTES = 64 * 1024
# stdout is read and queued in chunks of up to this much, cut into lines as they are handed
# over: queued line by line, `yes` filled 888 MB with millions of 2-byte lines (an object
# each), and the output limit was reached only after minutes of handing them over.
_READ_CHUNK = 64 * 1024
_REAP_TIMEOUT_S = 10.0

# Agents running now, so shutdown can stop them: a turn runs on a daemon thread whose own
# cleanup never runs if the interpreter exits first, and an agent in its own session does not
# get the terminal's Ctrl-C.
_running: set[_Supervisor] = set()
_running_lock = threading.Lock()


@dataclass(frozen=True)
class Finished:
    returncode: int
    stderr: bytes  # the first STDERR_KEEP_BYTES
    duration_s: float


def program_name(argv: Sequence[str]) -> str:
    """How logs and errors name the program, and which program a conversation id belongs to:
    ``claude``; ``core.echo_agent`` for ``python -m core.echo_agent`` and ``agent.py`` for
    ``python3 -u agent.py`` (the interpreter's name would say nothing, and would make two
    scripts one program)."""
    if not argv:
        return "agent"
    name = os.path.basename(argv[0])
    family = _INTERPRETER.fullmatch(name)
    if family is None:
        return name
    code, values = _OPTIONS[family.group(1)]
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m" and family.group(1) == "python":
            return next(args, name)
        if arg in code:  # the program is in the argument: nothing names it
            return name
        if arg in values:  # python3 -W ignore a.py, node -r dotenv/config a.js
            next(args, None)
        elif not arg.startswith("-"):
            return os.path.basename(arg)
    return name


_INTERPRETER = re.compile(r"(python|node|nodejs|bun|deno|ruby|perl|php|sh|bash|dash|zsh)[0-9.]*")
_SHELL = (frozenset({"-c"}), frozenset({"-o", "-O"}))
_NODE = (frozenset({"-e", "-p", "--eval", "--print"}), frozenset({"-r", "--require", "--import"}))
# Per interpreter: the options whose argument is the program, those that take a value.
_OPTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "python": (frozenset({"-c"}), frozenset({"-W", "-X"})),
    "node": _NODE,
    "nodejs": _NODE,
    "bun": _NODE,
    "deno": (frozenset(), frozenset()),
    "ruby": (frozenset({"-e"}), frozenset()),
    "perl": (frozenset({"-e", "-E"}), frozenset()),
    "php": (frozenset({"-r"}), frozenset({"-c", "-d"})),
    **dict.fromkeys(("sh", "bash", "dash", "zsh"), _SHELL),
}


def searched(program: str, env: Mapping[str, str] | None = None) -> str:
    """Where a program that was not found was looked for, to end a message: " on PATH (...)"
    for a bare name (a service's PATH is not the login shell's), nothing for a path."""
    return "" if os.sep in program else f" on PATH ({(env or os.environ).get('PATH', '')})"


def run_process(
    argv: Sequence[str],
    *,
    stdin_data: bytes,
    timeout_s: float,
    kill_grace_s: float,
    cwd: str | None,
    max_stdout_bytes: int,
    on_line: Callable[[bytes], None],
    env: Mapping[str, str] | None = None,
    on_spawn: Callable[[RunningProcess], None] | None = None,
    lifeline: Lifeline | None = None,
) -> Finished:
    """Run ``argv`` to completion, calling ``on_line`` with each stdout line as it arrives.

    ``on_spawn`` gets a handle on the running process as soon as it runs: its ``pid`` (also
    its process group id) and a way to interrupt it from another thread.
    """
    lifeline = lifeline or default_lifeline()
    proc = _spawn(lifeline, argv, cwd, None if env is None else {**os.environ, **env})
    supervisor = _Supervisor(proc, program_name(argv), kill_grace_s)
    with _running_lock:
        _running.add(supervisor)
    try:
        supervisor.start(stdin_data, max_stdout_bytes)
        if on_spawn is not None:
            on_spawn(supervisor)
        return supervisor.wait(timeout_s, on_line)
    finally:
        supervisor.cleanup()
        lifeline.release(proc.pid)
        with _running_lock:
            _running.discard(supervisor)


def stop_all() -> int:
    """Stop every agent still running (SIGTERM, then SIGKILL): for shutdown. Returns how many."""
    with _running_lock:
        running = list(_running)
    for supervisor in running:
        log.info("stopping the agent (%s, pid %d)", supervisor.name, supervisor.proc.pid)
        supervisor.stop_group()
    return len(running)


def spawn(
    argv: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str] | None,
    lifeline: Lifeline | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived agent (tied to this process, in its own group) with stdin, stdout
    and stderr as pipes; ``lifeline.release(pid)`` once it is reaped."""
    return _spawn(lifeline or default_lifeline(), argv, cwd, env)


def _spawn(
    lifeline: Lifeline, argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None
) -> subprocess.Popen[bytes]:
    name = program_name(argv)
    if cwd is not None and not os.path.isdir(cwd):
        raise AgentMissing(
            f"The agent's working directory {cwd} does not exist. Fix agent.cwd in config.toml.",
            spoken="Sorry, the agent's working folder is missing.",
        )
    try:
        return lifeline.popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise AgentMissing(
            f"The agent program '{argv[0]}' was not found{searched(argv[0], env)}. Install it "
            "(a service has no login shell's PATH: give its full path), or set agent.command "
            "in config.toml (or pass --agent) to a program that exists, e.g. --agent echo.",
            spoken="Sorry, the agent program is not installed.",
        ) from None
    except PermissionError:
        if os.sep in argv[0] and os.path.isdir(os.path.join(cwd or "", argv[0])):
            raise AgentError(
                f"The agent program '{argv[0]}' is a directory. Set agent.command in "
                "config.toml (or pass --agent) to the program itself."
            ) from None
        raise AgentError(
            f"The agent program '{argv[0]}' is not executable. Check its permissions, "
            "or set agent.command in config.toml (or --agent)."
        ) from None
    except OSError as e:
        raise AgentError(f"The agent program {name} could not be started: {e.strerror}") from None


class RunningProcess(Protocol):
    @property
    def pid(self) -> int: ...

    def interrupt(self, grace_s: float) -> None:
        """SIGINT to the process group; stopped for good if it has not exited after grace_s."""
        ...

    def stop_group(self) -> None:
        """SIGTERM to the group, then SIGKILL after the kill grace."""
        ...


class _Supervisor:
    def __init__(self, proc: subprocess.Popen[bytes], name: str, kill_grace_s: float) -> None:
        self.proc = proc
        self.name = name
        self.kill_grace_s = kill_grace_s
        # (kind, data): "output" with a chunk of stdout; "eof", "overflow" and "exited" with
        # none. What is queued is bounded by the output limit.
        self.events: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.overflowed = threading.Event()  # seen at once, ahead of the output queued before
        self._partial = bytearray()  # stdout handed over so far after its last newline
        self.exited = threading.Event()
        self.stderr = bytearray()
        self.reaped = False
        self.started = time.monotonic()
        self.max_stdout_bytes = 0
        self.stderr_reader: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        self._outputs: set[int] = set()  # the inodes of the stdout and stderr pipes
        # Closing the write end tells the readers to stop; None once done (or never opened).
        self._stop_reading_fds: tuple[int, int] | None = None

    def start(self, stdin_data: bytes, max_stdout_bytes: int) -> None:
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.max_stdout_bytes = max_stdout_bytes
        self._outputs = {os.fstat(p.fileno()).st_ino for p in (self.proc.stdout, self.proc.stderr)}
        self._stop_reading_fds = os.pipe()
        self._thread(self._write_stdin, self.proc.stdin, stdin_data)
        self._readers.append(self._thread(self._read_stdout, self.proc.stdout, max_stdout_bytes))
        self.stderr_reader = self._thread(self._read_stderr, self.proc.stderr)
        self._readers.append(self.stderr_reader)
        self._thread(self._wait_exit)

    def _thread(self, target: Callable[..., None], *args: object) -> threading.Thread:
        name = f"agent-{self.proc.pid}-{target.__name__.strip('_')}"
        thread = threading.Thread(target=target, args=args, daemon=True, name=name)
        thread.start()
        return thread

    def wait(self, timeout_s: float, on_line: Callable[[bytes], None]) -> Finished:
        deadline = self.started + timeout_s
        eof_deadline = float("inf")
        eof = exited = False
        while not eof:
            now = time.monotonic()
            if now >= deadline:
                self.stop_group()
                raise AgentTimeout(
                    f"The agent ({self.name}) did not finish within {timeout_s:g} seconds and "
                    "was stopped. Ask for something shorter, or raise agent.timeout_s in "
                    "config.toml."
                )
            if now >= eof_deadline:
                # The agent exited and answered: what still holds its output may be meant to
                # outlive the turn (a server it started), so it is not killed, only no longer
                # read. Should it write there again it gets EPIPE, as after a closed terminal.
                log.warning(
                    "a process that left the agent's group (pid %s) still holds its output open: "
                    "left running, no longer read",
                    ", ".join(str(pid) for pid, _ in pipe_holders(self._outputs)) or "unknown",
                )
                self._stop_reading()
                self._hand_over_the_rest(on_line)
                break
            try:
                kind, data = self.events.get(timeout=min(deadline, eof_deadline) - now)
            except queue.Empty:
                continue
            if kind == "overflow":
                self._too_much_output()
            if kind == "output":
                self._hand_over(data, on_line)
            elif kind == "eof":
                self._hand_over_the_rest(on_line)
                eof = True
            elif kind == "exited" and not exited:
                exited = True
                # Leftovers of the group would keep stdout open; the turn is over for them.
                self._signal_group(signal.SIGKILL)
                eof_deadline = time.monotonic() + self.kill_grace_s
        if not exited:
            self.exited.wait(max(0.0, deadline - time.monotonic()))
            if not self.exited.is_set():  # closed its output but kept running
                self.stop_group()
                raise AgentTimeout(
                    f"The agent ({self.name}) did not exit within {timeout_s:g} seconds "
                    "and was stopped. Raise agent.timeout_s in config.toml if it needs longer."
                )
            self._signal_group(signal.SIGKILL)
        returncode = self._reap()
        if self.stderr_reader is not None:
            self.stderr_reader.join(self.kill_grace_s)
        return Finished(returncode, bytes(self.stderr), time.monotonic() - self.started)

    def _hand_over(self, data: bytes, on_line: Callable[[bytes], None]) -> None:
        """Each line ``data`` completes, newline included (only b"\\n" ends one, as for
        readline)."""
        partial = self._partial
        partial += data
        start = 0
        while (end := partial.find(b"\n", start)) >= 0:
            if self.overflowed.is_set():  # not behind what was queued before it
                self._too_much_output()
            on_line(bytes(partial[start : end + 1]))
            start = end + 1
        del partial[:start]

    def _hand_over_the_rest(self, on_line: Callable[[bytes], None]) -> None:
        if self._partial:  # the agent's last line, with no newline after it
            on_line(bytes(self._partial))
            self._partial.clear()

    def _too_much_output(self) -> NoReturn:
        self.stop_group()
        raise AgentError(
            f"The agent ({self.name}) printed more than {_size(self.max_stdout_bytes)} of "
            "output, so it was stopped. Raise agent.max_output_bytes in config.toml "
            "if that much output is expected."
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def interrupt(self, grace_s: float) -> None:
        # SIGINT is how a terminal stops an agent: Claude Code ends the turn with an
        # "aborted" result and keeps the conversation resumable.
        self._signal_group(signal.SIGINT)
        threading.Thread(
            target=self._escalate, args=(grace_s,), daemon=True, name="agent-interrupt"
        ).start()

    def _escalate(self, grace_s: float) -> None:
        if not self.exited.wait(grace_s):
            log.warning("the agent ignored the interrupt for %.0f s: stopping it", grace_s)
            self.stop_group()

    def stop_group(self) -> None:
        """SIGTERM the group, SIGKILL it after the grace period; the leader stays unreaped.
        Its tools in sessions of their own are found first: once it has exited they are
        init's, and it can no longer end them."""
        found = [] if self.reaped else strays(self.proc.pid)
        self._signal_group(signal.SIGTERM)
        self.exited.wait(self.kill_grace_s)
        # Even if the leader obeyed, a grandchild may have ignored SIGTERM.
        self._signal_group(signal.SIGKILL)
        kill_strays(found)
        if not self.reaped:  # what daemonised: found by the output it holds, not by parent
            kill_strays(pipe_holders(self._outputs))

    def cleanup(self) -> None:
        if not self.reaped:
            self.stop_group()
            self._reap()
        self._stop_reading()

    def _stop_reading(self) -> None:
        """End the readers, even if a process outside the group still holds the agent's
        output open: they close the pipes as they end."""
        if self._stop_reading_fds is None:
            return
        stop_r, stop_w = self._stop_reading_fds
        self._stop_reading_fds = None
        os.close(stop_w)
        for reader in self._readers:
            reader.join(_REAP_TIMEOUT_S)
        if any(reader.is_alive() for reader in self._readers):
            log.error("a reader of agent %d's output did not stop", self.proc.pid)
            return  # stop_r stays open: closing it under its poll would be undefined
        os.close(stop_r)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.reaped:
            return  # the group id may belong to someone else now
        if sig == signal.SIGKILL:
            kill_tree(self.proc.pid)  # and what it started in sessions of its own
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _reap(self) -> int:
        try:
            returncode = self.proc.wait(_REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("agent process %d did not die after SIGKILL", self.proc.pid)
            return -signal.SIGKILL
        self.reaped = True
        return returncode

    # -- worker threads ------------------------------------------------------------------

    def _write_stdin(self, pipe: IO[bytes], data: bytes) -> None:
        try:
            pipe.write(data)
        except OSError:  # the agent exited or closed stdin without reading everything
            pass
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    def _read_stdout(self, pipe: IO[bytes], limit: int) -> None:
        total = 0
        try:
            for chunk in read_chunks(pipe, _READ_CHUNK, self._stop_fd()):
                total += len(chunk)
                if total > limit:
                    self.overflowed.set()
                    self.events.put(("overflow", b""))
                    return
                self.events.put(("output", chunk))
        except (OSError, ValueError) as e:
            log.warning("reading the agent's output failed: %s", e)
        finally:
            with contextlib.suppress(OSError):
                pipe.close()
        self.events.put(("eof", b""))

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        keep_stderr(pipe, self.stderr, self._stop_fd())

    def _stop_fd(self) -> int | None:
        return None if self._stop_reading_fds is None else self._stop_reading_fds[0]

    def _wait_exit(self) -> None:
        # WNOWAIT: learn that the leader exited without reaping it (see the module docstring).
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        self.exited.set()
        self.events.put(("exited", b""))


def read_chunks(pipe: IO[bytes], size: int, stop_fd: int | None = None) -> Iterator[bytes]:
    """What ``pipe`` gives, a read of up to ``size`` bytes at a time, until it ends, or until
    ``stop_fd`` (the read end of a pipe) is readable or closed: then what ``pipe`` holds at that
    moment may still come, a read more, no longer a wait for its writers to close it."""
    fd = pipe.fileno()
    if stop_fd is None:
        while chunk := os.read(fd, size):
            yield chunk
        return
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(stop_fd, select.POLLIN)
    while True:
        ready = {ready_fd for ready_fd, _ in poller.poll()}
        if fd in ready:
            chunk = os.read(fd, size)
            if not chunk:
                return
            yield chunk
        if stop_fd in ready:
            return


def keep_stderr(pipe: IO[bytes], kept: bytearray, stop_fd: int | None = None) -> None:
    """Drain an agent's stderr until it closes (or ``stop_fd`` says to stop, as for
    :func:`read_chunks`), keeping its first STDERR_KEEP_BYTES."""
    try:
        for chunk in read_chunks(pipe, 65536, stop_fd):
            room = STDERR_KEEP_BYTES - len(kept)
            if room > 0:
                kept += chunk[:room]
    except (OSError, ValueError) as e:
        log.warning("reading the agent's stderr failed: %s", e)
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _size(limit: int) -> str:
    return f"{limit / 1024 / 1024:g} MB" if limit >= 1024 * 1024 else f"{limit} bytes"
