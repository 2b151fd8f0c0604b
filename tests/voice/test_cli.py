"""The ``voice-assistant`` commands, run as real subprocesses with the real models."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.voice.audio_util import wer

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO.parent / "shared" / "audio"

pytestmark = pytest.mark.models


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An isolated home: sessions, sockets and config never touch the real user's."""
    for sub in ("state", "runtime", "config"):
        (tmp_path / sub).mkdir()
    return tmp_path


def run(
    home: Path, *args: str, timeout_s: float = 180, base: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **(os.environ if base is None else base),
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(home / "runtime"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    env.pop("VOICE_ASSISTANT_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "voice.cli", *args],
        cwd=home,  # no ./config.toml here: defaults apply
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_transcribe_prints_only_the_transcript(home: Path) -> None:
    result = run(home, "transcribe", str(AUDIO / "jfk.flac"), "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert wer((AUDIO / "jfk.txt").read_text(), lines[0]) <= 0.15


def test_transcribe_of_silence_prints_nothing_and_says_why(home: Path) -> None:
    # tiny.en turns digital silence into dots, and faint noise into a sentence it invents
    noise = np.random.default_rng(1).standard_normal(3 * 16000) * 0.03
    for name, audio in (("silence", np.zeros(3 * 16000)), ("noise", noise)):
        path = home / f"{name}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            out.writeframes((audio * 32767).astype("<i2").tobytes())
        result = run(home, "transcribe", str(path), "--quiet")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "", name
        assert f"no speech heard in {path}" in result.stderr, name


def test_ask_answers_from_a_file_and_remembers_it(home: Path) -> None:
    reply_wav = home / "reply.wav"
    result = run(
        home,
        "ask",
        str(AUDIO / "jfk.flac"),
        "--agent",
        "echo",
        "--room",
        "den",
        "-o",
        str(reply_wav),
    )
    assert result.returncode == 0, result.stderr
    assert "transcript: And so my fellow Americans" in result.stdout
    assert "reply: You said: And so my fellow Americans" in result.stdout
    assert "timings: 11.0s of audio" in result.stdout
    assert reply_wav.stat().st_size > 44_100  # more than a second of 22 kHz audio

    heard = run(home, "transcribe", str(reply_wav), "--quiet")
    assert "fellow americans" in heard.stdout.lower()

    history = run(home, "history", "--quiet")
    assert history.returncode == 0, history.stderr
    assert "den" in history.stdout and "2 msgs" in history.stdout
    sessions = list((home / "state" / "voice-assistant" / "sessions").glob("*.json"))
    stored = [json.loads(p.read_text()) for p in sessions if p.name != "_index.json"]
    assert stored[0]["room_id"] == "den"

    again = run(home, "ask", str(reply_wav), "--agent", "echo", "-o", str(home / "r.wav"), "-q")
    assert again.returncode == 0 and again.stderr == ""  # --quiet: only warnings and errors


def test_ask_whose_reply_cannot_be_spoken_says_so_and_fails(home: Path) -> None:
    # The voice server is down and there is no local voice: the turn is answered and kept,
    # but nothing was said, so an empty WAV and exit 0 would be a lie.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = home / "config.toml"
    config.write_text(
        f'[tts]\nengine = "wyoming"\nuri = "tcp://127.0.0.1:{port}"\nfallback = "off"\n'
    )
    result = run(
        home, "--config", str(config), "ask", str(AUDIO / "jfk.flac"), "--agent", "echo",
        "-o", str(home / "reply.wav"),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "error: the reply could not be spoken: the tts server" in result.stderr
    assert "Traceback" not in result.stderr
    assert "reply: You said: And so my fellow Americans" in result.stdout  # answered and kept


def test_say_writes_speech(home: Path) -> None:
    out = home / "hello.wav"
    result = run(home, "say", "Hello from the assistant.", "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    heard = run(home, "transcribe", str(out), "--quiet")
    assert wer("hello from the assistant", heard.stdout) <= 0.15


def test_demo_runs_the_whole_chain_with_no_microphone_and_no_login(home: Path) -> None:
    result = run(home, "demo")
    assert result.returncode == 0, result.stderr
    assert "transcript: What is the capital of France?" in result.stdout
    assert "reply: You said: What is the capital of France?" in result.stdout
    # The reply transcribed back: Piper draws its voice anew each run, and tiny.en once heard
    # "capital of friends" in a CI run, so a word may differ.
    heard_back = result.stdout.split("reply heard back:")[1]
    assert wer("you said what is the capital of france", heard_back) <= 0.15, heard_back
    # Its conversation is no one's: only the two WAV files stay, to be listened to.
    question = Path(result.stdout.split("spoken into ")[1].split()[0])
    assert sorted(p.name for p in question.parent.iterdir()) == ["question.wav", "reply.wav"]
    shutil.rmtree(question.parent)


def test_demo_with_a_reply_file_leaves_nothing_else_behind(home: Path) -> None:
    out = home / "reply.wav"
    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("voice-assistant-demo-*"))
    result = run(home, "demo", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "spoken into a scratch file" in result.stdout and out.is_file()
    assert set(scratch.glob("voice-assistant-demo-*")) <= before


def test_agent_that_hangs_gets_a_spoken_apology(home: Path) -> None:
    config = home / "config.toml"
    config.write_text("[agent]\ntimeout_s = 1.0\nkill_grace_s = 0.5\n")
    out = home / "reply.wav"
    result = run(
        home,
        "ask",
        str(AUDIO / "digits.wav"),
        "--config",
        str(config),
        "--agent",
        f"{sys.executable} -c 'import time; time.sleep(60)'",
        "-o",
        str(out),
    )
    assert result.returncode == 1
    assert "reply: Sorry, the agent took too long" in result.stdout
    heard = run(home, "transcribe", str(out), "--quiet")
    assert "took too long" in heard.stdout.lower()


@pytest.mark.compat
def test_ask_prints_what_claude_was_not_allowed_as_it_says_it(home: Path) -> None:
    from tests.claude_api import ClaudeApi, Reply, Text, ToolUse
    from tests.claude_fixtures import find_claude

    (home / "project").mkdir()
    config = home / "config.toml"
    config.write_text(f"[agent]\ncwd = {str(home / 'project')!r}\n")
    tool = ToolUse("Bash", {"command": "npm test", "description": "Run the tests"})
    with ClaudeApi(Reply([Text("I will run them."), tool]), Reply([Text("I could not.")])) as api:
        env = api.env(home / "claude-home")
        result = run(
            home, "--config", str(config), "ask", str(AUDIO / "digits.wav"),
            "--agent", find_claude(), "-o", str(home / "r.wav"), base=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "note: Claude was not allowed to run npm test." in result.stdout.splitlines()


def test_an_agent_that_is_not_installed_is_said_so(home: Path) -> None:
    out = home / "reply.wav"
    missing = home / "no-such-agent"
    result = run(home, "ask", str(AUDIO / "digits.wav"), "--agent", str(missing), "-o", str(out))
    assert result.returncode == 1
    assert "reply: Sorry, the agent program is not installed." in result.stdout
    assert f"The agent program '{missing}' was not found" in result.stderr  # the log says how
    assert "reply: Sorry, the agent program" in result.stderr  # what was said, not the detail
    heard = run(home, "transcribe", str(out), "--quiet")
    assert "not installed" in heard.stdout.lower()


def test_an_agent_that_cannot_keep_a_session_is_refused_before_the_models_load(
    home: Path,
) -> None:
    config = home / "config.toml"
    # A Whisper model that is not there: had the models loaded first, that would be the error.
    config.write_text(f'[agent]\nmode = "session"\n[stt]\nmodel = "{home}/no-such-whisper"\n')
    result = run(home, "ask", str(AUDIO / "digits.wav"), "--config", str(config), "--agent", "cat")
    assert result.returncode == 78, result.stderr
    assert "agent.mode = 'session' needs Claude Code" in result.stderr
    assert "no-such-whisper" not in result.stderr and "Traceback" not in result.stderr


def test_bad_config_names_the_key(home: Path) -> None:
    config = home / "config.toml"
    config.write_text("[vad]\nhangover = 600\n")
    result = run(home, "transcribe", str(AUDIO / "jfk.flac"), "--config", str(config))
    assert result.returncode == 78  # a configuration error: the service does not restart on it
    assert "vad.hangover" in result.stderr and "Traceback" not in result.stderr


def test_unreadable_audio_file_is_a_clear_error(home: Path) -> None:
    bogus = home / "not-audio.wav"
    bogus.write_bytes(b"this is not a wave file")
    result = run(home, "transcribe", str(bogus))
    assert result.returncode == 2
    assert "cannot read audio file" in result.stderr and "Traceback" not in result.stderr
    result = run(home, "transcribe", str(home / "missing.wav"))
    assert result.returncode == 2
    assert "missing.wav: there is no such file" in result.stderr
    result = run(home, "ask", str(home / "missing.wav"), "--agent", "echo", "--verbose")
    assert result.returncode == 2
    assert "missing.wav: there is no such file" in result.stderr
    assert "models loaded" not in result.stderr  # told before seconds of loading


def test_ptt_without_a_listener_says_what_to_do(home: Path) -> None:
    result = run(home, "ptt", "press")
    assert result.returncode == 2
    assert "voice-assistant listen" in result.stderr
