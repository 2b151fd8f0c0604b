"""``voice-assistant serve`` stops within its bound (``STOP_S``) of SIGTERM, under the service's
``TimeoutStopSec`` (15 s), whatever its pool threads are doing: a turn waiting for its room
while another process's turn has it, a transcription of minutes of audio.

The server is a real process; its clients are real sockets; the other process holds the room
as ``ask`` would, through the store's own lock.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.handle import NotHandled

from tests.wyoming.peers import PYTHON, REPO, Client, Process, serve_process
from voice.wyoming.handlers import STOPPING
from voice.wyoming.serve import STOP_S

pytestmark = pytest.mark.slow

HOLDER = """
import sys, time
from core.store import SessionStore

with SessionStore(sys.argv[1]).lock_room("shared"):  # another process's turn, minutes long
    print("held", flush=True)
    time.sleep(120)
"""


def write_config(directory: Path, extra: str = "") -> Path:
    path = directory / "config.toml"
    path.write_text(f'[session]\nstore_dir = "{directory / "sessions"}"\n{extra}')
    return path


def address(process: Process) -> tuple[str, int]:
    host, port = process.wait_ready()["uri"].removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


def seen(process: Process, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in process.output():
        assert time.monotonic() < deadline, f"no {text!r} in:\n{process.output()}"
        time.sleep(0.05)


def stopped_in(process: Process) -> float:
    """Seconds from SIGTERM to the exit (which must be 0)."""
    started = time.monotonic()
    process.kill(signal.SIGTERM)
    assert process.proc.wait(60) == 0, process.output()
    return time.monotonic() - started


def test_a_turn_waiting_for_another_process_does_not_hold_up_the_stop(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[wyoming]\nprograms = ["handle"]\n')
    (tmp_path / "sessions").mkdir()
    holder = subprocess.Popen(
        [PYTHON, "-c", HOLDER, str(tmp_path / "sessions")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    process = serve_process(config)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with Client(address(process)) as client:
            client.send(Transcript("hello", context={"room": "shared"}).event())
            assert client.read().type == "handled-start"  # type: ignore[union-attr]
            seen(process, "room shared: 'hello'")
            time.sleep(1.0)  # (its turn is at the room's lock by now)
            elapsed = stopped_in(process)
            events = client.read_until("handled-stop")
        assert NotHandled.from_event(events[-2]).text == STOPPING
        assert elapsed < STOP_S / 2, f"stopped after {elapsed:.1f} s:\n{process.output()}"
        assert holder.poll() is None  # the other process's turn goes on
    finally:
        process.stop()
        holder.kill()
        holder.wait(10)


@pytest.mark.models
def test_a_transcription_still_running_is_left_at_the_bound(tmp_path: Path) -> None:
    # Ten minutes of noise take Whisper over half a minute here; a Pi takes long for two.
    config = write_config(tmp_path, '[wyoming]\nprograms = ["asr"]\nmax_audio_s = 600\n')
    process = serve_process(config)
    try:
        with Client(address(process)) as client:
            noise = np.random.default_rng(0).normal(0, 300, 16000 * 600).astype("<i2").tobytes()
            audio = {"rate": 16000, "width": 2, "channels": 1}
            client.send(AudioStart(**audio).event())
            for offset in range(0, len(noise), 512 * 1024):
                client.send(AudioChunk(audio=noise[offset : offset + 512 * 1024], **audio).event())
            client.send(AudioStop().event())
            seen(process, "Processing audio with duration 10:00")
            elapsed = stopped_in(process)
        assert elapsed < STOP_S + 4, f"stopped after {elapsed:.1f} s:\n{process.output()}"
        assert "without waiting for the work still running" in process.output()
    finally:
        process.stop()
