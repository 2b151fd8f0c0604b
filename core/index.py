"""The in-memory copy of ``_index.json``: compact entries, newest first, patched in place.

Saving one session must not cost a rescan, nor a re-encoding of thousands of entries, so each
entry is kept with its encoded line, in order; writing the index is then one join. The file
holds one entry per line inside a JSON list, which stays a plain JSON document for any reader.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping

from core.errors import SessionFormatError
from core.session import IndexEntry, dump_json, entry_from_dict, parse_json


def _order_key(entry: IndexEntry) -> tuple[float, str]:
    return (-entry["updated_at"], entry["session_id"])


class Index:
    """Entries sorted newest first, each with its pre-encoded JSON line."""

    def __init__(
        self, entries: Iterable[IndexEntry] = (), lines: Mapping[str, bytes] | None = None
    ) -> None:
        self._entries: dict[str, IndexEntry] = {}
        for entry in entries:
            if entry["session_id"] not in self._entries:  # first (newest) copy wins
                self._entries[entry["session_id"]] = entry
        # _order and _encoded are kept in lockstep: the ids, and their JSON lines.
        self._order = sorted(self._entries, key=lambda sid: _order_key(self._entries[sid]))
        known = lines or {}
        self._encoded = [known.get(sid) or dump_json(self._entries[sid]) for sid in self._order]
        self._latest_by_room: dict[str, str] = {}
        for sid in reversed(self._order):
            self._latest_by_room[self._entries[sid]["room_id"]] = sid

    @classmethod
    def parse(cls, data: bytes) -> Index:
        """Read ``_index.json``; raises :class:`SessionFormatError` when it is not one."""
        raw = parse_json(data, "session index")
        if not isinstance(raw, list):
            raise SessionFormatError(f"session index must be a list, got {type(raw).__name__}")
        entries = [entry_from_dict(item) for item in raw]
        # Our own files hold one compact entry per line: keep those lines rather than encode
        # thousands of entries again (an entry that differs from its line is encoded afresh).
        lines: dict[str, bytes] = {}
        split = data.split(b"\n")
        if split[:1] == [b"["] and split[-2:] == [b"]", b""] and len(split) == len(raw) + 3:
            for item, entry, line in zip(raw, entries, split[1:-2], strict=True):
                if item == entry:
                    lines.setdefault(entry["session_id"], line.removesuffix(b","))
        return cls(entries, lines)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    def get(self, session_id: str) -> IndexEntry | None:
        entry = self._entries.get(session_id)
        return None if entry is None else IndexEntry(**entry)

    def entries(self) -> list[IndexEntry]:
        """Copies, newest first."""
        return [IndexEntry(**self._entries[sid]) for sid in self._order]

    def session_ids(self) -> list[str]:
        return list(self._order)

    def latest_for_room(self, room_id: str) -> IndexEntry | None:
        sid = self._latest_by_room.get(room_id)
        return None if sid is None else IndexEntry(**self._entries[sid])

    def upsert(self, entry: IndexEntry) -> None:
        """Insert or replace one entry, keeping the order: O(log n) plus one list move."""
        entry = IndexEntry(**entry)  # our own copy: the caller's dict may change later
        sid = entry["session_id"]
        old = self._entries.get(sid)
        if old is not None:
            self._pop(old)
        self._entries[sid] = entry
        position = self._position(entry)
        self._order.insert(position, sid)
        self._encoded.insert(position, dump_json(entry))
        if old is not None and self._latest_by_room.get(old["room_id"]) == sid:
            self._refresh_room(old["room_id"])  # usually O(1): the entry just moved to the front
        latest = self._latest_by_room.get(entry["room_id"])
        if latest is None or _order_key(entry) < _order_key(self._entries[latest]):
            self._latest_by_room[entry["room_id"]] = sid

    def remove(self, session_id: str) -> bool:
        entry = self._entries.get(session_id)
        if entry is None:
            return False
        self._pop(entry)
        del self._entries[session_id]
        if self._latest_by_room.get(entry["room_id"]) == session_id:
            self._refresh_room(entry["room_id"])
        return True

    def prune(self, exists: Callable[[str], bool]) -> list[str]:
        """Drop entries whose session file is gone; returns their ids."""
        gone = [sid for sid in self._order if not exists(sid)]
        for sid in gone:
            self.remove(sid)
        return gone

    def to_json(self) -> bytes:
        return b"".join(self.json_chunks())

    def json_chunks(self) -> list[bytes]:
        """The document in pieces, so a writer need not copy megabytes into one buffer."""
        return [b"[\n", b",\n".join(self._encoded), b"\n]\n"]

    def _pop(self, entry: IndexEntry) -> None:
        position = self._position(entry)
        del self._order[position]
        del self._encoded[position]

    def _position(self, entry: IndexEntry) -> int:
        key = _order_key(entry)
        return bisect.bisect_left(self._order, key, key=lambda sid: _order_key(self._entries[sid]))

    def _refresh_room(self, room: str) -> None:
        # Rare (an entry moved back in time, changed room or left): one scan of the order.
        sid = next((s for s in self._order if self._entries[s]["room_id"] == room), None)
        if sid is None:
            self._latest_by_room.pop(room, None)
        else:
            self._latest_by_room[room] = sid
