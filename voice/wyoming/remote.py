"""Remote speech engines: a Wyoming server transcribes or speaks, the local model stands by.

``stt.engine = "wyoming"`` / ``tts.engine = "wyoming"`` put :class:`FallbackTranscriber` /
:class:`FallbackSynthesizer` behind the live loop's usual ``SpeechToText`` / ``TextToSpeech``
interfaces, so a Raspberry Pi Zero can use a bigger machine's wyoming-faster-whisper,
wyoming-piper or ``voice-assistant serve``. Each request is one short blocking connection;
every wait (connect, each event) is bounded by ``timeout_s``, and so is the whole answer,
beyond the time the audio itself takes: a server that keeps sending other events, or audio
slower than it plays, has not answered.

When the server cannot be reached, times out, breaks the protocol or dies mid-request, the
local engine answers that same request (no turn is lost) and the next ones for
:data:`RETRY_S`, with one warning in the log; then the server is tried again, and its return
is logged too. ``fallback`` decides when the local model is loaded: ``"lazy"`` (default) at
the first failure, which costs nothing while the server works but makes that one request wait
for the model to load (seconds on a Pi Zero); ``"eager"`` at start, so a failure costs no
time but the model's memory is always taken (on a 512 MB Pi Zero that is most of what the
remote engine saves); ``"off"``: no local model, a failed request is an error.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, Literal, TypeVar
from urllib.parse import urlsplit

import numpy as np
from wyoming.asr import Transcribe
from wyoming.asr import Transcript as TranscriptEvent
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize

from core.errors import ProtocolError, RemoteEngineError, WyomingError
from voice.audio import Utterance
from voice.config import SttConfig, TtsConfig
from voice.stt import HallucinationGuard, SpeechToText, Transcript
from voice.tts import Pcm16, TextToSpeech
from voice.wyoming.audio_in import audio_format
from voice.wyoming.protocol import Limits, SocketReader, encode

log = logging.getLogger(__name__)

REMOTE_RATE = 22050  # what the remote voice plays at: Piper's medium and high voices' rate
RETRY_S = 30.0  # after a failure, the local engine answers this long before the server is tried
CHUNK_S = 0.1  # audio sent per audio-chunk event
# A remote server's audio chunks are small (wyoming-piper: 1024 samples); info is a few KB.
CLIENT_LIMITS = Limits(max_payload_bytes=4 * 1024 * 1024)
# The most audio a sentence may come back as: Piper says about 15 characters a second.
MAX_AUDIO_BASE_S, MAX_AUDIO_PER_CHAR_S = 10.0, 0.5

Engine = TypeVar("Engine")
Mode = Literal["lazy", "eager", "off"]


class WyomingClient:
    """Blocking requests to one Wyoming server, a connection each."""

    def __init__(self, uri: str, timeout_s: float) -> None:
        self.uri = uri
        self.timeout_s = timeout_s

    @contextlib.contextmanager
    def request(self) -> Iterator[Session]:
        sock = self._connect()
        session = Session(sock, self.uri, self.timeout_s)
        try:
            yield session
        finally:
            session.close()

    def _connect(self) -> socket.socket:
        parts = urlsplit(self.uri)
        try:
            if parts.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout_s)
                try:
                    sock.connect(parts.path)
                except BaseException:
                    sock.close()
                    raise
                return sock
            address = (parts.hostname or "", parts.port or 0)
            sock = socket.create_connection(address, timeout=self.timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except TimeoutError:
            raise RemoteEngineError(f"cannot reach {self.uri}: timed out") from None
        except OSError as e:
            raise RemoteEngineError(f"cannot reach {self.uri}: {e.strerror or e}") from None

    def info(self) -> Info:
        with self.request() as session:
            session.send(Describe().event())
            while True:
                event = session.read()
                if Info.is_type(event.type):
                    try:
                        return Info.from_event(event)
                    except (KeyError, TypeError, ValueError) as e:
                        raise ProtocolError(f"{self.uri} sent an unreadable info: {e!r}") from None


class Session:
    """One connection: events out, events in; an ``error`` event from the server raises."""

    def __init__(self, sock: socket.socket, uri: str, timeout_s: float) -> None:
        self._sock = sock
        self._uri = uri
        self._timeout_s = timeout_s
        self._reader = SocketReader(sock, CLIENT_LIMITS)
        self.waited_s = 0.0  # in reads: the server's time, not the caller's between them

    def send(self, event: Event) -> None:
        try:
            self._sock.sendall(encode(event))
        except TimeoutError:
            raise RemoteEngineError(f"{self._uri} stopped reading (timed out)") from None
        except OSError as e:
            raise RemoteEngineError(f"the connection to {self._uri} broke: {e}") from None

    def read(self, budget_s: float | None = None) -> Event:
        """The next event, unless the reads of this connection have waited ``budget_s`` in all."""
        if budget_s is not None:
            left = budget_s - self.waited_s
            if left <= 0:
                raise self._late(budget_s)
            self._sock.settimeout(min(self._timeout_s, left))
        started = time.monotonic()
        try:
            event = self._reader.read()
        except RemoteEngineError:
            if budget_s is not None and time.monotonic() - started + self.waited_s >= budget_s:
                raise self._late(budget_s) from None
            raise
        finally:
            self.waited_s += time.monotonic() - started
        if event is None:
            raise RemoteEngineError(f"{self._uri} closed the connection before answering")
        if Error.is_type(event.type):
            raise RemoteEngineError(f"{self._uri} answered with an error: {event.data.get('text')}")
        return event

    def _late(self, budget_s: float) -> RemoteEngineError:
        return RemoteEngineError(f"{self._uri} did not finish its answer in {budget_s:.1f} s")

    def close(self) -> None:
        self._reader.close()
        self._sock.close()


# ---- the engines -----------------------------------------------------------------------------
class RemoteTranscriber:
    """A Wyoming ``asr`` program, with the local guard's checks that need no model."""

    def __init__(self, config: SttConfig, client: WyomingClient | None = None) -> None:
        self.client = client or WyomingClient(config.uri, config.timeout_s)
        self._guard = HallucinationGuard(config)
        self._language = config.language

    def transcribe(self, utterance: Utterance) -> Transcript:
        reason = self._guard.before(utterance)
        if reason:
            return Transcript("", utterance.duration_s, 0.0, dropped=reason)
        started = time.perf_counter()
        rate = utterance.rate
        with self.client.request() as session:
            session.send(Transcribe(language=self._language).event())
            session.send(AudioStart(rate=rate, width=2, channels=1).event())
            step = int(rate * CHUNK_S) * 2
            for offset in range(0, len(utterance.pcm), step):
                part = utterance.pcm[offset : offset + step]
                session.send(AudioChunk(rate, 2, 1, part).event())
            session.send(AudioStop().event())
            log.debug(
                "sent %.1f s to %s; waiting for the transcript",
                utterance.duration_s,
                self.client.uri,
            )
            # A server slower than the speech itself is of no use: the local model is faster.
            budget_s = self.client.timeout_s + utterance.duration_s
            while True:
                event = session.read(budget_s)
                if TranscriptEvent.is_type(event.type):
                    text = event.data.get("text")
                    break
        if not isinstance(text, str):
            raise ProtocolError(f"{self.client.uri} sent a transcript without text")
        text = text.strip()
        elapsed = time.perf_counter() - started
        # No scores come back: the blocklist and the repetition check still apply.
        reason = self._guard.after(text, 0.0, 0.0) if text else None
        if reason:
            log.info("dropped transcript %r: %s", text, reason)
            return Transcript("", utterance.duration_s, elapsed, dropped=reason)
        return Transcript(text, utterance.duration_s, elapsed)


class RemoteSynthesizer:
    """A Wyoming ``tts`` program; its audio is converted to mono at :data:`REMOTE_RATE`."""

    sample_rate = REMOTE_RATE

    def __init__(self, config: TtsConfig, client: WyomingClient | None = None) -> None:
        self.client = client or WyomingClient(config.uri, config.timeout_s)

    def synthesize(self, text: str) -> Iterator[Pcm16]:
        if not text.strip():
            return
        most_s = MAX_AUDIO_BASE_S + MAX_AUDIO_PER_CHAR_S * len(text)
        with self.client.request() as session:
            session.send(Synthesize(text=text).event())
            audio_s = 0.0
            convert: _ToOutput | None = None
            while True:
                # Ahead of the speaker, give or take timeout_s, or it would stutter. (A reply
                # held back is time between reads: not counted.)
                event = session.read(self.client.timeout_s + audio_s)
                if event.type in ("audio-start", "audio-chunk"):
                    fmt = audio_format(event.data)
                    if convert is None or convert.format != fmt:
                        convert = _ToOutput(fmt)
                    if event.type == "audio-chunk" and event.payload:
                        out = convert(event.payload)
                        audio_s += out.size / REMOTE_RATE
                        if audio_s > most_s:
                            raise RemoteEngineError(
                                f"{self.client.uri} sent more than {most_s:.0f} s of audio for "
                                f"{len(text)} characters"
                            )
                        if out.size:
                            yield out
                elif event.type == "audio-stop":
                    if convert is not None and (tail := convert.flush()).size:
                        yield tail  # the resampler's last few ms
                    if audio_s == 0:  # words to say, and silence back: not a voice
                        raise RemoteEngineError(f"{self.client.uri} sent no audio for {text!r:.60}")
                    return


class _ToOutput:
    """int16 audio of any rate and channel count to mono int16 at :data:`REMOTE_RATE`."""

    def __init__(self, fmt: tuple[int, int, int]) -> None:
        import soxr

        self.format = fmt
        rate, _width, channels = fmt
        self._channels = channels
        self._stream = (
            soxr.ResampleStream(rate, REMOTE_RATE, 1, dtype="int16")
            if rate != REMOTE_RATE
            else None
        )

    def __call__(self, pcm: bytes) -> Pcm16:
        usable = len(pcm) - len(pcm) % (2 * self._channels)
        samples = np.frombuffer(pcm[:usable], dtype="<i2").reshape(-1, self._channels)
        mono: Pcm16 = (
            samples[:, 0].copy() if self._channels == 1 else samples.mean(axis=1).astype(np.int16)
        )
        if self._stream is not None:
            mono = np.asarray(self._stream.resample_chunk(mono), dtype=np.int16)
        return mono

    def flush(self) -> Pcm16:
        """What the resampler still holds at the end of the audio (about 30 ms)."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        last = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        return np.asarray(last, dtype=np.int16)


# ---- falling back ----------------------------------------------------------------------------
class _Standby(Generic[Engine]):
    """The local engine standing by, and whether the server is in use or resting."""

    def __init__(
        self,
        what: str,
        uri: str,
        load_local: Callable[[], Engine],
        mode: Mode,
        clock: Callable[[], float],
    ) -> None:
        self._what = what
        self._uri = uri
        self._load_local = load_local
        self._mode = mode
        self._clock = clock
        self._lock = threading.Lock()
        self._local: Engine | None = None
        self._down_until: float | None = None
        if mode == "eager":
            self.local()

    def local(self) -> Engine:
        with self._lock:
            if self._local is None:
                if self._mode == "off":
                    raise RemoteEngineError(
                        f"the {self._what} server {self._uri} is not available and there is "
                        f"no local fallback ({self._what}.fallback = 'off')"
                    )
                started = time.monotonic()
                self._local = self._load_local()
                log.info(
                    "local %s loaded as the fallback in %.1f s",
                    self._what,
                    time.monotonic() - started,
                )
            return self._local

    def use_server(self) -> bool:
        """Not for RETRY_S after a failure, while the local engine answers; with no local
        engine (fallback = "off") the server is all there is: every request tries it."""
        with self._lock:
            down = self._down_until is not None and self._clock() < self._down_until
            return not down or self._mode == "off"

    def failed(self, error: WyomingError, *, partly: bool = False) -> None:
        with self._lock:
            first = self._down_until is None
            self._down_until = self._clock() + RETRY_S
        how = "the local engine says it again" if partly else "the local engine takes over"
        if self._mode == "off":
            how = "no local fallback (fallback = 'off')"
        else:
            how += f", server retried in {RETRY_S:g} s"
        line = f"{self._what} server failed: {error}; {how}"
        if first:
            log.warning("%s", line)
        else:
            log.debug("%s", line)

    def worked(self) -> None:
        with self._lock:
            was_down, self._down_until = self._down_until is not None, None
        if was_down:
            log.info("%s server %s answers again", self._what, self._uri)


class FallbackTranscriber:
    """``stt.engine = "wyoming"``: the server, else the local Whisper."""

    def __init__(
        self,
        remote: RemoteTranscriber,
        load_local: Callable[[], SpeechToText],
        *,
        mode: Mode = "lazy",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remote = remote
        self.standby = _Standby("stt", remote.client.uri, load_local, mode, clock)

    def transcribe(self, utterance: Utterance) -> Transcript:
        return self._transcribe(utterance, whole=False)

    def transcribe_whole(self, utterance: Utterance) -> Transcript:
        """The server has one way to transcribe; the local model, its slower whole one."""
        return self._transcribe(utterance, whole=True)

    def _transcribe(self, utterance: Utterance, *, whole: bool) -> Transcript:
        if self.standby.use_server():
            try:
                result = self.remote.transcribe(utterance)
            except WyomingError as e:
                self.standby.failed(e)
            else:
                self.standby.worked()
                return result
        local = self.standby.local()
        return local.transcribe_whole(utterance) if whole else local.transcribe(utterance)


class FallbackSynthesizer:
    """``tts.engine = "wyoming"``: the server, else the local Piper voice, at one rate."""

    sample_rate = REMOTE_RATE

    def __init__(
        self,
        remote: RemoteSynthesizer,
        load_local: Callable[[], TextToSpeech],
        *,
        mode: Mode = "lazy",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remote = remote
        self.standby = _Standby("tts", remote.client.uri, load_local, mode, clock)

    def synthesize(self, text: str) -> Iterator[Pcm16]:
        if self.standby.use_server():
            played = False
            try:
                for chunk in self.remote.synthesize(text):
                    played = True
                    yield chunk
            except WyomingError as e:
                # Part of the sentence may have played: it is said again, whole, rather than lost.
                self.standby.failed(e, partly=played)
            else:
                self.standby.worked()
                return
        local = self.standby.local()
        for chunk in local.synthesize(text):
            yield _resampled(chunk, local.sample_rate)


def _resampled(chunk: Pcm16, rate: int) -> Pcm16:
    if rate == REMOTE_RATE:
        return chunk
    import soxr

    return np.asarray(soxr.resample(chunk, rate, REMOTE_RATE), dtype=np.int16)


def probe(client: WyomingClient, program: Literal["asr", "tts"]) -> str:
    """Ask the server what it offers; the name of its first ``program``, or an error."""
    info = client.info()
    programs = info.asr if program == "asr" else info.tts
    if not programs:
        raise RemoteEngineError(f"{client.uri} offers no {program} program")
    return str(programs[0].name)


def remote_stt(config: SttConfig, load_local: Callable[[], SpeechToText]) -> FallbackTranscriber:
    engine = FallbackTranscriber(RemoteTranscriber(config), load_local, mode=config.fallback)
    _check(engine.standby, engine.remote.client, "asr")
    return engine


def remote_tts(config: TtsConfig, load_local: Callable[[], TextToSpeech]) -> FallbackSynthesizer:
    engine = FallbackSynthesizer(RemoteSynthesizer(config), load_local, mode=config.fallback)
    _check(engine.standby, engine.remote.client, "tts")
    return engine


def _check(
    standby: _Standby[Engine], client: WyomingClient, program: Literal["asr", "tts"]
) -> None:
    try:
        name = probe(client, program)
    except WyomingError as e:
        standby.failed(e)
    else:
        log.info(
            "%s: %s at %s",
            "speech to text" if program == "asr" else "text to speech",
            name,
            client.uri,
        )
