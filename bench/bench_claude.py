"""Claude Code as the voice agent: start-up per turn, speed of speech, tools heard in time.

    python bench/bench_claude.py [--turns 20] [--rig-turns 8]

The real CLI (.tools, from npm) runs offline against the scripted Messages API of
tests/claude_api.py, so it does its real tool loop; only the model is scripted.

1. Prompt -> first ``text_delta`` event, a process per turn (``claude -p ... --resume``, what a
   plain front-end does) against the long-lived stream-json process per room: median of
   ``--turns`` each, in one run.
2. In the PulseAudio rig, ``voice-assistant listen`` with the real CLI, a real voice asking:
   the first ``text_delta`` leaving the API -> the first reply sample on the speaker monitor
   (one clock), and whether the sentences written before a 5-second tool call are heard before
   that tool has finished (the CLI's next API request), every time. The scripted model
   writes at ``--pace-ms`` a delta (6 characters), about 60 tokens a second, as a real one
   does: a front-end that waits for a whole message (or a paragraph) is heard later.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.agent import AgentRunner  # noqa: E402
from core.agent_events import AgentEvent, AgentTurn, TextDelta  # noqa: E402
from core.claude import ClaudeSessions, claude_argv  # noqa: E402
from tests.claude_api import ClaudeApi, Reply, Text, ToolUse  # noqa: E402
from tests.claude_fixtures import find_claude  # noqa: E402
from tests.listener import TURN_DONE, Listener  # noqa: E402
from tests.rig import PulseRig  # noqa: E402
from tests.voice.audio_util import real_clip, to_int16  # noqa: E402


def first_delta_s(agent: AgentRunner | ClaudeSessions, turn: AgentTurn) -> tuple[float, str | None]:
    """Seconds from the call to the first text delta, and the conversation id."""
    started = time.monotonic()
    seen: list[float] = []

    def on_event(event: AgentEvent) -> None:
        if isinstance(event, TextDelta) and not seen:
            seen.append(time.monotonic())

    result = agent.run_turn(AgentTurn(turn.prompt, turn.room_id, turn.session_id, on_event))
    return (seen[0] - started if seen else float("nan")), result.session_id


def startup(turns: int, workdir: Path) -> dict[str, list[float]]:
    claude = find_claude()
    out: dict[str, list[float]] = {}
    for name in ("process per turn", "long-lived"):
        with ClaudeApi() as api:
            api.script(*[Reply([Text("Sure, done.")]) for _ in range(turns + 2)])
            cwd = workdir / name.replace(" ", "-")
            cwd.mkdir()
            env = api.env(workdir / f"home-{cwd.name}")
            agent: AgentRunner | ClaudeSessions
            if name == "long-lived":
                agent = ClaudeSessions(claude_argv([claude], session=True), 120, cwd, env=env)
                agent.prepare("desk", None)  # the listener starts it before the first turn
                time.sleep(3)
            else:
                agent = AgentRunner(claude_argv([claude], session=False), 120, cwd, env=env)
            session = None
            times = []
            for n in range(turns):
                took, session = first_delta_s(agent, AgentTurn(f"turn {n}", "desk", session))
                times.append(took)
            if isinstance(agent, ClaudeSessions):
                agent.stop()
            out[name] = times
            print(f"  {name:17} " + " ".join(f"{t * 1000:.0f}" for t in times), flush=True)
    return out


def rig(
    turns: int, workdir: Path, *, heard_over_reply: bool = False, pace_s: float = 0.0
) -> tuple[list[float], list[float]]:
    """(first delta -> first reply sample, first sentence heard -> tool finished), seconds.
    Half-duplex (the rig has no echo path) the reply waits for the longest pause."""
    latencies, margins = [], []
    with ClaudeApi() as api, PulseRig() as pulse:
        for _ in range(turns):
            api.script(
                Reply(
                    [
                        Text("Let me look at the files. I will list them first.", chunk_chars=6),
                        ToolUse("Bash", {"command": "sleep 5", "description": "Wait a moment"}),
                    ],
                    delay_s=pace_s,
                ),
                Reply([Text("The folder has three files.")]),
            )
        cwd = workdir / "rig-project"
        cwd.mkdir()
        config: dict[str, dict[str, object]] = {
            "agent": {"cwd": str(cwd), "allowed_tools": ["Bash"], "tools": "off"},
            "earcons": {"enabled": False},
        }
        if heard_over_reply:  # as with a headset, or a learnt echo canceller
            config["turn"] = {"barge_in": True}
        env = api.env(workdir / "rig-home", base={})
        listener = Listener(pulse, workdir / "rig-listen", config, agent=find_claude(), env=env)
        ask = to_int16(real_clip("goforward"))
        with listener, pulse.record_speaker() as spk:
            time.sleep(3)  # the room's Claude process starts with the listener
            for n in range(turns):
                requests_before = len(api.turns)
                pulse.feed(ask, 16000).wait(30)
                listener.wait_for_log(TURN_DONE, count=n + 1, timeout_s=120)
                time.sleep(2.5)
                first_api, tool_done = api.turns[requests_before], api.turns[requests_before + 1]
                rec = spk.snapshot()
                bursts = [b for b in rec.speech(min_gap_s=0.6) if b[1] > first_api.received_at]
                sent = first_api.first_text_at
                if not bursts or sent is None:
                    latencies.append(float("nan"))
                    margins.append(float("nan"))
                    continue
                latencies.append(bursts[0][0] - sent)
                margins.append(tool_done.received_at - bursts[0][1])
                print(
                    f"  rig turn {n + 1}: first delta -> first sample "
                    f"{latencies[-1] * 1000:.0f} ms, sentence ended "
                    f"{margins[-1] * 1000:.0f} ms before the tool did",
                    flush=True,
                )
    return latencies, margins


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--rig-turns", type=int, default=8)
    parser.add_argument(
        "--heard-over-reply",
        action="store_true",
        help="turn.barge_in in the rig: the user is heard over the reply, so it is not held",
    )
    parser.add_argument(
        "--pace-ms",
        type=float,
        default=25.0,
        help="in the rig, the scripted model's time per delta of 6 characters (0: at once)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("prompt -> first text_delta event (ms):")
        times = startup(args.turns, Path(tmp))
        latencies, margins = (
            rig(
                args.rig_turns,
                Path(tmp),
                heard_over_reply=args.heard_over_reply,
                pace_s=args.pace_ms / 1000,
            )
            if args.rig_turns
            else ([], [])
        )
    per_turn = statistics.median(times["process per turn"])
    long_lived = statistics.median(times["long-lived"])
    print(f"\n{'agent':17} {'turns':>5} {'median ms':>10} {'min ms':>7} {'max ms':>7}")
    for name, values in times.items():
        print(
            f"{name:17} {len(values):5} {statistics.median(values) * 1000:10.0f} "
            f"{min(values) * 1000:7.0f} {max(values) * 1000:7.0f}"
        )
    print(f"process per turn / long-lived = {per_turn / long_lived:.1f}x")
    if latencies:
        ok = [x for x in latencies if x == x]
        heard_first = sum(m > 0 for m in margins if m == m)
        print(
            f"\nrig, {len(ok)} turns: first text_delta sent -> first reply sample "
            f"p50 {np.percentile(ok, 50) * 1000:.0f} ms, p90 {np.percentile(ok, 90) * 1000:.0f} ms;"
            f" the sentences before the 5 s tool were heard before the tool ended in "
            f"{heard_first} of {len(margins)} turns (median margin "
            f"{statistics.median([m for m in margins if m == m]) * 1000:.0f} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
