"""scripts/fetch_smart_turn.py: the model out of the pipecat-ai wheel, checked, idempotent.

Wheels are built here from the model set-up installed (so the offline tests use the real
bytes); one slow test runs the script for real, downloading the wheel from the package index.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from voice.models import SMART_TURN_MODEL, resolve_smart_turn_model, smart_turn_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "fetch_smart_turn.py"
BSD = "BSD 2-Clause License\n\nCopyright (c) 2024-2026, Daily\n"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_smart_turn", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch_smart_turn = load_script()


@pytest.fixture(scope="module")
def real_model() -> bytes:
    """The model as set-up installed it (make setup runs the script)."""
    return resolve_smart_turn_model("", models_dir=ROOT / "no-such-dir").read_bytes()


def wheel(path: Path, model: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(fetch_smart_turn.MODEL_MEMBER, model)
        archive.writestr(fetch_smart_turn.LICENSE_MEMBER, BSD)
        archive.writestr("pipecat/__init__.py", "")
    return path


def no_download(directory: Path) -> Path:
    raise AssertionError("the script downloaded a wheel it did not need")


def test_installs_where_the_program_looks() -> None:
    assert fetch_smart_turn.MODEL == SMART_TURN_MODEL
    assert fetch_smart_turn.default_dest() == smart_turn_dir()


def test_extracts_model_and_licence_then_does_nothing(tmp_path: Path, real_model: bytes) -> None:
    dest = tmp_path / "share" / "smart-turn"
    whl = wheel(tmp_path / "pipecat_ai-1.14.0-py3-none-any.whl", real_model)
    assert fetch_smart_turn.fetch(dest, wheel=whl, download=no_download) is True
    assert (dest / SMART_TURN_MODEL).read_bytes() == real_model
    notice = (dest / "LICENSE").read_text()
    assert notice.startswith(f"{SMART_TURN_MODEL}: Smart Turn v3.2")
    assert "Daily" in notice and "pipecat-ai 1.14.0" in notice and notice.endswith(BSD)
    assert sorted(p.name for p in dest.iterdir()) == ["LICENSE", SMART_TURN_MODEL]
    stamp = (dest / SMART_TURN_MODEL).stat().st_mtime_ns
    assert fetch_smart_turn.fetch(dest, download=no_download) is False  # no wheel, no network
    assert (dest / SMART_TURN_MODEL).stat().st_mtime_ns == stamp


def test_downloads_when_missing(tmp_path: Path, real_model: bytes) -> None:
    asked: list[Path] = []

    def download(directory: Path) -> Path:
        asked.append(directory)
        return wheel(directory / "pipecat_ai-1.14.0-py3-none-any.whl", real_model)

    assert fetch_smart_turn.fetch(tmp_path / "dest", download=download) is True
    assert len(asked) == 1
    assert (tmp_path / "dest" / SMART_TURN_MODEL).read_bytes() == real_model


def test_a_damaged_model_is_replaced(tmp_path: Path, real_model: bytes) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / SMART_TURN_MODEL).write_bytes(real_model[:1000])  # an interrupted copy
    (dest / "LICENSE").write_text("old")
    whl = wheel(tmp_path / "p.whl", real_model)
    assert fetch_smart_turn.fetch(dest, wheel=whl, download=no_download) is True
    assert (dest / SMART_TURN_MODEL).read_bytes() == real_model


def test_a_wheel_with_another_model_installs_nothing(tmp_path: Path, real_model: bytes) -> None:
    tampered = bytearray(real_model)
    tampered[len(tampered) // 2] ^= 0xFF
    whl = wheel(tmp_path / "p.whl", bytes(tampered))
    with pytest.raises(fetch_smart_turn.FetchError, match="sha256"):
        fetch_smart_turn.fetch(tmp_path / "dest", wheel=whl, download=no_download)
    assert not (tmp_path / "dest").exists()


def test_not_a_wheel(tmp_path: Path) -> None:
    junk = tmp_path / "p.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(fetch_smart_turn.FetchError, match="not a usable pipecat-ai"):
        fetch_smart_turn.fetch(tmp_path / "dest", wheel=junk, download=no_download)
    missing = tmp_path / "other.whl"  # a zip, but without the model
    with zipfile.ZipFile(missing, "w") as archive:
        archive.writestr("pipecat/__init__.py", "")
    with pytest.raises(fetch_smart_turn.FetchError, match="not a usable pipecat-ai"):
        fetch_smart_turn.fetch(tmp_path / "dest", wheel=missing, download=no_download)


def test_command_line_error_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dest", str(tmp_path / "d"), "--wheel", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("fetch_smart_turn: error: /nonexistent is not a usable")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_real_download_from_the_package_index(tmp_path: Path, real_model: bytes) -> None:
    command = [sys.executable, str(SCRIPT), "--dest", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr
    assert f"installed into {tmp_path}" in first.stdout
    assert (tmp_path / SMART_TURN_MODEL).read_bytes() == real_model
    assert "BSD 2-Clause License" in (tmp_path / "LICENSE").read_text()
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0 and f"already in {tmp_path}" in again.stdout
