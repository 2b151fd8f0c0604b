"""The microphone and the speaker as one full-duplex stream, with the echo cancelled.

One PortAudio stream plays and captures in the same callback, so the samples played and the
samples captured share one clock: each callback's captured block is paired with the block it
played, and the echo canceller gets both (:mod:`voice.echo`). The device is a
:class:`~voice.devices.speaker.Speaker` (``play``, ``wait``, ``stop``, ``playing``) that can
also be read like the :class:`~voice.devices.microphone.Microphone` (``read``, ``drain``,
``reopen``), so the loop takes it as its source and its sink at once.

A duplex stream wakes up every block to play, even silence; through PulseAudio a bare one
costs about half as much again as the microphone alone. So, as the speaker does, it rests
after ``audio.echo_rest_s`` with nothing played: an input-only stream on the same device
and rate takes over the capture (nothing played means no echo to cancel), and ``play``
brings the duplex stream back. The two are spliced where both captured the same audio, so
the microphone's audio goes on without a sample lost or doubled. The stream starting again
may move the echo path, so the canceller then starts afresh (:meth:`EchoCanceller.reset`).

As in the other devices, the callback only moves samples; resampling, cancelling and
framing happen on the reader's thread, in :meth:`DuplexDevice.read`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from types import ModuleType
from typing import Any, Literal

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
from voice.echo import FRAME_MS, EchoCanceller, EchoFrames
from voice.echo_guard import EchoGate, EchoMonitor

log = logging.getLogger(__name__)

# After this long with nothing played (10 ms frames), the echo has died away: the longest
# delay the canceller handles (500 ms) plus a room's reverberation.
IDLE_AFTER_FRAMES = 100
SILENT_AMPLITUDE = 4  # the resampler turns digital silence into +-1
RESUME_FRAMES = 50  # what the resting canceller is given again before it resumes
# A stream taking the microphone over is spliced in once the running one has captured this
# much of the same audio (to match them by), or after this many blocks (20 ms each) if the
# running one stopped delivering. The last few blocks are kept to match against.
SPLICE_OVERLAP_S = 0.015
SPLICE_WAIT_BLOCKS = 6
SPLICE_HISTORY = 4
# The clocks place the two streams within 1-3 ms of each other (against the rig's
# recording); the audio itself settles the last samples within this much either way.
SPLICE_SEARCH_S = 0.006
# The normalized correlation that counts as the same audio: each stream resamples the
# microphone on its own, up to half a sample apart, which leaves noise up to 8 kHz at 0.82.
SPLICE_MATCH = 0.7
SPLICE_FLOOR = 30.0  # RMS (int16): quieter than this, silence, there is nothing to match


def matched_overlap(recent: Int16, new: Int16, overlap: int, rate: int) -> int:
    """How many samples at the start of ``new`` are the last ones of ``recent``: the clocks'
    estimate ``overlap``, made exact by matching the audio when there is any to match."""
    search = round(SPLICE_SEARCH_S * rate)
    n = min(overlap - search, len(new))  # every candidate holds this much of ``new``
    if n < 64 or len(recent) < overlap + search:
        return overlap
    probe = new[:n].astype(np.float64)
    norm = float(np.linalg.norm(probe))
    if norm < SPLICE_FLOOR * np.sqrt(n):
        return overlap  # silence: nothing to match, and nothing to lose either
    # Candidate c (samples heard twice) puts new[0] at recent[-c].
    first = len(recent) - overlap - search
    windows = np.lib.stride_tricks.sliding_window_view(recent.astype(np.float64), n)
    windows = windows[first : first + 2 * search + 1]
    norms = np.linalg.norm(windows, axis=1)
    scores = windows @ probe / np.maximum(norms * norm, 1e-9)
    best = int(np.argmax(scores))
    if scores[best] < SPLICE_MATCH:
        return overlap
    return overlap + search - best


class DuplexDevice(Speaker):
    """Speaker and echo-cancelled microphone on one stream.

    The stream runs at the speaker's preferred rate when both directions take it (else at
    the output device's own rate); the captured audio and the reference are resampled to
    16 kHz by two identical resamplers, so they stay aligned sample for sample.
    """

    kind = "duplex audio stream"
    # Starting from rest, the stream's first blocks are spliced after the input-only
    # stream's, and the spliced-off part never reaches the canceller: let it be silence.
    restart_silence_s = 0.06

    def __init__(
        self,
        config: AudioConfig,
        canceller: EchoCanceller,
        *,
        rate: int = SPEAKER_RATE,
    ) -> None:
        super().__init__(config, rate=rate, rest_after_s=config.echo_rest_s)
        self.canceller = canceller
        self.input_device = config.input_device
        self.mic_rate = MIC_RATE
        self.frame_samples = MIC_RATE * config.frame_ms // 1000
        self.stream_delay_s = 0.0  # input plus output latency: the shortest echo delay
        self.overflows = 0
        # The queue holds one block per callback: as many seconds as the microphone's queue.
        self._max_blocks = max(1, config.queue_frames * config.frame_ms // SPEAKER_BLOCK_MS)
        self._captured = threading.Condition()
        self._blocks: collections.deque[tuple[bytes, bytes, float]] = collections.deque()
        self._process_lock = threading.Lock()  # reopen (any thread) against read (the loop)
        self._frames: collections.deque[AudioChunk] = collections.deque()
        self._cleaned: list[Int16] = []
        self._echoes = 0  # frames of self._cleaned judged echo
        self._quiet = IDLE_AFTER_FRAMES + 1  # frames since the speaker last played anything
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
        self._last_stamp = float("-inf")
        # Which stream's blocks are queued: the duplex one, or the input-only one while the
        # duplex rests. The input-only stream takes over at its first block once started.
        self._source: Literal["duplex", "input"] = "duplex"
        self._input_stream: Any = None
        self._input_starting = False
        self._incoming: list[tuple[bytes, bytes, float]] = []
        self._incoming_clock = SampleClock(rate)
        self._queued_end_s = float("-inf")  # capture time of the end of the last queued block
        self._recent_near: collections.deque[bytes] = collections.deque(maxlen=SPLICE_HISTORY)
        self._skip = 0  # samples of the stream just spliced in that were captured already
        # Times the duplex stream started again, and how many of them the canceller knows:
        # each may have moved the echo path (the two directions' buffers line up afresh).
        self._restarts = 0
        self._restarts_seen = 0
        self._logged_overflows = 0
        self._overflow_logged_s = float("-inf")

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        if self._stream is not None:
            return
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
                finished_callback=self._finished,
            )
        except sd.PortAudioError as e:
            raise DeviceError(f"cannot open {where} as one full-duplex stream: {e}") from None
        latency_in, latency_out = (float(x) for x in stream.latency)
        self._reset(rate)
        self.rate = rate
        self.latency_s = latency_out
        self.stream_delay_s = latency_in + latency_out
        self.canceller.set_delay_ms(round(self.stream_delay_s * 1000))
        self._failure = None
        self._resting = False
        self._callback_stop = sd.CallbackStop
        self._source, self._input_starting, self._incoming = "duplex", False, []
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

    def close(self) -> None:
        stream, self._input_stream = self._input_stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as e:  # a dead device may fail to close: it is gone anyway
                log.debug("closing the input-only stream failed: %s", e)
        super().close()

    def _pick_duplex_rate(self, sd: ModuleType, index_in: int | None, index_out: int | None) -> int:
        candidates = [self.preferred_rate, _native_rate(sd, index_out, "output"), MIC_RATE]
        for rate in dict.fromkeys(candidates):
            try:
                sd.check_input_settings(device=index_in, samplerate=rate, channels=1, dtype="int16")
                sd.check_output_settings(
                    device=index_out, samplerate=rate, channels=1, dtype="int16"
                )
            except sd.PortAudioError:
                continue
            return rate
        raise DeviceError(
            f"the input and output devices share none of the rates {sorted(set(candidates))} "
            "that one full-duplex stream needs"
        )

    def _reset(self, rate: int) -> None:
        import soxr

        with self._process_lock:
            self._clock = SampleClock(rate)
            self._last_stamp = float("-inf")
            self._queued_end_s = float("-inf")
            self._recent_near.clear()
            self._skip = 0
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
                self._incoming.clear()
            self._clear_pending()
            self.monitor.reset()  # maybe another device, another room: learn it again
            self.gate.reset()

    @property
    def echo_learnt(self) -> bool:
        """True once the canceller reliably removes the echo (:class:`EchoMonitor`)."""
        return self.monitor.learnt

    def _clear_pending(self) -> None:
        self._frames.clear()
        self._cleaned, self._echoes = [], 0
        self._quiet = IDLE_AFTER_FRAMES + 1
        self._rested.clear()
        self._echo.clear()
        if self._resamplers is not None:
            for resampler in self._resamplers:
                resampler.clear()

    # -- the PortAudio thread ----------------------------------------------------------------
    # Handing the microphone from one stream to the other: the stream taking over starts
    # while the other still runs, and its blocks wait in ``_incoming``. Each stream's
    # SampleClock times its blocks to within a few milliseconds of when they were captured
    # (measured against the rig's recording), so once the running stream's audio reaches the
    # first waiting block, the two are spliced there: nothing is lost or heard twice.

    def _duplex_callback(
        self, indata: Any, outdata: Any, frames: int, time_info: Any, status: Any
    ) -> None:
        played = self._fill(outdata, frames, status)  # the speaker's queue fills outdata
        with self._captured:
            self.overflows += bool(status.input_overflow)
            if self._source == "input":
                with self._cond:  # as the speaker's callback: play() sees one or the other
                    rest = not played and not self._chunks and not self._incoming
                    self._resting = rest
                if rest:  # the input-only stream has the microphone; play() restarts us
                    raise self._callback_stop
                self._arrive(indata, bytes(outdata), frames)
            else:
                self._queue(indata, bytes(outdata), self._clock.stamp(time.monotonic(), frames))
            self._splice_when_due()

    def _input_callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        with self._captured:
            self.overflows += bool(status.input_overflow)
            silence = self._silence_for(frames)
            if self._source == "input":
                self._queue(indata, silence, self._clock.stamp(time.monotonic(), frames))
            elif self._input_starting:
                self._arrive(indata, silence, frames)
            else:
                raise self._callback_stop  # the duplex stream has the microphone (again)
            self._splice_when_due()

    def _arrive(self, indata: Any, far: bytes, frames: int) -> None:
        """A block of the stream taking over: it waits until the splice."""
        if not self._incoming:
            assert self.rate is not None
            self._incoming_clock = SampleClock(self.rate)  # its count starts at its start
        stamp = self._incoming_clock.stamp(time.monotonic(), frames)
        self._incoming.append((bytes(indata), far, stamp))

    def _splice_when_due(self) -> None:
        if not self._incoming:
            return
        assert self.rate is not None
        first_s = self._incoming_clock.start_s  # the best estimate, refined by each block
        overlap = round((self._queued_end_s - first_s) * self.rate)  # samples heard twice
        if overlap < SPLICE_OVERLAP_S * self.rate and len(self._incoming) < SPLICE_WAIT_BLOCKS:
            return  # the running stream has not reached it yet (or it died: splice anyway)
        incoming, self._incoming = self._incoming, []
        new = np.frombuffer(b"".join(near for near, _, _ in incoming), np.int16)
        far = np.frombuffer(b"".join(far for _, far, _ in incoming), np.int16)
        recent = np.frombuffer(b"".join(self._recent_near), np.int16)
        estimate = overlap
        overlap = max(0, matched_overlap(recent, new, overlap, self.rate))
        if np.any(far[:overlap]):
            log.debug("the canceller missed %d samples of the reply at a splice", overlap)
        self._source = "duplex" if self._source == "input" else "input"
        self._input_starting = False
        self._clock = self._incoming_clock
        self._restarts += self._source == "duplex"
        # What the other stream captured past the end of ``new`` goes from the next blocks.
        self._skip = overlap
        self._queue(new.tobytes(), far.tobytes(), first_s)
        log.debug(
            "the %s stream has the microphone, spliced %d samples into it (clocks: %d)",
            self._source,
            overlap,
            estimate,
        )

    def _silence_for(self, frames: int) -> bytes:
        if len(self._silence) < frames * 2:
            self._silence = bytes(frames * 2)
        return self._silence[: frames * 2]

    def _queue(self, near: Any, far: bytes, stamp: float) -> None:
        """Queue a pair of blocks for :meth:`read` (under ``_captured``), less the samples
        a splice said were captured already."""
        if self._skip:
            assert self.rate is not None
            skip = min(self._skip, len(near) // 2)
            self._skip -= skip
            near, far, stamp = near[skip * 2 :], far[skip * 2 :], stamp + skip / self.rate
            if not len(near):
                return
        now = time.monotonic()
        stamp = max(stamp, self._last_stamp + 1e-6)
        self._last_stamp = stamp
        if len(self._blocks) >= self._max_blocks:
            self._blocks.popleft()  # both sides of a block go: the pairs stay aligned
            self.overflows += 1
        near = bytes(near)  # a copy: PortAudio reuses its buffers
        self._blocks.append((near, far, stamp))
        self._recent_near.append(near)
        assert self.rate is not None
        self._queued_end_s = stamp + len(near) / 2 / self.rate
        self._last_block_s = now
        self._captured.notify()

    def _rest_if_idle(self) -> None:
        """Nothing played for ``rest_after_s``: start the input-only stream, which takes the
        microphone over at its first block (the duplex stream then stops)."""
        if (
            self.rest_after_s <= 0
            or self._source != "duplex"
            or self._input_starting
            or self._resting
            or self.playing
            or time.monotonic() < self.last_output_s + self.rest_after_s
        ):
            return
        sd = _sounddevice()
        try:
            if self._input_stream is None:
                self._input_stream = self._open_input_stream(sd)
            with self._captured:
                self._input_starting = True
            self._input_stream.stop()  # it stopped itself last time: stop, then start
            self._input_stream.start()
        except sd.PortAudioError as e:
            with self._captured:
                self._input_starting = False
            self.rest_after_s = 0.0  # the duplex stream goes on as before
            log.warning("cannot rest the duplex stream (%s): it keeps running", e)

    def play(self, samples: Int16, rate: int) -> None:
        with self._captured:
            if self._source == "duplex" and self._input_starting:
                # A rest about to begin does not: the duplex stream plays on.
                self._input_starting = False
                self._incoming.clear()
        super().play(samples, rate)

    def _open_input_stream(self, sd: ModuleType) -> Any:
        assert self.rate is not None
        return sd.RawInputStream(
            device=find_device(self.input_device, "input"),
            samplerate=self.rate,
            channels=1,
            dtype="int16",
            blocksize=max(1, self.rate * SPEAKER_BLOCK_MS // 1000),
            latency="low",
            callback=self._input_callback,
        )

    def _finished(self) -> None:
        super()._finished()
        with self._captured:
            self._captured.notify_all()

    # -- the microphone side -----------------------------------------------------------------
    def read(self, timeout_s: float) -> AudioChunk | None:
        """The next echo-cancelled 16 kHz frame, or None when none came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self._rest_if_idle()
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
                for near, far, stamp in blocks:
                    self._process(near, far, stamp)
        return self._frames.popleft()

    def drain(self) -> None:
        """Drop every frame captured so far."""
        with self._process_lock:
            with self._captured:
                self._blocks.clear()
            self._clear_pending()

    def _process(self, near_pcm: bytes, far_pcm: bytes, stamp: float) -> None:
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
        for frame in self._echo.push(near, far, stamp):
            if not self._cleaned:
                self._cleaned_s = frame.start_s
            played = int(np.abs(frame.far).max()) > SILENT_AMPLITUDE
            self._quiet = 0 if played else self._quiet + 1
            if self._quiet > IDLE_AFTER_FRAMES:
                # Nothing played for a while, so no echo to remove: the canceller rests (it
                # would double the idle CPU). Skipping both of its streams keeps them paired.
                cleaned, echo = frame.near, False
                self.gate.skip()
                self._rested.append((frame.near, frame.far))
            else:
                # Back to work: first the last half second it skipped. Resumed without it,
                # it leaked the first words of the next reply (in the rig and offline).
                if self._rested and self._restarts != self._restarts_seen:
                    self._restarts_seen = self._restarts
                    self.canceller.reset()
                while self._rested:
                    self.canceller.process(*self._rested.popleft())
                cleaned = self._cancel(frame.near, frame.far)
                echo = self.gate.is_echo(frame.near, cleaned, frame.far)
            self._cleaned.append(cleaned)
            self._echoes += echo
            if len(self._cleaned) == per_chunk:
                pcm = np.concatenate(self._cleaned).tobytes()
                echo = 2 * self._echoes >= per_chunk  # mostly echo: never speech
                chunk = AudioChunk(pcm, self.mic_rate, timestamp_s=self._cleaned_s, echo=echo)
                self._frames.append(chunk)
                self._cleaned, self._echoes = [], 0

    def _cancel(self, near: Int16, far: Int16) -> Int16:
        cleaned = self.canceller.process(near, far)
        if self.monitor.update(near, cleaned, far):
            log.info(
                "the echo canceller has learnt the room (%.0f dB of echo removed): "
                "the microphone stays live while the assistant speaks",
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
