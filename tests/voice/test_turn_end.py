"""End of turn with real speech, the real segmenter and the real Whisper model.

The loop runs on scripted microphone audio made with the Piper voice; progress is counted in
audio frames consumed, never in wall-clock time, so a slow machine cannot fail these tests.
"""

from __future__ import annotations

import threading

import pytest

from tests.voice.audio_util import wer
from tests.voice.fakes import FRAME_MS
from tests.voice.scripted_loop import RATE, concat, gap, run_loop, said
from voice.config import Config, TurnConfig, VadConfig
from voice.stt import WhisperTranscriber
from voice.tts import PiperSynthesizer

pytestmark = pytest.mark.models


def test_a_pause_after_a_dangling_word_does_not_end_the_turn(
    tts: PiperSynthesizer, stt: WhisperTranscriber
) -> None:
    audio = concat(
        gap(300), said(tts, "Set a timer for"), gap(500), said(tts, "ten minutes."), gap(2500)
    )
    with run_loop(stt, audio, Config()) as (_source, conversation, _loop):
        assert conversation.received.wait(30), "no turn at all"
        threading.Event().wait(0.5)  # a second, premature turn would show up by now
        assert len(conversation.messages) == 1, conversation.messages
        assert wer("set a timer for ten minutes", conversation.messages[0][1]) <= 0.15


def test_a_complete_command_ends_before_the_full_hangover(
    tts: PiperSynthesizer, stt: WhisperTranscriber
) -> None:
    # A long hangover makes "before it" unambiguous even when Whisper is slow on a busy box.
    config = Config(vad=VadConfig(hangover_ms=1500), turn=TurnConfig(quick_hangover_ms=250))
    command = said(tts, "What time is it?")
    audio = concat(gap(300), command, gap(3000))
    speech_end_frame = (RATE * 300 // 1000 + len(command)) * 1000 // RATE // FRAME_MS
    with run_loop(stt, audio, config) as (source, conversation, _loop):
        assert conversation.received.wait(30), "no turn at all"
        frames_at_turn = source.frames_read
        assert wer("what time is it", conversation.messages[0][1]) <= 0.15
        assert frames_at_turn < speech_end_frame + 1500 // FRAME_MS, (
            f"turn ended {(frames_at_turn - speech_end_frame) * FRAME_MS} ms after speech"
        )


def test_without_smart_endpoint_the_full_hangover_is_waited(
    tts: PiperSynthesizer, stt: WhisperTranscriber
) -> None:
    config = Config(vad=VadConfig(hangover_ms=1500), turn=TurnConfig(smart_endpoint=False))
    command = said(tts, "What time is it?")
    audio = concat(gap(300), command, gap(3000))
    speech_end_frame = (RATE * 300 // 1000 + len(command)) * 1000 // RATE // FRAME_MS
    with run_loop(stt, audio, config) as (source, conversation, _loop):
        assert conversation.received.wait(30), "no turn at all"
        assert source.frames_read >= speech_end_frame + 1500 // FRAME_MS - 6
