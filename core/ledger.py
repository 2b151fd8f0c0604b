"""Which process group runs each room's agent, recorded in the store for the next assistant.

The lifeline (:mod:`core.lifeline`) kills an agent's group when the assistant dies, through
a reaper process. Should both die at once (an OOM kill, a ``kill -9`` of the whole group), the
agent's tools could run on and a restarted assistant would ``--resume`` the conversation while
the orphan still works on it. So each running agent is recorded in ``.agent-<room>.lock``:
its process group and the start time of its leader and of the assistant that started it. The
next claim of the room (or turn in it) stops a recorded group whose assistant is gone.

Start times (``/proc/PID/stat``) guard against recycled pids: a recorded pid that now belongs
to another process is never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from pathlib import Path

from core.paths import agent_record_name
from core.reaper import kill_tree, start_ticks
from core.store_dir import move_aside

log = logging.getLogger(__name__)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AgentLedger:
    """The agent records of one session store directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def record(self, room_id: str, pid: int) -> None:
        """``pid`` (a group leader) now runs ``room_id``'s agent for this process."""
        me = os.getpid()
        line = f"{pid} {start_ticks(pid) or 0} {me} {start_ticks(me) or 0}\n".encode()
        path = self.root / agent_record_name(room_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(path, flags, 0o600)
            except OSError as e:  # a symlink or a directory where the record goes: set aside
                if e.errno not in (errno.ELOOP, errno.EISDIR) or not move_aside(path, e.strerror):
                    raise
                fd = os.open(path, flags, 0o600)
        except OSError as e:  # still unusable: the lifeline covers the agent
            log.warning("cannot record the agent of room %s: %s", room_id, e.strerror)
            return
        try:
            # One short write at offset 0: a reader sees the old line, the new one, or a
            # mixture that does not parse (and is ignored), never a wrong pid it trusts.
            os.pwrite(fd, line.ljust(64), 0)
        except OSError as e:
            log.warning("cannot record the agent of room %s: %s", room_id, e.strerror)
        finally:
            os.close(fd)

    def clear(self, room_id: str, pid: int) -> None:
        """The agent ``pid`` of ``room_id`` has ended."""
        record = self._read(room_id)
        if record is not None and record[0] == pid:
            with contextlib.suppress(OSError):
                (self.root / agent_record_name(room_id)).unlink()

    def reap(self, room_id: str) -> bool:
        """Stop ``room_id``'s recorded agent if the assistant that started it is gone."""
        record = self._read(room_id)
        if record is None:
            return False
        pgid, leader_start, owner, owner_start = record
        if owner_start and start_ticks(owner) == owner_start:
            return False  # its assistant is alive: the agent is not an orphan
        leader_now = start_ticks(pgid)
        recycled = leader_now is not None and leader_now != leader_start
        if not recycled and _group_alive(pgid):
            log.warning(
                "room %s: stopping the agent (process group %d) left by an assistant that died",
                room_id,
                pgid,
            )
            kill_tree(pgid)
        with contextlib.suppress(OSError):
            (self.root / agent_record_name(room_id)).unlink()
        return not recycled

    def _read(self, room_id: str) -> tuple[int, int, int, int] | None:
        path = self.root / agent_record_name(room_id)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # a directory or a FIFO where the record should be: ignore it
            pgid, leader_start, owner, owner_start = (int(v) for v in os.read(fd, 128).split())
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return (pgid, leader_start, owner, owner_start) if pgid > 1 else None
