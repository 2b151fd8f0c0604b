"""What the microphone and the speaker share: the device table, the protocols the loop
uses, the sample clock and the stream lifecycle."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any, Literal, Protocol, Self

import numpy as np
import numpy.typing as npt

from core.errors import DeviceError
from voice.audio import AudioChunk

log = logging.getLogger(__name__)

Int16 = npt.NDArray[np.int16]
Kind = Literal["input", "output"]

MIC_RATE = 16000  # what the VAD and Whisper want
SPEAKER_RATE = 22050  # the Piper voice and the earcons: played without resampling
# One callback's worth: stop() takes effect within this. 10 ms doubled the idle wake-ups.
SPEAKER_BLOCK_MS = 20
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
        """Stop now and drop everything queued (a pause ends with it)."""
        ...

    def pause(self) -> None:
        """Fall silent now, keeping what is queued (still ``playing``) until :meth:`resume`."""
        ...

    def resume(self) -> None:
        """Play on from where :meth:`pause` stopped."""
        ...

    @property
    def playing(self) -> bool: ...

    @property
    def sounding(self) -> bool:
        """Sound is coming out: ``playing`` and not paused (a paused reply is silent, so a
        half-duplex microphone need not be gated for it)."""
        ...


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
    flag = "--device" if kind == "input" else "--output-device"
    raise DeviceError(
        f"{problem}. Set audio.{kind}_device in config.toml (or {flag}) to a name or "
        f'index from this list (or "" for the default):\n{list_devices()}'
    )


def _describe(index: int | None, kind: Kind) -> str:
    return "the default " + kind + " device" if index is None else f"audio device #{index}"


def _native_rate(sd: ModuleType, index: int | None, kind: Kind) -> int:
    try:
        return int(sd.query_devices(index, kind)["default_samplerate"])
    except sd.PortAudioError as e:  # no default device of that kind, or it went away
        raise DeviceError(
            f"cannot use {_describe(index, kind)} ({e}). Audio devices found:\n{list_devices()}"
        ) from None


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
    _opened = 0  # streams opened so far

    def open(self) -> None:
        raise NotImplementedError

    def _finished(self) -> None:
        raise NotImplementedError

    def _finished_callback(self) -> Callable[[], None]:
        """The finished callback for the stream about to be opened. It answers for that stream
        only: after a reopen, PortAudio can call the closed stream's callback once the new
        one is open, which would take the new stream for dead and reopen it again."""
        self._opened += 1
        opened = self._opened

        def finished() -> None:
            if opened == self._opened:
                self._finished()

        return finished

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
