"""The agent reaper: kills the process groups of the assistant's agents when it dies.

Run by :mod:`core.lifeline` as ``python -I -S reaper.py`` (standard library only, so it starts
fast and cannot be redirected by the environment). Its stdin is a pipe only the assistant
holds; each line is ``+PGID`` (an agent started) or ``-PGID`` (it was reaped). End of input
means the assistant is gone, whether it exited or was killed with SIGKILL: every group still
listed gets SIGKILL. The kernel keeps a group id reserved while the group has a member, so the
signal cannot reach an unrelated group. SIGTERM (a service being stopped) does the same; SIGINT
and SIGHUP are ignored: the reaper runs in its own session and waits for its input to end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

groups: set[int] = set()


def kill_all() -> None:
    for pgid in sorted(groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    groups.clear()


def on_term(signum: int, frame: FrameType | None) -> None:
    kill_all()
    os._exit(0)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if len(line) < 2 or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if pgid <= 1:
            continue
        if line.startswith(b"+"):
            groups.add(pgid)
        elif line.startswith(b"-"):
            groups.discard(pgid)
    kill_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
