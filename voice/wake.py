"""The wake word: microWakeWord models run by pymicro-wakeword, behind a tiny interface.

While the assistant is not listening, the loop hands every microphone chunk to a
:class:`WakeDetector`; a :class:`WakeDetection` says the word was heard and *where it ended*,
so the words said right after it, in the same breath, can join the request and the word
itself stays out of it.

The model scores a 30 ms window of audio features at a time; like pymicro-wakeword (and
ESPHome), a detection is the mean of the last ``sliding_window_size`` scores (from the
model's ``.json``) above the threshold. That mean crosses the threshold 70-180 ms after the
word ended; the single scores rise right at its last sound, so the run of high scores that
led to the detection dates the end of the word.
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.errors import ModelError
from voice.audio import AudioChunk
from voice.vad import SpeechDetector

log = logging.getLogger(__name__)

RATE = 16000  # microWakeWord's features are computed on 16 kHz mono int16
HIGH_SCORE = 0.5  # a single window's score this high: the end of the word is being heard
# The first high score comes during the word's last sound; the end of the word is about this
# much later (measured on the built-in models with Piper speech at three speaking rates).
WORD_TAIL_S = 0.06
# That estimate is off by up to ~0.1 s (the models differ): the quietest 10 ms from the first
# high score to this long after the estimate, the gap between two words, marks the end more
# closely. Never before the first high score: that would cut inside the word.
SNAP_S = 0.1
LEVEL_STEP = RATE // 100  # samples per 10 ms level
RECENT_S = 0.6  # audio kept to find that gap: the detection comes up to 0.3 s after the word
# Inside refractory_s, a run of high scores that began this long after a detection, once the
# scores had fallen, is the word said again ("Hey Jarvis [0.3 s] Hey Jarvis, ..."), not the
# tail of the first: detected, so the request does not begin with it. (Piper's "Hey Jarvis"
# twice, 0.3 s apart: the first run ended 0.5 s after its detection, the second began 1.1 s.)
AGAIN_AFTER_S = 0.5


@dataclass(frozen=True)
class WakeDetection:
    """The wake word was heard: ``at_s`` when it was decided, ``end_s`` where the word ended
    (monotonic times of the audio, like :class:`~voice.audio.AudioChunk` timestamps)."""

    model: str
    probability: float
    at_s: float
    end_s: float


class WakeDetector(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def phrase(self) -> str:
        """The word as written ("Hey Jarvis"): a reply that says it must not wake the loop."""
        ...

    @property
    def likely_s(self) -> float | None:
        """When the word's scores rose, while they are high and no detection has come of
        them: the word may be ending (a reply pauses for it). None otherwise."""
        ...

    def process(self, chunk: AudioChunk) -> WakeDetection | None:
        """Consume one chunk (16 kHz mono int16); a detection when the word ended in it."""
        ...

    def reset(self) -> None:
        """Forget the audio so far: the next chunk does not follow the last one."""
        ...


@dataclass(frozen=True)
class WakeModelSpec:
    """What a microWakeWord ``.json`` says about its model."""

    name: str
    phrase: str
    tflite: Path
    cutoff: float
    window: int

    @classmethod
    def read(cls, path: Path) -> WakeModelSpec:
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            micro = data["micro"]
            spec = cls(
                name=path.stem,
                phrase=str(data.get("wake_word", path.stem)),
                tflite=path.parent / str(data["model"]),
                cutoff=float(micro["probability_cutoff"]),
                window=int(micro["sliding_window_size"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else repr(e)[:200]
            raise ModelError(
                f"cannot read the wake word model description {path}: {why}; it must be a "
                'microWakeWord .json with "model" and "micro": {"probability_cutoff", '
                '"sliding_window_size"}'
            ) from None
        if not spec.tflite.is_file():
            raise ModelError(f"{path} names {spec.tflite.name}, but {spec.tflite} is missing")
        if not 0 < spec.cutoff <= 1 or spec.window < 1:
            raise ModelError(f"{path}: probability_cutoff or sliding_window_size out of range")
        return spec


def _tflite_library() -> Path:
    import pymicro_wakeword

    lib_dir = Path(pymicro_wakeword.__file__).parent / "lib"
    found = sorted(lib_dir.glob("*tensorflowlite_c.*"))
    if not found:
        raise ModelError(
            f"pymicro-wakeword has no TensorFlow Lite library in {lib_dir}; reinstall it from "
            "a wheel for this platform (pip install --force-reinstall pymicro-wakeword)"
        )
    return found[0]


def _check_loads(library: Path, tflite: Path) -> None:
    """Load the model once through the TensorFlow Lite C API and release it.

    pymicro-wakeword does not check these calls: a corrupt or truncated ``.tflite`` crashes
    the whole process (SIGSEGV) instead of raising. Checked here, it is a :class:`ModelError`
    at start.
    """
    lib = ctypes.CDLL(str(library))
    lib.TfLiteModelCreateFromFile.argtypes = [ctypes.c_char_p]
    lib.TfLiteModelCreateFromFile.restype = ctypes.c_void_p
    lib.TfLiteInterpreterCreate.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.TfLiteInterpreterCreate.restype = ctypes.c_void_p
    lib.TfLiteInterpreterAllocateTensors.argtypes = [ctypes.c_void_p]
    lib.TfLiteInterpreterAllocateTensors.restype = ctypes.c_int
    lib.TfLiteInterpreterDelete.argtypes = [ctypes.c_void_p]
    lib.TfLiteModelDelete.argtypes = [ctypes.c_void_p]
    model = lib.TfLiteModelCreateFromFile(str(tflite).encode())
    if not model:
        raise ModelError(
            f"{tflite} is not a TensorFlow Lite model (truncated or corrupt?); replace it with "
            "the .tflite published with its .json"
        )
    try:
        interpreter = lib.TfLiteInterpreterCreate(model, None)
        if not interpreter:
            raise ModelError(f"TensorFlow Lite cannot run {tflite} (unsupported operations?)")
        try:
            if lib.TfLiteInterpreterAllocateTensors(interpreter) != 0:
                raise ModelError(f"TensorFlow Lite cannot allocate the tensors of {tflite}")
        finally:
            lib.TfLiteInterpreterDelete(interpreter)
    finally:
        lib.TfLiteModelDelete(model)


class MicroWakeWordDetector:
    """A microWakeWord model (``.json`` + ``.tflite``) run by pymicro-wakeword.

    ``threshold`` 0 takes the model's own ``probability_cutoff``. After a detection the word
    is not detected again for ``refractory_s`` (its scores stay high for a while), unless it
    is said again (:data:`AGAIN_AFTER_S`).
    """

    def __init__(self, model_json: Path, *, threshold: float = 0.0, refractory_s: float = 2.0):
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures
        except ImportError as e:
            raise ModelError(
                f"the wake word needs pymicro-wakeword ({e}); pip install pymicro-wakeword"
            ) from None
        spec = WakeModelSpec.read(model_json)
        library = _tflite_library()
        _check_loads(library, spec.tflite)
        self.spec = spec
        self.threshold = threshold or spec.cutoff
        self.refractory_s = refractory_s
        try:
            # A window of one: the model's raw scores come back, averaged here, so the run of
            # high scores can date the end of the word.
            self._model = MicroWakeWord(
                spec.name,
                wake_word=spec.phrase,
                tflite_model=spec.tflite,
                probability_cutoff=self.threshold,
                sliding_window_size=1,
                trained_languages=[],
                libtensorflowlite_c_path=library,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelError(f"cannot load the wake word model {spec.tflite}: {e}") from None
        self._features = MicroWakeWordFeatures()
        self._scores: collections.deque[float] = collections.deque(maxlen=spec.window)
        self._fed = 0  # feature slices given to the model; it scores every `stride` of them
        self._run_start_s: float | None = None  # first high score of the current run
        self._quiet_until = float("-inf")
        self._detected_s = float("-inf")
        # The last ~0.6 s of audio, to find the gap after the word when it is heard. Only kept
        # here: measured at every chunk, its levels cost more than the model (cold caches).
        self._recent: collections.deque[AudioChunk] = collections.deque()
        log.info("wake word %r (%s), threshold %.2f", spec.phrase, model_json.name, self.threshold)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def phrase(self) -> str:
        return self.spec.phrase

    @property
    def likely_s(self) -> float | None:
        run_s = self._run_start_s
        return run_s if run_s is not None and run_s > self._detected_s else None

    def process(self, chunk: AudioChunk) -> WakeDetection | None:
        if chunk.rate != RATE or chunk.channels != 1:
            raise ValueError(f"the wake word needs 16 kHz mono audio, got {chunk.rate} Hz")
        end_s = chunk.timestamp_s + chunk.duration_s
        self._recent.append(chunk)
        while self._recent[0].timestamp_s < end_s - RECENT_S:
            self._recent.popleft()
        found: WakeDetection | None = None
        for features in self._features.process_streaming(chunk.pcm):
            score = self._model.process_streaming_prob(features)
            self._fed += 1
            if score is None:
                raise ModelError(f"the wake word model {self.spec.name} was closed")
            if self._fed % self._model.stride:
                continue  # the model buffers slices until it has a window to score
            found = self._score(score, end_s) or found
        return found

    def _score(self, score: float, end_s: float) -> WakeDetection | None:
        if score < HIGH_SCORE:
            self._run_start_s = None
        elif self._run_start_s is None:
            self._run_start_s = end_s
        self._scores.append(score)
        said_again = (
            self._run_start_s is not None and self._run_start_s >= self._detected_s + AGAIN_AFTER_S
        )
        if len(self._scores) < (self._scores.maxlen or 1) or (
            end_s < self._quiet_until and not said_again
        ):
            return None
        mean = sum(self._scores) / len(self._scores)
        if mean <= self.threshold:
            return None
        self._quiet_until = end_s + self.refractory_s
        self._detected_s = end_s
        self._scores.clear()
        start = end_s if self._run_start_s is None else self._run_start_s
        return WakeDetection(self.spec.name, mean, end_s, self._word_end(start, end_s))

    def _levels(self) -> list[tuple[float, float]]:
        """(end time, energy) of each 10 ms step of the recent audio."""
        chunks = list(self._recent)
        if not chunks:
            return []
        samples = np.concatenate([c.to_int16() for c in chunks]).astype(np.float64)
        whole = len(samples) // LEVEL_STEP * LEVEL_STEP
        energies = np.mean(samples[:whole].reshape(-1, LEVEL_STEP) ** 2, axis=1)
        start_s = chunks[0].timestamp_s
        return [(start_s + (i + 1) * LEVEL_STEP / RATE, float(e)) for i, e in enumerate(energies)]

    def _word_end(self, run_start_s: float, at_s: float) -> float:
        """The middle of the quietest 10 ms step from ``run_start_s`` to a little after the
        estimated end (and not after ``at_s``: the audio heard so far)."""
        estimate_s = min(run_start_s + WORD_TAIL_S, at_s)
        latest_s = min(estimate_s + SNAP_S, at_s)
        near = [(e, end) for end, e in self._levels() if run_start_s <= end - 0.005 <= latest_s]
        if not near:
            return estimate_s
        return min(near)[1] - 0.005

    def reset(self) -> None:
        self._features.reset()
        self._model.reset()
        self._scores.clear()
        self._fed = 0
        self._run_start_s = None
        self._quiet_until = float("-inf")  # times after a reset need not follow the last ones
        self._recent.clear()


class SpeechGatedWake:
    """A :class:`WakeDetector` that runs its model only while something like speech is heard.

    In a quiet room the model would score every 10 ms of silence (about 1 % of a core live,
    the largest part of idle CPU in wake mode). A cheap detector (webrtcvad, set to keep
    nearly everything voice-like) opens the gate; the model is then reset and given the last
    ``pre_roll_s`` of audio first, so it hears the word from its start with the quiet before
    it, and every chunk after until ``linger_s`` pass without a voiced frame.
    """

    def __init__(
        self,
        inner: WakeDetector,
        speech: SpeechDetector,
        *,
        pre_roll_s: float = 1.0,
        linger_s: float = 2.0,
    ) -> None:
        self.inner = inner
        self.speech = speech
        self.pre_roll_s = pre_roll_s
        self.linger_s = linger_s
        self.open = False
        self._recent: collections.deque[AudioChunk] = collections.deque()
        self._voiced_s = float("-inf")  # end of the last chunk with a voiced frame

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def phrase(self) -> str:
        return self.inner.phrase

    @property
    def likely_s(self) -> float | None:
        return self.inner.likely_s if self.open else None

    def process(self, chunk: AudioChunk) -> WakeDetection | None:
        end_s = chunk.timestamp_s + chunk.duration_s
        voiced = self._voiced(chunk)
        if voiced:
            self._voiced_s = end_s
        if self.open:
            found = self.inner.process(chunk)
            self.open = end_s - self._voiced_s < self.linger_s
            return found
        self._recent.append(chunk)
        while self._recent[0].timestamp_s < end_s - self.pre_roll_s:
            self._recent.popleft()
        if not voiced:
            return None
        self.open = True
        self.inner.reset()  # the audio it had last is not what comes before this
        found = None
        for past in self._recent:
            found = self.inner.process(past) or found
        self._recent.clear()
        return found

    def reset(self) -> None:
        self.inner.reset()
        self.open = False
        self._recent.clear()
        self._voiced_s = float("-inf")

    def _voiced(self, chunk: AudioChunk) -> bool:
        step = RATE * 10 // 1000 * 2  # webrtcvad takes 10, 20 or 30 ms: ask per 10 ms
        pcm = chunk.pcm
        if len(pcm) in (step, 2 * step, 3 * step):
            return self.speech.is_speech(pcm, RATE)
        # Every piece, not the first voiced one: webrtcvad's noise model learns from each.
        starts = range(0, len(pcm) - step + 1, step)
        return any([self.speech.is_speech(pcm[i : i + step], RATE) for i in starts])


def load_wake_detector(
    model: str, *, threshold: float, refractory_s: float, models_dir: Path
) -> MicroWakeWordDetector:
    """The detector for ``wake.model`` (see :func:`voice.models.resolve_wake_model`)."""
    from voice.models import resolve_wake_model

    path = resolve_wake_model(model, models_dir=models_dir)
    return MicroWakeWordDetector(path, threshold=threshold, refractory_s=refractory_s)
