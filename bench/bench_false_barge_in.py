"""A sound with no words over the reply: does the reply go on? Real voices: do they still stop it?

    python bench/bench_false_barge_in.py [--runs 8] [--dbfs -20] [--backchannels 0]
                                         [--voices 4] [--against DIR] [--keep DIR]

In the PulseAudio rig, the speaker looped into the microphone at full level (a desk), and
``voice-assistant listen --agent echo`` with echo cancellation on. One request teaches the
canceller the room. Then each run asks the question again and, 1.5 s into its reply, plays
into the microphone:

- a wordless sound: 1.2 s of a melody of music-like tones (tests/voice/room_sounds.py, one
  seed per run), by default about as loud as the reply's echo (-20 dBFS). Over the echo,
  Silero can take it for a voice. Counted per run, from the listener's log and session store:
  the reply paused for it, stopped for good (what it had left never played; on words heard
  in the sound, or as the question going on), went on after being held for words, and
  requests made of the sound (Whisper heard words in it);
- then ``--backchannels`` short listening words ("Mm-hmm.", "Okay.", "I see."), said by the
  project's own voice (no real recordings of them are at hand) as loud as the echo: counted
  as stopped for good, went on, and requests made of them;
- then ``--voices`` real voices (../shared/audio/real, as loud as the echo) said over the
  reply: each must still stop it and be answered (stored turn, WER against its transcript).
  How soon the reply falls silent is bench_echo.py's measure.

Runs whose reply was gated by a stall or an underrun (half-duplex: nothing is heard over it)
are counted apart. ``--against DIR`` runs the same sounds and voices, with the same seeds,
through another checkout of the project (a git worktree of the release before) right after
this one, and prints both side by side. ``--keep DIR`` keeps each listener's log and sessions.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_echo import PAUSING, QUESTION, STOPPING, VOICES, gated  # noqa: E402

from tests.listener import TURN_DONE, Listener  # noqa: E402
from tests.rig import RATE, PulseRig, as_loud_as, wait_for_sound  # noqa: E402
from tests.voice.audio_util import (  # noqa: E402
    real_clip,
    real_references,
    speech,
    to_int16,
    wer,
)
from tests.voice.room_sounds import music  # noqa: E402
from voice.config import TtsConfig  # noqa: E402
from voice.tts import PiperSynthesizer  # noqa: E402

WENT_ON = "going on with the reply"
INTERRUPTING = "interrupting the agent"
SAID_RE = re.compile(r"you said: (.*)")
HELD_ON = "going on with the reply: no words were heard"  # this release's word for it
OWN_WORDS = "the reply's own words, heard back"  # its echo, dropped or cut (this release)
INTO_REPLY_S = 1.5
SOUND_S = 1.2
BACKCHANNELS = ("Mm-hmm.", "Okay.", "I see.", "Uh-huh.", "Yeah, right.", "Oh.")
CONFIG: dict[str, dict[str, object]] = {
    "audio": {"echo_cancel": "on"},
    "earcons": {"enabled": False},
}


@dataclass
class Outcome:
    runs: int = 0
    gated: int = 0
    paused: int = 0
    stopped: int = 0
    on_words: int = 0
    question_went_on: int = 0
    went_on: int = 0
    held_on: int = 0
    extra_turns: int = 0
    own_words: int = 0
    backchannels: int = 0
    backchannels_gated: int = 0
    backchannels_stopped: int = 0
    backchannels_went_on: int = 0
    backchannels_sent: int = 0
    voices: int = 0
    voices_gated: int = 0
    voices_stopped: int = 0
    voices_answered: int = 0
    voice_wers: list[float] = field(default_factory=list)


def run_system(
    rig: PulseRig,
    code: Path | None,
    runs: int,
    dbfs: float,
    backchannels: int,
    voices: int,
    workdir: Path,
) -> Outcome:
    tts = PiperSynthesizer(TtsConfig())
    question = speech(tts, QUESTION)
    references = real_references()
    env = {"PYTHONPATH": str(code)} if code is not None else None
    out = Outcome()
    listener = Listener(rig, workdir, CONFIG, env=env)
    with rig.loopback(), listener, rig.record_speaker() as speaker:

        def ask_and_play(sound: object) -> int:
            """Ask, and play ``sound`` 1.5 s into the reply; the log's length before."""
            since = len(listener.log())
            rig.feed(question, RATE).wait(30)
            started_s = wait_for_sound(speaker, time.monotonic())
            time.sleep(max(0.0, started_s + INTO_REPLY_S - time.monotonic()))
            rig.feed(sound, RATE).wait(30)  # type: ignore[arg-type]
            return since

        rig.feed(question, RATE).wait(30)  # learn the room
        listener.wait_for_log(TURN_DONE, timeout_s=60)
        done = listener.settled()
        for seed in range(1, runs + 1):
            since = ask_and_play(to_int16(music("melody", SOUND_S, dbfs, seed=seed)))
            listener.wait_for_log(TURN_DONE, count=done + 1, timeout_s=60)
            done = listener.settled()
            log = listener.log()
            run = log[since:]
            paused, stopped, went_on, held_on = (
                s in run for s in (PAUSING, STOPPING, WENT_ON, HELD_ON)
            )
            on_words = f"{STOPPING}: heard" in run
            own_words = OWN_WORDS in run
            question_went_on = INTERRUPTING in run  # the question's turn was open still
            made = [m for m in SAID_RE.findall(run) if wer(QUESTION, m) > 0.5]
            if gated(log, since):
                out.gated += 1
                print(f"  sound {seed}: the reply was gated (a stall or an underrun)")
                continue
            out.runs += 1
            out.paused += paused
            out.stopped += stopped
            out.on_words += on_words
            out.question_went_on += question_went_on
            out.went_on += went_on
            out.held_on += held_on
            out.extra_turns += len(made)
            out.own_words += own_words
            print(
                f"  sound {seed}: paused {paused:d} stopped {stopped:d} (on words {on_words:d}, "
                f"as the question going on {question_went_on:d}) went on {went_on:d} (held for "
                f"words {held_on:d}); requests made of it {made}; echo words dropped or cut "
                f"{own_words:d}"
            )
        for i in range(backchannels):
            words = BACKCHANNELS[i % len(BACKCHANNELS)]
            since = ask_and_play(as_loud_as(speech(tts, words), question))
            listener.wait_for_log(TURN_DONE, count=done + 1, timeout_s=60)
            done = listener.settled()
            log = listener.log()
            run = log[since:]
            if gated(log, since):
                out.backchannels_gated += 1
                print(f"  {words!r}: the reply was gated (a stall or an underrun)")
                continue
            stopped, went_on = STOPPING in run, WENT_ON in run
            made = [m for m in SAID_RE.findall(run) if wer(QUESTION, m) > 0.5]
            out.backchannels += 1
            out.backchannels_stopped += stopped
            out.backchannels_went_on += went_on
            out.backchannels_sent += len(made)
            print(
                f"  {words!r}: stopped {stopped:d} went on {went_on:d}; requests made of it {made}"
            )
        for i in range(voices):
            name = VOICES[i % len(VOICES)]
            voice = as_loud_as(to_int16(real_clip(name)), question)
            stops = listener.count(STOPPING)
            since = ask_and_play(voice)
            try:
                listener.wait_for_log(TURN_DONE, count=done + 2, timeout_s=60)
            except AssertionError:
                if not gated(listener.log(), since):
                    raise
            done = listener.settled()
            if gated(listener.log(), since):
                out.voices_gated += 1
                print(f"  voice {name}: the reply was gated (a stall or an underrun)")
                continue
            out.voices += 1
            stopped = listener.count(STOPPING) > stops
            said = listener.turns()[-1]["said"]
            error = wer(references[name], said)
            out.voices_stopped += stopped
            out.voices_answered += error <= 0.5
            out.voice_wers.append(error)
            print(f"  voice {name}: stopped {stopped:d}, heard {said!r} (WER {error:.2f})")
    return out


def report(outcomes: dict[str, Outcome], dbfs: float) -> None:
    print(f"\na melody ({SOUND_S:g} s at {dbfs:g} dBFS) over the reply, {INTO_REPLY_S:g} s in:")
    print(f"{'system':<16}{'runs':>5}{'paused':>8}{'stopped':>9}{'on words':>10}"
          f"{'went on':>9}{'held':>6}{'requests':>10}{'echo':>6}{'question':>10}"
          f"{'gated':>7}")  # fmt: skip
    for name, o in outcomes.items():
        print(f"{name:<16}{o.runs:>5}{o.paused:>8}{o.stopped:>9}{o.on_words:>10}"
              f"{o.went_on:>9}{o.held_on:>6}{o.extra_turns:>10}{o.own_words:>6}"
              f"{o.question_went_on:>10}{o.gated:>7}")  # fmt: skip
    if any(o.backchannels or o.backchannels_gated for o in outcomes.values()):
        print("\nbackchannels over the reply (the project's voice, as loud as the echo):")
        print(f"{'system':<16}{'runs':>5}{'stopped':>9}{'went on':>9}{'requests':>10}{'gated':>7}")
        for name, o in outcomes.items():
            print(f"{name:<16}{o.backchannels:>5}{o.backchannels_stopped:>9}"
                  f"{o.backchannels_went_on:>9}{o.backchannels_sent:>10}"
                  f"{o.backchannels_gated:>7}")  # fmt: skip
    print("\nreal voices over the reply (as loud as its echo):")
    print(f"{'system':<16}{'runs':>5}{'stopped':>9}{'answered':>10}{'WER p50':>9}{'gated':>7}")
    for name, o in outcomes.items():
        p50 = statistics.median(o.voice_wers) if o.voice_wers else float("nan")
        print(f"{name:<16}{o.voices:>5}{o.voices_stopped:>9}{o.voices_answered:>10}"
              f"{p50:>9.2f}{o.voices_gated:>7}")  # fmt: skip
    print(
        "\npaused: the reply fell silent for the sound; stopped: for good (what it had left "
        "never played); on words: ... by words heard in the sound (this release logs them); "
        "went on: it played on after the pause; held: ... after a voice was confirmed and no "
        "words were heard (this release); requests: made of the sound; echo: runs where the "
        "reply's own words were heard, and dropped or cut (this release); question: runs where "
        "the sound came while the question's turn was still open, and was taken for the "
        "question going on (the agent interrupted, the question sent again); gated: runs with "
        "a stall or an underrun, not counted. answered: the voice's turn was stored with "
        "WER <= 0.5."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="wordless sounds, one per reply")
    parser.add_argument("--dbfs", type=float, default=-20.0, help="the sound's level")
    parser.add_argument("--backchannels", type=int, default=0, help="'mm-hmm' over the reply")
    parser.add_argument("--voices", type=int, default=4, help="real voices over the reply")
    parser.add_argument("--against", type=Path, help="another checkout, run after this one")
    parser.add_argument("--keep", type=Path, help="keep each listener's log and sessions here")
    args = parser.parse_args()
    systems: dict[str, Path | None] = {"this checkout": None}
    if args.against is not None:
        systems[f"against {args.against.name}"] = args.against.resolve()
    outcomes: dict[str, Outcome] = {}
    with PulseRig() as rig, tempfile.TemporaryDirectory(prefix="bench-false-") as tmp:
        for i, (name, code) in enumerate(systems.items()):
            print(f"{name}:")
            workdir = (args.keep or Path(tmp)) / f"listen-{i}"
            outcomes[name] = run_system(
                rig, code, args.runs, args.dbfs, args.backchannels, args.voices, workdir
            )
    report(outcomes, args.dbfs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
