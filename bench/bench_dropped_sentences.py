"""Sentences lost from requests of a short command and a long sentence, in the live loop.

    python bench/bench_dropped_sentences.py

tiny.en can end the transcript of several sentences after the first. Each request here is a
real spoken command and a real read sentence (or the other way round) 150 or 250 ms apart,
played at real-time pace into the live loop with the real segmenter, Whisper and smart-turn
(the agent and the speaker are fakes, half-duplex). A sentence is lost when under half of
its words are in the last message the agent got. Run it on two checkouts to compare them
(PYTHONPATH=<checkout>).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.voice.audio_util import normalise, real_clip, real_references  # noqa: E402
from tests.voice.fakes import FRAME_MS  # noqa: E402
from tests.voice.scripted_loop import RATE, concat, gap, run_loop  # noqa: E402
from voice.config import Config, SttConfig  # noqa: E402
from voice.smart_turn import SmartTurnModel  # noqa: E402
from voice.stt import WhisperTranscriber  # noqa: E402

COMMANDS = ("goforward", "cards-001", "cards-002")
SENTENCES = ("librivox-0870", "librivox-0920")
GAPS_MS = (150, 250)


def heard(reference: str, said: str) -> bool:
    want = collections.Counter(normalise(reference))
    got = sum((want & collections.Counter(normalise(said))).values())
    return got >= sum(want.values()) / 2


def main() -> int:
    stt = WhisperTranscriber(SttConfig())
    stt.warm_up()
    model = SmartTurnModel()
    model.warm_up()
    refs = real_references()
    requests = [(c, s) for c in COMMANDS for s in SENTENCES] + [(s, "cards-003") for s in SENTENCES]
    lost_requests = lost_sentences = total = 0
    for gap_ms in GAPS_MS:
        for names in requests:
            audio = concat(
                gap(300), real_clip(names[0]), gap(gap_ms), real_clip(names[1]), gap(3000)
            )
            with run_loop(stt, audio, Config(), turn_model=model) as (source, conversation, loop):
                conversation.received.wait(60)
                while source.frames_read * FRAME_MS * RATE // 1000 < len(audio):
                    time.sleep(0.1)
                deadline = time.monotonic() + 60
                while loop.busy and time.monotonic() < deadline:
                    time.sleep(0.1)
                threading.Event().wait(0.5)
            said = conversation.messages[-1][1] if conversation.messages else ""
            lost = [n for n in names if not heard(refs[n], said)]
            total += len(names)
            lost_sentences += len(lost)
            lost_requests += bool(lost)
            mark = f"LOST {', '.join(lost)}" if lost else "whole"
            print(f"{gap_ms:4} ms  {' + '.join(names):32} {mark:28} | {said[:70]}")
    runs = len(GAPS_MS) * len(requests)
    print(
        f"\n{runs} requests ({total} sentences): a sentence lost in {lost_requests}, "
        f"{lost_sentences} sentences lost"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
