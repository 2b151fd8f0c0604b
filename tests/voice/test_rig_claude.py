"""The real Claude Code CLI as the voice agent, end to end in the PulseAudio rig.

``voice-assistant listen`` runs as a subprocess with the real CLI, pointed at the scripted
Messages API (tests/claude_api.py), so Claude runs its real tool loop and permission protocol
offline. Requests and answers are spoken into the microphone; what the assistant says is
recorded from the speaker and transcribed back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.claude_api import ApiError, ClaudeApi, Reply, Text, ToolUse
from tests.claude_fixtures import find_claude
from tests.listener import TURN_DONE, Listener
from tests.procs import working_in
from tests.rig import PulseRig, find_speech, wait_for_quiet
from tests.voice.audio_util import real_clip, speech, to_int16, wer
from voice.stt import WhisperTranscriber
from voice.tts import PiperSynthesizer

pytestmark = [pytest.mark.rig, pytest.mark.models, pytest.mark.compat, pytest.mark.slow]


@pytest.fixture
def api() -> Iterator[ClaudeApi]:
    with ClaudeApi() as server:
        yield server


def claude_listener(
    rig: PulseRig, api: ClaudeApi, workdir: Path, **agent: object
) -> tuple[Listener, Path]:
    cwd = workdir / "project"
    cwd.mkdir(parents=True)
    config = {
        "agent": {"cwd": str(cwd), "timeout_s": 120.0, **agent},
        "earcons": {"enabled": False},
    }
    env = api.env(workdir / "claude-home", base={})
    listener = Listener(rig, workdir / "listen", config, agent=find_claude(), env=env)
    return listener, cwd


def said(stt: WhisperTranscriber, samples: np.ndarray) -> list[str]:
    """What the assistant said, one transcript per sentence-sized burst on the speaker (tiny.en
    drops the end of a longer clip of several sentences)."""
    out = []
    for start_s, end_s in find_speech(samples, min_gap_s=0.15):
        clip = samples[int(start_s * 16000) : int(end_s * 16000)].astype(np.float32) / 32768
        out.append(stt.transcribe_audio(clip).text)
    return out


@pytest.mark.parametrize(("answer", "ran"), [("Yes.", True), ("No.", False)])
def test_a_permission_is_asked_aloud_and_answered_by_voice(
    pulse_rig: PulseRig,
    api: ClaudeApi,
    tts: PiperSynthesizer,
    stt: WhisperTranscriber,
    tmp_path: Path,
    answer: str,
    ran: bool,
) -> None:
    api.script(
        Reply(
            [
                Text("I will create the file."),
                ToolUse(
                    "Bash", {"command": "echo hi > made.txt", "description": "Create made.txt"}
                ),
            ]
        ),
        Reply([Text("The file is made." if ran else "All right, I left it.")]),
    )
    listener, cwd = claude_listener(pulse_rig, api, tmp_path)
    with listener, pulse_rig.record_speaker() as recording:
        pulse_rig.feed(to_int16(real_clip("goforward")), 16000).wait(30)  # a real voice asks
        listener.wait_for_log("waiting for an answer", timeout_s=120)
        time.sleep(0.5)  # the listening cue, and the cooldown after the question
        pulse_rig.feed(speech(tts, answer), 16000).wait(30)
        listener.wait_for_log(TURN_DONE, timeout_s=120)
        time.sleep(2.0)
    assert (cwd / "made.txt").exists() is ran, listener.story()
    deadline = time.monotonic() + 10
    while working_in(cwd) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert working_in(cwd) == [], "Claude outlived the listener"
    assert "asking: Claude wants to create made.txt. Allow?" in listener.log()
    log = listener.log()
    if not ran:  # the refusal is said at the end of the turn
        assert "refused: Note: Claude was not allowed to create made.txt." in log
        assert api.turns[1].tool_results()[0]["is_error"] is True
    # And it was heard. tiny.en on the Piper voice is too rough for more than the first
    # sentence ("Claude wants" comes back as "hard ones", "made.txt" as "may dot txt"), and
    # how the bursts split depends on timing, so the rest is checked by words that survive it:
    # the question, then the answer (and the refusal).
    sentences = said(stt, recording.result.samples)
    assert wer("i will create the file", sentences[0]) <= 0.2, sentences
    rest = " ".join(sentences[1:]).lower()
    assert "create" in rest, sentences  # "Allow?" alone comes back as "Wow." or "Oh, oh"
    assert ("made" in sentences[-1].lower()) if ran else ("not allowed" in rest), sentences


def test_stop_said_while_a_tool_runs_interrupts_claude(
    pulse_rig: PulseRig,
    api: ClaudeApi,
    tts: PiperSynthesizer,
    stt: WhisperTranscriber,
    tmp_path: Path,
) -> None:
    marker = f"sleep 4{int(time.monotonic()) % 1000}"
    api.script(
        Reply(
            [Text("Running it now."), ToolUse("Bash", {"command": marker, "description": "Wait"})]
        ),
        Reply([Text("Never heard.")]),
    )
    listener, _cwd = claude_listener(pulse_rig, api, tmp_path, allowed_tools=["Bash"])
    with listener, pulse_rig.record_speaker() as recording:
        pulse_rig.feed(to_int16(real_clip("cards-003")), 16000).wait(30)
        asked_s = time.monotonic()
        listener.wait_for_log("tool: Wait", timeout_s=120)
        # The tool runs; the sentence before it has been spoken, and the half-duplex loop
        # hears again (a loaded machine speaks late: a fixed sleep had "Stop." said over it).
        wait_for_quiet(recording, asked_s, quiet_s=1.0)
        stop_said = time.monotonic()
        pulse_rig.feed(speech(tts, "Stop."), 16000).wait(30)
        listener.wait_for_log(TURN_DONE, timeout_s=60)
        time.sleep(2.0)
    log = listener.log()
    assert "interrupting the agent" in log and "saying: Stopped." in log
    heard = " ".join(said(stt, recording.result.samples)).lower()
    # tiny.en on the Piper voice: "Running it now." has come back as "writing it now."
    assert "it now" in heard and "never heard" not in heard, heard
    rec = recording.result
    assert any(start > stop_said for start, _ in rec.speech()), "nothing said after the stop"
    assert len(api.turns) == 1  # Claude never got to the second model call


def test_the_sentence_before_a_tool_is_heard_before_the_tool_ends(
    pulse_rig: PulseRig, api: ClaudeApi, stt: WhisperTranscriber, tmp_path: Path
) -> None:
    api.script(
        Reply(
            [
                Text("Let me look at the files."),
                ToolUse("Bash", {"command": "sleep 4; ls", "description": "List the files"}),
            ]
        ),
        Reply([Text("The folder is empty.")]),
    )
    listener, _cwd = claude_listener(pulse_rig, api, tmp_path, allowed_tools=["Bash"], tools="off")
    with listener, pulse_rig.record_speaker() as recording:
        pulse_rig.feed(to_int16(real_clip("goforward")), 16000).wait(30)
        listener.wait_for_log(TURN_DONE, timeout_s=120)
        time.sleep(2.0)
    tool_done = api.turns[1].received_at  # the CLI asked again once the tool had finished
    rec = recording.result
    bursts = rec.speech(min_gap_s=0.6)
    first_words = rec.between(bursts[0][0], bursts[0][1]).astype(np.float32) / 32768
    assert wer("let me look at the files", stt.transcribe_audio(first_words).text) <= 0.2
    assert bursts[0][1] < tool_done, "the first sentence was held back until the tool finished"


def test_a_service_that_does_not_answer_at_first_is_said_and_then_the_reply(
    pulse_rig: PulseRig, api: ClaudeApi, stt: WhisperTranscriber, tmp_path: Path
) -> None:
    # Claude Code retries an overloaded API for minutes with nothing to show: the user hears
    # why, once, and then the reply when it comes.
    overloaded = ApiError(529, "overloaded_error", "Overloaded")
    api.script(overloaded, overloaded, Reply([Text("Going forward ten meters.")]))
    listener, _cwd = claude_listener(pulse_rig, api, tmp_path)
    with listener, pulse_rig.record_speaker() as recording:
        pulse_rig.feed(to_int16(real_clip("goforward")), 16000).wait(30)
        listener.wait_for_log(TURN_DONE, timeout_s=120)
        time.sleep(2.0)
    log = listener.log()
    assert log.count("the agent's call to its service failed (529, overloaded)") == 2, log
    assert log.count("retrying: Claude's service is not answering. Still trying.") == 1, log
    # (The line and the reply may come back as one burst: the retries can be quick.)
    heard = " ".join(said(stt, recording.result.samples)).lower()
    told, replied = heard.find("answering"), heard.find("meter")
    assert 0 <= told < replied, heard
