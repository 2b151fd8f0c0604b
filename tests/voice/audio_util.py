"""Test audio: the shared recordings at 16 kHz, generated silence, noise and speech, and WER."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from voice.audio import AudioChunk, float_to_pcm
from voice.tts import PiperSynthesizer

RATE = 16000
SHARED_AUDIO = Path(__file__).resolve().parents[2] / ".." / "shared" / "audio"

FloatAudio = npt.NDArray[np.float32]


def shared(name: str) -> Path:
    """A file from ../shared/audio; fails loudly (never skips) when the recordings are missing."""
    path = (SHARED_AUDIO / name).resolve()
    assert path.is_file(), f"missing shared recording {path}"
    return path


def load_16k(path: Path) -> FloatAudio:
    """Any sound file as mono float32 at 16 kHz (soxr's high-quality resampler)."""
    import soundfile
    import soxr

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


def reference(name: str) -> str:
    """The transcript beside a shared recording (jfk.flac -> jfk.txt)."""
    return shared(name).with_suffix(".txt").read_text().strip()


def real_references() -> dict[str, str]:
    """``../shared/audio/real/transcripts.psv``: clip name -> reference words (real voices)."""
    lines = shared("real/transcripts.psv").read_text().splitlines()
    return dict(line.split("|", 1) for line in lines if "|" in line)


def real_clip(name: str, *, trim: bool = True) -> FloatAudio:
    """A real recording from ``../shared/audio/real``; ``trim``: without leading and trailing
    silence (10 ms frames under -45 dBFS), so joins and pauses are exactly as built."""
    audio = load_16k(shared(f"real/{name}.wav"))
    if not trim:
        return audio
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (-45 / 20))
    return audio[loud[0] * 160 : (loud[-1] + 1) * 160] if loud.size else audio[:0]


def to_int16(audio: FloatAudio) -> npt.NDArray[np.int16]:
    """Float audio as int16 samples (what the rig plays)."""
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def silence(seconds: float) -> FloatAudio:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def white_noise(seconds: float, dbfs: float, seed: int = 0) -> FloatAudio:
    """Gaussian white noise with the given RMS level."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(int(seconds * RATE))
    return (noise * 10 ** (dbfs / 20)).astype(np.float32)


def chunks(audio: FloatAudio, chunk_ms: int, start_s: float = 0.0) -> Iterator[AudioChunk]:
    """Float audio as int16 AudioChunks of ``chunk_ms``, stamped with times from ``start_s``."""
    return pcm_chunks(float_to_pcm(audio), chunk_ms, start_s)


def pcm_chunks(pcm: bytes, chunk_ms: int, start_s: float = 0.0) -> Iterator[AudioChunk]:
    """Slice int16 PCM into AudioChunks of ``chunk_ms`` stamped with their time."""
    step = RATE * chunk_ms // 1000 * 2
    for offset in range(0, len(pcm), step):
        yield AudioChunk(pcm[offset : offset + step], RATE, timestamp_s=start_s + offset / 2 / RATE)


_UNITS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORDS = {
    **{word: str(n) for n, word in enumerate(_UNITS)},
    **{word: str(n + 10) for n, word in enumerate(_TEENS)},
    **{word: str(n * 10 + 20) for n, word in enumerate(_TENS)},
    "oh": "0",
}


def normalise(text: str) -> list[str]:
    """Words for WER: lowercase, no punctuation, numbers as one token per digit.

    Whisper writes "one zero zero zero one" as "1,0001" or "10001" and "ten minutes" as
    "10 minutes"; both sides become digits ("1 0 0 0 1", "1 0 minutes"), "oh" read as zero.
    """
    words = re.sub(r"[^\w\s']", "", text.lower().replace("-", " ")).split()
    out: list[str] = []
    for word in words:
        spelt = _NUMBER_WORDS.get(word, word)
        out.extend(list(spelt) if spelt.isdigit() else [spelt])
    return out


def word_errors(ref: str, hyp: str) -> int:
    """Words substituted, dropped or added in ``hyp`` against ``ref`` after :func:`normalise`."""
    r, h = normalise(ref), normalise(hyp)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[len(h)]


def wer(ref: str, hyp: str) -> float:
    """Word error rate of ``hyp`` against ``ref`` after :func:`normalise` (Levenshtein)."""
    return word_errors(ref, hyp) / max(len(normalise(ref)), 1)


def speech(tts: PiperSynthesizer, text: str) -> npt.NDArray[np.int16]:
    """``text`` spoken by the Piper voice, as 16 kHz int16 (what the rig's microphone takes)."""
    audio = tts.synthesize_all(text).astype(np.float32) / np.float32(32768)
    return to_int16(soxr.resample(audio, tts.sample_rate, RATE))  # clipped: no wrap-around


def word_alone(tts: PiperSynthesizer, text: str) -> tuple[npt.NDArray[np.int16], float]:
    """The words with no silence after them, and where their sound ends (-45 dBFS)."""
    audio = speech(tts, text)
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160).astype(np.float64) / 32768
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (-45 / 20))
    end = (int(loud[-1]) + 1) * 160
    return audio[:end], end / RATE


def speech_spans(
    audio: FloatAudio, *, margin_db: float = 12.0, min_speech_ms: int = 50
) -> list[tuple[int, int]]:
    """Where a recording has speech, by a plain energy scan: (start, end) sample ranges.

    10 ms frames louder than the recording's noise floor (its 5th-percentile frame) by
    ``margin_db`` are speech; bursts shorter than ``min_speech_ms`` (clicks, breath) are not.
    The gaps between spans are the pauses between words; no VAD hangover hides the short ones.
    """
    step = RATE // 100
    frames = audio[: len(audio) // step * step].reshape(-1, step).astype(np.float64)
    level = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    loud = level > np.percentile(level, 5) + margin_db
    spans: list[tuple[int, int]] = []
    start = None
    for i, is_loud in enumerate([*loud, False]):
        if is_loud and start is None:
            start = i
        elif not is_loud and start is not None:
            if (i - start) * 10 >= min_speech_ms:
                spans.append((start * step, i * step))
            start = None
    return spans


def loud_frames(audio: FloatAudio, dbfs: float = -40.0) -> npt.NDArray[np.bool_]:
    """Which 10 ms frames of ``audio`` are at least ``dbfs`` loud (a word, in a trimmed
    recording); the last partial frame is left out."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    return np.asarray(np.sqrt(np.mean(frames**2, axis=1)) >= 10 ** (dbfs / 20))


def word_gaps(audio: FloatAudio, *, min_ms: int = 40, edge_ms: int = 300) -> list[tuple[int, int]]:
    """Quiet stretches (10 ms frames under -40 dBFS, at least ``min_ms``) between the words of
    a trimmed recording, at least ``edge_ms`` from either end: where a reader could stop."""
    quiet = ~loud_frames(audio)
    edge = edge_ms // 10
    gaps, start = [], None
    for i, q in enumerate([*quiet, False]):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if (i - start) * 10 >= min_ms and start > edge and i < len(quiet) - edge:
                gaps.append((start * 160, i * 160))
            start = None
    return gaps


def pauses_between(spans: list[tuple[int, int]], min_ms: int) -> list[tuple[int, int]]:
    """The gaps of at least ``min_ms`` between consecutive speech spans, as sample ranges."""
    return [
        (end, start)
        for (_, end), (start, _) in itertools.pairwise(spans)
        if start - end >= RATE * min_ms // 1000
    ]
