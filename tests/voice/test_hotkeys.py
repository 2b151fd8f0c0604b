"""Push-to-talk key backends, driven through real file descriptors.

This machine has no /dev/uinput (the kernel has no uinput device), so the evdev backend
reads keyboards made of pipes carrying the kernel's ``struct input_event`` bytes, parsed by
evdev's own reader. The terminal backend runs on a real pseudo-terminal.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import signal
import struct
import termios
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from evdev import ecodes
from evdev.eventio import EventIO

from core.errors import ConfigError, DeviceError
from voice.config import InputConfig
from voice.hotkeys import (
    EvdevHotkey,
    GpioHotkey,
    Probes,
    PynputHotkey,
    TerminalHotkey,
    _require,
    check_key_name,
    choose_backend,
)

WAIT_S = 5.0


class Recorder:
    """KeyEvents that remember the order of calls and let a test wait for them."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._cond = threading.Condition()

    def press(self) -> None:
        self._add("press")

    def release(self) -> None:
        self._add("release")

    def _add(self, call: str) -> None:
        with self._cond:
            self.calls.append(call)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[str]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.calls) >= count, timeout_s)
            return list(self.calls)


_clock = itertools.count(1)


class PipeKeyboard(EventIO):
    """An input device whose events arrive through a pipe, exactly as the kernel writes them."""

    def __init__(self, path: str, name: str, keys: list[int]) -> None:
        self.path = path
        self.name = name
        self._keys = keys
        self.fd, self._writer = os.pipe()
        os.set_blocking(self.fd, False)
        self.closed = False
        self._lock = threading.Lock()

    def capabilities(self) -> dict[int, list[int]]:
        return {ecodes.EV_KEY: self._keys, ecodes.EV_SYN: [0]}

    def emit(self, code: int, value: int) -> None:
        usec = next(_clock)  # the kernel stamps every event; time only moves forward
        pack = struct.Struct("llHHi").pack
        os.write(
            self._writer,
            pack(0, usec, ecodes.EV_KEY, code, value) + pack(0, usec, ecodes.EV_SYN, 0, 0),
        )

    def unplug(self) -> None:
        with self._lock:  # the backend may close us from its thread at the same moment
            os.close(self._writer)
            self._writer = -1

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                os.close(self.fd)
                if self._writer >= 0:
                    os.close(self._writer)
                    self._writer = -1


class InputDir:
    """A directory of event* nodes and the opener the backend uses for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: dict[str, PipeKeyboard] = {}
        self.denied: set[str] = set()
        self.unplugged: list[PipeKeyboard] = []

    def add(self, node: str, keys: list[int], name: str = "test keyboard") -> PipeKeyboard:
        path = self.root / node
        device = PipeKeyboard(str(path), name, keys)
        self.devices[str(path)] = device
        path.touch()  # last: a rescan running now must find the device behind the node
        return device

    def unplug(self, node: str) -> PipeKeyboard:
        """The node disappears and the open device reads end of file."""
        (self.root / node).unlink()
        device = self.devices.pop(str(self.root / node))
        device.unplug()
        self.unplugged.append(device)
        return device

    def deny(self, node: str) -> None:
        (self.root / node).touch()
        self.denied.add(str(self.root / node))

    def open(self, path: str) -> PipeKeyboard:
        if path in self.denied:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        if path not in self.devices:
            raise FileNotFoundError(errno.ENOENT, "No such device", path)
        return self.devices[path]


@pytest.fixture
def input_dir(tmp_path: Path) -> Iterator[InputDir]:
    d = InputDir(tmp_path)
    yield d
    for device in [*d.devices.values(), *d.unplugged]:
        device.close()


def evdev_backend(d: InputDir, key: str = "KEY_F12", rescan_s: float = 2.0) -> EvdevHotkey:
    return EvdevHotkey(key, input_dir=d.root, open_device=d.open, rescan_s=rescan_s)


def test_evdev_press_release_and_repeat(input_dir: InputDir) -> None:
    keyboard = input_dir.add("event3", [ecodes.KEY_A, ecodes.KEY_F12])
    backend = evdev_backend(input_dir)
    events = Recorder()
    backend.start(events)
    try:
        keyboard.emit(ecodes.KEY_A, 1)  # another key: ignored
        keyboard.emit(ecodes.KEY_F12, 1)
        keyboard.emit(ecodes.KEY_F12, 2)  # auto-repeat: ignored
        keyboard.emit(ecodes.KEY_F12, 2)
        keyboard.emit(ecodes.KEY_F12, 0)
        keyboard.emit(ecodes.KEY_F12, 1)
        assert events.wait_for(3) == ["press", "release", "press"]
    finally:
        backend.close()
    assert keyboard.closed


def test_evdev_picks_only_keyboards_with_the_key(input_dir: InputDir) -> None:
    mouse = input_dir.add("event0", [ecodes.BTN_LEFT], name="mouse")
    first = input_dir.add("event2", [ecodes.KEY_F12], name="usb keyboard")
    second = input_dir.add("event10", [ecodes.KEY_F12], name="bluetooth keyboard")
    backend = evdev_backend(input_dir)
    try:
        assert [d.name for d in backend.devices] == ["usb keyboard", "bluetooth keyboard"]
        assert mouse.closed
        events = Recorder()
        backend.start(events)
        # The key held on two keyboards is one press until both let go.
        first.emit(ecodes.KEY_F12, 1)
        assert events.wait_for(1) == ["press"]
        second.emit(ecodes.KEY_F12, 1)
        first.emit(ecodes.KEY_F12, 0)
        second.emit(ecodes.KEY_F12, 0)
        assert events.wait_for(2) == ["press", "release"]
    finally:
        backend.close()


def test_evdev_unplugged_while_held_releases(input_dir: InputDir) -> None:
    keyboard = input_dir.add("event1", [ecodes.KEY_SPACE])
    backend = evdev_backend(input_dir, key="KEY_SPACE", rescan_s=0.05)
    events = Recorder()
    backend.start(events)
    try:
        keyboard.emit(ecodes.KEY_SPACE, 1)
        assert events.wait_for(1) == ["press"]
        input_dir.unplug("event1")
        assert events.wait_for(2) == ["press", "release"]
        assert keyboard.closed
    finally:
        backend.close()


def test_evdev_rescans_after_losing_every_keyboard(input_dir: InputDir) -> None:
    input_dir.add("event1", [ecodes.KEY_F12])
    backend = evdev_backend(input_dir, rescan_s=0.05)
    events = Recorder()
    backend.start(events)
    try:
        input_dir.unplug("event1")
        new = input_dir.add("event4", [ecodes.KEY_F12], name="plugged back in")
        for _ in range(100):  # the rescan happens within a few rescan_s periods
            if [d.name for d in backend.devices] == ["plugged back in"]:
                break
            threading.Event().wait(0.05)
        new.emit(ecodes.KEY_F12, 1)
        assert events.wait_for(1) == ["press"]
    finally:
        backend.close()


def test_evdev_permission_denied_names_the_input_group(input_dir: InputDir) -> None:
    input_dir.deny("event0")
    input_dir.deny("event1")
    with pytest.raises(DeviceError) as raised:
        evdev_backend(input_dir)
    message = str(raised.value)
    assert "permission denied" in message
    assert "sudo usermod -aG input $USER, then log in again" in message
    assert "event0, event1" in message


def test_evdev_no_keyboard_with_the_key(input_dir: InputDir) -> None:
    input_dir.add("event0", [ecodes.KEY_A])
    with pytest.raises(DeviceError, match=r"no keyboard with KEY_F12 .*1 input devices"):
        evdev_backend(input_dir)


def test_evdev_real_opener_skips_files_that_are_not_devices(tmp_path: Path) -> None:
    (tmp_path / "event0").write_bytes(b"not a device")
    with pytest.raises(DeviceError, match="no keyboard with KEY_F12"):
        EvdevHotkey("KEY_F12", input_dir=tmp_path)


def test_bad_key_name_lists_examples() -> None:
    with pytest.raises(ConfigError) as raised:
        EvdevHotkey("KEY_F13X", input_dir=Path("/nonexistent"))
    assert "KEY_F12, KEY_SPACE" in str(raised.value)
    assert "did you mean" in str(raised.value)
    assert check_key_name(" key_f12 ", ecodes.ecodes) == "KEY_F12"
    with pytest.raises(ConfigError):
        check_key_name("F12")


# --- terminal -------------------------------------------------------------------------------


@pytest.fixture
def pty() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    yield master, slave
    os.close(master)
    os.close(slave)


def test_terminal_each_keypress_toggles_and_mode_is_restored(pty: tuple[int, int]) -> None:
    master, slave = pty
    before = termios.tcgetattr(slave)
    backend = TerminalHotkey("KEY_SPACE", fd=slave)
    assert termios.tcgetattr(slave) == before  # choosing a backend leaves the terminal alone
    events = Recorder()
    backend.start(events)
    try:
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
        os.write(master, b" ")
        assert events.wait_for(1) == ["press"]
        os.write(master, b"xyz ")  # other keys do nothing; the next space releases
        assert events.wait_for(2) == ["press", "release"]
        os.write(master, b"  ")
        assert events.wait_for(4) == ["press", "release", "press", "release"]
    finally:
        backend.close()
    assert termios.tcgetattr(slave) == before


class TogglingRecorder(Recorder):
    """Events that also take a toggle, like the voice loop."""

    def toggle(self) -> None:
        self._add("toggle")


def test_terminal_sends_a_toggle_per_keypress_when_the_loop_takes_one(
    pty: tuple[int, int],
) -> None:
    master, slave = pty
    backend = TerminalHotkey("KEY_SPACE", fd=slave)
    events = TogglingRecorder()
    backend.start(events)
    try:
        os.write(master, b" x  ")
        assert events.wait_for(3) == ["toggle", "toggle", "toggle"]
    finally:
        backend.close()


def test_terminal_function_key_sequence_split_across_reads(pty: tuple[int, int]) -> None:
    master, slave = pty
    backend = TerminalHotkey("KEY_F12", fd=slave)
    events = Recorder()
    backend.start(events)
    try:
        os.write(master, b"\x1b[2")
        threading.Event().wait(0.2)  # let the reader see the first half on its own
        os.write(master, b"4~")
        assert events.wait_for(1) == ["press"]
        os.write(master, b"\x1b[15~")  # F5: not our key
        os.write(master, b"\x1b[24~")
        assert events.wait_for(2) == ["press", "release"]
    finally:
        backend.close()


def test_terminal_ctrl_c_still_interrupts(pty: tuple[int, int]) -> None:
    master, slave = pty
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    backend = TerminalHotkey("KEY_SPACE", fd=slave)
    backend.start(Recorder())
    try:
        os.write(master, b"\x03")
        for _ in range(100):  # the handler runs in the main thread between bytecodes
            if interrupted.wait(0.05):
                break
        assert interrupted.is_set()
    finally:
        backend.close()
        signal.signal(signal.SIGINT, previous)


def test_terminal_hangup_stops_the_reader_quietly() -> None:
    master, slave = os.openpty()
    backend = TerminalHotkey("KEY_SPACE", fd=slave)
    events = Recorder()
    backend.start(events)
    reader = next(t for t in threading.enumerate() if t.name == "terminal-hotkey")
    os.close(master)  # the SSH session hangs up: reads fail, the reader gives up
    try:
        reader.join(WAIT_S)
        assert not reader.is_alive()
        assert events.calls == []
    finally:
        backend.close()  # restoring a terminal that is gone must not raise
        os.close(slave)


def test_terminal_refuses_a_pipe_and_unsendable_keys(pty: tuple[int, int]) -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(DeviceError, match="not one"):
            TerminalHotkey("KEY_SPACE", fd=read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(ConfigError, match="cannot send KEY_LEFTCTRL"):
        TerminalHotkey("KEY_LEFTCTRL", fd=pty[1])


# --- pynput (no X display here: a stand-in for the pynput.keyboard module) -----------------


class FakePynputKeyboard:
    """The shape of ``pynput.keyboard``: Key enum, KeyCode.from_char, Listener thread."""

    class Key:
        f12 = "Key.f12"
        space = "Key.space"

    class KeyCode:
        def __init__(self, char: str) -> None:
            self.char = char

        @classmethod
        def from_char(cls, char: str) -> Any:
            return cls(char)

    class Listener:
        instances: ClassVar[list[Any]] = []

        def __init__(self, on_press: Any, on_release: Any) -> None:
            self.on_press, self.on_release = on_press, on_release
            self.daemon = False
            self.started = self.stopped = False
            FakePynputKeyboard.Listener.instances.append(self)

        def start(self) -> None:
            self.started = True

        def stop(self) -> None:
            self.stopped = True

        def join(self, timeout: float | None = None) -> None:
            pass


def test_pynput_maps_keys_and_collapses_repeats() -> None:
    kb = FakePynputKeyboard
    backend = PynputHotkey("KEY_F12", keyboard=kb)
    events = Recorder()
    backend.start(events)
    listener = kb.Listener.instances[-1]
    assert listener.started and listener.daemon
    listener.on_press(kb.Key.space)
    listener.on_press(kb.Key.f12)
    listener.on_press(kb.Key.f12)  # X11 auto-repeat
    listener.on_release(kb.Key.f12)
    backend.close()
    assert events.calls == ["press", "release"]
    assert listener.stopped

    letter = PynputHotkey("KEY_Q", keyboard=kb)
    events = Recorder()
    letter.start(events)
    listener = kb.Listener.instances[-1]
    listener.on_press(kb.KeyCode("Q"))  # with Shift held
    listener.on_release(kb.KeyCode("q"))
    assert events.calls == ["press", "release"]


def test_pynput_needs_a_display() -> None:
    with pytest.raises(DeviceError, match="DISPLAY"):
        PynputHotkey("KEY_F12", env={})


# --- choosing ---------------------------------------------------------------------------------


def test_auto_prefers_evdev(input_dir: InputDir, pty: tuple[int, int]) -> None:
    input_dir.add("event0", [ecodes.KEY_F12])
    probes = Probes(input_dir=input_dir.root, open_device=input_dir.open, stdin_fd=pty[1])
    backend = choose_backend(InputConfig(), env={}, probes=probes)
    assert backend is not None and backend.name == "evdev"
    backend.close()


def test_auto_falls_back_to_the_terminal_and_logs_why(
    tmp_path: Path, pty: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    probes = Probes(input_dir=tmp_path, stdin_fd=pty[1])
    with caplog.at_level("INFO", logger="voice.hotkeys"):
        backend = choose_backend(InputConfig(key="KEY_SPACE"), env={}, probes=probes)
    assert backend is not None and backend.name == "terminal"
    assert "skipped evdev: no keyboard with KEY_SPACE" in caplog.text
    assert "skipped pynput: pynput needs an X11 desktop" in caplog.text


@pytest.mark.parametrize(("mode", "level"), [("ptt-hold", "WARNING"), ("wake", "INFO")])
def test_auto_with_nothing_is_socket_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str, level: str
) -> None:
    read_end, write_end = os.pipe()  # stdin redirected: not a terminal
    try:
        probes = Probes(input_dir=tmp_path, stdin_fd=read_end)
        with caplog.at_level(logging.INFO):
            assert choose_backend(InputConfig(mode=mode), env={}, probes=probes) is None
        # Push-to-talk needs a key; in wake mode it is a second way to wake it.
        (said,) = [r for r in caplog.records if "no key backend works" in r.getMessage()]
        assert said.levelname == level
    finally:
        os.close(read_end)
        os.close(write_end)


def test_explicit_backends(tmp_path: Path, input_dir: InputDir) -> None:
    probes = Probes(input_dir=input_dir.root, open_device=input_dir.open)
    assert choose_backend(InputConfig(backend="socket"), env={}, probes=probes) is None
    with pytest.raises(DeviceError, match="no keyboard"):
        choose_backend(InputConfig(backend="evdev"), env={}, probes=probes)
    with pytest.raises(DeviceError, match="DISPLAY"):
        choose_backend(InputConfig(backend="pynput"), env={}, probes=probes)
    with pytest.raises(ConfigError, match="not an evdev key name"):
        choose_backend(InputConfig(key="F12"), env={}, probes=probes)


# --- gpio (gpiozero's own mock pins stand in for the Pi's header) --------------------------


def test_gpio_button_press_release_and_pin_in_use() -> None:
    mock = pytest.importorskip("gpiozero.pins.mock", reason="gpiozero (the gpio extra)")
    factory = mock.MockFactory()
    backend = GpioHotkey(17, pin_factory=factory)
    events = Recorder()
    backend.start(events)
    try:
        pin = factory.pin(17)
        pin.drive_low()  # the button connects the pin to ground
        assert events.wait_for(1) == ["press"]
        pin.drive_high()
        assert events.wait_for(2) == ["press", "release"]
        with pytest.raises(DeviceError, match="cannot use GPIO pin 17"):
            GpioHotkey(17, pin_factory=factory)
    finally:
        backend.close()


def test_the_default_pin_library_is_looked_for_without_a_warning_for_each_one() -> None:
    """Off a Pi gpiozero warned of four pin libraries it could not load before the error."""
    gpiozero = pytest.importorskip("gpiozero", reason="gpiozero (the gpio extra)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            GpioHotkey(17).close()  # a Pi with the pin free
        except DeviceError as e:
            assert "cannot use GPIO pin 17" in str(e)  # anywhere else
    assert not [w for w in caught if issubclass(w.category, gpiozero.PinFactoryFallback)]


def test_missing_optional_module_says_which_extra() -> None:
    with pytest.raises(ConfigError, match=r"pip install 'voice-assistant\[gpio\]'"):
        _require("voice_assistant_no_such_module", "gpio")
