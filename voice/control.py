"""The local control socket: any script can drive push-to-talk.

A Unix stream socket owned by the user (mode 0600, in a 0700 directory we create), never
TCP. One command per connection, newline-terminated; one reply line::

    $ printf 'toggle\\n' | socat - UNIX-CONNECT:$XDG_RUNTIME_DIR/voice-assistant/ptt.sock
    ok toggle
    $ printf 'status\\n' | socat - UNIX-CONNECT:$XDG_RUNTIME_DIR/voice-assistant/ptt.sock
    ok listening

Commands: ``press``, ``release``, ``toggle`` (the push-to-talk key), ``status``, ``stop``
(interrupt the agent and the reply), ``allow``, ``deny``, ``always`` (answer the agent's
permission question). Replies start with ``ok`` or ``error:`` (``error: busy`` when too many
clients are connected at once).

Each client is served on its own short-lived thread, up to :data:`MAX_CLIENTS` at once, so a
client that connects and says nothing delays nobody else; the handler itself runs under a lock,
one command at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from core.errors import ConfigError, DeviceError
from voice.config import SOCKET_PATH_MAX_BYTES
from voice.hotkeys import WakePipe

log = logging.getLogger(__name__)

COMMANDS = ("press", "release", "toggle", "status", "stop", "allow", "deny", "always")
MAX_COMMAND_BYTES = 64  # longer input is refused unread: no command comes close
MAX_CLIENTS = 16  # clients served at once; more get "error: busy"
_BACKLOG = 128  # connections waiting to be accepted: a burst is answered, not refused
_CLIENT_TIMEOUT_S = 1.0  # a client that connects and says nothing is dropped after this
_JOIN_TIMEOUT_S = 2.0
_RUN_USER = Path("/run/user")


def default_socket_path(env: Mapping[str, str] = os.environ, run_user: Path = _RUN_USER) -> Path:
    """``$XDG_RUNTIME_DIR/voice-assistant/ptt.sock``. Without that variable (``su``, some SSH
    sessions, cron) the same place through ``/run/user/<uid>`` when it is the user's own
    private directory, so ``ptt`` finds the service's socket; else under ``~/.local/state``.
    Each is per user; the ``voice-assistant`` directory is created 0700."""
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(runtime):
        runtime = _own_private_dir(run_user / str(os.getuid()))
    base = Path(runtime) if runtime else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "voice-assistant" / "ptt.sock"


def _own_private_dir(path: Path) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return ""
    private = stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o077
    return str(path) if private and info.st_uid == os.getuid() else ""


def socket_path(configured: str = "", env: Mapping[str, str] = os.environ) -> Path:
    """``input.control_socket`` resolved: "" is :func:`default_socket_path`, ``~`` expands."""
    return Path(configured).expanduser() if configured else default_socket_path(env)


def _check_length(path: Path) -> None:
    # input.control_socket is checked with the config; a default path comes from the environment.
    if len(os.fsencode(path)) > SOCKET_PATH_MAX_BYTES:
        raise ConfigError(
            f"control socket path {path} is longer than {SOCKET_PATH_MAX_BYTES} bytes, the limit "
            "for a Unix socket; set input.control_socket to a shorter path"
        )


def _check_directory(directory: Path) -> None:
    """Another user who can write to the socket's directory could replace the socket."""
    info = os.stat(directory)
    shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX
    if info.st_uid not in (os.getuid(), 0) or shared:
        raise DeviceError(
            f"the control socket's directory {directory} is not private (other users can "
            "write to it); set input.control_socket to a path in a directory of your own"
        )


class ControlServer:
    """Serves the line protocol on ``path`` from a daemon thread; ``handler`` answers.

    ``handler`` receives one of :data:`COMMANDS` (others are refused before it is called)
    and returns the reply line. Calls are serialized, but not on one fixed thread; it should
    be quick.
    """

    def __init__(
        self, path: Path, handler: Callable[[str], str], *, max_clients: int = MAX_CLIENTS
    ) -> None:
        _check_length(path)
        self.path = path
        self._handler = handler
        self._handler_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_clients)
        self._sock: socket.socket | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self._wake: WakePipe | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        _make_private_dir(self.path.parent)
        _check_directory(self.path.parent)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
        except OSError as e:
            sock.close()
            raise DeviceError(f"cannot create the control socket {self.path}: {e}") from None
        # The directory is 0700 already; 0600 keeps the file private even in a shared one.
        os.chmod(self.path, 0o600)
        info = os.stat(self.path)
        self._identity = (info.st_dev, info.st_ino)
        sock.listen(_BACKLOG)
        self._sock = sock
        self._wake = WakePipe()
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()
        log.info("control socket listening on %s", self.path)

    def close(self) -> None:
        if self._wake is not None:
            self._wake.wake()
            if self._thread is not None:
                self._thread.join(_JOIN_TIMEOUT_S)
                self._thread = None
            self._wake.close()
            self._wake = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._unlink_if_ours()

    def _remove_stale(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise DeviceError(
                f"{self.path} exists and is not a socket; remove it or set input.control_socket"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(_CLIENT_TIMEOUT_S)
        try:
            probe.connect(str(self.path))
        except ConnectionRefusedError:  # nobody listens: left behind by a crash
            log.info("removing stale control socket %s", self.path)
            self.path.unlink(missing_ok=True)
            return
        except OSError as e:
            raise DeviceError(
                f"cannot check the existing control socket {self.path}: {e}"
            ) from None
        finally:
            probe.close()
        raise DeviceError(
            f"another voice assistant is already listening on {self.path}; stop it first "
            "(systemctl --user stop voice-assistant) or set input.control_socket to another path"
        )

    def _unlink_if_ours(self) -> None:
        # A newer assistant may have replaced a socket we thought stale: never remove its file.
        if self._identity is None:
            return
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._identity:
            self.path.unlink(missing_ok=True)
        self._identity = None

    def _serve(self) -> None:
        assert self._sock is not None and self._wake is not None
        while True:
            ready, _, _ = select.select([self._sock, self._wake.fd], [], [])
            if self._wake.fd in ready:
                return
            try:
                conn, _ = self._sock.accept()
            except OSError as e:
                log.warning("control socket accept failed: %s", e)
                continue
            if not self._slots.acquire(blocking=False):
                with conn, contextlib.suppress(OSError):
                    conn.settimeout(_CLIENT_TIMEOUT_S)
                    conn.sendall(b"error: busy\n")
                    conn.shutdown(socket.SHUT_WR)
                    _discard_pending(conn)
                continue
            try:
                threading.Thread(
                    target=self._client, args=(conn,), name="control-client", daemon=True
                ).start()
            except RuntimeError:  # cannot start a thread (resources): refuse, keep serving
                self._slots.release()
                conn.close()

    def _client(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._answer(conn)
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(_CLIENT_TIMEOUT_S)
        try:
            if not _same_user(conn):
                reply = "error: permission denied"
            else:
                reply = self._reply(_read_line(conn))
            _discard_pending(conn)
            conn.sendall(reply.encode() + b"\n")
        except OSError as e:  # includes TimeoutError: a client that said nothing in time
            log.debug("control client dropped: %s", e)

    def _reply(self, line: bytes | None) -> str:
        if line is None:
            return f"error: command too long (at most {MAX_COMMAND_BYTES} bytes)"
        command = line.decode("ascii", "replace").strip()
        if command not in COMMANDS:
            return f"error: unknown command {command[:32]!r} (expected {', '.join(COMMANDS)})"
        try:
            with self._handler_lock:
                reply = self._handler(command)
        except Exception as e:
            log.exception("control command %s failed", command)
            return f"error: {command} failed: {e}"
        reply = " ".join(reply.split())  # one line, whatever the handler returned
        if command != "status":  # a status bar may poll it
            log.info("control: %s -> %s", command, reply)
        return reply


def _read_line(conn: socket.socket) -> bytes | None:
    """The first line (or everything until the client shuts down); None when too long."""
    data = b""
    while b"\n" not in data:
        if len(data) > MAX_COMMAND_BYTES:
            return None
        chunk = conn.recv(MAX_COMMAND_BYTES + 1)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\n", 1)[0]
    return None if len(line) > MAX_COMMAND_BYTES else line


def _discard_pending(conn: socket.socket, limit: int = 1 << 16) -> None:
    # Closing a Unix socket with unread input resets the connection, and the client would
    # lose our reply: drop whatever it has already sent beyond the command line.
    timeout = conn.gettimeout()
    conn.setblocking(False)
    try:
        dropped = 0
        while dropped < limit and (chunk := conn.recv(4096)):
            dropped += len(chunk)
    except BlockingIOError:
        pass  # nothing more has arrived
    finally:
        conn.settimeout(timeout)


def _same_user(conn: socket.socket) -> bool:
    # File permissions already keep others out; the peer's uid is checked as well in case
    # the socket was put in a shared directory.
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (os.getuid(), 0)


def _make_private_dir(directory: Path) -> None:
    """Create missing directories as 0700; existing ones are left as the user set them."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o700)  # explicit: mkdir's mode is filtered by the umask


def send_command(path: Path, command: str, *, timeout_s: float = 2.0) -> str:
    """Send one command to a running assistant; its reply line (``ok ...`` or ``error: ...``)."""
    if not command or "\n" in command or len(command) > MAX_COMMAND_BYTES:
        raise ConfigError(f"a control command is one short line, e.g. {', '.join(COMMANDS)}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            _connect(sock, path, timeout_s)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DeviceError(
                f"nothing is listening on {path}: is `voice-assistant listen` running?"
            ) from None
        except PermissionError:
            raise DeviceError(
                f"permission denied on {path}: it belongs to another user; run this as the user "
                "who runs the assistant"
            ) from None
        except OSError as e:  # a socket that is not a listener's, and the like
            raise DeviceError(f"cannot connect to the assistant on {path}: {e}") from None
        # It may answer before reading (``error: busy``) and close: then read that answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(command.encode() + b"\n")
        try:
            reply = _read_reply(sock)
        except TimeoutError:
            raise DeviceError(
                f"the assistant on {path} gave no reply within {timeout_s} s"
            ) from None
        except OSError as e:
            raise DeviceError(f"the assistant on {path} dropped the connection: {e}") from None
    if not reply:
        raise DeviceError(f"the assistant on {path} closed the connection without a reply")
    return reply


def _connect(sock: socket.socket, path: Path, timeout_s: float) -> None:
    # A Unix socket whose backlog is full refuses at once (EAGAIN) rather than waiting, even
    # with a timeout set: wait for room as a TCP connect would.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            sock.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"the assistant on {path} is busy: too many callers at once; try again"
                ) from None
            time.sleep(0.02)


def _read_reply(sock: socket.socket) -> str:
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
