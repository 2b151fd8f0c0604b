"""What an agent reports while it works, and the caller's handle on a running turn.

A Claude Code turn is not one reply: it writes, runs tools, asks for permission and writes
again. Agents that can say so report it as :data:`AgentEvent` values; the caller steers the
turn through a :class:`TurnControl` (interrupt it, answer its questions).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

log = logging.getLogger(__name__)

Decision = Literal["allow", "deny", "always"]


@dataclass(frozen=True)
class TextDelta:
    """More of the reply's text, as the model writes it."""

    text: str


@dataclass(frozen=True)
class TextDone:
    """A text block ended: what was written so far is complete and can be spoken."""


@dataclass(frozen=True)
class ToolUse:
    """The agent runs a tool. ``input`` is the tool's JSON input, as the agent gave it."""

    tool_use_id: str
    name: str
    input: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolResult:
    tool_use_id: str
    is_error: bool = False


@dataclass(frozen=True)
class PermissionRequest:
    """The agent waits for a yes or no before it runs a tool: answer via TurnControl."""

    request_id: str
    tool_name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""  # the agent's own words for what the tool would do, if any
    tool_use_id: str = ""  # the ToolUse it is about ("": the agent did not say)


@dataclass(frozen=True)
class ApiRetry:
    """A call to the agent's service failed and will be tried again (Claude Code's
    ``system``/``api_retry``). ``status``: the HTTP status, None when nothing answered."""

    attempt: int
    max_retries: int | None = None
    status: int | None = None
    error: str = ""

    @property
    def refused_login(self) -> bool:
        return self.status in (401, 403)


@dataclass(frozen=True)
class StreamRestarted:
    """The text block being streamed broke off, and came again whole: Claude Code asks once
    more without streaming when a stream fails mid-reply, and says nothing of it.
    ``withdrawn``: what was streamed of the block that broke off (it is not the reply now);
    ``text``: the block as it came again (a new sample: it may say something else), which
    is. Its ``TextDone`` follows. Whoever spoke ``withdrawn`` decides what of ``text`` is
    said: the sentences it begins with that were said already are not said again."""

    withdrawn: str
    text: str


@dataclass(frozen=True)
class ConversationLost:
    """The agent no longer had the room's conversation (its history was cleared, say): this
    turn starts a new one, without what was said before."""


AgentEvent = (
    TextDelta
    | TextDone
    | ToolUse
    | ToolResult
    | PermissionRequest
    | ApiRetry
    | StreamRestarted
    | ConversationLost
)
EventCallback = Callable[[AgentEvent], None]


class TurnControl:
    """Interrupt a running turn or answer its permission requests, from any thread.

    The agent binds its handlers when its run starts; an interrupt asked for earlier is
    carried out at that moment, so there is no window in which a stop is lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._interrupt: Callable[[], None] | None = None
        self._answer: Callable[[str, Decision, str], bool] | None = None
        self.interrupted = False
        # The agent's own conversation id, as soon as it names it: a turn that then fails
        # (a timeout) is in that conversation, and the next turn resumes it.
        self.session_id: str | None = None

    def session_named(self, session_id: str) -> None:
        self.session_id = session_id

    def bind(
        self,
        *,
        interrupt: Callable[[], None],
        answer: Callable[[str, Decision, str], bool] | None = None,
    ) -> None:
        with self._lock:
            self._interrupt, self._answer = interrupt, answer
            pending = self.interrupted
        if pending:
            interrupt()

    def unbind(self) -> None:
        with self._lock:
            self._interrupt = self._answer = None

    def interrupt(self) -> None:
        """Stop the turn gracefully; the agent's conversation stays resumable. Once: asked
        again (a client gone as the server stops), the first request is already on its way,
        escalating by itself, and another would reach the agent as a second request."""
        with self._lock:
            first = not self.interrupted
            self.interrupted = True
            interrupt = self._interrupt if first else None
        if interrupt is not None:
            interrupt()

    def answer(self, request_id: str, decision: Decision, message: str = "") -> bool:
        """Answer a :class:`PermissionRequest`; False if the turn no longer waits for it."""
        with self._lock:
            answer = self._answer
        if answer is None:
            log.info("permission %s answered after the turn ended; ignored", request_id)
            return False
        return answer(request_id, decision, message)


@dataclass(frozen=True)
class AgentTurn:
    """Everything a :class:`TurnAgent` needs for one turn."""

    prompt: str
    room_id: str
    session_id: str | None = None
    on_event: EventCallback | None = None
    control: TurnControl = field(default_factory=TurnControl)
    # The conversation changed since this agent's last turn in the room (another process,
    # `ask` beside `listen`, took one): a long-lived agent resumes it from what is stored.
    afresh: bool = False


@runtime_checkable
class TurnAgent(Protocol):
    """An agent that reports its work as events and can be interrupted."""

    def run_turn(self, turn: AgentTurn) -> Any: ...  # -> core.agent_output.AgentResult


BLOCK_SEPARATOR = "\n\n"


def text_only(on_text: Callable[[str], None] | None) -> EventCallback | None:
    """An event callback that forwards the text to ``on_text`` (the spec's callback).

    Consecutive text blocks (before and after a tool call) are separated by a blank line,
    so "Let me look." and "There are three files." never run together.
    """
    if on_text is None:
        return None
    state = {"ended": False, "any": False}

    def forward(event: AgentEvent) -> None:
        if isinstance(event, TextDone):
            state["ended"] = state["any"]
        elif isinstance(event, StreamRestarted):
            # What was passed on cannot be taken back: the block comes again whole after it.
            state["ended"] = state["any"]
            forward(TextDelta(event.text))
        elif isinstance(event, TextDelta) and event.text:
            if state["ended"]:
                on_text(BLOCK_SEPARATOR)
                state["ended"] = False
            state["any"] = True
            on_text(event.text)

    return forward
