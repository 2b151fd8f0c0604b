"""Core: sessions per room, agent session ids, idle timeout, reset, errors recorded, streaming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core import Core
from core.agent import AgentResult, AgentRunner, TextCallback
from core.agent_events import AgentTurn, TurnControl
from core.config import AgentConfig, CoreConfig, SessionConfig
from core.conversation import UNANSWERED
from core.errors import AgentError, AgentTimeout, InvalidIdError
from core.paths import MARKER_NAME, session_file
from core.store import SessionStore
from tests.core.conftest import ECHO_AGENT, REPO, fake_runner
from tests.core.fakes.agents import Call, FakeAgent


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def numbered_agent() -> FakeAgent:
    """Replies "reply N" and hands out a new agent session id every turn, like Claude may."""

    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        return AgentResult(
            text=f"reply to {call.prompt}", session_id=f"agent-{call.prompt}", cost_usd=0.01
        )

    return FakeAgent(behaviour)


def test_a_turn_records_both_sides_with_timing_and_cost(tmp_path: Path) -> None:
    clock = Clock()
    core = Core(tmp_path, numbered_agent(), clock=clock)
    assert core.send_message("desk", "one") == "reply to one"
    session = SessionStore(tmp_path).load(core.store.list()[0]["session_id"])  # from disk
    assert session is not None and session.room_id == "desk" and session.title == "one"
    user, reply = session.messages
    assert user == {"role": "user", "content": "one", "timestamp": clock.now}
    duration_ms = reply.get("duration_ms")
    assert isinstance(duration_ms, int) and duration_ms >= 0
    assert reply == {
        "role": "assistant",
        "content": "reply to one",
        "timestamp": clock.now,
        "duration_ms": duration_ms,
        "cost_usd": 0.01,
        "is_error": False,
    }
    assert session.agent_session_id == "agent-one"


def test_the_agent_session_id_returned_each_turn_is_passed_next_turn(tmp_path: Path) -> None:
    agent = numbered_agent()
    core = Core(tmp_path, agent)
    for text in ("a", "b", "c"):
        core.send_message("desk", text)
    assert [c.session_id for c in agent.calls] == [None, "agent-a", "agent-b"]
    session = core.active_session("desk")
    assert session is not None and len(session.messages) == 6
    assert session.agent_session_id == "agent-c"


def test_a_new_core_on_the_same_store_continues_the_conversation(tmp_path: Path) -> None:
    Core(tmp_path, numbered_agent()).send_message("desk", "first")
    agent = numbered_agent()
    Core(tmp_path, agent).send_message("desk", "second")
    assert agent.calls[0].session_id == "agent-first"
    assert len(SessionStore(tmp_path).list()) == 1


def test_rooms_have_separate_sessions(tmp_path: Path) -> None:
    agent = numbered_agent()
    core = Core(tmp_path, agent)
    core.send_message("kitchen", "k1")
    core.send_message("desk", "d1")
    core.send_message("kitchen", "k2")
    assert [c.session_id for c in agent.calls] == [None, None, "agent-k1"]
    rooms = sorted(e["room_id"] for e in core.store.list())
    assert rooms == ["desk", "kitchen"]


def test_idle_timeout_starts_a_new_session(tmp_path: Path) -> None:
    clock = Clock()
    agent = numbered_agent()
    core = Core(tmp_path, agent, idle_timeout_s=60.0, clock=clock)
    core.send_message("desk", "a")
    clock.now += 60.0  # exactly the limit: still the same conversation
    core.send_message("desk", "b")
    clock.now += 60.5
    assert core.active_session("desk") is None
    core.send_message("desk", "c")
    assert [c.session_id for c in agent.calls] == [None, "agent-a", None]
    assert [e["message_count"] for e in core.store.list()] == [2, 4]


def test_idle_time_counts_from_the_last_message_not_the_first(tmp_path: Path) -> None:
    clock = Clock()
    agent = numbered_agent()
    core = Core(tmp_path, agent, idle_timeout_s=60.0, clock=clock)
    for text in ("a", "b", "c"):  # 50 s apart: never idle 60 s, though 100 s in all
        core.send_message("desk", text)
        clock.now += 50.0
    assert [c.session_id for c in agent.calls] == [None, "agent-a", "agent-b"]  # resumed
    (entry,) = core.store.list()
    assert entry["message_count"] == 6
    assert entry["title"] == "a"  # named by its first request, not its latest


def test_a_reset_killed_before_its_index_entry_still_closes_the_conversation(
    tmp_path: Path,
) -> None:
    agent = numbered_agent()
    core = Core(tmp_path, agent)
    core.send_message("desk", "a")
    session = core.active_session("desk")
    assert session is not None
    session.closed = True  # what reset writes first; killed before the index says so
    session_file(core.store.root, session.session_id).write_bytes(session.to_json())
    assert core.store.list()[0]["closed"] is False
    assert Core(tmp_path, agent).active_session("desk") is None
    core.send_message("desk", "b")
    assert [c.session_id for c in agent.calls] == [None, None]  # a new conversation


KILLED_MID_TURN = """
import sys, threading
from core import Core

class Hangs:
    def run(self, prompt, *, session_id=None, on_text=None):
        print("asked", flush=True)
        threading.Event().wait()

Core(sys.argv[1], Hangs()).send_message("desk", "deploy it to staging")
"""


def test_a_request_whose_turn_was_killed_is_marked_unanswered_by_the_next_turn(
    tmp_path: Path,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_TURN, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "asked\n"
    finally:
        child.kill()  # SIGKILL: no reply, no clean-up
        child.wait()
    core = Core(tmp_path, numbered_agent())
    core.send_message("desk", "are you there")
    (entry,) = core.store.list()
    session = core.store.load(entry["session_id"])
    assert session is not None
    request, marker, *rest = session.messages
    assert request["content"] == "deploy it to staging"
    assert marker == {
        "role": "assistant",
        "content": UNANSWERED,
        "timestamp": request["timestamp"],
        "is_error": True,
    }
    assert [(m["role"], m["content"]) for m in rest] == [
        ("user", "are you there"),
        ("assistant", "reply to are you there"),
    ]


def test_idle_timeout_zero_means_never(tmp_path: Path) -> None:
    clock = Clock()
    core = Core(tmp_path, numbered_agent(), idle_timeout_s=0, clock=clock)
    core.send_message("desk", "a")
    clock.now += 10 * 365 * 24 * 3600
    core.send_message("desk", "b")
    assert len(core.store.list()) == 1


def test_reset_starts_a_new_conversation_and_survives_a_restart(tmp_path: Path) -> None:
    agent = numbered_agent()
    core = Core(tmp_path, agent)
    core.send_message("desk", "a")
    assert core.reset("desk") is True
    assert core.reset("desk") is False  # idempotent: nothing left to close
    assert core.active_session("desk") is None
    assert Core(tmp_path, agent).active_session("desk") is None
    core.send_message("desk", "b")
    assert agent.calls[-1].session_id is None
    entries = core.store.list()
    assert [(e["message_count"], e["closed"]) for e in entries] == [(2, False), (2, True)]


@pytest.mark.parametrize("behind_s", [600.0, 90 * 24 * 3600.0])
def test_a_reset_then_a_clock_set_back_still_continues_the_new_conversation(
    tmp_path: Path, behind_s: float
) -> None:
    """A Raspberry Pi has no clock chip: after a power cut it boots with the time it last
    saved, minutes or months behind. The new conversation, older by the clock than the one
    the reset closed, was never the room's newest, so every turn began another."""
    clock = Clock()
    agent = numbered_agent()
    core = Core(tmp_path, agent, clock=clock)
    core.send_message("desk", "a")
    core.reset("desk")
    clock.now -= behind_s
    core = Core(tmp_path, agent, clock=clock)  # restarted after the power cut
    for text in ("b", "c", "d"):
        clock.now += 1.0
        core.send_message("desk", text)
    assert [c.session_id for c in agent.calls] == [None, None, "agent-b", "agent-c"]
    entries = core.store.list()
    assert [(e["message_count"], e["closed"]) for e in entries] == [(6, False), (2, True)]


def test_a_failure_after_part_of_the_reply_was_heard_keeps_that_part(tmp_path: Path) -> None:
    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        if on_text is not None:
            on_text("Let me look ")
            on_text("at the files.")
        raise AgentError("The agent reported an error: Prompt is too long")

    core = Core(tmp_path, FakeAgent(behaviour))
    heard: list[object] = []
    with pytest.raises(AgentError):
        core.run_turn("desk", "what is in here?", on_event=heard.append)
    with pytest.raises(AgentError):
        core.send_message("desk", "and now?")  # nothing streamed: nothing heard
    session = core.active_session("desk")
    assert session is not None
    assert [m["content"] for m in session.messages if m["role"] == "assistant"] == [
        "Let me look at the files.\n\nThe agent reported an error: Prompt is too long",
        "The agent reported an error: Prompt is too long",
    ]
    assert len(heard) == 2  # the events still reach the caller


def test_reset_of_an_unknown_room_is_harmless(tmp_path: Path) -> None:
    core = Core(tmp_path, numbered_agent())
    assert core.reset("nobody") is False
    assert core.store.list() == []


@pytest.mark.parametrize(
    "error", [AgentError("The agent crashed with exit code 3: boom"), AgentTimeout("too slow")]
)
def test_an_agent_failure_is_recorded_then_re_raised(tmp_path: Path, error: AgentError) -> None:
    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        if call.prompt == "fail":
            raise error
        return AgentResult(text="ok", session_id="agent-1")

    agent = FakeAgent(behaviour)
    core = Core(tmp_path, agent)
    core.send_message("desk", "hello")
    with pytest.raises(type(error)) as excinfo:
        core.send_message("desk", "fail")
    assert excinfo.value is error
    session = SessionStore(tmp_path).load(core.store.list()[0]["session_id"])
    assert session is not None
    assert [(m["role"], m["content"], m.get("is_error")) for m in session.messages[2:]] == [
        ("user", "fail", None),
        ("assistant", str(error), True),
    ]
    assert session.agent_session_id == "agent-1"  # kept for the next turn
    core.send_message("desk", "again")
    assert agent.calls[-1].session_id == "agent-1"


def test_an_is_error_result_from_any_agent_is_an_error(tmp_path: Path) -> None:
    agent = FakeAgent(lambda call, on_text: AgentResult(text="quota exceeded", is_error=True))
    core = Core(tmp_path, agent)
    with pytest.raises(AgentError, match="quota exceeded"):
        core.send_message("desk", "hi")
    session = core.active_session("desk")
    assert session is not None and session.messages[-1].get("is_error") is True


def test_a_real_subprocess_failure_is_recorded(tmp_path: Path) -> None:
    core = Core(tmp_path, fake_runner("crash"))
    with pytest.raises(AgentError, match="exit code 3"):
        core.send_message("desk", "hello")
    session = core.active_session("desk")
    assert session is not None
    assert session.messages[0]["content"] == "hello"
    assert "exit code 3: boom" in session.messages[1]["content"]


def test_on_text_gets_the_stream_in_order(tmp_path: Path) -> None:
    def behaviour(call: Call, on_text: TextCallback | None) -> AgentResult:
        assert on_text is not None
        for piece in ("one ", "two ", "three"):
            on_text(piece)
        return AgentResult(text="one two three")

    got: list[str] = []
    assert Core(tmp_path, FakeAgent(behaviour)).send_message("d", "x", on_text=got.append) == (
        "one two three"
    )
    assert got == ["one ", "two ", "three"]


def test_round_trip_through_the_echo_agent_subprocess(tmp_path: Path) -> None:
    from core.agent import AgentRunner

    core = Core(tmp_path, AgentRunner(ECHO_AGENT, 30))
    got: list[str] = []
    assert core.send_message("desk", "--version", on_text=got.append) == "You said: --version"
    assert "".join(got) == "You said: --version"
    first = core.active_session("desk")
    assert first is not None and first.agent_session_id is not None
    assert core.send_message("desk", "again") == "You said: again"
    second = core.active_session("desk")
    assert second is not None and second.session_id == first.session_id
    assert second.agent_session_id == first.agent_session_id  # the echo agent resumed it


@pytest.mark.parametrize("room", ["../../etc", "/abs", "a/b", "", "x" * 10_000, "nul\x00"])
def test_hostile_room_ids_are_refused_before_anything_happens(tmp_path: Path, room: str) -> None:
    agent = numbered_agent()
    core = Core(tmp_path, agent)
    for call in (
        lambda: core.send_message(room, "hi"),
        lambda: core.room_lock(room),
        lambda: core.reset(room),
        lambda: core.active_session(room),
    ):
        with pytest.raises(InvalidIdError):
            call()
    assert agent.calls == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", MARKER_NAME]


@pytest.mark.parametrize("text", ["", "   \n"])
def test_an_empty_message_is_refused(tmp_path: Path, text: str) -> None:
    agent = numbered_agent()
    with pytest.raises(ValueError, match="empty"):
        Core(tmp_path, agent).send_message("desk", text)
    assert agent.calls == []


@pytest.mark.parametrize("idle", [-1.0, float("nan"), float("inf")])
def test_a_bad_idle_timeout_is_refused_as_session_idle_timeout_s_is(
    tmp_path: Path, idle: float
) -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"session\.idle_timeout_s"):
        Core(tmp_path, FakeAgent(), idle_timeout_s=idle)


def test_from_config_wires_the_runner_and_the_store(tmp_path: Path) -> None:
    config = CoreConfig(
        agent=AgentConfig(command=ECHO_AGENT, timeout_s=30.0, cwd=str(tmp_path)),
        session=SessionConfig(store_dir=str(tmp_path / "store"), idle_timeout_s=5.0),
    )
    core = Core.from_config(config)
    try:
        assert core.send_message("desk", "hi") == "You said: hi"
    finally:
        core.stop()  # the echo agent runs as a process per room, like Claude
    assert core.store.root == tmp_path / "store"
    assert core.idle_timeout_s == 5.0
    plain = [sys.executable, "-c", "print('plain text agent')"]
    override = Core.from_config(config, agent_command=plain)
    assert override.send_message("desk", "hi") == "plain text agent"  # sniffed as text


def test_another_agent_in_the_room_is_not_handed_the_last_agents_conversation(
    tmp_path: Path,
) -> None:
    """Live: after --agent echo, --agent cat failed every turn on "--resume <echo's id>"."""
    config = CoreConfig(
        agent=AgentConfig(command=ECHO_AGENT, timeout_s=30.0, mode="per-turn"),
        session=SessionConfig(store_dir=str(tmp_path)),
    )
    Core.from_config(config).send_message("desk", "one")
    strict = [sys.executable, "-c", "import sys; assert sys.argv == ['-c']; print('plain')"]
    plain = Core.from_config(config, agent_command=strict)
    assert plain.send_message("desk", "two") == "plain"  # no --resume it cannot take
    session = plain.active_session("desk")
    assert session is not None and session.agent_program == "core.echo_agent"
    echo_id = session.agent_session_id
    assert echo_id is not None
    calls: list[str | None] = []
    back = Core.from_config(config)
    run = back.agent.run_turn
    back.agent.run_turn = lambda turn: calls.append(turn.session_id) or run(turn)  # type: ignore[method-assign]
    assert back.send_message("desk", "three") == "You said: three"
    assert calls == [echo_id]  # the echo agent goes on with its own conversation


def test_two_scripts_of_one_interpreter_are_two_agents(tmp_path: Path) -> None:
    """``python3 a.py`` and ``python3 b.py`` were both "python3": b was handed a's id."""
    root = Path(__file__).resolve().parents[2]
    echo = tmp_path / "a.py"
    echo.write_text(
        f"import runpy, sys\nsys.path.insert(0, {str(root)!r})\n"
        "runpy.run_module('core.echo_agent', run_name='__main__')\n"
    )
    strict = tmp_path / "b.py"
    strict.write_text("import sys\nassert sys.argv[1:] == [], sys.argv\nprint('plain')\n")
    config = CoreConfig(
        agent=AgentConfig(command=(sys.executable, str(echo)), timeout_s=30.0, mode="per-turn"),
        session=SessionConfig(store_dir=str(tmp_path / "store")),
    )
    first = Core.from_config(config)
    assert first.send_message("desk", "one") == "You said: one"
    session = first.active_session("desk")
    assert session is not None and session.agent_session_id and session.agent_program == "a.py"
    second = Core.from_config(config, agent_command=[sys.executable, str(strict)])
    assert second.send_message("desk", "two") == "plain"  # no --resume <a's id>


def test_agent_cwd_may_start_with_a_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.toml says paths may start with ~: the agent runs in the home's folder, not in
    a folder literally named "~"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "project").mkdir()
    where = [sys.executable, "-c", "import os, sys; sys.stdin.read(); print(os.getcwd())"]
    config = CoreConfig(
        agent=AgentConfig(command=tuple(where), cwd="~/project"),
        session=SessionConfig(store_dir=str(tmp_path / "store")),
    )
    assert config.agent.workdir == str(tmp_path / "project")
    assert Core.from_config(config).send_message("desk", "where?") == str(tmp_path / "project")


def test_module_level_send_message_uses_config_toml(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = tmp_path / "config.toml"
    config.write_text(
        "[agent]\n"
        f"command = {json.dumps([sys.executable, '-m', 'core.echo_agent'])}\n"
        "[session]\n"
        f"store_dir = {json.dumps(str(store))}\n"
        "[some_voice_table]\nnot_ours = 1\n"
    )
    env = {**os.environ, "VOICE_ASSISTANT_CONFIG": str(config), "PYTHONPATH": str(REPO)}
    code = (
        "import core\n"
        "print(core.send_message('desk', 'from config'))\n"
        "print(core.send_message('desk', 'two'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.splitlines() == ["You said: from config", "You said: two"]
    entries = SessionStore(store).list()
    assert [(e["room_id"], e["message_count"]) for e in entries] == [("desk", 4)]
    on_disk = json.loads((store / f"{entries[0]['session_id']}.json").read_text())
    assert [(m["role"], m["content"]) for m in on_disk["messages"]] == [
        ("user", "from config"),
        ("assistant", "You said: from config"),
        ("user", "two"),
        ("assistant", "You said: two"),
    ]


# ---- turns with events: revising a cut-short request, interrupts ------------------------------


def test_a_revised_request_replaces_the_cut_short_one(tmp_path: Path) -> None:
    core = Core(tmp_path / "store", AgentRunner(ECHO_AGENT, 30))
    core.send_message("desk", "Refactor the store so that")
    whole = "Refactor the store so that the index is patched."
    outcome = core.run_turn("desk", whole, revises=True)
    assert outcome.reply == "You said: Refactor the store so that the index is patched."
    session = core.active_session("desk")
    assert session is not None
    assert [(m["role"], m["content"]) for m in session.messages] == [
        ("user", "Refactor the store so that the index is patched."),
        ("assistant", "You said: Refactor the store so that the index is patched."),
    ]


def test_an_interrupted_turn_is_recorded_and_returned_not_raised(tmp_path: Path) -> None:
    core = Core(tmp_path / "store", AgentRunner([*ECHO_AGENT, "--think-ms", "30000"], 60))
    control = TurnControl()
    threading.Timer(0.5, control.interrupt).start()
    outcome = core.run_turn("desk", "take your time", control=control)
    assert outcome.interrupted and outcome.reply == ""
    session = core.active_session("desk")
    assert session is not None and session.agent_session_id is not None  # resumable
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    # The store says the reply was cut short, and the file reads back the same
    assert session.messages[1].get("interrupted") is True
    assert core.store.load(session.session_id).messages[1].get("interrupted") is True


def test_a_turn_is_marked_afresh_only_after_another_process_took_one(tmp_path: Path) -> None:
    class Turns:
        def __init__(self) -> None:
            self.afresh: list[bool] = []

        def run(self, prompt: str, **_: object) -> AgentResult:
            raise AssertionError("a turn agent is called by run_turn")

        def run_turn(self, turn: AgentTurn) -> AgentResult:
            self.afresh.append(turn.afresh)
            return AgentResult(text="ok")

        def prepare(self, room_id: str, session_id: str | None) -> None:
            pass

    mine, other = Turns(), Turns()
    listen, ask = Core(tmp_path, mine), Core(tmp_path, other)
    for core, text in [(listen, "a"), (listen, "b"), (ask, "c"), (listen, "d"), (listen, "e")]:
        core.send_message("desk", text)
    listen.send_message("kitchen", "f")  # another room is its own
    assert (mine.afresh, other.afresh) == ([False, False, True, False, False], [False])
    # Started ahead of its first turn (listen's start), its agent saw the room as it was then.
    later = Turns()
    restarted = Core(tmp_path, later)
    restarted.prepare("desk")
    ask.send_message("desk", "g")
    restarted.send_message("desk", "h")
    assert later.afresh == [True]


def test_a_conversation_an_earlier_release_recorded_under_the_interpreter_is_resumed(
    tmp_path: Path,
) -> None:
    from core.session import Session

    class Named(FakeAgent):
        command = ("/usr/bin/python3", "-u", "agent.py")

    older = Session(room_id="desk", agent_session_id="abc", agent_program="python3")
    other = Session(room_id="desk", agent_session_id="abc", agent_program="b.py")
    core = Core(tmp_path, Named())
    assert core.agent_program == "agent.py"
    assert (core._resume_id(older), core._resume_id(other)) == ("abc", None)


def test_a_turn_stopped_before_it_began_is_stored_and_never_reaches_the_agent(
    tmp_path: Path,
) -> None:
    # (A Wyoming client that left while its room was busy: its words are kept in their turn.)
    agent = FakeAgent()
    core = Core(tmp_path, agent)
    control = TurnControl()
    control.interrupt()
    outcome = core.run_turn("desk", "never mind", control=control)
    assert outcome.interrupted and agent.calls == []
    session = core.active_session("desk")
    assert session is not None
    assert [(m["role"], m["content"]) for m in session.messages] == [
        ("user", "never mind"),
        ("assistant", ""),
    ]
