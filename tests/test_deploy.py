"""The Raspberry Pi deploy files: the systemd user unit and the install script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "voice-assistant.service"
INSTALL = ROOT / "deploy" / "install-pi.sh"
EXEC = ".local/share/voice-assistant/venv/bin/voice-assistant"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's syntax: [Section], Key=value, repeatable keys, '#' and ';' comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_has_the_required_directives() -> None:
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]

    def one(key: str) -> str:
        assert len(service[key]) == 1, key
        return service[key][0]

    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]  # in [Unit], where systemd reads it
    assert "StartLimitIntervalSec" not in service
    assert one("Type") == "notify"
    assert one("Restart") == "always"
    assert one("RestartSec") == "2"
    assert one("WatchdogSec") == "30"
    assert one("UMask") == "0077"
    assert one("NoNewPrivileges") == "yes"
    # The config is named: nothing in the working directory (%h) can stand in for it.
    assert one("ExecStart") == f"%h/{EXEC} listen --config %h/.config/voice-assistant/config.toml"
    assert one("RestartPreventExitStatus") == "78"  # voice.cli's EXIT_CONFIG
    # SIGTERM to the assistant alone (it stops its agent cleanly), then the rest is killed.
    assert one("KillMode") == "mixed"
    assert sorted(service["Environment"]) == [
        "OMP_NUM_THREADS=2",
        "PATH=%h/.local/bin:/usr/local/bin:/usr/bin:/bin",  # where `claude` is installed
        "PYTHONUNBUFFERED=1",
    ]
    assert unit["Install"]["WantedBy"] == ["default.target"]  # a user unit's target
    # Limits and seccomp-based hardening, which need no namespace in a user unit.
    assert one("MemoryMax") == "1536M"
    assert one("TasksMax") == "512"
    assert one("RestrictRealtime") == "yes"
    assert one("SystemCallFilter") == "@system-service"
    assert one("SystemCallErrorNumber") == "EPERM"
    assert one("RestrictAddressFamilies").split() == [
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    ]
    # Namespace sandboxing in a user unit implies PrivateUsers= and loses the device groups.
    for key in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateUsers", "User"):
        assert key not in service, key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_user_unit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    executable = home / EXEC
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        ["systemd-analyze", "--man=no", "verify", "--user", str(UNIT)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify only warns (exit 0) about unknown keys: any output at all is a finding.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_install_script_syntax() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True, timeout=30)


def dry_run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "USER": "pi"}
    env.pop("XDG_RUNTIME_DIR", None)
    return subprocess.run(
        ["bash", str(INSTALL), "--dry-run", *args],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def commands(output: str) -> list[str]:
    return [line[2:] for line in output.splitlines() if line.startswith("+ ")]


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = dry_run(home)
    assert result.returncode == 0, result.stderr
    steps = commands(result.stdout)
    venv = f"{home}/.local/share/voice-assistant/venv"
    expected_in_order = [
        f"python3 -m venv {venv}",
        f"{venv}/bin/pip install --upgrade {ROOT}[evdev,gpio] lgpio",
        f"{venv}/bin/python {ROOT}/scripts/fetch_smart_turn.py",
        f"install -m 600 {ROOT}/config.toml {home}/.config/voice-assistant/config.toml",
        "sudo loginctl enable-linger pi",
        f"install -m 644 {UNIT} {home}/.config/systemd/user/voice-assistant.service",
        "systemctl --user daemon-reload",
        "systemctl --user enable voice-assistant.service",
        "systemctl --user restart voice-assistant.service",
    ]
    positions = [steps.index(s) for s in expected_in_order]
    assert positions == sorted(positions)
    assert "libportaudio2" in result.stdout
    assert any(s.startswith("sudo apt-get install -y") for s in steps) or "all installed" in (
        result.stdout
    )
    for group in ("input", "gpio", "audio"):
        assert f"sudo usermod -aG {group} pi" in steps or f"{group} group" in result.stdout
    assert list(home.iterdir()) == []


def test_dry_run_is_idempotent_about_existing_state(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".local/share/voice-assistant/venv/bin").mkdir(parents=True)
    python = home / ".local/share/voice-assistant/venv/bin/python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    config = home / ".config/voice-assistant"
    config.mkdir(parents=True)
    (config / "config.toml").write_text("[turn]\nroom = 'kitchen'\n")
    (config / "env").write_text("")
    result = dry_run(home, "--no-start")
    assert result.returncode == 0, result.stderr
    steps = commands(result.stdout)
    assert not any("venv" in s and "-m venv" in s for s in steps)
    assert not any("config.toml" in s for s in steps)
    assert "keeping the existing venv" in result.stdout
    assert "systemctl --user restart voice-assistant.service" not in steps
    assert "systemctl --user enable voice-assistant.service" in steps


def test_an_existing_config_others_can_write_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = home / ".config/voice-assistant/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("")
    config.chmod(0o664)  # a umask of 002: the assistant would refuse it
    result = dry_run(home, "--no-start")
    assert result.returncode == 0, result.stderr
    assert f"chmod go-w {config}" in commands(result.stdout)


def test_the_exit_status_the_unit_does_not_restart_on_is_the_clis() -> None:
    from voice.cli import EXIT_CONFIG

    assert f"RestartPreventExitStatus={EXIT_CONFIG}" in UNIT.read_text()


def test_bad_usage(tmp_path: Path) -> None:
    result = dry_run(tmp_path, "--frobnicate")
    assert result.returncode == 2
    assert "unknown option: --frobnicate" in result.stderr
    result = dry_run(tmp_path, "--source", str(tmp_path))
    assert result.returncode == 1
    assert "not the project checkout" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can check the refusal safely")
def test_refuses_to_install_as_root(tmp_path: Path) -> None:
    # --source points nowhere: were the root check ever lost, the script still stops early.
    result = subprocess.run(
        ["bash", str(INSTALL), "--source", str(tmp_path)],
        env={**os.environ, "HOME": str(tmp_path)},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "not root" in result.stderr
    assert list(tmp_path.iterdir()) == []
