"""``python -m core.echo_agent`` speaks Claude's print-mode and session protocols."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.agent import AgentRunner
from core.agent_events import AgentTurn, TurnControl
from core.claude import ClaudeSessions
from core.config import AgentConfig
from core.conversation import build_agent
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


# ---- --input-format stream-json: one process, many turns, like Claude's session mode --------
def _user(text: str) -> str:
    message = {"role": "user", "content": text}
    return json.dumps({"type": "user", "message": message, "parent_tool_use_id": None}) + "\n"


def _session(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ECHO_AGENT, "-p", "--input-format", "stream-json", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until_result(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    assert proc.stdout is not None
    events = []
    while line := proc.stdout.readline():
        events.append(json.loads(line))
        if events[-1]["type"] == "result":
            break
    return events


def test_stream_json_input_answers_each_message_in_one_process() -> None:
    proc = _session()
    assert proc.stdin is not None
    proc.stdin.write(_user("first") + _user("second"))
    proc.stdin.flush()
    first, second = _until_result(proc), _until_result(proc)
    assert first[0]["type"] == "system" and first[-1]["result"] == "You said: first"
    assert second[-1]["result"] == "You said: second"
    assert first[-1]["session_id"] == second[-1]["session_id"] == first[0]["session_id"]
    proc.stdin.close()
    assert proc.wait(10) == 0  # the end of input ends it


def test_an_interrupt_request_aborts_the_turn_and_the_process_lives_on() -> None:
    proc = _session("--think-ms", "30000")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(_user("hello"))
    proc.stdin.flush()
    init = json.loads(proc.stdout.readline())  # it is up and thinking
    interrupt = {"type": "control_request", "request_id": "r1", "request": {"subtype": "interrupt"}}
    proc.stdin.write(json.dumps(interrupt) + "\n")
    proc.stdin.flush()
    response, result = _until_result(proc)
    assert response == {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": "r1"},
    }
    assert result["terminal_reason"] == "aborted_streaming" and result["is_error"] is True
    assert result["session_id"] == init["session_id"]
    assert proc.poll() is None  # still there for the next turn
    proc.stdin.close()
    assert proc.wait(10) == 0


def test_what_came_before_the_end_of_input_is_answered() -> None:
    proc = _session("--think-ms", "300")
    out, _err = proc.communicate(_user("one") + _user("two"), timeout=30)  # then stdin closes
    results = [e for e in map(json.loads, out.splitlines()) if e["type"] == "result"]
    assert [r["result"] for r in results] == ["You said: one", "You said: two"]
    assert proc.returncode == 0


def test_a_line_that_is_not_json_is_an_error_like_claude() -> None:
    proc = _session()
    _out, err = proc.communicate("not json\n", timeout=30)
    assert proc.returncode == 1 and "Error parsing streaming input line" in err


def test_the_echo_agent_runs_as_a_session_per_room_like_claude() -> None:
    agent = build_agent(AgentConfig(command=ECHO_AGENT, timeout_s=30.0), ECHO_AGENT)
    assert isinstance(agent, ClaudeSessions)
    assert agent.command[-2:] == ("--input-format", "stream-json")
    try:
        first = agent.run("one")
        pid = agent._processes["default"].proc.pid
        second = agent.run("two", session_id=first.session_id)
        assert (first.text, second.text) == ("You said: one", "You said: two")
        assert agent._processes["default"].proc.pid == pid  # no process per turn
    finally:
        agent.stop()
    per_turn = build_agent(AgentConfig(command=ECHO_AGENT, mode="per-turn"), ECHO_AGENT)
    assert isinstance(per_turn, AgentRunner)


@contextlib.contextmanager
def _thinking_sessions(think_ms: int, grace_s: float) -> Iterator[ClaudeSessions]:
    """The echo agent as a session per room, thinking ``think_ms`` each turn; stopped after."""
    command = (*ECHO_AGENT, "--think-ms", str(think_ms))
    agent = build_agent(AgentConfig(command=command, timeout_s=60.0), command)
    assert isinstance(agent, ClaudeSessions)
    agent.interrupt_grace_s = grace_s
    try:
        yield agent
    finally:
        agent.stop()


def test_an_interrupted_session_turn_is_a_cancel_and_the_process_lives_on() -> None:
    # The control request ends it, not SIGINT.
    with _thinking_sessions(30000, grace_s=20.0) as agent:
        control = TurnControl()
        threading.Timer(0.5, control.interrupt).start()
        started = time.monotonic()
        result = agent.run_turn(AgentTurn("hello", "default", control=control))
        assert result.interrupted and not result.is_error
        assert time.monotonic() - started < 15  # neither the think nor the SIGINT grace
        assert agent._processes["default"].alive


def test_a_turn_interrupted_before_it_began_never_reaches_the_agent() -> None:
    with _thinking_sessions(30000, grace_s=20.0) as agent:
        control = TurnControl()
        control.interrupt()
        sid = str(uuid.uuid4())
        result = agent.run_turn(AgentTurn("hello", "default", sid, control=control))
        assert result.interrupted and result.session_id == sid
        assert "default" not in agent._processes  # not even started


def test_an_interrupt_never_reaches_the_rooms_next_turn() -> None:
    # The revised request follows an interrupted one at once; the first turn's SIGINT
    # escalation (after the grace) must not stop it.
    with _thinking_sessions(2500, grace_s=1.0) as agent:
        control = TurnControl()
        threading.Timer(0.3, control.interrupt).start()
        first = agent.run_turn(AgentTurn("one", "default", control=control))
        assert first.interrupted
        second = agent.run("two", session_id=first.session_id)  # thinks past the grace
        assert second.text == "You said: two" and not second.interrupted


def test_rooms_beyond_max_processes_stop_the_one_unused_longest() -> None:
    # Every Home Assistant chat is a new room: without a cap each kept a process for
    # agent.idle_stop_s (15 minutes).
    config = AgentConfig(command=ECHO_AGENT, timeout_s=30.0, max_processes=2)
    agent = build_agent(config, ECHO_AGENT)
    assert isinstance(agent, ClaudeSessions)
    try:
        first = agent.run_turn(AgentTurn("one", "kitchen"))
        agent.run_turn(AgentTurn("two", "hall"))
        kitchen = agent._processes["kitchen"].proc
        agent.run_turn(AgentTurn("three", "garage"))  # the kitchen's was used longest ago
        assert sorted(agent._processes) == ["garage", "hall"]
        assert kitchen.wait(10) is not None  # really stopped, not only forgotten
        again = agent.run_turn(AgentTurn("four", "kitchen", first.session_id))
        assert again.text == "You said: four" and again.session_id == first.session_id
        assert sorted(agent._processes) == ["garage", "kitchen"]
    finally:
        agent.stop()


def test_an_ended_process_makes_way_before_a_live_one() -> None:
    # A room's agent that crashed or was killed holds no place under agent.max_processes.
    config = AgentConfig(command=ECHO_AGENT, timeout_s=30.0, max_processes=2)
    agent = build_agent(config, ECHO_AGENT)
    assert isinstance(agent, ClaudeSessions)
    try:
        agent.run_turn(AgentTurn("one", "kitchen"))  # used longest ago, and alive
        agent.run_turn(AgentTurn("two", "hall"))
        hall = agent._processes["hall"].proc
        hall.kill()
        hall.wait(10)
        kitchen = agent._processes["kitchen"].proc
        agent.run_turn(AgentTurn("three", "garage"))
        assert sorted(agent._processes) == ["garage", "kitchen"]
        assert agent._processes["kitchen"].proc is kitchen and kitchen.poll() is None
    finally:
        agent.stop()


def test_a_working_room_is_never_stopped_to_make_way() -> None:
    command = (*ECHO_AGENT, "--think-ms", "1500")
    agent = build_agent(AgentConfig(command=command, timeout_s=30.0, max_processes=1), command)
    assert isinstance(agent, ClaudeSessions)
    try:
        with ThreadPoolExecutor(2) as pool:
            busy = pool.submit(agent.run_turn, AgentTurn("long", "kitchen"))
            deadline = time.monotonic() + 20
            while not agent._processes.get("kitchen") or not agent._processes["kitchen"].busy:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            other = pool.submit(agent.run_turn, AgentTurn("short", "hall"))
            assert busy.result(30).text == "You said: long"
            assert other.result(30).text == "You said: short"
        assert sorted(agent._processes) == ["hall", "kitchen"]  # one over, while both worked
        agent.run_turn(AgentTurn("later", "garage"))
        assert sorted(agent._processes) == ["garage"]  # back to agent.max_processes
    finally:
        agent.stop()
