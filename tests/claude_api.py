"""A scripted Anthropic Messages API on loopback: the real Claude Code CLI's peer in tests.

The CLI (``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT``) sends its requests here and gets the
replies a test scripted, in order, so it runs its real tool loop offline::

    with ClaudeApi() as api:
        api.script(Reply([Text("Let me look."), ToolUse("Bash", {"command": "ls"})]),
                   Reply([Text("Three files.")]))
        subprocess.run([claude, "-p", ...], env=api.env(home), ...)
        assert api.turns[1].tool_results()[0]["content"] == "..."

Which requests take a scripted reply. Claude Code 2.1.197 with
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` was seen to send one ``HEAD /`` at start-up (a
connectivity check) and then, per model call, one ``POST /v1/messages?beta=true`` with the
``tools`` list, ``max_tokens`` 64000 and ``"stream": true``; a subagent's calls look the same
(its system prompt's billing line says ``cc_is_subagent=true``) and take script entries too,
in the order the CLI makes them, as do the CLI's own retries after an :class:`ApiError`.
A request is a *turn* when it is a POST to ``/v1/messages`` whose body has a non-empty
``tools`` list and ``max_tokens`` above 1 (:func:`is_turn`; pass ``turn_filter`` to change
it). Anything else (the HEAD, ``/v1/messages/count_tokens``, and what other versions or
settings send: quota probes with ``max_tokens`` 1, title or topic requests without tools)
never takes a script entry and gets :attr:`ClaudeApi.aux_reply`.

A script that runs out answers with :data:`EXHAUSTED_TEXT` (a plain end_turn reply, so the CLI
finishes instead of retrying) and counts it in :attr:`ClaudeApi.exhausted`; tests assert it is 0.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

EXHAUSTED_TEXT = "(the test script has no reply for this request)"
DUMMY_API_KEY = "sk-ant-test-offline-0000"
# Environment variables of the outer shell that could point the CLI elsewhere or change its
# behaviour; the offline environment drops them.
_SCRUBBED_PREFIXES = ("ANTHROPIC_", "CLAUDE", "OTEL_", "AWS_BEARER", "VERTEX_", "MCP_")
_SCRUBBED_NAMES = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NODE_OPTIONS"}
# The switches that keep Claude Code 2.1.x off the network and quiet, beyond the base URL.
OFFLINE_SWITCHES = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
}


# --- what a reply is made of ------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A text block, streamed as ``text_delta``s of ``chunk_chars`` characters."""

    text: str
    chunk_chars: int = 16


@dataclass(frozen=True)
class ToolUse:
    """A ``tool_use`` block (``Bash``, ``Read``, ``Write``...), its input streamed as
    ``input_json_delta``s. ``id`` is generated when empty."""

    name: str
    input: Mapping[str, Any]
    id: str = ""
    chunk_chars: int = 24


Block = Text | ToolUse


class Hold:
    """Stops a streaming reply after ``after_deltas`` deltas until :meth:`release`.

    :attr:`reached` is set when the stream stops there, so a test knows the CLI has already
    received (and, with partial messages, printed) those deltas. The wait is bounded by
    ``timeout_s`` and the server releases every hold when it closes.
    """

    def __init__(self, after_deltas: int = 1, timeout_s: float = 120.0) -> None:
        self.after_deltas = after_deltas
        self.timeout_s = timeout_s
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait_reached(self, timeout_s: float = 60.0) -> bool:
        return self.reached.wait(timeout_s)

    def _stop_here(self, peer_closed: Callable[[], bool]) -> None:
        """Waits for the release; raises :class:`_Disconnected` as soon as the CLI hangs up
        (an interrupt drops the stream), so the request records it without a release."""
        self.reached.set()
        deadline = time.monotonic() + self.timeout_s
        while not self._released.wait(0.05):
            if peer_closed():
                raise _Disconnected
            if time.monotonic() > deadline:
                return


@dataclass(frozen=True)
class Cut:
    """Ends a streaming reply after ``after_deltas`` deltas, as a failing service does: the
    server hangs up (a dropped connection), or, given an ``error_type`` such as
    ``overloaded_error``, sends the stream's ``error`` event and ends the stream there.
    Claude Code 2.1.197 was seen to ask again at once, without streaming and without an
    ``api_retry`` event; that request takes the next script entry."""

    after_deltas: int
    error_type: str | None = None


@dataclass
class Reply:
    """One assistant message. ``stop_reason`` defaults to ``tool_use`` when a block is a tool
    use, else ``end_turn``. ``delay_s`` is slept before each delta; ``hold`` stops the stream,
    ``cut`` ends it."""

    blocks: Sequence[Block]
    stop_reason: str | None = None
    input_tokens: int = 100
    output_tokens: int = 0  # 0: counted from the blocks, roughly four characters a token
    delay_s: float = 0.0
    hold: Hold | None = None
    cut: Cut | None = None

    def resolved_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"


@dataclass(frozen=True)
class ApiError:
    """An HTTP error in the Messages API's shape. A 400 ends the CLI's turn at once (an
    ``is_error`` result, ``api_error_status`` 400). A 429/5xx/529 is retried up to 10 times with
    exponential backoff (minutes; a ``system`` ``api_retry`` event each time), every retry a new
    turn request: script several, or set ``CLAUDE_CODE_MAX_RETRIES`` in the CLI's env."""

    status: int = 400
    error_type: str = "invalid_request_error"
    message: str = "scripted error"


Response = Reply | ApiError


# --- what the CLI sent ------------------------------------------------------------------


@dataclass
class Request:
    """One request as received: the key headers are removed, the body parsed when JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    is_turn: bool = False
    turn_index: int | None = None  # position in the script, for turns
    disconnected: bool = False  # the stream ended early: the CLI closed it (an abort), or a Cut
    received_at: float = field(default_factory=time.monotonic)
    first_text_at: float | None = None  # when the first text_delta of the reply was sent
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def system_text(self) -> str:
        """The system prompt, its blocks joined by newlines."""
        system = self.body.get("system", "") if isinstance(self.body, dict) else ""
        if isinstance(system, str):
            return system
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.body.get("messages", []) if isinstance(self.body, dict) else []
        return list(msgs)

    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks of the last user message (what the tools answered)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    return [b for b in content if b.get("type") == "tool_result"]
                return []
        return []

    def user_texts(self) -> list[str]:
        """Every user text of the conversation, in order (tool results left out)."""
        texts: list[str] = []
        for message in self.messages:
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(b["text"] for b in content if b.get("type") == "text")
        return texts


def result_text(block: Mapping[str, Any]) -> str:
    """The text of a ``tool_result`` block, whose content is a string or a list of blocks."""
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))


def is_turn(method: str, path: str, body: Any) -> bool:
    """A conversation call of the CLI's main loop (see the module docstring)."""
    if method != "POST" or path.split("?", 1)[0] != "/v1/messages":
        return False
    if not isinstance(body, dict):
        return False
    return bool(body.get("tools")) and int(body.get("max_tokens", 0)) > 1


# --- the server -------------------------------------------------------------------------


class ClaudeApi:
    """The scripted Messages API server (see the module docstring)."""

    def __init__(
        self,
        *replies: Response,
        aux_reply: Reply | None = None,
        turn_filter: Callable[[str, str, Any], bool] = is_turn,
    ) -> None:
        self.aux_reply = aux_reply or Reply([Text("OK")], input_tokens=10)
        self.turn_filter = turn_filter
        self.requests: list[Request] = []
        self.exhausted = 0
        self._script: list[Response] = []
        self._next = 0
        self._holds: list[Hold] = []
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="claude-api", daemon=True
        )
        self._thread.start()
        self.script(*replies)

    # The script.

    def script(self, *replies: Response) -> None:
        """Appends replies to the script."""
        with self._lock:
            self._script.extend(replies)
            self._holds.extend(r.hold for r in replies if isinstance(r, Reply) and r.hold)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script) - self._next

    # What was received.

    @property
    def turns(self) -> list[Request]:
        """The requests that took a script entry, in order."""
        with self._lock:
            return [r for r in self.requests if r.is_turn]

    @property
    def side_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if not r.is_turn]

    def wait_for_turns(self, count: int, timeout_s: float = 60.0) -> list[Request]:
        """Waits until ``count`` turn requests have arrived; returns them (fewer on timeout)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len([r for r in self.requests if r.is_turn]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return [r for r in self.requests if r.is_turn]

    # Running it.

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A full environment for an offline CLI run against this server: the outer one
        (``base``, default ``os.environ``) without Anthropic/Claude/proxy settings, HOME and
        XDG_CONFIG_HOME under ``home`` (created), a dummy key and the offline switches."""
        home.mkdir(parents=True, exist_ok=True)
        source = os.environ if base is None else base
        env = {
            k: v
            for k, v in source.items()
            if not k.startswith(_SCRUBBED_PREFIXES) and k.upper() not in _SCRUBBED_NAMES
        }
        env.update(OFFLINE_SWITCHES)
        env.update(
            {
                "ANTHROPIC_BASE_URL": self.base_url,
                "ANTHROPIC_API_KEY": DUMMY_API_KEY,
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
        return env

    def close(self) -> None:
        with self._lock:
            holds = list(self._holds)
        for hold in holds:
            hold.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> ClaudeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Used by the handler.

    def _record(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
            if not self.turn_filter(request.method, request.path, request.body):
                self._lock.notify_all()
                return self.aux_reply
            request.is_turn = True
            request.turn_index = self._next
            if self._next < len(self._script):
                response = self._script[self._next]
            else:
                self.exhausted += 1
                response = Reply([Text(EXHAUSTED_TEXT)])
            self._next += 1
            self._lock.notify_all()
            return response

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}{secrets.token_hex(10)}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: ClaudeApi

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The CLI resets idle keep-alive connections when it drops a stream; not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Disconnected(Exception):
    """The CLI closed the connection mid-stream."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the requests are recorded; nothing on stderr

    def do_HEAD(self) -> None:
        self._record_only()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._record_only()
        self._send_json(404, _error_body("not_found_error", f"no GET {self.path} here"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        request = Request("POST", self.path, _safe_headers(self.headers), body)
        try:
            self._answer(request)
        except (_Disconnected, OSError):
            request.disconnected = True
            self.close_connection = True
        finally:
            request.finished.set()

    def _answer(self, request: Request) -> None:
        api = self.server.api
        path = request.path.split("?", 1)[0]
        response = api._record(request)
        if path == "/v1/messages/count_tokens":
            self._send_json(200, {"input_tokens": 100})
            return
        if path != "/v1/messages":
            self._send_json(404, _error_body("not_found_error", f"no POST {path} here"))
            return
        if isinstance(response, ApiError):
            self._send_json(response.status, _error_body(response.error_type, response.message))
            return
        body = request.body if isinstance(request.body, dict) else {}
        model = str(body.get("model", "claude-test"))
        message_id = api._new_id("msg")
        blocks = [_with_id(b, api) for b in response.blocks]
        if body.get("stream"):
            self._request = request
            self._stream(message_id, model, blocks, response)
        else:
            self._send_json(200, _message_json(message_id, model, blocks, response))

    def _record_only(self) -> None:
        request = Request(self.command, self.path, _safe_headers(self.headers), None)
        self.server.api._record(request)
        request.finished.set()

    def _send_json(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_test")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, message_id: str, model: str, blocks: list[Block], reply: Reply) -> None:
        """The Messages API's server-sent events, one chunk per event, over chunked HTTP."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", "req_test")
        self.end_headers()
        start = _message_json(message_id, model, [], reply)
        start.update(stop_reason=None, usage=_usage(reply, output_tokens=1))
        self._event("message_start", {"message": start})
        sent = 0
        for index, block in enumerate(blocks):
            sent = self._stream_block(index, block, reply, sent)
        final = {"stop_reason": reply.resolved_stop_reason(), "stop_sequence": None}
        output = {"output_tokens": _usage(reply)["output_tokens"]}
        self._event("message_delta", {"delta": final, "usage": output})
        self._event("message_stop", {})
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _stream_block(self, index: int, block: Block, reply: Reply, sent: int) -> int:
        """One content block; returns how many deltas the reply has sent so far."""
        if isinstance(block, Text):
            opening: dict[str, Any] = {"type": "text", "text": ""}
            pieces = _chunks(block.text, block.chunk_chars)
            delta_type, key = "text_delta", "text"
        else:
            opening = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            pieces = _chunks(json.dumps(dict(block.input)), block.chunk_chars)
            delta_type, key = "input_json_delta", "partial_json"
        self._event("content_block_start", {"index": index, "content_block": opening})
        for piece in pieces:
            if reply.delay_s:
                time.sleep(reply.delay_s)
            self._event(
                "content_block_delta", {"index": index, "delta": {"type": delta_type, key: piece}}
            )
            request = getattr(self, "_request", None)
            if delta_type == "text_delta" and request is not None and request.first_text_at is None:
                request.first_text_at = time.monotonic()
            sent += 1
            if reply.hold is not None and sent == reply.hold.after_deltas:
                reply.hold._stop_here(self._peer_closed)
            if reply.cut is not None and sent == reply.cut.after_deltas:
                self._cut(reply.cut)
        self._event("content_block_stop", {"index": index})
        return sent

    def _cut(self, cut: Cut) -> None:
        if cut.error_type is None:
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._event("error", {"error": {"type": cut.error_type, "message": "scripted cut"}})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        raise _Disconnected

    def _peer_closed(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _event(self, name: str, payload: Mapping[str, Any]) -> None:
        data = json.dumps({"type": name, **payload})
        chunk = f"event: {name}\ndata: {data}\n\n".encode()
        try:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        except OSError as exc:
            raise _Disconnected from exc


def _safe_headers(headers: Any) -> dict[str, str]:
    hidden = {"x-api-key", "authorization"}
    return {k.lower(): v for k, v in headers.items() if k.lower() not in hidden}


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _with_id(block: Block, api: ClaudeApi) -> Block:
    if isinstance(block, ToolUse) and not block.id:
        return ToolUse(block.name, block.input, api._new_id("toolu"), block.chunk_chars)
    return block


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _usage(reply: Reply, output_tokens: int | None = None) -> dict[str, int]:
    if output_tokens is None:
        output_tokens = reply.output_tokens or max(1, _block_chars(reply.blocks) // 4)
    return {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _block_chars(blocks: Sequence[Block]) -> int:
    return sum(len(b.text) if isinstance(b, Text) else len(json.dumps(b.input)) for b in blocks)


def _message_json(message_id: str, model: str, blocks: list[Block], reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, Text):
            content.append({"type": "text", "text": block.text})
        else:
            content.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
            )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.resolved_stop_reason(),
        "stop_sequence": None,
        "usage": _usage(reply),
    }


def iter_json_lines(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a stream-json output, one per non-empty line."""
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)
