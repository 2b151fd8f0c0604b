"""The microphone and speaker through real PortAudio, ALSA and a PulseAudio server (the rig).

What the Microphone hears is compared with what the rig itself recorded from the same
source; what the Speaker plays is recorded from the speaker sink's monitor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np
import pytest

from core.errors import DeviceError
from tests.rig import CLOCK_SLACK_S, PulseRig, Recorded, align, dominant_hz, find_speech
from tests.voice.fakes import wait_until
from voice.audio import AudioChunk
from voice.config import AudioConfig
from voice.devices import (
    DuplexDevice,
    Microphone,
    SampleClock,
    Speaker,
    find_device,
    list_devices,
)
from voice.devices.duplex import IDLE_AFTER_FRAMES, LAG_BLOCKS, SETTLED_FRAMES
from voice.devices.speaker import PAUSE_LIMIT_S
from voice.echo_guard import DELAY_SLACK, MOVED_SLACK

RATE = 16000


def tone(hz: float, seconds: float, rate: int, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def read_for(mic: Microphone, seconds: float) -> list[AudioChunk]:
    """Every frame the microphone delivers during ``seconds``."""
    frames: list[AudioChunk] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frame = mic.read(0.5)
        if frame is not None:
            frames.append(frame)
    return frames


def joined(frames: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([f.to_int16() for f in frames])


@pytest.fixture(scope="module")
def rig(pulse_rig: PulseRig) -> Iterator[PulseRig]:
    """The rig, with this process's PortAudio pointed at it."""
    with pulse_rig.activate():
        yield pulse_rig


# ---- no device needed ------------------------------------------------------------------------


def test_sample_clock_ignores_callback_jitter() -> None:
    rng = np.random.default_rng(1)
    clock = SampleClock(RATE)
    start, block = 100.0, 480
    stamps = []
    for i in range(300):
        true_start = start + i * block / RATE
        late = rng.exponential(0.008) if i % 7 else 0.04  # scheduling delay, some long
        stamps.append(clock.stamp(true_start + block / RATE + late, block))
    errors = np.array(stamps[64:]) - (start + np.arange(64, 300) * block / RATE)
    assert np.all(np.diff(stamps) > 0)
    assert np.abs(errors).max() < 0.003  # jitter of up to tens of ms does not reach the stamps


def test_find_speech_merges_short_gaps_and_drops_clicks() -> None:
    audio = np.zeros(3 * RATE, dtype=np.int16)
    audio[int(0.5 * RATE) : int(1.0 * RATE)] = tone(300, 0.5, RATE)
    audio[int(1.2 * RATE) : int(1.5 * RATE)] = tone(300, 0.3, RATE)  # 0.2 s later: merged
    audio[int(2.0 * RATE) : int(2.02 * RATE)] = 20000  # a 20 ms click: dropped
    assert find_speech(audio) == [(0.5, 1.5)]
    assert find_speech(audio, min_gap_s=0.1) == [(0.5, 1.0), (1.2, 1.5)]
    recorded = Recorded(audio, RATE, start_s=50.0)
    assert recorded.speech() == [(50.5, 51.5)]
    assert recorded.index_at(50.5) == RATE // 2 and recorded.time_of(RATE) == 51.0
    noise = np.random.default_rng(2).normal(0, 3000, 2 * RATE).astype(np.int16)
    assert align(noise[RATE:], noise)[0] == RATE
    lag, similarity = align(noise, noise[RATE // 2 :])  # starts before what it is found in
    assert lag == -RATE // 2 and similarity > 0.999


# ---- microphone ------------------------------------------------------------------------------


@pytest.mark.rig
@pytest.mark.slow
@pytest.mark.parametrize("frame_ms", [10, 30])
def test_microphone_hears_what_is_fed(
    rig: PulseRig, shared_audio: Path, frame_ms: Literal[10, 20, 30]
) -> None:
    import soundfile

    speech, rate = soundfile.read(str(shared_audio / "digits.wav"), dtype="int16")
    assert rate == RATE
    clip = speech[: int(3.2 * RATE)]  # "zero ... two": speech from 0.9 s to 2.9 s
    with Microphone(AudioConfig(frame_ms=frame_ms)) as mic, rig.record_mic() as reference:
        feed = rig.feed(clip, RATE)
        frames = read_for(mic, 3.8)
        assert feed.wait(10) == 0
    assert mic.device_rate == RATE
    assert len(frames) >= 3.5 / (frame_ms / 1000)
    assert {(f.rate, f.channels, f.samples) for f in frames} == {(RATE, 1, RATE * frame_ms // 1000)}
    stamps = np.array([f.timestamp_s for f in frames])
    steps = np.diff(stamps)
    assert np.all(steps > 0)
    assert abs(float(np.median(steps)) - frame_ms / 1000) < 0.002

    # The microphone hears exactly what the rig recorded from the same source, and its
    # timestamps say when: aligning the two by content lands where the timestamps say.
    heard, recorded = joined(frames), reference.result
    lag, similarity = align(heard, recorded.samples)
    assert similarity > 0.99
    assert abs(recorded.time_of(lag) - frames[0].timestamp_s) < 0.02
    start = frames[0].timestamp_s
    segments = [(start + s, start + e) for s, e in find_speech(heard)]
    expected = recorded.speech()
    assert len(segments) == len(expected) >= 1
    for (hs, he), (es, ee) in zip(segments, expected, strict=True):
        assert abs(hs - es) < 0.05 and abs(he - ee) < 0.05


@pytest.mark.rig
def test_microphone_resamples_a_device_that_runs_at_48k(rig: PulseRig) -> None:
    with Microphone(AudioConfig(frame_ms=20), device_rate=48000) as mic:
        assert mic.device_rate == 48000
        with rig.record_mic() as reference:
            feed = rig.feed(tone(1000, 1.0, RATE), RATE)
            frames = read_for(mic, 1.6)
            assert feed.wait(10) == 0
    assert {(f.rate, f.samples) for f in frames} == {(RATE, RATE * 20 // 1000)}
    assert np.all(np.diff([f.timestamp_s for f in frames]) > 0)
    start = frames[0].timestamp_s
    heard = [(start + s, start + e) for s, e in find_speech(joined(frames))]
    expected = reference.result.speech()
    assert len(heard) == len(expected) == 1
    (hs, he), (es, ee) = heard[0], expected[0]
    assert abs(hs - es) < 0.05 and abs(he - ee) < 0.05  # the resampler's delay is accounted for
    assert abs((he - hs) - 1.0) < 0.05
    middle = joined(frames)[int((hs - start + 0.1) * RATE) : int((he - start - 0.1) * RATE)]
    assert abs(dominant_hz(middle) - 1000) < 3


@pytest.mark.rig
def test_overflow_is_counted_not_fatal(rig: PulseRig) -> None:
    with Microphone(AudioConfig(queue_frames=5, frame_ms=10)) as mic:
        time.sleep(1.0)  # about 100 frames arrive; only 5 fit
        assert mic.overflows >= 50
        queued = 0
        while mic.read(0.0) is not None:
            queued += 1
            assert queued < 50
        assert queued <= 5 + 2  # what was queued, plus what arrived while reading
        assert mic.read(1.0) is not None  # still running


@pytest.mark.rig
def test_drain_drops_what_was_captured(rig: PulseRig) -> None:
    with Microphone(AudioConfig()) as mic:
        time.sleep(0.5)
        drained_at = time.monotonic()
        mic.drain()
        frame = mic.read(1.0)
        assert frame is not None and frame.timestamp_s > drained_at - 0.1


# ---- speaker ---------------------------------------------------------------------------------


def sounds(rig: PulseRig, speaker: Speaker, samples: np.ndarray, rate: int) -> tuple[float, float]:
    """Play ``samples`` and return the (start, end) monotonic times the speaker sink had them."""
    with rig.record_speaker() as recording:
        played_at = time.monotonic()
        speaker.play(samples, rate)
        assert speaker.playing
        assert speaker.wait(10)
        waited_until = time.monotonic()
        assert not speaker.playing
        time.sleep(0.2)
    found = recording.result.speech()
    assert len(found) == 1, found
    start, end = found[0]
    assert played_at - CLOCK_SLACK_S < start < played_at + 0.3
    assert waited_until > end - 0.05  # wait() covers the device's latency
    middle = recording.result.between(start + 0.1, end - 0.1)
    assert abs(dominant_hz(middle) - 440) < 3
    return start, end


@pytest.mark.rig
def test_speaker_output_reaches_the_speaker_sink(rig: PulseRig) -> None:
    with Speaker(AudioConfig()) as speaker:
        assert speaker.rate == 22050
        start, end = sounds(rig, speaker, tone(440, 1.0, 22050), 22050)
        assert abs((end - start) - 1.0) < 0.1  # an underrun on a busy machine adds a gap
        assert abs(speaker.last_output_s - end) < 0.1
        assert speaker.played_samples == 22050


@pytest.mark.rig
def test_an_idle_speaker_rests_and_plays_again_at_once(rig: PulseRig) -> None:
    with Speaker(AudioConfig(speaker_rest_s=0.3)) as speaker:
        sounds(rig, speaker, tone(440, 0.3, 22050), 22050)
        # Stopped for want of sound, which is not a failure: the next play starts it.
        assert wait_until(lambda: speaker.resting, timeout_s=5)
        assert speaker.failure is None
        start, end = sounds(rig, speaker, tone(440, 1.0, 22050), 22050)
        assert not speaker.resting
        assert abs((end - start) - 1.0) < 0.1
        speaker.play(tone(440, 2.0, 22050), 22050)
        time.sleep(0.5)
        assert not speaker.resting  # never while something plays
        stopped_at = time.monotonic()
        speaker.stop()
        assert speaker.wait(0.5)
        assert time.monotonic() - stopped_at < 0.5


@pytest.mark.rig
def test_a_speaker_told_never_to_rest_keeps_running(rig: PulseRig) -> None:
    with Speaker(AudioConfig(speaker_rest_s=0)) as speaker:
        sounds(rig, speaker, tone(440, 0.3, 22050), 22050)
        time.sleep(1.5)  # the stream above rested within 0.5 s of this
        assert not speaker.resting
        assert speaker.failure is None


@pytest.mark.rig
@pytest.mark.parametrize("device_rate", [44100, 48000])
def test_speaker_resamples_to_the_device_rate(rig: PulseRig, device_rate: int) -> None:
    with Speaker(AudioConfig(), rate=device_rate) as speaker:
        assert speaker.rate == device_rate
        # Played unconverted, 22050 Hz audio at 48 kHz would be 960 Hz and 0.46 s long.
        start, end = sounds(rig, speaker, tone(440, 1.0, 22050), 22050)
        assert abs((end - start) - 1.0) < 0.1


@pytest.mark.rig
def test_speaker_stop_silences_at_once_and_drops_the_queue(rig: PulseRig) -> None:
    with Speaker(AudioConfig()) as speaker, rig.record_speaker() as recording:
        speaker.play(tone(440, 2.0, 22050), 22050)
        speaker.play(tone(440, 2.0, 22050), 22050)  # queued behind the first
        time.sleep(0.6)
        stopped_at = time.monotonic()
        speaker.stop()
        assert speaker.wait(0.5)
        time.sleep(0.3)
        assert not speaker.playing
        speaker.play(tone(880, 0.3, 22050), 22050)  # the stream is still usable
        assert speaker.wait(5)
        time.sleep(1.5)
    found = recording.result.speech(min_gap_s=0.1)
    assert len(found) == 2, found
    (s1, e1), (s2, e2) = found
    assert stopped_at - 0.6 < s1 and stopped_at - CLOCK_SLACK_S < e1 < stopped_at + 0.15
    assert abs((e2 - s2) - 0.3) < 0.05 and s2 > stopped_at + 0.3
    assert abs(dominant_hz(recording.result.between(s2 + 0.05, e2 - 0.05)) - 880) < 5


def test_a_paused_speaker_keeps_its_place_and_ends_a_forgotten_pause_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PortAudio callback's side, with a stand-in for the open stream."""
    real_monotonic, later = time.monotonic, [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + later[0])
    speaker = Speaker(AudioConfig(), rest_after_s=0.5)
    speaker.rate, speaker._stream = 16000, SimpleNamespace(active=True)
    status = SimpleNamespace(output_underflow=False)

    def block() -> tuple[bool, list[int]]:
        out = bytearray(200)  # 100 samples
        more = speaker._fill(out, 100, status)
        return more, np.frombuffer(bytes(out), dtype=np.int16).tolist()

    speaker.play(np.arange(1, 401, dtype=np.int16), 16000)
    assert block() == (True, list(range(1, 101)))
    speaker.pause()
    assert block() == (True, [0] * 100)  # silence, and the stream must not rest
    assert speaker.playing and speaker.played_samples == 100
    speaker.resume()
    assert block() == (True, list(range(101, 201)))  # from where it paused
    speaker.pause()
    later[0] += PAUSE_LIMIT_S + 0.1  # nobody resumed it
    assert block() == (True, list(range(201, 301)))
    speaker.pause()
    speaker.stop()  # a stop ends the pause too: the next sound plays at once
    speaker.play(np.full(100, 7, dtype=np.int16), 16000)
    assert block() == (True, [7] * 100)


class NoCanceller:
    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        return near

    def set_delay_ms(self, delay_ms: int) -> None:
        pass


class Answers:
    """A canceller that answers with one of its two inputs."""

    def __init__(self, which: str) -> None:
        self.which = which

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        return near if self.which == "near" else far

    def set_delay_ms(self, delay_ms: int) -> None:
        pass


def test_the_duplex_stream_hands_whisper_the_word_canceller_s_output() -> None:
    """The loop hears one canceller's output, Whisper the other's (AudioChunk.words) while
    it is trusted, frame for frame; once nothing has played for a while both rest and it is
    the microphone."""
    device = DuplexDevice(AudioConfig(), Answers("near"), words=Answers("far"))
    near = np.arange(1, 14401, dtype=np.int16)  # 0.9 s: 30 chunks of 30 ms
    played = np.full(14400, 1000, dtype=np.int16)
    device._process(near.tobytes(), played.tobytes(), 0.0)
    first = device._frames[0]
    assert first.words == first.pcm == near[:480].tobytes()  # not trusted yet: AEC3's

    device._frames.clear()
    device.linear.trusted = True
    device._process(near.tobytes(), played.tobytes(), 0.9)
    chunks = list(device._frames)
    assert len(chunks) == 30
    assert chunks[0].pcm == near[:480].tobytes() and chunks[0].words == played[:480].tobytes()
    assert chunks[0].words_pcm == chunks[0].words

    device._frames.clear()
    silence = bytes(2 * 32000)
    device._process(np.resize(near, 32000).tobytes(), silence, 1.8)  # 2 s, nothing played
    last = device._frames[-1]
    assert last.pcm == last.words  # resting: both are what the microphone heard

    alone = DuplexDevice(AudioConfig(), Answers("near"))  # no word canceller
    alone._process(near.tobytes(), played.tobytes(), 0.0)
    assert alone._frames[0].words is None and alone._frames[0].words_pcm == near[:480].tobytes()


def test_the_wake_word_detector_gets_the_linear_output_once_the_room_is_learnt() -> None:
    """AudioChunk.linear: the word canceller's output whether Whisper trusts it or not (the
    wake word over a reply after a stall), but only in a learnt room: before, it may be the
    reply's echo nearly whole."""
    device = DuplexDevice(AudioConfig(), Answers("near"), words=Answers("far"))
    near = np.arange(1, 14401, dtype=np.int16)
    played = np.full(14400, 1000, dtype=np.int16)
    device._process(near.tobytes(), played.tobytes(), 0.0)
    assert device._frames[0].linear is None  # the room is not learnt
    device._frames.clear()
    device.monitor.learnt = True
    device._process(near.tobytes(), played.tobytes(), 0.9)
    first = device._frames[0]
    assert first.words == near[:480].tobytes()  # Whisper: not trusted yet, AEC3's
    assert first.linear == played[:480].tobytes()  # the detector: the linear canceller's


class CountsDelays(NoCanceller):
    """Passes the microphone through and remembers each delay hint (a reset of its filter)."""

    def __init__(self) -> None:
        self.delays_ms: list[int] = []

    def set_delay_ms(self, delay_ms: int) -> None:
        self.delays_ms.append(delay_ms)


def test_the_linear_canceller_starts_afresh_where_the_echo_now_comes() -> None:
    """A microphone that fell behind: the linear canceller's filter, learnt where the echo
    was, would add echo. It moves where the lag puts it, not for a change within its
    margin (each move throws away what it learnt), and back once the lag is gone."""
    words = CountsDelays()
    device = DuplexDevice(AudioConfig(), NoCanceller(), words=words, rate=16000)
    device.stream_delay_s = 0.1
    device._reset(16000, 100)
    played = (3000 * np.sin(np.arange(320) / 5)).astype(np.int16).tobytes()  # 20 ms

    def behind(lag_s: float) -> list[int]:
        with device._captured:
            device._lags.extend([lag_s] * LAG_BLOCKS)
            device._least_lag_s = 0.0
        for _ in range(5):
            device._process(played, played, 0.0)
        return words.delays_ms

    assert behind(0.0) == [100]
    assert behind(0.25) == [100, 350]
    assert behind(0.29) == [100, 350]  # within its 40 ms margin
    assert behind(0.32) == [100, 350, 420]
    assert behind(0.05) == [100, 350, 420, 100]  # caught up without a reopen
    assert behind(0.03) == [100, 350, 420, 100]


def test_a_microphone_left_behind_is_gated_until_the_gate_looks_that_much_later() -> None:
    """The PortAudio callback's side, with a stand-in for the open stream: a stalled callback
    leaves the captured audio queued (test_duplex measures it), so the echo comes later and
    the canceller is no longer trusted until the stream is reopened; callback jitter is not
    that. Gated from the first late callback until the gate looks for the echo as much
    later as the microphone fell behind."""
    device = DuplexDevice(AudioConfig(), NoCanceller())
    device.rate, device._stream = 22050, SimpleNamespace(active=True)
    device.monitor.learnt = True
    status = SimpleNamespace(output_underflow=False, input_overflow=False, input_underflow=False)
    block = bytes(2 * 441)  # 20 ms

    def callbacks(lags_s: list[float]) -> None:
        for k, lag in enumerate(lags_s):
            times = SimpleNamespace(currentTime=100.0 + k, inputBufferAdcTime=100.0 + k - lag)
            device._duplex_callback(block, bytearray(len(block)), 441, times, status)

    device.gate.delay, device.gate.loss_db = 9, -2.0
    callbacks([0.03, 0.02, 0.04] * 10)  # jitter
    assert device.echo_learnt and not device.needs_reopen and device.hears_over_reply
    callbacks([0.19] * 5)  # a stall: the microphone 170 ms behind ...
    assert not device.needs_reopen  # ... not yet for long enough to be sure
    device.monitor.relearning = True  # (its underrun moved the echo) ...
    assert not device.hears_over_reply  # ... but gated from the first late callback
    callbacks([0.19] * 5)
    assert device.needs_reopen and not device.echo_learnt
    assert device.behind_s == pytest.approx(0.17)  # what the log says
    assert not device.hears_over_reply  # gated from the first late callback
    device.gate = KnownEcho(-30.0)  # type: ignore[assignment]  (its delay: 9 frames)
    device._follow_the_echo()  # (as the next block read does)
    assert device.gate.later == 17  # the echo is looked for that much later ...
    assert device.hears_over_reply  # ... and a voice over the reply is heard
    callbacks([0.49] * 3)  # a second stall: 300 ms further behind than the gate was told
    assert not device.hears_over_reply  # gated until it is told
    callbacks([0.49] * 10)
    device._follow_the_echo()
    assert device.gate.later == 17  # 47 frames later is past where anything looks: ...
    assert not device.hears_over_reply  # ... gated until the stream is reopened


def test_an_underrun_widens_the_gate_and_whisper_hears_aec3_until_the_echo_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PortAudio's underrun flag goes with its block to the reader: from that block on, the
    canceller must prove itself again (EchoMonitor.moved), the gate looks for the echo around
    where it was (a voice over the reply is still heard: never half-duplex, which lost its
    words), and the linear canceller is distrusted. Found again, the gate narrows."""
    device = DuplexDevice(AudioConfig(), NoCanceller(), words=Answers("far"))
    device.rate, device._stream = 16000, SimpleNamespace(active=True)
    device._reset(16000, 100)
    device.monitor.learnt = device.linear.trusted = True
    device.gate.delay, device.gate.loss_db = 9, -2.0
    times = SimpleNamespace(currentTime=100.0, inputBufferAdcTime=99.97)
    block = bytes(2 * 320)  # 20 ms
    for underflow in (False, True, False):
        status = SimpleNamespace(
            output_underflow=underflow, input_overflow=False, input_underflow=False
        )
        device._duplex_callback(block, bytearray(len(block)), 320, times, status)
    assert [xrun for *_, xrun in device._blocks] == [False, True, False]
    assert device.xruns == 1
    assert device.echo_learnt and device.words_whole  # nothing read yet
    assert device.gate.slack == DELAY_SLACK
    device.read(1.0)
    assert not device.echo_learnt and device.monitor.relearning
    assert device.hears_over_reply and device.gate.slack == MOVED_SLACK
    assert not device.linear.trusted and not device.words_whole
    # A canceller that removes the echo again: two good windows of played sound find it.
    device.canceller = SimpleNamespace(process=lambda near, far: near // 1000)
    loud = np.full(160, 8000, dtype=np.int16)
    found = []
    monkeypatch.setattr(device.gate, "found", lambda: found.append(True))
    for _ in range(2 * device.monitor.frames_per_window):
        device._cancel(loud, loud)
    assert device.echo_learnt and found == [True]  # the gate is told (it narrows in 3 s)
    device.gate.loss_db = None
    assert not device.hears_over_reply  # an echo the gate cannot measure is gated


@pytest.mark.parametrize("behind", [True, False])
def test_a_stream_reopened_because_the_microphone_fell_behind_keeps_the_room(
    monkeypatch: pytest.MonkeyPatch, behind: bool
) -> None:
    """The loop reopens a stream whose microphone fell behind: the same devices, the same
    room. The canceller then finds the echo again as after an underrun, and the gate looks
    for it where it was when the room was learnt, so a voice over the next reply is heard
    (learning anew gated its first 2 s). Any other reopen (a device lost) learns anew."""
    device = DuplexDevice(AudioConfig(), NoCanceller())
    device._reset(16000, 100)
    device.rate = 16000
    device.gate.delay, device.gate.loss_db = 9, -2.0
    device.monitor.learnt = True
    device.gate.found()  # learnt at a delay of 9 frames ...
    device.gate.delay = 21  # ... and the echo came 120 ms later once the microphone fell behind
    monkeypatch.setattr(DuplexDevice, "needs_reopen", property(lambda self: behind))
    monkeypatch.setattr(DuplexDevice, "close", lambda self: None)
    device._lags.extend([0.03] * 10)  # (cleared by the reopen: in step again)

    def open_stream(self: DuplexDevice) -> None:  # as open() asks, on the same devices
        keep_room, self._keep_room = self._keep_room, False
        self._reset(16000, 100, keep_room=keep_room)

    monkeypatch.setattr(DuplexDevice, "open", open_stream)
    device.reopen()
    assert not device.echo_learnt and not device._keep_room
    if behind:
        assert device.monitor.relearning and device.hears_over_reply
        assert (device.gate.delay, device.gate.loss_db) == (9, -2.0)
        assert device.gate.slack == MOVED_SLACK
    else:
        assert not device.monitor.relearning
        assert device.gate.delay is None and device.gate.loss_db is None


@pytest.mark.rig
def test_speaker_pause_silences_at_once_and_resume_plays_the_rest(rig: PulseRig) -> None:
    """Someone may be talking over the reply: it falls silent as fast as a stop, and goes
    on from where it was, nothing skipped, should nobody be."""
    with Speaker(AudioConfig()) as speaker, rig.record_speaker() as recording:
        speaker.play(tone(440, 1.0, 22050), 22050)
        time.sleep(0.4)
        paused_at = time.monotonic()
        speaker.pause()
        time.sleep(1.5)  # longer than the speaker would rest, were it idle
        assert speaker.playing and not speaker.resting
        resumed_at = time.monotonic()
        speaker.resume()
        assert speaker.wait(5)
        assert not speaker.playing
        time.sleep(0.3)
    found = recording.result.speech(min_gap_s=0.1)
    assert len(found) == 2, found
    (s1, e1), (s2, e2) = found
    assert paused_at - CLOCK_SLACK_S < e1 < paused_at + 0.15
    assert resumed_at - CLOCK_SLACK_S < s2 < resumed_at + 0.15
    assert s2 - e1 > 1.4  # silent while paused, however the clocks lie
    assert abs((e1 - s1) + (e2 - s2) - 1.0) < 0.1  # all of it, once
    assert speaker.played_samples == 22050


# ---- choosing devices ------------------------------------------------------------------------


@pytest.mark.rig
def test_devices_are_found_by_name_index_or_default(rig: PulseRig) -> None:
    table = list_devices()
    assert "default" in table and "pulse" in table
    pulse = find_device("PULSE", "input")
    assert pulse is not None
    assert find_device(str(pulse), "output") == pulse
    assert find_device("", "input") is None


@pytest.mark.rig
def test_unknown_device_is_an_error_listing_the_devices(rig: PulseRig) -> None:
    with pytest.raises(DeviceError) as raised:
        Microphone(AudioConfig(input_device="no such microphone")).open()
    message = str(raised.value)
    assert "no such microphone" in message and "pulse" in message and "default" in message
    assert "audio.input_device in config.toml (or --device)" in message  # either may name it
    with pytest.raises(DeviceError, match="99") as raised:
        Speaker(AudioConfig(), device="99").open()
    assert "(or --output-device)" in str(raised.value)


# ---- losing the device -----------------------------------------------------------------------


@pytest.mark.rig
def test_a_lost_server_is_a_device_error_and_reopen_recovers(rig: PulseRig) -> None:
    with Microphone(AudioConfig()) as mic, Speaker(AudioConfig()) as speaker:
        assert mic.read(2.0) is not None
        speaker.play(tone(440, 5.0, 22050), 22050)
        rig.restart_server()
        with pytest.raises(DeviceError):
            while True:
                mic.read(0.5)
        with pytest.raises(DeviceError):
            speaker.play(tone(440, 0.5, 22050), 22050)
        mic.reopen()
        speaker.reopen()
        assert not speaker.playing  # what was queued before the crash is gone
        assert mic.read(2.0) is not None
        sounds(rig, speaker, tone(440, 0.5, 22050), 22050)


class KnownEcho:
    """An echo gate that knows the echo's level (or not) and finds no frame to be echo."""

    def __init__(self, expected_db: float | None) -> None:
        self.expected_db = expected_db
        self.knows_echo = expected_db is not None
        self.delay = 9 if self.knows_echo else None
        self.looks_from = self.delay
        self.later: int | None = None  # how much later it was told the echo may come

    def is_echo(self, near: object, cleaned: object, far: object) -> bool:
        return False

    def skip(self) -> None:
        pass

    def moved(self, later: int = 0) -> None:
        self.later = later


@pytest.mark.parametrize(
    ("played", "expected_db", "over"),
    [(True, -30.0, True), (False, -30.0, False), (True, None, False)],
)
def test_a_chunk_louder_than_the_echo_while_the_speaker_plays_is_marked_heard_over(
    played: bool, expected_db: float | None, over: bool
) -> None:
    """The segmenter reaches back over such chunks (voice.vad LOOK_BACK_MS): only when the
    gate knows what the echo should be, and something was played."""
    device = DuplexDevice(AudioConfig(), NoCanceller(), words=Answers("far"))
    device.rate = 16000
    device._reset(16000, 100)
    device.gate = KnownEcho(expected_db)  # type: ignore[assignment]
    device._quiet = 0  # the speaker is at work: the canceller is not resting
    far = np.full(480, 3000 if played else 0, dtype=np.int16).tobytes()  # 30 ms
    device._process(np.full(480, 3000, dtype=np.int16).tobytes(), far, 0.0)
    (chunk,) = device._frames
    assert chunk.heard_over is over


class AllEcho(KnownEcho):
    """A gate that finds every frame echo (no louder than the echo it expects)."""

    def is_echo(self, near: object, cleaned: object, far: object) -> bool:
        return True


class Leaves:
    """A canceller that leaves a tenth (-20 dB) of what it heard: a voice under the echo."""

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        return (near // 10).astype(np.int16)

    def set_delay_ms(self, delay_ms: int) -> None:
        pass


@pytest.mark.parametrize(
    ("played", "learnt", "moved", "under"),
    [
        (True, True, False, True),
        (True, False, False, False),  # a canceller still learning the room leaks the echo
        (True, True, True, False),  # ... and so does one whose echo a stall moved
        (False, True, False, False),  # nothing played: not under any echo
    ],
)
def test_echo_the_canceller_left_a_voice_in_is_marked_heard_under(
    monkeypatch: pytest.MonkeyPatch, played: bool, learnt: bool, moved: bool, under: bool
) -> None:
    """The segmenter reaches back over such chunks too (voice.vad LOOK_BACK_UNDER_MS),
    once a voice over the reply is found: only where the canceller has learnt the room."""
    monkeypatch.setattr(DuplexDevice, "needs_reopen", property(lambda self: moved))
    device = DuplexDevice(AudioConfig(), Leaves(), words=Answers("far"))
    device.rate = 16000
    device._reset(16000, 100)
    device.gate = AllEcho(-20.0)  # type: ignore[assignment]
    device.monitor.learnt = learnt
    device._quiet = 0  # the speaker is at work: the canceller is not resting ...
    device._settled = SETTLED_FRAMES  # ... and has removed the echo since it resumed
    far = np.full(480, 3000 if played else 0, dtype=np.int16).tobytes()  # 30 ms
    device._process(np.full(480, 3000, dtype=np.int16).tobytes(), far, 0.0)
    (chunk,) = device._frames
    assert chunk.echo and chunk.heard_under is under and not chunk.heard_over


class LeavesWhenTold(Leaves):
    """Leaves a tenth while ``leaving`` (a voice under the echo, or AEC3 leaking it), else
    removes it all."""

    leaving = True

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        return super().process(near, far) if self.leaving else np.zeros_like(near)


def test_a_resumed_canceller_marks_nothing_heard_under_until_it_removes_the_echo() -> None:
    """Resumed, AEC3 can leak the reply's first words as if a voice were under them: no
    chunk is marked heard_under until it has removed SETTLED_FRAMES of echo in a row, and
    after its next rest the count starts again."""
    canceller = LeavesWhenTold()
    device = DuplexDevice(AudioConfig(), canceller, words=Answers("far"))
    device.rate = 16000
    device._reset(16000, 100)
    device.gate = AllEcho(-20.0)  # type: ignore[assignment]
    device.monitor.learnt = True
    loud = np.full(480, 3000, dtype=np.int16).tobytes()  # 30 ms: three frames

    def chunks(count: int, *, leaving: bool, played: bool = True) -> list[bool]:
        """heard_under of ``count`` chunks of 30 ms."""
        canceller.leaving = leaving
        device._frames.clear()
        for k in range(count):
            device._process(loud, loud if played else bytes(len(loud)), k * 0.03)
        return [chunk.heard_under for chunk in device._frames]

    chunks(40, leaving=False, played=False)  # 1.2 s with nothing played: it rests
    assert chunks(5, leaving=True) == [False] * 5  # resumed: a leak, or a voice, unmarked
    assert chunks(3, leaving=False) == [False] * 3  # 9 frames of echo removed ...
    assert chunks(2, leaving=True) == [False] * 2  # ... and a leak: the count starts over
    assert chunks(SETTLED_FRAMES // 3 + 1, leaving=False) == [False] * (SETTLED_FRAMES // 3 + 1)
    assert chunks(3, leaving=True) == [True] * 3  # settled: a voice under the echo
    chunks(40, leaving=False, played=False)  # rests again
    assert chunks(3, leaving=True) == [False] * 3


@pytest.mark.parametrize(("quiet", "said"), [(0, True), (IDLE_AFTER_FRAMES + 1, False)])
def test_an_underrun_while_a_reply_teaches_the_room_says_the_count_starts_over(
    caplog: pytest.LogCaptureFixture, quiet: int, said: bool
) -> None:
    """Learning needs good windows in a row: an underrun starts the count again, and a
    first reply can then end before the room is learnt. The log says why."""
    device = DuplexDevice(AudioConfig(), NoCanceller(), words=Answers("far"))
    device.rate = 16000
    device._reset(16000, 100)
    device._quiet = quiet  # 0: a reply is playing
    with caplog.at_level(logging.INFO, logger="voice.devices.duplex"):
        device._process(bytes(2 * 320), bytes(2 * 320), 0.0, xrun=True)
    assert ("while the canceller was learning" in caplog.text) is said
    assert not device.echo_learnt
    assert not device.hears_over_reply  # never learnt on this stream: half-duplex
    assert device.gate.slack == DELAY_SLACK  # nothing learnt to look around
