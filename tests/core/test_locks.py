"""The lock registry: one lock per room, bounded size, never two locks for one room at once."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core import Core
from core.locks import LockRegistry
from tests.core.fakes.agents import FakeAgent


def test_same_key_same_lock_while_referenced() -> None:
    registry = LockRegistry(sweep_floor=4)
    held = registry.get("kitchen")
    for i in range(1000):  # many sweeps happen meanwhile
        registry.get(f"other-{i}")
    assert registry.get("kitchen") is held


def test_unreferenced_locks_are_dropped_so_the_table_stays_small() -> None:
    registry = LockRegistry(sweep_floor=8)
    for i in range(10_000):
        with registry.get(f"room-{i}"):
            pass
    assert len(registry) <= 16
    assert registry.sweep() == 0


def test_a_held_or_waited_lock_is_never_dropped() -> None:
    registry = LockRegistry(sweep_floor=2)
    lock = registry.get("busy")
    lock.acquire()
    lock_id = id(lock)
    del lock  # a holder that kept no reference: locked() still protects the entry
    gc.collect()
    for i in range(100):
        registry.get(f"x{i}")
    again = registry.get("busy")
    assert id(again) == lock_id and again.locked()
    again.release()


def test_core_does_not_grow_its_lock_table_with_every_room(tmp_path: Path) -> None:
    core = Core(tmp_path, FakeAgent())
    for i in range(300):
        core.send_message(f"room-{i}", "hi")
    assert len(core._locks) <= 64  # the sweep floor, far below the 300 rooms used


def test_concurrent_callers_never_get_two_locks_for_one_room() -> None:
    """Threads churn through rooms (forcing sweeps) and check mutual exclusion per room."""
    registry = LockRegistry(sweep_floor=4)
    inside: dict[str, int] = defaultdict(int)
    guard = threading.Lock()
    violations: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(2000):
            room = f"r{rng.randrange(6)}" if rng.random() < 0.5 else f"churn-{rng.random()}"
            lock = registry.get(room)
            with lock:
                with guard:
                    inside[room] += 1
                    if inside[room] > 1:
                        violations.append(room)
                time.sleep(0)  # let other threads run while this one is inside
                with guard:
                    inside[room] -= 1

    with ThreadPoolExecutor(max_workers=6) as pool:
        for f in [pool.submit(worker, seed) for seed in range(6)]:
            f.result(timeout=120)
    assert violations == []
    assert len(registry) < 100
