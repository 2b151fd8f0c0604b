"""Strict, safe loading of ``config.toml`` into frozen dataclasses that validate themselves.

- The file is read once, and only if it can be trusted: a regular file (a FIFO or a device
  would hang or never end), at most :data:`MAX_CONFIG_BYTES`, owned by the user (or root) and
  not writable by anyone else, because it names the program the assistant runs as the user.
- A key that no dataclass declares is an error that names it, so a typo never silently falls
  back to a default. Non-finite numbers and NUL characters are refused for every key.
- Each dataclass checks its own values in ``__post_init__``: numeric keys declare their limits
  once, next to their default, with :func:`limited`; :func:`check_fields` enforces them, so a
  value built in Python (``AgentRunner``, ``Core``, ``dataclasses.replace``) is checked too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from core.agent_output import OutputFormat
from core.errors import ConfigError
from core.paths import default_store_dir

log = logging.getLogger(__name__)

T = TypeVar("T")

CONFIG_ENV = "VOICE_ASSISTANT_CONFIG"
MAX_CONFIG_BYTES = 1024 * 1024  # the documented file is 10 KB; anything huge is a mistake


# ---- reading the file ---------------------------------------------------------------------
def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/voice-assistant/config.toml``, i.e. ``~/.config/...`` by default."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative path
        base = str(Path.home() / ".config")
    return Path(base) / "voice-assistant" / "config.toml"


def default_config_path() -> Path | None:
    """``$VOICE_ASSISTANT_CONFIG``, else the user's config file if it exists.

    Never the current directory: a ``config.toml`` in a cloned repository, a shared directory
    or the service's working directory would choose the program the assistant runs.
    """
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    path = user_config_path()
    return path if path.exists() else None


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one trusted TOML file, turning every failure into a :class:`ConfigError`."""
    data = _read_trusted(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 text (invalid byte at offset {e.start}); save it as UTF-8"
        ) from None
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    log.info("configuration read from %s", path)
    return tables


def _read_trusted(path: Path) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (the type is checked next).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        check_trusted(path, os.fstat(fd))  # the file actually opened: nothing can swap it
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    return data


def check_trusted(path: Path, info: os.stat_result, uid: int | None = None) -> None:
    """A config file must be a regular file that only its owner, the user or root, can change."""
    uid = os.getuid() if uid is None else uid
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"config file {path} is not a regular file")
    if info.st_uid not in (uid, 0):
        raise ConfigError(
            f"config file {path} belongs to another user (uid {info.st_uid}), and a config file "
            "chooses the program the assistant runs; use your own copy, e.g. "
            f"{user_config_path()}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"config file {path} can be changed by other users (mode "
            f"{stat.S_IMODE(info.st_mode):03o}); run: chmod go-w {path}"
        )


# ---- declared limits -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Limits:
    """The values one numeric key accepts: a range, plus special values (``0`` = never)."""

    low: float
    high: float
    low_open: bool = False  # the range excludes ``low`` itself
    also: tuple[float, ...] = ()

    def check(self, value: object, key: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if value in self.also:
            return
        above_low = value > self.low if self.low_open else value >= self.low
        if not (above_low and value <= self.high):  # NaN fails both comparisons
            raise ConfigError(f"{key} must be {self}, got {value!r}")

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        text = f"more than {low} and at most {high}" if self.low_open else f"{low} to {high}"
        special = " or ".join(_number(v) for v in self.also)
        return f"{special} or {text}" if special else text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def limited(
    default: T,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    also: tuple[float, ...] = (),
) -> T:
    """A dataclass field with its default and the limits :func:`check_fields` enforces."""
    limits = Limits(low, high, low_open, also)
    return dataclasses.field(default=default, metadata={"limits": limits})


def check_fields(obj: object, table: str) -> None:
    """Enforce every field's declared limits and ``Literal`` choices; ``table`` names keys."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        key = f"{table}.{f.name}"
        limits = f.metadata.get("limits")
        if limits is not None:
            limits.check(value, key)
        hint = hints[f.name]
        choices_of = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Literal and not _is_choice(value, choices_of):
            choices = ", ".join(repr(a) for a in choices_of)
            raise ConfigError(f"{key} must be one of {choices}, got {value!r}")


def _is_choice(value: object, choices: tuple[Any, ...]) -> bool:
    """``value`` is one of ``choices``, of the same type: 30.0 and True equal 30 and 1 in
    Python, and a float frame length broke the segmenter."""
    return any(type(value) is type(c) and value == c for c in choices)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The dataclass's resolved type hints, computed once per class."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


# ---- tables to dataclasses -----------------------------------------------------------------
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
    hints = _hints(cls)
    values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in table.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise  # it names the key already
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
        if not _is_choice(value, args):
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key} must be one of {choices}, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if hint in (str, Path) and isinstance(value, str) and "\0" in value:
        raise ConfigError(f"{key} must not contain a NUL character")
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a path string, got {value!r}")
        return Path(value).expanduser()
    if hint in (int, str, bool):
        ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
        if not ok:
            kind = {int: "a whole number", str: "a string", bool: "true or false"}[hint]
            raise ConfigError(f"{key} must be {kind}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # a bug in a config dataclass


# ---- the core's tables ---------------------------------------------------------------------
DEFAULT_AGENT_COMMAND = ("claude", "-p", "--output-format", "stream-json", "--verbose")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """``[agent]``: the CLI that answers, run as a subprocess."""

    command: tuple[str, ...] = DEFAULT_AGENT_COMMAND
    timeout_s: float = limited(300.0, 0, 86400, low_open=True)
    kill_grace_s: float = limited(2.0, 0, 60, low_open=True)
    cwd: str = ""
    output_format: OutputFormat = "auto"
    max_output_bytes: int = limited(8 * 1024 * 1024, 1024, 256 * 1024 * 1024)
    # An unanswered permission question is a "no" after this long.
    permission_timeout_s: float = limited(30.0, 1, 3600)
    # Claude Code: "session" keeps one stream-json process per room, "per-turn" starts one
    # per turn; "auto" is "session" for claude (and the echo agent) with stream-json output.
    mode: typing.Literal["auto", "session", "per-turn"] = "auto"
    ask_permissions: bool = True  # Claude asks before tools that need approval (by voice)
    permission_mode: typing.Literal["", "default", "acceptEdits", "plan", "bypassPermissions"] = ""
    allowed_tools: tuple[str, ...] = ()  # --allowedTools, e.g. ["Read", "Bash(npm test)"]
    voice_prompt: bool = True  # ask Claude for short spoken answers (--append-system-prompt)
    append_system_prompt: str = ""  # more instructions of your own
    # A room's Claude process is stopped after this long unused.
    idle_stop_s: float = limited(900.0, 10, 7 * 86400)
    # Claude processes kept at once; a new room beyond it stops the one unused longest.
    max_processes: int = limited(4, 1, 64)
    tools: typing.Literal["speak", "earcon", "off"] = "speak"  # how tool use is heard
    # "Still working." after this long without speech; 0: never.
    progress_s: float = limited(20.0, 3, 3600, also=(0,))

    def __post_init__(self) -> None:
        command = self.command
        if (
            not isinstance(command, tuple)
            or not command
            or not all(isinstance(a, str) and "\0" not in a for a in command)
            or not command[0]
        ):
            raise ConfigError(
                f"agent.command must name a program, as a list of arguments; got {command!r}"
            )
        check_fields(self, "agent")

    @property
    def workdir(self) -> str | None:
        """The agent's working directory, ``~`` expanded; None: the assistant's own."""
        return os.path.expanduser(self.cwd) if self.cwd else None


@dataclasses.dataclass(frozen=True)
class SessionConfig:
    """``[session]``: where conversations live and when a new one starts."""

    store_dir: str = ""
    idle_timeout_s: float = limited(1800.0, 0, 365 * 86400)  # 0: never

    def __post_init__(self) -> None:
        check_fields(self, "session")

    @property
    def root(self) -> Path:
        """The store's directory: ``store_dir``, or the default under the user's state dir."""
        return Path(self.store_dir).expanduser() if self.store_dir else default_store_dir()


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
