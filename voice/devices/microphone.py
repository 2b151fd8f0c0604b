"""The microphone: fixed-size 16 kHz frames from a PortAudio callback, timestamped."""

from __future__ import annotations

import collections
import logging
import threading
import time
from types import ModuleType
from typing import Any

import numpy as np

from core.errors import DeviceError
from voice.audio import SAMPLE_WIDTH, AudioChunk
from voice.config import AudioConfig
from voice.devices.base import (
    MIC_RATE,
    OVERFLOW_LOG_INTERVAL_S,
    SampleClock,
    _describe,
    _native_rate,
    _sounddevice,
    _StreamDevice,
    find_device,
)

log = logging.getLogger(__name__)

# ---- microphone ----------------------------------------------------------------------------


class Microphone(_StreamDevice):
    """Frames of exactly ``config.frame_ms`` of 16 kHz mono int16, stamped with monotonic time.

    The PortAudio callback puts blocks in a queue bounded by ``config.queue_frames``; when it
    is full the oldest block is dropped and counted in ``overflows`` (never an error). A device
    that will not run at ``rate`` is opened at its own rate and resampled with soxr.
    A stream that dies or stalls makes :meth:`read` raise :class:`DeviceError`; call
    :meth:`reopen`.
    """

    kind = "microphone"

    def __init__(
        self,
        config: AudioConfig,
        *,
        device: str | None = None,
        rate: int = MIC_RATE,
        device_rate: int | None = None,
    ) -> None:
        """``device`` overrides ``config.input_device``; ``device_rate`` forces the rate the
        device is opened at (otherwise ``rate`` if the device takes it, else its default)."""
        self.config = config
        self.device = config.input_device if device is None else device
        self.rate = rate
        self.frame_samples = rate * config.frame_ms // 1000
        self.overflows = 0
        self.device_rate: int | None = None  # the rate the open stream runs at
        self._forced_rate = device_rate
        self._stream: Any = None
        self._cond = threading.Condition()
        self._blocks: collections.deque[tuple[bytes, float]] = collections.deque()
        self._frames: collections.deque[AudioChunk] = collections.deque()
        self._pending = bytearray()
        self._pending_s = 0.0
        self._resampler: Any = None
        self._clock = SampleClock(rate)
        self._failure: str | None = None
        self._last_block_s = 0.0
        self._logged_overflows = 0
        self._overflow_logged_s = float("-inf")

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        if self._stream is not None:
            return
        sd = _sounddevice()
        index = find_device(self.device, "input")
        rate = self._forced_rate or self._pick_rate(sd, index)
        blocksize = max(1, round(rate * self.config.frame_ms / 1000))
        try:
            # Raw bytes: no NumPy array is made per block on the audio thread, which runs
            # all day (0.2 % of a core less in the rig).
            stream = sd.RawInputStream(
                device=index,
                samplerate=rate,
                channels=1,
                dtype="int16",
                blocksize=blocksize,
                latency="low",
                callback=self._callback,
                finished_callback=self._finished_callback(),
            )
        except sd.PortAudioError as e:
            raise DeviceError(
                f"cannot open {_describe(index, 'input')} at {rate} Hz as a microphone: {e}. "
                "Check audio.input_device (voice-assistant devices lists them)."
            ) from None
        self._reset(rate)
        self._stream = stream
        self._last_block_s = time.monotonic()
        try:
            stream.start()
        except sd.PortAudioError as e:
            self.close()
            raise DeviceError(f"cannot start the microphone: {e}") from None
        log.info("microphone open: %s at %d Hz", _describe(index, "input"), rate)

    def _pick_rate(self, sd: ModuleType, index: int | None) -> int:
        try:
            sd.check_input_settings(device=index, samplerate=self.rate, channels=1, dtype="int16")
        except sd.PortAudioError:
            native = _native_rate(sd, index, "input")
            log.info("microphone does not take %d Hz: opening at %d Hz", self.rate, native)
            return native
        return self.rate

    def _reset(self, device_rate: int) -> None:
        import soxr

        self.device_rate = device_rate
        self._failure = None
        self._clock = SampleClock(device_rate)
        self._resampler = (
            soxr.ResampleStream(device_rate, self.rate, 1, dtype="int16")
            if device_rate != self.rate
            else None
        )
        with self._cond:
            self._blocks.clear()
        self._frames.clear()
        self._pending.clear()

    # -- the PortAudio thread ----------------------------------------------------------------
    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        now = time.monotonic()
        block = bytes(indata)  # a copy: PortAudio reuses its buffer
        with self._cond:
            stamp = self._clock.stamp(now, frames)
            if status.input_overflow:
                self.overflows += 1
            if len(self._blocks) >= self.config.queue_frames:
                self._blocks.popleft()
                self.overflows += 1
            self._blocks.append((block, stamp))
            self._last_block_s = now
            self._cond.notify()

    def _finished(self) -> None:
        with self._cond:
            if self._stream is not None:
                self._failure = "the microphone stream stopped (device unplugged or server gone)"
            self._cond.notify_all()

    # -- reading -----------------------------------------------------------------------------
    def read(self, timeout_s: float) -> AudioChunk | None:
        """The next frame, or None when none came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self._frames:
            self._check_alive()
            with self._cond:
                if not self._blocks:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
                    continue
                blocks = list(self._blocks)
                self._blocks.clear()
            self._log_overflows()
            for block, stamp in blocks:
                self._frames.extend(self._reframe(block, stamp))
        return self._frames.popleft()

    def drain(self) -> None:
        """Drop every frame captured so far (the loop stops listening to itself)."""
        with self._cond:
            self._blocks.clear()
        self._frames.clear()
        self._pending.clear()
        if self._resampler is not None:
            self._resampler.clear()

    def _check_alive(self) -> None:
        stream = self._stream
        if stream is None:
            raise DeviceError("the microphone is not open")
        if self._failure is None and not stream.active:
            self._failure = "the microphone stream is no longer running"
        silent_s = time.monotonic() - self._last_block_s
        if self._failure is None and silent_s > self.config.stall_timeout_s:
            self._failure = f"no audio from the microphone for {silent_s:.1f} s"
        if self._failure is not None:
            raise DeviceError(self._failure)

    def _reframe(self, block: bytes, stamp: float) -> list[AudioChunk]:
        if self._resampler is not None:
            assert self.device_rate is not None
            # soxr holds back delay() output samples: the output ends that much before the input.
            end_s = stamp + len(block) / SAMPLE_WIDTH / self.device_rate
            resampled = self._resampler.resample_chunk(np.frombuffer(block, dtype=np.int16))
            stamp = end_s - (self._resampler.delay() + len(resampled)) / self.rate
            block = resampled.tobytes()
        if not block:
            return []
        # The newest block's stamp places what is still pending just before it.
        self._pending_s = stamp - len(self._pending) / SAMPLE_WIDTH / self.rate
        self._pending += block
        n = self.frame_samples * SAMPLE_WIDTH
        count = len(self._pending) // n
        frames = [
            AudioChunk(
                bytes(self._pending[i * n : (i + 1) * n]),
                self.rate,
                timestamp_s=self._pending_s + i * self.frame_samples / self.rate,
            )
            for i in range(count)
        ]
        del self._pending[: count * n]
        return frames

    def _log_overflows(self) -> None:
        now = time.monotonic()
        if self.overflows > self._logged_overflows and (
            now - self._overflow_logged_s > OVERFLOW_LOG_INTERVAL_S
        ):
            log.warning(
                "microphone overflow: %d frames dropped so far (the reader fell behind)",
                self.overflows,
            )
            self._logged_overflows = self.overflows
            self._overflow_logged_s = now
