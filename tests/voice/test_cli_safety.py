"""The CLI's exit statuses and safety: config errors, flags, signals, what it prints.

Real ``voice-assistant`` subprocesses; those that answer from an audio file load the real
models (marked ``models``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.claims import RoomClaim
from core.errors import ModelError
from core.session import Session
from core.store import SessionStore
from tests.core.test_agent_lifecycle import processes_with, wait_until_none_left
from tests.rig import ALSA_CONF

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO.parent / "shared" / "audio"
FAKE_AGENT = REPO / "tests" / "core" / "fakes" / "fake_agent.py"
EXIT_ROOM_CLAIMED, EXIT_CONFIG = 75, 78


@pytest.fixture
def home(tmp_path: Path) -> Path:
    for sub in ("state", "runtime", "config"):
        (tmp_path / sub).mkdir()
    return tmp_path


def env_for(home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(home / "runtime"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("VOICE_ASSISTANT_CONFIG", None)
    return env


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "voice.cli", *args],
        cwd=home,
        env=env or env_for(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = cli(home, *args, env=env)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ---- configuration errors have their own exit status ---------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[vad]\nhangover_ms = -600\n", "vad.hangover_ms must be 100 to 10000"),
        (b"[agent]\ntimeout_s = inf\n", "agent.timeout_s must be a finite number"),
        (b"[stt]\nbeam_size = 1000000\n", "stt.beam_size must be 1 to 10"),
        (b"[turn]\nroom = 'k\xfcche'\n", "not UTF-8"),
        (b"[vad\n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_exits_78_naming_the_problem(
    home: Path, content: bytes, message: str
) -> None:
    config = home / "config.toml"
    config.write_bytes(content)
    result = run(home, "history", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    assert message in result.stderr and str(config) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.models
@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("[tts]\nspeaker_id = 5\n", ["say", "Hello.", "-o", "o.wav"], "tts.speaker_id = 5"),
        (
            "[stt]\nmodel = 'base.en'\n",
            ["transcribe", str(AUDIO / "jfk.flac")],
            "Whisper model 'base.en' not found",
        ),
    ],
)
def test_a_setting_found_unusable_once_used_exits_78_too(
    home: Path, content: str, args: list[str], message: str
) -> None:
    # The file parses, but the voice or model it names cannot be used: restarting the
    # service cannot help either.
    config = home / "config.toml"
    config.write_text(content)
    result = run(home, *args, "--config", str(config))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_fifo_as_config_exits_at_once(home: Path) -> None:
    fifo = home / "config.toml"
    os.mkfifo(fifo)
    result = run(home, "history", "--config", str(fifo))  # no writer: reading would block
    assert result.returncode == EXIT_CONFIG
    assert "not a regular file" in result.stderr


@pytest.mark.parametrize("command", ["history", "reset"])
def test_an_empty_room_flag_is_an_error_not_the_default_room(home: Path, command: str) -> None:
    result = run(home, command, "--room", "")
    assert result.returncode == EXIT_CONFIG
    assert "--room: room id is empty" in result.stderr


@pytest.mark.parametrize("limit", ["-1", "0", "x"])
def test_history_limit_must_be_positive(home: Path, limit: str) -> None:
    result = run(home, "history", "-n", limit)
    assert result.returncode == 2  # argparse's usage error
    assert "expected a positive whole number" in result.stderr


def test_the_log_says_which_config_file_was_read(home: Path) -> None:
    config = home / "config" / "voice-assistant" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[turn]\nroom = 'den'\n")
    result = run(home, "history", "--verbose")
    assert result.returncode == 0, result.stderr
    assert f"configuration read from {config}" in result.stderr
    (home / "config.toml").write_text("[turn]\nroom = ''\n")  # in the cwd: never read
    config.unlink()
    result = run(home, "history", "--verbose")
    assert result.returncode == 0, result.stderr
    assert "no configuration file: using the defaults" in result.stderr


def test_a_config_path_from_home_is_expanded(home: Path) -> None:
    # "--config=~/x" reaches the program with its "~": the shell expands it only at a word's start.
    (home / "va.toml").write_text("[turn]\nroom = 'den'\n")
    result = run(home, "--config=~/va.toml", "history", "--verbose")
    assert result.returncode == 0, result.stderr
    assert f"configuration read from {home / 'va.toml'}" in result.stderr


def test_history_ids_name_each_conversation_and_the_agents_own(home: Path) -> None:
    store = SessionStore(home / "state" / "voice-assistant" / "sessions")
    resumable = Session(room_id="desk", agent_session_id="5f0c1e2a-9b7d-4c3e-8f21-0a6b4d2c9e11")
    resumable.add({"role": "user", "content": "What is on the list?"})
    fresh = Session(room_id="den")
    fresh.add({"role": "user", "content": "Hello."})
    for session in (resumable, fresh):
        store.save(session)
    result = run(home, "history", "--ids")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    desk = next(i for i, line in enumerate(lines) if "What is on the list?" in line)
    assert lines[desk + 1].split() == [
        "conversation",
        f"{resumable.session_id},",
        "agent",
        "session",
        "5f0c1e2a-9b7d-4c3e-8f21-0a6b4d2c9e11",
    ]
    den = next(i for i, line in enumerate(lines) if "Hello." in line)
    assert lines[den + 1].split() == ["conversation", fresh.session_id]  # no agent yet
    assert "conversation" not in run(home, "history").stdout  # only when asked for
    assert "closed" not in result.stdout
    assert run(home, "reset", "--room", "den").returncode == 0
    listed = run(home, "history").stdout.splitlines()
    assert [line for line in listed if "closed" in line] == [
        next(line for line in listed if "Hello." in line)  # which one the next turn leaves
    ]


def test_history_lists_a_conversation_stamped_beyond_any_clock(home: Path) -> None:
    # A finite number, so a valid file: 1e300 s is beyond what the platform's time can show.
    store = SessionStore(home / "state" / "voice-assistant" / "sessions")
    far = Session(room_id="desk", created_at=1e300, updated_at=1e300)
    far.add({"role": "user", "content": "From far ahead."})
    store.save(far)
    result = run(home, "history")
    assert result.returncode == 0, result.stderr
    assert "1e+300" in result.stdout and "From far ahead." in result.stdout


@pytest.mark.parametrize("before", [True, False])
def test_config_and_quiet_count_before_the_command_or_after_it(home: Path, before: bool) -> None:
    config = home / "bad.toml"
    config.write_text("[ui]\nlog_level = 'nope'\n")

    def args(*flags: str) -> list[str]:
        return [*flags, "history"] if before else ["history", *flags]

    result = run(home, *args("--config", str(config)))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "ui.log_level must be one of" in result.stderr
    assert "using the defaults" in run(home, *args("--verbose")).stderr
    quiet = run(home, *args("--quiet"))
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_options_without_a_command_are_the_listeners(home: Path) -> None:
    # "voice-assistant --mode nope" reaches listen, which names its own choices.
    result = run(home, "--mode", "nope")
    assert result.returncode == 2
    assert "voice-assistant listen: error: argument --mode" in result.stderr
    config = home / "bad.toml"
    config.write_text("[ui]\nlog_level = 'nope'\n")
    result = run(home, "--config", str(config), "--agent", "echo")
    assert result.returncode == EXIT_CONFIG  # read before anything is opened
    assert "ui.log_level" in result.stderr
    assert run(home, "-qv", "history").returncode == 0  # bundled flags, then a command
    mistyped = run(home, "histroy")
    assert mistyped.returncode == 2 and "invalid choice: 'histroy'" in mistyped.stderr


def test_the_argument_scan_leaves_every_command_to_the_parser() -> None:
    import argparse

    from voice import cli

    (sub,) = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for command in sub.choices:
        for argv in ([command, "-q"], ["-qv", command], ["--config", "f.toml", command]):
            assert cli._with_command(argv) == argv, argv
    assert cli._with_command(["--config=f.toml", "--agent", "echo"])[0] == "listen"


@pytest.mark.models
def test_audio_can_come_through_a_pipe(home: Path) -> None:
    with (AUDIO / "jfk.flac").open("rb") as audio:
        result = subprocess.run(
            [sys.executable, "-m", "voice.cli", "transcribe", "/dev/stdin", "-q"],
            cwd=home,
            env=env_for(home),
            stdin=audio,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert "ask not what your country can do for you" in result.stdout.lower()


@pytest.mark.models
@pytest.mark.parametrize("args", [["say", "Hello there."], ["listen", "--agent", "echo"]])
def test_no_sound_device_is_one_clear_error(home: Path, args: list[str]) -> None:
    # ALSA's default is the pulse plugin (as in the rig), with no server behind it.
    alsa = home / "asound.conf"
    alsa.write_text(ALSA_CONF)
    env = {**env_for(home), "ALSA_CONFIG_PATH": str(alsa), "PULSE_SERVER": f"unix:{home}/none"}
    result = run(home, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert "cannot use the default" in result.stderr and "no audio devices" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing/r.wav", "cannot write into"),
        ("r.mp3", "name a .wav file"),
        ("folder.wav", "that is a folder"),
    ],
)
def test_a_reply_file_that_cannot_be_written_is_refused_before_the_agent_runs(
    home: Path, output: str, message: str
) -> None:
    (home / "folder.wav").mkdir()
    result = run(home, "ask", str(AUDIO / "jfk.flac"), "--agent", "echo", "-o", output)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "no conversations yet" in run(home, "history").stdout  # no turn was run


def test_history_of_a_room_with_no_conversation_names_the_rooms_that_have_some(
    home: Path,
) -> None:
    asked = run(home, "ask", str(AUDIO / "jfk.flac"), "--agent", "echo", "-o", "r.wav")
    assert asked.returncode == 0, asked.stderr
    result = run(home, "history", "--room", "kitchen")
    assert "no conversations in room 'kitchen'; rooms with some: desk" in result.stdout
    ids = run(home, "history", "--ids").stdout  # whose conversation --resume would go on with
    assert "agent session" in ids and "(core.echo_agent)" in ids, ids


@pytest.mark.parametrize("text", ["", "  ", "**"])
def test_say_with_nothing_to_say_is_an_error_not_a_silent_file(home: Path, text: str) -> None:
    result = run(home, "say", text, "-o", "quiet.wav")
    assert result.returncode == 2
    assert "nothing to say" in result.stderr
    assert not (home / "quiet.wav").exists()


# ---- one listener per room -------------------------------------------------------------
def test_a_second_listener_for_a_claimed_room_exits_75_before_loading_anything(
    home: Path,
) -> None:
    store = SessionStore(home / "state" / "voice-assistant" / "sessions").root  # the default
    env = env_for(home)
    del env["XDG_RUNTIME_DIR"]  # a different control socket, by accident
    with RoomClaim(store, "desk"):
        started = time.monotonic()
        result = run(home, "listen", "--agent", "echo", env=env)
    assert result.returncode == EXIT_ROOM_CLAIMED, result.stderr
    assert "room 'desk' is already being answered by another listener" in result.stderr
    assert f"(pid {os.getpid()})" in result.stderr
    assert time.monotonic() - started < 60  # it did not load the speech models first


# ---- one-shot commands and their agent -------------------------------------------------
def wait_for(path: Path, proc: subprocess.Popen[str], within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ask exited early: {proc.communicate()}")
        assert time.monotonic() < deadline, "the agent never started"
        time.sleep(0.05)


@pytest.mark.models
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_to_ask_stops_its_agent_cleanly(home: Path, sig: signal.Signals) -> None:
    marker = f"va-ask-{sig.name}-{os.getpid()}-{time.monotonic_ns()}"
    pidfile, stop_file = home / "agent.pid", home / "agent.stop"
    agent = f"{sys.executable} -I -S {FAKE_AGENT} hang {marker} {pidfile} signal-file {stop_file}"
    # One short phrase with no pause inside, so the request is not revised mid-turn.
    clip = AUDIO / "real" / "librivox-0880.wav"  # "he was not an ill disposed young man"
    proc = cli(home, "ask", str(clip), "--agent", agent, "-o", str(home / "r.wav"))
    try:
        wait_for(pidfile, proc)  # models loaded, speech transcribed, the agent is working
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, stderr[-4000:]
        # A clean exit: the agent was stopped politely and could clean up, by the turn's
        # interrupt (SIGINT) or by the shutdown (SIGTERM), whichever reached it first. The
        # parent-death SIGKILL that follows an unhandled signal would not let it write this.
        assert stop_file.exists(), stderr[-4000:]
        assert stop_file.read_text() in ("SIGINT", "SIGTERM")
        assert wait_until_none_left(marker) == []
    finally:
        proc.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.models
def test_ask_prints_no_terminal_control_sequences_from_the_agent(home: Path) -> None:
    agent = home / "agent.py"
    agent.write_text(
        "import sys\n"
        "sys.stdin.read()\n"
        "sys.stdout.write('\\x1b]0;pwned\\x07\\x1b[2J\\x1b[HAll \\x9b31mclear\\r.\\x07\\n')\n"
    )
    result = run(
        home,
        "ask",
        str(AUDIO / "digits.wav"),
        "--agent",
        f"{sys.executable} {agent} --output-format text",
        "-o",
        str(home / "r.wav"),
    )
    assert result.returncode == 0, result.stderr
    assert "reply: All clear." in result.stdout
    controls = [
        c for c in result.stdout if (ord(c) < 32 and c not in "\n\t") or 127 <= ord(c) < 160
    ]
    assert controls == []


@pytest.mark.parametrize("wrapped", [False, True], ids=["ImportError", "as-ModelError"])
def test_a_stop_that_a_library_turns_into_its_own_error_still_exits_as_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, wrapped: bool
) -> None:
    # SIGTERM while `serve` was importing onnxruntime came back as its ImportError: exit 1
    # with a traceback, where the service expects 143.
    from voice import app, cli

    def load_whisper(_config: object) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except cli.Stopped as e:
            if wrapped:  # the project's own loader says what to install
                raise ModelError("cannot load onnxruntime: pip install ...") from e
            raise ImportError("initialization failed") from e

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    monkeypatch.setattr(app, "read_audio", lambda _path: np.zeros(1600, np.float32))
    monkeypatch.setattr(app, "load_whisper", load_whisper)
    monkeypatch.setattr(cli, "_stopped_by", [])
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        assert cli.main(["transcribe", str(audio), "--quiet"]) == 128 + signal.SIGTERM
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


FINALIZED = [
    "class Finalized:",
    "    def __del__(self): print('finalized', flush=True)",
    "kept = Finalized()",
]


def python_code(home: Path, lines: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "\n".join(lines)],
        cwd=home,
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_with_the_echo_canceller_loaded_the_exit_handlers_run_and_nothing_finalizes(
    home: Path,
) -> None:
    """livekit's runtime can call into Python while the interpreter finalizes, which aborts
    the process (voice.cli.run): with it loaded, ``run`` runs the exit handlers, keeps the
    status, and ends the process before finalizing (the object's ``__del__`` never runs)."""
    done = python_code(
        home,
        [
            "import atexit",
            "from voice import cli",
            "from voice.echo import WebRtcCanceller",
            "canceller = WebRtcCanceller()",
            *FINALIZED,
            "atexit.register(print, 'exit handler ran', flush=True)",
            "cli.main = lambda: 3",
            "cli.run()",
        ],
    )
    assert done.returncode == 3, done.stderr
    assert "exit handler ran" in done.stdout, done.stdout
    assert "finalized" not in done.stdout, done.stdout


def test_without_it_run_exits_the_usual_way(home: Path) -> None:
    done = python_code(
        home, ["from voice import cli", *FINALIZED, "cli.main = lambda: 3", "cli.run()"]
    )
    assert done.returncode == 3, done.stderr
    assert "finalized" in done.stdout, done.stdout


def test_history_of_a_store_that_does_not_exist_creates_nothing(home: Path) -> None:
    missing = home / "typo" / "sessions"
    config = home / "config.toml"
    config.write_text(f'[session]\nstore_dir = "{missing}"\n')
    result = run(home, "history", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"no conversations yet (there is no store at {missing})" in result.stdout
    assert not (home / "typo").exists()
