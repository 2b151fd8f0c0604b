"""Claude Code as a voice agent: one long-lived stream-json process per room.

Starting the CLI costs about a second before its first event; a process kept per room answers
a new message in tens of milliseconds. Each turn writes one user message to its stdin and reads
events until the ``result``. The same pipe carries the control protocol:

- ``can_use_tool`` requests (``--permission-prompt-tool stdio``) become
  :class:`~core.agent_events.PermissionRequest` events; the caller answers through the turn's
  :class:`~core.agent_events.TurnControl`, and no answer in time is a "no" with a reason;
- an interrupt is a ``control_request`` of subtype ``interrupt`` (the process lives on and the
  conversation is intact), then SIGINT, then a kill, each after a grace period.

A process that dies, hangs or prints something that is not JSON is discarded; the next turn
starts a fresh one that resumes the conversation (``--resume``). Idle processes are stopped.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from core.agent import TextCallback, resuming
from core.agent_events import AgentTurn, ApiRetry, Decision, PermissionRequest, text_only
from core.agent_output import (
    AgentResult,
    OutputParser,
    finite,
    format_from_command,
    interpret,
    loads,
    safe_agent_id,
)
from core.errors import AgentError, AgentLoginError, AgentTimeout, AgentUnavailable, ConfigError
from core.ledger import AgentLedger
from core.lifeline import Lifeline, default_lifeline
from core.process import keep_stderr, program_name, spawn
from core.reaper import Stray, kill_strays, kill_tree, strays

log = logging.getLogger(__name__)

VOICE_PROMPT = (
    "The user is talking to you through a voice interface: your replies are read aloud by a "
    "speech synthesizer. Answer in a few short, plain spoken sentences. Do not use Markdown, "
    "lists, tables or emoji, and never read out code, file contents, long paths or commands: "
    "say what you did or found, and offer details if the user wants them."
)
_IDLE_CHECK_S = 30.0
# A refused login is given up after this many retries (the first may be a token refresh).
LOGIN_RETRIES = 2
_NOT_ANSWERED = "The user did not answer in time, so this was not allowed."
NOBODY_ANSWERS = "Nobody can answer permission questions in this session, so this was not allowed."
BETWEEN_TURNS = "The user was not asked: this came between their requests, so it was not allowed."


def _check_login(process: _Process, retry: ApiRetry | None) -> None:
    """Claude Code tries a refused login for minutes; past a token refresh it stays refused."""
    if retry is not None and retry.refused_login and retry.attempt >= LOGIN_RETRIES:
        raise AgentLoginError(
            f"The agent ({process.name}) was refused by its service ({_retry_reason(retry)}). "
            "Log in again (claude /login) or check ANTHROPIC_API_KEY."
        )


def _retry_reason(retry: ApiRetry) -> str:
    said = f"{retry.status}" if retry.status is not None else "no answer"
    return f"{said}, {retry.error}" if retry.error else said


def is_claude(command: Sequence[str]) -> bool:
    return bool(command) and os.path.basename(command[0]) == "claude"


def is_echo_agent(command: Sequence[str]) -> bool:
    """``python -m core.echo_agent ...``, which also speaks Claude's session protocol."""
    return any(a == "-m" and b == "core.echo_agent" for a, b in itertools.pairwise(command))


def claude_argv(
    command: Sequence[str],
    *,
    session: bool,
    ask_permissions: bool = True,
    permission_mode: str = "",
    allowed_tools: Sequence[str] = (),
    system_prompt: str = "",
) -> tuple[str, ...]:
    """``command`` plus the flags the voice front-end needs; flags already there are kept."""
    argv = list(command)

    def has(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in argv)

    if not has("-p") and not has("--print"):
        argv.append("-p")
    streaming = format_from_command(argv) in ("stream-json", "sniff")
    if not streaming and session:
        raise ConfigError(
            "agent.mode = 'session' needs Claude's stream-json output: remove "
            "--output-format from agent.command"
        )

    def add(flag: str, *value: str, unless: str = "") -> None:
        if not has(flag) and not (unless and has(unless)):
            argv.extend((flag, *value))

    if streaming:  # (with json or text output the reply comes whole, at the end)
        add("--output-format", "stream-json")
        add("--verbose")  # stream-json output requires it
        add("--include-partial-messages")  # speak from the first words
    if session:
        add("--input-format", "stream-json")
        # It echoes each message as it takes it up: what it printed before the echo belongs
        # to a turn of its own (a background task that ended), not to the prompt.
        add("--replay-user-messages")
        if ask_permissions:
            add("--permission-prompt-tool", "stdio")
    if permission_mode:
        add("--permission-mode", permission_mode)
    if allowed_tools:
        add("--allowedTools", ",".join(allowed_tools), unless="--allowed-tools")
    if system_prompt:
        add("--append-system-prompt", system_prompt)
    return tuple(argv)


class _Lines:
    """The lines a process printed that its turn has not read yet: at most ``limit`` bytes of
    them, each counted with what holding it costs, so a flood waits in its pipe, not here.
    One line may be longer (the turn then stops it at agent.max_output_bytes)."""

    _COST = 64  # what a bytes object and its place in the deque take beside its data

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lines: collections.deque[bytes | None] = collections.deque()
        self._held = 0
        self._changed = threading.Condition()
        self._closed = False

    def put(self, line: bytes) -> bool:
        """Waits for room; False once closed (the reader stops)."""
        cost = len(line) + self._COST
        with self._changed:
            self._changed.wait_for(
                lambda: self._closed or not self._held or self._held + cost <= self._limit
            )
            if self._closed:
                return False
            self._lines.append(line)
            self._held += cost
            self._changed.notify_all()
        return True

    def end(self) -> None:
        """No more lines: get returns None after the last."""
        with self._changed:
            self._lines.append(None)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def get(self, timeout: float) -> bytes | None:
        """The next line; None at the end; queue.Empty after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._lines, timeout):
                raise queue.Empty
            line = self._lines.popleft()
            if line is not None:
                self._held -= len(line) + self._COST
                self._changed.notify_all()
            return line

    @property
    def held(self) -> int:
        return self._held

    @property
    def waiting(self) -> bool:
        """Something it printed (or its end) waits unread."""
        with self._changed:
            return bool(self._lines)


class _Process:
    """One CLI process in its own process group, stdin kept open, stdout read as lines."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None,
        env: Mapping[str, str] | None,
        room: str,
        session_id: str | None,
        max_line_bytes: int,
        lifeline: Lifeline,
        ledger: AgentLedger | None,
    ) -> None:
        self.room = room
        self.session_id = session_id
        self.name = program_name(argv)
        self.echoes = False  # it has echoed a prompt (--replay-user-messages): see _BeforeEcho
        self._lifeline = lifeline
        self.proc = spawn(argv, cwd, None if env is None else {**os.environ, **env}, lifeline)
        self._ledger = ledger
        if ledger is not None:
            ledger.record(room, self.proc.pid)
        self.lines = _Lines(max_line_bytes)
        self.stderr = bytearray()
        self.busy = False
        self.turn = 0  # counts turns: an interrupt belongs to one, never to the next
        self.used = False  # it has run a turn (a fresh process can take any new conversation)
        self.last_used = time.monotonic()
        self.spent_usd = 0.0  # Claude's total_cost_usd after its last turn
        self.answered = False  # its turn ended with a result line (an error's too)
        self._write_lock = threading.Lock()
        self._max_line = max_line_bytes
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._start(self._read_stdout, self.proc.stdout)
        self._stderr_reader = self._start(self._read_stderr, self.proc.stderr)
        log.info("started %s for room %s (pid %d)", self.name, room, self.proc.pid)

    def _start(self, target: Any, pipe: IO[bytes]) -> threading.Thread:
        name = f"{self.name}-{self.proc.pid}-{target.__name__.strip('_')}"
        thread = threading.Thread(target=target, args=(pipe,), name=name, daemon=True)
        thread.start()
        return thread

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: Mapping[str, Any], *, turn: int | None = None) -> None:
        """Write one message; with ``turn``, only while that turn is still running."""
        data = (json.dumps(message) + "\n").encode()
        assert self.proc.stdin is not None
        with self._write_lock:
            if turn is not None and not self.running(turn):
                return
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError) as e:
                raise AgentError(f"The agent ({self.name}) is no longer taking input.") from e

    def respond(self, request_id: str, verdict: Mapping[str, Any]) -> None:
        """Answer a permission request (``can_use_tool``) with ``verdict``."""
        response = {"subtype": "success", "request_id": request_id, "response": verdict}
        self.send({"type": "control_response", "response": response})

    def refuse_request(self, request_id: str, subtype: object) -> None:
        """Answer a control request this front-end does not serve."""
        error = f"unsupported control request {subtype!r}"
        response = {"subtype": "error", "request_id": request_id, "error": error}
        self.send({"type": "control_response", "response": response})

    def spend(self, total: object) -> float | None:
        """The cost of the turn that ended: Claude reports what its process has spent so far
        (``total_cost_usd``), from 0 when it starts. None: it did not say."""
        total = finite(total)
        if total is None or total < 0:
            return None
        spent, self.spent_usd = max(0.0, total - self.spent_usd), total
        return spent

    def exits_within(self, seconds: float) -> bool:
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def running(self, turn: int) -> bool:
        return self.busy and self.turn == turn

    def signal(self, sig: signal.Signals) -> None:
        if not self.alive:
            return
        if sig == signal.SIGKILL:
            kill_tree(self.proc.pid)  # its Bash tools run in sessions of their own
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def close(self, grace_s: float) -> None:
        """Closing stdin ends it cleanly; then SIGTERM, then SIGKILL, to the whole group."""
        if self.proc.stdin is not None:
            with self._write_lock, contextlib.suppress(OSError):
                self.proc.stdin.close()
        found: list[Stray] = []
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                if sig == signal.SIGTERM and self.alive:  # while it still has them
                    found = strays(self.proc.pid)  # its tools in sessions of their own
                self.signal(sig)
            try:
                self.proc.wait(grace_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Whatever else is left in its group (a tool's children) goes too, and the tools it
        # had to be signalled away from (exited, it can no longer end them).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        kill_strays(found)
        if self.proc.poll() is not None:
            self._lifeline.release(self.proc.pid)
        if self._ledger is not None:
            self._ledger.clear(self.room, self.proc.pid)
        self.lines.close()  # a reader waiting for room to queue a line stops

    def stderr_text(self, wait_s: float = 0.0) -> str:
        """What it wrote to stderr; ``wait_s`` for the rest once it has exited."""
        self._stderr_reader.join(wait_s)
        return bytes(self.stderr).decode("utf-8", "replace")

    def _read_stdout(self, pipe: IO[bytes]) -> None:
        try:
            while (line := pipe.readline(self._max_line + 1)) and self.lines.put(line):
                pass
        except (OSError, ValueError) as e:
            log.warning("reading the agent's output failed: %s", e)
        finally:
            self.lines.end()

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        keep_stderr(pipe, self.stderr)


def _rules_for(tool: object, suggestions: object) -> list[dict[str, Any]]:
    """Of Claude's suggestions, the rules that allow ``tool`` itself. It also suggests
    switching the session to acceptEdits (after which it edits and deletes files unasked; for
    Write and Edit that is all it suggests), adding directories, and rules for other tools
    (``Read //tmp/**`` beside ``cd /tmp && ls``): the user was asked about none of them."""
    kept = []
    for suggestion in suggestions if isinstance(suggestions, list) else []:
        rules = suggestion.get("rules") if isinstance(suggestion, dict) else None
        if not isinstance(rules, list) or suggestion.get("type") != "addRules":
            continue
        mine = [r for r in rules if isinstance(r, dict) and r.get("toolName") == tool]
        if mine:
            kept.append({**suggestion, "rules": mine})
    return kept


class _Questions:
    """The permission requests of one turn: asked, answered, timed out or cancelled.

    A person answers one question at a time: Claude asks about parallel tool calls at once,
    so the later ones wait (unasked, their timeout not running) until the one before is
    settled. A question's timeout runs from when it has been put to the user (``on_event``
    returns once it has been said)."""

    def __init__(self, process: _Process, turn: AgentTurn, timeout_s: float, git_cwd: bool) -> None:
        self._process = process
        self._turn = turn
        self._timeout_s = timeout_s
        self._git_cwd = git_cwd
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, dict[str, Any]]] = {}  # id -> (asked at, request)
        self._queued: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()

    @property
    def waiting(self) -> bool:
        with self._lock:
            return bool(self._pending or self._queued)

    def ask(self, request_id: str, request: dict[str, Any]) -> None:
        if self._turn.on_event is None:
            self._respond(request_id, request, "deny", NOBODY_ANSWERS)
            return
        with self._lock:
            self._queued.append((request_id, request))
        self.ask_next()

    def ask_next(self) -> None:
        """Put the next question to the user, once none waits for an answer."""
        assert self._turn.on_event is not None
        with self._lock:
            if self._turn.control.interrupted:  # stopped: Claude cancels what it asked
                self._queued.clear()
            if self._pending or not self._queued:
                return
            request_id, request = self._queued.popleft()
            self._pending[request_id] = (time.monotonic(), request)
        tool_input = request.get("input")
        description = request.get("description")
        tool_use_id = request.get("tool_use_id")
        self._turn.on_event(
            PermissionRequest(
                request_id,
                str(request.get("tool_name", "a tool")),
                tool_input if isinstance(tool_input, dict) else {},
                description if isinstance(description, str) else "",
                tool_use_id if isinstance(tool_use_id, str) else "",
            )
        )
        with self._lock:  # heard only now: the user's time to answer starts here
            if request_id in self._pending:
                self._pending[request_id] = (time.monotonic(), request)

    def answer(self, request_id: str, decision: Decision, message: str) -> bool:
        with self._lock:
            pending = self._pending.pop(request_id, None)
        if pending is None:
            return False
        self._respond(request_id, pending[1], decision, message)
        return True

    def cancel(self, request_id: str) -> None:
        with self._lock:
            self._pending.pop(request_id, None)
            self._queued = collections.deque(q for q in self._queued if q[0] != request_id)

    def expire(self) -> None:
        """The agent's own safety net: a question nobody answered is a "no"."""
        now = time.monotonic()
        with self._lock:
            late = [(i, r) for i, (t, r) in self._pending.items() if now - t > self._timeout_s]
            for request_id, _ in late:
                del self._pending[request_id]
        for request_id, request in late:
            self._respond(request_id, request, "deny", _NOT_ANSWERED)

    def _respond(
        self, request_id: str, request: Mapping[str, Any], decision: Decision, message: str
    ) -> None:
        if decision == "deny":
            verdict: dict[str, Any] = {
                "behavior": "deny",
                "message": message or "The user said no.",
            }
        else:
            verdict = {"behavior": "allow", "updatedInput": request.get("input") or {}}
            if decision == "always":
                tool = request.get("tool_name")
                rules = _rules_for(tool, request.get("permission_suggestions"))
                if rules:
                    verdict["updatedPermissions"] = [self._lasting(s) for s in rules]
                else:
                    log.info("no rule to keep for %s: allowed this once", tool)
        log.info("permission for %s: %s", request.get("tool_name", "a tool"), decision)
        self._process.respond(request_id, verdict)

    def _lasting(self, suggestion: object) -> object:
        # Claude reads project settings only inside a git repository; elsewhere "always"
        # lasts for the life of the process (which the session keeps).
        lasting = ("localSettings", "projectSettings")
        if isinstance(suggestion, dict) and not self._git_cwd:
            return (
                {**suggestion, "destination": "session"}
                if suggestion.get("destination") in lasting
                else suggestion
            )
        return suggestion


@dataclasses.dataclass
class _TurnClock:
    deadline: float
    last: float = dataclasses.field(default_factory=time.monotonic)


def _counted(line: bytes, event: dict[str, Any]) -> int:
    """What a line counts against agent.max_output_bytes: all of it, but for what nothing
    keeps. The pieces of a tool's input as it is written (a file Claude writes streams at
    about 14 times its size; the whole input comes again in one line, which counts), and what
    its tools gave back (a file read comes about twice over: a turn that read 42 source files
    was stopped at 8 MiB). Each line is still bounded on its own."""
    if event.get("type") == "user":  # a tool's result, or the prompt's echo
        return 0
    inner = event.get("event") if event.get("type") == "stream_event" else None
    delta = inner.get("delta") if isinstance(inner, dict) else None
    if isinstance(delta, dict) and delta.get("type") in ("input_json_delta", "thinking_delta"):
        return 0
    return len(line)


def _said_between_turns(process: _Process, result: dict[str, Any]) -> None:
    spent = process.spend(result.get("total_cost_usd"))  # not the prompt's
    said = result.get("result")
    log.info(
        "%s in room %s said between turns, unasked (it cost $%.4f): %.200r",
        process.name,
        process.room,
        spent or 0.0,
        said if isinstance(said, str) else "",
    )


class _Prompt:
    """Which of what a long-lived Claude prints is the prompt's turn. It echoes the prompt
    (``--replay-user-messages``) only as the turn's first message ends, a paragraph in. So a
    process quiet since its last turn is read as it streams; one that printed meanwhile (a
    turn of its own) is read from the echo on (:class:`_BeforeEcho`)."""

    def __init__(self, process: _Process, prompt_id: str, *, unasked: bool) -> None:
        self.id = prompt_id
        self._process = process
        self._before = _BeforeEcho(process, prompt_id) if unasked else None
        self._init: dict[str, Any] | None = None
        self._echoed = False

    def outside(self, event: dict[str, Any]) -> bool | None:
        """None: ``event`` is the prompt's. Else it is not, and True: the prompt's turn
        begins (afresh) after it."""
        kind = event.get("type")
        if self._before is not None:
            if not self._before.take(event):
                return False
            self._init, self._before, self._echoed = self._before.init, None, True
            return True
        if kind == "user" and event.get("isReplay") and event.get("uuid") == self.id:
            self._echoed = self._process.echoes = True  # (a program that never echoes: False)
        elif kind == "result" and self._process.echoes and not self._echoed:
            # A turn of its own began just as the prompt was sent, and this was its end.
            # What it said was heard; the prompt's reply starts afresh.
            _said_between_turns(self._process, event)
            return True
        return None

    def parser(self, turn: AgentTurn) -> OutputParser:
        """A parser for the prompt's turn, from its start."""
        parser = OutputParser("stream-json", turn.on_event, turn.control.session_named)
        if self._init is not None:
            parser.event(self._init)
        return parser


class _BeforeEcho:
    """What Claude prints before it echoes the prompt (``--replay-user-messages``): the end of
    a turn it ran on its own while the room was idle (a background task ended, and it told
    the model), or one still running when the prompt came. None of it answers the prompt.
    Its questions are refused (nobody asked for that work), the rest is logged. Only for a
    process that has echoed a prompt before: a fresh one has run nothing of its own, and a
    program that never echoes (an older CLI, a wrapper) is read as before."""

    def __init__(self, process: _Process, prompt_id: str) -> None:
        self._process = process
        self._prompt_id = prompt_id
        self.init: dict[str, Any] | None = None  # the prompt's turn opens with the last one

    def take(self, event: dict[str, Any]) -> bool:
        """True at the echo: the events after it are the prompt's."""
        kind = event.get("type")
        if kind == "user" and event.get("isReplay") and event.get("uuid") == self._prompt_id:
            return True
        if kind == "system" and event.get("subtype") == "init":
            self.init = event
        elif kind == "control_request":
            self._refuse(event)
        elif kind == "result":
            _said_between_turns(self._process, event)
        return False

    def _refuse(self, event: dict[str, Any]) -> None:
        request_id = str(event.get("request_id", ""))
        request = event.get("request")
        request = request if isinstance(request, dict) else {}
        if request.get("subtype") == "can_use_tool":
            log.info("refused %s: asked between turns", request.get("tool_name", "a tool"))
            self._process.respond(request_id, {"behavior": "deny", "message": BETWEEN_TURNS})
        else:
            self._process.refuse_request(request_id, request.get("subtype"))


class ClaudeSessions:
    """The ``Agent`` (and ``TurnAgent``) for Claude Code: one stream-json process per room."""

    def __init__(
        self,
        command: Sequence[str],
        timeout: float = 300.0,
        cwd: str | Path | None = None,
        *,
        kill_grace_s: float = 2.0,
        interrupt_grace_s: float = 5.0,
        permission_timeout_s: float = 60.0,
        idle_stop_s: float = 900.0,
        max_processes: int = 4,
        max_output_bytes: int = 8 * 1024 * 1024,
        env: Mapping[str, str] | None = None,
        lifeline: Lifeline | None = None,
        ledger: AgentLedger | None = None,
    ) -> None:
        """``command`` is the full argv (see :func:`claude_argv`); ``--resume`` is added.

        Processes are tied to this one's life (``lifeline``, :func:`default_lifeline`)."""
        self.command = tuple(command)
        self.timeout = timeout
        self.cwd = None if cwd is None or str(cwd) == "" else str(cwd)
        self.kill_grace_s = kill_grace_s
        self.interrupt_grace_s = interrupt_grace_s
        self.permission_timeout_s = permission_timeout_s
        self.idle_stop_s = idle_stop_s
        self.max_processes = max_processes
        self.max_output_bytes = max_output_bytes
        self.env = dict(env) if env is not None else None
        self._lifeline = lifeline or default_lifeline()
        self._ledger = ledger  # records each room's process for a restarted assistant
        self._lock = threading.Lock()
        self._processes: dict[str, _Process] = {}
        self._stopped = threading.Event()
        self._git_cwd = _inside_git(Path(self.cwd or os.getcwd()))
        threading.Thread(target=self._reap_idle, name="claude-idle", daemon=True).start()

    # ---- the Agent interfaces ------------------------------------------------------------------
    def run(
        self, prompt: str, *, session_id: str | None = None, on_text: TextCallback | None = None
    ) -> AgentResult:
        return self.run_turn(AgentTurn(prompt, "default", session_id, text_only(on_text)))

    def run_turn(self, turn: AgentTurn) -> AgentResult:
        return resuming(self._run, turn)

    def prepare(self, room_id: str, session_id: str | None) -> None:
        """Start the room's process ahead of its first turn (the CLI takes a second to start)."""
        self._process_for(room_id, session_id)

    def stop(self) -> None:
        """Stop every process (shutdown)."""
        self._stopped.set()
        with self._lock:
            processes = list(self._processes.values())
            self._processes.clear()
        # At once, not one after another: each may take its grace twice (serve has 10 s).
        closing = [
            threading.Thread(target=p.close, args=(self.kill_grace_s,), name="claude-stop")
            for p in processes
        ]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join()

    # ---- one turn ------------------------------------------------------------------------------
    def _run(self, turn: AgentTurn, session_id: str | None) -> AgentResult:
        if turn.control.interrupted:  # stopped before it began: the agent never hears of it
            return AgentResult(text="", session_id=session_id, interrupted=True)
        process = self._process_for(turn.room_id, session_id, claim=True, afresh=turn.afresh)
        process.turn += 1
        process.answered = False
        turn_no = process.turn
        started = time.monotonic()
        questions = _Questions(process, turn, self.permission_timeout_s, self._git_cwd)
        prompt_id = str(uuid.uuid4())
        # Something it printed since its last turn waits unread: a turn of its own.
        unasked = process.echoes and process.lines.waiting
        try:
            try:
                process.send(
                    {
                        "type": "user",
                        "message": {"role": "user", "content": turn.prompt},
                        "parent_tool_use_id": None,
                        "uuid": prompt_id,
                    }
                )
            except AgentError:
                if not process.exits_within(self.kill_grace_s):
                    raise
                # It ended before it read the prompt (a bad flag, an unknown --resume id):
                # the turn reads what it printed, and its exit code and stderr say why.
            # Bound after the message: an interrupt that came first must follow it, or the CLI
            # takes it while idle and then runs the whole turn.
            turn.control.bind(
                interrupt=lambda: self._interrupt(process, turn_no), answer=questions.answer
            )
            prompt = _Prompt(process, prompt_id, unasked=unasked)
            return self._read_turn(process, turn, questions, started, prompt)
        except AgentError:
            if not (process.answered and process.alive):  # (a result, even an error: it is well)
                self._discard(process)
            raise
        except BaseException:
            self._discard(process)
            raise
        finally:
            turn.control.unbind()
            process.busy = False
            process.used = True
            process.last_used = time.monotonic()

    def _read_turn(
        self,
        process: _Process,
        turn: AgentTurn,
        questions: _Questions,
        started: float,
        prompt: _Prompt,
    ) -> AgentResult:
        parser = prompt.parser(turn)
        clock = _TurnClock(started + self.timeout)
        total = 0
        while True:
            line = self._next_line(process, questions, parser, clock)
            if line is None:
                return self._ended_early(process, turn, parser)
            if len(line) > self.max_output_bytes:
                raise self._too_much(process)
            if not line.strip():
                continue  # (per-turn mode skips blank lines too)
            event = _json(line)
            if event is None:
                raise AgentError(
                    f"The agent ({process.name}) printed something that is not the JSON it "
                    f"should print: {line[:80]!r}."
                )
            total += _counted(line, event)
            if total > self.max_output_bytes:
                raise self._too_much(process)
            began = prompt.outside(event)
            if began is not None:
                if began:  # the prompt's turn: its output and its time count from here
                    parser, total = prompt.parser(turn), 0
                    clock.deadline = time.monotonic() + self.timeout
                    if turn.control.interrupted:  # the interrupt went to the turn before
                        self._interrupt(process, process.turn)
                continue
            ended = self._turn_event(process, event, parser, questions)
            if ended is not None:
                break
        process.answered = True
        # Its conversation, even after an error: the room's next turn resumes it.
        process.session_id = parser.init_session_id or process.session_id
        spent = process.spend(ended.get("total_cost_usd"))  # (an error's too)
        result = interpret(parser, 0, b"", time.monotonic() - started, process.name)
        if result.session_id:
            process.session_id = result.session_id
        return result if spent is None else dataclasses.replace(result, cost_usd=spent)

    def _next_line(
        self, process: _Process, questions: _Questions, parser: OutputParser, clock: _TurnClock
    ) -> bytes | None:
        """The turn's next line (None: its output ended); stops it at its timeout, which does
        not run while the user is asked."""
        while True:
            now = time.monotonic()
            if questions.waiting:
                clock.deadline += now - clock.last
                questions.expire()
                questions.ask_next()  # (on this thread, as every event of the turn)
            clock.last = now
            if now >= clock.deadline:
                # Closing its input alone lets it finish the turn: its tool runs on, and the
                # result goes to the model in one more call that nobody hears or stores.
                self._interrupt(process, process.turn)
                raise self._timed_out(process, parser)
            with contextlib.suppress(queue.Empty):
                return process.lines.get(timeout=min(0.2, clock.deadline - now))

    def _turn_event(
        self,
        process: _Process,
        event: dict[str, Any],
        parser: OutputParser,
        questions: _Questions,
    ) -> dict[str, Any] | None:
        """Handle one event of the prompt's turn; its result event ends it."""
        kind = event.get("type")
        if kind == "user" and event.get("isReplay"):
            pass  # the prompt's echo (_Prompt): nothing to say
        elif kind == "control_request":
            self._control_request(process, event, questions)
        elif kind == "control_cancel_request":
            questions.cancel(str(event.get("request_id", "")))
        elif kind != "control_response":
            parser.event(event)
            if kind == "result":
                return event
            _check_login(process, parser.retrying)
        return None

    def _too_much(self, process: _Process) -> AgentError:
        return AgentError(
            f"The agent ({process.name}) printed more than agent.max_output_bytes of output, "
            "so it was stopped. Raise agent.max_output_bytes in config.toml if it needs more."
        )

    def _timed_out(self, process: _Process, parser: OutputParser) -> AgentError:
        if parser.retrying is not None:  # its service was not answering
            return AgentUnavailable(
                f"The agent ({process.name}) could not reach its service within "
                f"{self.timeout:g} seconds ({_retry_reason(parser.retrying)}) and was stopped."
            )
        return AgentTimeout(
            f"The agent ({process.name}) did not finish within {self.timeout:g} seconds "
            "and was stopped. Raise agent.timeout_s in config.toml if it needs longer."
        )

    def _ended_early(self, process: _Process, turn: AgentTurn, parser: OutputParser) -> AgentResult:
        """The process exited before the turn's result."""
        try:
            code = process.proc.wait(self.kill_grace_s)
        except subprocess.TimeoutExpired:
            code = 0  # it closed its output and runs on: cut short, not killed
        if turn.control.interrupted:
            text = "\n\n".join(t.strip() for t in parser.texts if t.strip())
            session_id = parser.init_session_id or process.session_id  # a first turn has none
            return AgentResult(text=text, session_id=session_id, interrupted=True)
        stderr = process.stderr_text(wait_s=self.kill_grace_s).encode()
        return interpret(parser, code, stderr, 0.0, process.name)

    def _control_request(
        self, process: _Process, event: dict[str, Any], questions: _Questions
    ) -> None:
        request_id = str(event.get("request_id", ""))
        request = event.get("request")
        if isinstance(request, dict) and request.get("subtype") == "can_use_tool":
            questions.ask(request_id, request)
            return
        process.refuse_request(
            request_id, request.get("subtype") if isinstance(request, dict) else None
        )

    def _interrupt(self, process: _Process, turn: int) -> None:
        """The interrupt control request; SIGINT if the turn has not ended after the grace.
        Both are for this ``turn`` alone: the room's next turn may already be running."""
        log.info("interrupting %s in room %s", process.name, process.room)
        request_id = f"interrupt-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(AgentError):
            process.send(
                {
                    "type": "control_request",
                    "request_id": request_id,
                    "request": {"subtype": "interrupt"},
                },
                turn=turn,
            )

        def escalate() -> None:
            for sig in (signal.SIGINT, signal.SIGKILL):
                if self._stopped.wait(self.interrupt_grace_s) or not process.running(turn):
                    return
                log.warning("the agent ignored the interrupt: sending %s", sig.name)
                process.signal(sig)

        threading.Thread(target=escalate, name="claude-interrupt", daemon=True).start()

    # ---- processes -----------------------------------------------------------------------------
    def _process_for(
        self, room: str, session_id: str | None, *, claim: bool = False, afresh: bool = False
    ) -> _Process:
        """The room's process for ``session_id``, started if need be; ``claim``: marked busy
        at once, so no other room's start can take it for an idle one. ``afresh``: a new one
        (a running one would not know what was added to the conversation since it started)."""
        stale: _Process | None = None
        with self._lock:
            process = self._processes.get(room)
            if process is not None and process.alive and not process.busy:
                same = process.session_id == session_id and not afresh
                if same and (session_id is not None or not process.used):
                    process.busy = claim
                    return process
            if process is not None:
                stale = self._processes.pop(room)
            if self._stopped.is_set():
                raise AgentError("The assistant is shutting down.")
            evicted = self._make_way()
            resume = ["--resume", session_id] if session_id and safe_agent_id(session_id) else []
            process = _Process(
                [*self.command, *resume],
                cwd=self.cwd,
                env=self.env,
                room=room,
                session_id=session_id,
                max_line_bytes=self.max_output_bytes,
                lifeline=self._lifeline,
                ledger=self._ledger,
            )
            process.busy = claim
            self._processes[room] = process
        if stale is not None:
            stale.close(self.kill_grace_s)
        for other in evicted:  # other rooms': their stop must not hold up this turn
            threading.Thread(
                target=other.close, args=(self.kill_grace_s,), name="claude-evict", daemon=True
            ).start()
        return process

    def _make_way(self) -> list[_Process]:
        """Processes to stop for a new one: those that have ended (a crash, a kill) first, as
        they hold no place; then, at agent.max_processes, the idle one unused longest (its
        room's conversation resumes when it speaks again). Called with the lock held."""
        ended = [p for p in self._processes.values() if not p.busy and not p.alive]
        for process in ended:
            del self._processes[process.room]
            log.debug("the agent of room %s had ended", process.room)
        stopped = list(ended)
        # More than one when busy rooms once pushed the count past the limit: it shrinks back.
        while len(self._processes) >= self.max_processes:
            idle = [p for p in self._processes.values() if not p.busy]
            if not idle:
                log.warning(
                    "%d rooms' agents are all working: starting one more than agent.max_processes",
                    len(self._processes),
                )
                break
            oldest = min(idle, key=lambda p: p.last_used)
            del self._processes[oldest.room]
            log.info("stopping the agent of room %s to make way (agent.max_processes)", oldest.room)
            stopped.append(oldest)
        return stopped

    def _discard(self, process: _Process) -> None:
        with self._lock:
            if self._processes.get(process.room) is process:
                del self._processes[process.room]
        process.close(self.kill_grace_s)

    def _reap_idle(self) -> None:
        while not self._stopped.wait(min(_IDLE_CHECK_S, self.idle_stop_s)):
            now = time.monotonic()
            with self._lock:
                idle = [
                    p
                    for p in self._processes.values()
                    if not p.busy and now - p.last_used > self.idle_stop_s
                ]
                for process in idle:
                    del self._processes[process.room]
            for process in idle:
                log.info("stopping the idle agent of room %s", process.room)
                process.close(self.kill_grace_s)


def _json(line: bytes) -> dict[str, Any] | None:
    try:
        value = loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _inside_git(path: Path) -> bool:
    return any((p / ".git").exists() for p in (path, *path.parents))
