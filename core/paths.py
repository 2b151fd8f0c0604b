"""Where sessions live on disk, the names the store gives its files, and the id checks that
keep every file inside that place.

Room ids and session ids reach the store from transcripts, CLI flags and JSON files, so each
one is checked against a small whitelist before it is used anywhere near a path: nothing that
passes can name a parent directory, an absolute path, a sub-directory or a hidden file.

The store touches only names it gives its own files (:func:`is_own_name`); everything else in
its directory is left alone.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from core.errors import InvalidIdError

MAX_ID_LENGTH = 128

# Session ids become file names (``<id>.json``): letters, digits, ``_`` and ``-`` only, so an id
# can never be ``..``, contain a separator, or collide with ``_index.json`` (first char alnum).
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# Room ids are names people choose ("kitchen", "desk.2", "ops@home"); still no separators.
_ROOM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]*")


def _check(value: object, pattern: re.Pattern[str], what: str, allowed: str) -> str:
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdError(f"{what} is empty; give a short name such as 'default'")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(
            f"{what} is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed"
        )
    if not pattern.fullmatch(value):
        raise InvalidIdError(
            f"{what} {value[:40]!r} is not allowed: use {allowed}, starting with a letter or digit"
        )
    return value


def validate_room_id(room_id: object) -> str:
    """Return ``room_id`` unchanged, or raise :class:`InvalidIdError` saying what is wrong."""
    return _check(room_id, _ROOM_ID, "room id", "ASCII letters, digits and . _ - @ +")


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` unchanged, or raise :class:`InvalidIdError` saying what is wrong."""
    return _check(session_id, _SESSION_ID, "session id", "letters, digits, _ and -")


def is_valid_session_id(session_id: object) -> bool:
    return _is_valid(session_id, _SESSION_ID)


def is_valid_room_id(room_id: object) -> bool:
    return _is_valid(room_id, _ROOM_ID)


def _is_valid(value: object, pattern: re.Pattern[str]) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and pattern.fullmatch(value) is not None
    )


# The store's own names.
MARKER_NAME = ".voice-assistant-store"  # "this directory is a session store"
INDEX_NAME = "_index.json"
LOCK_NAME = ".lock"
PROBE_NAME = ".mtime-probe.tmp"
TMP_SUFFIX = ".tmp"
ASIDE_INFIX = ".corrupt-"
# A temporary of an atomic write: ".<target>.<mkstemp's random part>.tmp".
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{1,16}\.tmp")
# A room's per-turn lock, and (the "safety" branch) a listener's claim on the room.
_ROOM_LOCK = re.compile(r"\.(?:room|listener|agent)-(?P<room>.+)\.lock")
_ASIDE = re.compile(r"(?P<name>.+)\.corrupt-\d{8}T\d{6}-\d{9}")


def room_lock_name(room_id: str) -> str:
    return f".room-{validate_room_id(room_id)}.lock"


def agent_record_name(room_id: str) -> str:
    """Where the room's running agent is recorded (see :mod:`core.ledger`)."""
    return f".agent-{validate_room_id(room_id)}.lock"


def session_id_of(name: str) -> str | None:
    """The session id of a session file name (``<id>.json``), else ``None``."""
    if not name.endswith(".json"):
        return None
    session_id = name.removesuffix(".json")
    return session_id if is_valid_session_id(session_id) else None


def is_own_temporary(name: str) -> bool:
    """A temporary file of the store's own atomic writes (safe to sweep when none is running)."""
    if name == PROBE_NAME:
        return True
    match = _TEMPORARY.fullmatch(name)
    return match is not None and (
        match["target"] == INDEX_NAME or session_id_of(match["target"]) is not None
    )


def is_own_name(name: str, *, uuids_only: bool = False) -> bool:
    """A name the store gives its files: marker, index, locks, sessions, temporaries, files
    moved aside. ``uuids_only`` accepts only the session files the assistant names itself
    (UUIDs), which is how a store written before the marker existed is recognised."""
    aside = _ASIDE.fullmatch(name)
    if aside is not None:
        name = aside["name"]
    if name in (MARKER_NAME, INDEX_NAME, LOCK_NAME, PROBE_NAME):
        return True
    room = _ROOM_LOCK.fullmatch(name)
    if room is not None:
        return is_valid_room_id(room["room"])
    temporary = _TEMPORARY.fullmatch(name)
    if temporary is not None:
        name = temporary["target"]
        if name == INDEX_NAME:
            return True
    session_id = session_id_of(name)
    return session_id is not None and (not uuids_only or _is_uuid(session_id))


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def session_file(root: Path, session_id: str) -> Path:
    """The file of one session; the id is validated, so the result is always directly in root."""
    return root / f"{validate_session_id(session_id)}.json"


def default_store_dir() -> Path:
    """``$XDG_STATE_HOME/voice-assistant/sessions``, i.e. ``~/.local/state/...`` by default."""
    state = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec says to ignore a relative path
        state = str(Path.home() / ".local" / "state")
    return Path(state) / "voice-assistant" / "sessions"
