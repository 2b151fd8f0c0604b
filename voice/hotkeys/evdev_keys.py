"""Keyboards under ``/dev/input`` read through evdev (headless, over SSH, under Wayland)."""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from core.errors import DeviceError
from voice.hotkeys.base import (
    _JOIN_TIMEOUT_S,
    INPUT_GROUP_HINT,
    KeyEvents,
    WakePipe,
    _Edges,
    _require,
    check_key_name,
)

log = logging.getLogger(__name__)

DEFAULT_INPUT_DIR = Path("/dev/input")


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
