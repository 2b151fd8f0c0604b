"""The store never touches what is not its own.

It claims a directory only when it is new, empty, or marked as a store; a store written before
the marker existed is adopted by its names alone. Any other directory (a project, a home) is
refused with an error naming it, before a single file in it is renamed, deleted or re-moded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from core import Core
from core.errors import ConfigError, NotAStoreError, StoreError
from core.paths import MARKER_NAME
from core.store import SessionStore
from tests.core.conftest import REPO
from tests.core.fakes.agents import FakeAgent
from tests.core.test_messages import VERSION_1_FILE, VERSION_1_ID

Snapshot = dict[str, tuple[int, int, bytes | None]]


def snapshot(root: Path) -> Snapshot:
    """Every entry under ``root`` (itself included): mode, mtime and content."""
    out: Snapshot = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, content)
    return out


def make_project(root: Path) -> None:
    root.mkdir()
    os.chmod(root, 0o755)
    (root / "package.json").write_text('{"name": "my-app"}')
    (root / "tsconfig.json").write_text("{}")
    (root / "data.json").write_text("[1, 2, 3]")  # "data" would pass as a session id
    (root / ".build.tmp").write_text("half built")
    (root / "src").mkdir()
    (root / "src" / "index.ts").write_text("export {}")


def test_a_project_directory_is_refused_and_left_exactly_as_it_was(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_project(project)
    before = snapshot(project)
    with pytest.raises(NotAStoreError) as excinfo:
        SessionStore(project)
    message = str(excinfo.value)
    assert str(project) in message and "not a session store" in message
    assert ".build.tmp" in message  # names what it found
    assert "new or empty directory" in message  # and what to do
    assert snapshot(project) == before  # nothing renamed, deleted, created or re-moded


def test_the_refusal_is_a_config_error_and_a_store_error(tmp_path: Path) -> None:
    make_project(tmp_path / "p")
    with pytest.raises(ConfigError):
        Core(tmp_path / "p", FakeAgent())
    with pytest.raises(StoreError):
        Core(tmp_path / "p", FakeAgent())


def test_history_on_a_project_directory_refuses_and_changes_nothing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_project(project)
    before = snapshot(project)
    config = tmp_path / "config.toml"
    config.write_text(f"[session]\nstore_dir = {json.dumps(str(project))}\n")
    cli = Path(sys.executable).parent / "voice-assistant"
    done = subprocess.run(
        [str(cli), "history", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},  # never the real one
    )
    assert done.returncode != 0
    assert str(project) in done.stderr and "not a session store" in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(project) == before


def test_a_home_like_directory_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("alias ll='ls -l'")
    (home / "notes.json").write_text("{}")
    before = snapshot(home)
    with pytest.raises(NotAStoreError, match=r"notes\.json"):
        SessionStore(home)
    assert snapshot(home) == before


def test_a_file_as_store_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine")
    with pytest.raises(NotAStoreError, match="not a directory"):
        SessionStore(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "mine"


def test_a_new_directory_is_created_and_marked(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "new" / "sessions")
    assert (store.root / MARKER_NAME).is_file()
    assert SessionStore(store.root).root == store.root  # and is ours from then on


def test_an_empty_directory_is_claimed(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    store = SessionStore(tmp_path / "empty")
    assert (store.root / MARKER_NAME).is_file()


def test_a_marked_store_keeps_files_that_are_not_its_own_untouched(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s")
    (store.root / "README.txt").write_text("my notes about these conversations")
    (store.root / ".build.tmp").write_text("not a temporary of the store")
    core = Core(SessionStore(store.root), FakeAgent())
    core.send_message("desk", "hello")
    store.rebuild_index()
    assert (store.root / "README.txt").read_text() == "my notes about these conversations"
    assert (store.root / ".build.tmp").read_text() == "not a temporary of the store"


def write_version_1_store(root: Path) -> None:
    """A store as the previous version left it (no marker), with a leftover of a killed save
    and a file it had moved aside."""
    root.mkdir(mode=0o700)
    (root / ".lock").touch()
    (root / ".room-desk.lock").touch()
    (root / ".listener-desk.lock").write_text("4242\n")  # a listener's claim on its room
    (root / f"{VERSION_1_ID}.json").write_text(VERSION_1_FILE)
    (root / "_index.json").write_text(
        "[\n"
        '{"session_id":"6a4a3f47-692c-4e12-b1d0-083de8a79a38","room_id":"desk","title":"hello",'
        '"created_at":1700000000.5,"updated_at":1700000000.5,"message_count":2,"closed":false}'
        "\n]\n"
    )
    (root / f".{VERSION_1_ID}.json.x1y2z3ab.tmp").write_text("half a write")
    (root / f"{uuid.uuid4()}.json.corrupt-20240101T000000-000000001").write_text("{")


def test_a_store_of_the_previous_version_is_adopted(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    write_version_1_store(root)
    aside = next(root.glob("*.corrupt-*"))
    agent = FakeAgent()
    core = Core(root, agent, idle_timeout_s=0)
    assert (root / MARKER_NAME).is_file()
    assert not list(root.glob(".*.tmp"))  # its own leftover swept
    assert aside.read_text() == "{"  # kept for a person to look at
    assert core.send_message("desk", "still there?") == "Hello!"
    assert agent.calls[0].session_id == "agent-1"  # the conversation goes on
    assert [e["message_count"] for e in core.store.list()] == [4]


@pytest.mark.parametrize(
    "stray",
    ["notes.txt", "package.json", ".build.tmp", "not-a-uuid.json", "sub-directory/"],
)
def test_a_previous_version_store_with_a_stray_file_is_refused(tmp_path: Path, stray: str) -> None:
    root = tmp_path / "sessions"
    write_version_1_store(root)
    if stray.endswith("/"):
        (root / stray).mkdir()
    else:
        (root / stray).write_text("someone else's")
    before = snapshot(root)
    with pytest.raises(NotAStoreError, match=re.escape(stray.rstrip("/"))):
        SessionStore(root)
    assert snapshot(root) == before


def test_session_files_without_the_store_lock_are_not_adopted(tmp_path: Path) -> None:
    root = tmp_path / "looks-like-sessions"
    root.mkdir()
    (root / f"{uuid.uuid4()}.json").write_text("{}")
    before = snapshot(root)
    with pytest.raises(NotAStoreError, match=MARKER_NAME):  # says how to claim it anyway
        SessionStore(root)
    assert snapshot(root) == before


def test_a_symlink_as_the_marker_is_not_a_marker(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (tmp_path / "elsewhere").write_text("")
    (root / MARKER_NAME).symlink_to(tmp_path / "elsewhere")
    (root / "package.json").write_text("{}")
    with pytest.raises(NotAStoreError):
        SessionStore(root)


def test_processes_creating_one_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Each one waits at a shared start line, then opens the same new store."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from core.store import SessionStore\n"
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))\n"
        "SessionStore(sys.argv[2])\n"
    )
    for round_ in range(8):
        root = tmp_path / f"race-{round_}" / "sessions"
        start = time.time() + 0.5  # all started by then, then all at once
        procs = [
            subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", code, str(REPO), str(root), str(start)],
                stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=60)[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
        assert (root / MARKER_NAME).is_file()
