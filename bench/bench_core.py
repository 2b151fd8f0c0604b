"""Core overhead: send_message and save with 10, 1 000 and 10 000 stored sessions, side by side.

Saving patches the index in place, so its cost must not grow with the number of sessions the
way a rescan would: the script prints save@10000 / save@10 and whether it is within 5x. It also
times a full index rebuild at each size, opening the store, a save that follows another
process's (``listen`` and ``ask`` sharing a store: the directory changed, so the index is
checked against it and caught up), and a real round trip through the echo-agent subprocess.

    python bench/bench_core.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import Core
from core.agent import AgentResult, AgentRunner, TextCallback
from core.session import Session, make_message
from core.store import SessionStore

SIZES = (10, 1_000, 10_000)
ROUNDS = 5  # sizes are measured in turn, round after round, so drift hits them alike
CALLS_PER_ROUND = 20
REBUILDS = 3
ECHO_TURNS = 20
MAX_RATIO = 5.0


class InstantAgent:
    """Answers at once: what is left is the core's own overhead."""

    def run(
        self, prompt: str, *, session_id: str | None = None, on_text: TextCallback | None = None
    ) -> AgentResult:
        return AgentResult(text="ok", session_id="agent-session", cost_usd=0.0, duration_ms=0)


def seed(root: Path, count: int) -> None:
    """Write ``count`` realistic session files directly into a new store (the index is built
    by a rebuild)."""
    SessionStore(root)  # claims the directory: files appear in a store, not in a stray folder
    now = time.time() - 86_400
    for i in range(count):
        session = Session(room_id=f"room-{i % 50}", created_at=now + i, updated_at=now + i)
        session.add(make_message("user", f"question number {i}?", timestamp=now + i))
        session.add(make_message("assistant", "an answer " * 20, timestamp=now + i))
        path = root / f"{session.session_id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(session.to_json())


def ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="bench-core-"))
    try:
        return run(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(base: Path) -> int:
    print(f"store under {base}; seeding {', '.join(str(s) for s in SIZES)} sessions ...")
    cores: dict[int, Core] = {}
    rebuild: dict[int, list[float]] = {}
    for size in SIZES:
        t0 = time.perf_counter()
        seed(base / str(size), size)
        store = SessionStore(base / str(size))
        seeded = time.perf_counter() - t0
        rebuild[size] = []
        for _ in range(REBUILDS):
            t0 = time.perf_counter()
            assert len(store.rebuild_index()) == size
            rebuild[size].append(time.perf_counter() - t0)
        cores[size] = Core(store, InstantAgent())
        cores[size].send_message("bench", "warm up")
        print(f"  {size:>6} sessions seeded in {seeded:.1f} s")
    trusted = all(c.store._trust_dir_sig for c in cores.values())
    print(f"directory mtimes {'are' if trusted else 'are NOT'} fine-grained on this filesystem")

    send: dict[int, list[float]] = {s: [] for s in SIZES}
    save: dict[int, list[float]] = {s: [] for s in SIZES}
    opening: dict[int, list[float]] = {s: [] for s in SIZES}
    shared: dict[int, list[float]] = {s: [] for s in SIZES}
    for _ in range(ROUNDS):
        for size in SIZES:
            core = cores[size]
            for i in range(CALLS_PER_ROUND):
                t0 = time.perf_counter()
                core.send_message("bench", f"message {i}")
                send[size].append(time.perf_counter() - t0)
            session = core.active_session("bench")
            assert session is not None
            for _ in range(CALLS_PER_ROUND):
                session.updated_at = time.time()
                t0 = time.perf_counter()
                core.store.save(session)
                save[size].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            other = SessionStore(core.store.root)
            opening[size].append(time.perf_counter() - t0)
            mine = Session(room_id="other")
            for _ in range(CALLS_PER_ROUND // 4):
                other.save(mine)  # another process wrote: the next save finds a new directory
                session.updated_at = time.time()
                t0 = time.perf_counter()
                core.store.save(session)
                shared[size].append(time.perf_counter() - t0)

    print()
    print(
        f"{'sessions':>10} {'send_message':>14} {'save':>10} {'save, 2 writers':>16} "
        f"{'open':>10} {'full rebuild':>14}"
    )
    for size in SIZES:
        print(
            f"{size:>10} {ms(send[size]):>11.2f} ms {ms(save[size]):>7.2f} ms "
            f"{ms(shared[size]):>13.2f} ms {ms(opening[size]):>7.1f} ms "
            f"{ms(rebuild[size]):>11.1f} ms"
        )
    print(
        f"(medians of {ROUNDS * CALLS_PER_ROUND} calls each; save after another writer's: "
        f"{ROUNDS * (CALLS_PER_ROUND // 4)}; open: {ROUNDS}; rebuild: {REBUILDS})"
    )

    ratio = ms(save[SIZES[-1]]) / ms(save[SIZES[0]])
    send_ratio = ms(send[SIZES[-1]]) / ms(send[SIZES[0]])
    verdict = "OK" if ratio <= MAX_RATIO else "TOO SLOW: saving seems to rescan"
    print()
    print(f"save@{SIZES[-1]} / save@{SIZES[0]} = {ratio:.2f}x  (<= {MAX_RATIO:g}x: {verdict})")
    print(f"send_message@{SIZES[-1]} / send_message@{SIZES[0]} = {send_ratio:.2f}x")

    echo = Core(base / "echo", AgentRunner([sys.executable, "-m", "core.echo_agent"], 60))
    echo.send_message("bench", "warm up")
    turns = []
    for i in range(ECHO_TURNS):
        t0 = time.perf_counter()
        echo.send_message("bench", f"hello number {i}")
        turns.append(time.perf_counter() - t0)
    print(f"echo-agent subprocess round trip: {ms(turns):.1f} ms per turn (median of {ECHO_TURNS})")
    return 0 if ratio <= MAX_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
