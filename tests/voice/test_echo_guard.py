"""The guards that keep the assistant from hearing itself: has the canceller learnt the room,
is a frame no louder than the echo, is it the faint residue of one. Frames are made here."""

from __future__ import annotations

import numpy as np
import pytest

from tests.voice.fakes import ThresholdDetector
from voice.audio import AudioChunk
from voice.config import VadConfig
from voice.echo import FRAME
from voice.echo_guard import (
    DELAY_SLACK,
    ECHO_MARGIN_DB,
    HISTORY_FRAMES,
    LEARNT_WINDOWS,
    LINEAR_LOST_AFTER_FRAMES,
    MOVED_SLACK,
    RELEARN_WINDOW_FRAMES,
    RELEARN_WINDOWS,
    WINDOW_FRAMES,
    EchoGate,
    EchoMonitor,
    LinearMonitor,
    is_residue,
    is_voice_under,
)
from voice.vad import Segmenter, SpeechStarted, UtteranceEnded

Int16 = np.ndarray


def level(dbfs: float, seed: int = 0) -> Int16:
    """A frame of noise at ``dbfs`` (digital silence below -110)."""
    if dbfs < -110:
        return np.zeros(FRAME, np.int16)
    noise = np.random.default_rng(seed).standard_normal(FRAME)
    return (noise / np.sqrt(np.mean(noise**2)) * 32768 * 10 ** (dbfs / 20)).astype(np.int16)


# ---- the echo's residue -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heard_dbfs", "left_dbfs", "residue"),
    [
        (-20, -80, True),  # echo removed, its faint residue left: webrtcvad would call it speech
        (-45, -70, True),  # a quiet echo, 25 dB removed
        (-20, -45, False),  # a voice the canceller turned down during double talk: kept
        (-70, -85, False),  # a quiet room: nothing like an echo was removed ... kept
        (-65, -68, False),  # ... the room's own noise: kept
        (-25, -26, False),  # a voice over silence
    ],
)
def test_only_the_faint_residue_of_a_removed_echo_counts_as_echo(
    heard_dbfs: float, left_dbfs: float, residue: bool
) -> None:
    assert is_residue(level(heard_dbfs), level(left_dbfs)) is residue


# Levels from the rig (tap of a live run): the reply's echo at -10 to -30 dBFS, a real voice
# under it at -20 to -25 dBFS.
@pytest.mark.parametrize(
    ("heard_dbfs", "left_dbfs", "under"),
    [
        (-11, -94, False),  # the echo alone, removed by a canceller that has learnt the room
        (-25, -70, False),  # ... a quieter echo: its residue
        (-5, -50, False),  # ... a loud echo it took 45 dB out of: a leak of it
        (-15, -33, True),  # a voice under the echo, let through in double talk
        (-19, -24, True),
        (-30, -52, True),  # ... a quiet syllable of it
        (-20, -58, False),  # too faint to be told from a residue
    ],
)
def test_a_voice_under_the_echo_is_what_the_canceller_leaves_far_above_its_residue(
    heard_dbfs: float, left_dbfs: float, under: bool
) -> None:
    assert is_voice_under(level(heard_dbfs), level(left_dbfs)) is under


# ---- may Whisper hear the linear canceller? ------------------------------------------------------


def linear_window(
    monitor: LinearMonitor, *, left: int, heard: int = 8000, expected_db: float | None = -10.0
) -> bool:
    """One window of frames at these amplitudes (8000 is -12 dBFS), with the echo alone
    expected at ``expected_db``; whether the canceller is trusted after it."""
    for _ in range(monitor.window_frames):
        monitor.update(np.full(FRAME, heard, np.int16), np.full(FRAME, left, np.int16), expected_db)
    return monitor.trusted


@pytest.mark.parametrize(
    ("lefts", "trusted"),
    [
        # amplitude the linear canceller left of an echo at 8000, per 0.5 s of echo alone
        ([], False),  # nothing known yet: AEC3
        ([800], True),  # 20 dB removed
        ([5000], False),  # 4 dB: not yet
        ([800, 5000], True),  # 4 dB after 20: kept
        ([800, 6000], False),  # 2.5 dB: the echo path moved away from it
        ([800, 16000], False),  # it adds echo
        ([800, 16000, 5000], False),  # 4 dB after that: not yet again
        ([800, 16000, 3000], True),  # 8.5 dB: learnt again
    ],
)
def test_the_linear_canceller_is_trusted_while_it_takes_the_echo_away(
    lefts: list[int], trusted: bool
) -> None:
    monitor = LinearMonitor()
    for left in lefts:
        linear_window(monitor, left=left)
    echo_alone(monitor, LINEAR_LOST_AFTER_FRAMES, left=lefts[-1] if lefts else 8000)
    assert monitor.trusted is trusted


def echo_alone(monitor: LinearMonitor, frames: int, *, left: int, heard: int = 8000) -> None:
    for _ in range(frames):
        monitor.update(np.full(FRAME, heard, np.int16), np.full(FRAME, left, np.int16), -10.0)


VOICE = 16000  # -6 dBFS: louder than the echo expected at -10


@pytest.mark.parametrize(
    ("script", "trusted"),
    [
        # after a good window: e<N> N frames of echo alone (a=800 left, 20 dB removed),
        # l<N> of echo let through (a=6000 left, 2.5 dB), v one frame of voice over it
        ("l50 e30", False),  # the echo path moved: AEC3 after 0.3 s more
        ("l50 e29", True),  # ... not sooner
        # (each ends before another window of 50 could make it trusted again)
        ("l50 e10 v e30", True),  # the low window held a voice's first syllables
        ("l20 v l30 e40", True),  # a voice inside the window: it judges nothing down
        ("l20 v l30 l50 e30", False),  # the next window, echo alone, does
    ],
)
def test_a_voice_over_the_reply_never_makes_whisper_hear_aec3(script: str, trusted: bool) -> None:
    monitor = LinearMonitor()
    assert linear_window(monitor, left=800) is True
    for step in script.split():
        if step == "v":
            monitor.update(np.full(FRAME, VOICE, np.int16), np.full(FRAME, VOICE, np.int16), -10.0)
        else:
            echo_alone(monitor, int(step[1:]), left=800 if step[0] == "e" else 6000)
    assert monitor.trusted is trusted


def test_only_frames_surely_of_echo_alone_judge_the_linear_canceller() -> None:
    monitor = LinearMonitor()
    assert linear_window(monitor, left=800) is True
    # A voice over the echo: louder than the echo alone, so not judged (the voice is in
    # what the canceller leaves, which would look like echo let through) ...
    assert linear_window(monitor, heard=12000, left=12000) is True
    assert linear_window(monitor, left=16000, expected_db=None) is True  # ... nothing played
    monitor.reset()  # a new stream
    assert monitor.trusted is False


# ---- has the canceller learnt the room? -------------------------------------------------------


def window(monitor: EchoMonitor, *, heard: int, left: int, played: int = 8000) -> bool:
    """One window of frames at these amplitudes; True if it made the room learnt."""
    learnt = False
    for _ in range(monitor.frames_per_window):
        learnt |= monitor.update(
            np.full(FRAME, heard, np.int16),
            np.full(FRAME, left, np.int16),
            np.full(FRAME, played, np.int16),
        )
    return learnt


@pytest.mark.parametrize(
    ("windows", "learnt"),
    [
        # (amplitude heard, amplitude left after the canceller) per 0.5 s of played sound
        ([(8000, 10)] * LEARNT_WINDOWS, True),  # 58 dB removed, again and again
        ([(8000, 10)] * (LEARNT_WINDOWS - 1), False),  # not yet long enough
        ([(8000, 8)] + [(8000, 4000)] + [(8000, 10)] * (LEARNT_WINDOWS - 1), False),  # a leak
        ([(8000, 400)] * 10, False),  # 26 dB: not enough
        ([(8000, 8000)] * 10, False),  # speech over the reply (or nothing removed)
        ([(3, 3)] * 10, False),  # a headset: no echo to learn (turn.barge_in is for that)
    ],
)
def test_learnt_after_enough_good_windows_in_a_row(
    windows: list[tuple[int, int]], learnt: bool
) -> None:
    monitor = EchoMonitor()
    for heard, left in windows:
        window(monitor, heard=heard, left=left)
    assert monitor.learnt is learnt


def test_silence_played_is_not_judged_and_reset_forgets() -> None:
    monitor = EchoMonitor()
    for _ in range(LEARNT_WINDOWS - 1):
        window(monitor, heard=8000, left=10)
    window(monitor, heard=8000, left=8000, played=0)  # nothing played: no window at all
    assert window(monitor, heard=8000, left=10) is True  # the fourth good one in a row
    assert monitor.learnt and monitor.erle_db == pytest.approx(58, abs=1)
    assert window(monitor, heard=8000, left=10) is False  # learnt once, reported once
    monitor.reset()
    assert not monitor.learnt
    assert monitor.window_frames == WINDOW_FRAMES


def test_an_underrun_unlearns_the_room_until_the_canceller_removes_the_echo_again() -> None:
    """An underrun can move the echo (the canceller leaks until it finds it): gated again
    until RELEARN_WINDOWS good windows; before the room was first learnt, it starts over."""
    monitor = EchoMonitor()
    window(monitor, heard=8000, left=10)
    assert monitor.moved() is False  # not learnt yet: nothing to unlearn ...
    for _ in range(LEARNT_WINDOWS - 1):
        window(monitor, heard=8000, left=10)
    assert not monitor.learnt  # ... and the window before the underrun no longer counts
    assert window(monitor, heard=8000, left=10) is True

    assert monitor.moved() is True and not monitor.learnt and monitor.relearning
    assert monitor.moved() is False  # a second underrun while gated: already unlearnt
    for _ in range(RELEARN_WINDOWS - 1):
        assert window(monitor, heard=8000, left=10) is False
    window(monitor, heard=8000, left=8000)  # a leak: the good windows start over ...
    for _ in range(RELEARN_WINDOWS - 1):
        assert window(monitor, heard=8000, left=10) is False
    assert window(monitor, heard=8000, left=10) is True  # ... from the relearning count
    assert RELEARN_WINDOWS < LEARNT_WINDOWS
    monitor.reset()  # a new stream: learnt from scratch
    assert not monitor.learnt and not monitor.relearning
    assert monitor.frames_per_window == WINDOW_FRAMES


def frames(monitor: EchoMonitor, count: int, *, heard: int = 8000, left: int = 10) -> bool:
    """``count`` played frames at these amplitudes; True if one made the room learnt."""
    one = (np.full(FRAME, heard, np.int16), np.full(FRAME, left, np.int16))
    return any([monitor.update(*one, np.full(FRAME, 8000, np.int16)) for _ in range(count)])


def test_a_moved_echo_is_judged_on_shorter_windows() -> None:
    """Relearning, the canceller is judged on RELEARN_WINDOW_FRAMES at a time: found again
    after RELEARN_WINDOWS such windows of played sound, not one frame sooner, and the
    window that holds a leak starts the count over."""
    monitor = EchoMonitor()
    frames(monitor, LEARNT_WINDOWS * WINDOW_FRAMES)
    assert monitor.learnt and monitor.frames_per_window == WINDOW_FRAMES
    monitor.moved()
    assert monitor.frames_per_window == RELEARN_WINDOW_FRAMES < WINDOW_FRAMES
    needed = RELEARN_WINDOWS * RELEARN_WINDOW_FRAMES
    assert frames(monitor, needed - 1) is False
    frames(monitor, 1, left=8000)  # the last frame of the second window leaks: 14 dB
    assert not monitor.learnt
    assert frames(monitor, needed - 1) is False
    assert frames(monitor, 1) is True


# ---- no louder than the echo -------------------------------------------------------------------


def reply_levels(frames: int, seed: int = 1) -> np.ndarray:
    """dBFS of each played frame: syllables of 80-200 ms at -35 to -12 dBFS (2 dB of
    flutter), with pauses of 30-150 ms between them."""
    rng = np.random.default_rng(seed)
    levels: list[float] = []
    while len(levels) < frames:
        levels += list(rng.uniform(-35, -12) + rng.uniform(-1, 1, rng.integers(8, 21)))
        levels += [-120.0] * int(rng.integers(3, 16))
    return np.array(levels[:frames])


def power_sum(*dbfs: float) -> float:
    return float(10 * np.log10(sum(10 ** (d / 10) for d in dbfs)))


class Room:
    """Frames through a room whose echo comes ``delay`` frames late, ``loss_db`` quieter."""

    def __init__(self, played: np.ndarray, delay: int = 9, loss_db: float = -2.0) -> None:
        self.played = played
        self.delay = delay
        self.loss_db = loss_db

    def echo(self, t: int) -> float:
        return self.played[t - self.delay] + self.loss_db if t >= self.delay else -120.0

    def run(
        self, gate: EchoGate, frames: range, *, voice: dict[int, float] | None = None
    ) -> dict[int, bool]:
        """Feed ``frames``; the canceller leaks every echo whole (the worst case), removes
        nothing of a voice. Which frames may be speech (True) and which are echo."""
        passed = {}
        for t in frames:
            voice_db = (voice or {}).get(t, -120.0)
            heard = power_sum(self.echo(t), voice_db)
            left = level(heard, seed=t)  # the leak, plus the voice
            passed[t] = not gate.is_echo(level(heard, seed=t), left, level(self.played[t], seed=t))
        return passed


def test_the_gate_finds_the_echo_s_delay_and_loss_and_silences_its_leaks() -> None:
    room = Room(reply_levels(700))
    gate = EchoGate()
    before = room.run(gate, range(49))
    assert all(before.values())  # nothing known yet: the canceller's word goes
    room.run(gate, range(49, 400))
    assert gate.delay == 9
    assert gate.loss_db == pytest.approx(-2.0, abs=1.0)
    leaks = room.run(gate, range(400, 700))
    echoes = [t for t in leaks if room.played[t - 9] > -45]
    assert len(echoes) > 150 and not any(leaks[t] for t in echoes)
    # What it expected in the last frame judged, kept for the device's other uses.
    assert gate.expected_db is not None and gate.expected_db == gate.expected_echo_db()
    gate.skip()
    assert gate.expected_db is None


@pytest.mark.parametrize(("voice_db", "heard"), [(6.0, True), (3.0, True), (-6.0, False)])
def test_a_voice_over_the_echo_goes_through_when_it_is_not_quieter_than_the_echo(
    voice_db: float, heard: bool
) -> None:
    room = Room(reply_levels(700))
    gate = EchoGate()
    room.run(gate, range(400))
    # The voice, relative to the echo in each frame (a person talking over the reply).
    voice = {t: room.echo(t) + voice_db for t in range(400, 460) if room.echo(t) > -45}
    passed = room.run(gate, range(400, 460), voice=voice)
    share = np.mean([passed[t] for t in voice])
    assert share > 0.9 if heard else share < 0.1, share
    assert ECHO_MARGIN_DB <= 3.0  # "as loud as the echo" stays enough to interrupt


def test_after_the_reply_the_microphone_is_the_canceller_s_again() -> None:
    played = np.concatenate([reply_levels(400), np.full(100, -120.0)])
    room = Room(played)
    gate = EchoGate()
    room.run(gate, range(400))
    voice = {t: -30.0 for t in range(420, 500)}  # talking after the reply ended
    passed = room.run(gate, range(420, 500), voice=voice)
    assert all(passed.values())


def test_the_gate_follows_a_delay_that_drifts_and_forgets_on_reset() -> None:
    played = reply_levels(1500)
    gate = EchoGate()
    Room(played, delay=9).run(gate, range(500))
    assert gate.delay == 9
    Room(played, delay=12).run(gate, range(500, 1500))  # two sound cards' clocks apart
    assert gate.delay == 12
    gate.reset()
    assert gate.delay is None and gate.loss_db is None and gate.expected_echo_db() is None
    assert gate.expected_db is None


def test_after_an_underrun_the_gate_looks_for_the_echo_around_where_it_was() -> None:
    """A stall moved the echo 40 ms later (as in the rig). The gate as it was lets the moved
    echo's onsets through; told the echo moved, it lets none through until the canceller has
    found it, and then looks where the delay says again."""
    played = reply_levels(1000)
    judged = {}
    for moved in (False, True):
        gate = EchoGate()
        Room(played, delay=9).run(gate, range(400))
        loss = gate.loss_db
        if moved:
            gate.moved()
        judged[moved] = Room(played, delay=13).run(gate, range(400, 500))
        assert gate.delay == 9  # the history still holds the echo where it was
        assert (gate.loss_db == loss) is moved  # measured there, a moved echo reads low
    echoes = [t for t in range(400, 500) if played[t - 13] > -45]
    assert sum(judged[False][t] for t in echoes) >= 5  # leaks that would stop the reply
    assert not any(judged[True][t] for t in echoes)
    assert gate.slack == MOVED_SLACK
    gate.found()  # the canceller removes the echo again, but the gate's history ...
    assert gate.slack == MOVED_SLACK
    Room(played, delay=13).run(gate, range(500, 500 + HISTORY_FRAMES - 101))
    assert gate.slack == MOVED_SLACK  # ... still holds a frame from before the move
    Room(played, delay=13).run(gate, range(500 + HISTORY_FRAMES - 101, 500 + HISTORY_FRAMES))
    assert (gate.slack, gate.delay) == (DELAY_SLACK, 13)
    gate.moved()
    gate.reset()  # a new stream: nothing known, nothing moved
    assert gate.slack == DELAY_SLACK


def test_behind_the_gate_looks_for_the_echo_as_much_later_as_the_microphone_fell() -> None:
    """The microphone fell 310 ms behind (a long stall): the echo comes 31 frames later, and
    the gate looks for it up to there, whether or not its delay estimate has caught up."""
    played = reply_levels(1500)
    gate = EchoGate()
    Room(played, delay=9).run(gate, range(400))
    loss = gate.loss_db
    gate.moved()  # the underrun, first ...
    gate.moved(later=31)  # ... then the microphone is found to be behind
    passed = Room(played, delay=40).run(gate, range(400, 450))
    assert gate.delay == 9  # not caught up yet ...
    assert not any(passed[t] for t in passed if played[t - 40] > -45)
    passed = Room(played, delay=40).run(gate, range(450, 1000))
    assert gate.delay == 40  # ... caught up: the window still holds the echo
    assert not any(passed[t] for t in passed if played[t - 40] > -45)
    assert gate.loss_db == loss  # held until the canceller has found the moved echo
    gate.found()
    Room(played, delay=40).run(gate, range(1000, 1300))
    assert gate.slack == DELAY_SLACK
    voice = {t: Room(played, delay=40).echo(t) + 6.0 for t in range(1300, 1400)}
    passed = Room(played, delay=40).run(gate, range(1300, 1400), voice=voice)
    assert np.mean([passed[t] for t in voice if voice[t] > -45]) > 0.9  # narrow again


def test_a_moved_echo_is_looked_for_around_where_it_was_whatever_the_levels_say() -> None:
    """A voice over the reply can pull the delay the level envelopes show far off; while the
    canceller leaks a moved echo, the gate keeps looking where the echo can be."""
    played = reply_levels(700)
    gate = EchoGate()
    Room(played, delay=9).run(gate, range(400))
    gate.moved()
    gate.delay = 35  # (as a voice over the reply made the envelopes say)
    passed = Room(played, delay=13).run(gate, range(400, 440))
    assert not any(passed[t] for t in passed if played[t - 13] > -45)


def test_a_reopened_stream_s_echo_is_looked_for_where_the_room_was_learnt() -> None:
    played = reply_levels(1500)
    gate = EchoGate()
    Room(played, delay=9).run(gate, range(400))
    gate.found()  # the canceller learnt the room
    gate.moved(later=12)  # the microphone fell behind, and the canceller found it there
    Room(played, delay=21).run(gate, range(400, 1200))
    gate.found()
    assert gate.delay == 21
    loss = gate.loss_db
    assert gate.reopened()
    # In step again, as when it was learnt: looked for around there, no later.
    assert (gate.delay, gate.looks_from, gate.loss_db, gate.slack) == (9, 9, loss, MOVED_SLACK)
    passed = Room(played, delay=9).run(gate, range(1200, 1300))
    assert not any(passed[t] for t in passed if played[t - 9] > -45)
    voice = {t: Room(played, delay=9).echo(t) + 20.0 for t in range(1300, 1340)}
    voice = {t: v for t, v in voice.items() if v > -45}
    passed = Room(played, delay=9).run(gate, range(1300, 1340), voice=voice)
    assert np.mean([passed[t] for t in voice]) > 0.9  # (the window no longer reaches 21)


def test_a_reopened_stream_whose_room_was_never_learnt_starts_afresh() -> None:
    gate = EchoGate()
    Room(reply_levels(400), delay=9).run(gate, range(400))
    assert gate.knows_echo
    assert not gate.reopened()  # never found: no delay known to come back to
    assert not gate.knows_echo and gate.slack == DELAY_SLACK


def test_an_echo_never_measured_is_measured_whatever_moved_it() -> None:
    """An underrun before the echo's delay and loss were known holds nothing back: they
    are measured, and the echo is looked for where they say."""
    played = reply_levels(600)
    gate = EchoGate()
    gate.moved()
    Room(played, delay=9).run(gate, range(400))
    assert gate.loss_db == pytest.approx(-2.0, abs=1.0)
    passed = Room(played, delay=9).run(gate, range(400, 500))
    assert not any(passed[t] for t in passed if played[t - 9] > -45)


@pytest.mark.parametrize(("over_db", "heard"), [(9.0, True), (3.0, False), (-6.0, False)])
def test_a_moved_echo_still_lets_through_a_voice_louder_than_the_reply_around_it(
    over_db: float, heard: bool
) -> None:
    """Half-duplex after an underrun lost every word said over the rest of the reply. Now a
    voice clearly louder than the loudest echo around it (a voice as loud as the reply, over
    its quieter syllables) is heard over the moved echo; one under it, or less than
    MOVED_MARGIN_DB over it, is still taken for echo."""
    played = reply_levels(700)
    gate = EchoGate()
    Room(played, delay=9).run(gate, range(400))
    gate.moved()
    room = Room(played, delay=13)
    loudest = {
        t: max(room.echo(u) for u in range(t - MOVED_SLACK, t + MOVED_SLACK + 1))
        for t in range(400, 480)
    }
    voice = {t: loudest[t] + over_db for t in loudest if loudest[t] > -45}
    passed = room.run(gate, range(400, 480), voice=voice)
    share = np.mean([passed[t] for t in voice])
    assert share > 0.9 if heard else share < 0.1, share


# ---- what the segmenter does with it -----------------------------------------------------------


def test_chunks_marked_as_echo_never_start_speech_but_keep_their_audio() -> None:
    loud = (np.ones(480) * 8000).astype(np.int16).tobytes()
    segmenter = Segmenter(VadConfig(), ThresholdDetector(), frame_ms=30)
    echo = [AudioChunk(loud, 16000, timestamp_s=i * 0.03, echo=True) for i in range(40)]
    assert [e for c in echo for e in segmenter.push(c)] == []  # 1.2 s of loud echo: nothing
    # The same sound unmarked is speech, and the utterance keeps the marked pre-roll's audio.
    voice = [AudioChunk(loud, 16000, timestamp_s=1.2 + i * 0.03) for i in range(20)]
    quiet = [AudioChunk(bytes(960), 16000, timestamp_s=1.8 + i * 0.03) for i in range(80)]
    events = [e for c in voice + quiet for e in segmenter.push(c)]
    assert isinstance(events[0], SpeechStarted) and events[0].at_s == pytest.approx(1.2)
    [ended] = [e for e in events if isinstance(e, UtteranceEnded)]
    assert ended.utterance.start_s < 1.2  # the pre-roll: marked chunks are kept as audio
