"""The agent process lifecycle: timeouts kill the whole group, and nothing is left behind.

Leftovers are found by scanning /proc for a marker the fake agent puts in its own argv and in
its grandchild's environment, so the check sees every descendant, wherever it was reparented.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.errors import AgentTimeout
from tests.core.conftest import fake_runner


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
