"""Push-to-talk key sources: one tiny interface, one class per way of reading a key.

A backend turns "the key went down / came up" into calls on :class:`KeyEvents`, from its own
thread. Backends only report edges: key repeat, a second keyboard holding the same key, or
a bouncing button never produce two presses in a row.

- :class:`EvdevHotkey`: keyboards under ``/dev/input`` (headless, over SSH, under Wayland).
- :class:`PynputHotkey`: an X11 desktop session.
- :class:`TerminalHotkey`: a key typed into the controlling terminal (e.g. space over SSH).
- :class:`GpioHotkey`: a button on a Raspberry Pi pin (gpiozero).

The control socket (``voice.control``, ``voice-assistant ptt``) always works beside them.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import AssistantError, ConfigError
from voice.config import InputConfig
from voice.hotkeys.base import (
    INPUT_GROUP_HINT,
    KEY_EXAMPLES,
    HotkeyBackend,
    KeyEvents,
    WakePipe,
    check_key_name,
)
from voice.hotkeys.base import _require as _require
from voice.hotkeys.desktop import PynputHotkey
from voice.hotkeys.evdev_keys import DEFAULT_INPUT_DIR, EvdevHotkey, InputDeviceLike
from voice.hotkeys.gpio import GpioHotkey
from voice.hotkeys.terminal import TerminalHotkey

__all__ = [
    "DEFAULT_INPUT_DIR",
    "INPUT_GROUP_HINT",
    "KEY_EXAMPLES",
    "EvdevHotkey",
    "GpioHotkey",
    "HotkeyBackend",
    "InputDeviceLike",
    "KeyEvents",
    "Probes",
    "PynputHotkey",
    "TerminalHotkey",
    "WakePipe",
    "check_key_name",
    "choose_backend",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probes:
    """What :func:`choose_backend` looks at; tests point it at their own devices."""

    input_dir: Path = DEFAULT_INPUT_DIR
    open_device: Callable[[str], InputDeviceLike] | None = None
    stdin_fd: int | None = None  # None: sys.stdin
    pynput_keyboard: Any = None
    gpio_pin_factory: Any = None


def _build(name: str, config: InputConfig, env: Mapping[str, str], probes: Probes) -> HotkeyBackend:
    if name == "evdev":
        return EvdevHotkey(config.key, input_dir=probes.input_dir, open_device=probes.open_device)
    if name == "pynput":
        return PynputHotkey(config.key, env=env, keyboard=probes.pynput_keyboard)
    if name == "terminal":
        return TerminalHotkey(config.key, fd=probes.stdin_fd)
    if name == "gpio":
        return GpioHotkey(config.gpio_pin, pin_factory=probes.gpio_pin_factory)
    raise ConfigError(f"unknown input.backend {name!r}")


_AUTO_ORDER = ("evdev", "pynput", "terminal")


def _evdev_names() -> Iterable[str]:
    try:
        evdev = importlib.import_module("evdev")
    except ImportError:
        return ()
    names: Mapping[str, int] = evdev.ecodes.ecodes
    return names


def choose_backend(
    config: InputConfig, *, env: Mapping[str, str] = os.environ, probes: Probes | None = None
) -> HotkeyBackend | None:
    """The push-to-talk key source for ``config.backend``; None means the socket only.

    "auto" tries evdev, then pynput, then the terminal, and logs why each was skipped. An
    explicit backend that cannot work raises its error. GPIO is never guessed: a pin with
    nothing wired to it looks just like an idle button.
    """
    probes = probes or Probes()
    # A typo is an error in every mode, never a silent fallback to the socket.
    check_key_name(config.key, _evdev_names())
    if config.backend == "socket":
        log.info("push-to-talk: control socket only (input.backend = socket)")
        return None
    if config.backend != "auto":
        backend = _build(config.backend, config, env, probes)
        log.info("push-to-talk: %s (input.backend = %s)", backend.name, config.backend)
        return backend
    for name in _AUTO_ORDER:
        try:
            backend = _build(name, config, env, probes)
        except AssistantError as e:
            log.info("push-to-talk: skipped %s: %s", name, e)
            continue
        log.info("push-to-talk: using %s for %s", name, config.key)
        return backend
    if config.mode == "wake":  # the key is a second way to wake it, not needed
        log.info("no key backend works here: the wake word and the control socket wake it")
    else:
        log.warning("push-to-talk: no key backend works here; only the control socket drives it")
    return None
