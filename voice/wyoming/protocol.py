"""Wyoming events on the wire, read with limits.

An event is one JSON header line (``type``, optional ``data``, ``data_length``,
``payload_length``), then ``data_length`` bytes of JSON merged into ``data``, then
``payload_length`` bytes of binary payload (audio). The ``wyoming`` package's own reader trusts
the peer: it reads whatever length a header announces and closes silently on bad JSON. Both
ends here (the server and the remote-engine client) read through :func:`parse_header` instead,
so a header announcing 100 MB, a line that never ends or a JSON bomb is a
:class:`~core.errors.ProtocolError` that names the problem, before any memory is spent on it.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event
from wyoming.version import __version__ as WYOMING_VERSION

from core.errors import ProtocolError, RemoteEngineError

# The header is a short JSON object; 64 KiB is generous (HA's largest is a few hundred bytes).
MAX_HEADER_BYTES = 64 * 1024
# The JSON data block (info, a long text to speak) is small too.
MAX_DATA_BYTES = 1024 * 1024
MAX_TYPE_CHARS = 64
PROTOCOL_VERSION = WYOMING_VERSION  # the header's "version": the wyoming package installed


class ClientGone(Exception):
    """The client closed the connection or stopped reading what it is sent."""


class Stalled(Exception):
    """The client sent nothing (or only part of an event) for too long."""


@dataclass(frozen=True)
class Limits:
    """The largest parts of one event a reader accepts."""

    max_payload_bytes: int = 1024 * 1024
    max_data_bytes: int = MAX_DATA_BYTES
    max_header_bytes: int = MAX_HEADER_BYTES


@dataclass(frozen=True)
class Header:
    type: str
    data: dict[str, Any]
    data_length: int
    payload_length: int


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    """A JSON float, refused when too large for one (1e999 would be inf, which no reply that
    echoes it could encode)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text:.40} is too large a number")
    return value


def _json(raw: bytes, what: str) -> Any:
    try:
        value = json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"the event {what} is not JSON ({e})") from None
    except RecursionError:  # "[[[[..." nested deeper than Python's stack
        raise ProtocolError(f"the event {what} is JSON nested too deeply") from None
    flaw = _flaw_in_text(value)
    if flaw:
        raise ProtocolError(f"the event {what} holds {flaw}")
    return value


def _flaw_in_text(value: Any) -> str:
    """What makes a string in ``value`` unusable, or "". JSON's escapes can spell a lone
    UTF-16 surrogate (no text: encoding a reply, or Piper, fails on it after the agent has
    run) and NUL (which Piper refuses), so both are refused with the event."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.keys()
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str):
            if "\x00" in item:
                return "a NUL character"
            try:
                item.encode()
            except UnicodeEncodeError:
                return "a lone UTF-16 surrogate, which is not text"
    return ""


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{key} must be a whole number of bytes, got {value!r}")
    if value > limit:
        raise ProtocolError(f"{key} {value} is more than the {limit} bytes allowed")
    return int(value)


def parse_header(line: bytes, limits: Limits) -> Header:
    """One header line, checked: a JSON object with a short string ``type`` and lengths within
    ``limits``."""
    header = _json(line, "header")
    if not isinstance(header, dict):
        raise ProtocolError(f"the event header must be a JSON object, got {type(header).__name__}")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_TYPE_CHARS:
        raise ProtocolError(f"the event header needs a short string 'type', got {kind!r:.80}")
    data = header.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(f"the {kind} event's data must be a JSON object")
    return Header(
        kind,
        data,
        _length(header, "data_length", limits.max_data_bytes),
        _length(header, "payload_length", limits.max_payload_bytes),
    )


def finish_event(header: Header, data: bytes, payload: bytes) -> Event:
    merged = dict(header.data)
    if data:
        extra = _json(data, "data")
        if not isinstance(extra, dict):
            raise ProtocolError(f"the {header.type} event's data must be a JSON object")
        merged.update(extra)
    return Event(type=header.type, data=merged, payload=payload or None)


def encode(event: Event) -> bytes:
    """The bytes of one event, as the ``wyoming`` package writes them."""
    header: dict[str, Any] = {"type": event.type, "version": PROTOCOL_VERSION}
    data = b""
    if event.data:
        data = json.dumps(event.data, ensure_ascii=False, allow_nan=False).encode()
        header["data_length"] = len(data)
    payload = event.payload or b""
    if payload:
        header["payload_length"] = len(payload)
    line = json.dumps(header, ensure_ascii=False).encode()
    return line + b"\n" + data + payload


# ---- asyncio (the server) -------------------------------------------------------------------
Waiter = Callable[[Callable[[], Awaitable[bytes]]], Awaitable[bytes]]


async def _direct(read: Callable[[], Awaitable[bytes]]) -> bytes:
    return await read()


async def read_event(
    reader: asyncio.StreamReader, limits: Limits, wait: Waiter = _direct
) -> Event | None:
    """The next event, or ``None`` when the peer closed the connection between events.

    ``wait`` runs each read (a timeout policy); the reader's own ``limit`` must be at least
    ``limits.max_header_bytes`` (a longer line is refused by asyncio and reported here).
    """
    try:
        line = await wait(reader.readline)
    except ValueError:  # asyncio's "separator is not found, and chunk exceed the limit"
        raise ProtocolError(
            f"an event header is longer than {limits.max_header_bytes} bytes"
        ) from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise ProtocolError("the connection closed in the middle of an event header")
    if len(line) > limits.max_header_bytes:
        raise ProtocolError(f"an event header is longer than {limits.max_header_bytes} bytes")
    header = parse_header(line, limits)
    try:
        data = await wait(lambda: reader.readexactly(header.data_length))
        payload = await wait(lambda: reader.readexactly(header.payload_length))
    except asyncio.IncompleteReadError:
        raise ProtocolError(
            f"the connection closed in the middle of the {header.type} event"
        ) from None
    return finish_event(header, data, payload)


# ---- blocking sockets (the remote-engine client) ---------------------------------------------
class SocketReader:
    """Events from a blocking socket whose timeout bounds every wait."""

    def __init__(self, sock: socket.socket, limits: Limits) -> None:
        self._file = sock.makefile("rb")
        self._limits = limits

    def read(self) -> Event | None:
        try:
            line = self._file.readline(self._limits.max_header_bytes + 1)
            if not line:
                return None
            if not line.endswith(b"\n"):
                if len(line) > self._limits.max_header_bytes:
                    raise ProtocolError(
                        f"an event header is longer than {self._limits.max_header_bytes} bytes"
                    )
                raise ProtocolError("the connection closed in the middle of an event header")
            header = parse_header(line, self._limits)
            data = self._exactly(header.data_length, header.type)
            payload = self._exactly(header.payload_length, header.type)
        except TimeoutError:
            raise RemoteEngineError("the server stopped answering (timed out)") from None
        except OSError as e:
            raise RemoteEngineError(f"the connection to the server broke: {e}") from None
        return finish_event(header, data, payload)

    def _exactly(self, count: int, kind: str) -> bytes:
        data = self._file.read(count) if count else b""
        if len(data) < count:
            raise RemoteEngineError(f"the server closed the connection in the middle of {kind}")
        return data

    def close(self) -> None:
        self._file.close()
