"""The speech gate in front of the wake word model: the same detections for less work.

    python bench/bench_wake_gate.py [--floors -60,-40] [--lead-s 20]

SUPPLEMENT: no real recording says a wake word, so the project's Piper voice says each
built-in model's word (3 speaking rates x 3 renderings x -20 and -35 dBFS) after
``--lead-s`` seconds of a quiet room (pink noise at each ``--floors`` level, dBFS), as a
word comes after a long silence in use. Each clip goes through the model alone and through
:class:`voice.wake.SpeechGatedWake` (webrtcvad at aggressiveness 1, as the listener builds
it), with no reset in between, and the figures print side by side: words detected, and the
feature slices the model was given (its work), with the CPU seconds of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_wake import MODELS, detector, level, run_detector  # noqa: E402
from tests.voice.audio_util import RATE, speech  # noqa: E402
from tests.voice.room_sounds import noise  # noqa: E402
from voice.config import TtsConfig  # noqa: E402
from voice.tts import PiperSynthesizer  # noqa: E402
from voice.vad import WebRtcDetector  # noqa: E402
from voice.wake import SpeechGatedWake  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--floors", default="-60,-40", help="noise floors, dBFS")
    parser.add_argument("--lead-s", type=float, default=20.0)
    args = parser.parse_args()
    voices = [PiperSynthesizer(TtsConfig(length_scale=s)) for s in (0.8, 1.0, 1.25)]
    print(f"{'model':12} {'floor':>6} {'detected':>15} {'slices fed':>19} {'CPU s':>13}")
    print(f"{'':12} {'dBFS':>6} {'alone':>7} {'gated':>7} {'alone':>9} {'gated':>9} "
          f"{'alone':>6} {'gated':>6}")  # fmt: skip
    for floor_db in (float(f) for f in args.floors.split(",")):
        for model, phrase in MODELS.items():
            hits = {False: 0, True: 0}
            fed = {False: 0, True: 0}
            cpu = {False: 0.0, True: 0.0}
            clips = 0
            for voice in voices:
                for rendering in range(3):
                    said = speech(voice, phrase).astype(np.float32) / 32768
                    for word_dbfs in (-20, -35):
                        word = level(said, word_dbfs)
                        start = int(args.lead_s * RATE)
                        audio = noise("pink", args.lead_s + 5, floor_db, rendering)
                        audio = audio.astype(np.float32)
                        audio[start : start + len(word)] += word
                        clips += 1
                        for gated in (False, True):
                            inner = detector(model)
                            wake = SpeechGatedWake(inner, WebRtcDetector(1)) if gated else inner
                            t0 = time.process_time()
                            found, _ = run_detector(wake, audio)
                            cpu[gated] += time.process_time() - t0
                            end_s = args.lead_s + len(word) / RATE + 0.6
                            hits[gated] += any(args.lead_s < d.at_s < end_s for d in found)
                            fed[gated] += inner._fed
            print(
                f"{model:12} {floor_db:6.0f} {hits[False]:3}/{clips:<3} {hits[True]:3}/{clips:<3}"
                f" {fed[False]:9} {fed[True]:9} {cpu[False]:6.1f} {cpu[True]:6.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
