"""The turn-taking machine as tables: events in, actions out. No threads, no clock, no audio."""

from __future__ import annotations

from dataclasses import replace

import pytest

from voice.audio import Utterance
from voice.end_of_turn import CombinedAnalyzer
from voice.turn_events import (
    Action,
    AgentFinished,
    Analyze,
    Answer,
    Command,
    Dropped,
    EndSegment,
    Event,
    HeardOverReply,
    Interrupt,
    KeyDown,
    KeyUp,
    PauseReply,
    PermissionAsked,
    Phase,
    PlayEarcon,
    Release,
    ReplyDone,
    ReplyIdle,
    ReplyPlaying,
    ResumeReply,
    Say,
    Send,
    SetPhase,
    StartSegment,
    StopReply,
    Tick,
    Transcribe,
    TranscriptReady,
    VerdictReady,
    WakeLikely,
    WakeWord,
)
from voice.turn_taking import HOLD_MAX_S, HOLD_QUIET_S, Mode, TurnPolicy, TurnTaking, join
from voice.vad import (
    OnsetUnconfirmed,
    SpeechDropped,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
)

RATE = 16000
ANALYZER = CombinedAnalyzer(quick_ms=300, likely_ms=800, max_ms=1500, threshold=0.5)
POLICY = TurnPolicy(mode="vad", analyzer=ANALYZER, model=True, thinking_repeat_s=4.0)


def utt(start: float, end: float) -> Utterance:
    """Audio of ``end - start`` seconds; each sample holds its own time, so joins are visible."""
    n = round((end - start) * RATE)
    pcm = bytes(n * 2)
    return Utterance(pcm=pcm, rate=RATE, start_s=start, end_s=end)


class Machine:
    """Feeds events and keeps what came out, minus phase changes unless asked."""

    def __init__(self, policy: TurnPolicy = POLICY) -> None:
        self.m = TurnTaking(policy)
        self.m.start()

    def __call__(self, *events: Event) -> list[Action]:
        out: list[Action] = []
        for event in events:
            out += self.m.handle(event)
        return out

    def quiet(self, *events: Event) -> list[Action]:
        return [a for a in self(*events) if not isinstance(a, SetPhase)]

    @property
    def phase(self) -> Phase:
        return self.m.phase


# The log's word on a reply that waited (its next sentence, a tool having run) for a request
# said meanwhile: not "nobody was talking".
WAITED_UNDER = "the request said while it waited was heard"


def paused(seg: Utterance) -> tuple[SpeechPaused, SpeechPaused]:
    """A pause as the segmenter reports it: at vad.pause_ms (120 ms in 30 ms frames), then
    at the length the end-of-turn model is asked at."""
    return SpeechPaused(seg, 0.12), SpeechPaused(seg, 0.21)


def jobs(actions: list[Action], kind: type[Transcribe] | type[Analyze]) -> list[int]:
    return [a.job for a in actions if isinstance(a, kind)]


def say_request(m: Machine, seg: Utterance, text: str, p: float | None) -> list[Action]:
    """Speech, a pause, its transcript and verdict: what the analyzer has to work with."""
    out = m(SpeechStarted(seg.start_s), *paused(seg))
    (text_job,) = jobs(out, Transcribe)
    (verdict_job,) = jobs(out, Analyze)
    return m(TranscriptReady(text_job, text), VerdictReady(verdict_job, p))


def sent(actions: list[Action]) -> Send:
    (send,) = [a for a in actions if isinstance(a, Send)]
    return send


# ---- ending a turn -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "p", "ends_after_ms"),
    [
        ("Run the test suite.", 0.94, 300),  # words and voice agree: quick
        ("Run the test suite.", 0.10, 800),  # the voice is not done: wait longer
        ("Can you run the test suite and", 0.99, 800),  # dangling word, a sure voice
        ("Can you run the test suite and", 0.94, 1500),
        ("Can you run the test suite and", 0.02, 1500),  # neither: only the longest wait
        ("Ten of clubs", 0.99, 300),  # no full stop: a sure voice decides
        ("Ten of clubs", 0.70, 800),
        ("Run the test suite.", None, 300),  # the model failed: the words decide alone
        ("Can you run the test suite and", None, 1500),
    ],
)
def test_pause_ends_the_turn_when_the_evidence_allows(
    text: str, p: float, ends_after_ms: int
) -> None:
    m = Machine()
    seg = utt(1.0, 3.0)
    say_request(m, seg, text, p)
    assert EndSegment() not in m(Tick(3.0 + (ends_after_ms - 20) / 1000))
    assert m(Tick(3.0 + (ends_after_ms + 20) / 1000)) == [EndSegment()]


@pytest.mark.parametrize(
    ("text", "avg_logprob", "p", "ends_after_ms"),
    [
        # A word or two Whisper barely made out (a murmur, a word begun) is no finished
        # request, whatever its full stop says: it waits as words that may go on do.
        ("Okay.", -1.12, 0.94, 800),
        ("Okay.", -1.12, None, 1500),  # the words decide alone
        ("Thank you.", -1.3, None, 1500),
        # Short commands heard as clearly as they usually are still end the turn at once.
        ("Stop.", -0.3, None, 300),
        ("Yes.", -0.8, 0.94, 300),
        ("List the files.", -1.3, None, 300),  # three words: their form decides
    ],
)
def test_a_word_or_two_heard_unclearly_is_not_a_finished_request(
    text: str, avg_logprob: float, p: float | None, ends_after_ms: int
) -> None:
    m = Machine()
    seg = utt(1.0, 2.0)
    out = m(SpeechStarted(1.0), *paused(seg))
    (text_job,) = jobs(out, Transcribe)
    (verdict_job,) = jobs(out, Analyze)
    m(TranscriptReady(text_job, text, avg_logprob=avg_logprob), VerdictReady(verdict_job, p))
    assert EndSegment() not in m(Tick(2.0 + (ends_after_ms - 20) / 1000))
    assert m(Tick(2.0 + (ends_after_ms + 20) / 1000)) == [EndSegment()]


def test_words_are_transcribed_at_the_first_pause_and_the_model_asked_at_its_own() -> None:
    m = Machine()
    seg = utt(1.0, 3.0)
    first, second = paused(seg)
    out = m(SpeechStarted(1.0), first)
    assert jobs(out, Transcribe) and not jobs(out, Analyze)
    out = m(second)
    assert not jobs(out, Transcribe) and jobs(out, Analyze)  # the same words: no new try
    assert m(SpeechPaused(seg, 0.3)) == []  # asked once


def test_a_complete_sentence_waits_for_the_verdict_it_will_get() -> None:
    m = Machine()
    seg = utt(1.0, 3.0)
    first, second = paused(seg)
    (text_job,) = jobs(m(SpeechStarted(1.0), first), Transcribe)
    assert m(TranscriptReady(text_job, "Run the test suite."), Tick(3.31)) == []  # not asked yet
    (verdict_job,) = jobs(m(second), Analyze)
    assert m(Tick(3.34)) == []
    assert m(VerdictReady(verdict_job, 0.99)) == [EndSegment()]  # late: the quick end is due


def test_a_pause_reported_again_from_an_earlier_end_starts_afresh() -> None:
    # The segmenter found the last frames were no voice: the pause began sooner.
    m = Machine()
    first, _ = paused(utt(1.0, 3.0))
    out = m(SpeechStarted(1.0), first)
    (old_text,) = jobs(out, Transcribe)
    out = m(SpeechPaused(utt(1.0, 2.94), 0.30))
    (text_job,) = jobs(out, Transcribe)
    (verdict_job,) = jobs(out, Analyze)
    assert text_job != old_text
    assert m(TranscriptReady(old_text, "Run the test suite."), Tick(3.5)) == []  # stale
    m(TranscriptReady(text_job, "Run the test suite."))
    assert m(VerdictReady(verdict_job, 0.99)) == [EndSegment()]  # 2.94 + 0.3 is past


def test_a_pause_first_reported_at_the_models_length_asks_both_at_once() -> None:
    m = Machine()  # vad.pause_ms of 200 or more
    out = m(SpeechStarted(1.0), SpeechPaused(utt(1.0, 3.0), 0.21))
    assert jobs(out, Transcribe) and jobs(out, Analyze)


@pytest.mark.parametrize(
    ("heard_ms", "added_ms"), [(0, 200), (120, 80), (180, 20), (200, 0), (300, 0)]
)
def test_the_model_is_asked_as_if_the_pause_were_as_long_as_it_was_measured_with(
    heard_ms: int, added_ms: int
) -> None:
    # The segmenter keeps at most 180 ms of a pause in 30 ms frames: the rest is added.
    m = Machine()
    seg = Utterance(bytes(round((2.0 + heard_ms / 1000) * RATE) * 2), RATE, 1.0, 3.0)
    out = m(SpeechStarted(1.0), *paused(seg))
    (analyze,) = [a for a in out if isinstance(a, Analyze)]
    assert analyze.audio == seg
    assert analyze.silence_s == pytest.approx(added_ms / 1000)


def test_a_request_in_parts_is_asked_about_with_the_pause_after_its_last_part() -> None:
    # Split at the length limit: the model hears both parts (joined, the silence between
    # them trimmed), and the pause after the second.
    m = Machine()
    first = utt(1.0, 28.5)
    second = Utterance(bytes(round(2.12 * RATE) * 2), RATE, 29.0, 31.0)  # 120 ms kept
    m(SpeechStarted(1.0), UtteranceEnded(first, "max_length"), SpeechStarted(29.0))
    (analyze,) = [a for a in m(*paused(second)) if isinstance(a, Analyze)]
    assert analyze.audio == join([first, second])
    assert analyze.silence_s == pytest.approx(0.08)


def test_a_request_cut_at_the_length_limit_in_its_last_pause_ends_as_the_pause_says() -> None:
    # The segmenter goes on listening into a fresh utterance, the pause with it: the evidence
    # gathered before the cut still ends the turn at the quick end, and its transcript is
    # the request's.
    m = Machine()
    seg = utt(1.0, 28.0)
    say_request(m, seg, "Refactor the store.", 0.99)
    assert m(UtteranceEnded(seg, "max_length"), SpeechStarted(28.2), Tick(28.25)) == []
    assert m(Tick(28.31)) == [EndSegment()]
    out = m(SpeechDropped(28.32))
    assert jobs(out, Transcribe) == []
    assert sent(out).text == "Refactor the store."


def test_words_after_a_cut_in_a_pause_end_that_pause() -> None:
    m = Machine()
    seg = utt(1.0, 28.0)
    say_request(m, seg, "Refactor the store.", 0.99)
    m(UtteranceEnded(seg, "max_length"), SpeechStarted(28.2))
    assert m(SpeechResumed(28.25), Tick(28.4)) == []  # not the quick end of a pause now over
    more = utt(28.2, 30.0)
    out = m(UtteranceEnded(more, "hangover"))
    (transcribe,) = [a for a in out if isinstance(a, Transcribe)]
    assert transcribe.audio == join([seg, more])  # both parts, transcribed anew
    send = sent(m(TranscriptReady(transcribe.job, "Refactor the store so it is patched.")))
    assert send.text == "Refactor the store so it is patched."


def test_a_cut_with_nothing_said_after_it_sends_every_part() -> None:
    # No pause was reported before the cut (the voice ran up to it): the hangover of the
    # fresh utterance ends the request, transcribed whole.
    m = Machine()
    seg = utt(1.0, 29.0)
    m(SpeechStarted(1.0), UtteranceEnded(seg, "max_length"), SpeechStarted(29.0))
    assert m(Tick(29.5)) == []
    (transcribe,) = [a for a in m(SpeechDropped(30.5)) if isinstance(a, Transcribe)]
    assert transcribe.audio == join([seg])
    assert sent(m(TranscriptReady(transcribe.job, "Refactor it."))).text == "Refactor it."


def test_a_pause_the_length_limit_cut_into_ends_the_turn_as_the_pause_says() -> None:
    # The cut came a few frames into the pause: the segmenter reports it with no audio of
    # the fresh utterance (voice.vad), and the parts before it are what was said.
    m = Machine()
    seg = utt(1.0, 28.9)
    m(SpeechStarted(1.0), UtteranceEnded(seg, "max_length"), SpeechStarted(29.0))
    out = m(*paused(Utterance(b"", RATE, 28.9, 28.9)))
    (transcribe,) = [a for a in out if isinstance(a, Transcribe)]
    assert transcribe.audio == seg and transcribe.purpose == "pause"
    (verdict,) = jobs(out, Analyze)
    m(TranscriptReady(transcribe.job, "Refactor the store."), VerdictReady(verdict, 0.99))
    assert m(Tick(29.21)) == [EndSegment()]  # the quick end, not the hangover
    out = m(SpeechDropped(29.22))
    assert jobs(out, Transcribe) == []
    assert sent(out).text == "Refactor the store."


def test_without_a_model_a_complete_sentence_ends_quickly() -> None:
    m = Machine(replace(POLICY, model=False))
    seg = utt(1.0, 3.0)
    out = m(SpeechStarted(1.0), *paused(seg))
    assert jobs(out, Analyze) == []
    (job,) = jobs(out, Transcribe)
    assert m(TranscriptReady(job, "Turn on the lights."), Tick(3.25)) == []
    assert m(Tick(3.31)) == [EndSegment()]


def test_the_pause_transcript_is_the_request_when_nothing_followed() -> None:
    m = Machine()
    m(HeardOverReply(True))  # its reply may be heard at once
    seg = utt(1.0, 3.0)
    say_request(m, seg, "Run the test suite.", 0.99)
    assert m(Tick(3.31)) == [EndSegment()]
    out = m(UtteranceEnded(seg, "forced"))
    assert out == [
        Send(3, "Run the test suite.", False, speech_end_s=3.0),
        Release(3),
        SetPhase(Phase.THINKING),
    ]
    assert jobs(out, Transcribe) == []  # no second transcription


def test_resumed_speech_drops_the_pause_evidence() -> None:
    m = Machine()
    say_request(m, utt(1.0, 3.0), "Refactor the store.", 0.9)
    m(SpeechResumed(3.2))
    assert m(Tick(3.5), Tick(10.0)) == []  # the old pause can no longer end the turn


def test_a_late_transcript_of_a_dropped_pause_is_ignored() -> None:
    m = Machine()
    out = m(SpeechStarted(1.0), *paused(utt(1.0, 3.0)))
    (job,) = jobs(out, Transcribe)
    m(SpeechResumed(3.2))
    assert m(TranscriptReady(job, "Refactor the store."), Tick(4.0)) == []


def pause_heard(m: Machine, seg: Utterance, text: str, p: float) -> list[Action]:
    """A later pause in the same speech, then its transcript and verdict, 0.25 s into it;
    fed one by one until the segment is ended (the loop ends it at once)."""
    out = m(*paused(seg))
    (text_job,) = jobs(out, Transcribe)
    (verdict_job,) = jobs(out, Analyze)
    out = []
    for event in (
        Tick(seg.end_s + 0.25),
        TranscriptReady(text_job, text),
        VerdictReady(verdict_job, p),
    ):
        out += m(event)
        if EndSegment() in out:
            break
    return out


SUITE = "Run the test suite."


@pytest.mark.parametrize(
    ("pauses", "ends_s"),
    [
        # a melody after the last word, taken for voice: the same words at each pause
        ([(3.6, SUITE)], 3.0),
        ([(3.6, SUITE), (4.4, SUITE)], 3.0),  # pause after pause, each soon after the last
        ([(3.6, "Run the test suite!")], 3.0),  # written differently, no new word
        ([(3.6, "Run a test sweet.")], 3.0),  # heard differently, no word more
        ([(3.6, "Run the test suite. Um")], 4.4),  # a word more, if only "um" (it dangles)
        ([(3.6, "Run the test suite and the linter.")], 3.9),  # new words: from them
        ([(6.9, SUITE)], 3.0),  # a melody Silero took for a voice for 3.7 s (in the rig)
        ([(7.5, SUITE)], 7.8),  # longer: from the later pause
        ([(3.6, "Now fix it.")], 3.9),  # new words, though fewer of them
        # fewer words than the pause before: they ended there at the earliest
        ([(3.6, "Run the test suite and the linter."), (4.2, SUITE)], 3.9),
    ],
)
def test_sound_with_no_words_after_the_last_word_does_not_put_the_end_off(
    pauses: list[tuple[float, str]], ends_s: float
) -> None:
    m = Machine()
    say_request(m, utt(1.0, 3.0), SUITE, 0.99)
    ended_s = None
    for end_s, text in pauses:
        m(SpeechResumed(end_s - 0.4))
        out = pause_heard(m, utt(1.0, end_s), text, 0.99)
        if EndSegment() in out:
            ended_s = end_s + 0.25
    for tick in range(int(pauses[-1][0] * 100) + 26, 1000):
        if ended_s is not None:
            break
        if m(Tick(tick / 100)) == [EndSegment()]:
            ended_s = tick / 100
    assert ended_s is not None and ended_s == pytest.approx(max(ends_s, pauses[-1][0] + 0.25))


@pytest.mark.parametrize(("mode", "ends_s"), [("vad", 3.85), ("wake", 3.85), ("ptt-toggle", 3.9)])
def test_only_hands_free_does_a_sound_with_no_words_not_put_the_end_off(
    mode: Mode, ends_s: float
) -> None:
    """With a key, the microphone closes as the turn ends: words after it would be lost."""
    m = Machine(replace(POLICY, mode=mode))
    m(KeyDown(1.0) if mode == "ptt-toggle" else WakeWord(1.0) if mode == "wake" else Tick(1.0))
    say_request(m, utt(1.0, 3.0), SUITE, 0.99)
    m(SpeechResumed(3.2))
    ended = EndSegment() in pause_heard(m, utt(1.0, 3.6), SUITE, 0.99)
    assert ended is (ends_s < 3.9)
    if not ended:
        assert m(Tick(3.89)) == [] and m(Tick(3.9)) == [EndSegment()]


@pytest.mark.parametrize("heard_over_reply", [True, False])
def test_a_reply_waits_from_the_last_word_where_words_said_over_it_are_heard(
    heard_over_reply: bool,
) -> None:
    """Half-duplex, it waits from the later pause (the longest pause, 1.5 s): had Whisper
    lost the user's last words, words said over the reply would be lost too."""
    m = Machine()
    m(HeardOverReply(heard_over_reply))
    say_request(m, utt(1.0, 3.0), SUITE, 0.99)
    m(SpeechResumed(3.2))
    assert pause_heard(m, utt(1.0, 3.6), SUITE, 0.99) == [EndSegment()]
    (again,) = m.quiet(UtteranceEnded(utt(1.0, 3.6), "forced"))
    assert isinstance(again, Transcribe) and again.purpose == "whole"  # in case it lost words
    out = m.quiet(TranscriptReady(again.job, SUITE))
    send = sent(out)
    assert send.text == SUITE and send.speech_end_s == 3.6
    if heard_over_reply:  # due 0.3 s after the last word: at once
        assert Release(send.turn) in out
    else:
        assert Release(send.turn) not in out + m(Tick(5.05))
        assert m.quiet(Tick(5.15)) == [Release(send.turn)]


# ---- no word is lost -----------------------------------------------------------------------


WHOLE = utt(1.0, 8.0)  # "Go forward ten meters. [250 ms] And Mr. John Dashwood ..."
BOTH = "Go forward ten meters. And Mr. John Dashwood had then leisure."


def two_sentences(m: Machine, heard: str, *, late: bool = False) -> list[Action]:
    """WHOLE, one segment: its first pause transcribed (before speech resumes, or ``late``:
    after), then its end, heard as ``heard`` by a sure voice; what ending it did."""
    (first,) = jobs(m(SpeechStarted(1.0), SpeechPaused(utt(1.0, 2.5), 0.12)), Transcribe)
    if not late:
        m(TranscriptReady(first, "Go forward ten meters."))
    m(SpeechResumed(2.75))
    if late:
        m(TranscriptReady(first, "Go forward ten meters."))
    out = m(*paused(WHOLE))
    (text_job,) = jobs(out, Transcribe)
    (verdict_job,) = jobs(out, Analyze)
    m(TranscriptReady(text_job, heard), VerdictReady(verdict_job, 0.99))
    assert m(Tick(8.31)) == [EndSegment()]
    return m.quiet(UtteranceEnded(WHOLE, "forced"))


@pytest.mark.parametrize("late", [False, True], ids=["before-resuming", "late"])
def test_a_request_whose_transcript_ended_early_is_heard_again_whole(late: bool) -> None:
    # tiny.en can end a request of several sentences after the first (live, real voices:
    # "Go forward 10 meters." and the seven-second sentence after it was gone)
    m = Machine()
    out = two_sentences(m, "Go forward ten meters.", late=late)
    (again,) = [a for a in out if isinstance(a, Transcribe)]
    assert out == [again] and again.purpose == "whole"  # nothing sent yet
    assert again.audio == WHOLE
    send = sent(m(TranscriptReady(again.job, BOTH)))
    assert send.text == BOTH and send.speech_end_s == 8.0


@pytest.mark.parametrize(
    ("end_s", "again"), [(8.0, False), (8.05, False), (8.1, True), (8.15, True), (8.2, True)]
)
def test_a_breath_after_the_last_word_is_no_sign_that_the_transcript_ended_early(
    end_s: float, again: bool
) -> None:
    """Every word was heard at a pause 0.3 s before the end (at a desk in the rig: a breath
    webrtcvad took for voice), so the same words at the end are the request; from 0.4 s
    after it, a word could follow, and the request is heard again whole."""
    m = Machine()
    text = "And Mr. John Dashwood had then leisure."
    (first,) = jobs(m(SpeechStarted(1.0), SpeechPaused(utt(1.0, 7.7), 0.12)), Transcribe)
    m(TranscriptReady(first, text), SpeechResumed(7.85))
    whole = utt(1.0, end_s)
    out = m(*paused(whole))
    (text_job,) = jobs(out, Transcribe)
    (verdict_job,) = jobs(out, Analyze)
    m(TranscriptReady(text_job, text), VerdictReady(verdict_job, 0.99))
    assert m(Tick(end_s + 0.31)) == [EndSegment()]
    out = m.quiet(UtteranceEnded(whole, "forced"))
    if again:
        assert [a.purpose for a in out if isinstance(a, Transcribe)] == ["whole"]
    else:
        assert sent(out).text == text and jobs(out, Transcribe) == []


def test_a_second_hearing_with_fewer_words_does_not_replace_the_first() -> None:
    m = Machine()
    (again,) = jobs(two_sentences(m, "Go forward ten meters."), Transcribe)
    assert sent(m(TranscriptReady(again, ""))).text == "Go forward ten meters."


def test_a_whole_transcript_with_more_words_than_its_pauses_is_the_request() -> None:
    out = two_sentences(Machine(), BOTH)
    assert sent(out).text == BOTH and jobs(out, Transcribe) == []


def test_speech_during_the_second_hearing_hears_the_request_anew() -> None:
    m = Machine()
    (again,) = jobs(two_sentences(m, "Go forward ten meters."), Transcribe)
    more = utt(8.6, 9.5)
    m(SpeechStarted(8.6))
    assert m(TranscriptReady(again, "And Mr.")) == []  # stale: the request went on
    (final,) = jobs(m(UtteranceEnded(more, "hangover")), Transcribe)
    out = m(TranscriptReady(final, "Go forward ten meters. And Mr. John Dashwood. Now."))
    assert sent(out).text == "Go forward ten meters. And Mr. John Dashwood. Now."


def test_speech_resuming_while_transcribing_is_joined_and_transcribed_once() -> None:
    m = Machine()
    first, second = utt(1.0, 3.0), utt(3.9, 6.0)
    out = m(SpeechStarted(1.0), UtteranceEnded(first, "hangover"))
    (stale,) = jobs(out, Transcribe)
    assert m.phase is Phase.TRANSCRIBING
    m(SpeechStarted(3.9))
    assert m.phase is Phase.LISTENING
    assert m(TranscriptReady(stale, "Refactor the store so that")) == []  # never sent
    out = m(UtteranceEnded(second, "hangover"))
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.purpose == "request"
    assert final.audio == join([first, second])
    out = m(TranscriptReady(final.job, "Refactor the store so that the index is patched."))
    assert sent(out).text == "Refactor the store so that the index is patched."
    assert not sent(out).revises and sent(out).speech_end_s == 6.0


def test_speech_resuming_after_the_agent_started_interrupts_and_revises() -> None:
    m = Machine()
    first, second = utt(1.0, 3.0), utt(3.9, 7.0)
    out = m(SpeechStarted(1.0), UtteranceEnded(first, "hangover"))
    (job,) = jobs(out, Transcribe)
    turn = sent(m(TranscriptReady(job, "Refactor the store so that"))).turn
    # The agent works on the first half; the reply has not played yet. Its words decide.
    assert m.quiet(SpeechStarted(3.9)) == []
    out = m(UtteranceEnded(second, "hangover"))
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.audio == join([first, second]) and final.purpose == "request"
    text = "Refactor the store so that the index is patched in place."
    out = m.quiet(TranscriptReady(final.job, text))
    assert out[:2] == [StopReply(turn), Interrupt(turn)]  # new words: the turn stops now
    send = sent(out)
    assert send.text == text and send.revises and send.turn != turn
    # The interrupted turn winds down silently.
    assert m.quiet(AgentFinished(turn, "interrupted"), ReplyDone(turn)) == []


def going_on(m: Machine, first: str = "Run the tests.", at_s: float = 3.5) -> int:
    """A request sent at 3.0 s (its reply released at once), and speech from ``at_s`` on."""
    out = m(SpeechStarted(1.0), UtteranceEnded(utt(1.0, 3.0), "hangover"))
    out = m(TranscriptReady(jobs(out, Transcribe)[0], first))
    assert m.quiet(SpeechStarted(at_s)) == []  # its words decide
    return sent(out).turn


def test_a_short_continuation_is_checked_for_stop_first() -> None:
    m = Machine()
    turn = going_on(m, "Delete the build folder.")
    out = m(UtteranceEnded(utt(3.5, 4.0), "hangover"))
    (probe,) = [a for a in out if isinstance(a, Transcribe)]
    assert probe.purpose == "probe" and probe.audio == utt(3.5, 4.0)
    assert m.quiet(TranscriptReady(probe.job, "Stop!")) == [StopReply(turn), Interrupt(turn)]
    assert m.quiet(AgentFinished(turn, "interrupted")) == [Say("Stopped.")]
    assert m.quiet(ReplyDone(turn)) == [PlayEarcon("listening")]
    assert m.phase is Phase.LISTENING


def test_a_continuation_ended_at_its_pause_is_checked_for_stop_on_its_own_words() -> None:
    """The pause transcript covers the whole request, so it cannot say whether the words
    added were "stop": those are transcribed on their own."""
    m = Machine()
    turn = going_on(m, "Delete the build folder.")  # the reply has not played: it goes on
    more = utt(3.5, 4.0)
    say_request(m, more, "Delete the build folder. Stop!", 0.99)
    assert m(Tick(4.31)) == [EndSegment()]
    (probe,) = [a for a in m(UtteranceEnded(more, "forced")) if isinstance(a, Transcribe)]
    assert probe.purpose == "probe" and probe.audio == more
    assert m.quiet(TranscriptReady(probe.job, "Stop!")) == [StopReply(turn), Interrupt(turn)]
    assert m.quiet(AgentFinished(turn, "interrupted")) == [Say("Stopped.")]


def answer_all(m: Machine, out: list[Action], texts: tuple[str, ...]) -> list[Action]:
    """Answer the transcriptions asked for, one after another, with ``texts``: what else
    the machine did meanwhile."""
    done: list[Action] = []
    for text in texts:
        (job,) = jobs(out, Transcribe)
        out = m.quiet(TranscriptReady(job, text))
        done += [a for a in out if not isinstance(a, Transcribe)]
    assert not jobs(out, Transcribe), out
    return done


# What Whisper hears of a sound going on with "Run the tests.": alone (the probe), then, if
# asked, joined to the request.
HUM = ("Mm-hmm.",)
NOTHING = ("", "Run the tests.")


@pytest.mark.parametrize("heard", [HUM, NOTHING])
def test_a_sound_that_goes_on_with_the_request_before_its_reply_changes_nothing(
    heard: tuple[str, ...],
) -> None:
    """ "Mm-hmm", a cough or music before the reply plays (the request going on, by its
    timing): the agent is not interrupted, and its reply plays once it is due."""
    m = Machine()
    turn = going_on(m)
    out = answer_all(m, m(UtteranceEnded(utt(3.5, 4.0), "hangover")), heard)
    out += m.quiet(Tick(5.6))
    assert not [a for a in out if isinstance(a, StopReply | Interrupt | Send)], out
    assert m.quiet(ReplyPlaying(turn)) == []  # and it plays when it comes


@pytest.mark.parametrize("looped", [True, False])
def test_a_word_whisper_looped_on_in_a_sound_going_on_with_the_request_is_no_word(
    looped: bool,
) -> None:
    """Over a melody Whisper can loop on a word ("So, so, so, ..."), cut down to "So,": no
    words of the sound's own, so the joined transcript decides (it has none either)."""
    m = Machine()
    turn = going_on(m)
    (probe,) = jobs(m(UtteranceEnded(utt(3.5, 5.5), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, "So,", looped=looped))
    if not looped:  # a word said on its own: the turn is stopped for it
        assert Interrupt(turn) in out
        return
    assert not [a for a in out if isinstance(a, StopReply | Interrupt)], out
    (joined,) = jobs(out, Transcribe)
    out = m.quiet(TranscriptReady(joined, "Run the tests."), Tick(6.0))
    assert not [a for a in out if isinstance(a, StopReply | Interrupt | Send)], out
    assert m.quiet(ReplyPlaying(turn)) == []  # its reply plays when it comes


def test_a_word_whisper_looped_on_in_a_long_sound_going_on_with_the_request_is_no_word() -> None:
    """A sound of 2.5 s or more is heard joined to the request first; its new part alone
    only if the joined transcript has no more words ("So, so, so, ..." over a melody)."""
    m = Machine()
    turn = going_on(m)
    (joined,) = jobs(m(UtteranceEnded(utt(3.5, 8.5), "hangover")), Transcribe)
    (alone,) = jobs(m.quiet(TranscriptReady(joined, "Run the tests.")), Transcribe)
    out = m.quiet(TranscriptReady(alone, "So", looped=True), Tick(9.0))
    assert not [a for a in out if isinstance(a, StopReply | Interrupt | Send)], out
    assert m.quiet(ReplyPlaying(turn)) == []  # its reply plays when it comes


def test_stop_said_over_and_over_in_speech_going_on_with_the_request_still_stops() -> None:
    m = Machine()
    turn = going_on(m, "Delete the build folder.")
    (probe,) = jobs(m(UtteranceEnded(utt(3.5, 5.0), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, "Stop,", looped=True))  # "stop, stop, stop, ..."
    assert out == [StopReply(turn), Interrupt(turn)]
    assert m.quiet(AgentFinished(turn, "interrupted")) == [Say("Stopped.")]


def test_only_the_new_speech_heard_alone_is_taken_for_a_loop() -> None:
    """The joined transcript has the request's words too: looped or not, its new words
    count."""
    m = Machine()
    turn = going_on(m, "Continue.")
    (probe,) = jobs(m(UtteranceEnded(utt(3.5, 5.5), "hangover")), Transcribe)
    (joined,) = jobs(m.quiet(TranscriptReady(probe, "Please,", looped=True)), Transcribe)
    out = m.quiet(TranscriptReady(joined, "Continue. Please,", looped=True))
    assert Interrupt(turn) in out and sent(out).text == "Continue. Please,"


@pytest.mark.parametrize(
    ("heard", "stopped"),
    [
        (HUM, False),
        (NOTHING, False),
        (("In verbose mode.", "Run the tests in verbose mode."), True),
    ],
)
def test_a_reply_that_begins_while_the_user_goes_on_waits_for_their_words(
    heard: tuple[str, ...], stopped: bool
) -> None:
    """The reply was released at once (a sure end) and begins as the user goes on: it is
    paused at once; words stop it and the agent, a hum or a sound lets it go on."""
    m = Machine()
    out = m(SpeechStarted(1.0), UtteranceEnded(utt(1.0, 3.0), "hangover"))
    out = m(TranscriptReady(jobs(out, Transcribe)[0], "Run the tests."))
    turn = sent(out).turn
    assert Release(turn) in out
    assert m.quiet(SpeechStarted(3.5)) == []
    assert m.quiet(ReplyPlaying(turn, 3.6)) == [PauseReply(turn)]
    out = answer_all(m, m(UtteranceEnded(utt(3.5, 4.0), "hangover")), heard)
    if stopped:
        assert out[:2] == [StopReply(turn), Interrupt(turn)]
        assert sent(out).text == "Run the tests in verbose mode." and sent(out).revises
    else:
        assert out == [ResumeReply(turn)]


@pytest.mark.parametrize(
    ("at_pause", "stops_now"),
    [
        ("Run the tests. Mm-hmm.", False),  # the old words and a hum: nothing new
        ("Run the test. Mm-hmm.", False),  # the old words written a little differently
        ("Run the tests. Stop.", False),  # heard on its own, below
        ("Run the tests in verbose mode", True),  # new words: no need to wait for the end
    ],
)
def test_the_words_at_a_pause_of_the_speech_going_on_decide_only_when_they_are_new(
    at_pause: str, stops_now: bool
) -> None:
    m = Machine()
    turn = going_on(m)
    out = say_request(m, utt(3.5, 4.2), at_pause, 0.1)
    assert (Interrupt(turn) in out) is stops_now, out
    assert stops(out, turn) is stops_now, out


def test_a_reply_paused_for_the_speech_going_on_waits_8_s_at_most() -> None:
    """Whatever is said, the reply must not play over the user (the speaker resumes a pause
    by itself after 10 s): after HOLD_MAX_S the turn stops, and what is said revises it."""
    m = Machine()
    turn = going_on(m)
    assert m.quiet(ReplyPlaying(turn, 3.6)) == [PauseReply(turn)]
    assert m.quiet(Tick(11.0)) == []
    assert m.quiet(Tick(11.6)) == [StopReply(turn), Interrupt(turn)]


def test_a_stop_key_while_the_user_goes_on_stops_the_turn_and_keeps_the_new_words() -> None:
    m = Machine()
    turn = going_on(m)
    assert m.quiet(Command("stop")) == [StopReply(turn), Interrupt(turn)]
    out = answer_all(m, m(UtteranceEnded(utt(3.5, 4.5), "hangover")), ("Read the log.",))
    assert not [a for a in out if isinstance(a, Interrupt | Send)], out
    assert m.quiet(AgentFinished(turn, "interrupted")) == [Say("Stopped.")]
    send = sent(m(ReplyDone(turn)))
    assert send.text == "Read the log." and not send.revises  # the stopped request is not


@pytest.mark.parametrize("ended", [False, True])
def test_a_stop_key_drops_what_was_heard_joined_to_the_stopped_request(ended: bool) -> None:
    """Transcripts of the new words joined to the old request may be on their way when the
    key stops it: they are not the new request, which is heard alone."""
    m = Machine()
    turn = going_on(m)
    more = utt(3.5, 6.5)  # long: its end is transcribed joined to the request
    out = m(UtteranceEnded(more, "hangover")) if ended else m(*paused(more))
    (joined,) = jobs(out, Transcribe)
    out = m.quiet(Command("stop"))
    assert out[:2] == [StopReply(turn), Interrupt(turn)]
    assert m.quiet(TranscriptReady(joined, "Run the tests. Read the log.")) == []
    if not ended:
        out = m(UtteranceEnded(more, "hangover"))
    (alone,) = [a for a in out if isinstance(a, Transcribe)]
    assert alone.audio == more
    assert m.quiet(TranscriptReady(alone.job, "Read the log.")) == []  # queued behind it
    assert m.quiet(AgentFinished(turn, "interrupted")) == [Say("Stopped.")]
    send = sent(m(ReplyDone(turn)))
    assert send.text == "Read the log." and not send.revises


@pytest.mark.parametrize("how", ["said", "key"])
def test_words_after_a_stop_are_a_new_request_not_the_stopped_one_again(how: str) -> None:
    """The stopped turn winds down (its reply unheard): new speech meanwhile does not go on
    with the request the user stopped, which would run it again."""
    m = Machine()
    turn = started_turn(m, "Delete the build folder.")
    if how == "said":
        m(Tick(3.5), SpeechStarted(3.5))
        (probe,) = jobs(m(UtteranceEnded(utt(3.5, 3.9), "hangover")), Transcribe)
        assert m.quiet(TranscriptReady(probe, "Stop!")) == [StopReply(turn), Interrupt(turn)]
    else:
        m(Tick(3.9))
        assert m.quiet(Command("stop")) == [StopReply(turn), Interrupt(turn)]
    assert m.quiet(Tick(4.6), SpeechStarted(4.6)) == []
    out = m(UtteranceEnded(utt(4.6, 6.4), "hangover"))
    (alone,) = [a for a in out if isinstance(a, Transcribe)]
    assert alone.audio == utt(4.6, 6.4)  # heard alone, not joined to the stopped request
    assert m.quiet(TranscriptReady(alone.job, "List the files instead.")) == []  # queued
    assert m.quiet(AgentFinished(turn, "interrupted")) == [Say("Stopped.")]
    send = sent(m(ReplyDone(turn)))
    assert send.text == "List the files instead." and not send.revises


def test_words_after_a_stop_of_a_finished_agent_are_a_new_request() -> None:
    """The agent was done and its reply not yet heard: "stop" silences it, and what is said
    before it has wound down is a request of its own."""
    m = Machine()
    turn = started_turn(m, "Delete the build folder.")
    m(AgentFinished(turn, "answered"))
    assert m.quiet(Command("stop")) == [StopReply(turn), Say("Stopped.")]
    assert m.quiet(SpeechStarted(4.6)) == []
    (alone,) = jobs(m(UtteranceEnded(utt(4.6, 6.4), "hangover")), Transcribe)
    assert m.quiet(TranscriptReady(alone, "List the files instead.")) == []
    send = sent(m(ReplyDone(turn)))
    assert send.text == "List the files instead." and not send.revises


def test_speech_soon_after_a_hum_that_paused_the_reply_still_goes_on_with_the_request() -> None:
    """The reply was paused at its first sample for the hum: its first second, in which
    speech goes on with the request, begins when it resumes."""
    m = Machine()
    m(HeardOverReply(True))
    turn = going_on(m)
    assert m.quiet(ReplyPlaying(turn, 3.6)) == [PauseReply(turn)]
    out = m(UtteranceEnded(utt(3.5, 3.9), "hangover"), Tick(4.4))
    assert answer_all(m, out, HUM) == [ResumeReply(turn)]
    m(Tick(4.7))
    assert m.quiet(SpeechStarted(4.7)) == [PauseReply(turn)]
    assert_joins(m, turn, 4.7, joins=True)


def test_a_turn_over_while_a_sound_went_on_with_it_opens_the_microphone_after() -> None:
    m = Machine()
    turn = going_on(m)
    # (not over the sound: its cue waits for the sound to come to nothing)
    assert m.quiet(AgentFinished(turn, "answered"), ReplyDone(turn)) == []
    out = answer_all(m, m(UtteranceEnded(utt(3.5, 3.9), "hangover")), HUM)
    assert out == [PlayEarcon("done"), PlayEarcon("listening")]
    assert m.phase is Phase.LISTENING


def test_a_short_continuation_with_words_is_joined() -> None:
    m = Machine()
    first, more = utt(1.0, 3.0), utt(3.5, 4.5)
    out = m(SpeechStarted(1.0), UtteranceEnded(first, "hangover"))
    m(TranscriptReady(jobs(out, Transcribe)[0], "Run the tests"))
    m(SpeechStarted(3.5))
    (probe,) = jobs(m(UtteranceEnded(more, "hangover")), Transcribe)
    out = m(TranscriptReady(probe, "in verbose mode."))
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.audio == join([first, more])


FIRST = utt(1.0, 3.0)  # "Run the tests.", sent before the user goes on


def goes_on(m: Machine, more: Utterance, first: str = "Run the tests.") -> tuple[int, list[int]]:
    """``first`` is sent, then the user goes on with ``more``: the turn sent, and the
    transcriptions the end of ``more`` asks for."""
    turn = going_on(m, first, more.start_s)
    return turn, jobs(m(UtteranceEnded(more, "hangover")), Transcribe)


@pytest.mark.parametrize(
    ("joined", "alone", "sent_text"),
    [
        # Whisper ended the joined audio where the first request ended: the new words
        # alone follow it.
        ("Run the tests.", "In verbose mode.", "Run the tests. In verbose mode."),
        ("Run the tests", "In verbose mode.", "Run the tests. In verbose mode."),
        ("", "In verbose mode.", "Run the tests. In verbose mode."),
        ("", "", ""),  # nothing heard either way: the turn goes on, nothing is sent
    ],
)
def test_new_words_the_joined_transcript_dropped_are_heard_alone(
    joined: str, alone: str, sent_text: str
) -> None:
    m, more = Machine(), utt(3.9, 7.0)
    turn, (final,) = goes_on(m, more)
    out = m.quiet(TranscriptReady(final, joined))
    (tail,) = [a for a in out if isinstance(a, Transcribe)]
    assert tail.audio == more and tail.purpose == "request" and out == [tail]
    out = m.quiet(TranscriptReady(tail.job, alone))
    if not sent_text:  # no new words: the turn it would revise goes on
        assert out == []
        return
    assert out[:2] == [StopReply(turn), Interrupt(turn)]
    send = sent(out)
    assert send.text == sent_text and send.revises and send.turn != turn


@pytest.mark.parametrize(
    ("alone", "sent_text"),
    [
        ("", "Run the tests in verbose mode and"),  # only the pause heard the new words
        ("Verbose.", "Run the tests in verbose mode and"),  # the pause heard more
        ("In verbose mode and the linter.", "Run the tests. In verbose mode and the linter."),
    ],
)
def test_new_words_heard_at_a_pause_stand_when_the_later_transcripts_lose_them(
    alone: str, sent_text: str
) -> None:
    # The pause heard new words (the agent is stopped at once); then the joined transcript
    # ends where the request it continues ended, and the new words alone come back short.
    m, more = Machine(), utt(3.9, 7.5)
    turn = going_on(m, at_s=3.9)
    out = m(*paused(utt(3.9, 5.5)))
    (at_pause,), (verdict,) = jobs(out, Transcribe), jobs(out, Analyze)
    out = m.quiet(
        TranscriptReady(at_pause, "Run the tests in verbose mode and"), VerdictReady(verdict, 0.1)
    )
    assert out == [StopReply(turn), Interrupt(turn)]
    m(SpeechResumed(5.9))
    (final,) = jobs(m(UtteranceEnded(more, "hangover")), Transcribe)
    (tail,) = jobs(m(TranscriptReady(final, "Run the tests.")), Transcribe)
    send = sent(m(TranscriptReady(tail, alone)))
    assert send.text == sent_text and send.revises and send.turn != turn


def test_numbers_count_as_words_when_a_joined_transcript_is_checked() -> None:
    # Live: "10 of close" was sent, the user went on with a long sentence, and the joined
    # audio came back as "Ten of Clovs.": as many words, none of them new
    m, more = Machine(), utt(3.9, 11.0)
    _, (final,) = goes_on(m, more, first="10 of close")
    (tail,) = jobs(m.quiet(TranscriptReady(final, "Ten of Clovs.")), Transcribe)
    send = sent(m(TranscriptReady(tail, "And Mr. John Dashwood had then leisure.")))
    assert send.text == "10 of close And Mr. John Dashwood had then leisure."


def test_a_joined_transcript_with_more_words_is_the_request() -> None:
    m = Machine()
    _, (final,) = goes_on(m, utt(3.9, 7.0))
    out = m(TranscriptReady(final, "Run the tests in verbose mode."))
    assert sent(out).text == "Run the tests in verbose mode." and jobs(out, Transcribe) == []


def test_a_short_continuation_dropped_from_the_joined_transcript_uses_its_probe() -> None:
    """The words of a short continuation were transcribed alone (is it "stop"?): when the
    joined transcript drops them, those follow the request, with no third transcription."""
    m = Machine()
    _, (probe,) = goes_on(m, utt(3.5, 4.5))
    (final,) = jobs(m(TranscriptReady(probe, "In verbose mode.")), Transcribe)
    out = m(TranscriptReady(final, "Run the tests."))
    assert sent(out).text == "Run the tests. In verbose mode." and jobs(out, Transcribe) == []


def test_speech_during_the_second_hearing_joins_the_request_anew() -> None:
    m, more, again = Machine(), utt(3.9, 7.0), utt(7.5, 9.0)
    _, (final,) = goes_on(m, more)
    (tail,) = jobs(m(TranscriptReady(final, "Run the tests.")), Transcribe)
    m(SpeechStarted(7.5))
    assert m.quiet(TranscriptReady(tail, "In verbose mode.")) == []  # stale
    (last,) = [a for a in m(UtteranceEnded(again, "hangover")) if isinstance(a, Transcribe)]
    assert last.audio == join([FIRST, more, again])
    text = "Run the tests in verbose mode, please."
    assert sent(m(TranscriptReady(last.job, text))).text == text


def test_a_cough_after_the_turn_ended_leaves_the_turn_alone() -> None:
    m = Machine()
    turn = going_on(m)
    assert m.quiet(SpeechDropped(3.7)) == []  # not interrupted, nothing sent again
    assert m.quiet(ReplyPlaying(turn), AgentFinished(turn, "answered")) == []  # it plays


def test_segments_split_at_the_length_limit_are_one_request() -> None:
    m = Machine()
    parts = [utt(0.0, 28.0), utt(28.0, 56.0), utt(56.3, 60.0)]
    m(SpeechStarted(0.0), UtteranceEnded(parts[0], "max_length"))
    m(SpeechStarted(28.0), UtteranceEnded(parts[1], "max_length"))
    assert m.phase is Phase.LISTENING
    m(SpeechStarted(56.3))
    (final,) = [a for a in m(UtteranceEnded(parts[2], "hangover")) if isinstance(a, Transcribe)]
    assert final.audio == join(parts) and final.audio.duration_s == pytest.approx(59.7)


def test_nothing_heard_sends_nothing() -> None:
    m = Machine()
    out = m(SpeechStarted(1.0), UtteranceEnded(utt(1.0, 2.0), "hangover"))
    assert m.quiet(TranscriptReady(jobs(out, Transcribe)[0], "")) == []
    assert m.phase is Phase.LISTENING
    assert m.quiet(SpeechStarted(3.0), SpeechDropped(3.2)) == []


# ---- while the agent works -----------------------------------------------------------------


def started_turn(m: Machine, text: str = "Run the tests.") -> int:
    out = m(SpeechStarted(1.0), UtteranceEnded(utt(1.0, 3.0), "hangover"))
    return sent(m(TranscriptReady(jobs(out, Transcribe)[0], text))).turn


def test_the_thinking_cue_plays_until_the_reply_and_again_while_tools_run() -> None:
    m = Machine()
    turn = started_turn(m)
    assert m.quiet(Tick(3.1)) == [PlayEarcon("thinking")]
    assert m.quiet(Tick(5.0)) == []
    assert m.quiet(Tick(7.2)) == [PlayEarcon("thinking")]
    out = m(ReplyPlaying(turn))
    assert out == [SetPhase(Phase.SPEAKING)]
    assert m.quiet(Tick(12.0)) == []  # never over the reply
    assert m(ReplyIdle(turn)) == [SetPhase(Phase.THINKING)]  # a tool runs
    assert m.quiet(Tick(15.0)) == []
    assert m.quiet(Tick(16.1)) == [PlayEarcon("thinking")]
    m(ReplyPlaying(turn))
    assert m.quiet(AgentFinished(turn, "answered")) == []
    assert m(ReplyDone(turn)) == [
        PlayEarcon("done"),
        PlayEarcon("listening"),
        SetPhase(Phase.LISTENING),
    ]


def test_a_thinking_cue_set_to_play_once_is_not_repeated_while_tools_run() -> None:
    m = Machine(replace(POLICY, thinking_repeat_s=0.0))  # earcons.thinking_repeat_s = 0
    turn = started_turn(m)
    assert m.quiet(Tick(3.1)) == [PlayEarcon("thinking")]
    assert m.quiet(Tick(7.2)) == []
    m(ReplyPlaying(turn), ReplyIdle(turn))  # a sentence, then a tool runs
    assert m.quiet(Tick(16.1), Tick(40.0)) == []


def test_an_agent_that_answers_after_stop_was_said_gets_no_done_cue() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn))
    m(SpeechStarted(9.0))
    probe = jobs(m(UtteranceEnded(utt(9.0, 9.6), "hangover")), Transcribe)[0]
    assert m.quiet(TranscriptReady(probe, "Stop.")) == [StopReply(turn), Interrupt(turn)]
    # Its last words were already on their way: it ends "answered", not "interrupted".
    assert m.quiet(AgentFinished(turn, "answered")) == [Say("Stopped.")]
    assert m.quiet(ReplyDone(turn)) == [PlayEarcon("listening")]


def turn_ends_as_the_user_speaks(m: Machine, event: str) -> tuple[int, list[Action]]:
    """A sentence, a tool runs (stopped, for "stopped"), the user speaks from 9.0 s, and
    then the turn ends or asks a question: what that plays."""
    turn = started_turn(m)
    m(ReplyPlaying(turn), Tick(4.5), ReplyIdle(turn))
    if event == "stopped":
        assert m.quiet(Command("stop")) == [StopReply(turn), Interrupt(turn)]
    m(Tick(9.0), SpeechStarted(9.0))
    if event == "question":
        return turn, m.quiet(PermissionAsked(turn, "r1"))
    outcome = "interrupted" if event == "stopped" else "answered"
    return turn, m.quiet(Tick(9.6), AgentFinished(turn, outcome), ReplyDone(turn))


HELD_CUES = {
    "turn over": [PlayEarcon("done")],
    "stopped": [Say("Stopped.")],
    "question": [],  # (its cue is played by the Tick after)
}


@pytest.mark.parametrize("event", ["turn over", "stopped", "question"])
def test_no_cue_or_line_plays_over_the_users_words_and_plays_if_they_came_to_nothing(
    event: str,
) -> None:
    """Half-duplex a sound of the assistant's own gates the microphone: the silence it leaves
    in the user's words can end their request, or lose words, as the thinking cue would."""
    m = Machine()
    _, out = turn_ends_as_the_user_speaks(m, event)
    assert not [a for a in out if isinstance(a, PlayEarcon | Say)], out
    out = m.quiet(SpeechDropped(9.3))  # a cough: how the turn ended is still news
    listening = [PlayEarcon("listening")] if event != "question" else []
    assert out == HELD_CUES[event] + listening
    assert m.quiet(Tick(9.4)) == ([PlayEarcon("listening")] if event == "question" else [])


@pytest.mark.parametrize("event", ["turn over", "stopped", "question"])
def test_a_cue_held_over_a_request_is_dropped_once_it_is_sent(event: str) -> None:
    """What they said is the next turn: "done" or "Stopped." after it would seem to be about
    it. The question still waits for its answer: its cue plays once the words are heard."""
    m = Machine()
    turn, out = turn_ends_as_the_user_speaks(m, event)
    assert not [a for a in out if isinstance(a, PlayEarcon | Say)], out
    (probe,) = jobs(m(UtteranceEnded(utt(9.0, 10.0), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, "Run the linter."), Tick(10.2))
    if event == "question":
        assert out == [PlayEarcon("listening")]  # the request is queued behind the turn
        return
    assert [a for a in out if isinstance(a, PlayEarcon | Say)] == [PlayEarcon("thinking")]
    assert sent(out).text == "Run the linter." and sent(out).turn != turn


def test_the_thinking_cue_waits_for_an_onset_not_yet_confirmed() -> None:
    m = Machine()
    started_turn(m)
    m(OnsetUnconfirmed(3.0, likelihood=0.4))  # the first frames of a word, maybe
    assert m.quiet(Tick(3.1)) == []  # gated by its own cue, the word would be lost
    assert m.quiet(Tick(3.35)) == [PlayEarcon("thinking")]  # it came to nothing
    m(OnsetUnconfirmed(7.1, likelihood=0.4), SpeechStarted(7.1), Tick(7.2))
    assert m.quiet(Tick(7.3)) == []  # a word after all: the user is speaking


def test_stop_said_after_the_reply_began_interrupts_the_agent() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn))  # a sentence, then a long tool run
    m(SpeechStarted(9.0))
    assert m.phase is Phase.LISTENING
    (probe,) = [
        a for a in m(UtteranceEnded(utt(9.0, 9.6), "hangover")) if isinstance(a, Transcribe)
    ]
    assert probe.purpose == "probe"
    assert m.quiet(TranscriptReady(probe.job, "Stop.")) == [StopReply(turn), Interrupt(turn)]
    assert m.quiet(AgentFinished(turn, "interrupted")) == [Say("Stopped.")]
    assert m.quiet(ReplyDone(turn)) == [PlayEarcon("listening")]


def test_a_finished_turn_stopped_as_its_reply_plays_says_stopped_and_no_done() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), AgentFinished(turn, "answered"))
    assert m.quiet(Command("stop")) == [StopReply(turn), Say("Stopped.")]
    assert m.quiet(ReplyDone(turn)) == [PlayEarcon("listening")]  # no "done" after "Stopped."


def test_a_new_request_during_a_heard_turn_waits_for_it() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn))
    # The reply's next sentence does not begin over the user (half-duplex it would gate the
    # microphone over their words) ...
    assert m.quiet(SpeechStarted(9.0)) == [PauseReply(turn)]
    probe = jobs(m(UtteranceEnded(utt(9.0, 11.0), "hangover")), Transcribe)[0]
    # ... until their words are heard: queued, and the reply goes on.
    assert m.quiet(TranscriptReady(probe, "Also update the README.")) == [
        ResumeReply(turn, why=WAITED_UNDER)
    ]
    m(AgentFinished(turn, "answered"))
    out = m(ReplyDone(turn))
    assert sent(out).text == "Also update the README." and not sent(out).revises


def test_a_hum_between_the_replys_sentences_is_no_request() -> None:
    """Said while a tool runs, as over the reply, "Mm-hmm." only says the user listens."""
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), Tick(5.0), ReplyIdle(turn), Tick(8.0), SpeechStarted(8.0))
    (probe,) = jobs(m(UtteranceEnded(utt(8.0, 8.5), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, "Mm-hmm."))
    assert [a.text for a in out if isinstance(a, Dropped)] == ["Mm-hmm."]  # in the log
    assert m.quiet(AgentFinished(turn, "answered"), ReplyDone(turn)) == [
        PlayEarcon("done"),
        PlayEarcon("listening"),
    ]


def speaking_while_a_tool_runs(m: Machine) -> int:
    """A sentence of the reply, a tool runs, and the user starts a request at 9.0 s."""
    turn = started_turn(m)
    m(ReplyPlaying(turn), Tick(5.0), ReplyIdle(turn), Tick(9.0))
    if m.m.policy.mode == "ptt-hold":
        m(KeyDown(9.0))
    assert m.quiet(SpeechStarted(9.0)) == [PauseReply(turn)]  # its next sentence waits
    return turn


@pytest.mark.parametrize("mode", ["vad", "ptt-hold"])
def test_a_reply_that_begins_while_the_user_speaks_waits_for_their_words(mode: Mode) -> None:
    """Half-duplex, the reply's next sentence would gate the microphone over the rest of the
    request being said: it waits, as a reply due does not begin over the user."""
    m = Machine(replace(POLICY, mode=mode))
    turn = speaking_while_a_tool_runs(m)
    assert m.quiet(Tick(9.8), ReplyPlaying(turn)) == []  # already kept quiet
    out = m(*paused(utt(9.0, 10.5)), Tick(11.5))  # a thinking pause: still theirs
    assert not [a for a in out if isinstance(a, ResumeReply)], out
    if mode == "ptt-hold":
        m(KeyUp(12.0), Tick(12.2))
    (probe,) = jobs(m(UtteranceEnded(utt(9.0, 12.0), "hangover")), Transcribe)
    assert m.quiet(TranscriptReady(probe, "Also check the index.")) == [
        ResumeReply(turn, why=WAITED_UNDER)
    ]
    m(AgentFinished(turn, "answered"))
    send = sent(m(ReplyDone(turn)))
    assert send.text == "Also check the index." and not send.revises


def test_a_reply_that_begins_while_stop_is_said_does_not_go_on() -> None:
    m = Machine()
    turn = speaking_while_a_tool_runs(m)
    assert m.quiet(Tick(9.3), ReplyPlaying(turn)) == []
    (probe,) = jobs(m(UtteranceEnded(utt(9.0, 9.6), "hangover")), Transcribe)
    assert m.quiet(TranscriptReady(probe, "Stop.")) == [StopReply(turn), Interrupt(turn)]


def test_a_reply_that_begins_while_the_user_speaks_waits_however_long_they_speak() -> None:
    """A request said for longer than HOLD_MAX_S still keeps the sentence back: the pause is
    renewed while they speak (the speaker keeps a pause 10 s at most, speaker.PAUSE_LIMIT_S,
    from the last one). Once they stop, it waits HOLD_MAX_S at most for their words."""
    m = Machine()
    turn = speaking_while_a_tool_runs(m)
    m(Tick(9.8), ReplyPlaying(turn))
    assert m.quiet(Tick(9.0 + HOLD_MAX_S - 0.1)) == []  # paused at the user's onset
    assert m.quiet(Tick(9.0 + HOLD_MAX_S)) == [PauseReply(turn, renew=True)]
    assert m.quiet(Tick(9.0 + 2 * HOLD_MAX_S - 0.1)) == []
    assert m.quiet(Tick(9.0 + 2 * HOLD_MAX_S)) == [PauseReply(turn, renew=True)]
    end_s = 9.0 + 2 * HOLD_MAX_S + 1.0
    assert jobs(m(UtteranceEnded(utt(9.0, end_s), "hangover")), Transcribe)
    renewed_s = 9.0 + 2 * HOLD_MAX_S
    assert m.quiet(Tick(renewed_s + HOLD_MAX_S - 0.1)) == []  # said, not heard yet
    why = "the request said while it waited was not heard within 8 s of its end"
    assert m.quiet(Tick(renewed_s + HOLD_MAX_S)) == [ResumeReply(turn, why=why)]


def barged_in(m: Machine) -> int:
    """A voice confirmed over the playing reply of a running turn: the reply is held."""
    turn = started_turn(m)
    m(ReplyPlaying(turn), Tick(6.0))
    assert m.quiet(SpeechStarted(6.0)) == [PauseReply(turn)]
    return turn


def test_voice_barge_in_stops_the_reply_once_its_words_are_heard_but_not_the_agent() -> None:
    m = Machine()
    turn = barged_in(m)
    (job,) = jobs(m(SpeechPaused(utt(6.0, 6.8), 0.12)), Transcribe)
    assert m.quiet(Tick(6.9)) == []
    assert m.quiet(TranscriptReady(job, "Actually,")) == [StopReply(turn, "Actually,")]
    (probe,) = jobs(m(UtteranceEnded(utt(6.0, 8.0), "hangover")), Transcribe)
    assert m.quiet(TranscriptReady(probe, "Actually, use the other file.")) == []  # queued


@pytest.mark.parametrize(
    ("sound", "ends"),
    [
        ("a cough: too little voice to keep", [SpeechDropped(6.5)]),
        ("a clap, music: no words in it", [UtteranceEnded(utt(6.0, 6.6), "hangover")]),
    ],
)
def test_a_voice_over_the_reply_with_no_words_lets_the_reply_go_on(
    sound: str, ends: list[Event]
) -> None:
    m = Machine()
    turn = barged_in(m)
    out = m.quiet(Tick(6.7), *ends)
    probes = jobs(out, Transcribe)
    if probes:
        assert out == [Transcribe(probes[0], utt(6.0, 6.6), "probe")]
        out = m.quiet(TranscriptReady(probes[0], ""))
    assert out == [ResumeReply(turn, held=True)], sound
    assert m.quiet(Tick(7.0), AgentFinished(turn, "answered")) == []  # nothing was sent


def test_a_voice_over_the_reply_is_heard_to_its_first_words() -> None:
    """A breath or an "um" at the first pause: no words yet, the reply stays held."""
    m = Machine()
    turn = barged_in(m)
    (job,) = jobs(m(SpeechPaused(utt(6.0, 6.4), 0.12)), Transcribe)
    assert m.quiet(Tick(6.55), TranscriptReady(job, "")) == []
    m(SpeechStarted(6.6))
    (job,) = jobs(m(SpeechPaused(utt(6.0, 7.5), 0.12)), Transcribe)
    assert m.quiet(Tick(7.7), TranscriptReady(job, "Hmm, stop.")) == [StopReply(turn, "Hmm, stop.")]


def test_a_sound_quiet_for_a_while_with_no_words_lets_the_reply_go_on() -> None:
    """Its segment ends only at the longest pause: the reply goes on HOLD_QUIET_S into it."""
    m = Machine()
    turn = barged_in(m)
    (job,) = jobs(m(Tick(7.3), SpeechPaused(utt(6.0, 7.2), 0.12)), Transcribe)
    assert m.quiet(TranscriptReady(job, "")) == []
    assert m.quiet(Tick(7.2 + HOLD_QUIET_S - 0.05)) == []
    assert m.quiet(Tick(7.2 + HOLD_QUIET_S + 0.01)) == [ResumeReply(turn, held=True)]


def test_a_short_pause_with_no_words_yet_keeps_the_reply_held() -> None:
    m = Machine()
    turn = barged_in(m)
    (job,) = jobs(m(Tick(6.5), SpeechPaused(utt(6.0, 6.4), 0.12)), Transcribe)
    assert m.quiet(TranscriptReady(job, ""), Tick(6.8)) == []  # "um"
    assert m.quiet(SpeechStarted(6.85), Tick(7.5)) == []  # it goes on: still held
    (job,) = jobs(m(SpeechPaused(utt(6.0, 7.5), 0.12)), Transcribe)
    assert m.quiet(TranscriptReady(job, "Um, stop.")) == [StopReply(turn, "Um, stop.")]


def test_a_sentence_with_no_pause_keeps_the_reply_held_until_its_words() -> None:
    """Live, "He might even have been made amiable himself" over a reply had no pause: its
    words came 3 s after Silero confirmed it, and the reply must not play on in between."""
    m = Machine()
    turn = barged_in(m)
    assert m.quiet(Tick(9.0), Tick(9.6)) == []
    (probe,) = jobs(m(UtteranceEnded(utt(6.0, 8.6), "hangover")), Transcribe)
    assert m.quiet(Tick(9.7)) == []
    said = "He might even have been made amiable himself."
    assert m.quiet(TranscriptReady(probe, said)) == [StopReply(turn, said)]


def test_a_sound_with_no_pause_lets_the_reply_go_on_and_its_words_still_stop_it() -> None:
    """Music Silero takes for a voice can hold a segment open for long: after HOLD_MAX_S the
    reply goes on under it (the echo is cancelled), and words heard later still stop it."""
    m = Machine()
    turn = barged_in(m)
    went_on = 6.0 + HOLD_MAX_S
    assert m.quiet(Tick(went_on - 0.05)) == []
    assert m.quiet(Tick(went_on + 0.01)) == [ResumeReply(turn, held=True)]
    assert m.quiet(OnsetUnconfirmed(went_on + 0.2, 0.9)) == []  # a request is heard: no pause
    (job,) = jobs(m(SpeechPaused(utt(6.0, went_on + 0.5), 0.12)), Transcribe)
    assert m.quiet(TranscriptReady(job, "Could you stop")) == [StopReply(turn, "Could you stop")]
    assert m.quiet(Tick(went_on + 0.8)) == []


def test_a_backchannel_at_a_pause_over_the_reply_lets_it_go_on_and_is_no_request() -> None:
    """ "Mm-hmm" (or Whisper's "Mmhmm" in music) says the user is listening."""
    m = Machine()
    turn = barged_in(m)
    (job,) = jobs(m(Tick(6.7), SpeechPaused(utt(6.0, 6.6), 0.12)), Transcribe)
    assert m.quiet(TranscriptReady(job, "Mm-hmm.")) == []  # held: more may come
    assert m.quiet(Tick(6.6 + HOLD_QUIET_S + 0.01)) == [ResumeReply(turn, True, "Mm-hmm.")]
    out = m.quiet(UtteranceEnded(utt(6.0, 6.6), "hangover"), Tick(8.2))
    assert [a for a in out if isinstance(a, StopReply | Send)] == []
    m(AgentFinished(turn, "answered"))
    assert [a for a in m(ReplyDone(turn)) if isinstance(a, Send)] == []  # nothing queued


@pytest.mark.parametrize(
    ("said", "stops", "queued"),
    [
        ("Mm-hmm.", False, False),  # a hum: no request
        ("Yeah, okay.", False, True),  # words: the reply goes on, and they are sent after it
        ("Yeah, but use the other file.", True, True),
    ],
)
def test_a_backchannel_over_the_reply_does_not_stop_it(
    said: str, stops: bool, queued: bool
) -> None:
    m = Machine()
    turn = barged_in(m)
    (probe,) = jobs(m(UtteranceEnded(utt(6.0, 7.0), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, said))
    assert out == ([StopReply(turn, said)] if stops else [ResumeReply(turn, True, said)])
    m(AgentFinished(turn, "answered"))
    sends = [a for a in m(ReplyDone(turn)) if isinstance(a, Send)]
    assert [s.text for s in sends] == ([said] if queued else [])


def test_okay_stop_over_the_reply_is_no_backchannel() -> None:
    m = Machine()
    turn = barged_in(m)
    (probe,) = jobs(m(UtteranceEnded(utt(6.0, 6.8), "hangover")), Transcribe)
    assert m.quiet(TranscriptReady(probe, "Okay, stop.")) == [StopReply(turn), Interrupt(turn)]


def test_stop_said_over_the_reply_stops_it_and_the_agent_once() -> None:
    m = Machine()
    turn = barged_in(m)
    (probe,) = jobs(m(UtteranceEnded(utt(6.0, 6.5), "hangover")), Transcribe)
    assert m.quiet(TranscriptReady(probe, "Stop.")) == [StopReply(turn), Interrupt(turn)]


def test_speech_over_a_reply_a_key_already_stopped_holds_nothing() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), Tick(6.0))
    assert m.quiet(KeyDown(6.0)) == [StopReply(turn)]
    assert m.quiet(SpeechStarted(6.1)) == []  # it is still sounding: no pause, no resume
    assert m.quiet(SpeechDropped(6.5), Tick(10.0)) == []


@pytest.mark.parametrize(
    "policy",
    [
        replace(POLICY, mode="ptt-hold"),  # the key is down: the user means to talk
        replace(POLICY, analyzer=None),  # no pause transcripts: its words come at its end
    ],
)
def test_without_words_at_pauses_a_voice_over_the_reply_stops_it_at_once(
    policy: TurnPolicy,
) -> None:
    m = Machine(policy)
    turn = started_turn(m)
    if policy.mode == "ptt-hold":
        m(ReplyPlaying(turn), ReplyIdle(turn), KeyDown(6.0))  # pressed while a tool ran
    m(ReplyPlaying(turn), Tick(6.2))
    assert m.quiet(SpeechStarted(6.2)) == [StopReply(turn)]
    assert m.quiet(Tick(15.0)) == []  # never goes on


NO_ANALYZER = replace(POLICY, analyzer=None, model=False)  # turn.smart_endpoint = false


@pytest.mark.parametrize("heard", ["", "Mm-hmm."])
def test_without_an_analyzer_a_sound_while_the_agent_works_leaves_its_turn_alone(
    heard: str,
) -> None:
    # Nothing plays yet: the words at the sound's end decide, not its onset (a cough, a hum
    # interrupted the agent and sent the same request again).
    m = Machine(NO_ANALYZER)
    out = m(SpeechStarted(1.0), UtteranceEnded(utt(1.0, 3.0), "hangover"))
    sent(m(TranscriptReady(jobs(out, Transcribe)[0], "Run the tests.")))
    m(Tick(10.0))
    assert m.quiet(SpeechStarted(10.0)) == []  # the agent goes on meanwhile
    (probe,) = jobs(m(UtteranceEnded(utt(10.0, 10.4), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, heard))
    for job in jobs(out, Transcribe):  # nothing heard alone: the joined audio decides
        out += m.quiet(TranscriptReady(job, "Run the tests."))
    assert [a for a in out if isinstance(a, Interrupt | StopReply | Send)] == []
    assert m.quiet(SpeechStarted(12.0), SpeechDropped(12.1)) == []  # a click: nothing
    assert m.phase is Phase.THINKING


def test_without_an_analyzer_new_words_while_the_agent_works_revise_its_request() -> None:
    m = Machine(NO_ANALYZER)
    out = m(SpeechStarted(1.0), UtteranceEnded(utt(1.0, 3.0), "hangover"))
    turn = sent(m(TranscriptReady(jobs(out, Transcribe)[0], "Run the tests."))).turn
    m(Tick(10.0), SpeechStarted(10.0))
    (probe,) = jobs(m(UtteranceEnded(utt(10.0, 11.0), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, "And the linter."))
    assert out[:2] == [StopReply(turn), Interrupt(turn)]
    (joined,) = jobs(out, Transcribe)
    send = sent(m(TranscriptReady(joined, "Run the tests and the linter.")))
    assert send.text == "Run the tests and the linter." and send.revises


@pytest.mark.parametrize(("onset_s", "joins"), [(4.55, True), (4.75, False)])
def test_without_words_at_pauses_only_the_reply_s_first_second_goes_on_with_the_request(
    onset_s: float, joins: bool
) -> None:
    """There the agent is interrupted at the onset, before a word is heard: over a wider
    window a leak of the reply's own echo ran the request again (the loop's rig tests)."""
    m = Machine(replace(POLICY, analyzer=None))
    m(HeardOverReply(True))
    out = m(SpeechStarted(1.0), UtteranceEnded(utt(1.0, 3.0), "hangover"))
    turn = sent(m(TranscriptReady(jobs(out, Transcribe)[0], "Run the tests."))).turn
    m(Tick(3.6), ReplyPlaying(turn), Tick(onset_s))  # past the longest pause after 3.0 s
    out = m.quiet(SpeechStarted(onset_s))  # 0.95 / 1.15 s into the reply
    assert StopReply(turn) in out and (Interrupt(turn) in out) is joins, out


def test_a_likely_voice_does_not_pause_a_reply_a_key_stopped() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), Tick(6.0), KeyDown(6.0))  # still falling silent
    assert m.quiet(OnsetUnconfirmed(6.1, 0.9), SpeechStarted(6.05), Tick(7.5)) == []


def test_a_question_from_the_agent_ends_a_hold_for_the_question_to_be_heard() -> None:
    m = Machine()
    turn = barged_in(m)
    out = m.quiet(PermissionAsked(turn, "r1"))
    assert out[0] == ResumeReply(turn, held=False)  # not "no words were heard"


def test_words_of_speech_dropped_since_do_not_stop_a_new_hold() -> None:
    m = Machine()
    turn = barged_in(m)
    (stale,) = jobs(m(SpeechPaused(utt(6.0, 6.3), 0.12)), Transcribe)
    assert m.quiet(SpeechDropped(6.4)) == [ResumeReply(turn, held=True)]
    m(Tick(7.0))
    assert m.quiet(SpeechStarted(7.0)) == [PauseReply(turn)]
    assert m.quiet(TranscriptReady(stale, "Beep.")) == []  # held still
    (job,) = jobs(m(SpeechPaused(utt(7.0, 7.8), 0.12)), Transcribe)
    assert m.quiet(TranscriptReady(job, "Wait.")) == [StopReply(turn, "Wait.")]


def test_a_held_reply_that_ends_is_not_left_paused() -> None:
    m = Machine()
    turn = barged_in(m)
    out = m.quiet(AgentFinished(turn, "answered"), ReplyDone(turn))
    assert ResumeReply(turn, held=True) in out  # the speaker is shared


def last_reply_playing(m: Machine) -> int:
    """The user is heard over the reply, and the agent's turn has ended: its reply plays."""
    m(HeardOverReply(True))
    turn = started_turn(m)
    m(AgentFinished(turn, "answered"), ReplyPlaying(turn), Tick(6.0))
    return turn


def test_a_request_said_over_the_reply_ends_at_its_pause_like_any_other() -> None:
    """Live, a request said over a reply waited for the longest pause (sent 1.7-1.9 s after
    its last word, against 0.5-0.6 s for the same words said to a quiet room)."""
    m = Machine()
    turn = last_reply_playing(m)
    assert m.quiet(SpeechStarted(6.0)) == [PauseReply(turn)]
    seg = utt(6.0, 8.0)
    said = "Use the other file instead."
    assert StopReply(turn, said) in say_request(m, seg, said, 0.99)
    m(ReplyDone(turn))  # the stopped reply falls silent
    assert m(Tick(8.31)) == [EndSegment()]  # quick, not the longest pause (9.5)
    out = m(UtteranceEnded(seg, "forced"))
    assert jobs(out, Transcribe) == []  # the pause transcript is the request's
    send = sent(out)
    assert (send.text, send.revises) == ("Use the other file instead.", False)
    assert Release(send.turn) in out


def test_a_doubtful_end_over_the_reply_holds_its_own_reply_like_any_other() -> None:
    m = Machine()
    turn = last_reply_playing(m)
    m(SpeechStarted(6.0), ReplyDone(turn))
    seg = utt(6.0, 8.0)
    say_request(m, seg, "Use the other file instead.", 0.7)  # finished, not sure
    m(Tick(8.31))
    out = m.quiet(UtteranceEnded(seg, "forced"))
    turn = sent(out).turn
    assert Release(turn) not in out
    assert Release(turn) not in m(Tick(8.75))  # 800 ms after the last word
    assert Release(turn) in m(Tick(8.85))


def test_a_doubtful_end_queued_behind_a_stopping_reply_still_holds_its_reply() -> None:
    m = Machine()
    turn = last_reply_playing(m)
    m(SpeechStarted(6.0))  # the stopped reply has not fallen silent yet
    seg = utt(6.0, 8.0)
    say_request(m, seg, "Use the other file instead.", 0.7)
    m(Tick(8.31))
    assert not [a for a in m(UtteranceEnded(seg, "forced")) if isinstance(a, Send)]
    out = m(Tick(8.4), ReplyDone(turn))
    new = sent(out).turn
    assert Release(new) not in out
    assert Release(new) not in m(Tick(8.75))
    assert Release(new) in m(Tick(8.85))


QUEUED = utt(9.0, 11.0)  # "Also update the README.", said while the agent works


def queue_behind_a_running_turn(m: Machine) -> tuple[int, list[Action]]:
    """A turn whose reply said a sentence and whose agent runs a tool; a request said then
    ends at its pause. Returns the turn and what ending that request did."""
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn))
    say_request(m, QUEUED, "Also update the README.", 0.99)
    assert m(Tick(11.31)) == [EndSegment()]
    return turn, m.quiet(UtteranceEnded(QUEUED, "forced"))


def test_a_request_during_a_running_turn_ends_at_its_pause_and_waits_for_the_turn() -> None:
    m = Machine()
    turn, out = queue_behind_a_running_turn(m)
    # No second transcription, no send; the reply goes on.
    assert out == [ResumeReply(turn, why=WAITED_UNDER)]
    m(AgentFinished(turn, "answered"))
    assert sent(m(ReplyDone(turn))).text == "Also update the README."


def test_a_request_said_while_the_agent_works_that_ended_early_is_heard_again_whole() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn))
    whole = utt(9.0, 14.0)  # "Also update the README. [pause] And the changelog."
    (first,) = jobs(m(SpeechStarted(9.0), SpeechPaused(utt(9.0, 11.0), 0.12)), Transcribe)
    m(TranscriptReady(first, "Also update the README."), SpeechResumed(11.3))
    out = m(*paused(whole))
    (text_job,) = jobs(out, Transcribe)
    (verdict_job,) = jobs(out, Analyze)
    m(TranscriptReady(text_job, "Also update the README."), VerdictReady(verdict_job, 0.99))
    m(Tick(14.31))
    (again,) = [a for a in m.quiet(UtteranceEnded(whole, "forced")) if isinstance(a, Transcribe)]
    assert again.purpose == "whole" and again.audio == whole
    m(TranscriptReady(again.job, "Also update the README. And the changelog."))
    m(AgentFinished(turn, "answered"))
    assert sent(m(ReplyDone(turn))).text == "Also update the README. And the changelog."


def test_a_request_ended_before_its_pause_transcript_waits_for_that_transcript() -> None:
    m = Machine()
    turn = last_reply_playing(m)
    m(SpeechStarted(6.0), ReplyDone(turn))
    seg = utt(6.0, 8.0)
    out = m(*paused(seg))
    (text_job,) = jobs(out, Transcribe)
    (verdict_job,) = jobs(out, Analyze)
    m(VerdictReady(verdict_job, 0.99))
    out = m(UtteranceEnded(seg, "hangover"))  # the segmenter ended it first
    assert jobs(out, Transcribe) == [] and not [a for a in out if isinstance(a, Send)]
    out = m(TranscriptReady(text_job, "Use the other file."))
    assert sent(out).text == "Use the other file."


def test_stop_said_over_a_reply_whose_turn_is_over_is_not_sent_to_the_agent() -> None:
    m = Machine()
    turn = last_reply_playing(m)
    m(SpeechStarted(6.0), ReplyDone(turn))  # the voice stopped the reply
    seg = utt(6.0, 6.5)
    say_request(m, seg, "Stop.", 0.99)
    m(Tick(6.81))
    out = m.quiet(UtteranceEnded(seg, "forced"))
    assert not [a for a in out if isinstance(a, Send | Say)], out
    assert PlayEarcon("listening") in out  # it listens again, and says so


def queued_then_said_over_the_last_reply(m: Machine, said: str) -> list[Action]:
    """A request queued behind a running turn; then, as that turn's last reply plays, more is
    said over it, and the turn is over before those words are transcribed."""
    turn, _ = queue_behind_a_running_turn(m)
    m(AgentFinished(turn, "answered"), ReplyPlaying(turn), Tick(13.0))
    assert PauseReply(turn) in m(SpeechStarted(13.0))  # held until its words are heard
    assert not [a for a in m(ReplyDone(turn)) if isinstance(a, Send)]  # its words decide
    more = utt(13.0, 14.0)
    (probe,) = jobs(m(UtteranceEnded(more, "hangover")), Transcribe)
    return m(TranscriptReady(probe, said))


def test_stop_said_as_the_turn_ends_cancels_what_was_queued_behind_it() -> None:
    m = Machine()
    out = queued_then_said_over_the_last_reply(m, "Stop.")
    assert not [a for a in out if isinstance(a, Send | Interrupt)], out
    assert PlayEarcon("listening") in out


def test_words_said_as_the_turn_ends_join_what_was_queued_behind_it() -> None:
    m = Machine()
    out = queued_then_said_over_the_last_reply(m, "And the changelog.")
    send = sent(out)
    assert send.text == "Also update the README. And the changelog."
    assert send.speech_end_s == 14.0


def test_requests_queued_behind_a_turn_keep_their_audio_for_a_continuation() -> None:
    """Sent once the turn is over, a queued request is still open until its reply plays:
    words that go on join all of it, not just the new ones."""
    m = Machine()
    turn, _ = queue_behind_a_running_turn(m)
    m(AgentFinished(turn, "answered"))
    queued = sent(m(ReplyDone(turn)))
    assert queued.speech_end_s == 11.0
    m(SpeechStarted(11.9))  # before its reply plays
    more = utt(11.9, 14.5)
    out = m(UtteranceEnded(more, "hangover"))
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.audio == join([QUEUED, more]) and final.purpose == "request"


def test_in_wake_mode_a_request_during_a_turn_ends_only_at_the_longest_pause() -> None:
    """Once it is settled while a turn runs, wake mode stops hearing: a thinking pause must
    not settle it."""
    m = Machine(WAKE)
    m(WakeWord(0.5))
    turn = started_turn(m)
    m(ReplyPlaying(turn))
    m(WakeWord(4.0))
    out = m(SpeechStarted(4.0), *paused(utt(4.0, 5.0)))
    assert jobs(out, Transcribe) == [] and jobs(out, Analyze) == []
    assert m.m.hearing


def test_in_wake_mode_a_request_over_a_finished_turns_reply_ends_at_its_pause() -> None:
    """The wake word stopped the reply of a turn whose agent is done: the request is the next
    turn, so it ends by meaning (it waited for the longest pause: sent 1.7 s after its last
    word in the rig), and words that go on after the pause still join it."""
    m = Machine(WAKE)
    m(WakeWord(0.5))
    turn = started_turn(m)
    m(AgentFinished(turn, "answered"), ReplyPlaying(turn), Tick(6.0))
    assert StopReply(turn) in m(WakeWord(6.0))
    seg = utt(6.0, 7.5)
    say_request(m, seg, "Use the other file.", 0.99)
    assert m(Tick(7.81)) == [EndSegment()]  # quick, not the longest pause (9.0)
    m(ReplyDone(turn))  # the stopped reply fell silent
    new = sent(m(UtteranceEnded(seg, "forced"))).turn
    assert new != turn and m.m.hearing  # WAKE_GOES_ON_S: the user may go on
    out = m(SpeechStarted(8.6), UtteranceEnded(utt(8.6, 9.5), "hangover"))
    (probe,) = jobs(out, Transcribe)  # a short continuation: "stop"? (its own words)
    out = m(TranscriptReady(probe, "And the tests."))
    assert Interrupt(new) in out
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.purpose == "request" and final.audio == join([seg, utt(8.6, 9.5)])


def test_in_wake_mode_the_reply_pauses_while_the_wake_word_is_decided() -> None:
    """The model's scores rise at the word's last sound and the word is decided 150 ms later:
    the reply pauses at the rise, so it is already silent when the word stops it."""
    m = Machine(WAKE)
    m(WakeWord(0.5))
    turn = started_turn(m)
    m(AgentFinished(turn, "answered"), ReplyPlaying(turn), Tick(6.0))
    assert m(WakeLikely(6.0)) == [PauseReply(turn)]
    assert m(Tick(6.1)) == []  # still deciding
    out = m(WakeWord(6.15))
    assert StopReply(turn) in out and not [a for a in out if isinstance(a, ResumeReply)]
    assert m(Tick(7.0)) == []  # stopped for good, not resumed


def test_in_wake_mode_a_rise_that_is_not_the_word_lets_the_reply_go_on() -> None:
    m = Machine(WAKE)
    m(WakeWord(0.5))
    turn = started_turn(m)
    m(AgentFinished(turn, "answered"), ReplyPlaying(turn), Tick(6.0))
    assert m(WakeLikely(6.0)) == [PauseReply(turn)]
    assert m(Tick(6.4)) == []
    assert m(Tick(6.55)) == [ResumeReply(turn, False, "")]  # PAUSE_HOLD_S: nobody said it


@pytest.mark.parametrize(
    "when",
    ["vad mode", "no reply", "reply stopped"],
)
def test_a_rise_of_the_wake_words_scores_pauses_only_a_reply_nobody_else_holds(
    when: str,
) -> None:
    m = Machine(POLICY if when == "vad mode" else WAKE)
    m(WakeWord(0.5))
    turn = started_turn(m)
    m(AgentFinished(turn, "answered"), Tick(6.0))
    if when != "no reply":
        m(ReplyPlaying(turn))
    if when == "reply stopped":
        m(WakeWord(5.9))
    assert [a for a in m(WakeLikely(6.0)) if isinstance(a, PauseReply)] == []


def test_in_wake_mode_the_word_said_again_over_a_stopped_reply_is_cut_from_the_request() -> None:
    """ "Hey Jarvis [the reply stops] Hey Jarvis, use the other file": the second word starts
    the segment again, as it does with no turn, so the agent is not sent the word alone."""
    m = Machine(WAKE)
    m(WakeWord(0.5))
    turn = started_turn(m)
    m(AgentFinished(turn, "answered"), ReplyPlaying(turn), Tick(6.0))
    assert StopReply(turn) in m(WakeWord(6.0))
    m(SpeechStarted(6.2))
    out = m(WakeWord(6.9))
    assert StartSegment(hold=False) in out and StopReply(turn) not in out  # (stopped once)
    m(ReplyDone(turn), SpeechStarted(7.0))
    seg = utt(7.0, 8.5)
    say_request(m, seg, "Use the other file.", 0.99)
    m(Tick(8.81))
    out = m(UtteranceEnded(seg, "forced"))
    assert sent(out).text == "Use the other file."


def test_in_wake_mode_a_request_ends_only_at_the_longest_pause_until_its_turn_is_over() -> None:
    """The agent finished while the user spoke after the wake word, and the reply's last
    sentences play over them: settled at a thinking pause, the request would wait behind
    that reply with the microphone closed, and the rest of it would be lost."""
    m = Machine(WAKE)
    m(WakeWord(0.5))
    turn = started_turn(m)
    m(ReplyPlaying(turn), Tick(4.5), ReplyIdle(turn))  # "Let me check." while tools run
    m(WakeWord(6.0), SpeechStarted(6.0))
    m(Tick(6.5), AgentFinished(turn, "answered"), ReplyPlaying(turn))
    out = m(*paused(utt(6.0, 7.5)))
    assert jobs(out, Transcribe) == [] and jobs(out, Analyze) == []
    assert EndSegment() not in m(Tick(8.6))
    assert m.m.hearing


def test_stop_said_over_a_running_turn_stops_it_at_its_pause() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn))
    seg = utt(9.0, 9.5)
    say_request(m, seg, "Stop.", 0.99)
    m(Tick(9.81))
    assert m.quiet(UtteranceEnded(seg, "forced")) == [StopReply(turn), Interrupt(turn)]


def test_an_answer_to_the_agent_ends_only_at_the_longest_pause() -> None:
    """ "Yes [pause] but only in the tests folder" must not be an early "allow"."""
    m = Machine()
    turn = started_turn(m)
    m(PermissionAsked(turn, "r1"))
    out = m(SpeechStarted(8.0), *paused(utt(8.0, 8.4)))
    assert jobs(out, Transcribe) == [] and jobs(out, Analyze) == []


# ---- talking over the reply: pause first, stop once Silero is sure ----------------------------


def playing_turn(m: Machine) -> int:
    turn = started_turn(m)
    m(ReplyPlaying(turn), Tick(5.0))
    return turn


def test_a_likely_voice_over_the_reply_pauses_it_and_its_words_stop_it() -> None:
    """Silero confirmed the voices said over a reply 0.03-0.5 s after webrtcvad's onset: the
    reply falls silent at the first onset Silero finds likely, not at the confirmation. The
    confirmation keeps it paused, and the first transcript with words stops it."""
    m = Machine()
    turn = playing_turn(m)
    assert m.quiet(OnsetUnconfirmed(6.09, 0.71)) == [PauseReply(turn)]
    assert m.quiet(OnsetUnconfirmed(6.12, 0.72), Tick(6.4), OnsetUnconfirmed(6.2, 0.75)) == []
    assert m.quiet(Tick(6.6), SpeechStarted(6.0)) == []  # held, past PAUSE_MAX_S
    assert m.quiet(Tick(7.8)) == []
    (pause_job,) = jobs(m(SpeechPaused(utt(6.0, 7.6), 0.12)), Transcribe)
    assert m.quiet(TranscriptReady(pause_job, "Wait,")) == [StopReply(turn, "Wait,")]  # no resume
    assert m.quiet(Tick(7.9)) == []  # the pause ended with the stop


def test_a_likely_voice_louder_than_the_echo_pauses_the_reply_before_any_detector_onset() -> None:
    m = Machine()
    turn = playing_turn(m)
    assert m.quiet(OnsetUnconfirmed(6.03, 0.3, proposed=False)) == []
    assert m.quiet(OnsetUnconfirmed(6.06, 0.74, proposed=False)) == [PauseReply(turn)]
    assert m.quiet(Tick(6.3), SpeechStarted(5.97)) == []  # held: its words will stop it


def test_an_unlikely_onset_over_the_reply_leaves_it_playing() -> None:
    m = Machine()
    playing_turn(m)
    assert m.quiet(OnsetUnconfirmed(6.0, 0.69), Tick(6.1), OnsetUnconfirmed(6.1, 0.1)) == []


def test_how_likely_a_pause_needs_follows_the_silero_threshold() -> None:
    m = Machine(replace(POLICY, pause_likelihood=0.9))  # vad.silero_threshold = 0.9
    turn = playing_turn(m)
    assert m.quiet(OnsetUnconfirmed(6.0, 0.85)) == []
    assert m.quiet(OnsetUnconfirmed(6.6, 0.92)) == [PauseReply(turn)]


@pytest.mark.parametrize(
    ("onsets", "resumes_at"),
    [
        ([6.0], 6.5),  # one likely onset, then nothing for 0.5 s
        ([6.0, 6.2, 6.4], 6.9),  # each likely onset keeps it paused 0.5 s more ...
        ([6.0, 6.2, 6.4, 6.6, 6.8, 6.95], 7.0),  # ... but never more than 1 s in all
    ],
)
def test_a_paused_reply_goes_on_when_no_voice_is_confirmed(
    onsets: list[float], resumes_at: float
) -> None:
    m = Machine()
    turn = playing_turn(m)
    out: list[Action] = []
    for t in onsets:
        out += m.quiet(Tick(t), OnsetUnconfirmed(t, 0.8))
    assert out == [PauseReply(turn)]
    assert m.quiet(Tick(resumes_at - 0.02)) == []
    assert m.quiet(Tick(resumes_at + 0.01)) == [ResumeReply(turn)]
    assert m.quiet(Tick(9.0)) == []
    # The next likely onset pauses it again: every voice over the reply gets its chance.
    assert m.quiet(OnsetUnconfirmed(9.1, 0.8)) == [PauseReply(turn)]


def test_a_sound_that_stays_likely_pauses_the_reply_once() -> None:
    """A TV or a song with singing: single windows at 0.7 every frame, never confirmed. The
    reply pauses once, goes on after 1 s, and is not paused again while the sound goes on."""
    m = Machine()
    turn = playing_turn(m)
    out: list[Action] = []
    for i in range(100):  # 3 s of onsets, one per 30 ms frame
        t = 6.0 + i * 0.03
        out += m.quiet(Tick(t), OnsetUnconfirmed(t, 0.8))
    assert out == [PauseReply(turn), ResumeReply(turn)]
    assert m.quiet(Tick(9.6), OnsetUnconfirmed(9.6, 0.8)) == [PauseReply(turn)]  # it stopped


def test_a_question_from_the_agent_ends_a_pause() -> None:
    m = Machine()
    turn = playing_turn(m)
    m(OnsetUnconfirmed(6.0, 0.8))
    out = m.quiet(PermissionAsked(turn, "r1"))
    assert out[0] == ResumeReply(turn) and PlayEarcon("listening") in out


def test_nothing_pauses_a_reply_that_is_not_sounding_or_is_being_answered() -> None:
    m = Machine()
    turn = started_turn(m)
    m(Tick(5.0))
    assert m.quiet(OnsetUnconfirmed(5.0, 0.9)) == []  # the agent is still working
    m(ReplyPlaying(turn), ReplyIdle(turn))  # a sentence, then a tool runs
    assert m.quiet(OnsetUnconfirmed(6.0, 0.9)) == []
    m(ReplyPlaying(turn), PermissionAsked(turn, "r1"))
    assert m.quiet(OnsetUnconfirmed(7.0, 0.9)) == []  # the answer does not stop the reply


def test_a_key_press_during_a_pause_stops_the_reply_without_resuming_it() -> None:
    m = Machine()
    turn = playing_turn(m)
    m(OnsetUnconfirmed(6.0, 0.8))
    assert m.quiet(KeyDown(6.1)) == [StopReply(turn)]
    assert m.quiet(Tick(7.5)) == []


def test_a_pause_ends_when_the_reply_it_held_is_no_longer_the_turn() -> None:
    m = Machine()
    turn = playing_turn(m)
    m(OnsetUnconfirmed(6.0, 0.8))
    out = m.quiet(AgentFinished(turn, "answered"), ReplyDone(turn))
    assert ResumeReply(turn) in out  # the speaker is shared: never leave it paused


@pytest.mark.parametrize(
    ("said", "decision", "message"),
    [
        ("Yes.", "allow", ""),
        ("Yes, always.", "always", ""),
        ("No.", "deny", ""),
        ("Use yarn instead.", "deny", "The user said: Use yarn instead."),
        ("No, use yarn instead.", "deny", "The user said: No, use yarn instead."),
        # A yes with a condition is no yes: the words go to the agent (an allow has none).
        ("Yes, but only the unit tests.", "deny", "The user said: Yes, but only the unit tests."),
        ("Sure, go ahead.", "allow", ""),
        # A yes taken back refuses the tool, and the agent reads all the words.
        ("Yeah, no.", "deny", "The user said: Yeah, no."),
        ("Yes. No, wait, don't.", "deny", "The user said: Yes. No, wait, don't."),
        ("Yes, stop.", "deny", "The user said: Yes, stop."),
        ("No, no, go ahead.", "deny", "The user said: No, no, go ahead."),
    ],
)
def test_permission_is_answered_by_voice(said: str, decision: str, message: str) -> None:
    m = Machine()
    turn = started_turn(m)
    assert m(PermissionAsked(turn, "r1")) == [PlayEarcon("listening"), SetPhase(Phase.ASKING)]
    m(SpeechStarted(8.0))
    probe = jobs(m(UtteranceEnded(utt(8.0, 8.6), "hangover")), Transcribe)[0]
    out = m(TranscriptReady(probe, said))
    assert out == [Answer(turn, "r1", decision, message), SetPhase(Phase.THINKING)]


def test_what_was_queued_goes_once_a_sound_heard_as_the_turn_ended_came_to_nothing() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn), SpeechStarted(6.0))
    (probe,) = jobs(m(UtteranceEnded(utt(6.0, 7.0), "hangover")), Transcribe)
    # queued; the reply, kept from its next sentence while they spoke, goes on
    assert m.quiet(TranscriptReady(probe, "Also update the README.")) == [
        ResumeReply(turn, why=WAITED_UNDER)
    ]
    m(PermissionAsked(turn, "r1"), SpeechStarted(8.0))  # an answer, maybe: it waits
    assert m.quiet(AgentFinished(turn, "answered"), ReplyDone(turn)) == []
    send = sent(m(SpeechDropped(8.2)))  # a cough
    assert send.text == "Also update the README." and not send.revises


def yes_over_the_end_of_the_question(m: Machine, asked: str) -> tuple[int, list[Action]]:
    """Echo cancelled: the question plays 3.5-6.0 s and "Yes." is said over its end; the
    agent asks (the question was spoken) before or after "Yes." is transcribed."""
    m(HeardOverReply(True))
    turn = started_turn(m)
    m(Tick(3.5), ReplyPlaying(turn), Tick(5.9), SpeechStarted(5.9), Tick(6.5))
    (probe,) = jobs(m(UtteranceEnded(utt(5.9, 6.3), "hangover")), Transcribe)
    if asked == "before":
        m(PermissionAsked(turn, "r1"))
        return turn, m.quiet(TranscriptReady(probe, "Yes."))
    return turn, m.quiet(TranscriptReady(probe, "Yes."), PermissionAsked(turn, "r1"))


@pytest.mark.parametrize("asked", ["before", "after"])
def test_a_bare_answer_said_over_the_end_of_the_question_answers_it(asked: str) -> None:
    m = Machine()
    turn, out = yes_over_the_end_of_the_question(m, asked)
    assert [a for a in out if isinstance(a, Answer)] == [Answer(turn, "r1", "allow")], out
    assert not m.m.asking
    assert m.quiet(Tick(40.0)) == []  # nothing left to deny at the timeout
    assert m.quiet(AgentFinished(turn, "answered"), ReplyDone(turn)) == [
        PlayEarcon("done"),
        PlayEarcon("listening"),
    ]


def said_over_the_reply(m: Machine, end_s: float) -> tuple[int, int]:
    """Echo cancelled: words said over the reply from 5.9 s to ``end_s``; (turn, probe)."""
    m(HeardOverReply(True))
    turn = started_turn(m)
    m(Tick(3.5), ReplyPlaying(turn), Tick(5.9), SpeechStarted(5.9), Tick(6.5))
    (probe,) = jobs(m(UtteranceEnded(utt(5.9, end_s), "hangover")), Transcribe)
    return turn, probe


def test_a_bare_answer_said_long_before_the_question_is_no_answer_to_it() -> None:
    m = Machine()
    turn, probe = said_over_the_reply(m, 6.3)
    assert m.quiet(TranscriptReady(probe, "Yes.")) == [StopReply(turn, "Yes.")]  # queued
    m(Tick(9.0))  # 2.7 s after it
    assert m.quiet(PermissionAsked(turn, "r1")) == [PlayEarcon("listening")]  # asked anew


def test_a_request_said_over_the_end_of_the_question_is_no_answer_to_it() -> None:
    m = Machine()
    turn, probe = said_over_the_reply(m, 7.3)
    m(PermissionAsked(turn, "r1"))
    out = m.quiet(TranscriptReady(probe, "Also update the README."))
    assert not [a for a in out if isinstance(a, Answer)], out  # queued
    assert m.m.asking


def test_an_unanswered_question_is_denied_with_a_reason() -> None:
    m = Machine()
    turn = started_turn(m)
    m(Tick(5.0), PermissionAsked(turn, "r1"))
    assert m.quiet(Tick(34.9)) == []
    answer, cue = m.quiet(Tick(35.1))
    assert isinstance(answer, Answer) and answer.decision == "deny"
    assert "did not answer" in answer.message
    assert cue == PlayEarcon("thinking")  # the agent goes on without the tool


@pytest.mark.parametrize(
    ("said", "decision", "sent"),
    [
        ("Yes, and then commit it and push to main.", "allow", True),
        ("Always, and also run it.", "always", True),
        ("Yes, run the tests.", "allow", False),  # only what was asked: no second run
    ],
)
def test_words_after_a_yes_go_to_the_agent_once_its_turn_is_done(
    said: str, decision: str, sent: bool
) -> None:
    m = Machine()
    turn = started_turn(m)
    m(PermissionAsked(turn, "r1"), SpeechStarted(8.0))
    probe = jobs(m(UtteranceEnded(utt(8.0, 9.6), "hangover")), Transcribe)[0]
    (answer,) = m.quiet(TranscriptReady(probe, said))
    assert answer == Answer(turn, "r1", decision) and answer.heard == said  # (logged)
    out = m.quiet(AgentFinished(turn, "answered"), ReplyDone(turn))
    assert [a.text for a in out if isinstance(a, Send)] == ([said] if sent else [])


def test_a_question_after_a_stop_is_not_waited_for() -> None:
    m = Machine()
    turn = started_turn(m)
    m(Command("stop"))
    assert m.quiet(PermissionAsked(turn, "r2")) == [] and not m.m.asking


def test_a_reply_silenced_before_a_question_can_be_talked_over_again() -> None:
    m = Machine()
    turn = playing_turn(m)
    m(KeyDown(6.0))  # vad mode: a press silences the reply; the agent goes on
    m(ReplyPlaying(turn), PermissionAsked(turn, "r1"))  # the question is heard ...
    m(SpeechStarted(8.0))
    (probe,) = jobs(m(UtteranceEnded(utt(8.0, 8.5), "hangover")), Transcribe)
    m(TranscriptReady(probe, "Yes."), ReplyPlaying(turn))  # ... and the reply goes on
    assert PauseReply(turn) in m.quiet(OnsetUnconfirmed(10.0, 0.8))  # heard over again


def test_an_answer_being_said_at_the_deadline_is_waited_for() -> None:
    m = Machine()
    turn = started_turn(m)
    m(Tick(5.0), PermissionAsked(turn, "r1"))
    m(SpeechStarted(34.7))
    assert m.quiet(Tick(35.1)) == []  # the user is answering
    probe = jobs(m(UtteranceEnded(utt(34.7, 35.2), "hangover")), Transcribe)[0]
    assert m.quiet(TranscriptReady(probe, "Yes.")) == [Answer(turn, "r1", "allow")]


def test_a_bare_answer_to_a_question_settled_meanwhile_is_no_request() -> None:
    m = Machine()
    turn = started_turn(m)
    m(PermissionAsked(turn, "r1"), SpeechStarted(8.0))
    assert m.quiet(Command("allow")) == [Answer(turn, "r1", "allow")]  # ptt allow, meanwhile
    probe = jobs(m(UtteranceEnded(utt(8.0, 8.6), "hangover")), Transcribe)[0]
    (dropped,) = m.quiet(TranscriptReady(probe, "Yes, go ahead."))
    assert isinstance(dropped, Dropped) and dropped.text == "Yes, go ahead."  # (logged)
    out = m.quiet(AgentFinished(turn, "answered"), ReplyDone(turn))
    assert not [a for a in out if isinstance(a, Send)]  # "Yes" is not sent to the agent


def test_a_stop_drops_what_waited_behind_the_turn_and_says_so_in_the_log() -> None:
    m = Machine()
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn), Tick(6.0), SpeechStarted(6.0))
    (probe,) = jobs(m(UtteranceEnded(utt(6.0, 7.5), "hangover")), Transcribe)
    queued = m.quiet(TranscriptReady(probe, "Also check the logs."))
    assert queued == [ResumeReply(turn, why=WAITED_UNDER)]  # queued behind it; it goes on
    out = m.quiet(Command("stop"))
    assert Interrupt(turn) in out
    assert Dropped("Also check the logs.", "stopped with the turn it waited for") in out


def test_control_commands_answer_and_stop() -> None:
    m = Machine()
    turn = started_turn(m)
    m(PermissionAsked(turn, "r1"))
    assert m.quiet(Command("always")) == [Answer(turn, "r1", "always")]
    assert m.quiet(Command("stop")) == [StopReply(turn), Interrupt(turn)]
    assert m.quiet(AgentFinished(turn, "answered")) == [Say("Stopped.")]


def test_stop_when_nothing_runs_does_nothing() -> None:
    assert Machine().quiet(Command("stop")) == []


# ---- push-to-talk and wake word --------------------------------------------------------------


def test_push_to_talk_hold_ends_at_release_plus_grace() -> None:
    m = Machine(replace(POLICY, mode="ptt-hold"))
    assert m.phase is Phase.IDLE and not m.m.hearing
    out = m(KeyDown(1.0))
    assert out == [StartSegment(hold=True), PlayEarcon("listening"), SetPhase(Phase.LISTENING)]
    assert m.m.hearing
    # Pauses do not end a held turn.
    assert m.quiet(SpeechStarted(1.0), *paused(utt(1.0, 2.0)), Tick(9.0)) == []
    m(KeyUp(10.0))
    assert m.quiet(Tick(10.15)) == []
    assert m.quiet(Tick(10.25)) == [EndSegment()]
    (final,) = [a for a in m(UtteranceEnded(utt(1.0, 10.0), "forced")) if isinstance(a, Transcribe)]
    assert final.purpose == "request"


def test_push_to_talk_a_held_segment_cut_with_nothing_kept_goes_on() -> None:
    m = Machine(replace(POLICY, mode="ptt-hold"))
    m(KeyDown(0.0), SpeechStarted(0.0), KeyUp(27.95))
    # The segmenter's length limit, with too little voice in it: the segment goes on ...
    assert m.quiet(SpeechDropped(28.0, split=True), SpeechStarted(28.0)) == []
    assert m.quiet(Tick(28.2)) == [EndSegment()]  # ... and the release still ends it
    # While the agent works, the limit reached with the key held stops nothing.
    m = Machine(replace(POLICY, mode="ptt-hold"))
    m(KeyDown(0.5))
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn))  # a sentence was heard, then a tool runs
    assert StartSegment(hold=True) in m.quiet(KeyDown(9.0), SpeechStarted(9.0))
    # (The reply kept from its next sentence while they speak stays paused: renewed.)
    assert m.quiet(SpeechDropped(37.0, split=True), SpeechStarted(37.0), Tick(37.5)) == [
        PauseReply(turn, renew=True)
    ]
    assert m.quiet(KeyUp(38.0), Tick(38.3)) == [EndSegment()]
    # Released with nothing said, the press is a tap, as ever: that, not the limit, stops.
    assert m.quiet(SpeechDropped(38.3)) == [StopReply(turn), Interrupt(turn)]


def test_push_to_talk_tap_while_the_agent_works_stops_it() -> None:
    m = Machine(replace(POLICY, mode="ptt-hold"))
    m(KeyDown(0.5))
    turn = started_turn(m)
    m(ReplyPlaying(turn), ReplyIdle(turn))
    m(KeyDown(9.0), SpeechStarted(9.0), KeyUp(9.1), Tick(9.4))
    assert m.quiet(SpeechDropped(9.4)) == [StopReply(turn), Interrupt(turn)]


def test_push_to_talk_tap_before_the_reply_is_heard_stops_the_agent_for_good() -> None:
    # A press before the reply goes on with the request, and interrupts the agent to hear
    # the rest; released with nothing said, the request was sent again and the agent ran twice.
    m = Machine(replace(POLICY, mode="ptt-hold"))
    m(KeyDown(0.5))
    turn = started_turn(m)
    assert Interrupt(turn) in m.quiet(KeyDown(5.0), SpeechStarted(5.0))
    assert m.quiet(KeyUp(5.1), Tick(5.4)) == [EndSegment()]
    assert m.quiet(SpeechDropped(5.4)) == []  # nothing sent
    assert m.quiet(AgentFinished(turn, "interrupted")) == [Say("Stopped.")]
    out = m(ReplyDone(turn))
    assert not [a for a in out if isinstance(a, Send)]
    # Said with words, the press still goes on with the request, as before.
    m = Machine(replace(POLICY, mode="ptt-hold"))
    m(KeyDown(0.5))
    turn = started_turn(m)
    m(KeyDown(5.0), SpeechStarted(5.0), KeyUp(6.5))
    out = m(UtteranceEnded(utt(5.0, 6.5), "forced"))
    (probe,) = [a for a in out if isinstance(a, Transcribe)]  # is it "stop"?
    out = m(TranscriptReady(probe.job, "The unit tests only."))
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    again = sent(m(TranscriptReady(final.job, "Run the tests, the unit tests only.")))
    assert again.revises and again.text == "Run the tests, the unit tests only."


def test_push_to_talk_toggle_ends_on_the_second_press() -> None:
    m = Machine(replace(POLICY, mode="ptt-toggle"))
    m(KeyDown(1.0), SpeechStarted(1.0))
    assert m.quiet(KeyDown(5.0)) == [EndSegment()]


def test_wake_word_opens_the_microphone_and_a_follow_up_window() -> None:
    m = Machine(replace(POLICY, mode="wake", follow_up_s=5.0, wake_listen_s=8.0))
    assert m.phase is Phase.IDLE and not m.m.hearing
    assert m(WakeWord(1.0)) == [
        StartSegment(hold=False),  # from the end of the word: the same breath is the request's
        PlayEarcon("listening"),
        SetPhase(Phase.LISTENING),
    ]
    assert m.m.hearing
    turn = started_turn(m)
    m(ReplyPlaying(turn), AgentFinished(turn, "answered"), Tick(6.0))
    out = m(ReplyDone(turn))
    assert PlayEarcon("listening") in out and m.phase is Phase.LISTENING
    assert m.m.hearing  # a follow-up needs no wake word ...
    m(Tick(10.9))
    assert m.m.hearing
    assert m(Tick(11.1)) == [SetPhase(Phase.IDLE)]  # ... for follow_up_s
    assert not m.m.hearing


def test_wake_word_times_out_without_speech() -> None:
    m = Machine(replace(POLICY, mode="wake", wake_listen_s=8.0))
    m(WakeWord(1.0))
    assert m(Tick(9.1)) == [SetPhase(Phase.IDLE)]


WAKE = replace(POLICY, mode="wake", follow_up_s=5.0, wake_listen_s=8.0)


def test_a_request_in_the_same_breath_as_the_wake_word_is_sent() -> None:
    m = Machine(WAKE)
    m(WakeWord(1.0))
    # The loop started the segment where the word ended; the request follows at once.
    out = m(SpeechStarted(1.0), UtteranceEnded(utt(1.0, 2.5), "hangover"))
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.purpose == "request" and final.audio.start_s == 1.0
    assert sent(m(TranscriptReady(final.job, "What time is it?"))).text == "What time is it?"


def test_nothing_said_after_the_wake_word_keeps_the_window_open() -> None:
    m = Machine(WAKE)
    m(WakeWord(1.0), SpeechStarted(1.0))
    # The segment the wake word started ends with no voice (the user waits for the chime).
    assert m.quiet(SpeechDropped(2.5)) == []
    assert m.m.hearing and m.phase is Phase.LISTENING
    # The request comes a moment later, inside wake.listen_s: it needs no second wake word.
    m(Tick(4.0))
    out = m(SpeechStarted(4.0), UtteranceEnded(utt(4.0, 5.5), "hangover"))
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert sent(m(TranscriptReady(final.job, "Run the tests."))).text == "Run the tests."


def test_a_cough_after_the_wake_word_does_not_close_the_window_early() -> None:
    m = Machine(WAKE)
    m(WakeWord(1.0), SpeechStarted(1.0), SpeechDropped(1.5))
    m(SpeechStarted(3.0), SpeechDropped(3.2))  # a cough
    m(Tick(8.9))
    assert m.m.hearing
    assert m(Tick(9.1)) == [SetPhase(Phase.IDLE)]
    assert not m.m.hearing


def test_an_empty_transcript_after_the_wake_word_sends_nothing_and_the_window_stays() -> None:
    m = Machine(WAKE)
    m(WakeWord(1.0), SpeechStarted(1.0))
    out = m(UtteranceEnded(utt(1.0, 2.0), "hangover"))
    (job,) = jobs(out, Transcribe)
    assert [a for a in m(TranscriptReady(job, "")) if isinstance(a, Send)] == []
    m(Tick(5.0))
    assert m.m.hearing and m.phase is Phase.LISTENING


def test_a_wake_while_already_listening_restarts_nothing() -> None:
    """A key press in the follow-up window (wake mode): no new segment, no second chime."""
    m = Machine(WAKE)
    m(WakeWord(1.0))
    turn = started_turn(m)
    m(ReplyPlaying(turn), AgentFinished(turn, "answered"), ReplyDone(turn))
    assert m.m.hearing
    assert m.quiet(KeyDown(6.0)) == []
    assert m.m.hearing


def test_the_wake_word_stops_a_playing_reply_and_starts_a_request_during_the_turn() -> None:
    """Only reaches the machine with echo cancellation (the loop ignores a wake word heard
    over the assistant's own voice otherwise)."""
    m = Machine(WAKE)
    m(WakeWord(0.5))
    turn = started_turn(m)
    m(ReplyPlaying(turn))
    assert not m.m.hearing
    out = m.quiet(WakeWord(4.0))
    assert out == [StopReply(turn), StartSegment(hold=False), PlayEarcon("listening")]
    out = m(SpeechStarted(4.0), UtteranceEnded(utt(4.0, 4.6), "hangover"))
    (probe,) = [a for a in out if isinstance(a, Transcribe)]
    assert probe.purpose == "probe"  # "stop" stops the agent; anything else waits its turn
    assert m.quiet(TranscriptReady(probe.job, "Stop.")) == [StopReply(turn), Interrupt(turn)]


def test_without_a_follow_up_window_every_request_needs_the_wake_word() -> None:
    m = Machine(replace(WAKE, follow_up_s=0.0))
    m(WakeWord(1.0))
    turn = started_turn(m)
    m(ReplyPlaying(turn), AgentFinished(turn, "answered"))
    out = m(ReplyDone(turn))
    assert PlayEarcon("listening") not in out  # no chime: nothing is listening
    assert m.phase is Phase.IDLE and not m.m.hearing


def test_the_wake_word_said_in_the_follow_up_window_is_cut_from_the_request() -> None:
    m = Machine(WAKE)
    m(WakeWord(1.0))
    turn = started_turn(m)
    m(ReplyPlaying(turn), AgentFinished(turn, "answered"), ReplyDone(turn))
    # The follow-up starts with the wake word out of habit: the segment began with it ...
    assert m.quiet(SpeechStarted(6.0)) == [] and m.m.user_speaking
    # ... and starts again where it ended; the request is the words after it.
    assert m.quiet(WakeWord(6.7)) == [StartSegment(hold=False), PlayEarcon("listening")]
    m(SpeechStarted(6.7))
    out = m(UtteranceEnded(utt(6.7, 8.0), "hangover"))
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.audio.start_s == 6.7


def test_a_wake_word_after_the_request_began_restarts_nothing() -> None:
    m = Machine(WAKE)
    m(WakeWord(1.0), SpeechStarted(1.0), UtteranceEnded(utt(1.0, 29.0), "max_length"))
    # The user is still talking (the first part was cut at the length limit) and says the
    # word inside the request: it is just a word of it.
    m(SpeechStarted(29.0))
    assert m.quiet(WakeWord(30.0)) == []


def test_a_wake_word_said_after_words_of_the_request_keeps_them() -> None:
    # "Hey Jarvis, he was not an ill disposed young man [0.4 s] Hey Jarvis": restarted at
    # the second word, the segment lost all that came before it, and nothing was sent.
    m = Machine(WAKE)
    m(WakeWord(1.0), SpeechStarted(1.0))
    assert m.quiet(WakeWord(4.5)) == []
    out = m(UtteranceEnded(utt(1.0, 5.5), "hangover"))
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.audio.start_s == 1.0


def test_in_wake_mode_only_speech_soon_after_the_request_goes_on_with_it() -> None:
    # A television talking while the agent works is heard only after the wake word.
    m = Machine(WAKE)
    m(WakeWord(0.5))
    turn = started_turn(m)  # the request's segment ended at 3.0
    m(Tick(4.9))
    assert m.m.hearing  # the user may go on after a pause the end of turn took for the end
    m(Tick(5.1))
    assert not m.m.hearing  # their next words need the wake word, as a TV's do
    assert m.quiet(WakeWord(8.0)) == [StartSegment(hold=False), PlayEarcon("listening")]
    # The words after the word decide. None (a false wake, a cough): the agent goes on, as
    # it was; it used to be interrupted and the request sent again.
    assert m.quiet(SpeechStarted(8.0)) == []  # (the segment the word started)
    assert m.m.hearing
    out = m.quiet(SpeechDropped(9.0))
    assert not [a for a in out if isinstance(a, Interrupt | Send)]
    assert m.m.busy and not m.m.hearing
    # Words: they go on with the request, which the agent then has anew.
    m.quiet(WakeWord(12.0), SpeechStarted(12.0))
    out = m.quiet(UtteranceEnded(utt(12.0, 13.0), "hangover"))
    (probe,) = [a for a in out if isinstance(a, Transcribe)]
    out = m.quiet(TranscriptReady(probe.job, "The unit tests only."))
    assert Interrupt(turn) in out


def test_a_finished_but_not_sure_end_is_heard_after_the_likely_wait() -> None:
    m = Machine()
    m(HeardOverReply(True))
    seg = utt(1.0, 3.0)
    say_request(m, seg, "Run the test suite.", 0.9)
    assert m(Tick(3.31)) == [EndSegment()]
    out = m.quiet(UtteranceEnded(seg, "forced"))
    turn = sent(out).turn
    assert Release(turn) not in out  # the agent has it; the user may still go on
    assert Release(turn) not in m.quiet(Tick(3.79))
    assert Release(turn) in m.quiet(Tick(3.81))


def test_a_turn_ended_on_a_guess_holds_its_reply_until_the_pause_is_long() -> None:
    m = Machine()
    seg = utt(1.0, 3.0)
    say_request(m, seg, "Run the test suite.", 0.10)  # the words say done, the voice does not
    assert m(Tick(3.81)) == [EndSegment()]
    out = m.quiet(UtteranceEnded(seg, "forced"))
    turn = sent(out).turn
    assert Release(turn) not in out  # the agent starts; the user does not hear it yet
    assert m.quiet(Tick(4.4)) == [PlayEarcon("thinking")]
    assert m.quiet(Tick(4.51)) == [Release(turn)]


def test_heard_over_the_reply_a_turn_ended_on_a_guess_is_heard_when_it_ends() -> None:
    """A word said over the reply would stop it and join the request: no wait for the
    longest pause (read sentences such as "... made amiable himself." sound open to the
    model)."""
    m = Machine()
    m(HeardOverReply(True))
    seg = utt(1.0, 3.0)
    say_request(m, seg, "Run the test suite.", 0.10)
    assert m(Tick(3.79)) == []
    assert m(Tick(3.81)) == [EndSegment()]
    out = m.quiet(UtteranceEnded(seg, "forced"))
    assert Release(sent(out).turn) in out


def test_a_reply_due_when_heard_over_it_waits_again_once_the_room_is_lost() -> None:
    """The canceller lost the echo (an underrun) after the turn ended on a guess: the
    microphone is deaf over the reply again, so the reply waits for the longest pause."""
    m = Machine()
    m(HeardOverReply(True))
    seg = utt(1.0, 3.0)
    say_request(m, seg, "Run the test suite.", 0.10)
    m(Tick(3.81))
    turn = sent(m.quiet(HeardOverReply(False), UtteranceEnded(seg, "forced"))).turn
    assert Release(turn) not in m.quiet(Tick(4.4))
    assert m.quiet(Tick(4.51)) == [Release(turn)]


def test_speech_during_a_held_reply_joins_the_request() -> None:
    m = Machine()
    first, more = utt(1.0, 3.0), utt(4.2, 6.0)
    say_request(m, first, "Run the test suite.", 0.10)
    m(Tick(3.81))
    turn = sent(m(UtteranceEnded(first, "forced"))).turn
    m(Tick(4.1))
    assert m.quiet(SpeechStarted(4.2)) == []  # its words decide
    (probe,) = jobs(m(UtteranceEnded(more, "hangover")), Transcribe)  # short: "stop"?
    out = m(TranscriptReady(probe, "in verbose mode."))
    assert Interrupt(turn) in out  # new words: the turn is stopped now
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.audio == join([first, more])


def test_a_sure_end_is_heard_at_once_when_the_user_is_heard_over_the_reply() -> None:
    m = Machine()
    m(HeardOverReply(True))  # echo cancelled (or a headset)
    seg = utt(1.0, 3.0)
    say_request(m, seg, "Run the test suite.", 0.99)
    m(Tick(3.31))
    out = m.quiet(UtteranceEnded(seg, "forced"))
    assert Release(sent(out).turn) in out


def test_half_duplex_holds_even_a_sure_end_until_the_longest_pause() -> None:
    """Words said over the reply would be lost: a thinking pause after "He was not." sounds
    finished to the model, and live on real voices such replies came mid-request."""
    m = Machine()
    seg = utt(1.0, 3.0)
    say_request(m, seg, "He was not.", 0.99)
    assert m(Tick(3.31)) == [EndSegment()]  # the agent still starts at once
    out = m.quiet(UtteranceEnded(seg, "forced"))
    turn = sent(out).turn
    assert Release(turn) not in out
    assert Release(turn) not in m.quiet(Tick(4.49))
    assert Release(turn) in m.quiet(Tick(4.51))


def held_turn(m: Machine) -> int:
    """A request ended by a sure guess at 3.3 s, half-duplex: its reply is due at 4.5 s."""
    seg = utt(1.0, 3.0)
    say_request(m, seg, "He was not.", 0.99)
    m(Tick(3.31))
    turn = sent(m.quiet(UtteranceEnded(seg, "forced"))).turn
    assert m.quiet(Tick(3.4)) == [PlayEarcon("thinking")]  # again at 7.4 s
    return turn


def test_a_due_reply_waits_for_an_onset_silero_has_not_confirmed_yet() -> None:
    """The breath before the next sentence: webrtcvad hears it at once, Silero only once the
    word comes. Released at 4.5 s, the reply would have made the word inaudible."""
    m = Machine()
    held_turn(m)
    assert m.quiet(OnsetUnconfirmed(4.47), Tick(4.51)) == []
    assert m.quiet(OnsetUnconfirmed(4.53), OnsetUnconfirmed(4.56)) == []
    assert m.quiet(SpeechStarted(4.38), Tick(4.7)) == []  # never released: its words decide


def test_a_sound_louder_than_the_echo_that_no_detector_proposed_does_not_hold_the_reply() -> None:
    """Over the earcon, the segmenter asks Silero at every frame louder than the echo: that
    alone is no onset, and the due reply is released on time."""
    m = Machine()
    turn = held_turn(m)
    assert m.quiet(OnsetUnconfirmed(4.47, 0.2, proposed=False), Tick(4.51)) == [Release(turn)]


def test_an_onset_that_dies_away_releases_the_reply() -> None:
    m = Machine()
    turn = held_turn(m)
    assert m.quiet(OnsetUnconfirmed(4.4), Tick(4.51), Tick(4.69)) == []
    assert m.quiet(Tick(4.71)) == [Release(turn)]


def test_noise_holds_a_due_reply_only_briefly() -> None:
    """A fan or music makes onsets Silero never confirms: the reply waits at most 0.5 s."""
    m = Machine()
    turn = held_turn(m)
    for t in (4.45, 4.6, 4.75, 4.9, 4.99):
        assert m.quiet(OnsetUnconfirmed(t), Tick(t)) == []
    assert m.quiet(OnsetUnconfirmed(5.0), Tick(5.01)) == [Release(turn)]


def test_an_onset_silero_finds_likely_speech_holds_a_due_reply_longer() -> None:
    """jfk.flac, half-duplex: "ask" scores 0.5-0.64, under Silero's 0.7 that confirms a
    voice, and was confirmed only at "not" 0.7 s on. Released at the 0.5 s bound, the reply
    played over "ask not what your country can", and those words were lost. The segmenter
    marks such onsets likely (voice.vad.LIKELY_SPEECH, MURMUR_FLOOR)."""
    m = Machine()
    held_turn(m)  # due at 4.5 s
    for t in (4.45, 4.6, 4.75, 4.9, 5.05, 5.2, 5.35):
        assert m.quiet(OnsetUnconfirmed(t, 0.6, likely=True), Tick(t + 0.01)) == []
    assert m.quiet(OnsetUnconfirmed(5.4, 0.3), Tick(5.41)) == []  # the gap between words
    assert m.quiet(SpeechStarted(4.4), Tick(5.6)) == []  # never released: its words decide


def test_likely_onsets_never_confirmed_hold_a_due_reply_at_most_1_5_s() -> None:
    m = Machine()
    turn = held_turn(m)
    for t in (4.45, 4.6, 4.75, 4.9, 5.05, 5.2, 5.35, 5.5, 5.65, 5.8, 5.95):
        assert m.quiet(OnsetUnconfirmed(t, 0.6, likely=True), Tick(t + 0.01)) == []
    assert m.quiet(OnsetUnconfirmed(6.0, 0.6, likely=True), Tick(6.01)) == [Release(turn)]


def test_an_old_unconfirmed_onset_does_not_hold_the_reply() -> None:
    m = Machine()
    turn = held_turn(m)
    assert m.quiet(OnsetUnconfirmed(3.9), Tick(4.49)) == []
    assert m.quiet(Tick(4.51)) == [Release(turn)]


def test_the_canceller_learning_the_room_changes_the_wait_for_later_turns() -> None:
    m = Machine()
    m(HeardOverReply(True), HeardOverReply(False))  # learnt, then lost (another device)
    seg = utt(1.0, 3.0)
    say_request(m, seg, "Run the test suite.", 0.99)
    m(Tick(3.31))
    turn = sent(m.quiet(UtteranceEnded(seg, "forced"))).turn
    assert Release(turn) not in m.quiet(Tick(4.4))


def reply_heard_over(heard_at_s: float, handled_at_s: float | None = None) -> tuple[Machine, int]:
    """A request ended at 3.0 s and sent at 3.31 s; its reply plays from ``heard_at_s``
    (the loop handles that at ``handled_at_s``; without it, the event carries no time)."""
    m = Machine()
    m(HeardOverReply(True))
    first = utt(1.0, 3.0)
    say_request(m, first, "He was not.", 0.99)
    m(Tick(3.31))
    turn = sent(m(UtteranceEnded(first, "forced"))).turn
    if handled_at_s is None:
        m(Tick(heard_at_s), ReplyPlaying(turn))
    else:
        m(Tick(handled_at_s), ReplyPlaying(turn, heard_at_s))
    return m, turn


def words_over_it(m: Machine, turn: int, onset_s: float) -> list[Action]:
    """New words said from ``onset_s`` on: what they make the machine do."""
    more = utt(onset_s, onset_s + 1.5)
    (probe,) = jobs(m(UtteranceEnded(more, "hangover")), Transcribe)
    return m(TranscriptReady(probe, "an ill-disposed young man."))


def stops(out: list[Action], turn: int) -> bool:
    return any(isinstance(a, StopReply) and a.turn == turn for a in out)


def assert_joins(m: Machine, turn: int, onset_s: float, joins: bool) -> None:
    """Either way the reply falls silent at the onset and stops once words are heard; a
    request going on also interrupts the agent (only then: a hum or music would not)."""
    out = words_over_it(m, turn, onset_s)
    assert stops(out, turn), out
    assert (Interrupt(turn) in out) is joins, out


@pytest.mark.parametrize(
    ("paused_at_s", "onset_s", "joins"),
    [
        (None, 4.3, True),  # began 1.3 s after the last word; confirmed at 4.8
        (4.2, 4.85, True),  # a likely onset 1.2 s after paused the reply: the voice began there
        (None, 4.85, False),  # began past the longest pause, 1.54 s into the reply: a new
        # request over the reply
    ],
)
def test_speech_over_the_reply_is_timed_from_where_it_began_not_from_its_confirmation(
    paused_at_s: float | None, onset_s: float, joins: bool
) -> None:
    m, turn = reply_heard_over(3.31)
    if paused_at_s is not None:
        likely = [OnsetUnconfirmed(paused_at_s + k * 0.15, likelihood=0.9) for k in range(4)]
        assert PauseReply(turn) in m.quiet(*likely)
    # Silero confirms it only now: the canceller held the voice back at first
    m(Tick(max(4.8, onset_s)))
    out = m.quiet(SpeechStarted(onset_s))
    assert out == ([] if paused_at_s is not None else [PauseReply(turn)])
    assert_joins(m, turn, onset_s, joins)


@pytest.mark.parametrize(
    ("heard_at_s", "onset_s", "joins"),
    [
        (3.9, 4.65, True),  # past the longest pause, but 0.75 s into the reply: going on
        (3.31, 4.65, True),  # 1.34 s into the reply (a sure end, live: 1.21-1.23 s)
        (3.9, 5.45, False),  # 1.55 s into the reply: the user heard it, a new request
        (3.31, 4.85, False),  # 1.54 s into the reply
    ],
)
def test_speech_in_the_first_moments_of_the_reply_answers_nothing_the_user_heard(
    heard_at_s: float, onset_s: float, joins: bool
) -> None:
    m, turn = reply_heard_over(heard_at_s)
    m(Tick(onset_s + 0.4))  # confirmed late: the canceller held the first word back
    assert m.quiet(SpeechStarted(onset_s)) == [PauseReply(turn)]
    assert_joins(m, turn, onset_s, joins)


def test_okay_heard_at_a_pause_in_the_first_moments_of_the_reply_interrupts_nothing() -> None:
    # Live the segmenter reports the pause first: "He was not. Okay." joined at that pause
    # must not interrupt the agent as new words would.
    m, turn = reply_heard_over(3.31)
    m(Tick(4.6))
    assert m.quiet(SpeechStarted(4.51)) == [PauseReply(turn)]
    seg = utt(4.51, 5.0)
    (at_pause,) = jobs(m(Tick(5.2), SpeechPaused(seg, 0.12)), Transcribe)
    out = m.quiet(TranscriptReady(at_pause, "He was not. Okay."))
    assert Interrupt(turn) not in out and StopReply(turn) not in out, out
    (probe,) = jobs(m(UtteranceEnded(seg, "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, "Okay."))
    assert Interrupt(turn) not in out and any(isinstance(a, ResumeReply) for a in out), out


def test_okay_heard_as_the_turn_ended_is_sent_at_once() -> None:
    m, turn = reply_heard_over(3.31)
    m(Tick(4.6))
    m(SpeechStarted(4.51))
    m(AgentFinished(turn, "answered"), ReplyDone(turn))  # over while the words were heard
    (probe,) = jobs(m(UtteranceEnded(utt(4.51, 5.0), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, "Okay."))
    assert [a.text for a in out if isinstance(a, Send)] == ["Okay."], out


GOES_ON = ("an ill-disposed young man.", "He was not an ill-disposed young man.")


@pytest.mark.parametrize(
    ("heard", "sends"),
    [
        (GOES_ON, [("He was not an ill-disposed young man.", True)]),  # "Okay." after it
        (HUM, [("Okay.", False)]),  # nothing new: the turn stands, and the queue goes now
    ],
)
def test_what_was_queued_waits_while_the_user_goes_on_with_the_turn_that_ended(
    heard: tuple[str, ...], sends: list[tuple[str, bool]]
) -> None:
    """ "Okay." said in the reply's first moments waits behind the turn; the turn is over
    while the user goes on with its request: sent then, it was a request of its own in the
    middle of theirs, which then revised it instead of their own."""
    m, turn = reply_heard_over(3.31)
    m(Tick(3.7), SpeechStarted(3.6), Tick(4.1))
    (probe,) = jobs(m(UtteranceEnded(utt(3.6, 3.9), "hangover")), Transcribe)
    assert m.quiet(TranscriptReady(probe, "Okay.")) == [ResumeReply(turn)]  # queued
    m(Tick(4.5), ReplyIdle(turn), Tick(4.6))
    assert m.quiet(SpeechStarted(4.6)) == []  # going on: its words decide
    assert m.quiet(Tick(5.0), AgentFinished(turn, "answered"), ReplyDone(turn)) == []
    out = answer_all(m, m(Tick(7.0), UtteranceEnded(utt(4.6, 6.6), "hangover")), heard)
    assert [(a.text, a.revises) for a in out if isinstance(a, Send)] == sends
    if heard is GOES_ON:
        revised = sent(out).turn
        m(ReplyPlaying(revised), AgentFinished(revised, "answered"))
        assert sent(m(ReplyDone(revised))).text == "Okay."


def test_okay_before_the_reply_played_joins_the_request() -> None:
    m = Machine()
    turn = going_on(m, "Delete the build folder.")
    (probe,) = jobs(m(UtteranceEnded(utt(3.5, 3.9), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, "Yeah, okay."))
    (whole,) = [a for a in out if isinstance(a, Transcribe)]
    assert whole.audio.start_s == pytest.approx(1.0), out  # the request heard again, joined
    assert turn in [a.turn for a in out if isinstance(a, StopReply | Interrupt)]


def test_a_reply_heard_while_the_loop_caught_up_is_timed_from_when_it_played() -> None:
    # A stall: the loop's clock is at 4.5 s when it handles the reply that began at 3.4 s,
    # and the voice it hears now began at 5.1 s, 1.7 s into the reply (0.6 s after the loop
    # learnt of it): a new request.
    m, turn = reply_heard_over(3.4, handled_at_s=4.5)
    m(Tick(5.5))
    assert m.quiet(SpeechStarted(5.1)) == [PauseReply(turn)]
    assert_joins(m, turn, 5.1, joins=False)


@pytest.mark.parametrize(
    ("said", "resumes", "sent_after"),
    [
        ("Okay.", True, "Okay."),  # listening: the reply goes on, the words go after it
        ("Mm-hmm.", True, None),  # a hum: no request
        ("Okay, stop.", False, None),
    ],
)
def test_a_backchannel_in_the_first_moments_of_the_reply_lets_it_go_on(
    said: str, resumes: bool, sent_after: str | None
) -> None:
    """1.2 s into the reply the user cannot have heard it: speech there goes on with the
    request. But "Okay." only says they listen, as it does later over the reply: the agent
    is not interrupted for it."""
    m, turn = reply_heard_over(3.31)
    m(Tick(4.6))
    assert m.quiet(SpeechStarted(4.51)) == [PauseReply(turn)]
    (probe,) = jobs(m(UtteranceEnded(utt(4.51, 5.0), "hangover")), Transcribe)
    out = m.quiet(TranscriptReady(probe, said))
    assert (Interrupt(turn) in out) is not resumes, out
    assert any(isinstance(a, ResumeReply) for a in out) is resumes, out
    if not resumes:
        return
    m(Tick(8.0), AgentFinished(turn, "answered"))
    sends = [a for a in m(ReplyDone(turn)) if isinstance(a, Send)]
    assert [s.text for s in sends] == ([sent_after] if sent_after else [])
    if sends:  # its audio is its own, not the request's it went on with: said again whole,
        # the words going on with it are heard after "Okay." alone
        m(Tick(8.3), SpeechStarted(8.3))
        (probe,) = jobs(m(UtteranceEnded(utt(8.3, 9.0), "hangover")), Transcribe)
        out = m(TranscriptReady(probe, "And the tests too."))
        (whole,) = [a.audio for a in out if isinstance(a, Transcribe)]
        assert whole.start_s == pytest.approx(4.51), whole


@pytest.mark.parametrize(
    ("resumes_at_s", "joins"),
    [
        (3.9, True),  # 0.9 s after the last word: a thinking pause, the reply came early
        (4.45, True),
        (4.85, False),  # past the longest pause (1.5 s), and 1.54 s into the reply: a new
        # request over the reply
    ],
)
def test_heard_over_the_reply_speech_within_the_longest_pause_joins_the_request(
    resumes_at_s: float, joins: bool
) -> None:
    m = Machine()
    m(HeardOverReply(True))
    first, more = utt(1.0, 3.0), utt(resumes_at_s, resumes_at_s + 1.5)
    say_request(m, first, "He was not.", 0.99)
    m(Tick(3.31))
    turn = sent(m(UtteranceEnded(first, "forced"))).turn
    m(ReplyPlaying(turn), Tick(resumes_at_s))
    out = m.quiet(SpeechStarted(resumes_at_s))
    assert out == [PauseReply(turn)]  # held until its words decide
    (probe,) = jobs(m(UtteranceEnded(more, "hangover")), Transcribe)  # short: "stop"?
    out = m(TranscriptReady(probe, "an ill-disposed young man."))
    assert stops(out, turn), out
    assert (Interrupt(turn) in out) is joins, out
    if not joins:
        return  # barge-in: a new request over the reply
    (final,) = [a for a in out if isinstance(a, Transcribe)]
    assert final.audio == join([first, more])
    out = m(TranscriptReady(final.job, "He was not an ill-disposed young man."))
    assert sent(out) == Send(
        sent(out).turn, "He was not an ill-disposed young man.", True, speech_end_s=more.end_s
    )
