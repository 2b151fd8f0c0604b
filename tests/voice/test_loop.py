"""The loop's state machine, driven by scripted audio through fakes (no models, no devices)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from core.errors import AgentError, AgentTimeout, DeviceError
from voice.audio import Utterance
from voice.config import Config, EarconConfig
from voice.earcons import Earcons
from voice.loop import Phase, VoiceLoop
from voice.speech_out import ReplySpeaker
from voice.turns import TurnRunner
from voice.vad import Segmenter

from .fakes import (
    FRAME_MS,
    FakeConversation,
    FakeSink,
    FakeStt,
    FakeTts,
    ScriptedSource,
    ThresholdDetector,
    silence,
    tone,
    wait_until,
)


def loud_ms(utterance: Utterance) -> int:
    """Milliseconds of the scripted tone inside an utterance."""
    samples = np.frombuffer(utterance.pcm, dtype="<i2")
    frames = samples[: len(samples) // 480 * 480].reshape(-1, 480)
    return int((np.abs(frames).max(axis=1) > 1000).sum()) * FRAME_MS


@dataclasses.dataclass
class Rig:
    loop: VoiceLoop
    source: ScriptedSource
    sink: FakeSink
    tts: FakeTts
    stt: FakeStt
    conversation: FakeConversation
    stop: threading.Event
    thread: threading.Thread


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(
        script: bytes,
        stt: Callable[[Utterance], str] = lambda u: "hello there.",
        *,
        conversation: FakeConversation | None = None,
        earcons: Earcons | None = None,
        stt_delay_s: float = 0.0,
        sink: FakeSink | None = None,
        **sections: object,
    ) -> Rig:
        config = Config()
        for name, changes in sections.items():
            assert isinstance(changes, dict)
            config = dataclasses.replace(
                config, **{name: dataclasses.replace(getattr(config, name), **changes)}
            )
        source = ScriptedSource(script)
        sink, tts, fake_stt = sink or FakeSink(), FakeTts(), FakeStt(stt, stt_delay_s)
        conversation = conversation or FakeConversation()
        turns = TurnRunner(
            stt=fake_stt,
            speaker=ReplySpeaker(tts, sink, first_chunk_max_chars=60),
            conversation=conversation,
            room="test-room",
            earcons=earcons,
        )
        segmenter = Segmenter(config.vad, ThresholdDetector(), frame_ms=FRAME_MS)
        loop = VoiceLoop(config, source=source, segmenter=segmenter, turns=turns)
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        thread.start()
        rig = Rig(loop, source, sink, tts, fake_stt, conversation, stop, thread)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stop.set()
        rig.thread.join(timeout=10)
        assert not rig.thread.is_alive(), "the loop did not stop when asked"


def test_one_hands_free_turn_is_heard_answered_and_spoken(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(silence(300) + tone(800) + silence(2000))
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.messages == [("test-room", "hello there.")]
    report = rig.loop.reports[0]
    assert report.reply == "You said: hello there."
    assert rig.tts.texts and "".join(rig.tts.texts).startswith("You said")
    assert rig.sink.played, "the reply never reached the speaker"
    assert report.transcript_s is not None and report.first_audio_s is not None
    assert report.speech_end_s <= report.transcript_s <= report.first_audio_s
    assert wait_until(lambda: rig.loop.phase is Phase.LISTENING)


def test_speech_while_the_assistant_speaks_is_ignored(make_rig: Callable[..., Rig]) -> None:
    long_text = "a fairly long sentence to keep the speaker busy for a while " * 2
    # The second tone arrives while the ~2.5 s reply is playing.
    rig = make_rig(
        silence(300) + tone(800) + silence(1000) + tone(1200) + silence(4000),
        stt=lambda u: long_text,
        turn={"smart_endpoint": False},
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert wait_until(lambda: rig.source.frames_read > 250)  # the whole script has gone by
    assert len(rig.conversation.messages) == 1
    first_audio = rig.sink.played[0][0]
    assert rig.loop.reports[0].speech_end_s < first_audio


@pytest.mark.parametrize(
    ("error", "spoken"),
    [
        (AgentError("Not logged in · Please run /login"), "Sorry, the agent failed."),
        (AgentTimeout("no answer after 300 s"), "Sorry, the agent took too long"),
    ],
)
def test_agent_failure_is_spoken_and_the_loop_goes_on(
    make_rig: Callable[..., Rig], error: Exception, spoken: str
) -> None:
    rig = make_rig(
        silence(300) + tone(600) + silence(1500) + tone(600) + silence(1500),
        conversation=FakeConversation(error=error),
    )
    assert wait_until(lambda: len(rig.loop.reports) == 2)
    assert any(spoken in text for text in rig.tts.texts), rig.tts.texts
    assert rig.loop.reports[0].error is not None
    assert len(rig.conversation.messages) == 2


def test_pause_mid_sentence_does_not_end_the_turn(make_rig: Callable[..., Rig]) -> None:
    def words(u: Utterance) -> str:
        return "Set a timer for." if loud_ms(u) < 900 else "Set a timer for ten minutes."

    rig = make_rig(silence(300) + tone(600) + silence(500) + tone(600) + silence(2500), stt=words)
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.messages == [("test-room", "Set a timer for ten minutes.")]


def test_complete_command_ends_before_the_full_hangover(make_rig: Callable[..., Rig]) -> None:
    speech_end_frame = (300 + 800) // FRAME_MS
    hangover_frames = 1500 // FRAME_MS
    seen: list[int] = []

    rig = make_rig(
        silence(300) + tone(800) + silence(4000),
        stt=lambda u: "What time is it?",
        vad={"hangover_ms": 1500},
        turn={"quick_hangover_ms": 300},
    )
    rig.conversation.received.wait(20)
    seen.append(rig.source.frames_read)
    assert rig.conversation.messages
    # The turn ended well before the 1.5 s hangover: counted in audio frames, not wall time.
    assert seen[0] < speech_end_frame + hangover_frames


def test_incomplete_sentence_waits_for_the_full_hangover(make_rig: Callable[..., Rig]) -> None:
    speech_end_frame = (300 + 800) // FRAME_MS
    hangover_frames = 1500 // FRAME_MS
    rig = make_rig(
        silence(300) + tone(800) + silence(4000),
        stt=lambda u: "Remind me to call my mother and",
        vad={"hangover_ms": 1500},
    )
    rig.conversation.received.wait(20)
    assert rig.conversation.messages
    assert rig.source.frames_read >= speech_end_frame + hangover_frames - 2


def test_push_to_talk_hears_only_what_is_said_while_held(make_rig: Callable[..., Rig]) -> None:
    heard: list[int] = []

    def measure(u: Utterance) -> str:
        heard.append(loud_ms(u))
        return "held words."

    # 600 ms of speech before the press must not be transcribed.
    rig = make_rig(
        tone(600) + silence(400) + tone(900) + silence(3000),
        stt=measure,
        input={"mode": "ptt-hold"},
    )
    assert rig.loop.phase is Phase.IDLE
    assert wait_until(lambda: rig.source.frames_read >= 1000 // FRAME_MS)
    rig.loop.press()
    assert wait_until(lambda: rig.source.frames_read >= 1900 // FRAME_MS)
    rig.loop.release()
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.messages == [("test-room", "held words.")]
    # The held tone minus the key-click window, and nothing from before the press.
    assert 400 <= heard[0] <= 900, heard


def test_key_press_while_speaking_stops_the_reply(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(
        silence(300) + tone(600) + silence(6000),
        stt=lambda u: "tell me a long story " * 10,
        input={"mode": "ptt-toggle"},
    )
    rig.loop.press()
    assert wait_until(lambda: rig.loop.phase is Phase.SPEAKING)
    assert rig.sink.playing
    rig.loop.press()  # barge-in: stop speaking, listen again
    assert wait_until(lambda: rig.sink.stops >= 1)
    assert not rig.sink.playing
    assert wait_until(lambda: rig.loop.phase is Phase.LISTENING)


def test_lost_microphone_is_reopened_and_the_next_utterance_heard(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(silence(300))
    rig.source.broken = True
    assert wait_until(lambda: rig.source.reopens >= 2)
    rig.source.broken = False
    rig.source.extend(tone(700) + silence(2000))
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.messages == [("test-room", "hello there.")]


def test_a_stalled_microphone_is_reopened_and_announced_once(make_rig: Callable[..., Rig]) -> None:
    earcons = Earcons(EarconConfig(), 16000)
    error = earcons.get("error")
    assert error is not None
    rig = make_rig(silence(300), earcons=earcons, audio={"stall_timeout_s": 0.3})
    assert wait_until(lambda: rig.source.frames_read > 3)
    rig.source.stalled = True
    assert wait_until(lambda: rig.source.reopens >= 3)
    rig.source.stalled = False
    rig.source.extend(tone(700) + silence(2000))
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    error_plays = [n for _t, n in rig.sink.played if n == len(error)]
    assert len(error_plays) == 1, "the outage should be announced once, not at every reopen"


def test_barge_in_while_transcribing_sends_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(
        silence(300) + tone(600) + silence(4000), stt_delay_s=1.0, input={"mode": "ptt-toggle"}
    )
    rig.loop.press()
    assert wait_until(lambda: rig.loop.phase is Phase.TRANSCRIBING)
    rig.loop.press()  # barge-in: the user starts over
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.loop.reports[0].dropped == "interrupted before it reached the agent"
    assert rig.conversation.messages == []


def test_barge_in_while_thinking_silences_the_cue_and_the_late_reply(
    make_rig: Callable[..., Rig],
) -> None:
    earcons = Earcons(EarconConfig(thinking_repeat_s=0.2), 16000)
    thinking = earcons.get("thinking")
    assert thinking is not None
    rig = make_rig(
        silence(300) + tone(600) + silence(5000),
        conversation=FakeConversation(delay_s=1.5),
        earcons=earcons,
        input={"mode": "ptt-toggle"},
    )
    rig.loop.press()
    assert wait_until(lambda: rig.loop.phase is Phase.THINKING)
    assert wait_until(lambda: any(n == len(thinking) for _t, n in rig.sink.played))
    rig.loop.press()
    pressed = time.monotonic()
    assert wait_until(lambda: len(rig.loop.reports) == 1)  # the agent finished its turn
    late = [t for t, n in rig.sink.played if t > pressed + 0.05]
    assert late == [], "nothing may play after the barge-in: no cue, no reply"
    assert rig.conversation.messages == [("test-room", "hello there.")]  # saved, not spoken
    assert not any(text.startswith("You said") for text in rig.tts.texts)


class BrokenSpeaker(FakeSink):
    def play(self, samples: np.ndarray, rate: int) -> None:
        raise DeviceError("speaker unplugged")


def test_a_press_while_the_speaker_is_gone_does_not_end_the_loop(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(
        silence(300) + tone(700) + silence(3000),
        earcons=Earcons(EarconConfig(), 16000),
        sink=BrokenSpeaker(),
        input={"mode": "ptt-toggle"},
    )
    rig.loop.press()  # the listening earcon cannot play
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.thread.is_alive()
    assert rig.conversation.messages == [("test-room", "hello there.")]


def test_control_commands_reach_the_loop_and_bad_ones_are_refused(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(silence(300) + tone(700) + silence(3000), input={"mode": "ptt-hold"})
    assert rig.loop.handle_command("status") == "ok idle"
    assert rig.loop.handle_command("shout").startswith("error: unknown command 'shout'")
    assert rig.loop.handle_command("toggle") == "ok toggle"  # the key goes down ...
    assert wait_until(lambda: rig.loop.phase is Phase.LISTENING)
    assert wait_until(lambda: rig.source.frames_read >= 1100 // FRAME_MS)  # the tone was heard
    assert rig.loop.handle_command("toggle") == "ok toggle"  # ... and up again
    assert wait_until(lambda: len(rig.loop.reports) == 1)
