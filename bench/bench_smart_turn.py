"""The smart-turn v3 end-of-turn model: cost per call, and pauses inside utterances vs their ends.

    python bench/bench_smart_turn.py [--runs 40] [--seeds 5] [--renderings 3]

1. Latency of one predict() on a full 8 s window (Whisper features + onnxruntime), 1 thread
   vs 2, interleaved; median and p90 of --runs calls after a warm-up; the features alone.
2. Real voices (../shared/audio/real): the pauses between words, found by an energy scan
   (tests/voice/audio_util.speech_spans: 10 ms frames 12 dB over the clip's noise floor).
   Every pause inside an utterance of at least 150 ms (and, for more samples, 100 ms) is
   scored on the audio up to 100 ms into the pause, the pause's own audio included, as the
   live loop would at its first pause. Each clip's true end is scored 100 ms and 300 ms after
   its last word. LibriVox read sentences and short commands (cards, goforward) apart.
3. Stability: the same points again with +-1 LSB of int16 noise (--seeds draws), what a real
   microphone adds anyway: the spread of the score, and how many verdicts at 0.5 flip.
4. Supplement, the project's own Piper voice (random prosody, --renderings each): unfinished
   vs finished requests. No conclusion should rest on this part alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.voice.audio_util when run as a plain script

from tests.voice.audio_util import (  # noqa: E402
    RATE,
    FloatAudio,
    load_16k,
    pauses_between,
    shared,
    speech,
    speech_spans,
)
from voice.config import TtsConfig  # noqa: E402
from voice.smart_turn import WINDOW_SAMPLES, SmartTurnModel  # noqa: E402
from voice.tts import PiperSynthesizer  # noqa: E402

THRESHOLDS = (0.5, 0.7, 0.9)
INTO_PAUSE_MS = 100
PAIRS = (
    ("Can you run the test suite and", "Can you run the test suite?"),
    ("Refactor the store so that", "Refactor the store so that the index is patched in place."),
    ("Set a timer for", "Set a timer for ten minutes."),
    ("Add milk, eggs and", "Add milk, eggs and bread to my list."),
    ("Open the file and then", "Open the file and then run the tests."),
    ("What is the weather", "What is the weather like in Paris?"),
)


@dataclass(frozen=True)
class Point:
    clip: str
    kind: str  # "pause" or "end"
    at_s: float  # where the audio stops
    pause_ms: int  # the pause's length (ends: how long after the last word)
    audio: FloatAudio


def ms(samples: int) -> int:
    return samples * 1000 // RATE


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def latency(runs: int) -> None:
    window = np.concatenate([load_16k(shared(f"real/librivox-{n}.wav")) for n in ("0870", "0880")])
    window = window[-WINDOW_SAMPLES:]
    started = time.perf_counter()
    models = {threads: SmartTurnModel(threads=threads) for threads in (1, 2)}
    print(f"models loaded in {time.perf_counter() - started:.2f} s (two sessions)")
    predict: dict[int, list[float]] = {t: [] for t in models}
    features: list[float] = []
    for model in models.values():
        model.warm_up()
    for _ in range(runs):
        for threads, model in models.items():
            t0 = time.perf_counter()
            model.predict(window)
            predict[threads].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        models[1].features(window)
        features.append((time.perf_counter() - t0) * 1000)
    print(f"\nlatency of one call on an 8 s window ({runs} runs, ms)")
    print(f"  {'':22}{'median':>8}{'p90':>8}")
    rows = {"features only": features}
    rows |= {f"predict, {t} thread{'s' if t > 1 else ''}": times for t, times in predict.items()}
    for name, times in rows.items():
        print(f"  {name:22}{statistics.median(times):>8.1f}{percentile(times, 90):>8.1f}")


def room_tone(audio: FloatAudio, first: int, want: int) -> FloatAudio:
    before = audio[: max(0, first - RATE // 20)]
    if before.size == 0:
        return np.zeros(want, dtype=np.float32)
    return np.resize(before, want).astype(np.float32)


def points(name: str, min_pause_ms: int) -> list[Point]:
    """Pauses inside the clip (audio up to 100 ms into each) and its end (+100 ms, +300 ms)."""
    audio = load_16k(shared(f"real/{name}.wav"))
    spans = speech_spans(audio)
    first, last = spans[0][0], spans[-1][1]
    into = RATE * INTO_PAUSE_MS // 1000
    found = [
        Point(name, "pause", (start + into) / RATE, ms(end - start), audio[: start + into])
        for start, end in pauses_between(spans, min_pause_ms)
    ]
    for after_ms in (100, 300):
        stop = last + RATE * after_ms // 1000
        tail = audio[last:stop]
        padded = np.concatenate([audio[:last], tail, room_tone(audio, first, stop - last)])
        found.append(Point(name, "end", stop / RATE, after_ms, padded[:stop]))
    return found


def dithered(audio: FloatAudio, seed: int) -> FloatAudio:
    noise = np.random.default_rng(seed).integers(-1, 2, audio.size).astype(np.float32) / 32768
    return (audio + noise).astype(np.float32)


def fractions(scores: list[float]) -> str:
    if not scores:
        return "     -" * len(THRESHOLDS)
    return "".join(f"{sum(s >= t for s in scores) / len(scores):>7.0%}" for t in THRESHOLDS)


def real_voices(model: SmartTurnModel, seeds: int) -> None:
    names = [line.split("|")[0] for line in shared("real/transcripts.psv").read_text().splitlines()]
    groups = {
        "LibriVox": [n for n in names if n.startswith("librivox")],
        "commands": [n for n in names if not n.startswith("librivox")],
    }
    print(f"\nreal voices: score at {INTO_PAUSE_MS} ms into each pause >= 100 ms, and at the end")
    scored: dict[str, list[tuple[Point, float, list[float]]]] = {}
    for group, clips in groups.items():
        scored[group] = []
        for name in clips:
            row = []
            for point in points(name, 100):
                score = model.predict(point.audio)
                jitter = [model.predict(dithered(point.audio, seed)) for seed in range(seeds)]
                scored[group].append((point, score, jitter))
                label = f"{point.at_s:.2f}s/{point.pause_ms}ms" if point.kind == "pause" else ""
                label = label or f"END+{point.pause_ms}"
                row.append(f"{label} {score:.2f}")
            print(f"  {name:15} " + "  ".join(row))

    print(f"\nfraction called complete{'':24}{'n':>4}" + "".join(f"{t:>7}" for t in THRESHOLDS))
    for group, rows in scored.items():
        lines = {
            "pauses >= 150 ms, +100 ms": [
                s for p, s, _ in rows if p.kind == "pause" and p.pause_ms >= 150
            ],
            "pauses >= 100 ms, +100 ms": [s for p, s, _ in rows if p.kind == "pause"],
            "true ends, +100 ms": [s for p, s, _ in rows if p.kind == "end" and p.pause_ms == 100],
            "true ends, +300 ms": [s for p, s, _ in rows if p.kind == "end" and p.pause_ms == 300],
        }
        for what, scores in lines.items():
            print(f"  {group + ' ' + what:46}{len(scores):>4}{fractions(scores)}")

    everything = [(s, j) for rows in scored.values() for _, s, j in rows]
    spreads = [max([s, *j]) - min([s, *j]) for s, j in everything]
    flips = sum(len({v >= 0.5 for v in [s, *j]}) > 1 for s, j in everything)
    print(
        f"\nstability under +-1 LSB dither ({seeds} draws per point, {len(everything)} points): "
        f"spread median {statistics.median(spreads):.3f}, p90 {percentile(spreads, 90):.3f}, "
        f"max {max(spreads):.3f}; verdict at 0.5 flips on {flips} of {len(everything)}"
    )


def own_voice(model: SmartTurnModel, renderings: int) -> None:
    tts = PiperSynthesizer(TtsConfig())
    print(f"\nown Piper voice (supplement): median of {renderings} renderings [all]")
    for unfinished, finished in PAIRS:
        cells = []
        for text in (unfinished, finished):
            scores = [
                model.predict(speech(tts, text).astype(np.float32) / 32768)
                for _ in range(renderings)
            ]
            listed = ", ".join(f"{s:.2f}" for s in scores)
            cells.append(f"{statistics.median(scores):.2f} [{listed}]")
        print(f"  {unfinished!r:34} {cells[0]:26} | finished {cells[1]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--renderings", type=int, default=3)
    args = parser.parse_args()
    model = SmartTurnModel(threads=1)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"smart-turn model {model.model_path}; {os.cpu_count()} CPUs, load average {load}")
    latency(args.runs)
    real_voices(model, args.seeds)
    own_voice(model, args.renderings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
