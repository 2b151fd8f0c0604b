"""Generated earcons: length, level, click-free edges, and a signature frequency each."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import numpy.typing as npt
import pytest

from core.errors import ConfigError
from voice.config import EarconConfig
from voice.earcons import DURATION_S, EARCON_NAMES, SIGNATURE_HZ, Earcons

ALL_ON = EarconConfig(
    enabled=True, volume=0.25, listening=True, thinking=True, done=True, error=True
)
RATES = (16000, 22050, 48000)


def dominant_frequency(samples: npt.NDArray[np.int16], rate: int) -> float:
    """The strongest frequency of a Hann-windowed, zero-padded spectrum (1 Hz-ish bins)."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    n = 1 << int(np.ceil(np.log2(rate)))
    spectrum = np.abs(np.fft.rfft(x, n))
    return float(np.fft.rfftfreq(n, 1 / rate)[int(np.argmax(spectrum))])


def band_share(samples: npt.NDArray[np.int16], rate: int, hz: float, width: float = 40) -> float:
    """Fraction of the sound's energy within ``width`` Hz of ``hz``."""
    power = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(power[np.abs(freqs - hz) <= width].sum() / power.sum())


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", EARCON_NAMES)
def test_each_earcon_has_its_length_level_and_clean_edges(name: str, rate: int) -> None:
    sound = Earcons(ALL_ON, rate).get(name)  # type: ignore[arg-type]
    assert sound is not None
    assert sound.dtype == np.int16 and sound.ndim == 1
    assert len(sound) / rate == pytest.approx(DURATION_S[name], abs=0.002)  # type: ignore[index]
    peak = int(np.abs(sound.astype(np.int32)).max())
    assert 0.3 * ALL_ON.volume * 32767 < peak <= ALL_ON.volume * 32767
    edge = max(1, rate // 2000)  # the first and last half millisecond
    assert np.abs(sound[:edge].astype(np.int32)).max() < 0.05 * peak
    assert np.abs(sound[-edge:].astype(np.int32)).max() < 0.05 * peak
    # No clicks anywhere: the largest step between samples stays that of a smooth sine.
    fastest = max(SIGNATURE_HZ.values()) * 1.4
    assert np.abs(np.diff(sound.astype(np.int32))).max() <= 2 * np.pi * fastest / rate * peak * 1.1


@pytest.mark.parametrize("rate", RATES)
def test_signature_frequencies_tell_the_earcons_apart(rate: int) -> None:
    earcons = Earcons(ALL_ON, rate)
    found = {}
    for name in EARCON_NAMES:
        sound = earcons.get(name)
        assert sound is not None
        found[name] = dominant_frequency(sound, rate)
        assert found[name] == pytest.approx(SIGNATURE_HZ[name], abs=8)
        assert band_share(sound, rate, SIGNATURE_HZ[name]) > 0.5
    signatures = sorted(found.values())
    assert min(b - a for a, b in itertools.pairwise(signatures)) > 150


def test_chimes_rise_for_listening_and_fall_for_done() -> None:
    rate = 22050
    earcons = Earcons(ALL_ON, rate)
    for name, rising in (("listening", True), ("done", False)):
        sound = earcons.get(name)  # type: ignore[arg-type]
        assert sound is not None
        third = len(sound) // 3
        first, last = (
            dominant_frequency(sound[:third], rate),
            dominant_frequency(sound[third:], rate),
        )
        assert (last > first) is rising, (name, first, last)


def test_the_error_buzz_is_two_pulses() -> None:
    rate = 16000
    sound = Earcons(ALL_ON, rate).get("error")
    assert sound is not None
    envelope = np.abs(sound.astype(np.float64)).reshape(-1, rate // 100).max(axis=1)  # 10 ms
    loud = envelope > 0.3 * envelope.max()
    starts = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    assert len(starts) + int(loud[0]) == 2
    assert not loud[len(loud) // 2]  # silence between the pulses


def test_volume_scales_the_sounds() -> None:
    quiet = Earcons(dataclasses.replace(ALL_ON, volume=0.05), 16000).get("listening")
    loud = Earcons(dataclasses.replace(ALL_ON, volume=0.5), 16000).get("listening")
    assert quiet is not None and loud is not None
    ratio = np.abs(loud.astype(np.int32)).max() / np.abs(quiet.astype(np.int32)).max()
    assert ratio == pytest.approx(10, rel=0.01)


def test_thinking_is_quieter_than_the_others() -> None:
    earcons = Earcons(ALL_ON, 16000)
    peaks: dict[str, int] = {}
    for name in EARCON_NAMES:
        sound = earcons.get(name)
        assert sound is not None
        peaks[name] = int(np.abs(sound.astype(np.int32)).max())
    assert all(peaks["thinking"] < 0.7 * peaks[n] for n in ("listening", "done", "error"))


def test_switched_off_sounds_are_none() -> None:
    some_off = dataclasses.replace(ALL_ON, done=False, thinking=False)
    earcons = Earcons(some_off, 16000)
    assert earcons.get("done") is None and earcons.get("thinking") is None
    assert earcons.get("listening") is not None and earcons.get("error") is not None
    all_off = Earcons(dataclasses.replace(ALL_ON, enabled=False), 16000)
    assert all(all_off.get(n) is None for n in EARCON_NAMES)


def test_sounds_are_shared_read_only() -> None:
    sound = Earcons(ALL_ON, 16000).get("listening")
    assert sound is not None
    with pytest.raises(ValueError):
        sound[0] = 1


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"earcons\.volume"):
        Earcons(dataclasses.replace(ALL_ON, volume=1.5), 16000)
    with pytest.raises(ConfigError, match="too low"):
        Earcons(ALL_ON, 4000)
    with pytest.raises(ValueError, match="unknown earcon"):
        Earcons(ALL_ON, 16000).get("beep")  # type: ignore[arg-type]
