"""A conversation: its messages, its agent session id, and its strict JSON form.

Every value read back from disk is checked, so a hand-edited or damaged file is reported as
corrupt (:class:`SessionFormatError`) instead of surfacing later as an odd ``TypeError``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, cast

from core.paths import (
    is_valid_room_id,
    is_valid_session_id,
    validate_room_id,
    validate_session_id,
)

FORMAT_VERSION = 1
TITLE_CHARS = 60

Role = Literal["user", "assistant"]


class SessionFormatError(ValueError):
    """A session or index document that does not have the expected shape."""


class IndexEntry(TypedDict):
    """The compact form of a session, as listed in ``_index.json``."""

    session_id: str
    room_id: str
    title: str
    created_at: float
    updated_at: float
    message_count: int
    closed: bool


def reject_constant(name: str) -> Any:
    """``json.loads(parse_constant=...)``: NaN and Infinity are not valid session data."""
    raise SessionFormatError(f"{name} is not allowed")


def parse_json(data: bytes, what: str) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, and deep nesting is an error rather than a crash."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=reject_constant)
    except RecursionError:
        raise SessionFormatError(f"{what} is nested too deeply") from None
    except UnicodeDecodeError as e:
        raise SessionFormatError(f"{what} is not UTF-8: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise SessionFormatError(f"{what} is not valid JSON: {e}") from None


def dump_json(value: Any, *, indent: int | None = None) -> bytes:
    # ensure_ascii keeps lone surrogates (possible in odd transcripts) round-trippable.
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(value, indent=indent, separators=separators, allow_nan=False).encode()


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SessionFormatError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _optional_number(value: object, key: str) -> float | None:
    return None if value is None else _number(value, key)


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise SessionFormatError(f"{key} must be a string, got {type(value).__name__}")
    return value


def _boolean(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise SessionFormatError(f"{key} must be true or false, got {value!r}")
    return value


def _mapping(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SessionFormatError(f"{what} must be a JSON object, got {type(value).__name__}")
    return cast(dict[str, Any], value)


@dataclass(frozen=True, kw_only=True)
class Message:
    """One utterance; replies also carry timing, cost and whether they are an error."""

    role: Role
    text: str
    timestamp: float
    duration_ms: int | None = None
    cost_usd: float | None = None
    is_error: bool = False

    def __post_init__(self) -> None:
        if self.role not in ("user", "assistant"):
            raise SessionFormatError(f"message role must be user or assistant, not {self.role!r}")
        _string(self.text, "message text")
        _number(self.timestamp, "message timestamp")
        _optional_number(self.cost_usd, "message cost_usd")
        if self.duration_ms is not None and (
            isinstance(self.duration_ms, bool) or not isinstance(self.duration_ms, int)
        ):
            raise SessionFormatError(f"duration_ms must be an integer, got {self.duration_ms!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "text": self.text, "timestamp": self.timestamp}
        if self.role == "assistant":
            out |= {
                "duration_ms": self.duration_ms,
                "cost_usd": self.cost_usd,
                "is_error": self.is_error,
            }
        return out

    @classmethod
    def from_dict(cls, raw: object) -> Message:
        data = _mapping(raw, "a message")
        role = data.get("role")
        if role not in ("user", "assistant"):
            raise SessionFormatError(f"message role must be user or assistant, not {role!r}")
        return cls(
            role=cast(Role, role),
            text=_string(data.get("text"), "message text"),
            timestamp=_number(data.get("timestamp"), "message timestamp"),
            duration_ms=data.get("duration_ms"),
            cost_usd=_optional_number(data.get("cost_usd"), "message cost_usd"),
            is_error=_boolean(data.get("is_error", False), "message is_error"),
        )


def _now() -> float:
    return time.time()


@dataclass(kw_only=True)
class Session:
    """One conversation in one room. Mutable: the core appends to it and saves it."""

    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    room_id: str = "default"
    title: str = ""
    messages: list[Message] = field(default_factory=list)
    created_at: float = field(default_factory=_now)
    updated_at: float = field(default_factory=_now)
    agent_session_id: str | None = None
    closed: bool = False  # set by a reset: the next message in the room starts a new session

    def __post_init__(self) -> None:
        validate_session_id(self.session_id)
        validate_room_id(self.room_id)
        # Accept plain dicts (the on-disk form) so callers can build a session from JSON data.
        self.messages = [
            m if isinstance(m, Message) else Message.from_dict(m) for m in self.messages
        ]

    def add(self, message: Message) -> None:
        """Append a message; the first user message names the session."""
        self.messages.append(message)
        self.updated_at = max(self.updated_at, message.timestamp)
        if not self.title and message.role == "user":
            self.title = make_title(message.text)

    def compact(self) -> IndexEntry:
        return IndexEntry(
            session_id=self.session_id,
            room_id=self.room_id,
            title=self.title[:TITLE_CHARS],
            created_at=self.created_at,
            updated_at=self.updated_at,
            message_count=len(self.messages),
            closed=self.closed,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "session_id": self.session_id,
            "room_id": self.room_id,
            "title": self.title,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "agent_session_id": self.agent_session_id,
            "closed": self.closed,
            "messages": [m.to_dict() for m in self.messages],
        }

    def to_json(self) -> bytes:
        return dump_json(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, raw: object) -> Session:
        data = _mapping(raw, "a session")
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise SessionFormatError("session messages must be a list")
        agent_id = data.get("agent_session_id")
        try:
            return cls(
                session_id=_string(data.get("session_id"), "session_id"),
                room_id=_string(data.get("room_id"), "room_id"),
                title=_string(data.get("title", ""), "title"),
                messages=[Message.from_dict(m) for m in messages],
                created_at=_number(data.get("created_at"), "created_at"),
                updated_at=_number(data.get("updated_at"), "updated_at"),
                agent_session_id=None if agent_id is None else _string(agent_id, "agent id"),
                closed=_boolean(data.get("closed", False), "closed"),
            )
        except ValueError as e:  # InvalidIdError for a bad id inside the file
            raise SessionFormatError(str(e)) from None

    @classmethod
    def from_json(cls, data: bytes) -> Session:
        return cls.from_dict(parse_json(data, "session file"))


def make_title(text: str) -> str:
    words = " ".join(text.split())
    if len(words) <= TITLE_CHARS:
        return words
    return words[: TITLE_CHARS - 3].rsplit(" ", 1)[0] + "..."


_ENTRY_KEYS = frozenset(IndexEntry.__annotations__)


def _is_exact_entry(raw: object) -> bool:
    """The common case, checked fast: an entry exactly as this module writes it."""
    if type(raw) is not dict or raw.keys() != _ENTRY_KEYS:
        return False
    count = raw["message_count"]
    return (
        is_valid_session_id(raw["session_id"])
        and is_valid_room_id(raw["room_id"])
        and type(raw["title"]) is str
        and type(raw["created_at"]) is float
        and type(raw["updated_at"]) is float
        and math.isfinite(raw["created_at"])
        and math.isfinite(raw["updated_at"])
        and type(count) is int
        and count >= 0
        and type(raw["closed"]) is bool
    )


def entry_from_dict(raw: object) -> IndexEntry:
    """Validate one ``_index.json`` entry (a bad id in the index means the index is corrupt)."""
    if _is_exact_entry(raw):
        return cast(IndexEntry, raw)
    data = _mapping(raw, "an index entry")
    try:
        session_id = validate_session_id(data.get("session_id"))
        room_id = validate_room_id(data.get("room_id"))
    except ValueError as e:
        raise SessionFormatError(str(e)) from None
    count = data.get("message_count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise SessionFormatError(f"message_count must be a count, got {count!r}")
    return IndexEntry(
        session_id=session_id,
        room_id=room_id,
        title=_string(data.get("title"), "title"),
        created_at=_number(data.get("created_at"), "created_at"),
        updated_at=_number(data.get("updated_at"), "updated_at"),
        message_count=count,
        closed=_boolean(data.get("closed"), "closed"),
    )
