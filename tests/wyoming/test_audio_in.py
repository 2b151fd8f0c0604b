"""A client's audio as Whisper takes it: 16 kHz mono kept bit for bit, anything else mixed down
and resampled, and what cannot be audio refused."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from core.errors import ProtocolError
from voice.wyoming.audio_in import IncomingAudio, audio_format


def test_16k_mono_is_kept_bit_for_bit() -> None:
    """Even a scale of 32767/32768 on the way changes what tiny.en hears ("five five" became a
    loop of fives on a real recording), so Whisper's own format is not converted at all."""
    pcm = np.random.default_rng(1).integers(-32768, 32767, 16000, dtype=np.int16).tobytes()
    audio = IncomingAudio(16000, 2, 1, max_audio_s=10)
    for offset in range(0, len(pcm), 3200):
        audio.add((16000, 2, 1), pcm[offset : offset + 3200])
    assert audio.finish().pcm == pcm


def test_stereo_44k_is_mixed_down_and_resampled_without_gaps() -> None:
    seconds, rate = 2.0, 44100
    t = np.arange(int(seconds * rate)) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1).tobytes()
    audio = IncomingAudio(rate, 2, 2, max_audio_s=10)
    for offset in range(0, len(stereo), 4410 * 4):
        audio.add((rate, 2, 2), stereo[offset : offset + 4410 * 4])
    out = np.frombuffer(audio.finish().pcm, dtype=np.int16)
    assert abs(len(out) - 32000) <= 2
    assert abs(np.sqrt(np.mean(out[1000:-1000].astype(float) ** 2)) - 8000 / np.sqrt(2)) < 200


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rate": 16000, "width": 4, "channels": 1}, "only 16-bit audio"),
        ({"rate": 100, "width": 2, "channels": 1}, "audio rate must be"),
        ({"rate": 16000, "width": 2, "channels": 0}, "1 to 8 channels"),
        ({"rate": "16000", "width": 2, "channels": 1}, "rate must be a whole number"),
        ({"width": 2, "channels": 1}, "rate must be a whole number"),
    ],
)
def test_formats_that_are_not_16_bit_pcm_are_refused(data: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        audio_format(data)


def test_a_changing_format_too_much_audio_and_torn_frames_are_refused() -> None:
    audio = IncomingAudio(16000, 2, 1, max_audio_s=1)
    with pytest.raises(ProtocolError, match="changed mid-stream"):
        audio.add((22050, 2, 1), b"\0\0")
    with pytest.raises(ProtocolError, match="not whole frames"):
        audio.add((16000, 2, 1), b"\0\0\0")
    audio.add((16000, 2, 1), b"\0\0" * 16000)
    with pytest.raises(ProtocolError, match=r"more than 1 s of audio in one request"):
        audio.add((16000, 2, 1), b"\0\0")


@pytest.mark.parametrize("rate", [16000, 44100])
def test_finished_audio_is_held_once_while_it_waits_for_the_model(rate: int) -> None:
    """A request's audio waits for Whisper joined into one utterance; the chunks it came in
    are let go (two copies of up to max_audio_s, per request, while a queue of them waited)."""
    rng = np.random.default_rng(2)
    tracemalloc.start()
    try:
        audio = IncomingAudio(rate, 2, 1, max_audio_s=120)
        for _ in range(300):  # 30 s, in payloads of their own as events bring them
            audio.add((rate, 2, 1), rng.integers(-3000, 3000, rate // 10, dtype="<i2").tobytes())
        utterance = audio.finish()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    size = len(utterance.pcm)
    assert size == 30 * 16000 * 2
    assert held < 1.3 * size, f"{held / size:.2f} copies held"
