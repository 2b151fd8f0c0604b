"""Turn-taking: who speaks when, as one pure state machine.

``TurnTaking.handle(event) -> list[Action]``: no threads, no clock (``Tick`` brings the time),
no devices. The loop (:mod:`voice.loop`) feeds it segmenter events, key presses, transcripts,
verdicts and the agent's progress, and carries out the actions it returns.

The rules, for people who pause while they think:

- The microphone stays live while the assistant transcribes and while the agent works; only
  the assistant's own sound is gated (by the loop, which knows what the speaker plays).
- A request is every segment the user says until the turn ends; segments split at the
  length limit are joined, never dropped.
- At each pause the words so far are transcribed, and the end-of-turn model is consulted
  once the pause reaches ``MODEL_PAUSE_S``; the :class:`~voice.end_of_turn.TurnAnalyzer`
  says how long the pause must last.
- A turn stays *open* until its reply starts to play, or, when the user is heard over the
  reply (``HeardOverReply``: echo cancelled, or a headset), until the longest pause has
  passed since its last word and the reply has played for a second. Speech that resumes
  while it is open belongs to the same request: before the agent has it, the transcription
  is simply redone on the joined audio; after, the reply stops, the agent is interrupted
  and the joined text replaces the request.
- Whisper (tiny.en), decoded fast, can end the transcript of several sentences after the
  first. A whole request's transcript with no more words than one of its pauses had means
  the rest was dropped: the request is heard again by the slower decode that does not stop
  early (``Transcribe`` for the "whole").
- Heard over the reply, an onset Silero finds likely speech but has not confirmed pauses
  the reply at once; without a confirmation the reply goes on. A confirmed voice holds it
  until its words are heard: words stop it; a sound with none (a cough, music) lets it go on.
- Once the user has heard a reply, new speech is a new request: "stop" stops the agent, an
  answer answers its question, anything else waits for the running turn to finish. It ends
  at a pause like any request; an answer, and any of it in wake mode (whose microphone
  closes once it is settled), wait for the longest pause.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Literal

from voice.audio import Utterance
from voice.commands import (
    added_words,
    answer_goes_on,
    is_backchannel,
    is_bare_answer,
    is_hum,
    is_stop,
    permission_answer,
    word_count,
)
from voice.end_of_turn import MODEL_PAUSE_S, PauseEvidence, TurnAnalyzer
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
    PermissionSettled,
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
from voice.vad import (
    OnsetUnconfirmed,
    SpeechDropped,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
)

Mode = Literal["vad", "ptt-hold", "ptt-toggle", "wake"]
Context = Literal["new", "continue", "during", "answer"]

STOPPED = "Stopped."
# A reply due to play waits while the detector hears an onset Silero has not confirmed this
# recently: the breath before the user's next words, which Silero confirms only with the
# word, 0.1-0.35 s later. Noise or music makes such onsets too, so the wait is bounded.
ONSET_HOLD_S = 0.3
ONSET_HOLD_MAX_S = 0.5
# Onsets the segmenter marks likely (Silero found them likely speech, or they make a murmur:
# voice.vad.LIKELY_SPEECH, MURMUR_FLOOR), though not sure enough to confirm, hold it longer:
# a word said unclearly is confirmed only with the next one (jfk.flac, half-duplex: "ask" at
# 0.5-0.64 was confirmed at "not", 0.7 s on; the reply, released at the 0.5 s bound, played
# over "ask not what your country can" and they were lost).
LIKELY_HOLD_MAX_S = 1.5
# Talking over the reply: Silero confirms a voice 0.03-0.5 s after webrtcvad's onset (two
# windows at vad.silero_threshold). So an onset with one such window (TurnPolicy's
# pause_likelihood) pauses the reply at once; the confirmation holds it (below), and it goes
# on when no such onset was heard for PAUSE_HOLD_S, or PAUSE_MAX_S after it paused. At 0.5
# (Silero's own start threshold), a melody in the room paused replies, and the music the
# pause unmasked then stopped them.
PAUSE_HOLD_S = 0.5
PAUSE_MAX_S = 1.0
# A confirmed voice keeps the reply paused until its words are heard (a pause transcript, or
# the whole segment's): a cough, a clap or music that Silero took for a voice has none, and
# the reply goes on. Words stop it. Real sentences said over a reply came with no pause for
# up to 3 s, so only a sound with no pause this long (music) lets the reply go on under it;
# words heard later still stop it. Under voice.devices.speaker.PAUSE_LIMIT_S.
HOLD_MAX_S = 8.0
# ... and goes on sooner once the sound has paused this long with no words in its transcript.
# Not at once: "um [pause] stop" would stutter the reply. (In the rig a melody as loud as the
# echo held a reply for 3.2 s: its segment ends only at the longest pause, having no words.)
HOLD_QUIET_S = 0.6
# Speech that begins this soon after the reply starts to play answers nothing the user heard:
# it is the request going on. Over a fresh reply the canceller holds a voice back for up to
# 0.5 s, so the onset the segmenter reports can come that late after the first word (live:
# "He was not [pause] an old-sposed young man" lost "an old" and became two requests). At a
# desk a sentence said 1.2 s after one that sounded finished began 1.21-1.23 s into the reply
# the sure end let play at once (the recording's soft last word ended its voice 0.37 s
# early), and at 1.0 s it became a request of its own (bench_real_voices.py, A+B@1200).
REPLY_UNHEARD_S = 1.5
# ... where its words decide (they are heard at its first pause: hands-free with an end of
# turn analyzer, or wake mode). Without them the agent is interrupted at the onset, before
# any word is heard, so a leak of the reply's own echo there would run the request again:
# the window stays at a second.
REPLY_UNHEARD_BLIND_S = 1.0
# Wake mode: speech this soon after the request's segment ended goes on with it (the user
# paused longer than the end of turn waits); later, while the agent works, only the wake word
# is heard. Open for the whole turn, a television talking over Claude's minutes of work was
# joined to the request and interrupted it.
WAKE_GOES_ON_S = 2.0
# A bare answer ("Yes.") heard this soon before the agent's question was asked answers it:
# heard over the end of the question (the question is asked once it has been spoken), it was
# queued behind the turn as a request, and the question was denied at its timeout.
ANSWER_EARLY_S = 2.0
# A wake word is said in this long: a segment that began longer before the word ended held
# words before it, which a restart at the word's end would throw away.
WAKE_WORD_MAX_S = 2.0


@dataclass(frozen=True)
class TurnPolicy:
    mode: Mode = "vad"
    analyzer: TurnAnalyzer | None = None  # None: only the segmenter's hangover ends a turn
    model: bool = False  # the end-of-turn model is installed: ask it at each pause that lasts
    thinking_repeat_s: float = 4.0  # 0: one cue when the agent starts, none after
    permission_timeout_s: float = 30.0
    release_grace_s: float = 0.2  # push-to-talk: audio kept after the key is let go
    follow_up_s: float = 5.0  # wake mode: after a reply, listen this long without the word
    wake_listen_s: float = 8.0  # wake mode: how long the word keeps the microphone open
    longest_pause_s: float = 1.5  # vad.hangover_ms: no pause inside a request is longer
    pause_likelihood: float = 0.7  # vad.silero_threshold: one window this sure pauses a reply


@dataclass
class _Pause:
    """Evidence about the pause at ``end_s`` (the end of the last voice the segmenter heard;
    the last word's is ``since_s``)."""

    end_s: float
    text_job: int
    verdict_job: int | None
    text: str | None = None
    probability: float | None = None
    model_failed: bool = False
    avg_logprob: float = 0.0  # how sure the decode of ``text`` was
    words_end_s: float | None = None  # the words ended at an earlier pause (_words_ended_s)

    @property
    def since_s(self) -> float:
        """Silence is counted from here: the end of the last word."""
        return self.end_s if self.words_end_s is None else self.words_end_s


@dataclass(frozen=True)
class _SpeakAt:
    """When a reply may be heard: a turn ended on a guess waits, and longer where words said
    over the reply would be lost. Both are kept, since the canceller can learn or lose the
    room between the turn's end and its reply."""

    deaf_s: float = 0.0  # half-duplex
    heard_s: float = 0.0  # the user is heard over the reply

    @classmethod
    def after(cls, pause: _Pause, analyzer: TurnAnalyzer, evidence: PauseEvidence) -> _SpeakAt:
        """Both times for a turn that ended at ``pause``. Half-duplex counts from the pause,
        not from an earlier end of its words (_words_ended_s): should a transcript have lost
        the user's last words, words said over that reply would be lost too."""
        deaf, heard = (
            start + analyzer.speak_after_ms(replace(evidence, heard_over_reply=h)) / 1000
            for start, h in ((pause.end_s, False), (pause.since_s, True))
        )
        return cls(deaf, heard)

    def due_s(self, heard_over_reply: bool) -> float:
        return self.heard_s if heard_over_reply else self.deaf_s


@dataclass
class _Request:
    context: Context
    base: list[Utterance] = field(default_factory=list)  # an open turn's audio it continues
    parts: list[Utterance] = field(default_factory=list)
    revises: bool = False  # the request it continues already went to the agent
    fallback: str = ""  # that request's text, should the continuation add no words
    speaking: bool = True
    cut: bool = False  # the segmenter cut it at the length limit and goes on listening
    pause: _Pause | None = None
    final_job: int | None = None
    probe_job: int | None = None
    # The request's text is the fallback and then new_text, the new words heard alone
    # (_lost_new_words): from the probe, or from final_job.
    tail: bool = False
    new_text: str | None = None
    speak_at: _SpeakAt = _SpeakAt()
    over_reply: int | None = None  # the turn whose playing reply it was said over (held)
    # Transcripts of the request up to a pause inside it: (the pause's start, the text).
    # Whisper (tiny.en) can end a request of several sentences after the first; the words
    # heard at an earlier pause show it (_ended_early), and the request is heard again whole.
    # They also show when the words ended (_words_ended_s).
    pause_jobs: dict[int, float] = field(default_factory=dict)
    heard: list[tuple[float, str]] = field(default_factory=list)
    early: str | None = None  # the transcript that ended early, while it is heard again
    backchannel: str = ""  # words heard over the reply that did not stop it ("Mm-hmm.")
    # A continuation whose turn is not interrupted yet: its new words decide (_go_on), and
    # without any (music, a hum) the turn goes on as if nothing was said.
    pending: _Turn | None = None
    onset_s: float | None = None  # when its first segment began
    # The turn this continuation interrupted: pushed with no words (a tap), it stays stopped.
    interrupted: _Turn | None = None

    def audio(self, *, new_only: bool = False) -> Utterance:
        return join(self.parts if new_only else self.base + self.parts)

    @property
    def ended(self) -> bool:
        return not self.speaking and (self.final_job is not None or self.probe_job is not None)


@dataclass(frozen=True)
class _Queued:
    """Requests heard while a turn ran, sent together once it is over. Their audio goes
    with them, so speech that goes on before the reply plays joins the whole of it."""

    text: str
    audio: list[Utterance]
    speak_at: _SpeakAt


@dataclass
class _Turn:
    id: int
    text: str
    audio: list[Utterance]
    heard_s: float | None = None  # when the reply began to play
    playing: bool = False
    agent_done: bool = False
    reply_done: bool = False
    stop_requested: bool = False
    answered: bool = False
    speak_at: _SpeakAt = _SpeakAt()
    released: bool = False
    silenced: bool = False  # its reply was stopped (a key, the wake word, "stop", a voice)

    @property
    def heard(self) -> bool:
        """The reply began to play: the turn is closed to continuations."""
        return self.heard_s is not None

    @property
    def over(self) -> bool:
        return self.agent_done and self.reply_done


@dataclass
class _Paused:
    """A reply paused for a voice not yet confirmed, or (``held_by``) for a confirmed voice
    whose words are not heard yet."""

    turn: int
    since_s: float  # (renewed while the request it is ``under`` is still being said)
    held_by: _Request | None = None
    held_s: float = 0.0
    # A reply that began (its next sentence, after a tool ran) while this request was being
    # said: it waits for the request's words, as a reply due does not begin over them.
    under: _Request | None = None


@dataclass(frozen=True)
class _EarlyAnswer:
    """A bare answer queued behind the turn (``queued``, after ``before``), which ended at
    ``end_s``: the answer, should the agent ask now."""

    text: str
    end_s: float
    queued: _Queued
    before: _Queued | None


@dataclass
class _Question:
    turn: int
    request: str
    deadline_s: float


def join(parts: list[Utterance]) -> Utterance:
    """One utterance from consecutive segments (the silence between them was trimmed)."""
    if len(parts) == 1:
        return parts[0]
    return Utterance(
        pcm=b"".join(p.pcm for p in parts),
        rate=parts[0].rate,
        start_s=parts[0].start_s,
        end_s=parts[-1].end_s,
    )


def _new_words(added: str) -> bool:
    """Words that change a request: not a hum ("mm-hmm"), not nothing."""
    return bool(word_count(added)) and not is_hum(added)


def _listening(turn: _Turn, text: str) -> bool:
    """``text``, said over the turn's reply, only says the user listens to it ("Okay.")."""
    return turn.heard_s is not None and is_backchannel(text)


def _lost_new_words(request: _Request, text: str) -> bool:
    """The transcript of a request that goes on with another (``fallback``) has no more
    words than that one had, though new speech was kept: its new words were dropped."""
    return (
        request.context == "continue"
        and bool(request.parts and request.fallback)
        and word_count(text) <= word_count(request.fallback)
    )


_SAME_END_S = 1e-6  # two pauses at the same end of speech
# A pause inside a request shows that Whisper ended it early only if the request went on this
# long after the pause began: the pause itself (vad.pause_ms at least) and a word or more.
# Less is a breath or a click webrtcvad took for voice after the last word: at a desk in the
# rig, 2 of 12 requests heard all their words at a pause 0.3 s before the end, and were heard
# again whole for nothing (0.6 s each).
_WENT_ON_S = 0.4


def _ended_early(request: _Request, text: str) -> bool:
    """A pause inside the request heard as many words as ``text``, the whole request's,
    though speech went on after it (see :data:`_WENT_ON_S`): Whisper ended the request
    early, and what followed was dropped."""
    if not request.parts:
        return False
    end_s = request.parts[-1].end_s
    count = word_count(text)
    before = word_count(request.fallback)  # a pause that heard no more than this was cut too
    return any(
        end_s - at_s >= _WENT_ON_S - _SAME_END_S and 0 < count <= word_count(heard) > before
        for at_s, heard in request.heard
    )


# Sound between two pauses that added no words (music, a breath, a cough that webrtcvad took
# for voice) does not put the end of the request off, when it lasted at most this long. In
# the rig a melody at -35 dBFS held a request's end open this way, pause after pause, 0.4-4.3
# s apart. Should Whisper have left a sentence out of the later transcript instead, the turn
# ends too soon, which costs no word: the request is heard again whole (_ended_early), what
# the user says next joins it (hands-free: with a key, the run is not looked for), and a
# half-duplex reply still waits from the later pause.
_WORDLESS_MAX_S = 4.0


# A transcript of new speech alone that Whisper looped on, cut down to this many words, is
# the loop alone.
_LOOPED_WORDS = 2


def _words_ended_s(request: _Request, pause: _Pause) -> float | None:
    """When the words of ``pause`` ended, if before it: at the earliest pause of a run before
    it, each at most :data:`_WORDLESS_MAX_S` before the next, whose transcripts add no words
    to the one before (one word heard differently is none: "Had he" / "At he"). (Should a
    transcript have lost words, the request is still heard again whole: _ended_early.)
    ``None``: the words went on up to this pause."""
    text, since, ended = pause.text or "", pause.end_s, None
    for at_s, heard in sorted(request.heard, reverse=True):
        if at_s > since - _SAME_END_S:
            continue  # this pause, or a later one
        added = word_count(added_words(text, heard))
        if since - at_s > _WORDLESS_MAX_S or added > 1 or word_count(text) > word_count(heard):
            break
        text, since, ended = heard, at_s, at_s
    return ended


def _heard_more(request: _Request, text: str) -> str | None:
    """A transcript heard at a pause inside a continuation that has more words than
    ``text`` and new words after the request it continues: the joined transcript can end
    where that request ended, and the new words heard alone come back with less than the
    pause heard (or nothing), which would drop words heard already and send the old ones
    again. The longest such transcript; None when ``text`` is the longest."""
    best = None
    for _at_s, heard in request.heard:
        longer = word_count(heard) > word_count(best or text)
        if longer and _new_words(added_words(heard, request.fallback)):
            best = heard
    return best


def _stopping(out: list[Action], turn: int) -> bool:
    """``out`` already stops the turn's reply."""
    return any(isinstance(a, StopReply) and a.turn == turn for a in out)


def _same_end(pause: _Pause, last: Utterance | None) -> bool:
    """The segment ended where the pause began: nothing was said after it."""
    return last is not None and abs(pause.end_s - last.end_s) < _SAME_END_S


class TurnTaking:
    def __init__(self, policy: TurnPolicy) -> None:
        self.policy = policy
        self._ids = itertools.count(1)
        self._now = 0.0
        self._phase: Phase | None = None
        self._request: _Request | None = None
        self._turn: _Turn | None = None
        self._retired: dict[int, _Turn] = {}  # superseded or stopped turns still winding down
        self._queued: _Queued | None = None
        self._question: _Question | None = None
        self._key_down = False
        self._release_at: float | None = None
        self._awake_until: float | None = None  # wake mode: the microphone is open until then
        self._cue_at: float | None = None
        self._heard_over_reply = False
        self._unconfirmed_s: float | None = None  # the last onset Silero did not confirm
        self._likely_onset_s: float | None = None  # ... of those, the last it found likely
        self._reply_paused: _Paused | None = None
        self._likely_s = float("-inf")  # the last onset likely enough to pause a reply
        self._held_cues: list[PlayEarcon | Say] = []  # due while the user spoke (_cue)
        self._early_answer: _EarlyAnswer | None = None

    # ---- what the loop asks ------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        return self._phase or self._derived_phase()

    @property
    def hearing(self) -> bool:
        """Whether microphone frames go to the segmenter (else only to the pre-roll / wake)."""
        if self.policy.mode == "vad":
            return True
        open_turn = self._turn is not None and not self._turn.heard
        if self.policy.mode == "wake":
            going_on = open_turn and self._soon_after(self._turn, WAKE_GOES_ON_S)
            return self._awake or going_on or self._request is not None or bool(self._question)
        return self._key_down or self._release_at is not None or self._request_open

    @property
    def user_speaking(self) -> bool:
        return self._request is not None and self._request.speaking

    @property
    def asking(self) -> bool:
        """A permission question waits for its answer."""
        return self._question is not None

    @property
    def key_held(self) -> bool:
        return self._key_down

    @property
    def busy(self) -> bool:
        """A request is being heard or a turn is running (``ask`` waits until not)."""
        return self._request is not None or self._turn is not None or bool(self._retired)

    def start(self) -> list[Action]:
        return self._sync_phase([])

    # ---- events ------------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:  # noqa: PLR0912, PLR0915 - one dispatch
        out: list[Action] = []
        if isinstance(event, Tick):
            self._now = max(self._now, event.now_s)
            self._tick(out)
        elif isinstance(event, SpeechStarted):
            self._now = max(self._now, event.at_s)
            self._speech_started(event.at_s, out)
        elif isinstance(event, OnsetUnconfirmed):
            self._onset_unconfirmed(event, out)
        elif isinstance(event, SpeechPaused):
            self._paused(event, out)
        elif isinstance(event, SpeechResumed):
            if self._request is not None:
                self._request.pause = None
        elif isinstance(event, UtteranceEnded):
            self._segment_ended(event, out)
        elif isinstance(event, SpeechDropped):
            self._nothing_kept(event, out)
        elif isinstance(event, TranscriptReady):
            self._transcript(event, out)
        elif isinstance(event, VerdictReady):
            pause = self._request.pause if self._request else None
            if pause is not None and pause.verdict_job == event.job:
                pause.probability = event.probability
                pause.model_failed = event.probability is None  # the words decide alone
                self._check_pause(out)
        elif isinstance(event, KeyDown):
            self._key_pressed(event.at_s, out)
        elif isinstance(event, KeyUp):
            self._key_released(event.at_s, out)
        elif isinstance(event, Command):
            self._command(event, out)
        elif isinstance(event, WakeWord):
            self._wake(event.at_s, out)
        elif isinstance(event, WakeLikely):
            self._wake_likely(event.at_s, out)
        elif isinstance(event, HeardOverReply):
            self._heard_over_reply = event.heard
        elif isinstance(event, PermissionAsked):
            turn = self._turn
            if turn is not None and event.turn == turn.id and not turn.stop_requested:
                turn.silenced = False  # a reply the user silenced speaks again (the question)
                deadline = self._now + self.policy.permission_timeout_s
                self._question = _Question(event.turn, event.request, deadline)
                if not self._answered_early(out):
                    self._cue(PlayEarcon("listening"), out)
        elif isinstance(event, PermissionSettled):
            if self._question is not None and self._question.request == event.request:
                self._question = None
        else:
            self._turn_progress(event, out)
        if self._reply_paused is not None:
            self._settle_pause(self._reply_paused, out)
        return self._sync_phase(out)

    # ---- speech ------------------------------------------------------------------------------
    def _speech_started(self, onset_s: float, out: list[Action]) -> None:
        request = self._request
        if request is not None:
            request.speaking = True
            if request.cut:  # the same speech goes on: a pause it was in goes on too
                request.cut = False
                return
            request.pause = None
            request.final_job = request.probe_job = None  # more words: transcribe anew
            request.tail, request.new_text, request.early = False, None, None
            return
        self._new_request(onset_s, out)
        if self._request is not None:
            self._request.onset_s = onset_s
        # Wake mode keeps _awake_until: should this come to nothing (a cough, a breath), the
        # microphone stays open for the rest of the window.

    def _new_request(self, onset_s: float, out: list[Action]) -> None:
        turn = self._turn
        if self._question is not None:
            self._request = _Request("answer")
        elif turn is None:
            self._request = _Request("new")
        elif not turn.stop_requested and (
            not turn.heard or self._continues_over_reply(turn, onset_s)
        ):
            # (A turn the user stopped is not going on: what they say now is a new request,
            # queued behind it while it winds down, not the stopped one run again.)
            # Its words decide: a sound or a hum is no request (nor, in wake mode, a wake
            # word with nothing after it, maybe a false one: the agent is not run twice).
            if self._words_decide_going_on:
                self._request = _Request(
                    "continue", base=list(turn.audio), revises=True, fallback=turn.text
                )
                self._pend(turn, self._request, out)
            else:
                self._continue(turn, out)
        else:
            request = self._request = _Request("during")
            if turn.playing and not turn.silenced:  # voice barge-in (the reply is not gated)
                if self._words_at_pauses:
                    self._hold(turn, request, out)
                else:  # its words would come only at its end: stop as a key press would
                    self._silence(turn, out)
            elif turn.released and not turn.silenced:  # between its sentences (a tool runs)
                self._reply_paused = replace(self._keep_quiet(turn, out), under=request)

    def _onset_unconfirmed(self, onset: OnsetUnconfirmed, out: list[Action]) -> None:
        self._now = max(self._now, onset.at_s)
        if onset.proposed:  # not every sound louder than the echo holds a reply back
            self._unconfirmed_s = onset.at_s
            if onset.likely:
                self._likely_onset_s = onset.at_s
        self._pause_for(onset, out)

    def _pause_for(self, onset: OnsetUnconfirmed, out: list[Action]) -> None:
        """Pause a reply the onset would stop, were it confirmed now (see _speech_started)."""
        if onset.likelihood < self.policy.pause_likelihood:
            return
        previous, self._likely_s = self._likely_s, onset.at_s
        if self._reply_paused is not None:
            return  # it stays paused PAUSE_HOLD_S from this onset
        if onset.at_s - previous < PAUSE_HOLD_S:
            return  # still the sound a pause gave up on (a TV): the reply must go on
        self._pause_playing(onset.at_s, out)

    def _pause_playing(self, at_s: float, out: list[Action]) -> bool:
        """Pause the reply that plays, for a sound at ``at_s`` that may stop it (see
        _settle_pause): not while a request or a question is heard, nor a reply a key or the
        wake word stopped (it is still falling silent). True if it paused."""
        turn = self._turn
        if (
            turn is None
            or not turn.playing
            or turn.silenced
            or self._request is not None
            or self._question is not None
        ):
            return False
        self._reply_paused = _Paused(turn.id, at_s)
        out.append(PauseReply(turn.id))
        return True

    def _hold(self, turn: _Turn, request: _Request, out: list[Action]) -> None:
        """Voice barge-in: the reply falls silent now and stops once the voice's words are
        heard (:data:`HOLD_MAX_S`); with no words it goes on."""
        request.over_reply = turn.id
        paused = self._keep_quiet(turn, out)
        self._reply_paused = replace(paused, held_by=request, held_s=self._now)

    @property
    def _words_at_pauses(self) -> bool:
        """Speech over the reply is transcribed at its pauses (see _paused), so its words can
        decide soon: hands-free, with an end-of-turn analyzer."""
        return self.policy.mode == "vad" and self.policy.analyzer is not None

    @property
    def _words_decide_going_on(self) -> bool:
        """Speech that may go on with a turn's request waits for its words before the agent
        is interrupted (a sound or a hum is none): at its pauses, or in wake mode at its end.
        Hands-free without an end-of-turn analyzer (no pause is transcribed), at its end too
        while the turn's reply has not begun: nothing plays that a voice must stop at once,
        and a cough or an "mm-hmm" while the agent worked ran the same request again.
        Otherwise the agent is interrupted at the onset."""
        unheard = self._turn is not None and not self._turn.heard
        vad = self.policy.mode == "vad" and unheard
        return self._words_at_pauses or self.policy.mode == "wake" or vad

    def _stop_held_reply(self, request: _Request, text: str, out: list[Action]) -> None:
        """Words said over the reply stop it (once), whether it is still held or went on."""
        turn = request.over_reply
        if turn is None or not word_count(text):
            return
        if is_backchannel(text):  # "mm-hmm": the user is listening
            request.backchannel = text
            return
        request.over_reply = None
        if self._turn is not None and self._turn.id == turn:
            self._silence(self._turn, out, heard=text)
        elif not _stopping(out, turn):
            out.append(StopReply(turn, heard=text))  # retired: it may still be sounding

    def _silence(self, turn: _Turn, out: list[Action], heard: str = "") -> None:
        """Stop the turn's reply for good (once)."""
        if not _stopping(out, turn.id):
            out.append(StopReply(turn.id, heard))
        turn.silenced = True

    def _settle_pause(self, paused: _Paused, out: list[Action]) -> None:
        if _stopping(out, paused.turn):
            self._reply_paused = None  # it was a voice
            return
        if self._still_said_under(paused):
            # Half-duplex the sentence would gate the microphone over the rest of the request:
            # the pause starts again, so neither the reply nor the speaker plays on by itself.
            self._reply_paused = replace(paused, since_s=self._now)
            out.append(PauseReply(paused.turn, renew=True))
            return
        if self._pause_holds(paused):
            return
        self._reply_paused = None
        held_by = paused.held_by if self._question is None else None  # (a question: heard)
        heard = held_by.backchannel if held_by is not None else ""
        resume = ResumeReply(paused.turn, held_by is not None, heard, self._resumed_why(paused))
        out.insert(0, resume)  # first: nothing after it may keep it

    def _resumed_why(self, paused: _Paused) -> str:
        """Why a reply kept back under a request goes on (the log said "nobody was talking")."""
        if paused.under is None or self._question is not None:
            return ""
        if self._request is paused.under and self._now - paused.since_s >= HOLD_MAX_S:
            return (
                f"the request said while it waited was not heard within {HOLD_MAX_S:g} s of its end"
            )
        return "the request said while it waited was heard"

    def _still_said_under(self, paused: _Paused) -> bool:
        """The request a reply waits under (``paused.under``) is still being said as its
        hold runs out (HOLD_MAX_S, under the speaker's PAUSE_LIMIT_S)."""
        turn = self._turn
        return (
            paused.under is not None
            and paused.under is self._request
            and self.user_speaking
            and turn is not None
            and turn.id == paused.turn
            and self._question is None  # (the agent asks: its question must be heard)
            and self._now - paused.since_s >= HOLD_MAX_S
        )

    def _pause_holds(self, paused: _Paused) -> bool:
        turn = self._turn
        if turn is None or turn.id != paused.turn or self._question is not None:
            return False  # the reply is gone, or the agent asks: its question must be heard
        if self._request is not None and self._request.pending is turn:
            return True  # the user may be going on with its request: until their words decide
        if paused.under is not None:  # until the request's words are heard, bounded
            return self._request is paused.under and self._now - paused.since_s < HOLD_MAX_S
        held = paused.held_by
        if held is not None:  # a confirmed voice: until its words are heard
            pause = held.pause
            quiet = (
                pause is not None
                and pause.text is not None
                and self._now - pause.end_s >= HOLD_QUIET_S
            )
            # (Its words, once heard, stop the reply in the same step: no hold is left.)
            return self._request is held and not quiet and self._now - paused.held_s < HOLD_MAX_S
        return (
            self._request is None  # heard, and not something that stops the reply
            and self._now - self._likely_s < PAUSE_HOLD_S
            and self._now - paused.since_s < PAUSE_MAX_S
        )

    def _continues_over_reply(self, turn: _Turn, onset_s: float) -> bool:
        """Heard over the reply, speech is that request going on (the reply came early, and
        stops) when it began within the longest pause of the request's last word, or before
        the user can have heard the reply (REPLY_UNHEARD_S). It began at its onset, or at the
        likely onset that paused the reply for it: not when Silero confirmed it, which over a
        reply can come 0.5 s later (the canceller holds a voice back at first in double
        talk)."""
        paused = self._reply_paused
        if paused is not None and paused.turn == turn.id:
            onset_s = min(onset_s, paused.since_s)
        unheard_s = REPLY_UNHEARD_S if self._words_decide_going_on else REPLY_UNHEARD_BLIND_S
        return (
            self._heard_over_reply
            and bool(turn.audio)
            and (
                onset_s - turn.audio[-1].end_s < self.policy.longest_pause_s
                or (turn.heard_s is not None and onset_s - turn.heard_s < unheard_s)
            )
        )

    def _pend(self, turn: _Turn, request: _Request, out: list[Action]) -> None:
        """The user may be going on with the turn's request: its reply waits (paused, if it
        plays) until their words are heard."""
        request.pending = turn
        if turn.playing and not turn.silenced:
            self._keep_quiet(turn, out)

    def _keep_quiet(self, turn: _Turn, out: list[Action]) -> _Paused:
        """The turn's reply paused (once)."""
        paused = self._reply_paused
        if paused is None or paused.turn != turn.id:
            out.append(PauseReply(turn.id))
            paused = self._reply_paused = _Paused(turn.id, self._now)
        return paused

    def _go_on(self, request: _Request, out: list[Action]) -> None:
        """The continuation has new words: the turn it continues is stopped now."""
        turn, request.pending = request.pending, None
        if turn is None:
            return
        self._silence(turn, out)
        if not turn.agent_done:
            out.append(Interrupt(turn.id))
        self._retire(turn)

    def _abandon(self, request: _Request, out: list[Action]) -> None:
        """The continuation had no new words: its turn goes on, its reply plays when due."""
        turn, request.pending = request.pending, None
        if self._request is request:
            self._request = None
        paused = self._reply_paused
        if turn is not None and turn.heard_s is not None and paused and paused.turn == turn.id:
            turn.heard_s += max(0.0, self._now - paused.since_s)  # its first moments: played
        if self._turn is None:  # over meanwhile: its earcon waited for this, or what was queued
            self._send_queued(out)

    def _continue(self, turn: _Turn, out: list[Action]) -> None:
        """The user goes on with the request the agent has: stop it, and hear the rest."""
        self._silence(turn, out)
        if not turn.agent_done:
            out.append(Interrupt(turn.id))
        self._retire(turn)
        self._request = _Request(
            "continue", base=list(turn.audio), revises=True, fallback=turn.text, interrupted=turn
        )

    def _paused(self, event: SpeechPaused, out: list[Action]) -> None:
        """Words are transcribed at the first report of a pause; the model is asked once the
        pause is as long as its thresholds were measured with (see MODEL_PAUSE_S)."""
        request = self._request
        if request is None or request.context == "answer":
            return  # an answer ends at the segmenter's hangover: "yes [pause] but only..."
        turn = self._turn
        if (
            request.context == "during"
            and self.policy.mode == "wake"
            and turn is not None
            and not (turn.over or (turn.agent_done and turn.silenced))
        ):
            # Settled while the turn runs, it waits for the turn, and the microphone closes.
            # Once the turn is done with (the wake word stopped the reply of an agent that
            # was done), the request is the next turn at once, whose words can go on for
            # WAKE_GOES_ON_S.
            return
        if self.policy.mode == "ptt-hold" or self.policy.analyzer is None:
            return
        utterance = event.utterance
        audio = join([*request.base, *request.parts, utterance])
        pause = request.pause
        if pause is None or not _same_end(pause, utterance):
            pause = request.pause = _Pause(utterance.end_s, next(self._ids), None)
            request.pause_jobs[pause.text_job] = utterance.end_s
            out.append(Transcribe(pause.text_job, audio, "pause"))
        if self.policy.model and pause.verdict_job is None and event.silence_s >= MODEL_PAUSE_S:
            pause.verdict_job = next(self._ids)
            heard_s = utterance.start_s + utterance.duration_s - utterance.end_s
            silence_s = min(MODEL_PAUSE_S, max(0.0, MODEL_PAUSE_S - heard_s))
            out.append(Analyze(pause.verdict_job, audio, silence_s))

    def _check_pause(self, out: list[Action]) -> None:
        request, analyzer = self._request, self.policy.analyzer
        if request is None or request.pause is None or analyzer is None or not request.speaking:
            return
        pause = request.pause
        model = self.policy.model and not pause.model_failed
        evidence = PauseEvidence(
            pause.text, pause.probability, model, avg_logprob=pause.avg_logprob
        )
        if self._now >= pause.since_s + analyzer.end_after_ms(evidence) / 1000:
            request.speak_at = _SpeakAt.after(pause, analyzer, evidence)
            out.append(EndSegment())

    def _segment_ended(self, event: UtteranceEnded, out: list[Action]) -> None:
        request = self._request
        if request is None:  # a key press started nothing we track; start tracking now
            request = self._request = _Request("new")
        request.parts.append(event.utterance)
        if event.reason == "max_length":
            request.cut = True  # the user is still talking: the next segment joins this one
            return
        self._end_request(request, event.utterance, out)

    def _nothing_kept(self, event: SpeechDropped, out: list[Action]) -> None:
        """The segment had too little voice to keep: end the request with what it has."""
        request = self._request
        if request is None or not request.speaking:
            return
        if event.split:  # only the length limit: the segment goes on (a held key, a hum)
            request.cut = True
            return
        stopped = request.interrupted
        if self._ptt and stopped is not None and not request.parts:
            # A tap on the key while the agent works: it stays stopped, not asked again.
            self._request = None
            self._end_listening()
            stopped.stop_requested = True
            if stopped.agent_done:
                out.append(Say(STOPPED))
            self._drop_queued(out)
            return
        if request.parts or request.context == "continue":
            # Nothing was kept after the last part: a pause after it was the request's last.
            self._end_request(request, request.parts[-1] if request.parts else None, out)
            return
        self._request = None
        self._end_listening()
        turn = self._turn
        if request.context == "during" and turn is not None and self._ptt:
            self._stop_turn(turn, out)  # a tap on the key while the agent works: stop
        elif request.context in ("during", "answer") and turn is None:
            self._send_queued(out)  # the turn ended while this cough was heard

    def _end_request(self, request: _Request, last: Utterance | None, out: list[Action]) -> None:
        request.speaking = False
        self._end_listening()
        if not request.parts:  # a continuation that added no voice: the request stands
            self._request_text(request, "", out)
            return
        if request.context in ("during", "answer") or (
            request.context == "continue" and request.audio(new_only=True).duration_s < 2.5
        ):
            # Heard during a turn: is it a command? Only this segment's words count.
            pause = request.pause
            if not request.base and pause is not None and _same_end(pause, last):
                # Nothing was said after the pause: its transcript is these words.
                if pause.text is not None:
                    self._probe_text(request, pause.text, out)
                else:
                    request.probe_job = pause.text_job
                return
            request.probe_job = next(self._ids)
            out.append(Transcribe(request.probe_job, request.audio(new_only=True), "probe"))
            return
        self._transcribe_request(request, last, out)

    def _transcribe_request(
        self, request: _Request, last: Utterance | None, out: list[Action]
    ) -> None:
        pause = request.pause
        if pause is not None and _same_end(pause, last):
            # Nothing was said after the pause: its transcript is the request's.
            if pause.text is not None:
                self._request_text(request, pause.text, out)
            else:
                request.final_job = pause.text_job
            return
        request.final_job = next(self._ids)
        out.append(Transcribe(request.final_job, request.audio(), "request"))

    def _transcript(self, event: TranscriptReady, out: list[Action]) -> None:
        request = self._request
        if request is None:
            return
        text = event.text.strip()
        alone = event.job == request.probe_job or (request.tail and event.job == request.final_job)
        if (
            event.looped
            and alone  # the new speech heard alone
            and request.pending is not None
            and word_count(text) <= _LOOPED_WORDS
            and not is_stop(text)
        ):
            # Whisper looping on a sound that went on with a request ("So, so, so, ..." over
            # a melody, in the rig): no words of its own. The joined transcript decides.
            text = ""
        # A transcript of a request dropped since is not this speech's.
        heard_at_pause = event.job in request.pause_jobs
        mine = heard_at_pause or event.job in (request.final_job, request.probe_job)
        if heard_at_pause:
            request.heard.append((request.pause_jobs.pop(event.job), text))
        if request.pause is not None and request.pause.text_job == event.job:
            request.pause.text, request.pause.avg_logprob = text, event.avg_logprob
            if not self._ptt:  # (with a key, words said after the end would be lost)
                request.pause.words_end_s = _words_ended_s(request, request.pause)
            self._check_pause(out)
        if not request.speaking and request.final_job == event.job:
            if request.tail:
                request.new_text = text
            self._request_text(request, text, out)
        elif not request.speaking and request.probe_job == event.job:
            self._probe_text(request, text, out)
        if request.pending is not None:
            added = added_words(text, request.fallback) if heard_at_pause else ""
            # ("stop" is heard on its own, and so is "okay" said to the reply)
            if _new_words(added) and not is_stop(added) and not _listening(request.pending, added):
                self._go_on(request, out)  # new words at a pause: no need to wait for the end
        elif mine:
            self._stop_held_reply(request, text, out)

    def _probe_text(self, request: _Request, text: str, out: list[Action]) -> None:
        request.probe_job = None
        check = request.context == "during" and not is_stop(text)  # queued behind a turn
        heard = self._whole(request, text, check, out)
        if isinstance(heard, int):
            request.probe_job = heard
            return
        text = self._probed_words(request, heard, out)
        stop = is_stop(text)
        if request.context == "continue":
            self._continuation_probed(request, text, stop, out)
            return
        self._request = None
        turn = self._turn
        if request.context == "answer" and self._question is not None:
            self._answer_by_voice(request, text, stop, out)
        elif request.context == "answer" and is_bare_answer(text):
            # The question was settled while this was said ("ptt allow", or the agent
            # withdrew it): a bare "yes" is no request of its own.
            out.append(Dropped(text, "an answer to a question already settled"))
            if turn is None:
                self._send_queued(out)
        elif stop and turn is not None:
            self._stop_turn(turn, out)
        elif stop:
            # The reply it was said over has stopped already: nothing runs, and what was
            # queued behind that turn is cancelled too.
            self._drop_queued(out)
            self._listen_again(out)
        else:
            if text:
                before = self._queued
                self._queue(request, text)
                self._heard_answer(request, text, before)
            if turn is None:
                self._send_queued(out)

    def _probed_words(self, request: _Request, text: str, out: list[Action]) -> str:
        """The words a probe heard, less a hum: it only says the user listens. (A bare
        answer said over the end of a question asked meanwhile is its answer.)"""
        if request.context == "during" and self._question is not None and is_bare_answer(text):
            request.context = "answer"  # said over the end of the question, asked meanwhile
        if request.over_reply is not None and is_hum(text):
            return ""  # "mm-hmm" over the reply, which went on: the user was listening
        if request.context == "during" and is_hum(text):
            # ... or between its sentences (a tool runs): no request either
            out.append(Dropped(text, "a hum while the agent works: the user listens"))
            return ""
        return text

    def _heard_answer(self, request: _Request, text: str, before: _Queued | None) -> None:
        """A bare answer was just queued (after ``before``): should the agent ask now, it is
        the answer."""
        queued = self._queued
        if queued is not None and request.parts and is_bare_answer(text):
            self._early_answer = _EarlyAnswer(text, request.parts[-1].end_s, queued, before)

    def _answered_early(self, out: list[Action]) -> bool:
        """The question just asked was answered over its end (see ANSWER_EARLY_S)."""
        early, self._early_answer = self._early_answer, None
        if early is None or early.queued is not self._queued:
            return False  # the queue changed since: sent, dropped, or more words joined it
        if self._now - early.end_s > ANSWER_EARLY_S:
            return False
        decision = permission_answer(early.text)
        question = self._question
        if decision is None or question is None:
            return False
        self._queued, self._question = early.before, None
        out.append(Answer(question.turn, question.request, decision, heard=early.text))
        return True

    def _queue(self, request: _Request, text: str, *, new_only: bool = False) -> None:
        """``text`` goes to the agent once the running turn is over (with the request's
        audio; ``new_only``: without the turn's own, which a continuation begins with)."""
        queued = self._queued
        self._queued = _Queued(
            text if queued is None else f"{queued.text} {text}",
            [*(queued.audio if queued else []), request.audio(new_only=new_only)],
            request.speak_at,  # the later part ends the request
        )

    def _continuation_probed(
        self, request: _Request, text: str, stop: bool, out: list[Action]
    ) -> None:
        """The short speech that went on with a request, heard on its own."""
        pending = request.pending
        if stop and pending is not None:
            self._abandon(request, out)
            self._stop_turn(pending, out)
        elif stop:
            self._request = None
            out.append(Say(STOPPED))
        elif pending is not None and is_hum(text):
            self._abandon(request, out)  # "mm-hmm": the turn goes on as it was
        elif pending is not None and _listening(pending, text):
            # "Okay." in the reply's first moments: the user listens, and the reply goes on;
            # the words go to the agent after it, as a backchannel over the reply does.
            self._queue(request, text, new_only=True)
            self._abandon(request, out)
        elif is_hum(text):  # "mm-hmm" adds nothing: the request stands as it was
            request.tail, request.new_text = True, ""
            self._request_text(request, "", out)
        else:
            if word_count(text):
                self._go_on(request, out)
            # (nothing heard alone: the joined transcript decides, should it hold new words)
            request.new_text = text
            self._transcribe_request(request, None, out)

    def _send_queued(self, out: list[Action]) -> None:
        """No turn runs: send what was queued, or listen again."""
        queued, self._queued = self._queued, None
        if queued is None:
            self._listen_again(out)
            return
        self._send(queued.text, queued.audio, revises=False, out=out, speak_at=queued.speak_at)

    def _listen_again(self, out: list[Action]) -> None:
        """A request heard after its turn was over came to nothing: the microphone is open."""
        self._play_held_cues(out)
        if self._turn is None and (self.policy.mode == "vad" or self._awake):
            out.append(PlayEarcon("listening"))

    def _cue(self, cue: PlayEarcon | Say, out: list[Action]) -> None:
        """Play a cue or line of the assistant's own, but not over the user's words: half-
        duplex it gates the microphone, and the silence it leaves can end their request
        early (or lose its words). It waits until what they say is settled (_tick)."""
        if self.user_speaking:
            self._held_cues.append(cue)
        else:
            out.append(cue)

    def _play_held_cues(self, out: list[Action]) -> None:
        """The cues held back while the user spoke, once their words came to no request
        ("done" and "Stopped." still tell how the last turn ended). The question's cue only
        while it waits for an answer."""
        held, self._held_cues = self._held_cues, []
        for cue in held:
            if cue != PlayEarcon("listening") or self._question is not None:
                out.append(cue)

    def _answer_by_voice(self, request: _Request, text: str, stop: bool, out: list[Action]) -> None:
        question = self._question
        assert question is not None
        if not text:
            return  # a cough: keep waiting for the answer
        self._question = None
        if stop:
            out.append(Answer(question.turn, question.request, "deny", "The user said stop."))
            if self._turn is not None:
                self._stop_turn(self._turn, out)
            return
        decision = permission_answer(text)
        if decision is None or (decision == "deny" and not is_bare_answer(text)):
            # Neither yes nor no ("Yeah, no."), or a no with more ("No, use yarn instead."):
            # the agent reads the words and can act on them.
            out.append(Answer(question.turn, question.request, "deny", f"The user said: {text}"))
        else:
            out.append(Answer(question.turn, question.request, decision, heard=text))
            if answer_goes_on(text):
                # "Yes, and then commit it.": an allow carries no words, so the agent has
                # them as the next request, once this turn is done.
                self._queue(request, text)

    def _whole(self, request: _Request, text: str, check: bool, out: list[Action]) -> str | int:
        """The request's text; or, when ``check`` finds that its transcript ended early, the
        job that hears it again whole. Once heard again, the longer of the two stands."""
        if request.early is not None:
            early, request.early = request.early, None
            return text if word_count(text) >= word_count(early) else early
        if not (check and _ended_early(request, text)):
            return text
        request.early = text
        job = next(self._ids)
        out.append(Transcribe(job, request.audio(), "whole"))
        return job

    def _request_text(self, request: _Request, text: str, out: list[Action]) -> None:
        # The words after a request it continues, dropped, are heard alone (below) instead.
        check = not (request.tail or _lost_new_words(request, text))
        heard = self._whole(request, text, check, out)
        if isinstance(heard, int):
            request.final_job = heard
            return
        text = heard
        if request.tail or _lost_new_words(request, text):
            # Whisper (tiny.en) can end a joined request where the one it continues ended,
            # when the new words were said under the reply's echo: heard alone, they follow
            # the request's text.
            request.tail = True
            if request.new_text is None:
                request.final_job = next(self._ids)
                new = request.audio(new_only=True)
                out.append(Transcribe(request.final_job, new, "request"))
                return
            text = f"{request.fallback} {request.new_text}".strip()
            longer = _heard_more(request, text)
            if longer is not None:  # the new words alone came back short (or empty)
                text, request.new_text = longer, added_words(longer, request.fallback)
        if request.pending is not None:
            added = request.new_text if request.tail else added_words(text, request.fallback)
            if not request.parts or not _new_words(added or ""):
                self._abandon(request, out)  # nothing new: the turn it would revise goes on
                return
            self._go_on(request, out)
        self._request = None
        if not text:
            text = request.fallback  # nothing new was said: the interrupted request stands
        if not text:
            return
        audio = request.base + request.parts
        self._send(text, audio, revises=request.revises, out=out, speak_at=request.speak_at)

    def _send(
        self,
        text: str,
        audio: list[Utterance],
        *,
        revises: bool,
        out: list[Action],
        speak_at: _SpeakAt = _SpeakAt(),
    ) -> None:
        turn = _Turn(next(self._ids), text, audio, speak_at=speak_at)
        self._turn = turn
        # What the user said is the next turn: the cues held back over it, about the last
        # one ("done", "Stopped."), would only confuse; its thinking cue says what is next.
        self._held_cues = []
        self._awake_until = None  # the window did its job; the reply opens the next one
        out.append(Send(turn.id, text, revises, audio[-1].end_s if audio else self._now))
        self._cue_at = self._now  # the thinking cue plays at once
        self._release_when_due(turn, out)

    def _release_when_due(self, turn: _Turn, out: list[Action]) -> None:
        due_s = turn.speak_at.due_s(self._heard_over_reply)
        if turn.released or self._now < due_s or self.user_speaking:
            return
        if self._request is not None and self._request.pending is turn:
            return  # the user may be going on with it: their words decide
        if self._recent(self._unconfirmed_s, due_s + ONSET_HOLD_MAX_S) or self._recent(
            self._likely_onset_s, due_s + LIKELY_HOLD_MAX_S
        ):
            return  # maybe the user is going on
        turn.released = True
        out.append(Release(turn.id))

    def _recent(self, onset_s: float | None, until_s: float) -> bool:
        """An unconfirmed onset at ``onset_s`` still holds a due reply: it was heard within
        :data:`ONSET_HOLD_S`, and the reply has not waited until ``until_s``."""
        return onset_s is not None and self._now - onset_s < ONSET_HOLD_S and self._now < until_s

    # ---- the turn ----------------------------------------------------------------------------
    def _turn_progress(self, event: Event, out: list[Action]) -> None:
        assert isinstance(event, ReplyPlaying | ReplyIdle | AgentFinished | ReplyDone)
        turn = self._turn if self._turn is not None and self._turn.id == event.turn else None
        turn = turn or self._retired.get(event.turn)
        if turn is None:
            return
        if isinstance(event, ReplyPlaying):
            self._reply_playing(turn, event, out)
        elif isinstance(event, ReplyIdle):
            turn.playing = False
            if turn is self._turn and self.policy.thinking_repeat_s > 0:
                self._cue_at = self._now + self.policy.thinking_repeat_s
        elif isinstance(event, AgentFinished):
            turn.agent_done = True
            turn.answered = event.outcome == "answered" and not turn.stop_requested
            if self._question is not None and self._question.turn == turn.id:
                self._question = None
            if turn.stop_requested:
                self._cue(Say(STOPPED), out)
        else:
            turn.reply_done = True
            turn.playing = False
        if turn.over:
            self._turn_over(turn, out)

    def _reply_playing(self, turn: _Turn, event: ReplyPlaying, out: list[Action]) -> None:
        if turn.heard_s is None:
            turn.heard_s = self._now if event.at_s is None else event.at_s
        turn.playing = True
        request = self._request
        if request is not None and request.pending is turn and not turn.silenced:
            self._keep_quiet(turn, out)  # released before the user went on with it
        elif self._starts_over_speech(turn):
            # Not over the user's words: half-duplex it would gate the microphone over them.
            paused = self._keep_quiet(turn, out)
            if paused.held_by is None:
                self._reply_paused = replace(paused, under=request)

    def _starts_over_speech(self, turn: _Turn) -> bool:
        """The turn's reply (its next sentence) begins while the user says a request."""
        return (
            turn is self._turn
            and self.user_speaking
            and not turn.silenced
            and self._question is None  # (the agent asks: its question must be heard)
        )

    def _turn_over(self, turn: _Turn, out: list[Action]) -> None:
        if self._retired.pop(turn.id, None) is not None:
            return
        self._turn = None
        self._cue_at = None
        if self._queued is not None:
            if self._request is None:
                self._send_queued(out)
            # else the words being said decide, once heard: "stop" cancels the queue, others
            # join it; a continuation's new words revise the turn's request (the queue goes
            # after), and without any it stands (_abandon sends the queue)
            return
        if turn.answered and not turn.stop_requested:  # ("Stopped." said it)
            self._cue(PlayEarcon("done"), out)
        if self.policy.mode == "wake":
            if self.policy.follow_up_s <= 0:
                return  # every request starts with the wake word: nothing is listening now
            self._awake_until = self._now + self.policy.follow_up_s
        if self.policy.mode in ("vad", "wake") and self._request is None:
            out.append(PlayEarcon("listening"))

    def _retire(self, turn: _Turn) -> None:
        if not turn.over:
            self._retired[turn.id] = turn
        if self._turn is turn:
            self._turn = None
            self._cue_at = None
        if self._question is not None and self._question.turn == turn.id:
            self._question = None

    def _stop_turn(self, turn: _Turn, out: list[Action]) -> None:
        self._silence(turn, out)
        if turn.agent_done:
            self._cue(Say(STOPPED), out)
        else:
            out.append(Interrupt(turn.id))
        turn.stop_requested = True  # (done, its reply may still be winding down)
        self._drop_queued(out)
        request = self._request
        if request is not None and request.pending is turn:
            # What is being said does not go on with the stopped request: it is a new one,
            # heard alone (transcripts of it joined to the old request are dropped).
            request.pending = None
            fresh = self._request = _Request(
                "during", parts=list(request.parts), speaking=request.speaking, cut=request.cut
            )
            if not fresh.speaking and fresh.parts:
                self._end_request(fresh, fresh.parts[-1], out)

    def _drop_queued(self, out: list[Action]) -> None:
        """A stop cancels what waited behind the turn too: the user stopped it all."""
        if self._queued is not None:
            out.append(Dropped(self._queued.text, "stopped with the turn it waited for"))
        self._queued = None

    # ---- keys, commands, wake word -------------------------------------------------------------
    def _key_pressed(self, at_s: float, out: list[Action]) -> None:
        self._now = max(self._now, at_s)
        if self.policy.mode == "ptt-toggle" and self._key_down:
            self._key_down = False
            out.append(EndSegment())
            return
        if self.policy.mode in ("vad", "wake"):
            if self._turn is not None and self._turn.playing:
                self._silence(self._turn, out)
            if self.policy.mode == "wake":
                self._wake(at_s, out)
            return
        self._key_down = True
        self._release_at = None
        if self._turn is not None and self._turn.playing:
            self._silence(self._turn, out)  # barge-in: the reply stops, the agent goes on
        out.append(StartSegment(hold=self.policy.mode == "ptt-hold"))
        out.append(PlayEarcon("listening"))

    def _key_released(self, at_s: float, out: list[Action]) -> None:
        if self.policy.mode == "ptt-hold" and self._key_down:
            self._key_down = False
            self._release_at = at_s + self.policy.release_grace_s

    def _command(self, event: Command, out: list[Action]) -> None:
        question = self._question
        if event.name == "stop":
            if self._turn is not None:
                self._stop_turn(self._turn, out)
            self._question = None
        elif question is not None:
            self._question = None
            out.append(Answer(question.turn, question.request, event.name))

    def _wake_likely(self, at_s: float, out: list[Action]) -> None:
        """Pause a playing reply while the wake word is being decided: the word stops it
        (_wake); anything else lets it go on after PAUSE_HOLD_S, as an onset does."""
        self._now = max(self._now, at_s)
        if self.policy.mode != "wake" or self._reply_paused is not None:
            return
        if self._pause_playing(at_s, out):
            self._likely_s = at_s

    def _wake(self, at_s: float, out: list[Action]) -> None:
        if self.policy.mode != "wake":
            return
        if self._turn is not None and self._turn.playing and not self._turn.silenced:
            self._silence(self._turn, out)
        hearing = self.hearing
        self._awake_until = max(self._awake_until or 0.0, at_s + self.policy.wake_listen_s)
        request = self._request
        if hearing and not (
            request is not None
            and request.context in ("new", "during")
            and request.speaking
            and not request.parts
            and request.onset_s is not None
            and at_s - request.onset_s <= WAKE_WORD_MAX_S
        ):
            # Already listening: to a key in the follow-up window, or to words said before
            # the word (kept: the word becomes a word of the request).
            return
        # In the follow-up window the word begins the segment the user is speaking: it starts
        # again after the word, so the request does not carry it.
        # As with a key press, the segment starts at once: the words said right after the
        # wake word, in the same breath, are the request's (the loop replays them from where
        # the word ended). Nothing said: the segment ends empty, and the window stays open.
        out.append(StartSegment(hold=False))
        out.append(PlayEarcon("listening"))

    # ---- time --------------------------------------------------------------------------------
    def _tick(self, out: list[Action]) -> None:
        now = self._now
        if self._release_at is not None and now >= self._release_at:
            self._release_at = None
            out.append(EndSegment())
        self._check_pause(out)
        question = self._question
        answering = self._request is not None and self._request.context == "answer"
        if question is not None and now >= question.deadline_s and not answering:
            self._question = None
            reason = "The user did not answer in time, so the tool was not allowed."
            out.append(Answer(question.turn, question.request, "deny", reason))
        turn = self._turn
        request, paused = self._request, self._reply_paused
        if (
            request is not None
            and turn is not None
            and request.pending is turn
            and paused is not None
            and paused.turn == turn.id
            and now - paused.since_s >= HOLD_MAX_S
        ):
            self._go_on(request, out)  # talking all this while: the reply must not go on
            turn = self._turn
        if turn is not None:
            self._release_when_due(turn, out)
        if self._held_cues and self._request is None:
            self._play_held_cues(out)
        if (
            turn is not None
            and not turn.agent_done
            and not turn.playing
            and self._question is None
            and self._request is None
            and self._cue_at is not None
            and now >= self._cue_at
            and not self._recent(self._unconfirmed_s, math.inf)  # maybe a word beginning:
        ):  # the cue would gate the microphone over it (half-duplex) and cost that word
            out.append(PlayEarcon("thinking"))
            repeat = self.policy.thinking_repeat_s
            self._cue_at = now + repeat if repeat > 0 else None
        if self._awake_until is not None and now >= self._awake_until and self._request is None:
            self._awake_until = None

    # ---- phase -------------------------------------------------------------------------------
    @property
    def _ptt(self) -> bool:
        return self.policy.mode in ("ptt-hold", "ptt-toggle")

    def _end_listening(self) -> None:
        """The user's segment is over: push-to-talk stops hearing until the next press."""
        self._release_at = None
        if self.policy.mode == "ptt-toggle":
            self._key_down = False

    def _soon_after(self, turn: _Turn | None, seconds: float) -> bool:
        """Within ``seconds`` of the end of the turn's request."""
        if turn is None or not turn.audio:
            return False
        return self._now <= turn.audio[-1].end_s + seconds

    @property
    def _awake(self) -> bool:
        return self._awake_until is not None and self._turn is None

    @property
    def _request_open(self) -> bool:
        return self._request is not None and self._request.speaking

    def _derived_phase(self) -> Phase:
        request, turn = self._request, self._turn
        if request is not None and request.context in ("new", "continue"):
            return Phase.TRANSCRIBING if request.ended else Phase.LISTENING
        if request is not None and request.speaking:
            return Phase.LISTENING
        if self._question is not None:
            return Phase.ASKING
        if turn is not None:
            return Phase.SPEAKING if turn.playing else Phase.THINKING
        waiting = self._ptt and not self.hearing
        waiting = waiting or (self.policy.mode == "wake" and not self._awake)
        return Phase.IDLE if waiting else Phase.LISTENING

    def _sync_phase(self, out: list[Action]) -> list[Action]:
        phase = self._derived_phase()
        if phase is not self._phase:
            self._phase = phase
            out.append(SetPhase(phase))
        return out
