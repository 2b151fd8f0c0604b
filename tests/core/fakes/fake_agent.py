"""A misbehaving agent CLI, run as a real subprocess by the tests: ``fake_agent.py MODE [ARGS]``.

Standard library only, so it can run with ``python -I -S`` and start fast. ``--resume ID``
(appended by the runner) may follow the mode's own arguments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def result(text: str, session_id: str | None = None, **extra: object) -> dict[str, object]:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": text,
        "session_id": session_id or str(uuid.uuid4()),
        "total_cost_usd": 0.25,
        "duration_ms": 12,
        "num_turns": 1,
        "usage": {"input_tokens": 3, "output_tokens": 4},
        **extra,
    }


def assistant(text: str, **extra: object) -> dict[str, object]:
    return {
        "type": "assistant",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        **extra,
    }


def split_resume(args: list[str]) -> tuple[list[str], str | None]:
    if "--resume" in args:
        i = args.index("--resume")
        return args[:i] + args[i + 2 :], args[i + 1]
    return args, None


def spawn_grandchild(
    marker: str, pidfile: str, *, hold_stdout: bool, new_session: bool = False
) -> None:
    """A tool: ``new_session`` leaves the agent's group, as Claude Code's Bash tools do."""
    env = {**os.environ, "FAKE_AGENT_MARKER": marker}
    out = None if hold_stdout else subprocess.DEVNULL
    child = subprocess.Popen(
        ["sleep", "60"],
        env=env,
        stdout=out,
        stderr=subprocess.DEVNULL,
        start_new_session=new_session,
    )
    with open(pidfile + ".part", "w") as f:
        f.write(str(child.pid))
    os.replace(pidfile + ".part", pidfile)


def stream_event(kind: str, **fields: object) -> None:
    emit({"type": "stream_event", "event": {"type": kind, **fields}, "parent_tool_use_id": None})


def text_block(index: int, text: str) -> None:
    stream_event("content_block_start", index=index, content_block={"type": "text", "text": ""})
    for word in text.split(" "):
        delta = {"type": "text_delta", "text": word + " "}
        stream_event("content_block_delta", index=index, delta=delta)
    stream_event("content_block_stop", index=index)
    emit(assistant(text, parent_tool_use_id=None))


def claude_tool_turn(tool_s: str) -> None:
    """What claude --include-partial-messages prints for "look, run ls, tell" (denied rm)."""
    emit({"type": "system", "subtype": "init", "session_id": "s-tools"})
    stream_event("message_start")
    text_block(0, "Let me look at the files.")
    tool = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
    stream_event("content_block_start", index=1, content_block={**tool, "input": {}})
    stream_event("content_block_stop", index=1)
    emit({"type": "assistant", "message": {"content": [tool]}, "parent_tool_use_id": None})
    stream_event("message_stop")
    # A subagent's chatter is not the reply.
    emit({**assistant("subagent notes"), "parent_tool_use_id": "toolu_1"})
    time.sleep(float(tool_s))  # the tool runs
    result_block = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a b c"}
    emit({"type": "user", "message": {"content": [result_block]}, "parent_tool_use_id": None})
    stream_event("message_start")
    text_block(0, "The folder has three files.")
    stream_event("message_stop")
    refused = {"command": "rm -rf b"}
    denied = [{"tool_name": "Bash", "tool_use_id": "toolu_2", "tool_input": refused}]
    emit(result("The folder has three files.", "s-tools", permission_denials=denied))


def main() -> int:
    mode, *rest = sys.argv[1:]
    args, resume = split_resume(rest)
    # hang MARKER PIDFILE [ignore-term|ignore-int|term-file FILE|signal-file FILE|setsid]
    if mode == "hang":
        if "ignore-term" in args:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if "ignore-int" in args:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if "term-file" in args:
            path = args[args.index("term-file") + 1]

            def on_term(signum: int, frame: object) -> None:
                with open(path, "w") as f:
                    f.write("TERM")
                sys.exit(0)

            signal.signal(signal.SIGTERM, on_term)
        if "signal-file" in args:  # which polite stop came: SIGTERM, or SIGINT (an interrupt)
            path = args[args.index("signal-file") + 1]

            def on_stop(signum: int, frame: object) -> None:
                with open(path, "w") as f:
                    f.write(signal.Signals(signum).name)
                sys.exit(0)

            signal.signal(signal.SIGTERM, on_stop)
            signal.signal(signal.SIGINT, on_stop)
        spawn_grandchild(args[0], args[1], hold_stdout=False, new_session="setsid" in args)
        time.sleep(60)
        return 0
    if mode == "output-first":  # a lot of output before reading stdin (deadlock check)
        emit(assistant("x" * (2 * 1024 * 1024)))
        emit(result(f"read {len(sys.stdin.buffer.read())} bytes"))
        return 0
    prompt = sys.stdin.buffer.read()
    if mode == "argv":  # reply with what arrived, to check the prompt and argv verbatim
        text = json.dumps({"argv": sys.argv[1:], "stdin": prompt.decode("utf-8")})
        emit(result(text, resume or "new-session"))
    elif mode == "stream":  # stream PIECE... (pauses between pieces)
        emit({"type": "system", "subtype": "init", "session_id": "s-stream"})
        for piece in args:
            emit(assistant(piece))
            time.sleep(0.05)
        emit(result("".join(args), "s-stream"))
    elif mode == "partial":  # --include-partial-messages style deltas, then the full message
        for piece in args:
            emit(
                {"type": "stream_event", "event": {"delta": {"type": "text_delta", "text": piece}}}
            )
        emit(assistant("".join(args)))
        emit(result("".join(args)))
    elif mode == "tool-turn":  # a Claude turn: text, a tool call, its result, more text
        claude_tool_turn(args[0] if args else "0")
    elif mode == "is-error":  # is_error wins over subtype and exit code
        emit(assistant("Not logged in", error="authentication_failed"))
        emit(result("Not logged in · Please run /login", is_error=True))
    elif mode == "errors-list":
        emit(result("", is_error=True, subtype="error_during_execution", errors=["disk full"]))
    elif mode == "crash":
        sys.stderr.write("boom: the model exploded\nsecond line\n")
        return 3
    elif mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "binary":
        sys.stdout.buffer.write(b'{"type": "system"}\n\xff\xfe\x00garbage\x80\n')
    elif mode == "huge":  # huge MEGABYTES: plain text, no newlines at all
        block = b"x" * (1024 * 1024)
        for _ in range(int(args[0])):
            sys.stdout.buffer.write(block)
    elif mode == "truncated":
        emit({"type": "system", "subtype": "init", "session_id": "s-trunc"})
        sys.stdout.write('{"type": "result", "subtype": "succ')
    elif mode == "not-json":
        emit({"type": "system", "subtype": "init", "session_id": "s-x"})
        sys.stdout.write("Traceback (most recent call last): oops\n")
        emit(result("fine"))
    elif mode == "empty":
        pass
    elif mode == "text":
        sys.stdout.write("plain answer line one\nline two\n")
    elif mode == "pretty-json":
        sys.stdout.write(json.dumps(result("pretty reply", "s-pretty"), indent=2) + "\n")
    elif mode == "verbose-array":
        sys.stdout.write(json.dumps([assistant("array reply"), result("array reply")]) + "\n")
    elif mode == "lone-surrogate":  # valid JSON (json.dumps escapes it) that no UTF-8 can carry
        emit(assistant("bad \ud800 text"))
        emit(result("bad \ud800 text"))
    elif mode == "nan-cost":
        sys.stdout.write(json.dumps(result("ok")).replace("0.25", "NaN") + "\n")
    elif mode == "resume-unknown":  # any --resume is unknown; log every invocation
        with open(args[0], "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\n")
        if resume is not None:
            message = f"No conversation found with session ID: {resume}"
            emit(result("", is_error=True, subtype="error_during_execution", errors=[message]))
            sys.stderr.write(message + "\n")
            return 1
        emit(result("fresh start", "brand-new-id"))
    elif mode == "hold-stdout":  # hold-stdout MARKER PIDFILE: answer, leave a grandchild behind
        spawn_grandchild(args[0], args[1], hold_stdout=True)
        emit(result("done early"))
    elif mode == "no-read-exit":  # exits without reading stdin (the read above is skipped)
        pass
    else:
        sys.stderr.write(f"unknown mode {mode}\n")
        return 2
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["no-read-exit"]:
        emit(result("did not read"))
        sys.exit(0)
    sys.exit(main())
