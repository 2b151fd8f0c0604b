"""A private PulseAudio server that stands in for a sound card in tests and benchmarks.

Two null sinks at 16 kHz mono: ``mic_feed`` (what is played into it is what the assistant's
microphone hears, through the default source ``mic_feed.monitor``) and ``speaker`` (the
default sink: what the assistant says is recorded from ``speaker.monitor``). PortAudio reaches
the server through ALSA's pulse plugin. :attr:`PulseRig.env` holds what a process needs for
that; a process must have it *before* PortAudio initializes (``import sounddevice`` does), so
pass it to subprocesses, and in-process use :meth:`PulseRig.activate`.

Learnt the hard way, and handled here:

- An idle null sink does not run its clock, so silence plays into both sinks for the whole
  session, with a 10 ms latency: with pacat's default 2 s buffer the null sink renders in 2 s
  blocks, and every new recording stream (parec, or a PortAudio input) then waits up to 2 s
  for its first sample. Even so the first block after the server starts is long, so
  :meth:`PulseRig.start` waits until both monitors deliver (about 2 s).
- ``pcm.default`` is pinned to the pulse plugin by our own ALSA config (``ALSA_CONFIG_PATH``):
  Debian's ``99-pulse.conf`` only does that while a server is reachable when ALSA reads its
  config, and a desktop with pipewire-alsa routes "default" elsewhere.
- A server killed with SIGKILL stays a zombie until init reaps it, and pulseaudio reads a pid
  file naming a zombie as "already running": the stale pid file is removed before a restart.
- Timing: a recording's data arrives after it was rendered, so ``arrival - samples / rate``
  bounds the time of sample 0 from above, and its minimum over the recording is within a few
  ms. Recordings of both monitors share that clock (and so does :class:`voice.devices.Microphone`):
  "end of speech fed into the microphone" and "first sample the assistant played" can be
  subtracted. ``paplay`` itself starts playing 5-10 ms after it is spawned and exits 10-30 ms
  after its last sample played; a recording of ``mic_feed`` is the trustworthy reference.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 16000
MIC_SINK = "mic_feed"
SPEAKER_SINK = "speaker"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
# A monitor's samples are timed by their count from the first read. A server that falls behind
# under load renders the lost time late or not at all, so later samples can look a few ms early.
CLOCK_SLACK_S = 0.03
TOOLS = ("pulseaudio", "pactl", "pacat", "paplay", "parec")

Int16 = npt.NDArray[np.int16]

ALSA_CONF = """\
# Written by tests/rig.py: PortAudio's "default" device is the rig's PulseAudio server.
</usr/share/alsa/alsa.conf>
pcm.!default {
    type pulse
    hint { show on description "rig PulseAudio server" }
}
ctl.!default { type pulse }
"""


# Clients talk to the server over its socket only, without shared memory: when a test kills
# the server, libpulse's memfd pool could deadlock a PortAudio stream's close forever (seen
# with a full-duplex stream: its callback thread waits for the pulse plugin's lock, held by
# a mainloop thread waiting in pa_memimport_free for a server that is gone).
CLIENT_CONF = """\
# Written by tests/rig.py.
enable-shm = no
enable-memfd = no
"""


class RigError(RuntimeError):
    """The rig failed (a PulseAudio tool missing or misbehaving), not the code under test."""


# ---- finding sound in a recording ----------------------------------------------------------


def frame_levels_dbfs(
    samples: Int16, rate: int = RATE, frame_ms: int = 10
) -> npt.NDArray[np.float64]:
    """RMS level of each whole ``frame_ms`` frame in dBFS (digital silence is -120)."""
    n = rate * frame_ms // 1000
    usable = len(samples) // n * n
    frames = samples[:usable].astype(np.float64).reshape(-1, n) / 32768.0
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    levels: npt.NDArray[np.float64] = np.maximum(-120.0, 20.0 * np.log10(np.maximum(rms, 1e-6)))
    return levels


def find_speech(
    samples: Int16,
    rate: int = RATE,
    *,
    threshold_dbfs: float = -45.0,
    min_gap_s: float = 0.3,
    min_len_s: float = 0.05,
) -> list[tuple[float, float]]:
    """Where there is sound: ``(start_s, end_s)`` from the first sample, 10 ms resolution.

    A 10 ms frame louder than ``threshold_dbfs`` is sound; segments less than ``min_gap_s``
    apart are merged (pauses between words), shorter than ``min_len_s`` dropped (clicks).
    The rig's sinks are digitally silent between sounds, so the threshold can be low.
    """
    frame_s = 0.01
    loud = frame_levels_dbfs(samples, rate, 10) > threshold_dbfs
    edges = np.flatnonzero(np.diff(np.concatenate(([0], loud.astype(np.int8), [0]))))
    segments: list[tuple[float, float]] = []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        s, e = float(start * frame_s), float(end * frame_s)
        if segments and s - segments[-1][1] < min_gap_s:
            segments[-1] = (segments[-1][0], e)
        else:
            segments.append((s, e))
    return [(s, e) for s, e in segments if e - s >= min_len_s]


def dominant_hz(samples: Int16, rate: int = RATE) -> float:
    """The strongest frequency in ``samples`` (Hann window, bins of 1 Hz or finer)."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    n = max(len(x), rate)
    spectrum = np.abs(np.fft.rfft(x, n))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / n)


def align(part: Int16, whole: Int16) -> tuple[int, float]:
    """The offset of ``part`` in ``whole`` (may be negative) where they match best, and the
    normalized correlation of their overlap there."""
    a, b = part.astype(np.float64), whole.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    lag = int(np.argmax(corr))
    if lag > n - len(a):
        lag -= n  # circular index of a negative offset
    lo, hi = max(0, lag), min(len(b), lag + len(a))
    x, y = a[lo - lag : hi - lag], b[lo:hi]
    denom = float(np.linalg.norm(x) * np.linalg.norm(y)) or 1.0
    return lag, float(np.dot(x, y)) / denom


def as_loud_as(clip: Int16, reference: Int16, *, quieter_db: float = 0.0) -> Int16:
    """``clip`` scaled so its loudest 30 ms equals the loudest 30 ms of ``reference``: a
    voice as loud at the microphone as the assistant's own echo (or ``quieter_db`` under)."""
    loudest_db = frame_levels_dbfs(reference, RATE, 30).max() - quieter_db
    gain_db = loudest_db - frame_levels_dbfs(clip, RATE, 30).max()
    return np.clip(clip.astype(np.float64) * 10 ** (gain_db / 20), -32768, 32767).astype(np.int16)


# ---- recording a monitor -------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """Int16 mono samples of one source, with the monotonic time of ``samples[0]``."""

    samples: Int16
    rate: int
    start_s: float

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def time_of(self, index: int) -> float:
        """Monotonic time of sample ``index``."""
        return self.start_s + index / self.rate

    def index_at(self, monotonic_s: float) -> int:
        """The sample recorded at ``monotonic_s``, clamped to the recording."""
        i = round((monotonic_s - self.start_s) * self.rate)
        return min(max(i, 0), len(self.samples))

    def between(self, t0: float, t1: float) -> Int16:
        """The samples recorded between two monotonic times."""
        return self.samples[self.index_at(t0) : self.index_at(t1)]

    def save(self, path: Path) -> Path:
        """The samples as a WAV file: what a failed test leaves to listen to."""
        import soundfile

        soundfile.write(str(path), self.samples, self.rate, subtype="PCM_16")
        return path

    def speech(
        self, *, threshold_dbfs: float = -45.0, min_gap_s: float = 0.3, min_len_s: float = 0.05
    ) -> list[tuple[float, float]]:
        """:func:`find_speech` segments as monotonic ``(start, end)`` times."""
        found = find_speech(
            self.samples,
            self.rate,
            threshold_dbfs=threshold_dbfs,
            min_gap_s=min_gap_s,
            min_len_s=min_len_s,
        )
        return [(self.start_s + s, self.start_s + e) for s, e in found]


class Recorder:
    """``parec`` of one source, read by a thread that stamps each read with its arrival.

    Context manager (waits for the first samples on entry; :attr:`result` after the block)
    or :meth:`start` / :meth:`wait_started` / :meth:`stop`; :meth:`snapshot` while running.
    """

    def __init__(self, source: str, env: dict[str, str], rate: int = RATE) -> None:
        self.source = source
        self.rate = rate
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._data = bytearray()
        self._start_s = float("inf")
        self._result: Recorded | None = None

    def start(self) -> Recorder:
        if self._proc is not None:
            return self
        cmd = [
            "parec",
            "-d",
            self.source,
            "--raw",
            "--format",
            "s16le",
            "--channels",
            "1",
            "--rate",
            str(self.rate),
            "--latency-msec",
            "10",
        ]
        self._proc = subprocess.Popen(
            cmd, env=self._env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._thread = threading.Thread(target=self._pump, name=f"parec {self.source}", daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            now = time.monotonic()
            with self._lock:
                self._data += chunk
                self._start_s = min(self._start_s, now - len(self._data) // 2 / self.rate)

    def wait_started(self, timeout_s: float = 5.0) -> None:
        """Block until the first samples arrive."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._data:
                    return
            if self._proc is not None and self._proc.poll() is not None:
                raise RigError(f"parec -d {self.source} exited with {self._proc.returncode}")
            time.sleep(0.005)
        raise RigError(f"parec -d {self.source} recorded nothing in {timeout_s} s")

    def snapshot(self) -> Recorded:
        """What was recorded so far."""
        with self._lock:
            usable = len(self._data) // 2 * 2
            samples = np.frombuffer(bytes(self._data[:usable]), dtype="<i2").astype(np.int16)
            start = self._start_s if self._data else time.monotonic()
        return Recorded(samples, self.rate, start)

    def stop(self) -> Recorded:
        if self._proc is not None:
            # The pump thread reads stdout until EOF: end the process, join, then close.
            _end(self._proc, close=False)
            if self._thread is not None:
                self._thread.join(STOP_TIMEOUT_S)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        self._result = self.snapshot()
        return self._result

    @property
    def result(self) -> Recorded:
        if self._result is None:
            raise RigError(f"still recording {self.source}: call stop() first")
        return self._result

    def __enter__(self) -> Recorder:
        self.start().wait_started()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


LOUD = 300  # |sample| on a monitor above this: something is sounding


def _loud_since(recorder: Recorder, after_s: float) -> tuple[Recorded, npt.NDArray[np.intp]]:
    """What ``recorder`` has so far, and the indexes (from ``after_s``) of its loud samples."""
    recording = recorder.snapshot()
    return recording, np.flatnonzero(np.abs(recording.between(after_s, recording.end_s)) > LOUD)


def wait_for_sound(recorder: Recorder, after_s: float, timeout_s: float = 30.0) -> float:
    """When the monitor ``recorder`` records started sounding after ``after_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recording, loud = _loud_since(recorder, after_s)
        if len(loud):
            return recording.time_of(recording.index_at(after_s) + int(loud[0]))
        time.sleep(0.05)
    raise AssertionError(f"the speaker stayed silent for {timeout_s} s")


def wait_for_quiet(
    recorder: Recorder, after_s: float, quiet_s: float, timeout_s: float = 30.0
) -> float:
    """When the monitor ``recorder`` records, having sounded after ``after_s``, has been
    silent for ``quiet_s``: the time its last sound ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recording, loud = _loud_since(recorder, after_s)
        if len(loud):
            ended_s = recording.time_of(recording.index_at(after_s) + int(loud[-1]) + 1)
            if recording.end_s - ended_s >= quiet_s:
                return ended_s
        time.sleep(0.05)
    raise AssertionError(f"the speaker did not sound and fall quiet within {timeout_s} s")


# ---- the server ----------------------------------------------------------------------------


class PulseRig:
    """A PulseAudio server of our own with a ``mic_feed`` and a ``speaker`` null sink.

    ``speaker_rate``: the speaker sink's rate. 16 kHz (Whisper's) by default; a 22050 Hz sink
    (the Piper voice's) recorded Piper-rate speech no better (SNR against a soxr reference
    29.4 dB at 16 kHz, 28.5 dB at 22050 Hz; server CPU 7.4 % vs 8.2 %): one resampling step
    happens either way, in the sink input or in the recording stream.
    ``root``: the rig's directory (default: a new one under /tmp, removed by :meth:`stop`);
    keep it short, the server's socket path must fit in 108 bytes.
    """

    def __init__(self, root: Path | None = None, *, speaker_rate: int = RATE) -> None:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise RigError(
                f"missing {', '.join(missing)}: apt-get install pulseaudio pulseaudio-utils "
                "libasound2-plugins"
            )
        self.speaker_rate = speaker_rate
        self._own_dir = root is None
        self.dir = Path(tempfile.mkdtemp(prefix="pulse-rig-")) if root is None else root
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "run").mkdir(mode=0o700, exist_ok=True)
        (self.dir / "home").mkdir(exist_ok=True)
        (self.dir / "asound.conf").write_text(ALSA_CONF)
        (self.dir / "client.conf").write_text(CLIENT_CONF)
        self._silence: list[subprocess.Popen[bytes]] = []
        self._feeds: list[subprocess.Popen[bytes]] = []
        self._recorders: list[Recorder] = []
        self._running = False

    def __repr__(self) -> str:
        return f"PulseRig({self.dir}, running={self._running})"

    # -- environment -------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The variables a process needs to reach this server via libpulse or PortAudio/ALSA."""
        run = self.dir / "run"
        return {
            "XDG_RUNTIME_DIR": str(run),
            "PULSE_SERVER": f"unix:{run / 'pulse' / 'native'}",
            "ALSA_CONFIG_PATH": str(self.dir / "asound.conf"),
            "PULSE_CLIENTCONFIG": str(self.dir / "client.conf"),
        }

    def subprocess_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with :attr:`env` on top."""
        return {**(os.environ if base is None else base), **self.env}

    @contextlib.contextmanager
    def activate(self) -> Iterator[PulseRig]:
        """Point this process's PortAudio at the rig for the duration of the block.

        Sets :attr:`env` in ``os.environ`` and re-initializes PortAudio, which enumerated the
        ALSA devices when ``sounddevice`` was first imported; restores both afterwards. No
        stream may be open across either boundary.
        """
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        _reinit_portaudio()
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _reinit_portaudio()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> PulseRig:
        """Start the server, set the defaults, start the silence players; about 2 s."""
        self._running = True
        try:
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop recorders, feeds, silence players and the server; every wait bounded."""
        for recorder in self._recorders:
            recorder.stop()
        for proc in [*self._feeds, *self._silence]:
            _end(proc)
        self._recorders.clear()
        self._feeds.clear()
        self._silence.clear()
        if self._running:
            self._running = False
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    ["pulseaudio", "--kill"],
                    check=False,
                    env=self._server_env(),
                    timeout=STOP_TIMEOUT_S,
                    capture_output=True,
                )
            self._wait_server_gone()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart_server(self) -> None:
        """Kill the server with SIGKILL (a crash, as clients see it) and start it again.

        Every stream on the old server dies: recordings and feeds end, the silence players
        are restarted. The new server has the same address, sinks and defaults.
        """
        pid = self._server_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._wait_server_gone()
        for proc in self._silence:
            _end(proc)
        self._silence.clear()
        self._start_server()

    def __enter__(self) -> PulseRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- audio in and out --------------------------------------------------------------------
    def feed(self, audio: Path | str | Int16, rate: int | None = None) -> subprocess.Popen[bytes]:
        """Play a sound file, or int16 mono samples at ``rate``, into the microphone.

        Returns the running ``paplay``, which plays at real-time pace (``.wait(timeout)`` on
        it). To know when the sound really played, record :meth:`record_mic` meanwhile.
        """
        if isinstance(audio, np.ndarray):
            if rate is None:
                raise ValueError("feeding samples needs their rate")
            import soundfile

            fd, name = tempfile.mkstemp(suffix=".wav", dir=self.dir)
            os.close(fd)
            path = Path(name)
            soundfile.write(name, np.asarray(audio, dtype=np.int16), rate, subtype="PCM_16")
        else:
            path = Path(audio)
            if not path.is_file():
                raise FileNotFoundError(f"no sound file {path} to feed the rig")
        with (self.dir / "feeds.log").open("ab") as log:
            proc = subprocess.Popen(
                ["paplay", "-d", MIC_SINK, str(path)],
                env=self.subprocess_env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self._feeds.append(proc)
        return proc

    def record(self, source: str = SPEAKER_SINK) -> Recorder:
        """A (not yet started) recorder of a sink's monitor (``"speaker"``, ``"mic_feed"``)
        or of a source given by its full name."""
        name = source if "." in source else f"{source}.monitor"
        recorder = Recorder(name, self.subprocess_env())
        self._recorders.append(recorder)
        return recorder

    def record_speaker(self) -> Recorder:
        """What the assistant plays."""
        return self.record(SPEAKER_SINK)

    def record_mic(self) -> Recorder:
        """What the assistant's microphone hears."""
        return self.record(MIC_SINK)

    @contextlib.contextmanager
    def loopback(self, *, drift: bool = False, volume: str = "100%") -> Iterator[None]:
        """The speaker heard by the microphone, as at a desk: ``module-loopback`` from the
        speaker's monitor into ``mic_feed``, at ``volume`` (pactl's: "100%", "50%", "-10dB").

        By default the loopback keeps a fixed delay (about 90 ms with PortAudio's latencies),
        like a speaker and a microphone on one sound card. ``drift``: it keeps adjusting its
        rate to chase its target latency instead (pulseaudio's default), so the echo's delay
        wanders by about 0.2 ms a second, like a microphone and a speaker on two devices
        whose clocks differ.
        """
        args = ["source=speaker.monitor", f"sink={MIC_SINK}", "latency_msec=20"]
        if not drift:
            args.append("adjust_time=0")
        module = self.pactl("load-module", "module-loopback", *args).strip()
        try:
            if volume != "100%":
                _wait_until(
                    lambda: self._loopback_input(module) is not None, 5.0, "the loopback stream"
                )
                self.pactl("set-sink-input-volume", str(self._loopback_input(module)), volume)
            yield
        finally:
            self.pactl("unload-module", module)

    def _loopback_input(self, module: str) -> str | None:
        for line in self.pactl("list", "short", "sink-inputs").splitlines():
            fields = line.split()
            if len(fields) > 1 and fields[1] == module:
                return fields[0]
        return None

    def pactl(self, *args: str, timeout_s: float = 5.0) -> str:
        """Run ``pactl`` against this server and return its output."""
        done = subprocess.run(
            ["pactl", *args],
            check=False,
            env=self.subprocess_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise RigError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def server_log(self, lines: int = 20) -> str:
        """The end of the server's log, for error messages."""
        try:
            return "\n".join((self.dir / "pulseaudio.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no pulseaudio log)"

    # -- internals ---------------------------------------------------------------------------
    def _server_env(self) -> dict[str, str]:
        # The server writes its cookie under $HOME: keep that inside the rig directory.
        return {**self.subprocess_env(), "HOME": str(self.dir / "home")}

    def _pid_file(self) -> Path:
        return self.dir / "run" / "pulse" / "pid"

    def _server_pid(self) -> int | None:
        try:
            return int(self._pid_file().read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_server_gone(self) -> None:
        pid = self._server_pid()
        if pid is None:
            return
        try:
            _wait_until(lambda: not _alive(pid), STOP_TIMEOUT_S, f"pulseaudio {pid} to exit")
        except RigError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_until(lambda: not _alive(pid), STOP_TIMEOUT_S, f"pulseaudio {pid} to die")

    def _start_server(self) -> None:
        pid = self._server_pid()
        if pid is not None and not _alive(pid):
            self._pid_file().unlink(missing_ok=True)  # a zombie's: see the module docstring
        cmd = [
            "pulseaudio",
            "-n",
            "--daemonize=yes",
            "--exit-idle-time=-1",
            "--use-pid-file=yes",
            f"--log-target=file:{self.dir / 'pulseaudio.log'}",
            "--load=module-native-protocol-unix",
            f"--load=module-null-sink sink_name={MIC_SINK} rate={RATE} channels=1",
            f"--load=module-null-sink sink_name={SPEAKER_SINK} rate={self.speaker_rate} channels=1",
        ]
        done = subprocess.run(
            cmd,
            check=False,
            env=self._server_env(),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise RigError(
                f"pulseaudio did not start (exit {done.returncode}): {done.stderr.strip()}\n"
                f"{self.server_log()}"
            )
        _wait_until(self._answers, START_TIMEOUT_S, "pulseaudio to answer pactl")
        self.pactl("set-default-source", f"{MIC_SINK}.monitor")
        self.pactl("set-default-sink", SPEAKER_SINK)
        self._silence = [self._play_silence(sink) for sink in (MIC_SINK, SPEAKER_SINK)]
        _wait_until(lambda: self._sink_inputs() >= 2, START_TIMEOUT_S, "the silence players")
        # The null sinks adopt the players' 10 ms latency only after their first (up to 2 s)
        # block; until then a new stream waits that long for data. Wait it out once, here.
        warmups = [
            Recorder(f"{sink}.monitor", self.subprocess_env()).start()
            for sink in (MIC_SINK, SPEAKER_SINK)
        ]
        try:
            for recorder in warmups:
                recorder.wait_started(START_TIMEOUT_S)
        finally:
            for recorder in warmups:
                recorder.stop()

    def _play_silence(self, sink: str) -> subprocess.Popen[bytes]:
        cmd = [
            "pacat",
            "-p",
            "-d",
            sink,
            "--raw",
            "--format",
            "s16le",
            "--channels",
            "1",
            "--rate",
            str(RATE),
            "--latency-msec",
            "10",
        ]
        with open("/dev/zero", "rb") as zero:
            return subprocess.Popen(
                cmd,
                env=self.subprocess_env(),
                stdin=zero,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def _answers(self) -> bool:
        try:
            self.pactl("info", timeout_s=2.0)
        except (RigError, subprocess.TimeoutExpired):
            return False
        return True

    def _sink_inputs(self) -> int:
        return len(self.pactl("list", "short", "sink-inputs").splitlines())


def _reinit_portaudio() -> None:
    import sounddevice

    sounddevice._terminate()
    sounddevice._initialize()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RigError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def _end(
    proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S, *, close: bool = True
) -> None:
    """Terminate, then kill; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
    if close:
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()
