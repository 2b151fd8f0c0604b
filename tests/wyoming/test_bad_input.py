"""Bad input to ``serve``: each case is logged, that connection closed, the others served.

The server runs in a thread with fake engines (no models); every client is a real socket. A
bystander connected before the bad client must still be answered afterwards, and so must a
client that connects after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize

from core.conversation import TurnOutcome
from tests.voice.fakes import FakeConversation, FakeStt, FakeTts, wait_until
from tests.wyoming.peers import Client, ServerThread
from voice.config import WyomingConfig
from voice.wyoming.programs import Programs
from voice.wyoming.protocol import encode

TIMEOUT_S = 0.5
CONFIG = WyomingConfig(client_timeout_s=TIMEOUT_S, max_payload_bytes=64 * 1024)


def programs() -> Programs:
    return Programs(stt=FakeStt(lambda u: "hello"), tts=FakeTts(), conversation=FakeConversation())


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(CONFIG, programs()) as running:
        yield running


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voice.wyoming")


def answers_describe(client: Client) -> bool:
    client.send(Describe().event())
    event = client.read()
    return event is not None and Info.is_type(event.type)


def warned(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(
        r.levelno == logging.WARNING and text in r.getMessage() and "closing" in r.getMessage()
        for r in caplog.records
    )


AUDIO = {"rate": 16000, "width": 2, "channels": 1}
BAD = {
    "malformed-json": (b"this is not json\n", "is not JSON"),
    "not-an-object": (b'"describe"\n', "must be a JSON object"),
    "json-bomb": (b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply"),
    "100MB-payload": (
        b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, '
        b'"payload_length": 104857600}\n',
        "payload_length 104857600 is more than the 65536 bytes allowed",
    ),
    "unknown-type": (encode(Event("make-coffee")), "unknown event type 'make-coffee'"),
    "chunk-before-start": (
        encode(AudioChunk(audio=b"\0\0" * 100, **AUDIO).event()),
        "audio-chunk before audio-start",
    ),
    "24-bit-audio": (
        encode(AudioStart(rate=16000, width=3, channels=1).event()),
        "only 16-bit audio",
    ),
    "text-not-string": (encode(Event("synthesize", {"text": 42})), "needs a 'text' string"),
    # Refused as read, before an agent turn starts: the reply could not be encoded.
    "surrogate-in-context": (
        b'{"type": "transcript", "data": {"text": "hi", "context": {"x": "\\udc00"}}}\n',
        "a lone UTF-16 surrogate",
    ),
    "not-a-number": (b'{"type": "ping", "data": {"x": NaN}}\n', "NaN is not a JSON number"),
    "infinite-number": (b'{"type": "ping", "data": {"text": 1e999}}\n', "1e999 is too large"),
    "infinite-in-context": (
        b'{"type": "transcript", "data": {"text": "hi", "context": {"x": -1E+999}}}\n',
        "-1E+999 is too large",
    ),
    "nul-to-speak": (
        b'{"type": "synthesize", "data_length": 21}\n{"text": "Hi\\u0000!"}',
        "a NUL character",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_logged_and_closes_only_its_connection(
    server: ServerThread, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    data, message = BAD[case]
    with Client(server.address) as bystander, Client(server.address) as bad:
        assert answers_describe(bystander)
        started = time.monotonic()
        bad.raw(data)
        error = bad.read()
        assert error is not None and error.type == "error", error
        assert message in error.data["text"]
        assert bad.closed_by_peer(10)
        assert time.monotonic() - started < 10  # at once, not after some timeout
        assert warned(caplog, message)
        assert answers_describe(bystander)
    with Client(server.address) as later:
        assert answers_describe(later)


def test_a_dropped_client_leaves_no_reader_behind() -> None:
    # Audio sent faster than it is taken fills the event queue; the connection is dropped at
    # max_audio_s while its reader waits on that queue. On Python 3.11, wait_for swallowed the
    # reader's cancel: it lived on, holding what it had read, until the collector destroyed it.
    config = WyomingConfig(client_timeout_s=5, max_payload_bytes=64 * 1024, max_audio_s=3)
    tenth = AudioChunk(audio=b"\1\0" * 1600, **AUDIO).event()
    flood = encode(AudioStart(**AUDIO).event()) + encode(tenth) * 300

    async def readers() -> list[str]:
        return [t.get_name() for t in asyncio.all_tasks() if "wyoming-read" in t.get_name()]

    with ServerThread(config, programs()) as server:
        for _ in range(20):
            with Client(server.address) as client:
                client.raw(flood)
                error = client.read()
                assert error is not None and "max_audio_s" in error.data["text"]
                assert client.closed_by_peer(10)
        time.sleep(0.5)  # (each connection waits up to that long for its reader)
        left = asyncio.run_coroutine_threadsafe(readers(), server.loop).result(10)
        assert left == []
        with Client(server.address) as later:
            assert answers_describe(later)


STALLS = {
    "says-nothing": b"",
    "half-a-header": b'{"type": "desc',
    "half-a-payload": b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, '
    b'"channels": 1}, "payload_length": 1000}\n' + b"\0" * 10,
}


@pytest.mark.parametrize("case", list(STALLS), ids=list(STALLS))
def test_a_stalled_client_is_dropped_after_the_timeout(
    server: ServerThread, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    with Client(server.address) as bystander, Client(server.address) as stalled:
        stalled.raw(STALLS[case])
        started = time.monotonic()
        # The bystander keeps talking (a quiet one would be dropped too) and is answered.
        while not stalled.closed_by_peer(0.1):
            assert answers_describe(bystander)
            assert time.monotonic() - started < 20, "a stalled client is never dropped"
        assert time.monotonic() - started >= TIMEOUT_S * 0.9
        assert warned(caplog, "nothing received for 0.5 s (wyoming.client_timeout_s)")
        assert answers_describe(bystander)


def server_end_open(server_port: int, client_port: int) -> bool:
    """The server's end of a loopback TCP connection still exists (/proc/net/tcp)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, remote = line.split()[1:3]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    return True
    return False


def test_a_client_that_stops_reading_is_dropped_not_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Loud:
        """Minutes of audio per sentence: more than any socket buffer holds."""

        sample_rate = 16000

        def synthesize(self, text: str) -> Iterator[np.ndarray]:
            for _ in range(60):
                yield np.full(16000 * 5, 1000, dtype=np.int16)

    with ServerThread(CONFIG, Programs(tts=Loud(), conversation=FakeConversation())) as server:
        with Client(server.address) as bystander, Client(server.address) as deaf:
            deaf.send(Synthesize(text="Read me the whole book.").event())
            deadline = time.monotonic() + 60
            while not warned(caplog, "the client read nothing for 0.5 s"):
                assert answers_describe(bystander)
                assert time.monotonic() < deadline, "a client that never reads held the server"
                time.sleep(0.05)
            # Dropped for real: the server's end of the socket is gone, unsent data and all,
            # though the client still has not read a byte.
            ports = server.address[1], deaf.sock.getsockname()[1]
            deadline = time.monotonic() + 10
            while server_end_open(*ports):
                assert time.monotonic() < deadline, "the server still holds the socket"
                time.sleep(0.05)


def test_a_program_that_is_not_offered_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    with ServerThread(CONFIG, Programs(conversation=FakeConversation())) as server:
        with Client(server.address) as client:
            client.send(AudioStart(**AUDIO).event())
            error = client.read()
            assert error is not None and error.type == "error"
            assert "needs the asr program, which this server does not offer" in error.data["text"]
            assert client.closed_by_peer(10)


def test_connections_beyond_the_limit_are_closed_at_once(caplog: pytest.LogCaptureFixture) -> None:
    config = WyomingConfig(max_connections=2, client_timeout_s=60)
    with ServerThread(config, programs()) as server:
        with Client(server.address) as one, Client(server.address) as two:
            assert answers_describe(one) and answers_describe(two)
            for n in range(20):  # a burst: every one refused, one log line for all
                with Client(server.address) as three:
                    if n % 2:  # a client that speaks first is told too
                        three.send(Describe().event())
                    error = three.read()
                    assert error is not None and error.type == "error", n
                    assert error.data["code"] == "busy" and "max_connections" in error.data["text"]
                    assert three.closed_by_peer(10)
            refused = "refused, 2 connections already open"
            assert sum(refused in r.getMessage() for r in caplog.records) == 1
            assert answers_describe(one)
        deadline = time.monotonic() + 10
        while True:  # the slots are free again, once the server has seen the two go
            with Client(server.address) as again:
                try:
                    if answers_describe(again):
                        break
                except ConnectionResetError:
                    pass
            assert time.monotonic() < deadline, "closed connections still count"
            time.sleep(0.05)


class OneTurnPerRoom(FakeConversation):
    """Turns in one room take turns, as the core's room lock makes them; each takes 3 s."""

    def __init__(self) -> None:
        super().__init__(delay_s=3.0)
        self._rooms: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def run_turn(self, room_id: str, text: str, **kwargs: Any) -> TurnOutcome:
        with self._guard:
            lock = self._rooms.setdefault(room_id, threading.Lock())
        with lock:
            return super().run_turn(room_id, text, **kwargs)


def test_a_client_gone_while_its_room_was_busy_does_not_lock_other_rooms_out() -> None:
    config = WyomingConfig(max_connections=2, client_timeout_s=60)
    with ServerThread(config, Programs(conversation=OneTurnPerRoom())) as server:
        with Client(server.address) as first:
            first.send(Transcript("a long one", context={"room": "busy"}).event())
            with Client(server.address) as quitter:  # waits for the busy room, then leaves
                quitter.send(Transcript("me too", context={"room": "busy"}).event())
                assert quitter.read().type == "handled-start"  # type: ignore[union-attr]
            started = time.monotonic()
            while True:  # another room: a free slot once the server has seen it go, answered
                with Client(server.address) as other:
                    other.send(Transcript("hello", context={"room": "other"}).event())
                    reply = other.read()
                    if reply is not None and reply.data.get("code") != "busy":
                        assert other.read_until("handled")[-1].type == "handled"
                        break
                assert time.monotonic() - started < 2, "the client gone still holds its slot"
                time.sleep(0.05)
            assert first.read_until("handled")[-1].type == "handled"  # (3 s after it began)


def test_an_engine_that_fails_is_an_error_to_that_client_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        sample_rate = 16000

        def synthesize(self, text: str) -> Iterator[np.ndarray]:
            raise RuntimeError("onnxruntime fell over")
            yield  # a generator, as a voice is

    with ServerThread(CONFIG, Programs(tts=Broken(), conversation=FakeConversation())) as server:
        with Client(server.address) as client:
            client.send(Synthesize(text="Hello.").event())
            events = []
            while (event := client.read()) is not None:
                events.append(event)
            assert events[-1].type == "error"
            assert events[-1].data == {
                "text": "the server failed: RuntimeError",
                "code": "server-error",
            }
        assert any("the request failed" in r.getMessage() for r in caplog.records)
        with Client(server.address) as later:
            assert answers_describe(later)


def a_transcription(seconds: float = 1.0) -> bytes:
    audio = AudioChunk(audio=b"\1\0" * int(16000 * seconds), **AUDIO).event()
    return encode(AudioStart(**AUDIO).event()) + encode(audio) + encode(AudioStop().event())


def test_a_client_that_leaves_counts_until_its_request_is_done() -> None:
    """max_connections bounds the work, not only the sockets: a client that sent a request
    and left still has its audio held and transcribed."""
    gate = threading.Event()
    stt = FakeStt(lambda _u: "hello" if gate.wait(60) else "")
    config = WyomingConfig(max_connections=1, client_timeout_s=60)
    with ServerThread(config, Programs(stt=stt)) as server:
        with Client(server.address) as leaving:
            leaving.raw(a_transcription())
            assert wait_until(lambda: len(stt.calls) == 1)  # Whisper works on it
        connections = server.server._connections
        assert wait_until(lambda: all(c.gone.is_set() for c in connections))  # seen to go
        with Client(server.address) as next_one:
            next_one.send(Describe().event())
            error = next_one.read()
            assert error is not None and error.data.get("code") == "busy", error.type
        gate.set()
        deadline = time.monotonic() + 10
        while True:  # its request done, the slot is free
            with Client(server.address) as later:
                with contextlib.suppress(ConnectionResetError):
                    if answers_describe(later):
                        break
            assert time.monotonic() < deadline, "a finished request still counts"
            time.sleep(0.05)


def test_a_transcription_its_client_cannot_hear_is_skipped() -> None:
    gate = threading.Event()
    stt = FakeStt(lambda _u: "hello" if gate.wait(60) else "")
    with ServerThread(CONFIG, Programs(stt=stt)) as server:
        with Client(server.address) as first, Client(server.address) as broken:
            first.raw(a_transcription())
            assert wait_until(lambda: len(stt.calls) == 1)  # the model is busy with it
            broken.raw(a_transcription(2.0) + b"this is not json\n")  # waits for the model
            assert wait_until(lambda: any(c.broken for c in server.server._connections))
            gate.set()
            assert Transcript.from_event(first.read_until("transcript")[-1]).text == "hello"
            error = broken.read()
            assert error is not None and "is not JSON" in error.data["text"], error
            assert broken.closed_by_peer(10)
    assert stt.calls == [1.0]  # the second was never transcribed


def test_transcriptions_still_waiting_for_the_model_are_skipped_when_the_server_stops() -> None:
    gate = threading.Event()
    stt = FakeStt(lambda _u: "hello" if gate.wait(60) else "")
    running = ServerThread(CONFIG, Programs(stt=stt)).__enter__()
    with Client(running.address) as first, Client(running.address) as second:
        first.raw(a_transcription())
        assert wait_until(lambda: len(stt.calls) == 1)  # the model is busy with it
        second.raw(a_transcription(2.0))
        time.sleep(0.2)  # (its request waits for the model)
        running.__exit__(None, None, None)  # SIGTERM
        gate.set()
        assert running.server.wait_for_jobs(10)
    assert stt.calls == [1.0]  # the second was never transcribed
