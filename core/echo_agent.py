"""``python -m core.echo_agent``: a stand-in for ``claude -p`` that answers ``You said: <prompt>``.

It speaks the same protocol as Claude Code's print mode, so the whole pipeline can run (and be
tested) without the real agent: the prompt on stdin, ``--resume ID`` accepted, and
``--output-format stream-json`` (the default here: system init, the reply as a few partial
text deltas like ``--include-partial-messages``, the finished block, then the result object),
``json`` (the result object alone) or ``text``. ``--think-ms N`` waits before answering, and
SIGINT ends the turn the way Claude does (an ``aborted_streaming`` result, exit 0).

Only the standard library's lightest modules are imported, so it starts fast.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from typing import Any

PIECES = 3
_UUID_LEN = 36


def split_reply(text: str, pieces: int = PIECES) -> list[str]:
    """Split at spaces into up to ``pieces`` chunks whose concatenation is ``text``."""
    words = text.split(" ")
    per = max(1, -(-len(words) // pieces))
    chunks = [" ".join(words[i : i + per]) for i in range(0, len(words), per)]
    return [c + " " for c in chunks[:-1]] + chunks[-1:]


def _parse_args(argv: list[str]) -> tuple[str, str | None, float]:
    output_format, resume, think_s = "stream-json", None, 0.0
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--output-format", "--resume", "-r", "--think-ms") and i + 1 < len(argv):
            value = argv[i + 1]
            if arg == "--output-format":
                output_format = value
            elif arg == "--think-ms":
                think_s = max(0.0, float(value) / 1000)
            else:
                resume = value
            i += 2
            continue
        if arg.startswith("--output-format="):
            output_format = arg.partition("=")[2]
        i += 1  # -p, --verbose and anything else are accepted and ignored
    return output_format, resume, think_s


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


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    output_format, resume, think_s = _parse_args(sys.argv[1:] if argv is None else argv)
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
    prompt = sys.stdin.buffer.read().decode("utf-8", "replace").rstrip("\r\n")
    if not prompt.strip():
        sys.stderr.write("Error: Input must be provided through stdin when using --print\n")
        return 1
    session_id = resume or str(uuid.uuid4())
    reply = f"You said: {prompt}"
    try:
        if output_format == "stream-json":
            init = {"type": "system", "subtype": "init", "session_id": session_id, "model": "echo"}
            _emit(init)
        time.sleep(think_s)
    except KeyboardInterrupt:
        if output_format != "text":
            aborted = {"is_error": True, "result": "", "terminal_reason": "aborted_streaming"}
            _emit(_result(session_id, started, subtype="error_during_execution", **aborted))
        return 0
    if output_format == "text":
        _write(reply + "\n")
        return 0
    if output_format == "stream-json":
        _emit(_delta("message_start"))
        _emit(_delta("content_block_start", index=0, content_block={"type": "text", "text": ""}))
        for piece in split_reply(reply):
            _emit(
                _delta("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
            )
        _emit(_delta("content_block_stop", index=0))
        assistant: dict[str, Any] = {
            "role": "assistant",
            "content": [{"type": "text", "text": reply}],
        }
        _emit({"type": "assistant", "message": assistant, "session_id": session_id})
        _emit(_delta("message_stop"))
    usage = {"input_tokens": len(prompt.split()), "output_tokens": len(reply.split())}
    _emit(_result(session_id, started, result=reply, usage=usage))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    sys.exit(main())
