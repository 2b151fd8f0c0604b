"""The in-memory index against a plain reference model, under random operations."""

from __future__ import annotations

import json
import random
import uuid

from core.index import Index
from core.session import IndexEntry


def entry(sid: str, room: str, updated_at: float) -> IndexEntry:
    return IndexEntry(
        session_id=sid,
        room_id=room,
        title=f"t-{sid[:4]}",
        created_at=0.0,
        updated_at=updated_at,
        message_count=1,
        closed=False,
    )


def test_random_upserts_and_removals_match_a_reference_model() -> None:
    rng = random.Random(7)
    index = Index()
    model: dict[str, IndexEntry] = {}
    ids = [str(uuid.uuid4()) for _ in range(60)]
    for step in range(3000):
        sid = rng.choice(ids)
        if rng.random() < 0.2:
            assert index.remove(sid) == (sid in model)
            model.pop(sid, None)
        else:
            e = entry(sid, f"room-{rng.randrange(5)}", float(rng.randrange(200)))
            index.upsert(e)
            model[sid] = e
        if step % 50 == 0 or step == 2999:
            expected = sorted(model.values(), key=lambda e: (-e["updated_at"], e["session_id"]))
            assert index.entries() == expected
            for room in (f"room-{r}" for r in range(5)):
                newest = next((e for e in expected if e["room_id"] == room), None)
                assert index.latest_for_room(room) == newest
            assert json.loads(index.to_json()) == expected
            assert Index.parse(index.to_json()).entries() == expected


def test_parse_reuses_its_own_lines_and_survives_foreign_formatting() -> None:
    entries = [entry(str(uuid.uuid4()), "desk", float(i)) for i in range(5)]
    ours = Index(entries).to_json()
    assert Index.parse(ours).to_json() == ours  # byte for byte
    foreign = json.dumps(list(reversed(entries)), indent=4).encode()  # another writer's layout
    reparsed = Index.parse(foreign)
    assert reparsed.entries() == Index(entries).entries()
    assert json.loads(reparsed.to_json()) == json.loads(ours)


def test_duplicate_entries_keep_the_first() -> None:
    sid = str(uuid.uuid4())
    data = json.dumps([entry(sid, "a", 2.0), entry(sid, "b", 1.0)]).encode()
    index = Index.parse(data)
    assert [(e["room_id"], e["updated_at"]) for e in index.entries()] == [("a", 2.0)]
