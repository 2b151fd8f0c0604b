"""Echo cancellation in the PulseAudio rig: echo removed, voice kept, voice barge-in, CPU.

    python bench/bench_echo.py [--replies 6] [--runs 8] [--quiet-runs 4] [--barge-in-only]
                               [--double-talk-only N] [--quieter-db DB]

The rig's ``module-loopback`` plays the speaker into the microphone at full level (the echo
is as loud as the reply itself), with a fixed delay like one sound card, or drifting like
two (``PulseRig.loopback``). Piper replies are played through
:class:`voice.devices.DuplexDevice` and what the microphone heard is compared with what the
device hands the loop:

- ERLE (echo return loss enhancement, dB): microphone power over output power while a
  reply plays, for the first reply (the canceller learning the room) and the later ones,
  with WebRTC AEC3 (the product), and with speexdsp's canceller for comparison;
- reply + a real voice (../shared/audio/real, scaled to the echo's loudness) said over it:
  ERLE where only the echo is, how much of the voice is kept (its first 300 ms apart: the
  canceller holds a voice back while it decides that two are talking), and what Whisper
  makes of it;
- voice barge-in through ``voice-assistant listen``: the voice's onset (found in the
  microphone's recording) -> the reply's last sample on ``speaker.monitor`` (same clock),
  p50 and p90; replies with nobody talking that stopped anyway (false barge-ins). Two
  onsets: the first sound within 30 dB of the voice's loudest (in the read sentences a
  breath or an /h/ up to 300 ms before the word), and the first word (where Silero VAD
  finds speech in the clip alone). ``--barge-in-only`` runs just this part;
  ``--wake`` runs it in wake mode, every request and every voice begun with "Hey Jarvis"
  (Piper's voice: no real recording says it), timed from the end of the wake word;
  ``--quieter-db`` makes the voices that much quieter than the echo (someone who talks
  softly with the speaker turned up);
- CPU: the canceller alone, and the whole read path (resampling, pairing, cancelling,
  framing), per second of audio, on one core.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_real_voices import turn_stages  # noqa: E402

from tests.listener import TURN_DONE, Listener  # noqa: E402
from tests.rig import (  # noqa: E402
    LOUD,
    RATE,
    PulseRig,
    align,
    as_loud_as,
    frame_levels_dbfs,
    wait_for_sound,
)
from tests.voice.audio_util import (  # noqa: E402
    real_clip,
    real_references,
    speech,
    to_int16,
    wer,
    word_alone,
)
from tests.voice.room_sounds import music  # noqa: E402
from voice.config import AudioConfig, SttConfig, TtsConfig, VadConfig  # noqa: E402
from voice.devices import DuplexDevice  # noqa: E402
from voice.echo import FRAME, EchoCanceller, SpeexCanceller, WebRtcCanceller  # noqa: E402
from voice.echo_guard import EchoGate, db, power  # noqa: E402
from voice.models import default_models_dir, resolve_silero_model  # noqa: E402
from voice.silero import WINDOW, SileroModel, SileroOnset  # noqa: E402
from voice.stt import WhisperTranscriber  # noqa: E402
from voice.tts import PiperSynthesizer  # noqa: E402

Int16 = npt.NDArray[np.int16]

REPLIES = [
    "You said: please read me the whole shopping list for the weekend, one item at a time.",
    "Here is the list. Two pints of milk, a loaf of bread, six eggs, and some coffee beans.",
    "Then apples, bananas, a bag of rice, tomatoes, an onion, and a bar of dark chocolate.",
    "That is everything on the list. Would you like me to read it again, more slowly?",
]
VOICES = ["librivox-0930", "librivox-0880", "goforward", "cards-005", "cards-003"]
QUESTION = "Please read me the whole shopping list for the weekend, one item at a time, slowly."
QUESTION_OPENS = "please read me"  # the question's first words ...
REPLY_WORDS = "read me the whole"  # ... and words of it the reply (its echo) says too
ONSET_S = 0.3  # the voice's first 300 ms, reported apart
PRE_ROLL_S = VadConfig().pre_roll_ms / 1000
STOPPING = "stopping the reply"  # the listener's log lines
PAUSING = "pausing the reply"
# The device may have gated the reply: a stalled callback, a (re)opened stream whose room is
# not learnt yet, or an underrun that may have moved the echo (the releases before 5bb0469
# gated the reply then; since, only while the room was being learnt).
STALLS = ("until the stream is reopened", "may have moved the echo", "echo-cancelled audio open")
LEARNT = ("has learnt the room", "has found the echo again")
LOOKED_LATER = "the echo is looked for that much later"  # behind, not gated (since 8643094)


def stall_kind(log: str) -> str:
    """What a stall did, from the listener's log over the run: left the microphone behind
    (gated until the stream is reopened), came while the canceller was (again) learning the
    room (gated until it has), moved the echo of a learnt room, or neither."""
    if STALLS[0] in log:
        return "behind"
    if LOOKED_LATER in log:
        return "behind, echo looked for later"
    if "while the canceller was learning" in log or STALLS[2] in log:
        return "learning the room"
    return "moved" if f"{STALLS[1]}:" in log else "no underrun"


def gated(log: str, since: int = 0) -> bool:
    """Whether the reply was gated at some time after ``log[since:]`` began: the device's
    word on the echo then was a stall, an underrun or a (re)opened stream, not that the
    canceller removes it (it may have found the echo again since)."""
    before = log[:since]
    was = max(before.rfind(mark) for mark in STALLS) > max(before.rfind(mark) for mark in LEARNT)
    return was or any(mark in log[since:] for mark in STALLS)


# ---- the cancellers ------------------------------------------------------------------------


@dataclass
class Taped:
    """A canceller that keeps every frame: what the microphone heard, what the canceller
    left, and what of it may count as speech (silence where an :class:`EchoGate` like the
    device's, fed the same frames, says echo)."""

    inner: EchoCanceller
    heard: list[Int16] = field(default_factory=list)
    left: list[Int16] = field(default_factory=list)
    loop: list[Int16] = field(default_factory=list)
    gate: EchoGate = field(default_factory=EchoGate)
    seconds_cpu: float = 0.0

    def set_delay_ms(self, delay_ms: int) -> None:
        self.inner.set_delay_ms(delay_ms)

    def process(self, near: Int16, far: Int16) -> Int16:
        started = time.thread_time()
        out = self.inner.process(near, far)
        self.seconds_cpu += time.thread_time() - started
        self.heard.append(near)
        self.left.append(out)
        self.loop.append(np.zeros_like(out) if self.gate.is_echo(near, out, far) else out)
        return out

    def take(self) -> tuple[Int16, Int16, Int16]:
        taken = tuple(
            np.concatenate(x) if x else np.zeros(0, np.int16)
            for x in (self.heard, self.left, self.loop)
        )
        self.heard, self.left, self.loop = [], [], []
        return taken  # type: ignore[return-value]


def speex_suppressing() -> EchoCanceller:
    """speexdsp with its residual echo suppressor: the alternative the issue names, compared
    with AEC3. (The product runs it linear, for the words: voice/echo.py.)"""
    return SpeexCanceller(suppress_residue=True)


# ---- echo removed ------------------------------------------------------------------------------


def erle(heard: Int16, left: Int16, mask: npt.NDArray[np.bool_] | None = None) -> float:
    """dB of echo removed over whole 10 ms frames (those in ``mask``, if given)."""
    n = min(len(heard), len(left)) // FRAME
    h = heard[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    lf = left[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    if mask is not None:
        h, lf = h[mask[:n]], lf[mask[:n]]
    return 10 * float(np.log10((np.mean(h * h) + 1e-9) / (np.mean(lf * lf) + 1e-9)))


def leaking(left: Int16) -> float:
    """Share of 30 ms frames the loop gets louder than -60 dBFS while a reply plays."""
    return float(np.mean(frame_levels_dbfs(left, RATE, 30) > -60))


def read_for(device: DuplexDevice, seconds: float) -> float:
    """Read (and so cancel) for ``seconds``; the reading thread's CPU seconds."""
    started, deadline = time.thread_time(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        device.read(0.5)
    return time.thread_time() - started


@dataclass
class EchoRun:
    name: str
    first: float = 0.0  # ERLE of the first reply: learning
    later: list[float] = field(default_factory=list)  # the canceller's
    later_loop: list[float] = field(default_factory=list)  # after the guards
    leaks: list[float] = field(default_factory=list)  # of the later replies, the canceller's
    leaks_loop: list[float] = field(default_factory=list)  # ... what the loop gets
    learnt_after: int | None = None  # replies played when the monitor said learnt
    cpu_s: float = 0.0  # the read path
    canceller_cpu_s: float = 0.0
    audio_s: float = 0.0


def replies_only(
    rig: PulseRig, make: Callable[[], EchoCanceller], name: str, replies: list[Int16], rate: int
) -> EchoRun:
    """Play the replies one after another (nobody talks) and measure each one."""
    taped = Taped(make())
    run = EchoRun(name)
    with DuplexDevice(AudioConfig(), taped, words=SpeexCanceller()) as device:
        read_for(device, 0.5)
        taped.take()
        for n, reply in enumerate(replies):
            device.play(reply, rate)
            seconds = len(reply) / rate + 0.4
            run.cpu_s += read_for(device, seconds)
            run.audio_s += seconds
            heard, left, loop = taped.take()
            if n == 0:
                run.first = erle(heard, left)
            else:
                run.later.append(erle(heard, left))
                run.later_loop.append(erle(heard, loop))
                run.leaks.append(leaking(left))
                run.leaks_loop.append(leaking(loop))
            if device.echo_learnt and run.learnt_after is None:
                run.learnt_after = n + 1
    run.canceller_cpu_s = taped.seconds_cpu
    return run


class WordsTaped(DuplexDevice):
    """The device, keeping what Whisper hears of each frame the cancellers work on (the
    linear canceller's output while it is trusted, else AEC3's), frame for frame with
    :class:`Taped`."""

    def __init__(self, config: AudioConfig, canceller: EchoCanceller, words: EchoCanceller):
        super().__init__(config, canceller, words=words)
        self.heard_words: list[Int16] = []

    def _words_of(
        self, near: Int16, far: Int16, cleaned: Int16, expected_db: float | None
    ) -> tuple[Int16, Int16]:
        words, linear = super()._words_of(near, far, cleaned, expected_db)
        self.heard_words.append(words)
        return words, linear

    def take(self) -> Int16:
        taken = np.concatenate(self.heard_words) if self.heard_words else np.zeros(0, np.int16)
        self.heard_words = []
        return taken


@dataclass
class DoubleTalk:
    echo_only: list[float] = field(default_factory=list)  # ERLE where only the echo is
    kept: list[float] = field(default_factory=list)  # voice level after / before, dB
    onset_kept: list[float] = field(default_factory=list)  # ... its first 300 ms
    linear_kept: list[float] = field(default_factory=list)  # the same by the words' canceller
    linear_onset_kept: list[float] = field(default_factory=list)
    marked: list[float] = field(default_factory=list)  # share of its loud frames taken for echo
    wers: list[float] = field(default_factory=list)
    clean_wers: list[float] = field(default_factory=list)
    linear_wers: list[float] = field(default_factory=list)  # the linear canceller's output
    words_wers: list[float] = field(default_factory=list)  # what the loop transcribes


def reply_and_voice(
    rig: PulseRig,
    tts: PiperSynthesizer,
    stt: WhisperTranscriber,
    replies: list[Int16],
    voices: dict[str, Int16],
) -> DoubleTalk:
    """Each later reply with a real voice said over it, 1.5 s in: what AEC3 (what the loop
    listens to) and the linear canceller (what it transcribes) leave of the voice."""
    taped, words = Taped(WebRtcCanceller()), Taped(SpeexCanceller())
    out = DoubleTalk()
    references = real_references()
    with WordsTaped(AudioConfig(), taped, words) as device:
        read_for(device, 0.5)
        device.play(replies[0], tts.sample_rate)  # learn the room
        read_for(device, len(replies[0]) / tts.sample_rate + 0.4)
        for n, (name, voice) in enumerate(voices.items()):
            reply = replies[1 + n % (len(replies) - 1)]
            taped.take()
            words.take()
            device.take()
            device.play(reply, tts.sample_rate)
            read_for(device, 1.5)
            rig.feed(voice, RATE)
            read_for(device, max(len(reply) / tts.sample_rate - 1.5, len(voice) / RATE) + 0.6)
            heard, left, may_speak = taped.take()
            linear, heard_words = words.take()[1], device.take()
            # The cancellers also took the half second before the reply again as they woke
            # (the device's rest): that came first, and Whisper never hears it.
            heard_words = np.concatenate(
                (np.zeros(len(heard) - len(heard_words), np.int16), heard_words)
            )
            offset, match = align(voice, heard)
            if match < 0.2:
                print(f"  {name}: the voice was not found in what the microphone heard")
                continue
            # The voice alone, where it is in the recording; its frames and the rest.
            alone = np.zeros_like(heard)
            end = min(len(heard), offset + len(voice))
            alone[offset:end] = voice[: end - offset]
            frames = len(heard) // FRAME
            voiced = frame_levels_dbfs(alone[: frames * FRAME], RATE, 10) > -50
            out.echo_only.append(erle(heard, may_speak, ~voiced))
            loud = voiced & (frame_levels_dbfs(left[: frames * FRAME], RATE, 10) > -50)
            silenced = frame_levels_dbfs(may_speak[: frames * FRAME], RATE, 10) < -110
            out.marked.append(float(np.mean(silenced[loud])) if loud.any() else float("nan"))
            span = slice(offset, end)
            out.kept.append(db(power(left[span])) - db(power(alone[span])))
            first = slice(offset, offset + int(ONSET_S * RATE))
            out.onset_kept.append(db(power(left[first])) - db(power(alone[first])))
            out.linear_kept.append(db(power(linear[span])) - db(power(alone[span])))
            out.linear_onset_kept.append(db(power(linear[first])) - db(power(alone[first])))
            said = stt.transcribe_audio(left[span].astype(np.float32) / 32768).text
            # As the loop cuts it: with the pre-roll before the voice.
            before = max(0, offset - int(PRE_ROLL_S * RATE))
            kept = stt.transcribe_audio(linear[before:end].astype(np.float32) / 32768).text
            loop = stt.transcribe_audio(heard_words[before:end].astype(np.float32) / 32768).text
            clean = stt.transcribe_audio(voice.astype(np.float32) / 32768).text
            out.wers.append(wer(references[name], said))
            out.linear_wers.append(wer(references[name], kept))
            out.words_wers.append(wer(references[name], loop))
            out.clean_wers.append(wer(references[name], clean))
            print(f"  {name}: AEC3 {said!r}, linear {kept!r}, loop {loop!r} (alone: {clean!r})")
    return out


# ---- voice barge-in ----------------------------------------------------------------------------


def onset_in(voice: Int16) -> float:
    """Where sound starts in a clip: its first 10 ms within 30 dB of its loudest. In the
    read sentences that is a breath or an /h/, up to 300 ms before the first word."""
    levels = frame_levels_dbfs(voice, RATE, 10)
    return float(np.flatnonzero(levels >= levels.max() - 30)[0]) * 0.01


def word_onset_in(voice: Int16, silero: SileroModel) -> float:
    """Where the first word starts in a clip: the start of the first 32 ms window Silero VAD
    (run on the clip alone, from a fresh state) scores 0.5 or more."""
    check = SileroOnset(silero, threshold=0.5, windows=1, recent_s=0.0)
    pcm = voice.tobytes()
    step = WINDOW * 2  # one window of int16 at a time: each call judges the window it ends
    for offset in range(0, len(pcm) - step + 1, step):
        start_s = offset / 2 / RATE
        if check.confirm(pcm[offset : offset + step], start_s, RATE):
            return start_s
    return onset_in(voice)


@dataclass
class BargeIns:
    latencies: list[float] = field(default_factory=list)  # from the voice's onset_in
    from_word: list[float] = field(default_factory=list)  # from its word_onset_in (or wake word)
    wake: bool = False  # the voices began with the wake word: from_word is from its end
    missed: int = 0  # voices over a reply that did not stop it
    answered: list[float] = field(default_factory=list)  # WER of the request heard
    joined: int = 0  # ... taken for the question going on (stored with it as one request)
    echoed: int = 0  # ... with the reply's own words in it (its echo taken for the voice)
    not_counted: int = 0  # the voice began between two words of the reply
    quiet_runs: int = 0
    false_stops: int = 0  # replies with nobody talking that stopped anyway
    false_pauses: int = 0  # ... that paused (and went on)
    music_runs: int = 0
    music_dbfs: float = -35.0
    music_stops: int = 0  # ... with music-like tones playing in the room
    music_pauses: int = 0
    paused: int = 0  # voices over a reply that paused it before it stopped
    gated: int = 0  # ... over a reply gated (a stall, an underrun, a reopen): not heard
    answers: int = 0  # replies to a voice said over a reply (nobody talks over them) ...
    answers_stopped: int = 0  # ... that stopped anyway
    # The request said over the reply, from the listener's log (after its last voiced frame):
    sent: list[float] = field(default_factory=list)  # when it went to the agent
    replied: list[float] = field(default_factory=list)  # its own reply's first sample
    # --stall-ms: per voice, what the stall before it did (an underrun that moved the echo,
    # a microphone left behind, or neither) and whether the voice stopped the reply
    stalls: list[tuple[str, bool]] = field(default_factory=list)
    stalled_wers: list[float] = field(default_factory=list)  # ... the requests heard


def barge_ins(
    rig: PulseRig,
    question: Int16,
    voices: list[tuple[str, Int16]],
    quiet_runs: int,
    seed: int,
    music_runs: int = 0,
    music_dbfs: float = -35.0,
    stall_ms: float = 0.0,
    log_path: Path | None = None,
    wake: Int16 | None = None,
) -> BargeIns:
    """Voices over replies through ``listen``; the listener's log is written to ``log_path``
    however the runs end (a failed run is the one whose log is wanted). With ``wake``, in
    wake mode: every request and voice begins with it, 0.2 s before the words."""
    rng = random.Random(seed)
    silero = SileroModel(resolve_silero_model("", models_dir=default_models_dir()))
    config: dict[str, dict[str, object]] = {
        "audio": {"echo_cancel": "on"},
        "earcons": {"enabled": False},
    }
    if wake is not None:
        config["input"] = {"mode": "wake", "backend": "socket"}
        config["wake"] = {"follow_up_s": 0.0}  # the wake word opens every request
        gap = np.zeros(RATE // 5, np.int16)
        question = np.concatenate([wake, gap, question])
        voices = [(name, np.concatenate([wake, gap, voice])) for name, voice in voices]
        # Timed from where the wake word's sound ends (see onset_in).
        lead_s = {name: len(wake) / RATE - onset_in(voice) for name, voice in voices}
    else:
        # How long each voice breathes before its first word (see onset_in, word_onset_in).
        lead_s = {name: word_onset_in(voice, silero) - onset_in(voice) for name, voice in voices}
    out = BargeIns(music_dbfs=music_dbfs, wake=wake is not None)
    references = real_references()
    with tempfile.TemporaryDirectory(prefix="bench-echo-") as tmp:
        listener = Listener(rig, Path(tmp) / "listen", config)
        with (
            rig.loopback(),
            listener,
            rig.record_speaker() as speaker,
            rig.record_mic() as mic,
            _kept_log(listener, log_path),
        ):
            done = 0

            def ask() -> float:
                nonlocal done
                rig.feed(question, RATE).wait(30)
                return wait_for_sound(speaker, time.monotonic())

            ask()  # learn the room
            listener.wait_for_log(TURN_DONE, count=done + 1, timeout_s=60)
            done = listener.settled()

            def stall(at_s: float) -> None:
                """Stop the listener for ``stall_ms`` at ``at_s`` (a busy machine: its audio
                callback underruns while the reply plays)."""
                time.sleep(max(0.0, at_s - time.monotonic()))
                listener.stall(stall_ms / 1000)

            for _ in range(quiet_runs):
                stops, pauses = listener.count(STOPPING), listener.count(PAUSING)
                started_s = ask()
                if stall_ms:
                    stall(started_s + 0.5)
                listener.wait_for_log(TURN_DONE, count=done + 1, timeout_s=60)
                done = listener.settled()
                time.sleep(1.0)
                out.quiet_runs += 1
                out.false_stops += listener.count(STOPPING) > stops
                out.false_pauses += listener.count(PAUSING) - pauses
            if music_runs:
                # A melody in the room the whole time, nobody talking.
                tones = music("melody", 12.0 * (music_runs + 1), music_dbfs, seed=seed)
                player = rig.feed(to_int16(tones), RATE)
                try:
                    for _ in range(music_runs):
                        stops, pauses = listener.count(STOPPING), listener.count(PAUSING)
                        ask()
                        listener.wait_for_log(TURN_DONE, count=done + 1, timeout_s=60)
                        done = listener.settled()
                        out.music_runs += 1
                        out.music_stops += listener.count(STOPPING) > stops
                        out.music_pauses += listener.count(PAUSING) - pauses
                finally:
                    player.kill()
                done = listener.settled()
            for n, (name, voice) in enumerate(voices):
                stops, pauses = listener.count(STOPPING), listener.count(PAUSING)
                since = len(listener.log())
                started_s = ask()
                voice_s = started_s + rng.uniform(1.0, 2.5)
                stalled = stall_ms > 0 and n % 2 == 0  # every other voice: rare, as in life
                if stalled:  # 0.3-0.9 s before the voice, in the reply
                    stall(max(started_s + 0.2, voice_s - rng.uniform(0.3, 0.9)))
                time.sleep(max(0.0, voice_s - time.monotonic()))
                fed_s = time.monotonic()
                rig.feed(voice, RATE).wait(30)
                try:
                    listener.wait_for_log(TURN_DONE, count=done + 2, timeout_s=20)
                except AssertionError:
                    if not gated(listener.log(), since):
                        raise
                    # Half-duplex until the canceller (again) removes the echo: the voice
                    # was not heard, and there is no second turn to wait for.
                    print(f"  {name}: the reply was gated (a stall, or not learnt); not heard")
                    out.gated += 1
                    if stalled:
                        out.stalls.append((stall_kind(listener.log()[since:]), False))
                    done = listener.settled()
                    continue
                done = listener.settled()
                time.sleep(1.0)
                if listener.count(STOPPING) == stops:
                    out.missed += 1
                out.answers += 1
                out.answers_stopped += listener.count(STOPPING) - stops > 1
                out.paused += listener.count(PAUSING) > pauses
                said = listener.turns()[-1]["said"]
                out.answered.append(wer(references[name], said))
                if stalled:
                    kind = stall_kind(listener.log()[since:])
                    out.stalls.append((kind, listener.count(STOPPING) > stops))
                    out.stalled_wers.append(out.answered[-1])
                    print(f"  {name}: after the stall ({kind}), heard {said!r}")
                # The voices never say these: the question's words (whose reply is the
                # echo) in the request are the question joined, or the reply's echo heard.
                heard = said.lower()
                joined = heard.startswith(QUESTION_OPENS)
                out.joined += joined
                out.echoed += heard.count(REPLY_WORDS) > joined
                log = listener.log()
                stages = turn_stages(log, log.count(TURN_DONE) - 1)  # this request's turn
                if "sent" in stages and "first audio" in stages:
                    out.sent.append(stages["sent"])
                    out.replied.append(stages["first audio"])
                heard = mic.snapshot()
                window = heard.between(fed_s - 0.2, heard.end_s)
                offset, _ = align(voice, window)
                start_s = heard.time_of(heard.index_at(fed_s - 0.2) + offset)
                onset_s = start_s + onset_in(voice)
                played = speaker.snapshot()
                if np.abs(played.between(onset_s - 0.1, onset_s)).max(initial=0) <= LOUD:
                    print(f"  {name}: the reply was not sounding at the onset; not counted")
                    out.not_counted += 1
                    continue
                during = played.between(onset_s, start_s + len(voice) / RATE + 0.3)
                loud = np.flatnonzero(np.abs(during) > LOUD)
                stop_s = (loud[-1] + 1) / RATE if len(loud) else 0.0
                word_s = stop_s - lead_s[name]
                out.latencies.append(stop_s)
                out.from_word.append(word_s)
                print(
                    f"  {name}: reply silent {stop_s * 1000:.0f} ms after the onset,"
                    f" {word_s * 1000:.0f} ms after the {'wake' if wake is not None else 'first'}"
                    f" word; said {said!r}"
                )
    return out


@contextlib.contextmanager
def _kept_log(listener: Listener, path: Path | None) -> Iterator[None]:
    try:
        yield
    finally:
        if path is not None:
            path.write_text(listener.log())


# ---- CPU ----------------------------------------------------------------------------------------


def idle_cpu(rig: PulseRig, mode: str, seconds: float) -> float:
    """% of one core that ``listen`` uses on silence, with ``audio.echo_cancel = mode``."""
    from bench_idle import cpu_seconds

    with tempfile.TemporaryDirectory(prefix="bench-echo-idle-") as tmp:
        config: dict[str, dict[str, object]] = {
            "audio": {"echo_cancel": mode},
            "earcons": {"enabled": False},
        }
        with Listener(rig, Path(tmp) / "listen", config) as listener:
            assert listener.process is not None
            time.sleep(2)
            before, started = cpu_seconds(listener.process.pid), time.monotonic()
            time.sleep(seconds)
            used = cpu_seconds(listener.process.pid) - before
            return 100 * used / (time.monotonic() - started)


def canceller_cpu(make: Callable[[], EchoCanceller], reply: Int16, seconds: float = 30.0) -> float:
    """CPU seconds per second of audio for the canceller alone, offline."""
    far = np.resize(reply, int(seconds * RATE)).astype(np.int16)
    near = np.zeros_like(far)
    near[1440:] = (far[:-1440] * 0.5).astype(np.int16)
    canceller = make()
    started = time.process_time()
    for i in range(0, len(far) - FRAME + 1, FRAME):
        canceller.process(near[i : i + FRAME], far[i : i + FRAME])
    return (time.process_time() - started) / seconds


# ---- the report --------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report_barge_ins(barge: BargeIns) -> None:
    kind = "the wake word and a request" if barge.wake else "voice"
    print(f"{kind} barge-in (listen, echo_cancel on): onset -> reply's last sample on the monitor:")
    lat = [x * 1000 for x in barge.latencies]
    word = [x * 1000 for x in barge.from_word]
    since = "the end of the wake word" if barge.wake else "its first word"
    print(
        f"  from its onset: p50 {pct(lat, 50):.0f} ms, p90 {pct(lat, 90):.0f} ms,"
        f" max {max(lat, default=0):.0f} ms; from {since}: p50 {pct(word, 50):.0f} ms,"
        f" p90 {pct(word, 90):.0f} ms, max {max(word, default=0):.0f} ms"
    )
    print(
        f"  over {len(lat)} runs ({barge.not_counted} not counted: the voice began between"
        f" words); voices that did not stop the reply: {barge.missed};"
        f" that paused it first: {barge.paused}; that fell on a reply gated after a stall,"
        f" an underrun or a reopen (not heard): {barge.gated}"
    )
    print(
        f"  the request said over the reply: mean WER {np.mean(barge.answered):.2f};"
        f" taken for the question going on: {barge.joined} of {len(barge.answered)};"
        f" with the reply's own words in it: {barge.echoed}"
    )
    if barge.sent:
        print(
            f"  ... went to the agent p50 {pct(barge.sent, 50) * 1000:.0f} ms after its last"
            f" word (max {max(barge.sent) * 1000:.0f} ms); its reply's first sample p50"
            f" {pct(barge.replied, 50) * 1000:.0f} ms (from the listener's log, {len(barge.sent)}"
            " turns)"
        )
    print(
        f"  replies nobody talked over that stopped anyway: {barge.false_stops}"
        f" of {barge.quiet_runs}; pauses in them: {barge.false_pauses}"
    )
    print(
        f"  replies to a voice said over a reply that stopped anyway: {barge.answers_stopped}"
        f" of {barge.answers}"
    )
    if barge.stalls:
        kinds = sorted({kind for kind, _ in barge.stalls})
        told = [
            f"{kind}: heard {sum(h for k, h in barge.stalls if k == kind)}"
            f" of {sum(k == kind for k, _ in barge.stalls)}"
            for kind in kinds
        ]
        print(
            "  voices after a stall of the listener (0.3-0.9 s before every other one):"
            f" {'; '.join(told)};"
            f" mean WER of the requests heard {np.mean(barge.stalled_wers or [np.nan]):.2f}"
        )
    if barge.music_runs:
        print(
            f"  ... with a melody at {barge.music_dbfs:.0f} dBFS playing in the room:"
            f" {barge.music_stops}"
            f" of {barge.music_runs}; pauses in them: {barge.music_pauses}"
        )


def report_double_talk(talk: DoubleTalk) -> None:
    print("a real voice (as loud as the echo) over a reply that plays on under it, WebRTC, fixed:")
    print(
        f"  ERLE where only the echo is: p50 {pct(talk.echo_only, 50):.1f} dB,"
        f" min {min(talk.echo_only, default=float('nan')):.1f} dB"
    )
    print(
        f"  voice kept by the canceller: p50 {pct(talk.kept, 50):+.1f} dB over the whole voice,"
        f" {pct(talk.onset_kept, 50):+.1f} dB over its first {ONSET_S * 1000:.0f} ms"
    )
    print(f"  its loud frames taken for echo by the guards: p50 {pct(talk.marked, 50) * 100:.0f} %")
    print(
        f"  the same by the linear canceller (what Whisper hears): {pct(talk.linear_kept, 50):+.1f}"
        f" dB, {pct(talk.linear_onset_kept, 50):+.1f} dB over its first {ONSET_S * 1000:.0f} ms"
    )
    print(
        f"  Whisper tiny.en WER: mean {np.mean(talk.wers):.2f} on AEC3's output,"
        f" {np.mean(talk.linear_wers):.2f} on the linear canceller's,"
        f" {np.mean(talk.words_wers):.2f} on what the loop transcribes (linear while trusted)"
        f" (the voice alone: {np.mean(talk.clean_wers):.2f}); {len(talk.wers)} voices"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=6, help="replies per ERLE run")
    parser.add_argument("--runs", type=int, default=8, help="voice barge-ins")
    parser.add_argument("--quiet-runs", type=int, default=4, help="replies nobody talks over")
    parser.add_argument(
        "--music-runs", type=int, default=0, help="... with music-like tones in the room"
    )
    parser.add_argument(
        "--music-dbfs", type=float, default=-35.0, help="the melody's level (the echo's: about -20)"
    )
    parser.add_argument(
        "--quieter-db", type=float, default=0.0, help="voices this much quieter than the echo"
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--stall-ms",
        type=float,
        default=0.0,
        help="stop the listener this long (an underrun) in each quiet reply, and 0.3-0.9 s"
        " before every other voice",
    )
    parser.add_argument("--log", type=Path, help="write the barge-in listener's log here")
    parser.add_argument(
        "--wake",
        action="store_true",
        help='the barge-ins in wake mode, each request and voice begun with "Hey Jarvis"',
    )
    parser.add_argument(
        "--barge-in-only", action="store_true", help="only the voice barge-ins through listen"
    )
    parser.add_argument(
        "--double-talk-only",
        type=int,
        default=0,
        metavar="N",
        help="only N rounds of real voices over a reply: what AEC3 and the linear canceller keep",
    )
    args = parser.parse_args()

    tts = PiperSynthesizer(TtsConfig())
    stt = WhisperTranscriber(SttConfig())
    stt.warm_up()
    replies = [tts.synthesize_all(text) for text in REPLIES]
    replies = [replies[i % len(replies)] for i in range(max(2, args.replies))]
    question = speech(tts, QUESTION)
    loudest = speech(tts, REPLIES[0])
    voices = {
        name: as_loud_as(to_int16(real_clip(name)), loudest, quieter_db=args.quieter_db)
        for name in VOICES
    }

    chosen = [(VOICES[i % len(VOICES)], voices[VOICES[i % len(VOICES)]]) for i in range(args.runs)]
    wake = None
    if args.wake:
        word, _ = word_alone(tts, "Hey Jarvis")
        wake = as_loud_as(word, loudest, quieter_db=args.quieter_db)  # as loud as the voices

    def barge_in_runs(rig: PulseRig) -> BargeIns:
        kind = "wake word" if args.wake else "voice"
        print(f"{kind} barge-in through voice-assistant listen ({args.runs} runs):")
        return barge_ins(
            rig,
            question,
            chosen,
            args.quiet_runs,
            args.seed,
            args.music_runs,
            args.music_dbfs,
            args.stall_ms,
            args.log,
            wake,
        )

    if args.barge_in_only:
        with PulseRig() as rig:
            barge = barge_in_runs(rig)
            report_barge_ins(barge)
        return 0

    if args.double_talk_only:
        with PulseRig() as rig, rig.activate(), rig.loopback():
            print("real voices over a reply that plays on under them, fixed echo path:")
            talk = DoubleTalk()
            for _ in range(args.double_talk_only):
                more = reply_and_voice(rig, tts, stt, replies, voices)
                for name in DoubleTalk.__dataclass_fields__:
                    getattr(talk, name).extend(getattr(more, name))
        report_double_talk(talk)
        return 0

    runs: list[EchoRun] = []
    with PulseRig() as rig:
        with rig.activate():
            for drift in (False, True):
                with rig.loopback(drift=drift):
                    path = "drifting" if drift else "fixed"
                    runs.append(
                        replies_only(
                            rig, WebRtcCanceller, f"WebRTC AEC3, {path}", replies, tts.sample_rate
                        )
                    )
                    runs.append(
                        replies_only(
                            rig, speex_suppressing, f"speexdsp, {path}", replies, tts.sample_rate
                        )
                    )
            print("reply + a real voice over it (WebRTC, fixed echo path):")
            with rig.loopback():
                talk = reply_and_voice(rig, tts, stt, replies, voices)
        barge = barge_in_runs(rig)
        idle = {mode: [idle_cpu(rig, mode, 15.0) for _ in range(2)] for mode in ("off", "on")}

    cpu_webrtc = canceller_cpu(WebRtcCanceller, replies[0])
    cpu_speex = canceller_cpu(speex_suppressing, replies[0])
    cpu_linear = canceller_cpu(SpeexCanceller, replies[0])

    print()
    print("echo removed (ERLE, dB) in the loopback rig, echo at full level, nobody talking;")
    print("the canceller alone, then what may count as speech (voice/echo_guard.py):")
    print(
        f"  {'canceller, echo path':<24} {'1st reply':>9} {'later p50':>9} {'later min':>9}"
        f" {'loop p50':>8} {'>-60 dBFS':>9} {'loop':>6} {'learnt after':>12}"
    )
    for run in runs:
        learnt = "-" if run.learnt_after is None else f"{run.learnt_after} reply"
        print(
            f"  {run.name:<24} {run.first:9.1f} {statistics.median(run.later):9.1f}"
            f" {min(run.later):9.1f} {statistics.median(run.later_loop):8.1f}"
            f" {statistics.mean(run.leaks) * 100:8.1f}%"
            f" {statistics.mean(run.leaks_loop) * 100:5.1f}% {learnt:>12}"
        )
    print("  (>-60 dBFS: share of 30 ms frames louder than that while a reply plays)")
    report_double_talk(talk)
    report_barge_ins(barge)
    print("CPU per second of audio (% of one core):")
    first = runs[0]
    print(
        f"  the read path (resampling, pairing, WebRTC, the words' canceller, guards, framing):"
        f" {first.cpu_s / first.audio_s * 100:.2f} %,"
        f" of which the canceller {first.canceller_cpu_s / first.audio_s * 100:.2f} %"
    )
    print(
        f"  canceller alone, offline: WebRTC {cpu_webrtc * 100:.2f} %,"
        f" speexdsp {cpu_speex * 100:.2f} %, speexdsp linear (the words') {cpu_linear * 100:.2f} %"
    )
    print(
        f"  listen on silence: echo_cancel off {statistics.median(idle['off']):.1f} %,"
        f" on {statistics.median(idle['on']):.1f} % (the canceller rests while nothing plays)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
