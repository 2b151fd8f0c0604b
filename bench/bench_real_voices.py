"""Turn-taking on real voices through the PulseAudio rig: words kept, turns, cut-offs, latency.

    python bench/bench_real_voices.py [--only project|baseline] [--quick] [--heard-over-reply]
                                      [--echo-path] [--keep DIR] [--music DBFS]
                                      [--request NAME] [--repeat N] [--set TABLE.KEY=VALUE]

Requests are built from ``../shared/audio/real`` (people, not the project's own voice):

- single:  each recording alone (5 LibriVox read sentences, 6 spoken commands);
- joined:  two read sentences with a pause of 300, 500, 800 or 1200 ms between them;
- paused:  a read sentence cut at a gap between two words, with 500-800 ms of silence put
           in: the user stops mid-sentence to think;
- jfk:     only when named (``--request jfk``): ../shared/audio/jfk.flac as recorded.

Each request is played into the microphone of ``voice-assistant listen --agent echo`` (and
of the plain sequential baseline, bench/baseline_loop.py), a real process in the rig, with
earcons off so the first sound after the user is the reply itself. From the session store
and the two recordings (one clock):

- stored turns per request (1 is right), false cut-offs (a reply heard before the user had
  finished), words lost (words of the reference the whole-file transcript has and no stored
  message has), live WER against whole-file WER of the same model on the same audio;
- "sent": when the turn went to the agent, after the last voiced frame (from the log);
- end of speech (mic recording) -> first sample (speaker recording) of the reply to the whole
  request, p50 and p90: after a cut-off, the reply that began once the user had finished.

By default the rig has no echo path, so the echo canceller never learns a room and the
project runs half-duplex, as on a first reply. ``--echo-path`` is a desk: the speaker is
heard by the microphone at full level (the rig's ``module-loopback``), and one request
before the measured ones teaches the canceller the room, so the user is heard over the
reply, as with the default configuration after its first reply. ``--heard-over-reply``
sets ``turn.barge_in`` instead, as with a headset: heard over the reply, no echo.
``--music DBFS`` plays music-like tones (tests/voice/room_sounds.py's melody) into the
microphone at that level for the whole run, as a radio in the room.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.listener import TURN_DONE, Listener  # noqa: E402
from tests.rig import PulseRig, align, find_speech  # noqa: E402
from tests.voice.audio_util import (  # noqa: E402
    load_16k,
    normalise,
    real_clip,
    real_references,
    reference,
    shared,
    to_int16,
    wer,
    word_gaps,
)
from tests.voice.room_sounds import music  # noqa: E402
from voice.config import SttConfig  # noqa: E402
from voice.stt import WhisperTranscriber  # noqa: E402

RATE = 16000
CONFIG: dict[str, dict[str, object]] = {"earcons": {"enabled": False}}
LIBRIVOX = ["librivox-0870", "librivox-0880", "librivox-0890", "librivox-0920", "librivox-0930"]
COMMANDS = ["cards-001", "cards-002", "cards-003", "cards-004", "cards-005", "goforward"]
JOINED = [
    ("librivox-0880", "librivox-0890", 300),
    ("librivox-0930", "librivox-0870", 500),
    ("librivox-0890", "librivox-0930", 800),
    ("librivox-0920", "librivox-0880", 1200),
]
SETTLE_S = 3.0  # listening this long (past the longest hangover) means the request is done


@dataclass
class Request:
    name: str
    kind: str
    audio: np.ndarray
    reference: str
    pause_ms: int = 0

    @property
    def pcm(self) -> np.ndarray:
        """The audio as the rig plays it: int16."""
        return to_int16(self.audio)


@dataclass
class Outcome:
    request: Request
    stored: list[str] = field(default_factory=list)  # user messages it left in the store
    latency_s: float = float("nan")
    sent_s: float = float("nan")
    cut_off: bool = False
    stages: dict[str, float] = field(default_factory=dict)  # the log's turn timings


def build_requests(quick: bool) -> list[Request]:
    refs = real_references()
    clips = {name: real_clip(name) for name in refs}
    requests = [Request(n, "single", clips[n], refs[n]) for n in LIBRIVOX + COMMANDS]
    for a, b, pause in JOINED:
        audio = np.concatenate([clips[a], np.zeros(RATE * pause // 1000, np.float32), clips[b]])
        requests.append(Request(f"{a}+{b}", "joined", audio, f"{refs[a]} {refs[b]}", pause))
    pauses = [500, 600, 700, 800]
    for name in LIBRIVOX:
        gaps = word_gaps(clips[name])
        # Up to four gaps spread over the sentence, never the first or last word's.
        picks = [gaps[i] for i in np.linspace(0, len(gaps) - 1, min(4, len(gaps))).astype(int)]
        for k, (start, end) in enumerate(dict.fromkeys(picks)):
            pause = pauses[(k + len(requests)) % len(pauses)]
            mid = (start + end) // 2
            audio = np.concatenate(
                [clips[name][:mid], np.zeros(RATE * pause // 1000, np.float32), clips[name][mid:]]
            )
            requests.append(
                Request(f"{name}@{mid / RATE:.2f}s", "paused", audio, refs[name], pause)
            )
    if quick:
        kinds = collections.defaultdict(list)
        for r in requests:
            kinds[r.kind].append(r)
        requests = [r for group in kinds.values() for r in group[:4]]
    return requests


def named_only(names: list[str]) -> list[Request]:
    """Requests run only when named (--request): jfk.flac, a noisy 1961 recording whose
    natural 1.1 s pause after "And so my fellow Americans" ends a turn, and whose next words
    Silero is unsure of (0.03-0.69); and any two real recordings with a pause between them,
    named ``A+B@MS`` (``librivox-0870+librivox-0880@1200``: a sentence that sounds finished,
    then one more over the fresh reply)."""
    requests = [Request("jfk", "single", load_16k(shared("jfk.flac")), reference("jfk.flac"))]
    refs = real_references()
    for name in names:
        pair, _, ms = name.partition("@")
        a, _, b = pair.partition("+")
        if a in refs and b in refs and ms.isdigit():
            gap = np.zeros(RATE * int(ms) // 1000, np.float32)
            audio = np.concatenate([real_clip(a), gap, real_clip(b)])
            requests.append(Request(name, "joined", audio, f"{refs[a]} {refs[b]}", int(ms)))
    return requests


def stored_user_messages(listener: Listener) -> list[str]:
    texts = []
    for session in listener.sessions():
        for message in session.get("messages", []):  # type: ignore[union-attr]
            if message.get("role") == "user":
                texts.append(str(message.get("content", message.get("text", ""))))
    return texts


def wait_settled(listener: Listener, timeout_s: float = 120.0) -> None:
    """Until the listener has been listening, with no turn in flight, for SETTLE_S."""
    deadline = time.monotonic() + timeout_s
    calm_since = None
    has_socket = listener.socket.exists()  # the baseline has no control socket: its log says
    while time.monotonic() < deadline:
        status = listener.ptt("status") if has_socket else "listening"
        now = time.monotonic()
        if status.endswith("listening") and listener.count("you said:") == listener.count(
            TURN_DONE
        ):
            calm_since = calm_since or now
            if now - calm_since >= SETTLE_S:
                return
        else:
            calm_since = None
        time.sleep(0.1)
    raise AssertionError(f"the listener did not settle:\n{listener.log()[-2000:]}")


STAGE = re.compile(r"(sent|endpoint|agent first text|released|first audio) ([+-]\d+\.\d+)s")


def turn_stages(log: str, turn: int) -> dict[str, float]:
    """The turn's timings line as seconds after the last voiced frame: sent, agent first
    text, agent done, released (the machine let the reply play), first audio."""
    lines = [line for line in log.splitlines() if TURN_DONE in line]
    if not 0 <= turn < len(lines):
        return {}
    found = STAGE.findall(lines[turn])
    return {("sent" if k == "endpoint" else k): float(v) for k, v in found}


LEARNT = "the echo canceller has learnt the room"


def speech_span(request: Request, heard: np.ndarray) -> tuple[float, float] | None:
    """Where the request's speech starts and ends in ``heard`` (seconds from its start):
    found by aligning the request, since with an echo path the reply is heard too."""
    pcm = request.pcm
    said = find_speech(pcm, min_gap_s=0.25)
    if not said or len(heard) < len(pcm) // 2:
        return None
    offset, _ = align(pcm, heard)
    return (offset / RATE + said[0][0], offset / RATE + said[-1][1])


def run_system(
    name: str,
    rig: PulseRig,
    requests: list[Request],
    workdir: Path,
    argv: list[str] | None,
    *,
    echo_path: bool = False,
    music_dbfs: float | None = None,
) -> list[Outcome]:
    outcomes = []
    listener = Listener(rig, workdir / name, CONFIG, argv=argv)
    with contextlib.ExitStack() as stack:
        if echo_path:
            stack.enter_context(rig.loopback())
        if music_dbfs is not None:  # a melody in the room for the whole run
            tones = music("melody", 25.0 * (len(requests) + 2), music_dbfs, seed=2)
            stack.callback(rig.feed(to_int16(tones), RATE).kill)
        stack.enter_context(listener)
        mic = stack.enter_context(rig.record_mic())
        spk = stack.enter_context(rig.record_speaker())
        time.sleep(1.0)
        # One request first (again, should its reply be too short): the reply teaches the
        # canceller the room.
        for _ in range(3 if echo_path else 0):
            rig.feed(requests[0].pcm, RATE).wait(60)
            wait_settled(listener)
            if listener.count(LEARNT):
                break
        if echo_path:
            print(f"  {name:8} echo canceller learnt the room: {listener.count(LEARNT) > 0}")
        for request in requests:
            log_before = len(listener.log())
            before = stored_user_messages(listener)
            turns_before = listener.count(TURN_DONE)
            fed_at = time.monotonic()
            rig.feed(request.pcm, RATE).wait(60)
            wait_settled(listener)
            outcome = Outcome(request, stored_user_messages(listener)[len(before) :])
            mic_rec, spk_rec = mic.snapshot(), spk.snapshot()
            span = speech_span(request, mic_rec.between(fed_at, time.monotonic()))
            if span:
                start = mic_rec.time_of(mic_rec.index_at(fed_at))
                speech_start, speech_end = start + span[0], start + span[1]
                out = spk_rec.between(speech_start, time.monotonic())
                sounds = [(speech_start + s, speech_start + e) for s, e in find_speech(out)]
                if sounds:
                    outcome.cut_off = sounds[0][0] < speech_end - 0.05
                    # A reply heard too soon stops as the user goes on: the latency is the
                    # reply to the whole request, the first to begin after the speech ends.
                    # One still playing as the speech ended may have run into it: untimed.
                    ended = speech_end - 0.05
                    if not any(s < ended < e for s, e in sounds):
                        answers = [s for s, _ in sounds if s >= ended]
                        if answers:
                            outcome.latency_s = answers[0] - speech_end
            outcome.stages = turn_stages(listener.log(), listener.count(TURN_DONE) - 1)
            outcome.sent_s = outcome.stages.get("sent", float("nan"))
            if listener.count(TURN_DONE) == turns_before:
                outcome.sent_s, outcome.stages = float("nan"), {}
            outcomes.append(outcome)
            if not outcome.stored:  # a request lost: show what the listener logged for it
                print(listener.log()[log_before:], flush=True)
            print(
                f"  {name:8} {request.kind:7} {request.name:32} turns {len(outcome.stored)} "
                f"latency {outcome.latency_s * 1000:6.0f} ms cut {int(outcome.cut_off)} "
                f"| {' / '.join(outcome.stored)[:70]}",
                flush=True,
            )
    return outcomes


def words_lost(reference: str, heard: str, stored: list[str]) -> int:
    """Words of the reference that the whole-file transcript got and no stored message has
    (as multisets): what the live loop lost, not what the model mishears either way."""
    right = collections.Counter(normalise(reference)) & collections.Counter(normalise(heard))
    missing = right - collections.Counter(normalise(" ".join(stored)))
    return sum(missing.values())


def pct(values: list[float], p: float) -> float:
    ok = [v for v in values if v == v]
    return float(np.percentile(ok, p)) * 1000 if ok else float("nan")


KINDS = ("single", "command", "joined", "paused", "all")  # command: the singles' commands


def of_kind(outcomes: list[Outcome], kind: str) -> list[Outcome]:
    if kind == "command":
        return [o for o in outcomes if o.request.name in COMMANDS]
    return [o for o in outcomes if kind in ("all", o.request.kind)]


def median_ms(values: list[float]) -> float:
    ok = [v for v in values if v == v]
    return statistics.median(ok) * 1000 if ok else float("nan")


def report_stages(results: dict[str, list[Outcome]]) -> None:
    """Where the time goes, from the project's log (seconds after the last voiced frame)."""
    print("\nwhere the time goes (medians, ms after the last voiced frame, from the log)")
    print(
        f"{'system':9} {'kind':7} {'sent':>6} {'agent text':>10} {'released':>8} "
        f"{'first audio':>11} {'synth+out':>9}"
    )
    for system, outcomes in results.items():
        for kind in KINDS:
            timed = [o.stages for o in of_kind(outcomes, kind) if "released" in o.stages]
            if not timed:
                continue
            nan = float("nan")
            # From when the reply could start (released, with its first text) to its sound.
            synth = [
                t.get("first audio", nan) - max(t["released"], t.get("agent first text", nan))
                for t in timed
            ]
            print(
                f"{system:9} {kind:7} {median_ms([t.get('sent', nan) for t in timed]):6.0f} "
                f"{median_ms([t.get('agent first text', nan) for t in timed]):10.0f} "
                f"{median_ms([t['released'] for t in timed]):8.0f} "
                f"{median_ms([t.get('first audio', nan) for t in timed]):11.0f} "
                f"{median_ms(synth):9.0f}"
            )


def report(results: dict[str, list[Outcome]], whole: dict[str, str]) -> None:
    print("\nper system and kind of request")
    head = (
        f"{'system':9} {'kind':7} {'n':>3} {'turns/req':>9} {'>1 turn':>7} {'cut-offs':>8} "
        f"{'lost':>5} {'WER live':>8} {'WER file':>8} {'sent p50':>8} {'timed':>5} {'p50 ms':>7}"
        f" {'p90 ms':>7}"
    )
    print(head)
    for system, outcomes in results.items():
        for kind in KINDS:
            group = of_kind(outcomes, kind)
            if not group:
                continue
            refs = " ".join(o.request.reference for o in group)
            live = " ".join(o.stored[-1] if o.stored else "" for o in group)
            file_text = " ".join(whole[o.request.name] for o in group)
            lost = sum(
                words_lost(o.request.reference, whole[o.request.name], o.stored) for o in group
            )
            sent = [o.sent_s for o in group if o.sent_s == o.sent_s]
            print(
                f"{system:9} {kind:7} {len(group):3} "
                f"{statistics.mean(len(o.stored) for o in group):9.2f} "
                f"{sum(len(o.stored) > 1 for o in group):7} {sum(o.cut_off for o in group):8} "
                f"{lost:5} {wer(refs, live):8.3f} {wer(refs, file_text):8.3f} "
                f"{statistics.median(sent) * 1000 if sent else float('nan'):8.0f} "
                f"{sum(o.latency_s == o.latency_s for o in group):5} "
                f"{pct([o.latency_s for o in group], 50):7.0f} "
                f"{pct([o.latency_s for o in group], 90):7.0f}"
            )
    if {"project", "baseline"} <= results.keys():
        p = pct([o.latency_s for o in results["project"] if o.request.kind == "single"], 50)
        b = pct([o.latency_s for o in results["baseline"] if o.request.kind == "single"], 50)
        print(f"\nsingle requests, p50 end of speech -> first reply: baseline/project {b / p:.2f}x")
    print(
        "\nturns/req: user messages stored per request (1 is right); cut-offs: a reply heard"
        " before the user had finished; lost: words of the reference the whole-file transcript"
        " has and no stored message has; WER live: the stored request against the reference;"
        " WER file: the same model on the whole audio; sent: the turn went to the agent, after"
        " the last voiced frame; timed, p50/p90: end of speech -> first sample of the reply to"
        " the whole request, from the recordings (after a cut-off, the reply that began once the"
        " user had finished)."
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["project", "baseline"])
    parser.add_argument("--quick", action="store_true", help="four requests of each kind")
    parser.add_argument(
        "--heard-over-reply", action="store_true", help="turn.barge_in: heard over the reply"
    )
    parser.add_argument(
        "--echo-path", action="store_true", help="the speaker heard by the microphone"
    )
    parser.add_argument(
        "--keep", type=Path, help="keep each listener's sessions and debug log in this directory"
    )
    parser.add_argument(
        "--music", type=float, metavar="DBFS", help="a melody at this level in the room"
    )
    parser.add_argument(
        "--request",
        action="append",
        metavar="NAME",
        help="only these requests (repeatable); A+B@MS: two recordings MS apart",
    )
    parser.add_argument("--repeat", type=int, default=1, help="say each request this often")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="a configuration value for this run (a TOML value), e.g. vad.pause_ms=120",
    )
    args = parser.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        table, _, name = key.partition(".")
        if not (table and name and value):
            parser.error(f"--set takes TABLE.KEY=VALUE, not {item!r}")
        CONFIG.setdefault(table, {})[name] = tomllib.loads(f"v = {value}")["v"]
    if args.keep:
        CONFIG.setdefault("ui", {})["log_level"] = "debug"
    if args.heard_over_reply:
        CONFIG.setdefault("turn", {})["barge_in"] = True
    requests = build_requests(args.quick)
    if args.request:
        requests = [r for r in requests + named_only(args.request) if r.name in args.request]
        if not requests:
            parser.error(f"no request is named {args.request}")
    requests = [r for r in requests for _ in range(args.repeat)]
    stt = WhisperTranscriber(SttConfig())
    unique = {r.name: r for r in requests}.values()  # a repeated request is transcribed once
    whole = {r.name: stt.transcribe_audio(r.audio, fast=False).text for r in unique}
    print(
        f"{len(requests)} requests: "
        + ", ".join(
            f"{k} {sum(r.kind == k for r in requests)}" for k in ("single", "joined", "paused")
        )
    )
    systems = {"project": None, "baseline": [sys.executable, str(REPO / "bench/baseline_loop.py")]}
    results: dict[str, list[Outcome]] = {}
    with tempfile.TemporaryDirectory() as tmp, PulseRig() as rig:
        for name, argv in systems.items():
            if args.only in (None, name):
                results[name] = run_system(
                    name,
                    rig,
                    requests,
                    args.keep or Path(tmp),
                    argv,
                    echo_path=args.echo_path,
                    music_dbfs=args.music,
                )
    report(results, whole)
    report_stages(results)
    dump = {
        s: [
            {"name": o.request.name, "kind": o.request.kind, "stored": o.stored,
             "latency_s": o.latency_s, "sent_s": o.sent_s, "cut_off": o.cut_off}
            for o in outs
        ]
        for s, outs in results.items()
    }  # fmt: skip
    Path(tempfile.gettempdir(), "bench_real_voices.json").write_text(json.dumps(dump, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
