"""Words kept when the user goes on after a turn ended at a thinking pause, offline.

    python bench/bench_going_on.py [--pauses 600,1000] [--softer 0,12,20] [--room KIND:DBFS]

Each real read sentence in ../shared/audio/real is cut at every gap between two words; a
pause (``--pauses``, ms) is put in, and the words after it are made softer for their first
0.6 s (``--softer``, dB: a user who goes on quietly, as jfk.flac's "ask" that Silero was
unsure of). The audio goes through the live segmenter with its real detectors (webrtcvad,
then Silero VAD, as configured by default), and the turn ends 300 ms into the pause, as the
loop ends it when words and smart-turn agree. The user goes on; every utterance after that
joins the request, as :mod:`voice.turn_taking` joins them, and Whisper (tiny.en, the live
loop's decode) transcribes the joined request.

It prints, per softness: resumptions whose first word was not kept (the utterance that went
on began more than 30 ms after the word did), the speech in the resumption's first second that
no utterance kept (ms, mean), and words of the reference missing from the request's
transcript (Whisper's own errors count too: compare rows). ``--room`` plays a sound of
tests/voice/room_sounds.py behind it all (the pause is digital silence without it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_real_voices import words_lost  # noqa: E402

from tests.voice.audio_util import (  # noqa: E402
    loud_frames,
    normalise,
    pcm_chunks,
    real_clip,
    real_references,
    word_gaps,
)
from tests.voice.room_sounds import music, noise  # noqa: E402
from voice.audio import Utterance, float_to_pcm  # noqa: E402
from voice.config import SttConfig, VadConfig  # noqa: E402
from voice.end_of_turn import MODEL_PAUSE_S  # noqa: E402
from voice.models import default_models_dir, resolve_silero_model  # noqa: E402
from voice.silero import SileroModel, SileroOnset  # noqa: E402
from voice.stt import WhisperTranscriber  # noqa: E402
from voice.turn_taking import join  # noqa: E402
from voice.vad import Segmenter, SpeechPaused, UtteranceEnded, WebRtcDetector  # noqa: E402

RATE = 16000
TURN_ENDS_S = 0.3  # turn.quick_hangover_ms: the turn ends this far into the pause
SOFT_S = 0.6  # how much of the resumed words is made softer
KEPT_SLACK_S = 0.03  # an utterance beginning this soon after the word still has it


@dataclass
class Outcome:
    first_word_kept: bool
    speech_lost_ms: float
    words_lost: int
    words: int
    heard_again: bool
    early_ms: float


def segment(
    audio: np.ndarray, cut_s: float, silero: SileroModel, config: VadConfig
) -> list[Utterance]:
    """The request's utterances: the turn ends TURN_ENDS_S into the pause put in at
    ``cut_s`` (not at any earlier pause of the recording's own)."""
    onset = SileroOnset(silero, threshold=config.silero_threshold)
    segmenter = Segmenter(
        config,
        WebRtcDetector(config.aggressiveness),
        onset_check=onset,
        speech_check=onset,
        pauses_ms=(round(MODEL_PAUSE_S * 1000), round(TURN_ENDS_S * 1000)),
    )
    utterances: list[Utterance] = []
    for chunk in pcm_chunks(float_to_pcm(audio), 30):
        for event in segmenter.push(chunk):
            ends = (
                isinstance(event, SpeechPaused)
                and event.silence_s >= TURN_ENDS_S - 1e-6
                and event.utterance.end_s >= cut_s - 0.2
            )
            if ends and not utterances:
                ended = segmenter.finish()
                if isinstance(ended, UtteranceEnded):
                    utterances.append(ended.utterance)
            elif isinstance(event, UtteranceEnded):
                utterances.append(event.utterance)
    last = segmenter.finish()
    if isinstance(last, UtteranceEnded):
        utterances.append(last.utterance)
    return utterances


def speech_mask(audio: np.ndarray) -> np.ndarray:
    """Per sample: in a 10 ms frame above -40 dBFS (as word_gaps hears words)."""
    return np.repeat(loud_frames(audio), 160)


def run_one(
    clip: np.ndarray,
    gap: tuple[int, int],
    pause_ms: int,
    softer_db: float,
    reference: str,
    silero: SileroModel,
    stt: WhisperTranscriber,
    config: VadConfig,
    room: str | None,
) -> Outcome:
    cut = (gap[0] + gap[1]) // 2
    after = clip[cut:].copy()
    soft = int(SOFT_S * RATE)
    after[:soft] *= 10 ** (-softer_db / 20)
    pause = np.zeros(pause_ms * RATE // 1000, np.float32)
    audio = np.concatenate([clip[:cut], pause, after, np.zeros(2 * RATE, np.float32)])
    if room:
        audio = audio + room_sound(room, len(audio))
    resumed = cut + len(pause)  # where the audio after the cut begins
    word_s = (resumed + gap[1] - cut) / RATE  # the first word after the pause
    utterances = segment(audio, cut / RATE, silero, config)
    going_on = [u for u in utterances if u.start_s > (cut + 0.1 * RATE) / RATE]
    kept = any(u.start_s <= word_s + KEPT_SLACK_S for u in going_on)
    # How long before the first word the utterance that went on began (the pause it kept).
    early_ms = (word_s - going_on[0].start_s) * 1000 if going_on else float("nan")
    # Speech in the resumption's first second that no utterance holds.
    loud = speech_mask(clip[cut:])[:RATE]  # judged on the audio as said, before softening
    covered = np.zeros(len(loud), bool)
    for u in utterances:
        a = max(0, round(u.start_s * RATE) - resumed)
        b = min(len(loud), round(u.start_s * RATE + len(u.pcm) // 2) - resumed)
        if b > a:
            covered[a:b] = True
    lost_ms = float(np.sum(loud & ~covered)) / RATE * 1000
    heard, again = hear(stt, utterances)
    words = len(normalise(reference))
    # Every reference word counts: Whisper's own errors too (the rows are compared).
    lost = words_lost(reference, reference, [heard])
    return Outcome(kept, lost_ms, lost, words, again, early_ms)


def room_sound(room: str, samples: int) -> np.ndarray:
    """``KIND:DBFS`` of tests/voice/room_sounds.py (``fan:-45``, ``melody:-35``)."""
    kind, dbfs = room.split(":")
    make = music if kind in ("melody", "chords", "drums", "band") else noise
    return make(kind, samples / RATE + 0.1, float(dbfs), seed=7)[:samples]


def hear(stt: WhisperTranscriber, utterances: list[Utterance]) -> tuple[str, bool]:
    """The request's text as the live loop gets it: the turn went to the agent at the pause
    with the first utterance's words, and the user went on before the reply played, so the
    joined request replaces it. A joined transcript with no more words than the first one
    dropped the new words (tiny.en can end at the pause): they are heard alone and follow
    it (voice.turn_taking, ``_lost_new_words``). Also whether that happened."""
    if not utterances:
        return "", False
    heard = stt.transcribe(join(utterances)).text
    if len(utterances) == 1:
        return heard, False
    first = stt.transcribe(utterances[0]).text
    if len(normalise(heard)) > len(normalise(first)):
        return heard, False
    rest = stt.transcribe(join(utterances[1:])).text
    return f"{first} {rest}".strip(), True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pauses", default="600,1000", help="pauses put in, ms")
    parser.add_argument("--softer", default="0,12,20", help="the resumed words softer by, dB")
    parser.add_argument("--room", help="a sound behind it all, KIND:DBFS (fan:-45, melody:-35)")
    args = parser.parse_args()
    pauses = [int(x) for x in args.pauses.split(",")]
    softer = [float(x) for x in args.softer.split(",")]
    config = VadConfig()
    silero = SileroModel(resolve_silero_model(config.silero_model, models_dir=default_models_dir()))
    stt = WhisperTranscriber(SttConfig())
    stt.warm_up()
    references = real_references()
    clips = {name: real_clip(name) for name in references if name.startswith("librivox")}
    cases = [(name, clip, gap) for name, clip in clips.items() for gap in word_gaps(clip)]
    print(f"{len(cases)} gaps inside {len({c[0] for c in cases})} real read sentences")
    print(
        f"{'pause ms':>8} {'softer dB':>9} {'first word lost':>15} {'speech lost ms':>14}"
        f" {'words lost':>10} {'heard alone':>11} {'kept before ms':>14}"
    )
    for pause_ms in pauses:
        for db in softer:
            outcomes = [
                run_one(clip, gap, pause_ms, db, references[name], silero, stt, config, args.room)
                for name, clip, gap in cases
            ]
            first_lost = sum(not o.first_word_kept for o in outcomes)
            print(
                f"{pause_ms:8} {db:9.0f} {first_lost:9} of {len(outcomes):<3}"
                f" {statistics.mean(o.speech_lost_ms for o in outcomes):14.0f}"
                f" {sum(o.words_lost for o in outcomes):4} of {sum(o.words for o in outcomes)}"
                f" {sum(o.heard_again for o in outcomes):5} of {len(outcomes)}"
                f" {np.nanmedian([o.early_ms for o in outcomes]):14.0f}"
            )
    print(
        "\nfirst word lost: the utterance that went on began more than 30 ms after the first"
        " word after the pause; speech lost: of the resumption's first second, audio above"
        " -40 dBFS (as said, before softening) that no utterance kept, mean per gap; words"
        " lost: reference words missing from the request's transcript (Whisper's own errors"
        " count too: compare rows, not against zero); heard alone: the joined transcript had"
        " no more words than the first utterance's, and the words after the pause were heard"
        " alone, as the live loop does; kept before: how long before the first word after the"
        " pause the utterance that went on began (median)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
