"""Spec 003, the session index, re-expressed for ``SessionStore``.

One JSON file per session; ``_index.json`` lists compact entries newest first. A save patches
its entry in place; a missing or corrupt index is rebuilt; ghost entries are pruned on write and
on read; concurrent saves lose nothing; writes leave no temporary file; the rebuild fallback runs
outside the lock, so it cannot deadlock.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

from core.paths import MARKER_NAME
from core.session import Session
from core.store import SessionStore


def make_session(title: str, updated_at: float, room: str = "desk") -> Session:
    return Session(
        session_id=str(uuid.uuid4()),
        room_id=room,
        title=title,
        messages=[{"role": "user", "content": "hi"}],  # the form the spec suites build
        created_at=updated_at - 1,
        updated_at=updated_at,
        agent_session_id=None,
    )


def write_file_only(store: SessionStore, session: Session) -> None:
    """Put a session file on disk behind the index's back (as another tool might)."""
    (store.root / f"{session.session_id}.json").write_bytes(session.to_json())


def read_index(store: SessionStore) -> list[dict[str, object]]:
    data = json.loads((store.root / "_index.json").read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


def write_index(store: SessionStore, entries: list[dict[str, object]]) -> None:
    (store.root / "_index.json").write_text(json.dumps(entries), encoding="utf-8")


def ghost_entry() -> dict[str, object]:
    return {
        "session_id": str(uuid.uuid4()),
        "room_id": "desk",
        "title": "Ghost",
        "created_at": 100.0,
        "updated_at": 150.0,
        "message_count": 1,
        "closed": False,
    }


def test_incremental_patch_keeps_other_entries_and_the_order(store: SessionStore) -> None:
    a, b, c = (
        make_session("Alpha", 100.0),
        make_session("Bravo", 200.0),
        make_session("Charlie", 300.0),
    )
    for s in (a, b, c):
        write_file_only(store, s)
    assert len(store.rebuild_index()) == 3

    b.title, b.updated_at = "Bravo Updated", 250.0
    planted = make_session("Planted", 275.0)
    write_file_only(store, planted)  # a rescan would find it; a patch must not
    store.save(b)

    index = read_index(store)
    by_id = {e["session_id"]: e for e in index}
    assert by_id[a.session_id]["title"] == "Alpha"
    assert by_id[c.session_id]["title"] == "Charlie"
    assert by_id[b.session_id]["title"] == "Bravo Updated"
    assert [e["session_id"] for e in index] == [c.session_id, b.session_id, a.session_id]
    assert planted.session_id not in by_id, "save rescanned the directory instead of patching"


def test_save_never_scans_the_session_files(store: SessionStore) -> None:
    sessions = [make_session(f"s{i}", 100.0 + i) for i in range(20)]
    for s in sessions:
        store.save(s)
    scans: list[int] = []

    class CountingStore(SessionStore):
        def _scan_locked(self):  # type: ignore[no-untyped-def]
            scans.append(1)
            return super()._scan_locked()

    counting = CountingStore(store.root)
    for s in sessions:
        s.updated_at += 1000
        counting.save(s)
    assert scans == []
    assert len(counting.list()) == 20


def test_new_session_is_added_to_an_existing_index(store: SessionStore) -> None:
    a, b = make_session("Alpha", 100.0), make_session("Bravo", 200.0)
    for s in (a, b):
        write_file_only(store, s)
    store.rebuild_index()
    c = make_session("Charlie", 300.0)
    store.save(c)
    assert {e["session_id"] for e in read_index(store)} == {
        a.session_id,
        b.session_id,
        c.session_id,
    }
    assert read_index(store)[0]["session_id"] == c.session_id


def test_incremental_update_prunes_stale_entries(store: SessionStore) -> None:
    ghost = ghost_entry()
    write_index(store, [ghost])
    a = make_session("Alpha", 200.0)
    store.save(a)
    ids = {e["session_id"] for e in read_index(store)}
    assert a.session_id in ids
    assert ghost["session_id"] not in ids, "an entry without a file must be pruned on write"


def test_entry_of_a_deleted_file_is_pruned_by_the_next_save(store: SessionStore) -> None:
    a, b = make_session("Alpha", 100.0), make_session("Bravo", 200.0)
    store.save(a)
    store.save(b)
    (store.root / f"{a.session_id}.json").unlink()
    b.updated_at = 300.0
    store.save(b)
    assert [e["session_id"] for e in read_index(store)] == [b.session_id]


def test_first_save_without_an_index_rebuilds_it(store: SessionStore) -> None:
    assert not (store.root / "_index.json").exists()
    a, other = make_session("Alpha", 100.0), make_session("Other", 50.0)
    write_file_only(store, other)
    store.save(a)
    assert (store.root / "_index.json").exists()
    assert [e["session_id"] for e in read_index(store)] == [a.session_id, other.session_id]


def test_corrupt_index_falls_back_to_a_full_rebuild(store: SessionStore) -> None:
    (store.root / "_index.json").write_text("THIS IS NOT JSON {{{", encoding="utf-8")
    a, other = make_session("Alpha", 100.0), make_session("Other", 50.0)
    write_file_only(store, other)
    store.save(a)
    index = read_index(store)
    assert {e["session_id"] for e in index} == {a.session_id, other.session_id}


def test_concurrent_saves_do_not_lose_data(store: SessionStore) -> None:
    a, b = make_session("Alpha", 100.0), make_session("Bravo", 200.0)
    for s in (a, b):
        write_file_only(store, s)
    store.rebuild_index()
    start = threading.Barrier(2, timeout=5)
    errors: list[BaseException] = []

    def update(session: Session, title: str, updated_at: float) -> None:
        try:
            start.wait()
            session.title, session.updated_at = title, updated_at
            store.save(session)
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=update, args=(a, "Alpha V2", 150.0)),
        threading.Thread(target=update, args=(b, "Bravo V2", 250.0)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    by_id = {e["session_id"]: e for e in read_index(store)}
    assert by_id[a.session_id]["title"] == "Alpha V2"
    assert by_id[b.session_id]["title"] == "Bravo V2"


def test_many_threads_and_store_objects_lose_nothing(store_dir: Path) -> None:
    stores = [SessionStore(store_dir) for _ in range(4)]  # separate caches, one directory
    saved: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(40):
            s = make_session(f"t{n}-{i}", 1000.0 + i)
            stores[n % 4].save(s)
            with lock:
                saved.append(s.session_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {e["session_id"] for e in read_index(stores[0])} == set(saved)
    assert len(saved) == 320


def test_writes_leave_no_temporary_file(store: SessionStore) -> None:
    a = make_session("Alpha", 100.0)
    store.save(a)  # first save: rebuild path

    def leftovers() -> list[str]:
        return [p.name for p in store.root.iterdir() if p.name.endswith(".tmp")]

    assert leftovers() == []
    a.title, a.updated_at = "Alpha V2", 200.0
    store.save(a)  # incremental path
    assert leftovers() == []
    assert sorted(p.name for p in store.root.iterdir()) == sorted(
        [".lock", MARKER_NAME, "_index.json", f"{a.session_id}.json"]
    )


def test_rebuild_fallback_runs_outside_the_lock(store: SessionStore) -> None:
    """The index read fails once; the save must fall back to a rebuild and not deadlock."""
    write_index(store, [ghost_entry()])
    b = make_session("Bravo", 200.0)
    failures: list[str] = []

    class FlakyIndexStore(SessionStore):
        def _read_index_bytes(self) -> bytes:
            if not failures:
                failures.append("failed once")
                raise OSError("simulated unreadable index")
            return super()._read_index_bytes()

    flaky = FlakyIndexStore(store.root)
    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            flaky.save(b)
            outcome.append("done")
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "save hung: the rebuild fallback ran under the held lock"
    assert outcome == ["done"] and failures == ["failed once"]
    assert [e["session_id"] for e in read_index(store)] == [b.session_id]


def test_listing_ignores_stale_index_entries(store: SessionStore) -> None:
    valid = make_session("Alpha", 200.0)
    write_file_only(store, valid)
    write_index(store, [ghost_entry(), dict(valid.compact())])
    rows = store.list()
    assert [e["session_id"] for e in rows] == [valid.session_id]
    # ... and the pruned index is written back.
    assert [e["session_id"] for e in read_index(store)] == [valid.session_id]


def test_list_sees_a_file_deleted_after_the_index_was_cached(store: SessionStore) -> None:
    a, b = make_session("Alpha", 100.0), make_session("Bravo", 200.0)
    store.save(a)
    store.save(b)
    assert len(store.list()) == 2
    (store.root / f"{b.session_id}.json").unlink()
    assert [e["session_id"] for e in store.list()] == [a.session_id]
