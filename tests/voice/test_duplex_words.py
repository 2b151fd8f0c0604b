"""The linear canceller (what the wake word detector and Whisper hear over a reply) follows a
microphone that fell behind the speaker: blocks handed to the device directly, no stream."""

from __future__ import annotations

import numpy as np
import pytest

from voice.config import AudioConfig
from voice.devices import DuplexDevice
from voice.devices.duplex import LAG_BLOCKS
from voice.echo import Int16

RATE = 16000
BLOCK = RATE * 20 // 1000


class Canceller:
    """Passes the microphone through and remembers each delay hint (a reset of its filter)."""

    def __init__(self) -> None:
        self.delays_ms: list[int] = []

    def set_delay_ms(self, delay_ms: int) -> None:
        self.delays_ms.append(delay_ms)

    def process(self, near: Int16, far: Int16) -> Int16:
        return near.copy()


@pytest.fixture
def device() -> tuple[DuplexDevice, Canceller]:
    words = Canceller()
    device = DuplexDevice(AudioConfig(), Canceller(), words=words, rate=RATE)
    device.stream_delay_s = 0.1
    device._reset(RATE, 100)
    return device, words


def feed(device: DuplexDevice, behind_s: float, blocks: int = 5) -> None:
    """``blocks`` of a playing reply, the microphone ``behind_s`` later than at the open."""
    with device._captured:
        device._lags.extend([behind_s] * LAG_BLOCKS)
        device._least_lag_s = 0.0
    played = (3000 * np.sin(np.arange(BLOCK) / 5)).astype(np.int16).tobytes()
    for _ in range(blocks):
        device._process(played, played, 0.0)


def test_the_linear_canceller_starts_afresh_where_the_echo_now_comes(
    device: tuple[DuplexDevice, Canceller],
) -> None:
    dev, words = device
    steps = [(0.0, [100]), (0.25, [100, 350]), (0.29, [100, 350]), (0.32, [100, 350, 420])]
    for behind_s, delays_ms in steps:
        feed(dev, behind_s)
        assert words.delays_ms == delays_ms, behind_s  # a move within its margin: no reset
    feed(dev, 0.05)  # caught up without a reopen: back where the stream's latency puts it
    feed(dev, 0.03)
    assert words.delays_ms == [100, 350, 420, 100]
