"""The whole ``config.toml`` as frozen dataclasses: core tables plus the voice tables.

Every key is documented in ``config.toml`` at the repository root. CLI flags override the
file through :func:`dataclasses.replace`; nothing else mutates configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from core.config import CoreConfig, build, check_fields, default_config_path, limited, read_toml
from core.errors import ConfigError, InvalidIdError
from core.paths import validate_room_id

# sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
SOCKET_PATH_MAX_BYTES = 107


WYOMING_PROGRAMS = ("asr", "tts", "handle")


def check_uri(uri: str, key: str) -> None:
    """A Wyoming address: ``tcp://HOST:PORT`` or ``unix://PATH``."""
    try:
        parts = urlsplit(uri)
        port = parts.port if parts.scheme == "tcp" else None
    except ValueError as e:
        raise ConfigError(f"{key} = {uri!r} is not a valid address: {e}") from None
    extra = parts.path.strip("/") or parts.query or parts.fragment
    if parts.scheme == "tcp" and parts.hostname and port is not None and not extra:
        return
    if parts.scheme == "unix" and parts.path:
        if parts.netloc or not parts.path.startswith("/"):  # unix://tmp/x.sock is /x.sock
            raise ConfigError(
                f"{key} = {uri!r}: a Unix socket needs an absolute path after unix://, "
                f"e.g. unix:///{(parts.netloc + parts.path).lstrip('/')}"
            )
        if len(os.fsencode(parts.path)) > SOCKET_PATH_MAX_BYTES:
            raise ConfigError(f"{key}: {parts.path} is longer than {SOCKET_PATH_MAX_BYTES} bytes")
        return
    raise ConfigError(
        f"{key} = {uri!r}: expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:10700) or unix://PATH"
    )


def check_engine(engine: str, uri: str, table: str) -> None:
    if engine == "wyoming":
        if not uri:
            raise ConfigError(
                f"{table}.engine = 'wyoming' needs {table}.uri, e.g. tcp://192.168.1.20:10300"
            )
        check_uri(uri, f"{table}.uri")


@dataclass(frozen=True)
class AudioConfig:
    """``[audio]``: microphone and speaker."""

    input_device: str = ""  # name substring or index; "" is the system default
    output_device: str = ""
    frame_ms: Literal[10, 20, 30] = 30  # the sizes webrtcvad accepts
    queue_frames: int = limited(400, 1, 10000)  # bounded microphone queue (12 s of 30 ms)
    output_latency: Literal["low", "high"] = "low"
    # Half-duplex, the speaker stream stops after this many seconds with nothing played
    # (an idle stream costs ~2 % of a core); 0 keeps it running (a sink that wakes slowly).
    speaker_rest_s: float = limited(5.0, 0, 86400)
    stall_timeout_s: float = limited(2.0, 0.1, 600)  # no frames this long: reopen the microphone
    reopen_backoff_max_s: float = limited(5.0, 0.5, 600)
    # "auto": one full-duplex stream with the echo cancelled when the library loads and the
    # stream opens (the microphone then stays live while the assistant speaks), else gated.
    echo_cancel: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        check_fields(self, "audio")


@dataclass(frozen=True)
class VadConfig:
    """``[vad]``: the segmenter that turns frames into utterances."""

    aggressiveness: int = limited(2, 0, 3)
    onset_frames: int = limited(3, 1, 50)  # voiced frames ...
    onset_window_frames: int = limited(5, 1, 50)  # ... out of this many consecutive frames
    pre_roll_ms: int = limited(300, 0, 3000)
    # The longest pause inside a request (see turn.*_hangover_ms).
    hangover_ms: int = limited(1500, 100, 10000)
    min_utterance_ms: int = limited(250, 0, 10000)
    max_utterance_s: float = limited(28.0, 1, 300)
    pause_ms: int = limited(100, 30, 10000)  # a pause this long starts a speculative transcript
    tail_gate_db: float = limited(30.0, 0, 120)  # frames this far below the peak are silence
    # Silero VAD confirms each onset webrtcvad proposes: noise, music and tones start nothing.
    silero: bool = True
    silero_model: str = ""  # "" is the silero_vad_v6.onnx faster-whisper ships
    silero_threshold: float = limited(0.7, 0, 1, low_open=True)

    def __post_init__(self) -> None:
        check_fields(self, "vad")
        if self.onset_frames > self.onset_window_frames:
            raise ConfigError("vad.onset_frames must not exceed vad.onset_window_frames")
        if self.pause_ms > self.hangover_ms:
            raise ConfigError("vad.pause_ms must not exceed vad.hangover_ms")
        if self.min_utterance_ms > self.max_utterance_s * 1000:
            raise ConfigError("vad.min_utterance_ms must not exceed vad.max_utterance_s")


@dataclass(frozen=True)
class SttConfig:
    """``[stt]``: faster-whisper and its hallucination guard."""

    model: str = "tiny.en"  # a directory path, a name under models/, or a Whisper size
    allow_download: bool = False
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    # CTranslate2's types; which ones a device runs: ctranslate2.get_supported_compute_types
    compute_type: Literal[
        "default",
        "auto",
        "int8",
        "int8_float32",
        "int8_float16",
        "int8_bfloat16",
        "int16",
        "float16",
        "bfloat16",
        "float32",
    ] = "int8"
    cpu_threads: int = limited(2, 0, 64)  # 0: CTranslate2 picks; huge values crash it
    language: str = "en"
    beam_size: int = limited(1, 1, 10)  # memory grows with the beam
    fast_window: bool = True  # encoder window trimmed to the utterance (>= min_window_s)
    # Shorter windows lose words and loop; 30 s is the encoder's limit.
    min_window_s: float = limited(10.0, 10, 30)
    min_level_dbfs: float = limited(-55.0, -120, 0)  # quieter utterances are never transcribed
    max_no_speech_prob: float = limited(0.6, 0, 1)
    min_avg_logprob: float = limited(-1.0, -20, 0)
    blocklist: tuple[str, ...] = (
        "thank you.",
        "thanks for watching!",
        "thank you for watching.",
        "you",
        "bye.",
        "subtitles by the amara.org community",
    )
    # "wyoming": a Wyoming asr server at ``uri`` transcribes; the local model is the fallback.
    engine: Literal["local", "wyoming"] = "local"
    uri: str = ""  # tcp://HOST:PORT or unix://PATH
    fallback: Literal["lazy", "eager", "off"] = "lazy"  # when the local model is loaded
    timeout_s: float = limited(10.0, 0.1, 600)  # connect, and each wait for the server

    def __post_init__(self) -> None:
        check_fields(self, "stt")
        check_engine(self.engine, self.uri, "stt")


@dataclass(frozen=True)
class TtsConfig:
    """``[tts]``: the Piper voice."""

    voice: str = ""  # a .onnx path, a name under models/; "" is the bundled en_US-joe-medium
    speaker_id: int = limited(-1, -1, 9999)  # -1: the voice's default speaker
    length_scale: float = limited(1.0, 0.25, 4)  # >1 speaks slower
    threads: int = limited(1, 0, 64)  # 0: onnxruntime picks
    # A longer first sentence is split at a clause boundary (0: never).
    first_chunk_max_chars: int = limited(24, 0, 1000)
    # "wyoming": a Wyoming tts server at ``uri`` speaks; the local voice is the fallback.
    engine: Literal["local", "wyoming"] = "local"
    uri: str = ""
    fallback: Literal["lazy", "eager", "off"] = "lazy"
    timeout_s: float = limited(10.0, 0.1, 600)

    def __post_init__(self) -> None:
        check_fields(self, "tts")
        check_engine(self.engine, self.uri, "tts")


@dataclass(frozen=True)
class TurnConfig:
    """``[turn]``: the conversation loop."""

    room: str = "desk"
    cooldown_ms: int = limited(300, 0, 10000)  # deaf this long after the assistant speaks
    speak_errors: bool = True
    barge_in: bool = False  # voice barge-in in vad mode: headsets or echo-cancelled input only
    smart_endpoint: bool = True  # end a turn early when words and voice say it is complete
    quick_hangover_ms: int = limited(300, 30, 10000)  # words and the end-of-turn model agree
    likely_hangover_ms: int = limited(800, 30, 10000)  # only one of them says finished
    end_model: str = ""  # smart-turn .onnx: "" finds the one set-up installed; "off": none
    end_model_threads: int = limited(1, 0, 16)
    end_model_threshold: float = limited(0.5, 0, 1)  # probability that counts as "finished"
    end_model_sure: float = limited(0.98, 0, 1)  # ... and as so sure the reply plays at once

    def __post_init__(self) -> None:
        check_fields(self, "turn")
        if self.end_model_threshold > self.end_model_sure:
            raise ConfigError("turn.end_model_threshold must not exceed turn.end_model_sure")
        if not self.quick_hangover_ms <= self.likely_hangover_ms:
            raise ConfigError("turn.quick_hangover_ms must not exceed turn.likely_hangover_ms")
        try:
            validate_room_id(self.room)  # at start-up, not as an error at every turn
        except InvalidIdError as e:
            raise ConfigError(f"turn.room: {e}") from None


@dataclass(frozen=True)
class InputConfig:
    """``[input]``: hands-free or push-to-talk."""

    mode: Literal["vad", "ptt-hold", "ptt-toggle", "wake"] = "vad"
    backend: Literal["auto", "evdev", "pynput", "terminal", "gpio", "socket"] = "auto"
    key: str = "KEY_F12"  # evdev key name; pynput/terminal map it (space for "KEY_SPACE")
    gpio_pin: int = limited(17, 0, 53)  # BCM numbering
    click_ignore_ms: int = limited(150, 0, 2000)
    release_grace_ms: int = limited(200, 0, 5000)
    control_socket: str = ""  # "" is $XDG_RUNTIME_DIR/voice-assistant/ptt.sock

    def __post_init__(self) -> None:
        check_fields(self, "input")
        path = os.path.expanduser(self.control_socket)
        if len(os.fsencode(path)) > SOCKET_PATH_MAX_BYTES:
            raise ConfigError(
                f"input.control_socket {path} is longer than {SOCKET_PATH_MAX_BYTES} bytes, "
                "the limit for a Unix socket; choose a shorter path"
            )


@dataclass(frozen=True)
class WakeConfig:
    """``[wake]``: the wake word of ``input.mode = "wake"``."""

    model: str = "hey_jarvis"  # a built-in model, a name under models/, or a .json path
    threshold: float = limited(0.0, 0, 1)  # 0: the model's own
    refractory_s: float = limited(2.0, 0, 60)  # a wake's own tail is not another wake
    follow_up_s: float = limited(5.0, 0, 600)  # after a reply: listen this long without it
    listen_s: float = limited(8.0, 1, 600)  # after the word: how long to wait for a request
    speech_gate: bool = True  # the model runs only while webrtcvad hears something voice-like

    def __post_init__(self) -> None:
        check_fields(self, "wake")


@dataclass(frozen=True)
class EarconConfig:
    """``[earcons]``: short generated sounds for state changes."""

    enabled: bool = True
    volume: float = limited(0.25, 0, 1)  # a fraction of full scale
    listening: bool = True
    thinking: bool = True
    thinking_repeat_s: float = limited(4.0, 0.1, 600, also=(0,))  # 0: once
    done: bool = False
    error: bool = True

    def __post_init__(self) -> None:
        check_fields(self, "earcons")


@dataclass(frozen=True)
class UiConfig:
    """``[ui]``: terminal output."""

    status_line: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def __post_init__(self) -> None:
        check_fields(self, "ui")


@dataclass(frozen=True)
class WyomingConfig:
    """``[wyoming]``: ``voice-assistant serve``, the Wyoming server for Home Assistant."""

    uri: str = "tcp://127.0.0.1:10700"
    allow_remote: bool = False  # listen on a non-loopback address (no authentication!)
    programs: tuple[str, ...] = ("asr", "tts", "handle")
    # The first of these keys in a client's context names the room of a `transcript`.
    room_keys: tuple[str, ...] = ("room", "satellite_id", "device_id", "conversation_id")
    default_room: str = "wyoming"  # when the context names none
    max_connections: int = limited(32, 1, 1024)
    client_timeout_s: float = limited(60.0, 0.1, 3600)  # a silent or stalled client is dropped
    max_payload_bytes: int = limited(1024 * 1024, 1024, 64 * 1024 * 1024)
    max_audio_s: float = limited(120.0, 1, 3600)  # one transcription request

    def __post_init__(self) -> None:
        check_fields(self, "wyoming")
        unknown = sorted(set(self.programs) - set(WYOMING_PROGRAMS))
        if unknown or not self.programs:
            raise ConfigError(
                f"wyoming.programs must list some of {', '.join(WYOMING_PROGRAMS)}; "
                f"got {list(self.programs)!r}"
            )
        if not self.room_keys or not all(k.strip() for k in self.room_keys):
            raise ConfigError("wyoming.room_keys must list context keys, e.g. ['conversation_id']")
        try:
            validate_room_id(self.default_room)
        except InvalidIdError as e:
            raise ConfigError(f"wyoming.default_room: {e}") from None
        check_uri(self.uri, "wyoming.uri")


@dataclass(frozen=True)
class Config:
    core: CoreConfig = field(default_factory=CoreConfig)
    audio: AudioConfig = AudioConfig()
    vad: VadConfig = VadConfig()
    stt: SttConfig = SttConfig()
    tts: TtsConfig = TtsConfig()
    turn: TurnConfig = TurnConfig()
    input: InputConfig = InputConfig()
    wake: WakeConfig = WakeConfig()
    earcons: EarconConfig = EarconConfig()
    ui: UiConfig = UiConfig()
    wyoming: WyomingConfig = WyomingConfig()
    source: Path | None = None


_VOICE_TABLES: dict[str, type] = {
    "audio": AudioConfig,
    "vad": VadConfig,
    "stt": SttConfig,
    "tts": TtsConfig,
    "turn": TurnConfig,
    "input": InputConfig,
    "wake": WakeConfig,
    "earcons": EarconConfig,
    "ui": UiConfig,
    "wyoming": WyomingConfig,
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
    tables = read_toml(path)  # its errors name the file
    try:
        return from_tables(tables, source=path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
