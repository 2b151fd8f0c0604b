"""Echo cancellation through the real audio stack: the speaker looped back into the microphone.

``voice-assistant listen`` runs with ``audio.echo_cancel = "on"`` (one full-duplex PortAudio
stream, WebRTC's canceller) in the PulseAudio rig, whose ``module-loopback`` plays everything
the assistant says into its microphone at full level. The first reply teaches the canceller
the room (the loop is half-duplex until then); after that, the microphone stays live while
the assistant speaks: the reply itself starts nothing, and a real voice over it stops it and
is answered.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from tests.listener import SAID, TURN_DONE, Listener
from tests.rig import LOUD, RATE, PulseRig, Recorded, Recorder, align, as_loud_as, wait_for_sound
from tests.voice.audio_util import real_clip, real_references, speech, to_int16, wer, word_alone
from tests.voice.room_sounds import music
from voice.tts import PiperSynthesizer

pytestmark = [pytest.mark.rig, pytest.mark.models, pytest.mark.slow]

# No comma: Piper pauses 140-170 ms at one, and the loop may end the request there and take
# the rest as its continuation (the reply stopped, the request heard again): another test's.
QUESTION = "Please read me the whole shopping list for the weekend slowly and one item at a time."
CONFIG: dict[str, dict[str, object]] = {
    "audio": {"echo_cancel": "on"},
    "earcons": {"enabled": False},  # the speaker plays replies only
}
LEARNT = "the echo canceller has learnt the room"
STOPPED = "stopping the reply"
PAUSED = "pausing the reply"
REOPENED = "reopening the stream"
MOVED = "may have moved the echo"  # an underrun: the gate looks around for the echo
BEHIND = "until the stream is reopened"  # behind, and gated (too far behind, or unlearnt)
WHISPER_HEARS = "Whisper hears the "  # ... linear / AEC3 canceller (a debug line)
THROUGH_AEC3 = "heard through AEC3"  # a voice over the reply before the linear canceller learnt
ATTEMPTS = 3  # of a scenario whose audio stalled (see stall_free)
T = TypeVar("T")
BARGE_IN = "librivox-0930"  # "he might even have been made amiable himself", a real voice
HELD_ON = "going on with the reply: no words were heard"
# Melodies tried until one holds the reply, those that did most often in the rig first (2
# and 5 in 2 runs of 2; each seed in about half the runs).
HELD_SEEDS = (2, 5, 6, 3, 8, 7, 1, 4)


class Unlearnt(AssertionError):
    """A check failed where the log shows the canceller had not learnt what it needs."""


def stall_free(
    rig: PulseRig,
    tmp_path: Path,
    scenario: Callable[[Listener], T],
    check: Callable[[Listener, T], None],
    attempts: int = ATTEMPTS,
    config: dict[str, dict[str, object]] = CONFIG,
) -> None:
    """Run ``scenario`` on a fresh listener, stop it, and ``check`` what happened; should
    that fail after the audio stalled, again (``attempts`` in all).

    A stall (a loaded machine) gates the reply until the stream is reopened, and an underrun
    moves the echo, so a voice has to be clearly louder than the reply around it until the canceller
    has found the echo again (the device's tests and the underrun test below cover that).
    Either voids the premise of a scenario over a learnt room, as does a check that raises
    :class:`Unlearnt`. A failure without one fails at once.
    """
    for attempt in range(1, attempts + 1):
        with rig.loopback(), Listener(rig, tmp_path / f"listen-{attempt}", config) as listener:
            try:
                result = scenario(listener)
                assert listener.stop() == 0, listener.story()
                check(listener, result)
                return
            except Unlearnt:
                if attempt == attempts:
                    raise
            except AssertionError:
                log = listener.log()
                if attempt == attempts or not any(m in log for m in (REOPENED, MOVED, BEHIND)):
                    raise


def learn_the_room(rig: PulseRig, listener: Listener, question: np.ndarray) -> None:
    rig.feed(question, RATE).wait(30)
    listener.wait_for_log(TURN_DONE, timeout_s=60)
    assert LEARNT in listener.log(), listener.story()


@contextlib.contextmanager
def into_the_second_reply(
    rig: PulseRig, listener: Listener, question: np.ndarray
) -> Iterator[tuple[Recorder, Recorder]]:
    """Learn the room with the question, ask it again, and wait until its reply has played
    1.5 s, recording the speaker and the microphone."""
    learn_the_room(rig, listener, question)
    with rig.record_speaker() as speaker, rig.record_mic() as mic:
        rig.feed(question, RATE).wait(30)
        started_s = wait_for_sound(speaker, time.monotonic())
        time.sleep(max(0.0, started_s + 1.5 - time.monotonic()))
        yield speaker, mic


def answered_over_the_reply(listener: Listener) -> None:
    """The second reply was stopped, once, and what was said over it (BARGE_IN) answered."""
    assert listener.count(STOPPED) == 1, listener.story()
    turns = listener.turns()
    assert len(turns) == 3, turns
    said = turns[2]["said"]
    if wer(real_references()[BARGE_IN], said) > 0.25 and THROUGH_AEC3 in listener.log():
        # Whisper heard AEC3, which silences a voice's start over the reply (voice/echo.py):
        # the words the linear canceller keeps are what this checks; bench_echo counts both.
        raise Unlearnt(f"said over the reply before the linear canceller learnt: {turns}")
    assert wer(real_references()[BARGE_IN], said) <= 0.25, (turns, listener.story())
    assert turns[2]["reply"].startswith("You said:"), turns


def test_the_reply_heard_by_the_microphone_plays_to_its_end_and_starts_nothing(
    pulse_rig: PulseRig, tmp_path: Path, tts: PiperSynthesizer
) -> None:
    question = speech(tts, QUESTION)

    def scenario(listener: Listener) -> tuple[Recorded, float]:
        learn_the_room(pulse_rig, listener, question)
        with pulse_rig.record_speaker() as recorder:
            pulse_rig.feed(question, RATE).wait(30)
            asked_s = time.monotonic()
            listener.wait_for_log(TURN_DONE, count=2, timeout_s=60)
            time.sleep(4)  # long enough for a turn started by the reply to show up
        return recorder.result, asked_s

    def check(listener: Listener, result: tuple[Recorded, float]) -> None:
        recording, asked_s = result
        turns = listener.turns()
        assert len(turns) == 2, turns  # nothing the assistant said came back as a request
        assert STOPPED not in listener.log(), listener.story()
        assert PAUSED not in listener.log(), listener.story()  # not even for a moment
        # The reply sounded for as long as the reply takes to say.
        reply = turns[1]["reply"]
        expected_s = len(tts.synthesize_all(reply)) / tts.sample_rate
        spans = [(s, e) for s, e in recording.speech(min_gap_s=1.0) if e > asked_s]
        assert len(spans) == 1, spans
        (start_s, end_s) = spans[0]
        assert end_s - start_s > 0.85 * expected_s, (spans, expected_s, reply)

    stall_free(pulse_rig, tmp_path, scenario, check)


def test_a_sound_with_no_words_over_the_reply_lets_it_go_on(
    pulse_rig: PulseRig, tmp_path: Path, tts: PiperSynthesizer
) -> None:
    """A melody as loud as the echo over the reply: over the echo, Silero takes it for a voice
    now and then (in about half the runs here), which holds the reply until its words are
    heard. Whisper hears none, so the reply goes on, plays to its end, and nothing is sent.
    Melodies are played over replies until one was held (:data:`HELD_SEEDS`); that run is
    checked."""
    question = speech(tts, QUESTION)

    def scenario(listener: Listener) -> tuple[int, int]:
        learn_the_room(pulse_rig, listener, question)
        with pulse_rig.record_speaker() as speaker:
            for seed in HELD_SEEDS:
                turns, since = len(listener.turns()), len(listener.log())
                pulse_rig.feed(question, RATE).wait(30)
                started_s = wait_for_sound(speaker, time.monotonic())
                time.sleep(max(0.0, started_s + 1.5 - time.monotonic()))
                tones = to_int16(music("melody", 1.2, -20.0, seed=seed))
                pulse_rig.feed(tones, RATE).wait(30)
                listener.wait_for_log(TURN_DONE, count=turns + 1, timeout_s=60)
                listener.settled()
                if HELD_ON in listener.log()[since:]:
                    return turns, since
        return -1, 0

    def check(listener: Listener, held: tuple[int, int]) -> None:
        turn, since = held
        assert turn >= 0, f"no melody held the reply: {HELD_SEEDS}\n" + listener.story()
        run = listener.log()[since:]
        assert run.count(SAID) == 1, listener.story()  # the sound made no request
        turns = listener.turns()[turn:]
        assert wer(QUESTION, turns[0]["said"]) <= 0.3, turns
        assert STOPPED not in run, listener.story()
        assert "[stopped" not in turns[0]["reply"], (turns, listener.story())  # played on

    stall_free(pulse_rig, tmp_path, scenario, check)


@pytest.mark.parametrize(
    "quieter_db",
    [
        0,  # as loud at the microphone as the reply's echo
        # Quieter: echo to the gate until the reply pauses between words; the canceller lets
        # it through under the echo, and Silero's word on that pauses the reply
        # (bench_echo.py --quieter-db measures it; at 10 dB, up to 1.1 s from the first word).
        6,
    ],
)
def test_a_voice_over_the_reply_stops_it_and_is_answered(
    pulse_rig: PulseRig, tmp_path: Path, tts: PiperSynthesizer, quieter_db: int
) -> None:
    question = speech(tts, QUESTION)
    voice = as_loud_as(to_int16(real_clip(BARGE_IN)), question, quieter_db=quieter_db)

    def scenario(listener: Listener) -> tuple[Recorded, Recorded]:
        with into_the_second_reply(pulse_rig, listener, question) as (speaker, mic):
            pulse_rig.feed(voice, RATE).wait(30)
            listener.wait_for_log(TURN_DONE, count=3, timeout_s=60)
        return speaker.result, mic.result

    def check(listener: Listener, result: tuple[Recorded, Recorded]) -> None:
        recording, heard = result
        answered_over_the_reply(listener)

        # The reply fell silent soon after the voice began (the benchmark measures how soon).
        offset, match = align(voice, heard.samples)
        assert match > 0.5, match  # the voice was found in what the microphone heard
        onset_s = heard.time_of(offset)
        voice_end_s = onset_s + len(voice) / RATE
        playing = recording.between(onset_s - 0.1, onset_s)
        assert np.abs(playing).max() > LOUD, "the reply was not sounding when the voice began"
        during = recording.between(onset_s, voice_end_s + 0.3)  # before the answer can start
        loud = np.flatnonzero(np.abs(during) > LOUD)
        stopped_after_s = (loud[-1] + 1) / RATE if len(loud) else 0.0
        # Timed from the breath before the first word (a quarter of a second). As loud as the
        # echo, the voice stops the reply within a second; 6 dB under it, AEC3 holds it back
        # longer: 1.04 s in 1 of 32 runs here, so its bound is the benchmark's tail.
        assert stopped_after_s < (1.0 if quieter_db == 0 else 1.5), (
            stopped_after_s,
            listener.story(),
        )

    stall_free(pulse_rig, tmp_path, scenario, check)


def test_a_voice_over_the_reply_after_an_underrun_stops_it_and_is_answered(
    pulse_rig: PulseRig, tmp_path: Path, tts: PiperSynthesizer
) -> None:
    """The listener stops for 80 ms while its reply plays (a busy machine): the audio callback
    underruns and the echo may move. Half-duplex until the canceller found the echo again,
    as before, lost every word said over the rest of the reply (bench_echo.py --stall-ms)."""
    question = speech(tts, QUESTION)
    voice = as_loud_as(to_int16(real_clip(BARGE_IN)), question)

    def scenario(listener: Listener) -> bool:
        learn_the_room(pulse_rig, listener, question)
        with pulse_rig.record_speaker() as speaker:
            pulse_rig.feed(question, RATE).wait(30)
            started_s = wait_for_sound(speaker, time.monotonic())
            time.sleep(max(0.0, started_s + 0.7 - time.monotonic()))
            listener.stall(0.08)
            time.sleep(0.5)
            pulse_rig.feed(voice, RATE).wait(30)
            try:
                listener.wait_for_log(TURN_DONE, count=3, timeout_s=20)
            except AssertionError:
                return False
        return True

    def check(listener: Listener, answered: bool) -> None:
        log = listener.log()
        if BEHIND in log or MOVED not in log.split(SAID, 2)[-1]:  # after the second ask
            # Gated until the stream is reopened, as meant. No underrun: no test.
            raise Unlearnt(f"the stall left the microphone behind, or no underrun: {log[-2000:]}")
        assert answered, listener.story()
        assert listener.count(STOPPED) == 1, listener.story()
        turns = listener.turns()
        assert len(turns) == 3, turns
        # Whisper hears AEC3 until the linear canceller has found the echo again, and AEC3
        # silences a voice's first syllables over the reply.
        assert wer(real_references()[BARGE_IN], turns[2]["said"]) <= 0.4, turns

    # A quarter of stalls leave the microphone behind: more attempts than a scenario's.
    stall_free(pulse_rig, tmp_path, scenario, check, attempts=6)


def test_the_wake_word_over_the_reply_stops_it_and_the_request_after_it_is_answered(
    pulse_rig: PulseRig, tmp_path: Path, tts: PiperSynthesizer
) -> None:
    """Wake mode: "Hey Jarvis, he might even have been made amiable himself" said over a
    learnt room's reply. AEC3, which the loop listens to, silences the first 300-700 ms of a
    voice over the reply, the whole word: it was never detected, and the request was lost.
    The detector hears what Whisper hears, the linear canceller's output."""
    wake, _ = word_alone(tts, "Hey Jarvis")
    question = np.concatenate([wake, np.zeros(RATE // 5, np.int16), speech(tts, QUESTION)])
    voice = as_loud_as(to_int16(real_clip(BARGE_IN)), question)
    said = np.concatenate([as_loud_as(wake, question), np.zeros(RATE // 5, np.int16), voice])
    config = {
        **CONFIG,
        "input": {"mode": "wake", "backend": "socket"},
        "wake": {"follow_up_s": 0},
        "ui": {"log_level": "debug"},  # which canceller Whisper (and the detector) hears
    }

    def scenario(listener: Listener) -> tuple[Recorded, Recorded]:
        with into_the_second_reply(pulse_rig, listener, question) as (speaker, mic):
            before = listener.log()
            pulse_rig.feed(said, RATE).wait(30)
            try:
                listener.wait_for_log(TURN_DONE, count=3, timeout_s=30)
            except AssertionError:
                heard = before.rsplit(WHISPER_HEARS, 1)[-1] if WHISPER_HEARS in before else ""
                if not heard.startswith("linear"):
                    # Until the linear canceller is trusted the detector hears AEC3, which
                    # silences the word (as it does a voice's first syllables): unlearnt.
                    raise Unlearnt("said before the linear canceller was trusted") from None
                raise
        return speaker.result, mic.result

    def check(listener: Listener, result: tuple[Recorded, Recorded]) -> None:
        recording, heard = result
        answered_over_the_reply(listener)
        offset, match = align(said, heard.samples)
        assert match > 0.5, match
        word_end_s = heard.time_of(offset) + len(wake) / RATE
        playing = recording.between(word_end_s - 0.3, word_end_s)
        assert np.abs(playing).max() > LOUD, "the reply was not sounding under the wake word"
        during = recording.between(word_end_s, word_end_s + 2.0)
        loud = np.flatnonzero(np.abs(during) > LOUD)
        stopped_after_s = (loud[-1] + 1) / RATE if len(loud) else 0.0
        # bench_echo.py --wake: p50 91-92 ms, max 151 ms (the reply pauses as the scores rise);
        # once the word is decided, were the rise missed: up to 463 ms.
        assert stopped_after_s < 1.0, (stopped_after_s, listener.story())

    stall_free(pulse_rig, tmp_path, scenario, check, config=config)
