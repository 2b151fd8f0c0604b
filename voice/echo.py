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
RESIDUE_DB = 20.0  # a frame the canceller took this much out of held echo ...
RESIDUE_DBFS = -60.0  # ... and what is left under this level is its residue: silence it
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


def power(samples: Int16) -> float:
    """Mean square of int16 samples, as a fraction of full scale squared."""
    x = samples.astype(np.float64) / 32768.0
    return float(np.mean(x * x)) if len(x) else 0.0


def db(p: float) -> float:
    return float(10 * np.log10(max(p, 1e-12)))


def without_residue(heard: Int16, left: Int16) -> Int16:
    """``left``, the canceller's output for the microphone frame ``heard``; silence when it
    is the faint residue of an echo: the canceller took :data:`RESIDUE_DB` or more out of
    the frame and less than :data:`RESIDUE_DBFS` is left.

    That residue (-70 to -90 dBFS in the loopback rig) is shaped like speech, and webrtcvad
    calls it speech whatever its level. A voice over the reply is louder than that, even
    where the canceller turns it down while it decides that two are talking.
    """
    if db(power(left)) < RESIDUE_DBFS and db(power(heard)) - db(power(left)) >= RESIDUE_DB:
        return np.zeros_like(left)
    return left


def erle_db(before: Int16, after: Int16) -> float:
    """Echo return loss enhancement: how much quieter ``after`` is than ``before``, in dB."""
    power_in = float(np.mean(before.astype(np.float64) ** 2))
    power_out = float(np.mean(after.astype(np.float64) ** 2))
    return float(10 * np.log10((power_in + 1e-9) / (power_out + 1e-9)))


# ---- has it learnt the room? ---------------------------------------------------------------

FAR_ACTIVE_DBFS = -50.0  # a played frame louder than this makes an echo worth judging
WINDOW_FRAMES = 50  # judge the canceller on 0.5 s of played sound at a time ...
LEARNT_WINDOWS = 4  # ... and trust it after this many good windows in a row
LEARNT_ERLE_DB = 30.0  # a good window: the echo is this much quieter after the canceller


class EchoMonitor:
    """Whether the canceller removes the echo yet: until then the loop stays half-duplex.

    WebRTC's canceller needs a few seconds of played sound to learn a new echo path, and
    meanwhile the echo comes through (in the loopback rig, 2-15 dB removed in the first
    two seconds of the first reply, 35-70 dB after three), loud enough to start turns and
    stop replies. So over each 0.5 s of played sound the microphone before the canceller is
    compared with what is left after it; :data:`LEARNT_WINDOWS` windows in a row with at
    least :data:`LEARNT_ERLE_DB` removed, and the room is learnt (one good window is not
    enough: the canceller can suppress hard at the very start, then leak). It stays learnt
    until :meth:`reset` (a reopened stream). Speech over a reply, or a room where the echo
    is never removed well (a headset, where ``turn.barge_in`` is the setting to use), only
    keeps it half-duplex: the failure mode is the old behaviour, never hearing itself.
    """

    def __init__(self, window_frames: int = WINDOW_FRAMES, windows: int = LEARNT_WINDOWS) -> None:
        self.window_frames = window_frames
        self.windows = windows
        self.learnt = False
        self.erle_db: float | None = None  # of the last window judged
        self.reset()

    def reset(self) -> None:
        self.learnt = False
        self._good = 0
        self._frames = 0
        self._heard = 0.0
        self._left = 0.0

    def update(self, heard: Int16, left: Int16, played: Int16) -> bool:
        """One frame: the microphone before and after the canceller, and what was played
        in the same callbacks. True when this frame made the room learnt."""
        if self.learnt or db(power(played)) <= FAR_ACTIVE_DBFS:
            return False
        self._frames += 1
        self._heard += power(heard)
        self._left += power(left)
        if self._frames < self.window_frames:
            return False
        self.erle_db = db(self._heard) - db(self._left)
        self._good = self._good + 1 if self.erle_db >= LEARNT_ERLE_DB else 0
        self._frames, self._heard, self._left = 0, 0.0, 0.0
        self.learnt = self._good >= self.windows
        return self.learnt
