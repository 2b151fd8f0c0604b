"""Messages in the form of the spec suites and the chat APIs: plain ``{"role", "content"}``
objects, optional keys optional, unknown keys kept, corrupt values refused, version-1 files
(``"text"``) read and migrated."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest

from core import Core
from core.errors import SessionFormatError, StoreError
from core.session import Session, check_message, make_message
from core.store import SessionStore
from tests.core.fakes.agents import FakeAgent

# A session file exactly as the previous version (format 1) wrote it.
VERSION_1_FILE = """{
 "version": 1,
 "session_id": "6a4a3f47-692c-4e12-b1d0-083de8a79a38",
 "room_id": "desk",
 "title": "hello",
 "created_at": 1700000000.5,
 "updated_at": 1700000000.5,
 "agent_session_id": "agent-1",
 "closed": false,
 "messages": [
  {
   "role": "user",
   "text": "hello",
   "timestamp": 1700000000.5
  },
  {
   "role": "assistant",
   "text": "You said: hello",
   "timestamp": 1700000000.5,
   "duration_ms": null,
   "cost_usd": 0.25,
   "is_error": false
  }
 ]
}"""
VERSION_1_ID = "6a4a3f47-692c-4e12-b1d0-083de8a79a38"


def test_a_session_is_built_from_the_spec_suites_form() -> None:
    sid = str(uuid.uuid4())
    s = Session(session_id=sid, title="Alpha", messages=[{"role": "user", "content": "hi"}])
    assert s.messages == [{"role": "user", "content": "hi"}]
    assert json.loads(json.dumps(s.messages)) == [{"role": "user", "content": "hi"}]
    # The spec suites write ``json.dumps(session.__dict__)`` to disk; that must work too.
    assert json.loads(json.dumps(s.__dict__))["messages"] == s.messages
    assert s.compact()["message_count"] == 1


def test_make_message_holds_only_the_keys_given() -> None:
    assert make_message("user", "hi") == {"role": "user", "content": "hi"}
    reply = make_message("assistant", "ok", timestamp=2.0, duration_ms=5, cost_usd=0.1)
    assert reply == {
        "role": "assistant",
        "content": "ok",
        "timestamp": 2.0,
        "duration_ms": 5,
        "cost_usd": 0.1,
    }
    with pytest.raises(SessionFormatError, match="role"):
        make_message("robot", "hi")  # type: ignore[arg-type]


def test_a_message_without_a_timestamp_leaves_updated_at_alone() -> None:
    s = Session(room_id="desk", created_at=5.0, updated_at=5.0)
    s.add({"role": "user", "content": "what time is it"})
    assert (s.updated_at, s.title) == (5.0, "what time is it")


def test_unknown_keys_survive_a_load_and_a_save(store: SessionStore) -> None:
    extra: dict[str, Any] = {
        "tool_calls": [{"name": "clock", "args": {"tz": "UTC"}}],
        "model": "m-1",
        "tokens": 12,
        "note": None,
    }
    s = Session(room_id="desk")
    s.add({"role": "user", "content": "hi", **extra})  # type: ignore[typeddict-item]
    store.save(s)
    loaded = store.load(s.session_id)
    assert loaded is not None
    assert loaded.messages == [{"role": "user", "content": "hi", **extra}]
    loaded.add(make_message("assistant", "hello"))
    store.save(loaded)
    again = SessionStore(store.root).load(s.session_id)
    assert again is not None and again.messages[0] == {"role": "user", "content": "hi", **extra}


def test_whose_agent_conversation_it_is_is_known_only_for_the_id_it_was_saved_with() -> None:
    s = Session(room_id="desk", agent_session_id="echo-id", agent_program="core.echo_agent")
    saved = s.to_dict()
    assert Session.from_dict(saved).agent_program == "core.echo_agent"
    # The release before keeps the key unread, and records Claude's id over it.
    older = {**saved, "agent_session_id": "claude-id"}
    assert Session.from_dict(older).agent_program is None  # not known: resumed as before
    assert "agent_program_of" not in Session.from_dict(saved).extra


DEEP: object = []
for _ in range(40):
    DEEP = [DEEP]

BAD_MESSAGES = {
    "not-an-object": "hi",
    "bad-role": {"role": "system", "content": "x"},
    "no-role": {"content": "x"},
    "content-not-text": {"role": "user", "content": ["x"]},
    "no-content": {"role": "user"},
    "nan-timestamp": {"role": "user", "content": "x", "timestamp": math.nan},
    "bool-timestamp": {"role": "user", "content": "x", "timestamp": True},
    "infinite-cost": {"role": "assistant", "content": "x", "cost_usd": math.inf},
    "fractional-duration": {"role": "assistant", "content": "x", "duration_ms": 1.5},
    "string-is-error": {"role": "assistant", "content": "x", "is_error": "no"},
    "number-interrupted": {"role": "assistant", "content": "x", "interrupted": 1},
    "nan-in-unknown-key": {"role": "user", "content": "x", "score": [1.0, math.nan]},
    "deep-unknown-key": {"role": "user", "content": "x", "tree": DEEP},
    "set-in-unknown-key": {"role": "user", "content": "x", "tags": {"a"}},
    "int-key-in-unknown-key": {"role": "user", "content": "x", "map": {1: "a"}},
}


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
def test_corrupt_messages_are_refused(kind: str) -> None:
    with pytest.raises(SessionFormatError) as excinfo:
        Session(room_id="desk", messages=[BAD_MESSAGES[kind]])  # type: ignore[list-item]
    assert isinstance(excinfo.value, ValueError) and isinstance(excinfo.value, StoreError)
    assert "message 0" in str(excinfo.value)


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
def test_a_save_never_writes_a_corrupt_message(store: SessionStore, kind: str) -> None:
    s = Session(room_id="desk")
    s.add(make_message("user", "fine"))
    store.save(s)
    before = (store.root / f"{s.session_id}.json").read_bytes()
    s.messages.append(BAD_MESSAGES[kind])  # type: ignore[arg-type]
    with pytest.raises(SessionFormatError):
        store.save(s)
    assert (store.root / f"{s.session_id}.json").read_bytes() == before


def test_a_version_1_file_is_read_and_migrated_on_the_next_save(store: SessionStore) -> None:
    path = store.root / f"{VERSION_1_ID}.json"
    path.write_text(VERSION_1_FILE)
    store.rebuild_index()
    loaded = store.load(VERSION_1_ID)
    assert loaded is not None
    assert loaded.messages == [
        {"role": "user", "content": "hello", "timestamp": 1700000000.5},
        {
            "role": "assistant",
            "content": "You said: hello",
            "timestamp": 1700000000.5,
            "cost_usd": 0.25,
            "is_error": False,
        },
    ]
    assert path.read_text() == VERSION_1_FILE  # reading changes nothing on disk
    store.save(loaded)
    on_disk = json.loads(path.read_text())
    assert on_disk["version"] == 2
    assert [sorted(m) for m in on_disk["messages"]] == [
        ["content", "role", "timestamp"],
        ["content", "cost_usd", "is_error", "role", "timestamp"],
    ]


def test_a_turn_keeps_what_a_newer_version_wrote(tmp_path: Path) -> None:
    """A newer version (or another tool) wrote keys this one does not know, at the top of the
    file too: a turn here appends to the conversation and keeps them, and the version it was
    written as, rather than rewrite the file as its own (older) version without them."""
    store = SessionStore(tmp_path / "sessions")
    newer = json.loads(VERSION_1_FILE) | {"version": 3, "summary": {"by": "v3", "n": [1, 2]}}
    newer["messages"] = [
        {"role": "user", "content": "hello", "mood": "curious"},
        {"role": "assistant", "content": "Hi.", "voice": "v3"},
    ]
    path = store.root / f"{VERSION_1_ID}.json"
    path.write_text(json.dumps(newer))
    store.rebuild_index()
    core = Core(store, FakeAgent(), idle_timeout_s=0)
    assert core.send_message("desk", "and again") == "Hello!"
    on_disk = json.loads(path.read_text())
    assert on_disk["version"] == 3
    assert on_disk["summary"] == {"by": "v3", "n": [1, 2]}
    assert on_disk["messages"][:2] == newer["messages"]
    assert [m["content"] for m in on_disk["messages"][2:]] == ["and again", "Hello!"]


def test_a_file_written_as_the_spec_suites_write_it_keeps_no_field_names_as_keys(
    store: SessionStore,
) -> None:
    """``json.dumps(session.__dict__)`` holds the fields' own names (``format_version``,
    ``extra``): they are this version's, not keys it does not know to carry along."""
    s = Session(room_id="desk", messages=[{"role": "user", "content": "hi"}])
    path = store.root / f"{s.session_id}.json"
    path.write_text(json.dumps(s.__dict__))
    loaded = store.load(s.session_id)
    assert loaded is not None and loaded.extra == {}
    store.save(loaded)
    on_disk = json.loads(path.read_text())
    assert "extra" not in on_disk and "format_version" not in on_disk
    assert on_disk["messages"] == [{"role": "user", "content": "hi"}]


def test_a_turn_continues_a_version_1_conversation(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions")
    (store.root / f"{VERSION_1_ID}.json").write_text(VERSION_1_FILE)
    store.rebuild_index()
    agent = FakeAgent()
    core = Core(store, agent, idle_timeout_s=0)
    assert core.send_message("desk", "and again") == "Hello!"
    assert agent.calls[0].session_id == "agent-1"  # resumed the old conversation
    data = json.loads((store.root / f"{VERSION_1_ID}.json").read_text())
    assert [m["content"] for m in data["messages"]] == [
        "hello",
        "You said: hello",
        "and again",
        "Hello!",
    ]
    assert all("text" not in m for m in data["messages"])


def test_a_text_key_beside_content_is_kept_as_an_unknown_key() -> None:
    message = check_message({"role": "user", "content": "shown", "text": "other"})
    assert message == {"role": "user", "content": "shown", "text": "other"}
