"""A key on an X11 desktop, through pynput."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from core.errors import ConfigError, DeviceError
from voice.hotkeys.base import (
    _JOIN_TIMEOUT_S,
    KeyEvents,
    _Edges,
    _require,
    _single_char,
    check_key_name,
)

# evdev name -> pynput Key attribute, for keys that are not a letter or a digit.
_PYNPUT_KEYS = {
    "KEY_SPACE": "space",
    "KEY_ENTER": "enter",
    "KEY_TAB": "tab",
    "KEY_ESC": "esc",
    "KEY_PAUSE": "pause",
    "KEY_SCROLLLOCK": "scroll_lock",
    "KEY_CAPSLOCK": "caps_lock",
    "KEY_INSERT": "insert",
    "KEY_LEFTCTRL": "ctrl_l",
    "KEY_RIGHTCTRL": "ctrl_r",
    "KEY_LEFTALT": "alt_l",
    "KEY_RIGHTALT": "alt_r",
    "KEY_LEFTSHIFT": "shift_l",
    "KEY_RIGHTSHIFT": "shift_r",
    "KEY_LEFTMETA": "cmd_l",
    "KEY_RIGHTMETA": "cmd_r",
    **{f"KEY_F{n}": f"f{n}" for n in range(1, 21)},
}


class PynputHotkey:
    """A key on an X11 desktop. Under Wayland it only sees keys typed into X11 windows."""

    name = "pynput"

    def __init__(
        self,
        key: str = "KEY_F12",
        *,
        env: Mapping[str, str] = os.environ,
        keyboard: Any = None,  # the pynput.keyboard module; tests pass their own
    ) -> None:
        self.key = check_key_name(key)
        if keyboard is None:
            if not env.get("DISPLAY"):
                raise DeviceError("pynput needs an X11 desktop session, but DISPLAY is not set")
            keyboard = _require("pynput.keyboard", "desktop")
        self._keyboard = keyboard
        char = _single_char(self.key)
        if char is not None:
            self._target: Any = keyboard.KeyCode.from_char(char)
        elif self.key in _PYNPUT_KEYS:
            self._target = getattr(keyboard.Key, _PYNPUT_KEYS[self.key])
        else:
            known = ", ".join(sorted(_PYNPUT_KEYS))
            raise ConfigError(f"pynput cannot watch {self.key}; use a letter, digit or {known}")
        self._listener: Any = None

    def _matches(self, key: Any) -> bool:
        char = getattr(self._target, "char", None)
        if char is not None:  # compare letters case-insensitively: Shift must not matter
            return str(getattr(key, "char", None) or "").lower() == str(char)
        return bool(key == self._target)

    def start(self, events: KeyEvents) -> None:
        edges = _Edges(events)

        def on_press(key: Any) -> None:
            if self._matches(key):
                edges.set(True)

        def on_release(key: Any) -> None:
            if self._matches(key):
                edges.set(False)

        self._listener = self._keyboard.Listener(on_press=on_press, on_release=on_release)
        self._listener.daemon = True
        self._listener.start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener.join(_JOIN_TIMEOUT_S)
            self._listener = None
