"""The whole ``config.toml`` as frozen dataclasses: core tables plus the voice tables.

Every key is documented in ``config.toml`` at the repository root. CLI flags override the
file through :func:`dataclasses.replace`; nothing else mutates configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.config import CoreConfig, build, default_config_path, read_toml
from core.errors import ConfigError
from core.paths import validate_room_id


@dataclass(frozen=True)
class AudioConfig:
    """``[audio]``: microphone and speaker."""

    input_device: str = ""  # name substring or index; "" is the system default
    output_device: str = ""
    frame_ms: Literal[10, 20, 30] = 30
    queue_frames: int = 400  # bounded microphone queue (12 s of 30 ms frames)
    output_latency: Literal["low", "high"] = "low"
    stall_timeout_s: float = 2.0  # no frames for this long: reopen the microphone
    reopen_backoff_max_s: float = 5.0


@dataclass(frozen=True)
class VadConfig:
    """``[vad]``: the segmenter that turns frames into utterances."""

    aggressiveness: int = 2
    onset_frames: int = 3  # voiced frames ...
    onset_window_frames: int = 5  # ... out of this many consecutive frames start speech
    pre_roll_ms: int = 300
    hangover_ms: int = 1500  # the longest pause inside a request (see turn.*_hangover_ms)
    min_utterance_ms: int = 250
    max_utterance_s: float = 28.0
    pause_ms: int = 200  # a pause this long triggers a speculative transcript
    tail_gate_db: float = 30.0  # voiced frames this far below the utterance's peak are silence

    def __post_init__(self) -> None:
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError("vad.aggressiveness must be 0, 1, 2 or 3")
        if not 1 <= self.onset_frames <= self.onset_window_frames:
            raise ValueError("vad.onset_frames must be between 1 and vad.onset_window_frames")
        if self.pause_ms > self.hangover_ms:
            raise ValueError("vad.pause_ms must not exceed vad.hangover_ms")


@dataclass(frozen=True)
class SttConfig:
    """``[stt]``: faster-whisper and its hallucination guard."""

    model: str = "tiny.en"  # a directory path, a name under models/, or a Whisper size
    allow_download: bool = False
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2
    language: str = "en"
    beam_size: int = 1
    fast_window: bool = True  # encoder window trimmed to the utterance (>= min_window_s)
    min_window_s: float = 10.0
    min_level_dbfs: float = -55.0  # energy gate: quieter utterances are never transcribed
    max_no_speech_prob: float = 0.6
    min_avg_logprob: float = -1.0
    blocklist: tuple[str, ...] = (
        "thank you.",
        "thanks for watching!",
        "thank you for watching.",
        "you",
        "bye.",
        "subtitles by the amara.org community",
    )

    def __post_init__(self) -> None:
        if not 10.0 <= self.min_window_s <= 30.0:
            raise ValueError("stt.min_window_s must be between 10 and 30 seconds")
        if self.beam_size < 1 or self.cpu_threads < 0:
            raise ValueError("stt.beam_size must be >= 1 and stt.cpu_threads >= 0")


@dataclass(frozen=True)
class TtsConfig:
    """``[tts]``: the Piper voice."""

    voice: str = ""  # a .onnx path, a name under models/; "" is the bundled en_US-joe-medium
    speaker_id: int = -1  # -1: the voice's default speaker
    length_scale: float = 1.0  # >1 speaks slower
    threads: int = 1
    first_chunk_max_chars: int = 24  # a longer first sentence is split at a clause boundary


@dataclass(frozen=True)
class TurnConfig:
    """``[turn]``: the conversation loop."""

    room: str = "desk"
    cooldown_ms: int = 300  # microphone ignored this long after the assistant stops speaking
    speak_errors: bool = True
    barge_in: bool = False  # voice barge-in in vad mode: headsets or echo-cancelled input only
    smart_endpoint: bool = True  # end a turn early when words and voice say it is complete
    quick_hangover_ms: int = 300  # words and the end-of-turn model agree: finished
    likely_hangover_ms: int = 800  # only one of them says finished
    end_model: str = ""  # smart-turn .onnx: "" finds the one set-up installed; "off": none
    end_model_threads: int = 1
    end_model_threshold: float = 0.5  # smart-turn probability that counts as "finished"

    def __post_init__(self) -> None:
        validate_room_id(self.room)  # at start-up, not as an error at every turn


@dataclass(frozen=True)
class InputConfig:
    """``[input]``: hands-free or push-to-talk."""

    mode: Literal["vad", "ptt-hold", "ptt-toggle"] = "vad"
    backend: Literal["auto", "evdev", "pynput", "terminal", "gpio", "socket"] = "auto"
    key: str = "KEY_F12"  # evdev key name; pynput/terminal map it (space for "KEY_SPACE")
    gpio_pin: int = 17
    click_ignore_ms: int = 150
    release_grace_ms: int = 200
    control_socket: str = ""  # "" is $XDG_RUNTIME_DIR/voice-assistant/ptt.sock


@dataclass(frozen=True)
class EarconConfig:
    """``[earcons]``: short generated sounds for state changes."""

    enabled: bool = True
    volume: float = 0.25
    listening: bool = True
    thinking: bool = True
    thinking_repeat_s: float = 4.0
    done: bool = False
    error: bool = True


@dataclass(frozen=True)
class UiConfig:
    """``[ui]``: terminal output."""

    status_line: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class Config:
    core: CoreConfig = field(default_factory=CoreConfig)
    audio: AudioConfig = AudioConfig()
    vad: VadConfig = VadConfig()
    stt: SttConfig = SttConfig()
    tts: TtsConfig = TtsConfig()
    turn: TurnConfig = TurnConfig()
    input: InputConfig = InputConfig()
    earcons: EarconConfig = EarconConfig()
    ui: UiConfig = UiConfig()
    source: Path | None = None


_VOICE_TABLES: dict[str, type] = {
    "audio": AudioConfig,
    "vad": VadConfig,
    "stt": SttConfig,
    "tts": TtsConfig,
    "turn": TurnConfig,
    "input": InputConfig,
    "earcons": EarconConfig,
    "ui": UiConfig,
}
_CORE_TABLES = ("agent", "session")


def from_tables(data: Mapping[str, Any], source: Path | None = None) -> Config:
    """Build a :class:`Config` from parsed TOML; any unknown table or key is an error."""
    unknown = sorted(set(data) - set(_VOICE_TABLES) - set(_CORE_TABLES))
    if unknown:
        known = ", ".join(sorted([*_VOICE_TABLES, *_CORE_TABLES]))
        raise ConfigError(f"unknown table or key [{unknown[0]}] in config; known tables: {known}")
    tables: dict[str, Any] = {
        name: build(cls, data.get(name, {}), name) for name, cls in _VOICE_TABLES.items()
    }
    return Config(core=CoreConfig.from_tables(data), source=source, **tables)


def load(path: Path | None = None) -> Config:
    """Read ``path`` (or the default config location); no file at all means defaults."""
    path = path or default_config_path()
    if path is None:
        return Config()
    try:
        return from_tables(read_toml(path), source=path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
