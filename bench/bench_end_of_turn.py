"""The end-of-turn decision on real voices, offline: how soon it ends, how often it cuts in.

    python bench/bench_end_of_turn.py

For every gap between two words inside the LibriVox read sentences of ../shared/audio/real (a
user stopping mid-sentence) and for the end of every recording (LibriVox and spoken commands),
the evidence the loop would have at that pause is computed as live: the speculative
transcript of the audio up to the pause plus the pause heard so far (vad.pause_ms, in 30 ms
frames), and the smart-turn probability of that audio with a pause of MODEL_PAUSE_S. Live,
that pause is the room's own (its last 20 ms added); here, cut inside a recording, it is
digital silence. Then each analyzer says when the turn would end:

- mid-sentence: ending before 800 ms is a false cut-off (the user pauses 500-800 ms here);
- true end: the wait after the last word (median, p90), and how often the reply is held.

Side by side in one run: the words alone (no model), the model alone, and the combined
analyzer at a few settings.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.voice.audio_util import real_clip, real_references, word_gaps  # noqa: E402
from voice.config import AudioConfig, SttConfig, VadConfig  # noqa: E402
from voice.end_of_turn import (  # noqa: E402
    MODEL_PAUSE_S,
    CombinedAnalyzer,
    PauseEvidence,
    TurnAnalyzer,
)
from voice.smart_turn import SmartTurnModel  # noqa: E402
from voice.stt import WhisperTranscriber  # noqa: E402

RATE = 16000
FRAME_S = AudioConfig().frame_ms / 1000  # what the segmenter hears pauses in
TEXT_TAIL_S = math.ceil(VadConfig().pause_ms / 1000 / FRAME_S) * FRAME_S  # the pause, heard
CUT_OFF_MS = 800.0  # a mid-sentence pause is 500-800 ms: ending sooner cuts the user off


@dataclass
class Pause:
    clip: str
    at_s: float
    end: bool  # the true end of the recording (else a gap between two words)
    text: str
    probability: float


def evidence(
    stt: WhisperTranscriber, model: SmartTurnModel, audio: np.ndarray
) -> tuple[str, float]:
    heard = np.concatenate([audio, np.zeros(int(TEXT_TAIL_S * RATE), np.float32)])
    asked = np.concatenate(
        [audio, np.zeros(int(max(TEXT_TAIL_S, MODEL_PAUSE_S) * RATE), np.float32)]
    )
    return stt.transcribe_audio(heard).text, model.predict(asked)


def collect() -> list[Pause]:
    stt = WhisperTranscriber(SttConfig())
    stt.warm_up()
    model = SmartTurnModel()
    model.warm_up()
    pauses = []
    for name in real_references():
        audio = real_clip(name)
        if name.startswith("librivox"):
            for cut in ((a + b) // 2 for a, b in word_gaps(audio)):
                text, p = evidence(stt, model, audio[:cut])
                pauses.append(Pause(name, cut / RATE, False, text, p))
        text, p = evidence(stt, model, audio)
        pauses.append(Pause(name, len(audio) / RATE, True, text, p))
    return pauses


def judge(analyzer: TurnAnalyzer | None, pause: Pause) -> tuple[float, float]:
    """(ends after ms, heard after ms) for this analyzer; None: the words alone. Heard over
    the reply (echo cancelled): half-duplex never plays it before the longest pause, 1.5 s."""
    if analyzer is None:
        words_only = CombinedAnalyzer()
        ev = PauseEvidence(pause.text, None, False, heard_over_reply=True)
        return words_only.end_after_ms(ev), words_only.speak_after_ms(ev)
    ev = PauseEvidence(pause.text, pause.probability, True, heard_over_reply=True)
    return analyzer.end_after_ms(ev), analyzer.speak_after_ms(ev)


def main() -> int:
    pauses = collect()
    mids = [p for p in pauses if not p.end]
    ends = [p for p in pauses if p.end]
    print(f"{len(mids)} mid-sentence gaps (LibriVox), {len(ends)} true ends (all recordings)\n")
    analyzers: dict[str, TurnAnalyzer | None] = {
        "words only": None,
        "sure 0.90": CombinedAnalyzer(sure=0.90),
        "sure 0.95": CombinedAnalyzer(sure=0.95),
        "sure 0.98": CombinedAnalyzer(sure=0.98),
        "sure 0.99": CombinedAnalyzer(sure=0.99),
    }
    print(
        f"{'analyzer':14} {'cut-offs':>9} {'heard early':>11} {'end p50':>8} {'end p90':>8}"
        f" {'heard p50':>9} {'heard p90':>9} {'held':>5}"
    )
    for name, analyzer in analyzers.items():
        mid = [judge(analyzer, p) for p in mids]
        end = [judge(analyzer, p) for p in ends]
        cut = sum(e < CUT_OFF_MS for e, _ in mid)
        early = sum(h < CUT_OFF_MS for _, h in mid)
        ends_ms = [e for e, _ in end]
        heard_ms = [h for _, h in end]
        print(
            f"{name:14} {cut:4}/{len(mid):<4} {early:6}/{len(mid):<4} "
            f"{statistics.median(ends_ms):8.0f} {np.percentile(ends_ms, 90):8.0f} "
            f"{statistics.median(heard_ms):9.0f} {np.percentile(heard_ms, 90):9.0f} "
            f"{sum(h > e for e, h in end):5}"
        )
    print(
        "\ncut-offs: mid-sentence gaps where the turn would end before 800 ms (it joins the rest"
        " if the user goes on before the reply plays); heard early: where the reply would be"
        " heard before 800 ms with the user heard over the reply (echo cancelled: the reply stops"
        " and the words join the request; half-duplex never plays it before 1.5 s, where the"
        " words would be lost); end/heard: at the true"
        " ends, the silence before the turn ends / before the reply may play (ms after the last"
        " frame of speech); held: true ends whose reply waits past the turn's end."
    )
    print("\nevidence at the true ends:")
    for p in ends:
        print(f"  {p.clip:15} p={p.probability:.2f}  {p.text!r}")
    print("\nmid-sentence gaps the default analyzer would let be heard early:")
    combined = CombinedAnalyzer()
    for p in mids:
        if judge(combined, p)[1] < CUT_OFF_MS:
            print(f"  {p.clip:15} {p.at_s:5.2f}s p={p.probability:.2f}  {p.text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
