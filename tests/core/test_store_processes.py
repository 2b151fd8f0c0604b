"""The store across real processes: kill -9 at random instants, and several writers at once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.session import Session
from core.store import SessionStore
from tests.core.conftest import FAKES, FAST_PYTHON, REPO

SAVE_LOOP = str(FAKES / "save_loop.py")


def start_saver(store_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*FAST_PYTHON, SAVE_LOOP, str(REPO), str(store_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


class Reports:
    """Collects ``<session id> <count>`` lines a saver wrote after each completed save."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.completed: dict[str, int] = {}
        self.first = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.decode().split()
            if len(parts) == 2:  # a line cut by the kill is not a report
                self.completed[parts[0]] = max(self.completed.get(parts[0], 0), int(parts[1]))
                self.first.set()

    def join(self) -> None:
        self._thread.join(10)
        assert not self._thread.is_alive()


def kill_at_random(store_dir: Path, rng: random.Random) -> tuple[dict[str, int], bool]:
    """Start a saver, kill -9 it at a random instant; returns its reports and whether the
    kill left a temporary file behind (i.e. it landed in the middle of a write)."""
    proc = start_saver(store_dir, "forever")
    reports = Reports(proc)
    # Kill some runs before their first save completes, most while they are saving.
    if rng.random() < 0.85:
        assert reports.first.wait(30), proc.stderr.read() if proc.stderr else ""
    time.sleep(rng.uniform(0, 0.03))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reports.join()
    mid_write = store_dir.exists() and any(p.suffix == ".tmp" for p in store_dir.iterdir())
    assert proc.stderr is not None
    assert b"Traceback" not in proc.stderr.read()
    return reports.completed, mid_write


@pytest.mark.slow
def test_kill_minus_9_while_saving_loses_no_reported_save(tmp_path: Path) -> None:
    store_dir = tmp_path / "sessions"
    completed: dict[str, int] = {}
    lock = threading.Lock()
    rng = random.Random(1234)
    seeds = [rng.random() for _ in range(200)]

    mid_write = []

    def one_kill(seed: float) -> None:
        reported, left_temporary = kill_at_random(store_dir, random.Random(seed))
        if left_temporary:
            mid_write.append(seed)
        with lock:
            for sid, count in reported.items():
                completed[sid] = max(completed.get(sid, 0), count)

    # Two killers at once, so kills also land while the other process holds the lock.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for f in [pool.submit(one_kill, seed) for seed in seeds]:
            f.result(timeout=120)
    assert len(completed) > 50, "the savers hardly saved anything before being killed"
    # Proof that kills landed inside saves (a temporary was left behind, swept by the next run).
    assert len(mid_write) > 10, f"only {len(mid_write)} of 200 kills interrupted a write"

    index = json.loads((store_dir / "_index.json").read_bytes())  # must parse as it stands
    by_id = {e["session_id"]: e for e in index}
    for path in store_dir.glob("*.json"):
        json.loads(path.read_bytes())  # every file parses
    for sid, count in completed.items():
        assert sid in by_id, f"session {sid} was reported saved but is missing from the index"
        assert by_id[sid]["message_count"] >= count
        session = Session.from_json((store_dir / f"{sid}.json").read_bytes())
        assert len(session.messages) >= count
    reopened = SessionStore(store_dir)  # opening sweeps what the kills left behind ...
    assert [p.name for p in store_dir.iterdir() if p.name.endswith(".tmp")] == []
    # ... and lists every session as its file now holds it, though a kill came between a
    # session's file and its index entry.
    on_disk = {
        path.stem: Session.from_json(path.read_bytes()).compact()
        for path in store_dir.glob("*.json")
        if path.name != "_index.json"
    }
    listed = {e["session_id"]: e for e in reopened.list()}
    behind = [sid for sid, entry in on_disk.items() if listed.get(sid) != entry]
    assert behind == [] and listed.keys() == on_disk.keys()
    assert {e["session_id"] for e in SessionStore(store_dir).rebuild_index()} >= set(completed)


@pytest.mark.slow
def test_four_processes_saving_250_sessions_each_lose_none(tmp_path: Path) -> None:
    store_dir = tmp_path / "sessions"
    procs = [start_saver(store_dir, "count", "250") for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    reported = {line.split()[0] for out, _ in outputs for line in out.decode().splitlines()}
    assert len(reported) == 1000
    listed = {e["session_id"] for e in SessionStore(store_dir).list()}
    assert listed == reported
    assert len(list(store_dir.glob("*.json"))) == 1001  # + _index.json
    assert not os.path.exists(store_dir / "_index.json.tmp")
