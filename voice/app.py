"""Builds the pipeline's parts from a :class:`Config`; shared by the CLI, tests and benchmarks."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from core import Core
from core.errors import AssistantError, ConfigError, ModelError
from voice.audio import AudioChunk, Utterance, float_to_pcm
from voice.config import Config
from voice.loop import TurnModel
from voice.pipeline import Models
from voice.silero import SileroModel
from voice.stt import SpeechToText, WhisperTranscriber
from voice.tts import PiperSynthesizer, TextToSpeech
from voice.vad import Segmenter, UtteranceEnded, WebRtcDetector
from voice.wake import WakeDetector

log = logging.getLogger(__name__)

STT_RATE = 16000
ECHO_AGENT = (sys.executable, "-m", "core.echo_agent")


def agent_command(spec: str | None, config: Config) -> tuple[str, ...]:
    """``--agent``: ``echo`` for the built-in echo agent, else a shell-style command line."""
    if spec is None:
        return config.core.agent.command
    if spec.strip() == "echo":
        return ECHO_AGENT
    try:
        argv = tuple(shlex.split(spec))
    except ValueError as e:
        raise ConfigError(f"--agent {spec!r} is not a valid command line: {e}") from None
    if not argv:
        raise ConfigError("--agent needs a command, e.g. --agent echo or --agent 'claude -p'")
    return argv


def build_core(config: Config, *, agent: str | None = None, store_dir: Path | None = None) -> Core:
    core_config = config.core
    if store_dir is not None:
        core_config = replace(
            core_config, session=replace(core_config.session, store_dir=str(store_dir))
        )
    return Core.from_config(core_config, agent_command=agent_command(agent, config))


def load_whisper(config: Config) -> WhisperTranscriber:
    """Load and warm Whisper once, so the first real turn is as fast as the rest."""
    transcriber = WhisperTranscriber(config.stt)
    transcriber.warm_up()
    return transcriber


def load_piper(config: Config) -> PiperSynthesizer:
    synthesizer = PiperSynthesizer(config.tts)
    synthesizer.warm_up()
    return synthesizer


def load_stt(config: Config) -> SpeechToText:
    """The configured speech-to-text: the local Whisper, or a Wyoming server backed by it."""
    if config.stt.engine == "wyoming":
        from voice.wyoming.remote import remote_stt

        return remote_stt(config.stt, lambda: load_whisper(config))
    return load_whisper(config)


def load_tts(config: Config) -> TextToSpeech:
    """The configured voice: the local Piper voice, or a Wyoming server backed by it."""
    if config.tts.engine == "wyoming":
        from voice.wyoming.remote import remote_tts

        return remote_tts(config.tts, lambda: load_piper(config))
    return load_piper(config)


def load_turn_model(config: Config) -> TurnModel | None:
    """The smart-turn model, or None (then the words alone decide when a turn is over)."""
    if not config.turn.smart_endpoint or config.turn.end_model == "off":
        return None
    from voice.smart_turn import SmartTurnModel

    try:
        model = SmartTurnModel(config.turn.end_model, threads=config.turn.end_model_threads)
        model.warm_up()
    except ModelError as e:
        if config.turn.end_model:  # named in the configuration: a mistake to fix, as for any model
            raise
        log.warning("no end-of-turn model (%s): the words alone decide when you have finished", e)
        return None
    return model


def load_silero(config: Config) -> SileroModel | None:
    """Silero VAD for onsets (vad.silero); a model that cannot load is an error at start."""
    if not config.vad.silero:
        return None
    from voice.models import default_models_dir, resolve_silero_model
    from voice.silero import SileroModel

    return SileroModel(
        resolve_silero_model(config.vad.silero_model, models_dir=default_models_dir())
    )


def load_wake(config: Config) -> WakeDetector | None:
    """The wake word detector, in wake mode only; any failure is an error at start, never a
    loop that cannot hear its wake word."""
    if config.input.mode != "wake":
        return None
    from voice.models import default_models_dir
    from voice.wake import load_wake_detector

    wake = config.wake
    detector = load_wake_detector(
        wake.model,
        threshold=wake.threshold,
        refractory_s=wake.refractory_s,
        models_dir=default_models_dir(),
    )
    if not wake.speech_gate:
        return detector
    from voice.vad import WebRtcDetector
    from voice.wake import SpeechGatedWake

    # The most permissive setting but one: a frame it misses could be the wake word's.
    return SpeechGatedWake(detector, WebRtcDetector(aggressiveness=1))


def load_models(config: Config) -> Models:
    return Models(
        stt=load_stt(config),
        tts=load_tts(config),
        turn_model=load_turn_model(config),
        silero=load_silero(config),
        wake=load_wake(config),
    )


def read_audio(path: Path) -> npt.NDArray[np.float32]:
    """Any file soundfile reads, as 16 kHz mono float32."""
    import soundfile
    import soxr

    if not path.exists():  # a pipe (<(...), /dev/stdin) is not a file, and reads fine
        raise AssistantError(f"cannot read audio file {path}: there is no such file")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
        raise AssistantError(f"cannot read audio file {path}: {e}") from None
    with np.errstate(invalid="ignore", over="ignore"):
        mono: npt.NDArray[np.float32] = data.mean(axis=1).astype(np.float32)
    bad = ~np.isfinite(mono)
    if bad.any():  # a float WAV can hold NaN or infinity: silence, not numpy's warnings
        log.warning("%s: %d samples that are not numbers were taken as silence", path, bad.sum())
        mono[bad] = 0.0
    if mono.size and float(np.abs(mono).max()) > 1.0:
        # Clipped as any conversion to 16 bits would: scaled down instead, one wild sample
        # made the whole recording too quiet to be heard.
        log.warning("%s: samples beyond full scale were clipped", path)
        np.clip(mono, -1.0, 1.0, out=mono)
    if rate != STT_RATE:
        mono = np.asarray(soxr.resample(mono, rate, STT_RATE), dtype=np.float32)
    return mono


def as_utterance(audio: npt.NDArray[np.float32]) -> Utterance:
    """A whole recording (16 kHz, as :func:`read_audio` gives it) as one utterance."""
    return Utterance(float_to_pcm(audio), STT_RATE, 0.0, len(audio) / STT_RATE)


def segment_audio(audio: npt.NDArray[np.float32], config: Config) -> list[Utterance]:
    """Run a whole recording through the live segmenter, as if it came from the microphone."""
    segmenter = Segmenter(
        config.vad,
        WebRtcDetector(config.vad.aggressiveness),
        rate=STT_RATE,
        frame_ms=config.audio.frame_ms,
    )
    pcm = float_to_pcm(audio)
    frame_bytes = STT_RATE * config.audio.frame_ms // 1000 * 2
    utterances: list[Utterance] = []
    for offset in range(0, len(pcm) - frame_bytes + 1, frame_bytes):
        chunk = AudioChunk(
            pcm[offset : offset + frame_bytes], STT_RATE, timestamp_s=offset / 2 / STT_RATE
        )
        utterances += [e.utterance for e in segmenter.push(chunk) if isinstance(e, UtteranceEnded)]
    last = segmenter.finish("forced")
    if isinstance(last, UtteranceEnded):
        utterances.append(last.utterance)
    return utterances


def write_wav(path: Path, samples: npt.NDArray[np.int16], rate: int) -> None:
    import soundfile

    try:
        soundfile.write(str(path), samples, rate, format="WAV", subtype="PCM_16")
    except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
        raise AssistantError(f"cannot write {path}: {e}") from None


def configure_logging(level: str, *, quiet: bool = False, verbose: bool = False) -> None:
    name = "DEBUG" if verbose else "WARNING" if quiet else level.upper()
    logging.basicConfig(
        level=getattr(logging, name),
        format="%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def exit_now(status: int) -> NoReturn:
    """Exit without the interpreter's finalization (it joins threads, and native runtimes'
    threads can abort it): the exit handlers run first (logging's flush, the terminal
    restored, livekit disposed), then the process ends at once."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
