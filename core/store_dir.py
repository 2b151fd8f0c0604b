"""The store's directory: which one it may claim, and how it sets a bad entry aside.

``session.store_dir`` is a path from the config, and nothing stops it naming a project or a
home directory. So the store claims a directory only when it is new (created 0700), empty, or
already marked as a store (:data:`MARKER_NAME`); a store written before the marker existed is
recognised by holding nothing but the store's own names. Anything else is refused with
:class:`NotAStoreError` before a single file in it is renamed, deleted or re-moded.

Inside a claimed directory, an entry that blocks the store (a directory where a session file
or a lock should be, a file nobody may read) is moved aside to ``<name>.corrupt-<time>`` with a
warning, never deleted, so one bad entry cannot wedge a room or the store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from core.errors import NotAStoreError
from core.paths import ASIDE_INFIX, LOCK_NAME, MARKER_NAME, is_own_name

log = logging.getLogger(__name__)

DIR_MODE = 0o700
MARKER_TEXT = b"voice-assistant session store: the assistant keeps conversations here.\n"
# What opening a lock file fails with when the entry itself is wrong (not a passing problem).
BAD_ENTRY_ERRNOS = frozenset(
    {errno.EISDIR, errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENXIO, errno.ENOTDIR}
)


def claim(root: Path) -> None:
    """Make ``root`` the store's directory, or raise :class:`NotAStoreError` untouched."""
    try:
        root.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        _claim_existing(root)
        return
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode != DIR_MODE:  # mkdir's mode passed through the umask
        os.chmod(root, DIR_MODE)
    _write_marker(root)
    log.info("created the session store %s", root)


def _claim_existing(root: Path) -> None:
    if not root.is_dir():
        raise NotAStoreError(
            f"session.store_dir {root} exists and is not a directory; "
            "set it to a new or empty directory"
        )
    names = sorted(os.listdir(root))
    # One listing decides: a process creating the store now may add its marker at any moment.
    if MARKER_NAME in names and _is_marked(root):
        return
    if not names:
        _write_marker(root)
        log.info("claimed the empty directory %s as the session store", root)
        _warn_if_shared(root)
        return
    foreign = [name for name in names if not is_own_name(name, uuids_only=True)]
    if not foreign and LOCK_NAME in names:
        _write_marker(root)
        log.info("adopted %s, a session store written by an earlier version", root)
        return
    shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    what = f"files the assistant did not write ({shown})" if foreign else "no store lock file"
    raise NotAStoreError(
        f"session.store_dir {root} is not a session store: it already holds {what}. "
        "The assistant will not touch it; set session.store_dir to a new or empty directory "
        f"(or, if it really is a session store, create an empty file {MARKER_NAME} in it)"
    )


def _is_marked(root: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(root / MARKER_NAME).st_mode)
    except FileNotFoundError:
        return False


def _write_marker(root: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(root / MARKER_NAME, flags, 0o600)
    except FileExistsError:
        return  # another process claimed it at the same moment
    with os.fdopen(fd, "wb") as f:
        f.write(MARKER_TEXT)


def _warn_if_shared(root: Path) -> None:
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & 0o077:
        # Not changed: the user made it. The files themselves are 0600 either way.
        log.warning(
            "the session store %s is open to other users (mode %o): they can see which "
            "sessions exist; chmod 700 it to keep that private",
            root,
            mode,
        )


def move_aside(path: Path, why: object) -> bool:
    """Rename ``path`` (one of the store's own entries) to ``<name>.corrupt-<time>``.

    Returns whether it moved; a failure is logged, and the caller skips the entry instead.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 1_000_000_000:09d}"
    target = path.with_name(f"{path.name}{ASIDE_INFIX}{stamp}")
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return True  # someone else moved it first
    except OSError as e:
        log.warning("%s is unusable (%s) and cannot be moved aside: %s", path, why, e.strerror)
        return False
    log.warning("%s is unusable (%s); moved it to %s", path, why, target.name)
    return True


def open_lock_file(path: Path) -> int | None:
    """A descriptor of the lock file ``path`` (created if missing), or ``None`` if unusable.

    On a read-only store the descriptor is opened for reading only (``flock`` needs no more):
    the caller must not write to it. A lock file that is a directory, unreadable, a symlink or
    not a regular file (a FIFO: the store keeps notes in its lock) is moved aside and made
    anew. If even that fails, or it cannot be created (disk full, read-only), a lock kept
    outside the store stands in (:func:`_lock_elsewhere`); failing that too, the caller goes
    on without this lock, with a warning: a turn without it beats a room stopped for good.
    """
    for attempt in (1, 2):
        try:
            fd = _open_lock(path)
        except OSError as e:
            if attempt == 1 and e.errno in BAD_ENTRY_ERRNOS and move_aside(path, e.strerror):
                continue
            return _lock_elsewhere(path, e.strerror or str(e))
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
        if attempt == 1 and move_aside(path, "not a regular file"):
            continue
        return _lock_elsewhere(path, "not a regular file")
    return None


_LOCK_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | _LOCK_FLAGS, 0o600)
    except OSError as e:
        if e.errno != errno.EROFS:
            raise
    try:  # (ext4 remounts a disk read-only on errors: processes must still take turns)
        return os.open(path, os.O_RDONLY | _LOCK_FLAGS)
    except FileNotFoundError:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS)) from None


def _lock_elsewhere(path: Path, why: str) -> int | None:
    """A read-only descriptor of a stand-in for the lock ``path``, which the store cannot
    hold: in the user's runtime directory (else the temporary one), named after the lock's
    real path, so every process sharing the store finds the same one. Best effort: one that
    sees a different runtime directory does not, which is no worse than no lock at all."""
    where = _runtime_dir()
    key = hashlib.sha256(os.fsencode(os.path.realpath(path.parent) + "/" + path.name))
    spare = where / f"voice-assistant-{key.hexdigest()[:32]}.lock"
    try:
        fd = os.open(spare, os.O_RDONLY | os.O_CREAT | _LOCK_FLAGS, 0o600)
    except OSError as e:
        log.warning(
            "going on without the lock %s (%s), nor in %s: %s", path, why, where, e.strerror
        )
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():  # another user's: not trusted
        os.close(fd)
        log.warning("going on without the lock %s (%s): %s is not ours", path, why, spare)
        return None
    log.info("cannot use the lock %s (%s); locking with %s instead", path, why, spare)
    return fd


def _runtime_dir(run_user: Path = Path("/run/user")) -> Path:
    """The user's runtime directory, found from the user id first: a service (no
    $XDG_RUNTIME_DIR, a private /tmp) and a login shell must find the same one."""
    mine = run_user / str(os.geteuid())
    with contextlib.suppress(OSError):
        if mine.is_dir() and mine.stat().st_uid == os.geteuid():
            return mine
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())


@contextlib.contextmanager
def flocked(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (released by the kernel if this process dies,
    so it never goes stale); yields ``False`` if ``wait`` is off and another holder has it."""
    with flocked_file(path, wait=wait) as (held, _):
        yield held


@contextlib.contextmanager
def flocked_file(path: Path, *, wait: bool = True) -> Iterator[tuple[bool, int | None]]:
    """:func:`flocked`, yielding also the lock file's descriptor while it is held (``None``
    when going on without the lock)."""
    fd = open_lock_file(path)
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False, None
                return
        yield True, fd
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
