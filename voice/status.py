"""A one-line terminal status: the loop's phase and, while listening, a level meter."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_BARS = " ▁▂▃▄▅▆▇█"
_ICONS = {
    "idle": "waiting for the key",
    "listening": "listening",
    "transcribing": "transcribing",
    "thinking": "thinking",
    "speaking": "speaking",
}


class StatusLine:
    """Redraws one line in place; writes nothing when the stream is not a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, *, min_interval_s: float = 0.1) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._phase = "idle"
        self._dbfs = -120.0
        self._min_interval_s = min_interval_s
        self._last_draw = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False when nothing would be drawn (not a terminal)."""
        return self._enabled

    def phase(self, phase: str) -> None:
        self._phase = phase
        self._draw(force=True)

    def level(self, dbfs: float) -> None:
        self._dbfs = dbfs
        self._draw()

    def clear(self) -> None:
        if self._enabled:
            with self._lock:
                self._stream.write("\r\x1b[2K")
                self._stream.flush()

    def _draw(self, *, force: bool = False) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self._min_interval_s:
            return
        self._last_draw = now
        text = f"[{_ICONS.get(self._phase, self._phase)}]"
        if self._phase == "listening":
            text += f" {meter(self._dbfs)} {self._dbfs:5.0f} dB"
        with self._lock:
            self._stream.write("\r\x1b[2K" + text)
            self._stream.flush()


def meter(dbfs: float, width: int = 12, floor_db: float = -70.0) -> str:
    """A bar of ``width`` cells from ``floor_db`` to 0 dBFS."""
    fraction = min(1.0, max(0.0, (dbfs - floor_db) / -floor_db))
    cells = fraction * width
    full = int(cells)
    partial = _BARS[int((cells - full) * (len(_BARS) - 1))] if full < width else ""
    return ("█" * full + partial).ljust(width)
