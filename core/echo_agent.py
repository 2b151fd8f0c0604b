"""``python -m core.echo_agent``: a stand-in for ``claude -p`` that answers ``You said: <prompt>``.

It speaks the same protocol as Claude Code's print mode, so the whole pipeline can run (and be
tested) without the real agent: the prompt on stdin, ``--resume ID`` accepted, and
``--output-format stream-json`` (the default here: system init, the reply as a few partial
text deltas like ``--include-partial-messages``, the finished block, then the result object),
``json`` (the result object alone) or ``text``. ``--think-ms N`` waits before answering, and
SIGINT ends the turn the way Claude does (an ``aborted_streaming`` result, exit 0).

``--input-format stream-json`` keeps it running for many turns, as Claude's session mode does:
user messages as JSON lines on stdin, each answered with the same events and its own result; a
``control_request`` of subtype ``interrupt`` ends the turn in progress (aborted) and is answered
with a ``control_response``. The end of input ends the process once what came is answered;
SIGINT ends it at once (the turn in progress aborted), and a line that is not JSON ends it
with exit 1.

Only the standard library's lightest modules are imported, so it starts fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from typing import Any, NamedTuple

PIECES = 3
_UUID_LEN = 36


def split_reply(text: str, pieces: int = PIECES) -> list[str]:
    """Split at spaces into up to ``pieces`` chunks whose concatenation is ``text``."""
    words = text.split(" ")
    per = max(1, -(-len(words) // pieces))
    chunks = [" ".join(words[i : i + per]) for i in range(0, len(words), per)]
    return [c + " " for c in chunks[:-1]] + chunks[-1:]


class _Args(NamedTuple):
    output_format: str = "stream-json"
    input_format: str = "text"
    resume: str | None = None
    think_s: float = 0.0


def _parse_args(argv: list[str]) -> _Args:
    values: dict[str, Any] = {}
    names = {"--output-format": "output_format", "--input-format": "input_format"}
    names |= {"--resume": "resume", "-r": "resume", "--think-ms": "think_s"}
    i = 0
    while i < len(argv):
        arg, _, inline = argv[i].partition("=")
        if arg in names and (inline or i + 1 < len(argv)):
            value = inline or argv[i + 1]
            i += 1 if inline else 2
            key = names[arg]
            values[key] = max(0.0, float(value) / 1000) if key == "think_s" else value
            continue
        i += 1  # -p, --verbose and anything else are accepted and ignored
    return _Args(**values)


def _delta(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": "stream_event", "event": {"type": kind, **fields}}


def _is_uuid(value: str) -> bool:
    try:
        return len(value) == _UUID_LEN and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _write(text: str) -> None:
    sys.stdout.buffer.write(text.encode("utf-8", "replace"))
    sys.stdout.buffer.flush()


def _emit(obj: dict[str, Any]) -> None:
    _write(json.dumps(obj) + "\n")


def _result(session_id: str, started: float, **fields: Any) -> dict[str, Any]:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "session_id": session_id,
        "total_cost_usd": 0.0,
        "duration_ms": round((time.monotonic() - started) * 1000),
        "num_turns": 1,
        "usage": {"input_tokens": 0, "output_tokens": 0},
        **fields,
    }


def _answered(session_id: str, prompt: str, started: float) -> dict[str, Any]:
    """The result object of an answered turn."""
    reply = f"You said: {prompt}"
    usage = {"input_tokens": len(prompt.split()), "output_tokens": len(reply.split())}
    return _result(session_id, started, result=reply, usage=usage)


def _reply_events(session_id: str, prompt: str, started: float) -> None:
    """The events of one answered turn, after the init and the thinking."""
    reply = f"You said: {prompt}"
    _emit(_delta("message_start"))
    _emit(_delta("content_block_start", index=0, content_block={"type": "text", "text": ""}))
    for piece in split_reply(reply):
        _emit(_delta("content_block_delta", index=0, delta={"type": "text_delta", "text": piece}))
    _emit(_delta("content_block_stop", index=0))
    assistant: dict[str, Any] = {"role": "assistant", "content": [{"type": "text", "text": reply}]}
    _emit({"type": "assistant", "message": assistant, "session_id": session_id})
    _emit(_delta("message_stop"))
    _emit(_answered(session_id, prompt, started))


def _init(session_id: str) -> dict[str, Any]:
    return {"type": "system", "subtype": "init", "session_id": session_id, "model": "echo"}


def _aborted(session_id: str, started: float) -> dict[str, Any]:
    aborted = {"is_error": True, "result": "", "terminal_reason": "aborted_streaming"}
    return _result(session_id, started, subtype="error_during_execution", **aborted)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    output_format, resume = args.output_format, args.resume
    if output_format not in ("stream-json", "json", "text"):
        sys.stderr.write(f"Error: unknown output format {output_format!r}\n")
        return 1
    if resume is not None and not _is_uuid(resume):
        # Like Claude: an unknown id is reported on stderr (and as a result in stream-json).
        message = f"No conversation found with session ID: {resume}"
        if output_format == "stream-json":
            _emit(
                _result(
                    resume,
                    started,
                    subtype="error_during_execution",
                    is_error=True,
                    num_turns=0,
                    errors=[message],
                )
            )
        sys.stderr.write(message + "\n")
        return 1
    session_id = resume or str(uuid.uuid4())
    if args.input_format != "stream-json":
        return _print_turn(args, session_id, started)
    if output_format != "stream-json":
        sys.stderr.write("Error: --input-format=stream-json requires output-format=stream-json\n")
        return 1
    code = _Session(session_id, args.think_s).run()
    # The stdin reader may still be blocked in a read holding the stdin lock, and a normal
    # shutdown can abort waiting for it: leave at once.
    try:
        sys.stdout.flush()
    except OSError:
        code = code or 1
    os._exit(code)


def _print_turn(args: _Args, session_id: str, started: float) -> int:
    """Print mode: the prompt is all of stdin, one turn."""
    prompt = sys.stdin.buffer.read().decode("utf-8", "replace").rstrip("\r\n")
    if not prompt.strip():
        sys.stderr.write("Error: Input must be provided through stdin when using --print\n")
        return 1
    try:
        if args.output_format == "stream-json":
            _emit(_init(session_id))
        time.sleep(args.think_s)
    except KeyboardInterrupt:
        if args.output_format != "text":
            _emit(_aborted(session_id, started))
        return 0
    if args.output_format == "text":
        _write(f"You said: {prompt}\n")
    elif args.output_format == "stream-json":
        _reply_events(session_id, prompt, started)
    else:
        _emit(_answered(session_id, prompt, started))
    return 0


class _Session:
    """``--input-format stream-json``: one process, many turns, interrupts by control request."""

    def __init__(self, session_id: str, think_s: float) -> None:
        import queue
        import threading

        self.session_id = session_id
        self.think_s = think_s
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.waiting: list[dict[str, Any]] = []  # messages that came in during a turn
        self.ended = False  # the input ended: answer what came, then exit
        self.garbled = False  # ... on a line that is not JSON: exit 1 at once, like Claude
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in sys.stdin.buffer:
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    sys.stderr.write(f"Error parsing streaming input line: {line[:80]!r}\n")
                    self.garbled = True
                    break
                self.inbox.put(message)
        finally:
            self.inbox.put(None)

    def _next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message, None once the input has ended; ``queue.Empty`` after ``timeout``."""
        if self.garbled:
            return None
        if self.waiting:
            return self.waiting.pop(0)
        if self.ended:
            return None
        message = self.inbox.get(timeout=timeout)
        self.ended = message is None
        return message

    def run(self) -> int:
        """Answer until the input ends: 0, or 1 after a garbled line or a closed stdout."""
        try:
            while (message := self._next()) is not None:
                kind = message.get("type")
                if kind == "control_request":
                    self._control(message)
                elif kind == "user":
                    self._turn(_prompt_of(message))
        except KeyboardInterrupt:
            return 0  # SIGINT ends the process, as it ends Claude's
        except BrokenPipeError:
            return 1
        return 1 if self.garbled else 0

    def _control(self, message: dict[str, Any]) -> bool:
        """Answer a control request; True if it is an interrupt."""
        request = message.get("request")
        subtype = request.get("subtype") if isinstance(request, dict) else None
        response: dict[str, Any] = {"subtype": "success", "request_id": message.get("request_id")}
        if subtype != "interrupt":
            response = {**response, "subtype": "error", "error": f"unsupported: {subtype!r}"}
        _emit({"type": "control_response", "response": response})
        return subtype == "interrupt"

    def _turn(self, prompt: str) -> None:
        """One turn: think, watching for an interrupt, then answer."""
        import queue

        started = time.monotonic()
        try:
            _emit(_init(self.session_id))
            deadline = started + self.think_s
            while (left := deadline - time.monotonic()) > 0:
                if self.ended:  # nothing more can come: think on
                    time.sleep(left)
                    break
                try:
                    message = self.inbox.get(timeout=left)
                except queue.Empty:
                    break
                if message is None:
                    self.ended = True
                    if self.garbled:
                        return
                elif message.get("type") != "control_request":
                    self.waiting.append(message)
                elif self._control(message):
                    _emit(_aborted(self.session_id, started))
                    return
            _reply_events(self.session_id, prompt, started)
        except KeyboardInterrupt:
            _emit(_aborted(self.session_id, started))
            raise


def _prompt_of(message: dict[str, Any]) -> str:
    """The text of a user message: a string, or text blocks."""
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, dict) else None
    if isinstance(content, list):
        texts = [b.get("text", "") for b in content if isinstance(b, dict)]
        content = "".join(t for t in texts if isinstance(t, str))
    return content if isinstance(content, str) else ""


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    sys.exit(main())
