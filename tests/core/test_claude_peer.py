"""The real Claude Code CLI against the scripted Messages API (tests/claude_api.py).

These pin the stream-json protocol facts the agent session is built on (see
notes/claude-protocol.md): text arrives as deltas and each block's end arrives before its
tool runs; tools really run; permission requests come over stdio and are answered there;
an ``interrupt`` control request ends a turn and the same process takes the next one.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.claude_api import ClaudeApi, Hold, Reply, Text, ToolUse, result_text
from tests.claude_fixtures import (
    STREAM_JSON,
    STREAM_JSON_IO,
    content_types,
    is_stream,
    is_type,
    text_delta,
)
from tests.procs import running

pytestmark = [pytest.mark.compat, pytest.mark.timeout(180)]

VOICE_PROMPT = "You are heard, not read: answer in one or two short spoken sentences."


def _is_text_delta(event: dict[str, object]) -> bool:
    return text_delta(event) is not None


def _wait_until(condition: Callable[[], object], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_text_block_ends_before_its_tool_runs_and_the_tool_really_runs(
    claude_api: ClaudeApi, claude_process, claude_cwd: Path
) -> None:
    # The tool waits (bounded) for a file the test creates only once it has seen the end of
    # the text block before it: were that end held back until the tool finished (what the
    # issue heard), this test would time out.
    command = "for i in $(seq 600); do [ -e go ] && break; sleep 0.1; done; echo ran > ran.txt"
    claude_api.script(
        Reply(
            [
                Text("Let me look at the files.", chunk_chars=6),
                ToolUse("Bash", {"command": command, "description": "Wait for the go file"}),
            ]
        ),
        Reply([Text("The folder has one file.")]),
    )
    cli = claude_process(
        *STREAM_JSON,
        "--include-partial-messages",
        "--allowedTools",
        "Bash",
        stdin_text="look at the files",
    )
    deltas = []
    while True:
        event = cli.next(lambda e: _is_text_delta(e) or is_stream("content_block_stop")(e))
        if event["type"] == "stream_event" and event["event"]["type"] == "content_block_stop":
            break
        deltas.append(text_delta(event))
    assert len(deltas) > 1  # streamed in pieces, as the server sent it
    assert "".join(deltas) == "Let me look at the files."
    finished_text = cli.seen(lambda e: is_type("assistant")(e) and content_types(e) == ["text"])
    assert finished_text[0]["message"]["content"][0]["text"] == "Let me look at the files."
    cli.next(lambda e: is_type("assistant")(e) and content_types(e) == ["tool_use"])
    assert not (claude_cwd / "ran.txt").exists()

    (claude_cwd / "go").touch()
    tool_result = cli.next(lambda e: is_type("user")(e) and content_types(e) == ["tool_result"])
    assert tool_result["message"]["content"][0]["is_error"] is False
    result = cli.result()
    assert result["is_error"] is False and result["terminal_reason"] == "completed"
    assert result["result"] == "The folder has one file."  # only the last text block
    assert (claude_cwd / "ran.txt").read_text() == "ran\n"
    assert cli.wait() == 0
    assert cli.non_json == []
    assert claude_api.exhausted == 0 and len(claude_api.turns) == 2
    sent = claude_api.turns[1].tool_results()
    assert [b["is_error"] for b in sent] == [False]


def test_permission_requests_are_answered_over_stdio_allow_then_deny(
    claude_api: ClaudeApi, claude_process, claude_cwd: Path
) -> None:
    allowed, denied = claude_cwd / "allowed.txt", claude_cwd / "denied.txt"
    create = {"command": "touch allowed.txt", "description": "Create allowed.txt"}
    refused = {"command": "touch denied.txt", "description": "Create denied.txt"}
    claude_api.script(
        Reply([Text("I'll create it."), ToolUse("Bash", create)]),
        Reply([Text("Created.")]),
        Reply([ToolUse("Bash", refused)]),
        Reply([Text("I was not allowed to.")]),
    )
    cli = claude_process(*STREAM_JSON_IO, "--permission-prompt-tool", "stdio")

    cli.send_user("create a file")
    ask = cli.next(is_type("control_request"))
    request = ask["request"]
    assert request["subtype"] == "can_use_tool"
    assert request["tool_name"] == "Bash" and request["input"] == create
    assert request["description"] == "Create allowed.txt"
    assert request["tool_use_id"].startswith("toolu_")
    assert request["permission_suggestions"]  # what "always" would send back
    time.sleep(0.5)
    assert not allowed.exists()  # the tool waits for the answer
    cli.answer(ask, {"behavior": "allow", "updatedInput": request["input"]})
    first = cli.result()
    assert first["is_error"] is False and first["permission_denials"] == []
    assert allowed.exists()

    cli.send_user("create another")
    ask = cli.next(is_type("control_request"))
    cli.answer(ask, {"behavior": "deny", "message": "The user said no."})
    second = cli.result()
    assert not denied.exists()
    # A denial does not fail the turn: it is reported only in permission_denials.
    assert second["is_error"] is False and second["result"] == "I was not allowed to."
    tool_use_id = ask["request"]["tool_use_id"]
    assert second["permission_denials"] == [
        {"tool_name": "Bash", "tool_use_id": tool_use_id, "tool_input": refused}
    ]
    # The model is told, as an error tool_result carrying the deny message.
    (sent,) = claude_api.turns[3].tool_results()
    assert sent["tool_use_id"] == tool_use_id
    assert sent["is_error"] is True and result_text(sent) == "The user said no."
    assert first["session_id"] == second["session_id"]


def test_always_allow_with_the_suggestions_skips_the_next_identical_request(
    claude_api: ClaudeApi, claude_process, claude_cwd: Path
) -> None:
    # The suggestions write a rule to .claude/settings.local.json, which the CLI reads only
    # inside a git repository (outside one it asks again: see notes/claude-protocol.md).
    subprocess.run(["git", "init", "-q", str(claude_cwd)], check=True)
    tests = {"command": "make test", "description": "Run the tests"}
    claude_api.script(
        Reply([ToolUse("Bash", tests)]),
        Reply([ToolUse("Bash", tests)]),
        Reply([Text("Ran them twice.")]),
    )
    cli = claude_process(*STREAM_JSON_IO, "--permission-prompt-tool", "stdio")
    cli.send_user("run the tests twice")
    ask = cli.next(is_type("control_request"))
    request = ask["request"]
    always = {
        "behavior": "allow",
        "updatedInput": request["input"],
        "updatedPermissions": request["permission_suggestions"],
    }
    cli.answer(ask, always)
    result = cli.result()
    assert result["result"] == "Ran them twice."
    assert len(cli.seen(is_type("control_request"))) == 1
    assert len(claude_api.turns[2].tool_results()) == 1  # the second run's result
    assert "Bash(make test" in (claude_cwd / ".claude" / "settings.local.json").read_text()


def test_interrupt_while_streaming_ends_the_turn_and_the_process_takes_the_next(
    claude_api: ClaudeApi, claude_process
) -> None:
    hold = Hold(after_deltas=2)
    claude_api.script(
        Reply([Text("This answer is long and gets cut off here.", chunk_chars=8)], hold=hold),
        Reply([Text("Second answer.")]),
    )
    cli = claude_process(*STREAM_JSON_IO, "--include-partial-messages")
    cli.send_user("first question")
    assert hold.wait_reached(60)
    assert [text_delta(cli.next(_is_text_delta)) for _ in range(2)] == ["This ans", "wer is l"]

    started = time.monotonic()
    request_id = cli.control("interrupt")
    result = cli.result(timeout_s=15)
    took = time.monotonic() - started
    assert result["is_error"] is True
    assert result["subtype"] == "error_during_execution"
    assert result["terminal_reason"] == "aborted_streaming"
    acks = cli.seen(is_type("control_response"))
    assert [a["response"] for a in acks] == [{"subtype": "success", "request_id": request_id}]
    assert took < 10  # milliseconds when idle; generous for a busy machine
    assert claude_api.turns[0].finished.wait(10) and claude_api.turns[0].disconnected

    cli.send_user("second question")
    second = cli.result()
    assert second["is_error"] is False and second["result"] == "Second answer."
    assert second["session_id"] == result["session_id"]
    history = claude_api.turns[1]
    assistant = [m for m in history.messages if m["role"] == "assistant"]
    assert assistant[-1]["content"] == [{"type": "text", "text": "This answer is l"}]
    texts = history.user_texts()
    assert texts[-2].startswith("[Request interrupted by user]")
    assert texts[-1] == "second question"


def test_interrupt_while_a_tool_runs_stops_the_tool(
    claude_api: ClaudeApi, claude_process, claude_cwd: Path
) -> None:
    marker = f"sleep 29.{random.randrange(100000, 999999)}"  # finds the tool's process
    claude_api.script(
        Reply([Text("Running it."), ToolUse("Bash", {"command": f"{marker}; touch slept.txt"})]),
        Reply([Text("Stopped, as you asked.")]),
    )
    cli = claude_process(*STREAM_JSON_IO, "--allowedTools", "Bash")
    cli.send_user("run the slow thing")
    assert _wait_until(lambda: running(marker), 60), "the tool never started"

    cli.control("interrupt")
    result = cli.result(timeout_s=15)
    assert result["is_error"] is True and result["terminal_reason"] == "aborted_tools"
    assert _wait_until(lambda: not running(marker), 10), "the tool outlived it"
    assert not (claude_cwd / "slept.txt").exists()

    cli.send_user("what happened?")
    assert cli.result()["result"] == "Stopped, as you asked."
    (sent,) = claude_api.turns[1].tool_results()
    assert sent["is_error"] is True
    assert "[Request interrupted by user for tool use]" in claude_api.turns[1].user_texts()[-2]


def test_one_process_serves_several_turns_with_one_session(
    claude_api: ClaudeApi, claude_process
) -> None:
    claude_api.script(Reply([Text("One.")]), Reply([Text("Two.")]))
    cli = claude_process(*STREAM_JSON_IO, "--append-system-prompt", VOICE_PROMPT)
    cli.send_user("first")
    first = cli.result()
    cli.send_user("second")
    second = cli.result()
    assert (first["result"], second["result"]) == ("One.", "Two.")
    # Every turn starts with its own system init event, of the same session.
    inits = cli.seen(is_type("system", "init"))
    assert len(inits) == 2
    assert {e["session_id"] for e in inits} == {first["session_id"], second["session_id"]}
    assert first["session_id"] == second["session_id"]
    # The second request carries the first exchange; the voice prompt is in both.
    later = claude_api.turns[1]
    assert later.user_texts()[-2:] == ["first", "second"]
    assert [m["content"] for m in later.messages if m["role"] == "assistant"] == [
        [{"type": "text", "text": "One."}]
    ]
    assert all(VOICE_PROMPT in turn.system_text for turn in claude_api.turns)
    cli.end_input()
    assert cli.wait() == 0  # stdin EOF between turns ends the process cleanly
    assert cli.non_json == [] and claude_api.exhausted == 0
