"""How a failed Claude Code turn is classified, from the lines it prints (its real shapes); and
what "always" keeps of the permission suggestions it sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.agent_events import AgentEvent, ApiRetry
from core.agent_output import OutputParser, interpret
from core.claude import _rules_for
from core.errors import AgentError, AgentLoginError, AgentUnavailable


def retry(attempt: int, status: int | None, error: str) -> dict[str, Any]:
    return {
        "type": "system",
        "subtype": "api_retry",
        "attempt": attempt,
        "max_retries": 10,
        "retry_delay_ms": 500.0,
        "error_status": status,
        "error": error,
    }


def result(message: str, status: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "result", "subtype": "success", "is_error": True}
    out["result"] = message
    if status is not None:
        out["api_error_status"] = status
    return out


STREAMED = {"type": "stream_event", "event": {"type": "message_start", "message": {}}}


@pytest.mark.parametrize(
    ("lines", "kind"),
    [
        ([retry(1, 529, "overloaded"), result("API Error: 529 Overloaded", 529)], AgentUnavailable),
        ([result("API Error: 500 Internal", 500)], AgentUnavailable),
        ([result("Request rejected (429)", 429)], AgentUnavailable),
        (
            [retry(1, None, "connection_error"), result("Unable to connect to API", None)],
            AgentUnavailable,
        ),
        ([result("Failed to authenticate. API Error: 401", 401)], AgentLoginError),
        ([result("Not logged in · Please run /login", None)], AgentLoginError),
        # A retry that got through, then a failure of another kind: not "try again later".
        ([retry(1, 529, "overloaded"), STREAMED, result("Prompt is too long", 400)], AgentError),
        ([result("Prompt is too long", 400)], AgentError),
    ],
)
def test_a_failed_turn_says_what_failed(lines: list[dict[str, Any]], kind: type) -> None:
    events: list[AgentEvent] = []
    parser = OutputParser("stream-json", events.append)
    for line in lines:
        parser.feed((json.dumps(line) + "\n").encode())
    with pytest.raises(AgentError) as excinfo:
        interpret(parser, 0, b"", 0.1, "claude")
    assert type(excinfo.value) is kind, excinfo.value
    retries = [e for e in events if isinstance(e, ApiRetry)]
    assert len(retries) == sum(line.get("subtype") == "api_retry" for line in lines)


def test_a_retry_is_an_event_with_its_status() -> None:
    events: list[AgentEvent] = []
    parser = OutputParser("stream-json", events.append)
    parser.feed((json.dumps(retry(2, 401, "authentication_failed")) + "\n").encode())
    assert events == [ApiRetry(2, 10, 401, "authentication_failed")]
    assert isinstance(events[0], ApiRetry) and events[0].refused_login
    assert parser.retrying == events[0]
    parser.feed((json.dumps(STREAMED) + "\n").encode())
    assert parser.retrying is None and parser.retries == 1  # it answers again


# ---- what "always" keeps of Claude's suggestions --------------------------------------------
_BASH_RULE = {"toolName": "Bash", "ruleContent": "ls"}
_READ_RULE = {"toolName": "Read", "ruleContent": "//tmp/**"}


@pytest.mark.parametrize(
    ("tool", "suggestions", "kept"),
    [
        # As Claude Code 2.1 suggests for `cd /tmp && ls`: the Read rule is another tool's.
        (
            "Bash",
            [
                {"type": "addRules", "rules": [_BASH_RULE], "behavior": "allow"},
                {"type": "addRules", "rules": [_READ_RULE], "behavior": "allow"},
                {"type": "addDirectories", "directories": ["/tmp"]},
                {"type": "setMode", "mode": "acceptEdits"},
            ],
            [{"type": "addRules", "rules": [_BASH_RULE], "behavior": "allow"}],
        ),
        ("Write", [{"type": "setMode", "mode": "acceptEdits"}], []),  # nothing to keep
        ("Bash", [{"type": "addRules", "rules": [_BASH_RULE, _READ_RULE]}], None),
        ("Bash", "not a list", []),
        ("Bash", [{"type": "addRules", "rules": "bad"}, 7], []),
    ],
)
def test_always_keeps_only_rules_for_the_tool_asked_about(
    tool: str, suggestions: object, kept: list[object] | None
) -> None:
    if kept is None:  # a suggestion mixing tools keeps its own tool's rules
        kept = [{"type": "addRules", "rules": [_BASH_RULE]}]
    assert _rules_for(tool, suggestions) == kept
