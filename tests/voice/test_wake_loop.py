"""Wake mode in the live loop, on scripted audio through fakes (real threads, real time).

The "wake word" here is a marker the fake detector recognises: a stretch of constant samples
(777, too quiet for the threshold detector to call speech). Like the real model it reports
the word a few frames after it ended, with the time it ended; the request is a loud tone.
What must happen: the request said right after the word, in the same breath, reaches the
transcriber whole, without the word; speech without the word reaches nobody; a word heard
over the assistant's own sound does not count.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from core.errors import ConfigError
from voice.audio import AudioChunk, Utterance
from voice.config import Config, EarconConfig
from voice.earcons import Earcons
from voice.loop import VoiceLoop
from voice.pipeline import Models, build_loop
from voice.turn_events import Phase
from voice.wake import WakeDetection

from .fakes import (
    FRAME_MS,
    RATE,
    FakeConversation,
    FakeSink,
    FakeStt,
    FakeTts,
    ScriptedSource,
    ThresholdDetector,
    silence,
    tone,
    wait_until,
)

MARK = 777
DETECTION_DELAY_FRAMES = 4  # the real models decide 70-300 ms after the word


def word(ms: int) -> bytes:
    return np.full(RATE * ms // 1000, MARK, dtype="<i2").tobytes()


class MarkerWake:
    """Hears the marker; reports it DETECTION_DELAY_FRAMES chunks after it ended, and says it
    may be hearing the word (``likely_s``) from its first marked sample until then."""

    name = "marker"
    phrase = "Hey Marker"

    def __init__(self) -> None:
        self.resets = 0
        self._end_s: float | None = None
        self._frames_since = 0
        self._in_word = False
        self.likely_s: float | None = None

    def process(self, chunk: AudioChunk) -> WakeDetection | None:
        samples = chunk.to_int16()
        marked = samples == MARK
        if marked.any():
            if not self._in_word:
                self.likely_s = chunk.timestamp_s + int(np.flatnonzero(marked)[0]) / RATE
            self._in_word = True
            last = int(np.flatnonzero(marked)[-1]) + 1
            self._end_s = chunk.timestamp_s + last / RATE
            self._frames_since = 0
            return None
        if not self._in_word or self._end_s is None:
            return None
        self._frames_since += 1
        if self._frames_since < DETECTION_DELAY_FRAMES:
            return None
        self._in_word = False
        self.likely_s = None
        end_s = chunk.timestamp_s + chunk.duration_s
        return WakeDetection(self.name, 0.99, end_s, self._end_s)

    def reset(self) -> None:
        self.resets += 1
        self._in_word = False
        self._end_s = None
        self.likely_s = None


def transcribe(utterance: Utterance) -> str:
    """What a transcriber would hear: the word (if any got in) and the request's length."""
    samples = np.frombuffer(utterance.pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples) > 1000)
    span_ms = (loud[-1] - loud[0] + 1) * 1000 // RATE if loud.size else 0
    heard = "hey jarvis " if (samples == MARK).any() else ""
    return f"{heard}request of {round(span_ms, -1)} ms"


class AlwaysPlaying(FakeSink):
    """A speaker that never falls silent: everything the microphone hears is gated."""

    @property
    def playing(self) -> bool:
        return True

    @property
    def sounding(self) -> bool:
        return True


@dataclasses.dataclass
class Run:
    loop: VoiceLoop
    conversation: FakeConversation
    wake: MarkerWake
    stt: FakeStt
    sink: FakeSink


@pytest.fixture
def run_wake() -> Iterator[Callable[..., Run]]:
    threads: list[tuple[threading.Event, threading.Thread]] = []

    def start(
        script: bytes,
        *,
        sink: FakeSink | None = None,
        follow_up_s: float = 5.0,
        earcons: bool = False,
        source: ScriptedSource | None = None,
        conversation: FakeConversation | None = None,
        barge_in: bool = False,
    ) -> Run:
        config = Config()
        config = dataclasses.replace(
            config,
            input=dataclasses.replace(config.input, mode="wake"),
            wake=dataclasses.replace(config.wake, follow_up_s=follow_up_s),
            turn=dataclasses.replace(
                config.turn, room="wake-room", smart_endpoint=False, barge_in=barge_in
            ),
            vad=dataclasses.replace(config.vad, hangover_ms=600),
            earcons=EarconConfig(enabled=earcons, thinking=False),
        )
        wake, stt = MarkerWake(), FakeStt(transcribe)
        conversation = conversation or FakeConversation()
        sink = sink or FakeSink()
        loop = build_loop(
            config,
            source=source or ScriptedSource(script),
            sink=sink,
            models=Models(stt=stt, tts=FakeTts(), wake=wake),
            conversation=conversation,
            detector=ThresholdDetector(),
        )
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        thread.start()
        threads.append((stop, thread))
        return Run(loop, conversation, wake, stt, sink)

    yield start
    for stop, thread in threads:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def test_the_request_in_the_same_breath_is_sent_without_the_wake_word(
    run_wake: Callable[..., Run],
) -> None:
    # No gap at all between the word and the request: the first 120 ms of the request were
    # said before the word was detected, and must come from the pre-roll.
    run = run_wake(silence(500) + word(600) + tone(900) + silence(3000))
    assert wait_until(lambda: bool(run.conversation.messages), timeout_s=10)
    assert run.conversation.messages == [("wake-room", "request of 900 ms")]


def test_speech_without_the_wake_word_is_ignored(run_wake: Callable[..., Run]) -> None:
    run = run_wake(silence(300) + tone(900) + silence(500) + tone(1200) + silence(500))
    time.sleep(4.0)
    assert run.conversation.messages == [] and run.stt.calls == []
    assert run.loop.phase is Phase.IDLE


def test_a_request_after_a_pause_needs_no_second_wake_word(
    run_wake: Callable[..., Run],
) -> None:
    run = run_wake(silence(300) + word(600) + silence(1500) + tone(900) + silence(2000))
    assert wait_until(lambda: bool(run.conversation.messages), timeout_s=10)
    assert run.conversation.messages == [("wake-room", "request of 900 ms")]


def test_a_wake_word_over_the_assistants_own_sound_is_ignored(
    run_wake: Callable[..., Run],
) -> None:
    run = run_wake(silence(300) + word(600) + tone(900) + silence(1000), sink=AlwaysPlaying())
    time.sleep(4.0)
    assert run.conversation.messages == []
    assert run.loop.phase is Phase.IDLE


def test_the_follow_up_is_answered_then_the_microphone_closes(
    run_wake: Callable[..., Run],
) -> None:
    # Request, reply (~0.3 s of fake speech), a follow-up inside the window, then silence
    # longer than the window, then speech without the wake word: ignored.
    script = silence(300) + word(600) + tone(600) + silence(2500) + tone(1200) + silence(4000)
    run = run_wake(script + tone(900) + silence(1000), follow_up_s=2.0)
    assert wait_until(lambda: len(run.conversation.messages) == 2, timeout_s=15)
    time.sleep(4.0)
    said = [text for _, text in run.conversation.messages]
    assert said == ["request of 600 ms", "request of 1200 ms"]


def test_the_wake_word_in_the_follow_up_window_is_cut_from_the_request(
    run_wake: Callable[..., Run],
) -> None:
    script = silence(300) + word(600) + tone(600) + silence(2500)
    run = run_wake(script + word(600) + tone(1200) + silence(2000), follow_up_s=5.0)
    assert wait_until(lambda: len(run.conversation.messages) == 2, timeout_s=15)
    said = [text for _, text in run.conversation.messages]
    assert said == ["request of 600 ms", "request of 1200 ms"]


class CancelledSource(ScriptedSource):
    """An echo-cancelled microphone whose AEC3 output (``pcm``) lost the wake word, as AEC3
    silences the first 300-700 ms of a voice over the reply; the linear canceller's output
    (``words``, what Whisper hears) kept it."""

    def read(self, timeout_s: float) -> AudioChunk | None:
        chunk = super().read(timeout_s)
        if chunk is None:
            return None
        return dataclasses.replace(chunk, pcm=without_the_word(chunk), words=chunk.pcm)


def without_the_word(chunk: AudioChunk) -> bytes:
    """What AEC3 leaves of a chunk over the reply: the word silenced."""
    samples = chunk.to_int16()
    return np.where(samples == MARK, 0, samples).astype("<i2").tobytes()


def test_the_wake_word_is_heard_in_what_whisper_hears(run_wake: Callable[..., Run]) -> None:
    script = silence(300) + word(600) + tone(900) + silence(3000)
    run = run_wake(script, source=CancelledSource(script))
    assert wait_until(lambda: bool(run.conversation.messages), timeout_s=10)
    assert run.conversation.messages == [("wake-room", "request of 900 ms")]


LONG_REPLY = "the whole shopping list for the weekend, slowly, one item at a time" * 4


@pytest.mark.parametrize(
    ("reply", "stopped"),
    [
        (f"You said: hey, marker. Here is {LONG_REPLY}.", False),  # its echo, not the user
        (f"You said: hey there. Here is {LONG_REPLY}.", True),  # the user's word stops it
    ],
)
def test_a_wake_word_over_the_reply_stops_it_unless_the_reply_says_it(
    run_wake: Callable[..., Run], reply: str, stopped: bool
) -> None:
    """With echo cancellation (nothing gated) a wake word over the reply stops it, as any
    voice does; the canceller leaves a little of the reply, so the word in the reply's own
    words is its echo. The fake reply plays 10 ms a character: about 3 s from about 2 s."""
    script = silence(300) + word(600) + tone(600) + silence(2000) + word(600) + silence(4000)
    conversation = FakeConversation(script=[("text", reply)])
    run = run_wake(script, conversation=conversation, barge_in=True, follow_up_s=0.0)
    assert wait_until(lambda: bool(run.conversation.messages), timeout_s=10)
    assert wait_until(lambda: run.sink.played and run.sink.wait(0), timeout_s=15)
    assert wait_until(lambda: run.loop.phase is Phase.IDLE, timeout_s=10)
    assert run.sink.stops == (1 if stopped else 0), run.sink.played
    assert run.conversation.messages == [("wake-room", "request of 600 ms")]
    # The reply paused as the word began to be heard, before it was decided; its own
    # echo of the word does not even pause it.
    assert [kind for kind, _ in run.sink.pauses][:1] == (["pause"] if stopped else [])


class StalledCancellerSource(ScriptedSource):
    """An echo-cancelled microphone the loop gates (a stall moved the echo, or the room is
    not learnt yet): AEC3's output lost the wake word and Whisper hears it (``words``); only
    the linear canceller's output, untrusted, kept it (``linear``)."""

    def read(self, timeout_s: float) -> AudioChunk | None:
        chunk = super().read(timeout_s)
        if chunk is None:
            return None
        silenced = without_the_word(chunk)
        return dataclasses.replace(chunk, pcm=silenced, words=silenced, linear=chunk.pcm)


@pytest.mark.parametrize(("canceller", "stopped"), [(True, True), (False, False)])
def test_a_gated_reply_is_stopped_by_a_wake_word_the_linear_canceller_kept(
    run_wake: Callable[..., Run], canceller: bool, stopped: bool
) -> None:
    """Gated, the wake word still counts when the linear canceller kept it (after a stall it
    was lost 5 of 5 times in the rig); half-duplex without one, the word over the reply is
    the reply's own sound to the loop, and is ignored."""
    # "Hey Marker, stop.": the short request right after the word must not be taken for the
    # reply's echo (the gate's cooldown) and dropped as a cough.
    script = silence(300) + word(600) + tone(600) + silence(2000) + word(600) + tone(300)
    script += silence(4000)
    reply = f"You said: hey there. Here is {LONG_REPLY}."
    source = StalledCancellerSource(script) if canceller else ScriptedSource(script)
    conversation = FakeConversation(script=[("text", reply)])
    run = run_wake(script, source=source, conversation=conversation, follow_up_s=0.0)
    turns = 2 if stopped else 1
    assert wait_until(lambda: len(run.conversation.messages) == turns, timeout_s=10)
    assert wait_until(lambda: run.loop.phase is Phase.IDLE, timeout_s=15)
    time.sleep(1.0)
    assert run.sink.stops == (1 if stopped else 0), run.sink.played
    said = [text for _, text in run.conversation.messages]
    assert said == ["request of 600 ms", "request of 300 ms"][:turns]


def chimes(run: Run) -> int:
    listening = Earcons(EarconConfig(), RATE).get("listening")
    assert listening is not None
    return sum(n == len(listening) for _, n in run.sink.played)


def test_a_request_in_the_same_breath_gets_no_chime_and_one_after_a_pause_does(
    run_wake: Callable[..., Run],
) -> None:
    """ "Hey Jarvis, stop.": no chime under "stop" (with echo cancellation it cost the first
    word); "Hey Jarvis [waits] stop.": the chime says it listens. Either way the request is
    heard. (The follow-up window's chime after the reply is the other one counted.)"""
    run = run_wake(silence(300) + word(600) + tone(300) + silence(2500), earcons=True)
    assert wait_until(lambda: bool(run.conversation.messages), timeout_s=10)
    assert run.conversation.messages == [("wake-room", "request of 300 ms")]
    assert wait_until(lambda: chimes(run) == 1, timeout_s=10)  # the follow-up window's
    time.sleep(0.5)
    assert chimes(run) == 1
    run = run_wake(
        silence(300) + word(600) + silence(800) + tone(300) + silence(2500), earcons=True
    )
    assert wait_until(lambda: bool(run.conversation.messages), timeout_s=10)
    assert run.conversation.messages == [("wake-room", "request of 300 ms")]
    assert wait_until(lambda: chimes(run) == 2, timeout_s=10)


def test_wake_mode_without_a_detector_is_refused() -> None:
    config = dataclasses.replace(Config(), input=dataclasses.replace(Config().input, mode="wake"))
    with pytest.raises(ConfigError, match="wake word detector"):
        build_loop(
            config,
            source=ScriptedSource(b""),
            sink=FakeSink(),
            models=Models(stt=FakeStt(transcribe), tts=FakeTts()),
            conversation=FakeConversation(),
        )


def test_chunks_are_cut_where_the_word_ended() -> None:
    from voice.loop import after

    chunk = AudioChunk(silence(FRAME_MS), RATE, timestamp_s=10.0)
    assert after(chunk, 9.0) is chunk
    assert after(chunk, 10.05) is None
    cut = after(chunk, 10.01)
    assert cut is not None and cut.timestamp_s == pytest.approx(10.01)
    assert cut.samples == RATE * 20 // 1000
