"""Echo cancellation: the microphone without what the speaker played.

The canceller is WebRTC's audio processing module (AEC3) as the ``livekit`` package ships it:
a native library that runs offline, with no server. It takes the near end (the microphone)
and the far end (the exact samples played) in 10 ms frames at 16 kHz, and learns the echo
path between them, delay included (up to about half a second), by itself.

:class:`EchoFrames` cuts the two streams into those frames and keeps them paired: frame *k*
of the microphone goes in together with frame *k* of what was played, both from the same
full-duplex callbacks (:class:`voice.devices.duplex.DuplexDevice`), so they share one clock
and the echo always comes after its reference, by the stream's latency plus the room.

``audio.echo_cancel``: "off", "on" (a missing library is an error) or "auto" (on when the
library loads; otherwise the microphone is gated while the assistant speaks, as before).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from core.errors import ConfigError

log = logging.getLogger(__name__)

Int16 = npt.NDArray[np.int16]
EchoMode = Literal["auto", "on", "off"]

RATE = 16000  # the canceller runs at the rate the VAD and Whisper want
FRAME_MS = 10  # WebRTC's processing unit
FRAME = RATE * FRAME_MS // 1000
MAX_DELAY_MS = 500  # the most WebRTC accepts as a stream delay hint
HALF_DUPLEX = "the microphone is muted while the assistant speaks"


class EchoCancelUnavailable(Exception):
    """The echo cancellation library is missing or does not load."""


class EchoCanceller(Protocol):
    """Removes the echo of ``far`` from ``near``: one :data:`FRAME` of each, int16 at
    :data:`RATE`, frame *k* of what was played with frame *k* of what was captured."""

    def process(self, near: Int16, far: Int16) -> Int16: ...

    def set_delay_ms(self, delay_ms: int) -> None:
        """How long after it is handed over a played frame is heard, at least (a hint)."""
        ...


class EchoState(Protocol):
    """An echo-cancelled microphone, as the loop sees it."""

    @property
    def echo_learnt(self) -> bool:
        """True once the echo is reliably removed: the loop then gates nothing."""
        ...


class WebRtcCanceller:
    """WebRTC AEC3 (with its high-pass filter) through ``livekit.rtc.AudioProcessingModule``."""

    def __init__(self) -> None:
        rtc = _livekit()
        try:
            self._apm = rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
        except Exception as e:  # the native library failed to load or start
            raise EchoCancelUnavailable(f"the WebRTC audio processing module failed: {e}") from e
        self._frame = rtc.AudioFrame
        self._delay_ms = 0

    def set_delay_ms(self, delay_ms: int) -> None:
        self._delay_ms = min(max(0, delay_ms), MAX_DELAY_MS)

    def process(self, near: Int16, far: Int16) -> Int16:
        if len(near) != FRAME or len(far) != FRAME:
            raise ValueError(f"the canceller takes {FRAME}-sample frames")
        self._apm.process_reverse_stream(self._frame(far.tobytes(), RATE, 1, FRAME))
        frame = self._frame(bytearray(near.tobytes()), RATE, 1, FRAME)
        self._apm.set_stream_delay_ms(self._delay_ms)  # WebRTC wants it before every frame
        self._apm.process_stream(frame)  # in place
        return np.frombuffer(frame.data, dtype=np.int16).copy()


def _livekit() -> ModuleType:
    try:
        from livekit import rtc
    except ImportError as e:
        raise EchoCancelUnavailable(f"the livekit package is not installed ({e})") from e
    except OSError as e:  # its native library does not load on this machine
        raise EchoCancelUnavailable(f"livekit's native library does not load ({e})") from e
    module: ModuleType = rtc
    return module


def load_canceller(
    mode: EchoMode, factory: Callable[[], EchoCanceller] = WebRtcCanceller
) -> EchoCanceller | None:
    """The canceller ``mode`` asks for (made by ``factory``), or None for half-duplex.

    "auto" logs one line and returns None when the library is missing; "on" raises
    :class:`ConfigError` instead.
    """
    if mode == "off":
        log.info("echo cancellation off (audio.echo_cancel): %s", HALF_DUPLEX)
        return None
    try:
        return factory()
    except EchoCancelUnavailable as e:
        if mode == "on":
            raise ConfigError(
                f'audio.echo_cancel = "on" but {e}. Install it (pip install livekit), '
                'or set audio.echo_cancel = "auto" to go on without it'
            ) from None
        log.info("echo cancellation off: %s; %s", e, HALF_DUPLEX)
        return None


# ---- frame alignment -----------------------------------------------------------------------


@dataclass(frozen=True)
class EchoFrame:
    """One canceller frame: what was captured, what was played in the same callbacks, and
    the monotonic time of the captured frame's first sample."""

    near: Int16
    far: Int16
    start_s: float


class EchoFrames:
    """Cuts the captured and the played streams into paired :data:`FRAME`-sample frames.

    Both streams arrive in blocks of any length (resampled callback blocks); the captured
    block carries the time of its first sample. A frame is paired only when both streams
    have it, so frame *k* of one always meets frame *k* of the other, whatever the block
    sizes did.
    """

    def __init__(self, frame: int = FRAME, rate: int = RATE) -> None:
        self.frame = frame
        self.rate = rate
        self._near: Int16 = np.zeros(0, np.int16)
        self._far: Int16 = np.zeros(0, np.int16)
        self._near_start_s = 0.0  # time of self._near[0]

    def push(self, near: Int16, far: Int16, near_start_s: float) -> list[EchoFrame]:
        """Add a block of each stream; ``near_start_s`` is the time of ``near[0]``."""
        if len(near):
            # The newest block's stamp places what is still pending just before it.
            self._near_start_s = near_start_s - len(self._near) / self.rate
            self._near = np.concatenate((self._near, near))
        if len(far):
            self._far = np.concatenate((self._far, far))
        count = min(len(self._near), len(self._far)) // self.frame
        n = self.frame
        frames = [
            EchoFrame(
                self._near[i * n : (i + 1) * n],
                self._far[i * n : (i + 1) * n],
                self._near_start_s + i * n / self.rate,
            )
            for i in range(count)
        ]
        self._near, self._far = self._near[count * n :], self._far[count * n :]
        self._near_start_s += count * n / self.rate
        return frames

    def clear(self) -> None:
        self._near = np.zeros(0, np.int16)
        self._far = np.zeros(0, np.int16)
