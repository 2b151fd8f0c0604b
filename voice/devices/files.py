"""A recording as the microphone and a WAV file as the speaker, for ``ask`` and ``demo``.

They stand where the real devices stand, so a file takes exactly the live loop's path:
segmenter, turn-taking, speculative transcripts, streamed reply. The source runs faster than
real time (its frames carry the recording's own clock); the sink keeps what it is given.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from voice.audio import AudioChunk, float_to_pcm
from voice.devices.base import Int16

TRAILING_SILENCE_S = 3.0  # after the recording: the longest pause, so the last turn ends


class FileSource:
    """Frames of a 16 kHz mono recording, then silence, then nothing (``exhausted``)."""

    def __init__(
        self,
        audio: np.ndarray,
        *,
        rate: int = 16000,
        frame_ms: int = 30,
        trailing_silence_s: float = TRAILING_SILENCE_S,
        start_s: float | None = None,
    ) -> None:
        silence = np.zeros(int(trailing_silence_s * rate), dtype=np.float32)
        self._pcm = float_to_pcm(np.concatenate([np.asarray(audio, np.float32), silence]))
        self._rate = rate
        self._frame_bytes = rate * frame_ms // 1000 * 2
        self._offset = 0
        self._start_s = time.monotonic() if start_s is None else start_s
        self.exhausted = False

    def read(self, timeout_s: float) -> AudioChunk | None:
        if self._offset + self._frame_bytes > len(self._pcm):
            self.exhausted = True
            time.sleep(min(timeout_s, 0.01))  # turns still running: let them work
            return None
        pcm = self._pcm[self._offset : self._offset + self._frame_bytes]
        timestamp = self._start_s + self._offset / 2 / self._rate
        self._offset += self._frame_bytes
        return AudioChunk(pcm, self._rate, timestamp_s=timestamp)

    def reopen(self) -> None:
        pass

    def drain(self) -> None:
        pass


class WavSink:
    """Keeps every sample played, at one rate; "plays" instantly."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._chunks: list[Int16] = []

    def play(self, samples: Int16, rate: int) -> None:
        if rate != self.rate:
            import soxr

            samples = np.asarray(soxr.resample(samples, rate, self.rate), dtype=np.int16)
        with self._lock:
            self._chunks.append(np.asarray(samples, dtype=np.int16).reshape(-1))

    def wait(self, timeout_s: float | None = None) -> bool:
        return True

    def stop(self) -> None:
        pass

    def pause(self) -> None:
        pass  # everything given was "played" at once: nothing is left to hold

    def resume(self) -> None:
        pass

    @property
    def playing(self) -> bool:
        return False

    @property
    def sounding(self) -> bool:
        return False

    def samples(self) -> Int16:
        with self._lock:
            return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
