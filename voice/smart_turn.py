"""End of turn by how it sounds: the smart-turn v3 audio model behind a one-method interface.

:class:`TurnModel` is all a turn analyzer needs: audio in, the probability that the speaker has
finished out. :class:`SmartTurnModel` is the real engine: Daily's Smart Turn v3.2 (a Whisper-tiny
encoder with a classifier, int8, BSD 2-clause), run with onnxruntime on the CPU. It hears
intonation, not words: "Can you run the test suite and" scores low, the whole question high. It
is one input to the decision, not the decision: on read speech it calls many pauses inside a
sentence complete (bench/bench_smart_turn.py).

Preprocessing matches pipecat's ``LocalSmartTurnAnalyzerV3``: the last 8 s of 16 kHz audio,
left-padded with zeros when shorter, normalised to zero mean and unit variance, then Whisper's
80 x 800 log-mel features, here from faster-whisper's own ``FeatureExtractor``. Give it the
audio of the current turn only (from a little before speech started up to now, pauses
included), not earlier turns; call it again on the whole turn when speech resumes.

The model file is resolved by :func:`voice.models.resolve_smart_turn_model`; set-up
(``scripts/fetch_smart_turn.py``) installs it. ``turn.end_model``, ``turn.end_model_threads``,
``turn.end_model_threshold`` and ``turn.end_model_sure`` in config.toml configure it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from core.errors import ModelError
from voice.models import default_models_dir, resolve_smart_turn_model

log = logging.getLogger(__name__)

RATE = 16000
WINDOW_S = 8  # the model's input: the last 8 s of the turn
WINDOW_SAMPLES = RATE * WINDOW_S
N_MELS = 80
N_FRAMES = WINDOW_SAMPLES // 160  # 10 ms hops: 800
_INPUT = "input_features"
_NORM_EPS = 1e-7  # transformers' WhisperFeatureExtractor, which the model was trained with

FloatAudio = npt.NDArray[np.float32]


class TurnModel(Protocol):
    def predict(self, audio: FloatAudio) -> float:
        """Probability (0-1) that the speaker has finished, from mono float32 16 kHz audio."""
        ...


def model_window(audio: npt.ArrayLike) -> FloatAudio:
    """The last 8 s of ``audio``, zeros in front when shorter, at zero mean and unit variance.

    The normalisation makes the score independent of the microphone's level.
    """
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"smart-turn expects mono audio (1-D), got shape {samples.shape}")
    window = samples[-WINDOW_SAMPLES:]
    if window.size < WINDOW_SAMPLES:
        window = np.concatenate([np.zeros(WINDOW_SAMPLES - window.size, np.float32), window])
    normalised: FloatAudio = (window - window.mean()) / np.sqrt(window.var() + _NORM_EPS)
    return normalised


def _session(model: Path, threads: int) -> Any:
    """An onnxruntime session on one thread by default: a call is ~50 ms, and the STT and the
    voice share the CPU with it."""
    import onnxruntime  # heavy import, only with a real model

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(threads, 0)  # 0: onnxruntime picks
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Pool threads would otherwise spin on the CPU after each call, waiting for the next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
        raise ModelError(
            f"cannot load the smart-turn model {model}: {e}; re-run scripts/fetch_smart_turn.py "
            "(it checks the file's sha256) or point the configuration at a smart-turn v3 .onnx"
        ) from e


def _check_signature(session: Any, model: Path) -> None:
    """A loadable ONNX file that is not smart-turn v3 fails here, not at the first turn."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else None
    if (
        shape is None
        or inputs[0].name != _INPUT
        or shape[1:] != [N_MELS, N_FRAMES]
        or len(outputs) != 1
    ):
        found = ", ".join(f"{i.name} {i.shape}" for i in inputs)
        raise ModelError(
            f"{model} is an ONNX model but not smart-turn v3: expected one input "
            f"{_INPUT} [batch, {N_MELS}, {N_FRAMES}] and one output, found inputs {found}"
        )


class SmartTurnModel:
    """The smart-turn v3 ONNX model, loaded once in the constructor.

    ``model``: "" for the default file, looked up in ``models_dir`` and then where set-up
    installed it, or a path. ``threads``: onnxruntime's intra-op threads (0: its choice).
    A missing, corrupt or foreign model raises :class:`ModelError` here.
    """

    def __init__(
        self, model: str | Path = "", *, threads: int = 1, models_dir: Path | None = None
    ) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor  # heavy import

        self.model_path = resolve_smart_turn_model(
            str(model), models_dir=models_dir if models_dir is not None else default_models_dir()
        )
        self._session = _session(self.model_path, threads)
        _check_signature(self._session, self.model_path)
        # Whisper's front end (n_fft 400, hop 160, Slaney mel filters) at the model's 80 mels.
        self._features = FeatureExtractor(
            feature_size=N_MELS, sampling_rate=RATE, chunk_length=WINDOW_S
        )
        log.info("smart-turn model %s loaded (%d thread(s))", self.model_path.name, threads)

    def features(self, audio: npt.ArrayLike) -> FloatAudio:
        """The model's input for ``audio``: 80 x 800 log-mel features of its last 8 s."""
        # padding=0: exactly 800 frames (the extractor drops the STFT's last frame, as Whisper).
        mel: FloatAudio = self._features(model_window(audio), padding=0).astype(np.float32)
        return mel

    def predict(self, audio: npt.ArrayLike) -> float:
        """Probability (0-1) that the speaker has finished, from mono float32 16 kHz audio."""
        outputs = self._session.run(None, {_INPUT: self.features(audio)[np.newaxis]})
        probability = float(np.asarray(outputs[0]).reshape(-1)[0])
        if not 0.0 <= probability <= 1.0:  # NaN too
            raise ModelError(
                f"smart-turn model {self.model_path} returned {probability}, not a probability; "
                "the file may be damaged: re-run scripts/fetch_smart_turn.py"
            )
        return probability

    def warm_up(self) -> None:
        """One throwaway prediction: sizes onnxruntime's buffers before the first real turn."""
        self.predict(np.zeros(RATE, dtype=np.float32))
