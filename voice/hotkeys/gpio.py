"""A button on a Raspberry Pi pin, through gpiozero."""

from __future__ import annotations

import warnings
from typing import Any

from core.errors import DeviceError
from voice.hotkeys.base import KeyEvents, _Edges, _require


class GpioHotkey:
    """A button between a GPIO pin (BCM numbering) and ground, through gpiozero."""

    name = "gpio"

    def __init__(self, pin: int = 17, *, pin_factory: Any = None, bounce_s: float = 0.02) -> None:
        gpiozero = _require("gpiozero", "gpio")
        try:
            # gpiozero warns of each pin library it tries and cannot load (four of them off a
            # Pi); the one error below says what matters.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", gpiozero.PinFactoryFallback)
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
