"""``Core``: from "the user said T in room R" to "here is the reply".

Per turn, under the room's lock: find the room's active session (or start one), record the
user's text and save, run the agent with the agent's own session id (``--resume``), record the
reply (or the error, which is then re-raised for the voice loop to speak) and save again.

An answer is never thrown away because the store failed (disk full, a broken entry): the
reply is still returned, the failure is logged and reported in :attr:`TurnOutcome.save_error`,
and the unsaved conversation stays in memory, to be saved by the room's next turn or by the
next successful save in any room (:meth:`Core.save_pending`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.agent import Agent, AgentRunner, TextCallback
from core.agent_events import (
    BLOCK_SEPARATOR,
    AgentEvent,
    AgentTurn,
    EventCallback,
    StreamRestarted,
    TextDelta,
    TextDone,
    TurnAgent,
    TurnControl,
    text_only,
)
from core.agent_output import AgentResult, Denial, format_from_command
from core.claims import RoomClaim
from core.claude import VOICE_PROMPT, ClaudeSessions, claude_argv, is_claude, is_echo_agent
from core.config import AgentConfig, CoreConfig, SessionConfig
from core.errors import AgentError, ConfigError, StoreError
from core.ledger import AgentLedger
from core.locks import LockRegistry
from core.paths import validate_room_id
from core.process import program_name
from core.session import IndexEntry, Session, make_message
from core.store import SessionStore

log = logging.getLogger(__name__)

_ROOMS_SEEN = 1024  # rooms whose last known state Core keeps (a Wyoming chat can be a room)
_AFTER_S = 0.001  # how much later than the room's last conversation a new one is stamped


@dataclass(frozen=True)
class TurnOutcome:
    """How a turn ended: the reply (possibly partial), whether it was stopped on request, and
    whether it reached the disk.

    ``save_error`` is set when the turn could not be saved: the reply is good, the turn is kept
    in memory and saved later. Its text names files and ids, for the log; tell the user only
    that the conversation could not be saved.
    """

    reply: str
    interrupted: bool = False
    denials: tuple[Denial, ...] = ()
    save_error: StoreError | None = None

    @property
    def saved(self) -> bool:
        return self.save_error is None


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
        # Whose conversations this core resumes: an id another agent gave is not passed on.
        command = list(getattr(agent, "command", None) or ())
        self.agent_program = program_name(command)
        # Earlier releases named a script by its interpreter ("python3" for python3 a.py):
        # such a record is still this program's.
        self._older_name = os.path.basename(command[0]) if command else None
        self._clock = clock
        self._locks = LockRegistry()
        self._stopping = threading.Event()  # stop(): turns still waiting for a room give up
        # room -> its conversation whose last save failed. An entry changes only under its
        # room's lock; the dict is shared by the rooms' threads (single, atomic operations).
        self._unsaved: dict[str, Session] = {}
        # room -> (conversation, messages) as this core's agent last saw it (its last turn
        # there, or prepare): a change means another process took a turn since (see
        # AgentTurn.afresh). The rooms used longest ago are forgotten beyond _ROOMS_SEEN.
        self._seen: dict[str, tuple[str, int]] = {}
        self._seen_lock = threading.Lock()  # (rooms' turns end on threads of their own)

    @classmethod
    def from_config(cls, config: CoreConfig, *, agent_command: Sequence[str] | None = None) -> Core:
        """The production wiring: the configured agent and store."""
        root = config.session.root
        command = agent_command or config.agent.command
        agent = build_agent(config.agent, command, ledger=AgentLedger(root))
        return cls(root, agent, idle_timeout_s=config.session.idle_timeout_s)

    def prepare(self, room_id: str) -> None:
        """Start the room's agent ahead of its first turn, where the agent can (Claude)."""
        prepare = getattr(self.agent, "prepare", None)
        if callable(prepare):
            session = self.active_session(room_id)
            if session is not None:
                self._saw(room_id, session)
            prepare(room_id, self._resume_id(session) if session else None)

    def _saw(self, room_id: str, session: Session) -> None:
        with self._seen_lock:
            self._seen.pop(room_id, None)  # (to the end: the order is of use)
            self._seen[room_id] = (session.session_id, len(session.messages))
            if len(self._seen) > _ROOMS_SEEN:
                del self._seen[next(iter(self._seen))]

    def _resume_id(self, session: Session) -> str | None:
        """The agent conversation this core's agent goes on with: none when the room's was
        with another program (``--resume`` with its id would fail every turn)."""
        if session.agent_program not in (None, self.agent_program, self._older_name):
            if session.agent_session_id:
                log.debug(
                    "room %s: its conversation with %s is not resumed by %s, which starts its own",
                    session.room_id,
                    session.agent_program,
                    self.agent_program,
                )
            return None
        return session.agent_session_id

    def _note_agent_id(self, session: Session, agent_id: str | None) -> None:
        if agent_id:
            session.agent_session_id, session.agent_program = agent_id, self.agent_program

    def room_lock(self, room_id: str) -> threading.Lock:
        """The room's lock: the same object for every caller while any of them holds it."""
        return self._locks.get(validate_room_id(room_id))

    def claim_room(self, room_id: str) -> RoomClaim:
        """Claim ``room_id`` for a listener's lifetime (a ``with`` block or ``release()``);
        :class:`~core.errors.RoomClaimed` if another listener, in any process, answers there.
        An agent a dead assistant left running in the room is stopped first."""
        claim = RoomClaim(self.store.root, room_id)
        AgentLedger(self.store.root).reap(room_id)
        return claim

    def send_message(self, room_id: str, text: str, *, on_text: TextCallback | None = None) -> str:
        """Run one turn in ``room_id`` and return the reply text.

        Turns in one room run one at a time (blocking, no acquire timeout); rooms run in
        parallel. ``on_text`` gets the reply as it streams. Agent failures are recorded in the
        session, then re-raised (:class:`AgentError` / :class:`AgentTimeout`). A turn that
        cannot be saved still returns its reply (:meth:`run_turn` says it was not saved).
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
        An interrupted turn is recorded and returned, not raised. A turn that could not be
        saved is returned with :attr:`TurnOutcome.save_error` set.
        """
        validate_room_id(room_id)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the message is empty: there is nothing to send to the agent")
        lock = self._locks.get(room_id)  # this reference keeps the room's entry alive
        with lock, self.store.lock_room(room_id, until=self._stopping) as held:
            if not held:  # another process's turn had the room until this one stopped
                raise AgentError("The assistant is shutting down.")
            AgentLedger(self.store.root).reap(room_id)  # never resume beside an orphan
            now = self._clock()
            session = self._session_for_turn(room_id, now)
            with self._seen_lock:
                seen = self._seen.get(room_id)
            afresh = seen is not None and seen != (session.session_id, len(session.messages))
            _mark_unanswered(room_id, session)
            if revises:
                _drop_last_request(session)
            session.add(make_message("user", text, timestamp=now))
            self._save(room_id, session)  # the user's words survive even a crash mid-turn
            started = time.monotonic()
            streamed = _Streamed(on_event) if on_event is not None else None
            turn = AgentTurn(
                text,
                room_id,
                self._resume_id(session),
                streamed,
                control or TurnControl(),
                afresh=afresh,
            )
            try:
                result = self._call_agent(turn)
                if result.is_error:
                    raise AgentError(f"The agent reported an error: {result.text}")
            except Exception as e:
                # Claude keeps a failed turn in its conversation: the next turn resumes it.
                self._note_agent_id(session, turn.control.session_id)
                said = streamed.text.strip() if streamed is not None else ""
                # What the agent had written of its reply (most of it heard) stays on record.
                record = f"{said}{BLOCK_SEPARATOR}{e}" if said else str(e)
                self._record_reply(session, record, started, None, is_error=True)
                self._save(room_id, session)  # if this fails too, unsaved_rooms() says so
                self._saw(room_id, session)
                raise
            self._note_agent_id(session, result.session_id)
            self._record_reply(
                session,
                result.text,
                started,
                result.cost_usd,
                is_error=False,
                interrupted=result.interrupted or None,
            )
            save_error = self._save(room_id, session)
            self._saw(room_id, session)
        if save_error is None and self._unsaved:
            self.save_pending()  # the store works again: save what other rooms could not
        return TurnOutcome(result.text, result.interrupted, result.denials, save_error)

    def _call_agent(self, turn: AgentTurn) -> AgentResult:
        if turn.control.interrupted:  # stopped before it began: the agent never hears of it
            return AgentResult(text="", session_id=turn.session_id, interrupted=True)
        if isinstance(self.agent, TurnAgent):
            result: AgentResult = self.agent.run_turn(turn)
            return result
        # A plain agent (the spec's interface) streams text only and cannot be interrupted.
        return self.agent.run(
            turn.prompt, session_id=turn.session_id, on_text=_text_of(turn.on_event)
        )

    def reset(self, room_id: str) -> bool:
        """End the room's conversation: its next message starts a new one. False: it had
        none open."""
        validate_room_id(room_id)
        lock = self._locks.get(room_id)
        with lock, self.store.lock_room(room_id):
            session = self._unsaved.get(room_id)
            if session is None:
                latest = self._latest(room_id)
                if latest is None or latest[0]["closed"]:
                    return False
                session = latest[1]
            if session is None:
                return False
            session.closed = True
            error = self._save(room_id, session)
            if error is not None:
                session.closed = False  # not reset after all: its turns stay unsaved
                raise error
            log.info("room %s: conversation %s closed", room_id, session.session_id)
            return True

    def save_pending(self) -> int:
        """Try again to save each conversation whose last save failed; returns how many are
        still unsaved. A room busy with a turn is skipped: that turn saves it."""
        for room_id in list(self._unsaved):
            lock = self._locks.get(room_id)
            if not lock.acquire(blocking=False):
                continue
            try:
                with self.store.lock_room(room_id, wait=False) as held:
                    session = self._unsaved.get(room_id)
                    if held and session is not None:
                        self._save(room_id, session)
            finally:
                lock.release()
        return len(self._unsaved)

    def unsaved_rooms(self) -> list[str]:
        """Rooms whose conversation holds turns that are not on disk yet."""
        return sorted(self._unsaved)

    def active_session(self, room_id: str) -> Session | None:
        """The session the room's next message would continue, or ``None`` for a new one."""
        validate_room_id(room_id)
        return self._unsaved.get(room_id) or self._active(room_id, self._clock())

    def stop(self) -> None:
        """At shutdown: one more try to save what could not be saved, then stop every agent
        process this core started."""
        self._stopping.set()
        if self._unsaved and self.save_pending():
            busy = [room for room in self.unsaved_rooms() if self._locks.get(room).locked()]
            if busy:  # its turn saves it as it ends, if it ends before the process does
                log.warning(
                    "room(s) %s: a turn still running saves its conversation", ", ".join(busy)
                )
            if lost := [room for room in self.unsaved_rooms() if room not in busy]:
                log.error(
                    "cannot save the conversation of room(s) %s: its latest turns are lost as "
                    "the assistant stops (see the errors above)",
                    ", ".join(lost),
                )
        stop = getattr(self.agent, "stop", None)
        if callable(stop):
            stop()

    def _session_for_turn(self, room_id: str, now: float) -> Session:
        unsaved = self._unsaved.get(room_id)
        if unsaved is not None:
            if not self._is_idle(room_id, unsaved.updated_at, now):
                return unsaved
            if self._save(room_id, unsaved) is not None:
                return unsaved  # still not on disk: keep it rather than lose it
        try:
            active = self._active(room_id, now)
        except StoreError as e:
            log.warning("room %s: cannot read its conversation (%s); starting anew", room_id, e)
            active = None
        return active or self._new_session(room_id, now)

    def _new_session(self, room_id: str, now: float) -> Session:
        """A new conversation, stamped later than the room's last one even when the clock is
        behind that (a Raspberry Pi without a clock chip boots with an old time): the room's
        newest session is the one it goes on with, and a new one older than the closed one
        would be left at every turn."""
        try:
            latest = self.store.latest_for_room(room_id)
        except StoreError:
            latest = None  # (already reported by the look for the active session)
        if latest is not None:
            now = max(now, latest["updated_at"] + _AFTER_S)
        return Session(room_id=room_id, created_at=now, updated_at=now)

    def _active(self, room_id: str, now: float) -> Session | None:
        latest = self._latest(room_id)
        if latest is None:
            return None
        _, session = latest
        # The session's own word, not its index entry's: a process killed between writing
        # the two (a reset, a turn) left the entry behind.
        if session is None or session.closed or self._is_idle(room_id, session.updated_at, now):
            return None
        return session

    def _latest(self, room_id: str) -> tuple[IndexEntry, Session | None] | None:
        """The room's newest index entry and its session (``None``: its file is gone). An
        index that gives the room another room's session (edited by hand, or copied with
        another store's files) is rebuilt from the files first: one room's words must never
        go into another's conversation."""
        for rebuilt in (False, True):
            entry = self.store.latest_for_room(room_id)
            if entry is None:
                return None
            session = self.store.load(entry["session_id"])
            if session is None or session.room_id == room_id:
                return entry, session
            if rebuilt:
                break
            log.warning(
                "the session index gives room %s the conversation %s, which is room %s's: "
                "rebuilding the index from the session files",
                room_id,
                session.session_id,
                session.room_id,
            )
            self.store.rebuild_index()
        return None

    def _is_idle(self, room_id: str, updated_at: float, now: float) -> bool:
        idle_s = now - updated_at
        if self.idle_timeout_s and idle_s > self.idle_timeout_s:
            log.info("room %s: idle for %.0f s, starting a new conversation", room_id, idle_s)
            return True
        return False

    def _save(self, room_id: str, session: Session) -> StoreError | None:
        """Save ``session``; on failure keep it as the room's unsaved conversation."""
        if self._unsaved.get(room_id) is session:
            self._fork_if_changed_on_disk(room_id, session)
        try:
            self.store.save(session)
        except StoreError as e:
            self._unsaved[room_id] = session
            log.error(
                "room %s: cannot save conversation %s (%s); it is kept in memory and saved "
                "with the room's next turn or the next save that works while the assistant runs",
                room_id,
                session.session_id,
                e,
            )
            return e
        if self._unsaved.pop(room_id, None) is not None:
            log.info("room %s: saved conversation %s after all", room_id, session.session_id)
        return None

    def _fork_if_changed_on_disk(self, room_id: str, session: Session) -> None:
        """Another process may have saved turns of this conversation meanwhile; writing ours
        over them would lose those, so ours becomes a conversation of its own."""
        try:
            on_disk = self.store.load(session.session_id)
        except StoreError:
            return  # the save will fail too, or succeed over an unusable file
        if on_disk is None or (
            on_disk.messages == session.messages[: len(on_disk.messages)]
            and on_disk.closed <= session.closed
        ):
            return  # what is on disk is an older (or partly written) copy of ours
        old = session.session_id
        session.session_id = str(uuid.uuid4())
        log.warning(
            "room %s: conversation %s changed on disk while this copy could not be saved; "
            "saving this copy as %s",
            room_id,
            old,
            session.session_id,
        )

    def _record_reply(
        self,
        session: Session,
        text: str,
        started: float,
        cost: float | None,
        *,
        is_error: bool,
        interrupted: bool | None = None,
    ) -> None:
        duration_ms = round((time.monotonic() - started) * 1000)
        session.add(
            make_message(
                "assistant",
                text,
                timestamp=self._clock(),
                duration_ms=duration_ms,
                cost_usd=cost,
                is_error=is_error,
                interrupted=interrupted,
            )
        )


class _Streamed:
    """Passes a turn's events on, keeping the text the agent streamed (a block that broke
    off as what came again whole in its place)."""

    def __init__(self, on_event: EventCallback) -> None:
        self._on_event = on_event
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __call__(self, event: AgentEvent) -> None:
        if isinstance(event, TextDelta):
            self._parts.append(event.text)
        elif isinstance(event, TextDone) and self._parts and self._parts[-1] != BLOCK_SEPARATOR:
            self._parts.append(BLOCK_SEPARATOR)
        elif isinstance(event, StreamRestarted):
            text = self.text
            if event.withdrawn and text.endswith(event.withdrawn):
                text = text[: -len(event.withdrawn)]
            self._parts = [text + event.text]
        self._on_event(event)


# Recorded in place of the reply to a request whose turn was killed (kill -9, power loss), so
# the conversation says it went unanswered and stays a user/assistant alternation. Worded for
# any cause: another tool may have written a session that ends with a request.
UNANSWERED = "No reply was recorded for this request."


def _mark_unanswered(room_id: str, session: Session) -> None:
    """A session that ends with the user's words, found under both room locks: every turn that
    ends records a reply, so that turn was killed before it could."""
    if not session.messages or session.messages[-1]["role"] != "user":
        return
    request = session.messages[-1]
    log.warning(
        "room %s: the request %r has no reply (the assistant was likely stopped during its "
        "turn); the conversation records that",
        room_id,
        request["content"][:80],
    )
    session.add(
        make_message("assistant", UNANSWERED, timestamp=request.get("timestamp"), is_error=True)
    )


def _drop_last_request(session: Session) -> None:
    """Remove the last user message and the reply that followed it, if any."""
    for i in range(len(session.messages) - 1, -1, -1):
        if session.messages[i]["role"] == "user":
            del session.messages[i:]
            return


def _text_of(on_event: EventCallback | None) -> TextCallback | None:
    if on_event is None:
        return None

    def forward(text: str) -> None:
        on_event(TextDelta(text))

    return forward


def build_agent(
    config: AgentConfig, command: Sequence[str], *, ledger: AgentLedger | None = None
) -> Agent:
    """Claude Code gets the voice flags and, in session mode, a process per room (so does the
    echo agent, which speaks the same protocol)."""
    claude = is_claude(command)
    sessions = claude or is_echo_agent(command)
    if config.mode == "session" and not sessions:
        raise ConfigError(
            "agent.mode = 'session' needs Claude Code (or the echo agent) as agent.command"
        )
    streams = format_from_command(command) in ("stream-json", "sniff")
    session = sessions and (config.mode == "session" or (config.mode == "auto" and streams))
    if claude:
        parts = (VOICE_PROMPT if config.voice_prompt else "", config.append_system_prompt)
        command = claude_argv(
            command,
            session=session,
            ask_permissions=config.ask_permissions,
            permission_mode=config.permission_mode,
            allowed_tools=config.allowed_tools,
            system_prompt="\n\n".join(p for p in parts if p),
        )
    elif session:
        if not streams:
            raise ConfigError("agent.mode = 'session' needs stream-json output")
        command = (*command, "--input-format", "stream-json")
    if session:
        return ClaudeSessions(
            command,
            config.timeout_s,
            config.workdir,
            kill_grace_s=config.kill_grace_s,
            permission_timeout_s=config.permission_timeout_s * 2,  # the voice loop asks first
            idle_stop_s=config.idle_stop_s,
            max_processes=config.max_processes,
            max_output_bytes=config.max_output_bytes,
            ledger=ledger,
        )
    return AgentRunner(
        command,
        config.timeout_s,
        config.workdir,
        kill_grace_s=config.kill_grace_s,
        output_format=config.output_format,
        max_output_bytes=config.max_output_bytes,
        ledger=ledger,
    )
