"""A listener-like parent for the lifeline tests: ``python -m tests.core.fakes.agent_parent
SHIM MARKER PIDFILE [STORE] [--setsid]``. It runs one turn of the ``hang`` fake agent on a
worker thread, as the voice loop does, and waits; the test kills it with SIGKILL mid-turn.
With STORE, the agent is recorded in that session store's ledger for room "desk", as the core
does. With ``--setsid`` the agent's child runs in a session of its own (a Claude Code tool).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from core.ledger import AgentLedger
from core.lifeline import Lifeline
from core.process import RunningProcess, run_process
from tests.core.conftest import fake_command


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--setsid"]
    shim, marker, pidfile = args[:3]
    ledger = AgentLedger(Path(args[3])) if len(args) > 3 else None
    tool_session = ["setsid"] if "--setsid" in sys.argv else []
    lifeline = Lifeline(shim)  # type: ignore[arg-type]

    def spawned(process: RunningProcess) -> None:
        if ledger is not None:
            ledger.record("desk", process.pid)
        print(f"agent {process.pid} reaper {lifeline.reaper_pid}", flush=True)

    def turn() -> None:
        run_process(
            fake_command("hang", marker, pidfile, *tool_session),
            stdin_data=b"q",
            timeout_s=300,
            kill_grace_s=1,
            cwd=None,
            max_stdout_bytes=1 << 20,
            on_line=lambda line: None,
            lifeline=lifeline,
            on_spawn=spawned,
        )

    worker = threading.Thread(target=turn, name="turn")
    worker.start()
    worker.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
