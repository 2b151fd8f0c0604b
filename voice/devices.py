"""Real audio I/O through PortAudio (sounddevice): the microphone and the speaker.

``sounddevice`` is imported inside the functions: importing it initializes PortAudio, which
enumerates the ALSA devices once, so the environment (e.g. ``PULSE_SERVER``) must be final by
then; and importing this module stays cheap.

Both devices run one PortAudio stream with a callback that only moves samples between the
device and a buffer under a lock; everything else happens on the caller's thread.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from types import ModuleType, TracebackType
from typing import Any, Literal, Protocol, Self

import numpy as np
import numpy.typing as npt

from core.errors import DeviceError
from voice.audio import AudioChunk
from voice.config import AudioConfig

log = logging.getLogger(__name__)

Int16 = npt.NDArray[np.int16]
Kind = Literal["input", "output"]

MIC_RATE = 16000  # what the VAD and Whisper want
SPEAKER_RATE = 22050  # the Piper voice and the earcons: played without resampling
SPEAKER_BLOCK_MS = 10  # one callback's worth: stop() takes effect within this
# PortAudio's own "low" (8-20 ms through ALSA) underruns several times a minute when the
# Python callback waits for the GIL on a busy 2-core machine; 50 ms did not in the same test.
OUTPUT_LATENCY_S = {"low": 0.05, "high": 0.15}
OVERFLOW_LOG_INTERVAL_S = 5.0
CLOCK_WINDOW_BLOCKS = 64  # about 2 s of callbacks to find the least-delayed one


class AudioSource(Protocol):
    """What the loop reads: frames of 16 kHz mono int16, or None after ``timeout_s``."""

    def read(self, timeout_s: float) -> AudioChunk | None: ...


class AudioSink(Protocol):
    """What the loop plays to."""

    def play(self, samples: Int16, rate: int) -> None:
        """Queue samples and return at once."""
        ...

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once everything queued has been played, False on timeout."""
        ...

    def stop(self) -> None:
        """Stop now and drop everything queued."""
        ...

    @property
    def playing(self) -> bool: ...


# ---- devices -------------------------------------------------------------------------------


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except OSError as e:  # the PortAudio library itself is missing
        raise DeviceError(
            f"PortAudio is not available ({e}); install it (Debian: apt-get install libportaudio2)"
        ) from None
    module: ModuleType = sounddevice
    return module


def _devices() -> list[dict[str, Any]]:
    return [dict(d) for d in _sounddevice().query_devices()]


def list_devices() -> str:
    """A table of the audio devices: index, name, input/output channels, default rate."""
    devices = _devices()
    if not devices:
        return "no audio devices (is a sound server running, or a sound card present?)"
    default_in, default_out = _default_index("input"), _default_index("output")
    lines = [f"{'':2}{'#':>3}  {'name':<40} {'in':>3} {'out':>3} {'rate':>7}"]
    for d in devices:
        mark = ("<" if d["index"] == default_in else " ") + (
            ">" if d["index"] == default_out else " "
        )
        lines.append(
            f"{mark}{d['index']:>3}  {d['name'][:40]:<40} {d['max_input_channels']:>3} "
            f"{d['max_output_channels']:>3} {int(d['default_samplerate']):>7}"
        )
    lines.append("< default input, > default output")
    return "\n".join(lines)


def _default_index(kind: Kind) -> int:
    sd = _sounddevice()
    try:
        return int(sd.query_devices(kind=kind)["index"])
    except sd.PortAudioError:  # no default device of that kind
        return -1


def find_device(spec: str, kind: Kind) -> int | None:
    """The PortAudio index for a config value: "" is the default (None), a number an index,
    anything else a case-insensitive substring of the device name (an exact name wins)."""
    spec = spec.strip()
    if not spec:
        return None
    channels = f"max_{kind}_channels"
    devices = _devices()
    if spec.isdigit():
        matches = [d for d in devices if d["index"] == int(spec)]
    else:
        exact = [d for d in devices if d["name"].lower() == spec.lower()]
        matches = exact or [d for d in devices if spec.lower() in d["name"].lower()]
    usable = [d for d in matches if d[channels] > 0]
    if usable:
        return int(usable[0]["index"])
    problem = (
        f"audio device {spec!r} has no {kind} channels"
        if matches
        else f"no audio device matches {spec!r}"
    )
    raise DeviceError(
        f"{problem}. Set audio.{kind}_device in config.toml to a name or index from this list "
        f'(or "" for the default):\n{list_devices()}'
    )


def _describe(index: int | None, kind: Kind) -> str:
    return "the default " + kind + " device" if index is None else f"audio device #{index}"


def _native_rate(sd: ModuleType, index: int | None, kind: Kind) -> int:
    return int(sd.query_devices(index, kind)["default_samplerate"])


# ---- timestamps ----------------------------------------------------------------------------


class SampleClock:
    """Monotonic time of each block's first sample, from when the callbacks ran.

    A callback runs after its block was captured, so ``arrival - samples_so_far / rate`` is
    an upper bound on when the stream's sample 0 was captured; the least of those over the
    last couple of seconds is tight and follows drift between the device and system clocks.
    Callback jitter (late or back-to-back callbacks) therefore does not reach the stamps.
    """

    def __init__(self, rate: int, window: int = CLOCK_WINDOW_BLOCKS) -> None:
        self.rate = rate
        self._count = 0
        self._offsets: collections.deque[float] = collections.deque(maxlen=window)
        self._last = float("-inf")

    def stamp(self, arrival_s: float, frames: int) -> float:
        """Time of the first sample of a block of ``frames`` that arrived at ``arrival_s``."""
        self._offsets.append(arrival_s - (self._count + frames) / self.rate)
        stamp = min(self._offsets) + self._count / self.rate
        stamp = max(stamp, self._last + 1e-6)  # strictly increasing, whatever the window did
        self._count += frames
        self._last = stamp
        return stamp


# ---- shared lifecycle ------------------------------------------------------------------------


class _StreamDevice:
    """What the microphone and the speaker share: one PortAudio stream, closed even if dead."""

    kind = "audio"
    _stream: Any

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
            stream.close()
        except Exception as e:  # a dead device may fail to close: it is gone anyway
            log.debug("closing the %s stream failed: %s", self.kind, e)

    def reopen(self) -> None:
        """Close and open again (after a :class:`DeviceError`); raises DeviceError if it can't."""
        self.close()
        self.open()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


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
        self._blocks: collections.deque[tuple[Int16, float]] = collections.deque()
        self._frames: collections.deque[AudioChunk] = collections.deque()
        self._pending: Int16 = np.zeros(0, dtype=np.int16)
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
            stream = sd.InputStream(
                device=index,
                samplerate=rate,
                channels=1,
                dtype="int16",
                blocksize=blocksize,
                latency="low",
                callback=self._callback,
                finished_callback=self._finished,
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
        self._pending = np.zeros(0, dtype=np.int16)

    # -- the PortAudio thread ----------------------------------------------------------------
    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        now = time.monotonic()
        block = indata[:, 0].copy()
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
        self._pending = np.zeros(0, dtype=np.int16)
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

    def _reframe(self, block: Int16, stamp: float) -> list[AudioChunk]:
        if self._resampler is not None:
            assert self.device_rate is not None
            # soxr holds back delay() output samples: the output ends that much before the input.
            end_s = stamp + len(block) / self.device_rate
            block = self._resampler.resample_chunk(block)
            stamp = end_s - (self._resampler.delay() + len(block)) / self.rate
        if len(block) == 0:
            return []
        # The newest block's stamp places what is still pending just before it.
        self._pending_s = stamp - len(self._pending) / self.rate
        self._pending = np.concatenate((self._pending, block)) if len(self._pending) else block
        n = self.frame_samples
        count = len(self._pending) // n
        frames = [
            AudioChunk(
                self._pending[i * n : (i + 1) * n].tobytes(),
                self.rate,
                timestamp_s=self._pending_s + i * n / self.rate,
            )
            for i in range(count)
        ]
        self._pending = self._pending[count * n :]
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


# ---- speaker -------------------------------------------------------------------------------


class Speaker(_StreamDevice):
    """One output stream, opened once and kept: ``play`` only queues samples.

    The callback copies queued samples into each 10 ms block and pads with silence, so
    :meth:`stop` takes effect within a block plus the device's latency. The stream runs at
    ``rate`` (the Piper voice's) when the device takes it, else at the device's own rate;
    audio at another rate is resampled with soxr in :meth:`play`.
    """

    kind = "speaker"

    def __init__(
        self, config: AudioConfig, *, device: str | None = None, rate: int = SPEAKER_RATE
    ) -> None:
        self.config = config
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

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        if self._stream is not None:
            return
        sd = _sounddevice()
        index = find_device(self.device, "output")
        rate = self._pick_rate(sd, index)
        try:
            stream = sd.OutputStream(
                device=index,
                samplerate=rate,
                channels=1,
                dtype="int16",
                blocksize=max(1, rate * SPEAKER_BLOCK_MS // 1000),
                latency=OUTPUT_LATENCY_S[self.config.output_latency],
                callback=self._callback,
                finished_callback=self._finished,
            )
        except sd.PortAudioError as e:
            raise DeviceError(
                f"cannot open {_describe(index, 'output')} at {rate} Hz as a speaker: {e}. "
                "Check audio.output_device (voice-assistant devices lists them)."
            ) from None
        self.rate = rate
        self.latency_s = float(stream.latency)
        self._failure = None
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
            self._chunks.append(samples)

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
            self._chunks.clear()
            self._head = 0
            self.last_output_s = min(self.last_output_s, time.monotonic() + self.latency_s)
            self._cond.notify_all()

    @property
    def playing(self) -> bool:
        with self._cond:
            return bool(self._chunks) or time.monotonic() < self.last_output_s

    @property
    def failure(self) -> str | None:
        """Why the open stream died (device unplugged, sound server gone), else None:
        :meth:`reopen` it."""
        stream = self._stream
        if stream is None:
            return None
        if self._failure is None and not stream.active:
            self._failure = "the speaker stream is no longer running"
        return self._failure

    def _check_alive(self) -> None:
        if self._stream is None:
            raise DeviceError("the speaker is not open")
        if self._failure is None and not self._stream.active:
            self._failure = "the speaker stream is no longer running"
        if self._failure is not None:
            raise DeviceError(f"{self._failure}; reopen the speaker")

    # -- the PortAudio thread ----------------------------------------------------------------
    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        out = outdata[:, 0]
        filled = 0
        with self._cond:
            if status.output_underflow:
                self.underflows += 1
            while filled < frames and self._chunks:
                head = self._chunks[0]
                take = min(len(head) - self._head, frames - filled)
                out[filled : filled + take] = head[self._head : self._head + take]
                filled += take
                self._head += take
                if self._head == len(head):
                    self._chunks.popleft()
                    self._head = 0
            if filled:
                assert self.rate is not None
                self.played_samples += filled
                self.last_output_s = time.monotonic() + self.latency_s + filled / self.rate
                if not self._chunks:
                    self._cond.notify_all()
        out[filled:] = 0

    def _finished(self) -> None:
        with self._cond:
            if self._stream is not None:
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

    @property
    def playing(self) -> bool:
        return self.speaker.playing

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
