"""The speaker: one output stream kept open; ``play`` only queues samples."""

from __future__ import annotations

import collections
import logging
import threading
import time
from types import ModuleType
from typing import Any

import numpy as np

from core.errors import DeviceError
from voice.config import AudioConfig
from voice.devices.base import (
    OUTPUT_LATENCY_S,
    SPEAKER_BLOCK_MS,
    SPEAKER_RATE,
    Int16,
    _describe,
    _native_rate,
    _sounddevice,
    _StreamDevice,
    find_device,
)

log = logging.getLogger(__name__)

SAMPLE_BYTES = 2  # int16 mono
# The turn-taking machine resumes or stops a paused reply within about 9 s (1 s for a voice
# to be confirmed, 8 s for its words: voice.turn_taking.HOLD_MAX_S), or pauses it again (a
# request still being said under it); should none of these come (the loop stuck reopening a
# microphone), the shared speaker plays on by itself this long after the last pause.
PAUSE_LIMIT_S = 10.0
# A restarted stream stutters for its first 1-2 ms (measured in the rig): silence goes first.
RESTART_SILENCE_S = 0.03

# ---- speaker -------------------------------------------------------------------------------


class Speaker(_StreamDevice):
    """One output stream, opened once: ``play`` only queues samples.

    The callback copies queued samples into each block and pads with silence, so
    :meth:`stop` takes effect within a block plus the device's latency. An idle stream
    still wakes up every block (about 2 % of a core through PulseAudio): after
    ``audio.speaker_rest_s`` with nothing to play it rests (stops), and ``play`` starts it
    again. The stream runs at ``rate`` (the Piper voice's) when the device takes it, else
    at the device's own rate; audio at another rate is resampled with soxr in :meth:`play`.
    """

    kind = "speaker"

    def __init__(
        self,
        config: AudioConfig,
        *,
        device: str | None = None,
        rate: int = SPEAKER_RATE,
        rest_after_s: float | None = None,
    ) -> None:
        """``rest_after_s`` overrides ``config.speaker_rest_s``; 0 never rests."""
        self.config = config
        self.rest_after_s = config.speaker_rest_s if rest_after_s is None else rest_after_s
        self.device = config.output_device if device is None else device
        self.preferred_rate = rate
        self.rate: int | None = None  # the open stream's rate
        self.latency_s = 0.0  # PortAudio's output latency of the open stream
        self.played_samples = 0  # queued samples handed to the device, at ``rate``
        self.underflows = 0
        self.last_output_s = 0.0  # monotonic time the last queued sample is (was) heard
        self._stream: Any = None
        self._cond = threading.Condition()
        self._chunks: collections.deque[Int16] = collections.deque()
        self._head = 0  # samples of _chunks[0] already played
        self._failure: str | None = None
        self._resting = False  # stopped for want of anything to play, not failed
        self._restart_lock = threading.Lock()  # players on several threads: one restart
        self._callback_stop: type[Exception] = Exception
        self._silence = b""  # a block of it, made once
        self._primer: Int16 | None = None  # silence queued ahead of a restart, not counted
        # Paused until then (monotonic): the queue waits, the stream plays silence, no rest.
        self._paused_until = 0.0

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        if self._stream is not None:
            return
        sd = _sounddevice()
        index = find_device(self.device, "output")
        rate = self._pick_rate(sd, index)
        try:
            # Raw bytes: the callback makes no NumPy array for a block of silence.
            stream = sd.RawOutputStream(
                device=index,
                samplerate=rate,
                channels=1,
                dtype="int16",
                blocksize=max(1, rate * SPEAKER_BLOCK_MS // 1000),
                latency=OUTPUT_LATENCY_S[self.config.output_latency],
                callback=self._output_callback,
                finished_callback=self._finished_callback(),
            )
        except sd.PortAudioError as e:
            raise DeviceError(
                f"cannot open {_describe(index, 'output')} at {rate} Hz as a speaker: {e}. "
                "Check audio.output_device (voice-assistant devices lists them)."
            ) from None
        self.rate = rate
        self.latency_s = float(stream.latency)
        self._failure = None
        self._resting = False
        self._callback_stop = sd.CallbackStop
        self._stream = stream
        try:
            stream.start()
        except sd.PortAudioError as e:
            self.close()
            raise DeviceError(f"cannot start the speaker: {e}") from None
        log.info(
            "speaker open: %s at %d Hz, latency %.0f ms",
            _describe(index, "output"),
            rate,
            self.latency_s * 1000,
        )

    def _pick_rate(self, sd: ModuleType, index: int | None) -> int:
        try:
            sd.check_output_settings(
                device=index, samplerate=self.preferred_rate, channels=1, dtype="int16"
            )
        except sd.PortAudioError:
            native = _native_rate(sd, index, "output")
            log.info("speaker does not take %d Hz: opening at %d Hz", self.preferred_rate, native)
            return native
        return self.preferred_rate

    def close(self) -> None:
        self.stop()
        super().close()

    # -- AudioSink ---------------------------------------------------------------------------
    def play(self, samples: Int16, rate: int) -> None:
        """Queue mono int16 ``samples`` at ``rate``; returns at once."""
        if samples.dtype != np.int16:
            raise TypeError(f"Speaker.play takes int16 samples, got {samples.dtype}")
        self._check_alive()
        assert self.rate is not None
        samples = samples.reshape(-1)
        if rate != self.rate:
            import soxr

            samples = soxr.resample(samples, rate, self.rate)
        if len(samples) == 0:
            return
        with self._cond:
            resting = self._resting
            if resting and not self._chunks:
                self._primer = np.zeros(round(self.rate * RESTART_SILENCE_S), np.int16)
                self._chunks.append(self._primer)
            self._chunks.append(samples)
        if resting:
            self._restart()

    def _restart(self) -> None:
        """Start the resting stream again (its callback stopped it: stop, then start)."""
        with self._restart_lock:
            stream = self._stream
            if not self._resting or stream is None:
                return
            sd = _sounddevice()
            try:
                stream.stop()
                with self._cond:
                    self._resting = False
                stream.start()
            except sd.PortAudioError as e:
                self._failure = f"the speaker stream would not start again: {e}"
                raise DeviceError(f"{self._failure}; reopen the speaker") from None

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the queue is empty and its last sample left the device."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._chunks:
                if self._failure is not None:
                    raise DeviceError(f"{self._failure}; reopen the speaker")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            done_s = self.last_output_s
        # What left the buffer is still in the device for up to its latency.
        until = done_s if deadline is None else min(done_s, deadline)
        if until > time.monotonic():
            time.sleep(until - time.monotonic())
        return deadline is None or done_s <= deadline

    def stop(self) -> None:
        """Drop everything queued; the device goes quiet within a block plus its latency."""
        with self._cond:
            self._paused_until = 0.0
            self._chunks.clear()
            self._head = 0
            self.last_output_s = min(self.last_output_s, time.monotonic() + self.latency_s)
            self._cond.notify_all()

    def pause(self) -> None:
        """Quiet within a block plus the device's latency, as :meth:`stop`, keeping the queue
        (for :data:`PAUSE_LIMIT_S` at most)."""
        with self._cond:
            now = time.monotonic()
            self._paused_until = now + PAUSE_LIMIT_S
            self.last_output_s = min(self.last_output_s, now + self.latency_s)

    def resume(self) -> None:
        with self._cond:
            self._paused_until = 0.0

    @property
    def playing(self) -> bool:
        with self._cond:
            return bool(self._chunks) or time.monotonic() < self.last_output_s

    @property
    def sounding(self) -> bool:
        with self._cond:
            now = time.monotonic()
            return (bool(self._chunks) and now >= self._paused_until) or now < self.last_output_s

    @property
    def resting(self) -> bool:
        """The stream stopped for want of anything to play (``play`` starts it again)."""
        return self._resting

    @property
    def failure(self) -> str | None:
        """Why the open stream died (device unplugged, sound server gone), else None:
        :meth:`reopen` it."""
        stream = self._stream
        if stream is None:
            return None
        if self._failure is None and not stream.active and not self._resting:
            self._failure = "the speaker stream is no longer running"
        return self._failure

    def _check_alive(self) -> None:
        if self._stream is None:
            raise DeviceError("the speaker is not open")
        if self._failure is None and not self._stream.active and not self._resting:
            self._failure = "the speaker stream is no longer running"
        if self._failure is not None:
            raise DeviceError(f"{self._failure}; reopen the speaker")

    # -- the PortAudio thread ----------------------------------------------------------------
    def _output_callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        if self._fill(outdata, frames, status):
            return
        if self.rest_after_s <= 0:
            return
        with self._cond:
            if self._chunks or time.monotonic() < self.last_output_s + self.rest_after_s:
                return
            self._resting = True
        raise self._callback_stop  # PortAudio plays out its buffer (silence) and stops

    def _fill(self, outdata: Any, frames: int, status: Any) -> bool:
        """Copy queued samples into the raw ``outdata``, silence after them; True if any."""
        filled = 0
        with self._cond:
            if status.output_underflow:
                self.underflows += 1
            paused = bool(self._chunks) and time.monotonic() < self._paused_until
            if self._chunks and not paused:
                out = np.frombuffer(outdata, dtype=np.int16)
                while filled < frames and self._chunks:
                    head = self._chunks[0]
                    take = min(len(head) - self._head, frames - filled)
                    out[filled : filled + take] = head[self._head : self._head + take]
                    filled += take
                    self._head += take
                    if head is self._primer:
                        self.played_samples -= take
                    if self._head == len(head):
                        self._chunks.popleft()
                        self._head = 0
            if filled:
                assert self.rate is not None
                self.played_samples += filled
                self.last_output_s = time.monotonic() + self.latency_s + filled / self.rate
                if not self._chunks:
                    self._cond.notify_all()
        rest = len(outdata) - filled * SAMPLE_BYTES
        if rest:
            if len(self._silence) < rest:
                self._silence = bytes(rest)
            outdata[filled * SAMPLE_BYTES :] = self._silence[:rest]
        return filled > 0 or paused

    def _finished(self) -> None:
        with self._cond:
            if self._stream is not None and not self._resting:
                self._failure = "the speaker stream stopped (device unplugged or server gone)"
            self._cond.notify_all()


class RecoveringSpeaker:
    """The :class:`Speaker` as the loop's sink: a stream that died is reopened on the next play.

    The speaker goes with the microphone when the sound server restarts or a USB headset is
    unplugged. Each ``play`` makes at most one attempt to reopen (a quick failure while the
    device is still gone, raised as :class:`DeviceError`), so the next earcon or reply after
    the device returns is heard, without restarting the process.
    """

    def __init__(self, speaker: Speaker) -> None:
        self.speaker = speaker
        self._lock = threading.Lock()  # players on several threads: one reopen at a time
        self._lost = False  # stays set while reopening fails (the stream is None then)

    def play(self, samples: Int16, rate: int) -> None:
        self._revive()
        self.speaker.play(samples, rate)

    def wait(self, timeout_s: float | None = None) -> bool:
        return self.speaker.wait(timeout_s)

    def stop(self) -> None:
        self.speaker.stop()

    def pause(self) -> None:
        self.speaker.pause()

    def resume(self) -> None:
        self.speaker.resume()

    @property
    def playing(self) -> bool:
        return self.speaker.playing

    @property
    def sounding(self) -> bool:
        return self.speaker.sounding

    def _revive(self) -> None:
        with self._lock:
            failure = self.speaker.failure
            if not self._lost and failure is None:
                return
            if not self._lost:
                log.warning("speaker lost (%s); reopening", failure)
                self._lost = True
            self.speaker.reopen()  # raises DeviceError while the device is still gone
            self._lost = False
            log.info("speaker reopened")
