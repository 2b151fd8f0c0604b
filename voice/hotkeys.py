"""Push-to-talk key sources: one tiny interface, one class per way of reading a key.

A backend turns "the key went down / came up" into calls on :class:`KeyEvents`, from its own
thread. Backends only report edges: key repeat, a second keyboard holding the same key, or
a bouncing button never produce two presses in a row.

- :class:`EvdevHotkey`: keyboards under ``/dev/input`` (headless, over SSH, under Wayland).
- :class:`PynputHotkey`: an X11 desktop session.
- :class:`TerminalHotkey`: a key typed into the controlling terminal (e.g. space over SSH).
- :class:`GpioHotkey`: a button on a Raspberry Pi pin (gpiozero).

The control socket (``voice.control.SocketHotkey``) always works alongside any of them.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import importlib
import logging
import os
import re
import select
import signal
import sys
import termios
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from core.errors import AssistantError, ConfigError, DeviceError
from voice.config import InputConfig

log = logging.getLogger(__name__)

DEFAULT_INPUT_DIR = Path("/dev/input")
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


# --- evdev ---------------------------------------------------------------------------------


class InputDeviceLike(Protocol):
    """The part of ``evdev.InputDevice`` the backend uses (tests pass a pipe-backed one)."""

    path: str
    name: str

    def fileno(self) -> int: ...
    def capabilities(self) -> Mapping[int, Sequence[int]]: ...
    def read(self) -> Iterable[Any]: ...  # events with .type, .code, .value
    def close(self) -> None: ...


class EvdevHotkey:
    """Every keyboard under ``input_dir`` that has the key, read without grabbing it.

    value 1 is a press, 0 a release, 2 (auto-repeat) is ignored. A keyboard unplugged while
    held counts as released; with none left the directory is rescanned every ``rescan_s``.
    """

    name = "evdev"

    def __init__(
        self,
        key: str = "KEY_F12",
        *,
        input_dir: Path = DEFAULT_INPUT_DIR,
        open_device: Callable[[str], InputDeviceLike] | None = None,
        rescan_s: float = 2.0,
    ) -> None:
        evdev = _require("evdev", "evdev")
        codes: Mapping[str, int] = evdev.ecodes.ecodes
        self.key = check_key_name(key, codes)
        self._code = codes[self.key]
        self._ev_key: int = evdev.ecodes.EV_KEY
        self._input_dir = input_dir
        self._open: Callable[[str], InputDeviceLike] = open_device or evdev.InputDevice
        self._rescan_s = rescan_s
        self._devices = self._find()
        self._wake = WakePipe()
        self._thread: threading.Thread | None = None
        self._edges: _Edges | None = None

    @property
    def devices(self) -> list[InputDeviceLike]:
        return list(self._devices)

    def _find(self) -> list[InputDeviceLike]:
        paths = sorted(self._input_dir.glob("event*"), key=_natural_key)
        found: list[InputDeviceLike] = []
        denied: list[str] = []
        for path in paths:
            try:
                device = self._open(str(path))
            except PermissionError:
                denied.append(path.name)
                continue
            except OSError as e:
                log.debug("skipping %s: %s", path, e)
                continue
            if self._code in device.capabilities().get(self._ev_key, ()):
                found.append(device)
            else:
                device.close()
        if found:
            names = ", ".join(f"{d.path} ({d.name})" for d in found)
            log.info("evdev: %s on %s", self.key, names)
            return found
        if denied:
            raise DeviceError(
                f"cannot read {len(denied)} input device(s) under {self._input_dir} "
                f"({', '.join(denied)}): permission denied; {INPUT_GROUP_HINT}"
            )
        raise DeviceError(
            f"no keyboard with {self.key} under {self._input_dir} ({len(paths)} input devices "
            "checked): plug one in, choose another input.key, or use input.backend "
            '"terminal" or "socket"'
        )

    def start(self, events: KeyEvents) -> None:
        self._edges = _Edges(events)
        self._thread = threading.Thread(target=self._run, name="evdev-hotkey", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._wake.wake()
            self._thread.join(_JOIN_TIMEOUT_S)
        for device in self._devices:
            device.close()
        self._devices = []
        self._wake.close()

    def _run(self) -> None:
        try:
            while True:
                by_fd = {d.fileno(): d for d in self._devices}
                timeout = None if by_fd else self._rescan_s
                ready, _, _ = select.select([*by_fd, self._wake.fd], [], [], timeout)
                if self._wake.fd in ready:
                    return
                self._apply([e for fd in ready for e in self._read(by_fd[fd])])
                if not self._devices:
                    self._rescan()
        except Exception:
            log.exception("evdev push-to-talk stopped")

    def _read(self, device: InputDeviceLike) -> list[tuple[Any, str]]:
        try:
            events = list(device.read())
        except BlockingIOError:
            return []
        except OSError as e:
            self._lose(device, str(e))
            return []
        if not events:  # readable but empty: the device is gone
            self._lose(device, "end of file")
        return [(e, device.path) for e in events if e.type == self._ev_key and e.code == self._code]

    def _apply(self, events: list[tuple[Any, str]]) -> None:
        assert self._edges is not None
        # Two keyboards read in one pass: replay their events in the kernel's time order.
        for event, path in sorted(events, key=lambda item: (item[0].sec, item[0].usec)):
            if event.value in (0, 1):  # 2 is auto-repeat
                self._edges.set(event.value == 1, path)

    def _lose(self, device: InputDeviceLike, why: str) -> None:
        assert self._edges is not None
        log.warning("evdev: lost %s (%s): %s", device.path, device.name, why)
        self._devices.remove(device)
        with contextlib.suppress(OSError):
            device.close()
        self._edges.set(False, device.path)  # a key held on an unplugged keyboard is let go

    def _rescan(self) -> None:
        try:
            self._devices = self._find()
        except DeviceError as e:
            log.debug("evdev rescan: %s", e)


def _natural_key(path: Path) -> tuple[int, str]:
    digits = path.name.removeprefix("event")
    return (int(digits) if digits.isdigit() else 1 << 30, path.name)


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


# --- pynput --------------------------------------------------------------------------------

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


def _single_char(key: str) -> str | None:
    """``KEY_A`` -> ``a``, ``KEY_7`` -> ``7``; None for any other key."""
    rest = key.removeprefix("KEY_")
    return rest.lower() if len(rest) == 1 and rest.isalnum() else None


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


# --- terminal ------------------------------------------------------------------------------

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


# --- gpio ----------------------------------------------------------------------------------


class GpioHotkey:
    """A button between a GPIO pin (BCM numbering) and ground, through gpiozero."""

    name = "gpio"

    def __init__(self, pin: int = 17, *, pin_factory: Any = None, bounce_s: float = 0.02) -> None:
        gpiozero = _require("gpiozero", "gpio")
        try:
            self._button: Any = gpiozero.Button(
                pin, pull_up=True, bounce_time=bounce_s, pin_factory=pin_factory
            )
        except (gpiozero.GPIOZeroError, OSError) as e:
            raise DeviceError(
                f"cannot use GPIO pin {pin} ({e}); check input.gpio_pin, and that you are in "
                "the gpio group: sudo usermod -aG gpio $USER"
            ) from None
        self.pin = pin

    def start(self, events: KeyEvents) -> None:
        edges = _Edges(events)
        self._button.when_pressed = lambda: edges.set(True)
        self._button.when_released = lambda: edges.set(False)

    def close(self) -> None:
        self._button.close()


# --- choosing ------------------------------------------------------------------------------


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
    log.warning("push-to-talk: no key backend works here; only the control socket drives it")
    return None
