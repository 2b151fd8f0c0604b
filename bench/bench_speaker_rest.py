"""``play`` to the first sample on the speaker sink: a running output stream vs a resting one.

    python bench/bench_speaker_rest.py [--plays 12]

Half-duplex, the speaker's output stream stops after ``audio.speaker_rest_s`` with nothing played
(it costs about 2 % of a core idle) and ``play`` starts it again. This measures what that
costs the first sound of a reply, in the PulseAudio rig: a 100 ms tone is played, alternately
after the stream rested and 0.5 s after the last sound (still running), and the time from
``play`` to its first sample on ``speaker.monitor`` is taken (same clock). Also printed: the
longest run of near-silent samples inside the tone, where a stutter of a restarted stream
would show (a 440 Hz tone crosses zero in a sample or two).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.rig import PulseRig, Recorder, wait_for_sound  # noqa: E402
from voice.config import AudioConfig  # noqa: E402
from voice.devices.speaker import Speaker  # noqa: E402

RATE = 22050
TONE = (np.sin(np.arange(RATE // 10) * 2 * np.pi * 440 / RATE) * 12000).astype(np.int16)


def longest_quiet_run(recorder: Recorder, start_s: float) -> int:
    """Longest run of samples under 300 in the 100 ms from ``start_s``."""
    recording = recorder.snapshot()
    quiet = (np.abs(recording.between(start_s, start_s + 0.1)) < 300).astype(int)
    edges = np.flatnonzero(np.diff(np.r_[0, quiet, 0]))
    runs = edges[1::2] - edges[::2]
    return int(runs.max()) if len(runs) else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plays", type=int, default=12, help="plays of each kind")
    args = parser.parse_args()
    latency: dict[str, list[float]] = {"resting": [], "running": []}
    stutter: dict[str, list[int]] = {"resting": [], "running": []}
    with PulseRig() as rig, rig.activate(), rig.record_speaker() as recorder:
        recorder.wait_started()
        with Speaker(AudioConfig(), rate=RATE) as speaker:
            for _ in range(args.plays):
                for kind in ("resting", "running"):
                    time.sleep(speaker.rest_after_s + 1.0 if kind == "resting" else 0.5)
                    if speaker.resting != (kind == "resting"):
                        raise SystemExit(f"the stream was not {kind} when it should have been")
                    played_s = time.monotonic()
                    speaker.play(TONE, RATE)
                    heard_s = wait_for_sound(recorder, played_s)
                    speaker.wait(2)
                    time.sleep(0.1)
                    latency[kind].append((heard_s - played_s) * 1000)
                    stutter[kind].append(longest_quiet_run(recorder, heard_s))
    print(f"\n{args.plays} plays each, play() -> first sample on speaker.monitor:")
    print(f"{'stream':10}{'p50 ms':>8}{'min':>6}{'max':>6}{'longest quiet run (samples)':>30}")
    for kind, found in latency.items():
        print(
            f"{kind:10}{statistics.median(found):>8.0f}{min(found):>6.0f}{max(found):>6.0f}"
            f"{max(stutter[kind]):>30}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
