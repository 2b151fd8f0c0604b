"""Short sounds for state changes, generated in code (no audio files to ship).

Each earcon has a *signature frequency*: the strongest component of its spectrum, distinct
for every sound, so a recording of the speaker tells which earcon played and in what order
(the rig tests detect them this way):

=============  ============================================  ========  ==============
name           sound                                         length    signature
=============  ============================================  ========  ==============
listening      rising chime, 660 Hz then 880 Hz (longer)     150 ms    **880 Hz**
thinking       soft decaying tick, quiet (half the volume)   60 ms     **500 Hz**
done           falling chime, 1760 Hz then 1320 Hz (longer)  150 ms    **1320 Hz**
error          low buzz (300 Hz, 40 Hz tremolo), twice       300 ms    **300 Hz**
=============  ============================================  ========  ==============

All are pure tones (no harmonics that could land on another signature), shaped with
raised-cosine fades so they start and end at zero: no clicks.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from core.errors import ConfigError
from voice.config import EarconConfig

EarconName = Literal["listening", "thinking", "done", "error"]
EARCON_NAMES: tuple[EarconName, ...] = get_args(EarconName)

SIGNATURE_HZ: dict[EarconName, float] = {
    "listening": 880.0,
    "thinking": 500.0,
    "done": 1320.0,
    "error": 300.0,
}
DURATION_S: dict[EarconName, float] = {
    "listening": 0.150,
    "thinking": 0.060,
    "done": 0.150,
    "error": 0.300,
}

_FADE_S = 0.005  # long enough to avoid a click, short enough to keep the attack crisp
_FIRST_NOTE_GAIN = 0.6  # the leading note of a chime is quieter: the signature note dominates
_THINKING_GAIN = 0.5  # the thinking tick repeats while the agent works: keep it unobtrusive

Float = npt.NDArray[np.float64]


def _faded(signal: Float, rate: int, fade_s: float = _FADE_S) -> Float:
    """Raised-cosine fade in and out, so the sound starts and ends at exactly zero."""
    n = min(int(fade_s * rate), len(signal) // 2)
    if n == 0:
        return signal
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, n))
    out = signal.copy()
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def _tone(freq: float, seconds: float, rate: int) -> Float:
    t = np.arange(round(seconds * rate)) / rate
    return np.sin(2 * math.pi * freq * t)


def _chime_note(freq: float, seconds: float, rate: int) -> Float:
    """A bell-like note: quick attack, exponential decay to a third, faded out."""
    tone = _tone(freq, seconds, rate)
    decay = np.exp(-np.linspace(0.0, math.log(3.0), len(tone)))
    return _faded(tone * decay, rate)


def _chime(first_hz: float, second_hz: float, rate: int) -> Float:
    # One third / two thirds: the longer second note carries the signature frequency.
    return np.concatenate(
        [
            _FIRST_NOTE_GAIN * _chime_note(first_hz, 0.050, rate),
            _chime_note(second_hz, 0.100, rate),
        ]
    )


def _tick(rate: int) -> Float:
    tone = _tone(SIGNATURE_HZ["thinking"], DURATION_S["thinking"], rate)
    decay = np.exp(-np.linspace(0.0, 4.0, len(tone)))
    return _THINKING_GAIN * _faded(tone * decay, rate)


def _buzz(rate: int) -> Float:
    """Two 120 ms pulses of a rough low tone, 60 ms apart."""
    pulse = _tone(SIGNATURE_HZ["error"], 0.120, rate)
    t = np.arange(len(pulse)) / rate
    tremolo = 0.75 + 0.25 * np.cos(2 * math.pi * 40.0 * t)  # roughness without harmonics
    pulse = _faded(pulse * tremolo, rate, fade_s=0.010)
    gap = np.zeros(round(0.060 * rate))
    return np.concatenate([pulse, gap, pulse])


def _render(name: EarconName, rate: int) -> Float:
    if name == "listening":
        return _chime(660.0, SIGNATURE_HZ["listening"], rate)
    if name == "done":
        return _chime(1760.0, SIGNATURE_HZ["done"], rate)
    if name == "thinking":
        return _tick(rate)
    return _buzz(rate)


class Earcons:
    """The four earcons rendered once at ``sample_rate`` and ``config.volume``."""

    def __init__(self, config: EarconConfig, sample_rate: int) -> None:
        if sample_rate < 4 * max(SIGNATURE_HZ.values()):
            raise ConfigError(f"sample rate {sample_rate} Hz is too low for the earcons")
        self.sample_rate = sample_rate
        self._config = config
        self._sounds = {name: self._pcm(name) for name in EARCON_NAMES}

    def _pcm(self, name: EarconName) -> npt.NDArray[np.int16]:
        samples = _render(name, self.sample_rate) * (self._config.volume * 32767.0)
        pcm = np.round(samples).astype(np.int16)
        pcm.flags.writeable = False  # shared by every caller
        return pcm

    def enabled(self, name: EarconName) -> bool:
        return self._config.enabled and bool(getattr(self._config, name))

    def get(self, name: EarconName) -> npt.NDArray[np.int16] | None:
        """Mono int16 samples, or None when this sound (or all earcons) is switched off."""
        if name not in self._sounds:
            raise ValueError(f"unknown earcon {name!r}; expected one of {', '.join(EARCON_NAMES)}")
        return self._sounds[name] if self.enabled(name) else None
