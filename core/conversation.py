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
from pathlib import Path

from core.agent import Agent, AgentRunner, TextCallback
from core.claims import RoomClaim
from core.config import CoreConfig, SessionConfig
from core.errors import AgentError
from core.locks import LockRegistry
from core.paths import default_store_dir, validate_room_id
from core.session import Message, Session
from core.store import SessionStore

log = logging.getLogger(__name__)


class Core:
    """Conversations per room, backed by a :class:`SessionStore` and an :class:`Agent`."""

    def __init__(
        self,
        store_dir: str | Path | SessionStore,
        agent: Agent,
        *,
        idle_timeout_s: float = SessionConfig.idle_timeout_s,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Checked as [session] idle_timeout_s is, by the one dataclass that knows its limits.
        self.idle_timeout_s = SessionConfig(idle_timeout_s=idle_timeout_s).idle_timeout_s
        self.store = store_dir if isinstance(store_dir, SessionStore) else SessionStore(store_dir)
        self.agent = agent
        self._clock = clock
        self._locks = LockRegistry()

    @classmethod
    def from_config(cls, config: CoreConfig, *, agent_command: Sequence[str] | None = None) -> Core:
        """The production wiring: an :class:`AgentRunner` and the configured store."""
        agent_config = config.agent
        runner = AgentRunner(
            agent_command or agent_config.command,
            agent_config.timeout_s,
            agent_config.cwd or None,
            kill_grace_s=agent_config.kill_grace_s,
            output_format=agent_config.output_format,
            max_output_bytes=agent_config.max_output_bytes,
        )
        store_dir = config.session.store_dir
        root = Path(store_dir).expanduser() if store_dir else default_store_dir()
        return cls(root, runner, idle_timeout_s=config.session.idle_timeout_s)

    def room_lock(self, room_id: str) -> threading.Lock:
        """The room's lock: the same object for every caller while any of them holds it."""
        return self._locks.get(validate_room_id(room_id))

    def claim_room(self, room_id: str) -> RoomClaim:
        """Claim ``room_id`` for a listener's lifetime (a ``with`` block or ``release()``);
        :class:`~core.errors.RoomClaimed` if another listener, in any process, answers there."""
        return RoomClaim(self.store.root, room_id)

    def send_message(self, room_id: str, text: str, *, on_text: TextCallback | None = None) -> str:
        """Run one turn in ``room_id`` and return the reply text.

        Turns in one room run one at a time (blocking, no acquire timeout); rooms run in
        parallel. ``on_text`` gets the reply as it streams. Agent failures are recorded in the
        session, then re-raised (:class:`AgentError` / :class:`AgentTimeout`).
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
            session.add(Message(role="user", text=text, timestamp=now))
            self.store.save(session)  # the user's words survive even a crash mid-turn
            started = time.monotonic()
            try:
                result = self.agent.run(text, session_id=session.agent_session_id, on_text=on_text)
                if result.is_error:
                    raise AgentError(f"The agent reported an error: {result.text}")
            except Exception as e:
                self._record_reply(session, str(e), started, None, is_error=True)
                raise
            session.agent_session_id = result.session_id  # it may change every turn
            self._record_reply(session, result.text, started, result.cost_usd, is_error=False)
            return result.text

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
