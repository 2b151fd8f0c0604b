"""The segmenter: a plain state machine that turns audio frames into utterances.

The voice/no-voice decision for one frame comes from a :class:`SpeechDetector` (webrtcvad in
production, a scripted fake in tests); everything else (onset, pre-roll, pauses, hangover,
length limits, push-to-talk) is plain Python here. An optional :class:`OnsetCheck` (Silero
VAD, :mod:`voice.silero`) has the last word on each onset the detector proposes, and is asked
early over the reply, where the device hears more than the echo (``AudioChunk.heard_over``).

States: *idle* (frames go into a short history, kept as pre-roll) and *in speech* (frames go
into the utterance until the hangover, ``finish()`` or the length limit ends it).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from voice.audio import SAMPLE_WIDTH, AudioChunk, Utterance, rms_dbfs
from voice.config import VadConfig

log = logging.getLogger(__name__)

# Silence kept after the last voiced frame: enough for a trailing consonant, little enough that
# Whisper is not handed seconds of nothing (which invites hallucinated words).
TRAILING_KEEP_MS = 200

EndReason = Literal["hangover", "max_length", "forced"]
# The onset check confirms a voice at two windows of vad.silero_threshold (0.7), which keeps
# music out; a word said unclearly can score less, and its onset is refused until the next
# word ("ask" in jfk.flac scores 0.5-0.64, confirmed only at "not", 0.7 s later: the pre-roll
# kept half a word). A refused onset the check found this likely (Silero's own start
# threshold) is where the voice began, once it is confirmed ...
LIKELY_SPEECH = 0.5
# ... if refused onsets led from it up to the confirmed one with gaps of at most this much,
# and no further back than this.
LIKELY_GAP_MS = 300
LIKELY_REACH_MS = 1500
_LIKELY_GAP_S, _LIKELY_REACH_S = LIKELY_GAP_MS / 1000, LIKELY_REACH_MS / 1000
# Within the longest pause (vad.hangover_ms) after an utterance, the user is most likely going
# on: three onsets in a row that the check finds likely speech confirm a voice there. In the rig
# jfk.flac's "ask not what your country can do for you", said 1 s after a turn ended, peaked
# at 0.69 and fell to 0.03 by "for you": refused throughout, and then spoken over.
LIKELY_CONFIRMS = 3
# A voice Silero hears only as a murmur: in the rig, jfk.flac's "ask not what your country
# can do" scored 0.18-0.40 for 0.8 s in one run of 16, refused throughout, so "ask" was lost;
# in two more the reply played over the phrase. Refused onsets at least this likely, with
# gaps of at most MURMUR_GAP_MS, make a murmur; once it has gone on for MURMUR_MS it holds a
# due reply as likely speech does (voice.turn_taking), and a voice confirmed while it goes on
# reaches back to its start. A melody in the rig made murmurs of 0.39 for 240 ms, which then
# died down: a murmur never confirms a voice, nor starts the stretch of likely onsets above.
MURMUR_FLOOR = 0.15
MURMUR_GAP_MS = 150
MURMUR_MS = 360
_MURMUR_GAP_S, _MURMUR_S = MURMUR_GAP_MS / 1000, MURMUR_MS / 1000
# A voice that goes on from the last utterance (within vad.hangover_ms of it: the turn ended
# at a pause) keeps the voice the detector heard before the check confirmed it, at any score,
# across gaps of up to LIKELY_GAP_MS and never across the assistant's own sound: in the rig,
# jfk.flac's "ask what" after "for you" was confirmed only at "you can do", with no reach-back
# at all. No further back than this: the silence of the pause is not kept (kept whole, it
# made Whisper end the request there), nor more of a fan or music the detector hears in it.
GOING_ON_REACH_MS = 700
# Frames webrtcvad calls voiced and the speech check does not (a breath before a word,
# music) count as voice until they have gone on this long without the check agreeing.
DOUBT_FRAMES_MS = 300
# Over the reply, AEC3 (what the detector hears) holds a voice back for its first 300-700 ms
# while the linear canceller (what Whisper hears) keeps it: in the rig the request began
# 0.35-0.6 s into the voice. An onset there reaches back to the first frame the device marked
# as more than the echo (AudioChunk.heard_over) this far before it, then the pre-roll (and
# further only while the reply plays, see LOOK_BACK_UNDER_MS) ...
LOOK_BACK_MS = 700
# ... over no more than this of the reply's echo alone between such frames: a voice as loud
# as the echo flickers between "over" and "echo", while a lone frame long before (a click
# over the reply) is not the voice. Frames where nothing played (the reply paused for the
# voice) do not count.
LOOK_BACK_GAP_MS = 300
# A voice quieter than the reply is echo to the gate until the reply pauses between two
# phrases: in the rig that came 1.5-2 s into the voice, and its first words were lost. Over
# frames where the canceller found a voice under the echo (AudioChunk.heard_under), or heard
# one over it, the reach-back goes on while the reply plays, as far as this ...
LOOK_BACK_UNDER_MS = 2500
# ... and past up to this much echo alone beyond such a frame: the canceller lets the voice
# through only now and then, and the user pauses between words (in the rig: 330 ms of echo
# alone in "He was not an ill- [pause] disposed young man" said under the reply).
LOOK_BACK_UNDER_GAP_MS = 600


class SpeechDetector(Protocol):
    def is_speech(self, frame: bytes, rate: int) -> bool: ...


class WebRtcDetector:
    """webrtcvad's GMM detector; frames must be 10, 20 or 30 ms of 16-bit mono PCM."""

    # webrtcvad calls the first ~100 ms of any steady noise speech, until its noise model
    # adapts; those frames still train it but count as silence. The segmenter's pre-roll keeps
    # their audio should speech really start that early.
    WARMUP_MS = 150

    def __init__(self, aggressiveness: int) -> None:
        import webrtcvad  # engine import kept out of module import

        self._vad = webrtcvad.Vad(aggressiveness)
        self._warmup_ms = float(self.WARMUP_MS)

    def is_speech(self, frame: bytes, rate: int) -> bool:
        voiced = bool(self._vad.is_speech(frame, rate))
        if self._warmup_ms > 0:
            self._warmup_ms -= len(frame) / SAMPLE_WIDTH / rate * 1000
            return False
        return voiced


class OnsetCheck(Protocol):
    """A second, costlier opinion, asked when the detector's frames make an onset, and over
    the reply at each frame louder than the echo."""

    def confirm(self, pcm: bytes, start_s: float, rate: int) -> bool:
        """Is there speech at the end of ``pcm`` (the recent audio, from ``start_s``)?"""
        ...

    @property
    def likelihood(self) -> float:
        """How likely the last onset asked about is speech, 0 to 1, confirmed or not."""
        ...

    def reset(self) -> None: ...


class SpeechCheck(Protocol):
    """A second opinion inside speech: given every frame in order, can it still be speech?
    webrtcvad calls music and steady tones voiced; without this a request said with music
    in the room never reaches a pause, and ends only at ``max_utterance_s``."""

    def still_speech(self, pcm: bytes, start_s: float, rate: int) -> bool: ...


@dataclass(frozen=True)
class SpeechStarted:
    at_s: float


@dataclass(frozen=True)
class OnsetUnconfirmed:
    """The detector hears an onset the onset check has not confirmed (yet): noise, or the
    breath before a word, which Silero confirms only once the word comes. ``likelihood``:
    the check's :attr:`OnsetCheck.likelihood` for it. ``proposed`` False: the detector
    proposed nothing; the check was asked because the frame was louder than the echo."""

    at_s: float
    likelihood: float = 0.0
    proposed: bool = True
    likely: bool = False  # likely speech (LIKELY_SPEECH), or part of a murmur (MURMUR_FLOOR)


@dataclass(frozen=True)
class SpeechPaused:
    """Silence inside speech reached ``pause_ms`` (or a later mark the segmenter was given):
    the utterance so far, for a speculative try (with no audio when it goes on from a cut at
    the length limit and no voice followed it). ``silence_s``: the silence heard so far."""

    utterance: Utterance
    silence_s: float


@dataclass(frozen=True)
class SpeechResumed:
    at_s: float


@dataclass(frozen=True)
class UtteranceEnded:
    utterance: Utterance
    reason: EndReason


@dataclass(frozen=True)
class SpeechDropped:
    """Speech started but ended with too little voice to keep (a click, a cough)."""

    at_s: float
    # The segment only reached vad.max_utterance_s and goes on (a held key, a long hum): a
    # SpeechStarted follows at once, and nothing ended.
    split: bool = False


SegmenterEvent = (
    SpeechStarted | OnsetUnconfirmed | SpeechPaused | SpeechResumed | UtteranceEnded | SpeechDropped
)


@dataclass(frozen=True)
class _Frame:
    pcm: bytes  # what the detectors hear
    start_s: float
    voiced: bool
    level_dbfs: float
    words: bytes  # what the utterance keeps for Whisper (AudioChunk.words)
    heard_over: bool = False  # AudioChunk.heard_over
    under: bool = False  # AudioChunk.heard_under
    echo: bool = False  # the assistant's own sound alone (gated, or AudioChunk.echo)

    def unvoiced(self) -> _Frame:
        return dataclasses.replace(self, voiced=False)


def _mark(frame: _Frame) -> str:
    """One letter for a frame in the debug log: voiced, over or under the echo, echo, quiet."""
    if frame.voiced:
        return "v"
    if frame.heard_over:
        return "o"
    if frame.under:
        return "u"
    return "e" if frame.echo else "."


def _frames_for(ms: float, frame_ms: int) -> int:
    return -(-int(ms) // frame_ms)  # round up: never less than asked


class Segmenter:
    """Feed it chunks with :meth:`push`; it answers with :data:`SegmenterEvent` lists."""

    def __init__(
        self,
        config: VadConfig,
        detector: SpeechDetector,
        *,
        rate: int = 16000,
        frame_ms: int = 30,
        onset_check: OnsetCheck | None = None,
        speech_check: SpeechCheck | None = None,
        pauses_ms: tuple[int, ...] = (),
    ) -> None:
        """``pauses_ms``: further pause lengths to report, after ``config.pause_ms``."""
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30 (webrtcvad frames), got {frame_ms}")
        self._config = config
        self._detector = detector
        self._onset_check = onset_check
        self._speech_check = speech_check
        self.onsets_refused = 0  # onsets the check turned down (noise, music, tones)
        self._rate = rate
        self._frame_ms = frame_ms
        self._frame_s = frame_ms / 1000
        self._frame_bytes = rate * frame_ms // 1000 * SAMPLE_WIDTH
        self._pre_roll = _frames_for(config.pre_roll_ms, frame_ms)
        self._trail_keep = TRAILING_KEEP_MS // frame_ms  # round down: at most 200 ms
        # Round down: an utterance never exceeds max_utterance_s (Whisper's window is 30 s).
        self._max_frames = max(1, int(config.max_utterance_s * 1000) // frame_ms)
        self._pending = bytearray()
        self._pending_words = bytearray()  # the same samples, as AudioChunk.words has them
        self._level = -120.0
        self._now_s = 0.0
        self._look_back = _frames_for(LOOK_BACK_MS, frame_ms)
        self._look_back_gap = _frames_for(LOOK_BACK_GAP_MS, frame_ms)
        self._look_back_under = _frames_for(LOOK_BACK_UNDER_MS, frame_ms)
        self._look_back_under_gap = _frames_for(LOOK_BACK_UNDER_GAP_MS, frame_ms)
        # The onset check hears this much of the history: the longer reach-back over a voice
        # under the echo needs no more of it, only more frames to walk.
        self._check_frames = self._pre_roll + self._look_back + config.onset_window_frames
        self._likely_gap = _frames_for(LIKELY_GAP_MS, frame_ms)
        self._going_on_reach = _frames_for(GOING_ON_REACH_MS, frame_ms)
        # Refused onsets since one the check found likely (LIKELY_SPEECH): from, to (seconds).
        self._likely: tuple[float, float] | None = None
        self._likely_asks = 0  # likely refused onsets in a row
        # Refused onsets of at least MURMUR_FLOOR, gaps of at most MURMUR_GAP_MS: from, to.
        self._murmur: tuple[float, float] | None = None
        self._asked_s = 0.0  # when the check last refused an onset
        self._spoke_until_s: float | None = None  # the end of the last utterance's voice
        self._going_on_s = config.hangover_ms / 1000
        self._history: deque[_Frame] = deque(
            maxlen=self._pre_roll + self._look_back_under + config.onset_window_frames
        )
        self._in_speech = False
        self._hold = False  # push-to-talk: the hangover does not end the utterance
        self._continues = False  # goes on from a cut at the length limit: any voice is kept
        self._cut_end_s: float | None = None  # ... that kept its voice, which ended then
        # In frames, as pauses are heard: a mark that falls in the first one's frame is moot.
        first = _frames_for(config.pause_ms, frame_ms)
        later = {n for n in (_frames_for(ms, frame_ms) for ms in pauses_ms) if n > first}
        self._pause_marks = [first, *sorted(later)]
        self._pauses_sent = 0  # SpeechPaused sent for this pause (marks reached)
        self._frames: list[_Frame] = []
        self._onset_s = 0.0
        self._first_voiced: int | None = None  # indices into _frames
        self._last_voiced: int | None = None
        self._silent_frames = 0  # consecutive unvoiced frames at the end of _frames
        # The speech check (see _doubt): where the doubted frames began, and whether they are
        # being taken for silence.
        self._doubt_frames = _frames_for(DOUBT_FRAMES_MS, frame_ms)
        self._doubt_from: int | None = None
        self._vetoing = False
        self._peak_dbfs = -120.0  # loudest voiced frame of the current utterance

    @property
    def voice_heard(self) -> bool:
        """The utterance in progress has a voiced frame."""
        return self._in_speech and self._first_voiced is not None

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def level_dbfs(self) -> float:
        """Loudness of the last frame, for a level meter."""
        return self._level

    def push(self, chunk: AudioChunk, *, gated: bool = False) -> list[SegmenterEvent]:
        """Consume a chunk of any length (16-bit mono at the segmenter's rate).

        ``gated``: the assistant's own sound is playing; the audio is kept but never counts
        as speech. So is a chunk the device marks as echo (``chunk.echo``).
        """
        if chunk.rate != self._rate or chunk.channels != 1:
            raise ValueError(
                f"segmenter expects mono {self._rate} Hz audio, got {chunk.channels} channel(s) "
                f"at {chunk.rate} Hz: resample before pushing"
            )
        under = chunk.heard_under and not gated  # the loop's gate: half-duplex
        gated = gated or chunk.echo
        over = chunk.heard_over
        # Frame times come from the chunk's clock, so a file (timestamp 0) gets file times.
        leftover_samples = len(self._pending) // SAMPLE_WIDTH
        start_s = chunk.timestamp_s - leftover_samples / self._rate
        self._pending += chunk.pcm
        self._pending_words += chunk.words_pcm
        events: list[SegmenterEvent] = []
        offset = 0
        while len(self._pending) - offset >= self._frame_bytes:
            frame = slice(offset, offset + self._frame_bytes)
            pcm, words = bytes(self._pending[frame]), bytes(self._pending_words[frame])
            frame_s = start_s + offset / SAMPLE_WIDTH / self._rate
            events += self._on_frame(pcm, words, frame_s, gated, over=over, under=under)
            offset += self._frame_bytes
        del self._pending[:offset]
        del self._pending_words[:offset]
        return events

    def start(self, *, hold: bool = False, at_s: float | None = None) -> SpeechStarted:
        """Start an utterance now (push-to-talk press), keeping the pre-roll before it.

        With ``hold`` the hangover does not end it: only :meth:`finish` or the length limit.
        ``at_s``: when it starts, if the segmenter has not been given the audio up to then
        (the loop keeps it from the segmenter while it is not hearing).
        """
        if self._in_speech:
            self._hold = self._hold or hold
            return SpeechStarted(self._onset_s)
        onset_s = self._now_s if at_s is None else max(self._now_s, at_s)
        frames = list(self._history)[-self._pre_roll :] if self._pre_roll else []
        self._begin(frames, onset_s=onset_s)
        self._hold = hold
        return SpeechStarted(onset_s)

    def finish(self, reason: EndReason = "forced") -> UtteranceEnded | SpeechDropped | None:
        """End the current utterance now; None when not in speech."""
        if not self._in_speech:
            return None
        return self._end(reason)

    def restart(self) -> list[SegmenterEvent]:
        """Start afresh on the audio that follows (the microphone was reopened, or a frame's
        handling failed), keeping what was heard: an utterance in progress is cut here as at
        the length limit and goes on in a fresh one, held if it was. Its words are kept and
        transcribed, what follows joins them, and the machine is not left waiting for the
        end of an utterance that a reset would have thrown away. With too little voice yet
        to be kept on its own (a word begun), the utterance goes on as it is, unseen."""
        if not self._in_speech:
            self.reset()
            return []
        if self._long_enough() or self._last_voiced is None:
            return self._cut(self._hold, afresh=True)
        frames, onset_s, hold = self._frames, self._onset_s, self._hold
        self.reset()
        self._begin(frames, onset_s=onset_s)
        self._hold = hold
        return []

    def reset(self) -> None:
        """Drop all state and audio (the assistant is speaking: nothing heard counts)."""
        self._pending.clear()
        self._pending_words.clear()
        self._history.clear()
        self._clear_speech()
        self._likely = None
        self._likely_asks = 0
        self._murmur = None
        self._spoke_until_s = None
        if self._onset_check is not None:
            self._onset_check.reset()

    # -- frame handling ---------------------------------------------------------------------

    def _on_frame(
        self,
        pcm: bytes,
        words: bytes,
        start_s: float,
        gated: bool,
        *,
        over: bool = False,
        under: bool = False,
    ) -> list[SegmenterEvent]:
        voiced = self._detector.is_speech(pcm, self._rate) and not gated
        self._level = rms_dbfs(pcm)
        self._now_s = start_s + self._frame_s
        # The assistant's own gated sound is never heard over anything (nor reached back to).
        over = over and not gated
        frame = _Frame(
            pcm, start_s, voiced, self._level, words, heard_over=over, echo=gated, under=under
        )
        if self._in_speech:
            gate = self._config.tail_gate_db
            if voiced and gate > 0 and self._level < self._peak_dbfs - gate:
                # webrtcvad keeps saying "speech" for 60-190 ms after a word ends (its own
                # hangover); a frame far quieter than the utterance is silence, so pauses and
                # the end of speech are timed from the real end of the word.
                frame = frame.unvoiced()
            if self._speech_check is not None:
                # Every frame, voiced or not, so the check hears the audio without gaps.
                speech = self._speech_check.still_speech(pcm, start_s, self._rate)
                frame = self._doubt(frame, speech)
            return self._in_speech_frame(frame)
        self._history.append(frame)
        # Over the reply, a frame heard over the echo, or under it, may be a voice.
        return self._check_onset(ask_early=over or under)

    def _check_onset(self, *, ask_early: bool = False) -> list[SegmenterEvent]:
        frames = list(self._history)
        window = frames[-self._config.onset_window_frames :]
        if not window[-1].voiced or sum(f.voiced for f in window) < self._config.onset_frames:
            self._likely_asks = 0
            if ask_early and self._onset_check is not None:
                # Over the reply the device hears more than the echo (over it, or under it
                # where the canceller left a voice): the check is asked now, not after the
                # detector's onset window (which the echo's gate keeps empty until the reply
                # pauses), so a likely voice pauses the reply sooner (bench_echo.py: p50 370
                # -> 287 ms from the first word, heard over the echo).
                self._confirm(self._onset_check, frames)
                likelihood = self._onset_check.likelihood
                return [OnsetUnconfirmed(self._now_s, likelihood, proposed=False)]
            return []
        first = len(frames) - len(window) + next(i for i, f in enumerate(window) if f.voiced)
        if self._onset_check is not None and not self._confirm(self._onset_check, frames):
            likelihood = self._onset_check.likelihood
            onset_s = frames[first].start_s
            likely = likelihood >= LIKELY_SPEECH
            self._likely_asks = self._likely_asks + 1 if likely else 0
            self._note_refused(onset_s, likely=likely)
            self._note_murmur(onset_s, likelihood)
            if not (self._likely_asks >= LIKELY_CONFIRMS and self._going_on(frames[first])):
                self.onsets_refused += 1
                # Asked again at the next voiced frame while the detector still agrees.
                murmur = self._murmur_from(onset_s) is not None
                return [OnsetUnconfirmed(self._now_s, likelihood, likely=likely or murmur)]
        self._likely_asks = 0
        heard = first
        first = self._likely_onset(frames, first)
        start, echo = first, 0
        for i in range(first - 1, max(0, first - self._look_back_under) - 1, -1):
            frame = frames[i]
            if frame.heard_over or frame.under:  # a voice the detector did not hear
                start, echo = i, 0
            elif frame.echo:
                echo += 1
                under = frames[start].under  # the voice found so far, under the echo
                if echo > (self._look_back_under_gap if under else self._look_back_gap):
                    break
            elif first - i > self._look_back:
                break  # nothing played: only a voice over (or under) the reply goes on
        # The voice began where the reach-back found it: a request it goes on with is judged
        # from there (voice.turn_taking), not from when the detector heard it.
        onset_s = frames[start].start_s
        if start < heard and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "speech began %.2f s before the detector heard it at %.2f s: %s",
                frames[heard].start_s - onset_s,
                frames[heard].start_s,
                "".join(_mark(f) for f in frames[start : heard + 1]),
            )
        self._begin(frames[self._kept_from(frames, start) :], onset_s=onset_s)
        return [SpeechStarted(onset_s)]

    def _kept_from(self, frames: list[_Frame], start: int) -> int:
        """The first frame a voice found to begin at ``frames[start]`` keeps: the pre-roll
        before it; and first, when it goes on from the last utterance (the turn ended at a
        pause and the user was only thinking), the voice the detector heard just before it
        at any score the check gave (see :data:`GOING_ON_REACH_MS`)."""
        if self._going_on(frames[start]):
            earliest = start
            for i in range(start - 1, max(0, start - self._going_on_reach) - 1, -1):
                if frames[i].echo:
                    break
                if frames[i].voiced:
                    earliest = i
                elif earliest - i > self._likely_gap:
                    break
            start = earliest
        return max(0, start - self._pre_roll)

    def _going_on(self, frame: _Frame) -> bool:
        """Whether a voice at ``frame`` would go on from the last utterance: it begins within
        the longest pause after that utterance's voice."""
        spoke = self._spoke_until_s
        return spoke is not None and frame.start_s - spoke <= self._going_on_s

    def _note_murmur(self, onset_s: float, likelihood: float) -> None:
        """A refused onset from ``onset_s``: one at least :data:`MURMUR_FLOOR` likely begins
        or goes on with a murmur; a gap of more than :data:`MURMUR_GAP_MS` ends it."""
        murmur = self._murmur if self._murmur_goes_on(onset_s) else None
        if likelihood >= MURMUR_FLOOR:
            murmur = (onset_s if murmur is None else murmur[0], self._now_s)
        self._murmur = murmur
        self._asked_s = self._now_s

    def _murmur_goes_on(self, onset_s: float) -> bool:
        """Whether an onset from ``onset_s`` goes on with the murmur: it was last heard at
        most :data:`MURMUR_GAP_MS` ago. Across a silence the detector heard (no onset was
        asked about in the last frame), the gap ends where the new onset begins: the onset
        window's wait for voiced frames is not a gap in the voice."""
        if self._murmur is None:
            return False
        silence = self._now_s - self._asked_s > self._frame_s + 1e-6
        gap = (onset_s if silence else self._now_s) - self._murmur[1]
        return gap <= _MURMUR_GAP_S + 1e-6

    def _murmur_from(self, onset_s: float) -> float | None:
        """Where the murmur an onset from ``onset_s`` goes on with began, once it has lasted
        :data:`MURMUR_MS`."""
        murmur = self._murmur
        if murmur is None or not self._murmur_goes_on(onset_s):
            return None
        return murmur[0] if murmur[1] - murmur[0] >= _MURMUR_S - 1e-6 else None

    def _note_refused(self, onset_s: float, *, likely: bool) -> None:
        """The check refused an onset from ``onset_s``; it found it ``likely`` speech or not.
        Likely ones begin a stretch; any refused onset keeps it going (the detector still
        hears a voice), and a gap longer than :data:`LIKELY_GAP_MS` ends it."""
        stretch = self._likely
        if stretch is not None and onset_s - stretch[1] > _LIKELY_GAP_S:
            stretch = None
        if stretch is None and likely:
            stretch = (onset_s, onset_s)
        self._likely = None if stretch is None else (stretch[0], self._now_s)

    def _likely_onset(self, frames: list[_Frame], first: int) -> int:
        """Where a voice confirmed at ``frames[first]`` began: at the refused onsets since one
        the check found likely speech, just before it (see :data:`LIKELY_SPEECH`), or at the
        murmur that leads up to it (:data:`MURMUR_FLOOR`), else there. Never back across the
        assistant's own sound: over a reply, the reach-back over what the device heard over or
        under its echo finds where a voice began."""
        likely, self._likely = self._likely, None
        onset_s = frames[first].start_s
        murmur, self._murmur = self._murmur_from(onset_s), None
        starts = [] if murmur is None else [murmur]
        if likely is not None and onset_s - likely[1] <= _LIKELY_GAP_S:
            starts.append(likely[0])
        if not starts:
            return first
        since_s = max(min(starts), onset_s - _LIKELY_REACH_S) - 1e-6
        start = first
        while start > 0 and frames[start - 1].start_s >= since_s and not frames[start - 1].echo:
            start -= 1
        return start

    def _confirm(self, check: OnsetCheck, frames: list[_Frame]) -> bool:
        """Ask ``check`` about the recent history (``frames``, ending now)."""
        recent = frames[-self._check_frames :]
        return check.confirm(b"".join(f.pcm for f in recent), recent[0].start_s, self._rate)

    def _doubt(self, frame: _Frame, speech: bool) -> _Frame:
        """Weigh the speech check's word on a frame inside speech. A frame webrtcvad calls
        voiced and the check does not is *doubted*: the breath before a word, or music. It
        counts as voice for now (so a breath keeps a pause from running on), but once the
        doubted frames since the check last agreed span :data:`DOUBT_FRAMES_MS`, they were
        music: they become silence, back to the first of them, and so does every doubted
        frame after them until the check agrees again. Plain silence of that length starts
        the count afresh."""
        if not frame.voiced:
            # This frame is silence too: it will end the silent run _add counts.
            if self._silent_frames + 1 >= self._doubt_frames and not self._vetoing:
                self._doubt_from = None
            return frame
        if speech:
            self._doubt_from, self._vetoing = None, False
            return frame
        silent = frame.unvoiced()
        if self._vetoing:
            return silent
        if self._doubt_from is None:
            self._doubt_from = len(self._frames)
        if len(self._frames) - self._doubt_from + 1 < self._doubt_frames:
            return frame
        self._vetoing = True
        self._unvoice_from(self._doubt_from)
        return silent

    def _unvoice_from(self, index: int) -> None:
        """The frames from ``index`` on were not speech after all."""
        for i in range(index, len(self._frames)):
            f = self._frames[i]
            if f.voiced:
                self._frames[i] = f.unvoiced()
        last = self._last_voiced
        self._last_voiced = next(
            (i for i in range(index - 1, -1, -1) if self._frames[i].voiced), None
        )
        if self._last_voiced != last:
            self._pauses_sent = 0  # the pause began earlier: report it again, from its start
        if self._last_voiced is None:
            self._first_voiced = None
        self._silent_frames = len(self._frames) - (
            0 if self._last_voiced is None else self._last_voiced + 1
        )

    def _in_speech_frame(self, frame: _Frame) -> list[SegmenterEvent]:
        self._add(frame)
        events: list[SegmenterEvent] = []
        silence_ms = self._silent_frames * self._frame_ms
        if frame.voiced and self._pauses_sent:
            self._pauses_sent = 0
            events.append(SpeechResumed(frame.start_s))
        elif not frame.voiced and self._next_pause_reached():
            utterance = self._paused_utterance()
            if utterance is not None:
                self._pauses_sent += 1
                events.append(SpeechPaused(utterance, silence_ms / 1000))
        if not frame.voiced and not self._hold and silence_ms >= self._config.hangover_ms:
            return [*events, self._end("hangover")]
        if len(self._frames) >= self._max_frames:
            hold, silent, sent = self._hold, self._silent_frames, self._pauses_sent
            events += self._cut(hold)
            # The pause goes on, as reported (more words are SpeechResumed).
            self._silent_frames, self._pauses_sent = silent, sent
        return events

    def _cut(self, hold: bool, *, afresh: bool = False) -> list[SegmenterEvent]:
        """End the utterance as at the length limit: the same speech goes on in a fresh
        utterance, which the hangover (or the machine's end of the turn) ends: mid-word, in
        a pause, or with the key down. Any voice at all is kept in it, as it would have been
        without the cut. ``afresh``: the audio starts over (see :meth:`restart`)."""
        ended = self._end("max_length")
        if afresh:
            self.reset()
        started = self.start(hold=hold)
        self._continues = True
        if isinstance(ended, UtteranceEnded):
            self._cut_end_s = ended.utterance.end_s
        return [ended, started]

    # -- utterance bookkeeping --------------------------------------------------------------

    def _clear_speech(self) -> None:
        self._in_speech = False
        self._hold = False
        self._continues = False
        self._cut_end_s = None
        self._pauses_sent = 0
        self._frames = []
        self._onset_s = 0.0
        self._first_voiced = None
        self._last_voiced = None
        self._silent_frames = 0
        self._peak_dbfs = -120.0
        self._doubt_from = None
        self._vetoing = False

    def _begin(self, frames: list[_Frame], *, onset_s: float) -> None:
        self._history.clear()
        self._clear_speech()
        self._in_speech = True
        self._onset_s = onset_s
        for frame in frames:
            self._add(frame)

    def _add(self, frame: _Frame) -> None:
        self._frames.append(frame)
        if frame.voiced:
            index = len(self._frames) - 1
            self._first_voiced = index if self._first_voiced is None else self._first_voiced
            self._last_voiced = index
            self._silent_frames = 0
            self._peak_dbfs = max(self._peak_dbfs, frame.level_dbfs)
        else:
            self._silent_frames += 1

    def _voiced_span_ms(self) -> float:
        if self._first_voiced is None or self._last_voiced is None:
            return 0.0
        return (self._last_voiced - self._first_voiced + 1) * self._frame_ms

    def _next_pause_reached(self) -> bool:
        marks = self._pause_marks
        return self._pauses_sent < len(marks) and self._silent_frames >= marks[self._pauses_sent]

    def _long_enough(self) -> bool:
        if self._continues:
            return self._last_voiced is not None
        return self._voiced_span_ms() >= self._config.min_utterance_ms

    def _paused_utterance(self) -> Utterance | None:
        """The utterance so far at a pause, if long enough to try. Cut at the length limit
        before this pause ended (or a few frames into it), it has no voice of its own: the
        pause is still reported, with no audio, at the end of the cut part's voice (the
        machine joins that part), else it hid the pause and the turn waited for the
        hangover."""
        if self._last_voiced is None and self._cut_end_s is not None:
            end_s = self._cut_end_s
            return Utterance(pcm=b"", rate=self._rate, start_s=end_s, end_s=end_s)
        return self._utterance() if self._long_enough() else None

    def _kept_frames(self) -> int:
        """How many frames the utterance keeps: up to the last voiced one plus a short tail."""
        if self._last_voiced is None:
            return 0
        return min(len(self._frames), self._last_voiced + 1 + self._trail_keep)

    def _utterance(self) -> Utterance | None:
        if self._last_voiced is None:
            return None
        kept = self._frames[: self._kept_frames()]
        last = self._frames[self._last_voiced]
        return Utterance(
            pcm=b"".join(f.words for f in kept),
            rate=self._rate,
            start_s=kept[0].start_s,
            end_s=last.start_s + self._frame_s,
        )

    def _end(self, reason: EndReason) -> UtteranceEnded | SpeechDropped:
        utterance = self._utterance() if self._long_enough() else None
        if utterance is None:
            log.debug(
                "dropped an utterance with %.0f ms of voice (< %d ms)",
                self._voiced_span_ms(),
                self._config.min_utterance_ms,
            )
        if self._last_voiced is not None:
            voice = self._frames[self._last_voiced]
            self._spoke_until_s = voice.start_s + self._frame_s
        # Silence after the kept tail becomes the next utterance's pre-roll history.
        tail = self._frames[self._kept_frames() :]
        self._clear_speech()
        self._history.extend(tail)
        if utterance is None:
            return SpeechDropped(self._now_s, split=reason == "max_length")
        return UtteranceEnded(utterance, reason)
