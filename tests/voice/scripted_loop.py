"""A live :class:`VoiceLoop` on scripted microphone audio with the real segmenter and STT.

Used by the end-of-turn tests. The audio plays at real-time
pace, so speculative transcripts race the hangover exactly as they do live.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator

import numpy as np
import soxr

from tests.rig import find_speech
from tests.voice.fakes import FakeConversation, FakeSink, FakeTts, ScriptedSource
from voice.audio import float_to_pcm
from voice.config import Config, EarconConfig
from voice.loop import TurnModel, VoiceLoop
from voice.pipeline import Models, build_loop
from voice.stt import SpeechToText
from voice.tts import PiperSynthesizer

RATE = 16000


def said(tts: PiperSynthesizer, text: str) -> np.ndarray:
    """The words alone: Piper's leading and trailing silence trimmed, so gaps are exact."""
    audio = tts.synthesize_all(text).astype(np.float32) / 32768
    audio = np.asarray(soxr.resample(audio, tts.sample_rate, RATE), dtype=np.float32)
    segments = find_speech(float_to_int16(audio), RATE, min_gap_s=0.5)
    return audio[int(segments[0][0] * RATE) : int(segments[-1][1] * RATE)]


def float_to_int16(audio: np.ndarray) -> np.ndarray:
    return np.frombuffer(float_to_pcm(audio), dtype="<i2")


def concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts)


def gap(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, dtype=np.float32)


@contextlib.contextmanager
def run_loop(
    stt: SpeechToText,
    audio: np.ndarray,
    config: Config,
    *,
    turn_model: TurnModel | None = None,
    conversation: FakeConversation | None = None,
) -> Iterator[tuple[ScriptedSource, FakeConversation, VoiceLoop]]:
    """The live loop with the real segmenter and STT (and end-of-turn model, if given) on
    ``audio`` at real-time pace; the agent and the speaker are fakes."""
    source = ScriptedSource(float_to_pcm(audio))
    conversation = conversation or FakeConversation()
    config = dataclasses.replace(config, earcons=EarconConfig(enabled=False))
    loop = build_loop(
        config,
        source=source,
        sink=FakeSink(),
        models=Models(stt=stt, tts=FakeTts(), turn_model=turn_model),
        conversation=conversation,
    )
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield source, conversation, loop
    finally:
        stop.set()
        thread.join(10)
