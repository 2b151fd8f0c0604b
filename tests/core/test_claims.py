"""One listener per room: the claim in the session store, across threads and processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.claims import RoomClaim
from core.conversation import Core
from core.errors import RoomClaimed
from tests.core.conftest import REPO
from tests.core.fakes.agents import FakeAgent

HOLD = (
    "import sys, time\n"
    "from core.claims import RoomClaim\n"
    "claim = RoomClaim(__import__('pathlib').Path(sys.argv[1]), sys.argv[2])\n"
    "print('claimed', flush=True)\n"
    "time.sleep(300)\n"
)


def hold_in_another_process(root: Path, room: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root), room],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "claimed\n"
    return proc


def test_a_second_claim_on_the_same_room_is_refused(tmp_path: Path) -> None:
    core = Core(tmp_path, FakeAgent())
    with core.claim_room("desk"):
        with pytest.raises(
            RoomClaimed, match=rf"room 'desk' is .* another listener \(pid {os.getpid()}\)"
        ):
            core.claim_room("desk")
        with core.claim_room("kitchen"):  # other rooms are free
            pass
    with core.claim_room("desk"):  # released on leaving the block
        pass


def test_a_claim_holds_across_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    holder = hold_in_another_process(tmp_path, "desk")
    try:
        with pytest.raises(RoomClaimed, match=f"pid {holder.pid}"):
            RoomClaim(tmp_path, "desk")
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup at all: the kernel drops the flock
        holder.wait(10)
    with RoomClaim(tmp_path, "desk"):
        pass


def test_a_claimed_room_still_takes_turns_from_other_commands(tmp_path: Path) -> None:
    """``ask`` in a room a listener holds is fine: the claim is not the per-turn lock."""
    core = Core(tmp_path, FakeAgent())
    with core.claim_room("desk"):
        assert Core(tmp_path, FakeAgent()).send_message("desk", "hello") == "Hello!"


def test_claim_files_never_collide_with_room_locks(tmp_path: Path) -> None:
    core = Core(tmp_path, FakeAgent())
    core.send_message("a.listener-b", "hi")  # its turn lock: .room-a.listener-b.lock
    with core.claim_room("a"), core.claim_room("b"):
        names = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".lock"))
    assert ".listener-a.lock" in names and ".listener-b.lock" in names
    assert ".room-a.listener-b.lock" in names


def test_the_claim_is_not_inherited_by_children(tmp_path: Path) -> None:
    """An agent left running must never keep the room: the claim's descriptor is close-on-exec."""
    with RoomClaim(tmp_path, "desk"):
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        with RoomClaim(tmp_path, "desk"):
            pass
    finally:
        child.kill()
        child.wait(10)


def test_bad_room_ids_are_refused(tmp_path: Path) -> None:
    from core.errors import InvalidIdError

    with pytest.raises(InvalidIdError):
        RoomClaim(tmp_path, "../x")
    with pytest.raises(InvalidIdError):
        RoomClaim(tmp_path, "")
