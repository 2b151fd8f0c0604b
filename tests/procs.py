"""The processes running now, as /proc lists them: tests look there for an agent and its tools.

Any of them may end while it is read (the reason for looking), so a process that is gone
between the listing and the read is skipped, whatever error that gives (ENOENT, ESRCH)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def _matching(read: Callable[[int], bool]) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if read(int(name)):
                found.append(int(name))
        except OSError:
            continue
    return found


def running(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (a tool the agent started)."""
    return _matching(lambda pid: marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes())


def working_in(cwd: Path) -> list[int]:
    """Pids whose working directory is ``cwd`` (the agent, its tools)."""
    target = str(cwd.resolve())
    return _matching(lambda pid: os.readlink(f"/proc/{pid}/cwd") == target)
