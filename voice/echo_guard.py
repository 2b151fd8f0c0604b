"""What keeps the assistant from hearing itself once the canceller runs.

WebRTC's canceller (:mod:`voice.echo`) removes 50-70 dB of a steady echo, but not always:
while it learns a room, at the onset of a reply when the echo path has moved (two sound
cards whose clocks drift apart, an underrun on a busy machine), and as a faint residue that
webrtcvad calls speech whatever its level. Three guards, all on 10 ms frames of what the
microphone heard, what the canceller left and what was played in the same callbacks:

- :class:`EchoMonitor`: has the canceller learnt the room? Until it first has, the loop stays
  half-duplex (the microphone gated while the assistant speaks).
- :class:`EchoGate`: a frame no louder at the microphone than the echo the played sound
  makes there is echo, whatever the canceller left of it. A voice over the reply makes the
  microphone louder than the echo alone.
- :func:`is_residue`: the faint residue of a removed echo is echo too.

And :class:`LinearMonitor` says when the words' canceller (speexdsp's linear filter, what
Whisper hears: :mod:`voice.echo`) can be trusted to have taken the echo away.

A frame judged echo keeps its audio (Whisper hears everything the canceller left); the
device marks its chunk (``AudioChunk.echo``) and the segmenter never counts it as speech.
"""

from __future__ import annotations

import collections

import numpy as np
import numpy.typing as npt

Int16 = npt.NDArray[np.int16]

FAR_ACTIVE_DBFS = -50.0  # a played frame louder than this makes an echo worth judging
WINDOW_FRAMES = 50  # judge the canceller on 0.5 s of played sound at a time ...
LEARNT_WINDOWS = 4  # ... and trust it after this many good windows in a row
LEARNT_ERLE_DB = 30.0  # a good window: the echo is this much quieter after the canceller
# After an underrun (the echo may have moved), this many good windows trust it again: the
# learnt canceller finds a moved echo within a few hundred milliseconds ...
RELEARN_WINDOWS = 2
# ... windows of this many frames: after most stalls in the rig the canceller removed 30 dB
# or more from the first window on, so two 0.5 s windows gated the reply for a whole second
# of played sound where half a second proves as much (bench_underrun.py --relearn).
RELEARN_WINDOW_FRAMES = 25
RESIDUE_DB = 20.0  # a frame the canceller took this much out of held echo ...
RESIDUE_DBFS = -60.0  # ... and what is left under this level is its residue: silence it
# Once AEC3 has learnt the room it leaves the echo alone at -70 to -95 dBFS, 60-80 dB under
# what the microphone heard. A frame it left louder than UNDER_LEFT_DBFS, and took less than
# UNDER_ERLE_DB out of, holds something besides the echo: a voice under a louder reply.
UNDER_LEFT_DBFS = -55.0
UNDER_ERLE_DB = 40.0


def power(samples: Int16) -> float:
    """Mean square of int16 samples, as a fraction of full scale squared."""
    x = samples.astype(np.float64) / 32768.0
    return float(np.mean(x * x)) if len(x) else 0.0


def db(p: float) -> float:
    return float(10 * np.log10(max(p, 1e-12)))


def is_residue(heard: Int16, left: Int16) -> bool:
    """Whether ``left``, the canceller's output for the microphone frame ``heard``, is the
    faint residue of an echo: the canceller took :data:`RESIDUE_DB` or more out of the frame
    and less than :data:`RESIDUE_DBFS` is left.

    That residue (-70 to -90 dBFS in the loopback rig) is shaped like speech, and webrtcvad
    calls it speech whatever its level. A voice over the reply is louder than that, even
    where the canceller turns it down while it decides that two are talking.
    """
    left_db = db(power(left))
    return left_db < RESIDUE_DBFS and db(power(heard)) - left_db >= RESIDUE_DB


def is_voice_under(heard: Int16, left: Int16) -> bool:
    """Whether a frame judged echo (no louder than the echo expected) still holds a voice:
    ``left``, what a canceller that has learnt the room made of ``heard``, is far above
    what it leaves of the echo alone.

    The gate cannot tell a voice quieter than the reply from the reply, and must not: a
    leak would stop the reply. But Silero is asked about such a frame (voice.vad), and a
    likely voice pauses the reply, so it is heard alone; and once a voice is found, the
    frames before it with such a voice under the echo are its first words (voice.vad
    reaches back over them). Offline on recordings of the rig (40 real voices over replies,
    28 replies nobody talked over), 76 % of the voices' frames under the echo were such
    frames, against 0.5 % of the echo before the voices and 1 % of replies in a quiet room.
    A sound in the room (music, keys, a fan) is let through as a voice is: 27 % of those
    replies' frames; Silero pauses a reply for one now and then (bench_echo.py).
    """
    left_db = db(power(left))
    return left_db > UNDER_LEFT_DBFS and db(power(heard)) - left_db < UNDER_ERLE_DB


def erle_db(before: Int16, after: Int16) -> float:
    """Echo return loss enhancement: how much quieter ``after`` is than ``before``, in dB."""
    power_in = float(np.mean(before.astype(np.float64) ** 2))
    power_out = float(np.mean(after.astype(np.float64) ** 2))
    return float(10 * np.log10((power_in + 1e-9) / (power_out + 1e-9)))


# ---- has it learnt the room? ---------------------------------------------------------------


class ErleWindow:
    """Echo removed (dB) over windows of ``frames`` frames of a canceller's input and output."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.clear()

    def clear(self) -> None:
        self._count = 0
        self._heard = 0.0
        self._left = 0.0

    def add(self, heard_power: float, left_power: float) -> float | None:
        """One frame's powers; the window's figure when this frame completes it."""
        self._count += 1
        self._heard += heard_power
        self._left += left_power
        if self._count < self.frames:
            return None
        erle = db(self._heard) - db(self._left)
        self.clear()
        return erle


class EchoMonitor:
    """Whether the canceller removes the echo yet: until then the loop stays half-duplex.

    WebRTC's canceller needs a few seconds of played sound to learn a new echo path, and
    meanwhile the echo comes through (in the loopback rig, 2-15 dB removed in the first
    two seconds of the first reply, 35-70 dB after three), loud enough to start turns and
    stop replies. So over each 0.5 s of played sound the microphone before the canceller is
    compared with what is left after it; :data:`LEARNT_WINDOWS` windows in a row with at
    least :data:`LEARNT_ERLE_DB` removed, and the room is learnt (one good window is not
    enough: the canceller can suppress hard at the very start, then leak). It stays learnt
    until :meth:`reset` (a reopened stream), or until :meth:`moved` (an underrun, after which
    the echo can come tens of milliseconds later: the canceller leaks until it finds it
    again, and a reply heard that way stopped itself); then :data:`RELEARN_WINDOWS` good
    windows of :data:`RELEARN_WINDOW_FRAMES` learn it again (meanwhile :class:`EchoGate`
    looks for the moved echo around where it was). Speech over a reply, or a room where the
    echo is never removed well (a headset, where ``turn.barge_in`` is the setting to use),
    only keeps it half-duplex: the failure mode is the old behaviour, never hearing itself.
    """

    def __init__(
        self,
        window_frames: int = WINDOW_FRAMES,
        windows: int = LEARNT_WINDOWS,
        relearn_frames: int = RELEARN_WINDOW_FRAMES,
    ) -> None:
        self.window_frames = window_frames
        self.windows = windows
        self.relearn_frames = relearn_frames
        self.learnt = False
        self.erle_db: float | None = None  # of the last window judged
        self._window = ErleWindow(window_frames)
        self.reset()

    def reset(self) -> None:
        self.learnt = False
        self.relearning = False  # learnt before on this stream: found again after moved()
        self._start_over()

    @property
    def knows_room(self) -> bool:
        """Learnt, or learnt before on this stream and finding a moved echo again."""
        return self.learnt or self.relearning

    def moved(self) -> bool:
        """An underrun: the echo may have moved. True if that unlearnt the room."""
        was_learnt = self.learnt
        self.learnt, self.relearning = False, self.relearning or was_learnt
        self._start_over()
        return was_learnt

    def _start_over(self) -> None:
        """Count good windows afresh: all of them, or the few that relearn a known room."""
        self._good = self.windows - RELEARN_WINDOWS if self.relearning else 0
        self._window.frames = self.frames_per_window
        self._window.clear()

    @property
    def frames_per_window(self) -> int:
        """How many played frames the window being filled judges."""
        return self.relearn_frames if self.relearning else self.window_frames

    def update(self, heard: Int16, left: Int16, played: Int16) -> bool:
        """One frame: the microphone before and after the canceller, and what was played
        in the same callbacks. True when this frame made the room learnt."""
        if self.learnt or db(power(played)) <= FAR_ACTIVE_DBFS:
            return False
        erle = self._window.add(power(heard), power(left))
        if erle is None:
            return False
        self.erle_db = erle
        if erle >= LEARNT_ERLE_DB:
            self._good += 1
        else:
            self._start_over()
        self.learnt = self._good >= self.windows
        return self.learnt


# ---- may Whisper hear the linear canceller? ---------------------------------------------------

# A window with this much echo removed: a voice as loud as the echo is that much louder than
# what is left of the reply, and Whisper hears the voice (AEC3 drops whole words instead) ...
LINEAR_TRUSTED_DB = 6.0
LINEAR_LOST_DB = 3.0  # ... and with this little, the echo path has moved away from it
# ... unless a voice starts within this many frames: its quiet first syllables pass for echo
# alone, and the window that holds them looks like echo let through.
LINEAR_LOST_AFTER_FRAMES = 30


class LinearMonitor:
    """Whether the linear canceller takes the echo away now, judged afresh over each 0.5 s
    of frames that are surely the speaker's echo alone: no louder at the microphone than
    the echo :class:`EchoGate` expects there (a voice as loud as the echo makes it 3 dB
    louder; a quieter one adds little to the window).

    It removes 6-25 dB once it has learnt the echo path, but it learns it slowly and loses
    it when the path moves (a stall of the audio callback shifted the echo by up to 90 ms in
    the rig, and left it at 1-9 dB, or adding echo), and then its output has the reply in
    it: transcribed, the reply became part of a request. So until a window shows
    :data:`LINEAR_TRUSTED_DB` removed, and from one with less than :data:`LINEAR_LOST_DB`,
    Whisper hears AEC3 instead.

    A voice over the reply must not make that call: its first, quiet syllables pass for echo
    alone, and the window holding them looks like echo let through (in the rig a request said
    over the reply then went to AEC3, which dropped all of it). So a window with a frame
    louder than the echo in it never demotes the canceller, and a low one does only after
    :data:`LINEAR_LOST_AFTER_FRAMES` frames with no such frame.
    """

    def __init__(self, window_frames: int = WINDOW_FRAMES) -> None:
        self.window_frames = window_frames
        self.trusted = False
        self.erle_db: float | None = None  # of the last window judged
        self._window = ErleWindow(window_frames)
        self._voiced = False  # a frame louder than the echo came during the window
        self._lost_in: int | None = None  # frames until a low window demotes the canceller

    def reset(self) -> None:
        """A new stream, or an underrun that may have moved the echo: the canceller must
        prove itself again."""
        self.trusted = False
        self._window.clear()
        self._voiced, self._lost_in = False, None

    def update(self, heard: Int16, left: Int16, expected_echo_db: float | None) -> None:
        """One frame: the microphone, the linear canceller's output, and the level the echo
        alone should have in it (None: nothing loud enough was played)."""
        heard_power = power(heard)
        if expected_echo_db is not None and db(heard_power) > expected_echo_db:
            self._voiced, self._lost_in = True, None
            return
        if self._lost_in is not None:
            self._lost_in -= 1
            if self._lost_in <= 0:
                self.trusted, self._lost_in = False, None
        if expected_echo_db is None:
            return
        erle = self._window.add(heard_power, power(left))
        if erle is None:
            return
        voiced, self._voiced = self._voiced, False
        self.erle_db = erle
        if erle >= LINEAR_TRUSTED_DB:
            self.trusted, self._lost_in = True, None
        elif erle < LINEAR_LOST_DB and self.trusted and not voiced:
            self._lost_in = LINEAR_LOST_AFTER_FRAMES


# ---- no louder than the echo -------------------------------------------------------------------

FLOOR_DBFS = -80.0  # levels under this are all the same silence
HISTORY_FRAMES = 300  # 3 s of levels to find the echo's delay in
MAX_DELAY_FRAMES = 50  # 500 ms: as far as WebRTC's canceller looks
ESTIMATE_EVERY = 50  # frames: the delay drifts by a fraction of a millisecond a second
MIN_MATCH = 0.6  # a delay is believed when the level envelopes correlate this well there
DELAY_SLACK = 2  # frames either side of the delay: it is known to 10 ms
# After an underrun the echo can come this many frames later (or sooner) than the delay found
# before it: a stall short of reopening the stream (voice.devices.duplex.BEHIND_S, 100 ms)
# moved it 40 ms in the rig, and up to 90 ms; plus the delay's own slack.
MOVED_SLACK = 12
LOUD_PLAYED_DBFS = -40.0  # played frames loud enough to measure the echo's loss with
LOSS_PERCENTILE = 30  # a voice over the reply makes (heard - played) high: read low
ECHO_MARGIN_DB = 3.0  # a voice makes the microphone at least this much louder than the echo
# ... and this much while an underrun's move is being found: AEC3 then leaks, so a frame the
# gate lets through is heard as it is (in the rig, with 3 dB, one reply in 56 stalls paused
# itself on its echo and stopped on a word Whisper made of it).
MOVED_MARGIN_DB = 6.0


class EchoGate:
    """Finds the frames that can only be echo: the microphone no louder than the echo the
    played sound makes there.

    From the levels of what was played and what the microphone heard (before the canceller)
    over the last 3 s, it finds the echo's delay (where the two level envelopes correlate
    best, 0-500 ms) and its loss (how much quieter the echo is than what was played: a low
    percentile, so that a voice over the reply does not raise it). A frame heard at most
    :data:`ECHO_MARGIN_DB` above the echo expected from what was played one delay earlier is
    echo, whatever the canceller left of it (:data:`MOVED_MARGIN_DB` while a moved echo is
    being found, below). Measured with a drifting echo path in the rig,
    that caught every leak that started a turn and kept a voice as loud as the echo (its
    louder syllables get through); a voice clearly quieter than the echo at the microphone
    does not stop the reply: speak up to interrupt it.

    After an underrun (:meth:`moved`) the echo can have moved: the expected echo is then the
    loudest of what was played :data:`MOVED_SLACK` frames either side of the delay it moved
    from (and further back when the microphone fell behind), its loss as measured before,
    until the history holds only frames after the move (3 s, when the delay and loss found
    in it hold again) and :meth:`found` has said the canceller removes the echo again. A
    voice has to be 6 dB louder than the echo of the reply's loudest stretch around it to be
    heard meanwhile, but it is heard.
    """

    def __init__(self) -> None:
        self.delay: int | None = None  # frames from played to heard
        self.loss_db: float | None = None  # heard minus played, for the echo alone
        self._played: collections.deque[float] = collections.deque(maxlen=HISTORY_FRAMES)
        self._heard: collections.deque[float] = collections.deque(maxlen=HISTORY_FRAMES)
        self._count = 0
        # The echo's level expected in the last frame judged (expected_echo_db), for the
        # device's other uses of it: worked out once per frame on the audio path.
        self.expected_db: float | None = None
        self._fresh_delay: int | None = None  # the delay when the room was first learnt
        self._since_moved: int | None = None  # frames since an underrun moved the echo
        self._found = False  # ... and the canceller has found it again since
        self._later = 0  # frames more the moved echo may come later (the microphone behind)
        self._anchor: int | None = None  # while moved: the delay it moved from, looked around

    @property
    def slack(self) -> int:
        """Frames either side of the delay the echo may come at."""
        return DELAY_SLACK if self._since_moved is None else MOVED_SLACK

    @property
    def looks_from(self) -> int | None:
        """The delay the echo is looked for around: the one it moved from while a move is
        being found, else the one found."""
        return self.delay if self._anchor is None else self._anchor

    @property
    def knows_echo(self) -> bool:
        """Whether the gate can say what is echo: it has found the echo's delay and loss."""
        return self.delay is not None and self.loss_db is not None

    def reset(self) -> None:
        self.delay = self.loss_db = self.expected_db = self._fresh_delay = None
        self._since_moved, self._found, self._later, self._anchor = None, False, 0, None
        self._forget()

    def _forget(self) -> None:
        self._played.clear()
        self._heard.clear()
        self._count = 0

    def _push(self, played_db: float, heard_db: float) -> None:
        self._played.append(played_db)
        self._heard.append(heard_db)
        if self._since_moved is not None:
            self._since_moved += 1
            if self._found and self._since_moved >= HISTORY_FRAMES:
                # Found, and judged on it alone: where the levels say, as before the move.
                self._since_moved, self._later, self._anchor = None, 0, None

    def is_echo(self, heard: Int16, left: Int16, played: Int16) -> bool:
        """Whether a frame can only be echo: never speech (or its residue, :func:`is_residue`).
        ``heard``, ``left``: the microphone before and after the canceller; ``played``: what
        was played in the same callbacks."""
        heard_db = max(FLOOR_DBFS, db(power(heard)))
        self._push(max(FLOOR_DBFS, db(power(played))), heard_db)
        self._count += 1
        if self._count % ESTIMATE_EVERY == 0:
            self._estimate()
        expected = self.expected_db = self.expected_echo_db()
        margin = ECHO_MARGIN_DB if self._since_moved is None else MOVED_MARGIN_DB
        if expected is not None and heard_db <= expected + margin:
            return True
        return is_residue(heard, left)

    def moved(self, later: int = 0) -> None:
        """An underrun: the echo may come up to :data:`MOVED_SLACK` frames away from the
        delay found so far, and up to ``later`` frames more later (the microphone fell that
        far behind), as loud as before. (Whether the delay found already counts the move
        or not, the echo is in that window. Meanwhile the window stays around the delay it
        moved from: a voice over the reply can pull the delay the levels show far off, and
        AEC3 leaks the echo the window would then miss.)"""
        if self._since_moved is None:  # a move afresh: look around the delay it moved from
            self._anchor, self._later = self.delay, later
        else:
            self._later = max(self._later, later)
        self._since_moved, self._found = 0, False

    def found(self) -> None:
        """The canceller removes the echo (again); the first time, it has learnt the room at
        the delay found now."""
        self._found = True
        if self._fresh_delay is None and self._since_moved is None:
            self._fresh_delay = self.delay

    def reopened(self) -> bool:
        """The same devices on a fresh stream (the microphone had fallen behind): the echo
        comes about where it came when the room was learnt, as loud as before. False (and
        all is forgotten) when that is not known."""
        if self._fresh_delay is None or self.loss_db is None:
            self.reset()
            return False
        self._forget()
        self.delay = self._fresh_delay
        self._since_moved = None  # in step again: a move afresh, anchored there, no later
        self.moved()
        return True

    def skip(self) -> None:
        """A frame while nothing plays, not looked at (the canceller rests): silence."""
        self.expected_db = None
        self._push(FLOOR_DBFS, FLOOR_DBFS)

    def expected_echo_db(self) -> float | None:
        """The level the echo of what was played should have in the newest frame heard;
        None when nothing loud enough was played one delay ago (or nothing is known yet)."""
        delay = self.looks_from
        if delay is None or self.loss_db is None:
            return None
        newest = len(self._played) - 1
        lo = max(0, newest - delay - self.slack - self._later)
        hi = min(newest, newest - delay + self.slack)
        if hi < lo:
            return None
        loudest = max(self._played[i] for i in range(lo, hi + 1))
        return loudest + self.loss_db if loudest > FAR_ACTIVE_DBFS else None

    def _estimate(self) -> None:
        played, heard = np.array(self._played), np.array(self._heard)
        if np.mean(played > FAR_ACTIVE_DBFS) < 0.2:
            return  # too little played to judge: keep what we know
        best, best_lag = MIN_MATCH, None
        for lag in range(min(MAX_DELAY_FRAMES, len(played) // 2) + 1):
            a, b = played[: len(played) - lag], heard[lag:]
            if a.std() == 0 or b.std() == 0:
                continue
            match = float(np.corrcoef(a, b)[0, 1])
            if match > best:
                best, best_lag = match, lag
        if best_lag is not None:
            self.delay = best_lag
        if self.delay is None:
            return
        # Moved: until the canceller has found it and the history holds it alone (a voice
        # over the reply, which keeps the canceller from proving itself, pulls the levels).
        if self._since_moved is not None and self.loss_db is not None:
            return  # as loud as before: measured across the move, it would read low
        a, b = played[: len(played) - self.delay], heard[self.delay :]
        loud = a > LOUD_PLAYED_DBFS
        if loud.sum() >= 20:
            self.loss_db = float(np.percentile(b[loud] - a[loud], LOSS_PERCENTILE))
