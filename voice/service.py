"""systemd integration with the standard library only: the ``sd_notify`` datagram protocol.

Under a ``Type=notify`` unit systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``. Outside systemd every
method is a no-op that returns False, so the loop calls them unconditionally.

The loop calls :meth:`SystemdNotifier.watchdog` once per audio-loop iteration; it sends at
most one ping per :meth:`~SystemdNotifier.watchdog_interval_s`, so an audio loop that stalls
stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. vsock: (systemd 254+ in VMs): not used on a Raspberry Pi


class SystemdNotifier:
    """Tells systemd the service is ready, what it is doing, and that it is still alive."""

    def __init__(
        self,
        env: Mapping[str, str] = os.environ,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        notify_socket = env.get("NOTIFY_SOCKET", "")
        self._address = _address(notify_socket) if notify_socket else None
        if notify_socket and self._address is None:
            log.warning(
                "unsupported NOTIFY_SOCKET %r: systemd notifications are off", notify_socket
            )
        self._interval_s = _watchdog_interval_s(env) if self._address else None
        self._clock = clock
        self._last_ping: float | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notification socket."""
        return self._address is not None

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of ``$WATCHDOG_USEC``, as systemd recommends; None if off."""
        return self._interval_s

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True when it was sent."""
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(payload, self._address)
            except OSError as e:
                # Never fatal: the assistant keeps working, systemd just hears nothing.
                log.log(logging.DEBUG if self._warned else logging.WARNING, "sd_notify: %s", e)
                self._warned = True
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup is done (models loaded, microphone open)."""
        extra = [f"STATUS={_one_line(status)}"] if status else []
        return self.notify("READY=1", *extra)

    def status(self, text: str) -> bool:
        """Free text shown by ``systemctl --user status``."""
        return self.notify(f"STATUS={_one_line(text)}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up (or stop) time, e.g. while loading a slow model."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog(self) -> bool:
        """Ping the watchdog if an interval has passed since the last ping; True if sent."""
        if self._interval_s is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self._interval_s:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """Shutdown has begun."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _one_line(text: str) -> str:
    # A newline would start another assignment in the datagram.
    return " ".join(text.split())


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None  # no watchdog, or it is meant for another process
    return usec / 2 / 1_000_000
