"""The microphone and the speaker as one full-duplex stream, with the echo cancelled.

One PortAudio stream plays and captures in the same callback, so the samples played and the
samples captured share one clock: each callback's captured block is paired with the block it
played, and the echo canceller gets both (:mod:`voice.echo`). The device is a
:class:`~voice.devices.speaker.Speaker` (``play``, ``wait``, ``stop``, ``playing``) that can
also be read like the :class:`~voice.devices.microphone.Microphone` (``read``, ``drain``,
``reopen``), so the loop takes it as its source and its sink at once.

As in the other devices, the callback only moves samples; resampling, cancelling and
framing happen on the reader's thread, in :meth:`DuplexDevice.read`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from types import ModuleType
from typing import Any

import numpy as np

from core.errors import DeviceError
from voice.audio import AudioChunk
from voice.config import AudioConfig
from voice.devices.base import (
    MIC_RATE,
    OUTPUT_LATENCY_S,
    OVERFLOW_LOG_INTERVAL_S,
    SPEAKER_BLOCK_MS,
    SPEAKER_RATE,
    Int16,
    SampleClock,
    _describe,
    _native_rate,
    _sounddevice,
    find_device,
)
from voice.devices.speaker import Speaker
from voice.echo import FRAME_MS, SPEEX_DELAY_MARGIN_MS, EchoCanceller, EchoFrames
from voice.echo_guard import (
    DELAY_SLACK,
    MAX_DELAY_FRAMES,
    MOVED_SLACK,
    EchoGate,
    EchoMonitor,
    LinearMonitor,
    is_voice_under,
)

log = logging.getLogger(__name__)

# After this long with nothing played (10 ms frames), the echo has died away: the longest
# delay the canceller handles (500 ms) plus a room's reverberation.
IDLE_AFTER_FRAMES = 100
# The linear canceller is moved only when the echo moved further than the margin its filter
# keeps before the delay hint (each move throws away what it learnt).
WORDS_SLACK_FRAMES = SPEEX_DELAY_MARGIN_MS // FRAME_MS
SILENT_AMPLITUDE = 4  # the resampler turns digital silence into +-1
RESUME_FRAMES = 50  # what the resting canceller is given again before it resumes
# Resumed, AEC3 can leak a reply's first words for up to 0.5 s: in the rig under load, 5 of
# 24 replies had 20-35 dB taken out of their echo instead of 70, which is_voice_under takes
# for a voice under it. Such a leak paused a reply a third of a second in, its echo tail
# became a request, and the real voice after it was joined to the question before. So a
# frame is marked heard_under only once the canceller has removed the echo of this many
# frames in a row since it resumed (offline on those recordings: 158 of 173 such frames
# unmarked, none of 1997 frames of real voices over replies).
SETTLED_FRAMES = 20
# How far behind the microphone is: PortAudio's time of a callback minus the capture time of
# its input (20-40 ms in the rig). A stall of the callback (a busy machine) leaves what was
# captured meanwhile queued for good: 0.4 s makes it 361 ms, 50 ms only 33 ms. Behind by
# BEHIND_S more than its least since the stream opened, over LAG_BLOCKS callbacks in a row
# (jitter is 20 ms), the stream needs reopening.
BEHIND_S = 0.1
LAG_BLOCKS = 10


class DuplexDevice(Speaker):
    """Speaker and echo-cancelled microphone on one stream.

    The stream runs at the speaker's preferred rate when both directions take it (else at
    the output device's own rate); the captured audio and the reference are resampled to
    16 kHz by two identical resamplers, so they stay aligned sample for sample.
    """

    kind = "duplex audio stream"

    def __init__(
        self,
        config: AudioConfig,
        canceller: EchoCanceller,
        *,
        words: EchoCanceller | None = None,
        rate: int = SPEAKER_RATE,
    ) -> None:
        """``canceller`` makes what the loop hears; ``words``, if given, what it transcribes
        (a linear canceller that keeps a voice over the reply whole: :mod:`voice.echo`)."""
        super().__init__(config, rate=rate)
        self.canceller = canceller
        self.words_canceller = words
        self.linear = LinearMonitor()
        self._echo_moved = False  # needs_reopen, as of the blocks being processed
        self._keep_room = False  # the next open is a reopen into the same room (reopen)
        self._behind_frames: int | None = None  # how far behind the gate looks for the echo
        self._words_behind = 0  # frames the linear canceller looks later than the latency
        self._room: tuple[int | None, int | None, int] | None = None  # devices and rate
        self.input_device = config.input_device
        self.mic_rate = MIC_RATE
        self.frame_samples = MIC_RATE * config.frame_ms // 1000
        self.stream_delay_s = 0.0  # input plus output latency: the shortest echo delay
        self.overflows = 0
        self._lags: collections.deque[float] = collections.deque(maxlen=LAG_BLOCKS)
        self._least_lag_s = float("inf")  # since the stream opened
        # The queue holds one block per callback: as many seconds as the microphone's queue.
        self._max_blocks = max(1, config.queue_frames * config.frame_ms // SPEAKER_BLOCK_MS)
        self._captured = threading.Condition()
        # (microphone, played, capture time, an underrun or overflow came before it)
        self._blocks: collections.deque[tuple[bytes, bytes, float, bool]] = collections.deque()
        self.xruns = 0
        self._process_lock = threading.Lock()  # reopen (any thread) against read (the loop)
        self._frames: collections.deque[AudioChunk] = collections.deque()
        self._cleaned: list[Int16] = []
        self._words: list[Int16] = []
        self._linear: list[Int16] = []  # the linear canceller's output, trusted or not
        self._echoes = 0  # frames of self._cleaned judged echo
        self._over = 0  # ... in which something louder than the echo was heard over it
        self._under = 0  # ... judged echo, with a voice under it (is_voice_under)
        self._quiet = IDLE_AFTER_FRAMES + 1  # frames since the speaker last played anything
        self._settled = 0  # echo frames removed in a row since the canceller resumed
        self._rested: collections.deque[tuple[Int16, Int16]] = collections.deque(
            maxlen=RESUME_FRAMES
        )
        self._cleaned_s = 0.0
        self._echo = EchoFrames()
        self.monitor = EchoMonitor()
        self.gate = EchoGate()
        self._resamplers: tuple[Any, Any] | None = None
        self._clock = SampleClock(rate)
        self._last_block_s = 0.0
        self._logged_overflows = 0
        self._overflow_logged_s = float("-inf")

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        if self._stream is not None:
            return
        keep_room, self._keep_room = self._keep_room, False  # asked for this open only
        sd = _sounddevice()
        index_in = find_device(self.input_device, "input")
        index_out = find_device(self.device, "output")
        rate = self._pick_duplex_rate(sd, index_in, index_out)
        where = f"{_describe(index_in, 'input')} and {_describe(index_out, 'output')}"
        try:
            stream = sd.RawStream(  # raw bytes: no NumPy arrays on the audio thread
                device=(index_in, index_out),
                samplerate=rate,
                channels=1,
                dtype="int16",
                blocksize=max(1, rate * SPEAKER_BLOCK_MS // 1000),
                latency=("low", OUTPUT_LATENCY_S[self.config.output_latency]),
                callback=self._duplex_callback,
                finished_callback=self._finished_callback(),
            )
        except sd.PortAudioError as e:
            raise DeviceError(f"cannot open {where} as one full-duplex stream: {e}") from None
        latency_in, latency_out = (float(x) for x in stream.latency)
        self.stream_delay_s = latency_in + latency_out
        room = (index_in, index_out, rate)
        keep_room, self._room = keep_room and room == self._room, room
        self._reset(rate, round(self.stream_delay_s * 1000), keep_room=keep_room)
        self.rate = rate
        self.latency_s = latency_out
        self._failure = None
        self._stream = stream
        self._last_block_s = time.monotonic()
        try:
            stream.start()
        except sd.PortAudioError as e:
            self.close()
            raise DeviceError(f"cannot start the full-duplex stream: {e}") from None
        log.info(
            "echo-cancelled audio open: %s at %d Hz, latency %.0f ms in + %.0f ms out",
            where,
            rate,
            latency_in * 1000,
            latency_out * 1000,
        )

    def _pick_duplex_rate(self, sd: ModuleType, index_in: int | None, index_out: int | None) -> int:
        candidates = [self.preferred_rate, _native_rate(sd, index_out, "output"), MIC_RATE]
        refused = ""
        for rate in dict.fromkeys(candidates):
            try:
                sd.check_input_settings(device=index_in, samplerate=rate, channels=1, dtype="int16")
                sd.check_output_settings(
                    device=index_out, samplerate=rate, channels=1, dtype="int16"
                )
            except sd.PortAudioError as e:
                refused = str(e)
                continue
            return rate
        # PortAudio's own words say which: a rate, or a device (or sound server) gone.
        raise DeviceError(
            f"the input and output devices share none of the rates {sorted(set(candidates))} "
            f"that one full-duplex stream needs (PortAudio: {refused}); check that they are "
            "there and the sound server runs (`voice-assistant devices`)"
        )

    def reopen(self) -> None:
        """Close and open again. Reopened because the microphone fell behind
        (:attr:`needs_reopen`) on a live stream, onto the same devices at the same rate, it
        plays into the same room: what the canceller and the gate know of it is kept, and
        the echo is found again as after an underrun (a voice over the next reply is heard;
        learning anew gated its first 2 s). Any other reopen (a device lost) learns anew."""
        self._keep_room = self.needs_reopen and self._failure is None
        super().reopen()

    def _reset(self, rate: int, delay_ms: int, *, keep_room: bool = False) -> None:
        """A new stream: ``delay_ms`` is its latency, the shortest the echo can take;
        ``keep_room``: on the same devices, whose room the canceller had learnt."""
        import soxr

        with self._process_lock:  # a reopen runs on any thread, beside a read
            self.canceller.set_delay_ms(delay_ms)
            if self.words_canceller is not None:
                self.words_canceller.set_delay_ms(delay_ms)
            self.linear.reset()
            self._clock = SampleClock(rate)
            self._resamplers = (
                (
                    soxr.ResampleStream(rate, self.mic_rate, 1, dtype="int16"),
                    soxr.ResampleStream(rate, self.mic_rate, 1, dtype="int16"),
                )
                if rate != self.mic_rate
                else None
            )
            with self._captured:
                self._blocks.clear()
                self._lags.clear()
                self._least_lag_s = float("inf")
            self._clear_pending()
            self._behind_frames, self._words_behind = None, 0
            if keep_room and self.monitor.knows_room and self.gate.reopened():
                self.monitor.moved()
                log.info("the same room: the canceller finds the echo again")
            else:
                self.monitor.reset()  # maybe another device, another room: learn it again
                self.gate.reset()

    @property
    def needs_reopen(self) -> bool:
        """The microphone fell behind (see :data:`BEHIND_S`): after a stalled callback
        PortAudio recovers the output, but the input captured meanwhile stays queued. Every
        word is then heard that much later, and the echo comes later than the canceller and
        the echo gate look for it, so replies leak into the microphone and stop themselves.
        A fresh stream is in step again; the loop reopens it while nothing is going on."""
        return self.behind_s > BEHIND_S

    @property
    def behind_s(self) -> float:
        """How much later than when the stream opened the microphone's audio comes now (the
        least of the last :data:`LAG_BLOCKS` callbacks); 0 until there are that many."""
        with self._captured:
            if len(self._lags) < LAG_BLOCKS:
                return 0.0
            return min(self._lags) - self._least_lag_s

    @property
    def echo_learnt(self) -> bool:
        """True once the canceller reliably removes the echo (:class:`EchoMonitor`), and no
        underrun has moved the echo since, nor left the microphone behind (a reply that
        heard its own echo stopped itself, and the echo became a request whose reply did the
        same, in a loop). What the loop gates by: :attr:`hears_over_reply`."""
        return self.monitor.learnt and not self.needs_reopen

    @property
    def hears_over_reply(self) -> bool:
        """Whether a voice over the reply can be told from its echo, so the loop gates
        nothing: the canceller has learnt the room (:attr:`echo_learnt`), or had learnt it
        before an underrun moved the echo a little, and the gate looks for the echo around
        where it was (:meth:`EchoGate.moved`) until the canceller finds it again. Half-duplex
        there lost every word said over the rest of the reply: a voice keeps the canceller
        from proving itself. A microphone that fell behind is gated until the gate looks for
        the echo that much later (:meth:`_look_behind`), as is a room whose echo the gate
        has not measured."""
        return self.monitor.knows_room and self.gate.knows_echo and not self._lagging

    @property
    def _lagging(self) -> bool:
        """A callback among the last :data:`LAG_BLOCKS` came :data:`BEHIND_S` later than the
        gate was told the microphone is behind: it may have fallen (further) behind
        (:attr:`needs_reopen` waits to be sure), and the echo then comes later than the gate
        looks for it, even after an underrun."""
        told_s = (self._behind_frames or 0) * FRAME_MS / 1000
        with self._captured:
            return bool(self._lags) and max(self._lags) - self._least_lag_s - told_s > BEHIND_S

    @property
    def words_whole(self) -> bool:
        """Whether Whisper hears the linear canceller now (see :meth:`_words_of`)."""
        return self.words_canceller is not None and self.linear.trusted and not self._echo_moved

    def _clear_pending(self) -> None:
        self._frames.clear()
        self._next_chunk()
        self._quiet = IDLE_AFTER_FRAMES + 1
        self._settled = 0
        self._rested.clear()
        self._echo.clear()
        if self._resamplers is not None:
            for resampler in self._resamplers:
                resampler.clear()

    # -- the PortAudio thread ----------------------------------------------------------------
    def _duplex_callback(
        self, indata: Any, outdata: Any, frames: int, time_info: Any, status: Any
    ) -> None:
        self._fill(outdata, frames, status)  # the speaker's queue fills outdata
        now = time.monotonic()
        pair = (bytes(indata), bytes(outdata))  # copies: PortAudio reuses its buffers
        lag = time_info.currentTime - time_info.inputBufferAdcTime
        with self._captured:
            if 0 <= lag < 10:  # a host without times gives zeros: never behind
                self._lags.append(lag)
                self._least_lag_s = min(self._least_lag_s, lag)
            stamp = self._clock.stamp(now, frames)
            if status.input_overflow:
                self.overflows += 1
            xrun = bool(status.input_overflow or status.input_underflow or status.output_underflow)
            self.xruns += xrun
            if len(self._blocks) >= self._max_blocks:
                self._blocks.popleft()  # both sides of a block go: the pairs stay aligned
                self.overflows += 1
            self._blocks.append((*pair, stamp, xrun))
            self._last_block_s = now
            self._captured.notify()

    def _finished(self) -> None:
        super()._finished()
        with self._captured:
            self._captured.notify_all()

    # -- the microphone side -----------------------------------------------------------------
    def read(self, timeout_s: float) -> AudioChunk | None:
        """The next echo-cancelled 16 kHz frame, or None when none came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self._frames:
            self._check_input_alive()
            with self._captured:
                if not self._blocks:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._captured.wait(remaining)
                    continue
                blocks = list(self._blocks)
                self._blocks.clear()
            self._log_overflows()
            with self._process_lock:
                for near, far, stamp, xrun in blocks:
                    self._process(near, far, stamp, xrun=xrun)
        return self._frames.popleft()

    def drain(self) -> None:
        """Drop every frame captured so far."""
        with self._process_lock:
            with self._captured:
                self._blocks.clear()
            self._clear_pending()

    def _process(
        self, near_pcm: bytes, far_pcm: bytes, stamp: float, *, xrun: bool = False
    ) -> None:
        if xrun:
            self._echo_may_have_moved()
        near = np.frombuffer(near_pcm, dtype=np.int16)
        far = np.frombuffer(far_pcm, dtype=np.int16)
        if self._resamplers is not None:
            assert self.rate is not None
            # soxr holds back delay() output samples: the output ends that much before the
            # input. Both resamplers are alike, so near and far stay in step.
            end_s = stamp + len(near) / self.rate
            near = self._resamplers[0].resample_chunk(near)
            far = self._resamplers[1].resample_chunk(far)
            stamp = end_s - (self._resamplers[0].delay() + len(near)) / self.mic_rate
        per_chunk = self.config.frame_ms // FRAME_MS
        moved = self._follow_the_echo()
        for frame in self._echo.push(near, far, stamp):
            if not self._cleaned:
                self._cleaned_s = frame.start_s
            played = int(np.abs(frame.far).max()) > SILENT_AMPLITUDE
            self._quiet = 0 if played else self._quiet + 1
            if self._quiet > IDLE_AFTER_FRAMES:
                # Nothing played for a while, so no echo to remove: the canceller rests (it
                # would double the idle CPU). Skipping both of its streams keeps them paired.
                cleaned = words = linear = frame.near
                echo = under = False
                self.gate.skip()
                self._rested.append((frame.near, frame.far))
            else:
                # Back to work: first the last half second it skipped. Resumed without it,
                # it leaked the first words of the next reply (in the rig and offline).
                if self._rested:
                    self._settled = 0
                while self._rested:
                    rested = self._rested.popleft()
                    self.canceller.process(*rested)
                    if self.words_canceller is not None:
                        self.words_canceller.process(*rested)
                cleaned = self._cancel(frame.near, frame.far)
                echo = self.gate.is_echo(frame.near, cleaned, frame.far)
                expected_db = self.gate.expected_db  # as is_echo found it for this frame
                # Louder than the echo the gate expects: something else is heard over it.
                self._over += played and not echo and expected_db is not None
                left = echo and played and is_voice_under(frame.near, cleaned)
                under = (
                    left
                    and self._settled >= SETTLED_FRAMES
                    and self.monitor.learnt  # (and no stall moved the echo: echo_learnt)
                    and not moved
                )
                if self._settled < SETTLED_FRAMES and played:
                    self._settled = self._settled + 1 if echo and not left else 0
                words, linear = self._words_of(frame.near, frame.far, cleaned, expected_db)
            self._cleaned.append(cleaned)
            self._words.append(words)
            self._linear.append(linear)
            self._echoes += echo
            self._under += under
            if len(self._cleaned) == per_chunk:
                self._frames.append(self._chunk(per_chunk))
                self._next_chunk()

    def _chunk(self, frames: int) -> AudioChunk:
        """The chunk the frames gathered so far make (``frames`` of them)."""
        linear = self.words_canceller is not None
        return AudioChunk(
            np.concatenate(self._cleaned).tobytes(),
            self.mic_rate,
            timestamp_s=self._cleaned_s,
            echo=2 * self._echoes >= frames,  # mostly echo: never speech
            heard_over=2 * self._over >= frames,
            heard_under=2 * self._under >= frames,
            words=np.concatenate(self._words).tobytes() if linear else None,
            # Only a learnt room's: before, it may be the reply's echo nearly whole.
            linear=(
                np.concatenate(self._linear).tobytes()
                if linear and self.monitor.knows_room
                else None
            ),
        )

    def _follow_the_echo(self) -> bool:
        """Whether a stall moved the echo (the microphone fell behind). The linear canceller
        then no longer takes it away (the monitor would need half a second to see that), so
        Whisper hears AEC3 until the reopen; the gate and the canceller look for it later."""
        moved = self.needs_reopen
        behind = round(self.behind_s * 1000 / FRAME_MS) if moved else 0
        if moved:
            self._look_behind(behind, first=not self._echo_moved)
        if abs(behind - self._words_behind) > WORDS_SLACK_FRAMES:
            self._realign_words(behind)
        self._echo_moved = moved
        return moved

    def _next_chunk(self) -> None:
        self._cleaned, self._words, self._linear = [], [], []
        self._echoes = self._over = self._under = 0

    def _realign_words(self, behind_frames: int) -> None:
        """The echo now comes ``behind_frames`` later than the stream's latency: the linear
        canceller's filter, learnt where it was, would add echo (in the rig, after a stall,
        the next reply's echo came out 1-2 dB louder, and the wake word said over it was
        drowned). It starts afresh there (9-18 dB taken away by the reply's second half) and
        proves itself again."""
        if self.words_canceller is None:
            return
        self._words_behind = behind_frames
        delay_ms = round(self.stream_delay_s * 1000) + behind_frames * FRAME_MS
        self.words_canceller.set_delay_ms(delay_ms)
        self.linear.reset()

    def _look_behind(self, frames: int, *, first: bool) -> None:
        """The microphone fell behind: the echo comes that much later until the stream is
        reopened, and the gate looks for it there (with an underrun's slack: how far
        PortAudio says it fell behind is the echo's move to within tens of milliseconds).
        A room never learnt is gated instead, as is an echo moved past where the gate and
        the canceller look (:data:`MAX_DELAY_FRAMES`). ``frames``: how far behind it is."""
        shifted = self._behind_frames
        if shifted is not None and abs(frames - shifted) <= DELAY_SLACK:
            return
        delay = self.gate.looks_from
        told = (
            self.monitor.knows_room
            and self.gate.knows_echo
            and delay is not None
            and delay + frames + MOVED_SLACK <= MAX_DELAY_FRAMES
        )
        if told:
            self.gate.moved(later=frames)
            self.monitor.moved()  # and the canceller proves itself on the moved echo
            self._behind_frames = frames
            log.info(
                "the microphone fell %.0f ms behind the speaker: the echo is looked for that "
                "much later (the stream is reopened once nothing goes on)",
                self.behind_s * 1000,
            )
        elif first or shifted is not None:
            self._behind_frames = None
            log.info(
                "the microphone fell %.0f ms behind the speaker: it is gated while the "
                "assistant speaks until the stream is reopened",
                self.behind_s * 1000,
            )

    def _echo_may_have_moved(self) -> None:
        """An underrun or overflow: PortAudio restarted the stream's two sides, and the echo
        can now come tens of milliseconds later than the cancellers look for it. Until they
        have shown that they remove it again, the gate looks for it around where it was (a
        room never learnt stays gated) and Whisper hears AEC3."""
        self.linear.reset()
        learnt = self.monitor.moved()
        if self.monitor.relearning:  # the room was learnt: look for the echo around it
            self.gate.moved()
        if learnt:
            log.info(
                "an audio underrun may have moved the echo: a voice over the reply must be "
                "6 dB louder than the echo of the reply's loudest stretch around it until the "
                "canceller removes the echo again"
            )
        elif self._quiet <= IDLE_AFTER_FRAMES:  # learning the room from a reply
            log.info(
                "an audio underrun may have moved the echo while the canceller was learning "
                "the room: it starts counting good windows again"
            )

    def _words_of(
        self, near: Int16, far: Int16, cleaned: Int16, expected_db: float | None
    ) -> tuple[Int16, Int16]:
        """What Whisper hears of a frame: the linear canceller's output while it is known to
        take the echo away (:class:`LinearMonitor`), else AEC3's (``cleaned``); and the
        linear output either way. ``expected_db``: the echo's level the gate expects in it."""
        canceller = self.words_canceller
        if canceller is None:
            return cleaned, cleaned
        trusted = self.words_whole  # as judged before this frame
        linear = canceller.process(near, far)
        self.linear.update(near, linear, expected_db)
        if self.words_whole != trusted:
            log.debug(
                "Whisper hears the %s canceller (%.0f dB of echo removed)",
                "linear" if self.words_whole else "AEC3",
                self.linear.erle_db,
            )
        return (linear if trusted else cleaned), linear

    def _cancel(self, near: Int16, far: Int16) -> Int16:
        cleaned = self.canceller.process(near, far)
        relearning = self.monitor.relearning
        if self.monitor.update(near, cleaned, far):
            self.gate.found()
            log.info(
                "the echo canceller has %s (%.0f dB of echo removed): "
                "the microphone stays live while the assistant speaks",
                "found the echo again" if relearning else "learnt the room",
                self.monitor.erle_db,
            )
        return cleaned

    def _check_input_alive(self) -> None:
        self._check_alive()  # the speaker's: not open, stopped, or died
        silent_s = time.monotonic() - self._last_block_s
        if silent_s > self.config.stall_timeout_s:
            self._failure = f"no audio from the microphone for {silent_s:.1f} s"
            raise DeviceError(self._failure)

    def _log_overflows(self) -> None:
        now = time.monotonic()
        if self.overflows > self._logged_overflows and (
            now - self._overflow_logged_s > OVERFLOW_LOG_INTERVAL_S
        ):
            log.warning(
                "microphone overflow: %d blocks dropped so far (the reader fell behind)",
                self.overflows,
            )
            self._logged_overflows = self.overflows
            self._overflow_logged_s = now
