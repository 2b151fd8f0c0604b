"""Reading what an agent CLI prints: Claude's stream-json lines, its single JSON object, or text.

The parser is fed stdout line by line while the agent runs (so text can be streamed to the
caller), and :func:`interpret` turns the whole run into an :class:`AgentResult` or an
:class:`AgentError` whose message can be spoken to the user.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from core.errors import AgentError, ResumeFailed

OutputFormat = Literal["auto", "stream-json", "json", "text"]
_Mode = Literal["sniff", "stream-json", "json", "text"]

# What the Claude CLI says when --resume names a conversation it does not have.
RESUME_FAILURES = ("No conversation found with session ID", "--resume requires a valid session")
# Agent session ids go back on the command line after --resume: keep them to plain tokens.
_SAFE_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True)
class AgentResult:
    """One finished agent turn."""

    text: str
    session_id: str | None = None
    is_error: bool = False
    cost_usd: float | None = None
    duration_ms: int | None = None
    num_turns: int | None = None
    usage: dict[str, Any] = field(default_factory=dict)


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
    """Consumes stdout lines; streams text deltas to ``on_text`` in order."""

    def __init__(self, mode: _Mode, on_text: Callable[[str], None] | None) -> None:
        self.mode: _Mode = mode
        self.on_text = on_text
        self.raw = bytearray()
        self.result: dict[str, Any] | None = None
        self.texts: list[str] = []
        self.bad_line: str | None = None
        self.not_utf8: UnicodeDecodeError | None = None
        self.init_session_id: str | None = None
        self._partial_deltas = False
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
            self._emit(text)

    def _sniff(self, text: str) -> None:
        stripped = text.strip()
        if not stripped:
            return
        if stripped.startswith("{"):
            try:
                _loads(stripped)
                self.mode = "stream-json"
            except ValueError:
                self.mode = "json"  # a pretty-printed object spans lines
        elif stripped.startswith("["):
            self.mode = "json"
        else:
            self.mode = "text"

    def _emit(self, text: str) -> None:
        if text and self.on_text is not None:
            self.on_text(text)

    def _event_line(self, text: str) -> None:
        if not text.strip():
            return
        try:
            event = _loads(text)
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
        if kind == "system" and event.get("subtype") == "init":
            self.init_session_id = safe_agent_id(event.get("session_id"))
        elif kind == "stream_event":  # --include-partial-messages: token deltas
            delta = _dig(event, "event", "delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                self._partial_deltas = True
                self._emit(str(delta.get("text", "")))
        elif kind == "assistant":
            content = _dig(event, "message", "content")
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("type") == "text":
                    text = str(block.get("text", ""))
                    self.texts.append(text)
                    # A synthetic message carrying an error (e.g. "Not logged in") is not a
                    # reply to speak; the result object reports it.
                    if not self._partial_deltas and "error" not in event:
                        self._emit(text)
        elif kind == "result":
            self.result = event

    def finish_document(self) -> None:
        """json mode: the whole output is one object, or a list of messages (with --verbose)."""
        if self.mode != "json" or self.not_utf8 is not None:
            return
        try:
            document = _loads(self.raw.decode("utf-8"))
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
    if result is not None and result.get("is_error") is True:
        raise AgentError(f"The agent reported an error: {_error_message(result)}")
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


def _result(result: dict[str, Any], parser: OutputParser, duration_s: float) -> AgentResult:
    text = result.get("result")
    duration = _finite(result.get("duration_ms"))
    turns = result.get("num_turns")
    usage = result.get("usage")
    return AgentResult(
        text=text if isinstance(text, str) else "".join(parser.texts),
        session_id=safe_agent_id(result.get("session_id")) or parser.init_session_id,
        is_error=False,
        cost_usd=_finite(result.get("total_cost_usd", result.get("cost_usd"))),
        duration_ms=round(duration) if duration is not None else round(duration_s * 1000),
        num_turns=turns if isinstance(turns, int) and not isinstance(turns, bool) else None,
        usage=usage if isinstance(usage, dict) else {},
    )


def safe_agent_id(value: object) -> str | None:
    return value if isinstance(value, str) and _SAFE_AGENT_ID.fullmatch(value) else None


def _resume_failure(stderr: str, result: dict[str, Any] | None) -> str | None:
    candidates = stderr.splitlines()
    if result is not None:
        errors = result.get("errors")
        candidates += [str(e) for e in errors] if isinstance(errors, list) else []
    return next((c.strip() for c in candidates if any(m in c for m in RESUME_FAILURES)), None)


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


def _loads(text: str) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=reject)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _dig(event: dict[str, Any], *keys: str) -> Any:
    value: Any = event
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
