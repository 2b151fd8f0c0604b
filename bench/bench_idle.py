"""Start-up time, idle CPU while listening, and memory with the models loaded.

    python bench/bench_idle.py [--seconds 30] [--runs 3] [--modes vad,wake,wake-ungated]
                               [--background silence|noise] [--echo auto,off]

`voice-assistant listen --agent echo` runs as a real process in the PulseAudio rig, once per
input mode (``vad``: webrtcvad on every frame, Silero when webrtcvad hears something;
``wake``: the wake word model while webrtcvad hears something voice-like, the segmenter only
after the word; ``wake-ungated``: the model on every frame, ``wake.speech_gate = false``).
Into the microphone plays silence, as from a quiet room, or with ``--background noise`` pink
noise at -40 dBFS, a fan or a busy street through a window, which webrtcvad often calls
speech (so Silero runs). Start-up is from launch to the "ready" log line (models loaded and
warmed, streams open). CPU is user+system time from /proc over the idle window, as a
percentage of one core; memory is the peak RSS (VmHWM). The figures of the modes print side
by side; ``--echo auto,off`` runs each mode with echo cancellation (one duplex stream, the
default) and without it (half-duplex: a microphone stream; the speaker's rests while idle).

The floor is measured beside them: a process that only holds the same PortAudio stream
open (16 kHz input in 30 ms blocks; or duplex at 22050 Hz in 20 ms blocks) with a callback
that copies each block and does nothing else. What the listener costs above it is the
project's own; the floor is PortAudio, ALSA's pulse plugin and the sound server's messages.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.listener import Listener  # noqa: E402
from tests.rig import PulseRig  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
MODES = ("vad", "wake", "wake-ungated")

BARE_STREAM = """
import sys, time
import sounddevice as sd
def take(indata, frames, time_info, status):
    bytes(indata)
def both(indata, outdata, frames, time_info, status):
    bytes(indata)
    outdata[:] = bytes(len(outdata))
if sys.argv[1] == "input":
    stream = sd.RawInputStream(samplerate=16000, channels=1, dtype="int16", blocksize=480,
                               latency="low", callback=take)
else:
    stream = sd.RawStream(samplerate=22050, channels=1, dtype="int16", blocksize=441,
                          latency=("low", 0.05), callback=both)
stream.start()
print("ready", flush=True)
time.sleep(3600)
"""


def measure_floor(rig: PulseRig, kind: str, seconds: float) -> float:
    """Idle CPU (% of one core) of a process holding only a bare PortAudio stream."""
    process = subprocess.Popen(
        [sys.executable, "-c", BARE_STREAM, kind],
        env=rig.subprocess_env(dict(os.environ)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(2)
        before, t0 = cpu_seconds(process.pid), time.monotonic()
        time.sleep(seconds)
        return 100 * (cpu_seconds(process.pid) - before) / (time.monotonic() - t0)
    finally:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class Idle:
    startup_s: float
    cpu_percent: float  # of one core
    peak_rss_mb: float
    turns: int  # requests heard in the idle window: should be 0
    wakes: int


def pink_noise(seconds: float, dbfs: float = -40.0) -> np.ndarray:
    """int16 pink noise at ``dbfs`` RMS (1/f power, a fan or distant traffic)."""
    rng = np.random.default_rng(1)
    n = int(seconds * 16000)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / 16000)
    f[0] = f[1]
    audio = np.fft.irfft(spectrum / np.sqrt(f), n)
    audio *= 10 ** (dbfs / 20) / np.sqrt(np.mean(audio**2))
    return (audio * 32767).astype(np.int16)


def measure_idle(
    rig: PulseRig,
    workdir: Path,
    mode: str,
    seconds: float,
    *,
    background: str = "silence",
    echo: str = "auto",
    speech_gate: bool = True,
) -> Idle:
    """One listener in ``mode``, idle for ``seconds`` (after 2 s to settle)."""
    config: dict[str, dict[str, object]] = {
        "earcons": {"enabled": False},
        "input": {"mode": mode, "backend": "socket"},
        "audio": {"echo_cancel": echo},
        "wake": {"speech_gate": speech_gate},
    }
    with Listener(rig, workdir, config) as listener:
        assert listener.process is not None
        pid = listener.process.pid
        feed = None
        if background == "noise":
            feed = rig.feed(pink_noise(seconds + 4), 16000)
        time.sleep(2)  # past the first frames
        before, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        used, elapsed = cpu_seconds(pid) - before, time.monotonic() - t0
        rss = peak_rss_mb(pid)
        if feed is not None:
            feed.wait(30)
        return Idle(
            startup_s=listener.ready_s - listener.started_s,
            cpu_percent=100 * used / elapsed,
            peak_rss_mb=rss,
            turns=listener.count("you said:"),
            wakes=listener.count("wake word hey_jarvis heard"),
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="vad", help="comma-separated: vad, wake, wake-ungated")
    parser.add_argument("--background", choices=("silence", "noise"), default="silence")
    parser.add_argument(
        "--echo", default="auto", help="comma-separated audio.echo_cancel values: auto, off"
    )
    args = parser.parse_args()
    modes = [
        f"{m}/{e}" if "," in args.echo else m
        for m in args.modes.split(",")
        if m
        for e in args.echo.split(",")
    ]
    unknown = {m.split("/")[0] for m in modes} - set(MODES)
    if unknown:
        parser.error(f"unknown mode {', '.join(sorted(unknown))}; use {', '.join(MODES)}")
    results: dict[str, list[Idle]] = {mode: [] for mode in modes}
    floors: dict[str, list[float]] = {"input": [], "duplex": []}
    with tempfile.TemporaryDirectory() as tmp, PulseRig() as rig:
        for run in range(args.runs):
            for kind, found in floors.items():
                found.append(measure_floor(rig, kind, args.seconds))
                print(f"run {run + 1} floor, bare {kind} stream: {found[-1]:.1f} % of one core")
            for mode in modes:  # interleaved: a busy neighbour slows every mode alike
                name, _, echo = mode.partition("/")
                idle = measure_idle(
                    rig,
                    Path(tmp) / f"{name}{echo}{run}",
                    name.removesuffix("-ungated"),
                    args.seconds,
                    background=args.background,
                    echo=echo or args.echo,
                    speech_gate=not name.endswith("-ungated"),
                )
                results[mode].append(idle)
                print(
                    f"run {run + 1} {mode:18}: start-up {idle.startup_s:.2f} s, idle CPU "
                    f"{idle.cpu_percent:.1f} % of one core over {args.seconds:.0f} s of "
                    f"{args.background}, peak RSS {idle.peak_rss_mb:.0f} MB, turns {idle.turns}"
                )
    print(f"\nmedian of {args.runs} run(s), {args.background} into the microphone:")
    print(f"{'mode':20}{'start-up':>10}{'idle CPU':>12}{'peak RSS':>10}{'turns':>7}")
    for mode, runs in results.items():
        print(
            f"{mode:20}{statistics.median(r.startup_s for r in runs):>9.2f}s"
            f"{statistics.median(r.cpu_percent for r in runs):>10.1f} %"
            f"{statistics.median(r.peak_rss_mb for r in runs):>7.0f} MB"
            f"{sum(r.turns for r in runs):>7}"
        )
    for kind, found in floors.items():
        print(f"floor: a bare PortAudio {kind} stream {statistics.median(found):>10.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
