"""A conversation: its messages, its agent session id, and its strict JSON form.

Messages are plain JSON objects in the form of the chat APIs, ``{"role", "content", ...}``
(:class:`Message`; build one with :func:`make_message`). Every value read back from disk, and
every value about to be written, is checked, so a hand-edited or damaged file is reported as
corrupt (:class:`SessionFormatError`) instead of surfacing later as an odd ``TypeError``, and
a save never writes one. Keys this version does not know are kept, not refused.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Literal, NotRequired, TypedDict, cast

from core.errors import InvalidIdError, SessionFormatError
from core.paths import (
    is_valid_room_id,
    is_valid_session_id,
    validate_room_id,
    validate_session_id,
)

FORMAT_VERSION = 2  # 2: messages hold "content" (version 1 wrote "text"; read and migrated)
TITLE_CHARS = 60
MAX_EXTRA_DEPTH = 32  # nesting allowed inside message keys this version does not know

Role = Literal["user", "assistant"]


class Message(TypedDict):
    """One message, in the form of the chat APIs: a plain JSON object.

    ``role`` and ``content`` are required; the other keys are optional, and keys this version
    does not know (written by a newer version or another tool) are kept as they are.
    """

    role: Role
    content: str
    timestamp: NotRequired[float]
    duration_ms: NotRequired[int]
    cost_usd: NotRequired[float]
    is_error: NotRequired[bool]
    interrupted: NotRequired[bool]  # the user stopped the reply: the content is what came


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
    """Strict JSON: UTF-8, no NaN/Infinity, and deep nesting is an error rather than a crash.
    A byte-order mark (some editors write one) is skipped."""
    try:
        return json.loads(data.decode("utf-8-sig"), parse_constant=reject_constant)
    except SessionFormatError:
        raise
    except RecursionError:
        raise SessionFormatError(f"{what} is nested too deeply") from None
    except UnicodeDecodeError as e:
        raise SessionFormatError(f"{what} is not UTF-8: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise SessionFormatError(f"{what} is not valid JSON: {e}") from None
    except ValueError as e:  # valid JSON Python will not read: an integer of 4300+ digits
        raise SessionFormatError(f"{what} holds a value that cannot be read: {e}") from None


def dump_json(value: Any, *, indent: int | None = None) -> bytes:
    # ensure_ascii keeps lone surrogates (possible in odd transcripts) round-trippable.
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(value, indent=indent, separators=separators, allow_nan=False).encode()


def _number(value: object, key: str) -> float:
    if not isinstance(value, bool) and isinstance(value, int | float):
        try:
            number = float(value)  # (an integer of 309+ digits is beyond a float)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise SessionFormatError(f"{key} must be a finite number, got {value!r}")


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise SessionFormatError(f"{key} must be a string, got {type(value).__name__}")
    return value


def _boolean(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise SessionFormatError(f"{key} must be true or false, got {value!r}")
    return value


def _version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SessionFormatError(f"version must be a whole number, got {value!r}")
    return value


def _mapping(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SessionFormatError(f"{what} must be a JSON object, got {type(value).__name__}")
    return cast(dict[str, Any], value)


def _check_plain_json(value: object, key: str, depth: int = 0) -> None:
    """A value this version does not interpret must still be plain, finite, shallow JSON."""
    if depth > MAX_EXTRA_DEPTH:
        raise SessionFormatError(f"{key} is nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        _number(value, key)
    elif isinstance(value, list):
        for item in value:
            _check_plain_json(item, key, depth + 1)
    elif isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                raise SessionFormatError(f"{key} has a key that is not a string: {name!r}")
            _check_plain_json(item, key, depth + 1)
    else:
        raise SessionFormatError(f"{key} holds a {type(value).__name__}, which is not JSON")


_MESSAGE_KEYS = frozenset(Message.__annotations__)


def make_message(
    role: Role,
    content: str,
    *,
    timestamp: float | None = None,
    duration_ms: int | None = None,
    cost_usd: float | None = None,
    is_error: bool | None = None,
    interrupted: bool | None = None,
) -> Message:
    """A checked message holding only the optional keys that are given."""
    message: dict[str, object] = {"role": role, "content": content}
    optional = {
        "timestamp": timestamp,
        "duration_ms": duration_ms,
        "cost_usd": cost_usd,
        "is_error": is_error,
        "interrupted": interrupted,
    }
    message |= {key: value for key, value in optional.items() if value is not None}
    return check_message(message)


def check_message(raw: object, where: str = "a message") -> Message:
    """A validated copy of ``raw``: the required keys, the known optional keys with the right
    types, unknown keys kept. A version-1 message (``"text"``) comes back as ``"content"``;
    ``null`` for an optional number means absent (version 1 wrote that)."""
    data = dict(_mapping(raw, where))
    if "content" not in data and "text" in data:
        data["content"] = data.pop("text")
    role = data.get("role")
    if role not in ("user", "assistant"):
        raise SessionFormatError(f"{where}: role must be user or assistant, not {role!r}")
    _string(data.get("content"), f"{where}: content")
    for key in ("timestamp", "cost_usd", "duration_ms"):
        if key in data and data[key] is None:
            del data[key]
    if "timestamp" in data:
        _number(data["timestamp"], f"{where}: timestamp")
    if "cost_usd" in data:
        _number(data["cost_usd"], f"{where}: cost_usd")
    duration = data.get("duration_ms", 0)
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
        raise SessionFormatError(f"{where}: duration_ms must be a count, got {duration!r}")
    for key in ("is_error", "interrupted"):
        if key in data:
            _boolean(data[key], f"{where}: {key}")
    for key, value in data.items():
        if key not in _MESSAGE_KEYS:
            _check_plain_json(value, f"{where}: {key}")
    return cast(Message, {"role": role, "content": data.pop("content")} | data)


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
    # The program whose conversation agent_session_id names ("claude"): another agent in
    # the room is not handed it (None: not known). Saved with the id it names, so a release
    # before this one, which keeps it unread while it changes the id, leaves it not known.
    agent_program: str | None = None
    closed: bool = False  # set by a reset: the next message in the room starts a new session
    # Read from a file a newer version (or another tool) wrote: its version, and the keys
    # this version does not know. A save writes both back, so nothing of it is lost.
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_session_id(self.session_id)
        validate_room_id(self.room_id)
        if not isinstance(self.messages, list):
            raise SessionFormatError("session messages must be a list")
        self.messages = _checked_messages(self.messages)

    def add(self, message: Message) -> None:
        """Append (a checked copy of) a message; the first user message names the session."""
        message = check_message(message)
        self.messages.append(message)
        if "timestamp" in message:
            self.updated_at = max(self.updated_at, message["timestamp"])
        if not self.title and message["role"] == "user":
            self.title = make_title(message["content"])

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
        """The file's JSON form. Every value is checked here, as anything may have been
        assigned since construction, so a save never writes what a load would call corrupt."""
        agent_id, program = self.agent_session_id, self.agent_program
        return _plain_extra(self.extra) | {
            "version": max(_version(self.format_version), FORMAT_VERSION),
            "session_id": validate_session_id(self.session_id),
            "room_id": validate_room_id(self.room_id),
            "title": _string(self.title, "title"),
            "created_at": _number(self.created_at, "created_at"),
            "updated_at": _number(self.updated_at, "updated_at"),
            "agent_session_id": None if agent_id is None else _string(agent_id, "agent id"),
            "agent_program": None if program is None else _string(program, "agent program"),
            "agent_program_of": agent_id if program is not None else None,
            "closed": _boolean(self.closed, "closed"),
            "messages": _checked_messages(self.messages),
        }

    def to_json(self) -> bytes:
        return dump_json(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, raw: object) -> Session:
        data = _mapping(raw, "a session")
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise SessionFormatError("session messages must be a list")
        agent_id, program = data.get("agent_session_id"), data.get("agent_program")
        if data.get("agent_program_of") != agent_id:  # the id changed since: not known
            program = None
        extra = {key: value for key, value in data.items() if key not in _SESSION_KEYS}
        try:
            return cls(
                session_id=_string(data.get("session_id"), "session_id"),
                room_id=_string(data.get("room_id"), "room_id"),
                title=_string(data.get("title", ""), "title"),
                messages=messages,
                created_at=_number(data.get("created_at"), "created_at"),
                updated_at=_number(data.get("updated_at"), "updated_at"),
                agent_session_id=None if agent_id is None else _string(agent_id, "agent id"),
                agent_program=None if program is None else _string(program, "agent program"),
                closed=_boolean(data.get("closed", False), "closed"),
                format_version=_version(data.get("version", 1)),
                extra=_plain_extra(extra),
            )
        except InvalidIdError as e:  # a bad id inside the file means the file is corrupt
            raise SessionFormatError(str(e)) from None

    @classmethod
    def from_json(cls, data: bytes) -> Session:
        return cls.from_dict(parse_json(data, "session file"))


# The file's keys, and the fields' own names (a file written as ``json.dumps(session.__dict__)``,
# as the spec suites do, holds those): anything else is a key this version does not know.
_SESSION_KEYS = frozenset({"version", "agent_program_of", *(f.name for f in fields(Session))})


def _plain_extra(extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        _check_plain_json(value, key)
    return extra


def _checked_messages(messages: list[Message]) -> list[Message]:
    return [check_message(m, f"message {i}") for i, m in enumerate(messages)]


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
