"""config.toml: every key documented, strict validation, clear errors."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from core.config import AgentConfig, CoreConfig, check_trusted
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
        ({"vad": {"hangover_ms": "600"}}, "vad.hangover_ms must be a whole number"),
        ({"vad": {"hangover_ms": True}}, "vad.hangover_ms must be a whole number"),
        ({"audio": {"frame_ms": 25}}, "audio.frame_ms must be one of"),
        # 30.0 == 30 in Python: it passed, and the segmenter failed with a TypeError.
        ({"audio": {"frame_ms": 30.0}}, "audio.frame_ms must be one of 10, 20, 30, got 30.0"),
        ({"input": {"mode": "clap"}}, "input.mode must be one of"),
        ({"agent": {"command": "claude -p"}}, "agent.command must be a list"),
        ({"agent": {"command": []}}, "agent.command must name a program"),
        ({"agent": {"timeout_s": -1}}, "agent.timeout_s must be more than 0"),
        ({"stt": {"blocklist": [1, 2]}}, r"stt.blocklist\[0\] must be a string"),
        ({"turn": "desk"}, r"\[turn\] must be a table"),
        ({"wake": {"speech_gate": "yes"}}, "wake.speech_gate must be true or false"),
        # A typo here failed only as Whisper loaded (exit 2: the service restarted for ever).
        ({"stt": {"compute_type": "fp64"}}, "stt.compute_type must be one of 'default'"),
        ({"stt": {"device": "gpu"}}, "stt.device must be one of 'cpu', 'cuda', 'auto'"),
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


# ---- values validated where they are defined ---------------------------------------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("agent", "timeout_s", INF),
        ("agent", "timeout_s", 1e308),
        ("agent", "timeout_s", NAN),
        ("agent", "timeout_s", 0),
        ("agent", "kill_grace_s", -1.0),
        ("agent", "kill_grace_s", NAN),
        ("agent", "max_output_bytes", 0),
        ("agent", "max_output_bytes", 1 << 40),
        ("session", "idle_timeout_s", -1.0),
        ("session", "idle_timeout_s", NAN),
        ("audio", "queue_frames", 0),
        ("audio", "stall_timeout_s", 0.0),
        ("audio", "stall_timeout_s", INF),
        ("audio", "speaker_rest_s", -1.0),
        ("audio", "speaker_rest_s", NAN),
        ("audio", "reopen_backoff_max_s", -5.0),
        ("vad", "aggressiveness", 7),
        ("vad", "onset_frames", 0),
        ("vad", "onset_window_frames", 10_000),
        ("vad", "pre_roll_ms", -300),
        ("vad", "hangover_ms", 0),
        ("vad", "hangover_ms", -600),
        ("vad", "min_utterance_ms", -1),
        ("vad", "max_utterance_s", NAN),
        ("vad", "max_utterance_s", 0.0),
        ("vad", "pause_ms", 0),
        ("vad", "tail_gate_db", -3.0),
        ("stt", "cpu_threads", 100_000),
        ("stt", "cpu_threads", -1),
        ("stt", "beam_size", 1_000_000),
        ("stt", "beam_size", 0),
        ("stt", "min_window_s", 5.0),
        ("stt", "min_level_dbfs", NAN),
        ("stt", "max_no_speech_prob", 1.5),
        ("stt", "min_avg_logprob", INF),
        ("tts", "speaker_id", -2),
        ("tts", "length_scale", NAN),
        ("tts", "length_scale", 0.0),
        ("tts", "threads", 100_000),
        ("tts", "first_chunk_max_chars", -5),
        ("turn", "cooldown_ms", -1),
        ("turn", "quick_hangover_ms", -250),
        ("input", "gpio_pin", 99),
        ("input", "click_ignore_ms", -150),
        ("input", "release_grace_ms", 10**9),
        ("earcons", "volume", 1.5),
        ("earcons", "volume", NAN),
        ("earcons", "thinking_repeat_s", 0.01),
        ("earcons", "thinking_repeat_s", -4.0),
    ],
)
def test_absurd_numbers_are_config_errors_naming_the_key(
    table: str, key: str, value: float
) -> None:
    with pytest.raises(ConfigError, match=rf"^{table}\.{key} must be"):
        from_tables({table: {key: value}})


def test_limits_hold_for_values_built_in_python_too() -> None:
    with pytest.raises(ConfigError, match=r"vad\.hangover_ms"):
        dataclasses.replace(Config().vad, hangover_ms=0)
    with pytest.raises(ConfigError, match=r"agent\.timeout_s"):
        AgentConfig(timeout_s=NAN)
    with pytest.raises(ConfigError, match=r"agent\.output_format"):
        AgentConfig(output_format="xml")  # type: ignore[arg-type]


def test_special_values_keep_their_meaning() -> None:
    config = from_tables(
        {
            "session": {"idle_timeout_s": 0},  # never
            "earcons": {"thinking_repeat_s": 0},  # once
            "tts": {"first_chunk_max_chars": 0, "speaker_id": -1},  # never split; default
            "stt": {"cpu_threads": 0},  # the library picks
        }
    )
    assert config.core.session.idle_timeout_s == 0
    assert config.earcons.thinking_repeat_s == 0


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"vad": {"pause_ms": 900, "hangover_ms": 800}}, "vad.pause_ms must not exceed"),
        ({"vad": {"onset_frames": 6}}, "vad.onset_frames must not exceed"),
        ({"turn": {"room": ""}}, "turn.room: room id is empty"),
        ({"turn": {"room": "../etc"}}, "turn.room"),
        ({"agent": {"command": [""]}}, "agent.command must name a program"),
        ({"agent": {"command": ["claude", "a\0b"]}}, r"agent.command\[1\] must not contain a NUL"),
        ({"session": {"store_dir": "/x\0y"}}, "session.store_dir must not contain a NUL"),
        ({"input": {"control_socket": "/" + "s" * 120}}, "input.control_socket .* longer than"),
    ],
)
def test_other_bad_values_name_the_key(tables: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_tables(tables)


def test_the_shipped_config_documents_every_limit() -> None:
    """Each key with limits says them in its comment, so the file never promises otherwise."""
    lines = (REPO / "config.toml").read_text().splitlines()
    defaults = Config()
    tables = {**_fields(defaults), **_fields(defaults.core)}
    for number, line in enumerate(lines):
        name = line.split("=")[0].strip()
        table = next((t[1:-1] for t in reversed(lines[:number]) if t.startswith("[")), None)
        if table is None or "=" not in line or line.startswith("#"):
            continue
        field = next(
            (f for f in dataclasses.fields(tables[table]) if f.name == name),
            None,  # type: ignore[arg-type]
        )
        if field is None or "limits" not in field.metadata:
            continue
        comment = []  # the comment block above, which may cover several keys in a row
        for above in reversed(lines[:number]):
            if above.startswith("#"):
                comment.append(above)
            elif comment or not above.strip() or above.startswith("["):
                break
        limits = field.metadata["limits"]
        text = " ".join(comment)
        for bound in (limits.low, limits.high):
            said = str(int(bound)) if float(bound).is_integer() else str(bound)
            assert said in text, f"{table}.{name}: its comment does not say {said}"


# ---- which file is read, and only if it can be trusted ----------------------------------
def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[turn]\nroom = 'k\xfcche'\n")  # Latin-1
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(path)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_only_a_regular_file_is_read_and_nothing_hangs(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "config.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    errors: list[BaseException] = []

    def read() -> None:
        try:
            load(path)
        except BaseException as e:  # handed to the test's thread
            errors.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    assert not reader.is_alive(), f"reading a {kind} hangs"
    assert isinstance(errors[0], ConfigError)
    assert "not a regular file" in str(errors[0])


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load(path)


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_file_others_can_change_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[turn]\nroom = 'den'\n")
    path.chmod(mode)
    with pytest.raises(ConfigError, match=r"can be changed by other users.*chmod go-w"):
        load(path)
    path.chmod(0o644)
    assert load(path).turn.room == "den"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_another_users_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[agent]\ncommand = ["/bin/sh", "-c", "id > /tmp/pwned"]\n')
    os.chown(path, 65534, 65534)  # nobody
    with pytest.raises(ConfigError, match="belongs to another user"):
        load(path)


def test_the_trust_check_itself() -> None:
    info = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 1000, 1000, 10, 0, 0, 0))
    check_trusted(Path("c.toml"), info, uid=1000)
    with pytest.raises(ConfigError, match="another user"):
        check_trusted(Path("c.toml"), info, uid=1001)
    root_owned = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 10, 0, 0, 0))
    check_trusted(Path("/etc/c.toml"), root_owned, uid=1001)


def lookup(cwd: Path, env: dict[str, str]) -> str:
    code = "from core.config import default_config_path; print(default_config_path())"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "VOICE_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def test_the_current_directory_is_never_searched(tmp_path: Path) -> None:
    """A config.toml in a cloned repository or the service's working directory would choose
    the program the assistant runs."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "config.toml").write_text('[agent]\ncommand = ["/bin/sh"]\n')
    assert lookup(tmp_path, {"HOME": str(home)}) == "None"
    mine = home / ".config" / "voice-assistant" / "config.toml"
    mine.parent.mkdir(parents=True)
    mine.write_text("")
    assert lookup(tmp_path, {"HOME": str(home)}) == str(mine)
    assert lookup(tmp_path, {"HOME": str(home), "VOICE_ASSISTANT_CONFIG": "/x.toml"}) == "/x.toml"
