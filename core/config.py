"""Strict loading of ``config.toml`` tables into frozen dataclasses.

The file is read once with :mod:`tomllib`. A key that no dataclass declares is an error that
names it, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from core.errors import ConfigError

T = TypeVar("T")

CONFIG_ENV = "VOICE_ASSISTANT_CONFIG"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file, turning every failure into a :class:`ConfigError`."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None


def default_config_path() -> Path | None:
    """``$VOICE_ASSISTANT_CONFIG``, else ``./config.toml``, else the user's config dir."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    candidates = [
        Path.cwd() / "config.toml",
        Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        / "voice-assistant"
        / "config.toml",
    ]
    return next((p for p in candidates if p.is_file()), None)


def build(cls: type[T], table: Mapping[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``table``; ``where`` names the table in error messages."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {type(table).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]} in config; known keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in table.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{where}]: {e}") from None


def _coerce(hint: Any, value: Any, key: str) -> Any:  # noqa: PLR0911, PLR0912
    """Check ``value`` against a type hint, converting only where TOML cannot say it."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, key)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1])
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{key} must be empty")
        return None
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key} must be one of {choices}, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a path string, got {value!r}")
        return Path(value).expanduser()
    if hint in (int, str, bool):
        ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # a bug in a config dataclass


DEFAULT_AGENT_COMMAND = ("claude", "-p", "--output-format", "stream-json", "--verbose")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """``[agent]``: the CLI that answers, run as a subprocess."""

    command: tuple[str, ...] = DEFAULT_AGENT_COMMAND
    timeout_s: float = 300.0
    kill_grace_s: float = 2.0
    cwd: str = ""
    output_format: typing.Literal["auto", "stream-json", "json", "text"] = "auto"
    max_output_bytes: int = 8 * 1024 * 1024
    permission_timeout_s: float = 30.0  # an unanswered permission question is a "no"
    # Claude Code: "session" keeps one stream-json process per room, "per-turn" starts one
    # per turn; "auto" is "session" for claude with stream-json output.
    mode: typing.Literal["auto", "session", "per-turn"] = "auto"
    ask_permissions: bool = True  # Claude asks before tools that need approval (by voice)
    permission_mode: typing.Literal["", "default", "acceptEdits", "plan", "bypassPermissions"] = ""
    allowed_tools: tuple[str, ...] = ()  # --allowedTools, e.g. ["Read", "Bash(npm test)"]
    voice_prompt: bool = True  # ask Claude for short spoken answers (--append-system-prompt)
    append_system_prompt: str = ""  # more instructions of your own
    idle_stop_s: float = 900.0  # a room's Claude process is stopped after this long unused
    tools: typing.Literal["speak", "earcon", "off"] = "speak"  # how tool use is heard
    progress_s: float = 20.0  # "Still working." after this long without speech; 0: never

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError("agent.command must name a program")
        if self.timeout_s <= 0 or self.kill_grace_s <= 0:
            raise ValueError("agent.timeout_s and agent.kill_grace_s must be positive")


@dataclasses.dataclass(frozen=True)
class SessionConfig:
    """``[session]``: where conversations live and when a new one starts."""

    store_dir: str = ""
    idle_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.idle_timeout_s < 0:
            raise ValueError("session.idle_timeout_s must be 0 (never) or positive")


@dataclasses.dataclass(frozen=True)
class CoreConfig:
    agent: AgentConfig = AgentConfig()
    session: SessionConfig = SessionConfig()

    @classmethod
    def from_tables(cls, data: Mapping[str, Any]) -> CoreConfig:
        """Build from the ``[agent]`` and ``[session]`` tables; other tables are not ours."""
        return cls(
            agent=build(AgentConfig, data.get("agent", {}), "agent"),
            session=build(SessionConfig, data.get("session", {}), "session"),
        )
