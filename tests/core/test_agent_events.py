"""What AgentRunner reports while a real subprocess works: blocks, tools, denials, interrupts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from core.agent import AgentRunner
from core.agent_events import (
    BLOCK_SEPARATOR,
    AgentEvent,
    AgentTurn,
    StreamRestarted,
    TextDelta,
    TextDone,
    ToolResult,
    ToolUse,
    TurnControl,
    text_only,
)
from core.agent_output import Denial, OutputParser
from tests.core.conftest import ECHO_AGENT, fake_runner


def test_a_tool_turn_is_reported_block_by_block() -> None:
    events: list[tuple[AgentEvent, float]] = []
    turn = AgentTurn("q", "desk", on_event=lambda e: events.append((e, time.monotonic())))
    result = fake_runner("tool-turn", "0.5").run_turn(turn)
    kinds = [e for e, _ in events if not isinstance(e, TextDelta)]
    assert kinds == [
        TextDone(),
        ToolUse("toolu_1", "Bash", {"command": "ls"}),
        ToolResult("toolu_1"),
        TextDone(),
    ]
    first_text = "".join(e.text for e, _ in events[:6] if isinstance(e, TextDelta)).strip()
    assert first_text == "Let me look at the files."
    # The first sentence is complete before the tool runs, not when it finished.
    done_at = next(t for e, t in events if isinstance(e, TextDone))
    result_at = next(t for e, t in events if isinstance(e, ToolResult))
    assert result_at - done_at > 0.3
    assert "subagent" not in "".join(e.text for e, _ in events if isinstance(e, TextDelta))
    assert result.text == "Let me look at the files.\n\nThe folder has three files."
    assert result.denials == (Denial("Bash", "rm -rf b"),)
    assert not result.interrupted


def test_text_only_keeps_blocks_apart_for_the_plain_callback() -> None:
    got: list[str] = []
    fake_runner("tool-turn").run("q", on_text=got.append)
    assert "".join(got).split() == "Let me look at the files. The folder has three files.".split()
    assert "files.\n\nThe folder" in "".join(got).replace(" \n", "\n")


def test_an_interrupt_ends_the_turn_as_a_cancel_not_an_error() -> None:
    control = TurnControl()
    runner = AgentRunner([*ECHO_AGENT, "--think-ms", "30000"], 60)
    threading.Timer(0.5, control.interrupt).start()
    started = time.monotonic()
    result = runner.run_turn(AgentTurn("hello", "desk", control=control))
    assert result.interrupted and not result.is_error
    assert time.monotonic() - started < 20  # not the 30 s think, nor the 60 s timeout
    assert result.session_id is not None  # resumable


@pytest.mark.parametrize("bound_first", [True, False])
def test_a_turn_is_interrupted_once_however_often_it_is_asked(bound_first: bool) -> None:
    calls: list[str] = []
    control = TurnControl()
    if bound_first:
        control.bind(interrupt=lambda: calls.append("interrupt"))
    control.interrupt()
    if not bound_first:  # asked before the agent started: sent once it does
        control.bind(interrupt=lambda: calls.append("interrupt"))
    control.interrupt()
    control.interrupt()
    assert calls == ["interrupt"] and control.interrupted


def test_an_interrupt_before_the_process_started_is_not_lost() -> None:
    control = TurnControl()
    control.interrupt()
    runner = AgentRunner([*ECHO_AGENT, "--think-ms", "30000"], 60)
    result = runner.run_turn(AgentTurn("hello", "desk", control=control))
    assert result.interrupted


def test_an_agent_that_ignores_sigint_is_stopped_after_the_grace(tmp_path: Path) -> None:
    control = TurnControl()
    pidfile = tmp_path / "pid"
    runner = fake_runner("hang", "marker-x", str(pidfile), "ignore-int", interrupt_grace_s=1.0)
    threading.Timer(0.5, control.interrupt).start()
    started = time.monotonic()
    result = runner.run_turn(AgentTurn("hello", "desk", control=control))
    assert result.interrupted
    assert time.monotonic() - started < 15


def test_text_only_of_nothing_is_nothing() -> None:
    assert text_only(None) is None


class Stream:
    """Claude's stream-json events, fed to an :class:`OutputParser` that records its events."""

    def __init__(self) -> None:
        self.events: list[AgentEvent] = []
        self.parser = OutputParser("stream-json", self.events.append, None)

    def stream(self, kind: str, **fields: object) -> None:
        self.parser.event({"type": "stream_event", "event": {"type": kind, **fields}})

    def text_streamed(self, message_id: str, *deltas: str, ended: bool = True) -> None:
        """One text block of a message, as deltas; ``ended``: its block and message end."""
        self.stream("message_start", message={"id": message_id})
        self.stream("content_block_start", index=0, content_block={"type": "text"})
        for delta in deltas:
            self.stream("content_block_delta", index=0, delta={"type": "text_delta", "text": delta})
        if ended:
            self.stream("content_block_stop", index=0)
            self.stream("message_stop")

    def whole(self, message_id: str, text: str) -> None:
        content = [{"type": "text", "text": text}]
        self.parser.event({"type": "assistant", "message": {"id": message_id, "content": content}})

    def said(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))


def test_a_message_that_comes_whole_after_streamed_ones_is_said() -> None:
    # Claude Code calls again without streaming when a stream failed: that message's text
    # comes only whole. It was never said, since earlier messages had come as deltas.
    run = Stream()
    run.stream("message_start", message={"id": "m1"})
    run.stream("content_block_start", index=0, content_block={"type": "text"})
    run.stream("content_block_delta", index=0, delta={"type": "text_delta", "text": "Let me look."})
    run.stream("content_block_stop", index=0)
    for message_id, text in (("m1", "Let me look."), ("m2", "The folder is empty.")):
        run.whole(message_id, text)
    assert run.said() == "Let me look.The folder is empty."  # each once
    assert run.events.count(TextDone()) == 2
    assert not [e for e in run.events if isinstance(e, StreamRestarted)]  # m1 had ended


def test_a_stream_cut_off_and_sent_again_whole_is_a_restart_of_its_block() -> None:
    # The connection dropped (or the stream sent an error) after a few deltas: Claude Code
    # asks again without streaming, and the whole message comes under a new id. What of it
    # was said already is for the voice to know (its own splitter cut the sentences).
    run = Stream()
    run.text_streamed("m1", "Paris is", " big. Th", "e capita", ended=False)
    run.whole("m2", "Paris is big. The capital of France is Paris.")
    assert run.events[3:] == [
        StreamRestarted(
            "Paris is big. The capita", "Paris is big. The capital of France is Paris."
        ),
        TextDone(),
    ]
    assert run.parser.texts == ["Paris is big. The capital of France is Paris."]  # the reply


def test_a_restart_waits_for_the_text_block_of_a_message_that_thinks_first() -> None:
    # With thinking on, the whole message comes as a thinking block, then its text.
    run = Stream()
    run.text_streamed("m1", "Paris is big. The capita", ended=False)
    thinking = [{"type": "thinking", "thinking": "The user asks about Paris."}]
    run.parser.event({"type": "assistant", "message": {"id": "m2", "content": thinking}})
    run.whole("m2", "Paris is big. The capital of France is Paris.")
    assert [e for e in run.events if isinstance(e, StreamRestarted)] == [
        StreamRestarted("Paris is big. The capita", "Paris is big. The capital of France is Paris.")
    ]
    assert run.said() == "Paris is big. The capita"  # (the rest is the restart's)


def test_a_restart_that_goes_straight_to_a_tool_withdraws_the_cut_off_words() -> None:
    # Asked again, the model (a new sample) may write no text before its tool call.
    run = Stream()
    run.text_streamed("m1", "Paris is big. The capi", ended=False)
    read = {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "b.py"}}
    run.parser.event({"type": "assistant", "message": {"id": "m2", "content": [read]}})
    assert run.events[1:] == [
        StreamRestarted("Paris is big. The capi", ""),
        TextDone(),
        ToolUse("t1", "Read", {"file_path": "b.py"}),
    ]


def test_the_plain_text_callback_gets_a_restarted_block_whole_after_what_it_had() -> None:
    # What was passed on cannot be taken back: nothing of the reply is lost, and the two
    # are kept apart.
    got: list[str] = []
    forward = text_only(got.append)
    assert forward is not None
    for event in (
        TextDelta("Paris is big. The capita"),
        StreamRestarted("Paris is big. The capita", "Paris is big. The capital."),
        TextDone(),
    ):
        forward(event)
    assert (
        "".join(got) == "Paris is big. The capita" + BLOCK_SEPARATOR + "Paris is big. The capital."
    )
