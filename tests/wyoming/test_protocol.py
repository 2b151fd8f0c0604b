"""The event codec: what the wyoming package writes we read, and what we write it reads; every
length a header announces is checked before anything is read."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from wyoming.audio import AudioChunk
from wyoming.event import Event, read_event, write_event

from core.errors import ProtocolError
from voice.wyoming.protocol import Limits, encode, parse_header
from voice.wyoming.protocol import read_event as our_read_event

LIMITS = Limits(max_payload_bytes=1000)


def _ours(data: bytes, limits: Limits = LIMITS) -> Event | None:
    async def run() -> Event | None:
        reader = asyncio.StreamReader(limit=limits.max_header_bytes)
        reader.feed_data(data)
        reader.feed_eof()
        return await our_read_event(reader, limits)

    return asyncio.run(run())


def test_events_written_by_the_wyoming_package_are_read() -> None:
    out = io.BytesIO()
    chunk = AudioChunk(rate=16000, width=2, channels=1, audio=b"\x01\x02" * 100)
    write_event(chunk.event(), out)
    event = _ours(out.getvalue())
    assert event is not None and AudioChunk.is_type(event.type)
    assert AudioChunk.from_event(event) == chunk


def test_events_we_write_are_read_by_the_wyoming_package() -> None:
    event = Event("transcript", {"text": "héllo", "context": {"conversation_id": "k"}}, b"xyz")
    back = read_event(io.BytesIO(encode(event)))
    assert back == event


def test_a_clean_close_between_events_is_not_an_error() -> None:
    assert _ours(b"") is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json\n", "not JSON"),
        (b"[1, 2]\n", "must be a JSON object"),
        (b'{"data": {}}\n', "needs a short string 'type'"),
        (b'{"type": 7}\n', "needs a short string 'type'"),
        (b'{"type": "' + b"x" * 100 + b'"}\n', "needs a short string 'type'"),
        (b'{"type": "ping", "data": [1]}\n', "data must be a JSON object"),
        (b'{"type": "audio-chunk", "payload_length": 104857600}\n', "104857600 is more than"),
        (b'{"type": "audio-chunk", "payload_length": -1}\n', "whole number of bytes"),
        (b'{"type": "audio-chunk", "payload_length": "12"}\n', "whole number of bytes"),
        (b'{"type": "ping", "data_length": 2000000}\n', "data_length 2000000 is more than"),
        (b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply"),
        (b'{"type": "ping"', "in the middle of an event header"),
        (b'{"type": "ping", "data": {"x": NaN}}\n', "NaN is not a JSON number"),
        (b'{"type": "ping", "data": {"x": [-Infinity]}}\n', "-Infinity is not a JSON number"),
        (b'{"type": "transcript", "data": {"text": "a\\ud800b"}}\n', "lone UTF-16 surrogate"),
        (b'{"type": "x", "data": {"context": {"\\udc00": 1}}}\n', "lone UTF-16 surrogate"),
        (b'{"type": "synthesize", "data": {"text": "Hi\\u0000"}}\n', "a NUL character"),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-type",
        "type-not-string",
        "type-too-long",
        "data-not-object",
        "100MB-payload",
        "negative-length",
        "length-as-string",
        "huge-data",
        "json-bomb",
        "cut-header",
        "nan",
        "infinity",
        "surrogate",
        "surrogate-key",
        "nul",
    ],
)
def test_bad_headers_are_protocol_errors_that_say_why(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        _ours(line)


def test_a_header_line_beyond_the_limit_is_refused_without_reading_on() -> None:
    limits = Limits(max_payload_bytes=1000, max_header_bytes=1024)
    with pytest.raises(ProtocolError, match="longer than 1024 bytes"):
        _ours(b'{"type": "ping", "x": "' + b"a" * 5000 + b'"}\n', limits)


def test_data_that_is_not_an_object_and_a_cut_payload_are_errors() -> None:
    with pytest.raises(ProtocolError, match="data must be a JSON object"):
        _ours(b'{"type": "ping", "data_length": 3}\n[1]')
    with pytest.raises(ProtocolError, match="in the middle of the audio-chunk event"):
        _ours(b'{"type": "audio-chunk", "payload_length": 10}\nabc')


def test_parse_header_merges_nothing_and_keeps_inline_data() -> None:
    header = parse_header(json.dumps({"type": "x", "data": {"a": 1}}).encode(), LIMITS)
    assert (header.type, header.data, header.data_length, header.payload_length) == (
        "x",
        {"a": 1},
        0,
        0,
    )
