"""``python -m core.echo_agent`` speaks Claude's print-mode protocol."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid

import pytest

from core.echo_agent import split_reply
from tests.core.conftest import ECHO_AGENT

RESULT_FIELDS = {
    "type", "subtype", "is_error", "result", "session_id",
    "total_cost_usd", "duration_ms", "num_turns", "usage",
}  # fmt: skip


def echo(*args: str, prompt: str = "hello there") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ECHO_AGENT, *args], input=prompt, capture_output=True, text=True, timeout=30, check=False
    )


def test_stream_json_is_the_default_and_mirrors_claude() -> None:
    run = echo("-p", "--output-format", "stream-json", "--verbose", prompt="-n what time is it")
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
    deltas = [
        e["event"]["delta"]["text"]
        for e in events
        if e["type"] == "stream_event" and e["event"]["type"] == "content_block_delta"
    ]
    assert len(deltas) >= 2  # streamed in pieces, like --include-partial-messages
    assert "".join(deltas) == "You said: -n what time is it"
    (block,) = [b for e in events if e["type"] == "assistant" for b in e["message"]["content"]]
    assert block == {"type": "text", "text": "You said: -n what time is it"}
    result = events[-1]
    assert RESULT_FIELDS <= result.keys()
    assert result["type"] == "result" and result["is_error"] is False
    assert result["result"] == "You said: -n what time is it"
    assert result["session_id"] == events[0]["session_id"]
    assert uuid.UUID(result["session_id"])
    assert echo(prompt="x").stdout.splitlines()[-1].startswith('{"type": "result"')


def test_json_output_is_one_object() -> None:
    run = echo("-p", "--output-format", "json")
    (line,) = run.stdout.splitlines()
    result = json.loads(line)
    assert RESULT_FIELDS <= result.keys() and result["result"] == "You said: hello there"


def test_text_output_is_the_reply() -> None:
    assert echo("--output-format", "text").stdout == "You said: hello there\n"


def test_resume_keeps_a_known_id_and_rejects_an_unknown_one() -> None:
    sid = str(uuid.uuid4())
    run = echo("--output-format", "json", "--resume", sid)
    assert json.loads(run.stdout)["session_id"] == sid
    bad = echo("--resume", "not-a-session")
    assert bad.returncode == 1
    assert "No conversation found with session ID: not-a-session" in bad.stderr
    result = json.loads(bad.stdout.splitlines()[-1])
    assert result["is_error"] is True and result["subtype"] == "error_during_execution"


def test_empty_input_is_an_error_like_claude() -> None:
    run = echo(prompt="")
    assert run.returncode == 1 and "Input must be provided" in run.stderr


@pytest.mark.parametrize("text", ["You said: a b c d e f g", "one", "a  b", " lead"])
def test_split_reply_loses_nothing(text: str) -> None:
    assert "".join(split_reply(text)) == text


def test_starts_without_importing_anything_heavy() -> None:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "core.echo_agent"],
        input="hi",
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    heavy = {"subprocess", "core.store", "core.conversation", "core.config", "tomllib", "numpy"}
    assert imported & heavy == set()


def test_sigint_ends_the_turn_as_an_aborted_result_like_claude() -> None:
    proc = subprocess.Popen(
        [*ECHO_AGENT, "-p", "--think-ms", "30000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("hello")
    proc.stdin.close()
    init = json.loads(proc.stdout.readline())  # it is up and thinking
    proc.send_signal(signal.SIGINT)
    result = json.loads(proc.stdout.readline())
    assert proc.wait(10) == 0
    assert result["terminal_reason"] == "aborted_streaming" and result["is_error"] is True
    assert result["session_id"] == init["session_id"]
