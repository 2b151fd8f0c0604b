"""In-process fake agents: plain objects with the ``run`` method ``Core`` needs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from core.agent import AgentResult, TextCallback


@dataclass
class Call:
    prompt: str
    session_id: str | None
    thread: str = field(default_factory=lambda: threading.current_thread().name)


class FakeAgent:
    """Calls ``behaviour(call, on_text)`` for each turn and records every call."""

    def __init__(
        self,
        behaviour: Callable[[Call, TextCallback | None], AgentResult] | None = None,
    ) -> None:
        self.behaviour = behaviour or (lambda call, on_text: AgentResult(text="Hello!"))
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def run(
        self, prompt: str, *, session_id: str | None = None, on_text: TextCallback | None = None
    ) -> AgentResult:
        call = Call(prompt, session_id)
        with self._lock:
            self.calls.append(call)
        return self.behaviour(call, on_text)


class OverlapProbe:
    """Counts how many runs are inside the agent at once, per key (e.g. per room)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def __enter__(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.active -= 1
