"""A listener-like parent for the lifeline tests: ``python -m tests.core.fakes.agent_parent
SHIM MARKER PIDFILE``. It runs one turn of the ``hang`` fake agent on a worker thread, as the
voice loop does, and waits; the test kills it with SIGKILL mid-turn.
"""

from __future__ import annotations

import sys
import threading

from core.lifeline import Lifeline
from core.process import run_process
from tests.core.conftest import fake_command


def main() -> int:
    shim, marker, pidfile = sys.argv[1:4]
    lifeline = Lifeline(shim)  # type: ignore[arg-type]

    def turn() -> None:
        run_process(
            fake_command("hang", marker, pidfile),
            stdin_data=b"q",
            timeout_s=300,
            kill_grace_s=1,
            cwd=None,
            max_stdout_bytes=1 << 20,
            on_line=lambda line: None,
            lifeline=lifeline,
            on_spawn=lambda p: print(f"agent {p.pid} reaper {lifeline.reaper_pid}", flush=True),
        )

    worker = threading.Thread(target=turn, name="turn")
    worker.start()
    worker.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
