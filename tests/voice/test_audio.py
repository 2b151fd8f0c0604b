"""The audio messages and helpers."""

from __future__ import annotations

import numpy as np

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
