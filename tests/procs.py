"""The processes running now, as /proc lists them: tests look there for an agent and its tools.

Any of them may end while it is read (the reason for looking), so a process that is gone
between the listing and the read is skipped, whatever error that gives (ENOENT, ESRCH)."""

from __future__ import annotations

import os
from pathlib import Path


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def running(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (a tool the agent started)."""
    found = []
    for pid in _pids():
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def working_in(cwd: Path) -> list[int]:
    """Pids whose working directory is ``cwd`` (the agent, its tools)."""
    target = str(cwd.resolve())
    found = []
    for pid in _pids():
        try:
            if os.readlink(f"/proc/{pid}/cwd") == target:
                found.append(pid)
        except OSError:
            continue
    return found
