"""A client's audio stream, checked and collected as 16 kHz mono for Whisper.

Clients send ``audio-start`` (rate, width, channels) and ``audio-chunk`` events; Home Assistant
sends 16 kHz 16-bit mono, other satellites may not. Anything else that is 16-bit PCM is mixed
down and resampled (soxr, streaming, so chunk boundaries leave no clicks); a format that changes
mid-stream, another sample width or more audio than ``wyoming.max_audio_s`` is a
:class:`~core.errors.ProtocolError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import ProtocolError
from voice.audio import Utterance

WHISPER_RATE = 16000
MIN_RATE, MAX_RATE = 8000, 192000
MAX_CHANNELS = 8


def audio_format(data: dict[str, Any]) -> tuple[int, int, int]:
    """(rate, width, channels) of an audio event, checked."""
    values = []
    for key in ("rate", "width", "channels"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"audio {key} must be a whole number, got {value!r:.40}")
        values.append(value)
    rate, width, channels = values
    if width != 2:
        raise ProtocolError(f"only 16-bit audio (width 2) is accepted, got width {width}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError(f"audio rate must be {MIN_RATE} to {MAX_RATE} Hz, got {rate}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(f"audio must have 1 to {MAX_CHANNELS} channels, got {channels}")
    return rate, width, channels


class IncomingAudio:
    """One request's audio, from ``audio-start`` to ``audio-stop``."""

    def __init__(self, rate: int, width: int, channels: int, *, max_audio_s: float) -> None:
        import soxr

        self.format = (rate, width, channels)
        self._max_samples = int(max_audio_s * rate)
        self._received = 0
        self._parts: list[npt.NDArray[np.int16]] = []
        self._resampler = (
            soxr.ResampleStream(rate, WHISPER_RATE, 1, dtype="float32")
            if rate != WHISPER_RATE
            else None
        )
        self._max_audio_s = max_audio_s

    def add(self, fmt: tuple[int, int, int], payload: bytes) -> None:
        if fmt != self.format:
            raise ProtocolError(
                f"the audio format changed mid-stream from {self.format} to {fmt} "
                "(rate, width, channels)"
            )
        _rate, width, channels = fmt
        frame = width * channels
        if len(payload) % frame:
            raise ProtocolError(
                f"an audio chunk of {len(payload)} bytes is not whole frames of {frame} bytes"
            )
        self._received += len(payload) // frame
        if self._received > self._max_samples:
            raise ProtocolError(
                f"more than {self._max_audio_s:g} s of audio in one request (wyoming.max_audio_s)"
            )
        samples = np.frombuffer(payload, dtype="<i2")
        if channels == 1 and self._resampler is None:
            self._parts.append(samples)  # already Whisper's format: kept bit for bit
            return
        mono = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32) / np.float32(32768)
        self._append(mono, last=False)

    def _append(self, mono: npt.NDArray[np.float32], *, last: bool) -> None:
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        if mono.size:
            scaled = np.clip(np.rint(mono * 32768), -32768, 32767)
            self._parts.append(scaled.astype("<i2"))

    def finish(self) -> Utterance:
        """Everything received, as one utterance at 16 kHz."""
        if self._resampler is not None:
            self._append(np.zeros(0, dtype=np.float32), last=True)
        pcm = b"".join(part.tobytes() for part in self._parts)
        self._parts = []  # joined: not held twice while the request waits for the model
        return Utterance(pcm, WHISPER_RATE, 0.0, len(pcm) / 2 / WHISPER_RATE)

    @property
    def seconds(self) -> float:
        return self._received / self.format[0]
