"""No agent outlives the assistant: kill -9 of the parent takes the agent and its group along.

A real parent process (``fakes/agent_parent.py``) runs a real fake agent that hangs with a
grandchild in its group; the test kills the parent with SIGKILL and scans /proc for anything
still carrying the agent's marker.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core import Core
from core.errors import AgentError
from core.ledger import AgentLedger
from core.lifeline import Lifeline
from core.paths import agent_record_name
from core.process import run_process
from core.reaper import LOOK_EVERY_S
from tests.core.conftest import REPO, fake_command
from tests.core.fakes.agents import FakeAgent
from tests.core.test_agent_lifecycle import processes_with, wait_until_none_left

SHIMS = ["setpriv", "prctl"]


def wait_for_file(path: Path, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def start_parent(
    shim: str, marker: str, pidfile: Path, *store: Path, setsid: bool = False
) -> subprocess.Popen[str]:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.core.fakes.agent_parent",
            shim,
            marker,
            str(pidfile),
            *map(str, store),
            *(["--setsid"] if setsid else []),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_for_file(pidfile)  # the agent runs, and so does its grandchild
    return parent


def kill_9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def marker() -> str:
    return f"va-lifeline-{os.getpid()}-{time.monotonic_ns()}"


@pytest.mark.parametrize("setsid", [False, True], ids=["in-group", "own-session"])
@pytest.mark.parametrize("shim", SHIMS)
def test_kill_9_of_the_parent_leaves_no_agent_nor_its_children(
    tmp_path: Path, marker: str, shim: str, setsid: bool
) -> None:
    """Also a child in a session of its own, out of the group's reach, as Claude Code runs
    each Bash tool: the kernel kills the agent at once, so the reaper must have seen the
    child while the agent lived (it looks every LOOK_EVERY_S)."""
    parent = start_parent(shim, marker, tmp_path / "pid", setsid=setsid)
    if setsid:
        time.sleep(LOOK_EVERY_S * 1.5)  # a tool that has run a while, as Claude's do
    try:
        running = set(processes_with(marker)) - {parent.pid}  # its argv has the marker too
        assert len(running) == 2, "the agent and its grandchild should be running"
        kill_9(parent)
        assert wait_until_none_left(marker, within_s=10) == []
    finally:
        parent.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("shim", SHIMS)
def test_the_parent_death_signal_alone_ends_the_agent(
    tmp_path: Path, marker: str, shim: str
) -> None:
    """With the reaper killed first, only PR_SET_PDEATHSIG is left: the agent itself dies, its
    grandchild (which the signal does not reach) is what the reaper is for."""
    parent = start_parent(shim, marker, tmp_path / "pid")
    grandchild = int((tmp_path / "pid").read_text())
    try:
        words = parent.stdout.readline().split()  # type: ignore[union-attr]
        agent, reaper = int(words[1]), int(words[3])
        os.kill(reaper, signal.SIGKILL)
        children = set(processes_with(marker)) - {parent.pid}  # its argv has the marker too
        assert children == {agent, grandchild}
        kill_9(parent)
        deadline = time.monotonic() + 10
        while processes_with(marker) != [grandchild] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(marker) == [grandchild]
    finally:
        parent.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("setsid", [False, True], ids=["in-group", "own-session"])
def test_the_reaper_alone_ends_the_whole_group(tmp_path: Path, marker: str, setsid: bool) -> None:
    """Also a child in a session of its own, out of the group's reach, as Claude Code runs
    each Bash tool: the agent still lives, so it is found as its descendant."""
    parent = start_parent("none", marker, tmp_path / "pid", setsid=setsid)
    try:
        kill_9(parent)
        assert wait_until_none_left(marker, within_s=10) == []
    finally:
        parent.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def thread_gone(native_id: int, within_s: float = 10.0) -> None:
    """Thread.join() returns before the OS thread has exited; /proc shows when it has."""
    deadline = time.monotonic() + within_s
    while os.path.exists(f"/proc/self/task/{native_id}"):
        assert time.monotonic() < deadline, "the thread never exited"
        time.sleep(0.01)


@pytest.mark.parametrize("shim", SHIMS)
def test_an_agent_outlives_the_thread_that_asked_for_it(shim: str) -> None:
    """The parent-death signal fires when the *thread* that forked exits: a turn's worker
    thread ending must not kill an agent that is meant to keep running."""
    lifeline = Lifeline(shim)  # type: ignore[arg-type]
    started: list[subprocess.Popen[bytes]] = []
    ids: list[int] = []

    def worker() -> None:
        ids.append(threading.get_native_id())
        started.append(lifeline.popen(["sleep", "30"], cwd=None, env=None))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    thread_gone(ids[0])
    proc = started[0]
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(2)  # killed within milliseconds, were it tied to the worker thread
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        lifeline.release(proc.pid)
        lifeline.close()


@pytest.mark.parametrize("shim", SHIMS)
def test_the_agent_carries_the_parent_death_signal(shim: str) -> None:
    lifeline = Lifeline(shim)  # type: ignore[arg-type]
    proc = lifeline.popen(
        ["grep", "-i", "^ppid", "/proc/self/status"],
        cwd=None,
        env=None,
        stdout=subprocess.PIPE,
    )
    out, _ = proc.communicate(timeout=10)
    lifeline.release(proc.pid)
    lifeline.close()
    assert proc.returncode == 0
    # setpriv exec()s the program, so its parent is this process, and not the shim.
    assert out.split()[-1] == str(os.getpid()).encode()


@pytest.mark.parametrize("shim", SHIMS)
def test_missing_and_unusable_programs_keep_their_clear_errors(tmp_path: Path, shim: str) -> None:
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    lifeline = Lifeline(shim)  # type: ignore[arg-type]

    def run(argv: list[str], env: dict[str, str] | None = None) -> None:
        run_process(
            argv,
            stdin_data=b"",
            timeout_s=10,
            kill_grace_s=1,
            cwd=None,
            max_stdout_bytes=1024,
            on_line=lambda line: None,
            env=env,
            lifeline=lifeline,
        )

    with pytest.raises(AgentError, match="was not found"):
        run(["no-such-agent-cli-xyz"])
    with pytest.raises(AgentError, match="not executable"):
        run([str(script)])
    with pytest.raises(AgentError, match="not executable"):
        run(["agent.sh"], env={"PATH": str(tmp_path)})
    with pytest.raises(AgentError, match="is a directory"):  # was "not found"
        run([str(tmp_path)])
    script.chmod(0o700)
    run(["agent.sh"], env={"PATH": str(tmp_path)})  # found through the agent's own PATH
    lifeline.close()


def test_the_spawn_hook_gets_the_process_group(tmp_path: Path) -> None:
    seen: list[int] = []
    finished = run_process(
        ["sh", "-c", "ps -o pgid= -p $$"],
        stdin_data=b"",
        timeout_s=10,
        kill_grace_s=1,
        cwd=None,
        max_stdout_bytes=1024,
        on_line=lambda line: seen.append(int(line)),
        on_spawn=lambda process: seen.append(process.pid),
    )
    assert finished.returncode == 0
    assert len(seen) == 2 and seen[0] == seen[1]


def test_a_restarted_listener_stops_what_a_dead_assistant_and_its_reaper_left(
    tmp_path: Path, marker: str
) -> None:
    """The worst case: the assistant and its reaper die together (an OOM kill of both). The
    agent's tool lives on; the room's next listener finds it in the store's ledger and stops
    it before it would resume the conversation beside it."""
    store = tmp_path / "store"
    core = Core(store, FakeAgent())  # creates and claims the store directory
    parent = start_parent("prctl", marker, tmp_path / "pid", store)
    grandchild = int((tmp_path / "pid").read_text())
    try:
        words = parent.stdout.readline().split()  # type: ignore[union-attr]
        os.kill(int(words[3]), signal.SIGKILL)  # the reaper
        kill_9(parent)
        deadline = time.monotonic() + 10
        while processes_with(marker) != [grandchild] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(marker) == [grandchild]  # an orphan, still at work
        with core.claim_room("desk"):
            assert wait_until_none_left(marker, within_s=10) == []
    finally:
        parent.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_a_live_assistant_s_agent_is_left_alone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Core(store, FakeAgent())
    agent = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        AgentLedger(store).record("desk", agent.pid)  # recorded by this, living, process
        assert AgentLedger(store).reap("desk") is False
        assert agent.poll() is None
    finally:
        agent.kill()
        agent.wait(5)


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_an_unusable_agent_record_is_set_aside_and_the_agent_recorded(
    tmp_path: Path, kind: str
) -> None:
    store = tmp_path / "store"
    Core(store, FakeAgent())
    record = store / agent_record_name("desk")
    if kind == "symlink":
        (tmp_path / "elsewhere").write_text("not ours")
        record.symlink_to(tmp_path / "elsewhere")
    else:
        record.mkdir()
    agent = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        AgentLedger(store).record("desk", agent.pid)
        assert record.is_file() and not record.is_symlink()
        assert record.read_text().split()[0] == str(agent.pid)
        if kind == "symlink":
            assert (tmp_path / "elsewhere").read_text() == "not ours"  # never followed
    finally:
        agent.kill()
        agent.wait(5)


def test_an_agent_stopped_at_its_timeout_takes_its_tools_in_sessions_of_their_own(
    tmp_path: Path, marker: str
) -> None:
    """An agent that exits at SIGTERM without ending its tools (Claude Code runs each Bash
    tool with setsid): found while it lived, they are killed once it has gone."""
    pidfile = tmp_path / "pid"
    with pytest.raises(AgentError, match="time"):
        run_process(
            fake_command(
                "hang", marker, str(pidfile), "signal-file", str(tmp_path / "sig"), "setsid"
            ),
            stdin_data=b"q",
            timeout_s=3,
            kill_grace_s=1,
            cwd=None,
            max_stdout_bytes=1024,
            on_line=lambda line: None,
        )
    try:
        assert (tmp_path / "sig").read_text() == "SIGTERM"  # it went quietly, tools left
        assert pidfile.exists()
        assert wait_until_none_left(marker, within_s=10) == []
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
