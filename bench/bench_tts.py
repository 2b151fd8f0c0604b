"""Piper latency: time to the first audio chunk, total synthesis time, real-time factor.

Cases: a short sentence, a long sentence, and a reply whose first sentence is long, cut into
chunks by SentenceStream with and without the first-chunk clause split; each with 1 and 2
onnxruntime threads. Runs are interleaved (threads 1 / 2, split / no split) so machine noise
hits every variant alike; figures are medians.

    python bench/bench_tts.py [--reps N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from voice.config import TtsConfig
from voice.speech_text import SentenceStream
from voice.tts import PiperSynthesizer

SHORT = "Sure, I can help with that."
LONG = (
    "The configuration loader reads the file once at start-up, checks every key against the "
    "dataclasses that describe it, and reports the first unknown key by name so that a typo "
    "never silently falls back to a default value."
)
LONG_FIRST = (
    "I looked through the repository and the failing test, and the problem is that the "
    "session index is rebuilt while the lock is still held, which deadlocks. "
    "The fix is small. I will move the rebuild outside the lock and add a test for it."
)


def chunks_of(reply: str, first_chunk_max_chars: int) -> list[str]:
    stream = SentenceStream(first_chunk_max_chars)
    return stream.feed(reply) + stream.flush()


def run(tts: PiperSynthesizer, chunks: list[str]) -> tuple[float, float, float]:
    """(seconds to first audio, seconds to synthesize everything, seconds of audio)."""
    start = time.perf_counter()
    first: float | None = None
    samples = 0
    for text in chunks:
        for audio in tts.synthesize(text):
            if first is None:
                first = time.perf_counter() - start
            samples += len(audio)
    total = time.perf_counter() - start
    return first or total, total, samples / tts.sample_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    engines = {}
    for threads in (1, 2):
        start = time.perf_counter()
        engines[threads] = PiperSynthesizer(replace(TtsConfig(), threads=threads))
        engines[threads].warm_up()
        print(f"threads={threads}: voice loaded in {time.perf_counter() - start:.2f} s")

    cases = {
        "short sentence": [SHORT],
        "long sentence": [LONG],
        "long first, no split": chunks_of(LONG_FIRST, 0),
        "long first, split at 60": chunks_of(LONG_FIRST, 60),
    }
    for name in ("long first, no split", "long first, split at 60"):
        print(f"{name}: first chunk {cases[name][0]!r}")

    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for _ in range(args.reps):
        for name, chunks in cases.items():
            for threads, tts in engines.items():
                results.setdefault((name, threads), []).append(run(tts, chunks))

    def med(name: str, threads: int, i: int) -> float:
        return statistics.median(r[i] for r in results[(name, threads)])

    print()
    print(f"{'case':<26}{'threads':>8}{'first audio':>13}{'total':>10}{'audio':>9}{'RTF':>7}")
    for name in cases:
        for threads in engines:
            first, total, audio = (med(name, threads, i) for i in range(3))
            print(
                f"{name:<26}{threads:>8}{first * 1000:>10.0f} ms{total * 1000:>7.0f} ms"
                f"{audio:>7.2f} s{total / audio:>7.3f}"
            )
    print()
    for threads in engines:
        gain = med("long first, no split", threads, 0) / med("long first, split at 60", threads, 0)
        print(f"threads={threads}: clause split makes the first audio {gain:.2f}x sooner")
    for name in cases:
        ratio = med(name, 1, 1) / med(name, 2, 1)
        print(f"{name}: total time threads=1 / threads=2 = {ratio:.2f}")
    print(f"(medians of {args.reps} runs; RTF = synthesis time / audio duration)")


if __name__ == "__main__":
    main()
