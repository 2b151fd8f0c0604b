"""The live loop: threads, a queue and devices around the turn-taking machine.

One thread (the caller of :meth:`VoiceLoop.run`) reads the microphone, feeds the segmenter and
the machine, and carries out the machine's actions. Transcription and the end-of-turn model run
on their own worker threads, each agent turn on a :class:`~voice.turns.TurnWorker`; they report
back through a queue that the loop drains between frames. All decisions are the machine's.

The microphone stays live throughout. What the assistant itself plays (a reply, an earcon) is
*gated*: those frames still reach the segmenter, so no audio is lost, but never count as
speech, until ``turn.cooldown_ms`` after the speaker fell silent (its echo in the room). With
``turn.barge_in`` (a headset, or an echo-cancelled microphone) nothing is gated.

While the machine is not hearing (push-to-talk or wake word, waiting to be addressed), frames
only go to a short pre-roll. In wake mode every frame also goes to the wake word detector
(with echo cancellation, the audio Whisper hears). A wake word heard over gated sound (the
assistant's own voice, without echo cancellation) does not count, nor one the reply itself
says. The chime that answers a wake word is the one sound that is not gated: the user goes
on talking over it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from core.errors import DeviceError
from voice.audio import SAMPLE_WIDTH, AudioChunk, Utterance, rms_dbfs
from voice.config import Config
from voice.control import COMMANDS
from voice.devices import AudioSource
from voice.earcons import EarconName, Earcons
from voice.echo import EchoState
from voice.own_words import says
from voice.speech_out import ReplySpeaker
from voice.stt import SpeechToText
from voice.turn_events import (
    Action,
    Analyze,
    Answer,
    Command,
    Dropped,
    EndSegment,
    Event,
    HeardOverReply,
    Interrupt,
    KeyDown,
    KeyUp,
    PauseReply,
    Phase,
    PlayEarcon,
    Release,
    ReplyDone,
    ResumeReply,
    Say,
    Send,
    SetPhase,
    StartSegment,
    StopReply,
    Tick,
    Transcribe,
    TranscriptReady,
    VerdictReady,
    WakeLikely,
    WakeWord,
)
from voice.turn_taking import WAKE_WORD_MAX_S, TurnTaking
from voice.turns import Conversation, TurnReport, TurnSettings, TurnWorker
from voice.vad import Segmenter, SegmenterEvent, SpeechDropped, SpeechStarted
from voice.wake import WakeDetector

log = logging.getLogger(__name__)

Steer = Release | StopReply | PauseReply | ResumeReply | Interrupt | Answer  # a turn's worker

# Wake mode keeps this much audio while waiting: the detection comes up to ~0.3 s after the
# word ended, and the words said in between must reach the request.
WAKE_PRE_ROLL_MS = 600
# The listening chime (150 ms) and the speaker's latency: not gated after a wake word.
WAKE_CUE_S = 0.5
# The chime after a wake word waits this long for the user to go on in the same breath; if
# they do, it does not play: they need no cue, and with echo cancellation the chime under
# their first word cost it (the canceller held the voice back under it: "We might" for
# "He might", 4 of 4 times).
WAKE_CHIME_WAIT_S = 0.3
# While nothing is going on, a live loop wakes this often instead of at every frame and reads
# what the microphone queued meanwhile: idle CPU is mostly the cost of waking up. Only the
# start of speech is seen up to this much later; its audio is all kept, and turns are timed
# by the audio's own clock. A key press or a worker's event ends the wait at once.
IDLE_BATCH_S = 0.3
# In wake mode the listening chime follows the wake word: it should not wait that long.
WAKE_IDLE_BATCH_S = 0.1
# A machine that underruns all the time would otherwise reopen its stream at every idle
# moment: once in this long at most (the log says each time).
REOPEN_BEHIND_EVERY_S = 10.0


# What the key does not do in a mode, said with the ``ok`` (a script sees the same first word).
_KEY_NOTES = {
    ("press", "vad"): " (vad mode: the microphone is always on; a press only stops a reply)",
    ("release", "vad"): " (vad mode: nothing to release)",
    ("toggle", "vad"): " (vad mode: the microphone is always on; a toggle only stops a reply)",
    ("release", "wake"): " (wake mode: a press wakes, a release does nothing)",
    ("release", "ptt-toggle"): " (ptt-toggle mode: a press starts and ends a request)",
}


class ReopenableSource(AudioSource, Protocol):
    def reopen(self) -> None: ...
    def drain(self) -> None: ...


class TurnModel(Protocol):
    """The end-of-turn model: probability that the speaker finished (see voice.smart_turn)."""

    def predict(self, audio: npt.NDArray[np.float32]) -> float: ...


class Watchdog(Protocol):
    def watchdog(self) -> object: ...


class StatusSink(Protocol):
    def phase(self, phase: str) -> None: ...
    def level(self, dbfs: float) -> None: ...


@dataclass
class Engines:
    """What the loop runs besides the devices."""

    stt: SpeechToText
    speaker: ReplySpeaker
    conversation: Conversation
    turn_model: TurnModel | None = None
    earcons: Earcons | None = None
    wake: WakeDetector | None = None  # wake mode: heard while the machine is not hearing


class VoiceLoop:
    def __init__(
        self,
        config: Config,
        *,
        source: ReopenableSource,
        segmenter: Segmenter,
        machine: TurnTaking,
        engines: Engines,
        settings: TurnSettings,
        status: StatusSink | None = None,
        watchdog: Watchdog | None = None,
        on_turn: Callable[[TurnReport], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        echo: EchoState | None = None,
        idle_batch_s: float = 0.0,
    ) -> None:
        """``idle_batch_s``: with a live source, read in batches this far apart while idle
        (:data:`IDLE_BATCH_S`); 0 reads frame by frame (files, tests)."""
        self.config = config
        self.source = source
        self.segmenter = segmenter
        self.machine = machine
        self.engines = engines
        self.settings = settings
        self.status = status
        self.watchdog = watchdog
        self.on_turn = on_turn
        self.clock = clock
        self.reports: list[TurnReport] = []
        self._events: queue.Queue[Event] = queue.Queue()
        self._stt_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stt")
        self._model_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="end-of-turn")
        self._pause_job: Future[None] | None = None
        self._workers: dict[int, TurnWorker] = {}
        pre_roll_ms = config.vad.pre_roll_ms
        if engines.wake is not None:  # room for the words between the wake word and its detection
            pre_roll_ms = max(pre_roll_ms, WAKE_PRE_ROLL_MS)
        frames = max(1, pre_roll_ms // config.audio.frame_ms)
        self._pre_roll: collections.deque[AudioChunk] = collections.deque(maxlen=frames)
        self._echo = echo
        self._gate_until = 0.0
        self._pressed_at_s: float | None = None
        self._now = clock()
        self._last_frame_s = clock()
        self._loss_announced = False
        self._cue_until = 0.0  # until then the speaker plays only the wake word's chime
        self._chime_at: float | None = None  # the wake word's chime, unless the user goes on
        self._wake_likely_s: float | None = None  # the wake word's last rise told the machine
        self._waking = False
        self._earcon_lock = threading.Lock()
        self._segments_started = 0
        self._heard_over_reply = False  # told to the machine when it changes
        self._idle_batch_s = idle_batch_s
        self._reopened_behind_s = float("-inf")  # see _reopen_behind
        self._catching_up = False  # reading what queued up while the loop rested
        # The segmenter's events for a chunk not yet handed to the machine (_hear), each with
        # whether it came over the reply.
        self._unheard: collections.deque[tuple[SegmenterEvent, bool]] = collections.deque()

    @property
    def _gate(self) -> bool:
        """Whether the assistant's own sound is gated: not with ``turn.barge_in``, nor once
        the echo canceller (``audio.echo_cancel``) tells a voice from the echo."""
        if self.config.turn.barge_in:
            return False
        return self._echo is None or not self._echo.hears_over_reply

    # ---- from other threads ------------------------------------------------------------------
    def post(self, event: Event) -> None:
        """Hand an event to the loop thread (workers, keys, the control socket)."""
        self._events.put(event)

    def press(self) -> None:
        self.post(KeyDown(self.clock()))

    def release(self) -> None:
        self.post(KeyUp(self.clock()))

    def toggle(self) -> None:
        held = self.machine.key_held and self.config.input.mode == "ptt-hold"
        self.post(KeyUp(self.clock()) if held else KeyDown(self.clock()))

    def handle_command(self, command: str) -> str:
        """Control socket: press, release, toggle, status, stop, allow, deny, always."""
        if command == "status":
            return f"ok {self.machine.phase.value}"
        if command == "press":
            self.press()
        elif command == "release":
            self.release()
        elif command == "toggle":
            self.toggle()
        elif command in ("allow", "deny", "always") and not self.machine.asking:
            return f"error: no question is waiting for an answer; {command} was not sent"
        elif command in ("stop", "allow", "deny", "always"):
            self.post(Command(command))  # type: ignore[arg-type]
        else:
            return f"error: unknown command {command!r}; use {', '.join(COMMANDS)}"
        return f"ok {command}{_KEY_NOTES.get((command, self.config.input.mode), '')}"

    @property
    def phase(self) -> Phase:
        return self.machine.phase

    @property
    def busy(self) -> bool:
        return self.machine.busy or bool(self._workers)

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, until_idle: bool = False) -> None:
        """Run until ``stop`` is set (or, with ``until_idle``, the source ran dry and all
        turns are over: the ``ask`` command)."""
        log.info("listening (mode %s)", self.config.input.mode)
        self._execute(self.machine.start())
        try:
            while not stop.is_set():
                try:
                    exhausted = self._tick(stop)
                except Exception:  # a bug in one frame's handling must not end the assistant
                    log.exception("the audio loop hit an error; listening again")
                    self._restart_after_error()
                    stop.wait(0.1)
                    continue
                if until_idle and exhausted and not self.busy and self._events.empty():
                    return
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        for worker in list(self._workers.values()):
            worker.reply.cancel()
            worker.control.interrupt()
        self._stt_pool.shutdown(wait=False, cancel_futures=True)
        self._model_pool.shutdown(wait=False, cancel_futures=True)

    def join_turns(self, timeout_s: float) -> None:
        """Wait (bounded) for turns still running after :meth:`run` returned."""
        deadline = time.monotonic() + timeout_s
        for worker in list(self._workers.values()):
            worker.join(max(0.0, deadline - time.monotonic()))

    def _tick(self, stop: threading.Event) -> bool:
        """One read of the microphone; True when the source has nothing more to give."""
        if self._idle_batch_s > 0 and not self._catching_up and self._idle:
            self._rest(self._idle_batch_s)
            self._catching_up = True
        self._drain_events()
        if self.watchdog is not None:
            self.watchdog.watchdog()
        try:
            chunk = self.source.read(0.0 if self._catching_up else 0.1)
        except DeviceError as e:
            self._recover(str(e), stop)
            return False
        if chunk is None:
            self._catching_up = False
            now = self.clock()
            exhausted = bool(getattr(self.source, "exhausted", False))
            if not exhausted and now - self._last_frame_s > self.config.audio.stall_timeout_s:
                self._recover(f"no audio frames for {now - self._last_frame_s:.1f} s", stop)
            self._advance(now)
            if (  # caught up: a reopen drops no frame the loop has not seen
                getattr(self.source, "needs_reopen", False)
                and self._idle
                and now - self._reopened_behind_s >= REOPEN_BEHIND_EVERY_S
            ):
                self._reopened_behind_s = now
                self._reopen_behind(stop)
            return exhausted
        self._last_frame_s = self.clock()
        self._loss_announced = False
        self._on_chunk(chunk)
        self._advance(chunk.timestamp_s + chunk.duration_s)
        return False

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)
        self._chime_if_waiting()
        gate = self._gate
        if gate and self.engines.speaker.sink.sounding and self.clock() >= self._cue_until:
            self._gate_until = self._now + self.config.turn.cooldown_ms / 1000
        if self._heard_over_reply == gate:  # the canceller learnt (or lost) the room
            self._heard_over_reply = not gate
            self._execute(self.machine.handle(HeardOverReply(not gate)))
        self._execute(self.machine.handle(Tick(self._now)))

    @property
    def _idle(self) -> bool:
        """Nothing heard, nothing playing, no turn, no key held: frames can wait a little."""
        return not (
            self.busy
            or self.segmenter.in_speech
            or self.machine.key_held
            or self.engines.speaker.sink.playing
        )

    def _rest(self, seconds: float) -> None:
        """Wait up to ``seconds`` for an event (a key, a worker), handling the first one."""
        try:
            event = self._events.get(timeout=seconds)
        except queue.Empty:
            return
        self._handle(event)

    def _drain_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    def _handle(self, event: Event) -> None:
        self._execute(self.machine.handle(event))
        if isinstance(event, ReplyDone):
            self._turn_over(event.turn)

    def _recover(self, why: str, stop: threading.Event) -> None:
        """Reopen the microphone with backoff until it works again or we are stopped."""
        log.warning("microphone lost (%s); reopening", why)
        if not self._loss_announced:  # once per outage, not at every stall timeout
            self._loss_announced = True
            self._play_earcon("error")
        delay = 0.25
        while not stop.is_set():
            try:
                self.source.reopen()
            except DeviceError as e:
                log.info("microphone not back yet: %s; retrying in %.1f s", e, delay)
                if self.watchdog is not None:  # waiting for a device is not a hung loop
                    self.watchdog.watchdog()
                stop.wait(delay)
                delay = min(delay * 2, self.config.audio.reopen_backoff_max_s)
                continue
            log.info("microphone reopened")
            self._reopened()
            return

    def _reopen_behind(self, stop: threading.Event) -> None:
        """An underrun left the duplex stream's microphone behind its speaker (see
        DuplexDevice.needs_reopen): start it afresh while nothing is heard or played."""
        log.warning(
            "the microphone fell %.0f ms behind the speaker (the audio callback stalled): "
            "reopening the stream (the echo canceller finds the echo again; if this repeats, "
            "raise audio.output_latency)",
            getattr(self.source, "behind_s", 0.0) * 1000,
        )
        try:
            self.source.reopen()
        except DeviceError as e:
            self._recover(str(e), stop)
            return
        self._reopened()

    def _reopened(self) -> None:
        self._last_frame_s = self.clock()
        self._restart_segmenter()
        if self.engines.wake is not None:  # the stream it was following is gone
            self.engines.wake.reset()

    def _restart_segmenter(self) -> None:
        """The segmenter starts afresh on what follows, and the machine hears what became of
        the utterance in progress: cut and kept (Segmenter.restart), so its words join the
        request, and the machine does not wait forever for the end of a voice that was thrown
        away (a held reply never released)."""
        for event in self.segmenter.restart():
            self._execute(self.machine.handle(event))

    def _restart_after_error(self) -> None:
        """:meth:`_restart_segmenter` after an error in one frame's handling, which must not
        end the loop. Should the segmenter be what failed, the utterance is lost, but the
        machine is told it ended (it would wait for it). What the segmenter reported after
        the event whose handling failed (its end, say) reaches the machine first."""
        try:
            self._hear()
            self._restart_segmenter()
            return
        except Exception:
            log.exception("the utterance in progress was lost with the error")
        try:
            self._unheard.clear()
            self.segmenter.reset()
            if self.machine.user_speaking:
                self._execute(self.machine.handle(SpeechDropped(self._now)))
        except Exception:
            log.exception("the turn-taking machine could not be told")

    # ---- audio ---------------------------------------------------------------------------------
    def _on_chunk(self, chunk: AudioChunk) -> None:
        if self.status is not None:
            self.status.level(rms_dbfs(chunk.pcm))
        now = self.clock()
        sink = self.engines.speaker.sink
        # Half-duplex a paused reply is silent: the user it paused for is heard (after the
        # cooldown). Echo cancelled, speech that paused the reply began over it: the reply's
        # own words are cut from its transcript (voice.own_words).
        over_reply = (sink.sounding if self._gate else sink.playing) and now >= self._cue_until
        gated = self._gate and (chunk.timestamp_s < self._gate_until or over_reply)
        self._pre_roll.append(chunk)
        if self._listen_for_wake(chunk, gated):
            return  # a segment started at the end of the word: this chunk was replayed into it
        if not self.machine.hearing:
            return
        pressed = self._pressed_at_s
        if (
            pressed is not None
            and chunk.timestamp_s < pressed + self.config.input.click_ignore_ms / 1000
        ):
            # The key's click: keep the time, drop the sound.
            chunk = AudioChunk(bytes(len(chunk.pcm)), chunk.rate, timestamp_s=chunk.timestamp_s)
        self._unheard.extend((e, over_reply) for e in self.segmenter.push(chunk, gated=gated))
        self._hear()

    def _hear(self) -> None:
        """Hand the segmenter's events to the machine, in order. Should handling one fail,
        those after it stay for :meth:`_restart_after_error`: the segmenter is past them (an
        utterance it ended is not cut again), and the machine would wait for that end."""
        while self._unheard:
            event, over_reply = self._unheard.popleft()
            if isinstance(event, SpeechStarted):
                self.engines.speaker.said.speech_began(event.at_s, over_reply=over_reply)
            self._execute(self.machine.handle(event))

    def _listen_for_wake(self, chunk: AudioChunk, gated: bool) -> bool:
        """Run the wake word detector (wake mode) on every chunk, heard or not: the word
        also counts in the follow-up window, where it is cut from the request it begins.
        True when a segment was started (from the pre-roll, this chunk included)."""
        wake = self.engines.wake
        if wake is None:
            return False
        whole = chunk.linear is not None
        heard = chunk.linear if whole else chunk.words
        if heard is not None:
            # AEC3 silences the first 300-700 ms of a voice over the reply, the whole word
            # (voice.echo); the linear canceller keeps it, trusted or not: after a stall moved
            # the echo, the word was lost in 5 of 5 tries (bench_echo.py --wake --stall-ms).
            chunk = dataclasses.replace(chunk, pcm=heard, words=None, linear=None)
        # Gated in a learnt room (a stall moved the echo), the word still counts: the linear
        # canceller kept it, and the reply saying it is ruled out by its text.
        gated = gated and not whole
        detection = wake.process(chunk)
        if detection is None:
            self._wake_likely(wake, gated)
            return False
        if gated:  # the assistant's own voice, or the word said over it: half-duplex
            log.info("wake word %s heard while the assistant spoke: ignored", detection.model)
            return False
        if self._reply_says(wake.phrase, detection.end_s):
            log.info("wake word %s heard while the reply said it: ignored", detection.model)
            return False
        log.info("wake word %s heard (%.2f)", detection.model, detection.probability)
        # What follows the word is the user's, not the reply's echo: no cooldown gates it.
        self._gate_until = min(self._gate_until, detection.end_s)
        # The words right after the wake word belong to the request; the word itself does not.
        kept = [trimmed for c in self._pre_roll if (trimmed := after(c, detection.end_s))]
        self._pre_roll = collections.deque(kept, maxlen=self._pre_roll.maxlen)
        # Not the assistant talking (the chime; a reply the word stops, falling silent): the
        # user goes on with the request over it ("Hey Jarvis, stop"), into the open segment.
        self._cue_until = self.clock() + WAKE_CUE_S
        started = self._segments_started
        self._waking = True  # its listening chime waits (WAKE_CHIME_WAIT_S)
        try:
            self._execute(self.machine.handle(WakeWord(detection.end_s)))
        finally:
            self._waking = False
        return self._segments_started != started

    def _wake_likely(self, wake: WakeDetector, gated: bool) -> None:
        """The wake word may be being said (its scores rose): a reply pauses for it."""
        likely_s = wake.likely_s
        if likely_s is None or likely_s == self._wake_likely_s or gated:
            return
        self._wake_likely_s = likely_s
        if not self._reply_says(wake.phrase, likely_s):
            self._execute(self.machine.handle(WakeLikely(likely_s)))

    def _reply_says(self, phrase: str, at_s: float) -> bool:
        """Whether the reply said the wake word just before ``at_s``: what the canceller
        left of it, not the user."""
        return says(phrase, self.engines.speaker.said.around(at_s - WAKE_WORD_MAX_S, at_s))

    def _chime_if_waiting(self) -> None:
        """The wake word's chime, once the user has not gone on for WAKE_CHIME_WAIT_S."""
        if self._chime_at is None:
            return
        if self.segmenter.voice_heard:
            self._chime_at = None
            log.debug("no listening chime: the request goes on in the same breath")
        elif self.clock() >= self._chime_at:
            self._chime_at = None
            self._cue_until = self.clock() + WAKE_CUE_S  # (see _listen_for_wake)
            self._play_earcon("listening")

    # ---- actions -------------------------------------------------------------------------------
    def _execute(self, actions: list[Action]) -> None:
        pending = collections.deque(actions)
        while pending:
            action = pending.popleft()
            pending.extend(self._do(action))

    def _do(self, action: Action) -> list[Action]:
        if isinstance(action, SetPhase):
            log.debug("phase: %s", action.phase.value)
            if self.status is not None:
                self.status.phase(action.phase.value)
        elif isinstance(action, Transcribe):
            self._transcribe(action)
        elif isinstance(action, Analyze):
            self._analyze(action)
        elif isinstance(action, EndSegment):
            ended = self.segmenter.finish()
            return [] if ended is None else self.machine.handle(ended)
        elif isinstance(action, StartSegment):
            return self._start_segment(action.hold)
        elif isinstance(action, Send):
            self._send(action)
        elif isinstance(action, Steer):
            self._steer(action)
        elif isinstance(action, PlayEarcon):
            self._cue(action.name)
        elif isinstance(action, Dropped):
            log.info("not sent to the agent: %r (%s)", action.text, action.why)
        elif isinstance(action, Say):
            log.info("saying: %s", action.text)
            line = self.engines.speaker.begin()
            line.say(action.text)
            line.finish()
        return []

    def _transcribe(self, action: Transcribe) -> None:
        transcribe = self.engines.stt.transcribe
        if action.purpose == "whole":
            log.info("the request's transcript ended early: hearing it again whole")
            transcribe = self.engines.stt.transcribe_whole
        stale = self._pause_job
        if action.purpose == "pause" and stale is not None:
            stale.cancel()  # a newer pause makes an older one's words moot, if not started

        def work() -> None:
            looped, avg_logprob = False, 0.0
            try:
                result = transcribe(action.audio)
                text, looped, avg_logprob = result.text, result.looped, result.avg_logprob
            except Exception:
                log.exception("transcription failed")
                text = ""
            log.debug("%s transcript %d: %r (%.2f)", action.purpose, action.job, text, avg_logprob)
            text = self._without_echo(text, action.audio)
            self.post(TranscriptReady(action.job, text, looped, avg_logprob))

        future = self._stt_pool.submit(work)
        if action.purpose == "pause":
            self._pause_job = future

    def _without_echo(self, text: str, audio: Utterance) -> str:
        """The transcript without the reply's own words heard back (voice.own_words)."""
        echo, said = self.engines.speaker.said.split(text, audio.start_s, audio.end_s)
        if not echo:
            return text
        if said:
            log.info("cut %r from the transcript: the reply's own words, heard back", echo)
        else:
            log.info("dropped transcript %r: the reply's own words, heard back", text)
        return said

    def _analyze(self, action: Analyze) -> None:
        model = self.engines.turn_model
        audio = action.audio

        def work() -> None:
            probability: float | None = None
            if model is not None:
                try:
                    samples = audio.to_float32()
                    silence = np.zeros(round(action.silence_s * audio.rate), np.float32)
                    probability = float(model.predict(np.concatenate([samples, silence])))
                except Exception as e:  # one failed call: the words decide this pause
                    log.warning("the end-of-turn model failed: %s", e)
            log.debug("end-of-turn verdict %d: %s", action.job, probability)
            self.post(VerdictReady(action.job, probability))

        self._model_pool.submit(work)

    def _start_segment(self, hold: bool) -> list[Action]:
        self._segments_started += 1
        self._pressed_at_s = self._now if self.config.input.mode == "ptt-hold" else None
        if self.segmenter.in_speech and self.config.input.mode != "wake":
            # Pressed again within the release grace: the utterance still open goes on, with
            # the words of the first press (a reset lost them) and the pre-roll in it already.
            # (The wake word restarts a segment after the word, which it does not keep.)
            self._pre_roll.clear()
            return self.machine.handle(self.segmenter.start(hold=hold))
        self.segmenter.reset()
        pre_roll, self._pre_roll = (
            list(self._pre_roll),
            collections.deque(maxlen=self._pre_roll.maxlen),
        )
        # From the audio it is given: the pre-roll (after a wake word, from the word's end).
        at_s = pre_roll[0].timestamp_s if pre_roll else self._now
        actions = self.machine.handle(self.segmenter.start(hold=hold, at_s=at_s))
        for chunk in pre_roll:
            for event in self.segmenter.push(chunk):
                actions += self.machine.handle(event)
        return actions

    def _send(self, action: Send) -> None:
        log.info("you said: %s", action.text)
        worker = TurnWorker(
            action.turn,
            action.text,
            revises=action.revises,
            speech_end_s=action.speech_end_s,
            conversation=self.engines.conversation,
            speaker=self.engines.speaker,
            settings=self.settings,
            post=self.post,
            play_earcon=self._play_earcon,
            clock=self.clock,
        )
        self._workers[action.turn] = worker
        worker.start()

    def _steer(self, action: Steer) -> None:
        worker = self._workers.get(action.turn)
        if worker is None:
            return
        if isinstance(action, Release):
            worker.release()
        elif isinstance(action, StopReply):
            log.info("stopping the reply%s", f": heard {action.heard!r}" if action.heard else "")
            if self._echo is not None and not self._gate and not self._echo.words_whole:
                # Said over the reply while Whisper hears AEC3: the README's troubleshooting.
                log.info(
                    "what was said over the reply was heard through AEC3 (the linear "
                    "canceller has not learnt the echo path yet): its first words may be lost"
                )
            worker.reply.cancel()
        elif isinstance(action, PauseReply):
            if action.renew:
                log.info("keeping the reply paused: the user is still speaking")
            else:
                log.info("pausing the reply: is someone talking?")
            worker.reply.pause()
        elif isinstance(action, ResumeReply):
            why = "no words were heard" if action.held else "nobody was talking"
            if action.heard:
                why = f"heard only {action.heard!r}, a backchannel"
            why = action.why or why
            log.info("going on with the reply: %s", why)
            worker.reply.resume()
        elif isinstance(action, Interrupt):
            log.info("interrupting the agent")
            worker.control.interrupt()
        else:
            heard = f" (heard {action.heard!r})" if action.heard else ""
            log.info("permission %s: %s%s", action.decision, action.message or "", heard)
            worker.answer(action.request, action.decision, action.message)

    def _turn_over(self, turn: int) -> None:
        worker = self._workers.pop(turn, None)
        if worker is None:
            return
        self.reports.append(worker.report)
        if self.on_turn is not None:
            try:
                self.on_turn(worker.report)
            except Exception:
                log.exception("the turn callback failed")

    def _cue(self, name: EarconName) -> None:
        if self._waking and name == "listening":
            self._chime_at = self.clock() + WAKE_CHIME_WAIT_S  # unless the user goes on
        else:
            self._play_earcon(name)

    def _play_earcon(self, name: EarconName) -> None:
        """Best effort: a cue that cannot play (speaker gone) is logged, never raised.

        Turn threads play earcons too (the error buzz): one lock makes each check-and-play
        whole, so a thinking tick never queues behind the buzz of an agent that failed."""
        earcons = self.engines.earcons
        sink = self.engines.speaker.sink
        if earcons is None:
            return
        sound = earcons.get(name)
        if sound is None:
            return
        with self._earcon_lock:
            if name == "thinking" and (sink.playing or self._agents_over()):
                return
            try:
                sink.play(sound, earcons.sample_rate)
            except DeviceError as e:
                log.info("no %s earcon: %s", name, e)

    def _agents_over(self) -> bool:
        """No agent is working, though the machine may not have heard it yet."""
        return all(worker.agent_over for worker in list(self._workers.values()))


def after(chunk: AudioChunk, start_s: float) -> AudioChunk | None:
    """The part of ``chunk`` from ``start_s`` on (None when it ended before)."""
    skip = max(0, round((start_s - chunk.timestamp_s) * chunk.rate)) * SAMPLE_WIDTH
    if skip == 0:
        return chunk
    if skip >= len(chunk.pcm):
        return None
    return dataclasses.replace(
        chunk,
        pcm=chunk.pcm[skip:],
        timestamp_s=chunk.timestamp_s + skip / SAMPLE_WIDTH / chunk.rate,
        words=None if chunk.words is None else chunk.words[skip:],
        linear=None if chunk.linear is None else chunk.linear[skip:],
    )
