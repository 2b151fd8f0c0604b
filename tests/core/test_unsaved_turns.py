"""An answer is never thrown away because the store failed.

When a save fails (disk full), a turn still returns the reply, keeps the agent's session id,
logs the detail, and tells the caller (``TurnOutcome.save_error``); the conversation stays in
memory and is saved by the room's next turn or the next save that works.

The disk is really full in the first tests (a 64 KiB tmpfs, mounted as root); the others break
writes through a store passed to ``Core``'s constructor.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import Core
from core.agent import AgentResult, TextCallback
from core.errors import AgentError, StoreError
from core.session import Session
from core.store import SessionStore
from tests.core.conftest import mounted_tmpfs
from tests.core.fakes.agents import Call, FakeAgent


def numbered_agent() -> FakeAgent:
    """Replies to each prompt and hands out a new agent session id every turn."""

    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        return AgentResult(text=f"reply to {call.prompt}", session_id=f"agent-{call.prompt}")

    return FakeAgent(behaviour)


def on_disk(root: Path, room: str = "desk") -> Session:
    """The room's newest conversation as a new process would read it."""
    store = SessionStore(root)
    entry = store.latest_for_room(room)
    assert entry is not None
    session = store.load(entry["session_id"])
    assert session is not None
    return session


def contents(session: Session) -> list[str]:
    return [m["content"] for m in session.messages]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real "No space left on device" once it is filled."""
    with mounted_tmpfs(tmp_path / "disk", "64k") as mount_point:
        yield mount_point


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; delete the returned file to free them again."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_after_the_answer_keeps_the_reply(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tiny_disk / "sessions"
    agent = numbered_agent()
    core = Core(root, agent)
    core.send_message("desk", "one")
    filler = fill(tiny_disk)
    with caplog.at_level(logging.ERROR, logger="core.conversation"):
        outcome = core.run_turn("desk", "two")
    assert outcome.reply == "reply to two" and not outcome.saved
    assert "No space left on device" in str(outcome.save_error)
    active = core.active_session("desk")
    assert active is not None and active.agent_session_id == "agent-two"  # kept in memory
    assert active.session_id in caplog.text and "No space left" in caplog.text  # the detail
    assert core.unsaved_rooms() == ["desk"]
    assert contents(on_disk(root)) == ["one", "reply to one"]

    # Still full: the next turn goes on from the unsaved one, and fails to save again.
    assert core.send_message("desk", "three") == "reply to three"  # the spec's API: the reply
    assert agent.calls[-1].session_id == "agent-two"
    assert core.unsaved_rooms() == ["desk"]

    filler.unlink()
    outcome = core.run_turn("desk", "four")
    assert outcome.reply == "reply to four" and outcome.saved and core.unsaved_rooms() == []
    saved = on_disk(root)
    assert contents(saved) == [
        "one",
        "reply to one",
        "two",
        "reply to two",
        "three",
        "reply to three",
        "four",
        "reply to four",
    ]
    assert saved.agent_session_id == "agent-four"
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []


def test_the_next_save_that_works_in_any_room_saves_what_is_pending(tiny_disk: Path) -> None:
    root = tiny_disk / "sessions"
    core = Core(root, numbered_agent())
    core.send_message("desk", "one")
    filler = fill(tiny_disk)
    core.send_message("desk", "two")
    assert core.unsaved_rooms() == ["desk"]
    filler.unlink()
    core.send_message("kitchen", "hello")
    assert core.unsaved_rooms() == []
    assert contents(on_disk(root)) == ["one", "reply to one", "two", "reply to two"]


class BreakableStore(SessionStore):
    """A real store whose writes fail with ENOSPC while ``full`` is set (or only the index
    write fails, with ``index_only``): the disk failing, without a disk."""

    full = False
    index_only = False

    def _write_atomic(self, path: Path, *chunks: bytes) -> None:
        if self.full and (not self.index_only or path.name == "_index.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super()._write_atomic(path, *chunks)


def test_a_failed_turn_that_cannot_be_saved_is_kept_unsaved(tmp_path: Path) -> None:
    store = BreakableStore(tmp_path)
    agent = FakeAgent(lambda call, on_text: AgentResult(text="quota exceeded", is_error=True))
    core = Core(store, agent)
    store.full = True
    with pytest.raises(AgentError, match="quota exceeded"):
        core.run_turn("desk", "hi")
    assert core.unsaved_rooms() == ["desk"]
    active = core.active_session("desk")
    assert active is not None and active.messages[-1].get("is_error") is True
    store.full = False
    assert core.save_pending() == 0
    assert contents(on_disk(tmp_path))[0] == "hi"


def test_a_first_save_that_fails_is_caught_up_by_the_second(tmp_path: Path) -> None:
    store = BreakableStore(tmp_path)

    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        store.full = False  # the disk was freed while the agent worked
        return AgentResult(text="ok")

    core = Core(store, FakeAgent(behaviour))
    store.full = True
    outcome = core.run_turn("desk", "hi")
    assert (outcome.reply, outcome.saved, core.unsaved_rooms()) == ("ok", True, [])
    assert contents(on_disk(tmp_path)) == ["hi", "ok"]


def test_turns_saved_meanwhile_by_another_process_are_not_overwritten(tmp_path: Path) -> None:
    mine = BreakableStore(tmp_path)
    core = Core(mine, numbered_agent(), idle_timeout_s=0)
    core.send_message("desk", "one")
    mine.full = True
    core.send_message("desk", "two")  # unsaved here ...
    other = Core(SessionStore(tmp_path), numbered_agent(), idle_timeout_s=0)
    other.send_message("desk", "from elsewhere")  # ... while another process saves its turn
    mine.full = False
    core.send_message("desk", "three")
    store = SessionStore(tmp_path)
    kept = sorted(contents(s) for e in store.list() if (s := store.load(e["session_id"])))
    assert kept == [
        ["one", "reply to one", "from elsewhere", "reply to from elsewhere"],
        ["one", "reply to one", "two", "reply to two", "three", "reply to three"],
    ]
    assert contents(on_disk(tmp_path))[-1] == "reply to three"  # ours goes on in the room


def test_a_save_that_only_half_failed_is_completed_not_forked(tmp_path: Path) -> None:
    store = BreakableStore(tmp_path)
    core = Core(store, numbered_agent())
    core.send_message("desk", "one")
    store.full, store.index_only = True, True  # the session file is written, its index not
    core.send_message("desk", "two")
    assert core.unsaved_rooms() == ["desk"]
    store.full = False
    core.send_message("desk", "three")
    assert len(SessionStore(tmp_path).list()) == 1
    assert len(on_disk(tmp_path).messages) == 6


def test_a_reset_that_cannot_be_saved_says_so_and_changes_nothing(tmp_path: Path) -> None:
    store = BreakableStore(tmp_path)
    agent = numbered_agent()
    core = Core(store, agent)
    core.send_message("desk", "one")
    store.full = True
    with pytest.raises(StoreError, match="No space left"):
        core.reset("desk")
    store.full = False
    core.send_message("desk", "two")
    assert agent.calls[-1].session_id == "agent-one"  # still the same conversation
    core.reset("desk")
    assert core.active_session("desk") is None


def test_an_idle_unsaved_conversation_is_kept_while_the_disk_stays_full(tmp_path: Path) -> None:
    now = [1000.0]
    store = BreakableStore(tmp_path)
    agent = numbered_agent()
    core = Core(store, agent, idle_timeout_s=60, clock=lambda: now[0])
    store.full = True
    core.send_message("desk", "one")
    now[0] += 3600
    core.send_message("desk", "two")  # idle, but saving it still fails: carry on with it
    assert agent.calls[-1].session_id == "agent-one"
    store.full = False
    now[0] += 3600
    core.send_message("desk", "three")  # idle: it is saved, and a new conversation starts
    assert agent.calls[-1].session_id is None
    store_now = SessionStore(tmp_path)
    assert sorted(e["message_count"] for e in store_now.list()) == [2, 4]


def test_stopping_saves_what_the_disk_now_takes(tmp_path: Path) -> None:
    store = BreakableStore(tmp_path)
    core = Core(store, numbered_agent())
    store.full = True
    core.send_message("desk", "one")
    store.full = False  # freed before the assistant stops
    core.stop()
    assert core.unsaved_rooms() == []
    assert contents(on_disk(tmp_path)) == ["one", "reply to one"]


def test_stopping_with_turns_that_cannot_be_saved_says_they_are_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BreakableStore(tmp_path)
    core = Core(store, numbered_agent())
    store.full = True
    core.send_message("desk", "one")
    core.stop()
    assert core.unsaved_rooms() == ["desk"]
    assert "room(s) desk: its latest turns are lost as the assistant stops" in caplog.text


def test_stopping_beside_a_running_turn_leaves_its_room_to_that_turn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BreakableStore(tmp_path)
    core = Core(store, numbered_agent())
    store.full = True
    core.send_message("desk", "one")
    core.send_message("kitchen", "two")
    store.full = False
    with core.room_lock("desk"):  # a turn in the desk is still running
        core.stop()
    assert core.unsaved_rooms() == ["desk"]
    assert "room(s) desk: a turn still running saves its conversation" in caplog.text
    assert "lost" not in caplog.text
