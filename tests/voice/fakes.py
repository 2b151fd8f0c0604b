"""Fakes for the loop's engines and devices, passed in through constructors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from core.agent_events import (
    ApiRetry,
    ConversationLost,
    EventCallback,
    PermissionRequest,
    TextDelta,
    TextDone,
    ToolResult,
    ToolUse,
    TurnControl,
)
from core.conversation import TurnOutcome
from core.errors import AgentError, DeviceError
from voice.audio import AudioChunk, Utterance
from voice.stt import Transcript

RATE = 16000
FRAME_MS = 30
FRAME_SAMPLES = RATE * FRAME_MS // 1000


def tone(ms: int, amplitude: int = 8000) -> bytes:
    """A loud tone: the threshold detector calls it speech."""
    n = RATE * ms // 1000
    t = np.arange(n) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(RATE * ms // 1000 * 2)


class ThresholdDetector:
    """Speech is anything louder than a fixed amplitude: deterministic, no model."""

    def is_speech(self, frame: bytes, rate: int) -> bool:
        return int(np.abs(np.frombuffer(frame, dtype="<i2")).max(initial=0)) > 1000


class ScriptedSource:
    """A microphone playing a script of PCM at real-time pace, then silence forever.

    ``fail_after_s`` makes reads raise DeviceError for a while, like an unplugged device.
    """

    def __init__(self, script: bytes = b"", *, speed: float = 1.0) -> None:
        self._pcm = bytearray(script)
        self._speed = speed
        self._lock = threading.Lock()
        self._next_s: float | None = None
        self.frames_read = 0
        self.reopens = 0
        self.drains = 0
        self.broken = False
        self.stalled = False  # opens fine but delivers nothing, like a wedged USB device
        self.needs_reopen = False  # as DuplexDevice after an underrun: in step once reopened
        self._lump = b""

    def extend(self, pcm: bytes) -> None:
        with self._lock:
            self._pcm += pcm

    def lump(self, pcm: bytes) -> None:
        """The next read returns ``pcm`` in one chunk, before the rest of the script: a
        source that delivers several frames at once (the segmenter takes any length)."""
        with self._lock:
            self._lump = pcm

    def read(self, timeout_s: float) -> AudioChunk | None:
        if self.stalled:
            time.sleep(timeout_s)
            self._next_s = None
            return None
        if self.broken:
            time.sleep(min(timeout_s, 0.05))
            raise DeviceError("fake microphone unplugged")
        now = time.monotonic()
        if self._next_s is None:
            self._next_s = now
        with self._lock:
            lump, self._lump = self._lump, b""
        if lump:
            timestamp, self._next_s = self._next_s, self._next_s + len(lump) / 2 / RATE
            self.frames_read += len(lump) // (FRAME_SAMPLES * 2)
            return AudioChunk(lump, RATE, timestamp_s=timestamp)
        frame_s = FRAME_MS / 1000
        wait = self._next_s - now
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait > 0:
            time.sleep(wait)
        timestamp = self._next_s
        self._next_s += frame_s / self._speed
        with self._lock:
            frame = bytes(self._pcm[: FRAME_SAMPLES * 2])
            del self._pcm[: FRAME_SAMPLES * 2]
        frame = frame.ljust(FRAME_SAMPLES * 2, b"\0")
        self.frames_read += 1
        return AudioChunk(frame, RATE, timestamp_s=timestamp)

    def reopen(self) -> None:
        self.reopens += 1
        if self.broken:
            raise DeviceError("still unplugged")
        self.needs_reopen = False

    def drain(self) -> None:
        self.drains += 1


class FakeSink:
    """A speaker that takes real time to play what it is given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy_until = 0.0
        self.played: list[tuple[float, int]] = []  # (monotonic time, samples)
        self.stops = 0
        self.pauses: list[tuple[str, float]] = []  # ("pause" | "resume", monotonic time)
        self._left: float | None = None  # paused: seconds still to play

    def play(self, samples: np.ndarray, rate: int) -> None:
        with self._lock:
            now = time.monotonic()
            if self._left is not None:
                self._left += len(samples) / rate
            self._busy_until = max(now, self._busy_until) + len(samples) / rate
            self.played.append((now, len(samples)))

    def wait(self, timeout_s: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 1e9)
        while True:
            with self._lock:
                left = self._busy_until - time.monotonic()
            if left <= 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(left, 0.01, max(0.0, deadline - time.monotonic())))

    def stop(self) -> None:
        with self._lock:
            self._busy_until = 0.0
            self._left = None
            self.stops += 1

    def pause(self) -> None:
        with self._lock:
            now = time.monotonic()
            self.pauses.append(("pause", now))
            if self._left is None:
                self._left = max(0.0, self._busy_until - now)
                self._busy_until = float("inf")

    def resume(self) -> None:
        with self._lock:
            now = time.monotonic()
            self.pauses.append(("resume", now))
            if self._left is not None:
                self._busy_until, self._left = now + self._left, None

    @property
    def playing(self) -> bool:
        return time.monotonic() < self._busy_until

    @property
    def sounding(self) -> bool:
        with self._lock:
            return self._left is None and time.monotonic() < self._busy_until


class FakeTts:
    """10 ms of audio per character, in one chunk per call."""

    sample_rate = RATE

    def __init__(self) -> None:
        self.texts: list[str] = []

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        self.texts.append(text)
        yield np.full(len(text) * RATE // 100, 1000, dtype=np.int16)


class FakeStt:
    """Maps an utterance to text with a function of its duration."""

    def __init__(self, script: Callable[[Utterance], str], delay_s: float = 0.0) -> None:
        self._script = script
        self._delay_s = delay_s
        self.calls: list[float] = []

    def transcribe(self, utterance: Utterance) -> Transcript:
        self.calls.append(utterance.duration_s)
        time.sleep(self._delay_s)
        text = self._script(utterance)
        return Transcript(text=text, audio_s=utterance.duration_s, elapsed_s=self._delay_s)

    def transcribe_whole(self, utterance: Utterance) -> Transcript:
        return self.transcribe(utterance)


Step = tuple[object, ...]


class FakeConversation:
    """Echoes like the echo agent, streaming in two pieces; can fail, stall or follow a script.

    A script is a list of steps: ``("text", "...")`` streams text, ``("done",)`` ends a text
    block, ``("tool", name, input)`` starts a tool (ids ``toolu_1``, ``toolu_2``, ... in
    order), ``("result", id)`` ends one, ``("sleep", s)`` works for a while (an interrupt
    cuts it short), ``("ask", name, input[, id])`` waits for a permission answer (about the
    tool last started, unless ``id`` names another), ``("quiet", "...")`` is reply text
    never streamed, ``("retry", attempt, status)`` is a failed call to its service (None: no
    answer), ``("lost",)`` says it no longer had the conversation, ``("fail",)`` raises ``error``.
    """

    def __init__(
        self,
        error: Exception | None = None,
        delay_s: float = 0.0,
        script: list[Step] | None = None,
    ) -> None:
        self.error = error
        self.delay_s = delay_s
        self.script = script
        self.messages: list[tuple[str, str]] = []
        self.revised: list[bool] = []
        self.answers: list[tuple[str, str]] = []  # (decision, message)
        self.interrupts = 0
        self.received = threading.Event()
        self._answered = threading.Event()

    def run_turn(
        self,
        room_id: str,
        text: str,
        *,
        on_event: EventCallback | None = None,
        control: TurnControl | None = None,
        revises: bool = False,
    ) -> TurnOutcome:
        self.messages.append((room_id, text))
        self.revised.append(revises)
        self.received.set()
        stopped = threading.Event()
        control = control or TurnControl()

        def interrupt() -> None:
            self.interrupts += 1
            stopped.set()

        def answer(request_id: str, decision: str, message: str) -> bool:
            self.answers.append((decision, message))
            self._answered.set()
            return True

        control.bind(interrupt=interrupt, answer=answer)  # type: ignore[arg-type]
        emit = on_event or (lambda _e: None)
        try:
            if stopped.wait(self.delay_s):
                return TurnOutcome("", interrupted=True)
            failing = any(step[0] == "fail" for step in self.script or [])
            if self.error is not None and not failing:
                raise self.error
            steps = self.script or [
                ("text", f"You said: {text[: len(text) // 2]}"),
                ("text", text[len(text) // 2 :]),
            ]
            written = []
            tools: list[str] = []
            for step in steps:
                kind = step[0]
                if kind == "text":
                    written.append(str(step[1]))
                    emit(TextDelta(str(step[1])))
                elif kind == "quiet":  # replied whole at the end (--output-format json)
                    written.append(str(step[1]))
                elif kind == "fail":  # fails part way through its reply
                    raise self.error or AgentError("The agent crashed.")
                elif kind == "done":
                    emit(TextDone())
                elif kind == "tool":
                    tools.append(f"toolu_{len(tools) + 1}")
                    emit(ToolUse(tools[-1], str(step[1]), dict(step[2])))  # type: ignore[call-overload]
                elif kind == "result":
                    emit(ToolResult(str(step[1])))
                elif kind == "lost":  # it no longer had the conversation: a new one
                    emit(ConversationLost())
                elif kind == "retry":  # its service failed a call: ("retry", attempt, status)
                    emit(ApiRetry(int(step[1]), 10, step[2], "overloaded"))  # type: ignore[call-overload,arg-type]
                elif kind == "sleep" and stopped.wait(float(step[1])):  # type: ignore[arg-type]
                    return TurnOutcome("".join(written), interrupted=True)
                elif kind == "ask":
                    self._answered.clear()
                    about = str(step[3]) if len(step) > 3 else (tools[-1] if tools else "")
                    request = dict(step[2])  # type: ignore[call-overload]
                    emit(PermissionRequest("req-1", str(step[1]), request, tool_use_id=about))
                    while not self._answered.wait(0.05):
                        if stopped.is_set():
                            return TurnOutcome("".join(written), interrupted=True)
            return TurnOutcome("".join(written))
        finally:
            control.unbind()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
