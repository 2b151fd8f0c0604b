"""Two processes sharing a store (``ask`` while ``listen`` runs) take turns in a room."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from core import Core
from core.agent_output import AgentResult
from core.errors import AgentError

CHILD = """
import sys, time
from core import Core
from core.agent import AgentResult

class SlowEcho:
    def run(self, prompt, *, session_id=None, on_text=None):
        time.sleep(0.02)  # long enough for the other process to load the same session
        return AgentResult(f"You said: {prompt}", "agent-1", False, 0.0, 20, 1, {})

core = Core(sys.argv[1], SlowEcho())
for i in range(int(sys.argv[3])):
    core.send_message("desk", f"{sys.argv[2]}-{i}")
"""


def test_turns_from_two_processes_in_one_room_are_all_kept(tmp_path: Path) -> None:
    store = tmp_path / "sessions"
    turns = 15
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(store), name, str(turns)])
        for name in ("listen", "ask")
    ]
    for child in children:
        assert child.wait(60) == 0
    [session] = [json.loads(p.read_text()) for p in store.glob("*.json") if p.name != "_index.json"]
    users = sorted(m["content"] for m in session["messages"] if m["role"] == "user")
    expected = sorted(f"{name}-{i}" for name in ("listen", "ask") for i in range(turns))
    assert users == expected
    assert len(session["messages"]) == 4 * turns


HOLDER = """
import sys, time
from core.store import SessionStore

with SessionStore(sys.argv[1]).lock_room("desk"):  # another process's turn, minutes long
    print("held", flush=True)
    time.sleep(120)
"""


class Recording:
    def __init__(self) -> None:
        self.prompts: list[str] = []

    def run(
        self, prompt: str, *, session_id: str | None = None, on_text: object = None
    ) -> AgentResult:
        self.prompts.append(prompt)
        return AgentResult(f"You said: {prompt}", "agent-1", False, 0.0, 20, 1, {})


def test_a_turn_waiting_for_another_process_gives_up_when_the_core_stops(tmp_path: Path) -> None:
    store = tmp_path / "sessions"
    store.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        agent = Recording()
        core = Core(store, agent)
        failed: list[BaseException] = []

        def turn() -> None:
            try:
                core.send_message("desk", "hello")
            except AgentError as e:
                failed.append(e)

        waiting = threading.Thread(target=turn)
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive()  # it waits for the other process's turn
        core.stop()  # the assistant stops: SIGTERM
        waiting.join(10)
        assert not waiting.is_alive(), "the stop did not end the wait for the room"
    finally:
        holder.kill()
        holder.wait(10)
    assert [str(e) for e in failed] == ["The assistant is shutting down."]
    assert agent.prompts == []  # it never began: nothing was sent, nothing recorded
    assert not [p for p in store.glob("*.json") if p.name != "_index.json"]
