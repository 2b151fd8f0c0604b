"""The agent reaper: kills the process groups of the assistant's agents when it dies.

Run by :mod:`core.lifeline` as ``python -I -S reaper.py`` (standard library only, so it starts
fast and cannot be redirected by the environment). Its stdin is a pipe only the assistant
holds; each line is ``+PGID`` (an agent started) or ``-PGID`` (it was reaped). End of input
means the assistant is gone, whether it exited or was killed with SIGKILL: every group still
listed gets SIGKILL. The kernel keeps a group id reserved while the group has a member, so the
signal cannot reach an unrelated group. SIGTERM (a service being stopped) does the same; SIGINT
and SIGHUP are ignored: the reaper runs in its own session and waits for its input to end.

An agent may start processes in sessions of their own (Claude Code runs each Bash tool so),
out of its group's reach. While the agent lives they are its descendants, and
:func:`strays` finds them for whoever stops it; once it has died they belong to init. The
kernel kills the agent the moment the assistant dies, before the reaper can look, so while
agents run the reaper looks every :data:`LOOK_EVERY_S` and remembers what it found: a tool
started that long before the assistant died goes with it. An agent reaped in order takes
its strays off the list: what it left running it meant to.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from types import FrameType

LOOK_EVERY_S = 2.0  # a look reads /proc once: about 1 ms on a PC

Stray = tuple[int, int]  # (pid, start ticks): a pid given to another process since is skipped
Processes = dict[int, tuple[int, int, int]]  # pid -> (parent, group, start ticks)

groups: set[int] = set()
remembered: dict[int, list[Stray]] = {}  # group -> its strays, as last looked


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """/proc/PID/stat from field 3 (the state) on, or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last ")".
    return stat.rsplit(b")", 1)[-1].split()


def _processes() -> Processes:
    """Every process we can see; none when /proc cannot be read."""
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return {}
    processes: Processes = {}
    for entry in entries:
        fields = _stat_fields(entry)
        if fields is not None and len(fields) > 19:
            processes[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[19]))
    return processes


def strays(pgid: int, processes: Processes | None = None) -> list[Stray]:
    """The live descendants of group ``pgid``'s processes that have left the group. Empty
    when /proc cannot be read (the group itself can still be signalled)."""
    if processes is None:
        processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    todo = [pid for pid, (_, group, _) in processes.items() if group == pgid]
    seen = set(todo)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    me = os.getpid()
    return sorted(
        (pid, processes[pid][2]) for pid in seen if processes[pid][1] != pgid and pid != me
    )


def pipe_holders(inodes: set[int]) -> list[Stray]:
    """The processes of our user that hold one of the pipes ``inodes`` open: a tool that
    daemonised (fork, setsid, fork, exit) is init's, not the agent's, but still holds the
    agent's output. This process and its children are left out: they are ours to stop (one
    being started may hold the pipe for a moment, until it closes what it inherited). Empty
    when /proc cannot be read."""
    links = {f"pipe:[{inode}]" for inode in inodes}
    me, uid = os.getpid(), os.getuid()
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit() and int(e) != me]
    except OSError:
        return []
    found = []
    for entry in entries:
        if not _holds(entry, uid, links):
            continue
        fields = _stat_fields(entry)  # None: it is gone (a race, like any other here)
        if fields is not None and len(fields) > 19 and int(fields[1]) != me:
            found.append((int(entry), int(fields[19])))
    return sorted(found)


def _holds(pid: str, uid: int, links: set[str]) -> bool:
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return False
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(f"/proc/{pid}/fd/{fd}") in links:
                return True
    return False


def kill_strays(found: list[Stray]) -> None:
    """SIGKILL the ``found`` strays that are still the processes they were."""
    for pid, ticks in found:
        if start_ticks(pid) == ticks:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def kill_tree(pgid: int) -> None:
    """SIGKILL group ``pgid`` and what its processes started in sessions of their own."""
    found = strays(pgid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    kill_strays(found)


def look() -> None:
    """Remember each group's strays, the new ones and those still alive from before."""
    processes = _processes()
    for pgid in groups:
        before = remembered.get(pgid, [])
        alive = {(p, t) for p, t in before if p in processes and processes[p][2] == t}
        remembered[pgid] = sorted(alive | set(strays(pgid, processes)))


def kill_all() -> None:
    for pgid in sorted(groups):
        kill_tree(pgid)
        kill_strays(remembered.pop(pgid, []))
    groups.clear()


def on_term(signum: int, frame: FrameType | None) -> None:
    kill_all()
    os._exit(0)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    fd, pending = sys.stdin.fileno(), b""
    while True:
        ready, _, _ = select.select([fd], [], [], LOOK_EVERY_S if groups else None)
        if not ready:
            look()
            continue
        data = os.read(fd, 4096)
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        for raw in lines:
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
                remembered.pop(pgid, None)
    kill_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
