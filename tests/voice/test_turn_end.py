"""End of turn with real speech, the real segmenter and the real Whisper model.

The loop runs on scripted microphone audio made with the Piper voice; progress is counted in
audio frames consumed, never in wall-clock time, so a slow machine cannot fail these tests.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.rig import find_speech
from tests.voice.audio_util import normalise, real_clip, real_references, to_int16, wer
from tests.voice.fakes import FRAME_MS, wait_until
from tests.voice.scripted_loop import RATE, concat, gap, run_loop, said
from voice.config import Config, TurnConfig, VadConfig
from voice.end_of_turn import MODEL_PAUSE_S
from voice.smart_turn import SmartTurnModel
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


def test_a_request_cut_at_the_length_limit_in_its_last_pause_is_still_answered(
    stt: WhisperTranscriber,
) -> None:
    # A real voice, and the limit set so the cut falls about 500 ms into the pause after
    # the last word: the turn must still end at the hangover, not wait for more speech.
    clip = real_clip("goforward")
    segments = find_speech(to_int16(clip))
    start_s, end_s = segments[0][0], segments[-1][1]
    limit_s = round(0.3 + (end_s - start_s) + 0.5, 2)  # pre-roll, the words, the cut
    config = Config(
        vad=VadConfig(hangover_ms=1500, max_utterance_s=limit_s),
        turn=TurnConfig(smart_endpoint=False),
    )
    audio = concat(gap(1000), clip[int(start_s * RATE) : int(end_s * RATE)], gap(4000))
    with run_loop(stt, audio, config) as (_source, conversation, _loop):
        assert conversation.received.wait(30), "the request was never sent"
    ((_room, text),) = conversation.messages
    assert "forward" in text.lower()


def test_a_request_cut_in_its_last_pause_ends_as_that_pause_says(stt: WhisperTranscriber) -> None:
    # The same cut with smart endpointing on, its quick wait set so the cut comes first: the
    # pause's evidence (here the words: "Go forward 10 meters." is complete) outlives the
    # cut, so the command ends well before the 1.5 s hangover.
    clip = real_clip("goforward")
    segments = find_speech(to_int16(clip))
    start_s, end_s = segments[0][0], segments[-1][1]
    limit_s = round(0.3 + (end_s - start_s) + 0.5, 2)
    config = Config(
        vad=VadConfig(hangover_ms=1500, max_utterance_s=limit_s),
        turn=TurnConfig(quick_hangover_ms=700),
    )
    words = clip[int(start_s * RATE) : int(end_s * RATE)]
    audio = concat(gap(1000), words, gap(4000))
    speech_end_frame = (RATE + len(words)) * 1000 // RATE // FRAME_MS
    with run_loop(stt, audio, config) as (source, conversation, _loop):
        assert conversation.received.wait(30), "the request was never sent"
        frames_at_turn = source.frames_read
    ((_room, text),) = conversation.messages
    assert "forward" in text.lower()
    assert frames_at_turn < speech_end_frame + 1500 // FRAME_MS, (
        f"sent {(frames_at_turn - speech_end_frame) * FRAME_MS} ms after the last word"
    )


# ---- real voices, with the end-of-turn model --------------------------------------------------


def paused(name: str, at_s: float, pause_ms: int) -> np.ndarray:
    """A real read sentence with the reader stopping ``pause_ms`` at ``at_s`` to think."""
    clip = real_clip(name)
    cut = int(at_s * RATE)
    return concat(gap(300), clip[:cut], gap(pause_ms), clip[cut:], gap(2500))


@pytest.mark.parametrize(
    ("name", "at_s"),
    [("librivox-0870", 4.12), ("librivox-0920", 3.84), ("librivox-0890", 3.62)],
)
def test_a_real_reader_pausing_mid_sentence_is_one_request_with_every_word(
    stt: WhisperTranscriber, smart_turn: SmartTurnModel, name: str, at_s: float
) -> None:
    reference = real_references()[name]
    audio = paused(name, at_s, 800)
    with run_loop(stt, audio, Config(), turn_model=smart_turn) as (_source, conversation, loop):
        assert conversation.received.wait(60), "no turn at all"
        wait_until(lambda: not loop.busy, 60)
        threading.Event().wait(0.5)
    whole = stt.transcribe_audio(real_clip(name)).text
    (said,) = [text for _, text in conversation.messages][-1:]
    # If the turn went to the agent at the pause, the rest joined it (revised, not a second turn).
    assert conversation.revised[-1] is (len(conversation.messages) > 1)
    assert wer(reference, said) <= wer(reference, whole) + 0.1, (said, whole)


@pytest.mark.parametrize(
    ("first", "then", "gap_ms"),
    [("goforward", "librivox-0870", 150), ("cards-001", "librivox-0870", 250)],
)
def test_a_sentence_after_a_short_one_is_never_dropped(
    stt: WhisperTranscriber, smart_turn: SmartTurnModel, first: str, then: str, gap_ms: int
) -> None:
    # Real voices. tiny.en heard the two as the first alone ("Go forward 10 meters."), in
    # one request (150 ms apart) or when the second joined the first's turn ("10 of close",
    # then "Ten of Clovs."): the seven-second sentence never reached the agent.
    refs = real_references()
    audio = concat(gap(300), real_clip(first), gap(gap_ms), real_clip(then), gap(3000))
    with run_loop(stt, audio, Config(), turn_model=smart_turn) as (source, conversation, loop):
        assert conversation.received.wait(60), "no turn at all"
        assert wait_until(lambda: source.frames_read * FRAME_MS * RATE // 1000 >= len(audio), 60)
        assert wait_until(lambda: not loop.busy, 60)
    said = conversation.messages[-1][1]
    for name in (first, then):
        heard = [w for w in normalise(refs[name]) if w in normalise(said)]
        assert len(heard) >= len(normalise(refs[name])) / 2, (name, conversation.messages)


def test_a_real_spoken_command_ends_well_before_the_longest_pause(
    stt: WhisperTranscriber, smart_turn: SmartTurnModel
) -> None:
    clip = real_clip("cards-003")  # "seven of clubs", another speaker
    audio = concat(gap(300), clip, gap(3000))
    speech_end_frame = (RATE * 300 // 1000 + len(clip)) * 1000 // RATE // FRAME_MS
    with run_loop(stt, audio, Config(), turn_model=smart_turn) as (source, conversation, _loop):
        assert conversation.received.wait(30), "no turn at all"
        frames_at_turn = source.frames_read
    assert wer("seven of clubs", conversation.messages[0][1]) <= 0.34
    assert frames_at_turn < speech_end_frame + 1000 // FRAME_MS, (
        f"turn ended {(frames_at_turn - speech_end_frame) * FRAME_MS} ms after speech"
    )


class SilenceAdded:
    """The real model, noting how much digital silence ended each audio it was asked about:
    the microphone never gives exact zeros (the room below is faint noise), so that is what
    the loop added."""

    def __init__(self, model: SmartTurnModel) -> None:
        self.model = model
        self.added_s: list[float] = []

    def predict(self, audio: np.ndarray) -> float:
        nonzero = np.flatnonzero(audio)
        self.added_s.append((len(audio) - 1 - int(nonzero[-1])) / RATE if nonzero.size else 0.0)
        return self.model.predict(audio)


@pytest.mark.parametrize("pause_ms", [100, 200])
def test_the_model_hears_the_rooms_own_pause_as_long_as_its_thresholds_were_measured_with(
    stt: WhisperTranscriber, smart_turn: SmartTurnModel, pause_ms: int
) -> None:
    room = np.random.default_rng(3).normal(0.0, 3e-4, RATE * 3).astype(np.float32)  # -70 dBFS
    audio = concat(room[: RATE // 3], real_clip("cards-003"), room)
    model = SilenceAdded(smart_turn)
    config = Config(vad=VadConfig(pause_ms=pause_ms))
    with run_loop(stt, audio, config, turn_model=model) as (_source, conversation, _loop):
        assert conversation.received.wait(30), "no turn at all"
    assert model.added_s, "the model was never asked"
    # Whatever vad.pause_ms, it is asked once the pause is MODEL_PAUSE_S long: it hears the
    # 180 ms of the room the segmenter keeps (30 ms frames), and only the rest is added.
    for added_s in model.added_s:
        assert added_s == pytest.approx(MODEL_PAUSE_S - 0.18, abs=0.003)
