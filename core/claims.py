"""One listener per room: a claim held, through an ``flock``, for the life of the listener.

Two listeners in one room would both answer every utterance: the reply plays twice, the turn
is stored twice and a real agent acts twice. Whatever else differs between them (control
socket, runtime directory, configuration), they share the room's session store, so the claim
lives there: ``.listener-<room>.lock``, apart from the per-turn ``.room-<room>.lock`` that
``ask`` shares with a listener. The kernel drops an ``flock`` when its holder dies, even by
SIGKILL, so a claim never goes stale; the file itself stays, and records the holder's pid for
the error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from core.errors import RoomClaimed, StoreError
from core.paths import validate_room_id


def claim_file(root: Path, room_id: str) -> Path:
    # ".listener-" can never be the start of a room lock's name (".room-"), whatever the id.
    return root / f".listener-{validate_room_id(room_id)}.lock"


class RoomClaim:
    """Claims ``room_id`` in the store at ``root`` on creation; raises :class:`RoomClaimed` if
    another listener (in any process, this one included) holds it. Release with
    :meth:`release` or by leaving a ``with`` block."""

    def __init__(self, root: Path, room_id: str) -> None:
        self.room_id = room_id
        self.path = claim_file(root, room_id)
        try:
            # CLOEXEC: an agent must never inherit the claim and keep the room after we exit.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise StoreError(f"cannot claim room {room_id!r} in {root}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RoomClaimed(
                f"room {room_id!r} is already being answered by another listener{holder}. "
                "Stop it first (e.g. systemctl --user stop voice-assistant), or listen in "
                "another room with --room."
            ) from None
        except OSError as e:
            os.close(fd)
            raise StoreError(f"cannot claim room {room_id!r} in {root}: {e.strerror}") from None
        with contextlib.suppress(OSError):  # the pid is only for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RoomClaim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
