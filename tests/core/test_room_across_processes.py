"""Two processes sharing a store (``ask`` while ``listen`` runs) take turns in a room."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
