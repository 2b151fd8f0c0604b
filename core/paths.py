"""Where sessions live on disk, and the id checks that keep every file inside that place.

Room ids and session ids reach the store from transcripts, CLI flags and JSON files, so each
one is checked against a small whitelist before it is used anywhere near a path: nothing that
passes can name a parent directory, an absolute path, a sub-directory or a hidden file.
"""

from __future__ import annotations

import os
import re
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
    return _check(room_id, _ROOM_ID, "room id", "letters, digits and . _ - @ +")


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


def session_file(root: Path, session_id: str) -> Path:
    """The file of one session; the id is validated, so the result is always directly in root."""
    return root / f"{validate_session_id(session_id)}.json"


def default_store_dir() -> Path:
    """``$XDG_STATE_HOME/voice-assistant/sessions``, i.e. ``~/.local/state/...`` by default."""
    state = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec says to ignore a relative path
        state = str(Path.home() / ".local" / "state")
    return Path(state) / "voice-assistant" / "sessions"
