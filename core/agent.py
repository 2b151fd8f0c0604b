"""The agent engine: a tiny :class:`Agent` protocol and :class:`AgentRunner`, its CLI form.

``AgentRunner`` runs an agent command line such as
``claude -p --output-format stream-json --verbose`` once per turn: the prompt goes to stdin
(never argv, where a leading ``-`` would read as an option), ``--resume <id>`` continues the
agent's own conversation, and the output is parsed as it streams.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from core.agent_events import BLOCK_SEPARATOR, AgentTurn, ConversationLost, text_only
from core.agent_output import (
    AgentResult,
    OutputFormat,
    OutputParser,
    format_from_command,
    interpret,
    safe_agent_id,
)
from core.config import AgentConfig
from core.errors import AgentError, AgentTimeout, ConfigError, ResumeFailed
from core.ledger import AgentLedger
from core.process import RunningProcess, program_name, run_process

__all__ = ["Agent", "AgentError", "AgentResult", "AgentRunner", "AgentTimeout", "TextCallback"]

log = logging.getLogger(__name__)

TextCallback = Callable[[str], None]


class Agent(Protocol):
    """Anything that answers a prompt; ``Core`` needs nothing more (tests pass fakes)."""

    def run(
        self, prompt: str, *, session_id: str | None = None, on_text: TextCallback | None = None
    ) -> AgentResult: ...


def resuming(run: Callable[[AgentTurn, str | None], AgentResult], turn: AgentTurn) -> AgentResult:
    """``run(turn, session_id)``, once more without the id if the agent forgot it (its history
    was cleared, say): the conversation starts anew rather than the turn failing."""
    try:
        return run(turn, turn.session_id)
    except ResumeFailed as e:
        if turn.session_id is None:
            raise
        log.warning("agent conversation %s is gone (%s); starting anew", turn.session_id, e)
        if turn.on_event is not None:
            turn.on_event(ConversationLost())
        return run(turn, None)


class AgentRunner:
    """Runs the agent CLI as a subprocess, one process per turn."""

    def __init__(
        self,
        command: Sequence[str],
        timeout: float = AgentConfig.timeout_s,
        cwd: str | Path | None = None,
        *,
        kill_grace_s: float = AgentConfig.kill_grace_s,
        output_format: OutputFormat = AgentConfig.output_format,
        max_output_bytes: int = AgentConfig.max_output_bytes,
        env: Mapping[str, str] | None = None,
        interrupt_grace_s: float = 5.0,
        ledger: AgentLedger | None = None,
    ) -> None:
        """``env`` adds to (or overrides) the inherited environment of the agent process.

        The settings are checked by :class:`AgentConfig`, the one place that knows their limits.
        """
        if isinstance(command, str):  # a tuple of its characters would pass as an argv
            raise ConfigError(f"agent command must be a list of arguments, got {command!r}")
        config = AgentConfig(
            command=tuple(command),
            timeout_s=timeout,
            kill_grace_s=kill_grace_s,
            cwd="" if cwd is None else str(cwd),
            output_format=output_format,
            max_output_bytes=max_output_bytes,
        )
        self.command = config.command
        self.timeout = float(config.timeout_s)
        self.cwd = config.cwd or None
        self.kill_grace_s = config.kill_grace_s
        self.output_format: OutputFormat = config.output_format
        self.max_output_bytes = config.max_output_bytes
        self.env = dict(env) if env is not None else None
        self.interrupt_grace_s = interrupt_grace_s
        self.ledger = ledger  # records each room's running agent for a restarted assistant
        self._running: set[RunningProcess] = set()
        self._running_lock = threading.Lock()

    def stop(self) -> None:
        """Stop every run still going (shutdown): SIGTERM, then SIGKILL after the grace."""
        with self._running_lock:
            running = list(self._running)
        for process in running:
            process.stop_group()

    def run(
        self, prompt: str, *, session_id: str | None = None, on_text: TextCallback | None = None
    ) -> AgentResult:
        """One turn. Raises :class:`AgentTimeout` or :class:`AgentError` (speakable text).

        ``on_text`` is called on the calling thread, with each piece of text as it streams.
        """
        return self.run_turn(AgentTurn(prompt, "", session_id, text_only(on_text)))

    def run_turn(self, turn: AgentTurn) -> AgentResult:
        """One turn, reported as events; ``turn.control`` can interrupt it (SIGINT)."""
        return resuming(self._run_once, turn)

    def argv(self, session_id: str | None) -> list[str]:
        """The command line of one run; the prompt itself never appears in it."""
        if session_id and safe_agent_id(session_id) is None:
            # Never put something that could read as an option after --resume.
            log.warning("ignoring agent session id %r: not a plain id", session_id[:80])
            session_id = None
        resume = ["--resume", session_id] if session_id else []
        return [*self.command, *resume]

    def _run_once(self, turn: AgentTurn, session_id: str | None) -> AgentResult:
        argv = self.argv(session_id)
        mode = format_from_command(argv) if self.output_format == "auto" else self.output_format
        parser = OutputParser(mode, turn.on_event, turn.control.session_named)

        started: list[RunningProcess] = []

        def spawned(process: RunningProcess) -> None:
            started.append(process)
            with self._running_lock:
                self._running.add(process)
            if self.ledger is not None and turn.room_id:
                self.ledger.record(turn.room_id, process.pid)
            turn.control.bind(interrupt=lambda: process.interrupt(self.interrupt_grace_s))

        try:
            finished = run_process(
                argv,
                stdin_data=turn.prompt.encode("utf-8", "replace"),
                timeout_s=self.timeout,
                kill_grace_s=self.kill_grace_s,
                cwd=self.cwd,
                max_stdout_bytes=self.max_output_bytes,
                on_line=parser.feed,
                env=self.env,
                on_spawn=spawned,
            )
        finally:
            turn.control.unbind()
            if self.ledger is not None and turn.room_id:
                for process in started:  # ended and reaped: no longer the room's agent
                    self.ledger.clear(turn.room_id, process.pid)
        name = program_name(argv)
        try:
            return interpret(
                parser, finished.returncode, finished.stderr, finished.duration_s, name
            )
        except ResumeFailed:
            raise
        except AgentError:
            if not turn.control.interrupted:
                raise
            # Stopped on request by a program that does not report it the way Claude does.
            text = BLOCK_SEPARATOR.join(t.strip() for t in parser.texts if t.strip())
            session_id = parser.init_session_id or session_id
            return AgentResult(text=text, session_id=session_id, interrupted=True)
