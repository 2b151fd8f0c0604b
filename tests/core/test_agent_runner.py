"""AgentRunner against real subprocesses: output formats, streaming, errors, resume, hostile I/O."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from core.agent import AgentRunner
from core.agent_events import AgentTurn, ConversationLost
from core.agent_output import loads
from core.errors import AgentError, AgentTimeout, ConfigError
from core.ledger import AgentLedger
from core.paths import agent_record_name
from core.process import program_name, run_process
from tests.core.conftest import ECHO_AGENT, fake_command, fake_runner


def test_stream_json_result_fields_are_read() -> None:
    result = fake_runner("argv").run("hello")
    assert json.loads(result.text)["stdin"] == "hello"
    assert result.session_id == "new-session"
    assert result.is_error is False
    assert result.cost_usd == 0.25
    assert result.duration_ms == 12
    assert result.num_turns == 1
    assert result.usage == {"input_tokens": 3, "output_tokens": 4}


@pytest.mark.parametrize(
    "prompt",
    ["-p", "--help", "--resume x", "-", "line one\nline two", "naïve 🎤", "x" * 300_000],
    ids=["-p", "--help", "--resume", "dash", "newlines", "unicode", "300k"],
)
def test_the_prompt_reaches_the_agent_verbatim_on_stdin(prompt: str) -> None:
    result = fake_runner("argv").run(prompt)
    seen = json.loads(result.text)
    assert seen["stdin"] == prompt
    assert seen["argv"] == ["argv"]  # never on the command line


def test_a_huge_prompt_does_not_deadlock_against_a_chatty_agent() -> None:
    prompt = "y" * (8 * 1024 * 1024)  # far beyond any pipe buffer, in both directions
    result = fake_runner("output-first", output_format="stream-json", timeout=60).run(prompt)
    assert result.text == f"read {len(prompt)} bytes"


def test_an_agent_that_exits_without_reading_stdin_is_fine() -> None:
    result = fake_runner("no-read-exit").run("z" * (4 * 1024 * 1024))
    assert result.text == "did not read"


def test_resume_id_is_appended_after_the_command() -> None:
    result = fake_runner("argv").run("hi", session_id="abc-123")
    assert json.loads(result.text)["argv"] == ["argv", "--resume", "abc-123"]
    assert result.session_id == "abc-123"


def test_an_agent_id_that_could_read_as_an_option_is_never_passed() -> None:
    result = fake_runner("argv").run("hi", session_id="--dangerously-skip-permissions")
    assert json.loads(result.text)["argv"] == ["argv"]


def test_unknown_resume_id_is_retried_once_without_it(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    result = fake_runner("resume-unknown", str(log)).run("hi", session_id="stale-id")
    assert result.text == "fresh start"
    assert result.session_id == "brand-new-id"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [
        ["resume-unknown", str(log), "--resume", "stale-id"],
        ["resume-unknown", str(log)],
    ]


def test_a_forgotten_conversation_is_reported_before_the_new_one_answers(tmp_path: Path) -> None:
    events: list[object] = []
    runner = fake_runner("resume-unknown", str(tmp_path / "calls.log"))
    result = runner.run_turn(AgentTurn("hi", "desk", "stale-id", events.append))
    assert result.text == "fresh start"
    assert events[0] == ConversationLost()  # before anything of the new conversation


def test_streamed_blocks_arrive_in_order_before_the_agent_finishes() -> None:
    # Without partial messages each assistant line is a finished block (before and after a
    # tool call, say): blocks are kept apart, never glued into "files.The folder".
    pieces = ["Let me look at the files.", "The folder has", "three files."]
    got: list[tuple[str, float]] = []
    runner = fake_runner("stream", *pieces)
    result = runner.run("q", on_text=lambda t: got.append((t, time.monotonic())))
    done = time.monotonic()
    assert "".join(t for t, _ in got) == "\n\n".join(pieces)
    assert result.text == "".join(pieces)  # the fake's result names no blocks
    assert got[0][1] < done - 0.05, "the first piece only arrived when the agent had finished"


def test_partial_message_deltas_are_streamed_once() -> None:
    got: list[str] = []
    result = fake_runner("partial", "Hel", "lo ", "there").run("q", on_text=got.append)
    assert got == ["Hel", "lo ", "there"]  # not repeated by the final assistant message
    assert result.text == "Hello there"


def test_the_echo_agent_streams_its_reply_in_pieces() -> None:
    got: list[str] = []
    result = AgentRunner(ECHO_AGENT, 30).run("-rf / please", on_text=got.append)
    assert result.text == "You said: -rf / please"
    assert len(got) >= 2 and "".join(got) == result.text
    assert result.session_id is not None


@pytest.mark.parametrize("mode", ["pretty-json", "verbose-array"])
def test_single_json_documents_are_read(mode: str) -> None:
    expected = {"pretty-json": "pretty reply", "verbose-array": "array reply"}[mode]
    assert fake_runner(mode).run("q").text == expected
    assert fake_runner(mode, output_format="json").run("q").text == expected


def test_text_mode_takes_stdout_as_the_reply() -> None:
    got: list[str] = []
    result = fake_runner("text").run("q", on_text=got.append)
    assert result.text == "plain answer line one\nline two"
    assert "".join(got).strip() == result.text
    assert result.session_id is None


def test_output_format_from_the_command_line_wins() -> None:
    runner = AgentRunner([*fake_command("text"), "--output-format", "json"], 30)
    with pytest.raises(AgentError, match="not the JSON"):
        runner.run("q")


def test_nan_in_the_output_is_not_json() -> None:
    with pytest.raises(AgentError, match="not the JSON"):
        fake_runner("nan-cost", output_format="stream-json").run("q")


def test_a_lone_surrogate_in_the_output_becomes_a_replacement_character() -> None:
    # Nothing after the parser could encode it: not Piper, not the store, not Wyoming.
    got: list[str] = []
    result = fake_runner("lone-surrogate").run("q", on_text=got.append)
    assert result.text == "bad \ufffd text"
    assert "".join(got) == result.text
    result.text.encode("utf-8")
    assert loads('["\\uDBFF", "\\ud83d\\ude00"]') == ["\ufffd", "\U0001f600"]  # (either case)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("is-error", r"reported an error: Not logged in · Please run /login"),
        ("errors-list", r"reported an error: disk full"),
        ("crash", r"crashed with exit code 3: boom: the model exploded$"),
        ("segv", r"killed by signal SIGSEGV"),
        ("binary", r"not UTF-8"),
        ("truncated", r"stopped before printing its final result"),
        ("not-json", r"not the JSON it should print: 'Traceback"),
        ("empty", r"finished without printing a reply"),
    ],
)
def test_failures_become_agent_errors_a_person_understands(mode: str, message: str) -> None:
    got: list[str] = []
    with pytest.raises(AgentError, match=message) as excinfo:
        fake_runner(mode).run("q", on_text=got.append)
    assert not isinstance(excinfo.value, AgentTimeout)
    assert "\n" not in str(excinfo.value)
    assert got == []  # an error message dressed as a reply is never streamed


def test_huge_output_is_cut_off_and_the_agent_stopped() -> None:
    runner = fake_runner("huge", "20", max_output_bytes=8 * 1024 * 1024)
    start = time.monotonic()
    with pytest.raises(AgentError, match="more than 8 MB of output"):
        runner.run("q")
    assert time.monotonic() - start < 25


def test_a_flood_of_short_lines_is_cut_off_at_the_limit_not_the_timeout() -> None:
    """Live: ``--agent yes`` ran until agent.timeout_s (5 minutes), its 2-byte lines queued
    one by one (888 MB), and the limit was reached only once all of them had been handed to
    the parser. A parser slower than the agent must not hold the limit back."""
    handed: list[bytes] = []

    def slow_parser(line: bytes) -> None:
        handed.append(line)
        time.sleep(0.001)

    with pytest.raises(AgentError, match="more than 1 MB of output") as excinfo:
        run_process(
            ["yes"],
            stdin_data=b"",
            timeout_s=30,
            kill_grace_s=2,
            cwd=None,
            max_stdout_bytes=1024 * 1024,
            on_line=slow_parser,
        )
    assert not isinstance(excinfo.value, AgentTimeout)
    assert len(handed) < 100_000  # of the 500 000 lines in 1 MB


def test_lines_reach_the_parser_whole_however_the_pipe_splits_them() -> None:
    # 100 000 lines of "n: ...", some longer than a read, one left without its newline.
    script = (
        "import sys\n"
        "for n in range(100000): sys.stdout.write(f'{n}: ' + 'x' * (n % 97) + '\\n')\n"
        "sys.stdout.write('last' + 'y' * 200000 + '\\r\\n' + 'tail')\n"
    )
    reply = AgentRunner([sys.executable, "-c", script], 60, output_format="text").run("q")
    lines = reply.text.split("\n")
    assert len(lines) == 100002
    assert all(line == f"{n}: " + "x" * (n % 97) for n, line in enumerate(lines[:100000]))
    assert lines[100000] == "last" + "y" * 200000 + "\r" and lines[100001] == "tail"


def test_the_last_line_is_kept_when_a_stray_process_holds_the_output_open() -> None:
    """The agent exits with its last line unended, while a process it started outside its
    group (setsid) keeps stdout open: the turn ends after the grace period, with that line."""
    script = (
        "import os, sys, time\n"
        "sys.stdout.write('first\\nlast, no newline'); sys.stdout.flush()\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(5); os._exit(0)\n"
        "    os._exit(0)\n"
        "os._exit(0)\n"
    )
    lines: list[bytes] = []
    run_process(
        [sys.executable, "-c", script],
        stdin_data=b"",
        timeout_s=30,
        kill_grace_s=1,
        cwd=None,
        max_stdout_bytes=1024,
        on_line=lines.append,
    )
    assert lines == [b"first\n", b"last, no newline"]


def test_a_missing_program_says_what_to_fix() -> None:
    with pytest.raises(AgentError) as excinfo:
        AgentRunner(["no-such-agent-cli-xyz", "-p"], 5).run("q")
    message = str(excinfo.value)
    assert "no-such-agent-cli-xyz" in message and "not found" in message
    assert "agent.command" in message and "--agent" in message
    # A service's PATH is not the login shell's: the one searched is named.
    assert f"on PATH ({os.environ['PATH']})" in message


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["claude", "-p"], "claude"),
        (["/usr/local/bin/claude"], "claude"),
        (["/venv/bin/python3", "-m", "core.echo_agent", "--x"], "core.echo_agent"),
        (["python", "-m"], "python"),
        (["python3", "-u", "/srv/agents/a.py", "--fast"], "a.py"),
        (["python3", "-W", "ignore", "a.py"], "a.py"),
        (["node", "-r", "dotenv/config", "agent.js"], "agent.js"),
        (["python3", "-I", "agent.py"], "agent.py"),  # (-I takes no value)
        (["perl", "-p", "x.pl"], "x.pl"),
        (["node", "agent.js"], "agent.js"),
        (["bash", "-c", "exec cat"], "bash"),
        (["python3"], "python3"),
        ([], "agent"),
    ],
)
def test_logs_name_the_program_not_its_interpreter(argv: list[str], name: str) -> None:
    assert program_name(argv) == name


def test_a_missing_working_directory_says_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match=r"agent\.cwd"):
        AgentRunner(ECHO_AGENT, 5, cwd=tmp_path / "nope").run("q")


def test_cwd_and_env_reach_the_agent(tmp_path: Path) -> None:
    code = "import os,sys,json; sys.stdin.read(); print(json.dumps([os.getcwd(), os.environ['X']]))"
    runner = AgentRunner(
        ["python3", "-c", code], 10, tmp_path, env={"X": "y"}, output_format="text"
    )
    assert json.loads(runner.run("q").text) == [str(tmp_path), "y"]


@pytest.mark.parametrize(
    "bad",
    [
        {"command": "claude -p"},
        {"command": []},
        {"timeout": 0},
        {"timeout": float("nan")},  # would never stop the agent
        {"timeout": 1e308},  # would overflow the deadline arithmetic
        {"kill_grace_s": float("inf")},
        {"max_output_bytes": -1},
        {"output_format": "xml"},
    ],
)
def test_bad_runner_settings_are_config_errors(bad: dict[str, object]) -> None:
    settings: dict[str, object] = {"command": ["claude"], "timeout": 1.0, **bad}
    with pytest.raises(ConfigError):
        AgentRunner(**settings)  # type: ignore[arg-type]


def test_an_exception_in_on_text_stops_the_agent(tmp_path: Path) -> None:
    def explode(text: str) -> None:
        raise RuntimeError("speaker unplugged")

    with pytest.raises(RuntimeError, match="speaker unplugged"):
        fake_runner("stream", "a", "b", "c", kill_grace_s=0.2).run("q", on_text=explode)


def test_runs_from_many_threads_do_not_mix_their_output() -> None:
    runner = fake_runner("argv")
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = json.loads(runner.run(f"prompt {i}").text)["stdin"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: f"prompt {i}" for i in range(8)}


def test_a_finished_turn_leaves_no_agent_record(tmp_path: Path) -> None:
    seen: list[bool] = []
    ledger = AgentLedger(tmp_path)
    record = tmp_path / agent_record_name("desk")

    def during(event: object) -> None:  # the agent is running: it is recorded
        seen.append(record.exists())

    runner = fake_runner("stream", "one", "two", ledger=ledger)
    runner.run_turn(AgentTurn("hi", "desk", on_event=during))
    assert seen and all(seen)
    assert not record.exists()
