"""Earcons heard from the real speaker, in the right order around the spoken reply.

``voice-assistant listen`` runs in the PulseAudio rig (hands-free mode) with a small agent
that takes a while to answer; ``speaker.monitor`` is recorded, and every 20 ms of it is
labelled: one of the four earcons when it is a pure tone at that earcon's signature frequency
(voice/earcons.py), ``speech`` when it is sound of any other kind. The label sequence then
shows what the user heard, and in which order.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from tests.listener import TURN_DONE, Listener
from tests.rig import RATE, PulseRig, Recorded, dominant_hz, find_speech, frame_levels_dbfs
from tests.voice.audio_util import normalise, speech
from voice.earcons import SIGNATURE_HZ
from voice.stt import WhisperTranscriber
from voice.tts import PiperSynthesizer

pytestmark = [pytest.mark.rig, pytest.mark.models, pytest.mark.slow]

QUESTION = "What is the answer to everything?"
ANSWER = "The answer is forty two."
AGENT_DELAY_S = 1.5
THINKING_REPEAT_S = 0.5
EARCONS_ON: dict[str, object] = {
    "enabled": True,
    "listening": True,
    "thinking": True,
    "done": True,
    "error": True,
    "thinking_repeat_s": THINKING_REPEAT_S,
}

Int16 = npt.NDArray[np.int16]


def python_agent(code: str) -> str:
    """An ``--agent`` command line running ``code`` (plain text on stdout, exit code decides)."""
    return shlex.join([sys.executable, "-c", code])


SLOW_AGENT = python_agent(
    f"import sys, time; sys.stdin.read(); time.sleep({AGENT_DELAY_S}); print({ANSWER!r})"
)
FAILING_AGENT = python_agent("import sys; sys.stdin.read(); sys.exit(3)")


# ---- what the speaker played -----------------------------------------------------------------

WINDOW_S = 0.02  # a thinking tick (60 ms) spans several windows
HOP_S = 0.01
LOUD_DBFS = -55.0  # the rig's sinks are digitally silent between sounds
TONE_PURITY = 0.95  # earcons measure 0.97-1.00 here; speech rarely reaches it, and briefly
TONE_BAND_HZ = 120.0  # a 20 ms Hann window's main lobe is +-100 Hz
SIGNATURE_TOLERANCE = 0.03
MIN_TONE_WINDOWS = 3  # 40 ms of one signature: a tone, not a lucky window of a vowel
SAME_SOUND_GAP_S = 0.1  # the error buzz is two pulses 60 ms apart: one earcon
SPEECH_GAP_S = 1.0  # pauses between words, and between sentences while the next is synthesized
MIN_SPEECH_S = 0.4
MIN_RUN_S = 0.05


@dataclass(frozen=True)
class Heard:
    name: str  # an earcon name or "speech"
    start_s: float  # from the start of the recording
    end_s: float


def label(window: Int16) -> str:
    """The earcon whose signature this window is a pure tone at; ``speech`` for other sound."""
    x = window.astype(np.float64) * np.hanning(len(window))
    power = np.abs(np.fft.rfft(x, RATE)) ** 2  # zero-padded to 1 Hz bins
    peak_hz = dominant_hz(window, RATE)
    lo, hi = max(0, int(peak_hz - TONE_BAND_HZ)), int(peak_hz + TONE_BAND_HZ) + 1
    purity = float(power[lo:hi].sum() / max(float(power.sum()), 1e-12))
    if purity >= TONE_PURITY:
        for name, hz in SIGNATURE_HZ.items():
            if abs(peak_hz - hz) <= SIGNATURE_TOLERANCE * hz:
                return name
        return "tone"  # the leading note of a chime (660 or 1760 Hz): no signature
    return "speech"


def runs(samples: Int16) -> list[Heard]:
    """Runs of equally labelled windows over the loud parts of a recording."""
    width, hop = round(WINDOW_S * RATE), round(HOP_S * RATE)
    found: list[Heard] = []
    for seg_start, seg_end in find_speech(
        samples, RATE, threshold_dbfs=LOUD_DBFS, min_gap_s=0.05, min_len_s=0.02
    ):
        i = round(seg_start * RATE)
        while i + width <= round(seg_end * RATE):
            window, t = samples[i : i + width], i / RATE
            i += hop
            if frame_levels_dbfs(window, RATE, round(WINDOW_S * 1000))[0] < LOUD_DBFS:
                continue  # e.g. the gap between the error buzz's two pulses
            name = label(window)
            if found and found[-1].name == name and t - found[-1].end_s <= HOP_S + 1e-9:
                found[-1] = Heard(name, found[-1].start_s, t + HOP_S)
            else:
                found.append(Heard(name, t, t + HOP_S))
    return found


def merge(items: list[Heard], gap_s: float) -> list[Heard]:
    merged: list[Heard] = []
    for item in items:
        if merged and merged[-1].name == item.name and item.start_s - merged[-1].end_s < gap_s:
            merged[-1] = Heard(item.name, merged[-1].start_s, item.end_s)
        else:
            merged.append(item)
    return merged


def heard(recording: Recorded) -> list[Heard]:
    """What the user heard, in order: earcons and stretches of speech.

    A tone inside a stretch of speech is part of the speech (a vowel can be that pure).
    """
    windows = runs(recording.samples)
    # A window across two notes of a chime is impure too: speech comes in longer runs.
    voiced = [w for w in windows if w.name == "speech" and w.end_s - w.start_s >= MIN_RUN_S]
    speech = [h for h in merge(voiced, SPEECH_GAP_S) if h.end_s - h.start_s >= MIN_SPEECH_S]
    tones = [
        w
        for w in windows
        if w.name in SIGNATURE_HZ and w.end_s - w.start_s >= MIN_TONE_WINDOWS * HOP_S
    ]
    tones = [
        t
        for t in merge(tones, SAME_SOUND_GAP_S)
        if not any(s.start_s <= (t.start_s + t.end_s) / 2 <= s.end_s for s in speech)
    ]
    return sorted([*speech, *tones], key=lambda h: h.start_s)


def names(events: list[Heard]) -> list[str]:
    """The sequence of names, repeats collapsed: thinking x3 -> "thinking+"; speech is one
    reply however many stretches it came in."""
    out: list[str] = []
    for event in events:
        if out and out[-1].rstrip("+") == event.name:
            out[-1] = event.name if event.name == "speech" else event.name + "+"
        else:
            out.append(event.name)
    return out


def transcribe(stt: WhisperTranscriber, recording: Recorded, event: Heard) -> str:
    start, end = round(event.start_s * RATE), round(event.end_s * RATE)
    clip = recording.samples[start:end].astype(np.float32) / np.float32(32768)
    return stt.transcribe_audio(clip).text


def run_turn(
    pulse_rig: PulseRig, tts: PiperSynthesizer, workdir: Path, agent: str
) -> tuple[Listener, Recorded]:
    """One spoken question in hands-free mode with every earcon on; the speaker recorded."""
    config: dict[str, dict[str, object]] = {
        "earcons": EARCONS_ON,
        "agent": {"output_format": "text", "timeout_s": 30.0},
    }
    listener = Listener(pulse_rig, workdir, config, agent=agent)
    with listener, pulse_rig.record_speaker() as recording:
        pulse_rig.feed(speech(tts, QUESTION), RATE).wait(30)
        listener.wait_for_log(TURN_DONE, timeout_s=60)
        time.sleep(1.5)  # "done" and "listening" are queued right after: let them play out
        assert listener.stop() == 0, listener.story()
    # Kept beside the log: what was heard, for when an assertion below fails.
    soundfile.write(str(workdir / "speaker.wav"), recording.result.samples, RATE)
    return listener, recording.result


# ---- tests -----------------------------------------------------------------------------------


def test_thinking_then_reply_then_done_then_listening(
    pulse_rig: PulseRig, tts: PiperSynthesizer, stt: WhisperTranscriber, tmp_path: Path
) -> None:
    listener, recording = run_turn(pulse_rig, tts, tmp_path / "listen", SLOW_AGENT)
    [turn] = listener.turns()
    assert turn["reply"] == ANSWER, listener.story()

    events = heard(recording)
    assert names(events) == ["thinking+", "speech", "done", "listening"], events
    # The agent took 1.5 s and the tick repeats every 0.5 s: it was heard more than once.
    ticks = [e for e in events if e.name == "thinking"]
    assert len(ticks) >= 2, events
    gaps = np.diff([t.start_s for t in ticks])
    assert all(THINKING_REPEAT_S * 0.6 < g < THINKING_REPEAT_S * 3 for g in gaps), gaps
    spoken = [e for e in events if e.name == "speech"]
    reply = Heard("speech", spoken[0].start_s, spoken[-1].end_s)
    assert normalise(transcribe(stt, recording, reply))[-2:] in (["forty", "two"], ["4", "2"]), (
        reply
    )


def test_a_failing_agent_sounds_the_error_earcon_then_the_apology(
    pulse_rig: PulseRig, tts: PiperSynthesizer, stt: WhisperTranscriber, tmp_path: Path
) -> None:
    listener, recording = run_turn(pulse_rig, tts, tmp_path / "listen", FAILING_AGENT)
    assert "agent failed" in listener.log(), listener.story()

    events = heard(recording)
    # A fast failure may cut the first thinking tick short (the error stops the speaker);
    # no "done" after a failure, and the microphone opens again as usual.
    sequence = [n for n in names(events) if n.rstrip("+") != "thinking"]
    assert sequence == ["error", "speech", "listening"], events
    [error] = [e for e in events if e.name == "error"]
    assert all(e.start_s < error.start_s for e in events if e.name == "thinking"), events
    spoken = [e for e in events if e.name == "speech"]
    apology = Heard("speech", spoken[0].start_s, spoken[-1].end_s)
    words = normalise(transcribe(stt, recording, apology))
    # Whisper sometimes adds a word ("I'm sorry..."): the apology opens the reply all the same.
    assert "sorry the agent failed" in " ".join(words[:6]), words
