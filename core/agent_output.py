"""Reading what an agent CLI prints: Claude's stream-json lines, its single JSON object, or text.

The parser is fed stdout line by line while the agent runs (so text can be streamed to the
caller), and :func:`interpret` turns the whole run into an :class:`AgentResult` or an
:class:`AgentError` whose message can be spoken to the user.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from core.agent_events import (
    BLOCK_SEPARATOR,
    AgentEvent,
    ApiRetry,
    EventCallback,
    StreamRestarted,
    TextDelta,
    TextDone,
    ToolResult,
    ToolUse,
)
from core.errors import AgentError, AgentLoginError, AgentUnavailable, ResumeFailed

log = logging.getLogger(__name__)

OutputFormat = Literal["auto", "stream-json", "json", "text"]
_Mode = Literal["sniff", "stream-json", "json", "text"]

# What the Claude CLI says when --resume names a conversation it does not have.
RESUME_FAILURES = ("No conversation found with session ID", "--resume requires a valid session")
# Agent session ids go back on the command line after --resume: keep them to plain tokens.
_SAFE_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True)
class Denial:
    """A tool the agent was not allowed to run in this turn."""

    tool_name: str
    summary: str = ""  # e.g. the command a Bash call would have run
    description: str = ""  # the agent's own words for it, if it gave any


@dataclass(frozen=True)
class AgentResult:
    """One finished agent turn.

    ``interrupted``: the turn was stopped on request (``terminal_reason`` aborted_*); that is
    a cancel, not an error, and the agent's conversation stays resumable.
    """

    text: str
    session_id: str | None = None
    is_error: bool = False
    cost_usd: float | None = None
    duration_ms: int | None = None
    num_turns: int | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    denials: tuple[Denial, ...] = ()


def format_from_command(command: Sequence[str]) -> _Mode:
    """``--output-format X`` (or ``--output-format=X``) in the command, else sniff the output."""
    for i, arg in enumerate(command):
        value = None
        if arg == "--output-format" and i + 1 < len(command):
            value = command[i + 1]
        elif arg.startswith("--output-format="):
            value = arg.partition("=")[2]
        if value in ("stream-json", "json", "text"):
            return cast(_Mode, value)
    return "sniff"


class OutputParser:
    """Consumes stdout lines and reports the agent's work as events, in order.

    Claude's stream-json: ``stream_event`` lines carry the model's deltas (with
    ``--include-partial-messages``), one ``assistant`` line follows each finished content
    block, ``user`` lines carry tool results, and the ``result`` line ends the turn. Events of
    a subagent (``parent_tool_use_id`` set) are not the reply and are skipped.
    """

    def __init__(
        self,
        mode: _Mode,
        on_event: EventCallback | None,
        on_session: Callable[[str], None] | None = None,
    ) -> None:
        self.mode: _Mode = mode
        self.on_event = on_event
        self.on_session = on_session  # the agent named its conversation (system/init)
        self.raw = bytearray()
        self.result: dict[str, Any] | None = None
        self.texts: list[str] = []
        self.bad_line: str | None = None
        self.not_utf8: UnicodeDecodeError | None = None
        self.init_session_id: str | None = None
        self.retries = 0  # calls to the agent's service that failed and were tried again
        self.retrying: ApiRetry | None = None  # the last such, while nothing came after it
        self._partial_deltas = False
        # Messages whose text came as deltas (by id): another one's text comes whole (Claude
        # Code's call without streaming, after a stream failed) and is said whole.
        self._streamed: set[str] = set()
        self._streaming: str | None = None  # the id of the message being streamed
        self._block_kinds: dict[int, str] = {}  # index -> content block type, per message
        # The text of the block being streamed, until its content_block_stop: a text block
        # that comes whole while it is not empty is the streamed one, asked for again.
        self._open_text = ""
        self.cut_short = False  # the output ended inside a JSON line

    def feed(self, line: bytes) -> None:
        if self.mode != "stream-json":
            self.raw += line  # json and text modes need the whole output at the end
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            self.not_utf8 = self.not_utf8 or e
            return
        if self.mode == "sniff":
            self._sniff(text)
        if self.mode == "stream-json":
            self._event_line(text)
            self.cut_short = not text.endswith("\n") and self.bad_line == text.strip()
        elif self.mode == "text":
            self._emit(TextDelta(text))

    def _sniff(self, text: str) -> None:
        stripped = text.strip()
        if not stripped:
            return
        if stripped.startswith("{"):
            try:
                loads(stripped)
                self.mode = "stream-json"
            except ValueError:
                self.mode = "json"  # a pretty-printed object spans lines
        elif stripped.startswith("["):
            self.mode = "json"
        else:
            self.mode = "text"

    def _emit(self, event: AgentEvent) -> None:
        if self.on_event is not None and not (isinstance(event, TextDelta) and not event.text):
            self.on_event(event)

    def _event_line(self, text: str) -> None:
        if not text.strip():
            return
        try:
            event = loads(text)
        except ValueError:
            if self.bad_line is None:
                self.bad_line = text.strip()
            return
        if isinstance(event, dict):
            self.event(event)
        elif self.bad_line is None:
            self.bad_line = text.strip()

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "result":
            self.result = event
        elif event.get("parent_tool_use_id"):
            return  # a subagent's work: not the reply, nor its conversation
        elif kind == "system" and event.get("subtype") == "api_retry":
            self._api_retry(event)
        elif kind == "system" and event.get("subtype") == "init":
            self.init_session_id = safe_agent_id(event.get("session_id"))
            if self.init_session_id and self.on_session is not None:
                self.on_session(self.init_session_id)
        elif kind == "stream_event":
            self.retrying = None  # the service answers again
            self._stream_event(event.get("event"))
        elif kind == "assistant":
            # A synthetic message carrying an error (e.g. "Not logged in") is not a reply to
            # speak; the result object reports it.
            said = _text(_dig(event, "message", "id"))
            # (Deltas of messages with no id: which message they were is not known.)
            whole = not self._partial_deltas or bool(
                said and self._streamed and said not in self._streamed
            )
            content = _dig(event, "message", "content")
            speak = "error" not in event and whole
            self._assistant(content, speak=speak)
        elif kind == "user":
            content = _dig(event, "message", "content")
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    self._emit(
                        ToolResult(str(block.get("tool_use_id", "")), block.get("is_error") is True)
                    )

    def _api_retry(self, event: dict[str, Any]) -> None:
        attempt, most, status = (
            _whole(event.get(k)) for k in ("attempt", "max_retries", "error_status")
        )
        error = event.get("error")
        retry = ApiRetry(
            attempt or self.retries + 1, most, status, error if isinstance(error, str) else ""
        )
        self.retries += 1
        self.retrying = retry
        log.warning(
            "the agent's call to its service failed (%s%s); trying again (%d of %s)",
            retry.status or "no answer",
            f", {retry.error}" if retry.error else "",
            retry.attempt,
            retry.max_retries or "?",
        )
        self._emit(retry)

    def _stream_event(self, raw: object) -> None:
        if not isinstance(raw, dict):
            return
        kind = raw.get("type")
        index = raw.get("index", -1)
        index = index if isinstance(index, int) else -1
        if kind in ("message_start", "content_block_start", "content_block_stop", "message_stop"):
            self._open_text = ""
        if kind == "message_start":
            self._block_kinds.clear()
            self._streaming = _text(_dig(raw, "message", "id")) or None
        elif kind == "content_block_start":
            block = raw.get("content_block")
            self._block_kinds[index] = str(block.get("type")) if isinstance(block, dict) else ""
        elif kind == "content_block_stop" and self._block_kinds.get(index) == "text":
            self._emit(TextDone())  # the sentence before a tool call is complete now
        delta = raw.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta":
            self._partial_deltas = True
            if self._streaming is not None:
                self._streamed.add(self._streaming)
            text = _text(delta.get("text"))
            self._open_text += text
            self._emit(TextDelta(text))

    def _assistant(self, content: object, *, speak: bool) -> None:
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                text = _text(block.get("text"))
                self.texts.append(text)
                if speak and self._open_text:
                    self._restarted(text)
                elif speak:
                    self._emit(TextDelta(text))
                    self._emit(TextDone())
            elif block.get("type") == "tool_use":
                if speak and self._open_text:  # asked again, it went straight to a tool
                    self._restarted("")
                tool_input = block.get("input")
                self._emit(
                    ToolUse(
                        _text(block.get("id")),
                        _text(block.get("name")) or "tool",
                        tool_input if isinstance(tool_input, dict) else {},
                    )
                )

    def _restarted(self, text: str) -> None:
        """The text block being streamed broke off, and Claude Code asked again without
        streaming: ``text`` is the block the reply has now."""
        log.info("a stream broke off and came again whole: %r", self._open_text[-80:])
        self._emit(StreamRestarted(self._open_text, text))
        self._open_text = ""
        self._emit(TextDone())

    def finish_document(self) -> None:
        """json mode: the whole output is one object, or a list of messages (with --verbose)."""
        if self.mode != "json" or self.not_utf8 is not None:
            return
        try:
            document = loads(self.raw.decode("utf-8"))
        except ValueError:
            self.bad_line = self.raw.decode("utf-8", "replace").strip()
            return
        items = document if isinstance(document, list) else [document]
        for item in items:
            if isinstance(item, dict):
                self.event(item)
            else:
                self.bad_line = json.dumps(item)[:80]


def interpret(
    parser: OutputParser, returncode: int, stderr: bytes, duration_s: float, name: str
) -> AgentResult:
    """Decide what a finished run means; raises :class:`AgentError` with a speakable message."""
    parser.finish_document()
    err_text = stderr.decode("utf-8", "replace")
    result = parser.result
    resume_message = _resume_failure(err_text, result)
    if resume_message:
        raise ResumeFailed(f"The agent ({name}) has no such conversation: {resume_message}")
    if result is not None and _aborted(result):
        return _result(result, parser, duration_s, interrupted=True)
    if result is not None and result.get("is_error") is True:
        raise _reported_error(result, parser)
    if returncode != 0:
        # Plain-text agents often explain themselves on stdout (claude -p: "Not logged in").
        detail = err_text
        if not detail.strip() and parser.mode == "text":
            detail = parser.raw.decode("utf-8", "replace")
        raise AgentError(_crash_message(name, returncode, detail))
    if parser.not_utf8 is not None:
        raise AgentError(
            f"The agent ({name}) printed bytes that are not UTF-8 text, so its reply cannot be "
            "read. Check agent.command in config.toml."
        )
    if parser.mode == "text":
        text = parser.raw.decode("utf-8").strip()
        if not text:
            raise AgentError(f"The agent ({name}) finished without printing a reply.")
        return AgentResult(text=text, duration_ms=round(duration_s * 1000))
    if parser.bad_line is not None and not (parser.cut_short and result is None):
        raise AgentError(
            f"The agent ({name}) printed something that is not the JSON it should print: "
            f"{parser.bad_line[:80]!r}. Check agent.output_format in config.toml."
        )
    if result is None:
        if parser.mode == "sniff":
            raise AgentError(f"The agent ({name}) finished without printing a reply.")
        raise AgentError(
            f"The agent ({name}) stopped before printing its final result; "
            "its output was cut short."
        )
    return _result(result, parser, duration_s)


def _aborted(result: dict[str, Any]) -> bool:
    """Claude ends an interrupted turn with ``terminal_reason`` aborted_streaming/_tools."""
    reason = result.get("terminal_reason")
    return isinstance(reason, str) and reason.startswith("aborted")


def denials(result: dict[str, Any]) -> tuple[Denial, ...]:
    """The tools the agent was refused in this turn (``permission_denials``)."""
    raw = result.get("permission_denials")
    out: list[Denial] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        tool_input = item.get("tool_input")
        summary = description = ""
        if isinstance(tool_input, dict):
            detail = tool_input.get("command") or tool_input.get("file_path") or ""
            summary = detail if isinstance(detail, str) else ""
            said = tool_input.get("description")
            description = said if isinstance(said, str) else ""
        out.append(Denial(str(item.get("tool_name", "a tool")), summary, description))
    return tuple(out)


def _result(
    result: dict[str, Any], parser: OutputParser, duration_s: float, *, interrupted: bool = False
) -> AgentResult:
    # Claude's ``result`` holds only the last text block; the reply is every block the user
    # heard. An agent whose result is not its last block is taken at its word.
    blocks = [t.strip() for t in parser.texts if t.strip()]
    final = result.get("result")
    final = final if isinstance(final, str) else ""
    whole = blocks and (not final.strip() or blocks[-1] == final.strip())
    text = BLOCK_SEPARATOR.join(blocks) if whole else final
    duration = finite(result.get("duration_ms"))
    turns = result.get("num_turns")
    usage = result.get("usage")
    return AgentResult(
        text=text,
        session_id=safe_agent_id(result.get("session_id")) or parser.init_session_id,
        is_error=False,
        cost_usd=finite(result.get("total_cost_usd", result.get("cost_usd"))),
        duration_ms=round(duration) if duration is not None else round(duration_s * 1000),
        num_turns=turns if isinstance(turns, int) and not isinstance(turns, bool) else None,
        usage=usage if isinstance(usage, dict) else {},
        interrupted=interrupted,
        denials=denials(result),
    )


def safe_agent_id(value: object) -> str | None:
    return value if isinstance(value, str) and _SAFE_AGENT_ID.fullmatch(value) else None


def _resume_failure(stderr: str, result: dict[str, Any] | None) -> str | None:
    candidates = stderr.splitlines()
    if result is not None:
        errors = result.get("errors")
        candidates += [str(e) for e in errors] if isinstance(errors, list) else []
    return next((c.strip() for c in candidates if any(m in c for m in RESUME_FAILURES)), None)


def _reported_error(result: dict[str, Any], parser: OutputParser) -> AgentError:
    """An ``is_error`` result: a refused login, a service that did not answer, or else."""
    message = f"The agent reported an error: {_error_message(result)}"
    status = _whole(result.get("api_error_status"))
    if status in (401, 403) or any(s in message.lower() for s in _LOGIN_REFUSED):
        return AgentLoginError(message)
    if status in (408, 429) or (status is not None and status >= 500):
        return AgentUnavailable(message)
    if status is None and parser.retrying is not None:  # retried until it gave up: no answer
        return AgentUnavailable(message)
    return AgentError(message)


_LOGIN_REFUSED = ("not logged in", "invalid api key", "failed to authenticate")


def _whole(value: object) -> int | None:
    """``value`` if it is a whole number (JSON's true is not), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_message(result: dict[str, Any]) -> str:
    text = result.get("result")
    if isinstance(text, str) and text.strip():
        return text.strip()
    errors = result.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    return f"it ended with {result.get('subtype', 'an unknown error')} and gave no reason"


def _crash_message(name: str, returncode: int, stderr: str) -> str:
    first = next((line.strip() for line in stderr.splitlines() if line.strip()), "")
    if returncode < 0:
        how = f"was killed by signal {_signal_name(-returncode)}"
    else:
        how = f"crashed with exit code {returncode}"
    detail = f": {first[:200]}" if first else " and printed no error message"
    return f"The agent ({name}) {how}{detail}"


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def loads(text: str) -> Any:
    """An agent's JSON: NaN and Infinity refused, and a lone UTF-16 surrogate (a ``\\ud800``
    escape, valid JSON) made U+FFFD, since no later step could encode it as UTF-8 to speak,
    store or send it."""

    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        value = json.loads(text, parse_constant=reject)
        # (No lower(): that copied every line, and a tool's result can be megabytes.)
        return _scrubbed(value) if "\\ud" in text or "\\uD" in text else value
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {_scrubbed(k): _scrubbed(v) for k, v in value.items()}
    return value


def _dig(event: dict[str, Any], *keys: str) -> Any:
    value: Any = event
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _text(value: object) -> str:
    """A string the agent sent; anything else (a list, an object) says nothing to speak."""
    return value if isinstance(value, str) else ""


def finite(value: object) -> float | None:
    """A number the agent reported, as a float; None if it is not one, or beyond a float
    (JSON allows 1e999 and a 400-digit integer)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
