"""One listener per room, with a real first listener in the PulseAudio rig.

The second listener differs in everything that used to keep them apart by accident (its own
control socket, no XDG_RUNTIME_DIR) and shares only the room's session store: it must exit
with a clear message instead of answering every utterance a second time.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.claims import RoomClaim
from tests.listener import Listener
from tests.rig import PulseRig

pytestmark = [pytest.mark.rig, pytest.mark.models, pytest.mark.slow]

EXIT_ROOM_CLAIMED = 75


def test_a_second_listener_for_the_same_room_exits(pulse_rig: PulseRig, tmp_path: Path) -> None:
    first = Listener(pulse_rig, tmp_path / "first").start()
    store = first.workdir / "sessions"
    try:
        second = Listener(pulse_rig, tmp_path / "second", {"session": {"store_dir": str(store)}})
        env = pulse_rig.subprocess_env()
        env.pop("XDG_RUNTIME_DIR", None)
        env["HOME"] = str(second.workdir)
        result = subprocess.run(
            second.argv,
            env=env,
            cwd=second.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == EXIT_ROOM_CLAIMED, result.stderr
        assert "room 'desk' is already being answered by another listener" in result.stderr
        assert first.process is not None and first.process.poll() is None  # untouched
    finally:
        assert first.stop() == 0
    with RoomClaim(store, "desk"):  # the first one let go of it when it stopped
        pass
