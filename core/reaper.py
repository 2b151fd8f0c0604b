"""The agent reaper: kills the process groups of the assistant's agents when it dies.

Run by :mod:`core.lifeline` as ``python -I -S reaper.py`` (standard library only, so it starts
fast and cannot be redirected by the environment). Its stdin is a pipe only the assistant
holds; each line is ``+PGID`` (an agent started) or ``-PGID`` (it was reaped). End of input
means the assistant is gone, whether it exited or was killed with SIGKILL: every group still
listed gets SIGKILL (after a line ``=``, the assistant lives on: only the groups). The kernel
keeps a group id reserved while the group has a member, so the signal cannot reach an
unrelated group. SIGTERM (a service being stopped) does the same; SIGINT
and SIGHUP are ignored: the reaper runs in its own session and waits for its input to end.

An agent may start processes in sessions of their own (Claude Code runs each Bash tool so),
out of its group's reach. Every agent's environment carries :data:`MARK`, naming the assistant
that started it (pid and start time), and its tools inherit it: the reaper's argument is that
name, and it kills every process carrying it too, wherever it now belongs (the agent itself
is killed by the kernel as the assistant dies, and its tools go to init). While the agent
lives, :func:`kill_tree` finds them as its descendants.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

MARK = "VOICE_ASSISTANT_AGENT_OF"  # in every agent's environment: "PID-TICKS/N", its assistant

groups: set[int] = set()
marks: list[str] = []  # the assistant's name: its agents carry it (argv[1])


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last ")".
    fields = stat.rsplit(b")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def mark_of(pid: int) -> str:
    """The name the agents of assistant ``pid`` carry in :data:`MARK`."""
    return f"{pid}-{start_ticks(pid) or 0}"


def marked(name: str) -> list[int]:
    """The processes whose environment says assistant ``name`` ("PID-TICKS") started them,
    or its agent ``name`` ("PID-TICKS/N") did."""
    exact, under = f"{MARK}={name}".encode(), f"{MARK}={name}/".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                variables = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if any(v == exact or v.startswith(under) for v in variables):
            found.append(int(entry))
    return found


def kill_marked(name: str) -> None:
    for pid in marked(name):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _parents_and_groups() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process we can see."""
    found: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) may hold spaces and parentheses: count after the last ")".
        fields = stat.rsplit(b")", 1)[-1].split()
        if len(fields) > 2:
            found[int(name)] = (int(fields[1]), int(fields[2]))
    return found


def strays(pgid: int) -> list[int]:
    """The descendants of group ``pgid``'s processes that have left the group."""
    processes = _parents_and_groups()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    todo = [pid for pid, (_, group) in processes.items() if group == pgid]
    seen = set(todo)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return sorted(pid for pid in seen if processes[pid][1] != pgid)


def kill_tree(pgid: int) -> None:
    """SIGKILL group ``pgid`` and every process it started elsewhere. The strays are found
    first: they are alive, so their pids cannot have been given to another process."""
    outside = strays(pgid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for pid in outside:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_all() -> None:
    for pgid in sorted(groups):
        kill_tree(pgid)
    groups.clear()
    for name in marks:
        kill_marked(name)


def on_term(signum: int, frame: FrameType | None) -> None:
    kill_all()
    os._exit(0)


def main() -> int:
    marks.extend(sys.argv[1:2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if line == b"=":  # closed in order: the assistant lives on, so do its other agents
            marks.clear()
            continue
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
