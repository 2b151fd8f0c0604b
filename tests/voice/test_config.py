"""config.toml: every key documented, strict validation, clear errors."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from core.config import AgentConfig, CoreConfig
from core.errors import ConfigError
from voice.config import Config, from_tables, load

REPO = Path(__file__).resolve().parents[2]


def _fields(obj: object) -> dict[str, object]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


def test_the_shipped_config_documents_every_key_with_its_default() -> None:
    data = tomllib.loads((REPO / "config.toml").read_text())
    defaults = Config()
    sections = {**_fields(defaults), **_fields(defaults.core)}
    for table, values in data.items():
        expected = sections[table]
        assert set(values) == set(_fields(expected)), f"[{table}] keys differ from the dataclass"
    documented = set(data)
    declared = {f.name for f in dataclasses.fields(Config)} - {"core", "source"}
    declared |= {f.name for f in dataclasses.fields(CoreConfig)}
    assert documented == declared
    assert load(REPO / "config.toml") == dataclasses.replace(defaults, source=REPO / "config.toml")


def test_unknown_key_is_an_error_that_names_it() -> None:
    with pytest.raises(ConfigError, match=r"vad\.hangover_msec"):
        from_tables({"vad": {"hangover_msec": 500}})
    with pytest.raises(ConfigError, match=r"\[speach\]"):
        from_tables({"speach": {}})


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"vad": {"aggressiveness": 7}}, "aggressiveness"),
        ({"vad": {"hangover_ms": "600"}}, "vad.hangover_ms must be int"),
        ({"vad": {"hangover_ms": True}}, "vad.hangover_ms must be int"),
        ({"audio": {"frame_ms": 25}}, "audio.frame_ms must be one of"),
        ({"input": {"mode": "clap"}}, "input.mode must be one of"),
        ({"agent": {"command": "claude -p"}}, "agent.command must be a list"),
        ({"agent": {"command": []}}, "agent.command must name a program"),
        ({"agent": {"timeout_s": -1}}, "positive"),
        ({"stt": {"blocklist": [1, 2]}}, r"stt.blocklist\[0\] must be str"),
        ({"turn": "desk"}, r"\[turn\] must be a table"),
    ],
)
def test_bad_values_are_rejected_with_the_key_named(
    tables: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        from_tables(tables)


def test_numbers_are_widened_and_lists_become_tuples() -> None:
    config = from_tables({"agent": {"timeout_s": 5, "command": ["my-agent", "--fast"]}})
    assert config.core.agent == AgentConfig(command=("my-agent", "--fast"), timeout_s=5.0)
    assert isinstance(config.core.agent.timeout_s, float)


def test_malformed_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[vad\nhangover_ms = 3")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.toml")


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.vad.hangover_ms = 1  # type: ignore[misc]
