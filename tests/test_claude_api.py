"""The scripted Messages API itself, spoken to over real HTTP (no CLI; fast)."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Any

from tests.claude_api import (
    EXHAUSTED_TEXT,
    ApiError,
    ClaudeApi,
    Hold,
    Reply,
    Text,
    ToolUse,
)

TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def _body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    message = {"role": "user", "content": "hi"}
    body = {"model": "m", "max_tokens": 1000, "tools": TOOLS, "stream": stream}
    return {**body, "messages": [message], **extra}


def _post(
    api: ClaudeApi, body: dict[str, Any], path: str = "/v1/messages?beta=true"
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    headers = {"x-api-key": "secret", "content-type": "application/json"}
    conn.request("POST", path, json.dumps(body), headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def _events(data: bytes) -> list[dict[str, Any]]:
    """The data objects of a server-sent event stream, checked against their event names."""
    events = []
    for chunk in data.decode().strip().split("\n\n"):
        name_line, data_line = chunk.split("\n")
        event = json.loads(data_line.removeprefix("data: "))
        assert name_line == f"event: {event['type']}"
        events.append(event)
    return events


def test_a_reply_streams_as_the_messages_api_does() -> None:
    tool = ToolUse("Bash", {"command": "ls -l", "description": "List"}, id="toolu_1")
    with ClaudeApi(Reply([Text("Hello there.", chunk_chars=5), tool])) as api:
        status, data = _post(api, _body())
    assert status == 200
    events = _events(data)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "content_block_start",
        *["content_block_delta"] * 2,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["model"] == "m" and events[0]["message"]["content"] == []
    texts = [e["delta"]["text"] for e in events if e.get("index") == 0 and "delta" in e]
    assert texts == ["Hello", " ther", "e."]
    assert events[6]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "Bash",
        "input": {},
    }
    partial = "".join(e["delta"]["partial_json"] for e in events[7:9])
    assert json.loads(partial) == {"command": "ls -l", "description": "List"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_a_request_without_stream_gets_one_json_message() -> None:
    with ClaudeApi(Reply([Text("Plain.")])) as api:
        status, data = _post(api, _body(stream=False))
    message = json.loads(data)
    assert status == 200
    assert message["content"] == [{"type": "text", "text": "Plain."}]
    assert message["stop_reason"] == "end_turn"


def test_side_requests_do_not_take_script_entries_and_a_short_script_says_so() -> None:
    with ClaudeApi(Reply([Text("Scripted.")])) as api:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
        conn.request("HEAD", "/")
        assert conn.getresponse().status == 200
        conn.close()
        _post(api, _body(stream=False, tools=[]))  # a title or topic request: no tools
        _post(api, _body(stream=False, max_tokens=1))  # a quota probe
        status, data = _post(api, _body(), path="/v1/messages/count_tokens")
        assert (status, json.loads(data)) == (200, {"input_tokens": 100})
        first = json.loads(_post(api, _body(stream=False))[1])
        second = json.loads(_post(api, _body(stream=False))[1])
    assert first["content"][0]["text"] == "Scripted."
    assert second["content"][0]["text"] == EXHAUSTED_TEXT
    assert api.exhausted == 1
    assert [r.turn_index for r in api.turns] == [0, 1]
    assert len(api.side_requests) == 4
    assert all("x-api-key" not in r.headers for r in api.requests)


def test_a_scripted_error_has_the_api_shape() -> None:
    with ClaudeApi(ApiError(400, "invalid_request_error", "bad")) as api:
        status, data = _post(api, _body())
    assert status == 400
    assert json.loads(data) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }


def test_a_hold_stops_the_stream_until_released() -> None:
    hold = Hold(after_deltas=2)
    with ClaudeApi(Reply([Text("abcdef", chunk_chars=2)], hold=hold)) as api:
        out: list[bytes] = []
        client = threading.Thread(target=lambda: out.append(_post(api, _body())[1]))
        client.start()
        assert hold.wait_reached(10)
        assert api.turns[0].finished.is_set() is False
        hold.release()
        client.join(10)
    texts = [e["delta"]["text"] for e in _events(out[0]) if e["type"] == "content_block_delta"]
    assert texts == ["ab", "cd", "ef"]
    assert api.turns[0].disconnected is False


def test_a_client_hanging_up_during_a_hold_is_recorded_without_a_release() -> None:
    hold = Hold(after_deltas=1)
    with ClaudeApi(Reply([Text("abcdef", chunk_chars=2)], hold=hold)) as api:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
        conn.request("POST", "/v1/messages", json.dumps(_body()))
        response = conn.getresponse()
        assert hold.wait_reached(10)
        response.close()
        conn.close()
        assert api.turns[0].finished.wait(10)
        assert api.turns[0].disconnected is True


def test_the_offline_environment_keeps_the_cli_away_from_the_real_home_and_network(
    tmp_path: Path,
) -> None:
    outer = {"PATH": "/bin", "HOME": "/root", "ANTHROPIC_AUTH_TOKEN": "x", "HTTPS_PROXY": "p"}
    with ClaudeApi() as api:
        env = api.env(tmp_path / "home", base=outer)
    assert env["PATH"] == "/bin"
    assert env["HOME"] == str(tmp_path / "home") and (tmp_path / "home").is_dir()
    assert env["ANTHROPIC_BASE_URL"] == api.base_url
    assert "ANTHROPIC_AUTH_TOKEN" not in env and "HTTPS_PROXY" not in env
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
