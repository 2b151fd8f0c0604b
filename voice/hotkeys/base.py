"""What every push-to-talk backend shares: the callback protocols, edge tracking, key names."""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Protocol

from core.errors import ConfigError

log = logging.getLogger(__name__)

KEY_EXAMPLES = "KEY_F12, KEY_SPACE, KEY_RIGHTCTRL, KEY_PAUSE, KEY_SCROLLLOCK, BTN_0"
INPUT_GROUP_HINT = "add yourself with: sudo usermod -aG input $USER, then log in again"
_JOIN_TIMEOUT_S = 2.0


class KeyEvents(Protocol):
    """Callbacks the loop gives a backend; called from the backend's thread."""

    def press(self) -> None: ...
    def release(self) -> None: ...


class HotkeyBackend(Protocol):
    name: str

    def start(self, events: KeyEvents) -> None: ...
    def close(self) -> None: ...


class _Edges:
    """Forwards only changes of state, from any number of holders (keyboards) of one key."""

    def __init__(self, events: KeyEvents) -> None:
        self._events = events
        self._holders: set[str] = set()
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return bool(self._holders)

    def set(self, down: bool, holder: str = "") -> None:
        with self._lock:
            was_down = bool(self._holders)
            if down:
                self._holders.add(holder)
            else:
                self._holders.discard(holder)
            changed = was_down != bool(self._holders)
        if changed:
            _safe_call(self._events.press if down else self._events.release)

    def toggle(self) -> None:
        self.set(not self.down)


def _safe_call(callback: Callable[[], None]) -> None:
    # A failing callback must not kill the thread that reads the key.
    try:
        callback()
    except Exception:
        log.exception("push-to-talk callback failed")


def _require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"the {extra} push-to-talk backend needs the '{module}' package ({e}); "
            f"install it with: pip install 'voice-assistant[{extra}]'"
        ) from None


def check_key_name(key: str, names: Iterable[str] = ()) -> str:
    """``key`` normalized (``key_f12`` -> ``KEY_F12``); ConfigError when it is no key name.

    ``names`` is the evdev name table when evdev is installed, for an exact check.
    """
    name = key.strip().upper()
    known = [n for n in names if n.startswith(("KEY_", "BTN_"))]
    if re.fullmatch(r"(KEY|BTN)_[A-Z0-9_]+", name) and (not known or name in known):
        return name
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"input.key {key!r} is not an evdev key name (e.g. {KEY_EXAMPLES}){hint}")


class WakePipe:
    """A pipe a reader thread selects on beside its real input, so close() can stop it."""

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        self._closed = False
        self._lock = threading.Lock()

    def wake(self) -> None:
        with self._lock:
            if not self._closed:
                os.write(self._write_fd, b"x")

    def close(self) -> None:
        with self._lock:  # closing twice could close an fd number reused by someone else
            if not self._closed:
                self._closed = True
                os.close(self.fd)
                os.close(self._write_fd)


def _single_char(key: str) -> str | None:
    """``KEY_A`` -> ``a``, ``KEY_7`` -> ``7``; None for any other key."""
    rest = key.removeprefix("KEY_")
    return rest.lower() if len(rest) == 1 and rest.isalnum() else None
