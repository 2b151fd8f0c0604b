"""The speech gate in front of the wake word model (voice.wake.SpeechGatedWake), with fakes:
which audio the model is given, in which order, and when it stops being given any."""

from __future__ import annotations

import pytest

from voice.audio import AudioChunk
from voice.wake import SpeechGatedWake, WakeDetection

RATE = 16000
CHUNK_S = 0.03


class Model:
    """Records what it is given; detects on a chunk whose first byte is 0xDD."""

    name = "fake"
    phrase = "Fake"
    likely_s = None

    def __init__(self) -> None:
        self.given: list[float] = []  # timestamps of the chunks it processed
        self.resets = 0

    def process(self, chunk: AudioChunk) -> WakeDetection | None:
        self.given.append(round(chunk.timestamp_s, 3))
        if chunk.pcm[:1] == b"\xdd":
            return WakeDetection("fake", 0.99, chunk.timestamp_s, chunk.timestamp_s)
        return None

    def reset(self) -> None:
        self.resets += 1
        self.given.clear()


class Voiced:
    """webrtcvad's stand-in: a 10 ms frame is speech when its first byte is not 0."""

    def __init__(self) -> None:
        self.frames = 0

    def is_speech(self, frame: bytes, rate: int) -> bool:
        assert rate == RATE and len(frame) in (320, 640, 960)
        self.frames += 1
        return frame[:1] != b"\x00"


def chunk(i: int, kind: str = "quiet", seconds: float = CHUNK_S) -> AudioChunk:
    first = {"quiet": b"\x00", "voiced": b"\x01", "word": b"\xdd"}[kind]
    size = int(seconds * RATE) * 2
    return AudioChunk(first + bytes(size - 1), RATE, timestamp_s=round(i * seconds, 3))


def run(gate: SpeechGatedWake, kinds: str) -> list[WakeDetection | None]:
    """One chunk per letter: q quiet, v voiced, w the word (voiced, detected)."""
    names = {"q": "quiet", "v": "voiced", "w": "word"}
    return [gate.process(chunk(i, names[k])) for i, k in enumerate(kinds)]


def gated(pre_roll_s: float = 0.09, linger_s: float = 0.09) -> tuple[SpeechGatedWake, Model]:
    model = Model()
    return SpeechGatedWake(model, Voiced(), pre_roll_s=pre_roll_s, linger_s=linger_s), model


def test_silence_never_reaches_the_model() -> None:
    gate, model = gated()
    assert run(gate, "q" * 100) == [None] * 100
    assert model.given == [] and not gate.open


def test_a_voiced_chunk_opens_it_with_the_audio_before() -> None:
    gate, model = gated(pre_roll_s=0.09)
    run(gate, "qqqqqv")
    # Reset, then the last 90 ms of audio (the voiced chunk the last of it), in order.
    assert model.resets == 1
    assert model.given == [0.09, 0.12, 0.15]
    assert gate.open


@pytest.mark.parametrize(
    ("kinds", "given", "still_open"),
    [
        ("vqq", [0.0, 0.03, 0.06], True),  # 60 ms after the last voiced chunk: lingers
        ("vqqqq", [0.0, 0.03, 0.06, 0.09], False),  # 90 ms: closes after that chunk
        ("vqqvqq", [0.0, 0.03, 0.06, 0.09, 0.12, 0.15], True),  # speech again: on
        ("vqqqqqqv", [0.18, 0.21], True),  # closed, then opened anew from its pre-roll
    ],
)
def test_it_lingers_after_speech_then_closes(
    kinds: str, given: list[float], still_open: bool
) -> None:
    gate, model = gated(pre_roll_s=0.06, linger_s=0.09)
    run(gate, kinds)
    assert model.given == given
    assert gate.open is still_open


def test_a_word_in_the_pre_roll_or_later_is_reported() -> None:
    gate, _ = gated()
    assert run(gate, "qqw")[-1] is not None  # the opening chunk itself
    gate, _ = gated()
    found = run(gate, "qqvvwq")
    assert [d is not None for d in found] == [False, False, False, False, True, False]


def test_reset_closes_it_and_forgets_the_pre_roll() -> None:
    gate, model = gated(pre_roll_s=0.09)
    run(gate, "qqv")
    gate.reset()
    assert not gate.open and model.resets == 2
    assert gate.process(chunk(10, "voiced")) is None
    assert model.given == [0.3]  # nothing from before the reset


def test_chunks_of_other_lengths_are_judged_per_10_ms() -> None:
    voiced = Voiced()
    gate = SpeechGatedWake(Model(), voiced)
    gate.process(chunk(0, "quiet", seconds=0.05))
    assert voiced.frames == 5
    gate.process(chunk(1, "quiet", seconds=0.02))
    assert voiced.frames == 6  # 20 ms: one frame, as webrtcvad takes it
