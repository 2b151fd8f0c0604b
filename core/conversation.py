"""``Core``: from "the user said T in room R" to "here is the reply".

Per turn, under the room's lock: find the room's active session (or start one), record the
user's text and save, run the agent with the agent's own session id (``--resume``), record the
reply (or the error, which is then re-raised for the voice loop to speak) and save again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.agent import Agent, AgentRunner, TextCallback
from core.agent_events import AgentTurn, EventCallback, TurnAgent, TurnControl, text_only
from core.agent_output import AgentResult, Denial, format_from_command
from core.claude import VOICE_PROMPT, ClaudeSessions, claude_argv, is_claude
from core.config import AgentConfig, CoreConfig
from core.errors import AgentError, ConfigError
from core.locks import LockRegistry
from core.paths import default_store_dir, validate_room_id
from core.session import Message, Session
from core.store import SessionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnOutcome:
    """How a turn ended: the reply (possibly partial), and whether it was stopped on request."""

    reply: str
    interrupted: bool = False
    denials: tuple[Denial, ...] = ()


class Core:
    """Conversations per room, backed by a :class:`SessionStore` and an :class:`Agent`."""

    def __init__(
        self,
        store_dir: str | Path | SessionStore,
        agent: Agent,
        *,
        idle_timeout_s: float = 1800.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if idle_timeout_s < 0:
            raise ValueError("idle_timeout_s must be 0 (never) or positive")
        self.store = store_dir if isinstance(store_dir, SessionStore) else SessionStore(store_dir)
        self.agent = agent
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._locks = LockRegistry()

    @classmethod
    def from_config(cls, config: CoreConfig, *, agent_command: Sequence[str] | None = None) -> Core:
        """The production wiring: the configured agent and store."""
        store_dir = config.session.store_dir
        root = Path(store_dir).expanduser() if store_dir else default_store_dir()
        agent = build_agent(config.agent, agent_command or config.agent.command)
        return cls(root, agent, idle_timeout_s=config.session.idle_timeout_s)

    def prepare(self, room_id: str) -> None:
        """Start the room's agent ahead of its first turn, where the agent can (Claude)."""
        prepare = getattr(self.agent, "prepare", None)
        if callable(prepare):
            session = self.active_session(room_id)
            prepare(room_id, session.agent_session_id if session else None)

    def room_lock(self, room_id: str) -> threading.Lock:
        """The room's lock: the same object for every caller while any of them holds it."""
        return self._locks.get(validate_room_id(room_id))

    def send_message(self, room_id: str, text: str, *, on_text: TextCallback | None = None) -> str:
        """Run one turn in ``room_id`` and return the reply text.

        Turns in one room run one at a time (blocking, no acquire timeout); rooms run in
        parallel. ``on_text`` gets the reply as it streams. Agent failures are recorded in the
        session, then re-raised (:class:`AgentError` / :class:`AgentTimeout`).
        """
        return self.run_turn(room_id, text, on_event=text_only(on_text)).reply

    def run_turn(
        self,
        room_id: str,
        text: str,
        *,
        on_event: EventCallback | None = None,
        control: TurnControl | None = None,
        revises: bool = False,
    ) -> TurnOutcome:
        """:meth:`send_message` with the agent's work reported as events.

        ``control`` interrupts the turn or answers the agent's questions. ``revises``: the
        text replaces the room's last request, which the user had not finished (its exchange
        is dropped from the session; the agent itself may remember the cut-short version).
        An interrupted turn is recorded and returned, not raised.
        """
        validate_room_id(room_id)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the message is empty: there is nothing to send to the agent")
        lock = self._locks.get(room_id)  # this reference keeps the room's entry alive
        with lock, self._room_across_processes(room_id):
            now = self._clock()
            session = self._active(room_id, now) or Session(
                room_id=room_id, created_at=now, updated_at=now
            )
            if revises:
                _drop_last_request(session)
            session.add(Message(role="user", text=text, timestamp=now))
            self.store.save(session)  # the user's words survive even a crash mid-turn
            started = time.monotonic()
            turn = AgentTurn(
                text, room_id, session.agent_session_id, on_event, control or TurnControl()
            )
            try:
                result = self._call_agent(turn)
                if result.is_error:
                    raise AgentError(f"The agent reported an error: {result.text}")
            except Exception as e:
                self._record_reply(session, str(e), started, None, is_error=True)
                raise
            session.agent_session_id = result.session_id or session.agent_session_id
            self._record_reply(session, result.text, started, result.cost_usd, is_error=False)
            return TurnOutcome(result.text, result.interrupted, result.denials)

    def _call_agent(self, turn: AgentTurn) -> AgentResult:
        if isinstance(self.agent, TurnAgent):
            result: AgentResult = self.agent.run_turn(turn)
            return result
        # A plain agent (the spec's interface) streams text only and cannot be interrupted.
        return self.agent.run(
            turn.prompt, session_id=turn.session_id, on_text=_text_of(turn.on_event)
        )

    def reset(self, room_id: str) -> None:
        """End the room's conversation: its next message starts a new one."""
        validate_room_id(room_id)
        lock = self._locks.get(room_id)
        with lock, self._room_across_processes(room_id):
            entry = self.store.latest_for_room(room_id)
            if entry is None or entry["closed"]:
                return
            session = self.store.load(entry["session_id"])
            if session is not None:
                session.closed = True
                self.store.save(session)
                log.info("room %s: conversation %s closed", room_id, session.session_id)

    @contextlib.contextmanager
    def _room_across_processes(self, room_id: str) -> Iterator[None]:
        """The room's turn also excludes other processes sharing the store (``ask`` while
        ``listen`` runs): each would load the session, append and save, and one turn would be
        lost. An ``flock`` is released by the kernel if its holder dies, so it never goes stale.
        """
        path = self.store.root / f".room-{room_id}.lock"  # room ids are validated file names
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def active_session(self, room_id: str) -> Session | None:
        """The session the room's next message would continue, or ``None`` for a new one."""
        validate_room_id(room_id)
        return self._active(room_id, self._clock())

    def _active(self, room_id: str, now: float) -> Session | None:
        entry = self.store.latest_for_room(room_id)
        if entry is None or entry["closed"]:
            return None
        idle_s = now - entry["updated_at"]
        if self.idle_timeout_s and idle_s > self.idle_timeout_s:
            log.info("room %s: idle for %.0f s, starting a new conversation", room_id, idle_s)
            return None
        return self.store.load(entry["session_id"])

    def stop(self) -> None:
        """Stop every agent process this core started (at shutdown)."""
        stop = getattr(self.agent, "stop", None)
        if callable(stop):
            stop()

    def _record_reply(
        self, session: Session, text: str, started: float, cost: float | None, *, is_error: bool
    ) -> None:
        duration_ms = round((time.monotonic() - started) * 1000)
        session.add(
            Message(
                role="assistant",
                text=text,
                timestamp=self._clock(),
                duration_ms=duration_ms,
                cost_usd=cost,
                is_error=is_error,
            )
        )
        self.store.save(session)


def _drop_last_request(session: Session) -> None:
    """Remove the last user message and the reply that followed it, if any."""
    for i in range(len(session.messages) - 1, -1, -1):
        if session.messages[i].role == "user":
            del session.messages[i:]
            return


def _text_of(on_event: EventCallback | None) -> TextCallback | None:
    if on_event is None:
        return None
    from core.agent_events import TextDelta

    def forward(text: str) -> None:
        on_event(TextDelta(text))

    return forward


def build_agent(config: AgentConfig, command: Sequence[str]) -> Agent:
    """Claude Code gets the voice flags and, in session mode, a process per room."""
    if not is_claude(command):
        if config.mode == "session":
            raise ConfigError("agent.mode = 'session' needs Claude Code as agent.command")
        return AgentRunner(
            command,
            config.timeout_s,
            config.cwd or None,
            kill_grace_s=config.kill_grace_s,
            output_format=config.output_format,
            max_output_bytes=config.max_output_bytes,
        )
    prompt = "\n\n".join(
        p for p in (VOICE_PROMPT if config.voice_prompt else "", config.append_system_prompt) if p
    )
    streams = format_from_command(command) in ("stream-json", "sniff")
    session = config.mode == "session" or (config.mode == "auto" and streams)
    argv = claude_argv(
        command,
        session=session,
        ask_permissions=config.ask_permissions,
        permission_mode=config.permission_mode,
        allowed_tools=config.allowed_tools,
        system_prompt=prompt,
    )
    if not session:
        return AgentRunner(
            argv,
            config.timeout_s,
            config.cwd or None,
            kill_grace_s=config.kill_grace_s,
            output_format=config.output_format,
            max_output_bytes=config.max_output_bytes,
        )
    return ClaudeSessions(
        argv,
        config.timeout_s,
        config.cwd or None,
        kill_grace_s=config.kill_grace_s,
        permission_timeout_s=config.permission_timeout_s * 2,  # the voice loop asks first
        idle_stop_s=config.idle_stop_s,
        max_output_bytes=config.max_output_bytes,
    )
