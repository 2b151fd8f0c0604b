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
library loads; otherwise the microphone is gated while the assistant speaks, as before; off
with ``turn.barge_in``, which says the microphone hears no echo).

AEC3 never lets the reply through, and for that it silences the microphone for the first
300-700 ms of a voice said over the reply (in the loopback rig: a voice at -15 dBFS left at
-90) while it decides that two are talking: "he might even have been made amiable himself"
reached Whisper as "and have been made amiable himself". So the words get their own
canceller, :class:`SpeexCanceller`: speexdsp's linear filter, with no suppressor, takes 6-25
dB of the echo away and keeps every bit of the voice. AEC3's output is what the loop listens
to (speech detection, barge-in, the wake word); the linear one is what Whisper hears
(``AudioChunk.words``) while :class:`voice.echo_guard.LinearMonitor` says it has learnt the
echo path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
SPEEX_TAIL_MS = 300  # the echo path speexdsp's filter spans, after the delay hint
SPEEX_DELAY_MARGIN_MS = 40  # the echo may come this much sooner than the hint says
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
    def hears_over_reply(self) -> bool:
        """True while a voice over the reply can be told from its echo (the canceller has
        learnt the room, or found where an underrun moved it): the loop then gates nothing."""
        ...

    @property
    def words_whole(self) -> bool:
        """True while Whisper hears a voice over the reply whole (the linear canceller has
        learnt the echo path); False: it hears AEC3, which silences the voice's start."""
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


class SpeexCanceller:
    """speexdsp's echo canceller (libspeexdsp, the Xiph library Debian ships) through ctypes.

    Linear by default: it subtracts its estimate of the echo and never turns the voice down,
    so a voice over the reply keeps its first words (see the module's docstring), at the cost
    of a residue 6-25 dB under the echo. ``suppress_residue`` adds speexdsp's residual echo
    suppressor (the benchmark's comparison with AEC3). The filter spans
    :data:`SPEEX_TAIL_MS` of echo path; the far end is delayed by the delay hint (less a
    margin), so the tail starts where the echo can.
    """

    SET_SAMPLING_RATE = 24
    SET_ECHO_STATE = 24  # speex_preprocess_ctl's own number for it

    def __init__(self, tail_ms: int = SPEEX_TAIL_MS, *, suppress_residue: bool = False) -> None:
        self._lib = _speexdsp()
        self._echo = self._lib.speex_echo_state_init(FRAME, tail_ms * RATE // 1000)
        if not self._echo:
            raise EchoCancelUnavailable("speexdsp could not make an echo canceller")
        rate = ctypes.c_int(RATE)
        if self._lib.speex_echo_ctl(self._echo, self.SET_SAMPLING_RATE, ctypes.byref(rate)):
            raise EchoCancelUnavailable("speexdsp refused the sampling rate")
        self._pre: int | None = None
        if suppress_residue:
            self._pre = self._lib.speex_preprocess_state_init(FRAME, RATE)
            if not self._pre:
                raise EchoCancelUnavailable("speexdsp could not make a residual echo suppressor")
            self._lib.speex_preprocess_ctl(
                self._pre, self.SET_ECHO_STATE, ctypes.c_void_p(self._echo)
            )
        self._far: Int16 = np.zeros(0, np.int16)  # played, waiting out the delay

    def set_delay_ms(self, delay_ms: int) -> None:
        """Where the echo is now: the filter starts afresh there (learnt at another delay,
        it would add echo rather than take it away)."""
        delay = max(0, min(delay_ms, MAX_DELAY_MS) - SPEEX_DELAY_MARGIN_MS) * RATE // 1000
        self._lib.speex_echo_state_reset(self._echo)
        self._far = np.zeros(delay, np.int16)

    def process(self, near: Int16, far: Int16) -> Int16:
        if len(near) != FRAME or len(far) != FRAME:
            raise ValueError(f"the canceller takes {FRAME}-sample frames")
        self._far = np.concatenate((self._far, np.asarray(far, dtype=np.int16)))
        delayed, self._far = np.ascontiguousarray(self._far[:FRAME]), self._far[FRAME:]
        near = np.ascontiguousarray(near, dtype=np.int16)
        out = np.zeros(FRAME, np.int16)
        self._lib.speex_echo_cancellation(
            self._echo, near.ctypes.data, delayed.ctypes.data, out.ctypes.data
        )
        if self._pre is not None:
            self._lib.speex_preprocess_run(self._pre, out.ctypes.data)
        return out

    def __del__(self) -> None:
        echo = getattr(self, "_echo", None)
        if echo:
            self._lib.speex_echo_state_destroy(echo)
        if getattr(self, "_pre", None):
            self._lib.speex_preprocess_state_destroy(self._pre)


def _speexdsp() -> ctypes.CDLL:
    name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise EchoCancelUnavailable(f"libspeexdsp does not load ({e})") from e
    voidp, integer = ctypes.c_void_p, ctypes.c_int
    lib.speex_echo_state_init.restype = voidp
    lib.speex_echo_state_init.argtypes = [integer, integer]
    lib.speex_echo_state_destroy.argtypes = [voidp]
    lib.speex_echo_state_reset.argtypes = [voidp]
    lib.speex_echo_cancellation.argtypes = [voidp] * 4
    lib.speex_echo_ctl.argtypes = [voidp, integer, voidp]
    lib.speex_preprocess_state_init.restype = voidp
    lib.speex_preprocess_state_init.argtypes = [integer, integer]
    lib.speex_preprocess_state_destroy.argtypes = [voidp]
    lib.speex_preprocess_ctl.argtypes = [voidp, integer, voidp]
    lib.speex_preprocess_run.argtypes = [voidp, voidp]
    return lib


def load_word_canceller(
    factory: Callable[[], EchoCanceller] = SpeexCanceller,
) -> EchoCanceller | None:
    """The linear canceller for the words (see the module's docstring), or None with one
    line in the log: Whisper then hears AEC3's output, as the loop does."""
    try:
        return factory()
    except EchoCancelUnavailable as e:
        log.info(
            "%s: words said over a reply are transcribed from AEC3's output, which can drop "
            "their first 300-700 ms (install libspeexdsp1)",
            e,
        )
        return None


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
    mode: EchoMode,
    factory: Callable[[], EchoCanceller] = WebRtcCanceller,
    *,
    barge_in: bool = False,
) -> EchoCanceller | None:
    """The canceller ``mode`` asks for (made by ``factory``), or None: half-duplex, or
    with ``barge_in`` the plain microphone heard over the reply.

    "auto" logs one line and returns None when the library is missing; "on" raises
    :class:`ConfigError` instead. ``barge_in`` (``turn.barge_in``) says the microphone hears
    no echo (a headset, or the sound server's canceller), so "auto" is off: there AEC3 has
    no echo to learn and only holds back the first words said over a reply.
    """
    if mode == "off":
        why = "turn.barge_in: heard over the reply" if barge_in else HALF_DUPLEX
        log.info("echo cancellation off (audio.echo_cancel): %s", why)
        return None
    if mode == "auto" and barge_in:
        log.info(
            "echo cancellation off: turn.barge_in says the microphone hears no echo (a "
            'headset); audio.echo_cancel = "on" keeps it'
        )
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
