"""The live loop around the turn-taking machine, on scripted audio through fakes.

Real threads and real time (the microphone plays its script at real-time pace), fake engines
and devices: what the machine decides must actually happen.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from core.claude import NOBODY_ANSWERS
from core.errors import (
    AgentError,
    AgentLoginError,
    AgentTimeout,
    AgentUnavailable,
    DeviceError,
    RemoteEngineError,
)
from voice.audio import AudioChunk, Utterance
from voice.config import Config, EarconConfig
from voice.earcons import Earcons
from voice.loop import IDLE_BATCH_S, WAKE_IDLE_BATCH_S, StatusSink, VoiceLoop, after
from voice.pipeline import Models, build_loop
from voice.turn_events import Phase

from .fakes import (
    FRAME_MS,
    FakeConversation,
    FakeSink,
    FakeStt,
    FakeTts,
    ScriptedSource,
    Step,
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


def measuring(heard: list[int], text: str) -> Callable[[Utterance], str]:
    """A transcriber that notes how much of the scripted tone each utterance holds."""

    def measure(u: Utterance) -> str:
        heard.append(loud_ms(u))
        return text

    return measure


@dataclasses.dataclass
class FakeEcho:
    """An echo-cancelled source's word on whether a voice over the reply can be told from it."""

    hears_over_reply: bool
    words_whole: bool = True


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
        earcons: bool = False,
        stt_delay_s: float = 0.0,
        sink: FakeSink | None = None,
        earcons_config: dict[str, object] | None = None,
        echo: FakeEcho | None = None,
        idle_batch_s: float = 0.0,
        questions: bool = True,
        status: StatusSink | None = None,
        **sections: object,
    ) -> Rig:
        config = Config()
        config = dataclasses.replace(
            config, turn=dataclasses.replace(config.turn, room="test-room")
        )
        for name, changes in sections.items():
            assert isinstance(changes, dict)
            config = dataclasses.replace(
                config, **{name: dataclasses.replace(getattr(config, name), **changes)}
            )
        config = dataclasses.replace(
            config,
            earcons=EarconConfig(enabled=earcons, **(earcons_config or {})),
        )
        source = ScriptedSource(script)
        sink, tts, fake_stt = sink or FakeSink(), FakeTts(), FakeStt(stt, stt_delay_s)
        conversation = conversation or FakeConversation()
        loop = build_loop(
            config,
            source=source,
            sink=sink,
            models=Models(stt=fake_stt, tts=tts),
            conversation=conversation,
            detector=ThresholdDetector(),
            echo=echo,
            idle_batch_s=idle_batch_s,
            questions=questions,
            status=status,
        )
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


@pytest.mark.parametrize("idle_batch_s", [0.0, WAKE_IDLE_BATCH_S, IDLE_BATCH_S])
def test_one_hands_free_turn_is_heard_answered_and_spoken(
    make_rig: Callable[..., Rig], idle_batch_s: float
) -> None:
    heard: list[int] = []

    def measure(u: Utterance) -> str:
        heard.append(loud_ms(u))
        return "hello there."

    # Read in batches while idle (as live): the onset comes late, but no audio is lost.
    rig = make_rig(silence(300) + tone(800) + silence(2000), measure, idle_batch_s=idle_batch_s)
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.messages == [("test-room", "hello there.")]
    report = rig.loop.reports[0]
    assert report.reply == "You said: hello there."
    assert rig.tts.texts and "".join(rig.tts.texts).startswith("You said")
    assert rig.sink.played, "the reply never reached the speaker"
    assert report.first_audio_s is not None
    assert report.speech_end_s <= report.sent_s <= report.first_audio_s
    assert wait_until(lambda: rig.loop.phase is Phase.LISTENING)
    assert heard == [810]  # the tone's 27 frames of 30 ms, all of them


def test_speech_while_the_assistant_speaks_is_gated(make_rig: Callable[..., Rig]) -> None:
    long_text = "a fairly long sentence to keep the speaker busy for a while " * 4
    # The second tone arrives while the ~2.5 s reply is playing: the microphone hears the
    # speaker, so nothing heard then may count as speech (half-duplex).
    rig = make_rig(
        silence(300) + tone(800) + silence(1000) + tone(1000) + silence(5000),
        stt=lambda u: long_text,
        turn={"smart_endpoint": False},
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert wait_until(lambda: rig.source.frames_read > 270)  # the whole script has gone by
    assert len(rig.conversation.messages) == 1
    first_audio = rig.sink.played[0][0]
    assert rig.loop.reports[0].speech_end_s < first_audio


LONG_TEXT = "a fairly long sentence to keep the speaker busy for a while " * 8


def over_the_reply(said: str) -> Callable[[Utterance], str]:
    """The first tone (800 ms) asks for LONG_TEXT; the second (1000 ms) says ``said``."""
    return lambda u: LONG_TEXT if loud_ms(u) < 900 else said


@pytest.mark.parametrize("learnt", [False, True])
def test_with_the_echo_cancelled_speech_over_the_reply_stops_it_once_learnt(
    make_rig: Callable[..., Rig], learnt: bool
) -> None:
    # The turn ends at 2.6 s (the 1.5 s hangover) and its ~5 s reply plays from about 2.7 s;
    # the second tone comes at 4.1 s, over the reply.
    rig = make_rig(
        silence(300) + tone(800) + silence(3000) + tone(1000) + silence(5000),
        stt=over_the_reply("And what about tomorrow?"),
        turn={"smart_endpoint": False},
        echo=FakeEcho(hears_over_reply=learnt),
    )
    assert wait_until(lambda: rig.source.frames_read > 330)  # the whole script has gone by
    if learnt:  # the second tone stopped the reply and is a request of its own
        assert rig.sink.stops >= 1, rig.loop.reports
        assert wait_until(lambda: len(rig.conversation.messages) == 2), rig.conversation.messages
    else:  # still learning: half-duplex, as without a canceller
        assert len(rig.conversation.messages) == 1
        assert rig.sink.stops == 0


@pytest.mark.parametrize("smart_endpoint", [False, True])
def test_the_replys_own_words_heard_back_over_it_are_not_a_request(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture, smart_endpoint: bool
) -> None:
    """What the canceller left of the reply's echo, heard as its words ("Hopping list." for
    "... the whole shopping list ..."), neither stops the reply nor goes to the agent. With
    the hold (hands-free, an end-of-turn analyzer) the reply plays on; without it, a voice
    over the reply stops it at once, as a key would, and nothing is sent either."""
    rig = make_rig(
        silence(300) + tone(800) + silence(3000) + tone(1000) + silence(5000),
        stt=over_the_reply("Keep the speaker busy for, while."),
        turn={"smart_endpoint": smart_endpoint},
        echo=FakeEcho(hears_over_reply=True),
    )
    with caplog.at_level(logging.INFO, logger="voice.loop"):
        assert wait_until(lambda: rig.source.frames_read > 330)  # the whole script has gone by
        assert wait_until(lambda: "the reply's own words, heard back" in caplog.text)
        assert wait_until(lambda: rig.loop.phase is Phase.LISTENING)
    assert rig.conversation.messages == [("test-room", LONG_TEXT.strip())]
    if smart_endpoint:  # held for its words, then went on to the end
        assert [kind for kind, _ in rig.sink.pauses] == ["pause", "resume"], rig.sink.pauses
        assert rig.sink.stops == 0
        assert "[stopped" not in rig.loop.reports[0].reply
    else:
        assert rig.sink.stops == 1


def test_the_replys_own_words_before_a_voice_are_cut_from_its_request(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    """The segment opened on the echo's residue and the voice followed it in: its request is
    the voice's words only. (It comes 2 s into the reply: in its first 1.5 s it would go on
    with the request.)"""
    rig = make_rig(
        silence(300) + tone(800) + silence(3600) + tone(1000) + silence(5000),
        stt=over_the_reply("Keep the speaker busy. And what about tomorrow?"),
        echo=FakeEcho(hears_over_reply=True),
    )
    with caplog.at_level(logging.INFO, logger="voice.loop"):
        assert wait_until(lambda: len(rig.conversation.messages) == 2), rig.conversation.messages
    assert rig.conversation.messages[1] == ("test-room", "And what about tomorrow?")
    assert "cut 'Keep the speaker busy.' from the transcript" in caplog.text
    assert rig.sink.stops >= 1  # the voice's words stopped the reply


@pytest.mark.parametrize("whole", [False, True])
def test_a_stop_says_when_the_words_over_the_reply_were_heard_through_aec3(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture, whole: bool
) -> None:
    rig = make_rig(
        silence(300) + tone(800) + silence(3000) + tone(1000) + silence(5000),
        stt=over_the_reply("And what about tomorrow?"),
        turn={"smart_endpoint": False},
        echo=FakeEcho(hears_over_reply=True, words_whole=whole),
    )
    with caplog.at_level(logging.INFO, logger="voice.loop"):
        assert wait_until(lambda: rig.source.frames_read > 330)
        assert wait_until(lambda: rig.sink.stops >= 1), rig.loop.reports
    warned = "heard through AEC3" in caplog.text
    assert warned != whole, caplog.text


@pytest.mark.parametrize(
    ("error", "spoken"),
    [
        (AgentError("Not logged in · Please run /login"), "Sorry, the agent is not logged in."),
        (AgentError("crashed with exit code 3: boom"), "Sorry, the agent failed."),
        (AgentTimeout("no answer after 300 s"), "Sorry, the agent took too long"),
        (AgentLoginError("refused (401, authentication_failed)"), "login was refused"),
        (AgentUnavailable("API Error: 529 Overloaded"), "service is not answering"),
    ],
)
def test_agent_failure_is_spoken_briefly_and_the_loop_goes_on(
    make_rig: Callable[..., Rig], error: Exception, spoken: str
) -> None:
    rig = make_rig(
        silence(300) + tone(600) + silence(3000) + tone(600) + silence(3000),
        conversation=FakeConversation(error=error),
    )
    assert wait_until(lambda: len(rig.loop.reports) == 2)
    said = " ".join(rig.tts.texts)
    assert spoken in said, rig.tts.texts
    assert str(error) not in said and "300" not in said  # details stay in the log
    assert rig.loop.reports[0].error is not None
    assert len(rig.conversation.messages) == 2


def test_pause_mid_sentence_does_not_end_the_turn(make_rig: Callable[..., Rig]) -> None:
    def words(u: Utterance) -> str:
        return "Set a timer for." if loud_ms(u) < 900 else "Set a timer for ten minutes."

    rig = make_rig(silence(300) + tone(600) + silence(700) + tone(600) + silence(3000), stt=words)
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.messages == [("test-room", "Set a timer for ten minutes.")]


def test_complete_command_ends_before_the_full_hangover(make_rig: Callable[..., Rig]) -> None:
    speech_end_frame = (300 + 800) // FRAME_MS
    hangover_frames = 1500 // FRAME_MS
    rig = make_rig(
        silence(300) + tone(800) + silence(4000),
        stt=lambda u: "What time is it?",
        vad={"hangover_ms": 1500},
        turn={"quick_hangover_ms": 300},
    )
    rig.conversation.received.wait(20)
    frames = rig.source.frames_read
    assert rig.conversation.messages
    # The turn ended well before the 1.5 s hangover: counted in audio frames, not wall time.
    assert frames < speech_end_frame + hangover_frames


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


def test_speech_resumed_while_transcribing_joins_the_request(make_rig: Callable[..., Rig]) -> None:
    def words(u: Utterance) -> str:
        return "Refactor the store" if loud_ms(u) < 900 else "Refactor the store in place."

    # A slow transcription: the user goes on before it is done.
    rig = make_rig(
        silence(300) + tone(600) + silence(1700) + tone(600) + silence(3000),
        stt=words,
        stt_delay_s=0.8,
        turn={"smart_endpoint": False},
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.messages == [("test-room", "Refactor the store in place.")]
    assert rig.conversation.revised == [False]


def test_speech_resumed_after_sending_interrupts_and_revises(make_rig: Callable[..., Rig]) -> None:
    def words(u: Utterance) -> str:
        return "Refactor the store" if loud_ms(u) < 900 else "Refactor the store in place."

    rig = make_rig(
        silence(300) + tone(600) + silence(1800) + tone(600) + silence(4000),
        stt=words,
        conversation=FakeConversation(delay_s=3.0),  # the agent is slow to answer
        turn={"smart_endpoint": False},
    )
    assert wait_until(lambda: len(rig.conversation.messages) == 2)
    assert rig.conversation.messages == [
        ("test-room", "Refactor the store"),
        ("test-room", "Refactor the store in place."),
    ]
    assert rig.conversation.revised == [False, True]
    assert rig.conversation.interrupts == 1
    assert wait_until(lambda: len(rig.loop.reports) == 2)
    spoken = " ".join(rig.tts.texts)
    assert "in place" in spoken and spoken.count("You said") == 1  # only the whole request


def test_stop_said_while_the_agent_works_interrupts_it(make_rig: Callable[..., Rig]) -> None:
    script = [("text", "Let me run the tests."), ("done",), ("sleep", 30.0), ("text", "Done.")]
    rig = make_rig(
        silence(300) + tone(700) + silence(3000) + tone(400) + silence(3000),
        stt=lambda u: "Run the tests." if loud_ms(u) > 500 else "Stop.",
        conversation=FakeConversation(script=script),
    )
    assert wait_until(lambda: rig.conversation.interrupts == 1)
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.loop.reports[0].outcome == "interrupted"
    assert wait_until(lambda: "Stopped." in rig.tts.texts)
    assert rig.conversation.messages == [("test-room", "Run the tests.")]  # "stop" is not sent


def test_the_sentence_before_a_tool_is_spoken_before_the_tool_finishes(
    make_rig: Callable[..., Rig],
) -> None:
    script = [
        ("text", "Let me look at the files."),
        ("done",),
        ("tool", "Bash", {"command": "ls", "description": "List the files"}),
        ("sleep", 3.0),
        ("text", "There are three."),
    ]
    rig = make_rig(
        silence(300) + tone(700) + silence(7000), conversation=FakeConversation(script=script)
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    report = rig.loop.reports[0]
    assert report.first_audio_s is not None and report.agent_done_s is not None
    assert report.agent_done_s - report.first_audio_s > 1.5  # heard long before the end
    assert rig.tts.texts[:2] == ["Let me look at the files.", "Listing the files."]


@pytest.mark.parametrize(("answer", "decision"), [("Yes.", "allow"), ("No.", "deny")])
def test_a_permission_question_is_answered_by_voice(
    make_rig: Callable[..., Rig], answer: str, decision: str
) -> None:
    script = [("ask", "Bash", {"command": "npm test"}), ("text", "All right.")]
    rig = make_rig(
        silence(300) + tone(700) + silence(2500) + tone(400) + silence(3000),
        stt=lambda u: "Run the tests." if loud_ms(u) > 500 else answer,
        conversation=FakeConversation(script=script),
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.answers == [(decision, "")]
    assert "The agent wants to run npm test. Allow?" in " ".join(rig.tts.texts)


def test_a_tool_asked_about_is_not_also_told_when_one_message_calls_several(
    make_rig: Callable[..., Rig],
) -> None:
    # Both calls arrive before the first is asked about: the second call used to tell the
    # first ("Create a.txt. The agent wants to run touch a.txt. Allow?").
    script = [
        ("text", "Let me do both."),
        ("done",),
        ("tool", "Bash", {"command": "touch a.txt", "description": "Create a.txt"}),
        ("tool", "Bash", {"command": "ls", "description": "List the files"}),
        ("ask", "Bash", {"command": "touch a.txt"}, "toolu_1"),
        ("result", "toolu_1"),
        ("sleep", 1.0),  # the second tool runs: its line is said meanwhile
        ("result", "toolu_2"),
        ("text", "Done."),
    ]
    rig = make_rig(
        silence(300) + tone(700) + silence(2500) + tone(400) + silence(4000),
        stt=lambda u: "Do both." if loud_ms(u) > 500 else "Yes.",
        conversation=FakeConversation(script=script),
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.answers == [("allow", "")]
    said = " ".join(rig.tts.texts)
    question = "The agent wants to run touch a.txt. Allow?"
    assert "Creating a.txt." not in said, said
    assert question in said and "Listing the files." in said, said
    assert said.index(question) < said.index("Listing the files.") < said.index("Done."), said


def test_a_question_after_the_user_silenced_the_reply_is_still_heard(
    make_rig: Callable[..., Rig],
) -> None:
    # vad mode: a press only stops the reply; the agent goes on, and its question (and what
    # it says once answered) must be heard, or the question waits unheard until it times out.
    script = [
        ("text", "Let me look around the whole project before I change anything."),
        ("done",),
        ("sleep", 2.0),
        ("ask", "Bash", {"command": "rm -rf build"}),
        ("text", "Removed the build folder."),
    ]
    sink = FakeSink()
    rig = make_rig(
        silence(300) + tone(700) + silence(20000),
        conversation=FakeConversation(script=script),
        sink=sink,
        turn={"smart_endpoint": False},
    )
    assert wait_until(lambda: bool(sink.played))
    assert rig.loop.handle_command("press").startswith("ok")
    pressed = time.monotonic()
    assert wait_until(lambda: sink.stops == 1)
    assert wait_until(lambda: rig.loop.machine.asking)
    assert "The agent wants to run rm -rf build. Allow?" in " ".join(rig.tts.texts)
    assert any(at > pressed for at, _ in sink.played)  # heard, after the press
    assert rig.loop.handle_command("allow") == "ok allow"
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.answers == [("allow", "")]
    assert wait_until(lambda: "Removed the build folder." in rig.tts.texts)


def test_an_answer_from_the_control_socket_needs_a_question(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(silence(300))
    for command in ("allow", "deny", "always"):
        reply = rig.loop.handle_command(command)
        assert reply.startswith("error: no question is waiting"), reply


def test_a_question_nobody_can_answer_is_refused_unasked(make_rig: Callable[..., Rig]) -> None:
    script = [("ask", "Bash", {"command": "rm -rf build"}), ("text", "I left it.")]
    rig = make_rig(
        silence(300) + tone(700) + silence(3000),
        conversation=FakeConversation(script=script),
        questions=False,  # voice-assistant ask: a recording cannot answer
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.answers == [("deny", NOBODY_ANSWERS)]
    assert not any("Allow?" in text for text in rig.tts.texts)
    assert "I left it." in " ".join(rig.tts.texts)


@pytest.mark.parametrize(
    ("script", "heard"),
    [
        ([("quiet", "The secret word is pelican.")], "The secret word is pelican."),
        ([("quiet", "")], "The agent gave no reply."),
    ],
    ids=["whole-at-the-end", "empty"],
)
def test_a_reply_that_was_not_streamed_is_spoken(
    make_rig: Callable[..., Rig], script: list[Step], heard: str
) -> None:
    rig = make_rig(
        silence(300) + tone(700) + silence(3000), conversation=FakeConversation(script=script)
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert wait_until(lambda: heard in " ".join(rig.tts.texts)), rig.tts.texts
    assert rig.loop.reports[0].outcome == "answered"


@pytest.mark.parametrize(
    ("written", "heard", "not_heard"),
    [
        ("The folder is fine. Let me think abo", "The folder is fine.", "abo"),
        ("The folder is fine. The tests all passed.", "The tests all passed.", "Let me"),
    ],
    ids=["cut-off", "finished"],
)
def test_a_failed_turn_says_its_finished_sentences_only(
    make_rig: Callable[..., Rig], written: str, heard: str, not_heard: str
) -> None:
    script: list[Step] = [("text", written), ("fail",)]
    failing = FakeConversation(error=AgentTimeout("too slow"), script=script)
    rig = make_rig(silence(300) + tone(700) + silence(3000), conversation=failing)
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert wait_until(lambda: any("too long" in text for text in rig.tts.texts)), rig.tts.texts
    said = " ".join(rig.tts.texts)
    assert heard in said and not_heard not in said


@pytest.mark.parametrize("idle_batch_s", [0.0, WAKE_IDLE_BATCH_S, IDLE_BATCH_S])
def test_push_to_talk_hears_only_what_is_said_while_held(
    make_rig: Callable[..., Rig], idle_batch_s: float
) -> None:
    heard: list[int] = []
    measure = measuring(heard, "held words.")

    # 600 ms of speech before the press must not be transcribed.
    rig = make_rig(
        tone(600) + silence(400) + tone(900) + silence(3000),
        stt=measure,
        input={"mode": "ptt-hold"},
        idle_batch_s=idle_batch_s,  # a press ends the loop's rest at once
    )
    assert rig.loop.phase is Phase.IDLE
    assert wait_until(lambda: rig.source.frames_read >= 1000 // FRAME_MS)
    rig.loop.press()
    assert wait_until(lambda: rig.source.frames_read >= 1900 // FRAME_MS)
    rig.loop.release()
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.messages == [("test-room", "held words.")]
    # The held tone minus the key-click window, and nothing from before the press.
    assert 400 <= heard[-1] <= 900, heard


def test_a_press_again_within_the_release_grace_keeps_the_first_press_words(
    make_rig: Callable[..., Rig],
) -> None:
    heard: list[int] = []
    measure = measuring(heard, "held words.")

    rig = make_rig(
        silence(300) + tone(2000) + silence(300) + tone(1000) + silence(3000),
        stt=measure,
        input={"mode": "ptt-hold", "release_grace_ms": 1000},
    )
    keys = [(300, rig.loop.press), (2300, rig.loop.release), (2450, rig.loop.press)]
    for at_ms, key in [*keys, (3600, rig.loop.release)]:
        assert wait_until(lambda n=at_ms: rig.source.frames_read >= n // FRAME_MS)
        key()
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    # Both presses' words, less the first's key click (the second's fell in the silence).
    assert heard[-1] >= 2700, heard


def test_key_press_while_speaking_stops_the_reply(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(
        silence(300) + tone(600) + silence(6000),
        stt=lambda u: "tell me a long story " * 10,
        input={"mode": "ptt-toggle"},
    )
    with caplog.at_level(logging.INFO, logger="voice.turns"):
        rig.loop.press()
        assert wait_until(lambda: rig.loop.phase is Phase.SPEAKING)
        assert rig.sink.playing
        rig.loop.press()  # barge-in: stop speaking, listen again
        assert wait_until(lambda: rig.sink.stops >= 1)
        assert not rig.sink.playing
        assert wait_until(lambda: rig.loop.phase is Phase.LISTENING)
        assert wait_until(lambda: "reply: You said: tell me" in caplog.text)
    # The log keeps the agent's whole reply, and says it was cut short.
    mine = "reply: You said: tell me a long story"  # earlier tests' loops may still be logging
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith(mine)]
    assert line.endswith("begun]"), line


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
    error = Earcons(EarconConfig(), 16000).get("error")
    assert error is not None
    rig = make_rig(silence(300), earcons=True, audio={"stall_timeout_s": 0.3})
    assert wait_until(lambda: rig.source.frames_read > 3)
    rig.source.stalled = True
    assert wait_until(lambda: rig.source.reopens >= 3)
    rig.source.stalled = False
    rig.source.extend(tone(700) + silence(2000))
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    error_plays = [n for _t, n in rig.sink.played if n == len(error)]
    assert len(error_plays) == 1, "the outage should be announced once, not at every reopen"


def test_words_heard_before_the_microphone_stalled_are_kept(make_rig: Callable[..., Rig]) -> None:
    heard: list[int] = []

    def measure(u: Utterance) -> str:
        heard.append(loud_ms(u))
        return "hello there."

    rig = make_rig(
        silence(300) + tone(700) + silence(2000), measure, audio={"stall_timeout_s": 0.3}
    )
    assert wait_until(lambda: rig.source.frames_read >= 700 // FRAME_MS)  # mid-word
    rig.source.stalled = True
    assert wait_until(lambda: rig.source.reopens >= 1)
    rig.source.stalled = False
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.conversation.messages == [("test-room", "hello there.")]
    assert heard[-1] == 720, heard  # the whole tone: before the stall and after it


def test_words_heard_before_an_error_in_a_frame_are_kept(make_rig: Callable[..., Rig]) -> None:
    heard: list[int] = []

    def measure(u: Utterance) -> str:
        heard.append(loud_ms(u))
        return "hello there."

    rig = make_rig(silence(300) + tone(700) + silence(2000), measure)
    said = rig.loop.engines.speaker.said
    began = said.speech_began
    failed: list[float] = []

    def fail_once(at_s: float, *, over_reply: bool) -> None:
        if not failed:  # the bug: the machine never hears that speech started
            failed.append(at_s)
            raise RuntimeError("a bug in one frame's handling")
        began(at_s, over_reply=over_reply)

    said.speech_began = fail_once  # type: ignore[method-assign]
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert failed and rig.conversation.messages == [("test-room", "hello there.")]
    assert heard[-1] == 720, heard  # the whole tone


class StatusThatFailsOnce:
    """A status display that fails once, the first time it shows the user speaking while a
    turn runs: a bug in the loop's handling of an event, which must not end the loop."""

    def __init__(self) -> None:
        self.phases: list[str] = []
        self.failed = False

    def phase(self, phase: str) -> None:
        going_on = phase == "listening" and "thinking" in self.phases
        self.phases.append(phase)
        if going_on and not self.failed:
            self.failed = True
            raise RuntimeError("a bug in showing the phase")

    def level(self, dbfs: float) -> None:
        pass


def test_an_error_before_the_end_of_an_utterance_leaves_no_request_waiting(
    make_rig: Callable[..., Rig],
) -> None:
    """The segmenter reports several events for one chunk (its speech, pause and end, here
    delivered at once): an error in handling the first must not keep the others from the
    machine. The segmenter has ended the utterance, so a restart finds none to cut: the
    machine waited for that end until the user spoke again, and the reply it held back for
    the words going on with the request was never released."""

    def heard(u: Utterance) -> str:
        loud = loud_ms(u)
        return (
            "hello there."
            if 700 < loud < 900
            else "and the tests."
            if loud < 700
            else ("hello there and the tests.")
        )

    status = StatusThatFailsOnce()
    rig = make_rig(silence(300) + tone(800) + silence(600), heard, status=status)
    assert wait_until(lambda: len(rig.conversation.messages) == 1)
    # Before its reply is due (half-duplex: 1.5 s after the pause), the user goes on.
    rig.source.lump(tone(400) + silence(1800))
    assert wait_until(lambda: len(rig.conversation.messages) == 2, timeout_s=10)
    assert status.failed
    assert rig.conversation.messages[-1] == ("test-room", "hello there and the tests.")
    assert rig.conversation.revised == [False, True]


def test_a_reply_the_voice_cannot_say_is_told_by_the_error_earcon(
    make_rig: Callable[..., Rig],
) -> None:
    error = Earcons(EarconConfig(), 16000).get("error")
    assert error is not None
    rig = make_rig(silence(300) + tone(700) + silence(2000), earcons=True)

    def broken(text: str) -> Iterator[np.ndarray]:
        raise RemoteEngineError("the tts server is not available")
        yield  # a generator, as a voice is

    rig.tts.synthesize = broken  # type: ignore[method-assign]
    assert wait_until(lambda: rig.loop.reports and rig.loop.reports[0].speech_error)
    assert "the tts server is not available" in (rig.loop.reports[0].speech_error or "")
    assert wait_until(lambda: any(n == len(error) for _t, n in rig.sink.played))
    assert rig.conversation.messages == [("test-room", "hello there.")]  # answered, kept


def test_a_stream_an_underrun_left_behind_is_reopened_once_the_turn_is_over(
    make_rig: Callable[..., Rig],
) -> None:
    """DuplexDevice.needs_reopen: never while a reply plays or a turn runs (its audio must all
    be heard and played), but once nothing goes on and the loop has read every frame queued;
    then the next turn is heard."""
    rig = make_rig(
        silence(300) + tone(700) + silence(3000),
        stt=lambda u: "a story " * 12,
        idle_batch_s=IDLE_BATCH_S,  # as live: the loop catches up after each rest
    )
    assert wait_until(lambda: rig.loop.phase is Phase.SPEAKING)
    rig.source.needs_reopen = True  # the speaker underran while it played the reply
    reopened_during_turn = (
        wait_until(lambda: rig.source.reopens > 0 or not rig.loop.busy, timeout_s=30)
        and rig.loop.busy
    )
    assert not reopened_during_turn, "reopened in the middle of a turn"
    assert len(rig.loop.reports) == 1
    assert wait_until(lambda: rig.source.reopens == 1)
    assert not rig.source.needs_reopen
    rig.source.extend(tone(700) + silence(2000))
    assert wait_until(lambda: len(rig.loop.reports) == 2)
    assert rig.source.reopens == 1


def test_the_thinking_cue_repeats_while_the_agent_works_and_never_over_the_reply(
    make_rig: Callable[..., Rig],
) -> None:
    thinking = Earcons(EarconConfig(), 16000).get("thinking")
    assert thinking is not None
    rig = make_rig(
        silence(300) + tone(600) + silence(5000),
        conversation=FakeConversation(delay_s=1.5),
        earcons=True,
        earcons_config={"thinking_repeat_s": 0.4},
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    cues = [t for t, n in rig.sink.played if n == len(thinking)]
    assert len(cues) >= 3
    first_audio = rig.loop.reports[0].first_audio_s
    assert first_audio is not None and all(t < first_audio for t in cues)


def test_an_agent_whose_service_does_not_answer_says_so_once_and_goes_on(
    make_rig: Callable[..., Rig],
) -> None:
    script: list[Step] = [("retry", 1, 529), ("retry", 2, 529), ("text", "Here now.")]
    rig = make_rig(
        silence(300) + tone(600) + silence(4000),
        conversation=FakeConversation(script=script),
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    said = rig.tts.texts
    assert said.count("The agent's service is not answering.") == 1, said  # once, not per retry
    assert said.index("Still trying.") < said.index("Here now."), said


def test_while_its_service_does_not_answer_the_progress_line_says_still_trying(
    make_rig: Callable[..., Rig],
) -> None:
    agent = dataclasses.replace(Config().core.agent, progress_s=3.0)
    script: list[Step] = [("retry", 1, 529), ("sleep", 4.5), ("text", "Here now.")]
    rig = make_rig(
        silence(300) + tone(600) + silence(7000),
        conversation=FakeConversation(script=script),
        core={"agent": agent},
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1, timeout_s=30)
    said = rig.tts.texts
    assert "Still trying." in said[said.index("Still trying.") + 1 :], said  # the progress line
    assert "Still working." not in said, said


def test_a_conversation_the_agent_no_longer_has_is_said_before_the_reply(
    make_rig: Callable[..., Rig],
) -> None:
    script: list[Step] = [("lost",), ("text", "Hello again.")]
    rig = make_rig(
        silence(300) + tone(600) + silence(4000), conversation=FakeConversation(script=script)
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    said = " ".join(rig.tts.texts)  # (the first sentence may be cut at its comma)
    lost = "The agent no longer has our earlier conversation, so this starts a new one."
    assert said.find(lost) == 0 and said.find("Hello again.") > 0, rig.tts.texts


def test_an_agent_at_work_for_a_while_is_said_to_be_still_working(
    make_rig: Callable[..., Rig],
) -> None:
    agent = dataclasses.replace(Config().core.agent, progress_s=3.0)
    rig = make_rig(
        silence(300) + tone(600) + silence(6000),
        conversation=FakeConversation(delay_s=4.5),
        core={"agent": agent},
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1, timeout_s=30)
    assert "Still working." in rig.tts.texts, rig.tts.texts


def test_no_progress_line_while_a_question_waits_for_its_answer(
    make_rig: Callable[..., Rig],
) -> None:
    # Nothing runs while the agent waits, and an answer said over "Still working." was lost.
    agent = dataclasses.replace(Config().core.agent, progress_s=3.0)
    script = [
        ("tool", "Bash", {"command": "npm test", "description": "Run the tests"}),
        ("ask", "Bash", {"command": "npm test"}, "toolu_1"),
        ("result", "toolu_1"),
        ("text", "All passed."),
    ]
    rig = make_rig(
        silence(300) + tone(700) + silence(8500) + tone(400) + silence(3000),
        stt=lambda u: "Run the tests." if loud_ms(u) > 500 else "Yes.",
        conversation=FakeConversation(script=script),
        core={"agent": agent},
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1, timeout_s=30)
    assert rig.conversation.answers == [("allow", "")]
    said = rig.tts.texts
    assert not [line for line in said if line.startswith("Still working")], said


class SlowToWake(FakeSink):
    """A speaker that takes a while to start again for the error buzz (a resting stream
    restarted): the turn's thread is held there before it can tell the loop it is over."""

    def __init__(self, error_samples: int) -> None:
        super().__init__()
        self.error_samples = error_samples
        self.error_asked_s: float | None = None

    def play(self, samples: np.ndarray, rate: int) -> None:
        if len(samples) == self.error_samples:
            self.error_asked_s = time.monotonic()
            time.sleep(0.5)
        super().play(samples, rate)


def test_no_thinking_cue_follows_the_error_buzz_of_a_failed_agent(
    make_rig: Callable[..., Rig],
) -> None:
    """The turn's thread buzzes before the loop hears the agent failed: in that gap the
    machine still asks for ticks, and none may play after the buzz (CI heard one)."""
    earcons = Earcons(EarconConfig(), 16000)
    thinking, error = earcons.get("thinking"), earcons.get("error")
    assert thinking is not None and error is not None
    sink = SlowToWake(len(error))
    rig = make_rig(
        silence(300) + tone(600) + silence(4000),
        conversation=FakeConversation(error=AgentError("crashed"), delay_s=0.6),
        earcons=True,
        earcons_config={"thinking_repeat_s": 0.1},
        sink=sink,
    )
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert sink.error_asked_s is not None
    ticks = [t for t, n in sink.played if n == len(thinking)]
    assert ticks, "the agent worked 0.6 s: the cue should have ticked"
    assert all(t < sink.error_asked_s for t in ticks), (sink.error_asked_s, ticks)


class BrokenSpeaker(FakeSink):
    def play(self, samples: np.ndarray, rate: int) -> None:
        raise DeviceError("speaker unplugged")


def test_a_press_while_the_speaker_is_gone_does_not_end_the_loop(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(
        silence(300) + tone(700) + silence(3000),
        earcons=True,
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


def test_a_key_command_that_does_nothing_in_the_mode_says_so(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(silence(2000))  # vad mode: the microphone is always on
    press, release = rig.loop.handle_command("press"), rig.loop.handle_command("release")
    assert press.startswith("ok press (") and "only stops a reply" in press
    assert release.startswith("ok release (") and "nothing to release" in release
    toggle = rig.loop.handle_command("toggle")
    assert toggle.startswith("ok toggle (") and "only stops a reply" in toggle
    assert rig.loop.handle_command("stop") == "ok stop"


def test_stop_from_the_control_socket_interrupts_the_agent(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(
        silence(300) + tone(700) + silence(6000), conversation=FakeConversation(delay_s=30)
    )
    assert rig.conversation.received.wait(20)
    assert rig.loop.handle_command("stop") == "ok stop"
    assert wait_until(lambda: len(rig.loop.reports) == 1)
    assert rig.loop.reports[0].outcome == "interrupted"
    assert wait_until(lambda: "Stopped." in rig.tts.texts)


def test_a_chunk_cut_at_the_end_of_the_wake_word_keeps_its_words_in_step() -> None:
    pcm, words = bytes(range(200)), bytes(range(55, 255))  # 100 samples each, told apart
    chunk = AudioChunk(pcm, 16000, timestamp_s=1.0, echo=True, words=words)
    cut = after(chunk, 1.0 + 30 / 16000)
    assert cut is not None
    assert (cut.pcm, cut.words) == (pcm[60:], words[60:])
    assert cut.timestamp_s == pytest.approx(1.0 + 30 / 16000) and cut.echo
    assert after(chunk, 0.5) is chunk and after(chunk, 2.0) is None
    with pytest.raises(ValueError, match="as long as"):
        AudioChunk(pcm, 16000, words=words[2:])


@pytest.mark.parametrize("smart_endpoint", [True, False])
def test_the_replys_next_sentence_waits_while_the_user_says_a_request(
    make_rig: Callable[..., Rig], smart_endpoint: bool
) -> None:
    """Half-duplex: a sentence of the reply, a tool runs, and the user says 4 s of a new
    request; the reply's next sentence is ready 0.5 s into it. It waits for their words:
    begun (and even paused), it gated the microphone over them, splitting the request or
    losing its end."""
    heard: list[int] = []

    def stt(u: Utterance) -> str:
        heard.append(loud_ms(u))
        return "Hello there." if loud_ms(u) < 1000 else "Also check the index and the tests."

    script: list[Step] = [
        ("text", "First."),
        ("done",),
        ("sleep", 2.5),
        ("text", "A second sentence, ready while the user speaks, long enough to hear."),
        ("done",),
    ]
    rig = make_rig(
        silence(300) + tone(800) + silence(2400) + tone(4000) + silence(6000),
        stt,
        conversation=FakeConversation(script=script),
        turn={"smart_endpoint": smart_endpoint},
    )
    assert wait_until(lambda: len(rig.conversation.messages) >= 2, timeout_s=30)
    assert rig.conversation.messages[1:] == [("test-room", "Also check the index and the tests.")]
    assert max(heard) >= 3900, heard  # every word of it in one utterance
    assert wait_until(lambda: "A second sentence" in " ".join(rig.tts.texts), timeout_s=15)


def test_going_on_as_the_reply_begins_keeps_every_word_without_an_end_model(
    make_rig: Callable[..., Rig],
) -> None:
    """No end-of-turn model: the reply is let go as the request is sent, and the user goes
    on (after a pause longer than the hangover) just before its first words come. Its first
    sentence, begun over them, is paused at once, and a paused reply does not keep the
    microphone gated: the whole request is heard and revised once. (The fake speaker falls
    silent the moment it is paused; a real one after its latency, and the cooldown follows.)"""
    heard: list[int] = []

    def stt(u: Utterance) -> str:
        heard.append(loud_ms(u))
        return "Book a table for two." if loud_ms(u) < 900 else "Book a table for two at eight."

    rig = make_rig(
        silence(300) + tone(800) + silence(2000) + tone(3000) + silence(6000),
        stt,
        conversation=FakeConversation(delay_s=1.2),  # its first words 1.2 s after the send
        turn={"smart_endpoint": False},
    )
    assert wait_until(lambda: len(rig.conversation.messages) >= 2, timeout_s=30)
    assert rig.conversation.messages[-1] == ("test-room", "Book a table for two at eight.")
    assert rig.conversation.revised[-1]
    assert max(heard) >= 3700, heard  # the first part and all 3 s of the rest, joined
