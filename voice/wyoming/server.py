"""The Wyoming server behind ``voice-assistant serve``: connections, limits, dispatch.

Each connection has two tasks: a reader that turns bytes into events (through the bounded
reader of :mod:`voice.wyoming.protocol`) into a short queue, and a dispatcher that answers
them one at a time. The blocking work (Whisper, Piper, an agent turn) runs on a thread pool,
so a long agent turn in one room never delays another room, a transcription or a ``describe``.

Bad input never costs more than its own connection: a malformed event, a header announcing
more than ``wyoming.max_payload_bytes``, an unknown event type, a client that sends nothing
for ``wyoming.client_timeout_s`` while nothing is running for it (or stops reading what it is
sent): each is logged with the client's address, answered with an ``error`` event where the
client can still read it, and that connection is closed. Beyond ``wyoming.max_connections``
new connections are told so (an ``error`` event, code ``busy``) and closed.

There is no authentication in the protocol: whoever reaches the socket can run the agent. The
server listens on loopback unless ``allow_remote`` is given (see :func:`check_address`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import math
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe

from core.errors import ConfigError, InvalidIdError, ProtocolError, WyomingError
from voice.config import WyomingConfig
from voice.wyoming.handlers import AsrRequest, HandleRequest, RoomTurns, TtsRequest
from voice.wyoming.programs import Programs
from voice.wyoming.protocol import (
    MAX_HEADER_BYTES,
    ClientGone,
    Limits,
    Stalled,
    encode,
    read_event,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
_QUEUED_EVENTS = 8  # read ahead of the dispatcher: enough for audio, little memory
_GOODBYE_S = 1.0  # how long an error event may take to reach a client being dropped
REFUSED_LOG_S = 10.0  # connections refused beyond max_connections: one log line this often


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(uri: str, *, allow_remote: bool) -> bool:
    """Whether ``uri`` reaches beyond this machine; refused unless ``allow_remote``."""
    parts = urlsplit(uri)
    if parts.scheme != "tcp" or is_loopback(parts.hostname or ""):
        return False
    if not allow_remote:
        raise ConfigError(
            f"{uri} is not a loopback address (of host names only localhost counts: use "
            "127.0.0.1 or ::1). Wyoming has no authentication: anyone who can "
            "reach this port could talk to your agent. To serve your network anyway, pass "
            "--allow-remote (or set wyoming.allow_remote = true), behind a firewall"
        )
    return True


class WyomingServer:
    """Serves ``programs`` on ``uri`` (``tcp://HOST:PORT``, port 0 picks one; ``unix://PATH``)."""

    def __init__(self, config: WyomingConfig, programs: Programs, *, uri: str | None = None):
        self.config = config
        self.programs = programs
        self.uri = uri or config.uri
        self.limits = Limits(max_payload_bytes=config.max_payload_bytes)
        # A connection has one blocking job at a time, and counts against max_connections
        # until that is done: only the brief store of a request kept for a departed client
        # (RoomTurns) can wait in the pool's queue.
        self.pool = ThreadPoolExecutor(config.max_connections, thread_name_prefix="wyoming")
        self.rooms = RoomTurns(max_kept=config.max_connections)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[Connection] = set()
        self._refused_logged_s = -math.inf  # when a refusal was last logged
        self._refused_since = 0  # refusals not logged since then
        self._refusing = 0  # refused clients being told so (bounded like the connections)
        self.address = self.uri
        # One model each: requests take turns on it (in parallel they would only share cores).
        self.stt_lock = threading.Lock()
        self.tts_lock = threading.Lock()

    async def bind(self) -> str:
        """Take the address and listen; returns it (with the real port). ``serve`` binds
        before its models load (on this event loop's thread, so nothing is accepted until
        they are), so a taken port fails at once, not after seconds and hundreds of
        megabytes; clients that connect meanwhile wait in the backlog."""
        try:
            return await self._bind()
        except OSError as e:
            hints = {
                errno.EADDRINUSE: "; something else serves there (another `serve`, or a "
                "Wyoming server): pick a free port with --uri or wyoming.uri",
                errno.ENOENT: "; the socket's folder must exist",
            }
            hint = hints.get(e.errno or 0, "")
            raise WyomingError(f"cannot serve on {self.uri}: {e.strerror or e}{hint}") from None

    async def start(self) -> str:
        """Bind (unless bound) and start accepting; returns the address served."""
        if self._server is None:
            await self.bind()
        log.info("serving Wyoming on %s: %s", self.address, ", ".join(self.programs.offered()))
        return self.address

    async def _bind(self) -> str:
        parts = urlsplit(self.uri)
        if parts.scheme == "unix":
            path = Path(parts.path)
            _remove_stale_socket(path)
            self._server = await asyncio.start_unix_server(
                self._accept, path=str(path), limit=MAX_HEADER_BYTES
            )
            os.chmod(path, 0o600)  # only this user may talk to the agent
            self.address = f"unix://{path}"
        else:
            self._server = await asyncio.start_server(
                self._accept, host=parts.hostname, port=parts.port, limit=MAX_HEADER_BYTES
            )
            host, port = self._server.sockets[0].getsockname()[:2]
            self.address = f"tcp://{_host(host)}:{port}"
        return self.address

    async def close(self) -> None:
        """Stop accepting, stop every connection (running turns are interrupted)."""
        if self._server is not None:
            self._server.close()
        tasks = [c.stop() for c in list(self._connections)]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()
        parts = urlsplit(self.uri)
        if parts.scheme == "unix":
            with contextlib.suppress(OSError):
                Path(parts.path).unlink()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def wait_for_jobs(self, timeout_s: float) -> bool:
        """After :meth:`close`: wait up to ``timeout_s`` for the jobs still running; whether
        they all ended."""
        joining = threading.Thread(target=self.pool.shutdown, name="wyoming-join", daemon=True)
        joining.start()
        joining.join(max(timeout_s, 0.0))
        return not joining.is_alive()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if self._open >= self.config.max_connections:
            await self._refuse(reader, writer, peer)
            return
        connection = Connection(self, reader, writer, peer)
        connection._task = asyncio.current_task()
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    @property
    def _open(self) -> int:
        """Connections not done: a client that went away still counts while its request runs
        (its audio held, its agent turn running). One whose request waits for its room stops
        counting as it goes: it holds only its words (:class:`RoomTurns`)."""
        return sum(not c.detached for c in self._connections)

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        """Tell the client why, then close. What it already sent is read first (briefly), as
        closing a socket with unread input resets it, and a reset can discard the error
        before the client reads it."""
        self._refused(peer)
        if self._refusing >= self.config.max_connections:  # a flood: no goodbyes, no sockets
            writer.close()
            return
        self._refusing += 1
        error = Error(
            text=f"this server is busy: {self.config.max_connections} connections are open or "
            "still being answered (wyoming.max_connections); try again later",
            code="busy",
        )
        try:
            if await _tell(writer, error):
                with contextlib.suppress(Exception):
                    writer.write_eof()
                    await asyncio.wait_for(reader.read(MAX_HEADER_BYTES), _GOODBYE_S)
        finally:
            self._refusing -= 1
            writer.close()

    def _refused(self, peer: str) -> None:
        """One line per REFUSED_LOG_S at most: a burst of connections is one line, not 400."""
        now = time.monotonic()
        if now - self._refused_logged_s < REFUSED_LOG_S:
            self._refused_since += 1
            return
        more = f" ({self._refused_since} more refused before it)" if self._refused_since else ""
        log.warning(
            "%s: refused, %d connections already open (wyoming.max_connections)%s",
            peer,
            self._open,
            more,
        )
        self._refused_logged_s, self._refused_since = now, 0

    async def run_blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)


class Connection:
    """One client: its reader task, its dispatcher, and the state of its current request."""

    def __init__(
        self,
        server: WyomingServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
    ) -> None:
        self.server = server
        self.peer = peer
        self._reader = reader
        self._writer = writer
        self._timeout_s = server.config.client_timeout_s
        self._events: asyncio.Queue[Event | BaseException | None] = asyncio.Queue(_QUEUED_EVENTS)
        self._busy = False
        self.gone = asyncio.Event()  # the client closed, broke the protocol or stalled
        self.broken = False  # it broke the protocol or stalled: it gets an error, no answer
        self.ended = False  # it sent its end of input (it may still read: see HandleRequest)
        self._deaf = False  # dropped while it read nothing: reset, not closed
        self._stopped = False  # the server stops: nothing more is sent to it
        # Its client left while its request waited for the room; only the words are kept
        # (RoomTurns), and it no longer counts against max_connections.
        self.detached = False
        self._task: asyncio.Task[None] | None = None
        self.asr = AsrRequest(self)
        self.tts = TtsRequest(self)
        self.handle = HandleRequest(self)

    # ---- life -------------------------------------------------------------------------------
    async def run(self) -> None:
        log.debug("%s: connected", self.peer)
        reading = asyncio.create_task(self._read_loop(), name=f"wyoming-read {self.peer}")
        try:
            while True:
                item = await self._events.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    await self._drop(item)
                    break
                self._busy = True
                try:
                    await self._dispatch(item)
                finally:
                    self._busy = False
        except (ProtocolError, InvalidIdError, Stalled) as e:
            await self._drop(e)
        except ClientGone as e:
            log.info("%s: %s", self.peer, e)
        except asyncio.CancelledError:
            log.debug("%s: stopped", self.peer)
        except Exception as e:  # an engine failed: say so to this client only, and close
            log.exception("%s: the request failed; closing the connection", self.peer)
            failure = Error(text=f"the server failed: {type(e).__name__}", code="server-error")
            await _tell(self._writer, failure)
        finally:
            self.gone.set()
            reading.cancel()
            await asyncio.wait({reading}, timeout=_GOODBYE_S)  # its buffered events go with it
            await self.handle.close()
            if self._deaf:
                self._reset()
            else:
                self._writer.close()
                try:
                    await asyncio.wait_for(self._writer.wait_closed(), _GOODBYE_S)
                except (Exception, asyncio.CancelledError):
                    self._reset()  # it does not read what is left (a shutdown mid-reply)
            log.debug("%s: closed", self.peer)

    @property
    def unheard(self) -> bool:
        """Whether no answer can reach the client: it broke the protocol or stalled, or the
        server stops. (One that closed its end may still read it: TCP tells a half close from
        a close only when written to.) Read from the pool's threads."""
        return self.broken or self._stopped

    def stop(self) -> asyncio.Task[None]:
        """Cancel the connection; returns its task, to await its end."""
        self._stopped = True
        self.gone.set()
        assert self._task is not None
        self._task.cancel()
        return self._task

    async def _drop(self, error: BaseException) -> None:
        """Log why this client is dropped and, where it can still read, tell it."""
        log.warning("%s: %s; closing the connection", self.peer, error)
        self.gone.set()
        code = "timeout" if isinstance(error, Stalled) else "protocol-error"
        if not await _tell(self._writer, Error(text=str(error), code=code)):
            self._deaf = True  # it does not read: nothing more will reach it

    def _reset(self) -> None:
        """Close at once, with a reset: a client that reads nothing would otherwise keep the
        socket and megabytes of unsent audio (in the kernel, after our close) for as long as
        it stays connected, and on Python 3.12 hold up the server's shutdown."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    # ---- reading ----------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        last: BaseException | None = None
        try:
            while True:
                event = await read_event(self._reader, self.server.limits, self._patient)
                if event is None:
                    break
                await self._events.put(event)
        except (ProtocolError, Stalled) as e:
            last = e
        except (ConnectionError, OSError):
            pass  # gone: same as a close
        except Exception as e:  # a bug in reading must still end this connection, and only it
            log.exception("%s: reading an event failed", self.peer)
            last = ProtocolError(f"an event could not be read ({type(e).__name__})")
        self.broken = last is not None
        self.ended = last is None  # its end of input, which may be only half a close
        self.gone.set()
        await self._events.put(last)

    async def _patient(self, read: Callable[[], Awaitable[bytes]]) -> bytes:
        """``read``, given up after ``client_timeout_s`` unless the client waits for us.

        A timed-out read consumed nothing (asyncio keeps the buffer), so it is simply retried.
        """
        while True:
            try:
                # Not wait_for: on 3.11 it swallows a cancel that races a finished read, and
                # the reader then lives on, blocked on a full queue, until it is collected.
                async with asyncio.timeout(self._timeout_s):
                    return await read()
            except TimeoutError:
                if self._busy or not self._events.empty():
                    continue  # the client waits for an answer: it may be silent meanwhile
                raise Stalled(
                    f"nothing received for {self._timeout_s:g} s (wyoming.client_timeout_s)"
                ) from None

    # ---- writing ----------------------------------------------------------------------------
    async def send(self, event: Event) -> None:
        if self._writer.is_closing():
            raise ClientGone("the client closed the connection")
        self._writer.write(encode(event))
        try:
            async with asyncio.timeout(self._timeout_s):  # (not wait_for: see _patient)
                await self._writer.drain()
        except TimeoutError:
            raise Stalled(
                f"the client read nothing for {self._timeout_s:g} s (wyoming.client_timeout_s)"
            ) from None
        except (ConnectionError, OSError) as e:
            raise ClientGone(f"the client went away ({e})") from None

    # ---- dispatch ---------------------------------------------------------------------------
    async def _dispatch(self, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            await self.send(self.server.programs.info().event())
        elif kind == "ping":
            await self.send(Event("pong", {"text": event.data.get("text")}))
        elif kind == "select-program":
            self._select(event)
        elif self.asr.takes(kind):
            self._offers("asr", kind)
            await self.asr.on_event(event)
        elif self.tts.takes(kind):
            self._offers("tts", kind)
            await self.tts.on_event(event)
        elif self.handle.takes(kind):
            self._offers("handle", kind)
            await self.handle.on_event(event)
        else:
            raise ProtocolError(f"unknown event type {kind!r}")

    def _offers(self, program: str, kind: str) -> None:
        if program not in self.server.programs.offered():
            raise ProtocolError(
                f"{kind!r} needs the {program} program, which this server does not offer "
                f"(it offers {', '.join(self.server.programs.offered())}; see wyoming.programs)"
            )

    def _select(self, event: Event) -> None:
        name = event.data.get("name")
        info = self.server.programs.info()
        names = [p.name for p in (*info.asr, *info.tts, *info.handle)]
        if name not in names:
            raise ProtocolError(f"select-program: no program {name!r:.80} (there are {names})")


async def _tell(writer: asyncio.StreamWriter, error: Error) -> bool:
    """Send ``error`` to a client being let go; False when it does not take it in time."""
    try:
        writer.write(encode(error.event()))
        async with asyncio.timeout(_GOODBYE_S):
            await writer.drain()
    except Exception:
        return False
    return True


def _remove_stale_socket(path: Path) -> None:
    """A socket left by a server that died is removed; a live one, or any other file, is not."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket; choose another wyoming.uri")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody answers: a leftover
        return
    finally:
        probe.close()
    # It may stop, so this is not the configuration's fault (exit 2, not 78).
    raise WyomingError(f"cannot serve on unix://{path}: another server already answers there")


def _peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{_host(name[0])}:{name[1]}"
    return "unix client"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
