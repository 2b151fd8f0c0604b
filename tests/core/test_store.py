"""SessionStore robustness: damaged files, hostile ids, permissions, leftovers, round trips."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import uuid
from pathlib import Path

import pytest

import core.store
from core.errors import InvalidIdError, StoreError
from core.index import Index
from core.paths import (
    LOCK_NAME,
    MARKER_NAME,
    TMP_SUFFIX,
    default_store_dir,
    session_file,
    validate_room_id,
    validate_session_id,
)
from core.session import Session, make_message
from core.store import SessionStore


def session(room: str = "desk", text: str = "hello", at: float = 1000.0) -> Session:
    s = Session(room_id=room, created_at=at, updated_at=at)
    s.add(make_message("user", text, timestamp=at))
    s.add(make_message("assistant", "reply", timestamp=at + 1, duration_ms=5, cost_usd=0.5))
    return s


def corrupt_variants(victim: Session) -> dict[str, bytes]:
    """Damaged forms of ``victim``'s file (each keeps its own id, so only the damage counts)."""
    good = victim.to_dict()
    deep: object = []
    for _ in range(100):  # parses fine, but is not what a message holds
        deep = [deep]

    def variant(**changes: object) -> bytes:
        return json.dumps({**good, **changes}).encode()

    # json.dumps will not write an integer of 4300+ digits: put it in by hand.
    huge = variant(messages=[{"role": "assistant", "content": "x", "duration_ms": "@"}])

    return {
        "garbage": b"THIS IS NOT JSON {{{",
        "empty": b"",
        "truncated": victim.to_json()[:40],
        "top-level-list": b"[1, 2, 3]",
        "nan": variant(created_at=float("nan")),
        "infinity": variant(updated_at=float("inf")),
        "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
        "not-utf8": variant(title="TITLE").replace(b"TITLE", b"\xff\xfe"),
        "messages-not-a-list": variant(messages="hi"),
        "bad-role": variant(messages=[{"role": "root", "content": "x"}]),
        "bool-timestamp": variant(messages=[{"role": "user", "content": "x", "timestamp": True}]),
        "message-not-an-object": variant(messages=["hi"]),
        "content-not-text": variant(messages=[{"role": "user", "content": 5}]),
        "no-content": variant(messages=[{"role": "user"}]),
        "negative-duration": variant(
            messages=[{"role": "assistant", "content": "x", "duration_ms": -1}]
        ),
        "nan-in-an-unknown-key": variant(
            messages=[{"role": "user", "content": "x", "extra": float("nan")}]
        ),
        "deep-unknown-key": variant(messages=[{"role": "user", "content": "x", "extra": deep}]),
        "hostile-room": variant(room_id="../../etc"),
        "integer-too-long-to-read": huge.replace(b'"@"', b"9" * 5000),
        "integer-beyond-a-float": variant(created_at=10**400),
    }


KINDS = sorted(corrupt_variants(Session(room_id="desk")))


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupt_session_file_is_moved_aside(
    store: SessionStore, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    victim, bystander = session(at=100.0), session(at=200.0)
    store.save(victim)
    store.save(bystander)
    path = store.root / f"{victim.session_id}.json"
    damaged = corrupt_variants(victim)[kind]
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="core.store"):
        assert store.load(victim.session_id) is None
    moved = [p for p in store.root.iterdir() if ".corrupt-" in p.name]
    assert len(moved) == 1 and moved[0].name.startswith(f"{victim.session_id}.json.corrupt-")
    assert moved[0].read_bytes() == damaged  # kept for a person to inspect, not deleted
    assert not path.exists()
    assert f"moved it to {moved[0].name}" in caplog.text  # says where the conversation went
    loaded = store.load(bystander.session_id)
    assert loaded is not None and loaded.to_dict() == bystander.to_dict()
    assert [e["session_id"] for e in store.list()] == [bystander.session_id]


def test_a_byte_order_mark_is_not_damage(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Some editors save UTF-8 with a byte-order mark: such a file is read, not set aside
    (which started the room's conversation over)."""
    saved = session()
    store.save(saved)
    for path in (store.root / f"{saved.session_id}.json", store.root / "_index.json"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with caplog.at_level(logging.WARNING):
        fresh = SessionStore(store.root)
        assert [e["session_id"] for e in fresh.list()] == [saved.session_id]
        loaded = fresh.load(saved.session_id)
    assert loaded is not None and loaded.to_dict() == saved.to_dict()
    assert not [p for p in store.root.iterdir() if ".corrupt-" in p.name]
    assert caplog.text == ""  # nor is the index rebuilt


def test_a_file_holding_another_sessions_id_is_corrupt(store: SessionStore) -> None:
    a, b = session(at=1.0), session(at=2.0)
    store.save(a)
    (store.root / f"{b.session_id}.json").write_bytes(a.to_json())
    assert store.load(b.session_id) is None
    assert store.load(a.session_id) is not None


def test_a_symlink_out_of_the_store_is_not_followed(store: SessionStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    s = session()
    outside.write_bytes(s.to_json())
    (store.root / f"{s.session_id}.json").symlink_to(outside)
    assert store.load(s.session_id) is None
    assert outside.read_bytes() == s.to_json()  # the target is untouched


def test_rebuild_skips_and_quarantines_damaged_files(store: SessionStore) -> None:
    good = [session(at=float(i)) for i in range(3)]
    for s in good:
        store.save(s)
    bad_id = str(uuid.uuid4())
    (store.root / f"{bad_id}.json").write_bytes(b"[" * 50_000)
    (store.root / "not a session.json").write_text("{}")
    (store.root / "notes.txt").write_text("mine")
    entries = store.rebuild_index()
    assert {e["session_id"] for e in entries} == {s.session_id for s in good}
    assert any(p.name.startswith(f"{bad_id}.json.corrupt-") for p in store.root.iterdir())
    assert (store.root / "notes.txt").read_text() == "mine"
    assert (store.root / "not a session.json").exists()  # not ours to move


# An index entry as the store writes it, for its fields to be spoiled one at a time.
ENTRY = {
    "session_id": "0b6f4a52-5f3c-4a43-9d51-8c8e5e0d4a11",
    "room_id": "desk",
    "title": "",
    "created_at": 1.0,
    "updated_at": 1.0,
    "message_count": 0,
    "closed": False,
}


@pytest.mark.parametrize(
    "index",
    [
        b"{}",
        b'[{"session_id": "x"}]',
        b"[NaN]",
        b"[" * 100_000,
        b"\xff\xfe",
        b"[" + b"9" * 5000 + b"]",
        json.dumps([ENTRY | {"updated_at": 10**400}]).encode(),
        json.dumps([ENTRY | {"session_id": "../../etc/passwd"}]).encode(),
    ],
    ids=[
        "object",
        "missing-fields",
        "nan",
        "deep",
        "not-utf8",
        "integer-too-long-to-read",
        "integer-beyond-a-float",
        "hostile-id",
    ],
)
def test_a_corrupt_index_is_rebuilt_from_the_files(
    store: SessionStore, index: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    saved = [session(at=float(i)) for i in range(3)]
    for s in saved:
        store.save(s)
    (store.root / "_index.json").write_bytes(index)
    fresh = SessionStore(store.root)
    assert [e["session_id"] for e in fresh.list()] == [s.session_id for s in reversed(saved)]
    warned = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warned) == 1, warned  # once, not at each look before the rebuild
    assert json.loads((store.root / "_index.json").read_text())[0]["session_id"] == (
        saved[-1].session_id
    )


def test_sessions_round_trip_exactly(store: SessionStore) -> None:
    s = session(text="naïve café \ud800 odd surrogate, and emoji 🎤")
    s.agent_session_id = "0b1c2d3e-agent"
    store.save(s)
    loaded = SessionStore(store.root).load(s.session_id)
    assert loaded == s
    assert loaded is not None and loaded.messages[1].get("cost_usd") == 0.5


def test_session_is_constructible_from_the_public_keywords_alone() -> None:
    sid = str(uuid.uuid4())
    s = Session(
        session_id=sid,
        room_id="desk",
        title="t",
        messages=[],
        created_at=1.0,
        updated_at=2.0,
        agent_session_id=None,
    )
    assert s.compact() == {
        "session_id": sid,
        "room_id": "desk",
        "title": "t",
        "created_at": 1.0,
        "updated_at": 2.0,
        "message_count": 0,
        "closed": False,
    }
    assert uuid.UUID(Session(room_id="desk").session_id)  # generated ids are UUIDs
    from_dicts = Session(room_id="desk", messages=[{"role": "user", "content": "hi"}])
    assert from_dicts.messages == [{"role": "user", "content": "hi"}]


def test_load_of_an_unknown_session_is_none(store: SessionStore) -> None:
    assert store.load(str(uuid.uuid4())) is None


HOSTILE_IDS = ["../../etc", "/abs", "a/b", "", "x" * 10_000, "nul\x00byte", ".hidden", "..", 7]


@pytest.mark.parametrize("bad", HOSTILE_IDS, ids=lambda v: repr(v)[:20])
def test_hostile_ids_are_rejected_with_a_clear_error(store: SessionStore, bad: object) -> None:
    with pytest.raises(InvalidIdError) as excinfo:
        validate_room_id(bad)
    assert "room id" in str(excinfo.value)
    with pytest.raises(InvalidIdError, match="session id"):
        store.load(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # InvalidIdError is a ValueError
        Session(room_id=bad)  # type: ignore[arg-type]
    assert sorted(p.name for p in store.root.iterdir()) == [".lock", MARKER_NAME]


@pytest.mark.parametrize("good", ["desk", "kitchen.2", "ops@home", "a-b_c+d", "x" * 128])
def test_ordinary_room_ids_are_accepted(good: str) -> None:
    assert validate_room_id(good) == good


def test_session_ids_cannot_shadow_the_index_or_contain_dots() -> None:
    for bad in ["_index", "a.b", "x.json", "-rf"]:
        with pytest.raises(InvalidIdError):
            validate_session_id(bad)
    assert validate_session_id(str(uuid.UUID(int=5))) == str(uuid.UUID(int=5))


def test_a_new_store_directory_and_every_file_are_private(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "a" / "b" / "sessions")
    store.save(session())
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    for path in store.root.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_an_existing_empty_directory_keeps_its_mode_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    with caplog.at_level(logging.WARNING, logger="core.store_dir"):
        store = SessionStore(loose)
    store.save(session())
    assert stat.S_IMODE(loose.stat().st_mode) == 0o755  # the user's directory, the user's mode
    assert "chmod 700" in caplog.text
    for path in loose.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_stale_temporaries_are_swept_when_a_store_opens(store: SessionStore) -> None:
    s = session()
    store.save(s)
    leftovers = [
        store.root / f".{s.session_id}.json.abc123.tmp",
        store.root / "._index.json.k2j3h4k5.tmp",
        store.root / ".mtime-probe.tmp",
    ]
    for path in leftovers:
        path.write_text("half a write")
    not_ours = store.root / ".build.tmp"  # a temporary, but not one the store makes
    not_ours.write_text("someone else's")
    SessionStore(store.root)
    assert not any(p.exists() for p in leftovers)
    assert not_ours.read_text() == "someone else's"
    assert store.load(s.session_id) == s


def test_a_store_that_cannot_be_created_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match=r"session\.store_dir"):
        SessionStore(tmp_path / "file" / "sessions")


def test_default_location_follows_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_store_dir() == tmp_path / "state" / "voice-assistant" / "sessions"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "state" / "voice-assistant" / "sessions"
    assert default_store_dir() == expected
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # ignored, as the XDG spec says
    assert default_store_dir() == expected


def test_index_is_newest_first_and_tracks_the_latest_per_room(store: SessionStore) -> None:
    a, b, c = session("r1", at=1.0), session("r2", at=2.0), session("r1", at=3.0)
    for s in (a, b, c):
        store.save(s)
    assert [e["session_id"] for e in store.list()] == [c.session_id, b.session_id, a.session_id]
    latest = store.latest_for_room("r1")
    assert latest is not None and latest["session_id"] == c.session_id
    c.room_id, c.updated_at = "r3", 0.5  # moves room and back in time
    store.save(c)
    latest = store.latest_for_room("r1")
    assert latest is not None and latest["session_id"] == a.session_id
    assert store.latest_for_room("nobody") is None


def test_a_failed_write_raises_store_error_and_the_next_save_recovers(store_dir: Path) -> None:
    failures: list[str] = []

    class DiskFullOnce(SessionStore):
        def _write_index(self, index: Index) -> None:
            if not failures and len(index) == 2:
                failures.append("index")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            super()._write_index(index)

    store = DiskFullOnce(store_dir)
    first, second = session(at=1.0), session(at=2.0)
    store.save(first)
    with pytest.raises(StoreError, match=r"cannot save session .*No space left on device"):
        store.save(second)
    assert failures == ["index"]
    # The session file was written before the index failed: the next open finds it.
    on_disk = SessionStore(store_dir).list()
    assert [e["session_id"] for e in on_disk] == [second.session_id, first.session_id]
    assert store.list() == on_disk  # its cache does not hide what the disk holds
    second.updated_at = 3.0
    store.save(second)
    assert [e["session_id"] for e in SessionStore(store_dir).list()] == [
        second.session_id,
        first.session_id,
    ]


class KilledBeforeTheIndex(SessionStore):
    """A process killed after a session's file and before its index entry, once ``kill``."""

    kill = False

    def _write_index(self, index: Index) -> None:
        if self.kill:
            raise SystemExit("kill -9")
        super()._write_index(index)


class NoRoomForTheIndex(SessionStore):
    """A disk that is full for a big index, though a small session file fits, while ``full``."""

    def __init__(self, root: Path, *, full: bool = False) -> None:
        self.full = full  # (already when it opens)
        super().__init__(root)

    def _write_index(self, index: Index) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super()._write_index(index)


def killed_mid_save(store_dir: Path) -> Session:
    """A session saved, then given a turn whose save was killed before its index entry."""
    killed = KilledBeforeTheIndex(store_dir)
    killed.save(cut := session(at=1.0))
    cut.add(make_message("user", "the turn the index missed", timestamp=2.0))
    killed.kill = True
    with pytest.raises(SystemExit):
        killed.save(cut)
    return cut


def on_disk_index(store_dir: Path) -> list[dict[str, object]]:
    data = json.loads((store_dir / "_index.json").read_bytes())
    assert isinstance(data, list)
    return data


def test_a_session_a_crash_left_out_of_the_index_is_found_at_the_next_open(
    store_dir: Path,
) -> None:
    store = KilledBeforeTheIndex(store_dir)
    first, second = session(at=1.0), session(room="kitchen", text="my first words", at=2.0)
    store.save(first)
    store.kill = True  # the second session's file is on disk, its entry is not
    with pytest.raises(SystemExit):
        store.save(second)
    unreadable = session(room="hall", at=3.0)
    (store_dir / f"{unreadable.session_id}.json").write_text("{not json")
    reopened = SessionStore(store_dir)
    assert [e["session_id"] for e in reopened.list()] == [second.session_id, first.session_id]
    found = reopened.latest_for_room("kitchen")
    assert found is not None and found["session_id"] == second.session_id
    kept = reopened.load(second.session_id)
    assert kept is not None and kept.messages[0]["content"] == "my first words"
    assert not (store_dir / f"{unreadable.session_id}.json").exists()  # moved aside
    assert [p for p in store_dir.iterdir() if p.name.startswith(unreadable.session_id)]


@pytest.mark.parametrize(
    ("next_writer", "session_id"),
    [
        ("a new process", None),
        ("one open all along", None),
        ("one open all along", "x" * 128),  # the longest id there may be
    ],
)
def test_a_turn_a_crash_kept_from_the_index_is_listed_from_then_on(
    store_dir: Path, next_writer: str, session_id: str | None
) -> None:
    store = KilledBeforeTheIndex(store_dir)
    older, talked = session(room="hall", at=1.0), session(at=2.0)
    if session_id is not None:
        talked.session_id = session_id
    store.save(older)
    store.save(talked)
    other = SessionStore(store_dir)
    talked.add(make_message("user", "and the tests", timestamp=3.0))
    store.kill = True
    with pytest.raises(SystemExit):
        store.save(talked)
    assert on_disk_index(store_dir)[0]["message_count"] == 2
    # The next writer patches the index after it, so the file is then older than the index.
    if next_writer == "a new process":
        other = SessionStore(store_dir)
    later = session(room="kitchen", at=4.0)
    other.save(later)
    expected = [later.compact(), talked.compact(), older.compact()]
    assert on_disk_index(store_dir) == expected
    assert SessionStore(store_dir).list() == expected


def test_finishing_a_killed_save_keeps_what_other_processes_saved_meanwhile(
    store_dir: Path,
) -> None:
    listening = SessionStore(store_dir)  # open all along, its listing of the files cached
    listening.save(first := session(room="hall", at=1.0))
    asking = KilledBeforeTheIndex(store_dir)
    asking.save(saved := session(room="kitchen", at=2.0))
    asking.kill = True
    with pytest.raises(SystemExit):
        asking.save(cut := session(room="porch", at=3.0))
    listening.save(last := session(room="desk", at=4.0))
    expected = [last.compact(), cut.compact(), saved.compact(), first.compact()]
    assert on_disk_index(store_dir) == expected
    assert listening.list() == expected


def test_saves_that_fail_one_after_another_are_all_finished_once_one_succeeds(
    store_dir: Path,
) -> None:
    store = NoRoomForTheIndex(store_dir)
    one, two = session(room="hall", at=1.0), session(at=2.0)
    store.save(one)
    store.save(two)
    store.full = True
    for at, s in ((3.0, one), (3.5, two)):
        s.add(make_message("user", "more", timestamp=at))
        with pytest.raises(StoreError, match="No space left on device"):
            store.save(s)
    store.full = False
    store.save(three := session(room="porch", at=4.0))
    expected = [three.compact(), two.compact(), one.compact()]
    assert [e["message_count"] for e in expected] == [2, 3, 3]
    assert on_disk_index(store_dir) == expected == SessionStore(store_dir).list()


def test_a_killed_save_whose_file_is_damaged_leaves_no_entry(store_dir: Path) -> None:
    SessionStore(store_dir).save(kept := session(room="hall", at=0.5))
    damaged = killed_mid_save(store_dir)
    session_file(store_dir, damaged.session_id).write_text("{not json")
    reopened = SessionStore(store_dir)
    assert on_disk_index(store_dir) == [kept.compact()]  # as finishing wrote it
    assert reopened.list() == [kept.compact()]


def test_a_killed_save_is_finished_once_the_disk_has_room_again(store_dir: Path) -> None:
    cut = killed_mid_save(store_dir)
    store = NoRoomForTheIndex(store_dir, full=True)  # finishing it fails as it opens, ...
    with pytest.raises(StoreError, match="No space left on device"):
        store.save(failed := session(room="kitchen", at=3.0))  # ... and at this save
    store.full = False
    store.save(later := session(room="hall", at=4.0))
    # Both the killed save and the failed one (its file was written) are finished.
    assert on_disk_index(store_dir) == [later.compact(), failed.compact(), cut.compact()]


def test_a_killed_save_whose_file_cannot_be_read_for_now_stays_marked(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SessionStore(store_dir)  # open all along
    cut = killed_mid_save(store_dir)
    read = core.store._read_file
    failed: list[Path] = []

    def flaky(path: Path) -> bytes:
        if path.name == f"{cut.session_id}.json" and not failed:
            failed.append(path)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return read(path)

    monkeypatch.setattr(core.store, "_read_file", flaky)
    store.save(session(room="kitchen", at=3.0))  # its own save goes through
    assert failed
    assert (store_dir / LOCK_NAME).read_bytes() == cut.session_id.encode()
    store.save(session(room="hall", at=4.0))
    assert [e for e in on_disk_index(store_dir) if e["session_id"] == cut.session_id] == [
        cut.compact()
    ]


@pytest.mark.parametrize("mark", ["junk \xff", "a session whose file was never written"])
def test_a_mark_that_names_no_written_session_is_cleared(store_dir: Path, mark: str) -> None:
    store = SessionStore(store_dir)
    saved = session(at=1.0)
    store.save(saved)
    if mark.startswith("a session"):
        mark = str(uuid.uuid4())  # killed before its first file was in place
    (store_dir / LOCK_NAME).write_bytes(mark.encode("utf-8", "surrogateescape"))
    assert SessionStore(store_dir).list() == [saved.compact()]
    assert (store_dir / LOCK_NAME).read_bytes() == b""  # read once, then cleared


def test_a_lock_file_that_is_a_fifo_is_set_aside(store_dir: Path) -> None:
    SessionStore(store_dir)
    (store_dir / LOCK_NAME).unlink()
    os.mkfifo(store_dir / LOCK_NAME)
    store = SessionStore(store_dir)
    store.save(saved := session())
    assert store.list() == [saved.compact()]
    assert (store_dir / LOCK_NAME).is_file()
    assert [p for p in store_dir.iterdir() if p.name.startswith(f"{LOCK_NAME}.corrupt-")]


@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_a_write_that_fails_midway_leaves_no_temporary_file(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    store = SessionStore(store_dir)
    store.save(session(at=1.0))

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, fails, full)  # the temporary file is written by then
    with pytest.raises(StoreError, match="No space left on device"):
        store.save(session(at=2.0))
    monkeypatch.undo()
    assert [p.name for p in store_dir.rglob(f"*{TMP_SUFFIX}")] == []  # before any sweep
    assert len(SessionStore(store_dir).list()) == 1


def test_a_store_that_cannot_be_written_can_still_be_read(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = session(at=1.0)
    SessionStore(store_dir).save(saved)
    # What a crash left: a temporary file, and a session its index entry never reached.
    (store_dir / f".{saved.session_id}.json.x1{TMP_SUFFIX}").write_text("half")
    unlisted = session(room="kitchen", at=2.0)
    session_file(store_dir, unlisted.session_id).write_bytes(unlisted.to_json())
    real_open = os.open

    def read_only(path: object, flags: int, *args: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    def no_unlink(path: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "open", read_only)  # a disk the kernel remounted read-only
    monkeypatch.setattr(os, "unlink", no_unlink)
    store = SessionStore(store_dir)
    assert [e["session_id"] for e in store.list()] == [unlisted.session_id, saved.session_id]
    with pytest.raises(StoreError, match="Read-only file system"):
        store.save(session(at=2.0))
