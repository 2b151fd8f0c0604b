"""The audio messages and helpers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from voice.audio import AudioChunk, float_to_pcm, rms_dbfs, trim_silence

RATE = 16000


def test_chunk_knows_its_length_and_converts() -> None:
    chunk = AudioChunk(float_to_pcm(np.full(480, 0.5, dtype=np.float32)), RATE, timestamp_s=1.0)
    assert chunk.samples == 480 and chunk.duration_s == 0.03
    assert np.allclose(chunk.to_float32(), 0.5, atol=1e-4)
    assert abs(rms_dbfs(chunk.pcm) + 6.02) < 0.01  # half scale is -6 dBFS
    assert rms_dbfs(b"") == -120.0 and rms_dbfs(bytes(960)) == -120.0


def test_float_to_pcm_clips_instead_of_wrapping() -> None:
    pcm = np.frombuffer(float_to_pcm(np.array([2.0, -2.0], dtype=np.float32)), dtype="<i2")
    assert list(pcm) == [32767, -32767]


def test_trim_silence_keeps_the_sound_and_a_little_air() -> None:
    sound = np.full(1600, 5000, dtype=np.int16)  # 100 ms
    padded = np.concatenate([np.zeros(8000, np.int16), sound, np.zeros(8000, np.int16)])
    trimmed = trim_silence(padded, RATE, lead_ms=20, tail_ms=200)
    assert len(trimmed) == 320 + 1600 + 3200
    assert np.array_equal(trimmed[320 : 320 + 1600], sound)
    assert trim_silence(np.zeros(800, np.int16), RATE, lead_ms=20, tail_ms=200).size == 0
    assert len(trim_silence(sound, RATE, lead_ms=20, tail_ms=200)) == 1600


def test_a_float_file_with_nan_or_beyond_full_scale_is_read_as_sound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`transcribe` of such a WAV printed numpy's RuntimeWarnings, and Whisper got NaN."""
    import soundfile

    from voice.app import read_audio

    samples = np.full(16000, 0.5, np.float32)
    samples[:100], samples[100:200], samples[200:300] = np.nan, np.inf, 40.0
    path = tmp_path / "odd.wav"
    soundfile.write(str(path), samples, 16000, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning reaches the user
        audio = read_audio(path)
    assert np.isfinite(audio).all() and np.abs(audio).max() == pytest.approx(1.0)
    # One wild sample leaves the rest as loud as it was (scaled down, it was too quiet to hear).
    assert (audio[:200] == 0).all() and audio[-1] == pytest.approx(0.5)
    assert "200 samples that are not numbers" in caplog.text and "clipped" in caplog.text
