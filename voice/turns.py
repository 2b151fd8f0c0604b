"""One agent turn on its own thread: what the agent does becomes speech, its questions are asked.

The turn-taking machine decides *when* (send, release, stop, interrupt, answer); a
:class:`TurnWorker` does the work of one turn and reports back through ``post``: the reply
began to play, fell silent while a tool runs, the agent asked something, the agent finished,
the reply played out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from core.agent_events import (
    AgentEvent,
    ApiRetry,
    ConversationLost,
    Decision,
    EventCallback,
    PermissionRequest,
    StreamRestarted,
    TextDelta,
    TextDone,
    ToolResult,
    ToolUse,
    TurnControl,
)
from core.claude import NOBODY_ANSWERS
from core.conversation import TurnOutcome
from core.errors import (
    AgentError,
    AgentLoginError,
    AgentMissing,
    AgentTimeout,
    AgentUnavailable,
    AssistantError,
    StoreError,
)
from voice import narration
from voice.earcons import EarconName
from voice.speech_out import Reply, ReplySpeaker
from voice.tool_lines import Lines, ToolLines
from voice.turn_events import (
    AgentFinished,
    Event,
    Outcome,
    PermissionAsked,
    PermissionSettled,
    ReplyDone,
    ReplyIdle,
    ReplyPlaying,
)

log = logging.getLogger(__name__)

QUESTION_SPOKEN_TIMEOUT_S = 60.0
# Claude asks for permission right after the tool call; a tool line waits this long so the
# question ("Claude wants to create made.txt. Allow?") is not preceded by the same words.
TOOL_LINE_DELAY_S = 0.3


class Conversation(Protocol):
    """What the voice side needs from the core (``core.Core`` satisfies it)."""

    def run_turn(
        self,
        room_id: str,
        text: str,
        *,
        on_event: EventCallback | None = None,
        control: TurnControl | None = None,
        revises: bool = False,
    ) -> TurnOutcome: ...


@dataclass(frozen=True)
class TurnSettings:
    room: str = "desk"
    agent_name: str = "The agent"  # how questions name it: "Claude wants to run npm test."
    tools: Literal["speak", "earcon", "off"] = "speak"
    progress_s: float = 20.0  # a short line after this long without speech (0: never)
    speak_errors: bool = True
    # False: nobody is there to answer (a recording): the agent's questions are refused
    # unasked, and only the turn's closing note says what it was not allowed to do.
    questions: bool = True


@dataclass
class TurnReport:
    """One turn's words and timings (monotonic seconds; ``speech_end_s``: the user stopped)."""

    turn: int
    transcript: str
    speech_end_s: float
    sent_s: float
    reply: str = ""
    outcome: Outcome | None = None
    error: str | None = None
    speech_error: str | None = None  # the reply could not be spoken (the voice failed)
    agent_first_text_s: float | None = None
    agent_done_s: float | None = None
    released_s: float | None = None  # the turn-taking machine let the reply play
    first_audio_s: float | None = None
    spoken: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said after the reply, not the agent's

    def summary(self) -> str:
        # A recording is read faster than it plays: its clock runs ahead of the wall clock,
        # so its times are told from the moment the turn was sent instead.
        live = self.speech_end_s <= self.sent_s
        origin = self.speech_end_s if live else self.sent_s

        def rel(t: float | None) -> str:
            return "-" if t is None else f"{t - origin:+.2f}s"

        sent = f"sent {rel(self.sent_s)}, " if live else "from sending: "
        return (
            f"{sent}agent first text {rel(self.agent_first_text_s)}, "
            f"agent done {rel(self.agent_done_s)}, released {rel(self.released_s)}, "
            f"first audio {rel(self.first_audio_s)}"
        )


# What the user hears for each kind of error, the first that matches.
_SPOKEN_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (AgentTimeout, "Sorry, the agent took too long and was stopped."),
    (StoreError, "Sorry, I could not save this conversation."),
    (AgentLoginError, "Sorry, the agent's login was refused. Log in again or check its API key."),
    (AgentUnavailable, "Sorry, the agent's service is not answering. Try again in a while."),
    (AssistantError, "Sorry, the agent failed. The details are in the log."),
)


def spoken_error(error: BaseException) -> str:
    """One short sentence for the user, without ids or paths; the log keeps the detail."""
    if isinstance(error, AgentMissing):
        return error.spoken
    if isinstance(error, AgentError) and "not logged in" in str(error).lower():
        return "Sorry, the agent is not logged in."  # the one failure a user fixes at once
    return next(
        (said for kind, said in _SPOKEN_ERRORS if isinstance(error, kind)),
        "Sorry, something went wrong. The details are in the log.",
    )


class TurnWorker:
    def __init__(
        self,
        turn: int,
        text: str,
        *,
        revises: bool,
        speech_end_s: float,
        conversation: Conversation,
        speaker: ReplySpeaker,
        settings: TurnSettings,
        post: Callable[[Event], None],
        play_earcon: Callable[[EarconName], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.turn = turn
        self.text = text
        self.revises = revises
        self._conversation = conversation
        self._settings = settings
        self._post = post
        self._play_earcon = play_earcon
        self._clock = clock
        self.control = TurnControl()
        self._speaker = speaker
        self.reply = self._begin_reply(held=True)
        self._silenced: list[Reply] = []  # replies the user silenced before a question
        self.report = TurnReport(turn, text, speech_end_s, clock())
        self._last_words_s = clock()
        self._tool: str | None = None  # what a running tool is doing, for progress lines
        self._asking: set[str] = set()  # questions put to the user: the agent is waiting
        self._retried = False  # the user was told the agent's service is not answering
        self._retrying_now = False  # ... and it has not answered since
        self._tool_lines = ToolLines()
        self._tool_timers: dict[str, threading.Timer] = {}
        self._tool_lock = threading.Lock()
        self._done = threading.Event()
        self._streamed = False  # the agent's text came as it wrote it
        self._thread = threading.Thread(target=self._run, name=f"turn-{turn}", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if self._settings.progress_s > 0:
            threading.Thread(
                target=self._progress, name=f"turn-{self.turn}-progress", daemon=True
            ).start()

    @property
    def agent_over(self) -> bool:
        """The agent's run ended (set before its error earcon plays, before the loop hears)."""
        return self._done.is_set()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def release(self) -> None:
        """The user has finished: the reply may be heard."""
        if self.report.released_s is None:
            self.report.released_s = self._clock()
        self.reply.release()

    def _begin_reply(self, *, held: bool) -> Reply:
        turn, post, clock = self.turn, self._post, self._clock
        return self._speaker.begin(
            held=held,
            on_playing=lambda: post(ReplyPlaying(turn, clock())),
            on_idle=lambda: post(ReplyIdle(turn)),
        )

    def answer(self, request_id: str, decision: Decision, message: str) -> None:
        self.control.answer(request_id, decision, message)
        self._asking.discard(request_id)
        self._spoke()  # the wait for progress lines starts again
        self._post(PermissionSettled(self.turn, request_id))

    # ---- the turn ------------------------------------------------------------------------------
    def _run(self) -> None:
        outcome: Outcome = "failed"
        try:
            try:
                result = self._conversation.run_turn(
                    self._settings.room,
                    self.text,
                    on_event=self._on_event,
                    control=self.control,
                    revises=self.revises,
                )
            finally:
                self._tool_lines_over()  # no tool line after the closing words
            outcome = "interrupted" if result.interrupted else "answered"
            self.report.reply = result.reply
            if not self._streamed and not result.interrupted:
                # An agent that prints its reply only at the end (--output-format json)
                self.reply.say(
                    result.reply.strip() or f"{self._settings.agent_name} gave no reply."
                )
            if result.denials and not result.interrupted:
                refused = narration.refusals(self._settings.agent_name, result.denials)
                log.info("refused: %s", refused)
                self._note(refused)
            if not result.saved:  # the core logged the detail; the user hears one sentence
                self._note("I could not save this conversation.")
        except Exception as e:  # whatever the agent did, the loop goes on and says so
            log.warning("agent failed: %s", e, exc_info=not isinstance(e, AssistantError))
            self.report.error = str(e)
            self.reply.drop_unfinished()  # never "Let me think abo. Sorry, ..."
            if not self.reply.cancelled:
                self._play_earcon("error")
                if self._settings.speak_errors:
                    self.reply.say(spoken_error(e))
        finally:
            self._done.set()
            self.report.outcome = outcome
            self.report.agent_done_s = self._clock()
            self._post(AgentFinished(self.turn, outcome))
            try:
                self.reply.finish()
                self.reply.wait(timeout_s=600)
            except Exception:  # the loop must hear ReplyDone whatever the speaker did
                log.exception("the reply failed")
            self._heard()
            self._post(ReplyDone(self.turn))

    def _heard(self) -> None:
        """What of the turn's replies was heard, in its report and the log."""
        replies = [*self._silenced, self.reply]
        self.report.first_audio_s = next(
            (r.first_audio_s for r in replies if r.first_audio_s is not None), None
        )
        self.report.spoken = [sentence for r in replies for sentence in r.spoken]
        failed = next((r.error for r in replies if r.error is not None), None)
        if failed is not None:
            self.report.speech_error = str(failed)
            if self.report.error is None:  # (an agent's error has had its earcon)
                with contextlib.suppress(Exception):  # ReplyDone must still come
                    self._play_earcon("error")  # the words cannot be said; the sound can
        text = self.report.reply or " ".join(self.report.spoken) or "(none)"
        if self.reply.cancelled:  # the agent's whole reply, but not all of it was heard
            text += f" [stopped: {len(self.report.spoken)} sentence(s) begun]"
        log.info("reply: %s", text)
        log.info("turn timings: %s", self.report.summary())

    def _on_event(self, event: AgentEvent) -> None:
        if isinstance(event, TextDelta | ToolUse | PermissionRequest):
            self._retrying_now = False  # its service answers again
        if isinstance(event, TextDelta | ToolResult):
            self._asking.clear()  # settled (a timeout of the agent's own, or withdrawn)
        if isinstance(event, TextDelta):
            self._tool_lines_now(ToolLines.flush)  # the agent goes on: its tools were told
            self._streamed = True
            if self.report.agent_first_text_s is None:
                self.report.agent_first_text_s = self._clock()
            self._spoke()
            self.reply.feed(event.text)
        elif isinstance(event, TextDone):
            self._tool_lines_now(ToolLines.flush)
            self.reply.flush()  # the sentence before a tool call is heard before the tool runs
        elif isinstance(event, ToolUse):
            self._tool_started(event)
        elif isinstance(event, ToolResult):
            self._tool_lines_now(lambda lines: lines.finished(event.tool_use_id))
        elif isinstance(event, PermissionRequest):
            self._ask(event)
        elif isinstance(event, ApiRetry):
            self._retrying(event)
        elif isinstance(event, StreamRestarted):
            self._spoke()
            self.reply.restart(event.text)
        elif isinstance(event, ConversationLost):
            line = narration.conversation_lost(self._settings.agent_name)
            log.info("conversation lost: %s", line)
            self._spoke()
            self.reply.say(line)

    def _note(self, line: str) -> None:
        """A line of the assistant's own after the reply (``ask`` prints them too)."""
        self.report.notes.append(line)
        self.reply.say(line)

    def _retrying(self, event: ApiRetry) -> None:
        """Said once a turn: minutes of retries are otherwise only "Still working."."""
        if event.refused_login:  # (given up, and told)
            return
        self._retrying_now = True
        # A retried call writes its text from the start: the cut-off sentence is not finished
        # by what comes next (it would be "The capital of FThe capital of France ...").
        self.reply.drop_unfinished()
        if self._retried:
            return
        self._retried = True
        line = narration.retrying(self._settings.agent_name, event.status)
        log.info("retrying: %s", line)
        self._spoke()
        self.reply.say(line)

    def _tool_started(self, event: ToolUse) -> None:
        line = narration.tool_line(event.name, event.input)
        self._tool = line
        log.info("tool: %s", line)
        if self._settings.tools == "speak":
            self._spoke()
            self._tool_lines_now(lambda lines: lines.started(event.tool_use_id, line, event.name))
        elif self._settings.tools == "earcon":
            self._play_earcon("thinking")

    def _tool_lines_now(self, step: Callable[[ToolLines], Lines]) -> None:
        """One step of :class:`ToolLines`, carried out. ``say`` only queues (it never calls
        back), so the lock may be held across it."""
        with self._tool_lock:
            if self._done.is_set():
                return  # the turn is over: a line now would follow its last words
            lines = step(self._tool_lines)
            if lines.arm is not None:
                key = lines.arm
                timer = threading.Timer(
                    TOOL_LINE_DELAY_S, self._tool_lines_now, (lambda t: t.due(key),)
                )
                timer.daemon = True
                self._tool_timers[key] = timer
                timer.start()
            for line in lines.say:
                self.reply.say(line)

    def _tool_lines_over(self) -> None:
        """The turn ended: lines still waiting are dropped (the tools are over), timers too."""
        with self._tool_lock:
            self._done.set()
            for timer in self._tool_timers.values():
                timer.cancel()
            self._tool_timers.clear()

    def _ask(self, request: PermissionRequest) -> None:
        self._tool_lines_now(lambda lines: lines.asked(request.tool_use_id))  # it says what
        if not self._settings.questions:
            log.info("refused unasked: %s", request.tool_name)
            self.control.answer(request.request_id, "deny", NOBODY_ANSWERS)
            return
        question = narration.question(self._settings.agent_name, request.tool_name, request.input)
        log.info("asking: %s", question)
        if self.reply.cancelled and not self.control.interrupted:
            # The user silenced the reply and the agent went on: its question must be heard,
            # and what it says once answered (the turn was released before it was silenced).
            self._silenced.append(self.reply)
            self.reply = self._begin_reply(held=False)
        self._spoke()
        self.reply.say(question)
        # Listen for the answer only once the question has been heard (half-duplex).
        self.reply.wait_quiet(QUESTION_SPOKEN_TIMEOUT_S)
        log.info("waiting for an answer")
        self._asking.add(request.request_id)
        self._spoke()
        self._post(PermissionAsked(self.turn, request.request_id))

    # ---- progress lines ------------------------------------------------------------------------
    def _spoke(self) -> None:
        self._last_words_s = self._clock()

    def _progress(self) -> None:
        every = self._settings.progress_s
        while not self._done.wait(1.0):
            if self._clock() - self._last_words_s < every or self.reply.cancelled:
                continue
            if self._asking:  # nothing runs while the agent waits for an answer
                continue
            self._spoke()
            # The agent may have stopped mid-sentence: the line must not cut it.
            if self._retrying_now:
                self.reply.interject("Still trying.")
            elif self._tool is None:
                self.reply.interject("Still working.")
            else:
                self.reply.interject(f"Still working. {self._tool}")
