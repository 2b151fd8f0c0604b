"""Compatibility with the real Claude Code CLI from npm (``make setup`` installs it).

Not logged in, the CLI answers every prompt with an ``is_error`` result, which is exactly what
these tests need: they check that AgentRunner turns it into a clear AgentError, and that an
unknown ``--resume`` id is retried once without it. HOME is a temporary directory, so the CLI
never writes into the real home.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

from core import Core
from core.agent import AgentRunner
from core.errors import AgentError, AgentLoginError
from tests.claude_fixtures import find_claude
from tests.core.conftest import FAKES

pytestmark = pytest.mark.compat

TIMEOUT_S = 180.0  # the CLI is a large Node program; a busy machine starts it slowly


@pytest.fixture
def claude() -> str:
    return find_claude()


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


FORMATS = pytest.mark.parametrize(
    "flags",
    [["--output-format", "stream-json", "--verbose"], ["--output-format", "json"]],
    ids=["stream-json", "json"],
)


@FORMATS
def test_not_logged_in_becomes_a_clear_agent_error(
    claude: str, home: dict[str, str], flags: list[str], tmp_path: Path
) -> None:
    runner = AgentRunner([claude, "-p", *flags], TIMEOUT_S, tmp_path, env=home)
    streamed: list[str] = []
    with pytest.raises(AgentError) as excinfo:
        runner.run("-h is not an option here", on_text=streamed.append)
    message = str(excinfo.value)
    assert isinstance(excinfo.value, AgentLoginError)  # said as such, not "the agent failed"
    assert message.startswith("The agent reported an error: ")
    assert "Not logged in" in message and "/login" in message
    assert streamed == []  # the error is not streamed as if it were a reply


@FORMATS
def test_an_unknown_resume_id_is_retried_without_it(
    claude: str, home: dict[str, str], tmp_path: Path, flags: list[str]
) -> None:
    log = tmp_path / "invocations.log"
    recorder = [sys.executable, str(FAKES / "record_argv.py"), str(log), claude]
    flags = ["-p", *flags]
    runner = AgentRunner([*recorder, *flags], TIMEOUT_S, tmp_path, env=home)
    stale = str(uuid.uuid4())
    with pytest.raises(AgentError) as excinfo:
        runner.run("hello", session_id=stale)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [[claude, *flags, "--resume", stale], [claude, *flags]]
    # The retry ran (and, not logged in, failed): the error is the login one.
    assert "Not logged in" in str(excinfo.value)
    assert "No conversation found" not in str(excinfo.value)


def test_core_records_the_failed_turn_with_the_real_cli(
    claude: str, home: dict[str, str], tmp_path: Path
) -> None:
    flags = ["-p", "--output-format", "stream-json", "--verbose"]
    core = Core(tmp_path / "store", AgentRunner([claude, *flags], TIMEOUT_S, tmp_path, env=home))
    with pytest.raises(AgentError, match="Not logged in"):
        core.send_message("desk", "what is the weather")
    session = core.active_session("desk")
    assert session is not None
    assert [(m["role"], m.get("is_error")) for m in session.messages] == [
        ("user", None),
        ("assistant", True),
    ]
    assert session.messages[0]["content"] == "what is the weather"
