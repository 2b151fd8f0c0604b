"""ClaudeSessions against the real Claude Code CLI and the scripted Messages API.

The agent the product runs: one stream-json process per room, permissions over stdio, the
interrupt control request, a fresh resumed process after a crash, nothing left at shutdown.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core import Core
from core.agent import AgentRunner
from core.agent_events import (
    AgentEvent,
    AgentTurn,
    ApiRetry,
    Decision,
    PermissionRequest,
    StreamRestarted,
    TextDelta,
    ToolUse,
    TurnControl,
)
from core.agent_output import Denial
from core.claude import NOBODY_ANSWERS, VOICE_PROMPT, ClaudeSessions, claude_argv
from core.errors import AgentError, AgentLoginError, AgentTimeout, AgentUnavailable
from tests.claude_api import ApiError, ClaudeApi, Cut, Hold, Reply, Text
from tests.claude_api import ToolUse as ApiToolUse
from tests.procs import running

pytestmark = [pytest.mark.compat, pytest.mark.timeout(240)]

TIMEOUT_S = 120.0


@pytest.fixture
def sessions(claude_cli: str, claude_api: ClaudeApi, claude_home: Path, claude_cwd: Path):  # type: ignore[no-untyped-def]
    argv = claude_argv([claude_cli], session=True, system_prompt=VOICE_PROMPT)
    agent = ClaudeSessions(
        argv,
        TIMEOUT_S,
        claude_cwd,
        env=claude_api.env(claude_home),
        permission_timeout_s=20.0,
        interrupt_grace_s=5.0,
    )
    yield agent
    agent.stop()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, AgentEvent]] = []
        self.asked = threading.Event()

    def __call__(self, event: AgentEvent) -> None:
        self.events.append((time.monotonic(), event))
        if isinstance(event, PermissionRequest):
            self.asked.set()

    def of(self, kind: type) -> list[AgentEvent]:
        return [e for _, e in self.events if isinstance(e, kind)]

    def text(self) -> str:
        return "".join(e.text for e in self.of(TextDelta))  # type: ignore[attr-defined]


def answer_each(
    events: Recorder,
    control: Callable[[], TurnControl],
    decide: Callable[[int], Decision],
    *,
    count: int | None = None,
    timeout_s: float = 60.0,
) -> None:
    """On a thread, as the voice loop would: answer each question as it comes, the nth with
    ``decide(n)`` (through ``control()``, the turn's control at that time)."""

    def run() -> None:
        answered: list[str] = []
        deadline = time.monotonic() + timeout_s
        while (count is None or len(answered) < count) and time.monotonic() < deadline:
            for request in events.of(PermissionRequest):
                if request.request_id not in answered:  # type: ignore[attr-defined]
                    answered.append(request.request_id)  # type: ignore[attr-defined]
                    decision = decide(len(answered))
                    message = "No." if decision == "deny" else ""
                    control().answer(request.request_id, decision, message)  # type: ignore[attr-defined]
            time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids(sessions: ClaudeSessions) -> dict[str, int]:
    return {room: p.proc.pid for room, p in sessions._processes.items()}


def test_a_turn_with_a_tool_is_reported_block_by_block(
    sessions: ClaudeSessions, claude_api: ClaudeApi, claude_cwd: Path
) -> None:
    claude_api.script(
        Reply(
            [
                Text("Let me look at the files."),
                ApiToolUse("Bash", {"command": "ls", "description": "List the files"}),
            ]
        ),
        Reply([Text("The folder has one file.")]),
    )
    (claude_cwd / "notes.txt").write_text("x")
    events = Recorder()
    result = sessions.run_turn(AgentTurn("look at the files", "desk", on_event=events))
    kinds = [type(e).__name__ for _, e in events.events if not isinstance(e, TextDelta)]
    assert kinds == ["TextDone", "ToolUse", "ToolResult", "TextDone"]
    (tool,) = events.of(ToolUse)
    assert tool.name == "Bash" and tool.input["command"] == "ls"  # type: ignore[attr-defined]
    assert "notes.txt" in claude_api.turns[1].tool_results()[0]["content"]  # ls really ran
    assert result.text == "Let me look at the files.\n\nThe folder has one file."
    assert result.session_id and not result.interrupted
    assert VOICE_PROMPT in claude_api.turns[0].system_text


def test_one_process_serves_the_rooms_turns_and_keeps_the_conversation(
    sessions: ClaudeSessions, claude_api: ClaudeApi
) -> None:
    claude_api.script(Reply([Text("One.")]), Reply([Text("Two.")]), Reply([Text("Other room.")]))
    first = sessions.run_turn(AgentTurn("first", "desk"))
    desk = pids(sessions)["desk"]
    second = sessions.run_turn(AgentTurn("second", "desk", session_id=first.session_id))
    assert pids(sessions)["desk"] == desk  # no new process for the next turn
    assert second.session_id == first.session_id and second.text == "Two."
    assert "first" in " ".join(claude_api.turns[1].user_texts())  # it remembers turn one
    sessions.run_turn(AgentTurn("hello", "kitchen"))
    assert pids(sessions)["kitchen"] != desk  # each room has its own
    # A new conversation in the desk room (after a reset) is a new process, not a resume.
    sessions.run_turn(AgentTurn("fresh start", "desk"))
    assert pids(sessions)["desk"] != desk


@pytest.mark.parametrize(("decision", "ran"), [("allow", True), ("deny", False)])
def test_a_permission_request_is_answered_through_the_turn_control(
    sessions: ClaudeSessions, claude_api: ClaudeApi, claude_cwd: Path, decision: str, ran: bool
) -> None:
    command = "echo made > made.txt"
    claude_api.script(
        Reply([ApiToolUse("Bash", {"command": command, "description": "Create made.txt"})]),
        Reply([Text("Done.")]),
    )
    events = Recorder()
    control = TurnControl()

    def answer() -> None:
        assert events.asked.wait(60)
        (request,) = events.of(PermissionRequest)
        control.answer(request.request_id, decision, "The user said no.")  # type: ignore[attr-defined, arg-type]

    threading.Thread(target=answer, daemon=True).start()
    result = sessions.run_turn(AgentTurn("make a file", "desk", on_event=events, control=control))
    (request,) = events.of(PermissionRequest)
    assert request.tool_name == "Bash" and request.input["command"] == command  # type: ignore[attr-defined]
    assert (claude_cwd / "made.txt").exists() is ran
    if ran:
        assert result.denials == ()
    else:
        assert result.denials == (Denial("Bash", command, "Create made.txt"),)
        assert "The user said no." in claude_api.turns[1].tool_results()[0]["content"]


def test_each_question_names_its_call_when_one_message_calls_several_tools(
    sessions: ClaudeSessions, claude_api: ClaudeApi, claude_cwd: Path
) -> None:
    # Each question names its call (what voice.tool_lines is built on); here the CLI asks
    # about the first as soon as its block ends, with the API still streaming the second.
    first = {"command": "touch a.txt", "description": "Create a.txt"}
    second = {"command": "touch b.txt", "description": "Create b.txt"}
    claude_api.script(
        Reply([ApiToolUse("Bash", first), ApiToolUse("Bash", second)]),
        Reply([Text("Done.")]),
    )
    events = Recorder()
    control = TurnControl()

    answer_each(events, lambda: control, lambda n: "allow", count=2)
    result = sessions.run_turn(AgentTurn("touch both", "desk", on_event=events, control=control))
    assert result.text == "Done." and (claude_cwd / "b.txt").exists()
    calls, questions = events.of(ToolUse), events.of(PermissionRequest)
    assert len(calls) == len(questions) == 2
    assert [q.tool_use_id for q in questions] == [c.tool_use_id for c in calls]  # type: ignore[attr-defined]


def test_always_allows_the_same_call_again_without_asking(
    sessions: ClaudeSessions, claude_api: ClaudeApi, claude_cwd: Path
) -> None:
    touch = {"command": "touch a.txt", "description": "Create a.txt"}
    claude_api.script(
        Reply([ApiToolUse("Bash", touch)]),
        Reply([ApiToolUse("Bash", touch)]),
        Reply([Text("Done twice.")]),
    )
    events = Recorder()
    control = TurnControl()

    def answer() -> None:
        assert events.asked.wait(60)
        (request,) = events.of(PermissionRequest)
        control.answer(request.request_id, "always")  # type: ignore[attr-defined]

    threading.Thread(target=answer, daemon=True).start()
    result = sessions.run_turn(
        AgentTurn("touch it twice", "desk", on_event=events, control=control)
    )
    assert len(events.of(PermissionRequest)) == 1  # the second call was not asked about
    assert result.text == "Done twice." and (claude_cwd / "a.txt").exists()


def test_always_keeps_the_rule_and_not_claude_s_other_suggestions(
    sessions: ClaudeSessions, claude_api: ClaudeApi, claude_cwd: Path
) -> None:
    # Claude suggests the rule, and also acceptEdits for the session (its edits and deletes
    # would then go unasked) and the folder: "always" agreed only to the rule.
    touch = {"command": "touch a.txt", "description": "Create a.txt"}
    (claude_cwd / "victim.txt").write_text("keep me\n")
    delete = {"command": "rm victim.txt", "description": "Delete victim.txt"}
    write = {"file_path": str(claude_cwd / "new.txt"), "content": "unasked\n"}
    claude_api.script(
        Reply([ApiToolUse("Bash", touch)]),
        Reply([Text("Made it.")]),
        Reply([ApiToolUse("Bash", touch)]),  # the rule: not asked again
        Reply([ApiToolUse("Write", write)]),
        Reply([ApiToolUse("Bash", delete)]),
        Reply([Text("Done.")]),
    )
    events = Recorder()
    control = TurnControl()

    # "always" to the first question, "no" to every later one (the next turn's too).
    answer_each(events, lambda: control, lambda n: "always" if n == 1 else "deny", timeout_s=90)
    first = sessions.run_turn(AgentTurn("touch it", "desk", on_event=events, control=control))
    assert first.text == "Made it." and (claude_cwd / "a.txt").exists()
    control = TurnControl()
    sessions.run_turn(AgentTurn("more", "desk", first.session_id, on_event=events, control=control))
    asked = [r.tool_name for r in events.of(PermissionRequest)]  # type: ignore[attr-defined]
    assert asked == ["Bash", "Write", "Bash"]  # the same touch went unasked; the rest did not
    assert (claude_cwd / "victim.txt").exists() and not (claude_cwd / "new.txt").exists()


def test_always_to_a_file_write_allows_it_once(
    sessions: ClaudeSessions, claude_api: ClaudeApi, claude_cwd: Path
) -> None:
    # For Write, Claude's only suggestion is acceptEdits for the whole session: "always"
    # cannot keep a rule, so it allows this write and the next is asked again.
    first = {"file_path": str(claude_cwd / "a.txt"), "content": "one\n"}
    second = {"file_path": str(claude_cwd / "b.txt"), "content": "two\n"}
    claude_api.script(
        Reply([ApiToolUse("Write", first)]),
        Reply([ApiToolUse("Write", second)]),
        Reply([Text("Wrote them.")]),
    )
    events = Recorder()
    control = TurnControl()

    answer_each(events, lambda: control, lambda n: "always")
    result = sessions.run_turn(AgentTurn("write two", "desk", on_event=events, control=control))
    assert result.text == "Wrote them." and (claude_cwd / "b.txt").exists()
    assert len(events.of(PermissionRequest)) == 2  # asked again: no session-wide acceptEdits


def script_two_reads_outside(claude_api: ClaudeApi, tmp_path: Path) -> None:
    """Claude reads x.txt and y.txt outside the working folder in one message: it asks
    about both at once, then says "Read both."."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("x", "y"):
        (outside / f"{name}.txt").write_text(f"contents of {name}\n")
    claude_api.script(
        Reply(
            [
                ApiToolUse("Read", {"file_path": str(outside / "x.txt")}),
                ApiToolUse("Read", {"file_path": str(outside / "y.txt")}),
            ]
        ),
        Reply([Text("Read both.")]),
    )


def test_questions_asked_at_once_are_put_to_the_user_one_at_a_time(
    sessions: ClaudeSessions, claude_api: ClaudeApi, tmp_path: Path
) -> None:
    # Reads outside the working folder ask, and Claude asks about parallel calls at once: a
    # person answers one question at a time, so the second waits until the first is settled.
    script_two_reads_outside(claude_api, tmp_path)
    events = Recorder()
    control = TurnControl()
    seen: list[int] = []

    def answer() -> None:
        for n in (1, 2):
            deadline = time.monotonic() + 60
            while len(events.of(PermissionRequest)) < n and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(1.0)  # the CLI asks about both within milliseconds
            seen.append(len(events.of(PermissionRequest)))
            request = events.of(PermissionRequest)[n - 1]
            control.answer(request.request_id, "allow")  # type: ignore[attr-defined]

    threading.Thread(target=answer, daemon=True).start()
    result = sessions.run_turn(AgentTurn("read both", "desk", on_event=events, control=control))
    assert seen == [1, 2]  # one question at a time
    results = " ".join(str(r["content"]) for r in claude_api.turns[1].tool_results())
    assert "contents of x" in results and "contents of y" in results
    assert result.text == "Read both." and result.denials == ()


def test_a_question_queued_behind_an_interrupted_one_is_never_asked(
    sessions: ClaudeSessions, claude_api: ClaudeApi, tmp_path: Path
) -> None:
    # Stopped while the first of two questions waits: Claude cancels what it asked, so the
    # one queued behind it must not be put to the user (nobody would be answering it).
    script_two_reads_outside(claude_api, tmp_path)
    events = Recorder()
    control = TurnControl()

    def stop_when_asked() -> None:
        assert events.asked.wait(60)
        time.sleep(1.0)  # the CLI asks about both within milliseconds: the second is queued
        control.interrupt()

    threading.Thread(target=stop_when_asked, daemon=True).start()
    result = sessions.run_turn(AgentTurn("read both", "desk", on_event=events, control=control))
    assert result.interrupted
    assert len(events.of(PermissionRequest)) == 1


def test_a_question_nobody_can_answer_is_refused_at_once(
    sessions: ClaudeSessions, claude_api: ClaudeApi, claude_cwd: Path
) -> None:
    # A turn with nobody to ask (``send_message`` from a script, ``ask``): never allowed.
    claude_api.script(
        Reply([ApiToolUse("Bash", {"command": "touch c.txt", "description": "Create c"})]),
        Reply([Text("I was not allowed.")]),
    )
    result = sessions.run_turn(AgentTurn("make c", "desk"))
    assert not (claude_cwd / "c.txt").exists()
    assert result.denials == (Denial("Bash", "touch c.txt", "Create c"),)
    assert NOBODY_ANSWERS in claude_api.turns[1].tool_results()[0]["content"]
    assert result.text == "I was not allowed."


def test_the_time_to_answer_runs_from_when_the_question_was_heard(
    claude_cli: str, claude_api: ClaudeApi, claude_home: Path, claude_cwd: Path
) -> None:
    agent = ClaudeSessions(
        claude_argv([claude_cli], session=True),
        TIMEOUT_S,
        claude_cwd,
        env=claude_api.env(claude_home),
        permission_timeout_s=1.0,
    )
    control = TurnControl()

    def say_the_question(event: AgentEvent) -> None:
        if isinstance(event, PermissionRequest):
            time.sleep(2.0)  # the reply before it, then the question, is being spoken
            threading.Timer(0.3, control.answer, (event.request_id, "allow")).start()  # type: ignore[attr-defined]

    try:
        claude_api.script(
            Reply([ApiToolUse("Bash", {"command": "touch c.txt", "description": "Create c"})]),
            Reply([Text("Made it.")]),
        )
        result = agent.run_turn(
            AgentTurn("make c", "desk", on_event=say_the_question, control=control)
        )
        assert result.denials == () and (claude_cwd / "c.txt").exists()
    finally:
        agent.stop()


def test_an_unanswered_question_is_denied_with_a_reason(
    claude_cli: str, claude_api: ClaudeApi, claude_home: Path, claude_cwd: Path
) -> None:
    agent = ClaudeSessions(
        claude_argv([claude_cli], session=True),
        TIMEOUT_S,
        claude_cwd,
        env=claude_api.env(claude_home),
        permission_timeout_s=1.0,
    )
    try:
        claude_api.script(
            Reply([ApiToolUse("Bash", {"command": "touch b.txt", "description": "Create b"})]),
            Reply([Text("I could not.")]),
        )
        result = agent.run_turn(AgentTurn("make b", "desk", on_event=lambda e: None))
        assert result.denials and not (claude_cwd / "b.txt").exists()
        assert "did not answer in time" in claude_api.turns[1].tool_results()[0]["content"]
    finally:
        agent.stop()


def test_interrupting_a_streaming_reply_keeps_the_process_and_the_conversation(
    sessions: ClaudeSessions, claude_api: ClaudeApi
) -> None:
    hold = Hold(after_deltas=2)
    claude_api.script(
        Reply([Text("I am writing a long answer about the store, " * 5, chunk_chars=8)], hold=hold),
        Reply([Text("Short answer.")]),
    )
    control = TurnControl()

    def stop_when_streaming() -> None:
        assert hold.wait_reached(60)
        control.interrupt()

    threading.Thread(target=stop_when_streaming, daemon=True).start()
    result = sessions.run_turn(AgentTurn("tell me everything", "desk", control=control))
    assert result.interrupted and result.session_id
    before = pids(sessions)["desk"]
    hold.release()
    after = sessions.run_turn(AgentTurn("shorter", "desk", session_id=result.session_id))
    assert after.text == "Short answer." and pids(sessions)["desk"] == before
    assert "tell me everything" in " ".join(claude_api.turns[-1].user_texts())


def test_interrupting_a_running_tool_stops_it(
    sessions: ClaudeSessions, claude_api: ClaudeApi
) -> None:
    marker = f"sleep 3{os.getpid() % 1000}"
    claude_api.script(
        Reply([ApiToolUse("Bash", {"command": marker, "description": "Wait a while"})]),
    )
    events = Recorder()
    control = TurnControl()

    def stop_when_the_tool_runs() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not events.of(ToolUse):
            time.sleep(0.05)
        time.sleep(1.0)
        control.interrupt()

    threading.Thread(target=stop_when_the_tool_runs, daemon=True).start()

    def allow(event: AgentEvent) -> None:  # say yes when asked, so the tool really starts
        events(event)
        if isinstance(event, PermissionRequest):
            control.answer(event.request_id, "allow")

    turn = AgentTurn("wait", "desk", on_event=allow, control=control)
    started = time.monotonic()
    result = sessions.run_turn(turn)
    assert result.interrupted
    assert time.monotonic() - started < 60  # not the tool's 30-odd seconds plus the timeout
    deadline = time.monotonic() + 20  # the CLI kills its tool as it ends the turn
    while running(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running(marker) == []


def test_a_killed_process_is_an_error_and_the_next_turn_resumes(
    sessions: ClaudeSessions, claude_api: ClaudeApi, caplog: pytest.LogCaptureFixture
) -> None:
    hold = Hold(after_deltas=1)
    claude_api.script(
        Reply([Text("One.")]),
        Reply([Text("Never finished, " * 10, chunk_chars=5)], hold=hold),
        Reply([Text("Back again.")]),
    )
    first = sessions.run_turn(AgentTurn("first", "desk"))
    pid = pids(sessions)["desk"]

    def kill_when_streaming() -> None:
        assert hold.wait_reached(60)
        os.kill(pid, signal.SIGKILL)

    threading.Thread(target=kill_when_streaming, daemon=True).start()
    with pytest.raises(AgentError):
        sessions.run_turn(AgentTurn("second", "desk", session_id=first.session_id))
    hold.release()
    again = sessions.run_turn(AgentTurn("third", "desk", session_id=first.session_id))
    assert again.text == "Back again." and pids(sessions)["desk"] != pid
    # The fresh process resumed the conversation, or, when the killed CLI had not kept it (it
    # writes its transcript lazily), started a new one after the CLI said it was gone.
    cmdline = Path(f"/proc/{pids(sessions)['desk']}/cmdline").read_bytes().split(b"\0")
    resumed = cmdline[-3:-1] == [b"--resume", str(first.session_id).encode()]
    assert resumed or "is gone" in caplog.text, cmdline[-4:]


def test_an_unknown_conversation_is_started_anew(
    sessions: ClaudeSessions, claude_api: ClaudeApi
) -> None:
    claude_api.script(Reply([Text("Fresh.")]))
    stale = "00000000-0000-4000-8000-000000000000"
    result = sessions.run_turn(AgentTurn("hello", "desk", session_id=stale))
    assert result.text == "Fresh." and result.session_id != stale


def test_stop_leaves_no_process_behind(sessions: ClaudeSessions, claude_api: ClaudeApi) -> None:
    claude_api.script(Reply([Text("A.")]), Reply([Text("B.")]))
    sessions.run_turn(AgentTurn("a", "desk"))
    sessions.run_turn(AgentTurn("b", "kitchen"))
    groups = list(pids(sessions).values())
    assert all(group_alive(g) for g in groups)
    sessions.stop()
    assert not any(group_alive(g) for g in groups)


def test_a_program_that_prints_garbage_is_an_error_and_replaced(
    tmp_path: Path, claude_api: ClaudeApi, claude_home: Path
) -> None:
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nread line\necho 'Segmentation fault (core dumped)'\nsleep 30\n")
    fake.chmod(0o755)
    agent = ClaudeSessions(claude_argv([str(fake)], session=True), 30.0, tmp_path)
    try:
        with pytest.raises(AgentError, match="not the JSON"):
            agent.run_turn(AgentTurn("hi", "desk"))
        assert "desk" not in pids(agent)  # discarded: the next turn gets a fresh process
    finally:
        agent.stop()


def test_a_program_that_exits_before_its_first_turn_says_why(
    tmp_path: Path, claude_api: ClaudeApi, claude_home: Path
) -> None:
    # Started ahead of its turn (prepare), it is gone by the time the prompt is written: the
    # error is its exit code and stderr, not only that it no longer takes input.
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    # It stops reading at once and exits a moment later: the prompt finds its input closed.
    closed = tmp_path / "closed"
    fake.write_text(
        "#!/bin/sh\nexec 0<&-\necho 'error: unknown option --frobnicate' >&2\n"
        f"touch {closed}\nsleep 1\nexit 3\n"
    )
    fake.chmod(0o755)
    agent = ClaudeSessions(claude_argv([str(fake)], session=True), 30.0, tmp_path)
    try:
        agent.prepare("desk", None)
        deadline = time.monotonic() + 30
        while not closed.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(AgentError, match="exit code 3: error: unknown option --frobnicate"):
            agent.run_turn(AgentTurn("hi", "desk"))
        assert "desk" not in pids(agent)  # discarded: the next turn gets a fresh process
    finally:
        agent.stop()


def test_a_service_that_does_not_answer_at_first_is_told_and_then_answers(
    sessions: ClaudeSessions, claude_api: ClaudeApi
) -> None:
    overloaded = ApiError(529, "overloaded_error", "Overloaded")
    claude_api.script(overloaded, overloaded, Reply([Text("Here now.")]))
    events = Recorder()
    result = sessions.run_turn(AgentTurn("hello?", "desk", on_event=events))
    assert result.text == "Here now."
    retries = [e for e in events.of(ApiRetry) if isinstance(e, ApiRetry)]
    assert [(e.attempt, e.status) for e in retries] == [(1, 529), (2, 529)]


@pytest.mark.parametrize("error_type", [None, "overloaded_error"], ids=["dropped", "sse error"])
def test_a_stream_that_breaks_mid_reply_is_taken_up_again_not_said_twice(
    sessions: ClaudeSessions,
    claude_api: ClaudeApi,
    claude_cwd: Path,
    tmp_path: Path,
    error_type: str | None,
) -> None:
    # Claude Code 2.1.197 asks again without streaming when a stream breaks before a block
    # ended, and says nothing of it: the whole message comes under a new id.
    (claude_cwd / "notes.txt").write_text("Paris\n")
    answer = "Paris is big. The capital of France is Paris."
    hold = Hold(after_deltas=3)  # so the CLI has printed three deltas when the stream breaks
    claude_api.script(
        Reply([Text(answer, chunk_chars=8)], hold=hold, cut=Cut(3, error_type)),
        Reply([Text(answer), ApiToolUse("Read", {"file_path": str(claude_cwd / "notes.txt")})]),
        ApiError(400, "invalid_request_error", "scripted failure after the restart"),
    )
    events = Recorder()

    def break_when_printed() -> None:
        deadline = time.monotonic() + 60
        while "e capita" not in events.text() and time.monotonic() < deadline:
            time.sleep(0.02)
        hold.release()

    threading.Thread(target=break_when_printed, daemon=True).start()
    core = Core(tmp_path / "store", sessions)
    with pytest.raises(AgentError, match="scripted failure"):
        core.run_turn("desk", "capital?", on_event=events)
    assert [(t.body.get("stream"), t.disconnected) for t in claude_api.turns[:2]] == [
        (True, True),
        (None, False),  # the call again, not streamed
    ]
    # The block again, whole: the voice says it from its first sentence not said already.
    assert events.of(StreamRestarted) == [StreamRestarted("Paris is big. The capita", answer)]
    restarted = next(i for i, (_, e) in enumerate(events.events) if isinstance(e, StreamRestarted))
    assert not [e for _, e in events.events[restarted:] if isinstance(e, TextDelta)]
    session = core.active_session("desk")
    assert session is not None
    recorded = session.messages[-1]["content"]
    assert recorded.startswith(f"{answer}\n\nThe agent reported an error"), recorded


def test_a_service_that_never_answers_is_an_unavailable_error_and_the_process_stays(
    claude_cli: str, claude_api: ClaudeApi, claude_home: Path, claude_cwd: Path, tmp_path: Path
) -> None:
    env = {**claude_api.env(claude_home), "CLAUDE_CODE_MAX_RETRIES": "1"}
    agent = ClaudeSessions(claude_argv([claude_cli], session=True), TIMEOUT_S, claude_cwd, env=env)
    core = Core(tmp_path / "store", agent)
    overloaded = ApiError(529, "overloaded_error", "Overloaded")
    claude_api.script(overloaded, overloaded, Reply([Text("Back.")]))
    try:
        with pytest.raises(AgentUnavailable, match="529"):
            core.send_message("desk", "remember banana")
        before = pids(agent)["desk"]  # it printed its result: only the service failed
        assert core.send_message("desk", "again") == "Back."
        assert pids(agent)["desk"] == before
        assert "remember banana" in " ".join(claude_api.turns[-1].user_texts())
    finally:
        agent.stop()


def test_a_refused_login_is_given_up_before_the_cli_has_tried_for_minutes(
    sessions: ClaudeSessions, claude_api: ClaudeApi
) -> None:
    claude_api.script(*[ApiError(401, "authentication_error", "invalid x-api-key")] * 11)
    with pytest.raises(AgentLoginError, match="401"):
        sessions.run_turn(AgentTurn("hello?", "desk"))
    assert claude_api.remaining > 11 - 4  # the CLI tries 10 times over minutes: not waited for
    assert "desk" not in pids(sessions)  # stopped mid-retry: the next turn starts afresh


def test_each_turn_stores_its_own_cost_not_the_process_total(
    sessions: ClaudeSessions, claude_api: ClaudeApi
) -> None:
    # Claude's total_cost_usd counts from the process's start; a turn is charged its own part.
    claude_api.script(*[Reply([Text("Same.")], input_tokens=1000, output_tokens=500)] * 3)
    costs, session_id, started = [], None, set()
    for n in range(3):
        result = sessions.run_turn(AgentTurn(f"turn {n}", "desk", session_id))
        costs.append(result.cost_usd or 0.0)
        session_id = result.session_id
        started.add(pids(sessions)["desk"])
    assert len(started) == 1  # one process: its total runs on from turn to turn
    assert min(costs) > 0, costs
    assert max(costs) < 1.5 * min(costs), costs  # a running total would be 1x, 2x, 3x


def test_a_first_turn_that_times_out_is_resumed_by_the_next(
    claude_cli: str, claude_api: ClaudeApi, claude_home: Path, claude_cwd: Path, tmp_path: Path
) -> None:
    # The CLI names its conversation (system/init) before it calls the model, and keeps the
    # question in it when the turn is stopped: the room's next turn must resume it, not
    # start Claude afresh under a stored conversation that still shows the question.
    hold = Hold(after_deltas=1)
    claude_api.script(
        Reply([Text("Never finished, " * 10, chunk_chars=5)], hold=hold),
        Reply([Text("Back again.")]),
    )
    agent = ClaudeSessions(
        claude_argv([claude_cli], session=True), 20.0, claude_cwd, env=claude_api.env(claude_home)
    )
    core = Core(tmp_path / "store", agent)
    try:
        with pytest.raises(AgentTimeout):
            core.send_message("desk", "name a colour")
        hold.release()
        session = core.active_session("desk")
        assert session is not None and session.agent_session_id
        assert core.send_message("desk", "and another") == "Back again."
        assert "name a colour" in " ".join(claude_api.turns[-1].user_texts())
    finally:
        agent.stop()


def test_a_turn_stopped_at_its_timeout_makes_no_more_model_calls(
    claude_cli: str, claude_api: ClaudeApi, claude_home: Path, claude_cwd: Path
) -> None:
    # Closing stdin alone lets the CLI finish its turn: the tool ran on, and its result went
    # to the model in one more (paid) call whose reply nobody heard or stored.
    claude_api.script(
        Reply([ApiToolUse("Bash", {"command": "sleep 4", "description": "Wait"})]),
        Reply([Text("Waited.")]),
    )
    agent = ClaudeSessions(
        claude_argv([claude_cli], session=True, allowed_tools=("Bash(sleep 4)",)),
        3.0,
        claude_cwd,
        env=claude_api.env(claude_home),
        kill_grace_s=8.0,
    )
    try:
        agent.prepare("desk", None)
        with pytest.raises(AgentTimeout):
            agent.run_turn(AgentTurn("wait a bit", "desk"))
        time.sleep(3.0)  # past the end of the tool, had it run on
        assert claude_api.remaining == 1  # "Waited." was never asked for
    finally:
        agent.stop()


def test_json_output_keeps_the_voice_flags(
    claude_cli: str, claude_api: ClaudeApi, claude_home: Path, claude_cwd: Path
) -> None:
    # agent.command = ["claude", "--output-format", "json"]: a process per turn, the reply
    # whole at the end; agent.allowed_tools and the voice prompt must still reach Claude.
    argv = claude_argv(
        [claude_cli, "--output-format", "json"],
        session=False,
        allowed_tools=("Bash(touch made.txt)",),
        system_prompt=VOICE_PROMPT,
    )
    claude_api.script(
        Reply([ApiToolUse("Bash", {"command": "touch made.txt", "description": "Make it"})]),
        Reply([Text("Made.")]),
    )
    result = AgentRunner(argv, TIMEOUT_S, claude_cwd, env=claude_api.env(claude_home)).run("go")
    assert result.text == "Made." and not result.denials
    assert (claude_cwd / "made.txt").exists()
    assert VOICE_PROMPT in claude_api.turns[0].system_text


def test_a_flood_of_valid_lines_waits_in_its_pipe_not_in_memory(tmp_path: Path) -> None:
    # Started ahead of its turn, a program prints short JSON lines without end: what waits
    # unread stays within agent.max_output_bytes (counted with each line's cost), the program
    # is held back, and its turn is stopped at the limit.
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nexec yes \'{"type": "noise"}\'\n')
    fake.chmod(0o755)
    limit = 256 * 1024
    argv = claude_argv([str(fake)], session=True)
    agent = ClaudeSessions(argv, 30.0, tmp_path, max_output_bytes=limit)
    try:
        agent.prepare("desk", None)
        process = agent._processes["desk"]
        deadline = time.monotonic() + 20
        while process.lines.held < limit // 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # unbounded, a second of `yes` is hundreds of megabytes
        assert limit // 2 <= process.lines.held <= limit
        with pytest.raises(AgentError, match=r"more than agent\.max_output_bytes"):
            agent.run_turn(AgentTurn("hi", "desk"))
        assert "desk" not in pids(agent)
        reader = f"-{process.proc.pid}-read_stdout"
        deadline = time.monotonic() + 20  # its reader, held waiting for room, has stopped too
        while any(t.name.endswith(reader) for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the reader still waits"
            time.sleep(0.05)
    finally:
        agent.stop()


def test_what_claude_says_between_turns_is_not_the_next_turn_s_reply(
    claude_cli: str, claude_api: ClaudeApi, claude_home: Path, claude_cwd: Path
) -> None:
    # A background task ends while the room is idle: Claude tells the model and prints that
    # turn's reply unasked. The next request was answered with it, and every later one with
    # the reply before its own.
    claude_api.script(
        Reply(
            [
                Text("Starting it."),
                ApiToolUse(
                    "Bash",
                    {
                        "command": "sleep 1; echo done",
                        "description": "Wait",
                        "run_in_background": True,
                    },
                ),
            ]
        ),
        Reply([Text("It is running.")]),
        Reply([Text("The background job is done.")]),  # to the task's notification
        Reply([Text("Answer two.")]),
        Reply([Text("Answer three.")]),
    )
    argv = claude_argv([claude_cli], session=True, allowed_tools=("Bash",))
    agent = ClaudeSessions(argv, TIMEOUT_S, claude_cwd, env=claude_api.env(claude_home))
    try:
        first = agent.run_turn(AgentTurn("start the job in the background", "desk"))
        assert "It is running." in first.text
        assert len(claude_api.wait_for_turns(3)) == 3  # the turn of its own has been asked
        lines = agent._processes["desk"].lines
        deadline = time.monotonic() + 30
        while b'"type":"result"' not in b"".join(x for x in list(lines._lines) if x):  # answered
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = agent.run_turn(AgentTurn("question two", "desk", session_id=first.session_id))
        third = agent.run_turn(AgentTurn("question three", "desk", session_id=first.session_id))
        assert (second.text, third.text) == ("Answer two.", "Answer three.")
    finally:
        agent.stop()


def test_a_question_asked_between_turns_is_refused_and_the_rest_logged() -> None:
    from core.claude import BETWEEN_TURNS, _BeforeEcho, _Process

    sent: list[dict[str, object]] = []
    paid: list[object] = []
    fields = {
        "name": "claude",
        "room": "desk",
        "send": sent.append,  # what it writes to Claude
        "spend": paid.append,
        "respond": _Process.respond,
        "refuse_request": _Process.refuse_request,
    }
    process = type("P", (), fields)()
    before = _BeforeEcho(process, "mine")  # type: ignore[arg-type]
    ask = {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}}
    stale = [
        {"type": "system", "subtype": "init", "session_id": "old"},
        {"type": "control_request", "request_id": "r1", "request": ask},
        {
            "type": "result",
            "subtype": "success",
            "result": "Done on my own.",
            "total_cost_usd": 0.5,
        },
        {"type": "user", "isReplay": True, "uuid": "someone else's"},
        {"type": "system", "subtype": "init", "session_id": "s1"},
    ]
    assert [before.take(e) for e in stale] == [False] * 5
    assert before.take({"type": "user", "isReplay": True, "uuid": "mine"})
    assert before.init == stale[-1]  # the prompt's own turn opened with it
    assert paid == [0.5]  # what it spent on its own is not charged to the prompt
    (response,) = sent
    assert response["response"] == {  # type: ignore[index]
        "subtype": "success",
        "request_id": "r1",
        "response": {"behavior": "deny", "message": BETWEEN_TURNS},
    }


FAKE_CLAUDE = """#!{python}
import json, sys
sys.stdin.readline()
def say(event):
    sys.stdout.write(json.dumps(event) + "\\n")
    sys.stdout.flush()
how = {how!r}
say({{"type": "system", "subtype": "init", "session_id": "0e1227ae-6dfb-4adb-aeeb-be0948fafea1"}})
if how == "odd":
    sys.stdout.write("\\n")  # a blank line
    odd = {{"type": "text_delta", "text": {{"a": 1}}}}
    delta = {{"type": "content_block_delta", "index": 0, "delta": odd}}
    say({{"type": "stream_event", "event": delta}})
    tool = {{"type": "tool_use", "id": "t1", "name": ["x"], "input": {{}}}}
    text = {{"type": "text", "text": "Hello."}}
    say({{"type": "assistant", "message": {{"content": [tool, text]}}}})
    sys.stdout.write('{{"type": "result", "subtype": "success", "result": "Hello.", '
                     '"session_id": "0e1227ae-6dfb-4adb-aeeb-be0948fafea1", '
                     '"total_cost_usd": 1{zeros}, "duration_ms": 1{zeros}}}\\n')
    sys.stdout.flush()
    sys.stdin.readline()
elif how == "exit-0":
    sys.exit(0)
elif how == "close-stdout":
    import os, time
    os.close(1)
    time.sleep(30)
"""


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("exit-0", "stopped before printing its final result"),  # not "crashed with exit code 1"
        ("close-stdout", "stopped before printing its final result"),  # not "killed by SIGHUP"
    ],
)
def test_a_turn_cut_short_says_so(tmp_path: Path, how: str, said: str) -> None:
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text(FAKE_CLAUDE.format(python=sys.executable, how=how, zeros="0" * 400))
    fake.chmod(0o755)
    agent = ClaudeSessions(claude_argv([str(fake)], session=True), 30.0, tmp_path, kill_grace_s=1)
    try:
        with pytest.raises(AgentError) as excinfo:
            agent.run_turn(AgentTurn("hi", "desk"))
        assert said in str(excinfo.value)
    finally:
        agent.stop()


def test_odd_but_harmless_output_is_read_not_failed(tmp_path: Path) -> None:
    # A blank line, values of the wrong type, a cost of a 401-digit integer: the reply stands
    # (these failed the turn, or were spoken as "{'a': 1}" and "Using ['x']").
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text(FAKE_CLAUDE.format(python=sys.executable, how="odd", zeros="0" * 400))
    fake.chmod(0o755)
    events = Recorder()
    agent = ClaudeSessions(claude_argv([str(fake)], session=True), 30.0, tmp_path)
    try:
        result = agent.run_turn(AgentTurn("hi", "desk", on_event=events))
    finally:
        agent.stop()
    assert result.text == "Hello." and result.cost_usd is None and not result.is_error
    assert events.text() == ""  # the odd delta says nothing; "Hello." came whole, as text
    (tool,) = events.of(ToolUse)
    assert tool.name == "tool"  # type: ignore[attr-defined]


@pytest.fixture
def limited(
    claude_cli: str, claude_api: ClaudeApi, claude_home: Path, claude_cwd: Path
) -> Iterator[Callable[[int, str], ClaudeSessions]]:
    """Makes a room's Claude allowed one tool, with agent.max_output_bytes as given."""
    agents: list[ClaudeSessions] = []

    def make(limit: int, tool: str) -> ClaudeSessions:
        argv = claude_argv([claude_cli], session=True, allowed_tools=(tool,))
        env = claude_api.env(claude_home)
        agents.append(ClaudeSessions(argv, TIMEOUT_S, claude_cwd, env=env, max_output_bytes=limit))
        return agents[-1]

    yield make
    for agent in agents:
        agent.stop()


def test_a_file_claude_writes_counts_once_against_the_output_limit(
    limited: Callable[[int, str], ClaudeSessions], claude_api: ClaudeApi, claude_cwd: Path
) -> None:
    # Its input streams in pieces (about 14 times the file's size in lines) that nothing
    # keeps; the whole input comes again in one line. The turn failed at the limit.
    content = "x" * 40_000
    target = claude_cwd / "big.txt"
    claude_api.script(
        Reply([ApiToolUse("Write", {"file_path": str(target), "content": content})]),
        Reply([Text("I wrote the file.")]),
    )
    result = limited(256 * 1024, "Write").run_turn(AgentTurn("write the big file", "desk"))
    assert target.read_text() == content
    assert result.text == "I wrote the file."


@pytest.mark.parametrize("started_ahead", [False, True])
def test_a_turn_another_process_took_in_the_room_is_known_to_the_next(
    claude_cli: str,
    claude_api: ClaudeApi,
    claude_home: Path,
    claude_cwd: Path,
    tmp_path: Path,
    started_ahead: bool,
) -> None:
    # `ask` beside `listen` in one room: listen's long-lived Claude never saw ask's turn; nor
    # did one listen started ahead of its first turn (--resume, as the room was then).
    claude_api.script(
        Reply([Text("Hello, Bob.")]), Reply([Text("Blue, noted.")]), Reply([Text("Bob; blue.")])
    )
    argv = claude_argv([claude_cli], session=True)
    env = claude_api.env(claude_home)
    agents = [ClaudeSessions(argv, TIMEOUT_S, claude_cwd, env=env) for _ in range(3)]
    before, ask, listen = (Core(tmp_path / "store", agent) for agent in agents)
    try:
        (before if started_ahead else listen).send_message("desk", "my name is Bob")
        if started_ahead:
            listen.prepare("desk")
        ask.send_message("desk", "my colour is blue")
        assert listen.send_message("desk", "what are my name and colour?") == "Bob; blue."
    finally:
        for agent in agents:
            agent.stop()
    heard = claude_api.turns[2].user_texts()
    assert "my name is Bob" in heard and "my colour is blue" in heard


def test_stop_stops_the_rooms_processes_at_once_not_one_after_another(tmp_path: Path) -> None:
    # Each ignores the end of its input and SIGTERM, so each takes two graces to stop: one
    # after another, serve's 10 s for a shutdown were gone with four rooms.
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text(
        f"#!/bin/sh\ntrap 'date +%s.%N >> {tmp_path}/term-$$' TERM\n"
        "exec 0<&-\nwhile :; do sleep 0.1; done\n"
    )
    fake.chmod(0o755)
    grace = 2.0
    agent = ClaudeSessions(
        claude_argv([str(fake)], session=True), 30.0, tmp_path, kill_grace_s=grace
    )
    for room in ("desk", "kitchen", "den"):
        agent.prepare(room, None)
    agent.stop()
    terms = sorted(float(p.read_text().split()[0]) for p in tmp_path.glob("term-*"))
    assert len(terms) == 3
    assert terms[-1] - terms[0] < grace  # one after another, they came a grace or more apart


@pytest.mark.parametrize("turn_no", [1, 2, 3])
def test_each_turn_s_reply_is_streamed_from_its_first_words(
    sessions: ClaudeSessions, claude_api: ClaudeApi, turn_no: int
) -> None:
    # Claude echoes a prompt (--replay-user-messages) only with its first message's end. The
    # second and later turns in a room waited for that echo: their first sentence came whole,
    # as late as the model took to write the paragraph.
    hold = Hold(after_deltas=3)
    earlier = [Reply([Text(f"Answer {n}.")]) for n in range(1, turn_no)]
    claude_api.script(*earlier, Reply([Text("Paris is big. " * 8, chunk_chars=8)], hold=hold))
    session_id = None
    for n in range(1, turn_no):
        session_id = sessions.run_turn(AgentTurn(f"question {n}", "desk", session_id=session_id))
        session_id = session_id.session_id
    events = Recorder()
    heard_while_held: list[str] = []

    def release_once_heard() -> None:
        assert hold.wait_reached(60)
        deadline = time.monotonic() + 30  # (the old code heard nothing until the release)
        while not events.text() and time.monotonic() < deadline:
            time.sleep(0.02)
        heard_while_held.append(events.text())
        hold.release()

    threading.Thread(target=release_once_heard, daemon=True).start()
    turn = AgentTurn("is Paris big?", "desk", session_id=session_id, on_event=events)
    result = sessions.run_turn(turn)
    assert heard_while_held and heard_while_held[0].startswith("Paris is")
    assert result.text == ("Paris is big. " * 8).strip()


def _scripted_claude(tmp_path: Path, script: str) -> list[str]:
    """A stand-in ``claude`` that answers each prompt on stdin as ``script`` says."""
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\n{script}")
    fake.chmod(0o755)
    return list(claude_argv([str(fake)], session=True))


def test_a_turn_of_its_own_begun_as_the_prompt_came_is_not_the_prompt_s_reply(
    tmp_path: Path,
) -> None:
    # Nothing waited unread, so the prompt's turn is read as it streams; but Claude's own
    # turn (a background task ended) began just then: its result comes before the echo.
    script = """import json, sys
def say(**event):
    print(json.dumps(event), flush=True)
def answer(uuid, text):
    say(type="system", subtype="init", session_id="s1")
    say(type="user", isReplay=True, uuid=uuid, message={"role": "user", "content": "?"})
    say(type="assistant", message={"id": uuid, "content": [{"type": "text", "text": text}]})
    say(type="result", subtype="success", result=text, session_id="s1")
first = json.loads(sys.stdin.readline())
answer(first["uuid"], "Answer one.")
second = json.loads(sys.stdin.readline())
say(type="system", subtype="init", session_id="s1")
say(type="assistant", message={"id": "own", "content": [{"type": "text", "text": "Done."}]})
say(type="result", subtype="success", result="Done.", session_id="s1")
answer(second["uuid"], "Answer two.")
sys.stdin.read()
"""
    agent = ClaudeSessions(_scripted_claude(tmp_path, script), 30.0, tmp_path)
    try:
        first = agent.run_turn(AgentTurn("question one", "desk"))
        second = agent.run_turn(AgentTurn("question two", "desk", session_id=first.session_id))
    finally:
        agent.stop()
    assert (first.text, second.text) == ("Answer one.", "Answer two.")


def test_what_claude_s_tools_read_does_not_count_against_the_output_limit(
    limited: Callable[[int, str], ClaudeSessions], claude_api: ClaudeApi, claude_cwd: Path
) -> None:
    # Each file read comes back about twice over in one line; a turn that read 42 source
    # files was stopped at the 8 MiB default, after minutes of work. Nothing keeps them.
    files = []
    for n in range(5):
        files.append(claude_cwd / f"m{n}.py")
        files[-1].write_text(f"# module {n}\n" + "x = 1\n" * 10_000)  # 60 KB each
    claude_api.script(
        *(Reply([ApiToolUse("Read", {"file_path": str(f)})]) for f in files),
        Reply([Text("I read them all.")]),
    )
    # Each line is under the limit; the five reads together are not.
    result = limited(256 * 1024, "Read").run_turn(AgentTurn("read the modules", "desk"))
    assert result.text == "I read them all."
    assert len(claude_api.turns) == 6
