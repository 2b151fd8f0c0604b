"""Silero VAD as the segmenter's second opinion on a speech onset.

webrtcvad is cheap (a few microseconds per 30 ms frame) but calls much that is not speech
"speech": fans, keyboard clatter, music, tones. Silero VAD, a small neural network, tells
them apart; it costs about 0.5 ms per 32 ms window here, too much to run all day for nothing.
So it only runs when webrtcvad proposes an onset, or over the reply when the microphone is
louder than the echo (see :class:`voice.vad.OnsetCheck`): it scores the audio the segmenter
already holds and says yes or no. No latency is added beyond
that computation: every window it scores is audio that has already arrived.

The model is the ``silero_vad_v6.onnx`` faster-whisper ships (already a dependency, run by
onnxruntime, which is also already one). It takes 512-sample windows at 16 kHz with the
last 64 samples of the previous window as context, and carries an LSTM state (``h``, ``c``)
from window to window. Frames are 30 ms (480 samples), so windows do not line up with them:
the adapter keeps the samples left over until the next call. While webrtcvad keeps hearing
something, each check only scores the windows that arrived since the last one; after a
quiet stretch (the audio no longer follows on), the state starts afresh on the segmenter's
recent history (``lookback_s``), which is how Silero starts on any recording.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import ModelError
from voice.audio import pcm_to_float32

log = logging.getLogger(__name__)

RATE = 16000
WINDOW = 512  # samples: Silero's window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the v5/v6 models see with each window
STATE_SHAPE = (1, 1, 128)


class SileroModel:
    """The ONNX session, loaded once (a few MB); :class:`SileroOnset` keeps the state."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        import onnxruntime  # heavy import, only when Silero is on

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
            raise ModelError(
                f"cannot load the Silero VAD model {path}: {e}; point vad.silero_model at a "
                'Silero .onnx, leave it "" for the one faster-whisper ships, or set '
                "vad.silero = false"
            ) from e
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "h", "c"}:
            raise ModelError(
                f"{path} does not look like Silero VAD v6 (inputs {sorted(names)}, expected "
                "input, h and c)"
            )
        self.path = path

    def score(
        self, windows: npt.NDArray[np.float32], h: Any, c: Any
    ) -> tuple[npt.NDArray[np.float32], Any, Any]:
        """Speech probabilities of consecutive ``(n, CONTEXT + WINDOW)`` rows, and the state
        after the last one (the model runs its LSTM along the rows)."""
        out, h, c = self._session.run(None, {"input": windows, "h": h, "c": c})
        return np.asarray(out, dtype=np.float32).reshape(-1), h, c


# Inside speech a frame stays speech while a window around it scores this much: Silero's own
# convention is to start at 0.5 and end below 0.35.
STILL_SPEECH = 0.35


class SileroOnset:
    """An :class:`~voice.vad.OnsetCheck`: is there speech in the last ``recent_s``? Also the
    segmenter's :class:`~voice.vad.SpeechCheck` inside speech (:meth:`still_speech`), so
    music that webrtcvad calls voiced cannot hold a request open.

    ``threshold``: the probability a window needs; ``windows`` of them within the last
    ``recent_s`` (webrtcvad's onset window) confirm the onset. Measured on the real
    recordings at three levels and speeds against 150 files of synthetic music: one window at
    0.7 let music start speech in 13 files, two windows in 7 (webrtcvad alone: nearly all),
    and cost speech at most 224 ms after its first window at 0.5 (the pre-roll is 300 ms);
    0.9 stopped all the music but confirmed some speech 1.5 s late, losing words.
    """

    def __init__(
        self,
        model: SileroModel,
        *,
        threshold: float = 0.7,
        windows: int = 2,
        recent_s: float = 0.15,
        lookback_s: float = 0.5,
    ) -> None:
        self.model = model
        self.threshold = threshold
        self.windows = windows
        self.recent_s = recent_s
        self.lookback_s = lookback_s
        self.windows_scored = 0  # for benchmarks: how often the network ran
        self.likelihood = 0.0  # the best recent window at the last confirm (OnsetCheck)
        self._clear()

    def _clear(self) -> None:
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._left = np.zeros(0, dtype=np.float32)  # samples short of a whole window
        self._end_s: float | None = None  # time of the last sample taken in
        self._scores: list[tuple[float, float]] = []  # (window end time, probability)

    def reset(self) -> None:
        self._clear()

    def confirm(self, pcm: bytes, start_s: float, rate: int) -> bool:
        """``pcm`` is the segmenter's recent audio (ending now), starting at ``start_s``."""
        end_s = self._feed(pcm, start_s, rate)
        since = end_s - self.recent_s - WINDOW / RATE
        recent = [p for t, p in self._scores if t > since]
        self.likelihood = max(recent, default=0.0)
        return sum(p >= self.threshold for p in recent) >= self.windows

    def still_speech(self, pcm: bytes, start_s: float, rate: int) -> bool:
        """``pcm`` is the next frame inside speech: does a window ending in it or just
        before (:data:`STILL_SPEECH` or more) still say speech? True until one is scored."""
        self._feed(pcm, start_s, rate)
        since = start_s - WINDOW / RATE
        recent = [p for t, p in self._scores if t > since]
        return not recent or max(recent) >= STILL_SPEECH

    def _feed(self, pcm: bytes, start_s: float, rate: int) -> float:
        """Score the windows ``pcm`` completes; the time it ends."""
        if rate != RATE:
            raise ValueError(f"Silero VAD runs at {RATE} Hz, got {rate} Hz")
        audio = pcm_to_float32(pcm)
        end_s = start_s + len(audio) / RATE
        self._take(audio, start_s, end_s)
        return end_s

    def _take(self, audio: npt.NDArray[np.float32], start_s: float, end_s: float) -> None:
        last = self._end_s
        if last is None or not start_s - 0.001 <= last <= end_s + 0.001:
            # Not a continuation of what was scored: start afresh on the recent audio.
            self._clear()
            new = audio[-int(self.lookback_s * RATE) :]
        else:
            new = audio[len(audio) - round((end_s - last) * RATE) :]
        self._end_s = end_s
        samples = np.concatenate([self._left, new])
        whole = len(samples) // WINDOW * WINDOW
        self._left = samples[whole:]
        if not whole:
            return
        windows = samples[:whole].reshape(-1, WINDOW)
        contexts = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]])
        self._context = windows[-1, -CONTEXT:].copy()
        rows = np.ascontiguousarray(np.concatenate([contexts, windows], axis=1))
        probabilities, self._h, self._c = self.model.score(rows, self._h, self._c)
        self.windows_scored += len(probabilities)
        first_end_s = end_s - (len(self._left) + whole) / RATE + WINDOW / RATE
        self._scores += [
            (first_end_s + i * WINDOW / RATE, float(p)) for i, p in enumerate(probabilities)
        ]
        self._scores = self._scores[-16:]
