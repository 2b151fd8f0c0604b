"""What a local model costs in memory: the `fallback = "eager"` question for remote engines.

    python bench/bench_memory.py [--runs 3]

With a remote speech engine (`stt.engine` / `tts.engine = "wyoming"`), `fallback = "eager"`
loads the local model at start, so a failed request does not wait for it; `"lazy"` loads it
only then. This measures what eager costs: each model is loaded in a fresh Python process
(its libraries imported, the model loaded and warmed up by one call, as the loop does), and
the resident memory (VmRSS) is read before the import and after the warm-up. Side by side in
one run: Whisper (the configured size, tiny.en by default), the Piper voice, and for scale the
smart-turn model. Medians of ``--runs`` processes each.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LOADERS = {
    "whisper": (
        "from voice.config import SttConfig\n"
        "from voice.stt import WhisperTranscriber\n"
        "WhisperTranscriber(SttConfig()).warm_up()\n"
    ),
    "piper": (
        "from voice.config import TtsConfig\n"
        "from voice.tts import PiperSynthesizer\n"
        "PiperSynthesizer(TtsConfig()).warm_up()\n"
    ),
    "smart-turn": (
        "from voice.smart_turn import SmartTurnModel\nm = SmartTurnModel()\nm.warm_up()\n"
    ),
}

PROBE = """
def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss_kib()
{load}
print(before, rss_kib())
"""


def measure(load: str) -> tuple[float, float]:
    """(MiB before the import, MiB after the warm-up) of one fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(load=load)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    before, after = int(out[-2]), int(out[-1])
    return before / 1024, after / 1024


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    header = f"{'model':11} {'before MiB':>10} {'after MiB':>10} {'costs MiB':>10}"
    print(f"{header}  (medians of {args.runs} processes)")
    for name, load in LOADERS.items():
        runs = [measure(load) for _ in range(args.runs)]
        before = statistics.median(b for b, _ in runs)
        after = statistics.median(a for _, a in runs)
        cost = statistics.median(a - b for b, a in runs)
        print(f"{name:11} {before:10.0f} {after:10.0f} {cost:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
