"""A key typed into the controlling terminal (e.g. space over SSH)."""

from __future__ import annotations

import atexit
import logging
import os
import select
import signal
import sys
import termios
import threading
from collections.abc import Callable
from typing import Any

from core.errors import ConfigError, DeviceError
from voice.hotkeys.base import (
    _JOIN_TIMEOUT_S,
    KeyEvents,
    WakePipe,
    _Edges,
    _safe_call,
    _single_char,
    check_key_name,
)

log = logging.getLogger(__name__)

# evdev name -> bytes a terminal sends (xterm sequences for the function keys).
_TERMINAL_KEYS = {
    "KEY_SPACE": b" ",
    "KEY_ENTER": b"\r",
    "KEY_TAB": b"\t",
    "KEY_F1": b"\x1bOP",
    "KEY_F2": b"\x1bOQ",
    "KEY_F3": b"\x1bOR",
    "KEY_F4": b"\x1bOS",
    "KEY_F5": b"\x1b[15~",
    "KEY_F6": b"\x1b[17~",
    "KEY_F7": b"\x1b[18~",
    "KEY_F8": b"\x1b[19~",
    "KEY_F9": b"\x1b[20~",
    "KEY_F10": b"\x1b[21~",
    "KEY_F11": b"\x1b[23~",
    "KEY_F12": b"\x1b[24~",
}
_CTRL_C = b"\x03"


class TerminalHotkey:
    """A key typed into the controlling terminal, e.g. space in an SSH session.

    A terminal reports key-downs only, never key-ups, so each keypress TOGGLES: the first
    one is a press, the next a release (hold-to-talk is impossible here). While running the
    terminal is in raw-ish mode (no echo, no line buffering, output processing kept so log
    lines still start at column 0); it is restored on close, when the reader fails, and at
    exit. Ctrl-C still interrupts the program: the byte is turned back into SIGINT.
    """

    name = "terminal"

    def __init__(self, key: str = "KEY_SPACE", *, fd: int | None = None) -> None:
        self.key = check_key_name(key)
        char = _single_char(self.key)
        sequence = char.encode() if char is not None else _TERMINAL_KEYS.get(self.key)
        if sequence is None:
            known = ", ".join(sorted(_TERMINAL_KEYS))
            raise ConfigError(f"a terminal cannot send {self.key}; use a letter, digit or {known}")
        self._sequence = sequence
        self._fd = _stdin_fd() if fd is None else fd
        if self._fd < 0 or not os.isatty(self._fd):
            raise DeviceError("the terminal backend needs a terminal on stdin, and it is not one")
        self._saved: list[Any] | None = None
        self._restore_lock = threading.Lock()
        self._wake = WakePipe()
        self._thread: threading.Thread | None = None
        self._pending = b""

    def start(self, events: KeyEvents) -> None:
        self._saved = termios.tcgetattr(self._fd)
        mode = termios.tcgetattr(self._fd)
        mode[0] &= ~(termios.IXON | termios.ICRNL)  # Ctrl-S must not freeze output
        mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSAFLUSH, mode)
        atexit.register(self._restore)
        edges = _Edges(events)
        # A terminal has no key-up: one that takes a toggle (the loop does) gets one per
        # keypress, so press-to-start/press-to-stop modes see every press.
        self._toggle: Callable[[], None] | None = getattr(events, "toggle", None)
        self._thread = threading.Thread(
            target=self._run, args=(edges,), name="terminal-hotkey", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._wake.wake()
            self._thread.join(_JOIN_TIMEOUT_S)
        self._restore()
        atexit.unregister(self._restore)
        self._wake.close()

    def _restore(self) -> None:
        with self._restore_lock:
            if self._saved is None:
                return
            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            except termios.error as e:  # the terminal is already gone (SSH hung up)
                log.debug("could not restore the terminal: %s", e)
            self._saved = None

    def _run(self, edges: _Edges) -> None:
        try:
            while True:
                ready, _, _ = select.select([self._fd, self._wake.fd], [], [])
                if self._wake.fd in ready:
                    return
                data = os.read(self._fd, 64)
                if not data:
                    log.warning("terminal closed: push-to-talk from the terminal stops")
                    return
                self._feed(data, edges)
        except OSError as e:
            log.warning("terminal push-to-talk stopped: %s", e)
        finally:
            self._restore()

    def _feed(self, data: bytes, edges: _Edges) -> None:
        if _CTRL_C in data:  # raw mode swallowed the signal: raise it ourselves
            os.kill(os.getpid(), signal.SIGINT)
        self._pending += data
        while (at := self._pending.find(self._sequence)) >= 0:
            if self._toggle is not None:
                _safe_call(self._toggle)
            else:
                edges.toggle()
            self._pending = self._pending[at + len(self._sequence) :]
        # Keep only a tail that may be the start of a sequence split across two reads.
        keep = len(self._sequence) - 1
        while keep and not self._sequence.startswith(self._pending[-keep:]):
            keep -= 1
        self._pending = self._pending[-keep:] if keep else b""


def _stdin_fd() -> int:
    try:
        return sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # no stdin at all, or closed, or replaced
        return -1
