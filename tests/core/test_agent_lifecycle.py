"""The agent process lifecycle: timeouts kill the whole group, and nothing is left behind.

Leftovers are found by scanning /proc for a marker the fake agent puts in its own argv and in
its grandchild's environment, so the check sees every descendant, wherever it was reparented.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.agent import AgentRunner
from core.errors import AgentTimeout
from tests.core.conftest import FAST_PYTHON, fake_runner
from tests.procs import running


def processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose argv or environment mention ``marker``."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in cmdline or needle in environ:
            found.append(int(entry))
    return found


def wait_until_none_left(marker: str, within_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def marker() -> str:
    return f"va-test-{uuid.uuid4()}"


def test_the_proc_scan_does_see_a_grandchild(tmp_path: Path, marker: str) -> None:
    """Guards the guard: while the fake hangs, its grandchild is visible to the scan."""
    pidfile = tmp_path / "pid"
    runner = fake_runner("hang", marker, str(pidfile), timeout=3.0, kill_grace_s=0.5)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(runner.run, "q")
        deadline = time.monotonic() + 3
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        grandchild = int(pidfile.read_text())
        assert grandchild in processes_with(marker)
        with pytest.raises(AgentTimeout):
            future.result(timeout=30)
    assert wait_until_none_left(marker) == []


@pytest.mark.slow
def test_100_timeouts_leave_no_process_behind(tmp_path: Path, marker: str) -> None:
    def one(i: int) -> float:
        # Half of them ignore SIGTERM (and so does their grandchild): SIGKILL must follow.
        extra = ["ignore-term"] if i % 2 else []
        pidfile = tmp_path / f"pid-{i}"
        runner = fake_runner("hang", marker, str(pidfile), *extra, timeout=0.3, kill_grace_s=0.2)
        start = time.monotonic()
        with pytest.raises(AgentTimeout, match=r"did not finish within 0\.3 seconds"):
            runner.run("q")
        return time.monotonic() - start

    with ThreadPoolExecutor(max_workers=4) as pool:
        durations = list(pool.map(one, range(100), timeout=300))
    spawned = [int(p.read_text()) for p in tmp_path.glob("pid-*")]
    assert len(spawned) >= 80, f"only {len(spawned)} fakes got to spawn a grandchild"
    assert wait_until_none_left(marker) == []
    assert max(durations) < 20


def test_sigterm_comes_first_and_a_polite_agent_can_clean_up(tmp_path: Path, marker: str) -> None:
    term_file = tmp_path / "term"
    runner = fake_runner(
        "hang",
        marker,
        str(tmp_path / "pid"),
        "term-file",
        str(term_file),
        timeout=1.0,
        kill_grace_s=5.0,
    )
    start = time.monotonic()
    with pytest.raises(AgentTimeout):
        runner.run("q")
    assert term_file.read_text() == "TERM"
    # It exited on SIGTERM, so the runner did not sit out the 5 s grace period.
    assert time.monotonic() - start < 5.0
    assert wait_until_none_left(marker) == []


def test_a_grandchild_holding_stdout_neither_delays_the_reply_nor_survives(
    tmp_path: Path, marker: str
) -> None:
    pidfile = tmp_path / "pid"
    runner = fake_runner("hold-stdout", marker, str(pidfile), timeout=30.0, kill_grace_s=1.0)
    start = time.monotonic()
    result = runner.run("q")
    assert result.text == "done early"
    assert time.monotonic() - start < 15, "the runner waited for the grandchild's sleep 60"
    assert pidfile.exists()
    assert wait_until_none_left(marker) == []


def test_stop_all_ends_agents_still_running_at_shutdown(tmp_path: Path, marker: str) -> None:
    """The live loop runs turns on daemon threads; at exit it stops their agents explicitly."""
    from core.errors import AgentError
    from core.process import stop_all

    pidfile = tmp_path / "pid"
    runner = fake_runner("hang", marker, str(pidfile), timeout=300.0, kill_grace_s=0.5)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(runner.run, "q")
        deadline = time.monotonic() + 5
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_with(marker), "the fake agent never started"
        assert stop_all() == 1
        with pytest.raises(AgentError):
            future.result(timeout=30)  # long before its 300 s timeout
    assert wait_until_none_left(marker) == []
    assert stop_all() == 0


# An agent whose tool daemonises the usual way: fork, setsid, fork, the middle one exits. The
# `sleep` left is init's, out of reach of the group and of parent links, and holds the agent's
# stdout and stderr; its argv[0] is the marker and "-tool". Then the agent answers, or hangs.
DAEMONISING_AGENT = """
import os, sys, time
marker, mode = sys.argv[1:3]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        if mode == "answer-stderr-only":  # it holds the agent's stderr only
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.execvp("sleep", [marker + "-tool", "60"])
    os._exit(0)
os.wait()
if mode == "hang":
    time.sleep(60)
print("answered", flush=True)
"""


def daemonising_runner(marker: str, mode: str, timeout: float) -> AgentRunner:
    argv = [*FAST_PYTHON, "-c", DAEMONISING_AGENT, marker, mode]
    return AgentRunner(argv, timeout, kill_grace_s=0.5, output_format="text")


def output_readers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.endswith(("-read_stdout", "-read_stderr"))}


def wait_for(condition: Callable[[], bool], within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def held_pipes(pid: int) -> set[str]:
    """The agent's output pipes the daemon holds, as ``pipe:[inode]``."""
    links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (1, 2)}
    return {link for link in links if link.startswith("pipe:")}


def kill_all(pids: list[int]) -> None:
    """What a failing test would otherwise leave behind."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def our_pipes() -> set[str]:
    links = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            links.add(os.readlink(f"/proc/self/fd/{fd}"))
    return links


def test_a_tool_that_daemonised_is_killed_when_the_turn_times_out(marker: str) -> None:
    tool, readers_before = f"{marker}-tool", output_readers()
    runner = daemonising_runner(marker, "hang", timeout=3.0)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(runner.run, "q")
            assert wait_for(lambda: bool(running(tool))), "the tool never started"
            pipes = held_pipes(running(tool)[0])
            with pytest.raises(AgentTimeout):
                future.result(timeout=30)
        assert wait_for(lambda: not running(tool)), "the daemonised tool outlived the timeout"
        assert wait_for(lambda: output_readers() <= readers_before), "the output readers leak"
        assert not pipes & our_pipes(), "the agent's output pipes are still open here"
    finally:
        kill_all(running(tool))


@pytest.mark.parametrize("mode", ["answer", "answer-stderr-only"])
def test_a_tool_that_daemonised_and_outlives_an_answer_is_left_running_but_not_read(
    marker: str, mode: str
) -> None:
    """A normal end: the tool may be meant to stay (a server), so it is not killed; but its
    hold on the agent's output no longer keeps our readers and pipes."""
    tool, readers_before = f"{marker}-tool", output_readers()
    try:
        assert daemonising_runner(marker, mode, timeout=30.0).run("q").text == "answered"
        assert running(tool), "the tool was killed, or never started"
        pipes = held_pipes(running(tool)[0])
        assert wait_for(lambda: output_readers() <= readers_before), "the output readers leak"
        assert not pipes & our_pipes(), "the agent's output pipes are still open here"
    finally:
        kill_all(running(tool))
