"""The live loop: listening -> transcribing -> thinking -> speaking, and back.

All state changes happen on the thread that calls :meth:`VoiceLoop.run`; push-to-talk events
and the turn worker talk to it through a command queue. The loop is half-duplex: microphone
frames are discarded while a turn runs and for ``cooldown_ms`` after the reply, so the
assistant never answers itself (unless voice barge-in is switched on for a headset).
"""

from __future__ import annotations

import collections
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from core.errors import DeviceError
from voice.audio import AudioChunk, Utterance, rms_dbfs
from voice.config import Config
from voice.devices import AudioSource
from voice.endpoint import looks_complete
from voice.speech_out import Reply
from voice.stt import Transcript
from voice.turns import TurnReport, TurnRunner
from voice.vad import (
    Segmenter,
    SegmenterEvent,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
)

log = logging.getLogger(__name__)


class Phase(enum.StrEnum):
    IDLE = "idle"  # push-to-talk: waiting for the key
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    THINKING = "thinking"
    SPEAKING = "speaking"


class ReopenableSource(AudioSource, Protocol):
    def reopen(self) -> None: ...
    def drain(self) -> None: ...


class Watchdog(Protocol):
    def watchdog(self) -> object: ...


class StatusSink(Protocol):
    def phase(self, phase: str) -> None: ...
    def level(self, dbfs: float) -> None: ...


@dataclass
class _Speculation:
    utterance: Utterance
    future: Future[Transcript]


class VoiceLoop:
    def __init__(
        self,
        config: Config,
        *,
        source: ReopenableSource,
        segmenter: Segmenter,
        turns: TurnRunner,
        status: StatusSink | None = None,
        watchdog: Watchdog | None = None,
        on_turn: Callable[[TurnReport], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.source = source
        self.segmenter = segmenter
        self.turns = turns
        self.status = status
        self.watchdog = watchdog
        self.on_turn = on_turn
        self.clock = clock
        self.mode = config.input.mode
        self._commands: queue.Queue[tuple[str, object]] = queue.Queue()
        self._phase = Phase.IDLE if self.mode != "vad" else Phase.LISTENING
        self._generation = 0  # bumped by barge-in so a stale turn leaves the phase alone
        self._reply: Reply | None = None
        self._turn_lock = threading.Lock()  # generation and _reply, shared with the turn thread
        self._turn_cancelled = threading.Event()  # set by a barge-in into the running turn
        self._listen_from_s = 0.0  # frames older than this are discarded (cooldown)
        self._held = False
        self._pressed_at_s: float | None = None
        self._release_at_s: float | None = None
        self._spec: _Speculation | None = None
        self._stt_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stt")
        self._turn_thread: threading.Thread | None = None
        frames = max(1, config.vad.pre_roll_ms // config.audio.frame_ms)
        self._pre_roll: collections.deque[AudioChunk] = collections.deque(maxlen=frames)
        self._last_frame_s = clock()
        self._loss_announced = False
        self.reports: list[TurnReport] = []

    # ---- events from other threads -------------------------------------------------------
    def press(self) -> None:
        self._commands.put(("press", None))

    def release(self) -> None:
        self._commands.put(("release", None))

    def toggle(self) -> None:
        self._commands.put(("toggle", None))

    def handle_command(self, command: str) -> str:
        """Control-socket handler: ``press``, ``release``, ``toggle`` or ``status``."""
        if command == "status":
            return f"ok {self._phase.value}"
        if command not in ("press", "release", "toggle"):
            return f"error: unknown command {command!r}; use press, release, toggle or status"
        self._commands.put((command, None))
        return f"ok {command}"

    @property
    def phase(self) -> Phase:
        return self._phase

    def join_turn(self, timeout_s: float) -> None:
        """Wait (bounded) for a turn still running after :meth:`run` returned."""
        thread = self._turn_thread
        if thread is not None:
            thread.join(timeout_s)

    # ---- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info("listening (mode %s)", self.mode)
        self._set_phase(self._phase)
        try:
            while not stop.is_set():
                try:
                    self._tick(stop)
                except Exception:  # a bug in one frame's handling must not end the assistant
                    log.exception("the audio loop hit an error; listening again")
                    self.segmenter.reset()
                    self._drop_spec()
                    stop.wait(0.1)
        finally:
            if self._reply is not None:
                self._reply.cancel()
            self._stt_pool.shutdown(wait=False, cancel_futures=True)

    def _tick(self, stop: threading.Event) -> None:
        self._drain_commands()
        if self.watchdog is not None:
            self.watchdog.watchdog()
        try:
            chunk = self.source.read(0.1)
        except DeviceError as e:
            self._recover(str(e), stop)
            return
        now = self.clock()
        if chunk is None:
            if now - self._last_frame_s > self.config.audio.stall_timeout_s:
                self._recover("no audio frames for %.1f s" % (now - self._last_frame_s), stop)
            self._check_timers(now)
            return
        self._last_frame_s = now
        self._loss_announced = False
        self._on_chunk(chunk)
        self._check_timers(now)

    def _recover(self, why: str, stop: threading.Event) -> None:
        """Reopen the microphone with backoff until it works again or we are stopped."""
        log.warning("microphone lost (%s); reopening", why)
        if not self._loss_announced:  # once per outage, not at every stall timeout
            self._loss_announced = True
            self.turns.play_earcon("error")
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
            self._last_frame_s = self.clock()
            self.segmenter.reset()
            return

    def _drain_commands(self) -> None:
        while True:
            try:
                command, payload = self._commands.get_nowait()
            except queue.Empty:
                return
            if command == "phase":
                assert isinstance(payload, tuple)
                if payload[0] == self._generation:
                    self._set_phase(Phase(payload[1]))
            elif command == "turn-done":
                assert isinstance(payload, int)
                self._turn_done(payload)
            elif command == "press":
                self._on_press()
            elif command == "release":
                self._on_release()
            elif command == "toggle":
                if self.mode == "ptt-hold" and self._held:
                    self._on_release()
                else:
                    self._on_press()

    # ---- audio ------------------------------------------------------------------------------
    def _on_chunk(self, chunk: AudioChunk) -> None:
        if chunk.timestamp_s < self._listen_from_s:
            return
        if self.status is not None:
            self.status.level(rms_dbfs(chunk.pcm))
        if self._phase is Phase.IDLE:
            self._pre_roll.append(chunk)
            return
        if self._phase is Phase.SPEAKING and self.config.turn.barge_in and self.mode == "vad":
            self._handle(self.segmenter.push(chunk))
            return
        if self._phase is not Phase.LISTENING:
            return
        if self._pressed_at_s is not None and self.mode == "ptt-hold":
            ignore_until = self._pressed_at_s + self.config.input.click_ignore_ms / 1000
            if chunk.timestamp_s < ignore_until:  # the key click: keep time, drop the sound
                chunk = AudioChunk(bytes(len(chunk.pcm)), chunk.rate, timestamp_s=chunk.timestamp_s)
        self._handle(self.segmenter.push(chunk))

    def _handle(self, events: list[SegmenterEvent]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                if self._phase is Phase.SPEAKING:  # voice barge-in
                    log.info("barge-in by voice")
                    self._barge_in()
                self._drop_spec()
            elif isinstance(event, SpeechPaused):
                if self.mode != "ptt-hold":
                    self._speculate(event.utterance)
            elif isinstance(event, SpeechResumed):
                self._drop_spec()
            elif isinstance(event, UtteranceEnded):
                self._start_turn(event.utterance, event.reason)

    def _speculate(self, utterance: Utterance) -> None:
        self._drop_spec()
        future = self._stt_pool.submit(self.turns.stt.transcribe, utterance)
        self._spec = _Speculation(utterance, future)

    def _drop_spec(self) -> None:
        """Forget the speculative transcript; if it has not started, it never will."""
        if self._spec is not None:
            self._spec.future.cancel()
            self._spec = None

    def _check_timers(self, now: float) -> None:
        if self._release_at_s is not None and now >= self._release_at_s:
            self._release_at_s = None
            self._finish("forced")
            return
        spec = self._spec
        if (
            spec is None
            or self._phase is not Phase.LISTENING
            or not self.config.turn.smart_endpoint
            or not spec.future.done()
            or now - spec.utterance.end_s < self.config.turn.quick_hangover_ms / 1000
        ):
            return
        if spec.future.cancelled() or spec.future.exception() is not None:
            return  # the turn will transcribe the utterance itself when it ends
        transcript = spec.future.result()
        if transcript.text and looks_complete(transcript.text):
            log.debug("complete sentence after a short pause: ending the turn early")
            self._finish("forced")

    def _finish(self, reason: str) -> None:
        ended = self.segmenter.finish()
        self._held = False
        if ended is not None:
            self._start_turn(ended.utterance, reason)
        elif self.mode != "vad":
            self._set_phase(Phase.IDLE)

    # ---- push-to-talk -----------------------------------------------------------------------
    def _on_press(self) -> None:
        now = self.clock()
        if self._phase in (Phase.TRANSCRIBING, Phase.THINKING, Phase.SPEAKING):
            log.info("barge-in by key")
            self._barge_in()
        self._release_at_s = None
        if self.mode == "ptt-toggle" and self._phase is Phase.LISTENING and self._held:
            self._finish("forced")
            return
        self._held = True
        self._pressed_at_s = now
        self._listen_from_s = 0.0
        self.segmenter.reset()
        self._set_phase(Phase.LISTENING)
        if self.mode == "ptt-hold":
            self.segmenter.start(hold=True)
        pre_roll = list(self._pre_roll)
        self._pre_roll.clear()
        for chunk in pre_roll:
            self._handle(self.segmenter.push(chunk))
        self.turns.play_earcon("listening")

    def _on_release(self) -> None:
        if self.mode != "ptt-hold" or not self._held:
            return
        self._release_at_s = self.clock() + self.config.input.release_grace_ms / 1000

    def _barge_in(self) -> None:
        with self._turn_lock:
            self._generation += 1
            reply, self._reply = self._reply, None
            self._turn_cancelled.set()
        if reply is not None:
            reply.cancel()
        self._drop_spec()
        self._set_phase(Phase.LISTENING if self.mode == "vad" else Phase.IDLE)

    # ---- turns ------------------------------------------------------------------------------
    def _start_turn(self, utterance: Utterance, reason: str) -> None:
        spec = self._spec
        self._spec = None
        speculative = spec.future if spec is not None and not spec.future.cancelled() else None
        self._held = False
        self._pressed_at_s = None
        log.debug("utterance ended (%s): %.2f s of audio", reason, utterance.duration_s)
        self._set_phase(Phase.TRANSCRIBING)
        generation = self._generation
        ended_s = self.clock()
        cancelled = self._turn_cancelled = threading.Event()

        def work() -> None:
            report: TurnReport | None = None
            try:
                report = self.turns.run(
                    utterance,
                    speculative=speculative,
                    ended_s=ended_s,
                    cancelled=cancelled,
                    on_phase=lambda p: self._worker_phase(generation, p),
                    on_reply=lambda r: self._worker_reply(generation, r),
                )
            except DeviceError as e:  # the speaker died mid-reply: reopened on the next sound
                log.warning("turn cut short: %s", e)
            except Exception:
                log.exception("turn failed")
            finally:
                try:
                    if report is not None:
                        self.reports.append(report)
                        if self.on_turn is not None:
                            self.on_turn(report)
                    if self.mode == "vad" and generation == self._generation:
                        # The cue plays before the microphone opens: never heard as speech.
                        self.turns.play_earcon("listening")
                        self.turns.speaker.sink.wait(5.0)
                except Exception:
                    log.exception("finishing the turn failed")
                finally:  # without turn-done the loop would never listen again
                    self._commands.put(("turn-done", generation))

        self._turn_thread = threading.Thread(target=work, name="turn", daemon=True)
        self._turn_thread.start()

    def _worker_phase(self, generation: int, phase: str) -> None:
        self._commands.put(("phase", (generation, phase)))

    def _worker_reply(self, generation: int, reply: Reply) -> None:
        with self._turn_lock:  # against a barge-in between the check and the assignment
            current = generation == self._generation
            if current:
                self._reply = reply
        if not current:
            reply.cancel()

    def _turn_done(self, generation: int) -> None:
        if generation != self._generation:
            return  # barged in: the phase already moved on
        self._reply = None
        self._listen_from_s = self.clock() + self.config.turn.cooldown_ms / 1000
        self.source.drain()
        self.segmenter.reset()
        self._pre_roll.clear()
        self._set_phase(Phase.LISTENING if self.mode == "vad" else Phase.IDLE)

    def _set_phase(self, phase: Phase) -> None:
        if phase is not self._phase:
            log.debug("phase: %s -> %s", self._phase.value, phase.value)
        self._phase = phase
        if self.status is not None:
            self.status.phase(phase.value)
