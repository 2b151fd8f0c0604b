"""The baseline for bench_real_voices.py: a plain sequential voice loop with the same parts.

    python bench/baseline_loop.py listen --config FILE --agent echo

What a straightforward implementation does: webrtcvad's verdicts taken as they are and an
800 ms hangover, the whole utterance transcribed on Whisper's stock 30 s window, the agent run
to completion, the whole reply synthesized by Piper as it comes, then played. Same models,
devices and core as the project; only the turn-taking differs. It logs the same "ready in"
and "turn timings:" lines as ``voice-assistant listen`` so tests/listener.py can drive it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from voice import app  # noqa: E402
from voice.config import Config, load  # noqa: E402
from voice.devices import Microphone, Speaker  # noqa: E402
from voice.models import default_models_dir, resolve_piper_voice  # noqa: E402
from voice.speech_text import speakable  # noqa: E402
from voice.vad import Segmenter, UtteranceEnded, WebRtcDetector  # noqa: E402

log = logging.getLogger("voice.turns")  # same logger name as the project, for the harness


def plain_piper(config: Config) -> tuple[Any, int]:
    """Piper as a plain loop would use it: its own loader and output, no trimming."""
    from piper import PiperVoice

    onnx, _json = resolve_piper_voice(config.tts.voice, models_dir=default_models_dir())
    voice = PiperVoice.load(str(onnx))
    next(iter(voice.synthesize("Warm up.")))
    return voice, int(voice.config.sample_rate)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["listen"])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--agent")
    args = parser.parse_args()
    config = load(args.config)
    config = dataclasses.replace(
        config,
        vad=dataclasses.replace(config.vad, hangover_ms=800, pause_ms=800, tail_gate_db=0.0),
        stt=dataclasses.replace(config.stt, fast_window=False),
    )
    app.configure_logging("info")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    core = app.build_core(config, agent=args.agent)
    stt = app.load_stt(config)
    voice, voice_rate = plain_piper(config)
    segmenter = Segmenter(config.vad, WebRtcDetector(config.vad.aggressiveness))
    with Microphone(config.audio) as mic, Speaker(config.audio) as speaker:
        log.info("ready in %.1f s", time.monotonic() - started)
        while not stop.is_set():
            chunk = mic.read(0.1)
            if chunk is None:
                continue
            for event in segmenter.push(chunk):
                if not isinstance(event, UtteranceEnded):
                    continue
                utterance = event.utterance
                ended = time.monotonic()
                text = stt.transcribe(utterance).text.strip()
                heard = time.monotonic()
                if not text:
                    continue
                log.info("you said: %s", text)
                reply = core.send_message(config.turn.room, text)
                answered = time.monotonic()
                samples = np.concatenate(
                    [c.audio_int16_array for c in voice.synthesize(speakable(reply))]
                )
                speaker.play(samples, voice_rate)
                first_audio = time.monotonic()
                log.info("reply: %s", reply)
                log.info(
                    "turn timings: endpoint %+.2fs, transcript %+.2fs, agent done %+.2fs, "
                    "first audio %+.2fs",
                    *(t - utterance.end_s for t in (ended, heard, answered, first_audio)),
                )
                speaker.wait(60)
                time.sleep(config.turn.cooldown_ms / 1000)
                mic.drain()
                segmenter.reset()
    return 0


if __name__ == "__main__":
    sys.exit(main())
