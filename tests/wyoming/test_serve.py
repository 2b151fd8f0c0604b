"""``voice-assistant serve`` as a process, talked to by the ``wyoming`` client library.

Real models (tiny.en, en_US-joe-medium), real recordings, the real core with the echo agent
(thinking 2 s per turn, so that parallel and serial turns tell apart), on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient, AsyncTcpClient
from wyoming.event import Event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from tests.voice.audio_util import real_clip, real_references, reference, shared, wer
from tests.wyoming.peers import PYTHON, Client, Process, serve_process
from voice.wyoming.serve import _where_to_add

pytestmark = [pytest.mark.models, pytest.mark.slow]

THINK_MS = 2000
AGENT = f"{PYTHON} -m core.echo_agent --think-ms {THINK_MS}"


def write_config(directory: Path, extra: str = "") -> Path:
    path = directory / "config.toml"
    path.write_text(f'[session]\nstore_dir = "{directory / "sessions"}"\n{extra}')
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    directory = tmp_path_factory.mktemp("serve")
    process = serve_process(write_config(directory), agent=AGENT)
    try:
        uri = process.wait_ready()["uri"]
        host, port = uri.removeprefix("tcp://").rsplit(":", 1)
        yield host, int(port), directory / "sessions"
    finally:
        assert process.stop() == 0, process.output()


def client(served: tuple[str, int, Path]) -> AsyncTcpClient:
    return AsyncTcpClient(served[0], served[1], connect_timeout=10, read_timeout=120)


async def until(c: AsyncClient, kind: str) -> list[Event]:
    events = []
    while True:
        event = await c.read_event()
        assert event is not None, f"closed before {kind}"
        events.append(event)
        if event.type == kind:
            return events


def test_describe_lists_asr_tts_and_handle(served: tuple[str, int, Path]) -> None:
    async def run() -> Info:
        async with client(served) as c:
            await c.write_event(Describe().event())
            return Info.from_event((await until(c, "info"))[-1])

    info = asyncio.run(run())
    assert [m.name for m in info.asr[0].models] == ["tiny.en"]
    assert info.asr[0].models[0].languages == ["en"]
    assert [v.name for v in info.tts[0].voices] == ["en_US-joe-medium"]
    assert info.tts[0].supports_synthesize_streaming
    assert info.handle[0].supports_handled_streaming
    assert info.handle[0].models[0].languages == []  # any language: Home Assistant's MATCH_ALL


async def transcribe(c: AsyncClient, pcm: bytes, rate: int, channels: int) -> str:
    await c.write_event(Transcribe(language="en").event())
    await c.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
    step = rate * channels * 2 // 10  # 100 ms chunks, as a satellite streams them
    for offset in range(0, len(pcm), step):
        chunk = AudioChunk(rate=rate, width=2, channels=channels, audio=pcm[offset : offset + step])
        await c.write_event(chunk.event())
    await c.write_event(AudioStop().event())
    return Transcript.from_event((await until(c, "transcript"))[-1]).text


def test_transcribes_real_recordings(served: tuple[str, int, Path]) -> None:
    jfk, rate = soundfile.read(str(shared("jfk.flac")), dtype="int16", always_2d=True)
    clips = real_references()

    async def run() -> dict[str, str]:
        heard = {}
        async with client(served) as c:  # one connection, many requests
            # jfk.flac as it is, 44.1 kHz stereo: the server mixes down and resamples.
            heard["jfk"] = await transcribe(c, jfk.tobytes(), rate, 2)
        for name in clips:
            pcm = (real_clip(name, trim=False) * 32767).astype("<i2").tobytes()
            async with client(served) as c:
                heard[name] = await transcribe(c, pcm, 16000, 1)
        return heard

    heard = asyncio.run(run())
    assert wer(reference("jfk.flac"), heard["jfk"]) <= 0.05, heard["jfk"]
    errors = [wer(clips[name], heard[name]) for name in clips]
    assert float(np.mean(errors)) <= 0.2, heard


def test_synthesized_speech_is_plain_and_transcribes_back(served: tuple[str, int, Path]) -> None:
    text = "The **quick** brown fox jumps over the lazy dog. See [the docs](https://example.com)."

    async def run() -> tuple[int, bytes, str]:
        async with client(served) as c:
            await c.write_event(Synthesize(text=text).event())
            events = await until(c, "audio-stop")
        assert [e.type for e in events[:1]] == ["audio-start"]
        audio = b"".join(e.payload or b"" for e in events if e.type == "audio-chunk")
        rate = events[0].data["rate"]
        async with client(served) as c:
            back = await transcribe(c, audio, rate, 1)
        return rate, audio, back

    rate, audio, back = asyncio.run(run())
    assert rate == 22050 and len(audio) / 2 / rate > 2.0
    assert wer("the quick brown fox jumps over the lazy dog see the docs", back) <= 0.2, back


def test_streaming_synthesis_speaks_sentence_one_while_the_text_still_arrives(
    served: tuple[str, int, Path],
) -> None:
    async def run() -> list[str]:
        async with client(served) as c:
            await c.write_event(SynthesizeStart().event())
            await c.write_event(SynthesizeChunk(text="Hello there. The rest of this ").event())
            first = await until(c, "audio-stop")  # heard before the text is complete
            assert [e.type for e in first][:2] == ["audio-start", "audio-chunk"]
            await c.write_event(SynthesizeChunk(text="reply comes later. Bye").event())
            await c.write_event(Synthesize(text="ignored: the stream's copy").event())
            await c.write_event(SynthesizeStop().event())
            rest = await until(c, "synthesize-stopped")
            return [e.type for e in first + rest if e.type != "audio-chunk"]

    kinds = asyncio.run(run())
    # One audio stream per sentence: "Hello there.", "The rest of this reply comes later.", "Bye"
    assert kinds == ["audio-start", "audio-stop"] * 3 + ["synthesize-stopped"]


async def handle(served: tuple[str, int, Path], room: str, text: str) -> tuple[str, float]:
    async with client(served) as c:
        await c.write_event(Transcript(text, context={"conversation_id": room}).event())
        events = await until(c, "handled-stop")
    assert events[0].type == "handled-start"
    return Handled.from_event(events[-2]).text or "", time.monotonic()


def test_rooms_run_in_parallel_and_one_room_in_order(served: tuple[str, int, Path]) -> None:
    think_s = THINK_MS / 1000

    async def at_once(*turns: tuple[str, str]) -> tuple[list[tuple[str, float]], float]:
        started = time.monotonic()
        results = await asyncio.gather(*(handle(served, room, text) for room, text in turns))
        return list(results), time.monotonic() - started

    replies, elapsed = asyncio.run(at_once(("kitchen", "lights on"), ("attic", "fan off")))
    assert [r[0] for r in replies] == ["You said: lights on", "You said: fan off"]
    assert elapsed < 1.75 * think_s, f"two rooms took {elapsed:.2f} s: not in parallel"

    replies, elapsed = asyncio.run(at_once(("desk", "first question"), ("desk", "second one")))
    assert {r[0] for r in replies} == {"You said: first question", "You said: second one"}
    assert elapsed >= 2 * think_s, f"one room took {elapsed:.2f} s for two turns: overlapped"
    assert abs(replies[0][1] - replies[1][1]) >= 0.9 * think_s  # one after the other

    sessions = [json.loads(p.read_text()) for p in served[2].glob("*.json") if p.stem[0] != "_"]
    desk = [s for s in sessions if s["room_id"] == "desk"]
    assert len(desk) == 1
    messages = [(m["role"], m["content"]) for m in desk[0]["messages"]]
    questions = [text for role, text in messages if role == "user"]
    assert sorted(questions) == ["first question", "second one"]
    assert messages == [
        ("user", questions[0]),
        ("assistant", f"You said: {questions[0]}"),
        ("user", questions[1]),
        ("assistant", f"You said: {questions[1]}"),
    ]


def test_a_unix_socket_only_this_user_can_open(tmp_path: Path) -> None:
    socket_path = tmp_path / "wy.sock"
    config = write_config(tmp_path, '[wyoming]\nprograms = ["handle"]\n')
    process = serve_process(config, uri=f"unix://{socket_path}")
    try:
        assert process.wait_ready()["uri"] == f"unix://{socket_path}"
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
        with Client(str(socket_path)) as c:
            c.send(Transcript("hello", context={"conversation_id": "pantry"}).event())
            assert c.read_until("handled")[-1].data["text"] == "You said: hello"
    finally:
        assert process.stop() == 0, process.output()
    assert not socket_path.exists()


def test_a_network_address_needs_allow_remote_and_is_warned_about(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[wyoming]\nprograms = ["handle"]\n')
    refused = subprocess.run(
        [PYTHON, "-m", "voice.cli", "serve", "--config", str(config), "--uri", "tcp://0.0.0.0:0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 78, refused.stderr
    assert "not a loopback address" in refused.stderr and "--allow-remote" in refused.stderr

    process = serve_process(config, uri="tcp://0.0.0.0:0", extra=["--allow-remote"])
    try:
        process.wait_ready()
        assert "beyond this machine: there is no authentication" in process.output()
    finally:
        assert process.stop() == 0, process.output()


def test_bad_uris_are_config_errors(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    for uri in ("http://127.0.0.1:10700", "tcp://127.0.0.1", "unix://"):
        result = subprocess.run(
            [sys.executable, "-m", "voice.cli", "serve", "--config", str(config), "--uri", uri],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 78, (uri, result.stderr)
        assert "expected tcp://HOST:PORT" in result.stderr


def test_a_taken_port_or_a_missing_socket_folder_is_one_clear_error(tmp_path: Path) -> None:
    # Every program, and a Whisper model that is not there: the address is taken first.
    config = write_config(tmp_path, f'[stt]\nmodel = "{tmp_path}/no-such-whisper"\n')
    live = tmp_path / "live.sock"
    with socket.socket() as taken, socket.socket(socket.AF_UNIX) as answering:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        answering.bind(str(live))
        answering.listen()
        port = taken.getsockname()[1]
        for uri, message in (
            (f"tcp://127.0.0.1:{port}", "pick a free port"),
            (f"unix://{live}", "another server already answers"),
            (f"unix://{tmp_path}/missing/va.sock", "the socket's folder must exist"),
        ):
            result = subprocess.run(
                [PYTHON, "-m", "voice.cli", "serve", "--config", str(config), "--uri", uri],
                check=False,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 2, result.stderr  # it may be free on a restart
            assert f"cannot serve on {uri}" in result.stderr and message in result.stderr
            assert "Traceback" not in result.stderr
            assert "loading what" not in result.stderr, "models loaded for nothing"


def test_while_the_models_load_the_address_is_taken_and_a_signal_stops_it(tmp_path: Path) -> None:
    path = tmp_path / "va.sock"
    config = write_config(tmp_path)
    argv = [PYTHON, "-m", "voice.cli", "serve", "--config", str(config), "--uri", f"unix://{path}"]
    loading = Process(argv, r"loading what")
    try:
        loading.wait_ready()
        with socket.socket(socket.AF_UNIX) as early:
            early.connect(str(path))  # it waits in the backlog: a second serve would see it
        loading.kill(signal.SIGTERM)
        assert loading.proc.wait(60) == 128 + signal.SIGTERM, loading.output()
    finally:
        loading.stop()
    assert "ready:" not in loading.output()  # stopped during the load, not after it
    assert not path.exists()


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("tcp://0.0.0.0:10700", "this machine's address, port 10700"),
        ("tcp://[::]:10700", "this machine's address, port 10700"),
        ("tcp://192.168.1.20:10700", "can add tcp://192.168.1.20:10700"),
        # Home Assistant's integration takes a host and a port: no socket is offered to it.
        ("unix:///run/user/1000/va.sock", "on this machine can use unix:///run/user/1000/va.sock"),
    ],
)
def test_the_ready_line_names_an_address_home_assistant_can_use(address: str, says: str) -> None:
    line = _where_to_add(address)
    assert says in line
    assert ("integration can add" in line) == address.startswith("tcp://")


def test_an_agent_program_that_is_not_there_is_said_at_start(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, '[agent]\ncommand = ["no-such-agent-x1"]\n[wyoming]\nprograms = ["handle"]\n'
    )
    argv = [
        PYTHON,
        "-m",
        "voice.cli",
        "serve",
        "--config",
        str(config),
        "--uri",
        "tcp://127.0.0.1:0",
    ]
    process = Process(argv, r"ready: ")
    try:
        process.wait_ready()
    finally:
        assert process.stop() == 0, process.output()
    warning = next(line for line in process.lines if "no-such-agent-x1" in line)
    assert "WARNING" in warning and "(agent.command) was not found on PATH" in warning
    assert process.output().index(warning) < process.output().index("ready: ")
