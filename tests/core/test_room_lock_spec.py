"""Spec 000, the per-room lock, re-expressed for ``Core``.

Same room: turns never overlap and the second waits for the first. Different rooms: turns run
in parallel (proved with barriers the turns must meet inside the agent, not with wall-clock
ceilings). The lock is acquired blocking, without an acquire timeout; an exception inside the
turn releases it; ``room_lock`` returns the same object for the same room.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core import Core
from core.agent import AgentResult, TextCallback
from core.errors import AgentError, AgentTimeout
from tests.core.conftest import fake_runner
from tests.core.fakes.agents import Call, FakeAgent, OverlapProbe

CANNED = AgentResult(text="Hello from the agent!", session_id="sess-abc-123", cost_usd=0.001)


def slow_agent(seconds: float, probe: OverlapProbe, entered: threading.Event) -> FakeAgent:
    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        with probe:
            entered.set()
            time.sleep(seconds)
        return CANNED

    return FakeAgent(behaviour)


def meeting_agent(parties: int, probe: OverlapProbe) -> FakeAgent:
    """Each turn waits inside the agent until ``parties`` turns are inside at once."""
    barrier = threading.Barrier(parties, timeout=10)

    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        with probe:
            barrier.wait()  # BrokenBarrierError if the turns were serialised
        return CANNED

    return FakeAgent(behaviour)


# -- scenario 1: the same room serialises ------------------------------------------------


def test_two_concurrent_turns_in_one_room_run_one_at_a_time(tmp_path: Path) -> None:
    probe, entered = OverlapProbe(), threading.Event()
    core = Core(tmp_path, slow_agent(0.25, probe, entered))
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(core.send_message, "room-same", f"msg-{i}") for i in range(2)]
        results = [f.result(timeout=10) for f in futures]
    elapsed = time.monotonic() - start
    assert probe.max_active == 1, "two turns of one room were inside the agent at once"
    assert results == [CANNED.text, CANNED.text]
    assert elapsed >= 0.45, f"two serialised 0.25 s turns finished in {elapsed:.3f} s"


def test_many_turns_in_one_room_never_overlap(tmp_path: Path) -> None:
    probe, entered = OverlapProbe(), threading.Event()
    agent = slow_agent(0.01, probe, entered)
    core = Core(tmp_path, agent)
    with ThreadPoolExecutor(max_workers=8) as pool:
        for f in [pool.submit(core.send_message, "busy", f"m{i}") for i in range(40)]:
            assert f.result(timeout=30) == CANNED.text
    assert probe.max_active == 1
    assert len(agent.calls) == 40
    session = core.active_session("busy")
    assert session is not None and len(session.messages) == 80  # nothing lost


def test_room_lock_is_the_same_object_for_the_same_room(tmp_path: Path) -> None:
    core = Core(tmp_path, FakeAgent())
    lock_a1 = core.room_lock("channel-A")
    lock_a2 = core.room_lock("channel-A")
    lock_b = core.room_lock("channel-B")
    assert lock_a1 is lock_a2
    assert lock_a1 is not lock_b
    assert isinstance(lock_a1, type(threading.Lock()))


def test_room_lock_is_the_lock_send_message_takes(tmp_path: Path) -> None:
    core = Core(tmp_path, FakeAgent())
    lock = core.room_lock("held")
    done = threading.Event()
    with lock:

        def turn() -> None:
            core.send_message("held", "hi")
            done.set()

        worker = threading.Thread(target=turn)
        worker.start()
        assert not done.wait(0.3), "send_message ran while the room's lock was held"
    assert done.wait(10)
    worker.join(5)


# -- scenario 2: different rooms run in parallel -------------------------------------------


def test_two_rooms_run_in_parallel(tmp_path: Path) -> None:
    probe = OverlapProbe()
    core = Core(tmp_path, meeting_agent(2, probe))
    with ThreadPoolExecutor(max_workers=2) as pool:
        f1 = pool.submit(core.send_message, "ch-A", "msg-A")
        f2 = pool.submit(core.send_message, "ch-B", "msg-B")
        assert [f1.result(timeout=20), f2.result(timeout=20)] == [CANNED.text, CANNED.text]
    assert probe.max_active == 2


def test_three_rooms_all_overlap(tmp_path: Path) -> None:
    probe = OverlapProbe()
    core = Core(tmp_path, meeting_agent(3, probe))
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(core.send_message, f"ch-{i}", f"msg-{i}") for i in range(3)]
        assert [f.result(timeout=20) for f in futures] == [CANNED.text] * 3
    assert probe.max_active == 3


def test_a_hung_turn_delays_its_own_room_but_never_another(tmp_path: Path) -> None:
    release, entered = threading.Event(), threading.Event()

    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        if call.prompt == "hang":
            entered.set()
            assert release.wait(20)
        return CANNED

    core = Core(tmp_path, FakeAgent(behaviour))
    with ThreadPoolExecutor(max_workers=3) as pool:
        hung = pool.submit(core.send_message, "X", "hang")
        assert entered.wait(10)
        queued = pool.submit(core.send_message, "X", "after")
        other = pool.submit(core.send_message, "Y", "independent")
        assert other.result(timeout=10) == CANNED.text  # Y is not blocked by X
        assert not queued.done(), "a second turn in X ran while X's first turn was hung"
        release.set()
        assert hung.result(timeout=10) == queued.result(timeout=10) == CANNED.text


# -- scenario 3: blocking acquisition, released on any failure ---------------------------------


def test_contested_acquire_blocks_then_proceeds(tmp_path: Path) -> None:
    probe, entered = OverlapProbe(), threading.Event()
    core = Core(tmp_path, slow_agent(0.3, probe, entered))
    results: list[str | BaseException] = []

    def run(label: str) -> None:
        try:
            results.append(core.send_message("ch-contend", label))
        except BaseException as e:
            results.append(e)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert entered.wait(5), "the first turn never reached the agent"
    second = threading.Thread(target=run, args=("second",))
    second.start()
    time.sleep(0.05)
    assert core.room_lock("ch-contend").locked()
    first.join(10)
    second.join(10)
    assert results == [CANNED.text, CANNED.text], f"contention surfaced an error: {results}"
    assert probe.max_active == 1


def _second_turn_completes(core: Core, room: str) -> list[str]:
    """Run another turn in ``room`` in a thread, so a lock left held fails instead of hanging."""
    box: list[str] = []
    worker = threading.Thread(target=lambda: box.append(core.send_message(room, "second")))
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the second turn deadlocked: the lock was not released"
    return box


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("simulated subprocess crash"), AgentTimeout("too slow"), AgentError("bad")],
    ids=["crash", "timeout", "agent-error"],
)
def test_lock_released_when_the_agent_raises(tmp_path: Path, failure: Exception) -> None:
    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        if call.prompt == "first":
            raise failure
        return CANNED

    core = Core(tmp_path, FakeAgent(behaviour))
    with pytest.raises(type(failure), match=str(failure)):
        core.send_message("ch-recover", "first")
    assert not core.room_lock("ch-recover").locked()
    assert _second_turn_completes(core, "ch-recover") == [CANNED.text]


@pytest.mark.parametrize("mode", ["crash", "truncated", "binary"])
def test_lock_released_after_a_real_subprocess_failure(tmp_path: Path, mode: str) -> None:
    core = Core(tmp_path, fake_runner(mode))
    with pytest.raises(AgentError):
        core.send_message("real", "hello")
    core.agent = FakeAgent(lambda call, on_text: CANNED)
    assert _second_turn_completes(core, "real") == [CANNED.text]


def test_lock_released_after_a_real_subprocess_timeout(tmp_path: Path) -> None:
    marker = f"lock-timeout-{time.monotonic_ns()}"
    runner = fake_runner("hang", marker, str(tmp_path / "pid"), timeout=0.5, kill_grace_s=0.2)
    core = Core(tmp_path / "store", runner)
    with pytest.raises(AgentTimeout):
        core.send_message("slow", "hello")
    core.agent = FakeAgent(lambda call, on_text: CANNED)
    assert _second_turn_completes(core, "slow") == [CANNED.text]
