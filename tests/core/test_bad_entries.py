"""One bad entry never wedges a room or the store.

Each entry below once stopped every turn of a room (or of every room) for good. Now it is moved
aside or skipped with a warning, and the turn goes on: the user's words are saved and answered.

Unreadable files: the tests may run as root, and root reads a mode-000 file. So those cases
run the turn in a child process without the capabilities that let root ignore file modes
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), where mode 000 means unreadable as for any user (a
test checks that first). A FIFO stands in for an unreadable file in-process (opening one for
reading used to block for ever).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import threading
from pathlib import Path

import pytest

from core import Core
from core.paths import LOCK_NAME, MARKER_NAME, room_lock_name
from core.session import Session, make_message
from core.store import SessionStore
from tests.core.conftest import FAST_PYTHON, REPO
from tests.core.fakes.agents import FakeAgent

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def drop_root_file_override() -> None:
    """``preexec_fn``: drop the two capabilities from the bounding set, so the program the
    child runs has them in neither its permitted nor its effective set, even as uid 0."""
    if os.geteuid() != 0:
        return  # an ordinary user never had them
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_without_file_override(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FAST_PYTHON, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=drop_root_file_override,
    )


TURN_AS_CHILD = """
import logging, sys
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
from core import Core
from core.agent import AgentResult

class Echo:
    def run(self, prompt, *, session_id=None, on_text=None):
        return AgentResult(f"You said: {prompt}", "agent-2")

core = Core(sys.argv[2], Echo())
print(core.send_message(sys.argv[3], sys.argv[4]))
"""


def users_words(root: Path) -> list[str]:
    """Every user message saved in the store's session files."""
    words = []
    for path in root.glob("*.json"):
        if path.name != "_index.json" and path.is_file():
            words += [m["content"] for m in json.loads(path.read_bytes())["messages"]]
    return words


def turn(root: Path, room: str = "desk", text: str = "are you there") -> str:
    """A turn in a fresh ``Core`` (as a new ``ask`` process would run it)."""
    return Core(root, FakeAgent(), idle_timeout_s=0).send_message(room, text)


def turn_in_child(root: Path, room: str, text: str) -> subprocess.CompletedProcess[str]:
    """One turn in a child for which mode 000 means unreadable (see above)."""
    return run_without_file_override("-c", TURN_AS_CHILD, str(REPO), str(root), room, text)


def test_the_child_really_cannot_read_a_mode_000_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    os.chmod(secret, 0)
    child = run_without_file_override("-c", f"open({str(secret)!r}).read()")
    assert child.returncode == 1 and "PermissionError" in child.stderr, child.stderr


def first_session_file(root: Path) -> Path:
    return next(p for p in root.glob("*.json") if p.name != "_index.json")


# -- a session file that is not a readable file ------------------------------------------


def test_a_directory_named_like_the_rooms_session(tmp_path: Path) -> None:
    turn(tmp_path, text="first")
    path = first_session_file(tmp_path)
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("kept")
    assert turn(tmp_path, text="second") == "Hello!"
    assert "second" in users_words(tmp_path)
    aside = next(tmp_path.glob(f"{path.name}.corrupt-*"))
    assert (aside / "inside").read_text() == "kept"  # moved aside, not deleted


def test_reset_with_a_directory_named_like_the_rooms_session(tmp_path: Path) -> None:
    turn(tmp_path, text="first")
    path = first_session_file(tmp_path)
    path.unlink()
    path.mkdir()
    core = Core(tmp_path, FakeAgent())
    core.reset("desk")  # nothing left to close: no error
    assert core.active_session("desk") is None
    assert next(tmp_path.glob(f"{path.name}.corrupt-*")).is_dir()


def test_a_directory_where_a_save_must_go(tmp_path: Path) -> None:
    """Nothing reads it first (the index does not list it): the write itself meets it."""
    store = SessionStore(tmp_path)
    session = Session(room_id="desk")
    session.add(make_message("user", "hello"))
    path = tmp_path / f"{session.session_id}.json"
    path.mkdir()
    store.save(session)
    assert store.load(session.session_id) == session
    assert next(tmp_path.glob(f"{path.name}.corrupt-*")).is_dir()


def test_a_fifo_as_the_rooms_session_with_no_index(tmp_path: Path) -> None:
    turn(tmp_path, text="first")
    path = first_session_file(tmp_path)
    path.unlink()
    os.mkfifo(path)
    (tmp_path / "_index.json").unlink()  # every room now rebuilds: it reads every file
    replies: list[str] = []

    def two_turns() -> None:  # opening a FIFO to read it blocked for ever: bound the wait
        replies.append(turn(tmp_path, room="kitchen", text="other room"))
        replies.append(turn(tmp_path, text="second"))

    worker = threading.Thread(target=two_turns, daemon=True)
    worker.start()
    worker.join(30)
    assert replies == ["Hello!", "Hello!"], "a turn hung on the FIFO or failed"
    assert {"other room", "second"} <= set(users_words(tmp_path))
    assert next(tmp_path.glob(f"{path.name}.corrupt-*")).is_fifo()


def test_an_unreadable_session_file(tmp_path: Path) -> None:
    turn(tmp_path, text="first")
    path = first_session_file(tmp_path)
    os.chmod(path, 0)
    child = turn_in_child(tmp_path, "desk", "and now")
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "You said: and now"
    assert "Traceback" not in child.stderr and "cannot be read" in child.stderr
    assert "and now" in users_words(tmp_path)
    assert next(tmp_path.glob(f"{path.name}.corrupt-*")).exists()


def test_an_unreadable_session_file_and_no_index(tmp_path: Path) -> None:
    turn(tmp_path, room="kitchen", text="first")
    path = first_session_file(tmp_path)
    os.chmod(path, 0)
    (tmp_path / "_index.json").unlink()
    child = turn_in_child(tmp_path, "desk", "another room")
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "You said: another room"
    assert "another room" in users_words(tmp_path)


@pytest.mark.parametrize("index", ["listed", "unlisted", "no-index"])
def test_a_session_file_with_a_number_python_will_not_read(tmp_path: Path, index: str) -> None:
    """Valid JSON, but json.loads refuses an integer of 4300+ digits with a plain ValueError:
    that stopped every turn of the room (or, unlisted or with no index, opening the store)."""
    turn(tmp_path, text="first")
    path = first_session_file(tmp_path)
    saved = json.loads(path.read_bytes())
    saved["messages"][-1]["duration_ms"] = "@"
    damaged = json.dumps(saved).replace('"@"', "9" * 5000).encode()
    path.write_bytes(damaged)
    if index == "unlisted":  # (a hand-copied file, or a crash between file and index)
        (tmp_path / "_index.json").write_text("[]")
    elif index == "no-index":
        (tmp_path / "_index.json").unlink()
    assert turn(tmp_path, text="second") == "Hello!"
    assert users_words(tmp_path) == ["second", "Hello!"]
    assert next(tmp_path.glob(f"{path.name}.corrupt-*")).read_bytes() == damaged


# -- the index and the locks ---------------------------------------------------------------


def test_the_index_as_a_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    turn(tmp_path, text="first")
    (tmp_path / "_index.json").unlink()
    (tmp_path / "_index.json").mkdir()
    with caplog.at_level(logging.WARNING):
        assert turn(tmp_path, room="kitchen", text="hello kitchen") == "Hello!"
    assert (tmp_path / "_index.json").is_file()
    assert next(tmp_path.glob("_index.json.corrupt-*")).is_dir()
    assert sorted(e["room_id"] for e in SessionStore(tmp_path).list()) == ["desk", "kitchen"]
    assert "moved it to _index.json.corrupt-" in caplog.text


def test_an_index_that_gives_a_room_another_rooms_conversation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Edited by hand, or copied with another store's files: the index names dave's
    conversation as erin's. Erin's words must not go into it, nor her reset close it."""
    turn(tmp_path, room="dave", text="for dave")
    dave = first_session_file(tmp_path)
    index = tmp_path / "_index.json"
    entries = json.loads(index.read_bytes())
    entries[0]["room_id"] = "erin"
    index.write_text(json.dumps(entries))
    core = Core(tmp_path, FakeAgent())
    core.reset("erin")
    with caplog.at_level(logging.WARNING):
        assert core.send_message("erin", "for erin") == "Hello!"
    saved = json.loads(dave.read_bytes())
    assert [m["content"] for m in saved["messages"]] == ["for dave", "Hello!"]
    assert saved["closed"] is False
    assert "which is room dave's: rebuilding the index" in caplog.text
    rooms = {e["session_id"]: e["room_id"] for e in SessionStore(tmp_path).list()}
    assert sorted(rooms.values()) == ["dave", "erin"]
    assert rooms[dave.stem] == "dave"
    assert turn(tmp_path, room="dave", text="dave again") == "Hello!"
    assert "dave again" in [m["content"] for m in json.loads(dave.read_bytes())["messages"]]


@pytest.mark.parametrize("name", [room_lock_name("desk"), LOCK_NAME])
def test_a_lock_file_as_a_directory(tmp_path: Path, name: str) -> None:
    SessionStore(tmp_path)
    lock = tmp_path / name
    lock.unlink(missing_ok=True)
    lock.mkdir()
    assert turn(tmp_path, text="hello") == "Hello!"
    assert "hello" in users_words(tmp_path)
    assert lock.is_file() and next(tmp_path.glob(f"{name}.corrupt-*")).is_dir()


def test_an_unreadable_room_lock(tmp_path: Path) -> None:
    turn(tmp_path, text="first")
    os.chmod(tmp_path / room_lock_name("desk"), 0)
    child = turn_in_child(tmp_path, "desk", "still here")
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "You said: still here"
    assert "Traceback" not in child.stderr
    assert "still here" in users_words(tmp_path)


def test_the_marker_stays_after_bad_entries_are_handled(tmp_path: Path) -> None:
    turn(tmp_path)
    (tmp_path / "_index.json").unlink()
    (tmp_path / "_index.json").mkdir()
    turn(tmp_path)
    assert (tmp_path / MARKER_NAME).is_file()
