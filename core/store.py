"""Conversation sessions on disk: one JSON file each, plus ``_index.json`` listing them.

Guarantees, and how:

- Atomic, crash-safe writes: a unique temporary file in the same directory, fsync'd, then
  ``os.replace``, then the directory is fsync'd. Temporaries left by a killed process are swept
  when a store is opened (under the lock, so a live writer's temporary is never touched).
- A save killed between its session's file and its index entry is finished by the next holder
  of the lock, in any process: while a save is under way, the lock file holds its session's
  id, so whoever finds an id there patches that entry from the file. (Not synced: a power cut
  can lose the id. A session the index does not list at all is still found when a store is
  opened.)
- Threads and processes: every write holds a ``threading.Lock`` and an ``fcntl.flock`` on the
  sidecar ``.lock`` file, so two assistant processes may share one store and lose nothing.
- Saving patches the session's index entry in place (no rescan of the session files). A missing
  or corrupt index is rebuilt from the files; that rebuild takes the lock itself, so it always
  runs after the saver has released it and nothing deadlocks.
- Index entries whose file is gone are dropped when the index is written and when it is read.
  To do that without listing thousands of files per save, the directory's listing is cached
  while its mtime is unchanged; that is only trusted where every change moves the mtime
  (fine-grained timestamps, probed when the store opens), else the directory is listed anew.
- The store claims its directory only if it is new, empty or marked as a store, and only ever
  touches names of its own (``core.store_dir``, ``core.paths.is_own_name``).
- A damaged or unreadable session file, or anything else where one of its files should be (a
  directory, a FIFO, a symlink), is moved aside to ``<name>.corrupt-<time>`` with a warning; the
  caller carries on, and no other session is affected.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from core.errors import SessionFormatError, StoreError
from core.index import Index
from core.paths import (
    INDEX_NAME,
    LOCK_NAME,
    PROBE_NAME,
    TMP_SUFFIX,
    is_own_temporary,
    is_valid_session_id,
    room_lock_name,
    session_file,
    session_id_of,
    validate_room_id,
)
from core.session import IndexEntry, Session
from core.store_dir import claim, flocked, flocked_file, move_aside

log = logging.getLogger(__name__)

ROOM_POLL_S = 0.1  # a room's lock is tried this often while a stoppable turn waits for it

# What replacing a file fails with when a directory stands where the file should be.
_BLOCKED_BY_DIRECTORY = frozenset({errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST})

_FileSig = tuple[int, int, int]

# The lock file holds at most this much: the ids of the sessions whose index entries may be
# behind their files (one line each).
_MARKS_MAX_BYTES = 65536


def _file_sig(path: Path) -> _FileSig | None:
    # os.replace gives every write a new inode, so (inode, mtime, size) spots any rewrite.
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class SessionStore:
    """A directory of session files with an incrementally maintained index."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self._index_path = self.root / INDEX_NAME
        self._lock_path = self.root / LOCK_NAME
        self._thread_lock = threading.Lock()
        # Cache of the index file, valid while its signature is unchanged.
        self._index: Index | None = None
        self._index_sig: _FileSig | None = None
        self._unreadable_sig: _FileSig | None = None  # a damaged index already warned about
        # Cache of the directory's file names, valid while the directory is unchanged; it
        # lets a save drop ghost entries without listing thousands of files every time.
        self._names: set[str] = set()
        self._dir_sig: _FileSig | None = None
        self._index_clean = False  # the cached index was checked against the cached names
        self._trust_dir_sig = False
        self._lock_fd: int | None = None  # the store's lock file, while this store holds it
        self._behind: list[str] = []  # ids marked there that could not be finished yet
        with _store_errors(
            f"open the session store {self.root} (set session.store_dir to a writable directory)"
        ):
            claim(self.root)  # raises NotAStoreError for a directory that is not a store
            with self._locked():
                self._tidy_after_crashes()
                self._trust_dir_sig = _dir_times_are_fine(self.root)

    # -- public API ---------------------------------------------------------------------

    def save(self, session: Session) -> None:
        """Write ``session`` and patch its index entry; safe against crashes and other writers."""
        data = session.to_json()
        entry = session.compact()
        path = session_file(self.root, session.session_id)
        with _store_errors(f"save session {session.session_id} in {self.root}"):
            with self._locked():
                try:
                    names = self._listing()
                    self._mark([*self._behind, session.session_id])
                    self._write_atomic(path, data)
                    names.add(path.name)
                    self._dir_sig = _file_sig(self.root)  # our own change is now in `names`
                    index, _ = self._checked_index()
                    if index is not None:
                        index.upsert(entry)
                        self._write_index(index)
                        self._fsync_dir()
                        # (Sessions finishing could not read stay marked.)
                        self._mark([m for m in self._behind if m != session.session_id])
                        return
                except BaseException:
                    self._forget_caches()  # they may be ahead of what reached the disk
                    raise
            # The index was missing or corrupt: rebuild it now that the lock is released.
            self.rebuild_index()

    def load(self, session_id: str) -> Session | None:
        """The session, or ``None`` if there is none (a corrupt file is moved aside first)."""
        path = session_file(self.root, session_id)
        with _store_errors(f"read session {session_id}"):
            try:
                return _decode(session_id, _read_file(path))
            except FileNotFoundError:
                return None
            except SessionFormatError as e:
                return self._quarantine(path, e)

    def latest_for_room(self, room_id: str) -> IndexEntry | None:
        """The newest index entry of ``room_id`` (closed or not), or ``None``."""
        validate_room_id(room_id)
        with _store_errors(f"read the session index in {self.root}"):
            with self._thread_lock:
                index, _ = self._checked_index()
                if index is not None:
                    return index.latest_for_room(room_id)
            self.rebuild_index()
            with self._thread_lock:
                index, _ = self._checked_index()
                return None if index is None else index.latest_for_room(room_id)

    def rebuild_index(self) -> builtins.list[IndexEntry]:
        """Scan every session file and rewrite ``_index.json``; returns the entries."""
        with _store_errors(f"rebuild the session index in {self.root}"), self._locked():
            index = Index(self._scan_locked())
            self._write_index(index)
            self._fsync_dir()
            self._mark([])  # every entry is as its file says now
            self._names = set(os.listdir(self.root))
            self._dir_sig = _file_sig(self.root)
            self._index_clean = True
            log.info("rebuilt the session index of %s: %d sessions", self.root, len(index))
            return index.entries()

    def list(self) -> builtins.list[IndexEntry]:
        """Compact entries, newest first, from the index (never listing a vanished session)."""
        with _store_errors(f"read the session index in {self.root}"):
            with self._thread_lock:
                index, pruned = self._checked_index()
                if index is not None and not pruned:
                    return index.entries()
            if index is not None:
                # Ghost entries were dropped from the cached copy: write that to disk too.
                with self._locked():
                    index, _ = self._checked_index()
                    if index is not None:
                        self._write_index(index)
                        self._fsync_dir()
                        return index.entries()
            return self.rebuild_index()

    @contextlib.contextmanager
    def lock_room(
        self, room_id: str, *, wait: bool = True, until: threading.Event | None = None
    ) -> Iterator[bool]:
        """Exclusive use of ``room_id`` across the processes sharing this store (``ask`` while
        ``listen`` runs); yields whether it is held: always, when ``wait``, unless ``until``
        is set first (the wait then tries every ROOM_POLL_S, as a blocking flock could wait
        minutes for another process's turn, and nothing could stop it). A broken lock file
        is moved aside; one that cannot be made (a read-only or full disk) is stood in for by
        one outside the store (``core.store_dir``); failing that, the turn goes on without it,
        with a warning, rather than stop the room for good."""
        path = self.root / room_lock_name(room_id)
        with contextlib.ExitStack() as stack:
            with _store_errors(f"lock room {room_id} in {self.root}"):
                held = stack.enter_context(flocked(path, wait=wait and until is None))
                while not held and wait and until is not None and not until.wait(ROOM_POLL_S):
                    stack.close()  # the try's descriptor
                    held = stack.enter_context(flocked(path, wait=False))
            yield held  # (outside _store_errors: the turn's own errors are not the lock's)

    # -- index cache ----------------------------------------------------------------------

    def _checked_index(self) -> tuple[Index | None, bool]:
        """(index without ghost entries or None if missing/corrupt, whether any were dropped).

        The caller holds ``_thread_lock``.
        """
        index = self._current_index()
        if index is None:
            return None, False
        names = self._listing()
        if self._index_clean:
            return index, False
        gone = index.prune(lambda sid: f"{sid}.json" in names)
        self._index_clean = True
        if gone:
            log.info("dropped %d index entries whose session file is gone", len(gone))
        return index, bool(gone)

    def _current_index(self) -> Index | None:
        sig = _file_sig(self._index_path)
        if sig is None:
            return None
        if self._index is not None and sig == self._index_sig:
            return self._index
        try:
            index = Index.parse(self._read_index_bytes())
        except FileNotFoundError:
            return None
        except (OSError, SessionFormatError) as e:
            if sig != self._unreadable_sig:  # once per damaged file, not at each look
                path = self._index_path
                log.warning("session index %s is unreadable (%s); rebuilding it", path, e)
                self._unreadable_sig = sig
            return None
        self._index, self._index_sig, self._index_clean = index, sig, False
        return index

    def _forget_caches(self) -> None:
        self._index = self._index_sig = self._dir_sig = None
        self._index_clean = False

    def _read_index_bytes(self) -> bytes:
        return _read_file(self._index_path)

    def _listing(self) -> set[str]:
        sig = _file_sig(self.root)
        if sig != self._dir_sig or self._dir_sig is None or not self._trust_dir_sig:
            # Someone else changed the directory: list it again and re-check the index.
            self._names = set(os.listdir(self.root))
            self._dir_sig = sig
            self._index_clean = False
        return self._names

    def _write_index(self, index: Index) -> None:
        self._write_atomic(self._index_path, *index.json_chunks())
        self._index, self._index_sig = index, _file_sig(self._index_path)
        if self._dir_sig is not None:
            self._dir_sig = _file_sig(self.root)  # replacing the index changes no session name

    def _scan_locked(self) -> Iterator[IndexEntry]:
        for name in sorted(os.listdir(self.root)):
            session_id = session_id_of(name)
            if session_id is None:
                continue  # the index, a lock, or not ours: left alone
            path = self.root / name
            try:
                yield _decode(session_id, _read_file(path)).compact()
            except FileNotFoundError:
                continue
            except SessionFormatError as e:
                self._move_aside_locked(path, e)

    # -- damaged files ----------------------------------------------------------------------

    def _quarantine(self, path: Path, error: SessionFormatError) -> Session | None:
        session_id = path.name.removesuffix(".json")
        with self._locked():
            # Re-check under the lock: another writer may have replaced the file meanwhile.
            try:
                return _decode(session_id, _read_file(path))
            except FileNotFoundError:
                return None
            except SessionFormatError as e:
                error = e
            self._move_aside_locked(path, error)
            index = self._current_index()
            if index is not None and index.remove(session_id):
                self._write_index(index)
            self._fsync_dir()
        return None

    def _move_aside_locked(self, path: Path, error: Exception) -> None:
        if move_aside(path, error):
            self._names.discard(path.name)
            if self._dir_sig is not None:
                self._dir_sig = _file_sig(self.root)

    # -- files and locks --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # (A lock file that cannot be used at all is skipped with a warning.)
        with self._thread_lock, flocked_file(self._lock_path) as (_, fd):
            # Notes are kept only in the store's own lock file, opened for writing (it is
            # opened read-only on a read-only store, and a stand-in elsewhere is too).
            self._lock_fd = fd if fd is not None and _is_writable(fd) else None
            try:
                self._finish_interrupted_saves()
                yield
            finally:
                self._lock_fd = None

    def _mark(self, session_ids: builtins.list[str]) -> None:
        """Say in the lock file which sessions' entries may be behind their files: the one
        being saved, and any whose save could not be finished. Not synced: it is for a
        killed process, whose writes the kernel still makes."""
        self._behind = list(dict.fromkeys(session_ids))
        if self._lock_fd is None:
            return
        data = "\n".join(self._behind).encode()
        if data:
            os.pwrite(self._lock_fd, data, 0)
        os.ftruncate(self._lock_fd, len(data))

    def _finish_interrupted_saves(self) -> None:
        """A holder of the lock died saving (the lock file still names sessions): patch
        those sessions' index entries from their files, which may hold a turn the entries do
        not. The caller holds the lock. Whatever cannot be finished stays marked for the
        next holder (``_behind``, which the next save marks again with its own)."""
        self._behind = []
        if self._lock_fd is None:
            return
        try:
            data = os.pread(self._lock_fd, _MARKS_MAX_BYTES, 0)
        except OSError as e:
            # Unread, the marks must not be overwritten either: no marks in this hold.
            self._lock_fd = None
            self._warn_unfinished(e)
            return
        if not data:
            return
        marks = data.decode("ascii", "replace").split("\n")
        self._behind = [m for m in marks if is_valid_session_id(m)]
        try:
            index, changed = self._checked_index()
            if index is None:
                return  # rebuilt from the files when first used, which clears the marks
            unread = []
            for session_id in self._behind:
                try:
                    changed |= self._catch_up(index, session_id)
                except OSError:
                    unread.append(session_id)  # (EIO, too many open files): next time
            if changed:
                self._write_index(index)
                self._fsync_dir()
            self._mark(unread)
        except OSError as e:
            self._forget_caches()  # the cached index may hold patches the file does not
            self._warn_unfinished(e)

    def _warn_unfinished(self, error: OSError) -> None:
        log.warning(
            "cannot finish an interrupted save in %s (tried again at the next one): %s",
            self.root,
            error.strerror or error,
        )

    def _catch_up(self, index: Index, session_id: str) -> bool:
        """Patch ``session_id``'s entry from its file; whether that changed the index."""
        path = session_file(self.root, session_id)
        try:
            entry = _decode(session_id, _read_file(path)).compact()
        except FileNotFoundError:
            return False  # killed before its file was replaced: the entry still holds
        except SessionFormatError as e:
            self._move_aside_locked(path, e)
            return index.remove(session_id)
        if index.get(session_id) == entry:
            return False
        index.upsert(entry)
        log.info("indexed session %s, whose save was interrupted", session_id)
        return True

    def _write_atomic(self, path: Path, *chunks: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.writelines(chunks)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.replace(tmp, path)
            except OSError as e:
                # A directory where the file belongs: set it aside (never delete it), retry.
                if e.errno not in _BLOCKED_BY_DIRECTORY or not move_aside(path, e.strerror):
                    raise
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _fsync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _tidy_after_crashes(self) -> None:
        """What a process killed mid-save left: its temporary file, or a session file written
        before its index entry (a new conversation's first words). The caller holds the lock:
        every writer holds it from its temporary to its index entry, so what we see is stale."""
        names = os.listdir(self.root)
        # Only the store's own temporaries: a ".build.tmp" is someone else's.
        stale = [n for n in names if is_own_temporary(n)]
        for name in stale:
            with contextlib.suppress(OSError):  # (a read-only store keeps them: harmless)
                os.unlink(self.root / name)
        if stale:
            log.info("removed %d temporary files left by an interrupted save", len(stale))
        index = self._current_index()
        if index is None:
            return  # rebuilt from the files when first used
        unlisted = [sid for n in names if (sid := session_id_of(n)) and sid not in index]
        found = 0
        for session_id in sorted(unlisted):
            path = session_file(self.root, session_id)
            try:
                index.upsert(_decode(session_id, _read_file(path)).compact())
                found += 1
            except FileNotFoundError:
                continue
            except SessionFormatError as e:
                self._move_aside_locked(path, e)
        if found:
            log.info("added %d sessions an interrupted save left out of the index", found)
            try:
                self._write_index(index)
                self._fsync_dir()
            except OSError as e:  # read-only: they are listed from memory (the cached index)
                log.warning("cannot write the session index of %s: %s", self.root, e.strerror)


@contextlib.contextmanager
def _store_errors(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise StoreError(f"cannot {action}: {e.strerror or e}") from None


def _read_file(path: Path) -> bytes:
    """Read one of the store's regular files, never following a symlink out of the store nor
    blocking on a FIFO. An entry that can never be read (a directory, a FIFO, a symlink, a
    file without read permission) is reported as :class:`SessionFormatError`, to be set aside;
    a passing failure (EIO, too many open files) stays an ``OSError``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SessionFormatError(f"{path.name} is a symbolic link") from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.ENXIO):
            raise SessionFormatError(f"{path.name} cannot be read: {e.strerror}") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses directories
            raise SessionFormatError(f"{path.name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _is_writable(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY


def _decode(session_id: str, data: bytes) -> Session:
    session = Session.from_json(data)
    if session.session_id != session_id:
        raise SessionFormatError(f"file of {session_id} holds session {session.session_id}")
    return session


def _dir_times_are_fine(root: Path) -> bool:
    """Whether every change to ``root`` moves its mtime (fine-grained, "multigrain" timestamps).

    With coarse timestamps (older kernels) two changes within one clock tick share an mtime, so
    an unchanged mtime proves nothing and the directory must be listed every time.
    """
    probe = root / PROBE_NAME  # swept like any temporary if left behind
    for _ in range(3):
        try:
            os.close(os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except OSError as e:  # read-only (a disk the kernel remounted): the store can be read
            log.warning("the session store %s cannot be written: %s", root, e.strerror)
            return False
        created = os.stat(root).st_mtime_ns
        os.unlink(probe)
        if os.stat(root).st_mtime_ns == created:
            return False
    return True
