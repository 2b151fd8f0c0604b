"""End to end through the real audio stack: PulseAudio null sinks, PortAudio, real models.

Speech made with the project's TTS is played into ``mic_feed`` at real-time pace;
``voice-assistant listen`` runs as a subprocess with the echo agent; its replies are recorded
from ``speaker.monitor`` and transcribed back. The speaker is also looped back into the
microphone, so the assistant really hears itself, and must not answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.listener import TURN_DONE, Listener
from tests.rig import PulseRig, find_speech
from tests.voice.audio_util import normalise, speech, wer
from voice.stt import WhisperTranscriber
from voice.tts import PiperSynthesizer

pytestmark = [pytest.mark.rig, pytest.mark.models, pytest.mark.slow]

QUESTIONS = [
    "What time is it?",
    "Turn on the kitchen lights.",
    "What is the weather like tomorrow?",
]
MAX_WER = 0.25  # one word in four: tiny.en on speech that went through TTS and the rig


@pytest.fixture
def loopback(pulse_rig: PulseRig) -> Iterator[None]:
    """The speaker is heard by the microphone, as at a real desk."""
    module = pulse_rig.pactl(
        "load-module",
        "module-loopback",
        "source=speaker.monitor",
        "sink=mic_feed",
        "latency_msec=20",
    ).strip()
    yield
    pulse_rig.pactl("unload-module", module)


def test_three_spoken_questions_are_answered_aloud_and_never_itself(
    pulse_rig: PulseRig,
    loopback: None,
    tts: PiperSynthesizer,
    stt: WhisperTranscriber,
    tmp_path: Path,
) -> None:
    listener = Listener(pulse_rig, tmp_path / "listen")
    with listener, pulse_rig.record_speaker() as recording:
        for n, question in enumerate(QUESTIONS, start=1):
            pulse_rig.feed(speech(tts, question), 16000).wait(30)
            listener.wait_for_log(TURN_DONE, count=n, timeout_s=60)
            time.sleep(1.5)  # the listening cue and the cooldown, then a pause like a person's
        time.sleep(4)  # long enough for a self-triggered turn to show up
        assert listener.stop() == 0, listener.story()

    # Exactly the three questions reached the agent: none of its own replies did.
    turns = listener.turns()
    assert [t["reply"].startswith("You said:") for t in turns] == [True] * 3, turns
    for turn, question in zip(turns, QUESTIONS, strict=True):
        assert wer(question, turn["said"]) <= MAX_WER, (question, turn)
    [session] = listener.sessions()
    messages = session["messages"]
    assert isinstance(messages, list)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert not any(normalise(m["content"])[:2] == ["you", "said"] for m in messages[::2])

    # The replies came out of the speaker: transcribe each burst of speech recorded there.
    samples = recording.result.samples
    heard = []
    for start_s, end_s in find_speech(samples, min_gap_s=0.8):
        if end_s - start_s < 0.35:  # earcons are 60-300 ms
            continue
        clip = samples[int(start_s * 16000) : int(end_s * 16000)].astype(np.float32) / 32768
        heard.append(stt.transcribe_audio(clip).text)
    assert len(heard) == len(QUESTIONS), heard
    for question, reply in zip(QUESTIONS, heard, strict=True):
        assert wer(f"you said {question}", reply) <= MAX_WER, (question, heard)
