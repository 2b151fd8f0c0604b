"""A store on a disk the kernel remounted read-only (ext4 does so on errors).

Nothing can be saved there, but a room's turns must still run one at a time across the
processes sharing the store (``ask`` while ``listen`` runs): two at once would resume one
agent conversation twice. The disk is a real tmpfs remounted read-only (as root).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import Core
from core.conversation import TurnOutcome
from core.store_dir import _runtime_dir
from tests.core.conftest import mounted_tmpfs
from tests.core.fakes.agents import FakeAgent

HOLDER = """
import sys, time
from core.store import SessionStore

with SessionStore(sys.argv[1]).lock_room(sys.argv[2]):  # another process's turn
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    runtime = tmp_path / "runtime"  # where a lock the store cannot create is kept instead
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    with mounted_tmpfs(tmp_path / "disk", "1m") as mount_point:
        yield mount_point


def remount_read_only(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)


@pytest.mark.parametrize("room", ["desk", "hall"])  # its lock file made before, or never
def test_a_turn_waits_for_another_processs_turn_in_the_room(disk: Path, room: str) -> None:
    root = disk / "sessions"
    Core(root, FakeAgent()).send_message("desk", "hello")
    remount_read_only(disk)
    core = Core(root, FakeAgent())
    outcomes: list[TurnOutcome] = []
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), room], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        waiting = threading.Thread(target=lambda: outcomes.append(core.run_turn(room, "now")))
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive(), "the turn ran while another process had the room"
    finally:
        holder.kill()
        holder.wait(10)
    waiting.join(10)
    [outcome] = outcomes
    assert outcome.reply == "Hello!"
    assert "Read-only file system" in str(outcome.save_error)


def test_the_stand_in_lock_is_found_from_the_user_id_before_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A system service has no $XDG_RUNTIME_DIR and a /tmp of its own; a login shell has
    # the variable: both must lock the same file.
    run_user = tmp_path / "run" / "user"
    (run_user / str(os.geteuid())).mkdir(parents=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "elsewhere"))
    assert _runtime_dir(run_user) == run_user / str(os.geteuid())
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert _runtime_dir(run_user) == run_user / str(os.geteuid())
    assert _runtime_dir(tmp_path / "none") == Path(tempfile.gettempdir())
