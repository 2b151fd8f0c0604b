"""An underrun of the echo-cancelled stream, in the PulseAudio rig: where the echo comes after.

    python bench/bench_underrun.py [--replies N] [--stall-ms MS] [--live N] [--relearn N]

The rig's ``module-loopback`` plays the speaker into the microphone at full level. A
:class:`voice.devices.DuplexDevice` learns the room from two replies (the Piper voice), then:

- steady: nothing happens;
- underrun: the stream's callback stalls for ``--stall-ms`` while a reply plays (a busy
  machine), and the stream is left as it is (the code before DuplexDevice.needs_reopen);
- reopened: the same stall, then the stream is reopened, as the loop does once nothing goes on.

Each case then plays ``--replies`` short replies after a 2 s rest (the canceller rests too)
and prints the echo's delay the echo gate finds (from the level envelopes, 10 ms frames) and
how many 30 ms frames reach the loop that webrtcvad calls voiced and no guard marks as echo:
the leaks that start turns and stop replies. A case runs in a fresh stream and rig loopback.

``--live N``: the whole listener instead (``voice-assistant listen --agent echo``, echo
cancellation on, the speaker looped into the microphone). A real voice asks "seven of clubs"
3 times to teach the room, 3 times to measure, once more with the process stopped (SIGSTOP)
for the stall while its reply plays, and N times after. Printed: end of speech -> first reply
sample for each request, replies that stopped themselves, and turns stored against requests.
Run it with ``PYTHONPATH`` set to another checkout to measure that code.

``--relearn N``: how soon the echo monitor trusts the canceller again after an underrun too
short to reopen the stream for (``--stall-ms``, 100 by default here). N stalls, by turns
while nothing plays (1 s before a reply) and 0.8 s into a reply; what the device's monitor
was given from the underrun on is kept, and replayed through the monitor as released
(windows of RELEARN_WINDOW_FRAMES) and through windows of WINDOW_FRAMES (the release
before), side by side on the same audio. Printed: seconds of played sound from the underrun
to the canceller trusted again (the reply is gated until then); 100 ms stretches of the
next second of played sound with under 20 dB of echo removed (a leak, if the other guards
let it through); and, for the device as released, the 30 ms frames of echo it handed the
loop unmarked and webrtcvad called voiced once it trusted the canceller again.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import webrtcvad

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.listener import TURN_DONE, Listener  # noqa: E402
from tests.rig import PulseRig, align, frame_levels_dbfs  # noqa: E402
from tests.voice.audio_util import real_clip, to_int16  # noqa: E402
from voice.audio import AudioChunk  # noqa: E402
from voice.config import AudioConfig, TtsConfig  # noqa: E402
from voice.devices.duplex import BEHIND_S, DuplexDevice  # noqa: E402
from voice.echo import WebRtcCanceller  # noqa: E402
from voice.echo_guard import (  # noqa: E402
    FAR_ACTIVE_DBFS,
    RELEARN_WINDOW_FRAMES,
    WINDOW_FRAMES,
    EchoMonitor,
    ErleWindow,
    db,
    power,
)
from voice.tts import PiperSynthesizer  # noqa: E402

LEARN = "You said: please read me the whole shopping list for the weekend, one item at a time."
SHORT = "You said: seven of clubs. Anything else?"


class Reader:
    """Reads the device on a thread, as the loop does, keeping each chunk with its time."""

    def __init__(self, device: DuplexDevice) -> None:
        self.device = device
        self.chunks: list[tuple[float, AudioChunk]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reader:
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def reopen(self) -> None:
        """Reopen the stream, as the loop does once nothing goes on."""
        self.stop()
        self.device.reopen()
        self.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            chunk = self.device.read(0.1)
            if chunk is not None:
                self.chunks.append((time.monotonic(), chunk))


def leaked(
    vad: webrtcvad.Vad, chunks: list[tuple[float, AudioChunk]], start_s: float, end_s: float
) -> int:
    """Chunks of echo the loop would take for voice: webrtcvad voiced, over -60 dBFS, and not
    marked echo by the device."""
    return sum(
        1
        for t, c in chunks
        if start_s <= t <= end_s
        and not c.echo
        and frame_levels_dbfs(c.to_int16(), 16000, 30).max() > -60
        and vad.is_speech(c.pcm, 16000)
    )


def stall(device: DuplexDevice, seconds: float) -> None:
    with device._cond:  # the callback waits on the speaker's lock: it underruns
        time.sleep(seconds)


def run_case(
    rig: PulseRig, tts: PiperSynthesizer, case: str, replies: int, stall_s: float
) -> tuple[list[int | None], list[int], list[float]]:
    learn, short = tts.synthesize_all(LEARN), tts.synthesize_all(SHORT)
    vad = webrtcvad.Vad(2)
    with rig.loopback(), DuplexDevice(AudioConfig(), WebRtcCanceller()) as device:
        reader = Reader(device).start()
        chunks = reader.chunks

        def play(samples: np.ndarray) -> float:
            started = time.monotonic()
            device.play(samples, tts.sample_rate)
            device.wait(30)
            time.sleep(0.5)  # the echo's tail
            return started

        for _ in range(2):
            play(learn)
        if case != "steady":
            device.play(learn[: tts.sample_rate], tts.sample_rate)
            time.sleep(0.3)
            stall(device, stall_s)
            device.wait(10)
        if case == "reopened":
            reader.reopen()
        delays: list[int | None] = []
        leaks: list[int] = []
        for _ in range(replies):
            time.sleep(2.0)
            started = play(short)
            ended = time.monotonic()
            delays.append(device.gate.delay)
            leaks.append(leaked(vad, chunks, started, ended))
        lags = []
        burst = (8000 * np.sin(2 * np.pi * 700 * np.arange(3200) / 16000)).astype(np.int16)
        with rig.record_mic() as fed:
            for _ in range(3):
                time.sleep(1.0)
                rig.feed(burst, 16000).wait(10)
                time.sleep(1.0)
                said_s = fed.snapshot().speech(min_gap_s=0.5)[-1][0]
                heard = [t for t, c in chunks if t >= said_s and np.abs(c.to_int16()).max() > 4000]
                lags.append((heard[0] - said_s) * 1000 if heard else float("nan"))
        reader.stop()
    return delays, leaks, lags


Frame = tuple[np.ndarray, np.ndarray, np.ndarray]  # heard, left by the canceller, played


class TapedMonitor(EchoMonitor):
    """The device's monitor, keeping every frame it is given and where each underrun that
    unlearnt the room came in it."""

    def __init__(self) -> None:
        super().__init__()
        self.tape: list[Frame] = []
        self.unlearnt: list[int] = []  # indices into the tape
        self.trusted_s: float | None = None  # when it last trusted the canceller

    def update(self, heard: np.ndarray, left: np.ndarray, played: np.ndarray) -> bool:
        self.tape.append((heard.copy(), left.copy(), played.copy()))
        if learnt := super().update(heard, left, played):
            self.trusted_s = time.monotonic()
        return learnt

    def moved(self) -> bool:
        if unlearnt := super().moved():
            self.unlearnt.append(len(self.tape))
        return unlearnt

    def clear(self) -> None:
        self.tape.clear()
        self.unlearnt.clear()
        self.trusted_s = None


def replay(tape: list[Frame], frames: int) -> tuple[float, int] | None:
    """The frames after an underrun through a monitor that relearns on windows of ``frames``:
    seconds of played sound until it trusts the canceller, and the 100 ms stretches of the
    next second of played sound with under 20 dB removed. None: never within the tape."""
    monitor = EchoMonitor(relearn_frames=frames)
    monitor.learnt = True  # as the device's was, when the underrun came
    monitor.moved()
    played = [frame for frame in tape if db(power(frame[2])) > FAR_ACTIVE_DBFS]
    for n, (heard, left, sound) in enumerate(played):
        if monitor.update(heard, left, sound):
            stretch = ErleWindow(10)
            erles = (stretch.add(power(h), power(lft)) for h, lft, _ in played[n + 1 : n + 101])
            return (n + 1) / 100, sum(1 for erle in erles if erle is not None and erle < 20)
    return None


def relearn(rig: PulseRig, tts: PiperSynthesizer, stalls: int, stall_s: float) -> None:
    learn = tts.synthesize_all(LEARN)
    rules = {"this release": RELEARN_WINDOW_FRAMES, f"windows of {WINDOW_FRAMES}": WINDOW_FRAMES}
    results: list[list[tuple[float, int] | None]] = []  # per stall, per rule
    skipped = 0
    leaks: list[int] = []  # per stall: frames the loop took for voice once trusted again
    vad = webrtcvad.Vad(2)
    with rig.loopback():
        device = DuplexDevice(AudioConfig(), WebRtcCanceller())
        monitor = device.monitor = TapedMonitor()
        with device:
            reader = Reader(device).start()

            def play() -> None:
                device.play(learn, tts.sample_rate)
                device.wait(30)
                time.sleep(0.5)

            for n in range(stalls):
                while not device.monitor.learnt:
                    play()
                time.sleep(2.0)  # the canceller rests
                idle = n % 2 == 0
                if not idle:
                    device.play(learn, tts.sample_rate)
                    time.sleep(0.8)
                monitor.clear()
                reader.chunks.clear()
                stall(device, stall_s)
                if idle:
                    time.sleep(1.0)
                    device.play(learn, tts.sample_rate)
                device.wait(30)
                time.sleep(0.5)
                trusted_s = monitor.trusted_s
                case = "idle" if idle else "reply"
                if device.needs_reopen or not monitor.unlearnt:
                    skipped += 1
                    why = "no underrun" if not monitor.unlearnt else "behind: reopened"
                    print(f"  stall {n + 1} ({case}): not counted ({why})")
                    if device.needs_reopen:
                        reader.reopen()
                    continue
                tape = monitor.tape[monitor.unlearnt[0] :]
                results.append([replay(tape, frames) for frames in rules.values()])
                if trusted_s is not None:
                    leaks.append(leaked(vad, reader.chunks, trusted_s, time.monotonic()))
                told = (
                    f"{name} {'-' if r is None else f'{r[0]:.2f} s ({r[1]} leaky)'}"
                    for name, r in zip(rules, results[-1], strict=True)
                )
                after = f"; once trusted, {leaks[-1]} leaked" if trusted_s is not None else ""
                print(f"  stall {n + 1} ({case}): {'; '.join(told)}{after}", flush=True)
            reader.stop()
    print(
        f"\n{len(results)} stalls counted ({skipped} not: no underrun, or the microphone"
        f" {BEHIND_S * 1000:.0f} ms or more behind, which the loop reopens the stream for)"
    )
    for k, name in enumerate(rules):
        found = [r[k] for r in results if r[k] is not None]
        never = len(results) - len(found)
        if found:
            times = [seconds for seconds, _ in found]
            print(
                f"{name:16}: trusted again after p50 {statistics.median(times):.2f} s,"
                f" max {max(times):.2f} s of played sound (not within the reply: {never});"
                f" leaky 100 ms stretches in the next second: {sum(x for _, x in found)}"
            )
    print(
        f"this release, in the rig: 30 ms frames of echo the loop would take for voice once"
        f" the canceller was trusted again, to the reply's end: {sum(leaks)} in {len(leaks)}"
        " replies"
    )
    both = [(r[0][0], r[1][0]) for r in results if r[0] is not None and r[1] is not None]
    print(
        f"same stall, this release sooner in {sum(a < b for a, b in both)} of {len(both)},"
        f" later in {sum(a > b for a, b in both)}"
    )


def live(after: int, stall_s: float, log_path: Path | None = None) -> None:
    request = to_int16(real_clip("cards-003"))
    config: dict[str, dict[str, object]] = {
        "audio": {"echo_cancel": "on"},
        "earcons": {"enabled": False},
    }
    with tempfile.TemporaryDirectory() as tmp, PulseRig() as rig, rig.loopback():
        listener = Listener(rig, Path(tmp) / "listen", config)
        with listener, rig.record_speaker() as speaker, rig.record_mic() as mic:

            def settled() -> None:
                while True:  # nothing more for 3 s: the echo's own turns included
                    size = len(listener.log())
                    time.sleep(3.0)
                    if len(listener.log()) == size:
                        return

            def ask(stall: bool = False) -> float:
                done = listener.count(TURN_DONE)
                fed_s = time.monotonic()
                rig.feed(request, 16000).wait(30)
                if stall:
                    end_s = time.monotonic()
                    while (
                        np.abs(speaker.snapshot().between(end_s, time.monotonic())).max(initial=0)
                        < 1000
                    ):
                        time.sleep(0.01)
                    time.sleep(0.3)  # well into the reply
                    listener.stall(stall_s)
                listener.wait_for_log(TURN_DONE, count=done + 1, timeout_s=60)
                settled()
                heard = mic.snapshot()
                offset, _ = align(request, heard.between(fed_s - 0.2, heard.end_s))
                spoken_end = heard.time_of(heard.index_at(fed_s - 0.2) + offset + len(request))
                reply = speaker.snapshot().between(spoken_end - 0.5, spoken_end + 4)
                loud = np.flatnonzero(np.abs(reply) > 1000)
                return (loud[0] / 16000 - 0.5) * 1000 if len(loud) else float("nan")

            try:
                for _ in range(3):
                    ask()  # the canceller learns the room
                before = [ask() for _ in range(3)]
                ask(stall=True)
                time.sleep(10)  # the loop reopens at most once in 10 s
                later = [ask() for _ in range(after)]
            finally:
                log = listener.log()
                if log_path is not None:
                    log_path.write_text(log)
    requests = 3 + 3 + 1 + after
    print(
        f"end of speech -> first reply sample (ms), before the stall: {[round(x) for x in before]}"
    )
    print(f"... after the {stall_s * 1000:.0f} ms stall: {[round(x) for x in later]}")
    print(
        f"replies that stopped themselves: {log.count('stopping the reply')};"
        f" turns {log.count('you said:')} for {requests} requests;"
        f" reopens {log.count('reopening the stream')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replies", type=int, default=6)
    parser.add_argument(
        "--stall-ms", type=float, help="how long the callback stalls (400; 100 with --relearn)"
    )
    parser.add_argument("--live", type=int, metavar="N", help="the listener, N requests after")
    parser.add_argument("--relearn", type=int, metavar="N", help="N short stalls: monitor rules")
    parser.add_argument("--log", type=Path, help="--live: write the listener's log here")
    args = parser.parse_args()
    if args.relearn is not None:
        tts = PiperSynthesizer(TtsConfig())
        with PulseRig() as rig, rig.activate():
            relearn(rig, tts, args.relearn, (args.stall_ms or 100.0) / 1000)
        return 0
    args.stall_ms = args.stall_ms or 400.0
    if args.live is not None:
        live(args.live, args.stall_ms / 1000, args.log)
        return 0
    tts = PiperSynthesizer(TtsConfig())
    print(
        f"{'case':10} {'echo delay per reply (ms)':40} {'p50':>5} {'leaked frames per reply':>24}"
        f" {'microphone lag p50':>18}"
    )
    with PulseRig() as rig, rig.activate():
        for case in ("steady", "underrun", "reopened"):
            delays, leaks, lags = run_case(rig, tts, case, args.replies, args.stall_ms / 1000)
            known = [d * 10 for d in delays if d is not None]
            shown = " ".join("-" if d is None else str(d * 10) for d in delays)
            p50 = f"{statistics.median(known):5.0f}" if known else "    -"
            print(
                f"{case:10} {shown:40} {p50} {' '.join(map(str, leaks)):>24}"
                f" {statistics.median(lags):15.0f} ms"
            )
    print(
        f"\nunderrun: the callback stalled {args.stall_ms:.0f} ms while a reply played;"
        " reopened: the same, then the stream reopened (the loop does it once nothing goes on)."
        " Echo delay: where the echo gate finds the echo after what was played (it looks up to"
        " 500 ms, WebRTC's canceller about as far). Leaked frames: 30 ms frames of a reply's"
        " echo the loop would take for voice (webrtcvad voiced, over -60 dBFS, not marked echo)."
        " A reopen keeps the room: until the canceller has found the echo again, the gate"
        " looks for it 120 ms either side of where the room was learnt, and the loop is not"
        " half-duplex: those frames would reach it. Microphone lag: a tone fed into the microphone"
        " -> the first frame of it the device hands the loop (median of 3): how late every word"
        " is heard."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
