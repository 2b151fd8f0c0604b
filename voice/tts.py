"""Text to speech with Piper, sentence by sentence.

:class:`TextToSpeech` is all the rest of the pipeline knows; :class:`PiperSynthesizer` is the
real engine. The voice is loaded once; each call to ``synthesize`` yields Piper's audio one
sentence at a time, so playback can start before the whole text is rendered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from core.errors import ConfigError, ModelError
from voice.audio import trim_silence
from voice.config import TtsConfig
from voice.speech_text import speech_pieces

if TYPE_CHECKING:
    from piper import PiperVoice
    from piper.config import SynthesisConfig

log = logging.getLogger(__name__)

LEAD_MS = 20  # silence kept before a piece's first sound
TAIL_MS = 200  # and after its last: a natural pause between sentences

Pcm16 = npt.NDArray[np.int16]


class TextToSpeech(Protocol):
    """A voice: text in, mono int16 chunks out at ``sample_rate``, each as soon as it exists."""

    @property
    def sample_rate(self) -> int: ...

    def synthesize(self, text: str) -> Iterator[Pcm16]: ...


def _session(model: Path, threads: int) -> Any:
    """An onnxruntime session with a fixed thread count.

    Piper's own loader uses default session options, which spread one synthesis over every
    core; on a shared two-core machine (or a Raspberry Pi also running Whisper) a fixed
    ``tts.threads`` keeps the rest of the pipeline responsive.
    """
    import onnxruntime  # heavy import, only with a real voice

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(threads, 0)  # 0: onnxruntime picks
    options.inter_op_num_threads = 1  # the VITS graph is sequential; more only adds threads
    try:
        return onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
        raise ModelError(
            f"cannot load the Piper voice model {model}: {e}; "
            "check that it is a Piper .onnx voice (re-download it if it was truncated)"
        ) from e


def _voice_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(
            f"cannot read the Piper voice config {path}: {e}; it must be the .onnx.json "
            "published with the voice"
        ) from None
    if not isinstance(data, dict) or "audio" not in data or "phoneme_id_map" not in data:
        raise ModelError(
            f"{path} is not a Piper voice config (expected 'audio' and 'phoneme_id_map' keys)"
        )
    return data


class PiperSynthesizer:
    """A Piper voice loaded once and reused for every sentence.

    ``config.voice`` is resolved by :func:`voice.models.resolve_piper_voice`: a path, a name
    under ``models_dir``, or "" for the bundled en_US-joe-medium.
    """

    def __init__(self, config: TtsConfig, *, models_dir: Path | None = None) -> None:
        from piper import PiperVoice  # heavy imports: only when a voice is loaded
        from piper.config import PiperConfig, SynthesisConfig

        from voice.models import default_models_dir, resolve_piper_voice

        onnx, json_path = resolve_piper_voice(
            config.voice, models_dir=models_dir or default_models_dir()
        )
        voice_data = _voice_config(json_path)
        try:
            piper_config = PiperConfig.from_dict(voice_data)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{json_path} is not a usable Piper voice config: {e!r}") from None
        speakers = piper_config.num_speakers
        if config.speaker_id >= max(speakers, 1) or config.speaker_id < -1:
            raise ConfigError(
                f"tts.speaker_id = {config.speaker_id}, but voice {onnx.name} has {speakers} "
                f"speaker(s); use -1 for its default or 0..{max(speakers, 1) - 1}"
            )
        # PiperVoice is a plain dataclass: building it ourselves lets us pass the session.
        self._voice: PiperVoice = PiperVoice(
            session=_session(onnx, config.threads), config=piper_config
        )
        self._syn_config: SynthesisConfig = SynthesisConfig(
            speaker_id=None if config.speaker_id < 0 else config.speaker_id,
            length_scale=config.length_scale,
        )
        self.model_path = onnx
        self.name = onnx.name.removesuffix(".onnx")
        language = voice_data.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        self.language = code if isinstance(code, str) else piper_config.espeak_voice
        log.info(
            "Piper voice %s loaded (%d Hz, %d thread(s))",
            onnx.name,
            self.sample_rate,
            config.threads,
        )

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    def warm_up(self) -> None:
        """One throwaway sentence: loads espeak-ng and sizes onnxruntime's buffers."""
        for _ in self.synthesize("Ready."):
            pass

    def synthesize(self, text: str) -> Iterator[Pcm16]:
        """Mono int16 audio, one chunk per sentence as Piper finishes it; nothing for no text."""
        if not text.strip():
            return
        for chunk in self._voice.synthesize(text, syn_config=self._syn_config):
            # Piper pads every sentence with about 0.3 s of silence on each side: with a reply
            # spoken in clause-sized pieces that doubles every pause and delays the first sound.
            audio: Pcm16 = trim_silence(
                chunk.audio_int16_array, self.sample_rate, lead_ms=LEAD_MS, tail_ms=TAIL_MS
            )
            if audio.size:
                yield audio

    def synthesize_all(self, text: str) -> Pcm16:
        """The whole text as one array (for writing a file)."""
        return render(self, text)


def render(tts: TextToSpeech, text: str) -> Pcm16:
    """All of ``text`` as one array, from any voice (for writing a file), asked for a
    sentence at a time (long ones cut as a reply's are): a remote voice that fails part way
    says only that sentence again."""
    chunks = [chunk for piece in speech_pieces(text) for chunk in tts.synthesize(piece)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
