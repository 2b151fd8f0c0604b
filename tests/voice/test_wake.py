"""The wake word engine with the real microWakeWord models that ship in pymicro-wakeword.

There is no real recording of anyone saying a wake word in ../shared/audio, so the word is
said by the project's own Piper voice (three speaking rates); what follows it, the request,
is a real recording. That makes the detection here a supplement, not a measure of how well
real voices wake it (bench/bench_wake.py says so too); the request half is real speech.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelError, ModelNotFound
from tests.voice.audio_util import RATE, normalise, real_clip, real_references, wer, word_alone
from voice.audio import AudioChunk, Utterance
from voice.config import TtsConfig
from voice.models import available_wake_models, resolve_wake_model
from voice.stt import WhisperTranscriber
from voice.tts import PiperSynthesizer
from voice.vad import WebRtcDetector
from voice.wake import (
    MicroWakeWordDetector,
    SpeechGatedWake,
    WakeDetection,
    WakeDetector,
    load_wake_detector,
)

pytestmark = pytest.mark.models

Int16 = np.ndarray
PHRASES = {
    "hey_jarvis": ("Hey Jarvis", {"hey", "jarvis"}),
    "okay_nabu": ("Okay Nabu", {"okay", "nabu"}),
    "alexa": ("Alexa", {"alexa"}),
    "hey_mycroft": ("Hey Mycroft", {"mycroft"}),
}
NO_MODELS = Path("/nonexistent/models")


@pytest.fixture(scope="module")
def voices(tts: PiperSynthesizer) -> Iterator[dict[float, PiperSynthesizer]]:
    """The Piper voice at three speaking rates (length_scale)."""
    yield {
        0.8: PiperSynthesizer(TtsConfig(length_scale=0.8)),
        1.0: tts,
        1.3: PiperSynthesizer(TtsConfig(length_scale=1.3)),
    }


def feed(detector: WakeDetector, audio: Int16, t0: float = 0.0) -> list[WakeDetection]:
    """Audio in 30 ms chunks, as the microphone gives it; every detection."""
    found = []
    step = RATE * 30 // 1000
    for i in range(0, len(audio), step):
        chunk = AudioChunk(
            audio[i : i + step].astype("<i2").tobytes(), RATE, timestamp_s=t0 + i / RATE
        )
        detection = detector.process(chunk)
        if detection is not None:
            found.append(detection)
    return found


def pad(*parts: Int16, gap_s: float = 0.0) -> Int16:
    quiet = np.zeros(int(0.5 * RATE), np.int16)
    between = np.zeros(int(gap_s * RATE), np.int16)
    out = [quiet]
    for i, part in enumerate(parts):
        if i:
            out.append(between)
        out.append(part)
    return np.concatenate([*out, quiet, quiet])


def real(name: str) -> Int16:
    return (real_clip(name) * 32767).astype(np.int16)


@pytest.mark.parametrize("model", sorted(PHRASES))
def test_each_built_in_model_hears_its_word_once_and_dates_its_end(
    model: str, voices: dict[float, PiperSynthesizer]
) -> None:
    """Piper draws the voice anew on every call (its noise is not seeded), and now and then
    a draw is not heard (okay_nabu, once in a full run): like a person, it may say the word
    a second time. Heard twice in one saying is never right."""
    detector = load_wake_detector(model, threshold=0.0, refractory_s=2.0, models_dir=NO_MODELS)
    missed = []
    for rate, voice in voices.items():
        for _attempt in range(2):
            word, end_s = word_alone(voice, PHRASES[model][0])
            detector.reset()
            found = feed(detector, pad(word))
            assert len(found) <= 1, (model, rate, found)
            if found:
                break
            missed.append(rate)
        assert len(found) == 1, (model, rate, found)
        # Decided 70-300 ms after the word (hey_mycroft, said slowly, even during its final
        # "t"), its end dated to within a quarter of a second: the quietest 10 ms nearby.
        word_end_s = 0.5 + end_s
        assert word_end_s - 0.1 < found[0].at_s < word_end_s + 0.4, (model, rate, found)
        assert abs(found[0].end_s - word_end_s) < 0.25, (model, rate, found, word_end_s)
    assert len(missed) <= 1, (model, missed)  # said again at one rate of three, at most


def test_real_speech_without_the_word_wakes_nothing() -> None:
    detector = load_wake_detector(
        "hey_jarvis", threshold=0.0, refractory_s=2.0, models_dir=NO_MODELS
    )
    audio = pad(*(real(name) for name in real_references()), gap_s=0.5)
    step = RATE * 30 // 1000
    rises = 0
    for i in range(0, len(audio), step):
        chunk = AudioChunk(audio[i : i + step].astype("<i2").tobytes(), RATE, timestamp_s=i / RATE)
        assert detector.process(chunk) is None
        rises += detector.likely_s is not None
    assert rises == 0  # not even a rise of the scores, which would pause a reply


def test_the_scores_rise_at_the_end_of_the_word_before_it_is_decided(tts: PiperSynthesizer) -> None:
    """A reply pauses at the rise (``likely_s``), so it is silent by the time the word is
    decided and stops it (offline, 12 draws: 150 ms before the detection)."""
    word, end_s = word_alone(tts, "Hey Jarvis")
    detector = load_wake_detector(
        "hey_jarvis", threshold=0.0, refractory_s=2.0, models_dir=NO_MODELS
    )
    audio = pad(word)
    step = RATE * 30 // 1000
    rises, found = [], []
    for i in range(0, len(audio), step):
        chunk = AudioChunk(audio[i : i + step].astype("<i2").tobytes(), RATE, timestamp_s=i / RATE)
        if (detection := detector.process(chunk)) is not None:
            found.append(detection)
        elif detector.likely_s is not None and detector.likely_s not in rises:
            rises.append(detector.likely_s)
    assert len(found) == 1 and len(rises) == 1, (found, rises)
    word_end_s = 0.5 + end_s
    assert word_end_s - 0.3 < rises[0] <= found[0].at_s - 0.09, (rises, found, word_end_s)
    assert detector.likely_s is None  # decided: nothing more to pause for


def test_the_request_in_the_same_breath_is_cut_from_the_word(
    voices: dict[float, PiperSynthesizer], stt: WhisperTranscriber
) -> None:
    """Audio from ``end_s`` on holds the whole request and none of the wake word.

    The request follows with no pause at all (the hardest case: the detection comes 0.1 to
    0.3 s into it) or with a short one; the request is a real recording.
    """
    refs = real_references()
    missed, clipped = [], []
    for model, (phrase, words) in PHRASES.items():
        detector = load_wake_detector(model, threshold=0.0, refractory_s=2.0, models_dir=NO_MODELS)
        for rate in (0.8, 1.3):
            word, _ = word_alone(voices[rate], phrase)
            for gap_s, clip in ((0.0, "librivox-0880"), (0.15, "goforward")):
                audio = pad(word, real(clip), gap_s=gap_s)
                detector.reset()
                detections = feed(detector, audio)
                if not detections:  # bench_wake.py measures how often; here: the cut
                    missed.append((model, rate, clip))
                    continue
                found = detections[0]
                cut = int(found.end_s * RATE)
                text = stt.transcribe(Utterance(audio[cut:].tobytes(), RATE, found.end_s, 9.0)).text
                assert not words & set(normalise(text)), (model, rate, clip, text)
                if normalise(text)[0] != normalise(refs[clip])[0]:
                    clipped.append((model, rate, clip, text))
                assert wer(refs[clip], text) <= 0.35, (model, rate, clip, text)
    # "Alexa" said slowly and run straight into the request is missed now and then.
    assert len(missed) <= 2, missed
    # Piper draws the voice anew on every call; once in a full run (0 in 30 draws of that
    # case alone) the word was dated late and the cut took the request's first word.
    assert len(clipped) <= 1, clipped


def test_refractory_time_and_threshold(tts: PiperSynthesizer) -> None:
    word, _ = word_alone(tts, "Hey Jarvis")
    twice_quickly = pad(word, word, gap_s=0.3)
    detector = load_wake_detector(
        "hey_jarvis", threshold=0.0, refractory_s=2.0, models_dir=NO_MODELS
    )
    # Said again, the word is found again, inside the refractory time: the request said after
    # "Hey Jarvis [0.3 s] Hey Jarvis" must not begin with the second (it did, as "A Jarvis").
    again = feed(detector, twice_quickly)
    assert len(again) == 2 and again[1].end_s > again[0].end_s + 0.5, again
    once = feed(
        load_wake_detector("hey_jarvis", threshold=0.0, refractory_s=2.0, models_dir=NO_MODELS),
        pad(word, np.zeros(RATE, np.int16), gap_s=0.0),
    )
    assert len(once) == 1  # the high scores after a word are not the word said again
    detector = load_wake_detector(
        "hey_jarvis", threshold=0.0, refractory_s=0.5, models_dir=NO_MODELS
    )
    found = feed(detector, twice_quickly)
    # Both words: the scores stay high for 0.3-0.5 s after a word (Piper's voice varies from
    # run to run), so the first may be reported twice, but the second is found too.
    assert len(found) >= 2 and found[-1].end_s > found[0].end_s + 0.5, found
    strict = load_wake_detector(
        "hey_jarvis", threshold=0.9999, refractory_s=0.0, models_dir=NO_MODELS
    )
    assert strict.threshold == 0.9999 and feed(strict, twice_quickly) == []
    assert detector.threshold == 0.97  # 0 takes the model's own cutoff from its .json


def test_a_reset_forgets_the_stream(tts: PiperSynthesizer) -> None:
    word, _ = word_alone(tts, "Hey Jarvis")
    detector = load_wake_detector(
        "hey_jarvis", threshold=0.0, refractory_s=60.0, models_dir=NO_MODELS
    )
    assert len(feed(detector, pad(word), t0=100.0)) == 1
    detector.reset()  # the microphone was closed: times start over, no refractory left
    assert len(feed(detector, pad(word), t0=0.0)) == 1


# ---- finding and loading models ------------------------------------------------------------


def builtin_dir() -> Path:
    import pymicro_wakeword

    return Path(pymicro_wakeword.__file__).parent / "models"


def test_an_unknown_model_name_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as raised:
        resolve_wake_model("hey_computer", models_dir=tmp_path)
    message = str(raised.value)
    for name in PHRASES:
        assert name in message
    assert "hey_computer" in message and str(tmp_path) in message


def test_a_user_model_in_models_dir_is_found_and_works(
    tmp_path: Path, tts: PiperSynthesizer
) -> None:
    """A model of one's own: NAME.json naming its .tflite, dropped into models/."""
    spec = json.loads((builtin_dir() / "hey_jarvis.json").read_text())
    spec["model"] = "my_word.tflite"
    (tmp_path / "my_word.json").write_text(json.dumps(spec))
    shutil.copy(builtin_dir() / "hey_jarvis.tflite", tmp_path / "my_word.tflite")
    assert "my_word" in available_wake_models(tmp_path)
    assert resolve_wake_model("my_word", models_dir=tmp_path) == tmp_path / "my_word.json"
    detector = load_wake_detector("my_word", threshold=0.0, refractory_s=2.0, models_dir=tmp_path)
    assert detector.name == "my_word"
    assert detector.phrase == "Hey Jarvis"  # what its .json says the word is
    word, _ = word_alone(tts, "Hey Jarvis")
    assert len(feed(detector, pad(word))) == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_model_that_cannot_load_is_an_error_not_a_crash(tmp_path: Path, damage: str) -> None:
    """pymicro-wakeword alone dies with SIGSEGV on such a file (it does not check the
    TensorFlow Lite calls); loading runs in a child process so a crash shows as one."""
    spec = json.loads((builtin_dir() / "hey_jarvis.json").read_text())
    spec["model"] = "broken.tflite"
    (tmp_path / "broken.json").write_text(json.dumps(spec))
    good = (builtin_dir() / "hey_jarvis.tflite").read_bytes()
    bad = bytes(range(256)) * 100 if damage == "garbage" else good[: len(good) // 2]
    (tmp_path / "broken.tflite").write_bytes(bad)
    code = (
        "import sys; from pathlib import Path; from core.errors import ModelError\n"
        "from voice.wake import load_wake_detector\n"
        "try:\n"
        f"    load_wake_detector('broken', threshold=0, refractory_s=1,\n"
        f"                       models_dir=Path({str(tmp_path)!r}))\n"
        "except ModelError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "broken.tflite" in done.stdout and "not a TensorFlow Lite model" in done.stdout


def test_a_missing_tflite_or_a_bad_json_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "lonely.json").write_text(json.dumps({"model": "gone.tflite", "micro": {}}))
    with pytest.raises(ModelError):
        MicroWakeWordDetector(tmp_path / "lonely.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read the wake word model"):
        MicroWakeWordDetector(tmp_path / "junk.json")


def test_a_tflite_given_for_the_json_says_to_give_the_json(tmp_path: Path) -> None:
    tflite = tmp_path / "my_word.tflite"
    shutil.copy(builtin_dir() / "hey_jarvis.tflite", tflite)
    with pytest.raises(ModelNotFound, match=r"not a microWakeWord \.json; point it at the \.json"):
        resolve_wake_model(str(tflite), models_dir=tmp_path)
    (tmp_path / "binary.json").write_bytes(tflite.read_bytes()[:64])
    with pytest.raises(ModelError, match=r"binary\.json: not UTF-8 text") as raised:
        MicroWakeWordDetector(tmp_path / "binary.json")
    assert "\\x" not in str(raised.value)  # no bytes dumped at the user


def test_wake_mode_loads_its_detector_at_start_and_refuses_a_bad_name() -> None:
    from voice.app import load_wake
    from voice.config import Config, InputConfig, WakeConfig

    assert load_wake(Config()) is None  # vad mode: no wake word engine at all
    wake = replace(Config(), input=InputConfig(mode="wake"))
    detector = load_wake(wake)
    assert detector is not None and detector.name == "hey_jarvis"
    with pytest.raises(ModelError, match=r"available: .*okay_nabu"):
        load_wake(replace(wake, wake=WakeConfig(model="hey_siri")))


class Counting:
    """A real detector, counting the chunks it is given."""

    def __init__(self, inner: MicroWakeWordDetector) -> None:
        self.inner = inner
        self.name = inner.name
        self.chunks = 0

    def process(self, chunk: AudioChunk) -> WakeDetection | None:
        self.chunks += 1
        return self.inner.process(chunk)

    def reset(self) -> None:
        self.inner.reset()


def test_behind_the_speech_gate_the_model_hears_the_word_after_a_quiet_spell(
    tts: PiperSynthesizer,
) -> None:
    """Ten seconds of a quiet room never reach the model; the word after them is heard as
    it is without the gate, dated the same."""
    word, _ = word_alone(tts, "Hey Jarvis")
    rng = np.random.default_rng(7)
    room = (rng.standard_normal(10 * RATE) * 10).astype(np.int16)  # about -70 dBFS
    audio = np.concatenate([room, pad(word)])
    found = {}
    for gated in (False, True):
        model = Counting(
            load_wake_detector("hey_jarvis", threshold=0.0, models_dir=NO_MODELS, refractory_s=2.0)
        )
        detector = SpeechGatedWake(model, WebRtcDetector(1)) if gated else model
        found[gated] = feed(detector, audio)
        assert len(found[gated]) == 1, (gated, found[gated])
        if gated:
            chunks = len(audio) // (RATE * 30 // 1000)
            assert model.chunks < chunks / 4, (model.chunks, chunks)  # the word and its second
    assert abs(found[True][0].at_s - found[False][0].at_s) < 0.035
    assert abs(found[True][0].end_s - found[False][0].end_s) < 0.035
