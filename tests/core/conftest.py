"""Shared fixtures for the core tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.agent import AgentRunner
from core.store import SessionStore

# Fixtures for the real Claude Code CLI against a scripted Messages API; pytest finds them here.
from tests.claude_fixtures import (  # noqa: F401
    claude_api,
    claude_cli,
    claude_cwd,
    claude_env,
    claude_home,
    claude_process,
)

REPO = Path(__file__).resolve().parents[2]
FAKES = Path(__file__).resolve().parent / "fakes"
FAKE_AGENT = FAKES / "fake_agent.py"
# -I -S: no site-packages and no environment lookups, so a fake starts in a few milliseconds.
FAST_PYTHON = (sys.executable, "-I", "-S")
ECHO_AGENT = (sys.executable, "-m", "core.echo_agent")


def fake_command(mode: str, *args: str) -> list[str]:
    return [*FAST_PYTHON, str(FAKE_AGENT), mode, *args]


def fake_runner(mode: str, *args: str, **kwargs: object) -> AgentRunner:
    kwargs.setdefault("timeout", 30.0)
    return AgentRunner(fake_command(mode, *args), **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real small disk (mounted as root; the test is skipped where it cannot be)."""
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture(params=["dir-cache", "always-list"])
def store(store_dir: Path, request: pytest.FixtureRequest) -> SessionStore:
    """A store, in both modes: trusting the directory's mtime, and listing it every time (what
    it does on filesystems with coarse timestamps, which the running kernel may not have)."""
    store = SessionStore(store_dir)
    if request.param == "always-list":
        store._trust_dir_sig = False
    return store
