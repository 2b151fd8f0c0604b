"""Agents die with the assistant, even when it is killed with SIGKILL.

Two mechanisms, because each covers what the other cannot:

- ``PR_SET_PDEATHSIG``: the kernel sends SIGKILL to the agent when its parent dies. The
  "parent" is the *thread* that forked the agent, not the process: an agent forked by a turn's
  worker thread would be killed as soon as that thread ended, so a long-lived agent could not
  outlive its turn. Every agent is therefore forked by one spawner thread that lives as long
  as the process. The signal is set by util-linux ``setpriv --pdeathsig KILL`` as an exec shim,
  so no Python runs between fork and exec; without setpriv, by ``prctl`` in a ``preexec_fn``
  (one pre-bound C call and ``getppid``: nothing that takes a lock another thread could hold).
- A reaper process (``core/reaper.py``) for the agent's own children (its tools), which that
  signal does not reach: it is told the process group of every running agent over a pipe, and
  when the pipe closes, however the assistant died, it SIGKILLs those groups.

A descendant that left the group with ``setsid`` (Claude Code's Bash tools) is found as the
agent's descendant (``core.reaper.strays``): by the reaper, which looks every few seconds
because the agent dies with the assistant before it can look, and by whoever stops a live
agent. Not covered: such a tool younger than the reaper's last look, or one whose agent was
killed from outside while the assistant lives. As a systemd service the unit's cgroup
catches them (``KillMode=mixed``). And a kill that lands in the
microseconds between fork and the signal being set, before the group is registered.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Literal

log = logging.getLogger(__name__)

Shim = Literal["setpriv", "prctl", "none"]

_PR_SET_PDEATHSIG = 1
_REAPER = Path(__file__).with_name("reaper.py")


class Lifeline:
    """Starts processes that cannot outlive this one, and neither can their process groups."""

    def __init__(self, shim: Shim | None = None, *, setpriv: str | None = None) -> None:
        """``shim`` None picks setpriv when it supports ``--pdeathsig``, else prctl."""
        self._setpriv = setpriv or shutil.which("setpriv")
        self.shim: Shim = shim or _detect(self._setpriv)
        self._prctl = _prctl() if self.shim == "prctl" else None
        self._spawner = _SpawnThread()
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._reaper: subprocess.Popen[bytes] | None = None

    def popen(
        self, argv: Sequence[str], *, cwd: str | None, env: Mapping[str, str] | None, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(argv, ...)`` in a new session (so a new process group), tied to
        this process. :meth:`release` the pid once the process is reaped."""
        argv = list(argv)
        preexec: Callable[[], None] | None = None
        if self.shim == "setpriv" and self._setpriv is not None:
            program = _resolve(argv[0], cwd, env)
            argv = [self._setpriv, "--pdeathsig", "KILL", "--", program, *argv[1:]]
        elif self._prctl is not None:
            preexec = _pdeathsig_preexec(self._prctl, os.getpid())

        def spawn() -> subprocess.Popen[bytes]:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                preexec_fn=preexec,  # noqa: PLW1509 - only prctl and getppid: see above
                start_new_session=True,
                close_fds=True,
                **kwargs,
            )
            with self._lock:  # registered on the spawner too, even if the caller is interrupted
                self._groups.add(proc.pid)
                self._tell(f"+{proc.pid}")
            return proc

        return self._spawner.call(spawn, abandon=self._abandon)

    def release(self, pid: int) -> None:
        """The process ``pid`` was reaped: its group needs no watching any more."""
        with self._lock:
            if pid in self._groups:
                self._groups.discard(pid)
                self._tell(f"-{pid}")

    @property
    def reaper_pid(self) -> int | None:
        with self._lock:
            return None if self._reaper is None else self._reaper.pid

    def close(self) -> None:
        """Let the reaper go (it kills any group still registered); for tests."""
        with self._lock:
            reaper, self._reaper = self._reaper, None
        if reaper is not None:
            _close_quietly(reaper)

    def _abandon(self, proc: subprocess.Popen[bytes]) -> None:
        """The caller was interrupted (a signal) while its process was being started."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.release(proc.pid)

    def _tell(self, line: str) -> None:
        """One line to the reaper, starting one if there is none (or it died). Under the lock."""
        for _attempt in range(2):
            if self._reaper is None or self._reaper.poll() is not None:
                if line.startswith("-"):
                    return  # a new reaper would learn the current groups without this one
                self._reaper = self._start_reaper()
                if self._reaper is None:
                    return
            assert self._reaper.stdin is not None
            try:
                self._reaper.stdin.write(line.encode() + b"\n")
                self._reaper.stdin.flush()
                return
            except OSError as e:
                log.warning("the agent reaper is gone (%s); starting another", e)
                _close_quietly(self._reaper)
                self._reaper = None

    def _start_reaper(self) -> subprocess.Popen[bytes] | None:
        try:
            reaper = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_REAPER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # the terminal's Ctrl-C is not meant for it
                close_fds=True,
            )
        except OSError as e:
            log.warning(
                "cannot start the agent reaper (%s): an agent's tools may outlive a crash", e
            )
            return None
        assert reaper.stdin is not None
        with contextlib.suppress(OSError):
            for pgid in sorted(self._groups):  # a replacement learns the groups still running
                reaper.stdin.write(f"+{pgid}\n".encode())
        return reaper


class _SpawnThread:
    """Runs every spawn on one thread that never exits before the process does."""

    def __init__(self) -> None:
        self._jobs: SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = SimpleQueue()
        self._started = False
        self._start_lock = threading.Lock()

    def call(
        self,
        job: Callable[[], subprocess.Popen[bytes]],
        *,
        abandon: Callable[[subprocess.Popen[bytes]], None],
    ) -> subprocess.Popen[bytes]:
        self._start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((job, future))
        try:
            return future.result()
        except BaseException:
            # Interrupted (e.g. SIGTERM turned into an exception): whoever was going to clean
            # up the process will never see it, so it is stopped as soon as it exists.
            def stop(done: Future[subprocess.Popen[bytes]]) -> None:
                if done.exception() is None:
                    abandon(done.result())

            future.add_done_callback(stop)
            raise

    def _start(self) -> None:
        with self._start_lock:
            if not self._started:
                threading.Thread(target=self._serve, name="agent-spawner", daemon=True).start()
                self._started = True

    def _serve(self) -> None:
        while True:
            job, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as e:  # handed to the caller, who re-raises it
                future.set_exception(e)


def _detect(setpriv: str | None) -> Shim:
    if setpriv is not None:
        try:
            usage = subprocess.run(
                [setpriv, "--help"], capture_output=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            usage = b""
        if b"--pdeathsig" in usage:
            return "setpriv"
        log.info("%s has no --pdeathsig (util-linux before 2.33): using prctl", setpriv)
    return "prctl" if sys.platform == "linux" else "none"


def _prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError) as e:
        log.warning("prctl is not available (%s): agents may outlive a crash", e)
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]  # type: ignore[attr-defined]
    prctl.restype = ctypes.c_int  # type: ignore[attr-defined]
    return prctl


def _pdeathsig_preexec(prctl: Callable[..., int], parent: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec: keep it tiny
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)

    return preexec


def _resolve(program: str, cwd: str | None, env: Mapping[str, str] | None) -> str:
    """The file Popen would execute for ``program``, so the shim can be given a path; raises
    FileNotFoundError or PermissionError as Popen would."""
    if os.sep in program:
        path = os.path.join(cwd, program) if cwd is not None else program
    else:
        search = (env if env is not None else os.environ).get("PATH", os.defpath)
        found = shutil.which(program, path=search)
        if found is None:
            # Distinguish "exists but not executable" from "missing", as exec would.
            candidates = [os.path.join(d or ".", program) for d in search.split(os.pathsep)]
            if any(os.path.isfile(c) for c in candidates):
                raise PermissionError(f"{program} is not executable")
            raise FileNotFoundError(f"{program} not found")
        path = found
    if os.path.isdir(path):
        raise PermissionError(f"{path} is a directory")  # exec's EACCES
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found")
    if not os.access(path, os.X_OK):
        raise PermissionError(f"{path} is not executable")
    return os.path.abspath(path)


def _close_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


_default: Lifeline | None = None
_default_lock = threading.Lock()


def default_lifeline() -> Lifeline:
    """The process's one :class:`Lifeline` (one spawner thread, one reaper)."""
    global _default  # noqa: PLW0603 - one per process, by design: it is about the process
    with _default_lock:
        if _default is None:
            _default = Lifeline()
        return _default
