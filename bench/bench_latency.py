"""Voice-to-voice latency through the PulseAudio rig, the project against a plain baseline.

    python bench/bench_latency.py [--turns 12]

Both run as real processes in the same rig with the echo agent: spoken commands (made with
the Piper voice) are played into ``mic_feed``; latency is measured from outside, from the end
of the speech recorded on ``mic_feed.monitor`` to the first reply sample recorded on
``speaker.monitor`` (both recordings on one clock). Earcons are off so the first sound is the
reply itself. The per-stage breakdown comes from each turn's "turn timings" log line, relative
to the end of the last voiced frame as the segmenter saw it.

- project:  voice-assistant listen (speculative transcript at the first pause, smart
            end of turn, trimmed encoder window, streamed sentence-by-sentence speech)
- baseline: bench/baseline_loop.py (800 ms hangover, stock 30 s window, whole-reply synthesis)
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soxr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.listener import TURN_DONE, Listener  # noqa: E402
from tests.rig import PulseRig, find_speech  # noqa: E402
from voice.config import TtsConfig  # noqa: E402
from voice.tts import PiperSynthesizer  # noqa: E402

COMMANDS = (
    "What time is it?",
    "Turn on the kitchen lights.",
    "Set a timer for ten minutes.",
    "What is the weather like tomorrow?",
    "Play some relaxing music.",
    "How far away is the moon?",
    "Remind me to call my mother.",
    "What is the capital of Spain?",
    "Turn off the bedroom lights.",
    "How do I boil an egg?",
    "Tell me a short joke.",
    "What day is it today?",
)
CONFIG = {"earcons": {"enabled": False}}
STAGES = ("endpoint", "transcript", "agent first text", "agent done", "first audio")


def speech(tts: PiperSynthesizer, text: str) -> np.ndarray:
    audio = tts.synthesize_all(text).astype(np.float32) / 32768
    return (soxr.resample(audio, tts.sample_rate, 16000) * 32767).astype(np.int16)


def stage_times(log_line: str) -> dict[str, float]:
    return {
        name.strip(): float(v) for name, v in re.findall(r"([a-z ]+?) ([+-]\d+\.\d+)s", log_line)
    }


def run_system(
    name: str,
    rig: PulseRig,
    clips: list[np.ndarray],
    workdir: Path,
    argv: list[str] | None,
    config: dict[str, dict[str, object]] = CONFIG,
) -> tuple[list[float], list[dict[str, float]]]:
    latencies: list[float] = []
    listener = Listener(rig, workdir / name, config, argv=argv)
    with listener, rig.record_mic() as mic, rig.record_speaker() as spk:
        for n, clip in enumerate(clips, start=1):
            fed_at = time.monotonic()
            rig.feed(clip, 16000).wait(30)
            listener.wait_for_log(TURN_DONE, count=n, timeout_s=60)
            time.sleep(len(COMMANDS[n - 1]) * 0.09 + 1.5)  # let the reply play out
            mic_rec, spk_rec = mic.snapshot(), spk.snapshot()
            fed = mic_rec.between(fed_at, time.monotonic())
            segments = find_speech(fed, min_gap_s=0.5)
            speech_end = mic_rec.time_of(mic_rec.index_at(fed_at)) + segments[-1][1]
            out = spk_rec.between(speech_end, time.monotonic())
            replies = find_speech(out, min_gap_s=0.3)
            latency = replies[0][0] if replies else float("nan")
            latencies.append(latency)
            print(f"  {name:8} turn {n:2}: {latency * 1000:6.0f} ms  {COMMANDS[n - 1]}")
    lines = [line for line in listener.log().splitlines() if TURN_DONE in line]
    return latencies, [stage_times(line.split(TURN_DONE)[1]) for line in lines]


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values), p))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=len(COMMANDS))
    parser.add_argument("--only", choices=["project", "baseline"], help="measure one system")
    parser.add_argument(
        "--threads",
        nargs="*",
        default=[],
        metavar="STT:TTS",
        help="also measure the project with these stt.cpu_threads:tts.threads, e.g. 1:1 2:2",
    )
    args = parser.parse_args()
    tts = PiperSynthesizer(TtsConfig())
    clips = [speech(tts, COMMANDS[i % len(COMMANDS)]) for i in range(args.turns)]
    results: dict[str, tuple[list[float], list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp, PulseRig() as rig:
        workdir = Path(tmp)
        systems = {
            "project": None,
            "baseline": [sys.executable, str(REPO / "bench" / "baseline_loop.py")],
        }
        for name, argv in systems.items():
            if args.only in (None, name):
                results[name] = run_system(name, rig, clips, workdir, argv)
        for pair in args.threads:
            stt_threads, tts_threads = (int(n) for n in pair.split(":"))
            config = {
                **CONFIG,
                "stt": {"cpu_threads": stt_threads},
                "tts": {"threads": tts_threads},
            }
            name = f"stt{stt_threads}-tts{tts_threads}"
            results[name] = run_system(name, rig, clips, workdir, None, config)

    print("\nvoice-to-voice latency, end of speech -> first reply sample (speaker monitor)")
    print(f"{'system':10} {'turns':>5} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
    for name, (lat, _) in results.items():
        ok = [x for x in lat if x == x]
        print(
            f"{name:10} {len(ok):5} {percentile(ok, 50) * 1000:8.0f} "
            f"{percentile(ok, 90) * 1000:8.0f} {max(ok) * 1000:8.0f}"
        )
    p50 = {name: percentile([x for x in lat if x == x], 50) for name, (lat, _) in results.items()}
    if "baseline" in p50 and "project" in p50:
        print(f"baseline p50 / project p50 = {p50['baseline'] / p50['project']:.2f}x")

    print("\nmedian stage times after the last voiced frame (from the turn logs), ms")
    print(f"{'system':10} " + " ".join(f"{s:>17}" for s in STAGES) + f" {'device out':>11}")
    for name, (lat, stages) in results.items():
        cells = []
        for stage in STAGES:
            values = [s[stage] for s in stages if stage in s]
            cells.append(f"{statistics.median(values) * 1000:17.0f}" if values else f"{'-':>17}")
        first = [s["first audio"] for s in stages if "first audio" in s]
        ok = [x for x in lat if x == x]
        device = (statistics.median(ok) - statistics.median(first)) * 1000 if first else 0
        print(f"{name:10} " + " ".join(cells) + f" {device:11.0f}")
    print(
        "\nstages: endpoint = the turn declared over; transcript = text ready; agent = echo"
        " agent subprocess; first audio = first synthesized chunk handed to the speaker;"
        " device out = the rest, to the speaker monitor (the segmenter's frame end and"
        " PortAudio/PulseAudio buffering)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
