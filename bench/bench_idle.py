"""Start-up time, idle CPU while listening to silence, and memory with the models loaded.

    python bench/bench_idle.py [--seconds 30] [--runs 3]

`voice-assistant listen --agent echo` runs as a real process in the PulseAudio rig (silence
playing into the microphone sink, as from a quiet room). Start-up is from launch to the
"ready" log line (models loaded and warmed, streams open). CPU is user+system time from
/proc over the idle window, as a percentage of one core; memory is the peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.listener import Listener  # noqa: E402
from tests.rig import PulseRig  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    startup, cpu, rss = [], [], []
    with tempfile.TemporaryDirectory() as tmp, PulseRig() as rig:
        for run in range(args.runs):
            listener = Listener(rig, Path(tmp) / f"run{run}", {"earcons": {"enabled": False}})
            with listener:
                assert listener.process is not None
                pid = listener.process.pid
                startup.append(listener.ready_s - listener.started_s)
                time.sleep(2)  # past the first frames
                before, t0 = cpu_seconds(pid), time.monotonic()
                time.sleep(args.seconds)
                used, elapsed = cpu_seconds(pid) - before, time.monotonic() - t0
                cpu.append(100 * used / elapsed)
                rss.append(peak_rss_mb(pid))
                turns = listener.count("you said:")
            print(
                f"run {run + 1}: start-up {startup[-1]:.2f} s, idle CPU {cpu[-1]:.1f} % of one "
                f"core over {args.seconds:.0f} s, peak RSS {rss[-1]:.0f} MB, turns on silence "
                f"{turns}"
            )
    print(
        f"\nmedian of {args.runs}: start-up to listening {statistics.median(startup):.2f} s, "
        f"idle CPU {statistics.median(cpu):.1f} % of one core, "
        f"peak RSS {statistics.median(rss):.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
