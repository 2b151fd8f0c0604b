"""The segmenter state machine: scripted frames through a fake detector, then real recordings."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import numpy as np
import pytest

from tests.voice.audio_util import chunks, load_16k, pcm_chunks, shared, silence, white_noise
from voice.audio import AudioChunk, Utterance
from voice.config import VadConfig
from voice.vad import (
    OnsetUnconfirmed,
    Segmenter,
    SegmenterEvent,
    SpeechDropped,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
    WebRtcDetector,
)

RATE = 16000
FRAME_MS = 30
FRAME = RATE * FRAME_MS // 1000  # samples
FRAME_S = FRAME_MS / 1000
# Defaults spelt out so the frame arithmetic below reads on its own: onset 3 of 5 frames,
# pre-roll 10 frames, pause after 9 silent frames (270 ms >= 250), hangover after 20.
CONFIG = VadConfig(
    onset_frames=3,
    onset_window_frames=5,
    pre_roll_ms=300,
    hangover_ms=600,
    min_utterance_ms=250,
    max_utterance_s=28.0,
    pause_ms=250,
)


class ParityDetector:
    """Voiced when the frame's samples are odd: scripted frames carry their verdict and index."""

    def is_speech(self, frame: bytes, rate: int) -> bool:
        assert rate == RATE and len(frame) == FRAME * 2
        return bool(np.frombuffer(frame, dtype="<i2")[0] & 1)


class NonZero:
    """Voiced when the frame is not digital silence, at any frame length."""

    def is_speech(self, frame: bytes, rate: int) -> bool:
        return any(frame)


def scripted(pattern: str, first: int = 0) -> bytes:
    """One 30 ms frame per character ('v' voiced, '.' silent); frame i holds 2*i (+1 if voiced)."""
    values = [2 * (first + i) + (c == "v") for i, c in enumerate(pattern)]
    return np.repeat(np.array(values, dtype="<i2"), FRAME).tobytes()


WORDS_FROM = 1000  # frame numbers of a chunk's separate words audio (Feed(words=True))


def frame_ids(utterance: Utterance) -> list[int]:
    """Which scripted frames an utterance holds."""
    samples = np.frombuffer(utterance.pcm, dtype="<i2").reshape(-1, FRAME)
    return [int(v) // 2 for v in samples[:, 0]]


class Feed:
    """Pushes scripted frames through a segmenter, keeping time and frame numbering."""

    def __init__(self, config: VadConfig = CONFIG, start_s: float = 0.0) -> None:
        self.seg = Segmenter(config, ParityDetector(), rate=RATE, frame_ms=FRAME_MS)
        self.start_s = start_s
        self.next_frame = 0

    def __call__(
        self,
        pattern: str,
        chunk_frames: int = 1,
        *,
        words: bool = False,
        over: bool = False,
        under: bool = False,
        echo: bool = False,
        gated: bool = False,
    ) -> list[SegmenterEvent]:
        """``words``: the chunks carry separate audio to transcribe, its frames numbered
        from :data:`WORDS_FROM`; ``over``: they are marked as heard over the reply; ``under``:
        as echo with a voice under it; ``echo``: as the reply's echo alone; ``gated``: the
        assistant's own sound plays (half-duplex)."""
        pcm = scripted(pattern, self.next_frame)
        other = scripted(pattern, self.next_frame + WORDS_FROM) if words else None
        events: list[SegmenterEvent] = []
        step = chunk_frames * FRAME * 2
        for offset in range(0, len(pcm), step):
            t = self.start_s + (self.next_frame * FRAME + offset // 2) / RATE
            part = slice(offset, offset + step)
            chunk = AudioChunk(
                pcm[part],
                RATE,
                timestamp_s=t,
                words=None if other is None else other[part],
                heard_over=over,
                heard_under=under,
                echo=echo,
            )
            events += self.seg.push(chunk, gated=gated)
        self.next_frame += len(pattern)
        return events

    def time_of(self, frame: int) -> float:
        return self.start_s + frame * FRAME_S


E = TypeVar("E")


def only(events: list[SegmenterEvent], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def test_onset_needs_enough_voiced_frames_in_the_window() -> None:
    feed = Feed()
    # Isolated blips, two voiced frames out of every five at most: never speech.
    assert feed("." * 10 + "v...." * 6 + "vv..." * 4 + "." * 10) == []
    assert not feed.seg.in_speech
    (started,) = feed("vv.v")  # third voiced frame in a window of five: onset
    assert isinstance(started, SpeechStarted)
    assert started.at_s == pytest.approx(feed.time_of(feed.next_frame - 4))
    assert feed.seg.in_speech


def test_utterance_keeps_pre_roll_before_the_first_voiced_frame() -> None:
    feed = Feed()
    feed("." * 40)
    feed("v" * 30)
    ended = only(feed("." * 25), UtteranceEnded)
    assert len(ended) == 1
    ids = frame_ids(ended[0].utterance)
    assert ids[0] == 40 - 10  # pre_roll_ms 300 = 10 frames before onset
    assert ended[0].utterance.start_s == pytest.approx(feed.time_of(30))


def test_the_utterance_keeps_the_words_audio_while_the_detector_hears_the_other() -> None:
    # The scripted detector reads each frame's verdict from pcm; the words audio is numbered
    # from WORDS_FROM and would be all silence to it.
    feed = Feed()
    feed("." * 40, words=True)
    feed("v" * 30, words=True)
    (ended,) = only(feed("." * 25, words=True), UtteranceEnded)
    assert frame_ids(ended.utterance) == [WORDS_FROM + i for i in range(30, 70 + 6)]


@pytest.mark.parametrize(
    ("before", "first"),
    [
        ("-" * 40, 40 - 10),  # the pre-roll alone
        ("-" * 20 + "o" * 20, 40 - 20 - 10),  # back over the voice AEC3 held back, then pre-roll
        ("-" * 10 + "o" * 30, 0),  # a voice heard over the reply for 900 ms: all of it
        # A voice as loud as the echo flickers between over and echo; then the reply paused
        # for it, and nothing played until the detector heard it.
        ("-" * 20 + "ooeeoeeeooeo" + "-" * 8, 40 - 20 - 10),
        ("-" * 16 + "oooo" + "-" * 20, 16 - 10),  # a long pause of the reply is no gap
        ("-" * 29 + "o" + "e" * 10, 29 - 10),  # 300 ms of the reply's echo alone: crossed
        ("-" * 28 + "o" + "e" * 11, 40 - 10),  # more: a lone click, not this voice
        ("-" * 20 + "o" + "e" * 19, 40 - 10),
        ("-" * 10 + "o" + "-" * 29, 40 - 10),  # too long before the onset
        ("-" * 25 + "g" * 10 + "-" * 5, 40 - 10),  # half-duplex: the gated reply, a cooldown
    ],
)
def test_an_onset_over_the_reply_reaches_back_over_the_voice_the_detector_missed(
    before: str, first: int
) -> None:
    """``before``: the 40 frames before the voice, silence to the detector: "o" heard over
    the echo, "e" the reply's echo alone, "g" the assistant's sound the loop gates (which
    the device marked heard over), "-" nothing played."""
    feed = Feed()
    for mark, run in itertools.groupby(before):
        feed("." * len(list(run)), over=mark in "og", echo=mark == "e", gated=mark == "g")
    feed("v" * 30)
    (ended,) = only(feed("." * 25), UtteranceEnded)
    assert frame_ids(ended.utterance)[0] == first
    assert ended.utterance.start_s == pytest.approx(feed.time_of(first))


@pytest.mark.parametrize(
    ("before", "first"),
    [
        # A voice under the louder reply for 1.5 s, heard over it only in a gap: all of it.
        ("-" * 10 + "e" * 30 + "u" * 50 + "e" * 6 + "o" * 4, 40 - 10),
        ("-" * 10 + "e" * 30 + "ueu" * 16 + "ee" + "o" * 10, 40 - 10),  # flickering
        ("-" * 10 + "u" * 90, 100 - 84 - 10),  # LOOK_BACK_UNDER_MS (2.5 s: 84 frames) at most
        # Then the reply paused for it, and nothing played until the detector heard it.
        ("-" * 60 + "u" * 30 + "-" * 10, 60 - 10),
        ("e" * 60 + "u" * 5 + "e" * 11 + "o" * 24, 76 - 10),  # 330 ms of echo alone: a gap
        # ... except past a voice under the echo: the user pauses between words, and the
        # canceller lets the voice through only now and then (LOOK_BACK_UNDER_GAP_MS).
        ("-" * 10 + "e" * 30 + "u" * 20 + "e" * 15 + "u" * 25, 40 - 10),
        ("e" * 50 + "u" * 10 + "e" * 21 + "u" * 19, 81 - 10),  # 630 ms: a gap
        ("e" * 50 + "u" + "e" * 49, 100 - 10),  # a lone frame long before: not this voice
        ("-" * 30 + "U" * 60 + "-" * 10, 100 - 10),  # half-duplex: the loop gates the reply
    ],
)
def test_an_onset_reaches_back_over_a_voice_under_the_reply(before: str, first: int) -> None:
    """``before``: the 100 frames before the voice, as in the test above; "u" the reply's
    echo with a voice under it (AudioChunk.heard_under), "U" the same while the loop gates
    the reply. The onset is dated where the voice began, so a request it goes on with is
    judged from there."""
    feed = Feed()
    for mark, run in itertools.groupby(before):
        n = len(list(run))
        feed("." * n, over=mark == "o", under=mark in "uU", echo=mark in "eu", gated=mark == "U")
    (started,) = only(feed("v" * 30), SpeechStarted)
    (ended,) = only(feed("." * 25), UtteranceEnded)
    assert frame_ids(ended.utterance)[0] == first
    voice = min(first + 10, 100)  # the pre-roll (10 frames) before where the voice began
    assert started.at_s == pytest.approx(feed.time_of(voice))


def test_pre_roll_is_shorter_when_speech_starts_early() -> None:
    feed = Feed()
    feed("..." + "v" * 20)
    (ended,) = only(feed("." * 25), UtteranceEnded)
    assert frame_ids(ended.utterance)[0] == 0


def test_hangover_ends_utterance_and_trims_trailing_silence() -> None:
    feed = Feed(start_s=100.0)  # a live clock, not zero
    feed("." * 12 + "v" * 20)
    assert [type(e) for e in feed("." * 19)] == [SpeechPaused]  # a pause, no hangover yet
    events = feed(".")  # 20th silent frame = 600 ms hangover
    (ended,) = only(events, UtteranceEnded)
    assert ended.reason == "hangover"
    utterance = ended.utterance
    assert utterance.end_s == pytest.approx(feed.time_of(32))  # end of last voiced frame
    assert utterance.start_s == pytest.approx(feed.time_of(2))
    ids = frame_ids(utterance)
    assert ids == list(range(2, 32 + 6))  # 6 trailing frames = 180 ms <= 200 ms kept
    assert not feed.seg.in_speech


def test_pause_and_resume_events() -> None:
    feed = Feed()
    feed("." * 5 + "v" * 20)
    assert feed("." * 8) == []  # 240 ms < pause_ms
    (paused,) = feed(".")
    assert isinstance(paused, SpeechPaused)
    assert paused.utterance.end_s == pytest.approx(feed.time_of(25))
    assert (
        frame_ids(paused.utterance)[-1] == 25 + 5
    )  # trimmed tail: 6 frames after the last voiced one
    assert feed("." * 5) == []  # one pause event per pause
    (resumed,) = feed("v")
    assert isinstance(resumed, SpeechResumed)
    assert resumed.at_s == pytest.approx(feed.time_of(39))
    assert feed("vvv") == []
    events = feed("." * 9)
    assert len(only(events, SpeechPaused)) == 1  # pausing again speculates again
    (ended,) = only(feed("." * 11), UtteranceEnded)
    assert frame_ids(ended.utterance)[0] == 0
    assert ended.utterance.end_s == pytest.approx(feed.time_of(43))


def test_a_pause_is_reported_again_at_each_later_mark_until_speech_resumes() -> None:
    feed = Feed()
    feed.seg = Segmenter(
        CONFIG, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, pauses_ms=(360, 200)
    )
    feed("." * 5 + "v" * 20)
    first = only(feed("." * 9), SpeechPaused)  # 270 ms: vad.pause_ms; 200 ms is too soon
    assert [p.silence_s for p in first] == [pytest.approx(0.27)]
    (later,) = only(feed("." * 3), SpeechPaused)
    assert later.silence_s == pytest.approx(0.36)
    assert later.utterance.end_s == first[0].utterance.end_s  # the same pause
    assert feed("." * 5) == []  # no mark left
    assert isinstance(feed("v")[0], SpeechResumed)
    feed("vvv")
    assert [p.silence_s for p in only(feed("." * 12), SpeechPaused)] == [
        pytest.approx(0.27),
        pytest.approx(0.36),
    ]  # the next pause is reported afresh


@pytest.mark.parametrize(
    ("frame_ms", "pause_ms", "reported_s"),
    [(10, 100, [0.10, 0.20]), (20, 100, [0.10, 0.20]), (30, 190, [0.21])],
)
def test_pause_marks_are_heard_in_frames(
    frame_ms: int, pause_ms: int, reported_s: list[float]
) -> None:
    # At 30 ms frames, 190 and 200 ms are both heard at the seventh frame: one report.
    config = replace(CONFIG, pause_ms=pause_ms)
    seg = Segmenter(config, NonZero(), rate=RATE, frame_ms=frame_ms, pauses_ms=(200,))
    sound = np.full(RATE, 3000, "<i2").tobytes() + bytes(RATE)  # 1 s of "voice", 0.5 s quiet
    events = [e for chunk in pcm_chunks(sound, frame_ms) for e in seg.push(chunk)]
    assert [p.silence_s for p in only(events, SpeechPaused)] == pytest.approx(reported_s)


def test_too_short_utterance_is_dropped_and_says_so() -> None:
    feed = Feed()
    events = feed("." * 10 + "vvvvvv" + "." * 30)  # 180 ms of voice < min_utterance_ms
    assert [type(e) for e in events] == [SpeechStarted, SpeechDropped]  # no pause, no audio
    assert not feed.seg.in_speech
    # ... and the next real utterance is unaffected.
    feed("v" * 20)
    (ended,) = only(feed("." * 20), UtteranceEnded)
    assert frame_ids(ended.utterance)[0] == 46 - 10


def test_max_length_cuts_and_keeps_listening() -> None:
    feed = Feed(VadConfig(max_utterance_s=1.5, hangover_ms=600))  # 50 frames
    events = feed("." * 5 + "v" * 120 + "." * 25)
    ended = only(events, UtteranceEnded)
    assert [e.reason for e in ended] == ["max_length", "max_length", "hangover"]
    assert len(only(events, SpeechStarted)) == 3
    pieces = [frame_ids(e.utterance) for e in ended]
    assert all(len(ids) <= 50 for ids in pieces)
    joined = [i for ids in pieces for i in ids]
    assert joined == sorted(set(joined))  # no frame twice, in order
    assert set(range(5, 125)) <= set(joined)  # every voiced frame was kept


def test_a_cut_at_the_length_limit_inside_a_pause_still_ends_at_the_hangover() -> None:
    # The user stops talking just before the limit: the pause goes on in a fresh utterance
    # (which the machine can end), and the hangover counts from the last word.
    feed = Feed(VadConfig(**{**CONFIG.__dict__, "max_utterance_s": 1.5}))  # 50 frames
    events = feed("." * 5 + "v" * 35 + "." * 10)  # pre-roll 5 + 35 voiced + 10 silent
    (cut,) = only(events, UtteranceEnded)
    assert cut.reason == "max_length"
    assert isinstance(events[-1], SpeechStarted) and feed.seg.in_speech
    assert feed("." * 9) == []  # 570 ms of the 600 ms hangover
    assert [type(e) for e in feed(".")] == [SpeechDropped]  # nothing more was said
    assert not feed.seg.in_speech


def test_words_after_a_cut_in_a_reported_pause_resume_the_speech() -> None:
    # The pause was reported before the cut, and goes on in the fresh utterance: the next
    # word ends it as any pause ends, so the machine does not end the turn on it.
    feed = Feed(VadConfig(**{**CONFIG.__dict__, "max_utterance_s": 1.5}))  # 50 frames
    events = feed("." * 5 + "v" * 35 + "." * 10)
    assert [type(e) for e in events][-3:] == [SpeechPaused, UtteranceEnded, SpeechStarted]
    (resumed,) = feed("v")
    assert isinstance(resumed, SpeechResumed) and resumed.at_s == pytest.approx(50 * 0.03)
    assert feed("v" * 2) == []


CUT_AT_50 = VadConfig(**{**CONFIG.__dict__, "max_utterance_s": 1.5})  # 50 frames


@pytest.mark.parametrize(
    ("script", "kept"),
    [
        # The voice stops on the very frame of the cut: the fresh utterance still ends.
        ("." * 5 + "v" * 45 + "." * 20, []),
        # A word's last frames after a cut mid-word: kept, though shorter than a word may be.
        ("." * 5 + "v" * 48 + "." * 20, [50, 51, 52]),
        # A short word (180 ms) after a cut in a pause: kept, as it would be without the cut.
        ("." * 5 + "v" * 35 + "." * 15 + "v" * 6 + "." * 20, list(range(55, 61))),
    ],
)
def test_whatever_follows_a_cut_at_the_length_limit_is_kept_and_ended(
    script: str, kept: list[int]
) -> None:
    feed = Feed(CUT_AT_50)
    events = feed(script)
    cut, *rest = only(events, UtteranceEnded)
    assert cut.reason == "max_length"
    if kept:
        (tail,) = rest
        assert tail.reason == "hangover" and set(kept) <= set(frame_ids(tail.utterance))
    else:
        assert rest == [] and isinstance(events[-1], SpeechDropped)  # the request ends
    assert not feed.seg.in_speech


@pytest.mark.parametrize("silent_before_cut", [1, 2, 8])
def test_a_pause_that_the_length_limit_cuts_into_is_still_reported(
    silent_before_cut: int,
) -> None:
    # The cut comes before the pause reaches vad.pause_ms (9 frames): the fresh utterance has
    # no voice, and the pause, which the machine needs to end the turn early, is the cut
    # part's. It goes on as any pause does.
    feed = Feed(CUT_AT_50)
    events = feed("." * 5 + "v" * (45 - silent_before_cut) + "." * 8)
    (cut,) = only(events, UtteranceEnded)
    assert cut.reason == "max_length" and only(events, SpeechPaused) == []
    (pause,) = feed(".")  # the ninth silent frame
    assert isinstance(pause, SpeechPaused) and pause.silence_s == pytest.approx(0.27)
    assert pause.utterance.end_s == cut.utterance.end_s and pause.utterance.pcm == b""
    assert isinstance(feed("v")[0], SpeechResumed)
    (ended,) = only(feed("v" * 5 + "." * 20), UtteranceEnded)
    assert ended.reason == "hangover"


def test_start_hold_ignores_hangover_until_finish() -> None:
    feed = Feed()
    feed("." * 30)
    started = feed.seg.start(hold=True)
    assert started.at_s == pytest.approx(feed.time_of(30))
    events = feed("v" * 20 + "." * 60)  # far past the hangover
    assert only(events, UtteranceEnded) == []
    assert len(only(events, SpeechPaused)) == 1
    assert feed.seg.in_speech
    ended = feed.seg.finish()
    assert isinstance(ended, UtteranceEnded) and ended.reason == "forced"
    ids = frame_ids(ended.utterance)
    assert ids[0] == 30 - 10  # pre-roll before the key press
    assert ids[-1] == 50 + 5  # trimmed after the last voiced frame
    assert not feed.seg.in_speech
    assert feed.seg.finish() is None  # nothing left to end


def test_a_held_silent_segment_cut_at_the_length_limit_says_it_goes_on() -> None:
    feed = Feed(CUT_AT_50)
    feed.seg.start(hold=True)  # the key is down, nothing is said
    events = feed("." * 60)
    dropped, started = events
    assert isinstance(dropped, SpeechDropped) and dropped.split  # nothing ended ...
    assert isinstance(started, SpeechStarted) and feed.seg.in_speech  # ... it goes on
    finished = feed.seg.finish()  # the key is released
    assert isinstance(finished, SpeechDropped) and not finished.split


def test_start_without_hold_ends_on_hangover() -> None:
    feed = Feed()
    feed("." * 5)
    feed.seg.start()
    (ended,) = only(feed("v" * 10 + "." * 20), UtteranceEnded)
    assert ended.reason == "hangover"
    assert frame_ids(ended.utterance)[0] == 0


def test_finish_returns_none_without_enough_voice() -> None:
    feed = Feed()
    feed.seg.start(hold=True)
    feed("." * 40 + "vvv" + "." * 5)
    assert isinstance(feed.seg.finish(), SpeechDropped)
    assert not feed.seg.in_speech


def test_finish_ends_vad_started_utterance() -> None:
    feed = Feed()
    feed("." * 3 + "v" * 15 + "...")
    ended = feed.seg.finish("forced")
    assert isinstance(ended, UtteranceEnded)
    assert ended.utterance.end_s == pytest.approx(feed.time_of(18))


def test_reset_drops_audio_and_state() -> None:
    feed = Feed()
    feed("." * 10 + "v" * 20)
    assert feed.seg.in_speech
    feed.seg.reset()
    assert not feed.seg.in_speech
    assert feed("." * 40) == []  # no stale hangover
    feed("v" * 20)
    (ended,) = only(feed("." * 20), UtteranceEnded)
    assert frame_ids(ended.utterance)[0] == 70 - 10  # nothing from before the reset


def test_a_restart_keeps_the_utterance_in_progress_and_goes_on_with_it() -> None:
    # The microphone reopened mid-word: what was heard is cut and kept, what follows goes on
    # in a fresh utterance, and the machine hears both (a reset told it nothing).
    feed = Feed()
    feed("." * 10 + "v" * 20)
    feed.start_s += 5.0  # the new stream's clock
    cut, started = feed.seg.restart()
    assert isinstance(cut, UtteranceEnded) and cut.reason == "max_length"
    assert frame_ids(cut.utterance) == list(range(0, 30))
    assert isinstance(started, SpeechStarted) and feed.seg.in_speech
    (pause,) = feed("." * 19)  # the pause after the words kept
    assert isinstance(pause, SpeechPaused) and pause.utterance.end_s == cut.utterance.end_s
    assert [type(e) for e in feed(".")] == [SpeechDropped]  # the hangover after the restart
    # Words after it join the same speech: kept, however short.
    feed("v" * 20)
    feed.seg.restart()
    (tail,) = only(feed("vvv" + "." * 20), UtteranceEnded)
    assert frame_ids(tail.utterance)[:3] == [70, 71, 72]
    assert feed.seg.restart() == [] and not feed.seg.in_speech  # nothing in progress


def test_a_restart_just_after_an_onset_keeps_the_word_begun() -> None:
    # Too little voice to be an utterance of its own (it would be dropped): it goes on.
    feed = Feed()
    feed("." * 10 + "v" * 4)
    assert feed.seg.restart() == [] and feed.seg.in_speech
    (ended,) = only(feed("v" * 10 + "." * 20), UtteranceEnded)
    assert frame_ids(ended.utterance)[0] == 0 and ended.reason == "hangover"
    assert set(range(10, 24)) <= set(frame_ids(ended.utterance))


def test_a_restart_keeps_a_held_segment_held() -> None:
    feed = Feed()
    feed.seg.start(hold=True)
    feed("v" * 20)
    cut, _started = feed.seg.restart()
    assert isinstance(cut, UtteranceEnded)
    assert only(feed("." * 60), UtteranceEnded) == []  # the key is still down
    assert isinstance(feed.seg.finish(), SpeechDropped)  # released, nothing more said


def test_chunk_size_does_not_change_events() -> None:
    pattern = "." * 17 + "v" * 23 + "." * 10 + "v" * 9 + "." * 30
    reference = Feed(start_s=5.0)(pattern)
    for chunk_frames in (2, 7, 100):
        assert _summary(Feed(start_s=5.0)(pattern, chunk_frames)) == _summary(reference)
    # Chunks that split frames: 7 ms and 47 ms pieces.
    for chunk_ms in (7, 47):
        seg = Segmenter(CONFIG, ParityDetector())
        pieces = pcm_chunks(scripted(pattern), chunk_ms, start_s=5.0)
        events = [e for c in pieces for e in seg.push(c)]
        assert _summary(events) == _summary(reference)


def test_level_meter_and_input_checks() -> None:
    seg = Segmenter(CONFIG, ParityDetector())
    loud = np.full(FRAME, 3276, dtype="<i2").tobytes()  # 0.1 full scale = -20 dBFS
    seg.push(AudioChunk(loud, RATE))
    assert seg.level_dbfs == pytest.approx(-20.0, abs=0.1)
    with pytest.raises(ValueError, match="16000 Hz"):
        seg.push(AudioChunk(loud, 8000))
    with pytest.raises(ValueError, match="frame_ms"):
        Segmenter(CONFIG, ParityDetector(), frame_ms=25)


# ---- real recordings through webrtcvad ---------------------------------------------------------


def segment(audio: np.ndarray, aggressiveness: int = 2) -> list[SegmenterEvent]:
    # A 600 ms hangover: these tests are about where speech is, not when a turn ends.
    config = VadConfig(aggressiveness=aggressiveness, hangover_ms=600)
    seg = Segmenter(config, WebRtcDetector(aggressiveness))
    events = [e for chunk in chunks(audio, 100) for e in seg.push(chunk)]
    last = seg.finish()  # end of file
    return events + ([last] if last else [])


def utterances(events: list[SegmenterEvent]) -> list[Utterance]:
    return [e.utterance for e in only(events, UtteranceEnded)]


@pytest.mark.parametrize("aggressiveness", [2, 3])
def test_jfk_is_covered_by_utterances(aggressiveness: int) -> None:
    audio = load_16k(shared("jfk.flac"))
    found = utterances(segment(audio, aggressiveness))
    assert found
    assert found[0].start_s < 0.5  # "And so" starts right away
    assert found[-1].end_s > 10.0  # "... for your country." runs to ~10.5 s
    for a, b in itertools.pairwise(found):
        assert a.end_s <= b.start_s
    assert all(u.duration_s <= 28.0 for u in found)


def test_digits_split_into_their_three_groups() -> None:
    # digits.wav says three groups of five digits with a pause of a second or more between them.
    found = utterances(segment(load_16k(shared("digits.wav"))))
    assert len(found) == 3
    for utterance in found:
        assert 1.0 < utterance.end_s - utterance.start_s < 3.0
    assert found[0].start_s < 1.0 and found[-1].end_s > 7.0


@pytest.mark.parametrize(
    "audio",
    [silence(5.0), white_noise(5.0, -50.0), white_noise(5.0, -40.0, seed=3)],
    ids=["digital-silence", "noise-50dBFS", "noise-40dBFS"],
)
def test_no_speech_in_silence_or_low_noise(audio: np.ndarray) -> None:
    assert segment(audio) == []


def _summary(events: list[SegmenterEvent]) -> list[tuple[str, float]]:
    """Events with rounded times (split chunks re-derive times through float sums)."""
    out = []
    for e in events:
        if isinstance(e, SpeechStarted | SpeechResumed):
            out.append((type(e).__name__, round(e.at_s, 6)))
        else:
            out.append((type(e).__name__, round(e.utterance.end_s, 6)))
    return out


class AlwaysVoiced:
    """Like webrtcvad's own hangover at its worst: every frame is called speech."""

    def is_speech(self, frame: bytes, rate: int) -> bool:
        return True


def test_quiet_tail_after_a_word_counts_as_silence() -> None:
    t = np.arange(int(0.6 * RATE)) / RATE
    word = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    audio = np.concatenate([word, white_noise(1.5, -70.0)])
    seg = Segmenter(CONFIG, AlwaysVoiced(), rate=RATE, frame_ms=FRAME_MS)
    events = [e for c in chunks(audio, 30) for e in seg.push(c)]
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    assert [e.reason for e in ended] == ["hangover"]
    assert ended[0].utterance.end_s == pytest.approx(0.6, abs=FRAME_S)
    assert any(isinstance(e, SpeechPaused) for e in events)

    ungated = Segmenter(
        VadConfig(**{**CONFIG.__dict__, "tail_gate_db": 0.0}), AlwaysVoiced(), frame_ms=FRAME_MS
    )
    events = [e for c in chunks(audio, 30) for e in ungated.push(c)]
    assert not any(isinstance(e, UtteranceEnded | SpeechPaused) for e in events)


class MusicAfter:
    """A :class:`~voice.vad.SpeechCheck` that says speech up to frame ``last`` (frames
    carry their index) and keeps every frame it was given."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.seen: list[int] = []

    def still_speech(self, pcm: bytes, start_s: float, rate: int) -> bool:
        frame = int(np.frombuffer(pcm, dtype="<i2")[0]) // 2
        self.seen.append(frame)
        return frame <= self.last


def test_frames_the_speech_check_refuses_are_silence_so_music_cannot_hold_speech_open() -> None:
    feed = Feed()
    check = MusicAfter(last=24)
    feed.seg = Segmenter(CONFIG, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, speech_check=check)
    # Frames 5-24 a voice, then music: voiced often enough to keep speech open (never three
    # silent frames in a row), never enough to start it, for longer than the length limit.
    events = feed("....." + "v" * 20 + "vv..." * 200)
    ended = only(events, UtteranceEnded)
    assert [e.reason for e in ended] == ["hangover"]
    assert ended[0].utterance.end_s == pytest.approx(feed.time_of(25))
    assert only(events, SpeechPaused)  # the pause that lets the turn end came at 250 ms
    # Fed every frame inside speech in order, voiced or not, and nothing outside it.
    first = check.seen[0]
    assert check.seen == list(range(first, first + len(check.seen)))
    assert first >= 5 and check.seen[-1] == 24 + CONFIG.hangover_ms // FRAME_MS


def test_without_a_speech_check_steady_voiced_frames_run_to_the_length_limit() -> None:
    feed = Feed(VadConfig(**{**CONFIG.__dict__, "max_utterance_s": 3.0}))
    events = feed("....." + "v" * 20 + "vv..." * 50)
    # Each cut falls between two bursts: the next utterance goes on at once.
    assert [e.reason for e in only(events, UtteranceEnded)] == ["max_length"] * 2


class Doubts:
    """A :class:`~voice.vad.SpeechCheck` that says "not speech" for the given frames."""

    def __init__(self, not_speech: set[int]) -> None:
        self.not_speech = not_speech

    def still_speech(self, pcm: bytes, start_s: float, rate: int) -> bool:
        return int(np.frombuffer(pcm, dtype="<i2")[0]) // 2 not in self.not_speech


def test_a_breath_before_the_next_words_still_ends_the_pause() -> None:
    """webrtcvad hears the breath before a word and the speech check does not: for up to
    300 ms such frames count as voice, so the pause ends where the breath begins."""
    feed = Feed()
    breath = set(range(39, 47))  # 240 ms
    check = Doubts({25, 26, *breath})  # and webrtcvad lingering after the last word
    feed.seg = Segmenter(CONFIG, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, speech_check=check)
    events = feed("....." + "v" * 20 + "vv" + "." * 12 + "v" * 8 + "v" * 20 + "." * 25)
    assert [type(e) for e in events if not isinstance(e, SpeechStarted)] == [
        SpeechPaused,
        SpeechResumed,
        SpeechPaused,
        UtteranceEnded,
    ]
    (resumed,) = only(events, SpeechResumed)
    assert resumed.at_s == pytest.approx(feed.time_of(39))
    (ended,) = only(events, UtteranceEnded)
    assert ended.utterance.end_s == pytest.approx(feed.time_of(67))


def test_doubted_frames_that_go_on_become_silence_from_the_first_of_them() -> None:
    feed = Feed()
    check = Doubts(set(range(25, 200)))
    feed.seg = Segmenter(CONFIG, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, speech_check=check)
    events = feed("....." + "v" * 20 + "v" * 9)  # 270 ms of doubt: still voice
    assert not only(events, SpeechPaused)
    events = feed("v")  # the tenth: 300 ms, it was music all along
    (paused,) = only(events, SpeechPaused)
    assert paused.utterance.end_s == pytest.approx(feed.time_of(25))
    events = feed("v" * 11)  # more of it is silence at once: the hangover ends the request
    (ended,) = only(events, UtteranceEnded)
    assert ended.utterance.end_s == pytest.approx(feed.time_of(25))


def test_a_pause_that_began_earlier_than_reported_is_reported_again_from_its_start() -> None:
    # webrtcvad lingers two frames after the word; the pause is reported at 120 and 210 ms
    # from them. One more doubted frame makes ten: they were never voice, so the pause
    # began after frame 24, and the machine must hear of its true end.
    feed = Feed()
    config = replace(CONFIG, pause_ms=100)
    check = Doubts({25, 26, 34})
    feed.seg = Segmenter(
        config, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, speech_check=check, pauses_ms=(200,)
    )
    events = feed("....." + "v" * 20 + "vv" + "." * 7)
    assert [p.utterance.end_s for p in only(events, SpeechPaused)] == [
        pytest.approx(feed.time_of(27))
    ] * 2
    events = feed("v" + ".")
    assert not only(events, SpeechResumed)
    reported = only(events, SpeechPaused)
    assert [p.utterance.end_s for p in reported] == [pytest.approx(feed.time_of(25))] * 2
    assert [p.silence_s for p in reported] == [pytest.approx(0.30), pytest.approx(0.33)]


class ConfirmsFrom:
    """An :class:`~voice.vad.OnsetCheck` that confirms once the audio reaches frame ``first``
    (the word after a breath)."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.likelihood = 0.0

    def confirm(self, pcm: bytes, start_s: float, rate: int) -> bool:
        frame = int(np.frombuffer(pcm, dtype="<i2")[-1]) // 2
        self.likelihood = min(1.0, frame / self.first)  # surer as the word comes
        return frame >= self.first

    def reset(self) -> None:
        pass


def test_an_onset_the_check_has_not_confirmed_is_reported_at_each_frame() -> None:
    """The turn-taking machine holds a reply while one is heard (the breath before a word)."""
    feed = Feed()
    feed.seg = Segmenter(
        CONFIG, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=ConfirmsFrom(12)
    )
    events = feed("....." + "vvvvvvvv")  # frames 5-12: the onset is proposed at frame 7
    assert [type(e) for e in events] == [OnsetUnconfirmed] * 5 + [SpeechStarted]
    assert [e.at_s for e in only(events, OnsetUnconfirmed)] == pytest.approx(
        [feed.time_of(i + 1) for i in range(7, 12)]  # each at the end of its frame
    )
    # Each carries how likely the check found it (the loop pauses a reply on a likely one).
    assert [e.likelihood for e in only(events, OnsetUnconfirmed)] == pytest.approx(
        [i / 12 for i in range(7, 12)]
    )
    assert all(e.proposed for e in only(events, OnsetUnconfirmed))
    # The check found the first refused onset likely speech already (7/12): the voice began
    # at its window's first voiced frame, not at the window that confirmed it (frame 8).
    assert only(events, SpeechStarted)[0].at_s == pytest.approx(feed.time_of(5))


class Scores:
    """An :class:`~voice.vad.OnsetCheck` that finds the audio ending in frame ``i`` speech
    with ``likelihood(i)``, and confirms from frame ``confirm_at``."""

    def __init__(self, likelihood: Callable[[int], float], confirm_at: int) -> None:
        self.score = likelihood
        self.confirm_at = confirm_at
        self.likelihood = 0.0

    def confirm(self, pcm: bytes, start_s: float, rate: int) -> bool:
        frame = int(np.frombuffer(pcm, dtype="<i2")[-1]) // 2
        self.likelihood = self.score(frame)
        return frame >= self.confirm_at

    def reset(self) -> None:
        pass


@pytest.mark.parametrize(
    ("pattern", "likely", "confirm_at", "onset"),
    [
        # Voiced from frame 5, proposed from 7 (window 3-7), confirmed at 12 (window 8-12).
        ("." * 5 + "v" * 8, set(), 12, 8),  # refusals unlikely: the confirming window
        ("." * 5 + "v" * 8, {7, 8, 9, 10, 11}, 12, 5),  # likely: the first refused window
        ("." * 5 + "v" * 8, {10, 11}, 12, 6),  # ... from the first likely one (window 6-10)
        # Likely at 7-8, then 12 frames (360 ms) of silence: another voice.
        ("." * 5 + "vvvv" + "." * 12 + "v" * 8, {7, 8}, 28, 24),
        # ... 9 frames (270 ms): the same voice, paused inside a word.
        ("." * 5 + "vvvv" + "." * 9 + "v" * 8, {7, 8}, 25, 5),
        # Likely for 2.4 s before it is confirmed: no further back than 1.5 s.
        ("." * 5 + "v" * 85, set(range(7, 89)), 89, 85 - 50),
    ],
    ids=["unlikely", "likely", "likely-late", "gap-breaks", "gap-bridged", "reach-bounded"],
)
def test_a_confirmed_onset_reaches_back_over_the_refused_onsets_the_check_found_likely(
    pattern: str, likely: set[int], confirm_at: int, onset: int
) -> None:
    """A word said unclearly (jfk.flac's "ask": 0.5-0.64) is refused until the next word
    confirms the voice; the voice began at the refused onsets Silero found likely speech
    (its own 0.5 threshold), so the pre-roll alone would lose half a word."""
    feed = Feed()
    check = Scores(lambda i: 0.6 if i in likely else 0.1, confirm_at)
    config = replace(CONFIG, pre_roll_ms=0)
    feed.seg = Segmenter(config, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=check)
    started = only(feed(pattern), SpeechStarted)
    assert [e.at_s for e in started] == [pytest.approx(feed.time_of(onset))]


@pytest.mark.parametrize(
    ("scores", "onset", "likely_from"),
    [
        # Voiced from frame 5, proposed from 7, confirmed at 20 (window 16-20).
        ({i: 0.3 for i in range(7, 20)}, 5, 16),  # a murmur: likely once it lasts 360 ms
        ({i: 0.3 for i in range(7, 12)}, 16, None),  # too brief to be one
        ({i: 0.12 for i in range(7, 20)}, 16, None),  # under the floor: noise
        # A dip under the floor shorter than the gap keeps it going; a longer one ends it.
        ({**{i: 0.3 for i in range(7, 20)}, 10: 0.05, 11: 0.05}, 5, 16),
        ({**{i: 0.3 for i in range(7, 20)}, **{i: 0.05 for i in range(10, 16)}}, 16, None),
    ],
    ids=["murmur", "brief", "under-floor", "dip-bridged", "dip-breaks"],
)
def test_a_murmur_of_refused_onsets_counts_as_likely_speech(
    scores: dict[int, float], onset: int, likely_from: int | None
) -> None:
    """jfk.flac in the rig, one run of 16: "ask not what your country can do" scored 0.18-0.40
    for 0.8 s, never likely speech by Silero's own 0.5, and "ask" was lost. Refused
    onsets of at least MURMUR_FLOOR that go on for MURMUR_MS are likely speech: they hold the
    reply (voice.turn_taking) and the confirmed voice reaches back to where they began."""
    feed = Feed()
    check = Scores(lambda i: scores.get(i, 0.05), confirm_at=20)
    config = replace(CONFIG, pre_roll_ms=0)
    feed.seg = Segmenter(config, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=check)
    events = feed("." * 5 + "v" * 16)
    refused = [e for e in events if isinstance(e, OnsetUnconfirmed)]
    assert len(refused) == 13  # frames 7-19
    marked = [i for i, e in zip(range(7, 20), refused, strict=True) if e.likely]
    assert marked == ([] if likely_from is None else list(range(likely_from, 20))), marked
    started = only(events, SpeechStarted)
    assert [e.at_s for e in started] == [pytest.approx(feed.time_of(onset))]


def test_the_reach_back_over_likely_onsets_never_crosses_the_assistants_own_sound() -> None:
    """Over a reply, where a voice began is found from what the device heard over or under
    the echo; likely onsets before a stretch of echo are not reached back to."""
    feed = Feed()
    check = Scores(lambda i: 0.6 if i in (7, 8) else 0.2, confirm_at=18)
    config = replace(CONFIG, pre_roll_ms=0)
    feed.seg = Segmenter(config, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=check)
    feed("....." + "vvvv")  # frames 5-8, refused at 7 and 8 as likely speech
    feed("..", echo=True)  # frames 9-10: the reply's echo
    started = only(feed("v" * 8), SpeechStarted)  # frames 11-18, confirmed at 18
    assert [e.at_s for e in started] == [pytest.approx(feed.time_of(11))]


class SureUntil(Scores):
    """Confirms the first voice (frames before ``first_end``); after it, finds each onset
    ``likely`` speech and confirms none."""

    def __init__(self, first_end: int, likely: float) -> None:
        super().__init__(lambda i: 0.9 if i < first_end else likely, confirm_at=10**9)
        self.first_end = first_end

    def confirm(self, pcm: bytes, start_s: float, rate: int) -> bool:
        super().confirm(pcm, start_s, rate)
        return int(np.frombuffer(pcm, dtype="<i2")[-1]) // 2 < self.first_end


@pytest.mark.parametrize(
    ("pause", "likely", "going_on"),
    [
        (5, 0.6, True),  # 150 ms after the last word: the user goes on
        (25, 0.6, False),  # 750 ms, beyond the longest pause (hangover_ms 600 ms)
        (5, 0.1, False),  # Silero does not find it likely
    ],
)
def test_just_after_an_utterance_an_onset_silero_finds_likely_is_confirmed(
    pause: int, likely: float, going_on: bool
) -> None:
    """The turn ended at a pause (the loop finishes the utterance) and the user goes on:
    within the longest pause, three onsets in a row that Silero finds likely speech confirm
    the voice (jfk.flac's "ask not what your country can do for you", in the rig, peaked at
    0.69 and was never confirmed, then spoken over)."""
    feed = Feed()
    check = SureUntil(first_end=20, likely=likely)
    feed.seg = Segmenter(CONFIG, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=check)
    assert only(feed("....." + "v" * 12 + "....."), SpeechStarted)  # frames 5-16
    assert isinstance(feed.seg.finish(), UtteranceEnded)
    events = feed("." * (pause - 5) + "v" * 10)
    started = only(events, SpeechStarted)
    assert len(started) == going_on
    if going_on:  # at the third likely onset, reaching back to the first one's window
        assert [type(e) for e in events if not isinstance(e, SpeechStarted)] == [
            OnsetUnconfirmed
        ] * 2
        assert started[0].at_s == pytest.approx(feed.time_of(17 + pause))


def test_a_murmur_goes_on_across_a_short_silence_between_words() -> None:
    """webrtcvad hears 90 ms of silence between two words (frames 13-15); the onset window
    then waits for three voiced frames before the check is asked again, 180 ms after it was
    last asked. The gap in the voice is 90 ms: the murmur goes on, and is reached back to."""
    feed = Feed()
    check = Scores(lambda i: 0.3 if i >= 7 else 0.05, confirm_at=25)
    config = replace(CONFIG, pre_roll_ms=0)
    feed.seg = Segmenter(config, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=check)
    events = feed("." * 5 + "v" * 8 + "..." + "v" * 10)  # frames 5-12, 16-25
    assert [e.likely for e in events if isinstance(e, OnsetUnconfirmed)][-1]
    started = only(events, SpeechStarted)
    assert [e.at_s for e in started] == [pytest.approx(feed.time_of(5))]


def test_just_after_an_utterance_a_murmur_alone_confirms_no_voice() -> None:
    """A melody in the rig made murmurs (0.39 for 240 ms): unlike onsets Silero finds likely
    speech, a murmur never confirms a voice by itself, even where the user may go on."""
    feed = Feed()
    check = SureUntil(first_end=20, likely=0.3)
    feed.seg = Segmenter(CONFIG, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=check)
    assert only(feed("....." + "v" * 12 + "....."), SpeechStarted)  # frames 5-16
    assert isinstance(feed.seg.finish(), UtteranceEnded)
    events = feed("v" * 20)  # frames 22-41, 150 ms after the last word
    assert only(events, SpeechStarted) == []
    refused = [e for e in events if isinstance(e, OnsetUnconfirmed)]
    assert refused and refused[-1].likely and not refused[0].likely


def test_over_the_reply_the_check_is_asked_before_the_detector_proposes_an_onset() -> None:
    """A frame louder than the echo (AudioChunk.heard_over) is reported with the check's
    likelihood at once, so a likely voice can pause the reply before webrtcvad's onset
    window fills; the assistant's own gated sound never asks."""
    feed = Feed()
    feed.seg = Segmenter(
        CONFIG, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=ConfirmsFrom(12)
    )
    assert feed("...") == []  # not heard over the reply: the detector's onset window rules
    events = feed("..v", over=True)  # frames 3-5: no onset proposed (one voiced of five)
    assert [type(e) for e in events] == [OnsetUnconfirmed] * 3
    assert [e.at_s for e in events] == pytest.approx([feed.time_of(i + 1) for i in (3, 4, 5)])
    assert [e.likelihood for e in only(events, OnsetUnconfirmed)] == pytest.approx(
        [i / 12 for i in (3, 4, 5)]
    )
    assert [e.proposed for e in only(events, OnsetUnconfirmed)] == [False] * 3
    assert not feed.seg.in_speech  # only the check's confirmed onset starts speech
    gated = AudioChunk(scripted("...", 6), RATE, timestamp_s=feed.time_of(6), heard_over=True)
    assert feed.seg.push(gated, gated=True) == []
    echo = AudioChunk(
        scripted("...", 9), RATE, timestamp_s=feed.time_of(9), echo=True, heard_over=True
    )
    assert feed.seg.push(echo) == []


def test_under_the_reply_the_check_is_asked_too() -> None:
    """A voice quieter than the reply is echo to the gate, so the detector proposes nothing
    until the reply pauses between phrases. Where the canceller left a voice under the echo
    (AudioChunk.heard_under) the check is asked at once, so a likely voice pauses the reply;
    the echo alone, and the assistant's sound the loop gates (half-duplex), ask nothing."""
    feed = Feed()
    feed.seg = Segmenter(
        CONFIG, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=ConfirmsFrom(12)
    )
    assert feed("vvv", echo=True) == []
    events = feed("vvv", echo=True, under=True)  # frames 3-5
    assert [type(e) for e in events] == [OnsetUnconfirmed] * 3
    assert [e.at_s for e in events] == pytest.approx([feed.time_of(i + 1) for i in (3, 4, 5)])
    assert [e.likelihood for e in only(events, OnsetUnconfirmed)] == pytest.approx(
        [i / 12 for i in (3, 4, 5)]
    )
    assert [e.proposed for e in only(events, OnsetUnconfirmed)] == [False] * 3
    assert feed("vvv", echo=True, under=True, gated=True) == []
    assert not feed.seg.in_speech  # the echo is never speech: only the reply's pause lets it be


class UnsureFrom(Scores):
    """Confirms every onset but those ending in frames ``unsure`` (refused at 0.05, too
    unlikely for a murmur)."""

    def __init__(self, unsure: range) -> None:
        self.unsure = unsure
        super().__init__(lambda i: 0.05 if i in self.unsure else 0.9, confirm_at=0)

    def confirm(self, pcm: bytes, start_s: float, rate: int) -> bool:
        super().confirm(pcm, start_s, rate)
        return int(np.frombuffer(pcm, dtype="<i2")[-1]) // 2 not in self.unsure


@pytest.mark.parametrize(
    ("gap", "kept_from"),
    [
        # The first voice (frames 5-16) ends with the turn at frame 22 (kept to frame 21).
        # After the gap ('v': voice the check refuses; 'e': the assistant's own sound),
        # voiced frames from the onset are refused at 0.05 until the onset window holding
        # the 8th of them; that window's first voiced frame (the 4th) is where the voice was
        # found. The pre-roll is 10 frames; going on: found within 50 frames of frame 17.
        ("." * 16, 28),  # the onset at 38, refused at 38-40, found at 41: from 38
        ("." * 12 + "vvvv" + "." * 4, 24),  # refused at 34-37 too, 120 ms before: from 34
        ("." * 6 + "vvv" + "." * 10, 22),  # ... at 28-30, 300 ms before: from 28
        ("." * 2 + "vvvv" + "." * 11, 29),  # ... 330 ms before: a gap that ends it
        ("." * 8 + "v" * 26, 25),  # refused from 30, found at 59: from 35, 700 ms before
        ("." * 44 + "vvv", 62),  # found at 72, 1650 ms after: not going on
        ("." * 8 + "vvv" + "eee" + "...", 29),  # never across the assistant's sound
    ],
    ids=[
        "refused-onsets",
        "refused-voice",
        "gap-bridged",
        "gap-ends-it",
        "reach-bounded",
        "a-new-voice",
        "after-the-assistant",
    ],
)
def test_a_voice_that_goes_on_from_the_last_utterance_keeps_the_words_the_check_refused(
    gap: str, kept_from: int
) -> None:
    """The turn ended at a pause and the user goes on: a word the check was unsure of at any
    score (jfk.flac's "ask what" after "for you", in the rig) is kept, within the longest
    pause after the last utterance (hangover_ms). Where the voice began is still where it
    was found; the silence of the pause is not kept."""
    feed = Feed()
    check = UnsureFrom(range(17, 10**6))
    config = replace(CONFIG, hangover_ms=1500)
    feed.seg = Segmenter(config, ParityDetector(), rate=RATE, frame_ms=FRAME_MS, onset_check=check)
    assert only(feed("....." + "v" * 12 + "....."), SpeechStarted)  # frames 5-16
    first = feed.seg.finish()
    assert isinstance(first, UtteranceEnded)
    assert frame_ids(first.utterance)[-1] == 21
    for run in (m.group() for m in re.finditer(r"e+|\.+|v+", gap)):
        assert only(feed(run, echo=run[0] == "e"), SpeechStarted) == []
    onset = feed.next_frame
    check.unsure = range(17, onset + 7)  # the onset window ending at onset + 7 confirms
    started = only(feed("v" * 10), SpeechStarted)
    assert [e.at_s for e in started] == [pytest.approx(feed.time_of(onset + 3))]
    ended = feed.seg.finish()
    assert isinstance(ended, UtteranceEnded)
    assert frame_ids(ended.utterance)[0] == kept_from
