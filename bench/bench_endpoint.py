"""End of turn: false cut-offs on pauses inside sentences, and how soon complete commands end.

    python bench/bench_endpoint.py [--pause-ms 500]

Speech is made with the Piper voice; for each sentence, a real pause is spliced in after a
word a thought cannot end on ("Set a timer for | ten minutes."). Each clip plays at real-time
pace into the live VoiceLoop with the real segmenter and Whisper (tests/voice/scripted_loop.py).
A false cut-off is a turn that ends inside the sentence. For complete commands (no pause), the
delay from the end of speech to the end of the turn is counted in audio frames consumed.

- smart:     the default: end after turn.quick_hangover_ms when the speculative transcript is
             a complete sentence, else after vad.hangover_ms
- fixed:     turn.smart_endpoint = false: always the full vad.hangover_ms
- quick:     a hangover as short as quick_hangover_ms for everything, no completeness check
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.voice.fakes import FRAME_MS  # noqa: E402
from tests.voice.scripted_loop import RATE, concat, gap, run_loop, said  # noqa: E402
from voice.config import Config, SttConfig, TtsConfig  # noqa: E402
from voice.stt import WhisperTranscriber  # noqa: E402
from voice.tts import PiperSynthesizer  # noqa: E402

SPLIT = (
    ("Set a timer for", "ten minutes."),
    ("Remind me to call", "my mother tomorrow."),
    ("Send a message to", "John."),
    ("Play some music by", "the Beatles."),
    ("Add milk, eggs and", "bread to my list."),
    ("How long does it take to", "boil an egg?"),
    ("Turn on the lights in the", "kitchen."),
    ("Open the door for", "the delivery man."),
    ("What is the weather", "like in Paris?"),
    ("Turn on the kitchen lights", "and the hallway lights."),
)
COMMANDS = (
    "What time is it?",
    "Turn on the kitchen lights.",
    "Set a timer for ten minutes.",
    "What is the weather like tomorrow?",
    "Play some relaxing music.",
    "How far away is the moon?",
    "Remind me to call my mother.",
    "Tell me a short joke.",
)


def systems(config: Config) -> dict[str, Config]:
    quick = config.turn.quick_hangover_ms
    return {
        "smart": config,
        "fixed": dataclasses.replace(
            config, turn=dataclasses.replace(config.turn, smart_endpoint=False)
        ),
        "quick": dataclasses.replace(
            config,
            vad=dataclasses.replace(config.vad, hangover_ms=quick, pause_ms=min(200, quick)),
            turn=dataclasses.replace(config.turn, smart_endpoint=False),
        ),
    }


def play(stt: WhisperTranscriber, audio, config: Config) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    """The messages the agent got, and how many frames had been heard at the first one."""
    total_frames = len(audio) * 1000 // RATE // FRAME_MS
    with run_loop(stt, audio, config) as (source, conversation):
        conversation.received.wait(30)
        first = source.frames_read
        deadline = time.monotonic() + 30
        while source.frames_read < total_frames and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        return [text for _room, text in conversation.messages], first


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause-ms", type=int, default=500)
    args = parser.parse_args()
    tts = PiperSynthesizer(TtsConfig())
    stt = WhisperTranscriber(SttConfig())
    stt.warm_up()
    config = Config()
    print(
        f"hangover {config.vad.hangover_ms} ms, quick hangover {config.turn.quick_hangover_ms} ms,"
        f" spliced pause {args.pause_ms} ms\n"
    )
    cutoffs: dict[str, int] = {}
    print("pauses inside sentences (a cut-off ends the turn at the pause)")
    for name, cfg in systems(config).items():
        cutoffs[name] = 0
        for head, tail in SPLIT:
            before = concat(gap(300), said(tts, head), gap(args.pause_ms), said(tts, tail))
            messages, first = play(stt, concat(before, gap(2000)), cfg)
            whole = f"{head} {tail}"
            # Cut off: the turn ended before the end of the sentence was even heard.
            cut = first < len(before) * 1000 // RATE // FRAME_MS
            cutoffs[name] += cut
            print(f"  {name:6} {'CUT ' if cut else 'ok  '} {whole!r:50} -> {messages}")
    delays: dict[str, list[int]] = {}
    print("\ncomplete commands: end of speech -> end of turn (audio frames heard, in ms)")
    for name, cfg in systems(config).items():
        delays[name] = []
        for command in COMMANDS:
            speech = said(tts, command)
            audio = concat(gap(300), speech, gap(2000))
            end_frame = (RATE * 300 // 1000 + len(speech)) * 1000 // RATE // FRAME_MS
            messages, first = play(stt, audio, cfg)
            delays[name].append((first - end_frame) * FRAME_MS)
        print(f"  {name:6} {delays[name]}")

    print(f"\n{'system':8} {'false cut-offs':>16} {'median turn end':>16}")
    for name, count in cutoffs.items():
        print(f"{name:8} {count:>10} / {len(SPLIT):<3} {statistics.median(delays[name]):>12.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
