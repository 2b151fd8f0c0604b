"""One conversational turn: transcript -> agent -> spoken reply, with its timings.

This runs on a worker thread so the audio loop keeps reading the microphone (for barge-in,
push-to-talk and the watchdog) while the agent thinks and the reply plays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from core.errors import AgentError, AgentTimeout, AssistantError, DeviceError
from voice.audio import Utterance
from voice.earcons import EarconName, Earcons
from voice.speech_out import Reply, ReplySpeaker
from voice.stt import SpeechToText, Transcript

log = logging.getLogger(__name__)


class Conversation(Protocol):
    """What the voice side needs from the core (``core.Core`` satisfies it)."""

    def send_message(
        self, room_id: str, text: str, *, on_text: Callable[[str], None] | None = None
    ) -> str: ...


@dataclass
class TurnReport:
    """Timings are monotonic seconds; ``speech_end_s`` is when the user stopped talking."""

    speech_end_s: float
    transcript: str = ""
    reply: str = ""
    error: str | None = None
    dropped: str | None = None
    speculative: bool = False
    ended_s: float | None = None  # when the loop decided the turn was over
    transcript_s: float | None = None
    agent_first_text_s: float | None = None
    agent_done_s: float | None = None
    first_audio_s: float | None = None
    spoken: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def rel(t: float | None) -> str:
            return "-" if t is None else f"{t - self.speech_end_s:+.2f}s"

        return (
            f"endpoint {rel(self.ended_s)}, transcript {rel(self.transcript_s)}"
            f"{' (speculative)' if self.speculative else ''}, "
            f"agent first text {rel(self.agent_first_text_s)}, "
            f"agent done {rel(self.agent_done_s)}, first audio {rel(self.first_audio_s)}"
        )


def spoken_error(error: BaseException) -> str:
    """A short sentence for the user; the full error goes to the log."""
    if isinstance(error, AgentTimeout):
        return "Sorry, the agent took too long and was stopped."
    if not isinstance(error, AssistantError):
        return "Sorry, something went wrong. The details are in the log."
    first = str(error).strip().splitlines()[0] if str(error).strip() else "it failed"
    if len(first) > 160:
        first = first[:157].rsplit(" ", 1)[0] + "..."
    if isinstance(error, AgentError):
        return f"Sorry, the agent failed. {first}"
    return f"Sorry. {first}"


class ThinkingCue:
    """Plays the "thinking" earcon at once and again every ``repeat_s`` until stopped."""

    def __init__(
        self, play: Callable[[], None], repeat_s: float, cancelled: threading.Event
    ) -> None:
        self._play = play
        self._repeat_s = repeat_s
        self._cancelled = cancelled  # the turn's barge-in flag: no tick after it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thinking-cue", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._cancelled.is_set():
            return
        self._play()
        while self._repeat_s > 0 and not self._stop.wait(self._repeat_s):
            if self._cancelled.is_set():
                return
            self._play()

    def stop(self) -> None:
        self._stop.set()


class TurnRunner:
    """Runs one turn end to end; the loop owns phases, this owns the work."""

    def __init__(
        self,
        *,
        stt: SpeechToText,
        speaker: ReplySpeaker,
        conversation: Conversation,
        room: str,
        earcons: Earcons | None = None,
        thinking_repeat_s: float = 4.0,
        speak_errors: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stt = stt
        self.speaker = speaker
        self.conversation = conversation
        self.room = room
        self.earcons = earcons
        self.thinking_repeat_s = thinking_repeat_s
        self.speak_errors = speak_errors
        self.clock = clock

    def transcribe(
        self, utterance: Utterance, speculative: Future[Transcript] | None
    ) -> Transcript:
        if speculative is not None:
            return speculative.result()
        return self.stt.transcribe(utterance)

    def play_earcon(self, name: EarconName) -> None:
        """Best effort: a cue that cannot play (speaker gone) is logged, never raised."""
        if self.earcons is None:
            return
        sound = self.earcons.get(name)
        if sound is None:
            return
        try:
            self.speaker.sink.play(sound, self.earcons.sample_rate)
        except DeviceError as e:
            log.info("no %s earcon: %s", name, e)

    def run(
        self,
        utterance: Utterance,
        *,
        speculative: Future[Transcript] | None = None,
        ended_s: float | None = None,
        cancelled: threading.Event | None = None,
        on_phase: Callable[[str], None] = lambda _phase: None,
        on_reply: Callable[[Reply], None] = lambda _reply: None,
    ) -> TurnReport:
        """``cancelled`` is set on barge-in: from then on nothing is sent, played or spoken."""
        cancelled = cancelled or threading.Event()
        report = TurnReport(
            speech_end_s=utterance.end_s, speculative=speculative is not None, ended_s=ended_s
        )
        transcript = self.transcribe(utterance, speculative)
        report.transcript_s = self.clock()
        if transcript.dropped or not transcript.text.strip():
            report.dropped = transcript.dropped or "empty transcript"
            log.info("nothing to send: %s", report.dropped)
            return report
        report.transcript = transcript.text.strip()
        if cancelled.is_set():
            report.dropped = "interrupted before it reached the agent"
            log.info("not sent (%s): %s", report.dropped, report.transcript)
            return report
        log.info("you said: %s", report.transcript)
        return self.answer(report, cancelled=cancelled, on_phase=on_phase, on_reply=on_reply)

    def answer(
        self,
        report: TurnReport,
        *,
        cancelled: threading.Event,
        on_phase: Callable[[str], None] = lambda _phase: None,
        on_reply: Callable[[Reply], None] = lambda _reply: None,
    ) -> TurnReport:
        """Send ``report.transcript`` to the agent and speak the reply as it streams.

        An agent already working when the user barges in finishes its turn (its reply is
        saved in the conversation, not spoken): killing it could leave its work half done.
        """
        on_phase("thinking")
        cue = ThinkingCue(lambda: self.play_earcon("thinking"), self.thinking_repeat_s, cancelled)
        reply = self.speaker.begin()
        on_reply(reply)

        def on_text(delta: str) -> None:
            if report.agent_first_text_s is None:
                report.agent_first_text_s = self.clock()
                cue.stop()
                on_phase("speaking")
            reply.feed(delta)

        try:
            report.reply = self.conversation.send_message(
                self.room, report.transcript, on_text=on_text
            )
            if report.agent_first_text_s is None:  # an agent that does not stream
                cue.stop()
                on_phase("speaking")
                reply.feed(report.reply)
        except Exception as e:  # the loop goes on whatever the agent did
            cue.stop()
            log.warning("agent failed: %s", e, exc_info=not isinstance(e, AssistantError))
            report.error = str(e)
            reply.cancel()
            reply = self.speaker.begin()
            on_reply(reply)
            if not cancelled.is_set():
                on_phase("speaking")
                self.play_earcon("error")
                if self.speak_errors:
                    reply.feed(spoken_error(e))
        report.agent_done_s = self.clock()
        reply.finish()
        reply.wait(timeout_s=600)
        report.first_audio_s = reply.first_audio_s
        report.spoken = reply.spoken
        cue.stop()
        if not reply.cancelled and not cancelled.is_set() and report.error is None:
            self.play_earcon("done")
        log.info("reply: %s", report.reply or report.error)
        log.info("turn timings: %s", report.summary())
        return report
