"""Wake word and Silero VAD: detection, false wakes, onsets, and what listening costs.

    python bench/bench_wake.py [--hours 1] [--renderings 3] [--idle-seconds 30] [--no-rig]

1. Detection rate, per built-in model. SUPPLEMENT: no real recording in ../shared/audio says
   a wake word, so the project's own Piper voice says it (length_scale 0.8 / 1.0 / 1.25,
   --renderings random prosodies each, at -20 and -35 dBFS), mixed onto real background speech
   (the real recordings, looped) at 10 dB and 0 dB below the word, and alone. A single
   synthetic voice; how real voices fare is not measured here. Also: how long after the word
   the detection comes, and how far from the word's end the request is cut.
2. False wakes per hour on real speech: every real recording (13 clips, 66 s of unique
   speech; real/*.wav, jfk.flac, digits.wav), looped for --hours at speeds 0.9-1.1 (pitch
   moves with them) and -35 to -15 dBFS, with short gaps, over a faint pink-noise floor. The
   same hour through every model. Looping makes it an hour of audio, not an hour of new
   talk: a model that fires on one of these phrases fires on it many times.
3. Silero after webrtcvad: onsets on an hour of generated noise and music-like tones with and
   without it (how often webrtcvad alone would start a turn), and on the real recordings how
   much later Silero confirms the onset than webrtcvad alone (the pre-roll is 300 ms).
4. Idle CPU and memory of `voice-assistant listen` in the PulseAudio rig in vad and wake
   mode (bench_idle.py's measurement), with silence and with pink noise into the microphone.

Run on a quiet machine (see `uptime`); the figures print side by side at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_idle import Idle, measure_idle  # noqa: E402
from tests.voice.audio_util import RATE, speech  # noqa: E402
from tests.voice.room_sounds import music, noise, real_speech, varied  # noqa: E402
from voice.audio import AudioChunk, float_to_pcm  # noqa: E402
from voice.config import TtsConfig, VadConfig  # noqa: E402
from voice.models import resolve_silero_model  # noqa: E402
from voice.silero import SileroModel, SileroOnset  # noqa: E402
from voice.tts import PiperSynthesizer  # noqa: E402
from voice.vad import Segmenter, SpeechStarted, WebRtcDetector  # noqa: E402
from voice.wake import MicroWakeWordDetector, WakeDetection, load_wake_detector  # noqa: E402

MODELS = {
    "hey_jarvis": "Hey Jarvis",
    "okay_nabu": "Okay Nabu",
    "alexa": "Alexa",
    "hey_mycroft": "Hey Mycroft",
}
NO_MODELS = Path("/nonexistent")
STEP = RATE * 30 // 1000  # the microphone's 30 ms chunks


def detector(model: str) -> MicroWakeWordDetector:
    return load_wake_detector(model, threshold=0.0, refractory_s=2.0, models_dir=NO_MODELS)


def run_detector(
    wake: MicroWakeWordDetector, audio: np.ndarray
) -> tuple[list[WakeDetection], float]:
    """Detections on float audio in 30 ms chunks, and the seconds of CPU it took."""
    pcm = float_to_pcm(np.clip(audio, -1, 1))
    found = []
    started = time.process_time()
    for offset in range(0, len(pcm), STEP * 2):
        chunk = AudioChunk(pcm[offset : offset + STEP * 2], RATE, timestamp_s=offset / 2 / RATE)
        detection = wake.process(chunk)
        if detection is not None:
            found.append(detection)
    return found, time.process_time() - started


def level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) or 1.0
    return (audio * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def word_end(audio: np.ndarray) -> float:
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(
        np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) > 10 ** (-45 / 20)
    )
    return (int(loud[-1]) + 1) * 160 / RATE


def background(seconds: float, rng: np.random.Generator) -> np.ndarray:
    clips = [clip for _, clip in real_speech()]
    out = np.concatenate([clips[i] for i in rng.permutation(len(clips))])
    while len(out) < seconds * RATE:
        out = np.concatenate([out, out])
    start = int(rng.integers(0, len(out) - int(seconds * RATE)))
    return out[start : start + int(seconds * RATE)]


# ---- 1. detection --------------------------------------------------------------------------


def detection_rates(renderings: int) -> dict[str, dict[str, tuple[int, int]]]:
    voices = {s: PiperSynthesizer(TtsConfig(length_scale=s)) for s in (0.8, 1.0, 1.25)}
    rng = np.random.default_rng(5)
    table: dict[str, dict[str, tuple[int, int]]] = {}
    for model, phrase in MODELS.items():
        wake = detector(model)
        rows: dict[str, list[bool]] = {}
        delays, cuts = [], []
        for voice in voices.values():
            for _ in range(renderings):
                said = speech(voice, phrase).astype(np.float32) / 32768
                end_s = 1.0 + word_end(said)
                for word_dbfs in (-20, -35):
                    word = level(said, word_dbfs)
                    clean = np.zeros(int(3.0 * RATE), np.float32)
                    clean[RATE : RATE + len(word)] = word
                    for snr in (None, 10, 0):
                        audio = clean.copy()
                        if snr is not None:
                            audio += level(background(3.0, rng), word_dbfs - snr)
                        wake.reset()
                        found, _ = run_detector(wake, audio)
                        hit = [d for d in found if 1.0 < d.at_s < end_s + 0.6]
                        key = f"{word_dbfs} dBFS, " + ("alone" if snr is None else f"SNR {snr} dB")
                        rows.setdefault(key, []).append(bool(hit))
                        if hit:
                            delays.append(hit[0].at_s - end_s)
                            cuts.append(hit[0].end_s - end_s)
        table[model] = {k: (sum(v), len(v)) for k, v in rows.items()}
        table[model]["_delay_ms"] = (int(statistics.median(delays) * 1000), 0)
        table[model]["_cut_ms"] = (
            int(statistics.median(np.abs(cuts)) * 1000),
            int(max(np.abs(cuts)) * 1000),
        )
    return table


# ---- 2. false wakes ------------------------------------------------------------------------


def looped_speech(hours: float, seed: int = 3) -> Iterator[np.ndarray]:
    """Real recordings, varied and looped, in pieces of about a minute."""
    rng = np.random.default_rng(seed)
    clips = real_speech()
    floor = noise("pink", 60.0, -60, seed)
    total = 0.0
    while total < hours * 3600:
        pieces = []
        length = 0
        while length < 60 * RATE:
            _, clip = clips[int(rng.integers(len(clips)))]
            pieces.append(
                varied(clip, speed=float(rng.uniform(0.9, 1.1)), dbfs=float(rng.uniform(-35, -15)))
            )
            pieces.append(np.zeros(int(rng.uniform(0.2, 1.0) * RATE), np.float32))
            length += len(pieces[-1]) + len(pieces[-2])
        piece = np.concatenate(pieces)
        reps = -(-len(piece) // len(floor))
        piece = piece + np.tile(floor, reps)[: len(piece)]
        total += len(piece) / RATE
        yield piece


def false_wakes(hours: float) -> tuple[float, dict[str, tuple[int, float]]]:
    pieces = list(looped_speech(hours))
    audio_h = sum(len(p) for p in pieces) / RATE / 3600
    out = {}
    for model in MODELS:
        wake = detector(model)
        count, cpu = 0, 0.0
        for piece in pieces:
            found, used = run_detector(wake, piece)
            count += len(found)
            cpu += used
        out[model] = (count, 100 * cpu / (audio_h * 3600))
    return audio_h, out


# ---- 3. Silero -----------------------------------------------------------------------------


def onsets(audio: np.ndarray, check: SileroOnset | None) -> list[float]:
    segmenter = Segmenter(VadConfig(), WebRtcDetector(2), onset_check=check)
    pcm = float_to_pcm(np.clip(audio, -1, 1))
    found = []
    for offset in range(0, len(pcm), STEP * 2):
        chunk = AudioChunk(pcm[offset : offset + STEP * 2], RATE, timestamp_s=offset / 2 / RATE)
        found += [e.at_s for e in segmenter.push(chunk) if isinstance(e, SpeechStarted)]
    return found


@dataclass(frozen=True)
class SileroFigures:
    hours: float
    webrtc_per_h: float
    silero_per_h: float
    windows: int
    later_median_ms: float
    later_p90_ms: float
    later_max_ms: float
    per_window_ms: float


def silero_figures(hours: float) -> SileroFigures:
    model = SileroModel(resolve_silero_model("", models_dir=NO_MODELS))
    rng = np.random.default_rng(9)
    kinds = [("noise", k) for k in ("white", "pink", "brown", "fan", "keys")]
    kinds += [("music", k) for k in ("melody", "chords", "drums", "band")]
    webrtc_turns = silero_turns = 0
    seconds = 0.0
    check = SileroOnset(model)
    while seconds < hours * 3600:
        source, kind = kinds[int(rng.integers(len(kinds)))]
        make = noise if source == "noise" else music
        audio = make(kind, 60.0, float(rng.uniform(-45, -20)), int(rng.integers(1 << 30)))
        webrtc_turns += len(onsets(audio, None))
        silero_turns += len(onsets(audio, check))
        seconds += 60.0
    rows = np.random.default_rng(0).standard_normal((1, 576)).astype(np.float32) * 0.05
    state = np.zeros((1, 1, 128), np.float32)
    t0 = time.process_time()
    for _ in range(200):
        model.score(rows, state, state)
    per_window_ms = (time.process_time() - t0) / 200 * 1000
    later = []
    quiet = np.zeros(RATE, np.float32)
    for _, clip in real_speech():
        for dbfs in (-25, -40, -50):
            audio = np.concatenate([quiet, varied(clip, speed=1.0, dbfs=dbfs), quiet])
            alone, confirmed = onsets(audio, None), onsets(audio, SileroOnset(model))
            if alone and confirmed:
                later.append((confirmed[0] - alone[0]) * 1000)
    return SileroFigures(
        hours=seconds / 3600,
        webrtc_per_h=webrtc_turns / (seconds / 3600),
        silero_per_h=silero_turns / (seconds / 3600),
        windows=check.windows_scored,
        later_median_ms=statistics.median(later),
        later_p90_ms=float(np.percentile(later, 90)),
        later_max_ms=max(later),
        per_window_ms=per_window_ms,
    )


# ---- report --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=1.0, help="of looped real speech")
    parser.add_argument("--renderings", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--no-rig", action="store_true", help="skip the idle CPU part")
    args = parser.parse_args()

    print("1. detection (supplement: the wake word said by the project's Piper voice)")
    rates = detection_rates(args.renderings)
    conditions = [k for k in next(iter(rates.values())) if not k.startswith("_")]
    print(f"{'condition':26}" + "".join(f"{m:>13}" for m in MODELS))
    for condition in conditions:
        cells = [rates[m][condition] for m in MODELS]
        print(f"{condition:26}" + "".join(f"{h:>8}/{n:<4}" for h, n in cells))
    totals = {
        m: (
            sum(h for k, (h, _) in rates[m].items() if not k.startswith("_")),
            sum(n for k, (_, n) in rates[m].items() if not k.startswith("_")),
        )
        for m in MODELS
    }
    print(f"{'all':26}" + "".join(f"{100 * h / n:>12.0f}%" for h, n in totals.values()))
    print(
        f"{'detected after word, ms':26}"
        + "".join(f"{rates[m]['_delay_ms'][0]:>13}" for m in MODELS)
    )
    print(
        f"{'|cut - word end|, ms':26}"
        + "".join(f"{rates[m]['_cut_ms'][0]:>6} (max {rates[m]['_cut_ms'][1]:>3})" for m in MODELS)
    )

    print(f"\n2. false wakes on real speech (66 s of unique speech, looped {args.hours:g} h)")
    audio_h, wakes = false_wakes(args.hours)
    print(f"{'':26}" + "".join(f"{m:>13}" for m in MODELS))
    print(f"{'false wakes':26}" + "".join(f"{c:>13}" for c, _ in wakes.values()))
    print(
        f"{'false wakes per hour':26}" + "".join(f"{c / audio_h:>13.1f}" for c, _ in wakes.values())
    )
    print(
        f"{'detector CPU, % of a core':26}" + "".join(f"{cpu:>13.2f}" for _, cpu in wakes.values())
    )

    print(f"\n3. Silero after webrtcvad ({args.hours:g} h of generated noise and music-like tones)")
    s = silero_figures(args.hours)
    print(f"   turns started per hour: webrtcvad alone {s.webrtc_per_h:.0f}, ", end="")
    print(f"with Silero {s.silero_per_h:.1f}")
    busy = 100 * s.windows * 0.032 / (s.hours * 3600)
    print(
        f"   Silero ran on {s.windows} windows ({busy:.1f} % of the time) at "
        f"{s.per_window_ms:.2f} ms each: {busy / 100 * s.per_window_ms / 0.32:.2f} % of a core"
    )
    print("   real recordings at 3 levels: Silero's onset later than webrtcvad's alone by median ")
    print(
        f"   {s.later_median_ms:.0f} ms, p90 {s.later_p90_ms:.0f} ms, max {s.later_max_ms:.0f} ms"
    )
    print("   (pre-roll 300 ms; a long one is webrtcvad starting on a sound before the first word)")

    idle: dict[str, Idle] = {}
    if not args.no_rig:
        from tests.rig import PulseRig

        with tempfile.TemporaryDirectory() as tmp, PulseRig() as rig:
            for kind in ("silence", "noise"):
                for mode in ("vad", "wake"):
                    key = f"{mode}, {kind}"
                    workdir = Path(tmp) / f"{mode}-{kind}"
                    idle[key] = measure_idle(rig, workdir, mode, args.idle_seconds, background=kind)
        print(f"\n4. idle `voice-assistant listen` in the rig, {args.idle_seconds:.0f} s each")
        header = ("CPU, % of a core", "peak RSS", "start-up", "turns", "wakes")
        print(f"{'':22}{header[0]:>18}{header[1]:>10}{header[2]:>10}{header[3]:>7}{header[4]:>7}")
        for key, r in idle.items():
            print(
                f"{key:22}{r.cpu_percent:>17.1f}%{r.peak_rss_mb:>7.0f} MB"
                f"{r.startup_s:>9.1f}s{r.turns:>7}{r.wakes:>7}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
