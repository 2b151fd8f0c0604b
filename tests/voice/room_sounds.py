"""Sounds of a room that are not a request: noise, music-like tones, and real speech.

Generated in code (seeded, so every run hears the same), plus the real recordings from
``../shared/audio`` varied in level and speed. Shared by the wake word and Silero tests and by
bench/bench_wake.py. All float32 mono at 16 kHz.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import soxr

from tests.voice.audio_util import RATE, load_16k, real_references, shared

FloatAudio = npt.NDArray[np.float32]

# A, C, D, E, G across two octaves: melodies and chords that sound like music, not speech.
NOTES_HZ = [220.0 * 2 ** (n / 12) for n in (0, 3, 5, 7, 10, 12, 15, 17, 19, 22)]


def _level(audio: npt.NDArray[np.float64], dbfs: float) -> FloatAudio:
    rms = float(np.sqrt(np.mean(audio * audio))) or 1.0
    return (audio * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def _colored(rng: np.random.Generator, n: int, exponent: float) -> npt.NDArray[np.float64]:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def noise(kind: str, seconds: float, dbfs: float, seed: int = 0) -> FloatAudio:
    """``white``, ``pink``, ``brown``, ``fan`` (hum and a whoosh) or ``keys`` (typing)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    if kind in ("white", "pink", "brown"):
        audio = _colored(rng, n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    elif kind == "fan":
        hum = sum(np.sin(2 * math.pi * 50 * k * t) / k for k in (1, 2, 3, 4))
        whoosh = _colored(rng, n, 1.5) * (1 + 0.3 * np.sin(2 * math.pi * 0.7 * t))
        audio = hum / 4 + whoosh / np.std(whoosh)
    elif kind == "keys":
        audio = rng.standard_normal(n) * 0.02
        for start in np.cumsum(rng.uniform(0.08, 0.3, size=int(seconds * 8))):
            i = int(start * RATE)
            if i >= n - 400:
                break
            click = rng.standard_normal(400) * np.exp(-np.arange(400) / 40)
            audio[i : i + 400] += click
    else:
        raise ValueError(f"unknown noise {kind!r}")
    return _level(audio, dbfs)


def _note(hz: float, seconds: float, harmonics: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    vibrato = 1 + 0.004 * np.sin(2 * math.pi * rng.uniform(4, 6) * t)
    phase = 2 * math.pi * hz * np.cumsum(vibrato) / RATE
    tone = sum(np.sin(k * phase) / k**1.2 for k in range(1, harmonics + 1))
    attack = np.minimum(1.0, t / 0.02)
    release = np.minimum(1.0, (t[-1] - t) / 0.05 + 1e-3)
    return tone * attack * release * np.exp(-t * rng.uniform(0.5, 3))


def music(kind: str, seconds: float, dbfs: float, seed: int = 0) -> FloatAudio:
    """Music-like tones: ``melody`` (one voice, notes of 150-500 ms), ``chords`` (three
    voices with harmonics), ``drums`` (noise bursts on a beat) or ``band`` (all three)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros(n)
    if kind == "band":
        for i, part in enumerate(("melody", "chords", "drums")):
            out += music(part, seconds, dbfs - 3, seed + i).astype(np.float64)
        return _level(out, dbfs)
    pos = 0
    while pos < n:
        if kind == "melody":
            length = rng.uniform(0.15, 0.5)
            sound = _note(rng.choice(NOTES_HZ), length, 3, rng)
        elif kind == "chords":
            length = rng.uniform(0.8, 2.0)
            root = int(rng.integers(0, 5))
            sound = sum(_note(NOTES_HZ[root + k], length, 6, rng) for k in (0, 2, 4))
        elif kind == "drums":
            length = 60 / rng.choice([90, 110, 128]) / 2
            m = int(length * RATE)
            sound = rng.standard_normal(m) * np.exp(-np.arange(m) / (RATE * 0.04))
        else:
            raise ValueError(f"unknown music {kind!r}")
        m = min(len(sound), n - pos)
        out[pos : pos + m] += sound[:m]
        pos += int(length * RATE)
    return _level(out, dbfs)


def real_speech() -> list[tuple[str, FloatAudio]]:
    """Every real recording in ../shared/audio (no wake word in any of them)."""
    clips = [(name, load_16k(shared(f"real/{name}.wav"))) for name in real_references()]
    clips += [(name, load_16k(shared(name))) for name in ("jfk.flac", "digits.wav")]
    return clips


def varied(audio: FloatAudio, *, speed: float, dbfs: float) -> FloatAudio:
    """``audio`` played ``speed`` times faster (pitch moves with it, like a tape) at a level."""
    if speed != 1.0:
        audio = np.asarray(soxr.resample(audio, RATE * speed, RATE), dtype=np.float32)
    return _level(audio.astype(np.float64), dbfs)


def not_a_request(minutes: float, seed: int = 0) -> Iterator[tuple[str, FloatAudio]]:
    """About ``minutes`` of room sound with no wake word: a third noise, a third music-like
    tones, a third real speech (looped, at varied speeds and levels), with quiet between."""
    rng = np.random.default_rng(seed)
    speech = real_speech()
    total = 0.0
    part = 0
    while total < minutes * 60:
        kind = part % 3
        if kind == 0:
            name = str(rng.choice(["white", "pink", "brown", "fan", "keys"]))
            level = float(rng.uniform(-50, -25))
            audio = noise(name, float(rng.uniform(5, 15)), level, seed + part)
        elif kind == 1:
            name = str(rng.choice(["melody", "chords", "drums", "band"]))
            level = float(rng.uniform(-40, -20))
            audio = music(name, float(rng.uniform(5, 15)), level, seed + part)
        else:
            clip_name, clip = speech[int(rng.integers(len(speech)))]
            speed = float(rng.choice([0.9, 1.0, 1.1]))
            level = float(rng.uniform(-35, -20))
            name, audio = clip_name, varied(clip, speed=speed, dbfs=level)
        yield f"{name} {level:.0f} dBFS", audio
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * RATE), dtype=np.float32)
        yield "quiet", gap
        total += (len(audio) + len(gap)) / RATE
        part += 1
