"""The typed messages that move through the pipeline: audio chunks and utterances.

Audio is 16-bit signed little-endian PCM throughout; a chunk carries its own format so a
stage never has to guess a rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_WIDTH = 2  # bytes, int16
INT16_SCALE = 32768.0


@dataclass(frozen=True)
class AudioChunk:
    """A slice of audio: ``pcm`` is int16 little-endian, interleaved if ``channels`` > 1."""

    pcm: bytes
    rate: int
    channels: int = 1
    timestamp_s: float = 0.0  # monotonic time of the chunk's first sample
    # An echo-cancelled device says the chunk may be only the speaker's echo: its audio is
    # kept, but it never counts as speech (voice.echo_guard).
    echo: bool = False
    # The audio to transcribe, when it is not ``pcm`` (same length): an echo-cancelled
    # device hands the detectors AEC3's output and Whisper a linear canceller's, which keeps
    # the first words of a voice over the reply (voice.echo).
    words: bytes | None = None
    # The linear canceller's output in a room the canceller has learnt, even while it is not
    # trusted for the words (a stall moved the echo): what is left of the echo and the voice
    # whole. The wake word detector hears it: AEC3 silences the word (voice.loop).
    linear: bytes | None = None
    # ... and that the microphone heard more than the echo while the speaker played: a voice
    # over the reply, whose start AEC3 holds back from the detectors (voice.vad look-back).
    heard_over: bool = False
    # ... and that it was echo to the gate, but the canceller left a voice in it: a voice
    # quieter than the reply, which may pause the reply (voice.vad asks Silero about it) and
    # is reached back over once the voice is confirmed.
    heard_under: bool = False

    def __post_init__(self) -> None:
        if self.words is not None and len(self.words) != len(self.pcm):
            raise ValueError("a chunk's words must be as long as its pcm")
        if self.linear is not None and len(self.linear) != len(self.pcm):
            raise ValueError("a chunk's linear output must be as long as its pcm")

    @property
    def words_pcm(self) -> bytes:
        return self.pcm if self.words is None else self.words

    @property
    def samples(self) -> int:
        return len(self.pcm) // (SAMPLE_WIDTH * self.channels)

    @property
    def duration_s(self) -> float:
        return self.samples / self.rate

    def to_int16(self) -> npt.NDArray[np.int16]:
        return np.frombuffer(self.pcm, dtype="<i2")

    def to_float32(self) -> npt.NDArray[np.float32]:
        return pcm_to_float32(self.pcm)


@dataclass(frozen=True)
class Utterance:
    """What the segmenter hears between two silences: mono int16 PCM with its timing.

    ``start_s``/``end_s`` are on the monotonic clock of the frames that made it; ``end_s`` is
    the end of the last voiced frame, so ``speech_end_s`` is when the user stopped talking.
    """

    pcm: bytes
    rate: int
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / SAMPLE_WIDTH / self.rate

    def to_float32(self) -> npt.NDArray[np.float32]:
        return pcm_to_float32(self.pcm)


def pcm_to_float32(pcm: bytes) -> npt.NDArray[np.float32]:
    """int16 PCM bytes to float audio in [-1, 1)."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(INT16_SCALE)


def float_to_pcm(audio: npt.NDArray[np.floating]) -> bytes:
    """Float audio in [-1, 1] to int16 PCM bytes, clipping instead of wrapping."""
    clipped = np.clip(audio, -1.0, 1.0) * 32767.0
    return bytes(clipped.astype("<i2").tobytes())


def rms_dbfs(pcm: bytes) -> float:
    """Loudness of int16 PCM in dBFS (-inf for digital silence is reported as -120)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    if samples.size == 0:
        return -120.0
    # A dot product: several times cheaper than mean(x * x) on a 30 ms frame, run on each.
    rms = math.sqrt(float(np.dot(samples, samples)) / samples.size) / INT16_SCALE
    return max(-120.0, 20.0 * float(np.log10(rms))) if rms > 0 else -120.0


def trim_silence(
    samples: npt.NDArray[np.int16],
    rate: int,
    *,
    lead_ms: float,
    tail_ms: float,
    threshold: int = 100,  # about -50 dBFS: well under speech, well over synthesized silence
) -> npt.NDArray[np.int16]:
    """Keep at most ``lead_ms`` of silence before the first sound and ``tail_ms`` after the last."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return samples[:0]
    start = max(0, int(loud[0]) - int(rate * lead_ms / 1000))
    end = min(samples.size, int(loud[-1]) + 1 + int(rate * tail_ms / 1000))
    return samples[start:end]
