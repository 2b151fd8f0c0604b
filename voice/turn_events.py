"""What goes into the turn-taking machine, and what comes out of it.

Events are facts (the user started speaking, a transcript is ready, the reply began to play);
actions are orders for the loop (transcribe this audio, send that text, stop the reply). Both
are small frozen records, so a test is a table of events and the actions they must produce.

Times are seconds on the monotonic clock of the audio frames; the machine has no clock of its
own: :class:`Tick` tells it what time it is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from voice.audio import Utterance
from voice.earcons import EarconName
from voice.vad import (
    OnsetUnconfirmed,
    SpeechDropped,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
)


class Phase(enum.StrEnum):
    """What the assistant is doing, as the status line shows it."""

    IDLE = "idle"  # push-to-talk or wake word: waiting to be addressed
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ASKING = "asking"  # waiting for the user's answer to a permission question


Outcome = Literal["answered", "failed", "interrupted"]
Decision = Literal["allow", "deny", "always"]
Purpose = Literal["pause", "request", "probe", "whole"]  # whole: by the decode that goes on


# ---- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """Time passes (sent after every microphone chunk and on every idle read)."""

    now_s: float


@dataclass(frozen=True)
class KeyDown:
    """Push-to-talk pressed (a key, a GPIO button or ``voice-assistant ptt press``)."""

    at_s: float


@dataclass(frozen=True)
class KeyUp:
    at_s: float


@dataclass(frozen=True)
class Command:
    """A control-socket command other than the key: stop, allow, deny or always."""

    name: Literal["stop", "allow", "deny", "always"]


@dataclass(frozen=True)
class WakeWord:
    """The wake word was heard; speech right after it belongs to the request."""

    at_s: float


@dataclass(frozen=True)
class WakeLikely:
    """The wake word may be being said: its model's scores rose at ``at_s``, at the word's
    last sound. Over a reply, the reply pauses then, so it is silent once the word is
    decided (150 ms later); should it not be, the reply goes on."""

    at_s: float


@dataclass(frozen=True)
class HeardOverReply:
    """Whether the user can be heard over the reply: the echo canceller tells a voice from
    the echo (it has learnt the room, or is finding an echo an underrun moved), or
    ``turn.barge_in`` (a headset). Sent when it changes; half-duplex until then."""

    heard: bool


@dataclass(frozen=True)
class TranscriptReady:
    job: int
    text: str  # "" when nothing usable was heard (the guard dropped it)
    looped: bool = False  # Whisper looped, and the text is what was left (voice.stt)
    avg_logprob: float = 0.0  # how sure the decode was (voice.stt.Transcript); 0: unknown


@dataclass(frozen=True)
class VerdictReady:
    """The end-of-turn model's probability that the speaker finished; None if it failed."""

    job: int
    probability: float | None


@dataclass(frozen=True)
class ReplyPlaying:
    """The first sample of the turn's reply reached the speaker: the user heard an answer.

    ``at_s``: when its first chunk went to the speaker (the loop's clock; it sounds the
    output latency later), stamped where it happened: a loop catching up on its audio after
    a stall handles the event later, while the words it hears are older.
    """

    turn: int
    at_s: float | None = None  # None: when it is handled


@dataclass(frozen=True)
class ReplyIdle:
    """Everything fed to the reply so far has played; the agent may still write more."""

    turn: int


@dataclass(frozen=True)
class PermissionAsked:
    """The agent waits for a yes or no; the question has been spoken."""

    turn: int
    request: str


@dataclass(frozen=True)
class PermissionSettled:
    """The agent stopped waiting (answered here, by the key, or it gave up)."""

    turn: int
    request: str


@dataclass(frozen=True)
class AgentFinished:
    """The agent's run ended; ``ReplyDone`` follows once its reply has played out."""

    turn: int
    outcome: Outcome


@dataclass(frozen=True)
class ReplyDone:
    """The turn's reply played to its end (or was stopped)."""

    turn: int


Event = (
    Tick
    | SpeechStarted
    | OnsetUnconfirmed
    | SpeechPaused
    | SpeechResumed
    | UtteranceEnded
    | SpeechDropped
    | KeyDown
    | KeyUp
    | Command
    | WakeWord
    | WakeLikely
    | HeardOverReply
    | TranscriptReady
    | VerdictReady
    | ReplyPlaying
    | ReplyIdle
    | PermissionAsked
    | PermissionSettled
    | AgentFinished
    | ReplyDone
)


# ---- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetPhase:
    phase: Phase


@dataclass(frozen=True)
class Transcribe:
    """Transcribe ``audio``; the answer comes back as ``TranscriptReady(job)``."""

    job: int
    audio: Utterance
    purpose: Purpose


@dataclass(frozen=True)
class Analyze:
    """Ask the end-of-turn model about ``audio`` followed by ``silence_s`` more of silence
    (so it hears the pause as long as its thresholds were measured with); answered by
    ``VerdictReady(job)``."""

    job: int
    audio: Utterance
    silence_s: float


@dataclass(frozen=True)
class EndSegment:
    """End the segmenter's utterance now; its ``UtteranceEnded`` comes straight back."""


@dataclass(frozen=True)
class StartSegment:
    """Start an utterance now (key pressed); ``hold``: only the key ends it."""

    hold: bool


@dataclass(frozen=True)
class Send:
    """Send ``text`` to the agent as turn ``turn``; its reply is held until ``Release``.

    ``revises``: the text replaces the room's previous request, which was cut short.
    """

    turn: int
    text: str
    revises: bool
    speech_end_s: float = 0.0  # when the user stopped talking (for timings)


@dataclass(frozen=True)
class Release:
    """The turn's reply may play now."""

    turn: int


@dataclass(frozen=True)
class StopReply:
    """Silence the turn's reply at once and drop what it has not played. ``heard``: the words
    said over it that stopped it, when that is why."""

    turn: int
    heard: str = ""


@dataclass(frozen=True)
class PauseReply:
    """Hold the turn's reply where it is: someone may be talking over it. A ``StopReply``
    or a ``ResumeReply`` follows. ``renew``: it is paused already, and the user still speaks:
    the pause starts again (a reply and the speaker play on by themselves after
    ``voice.devices.speaker.PAUSE_LIMIT_S`` without one)."""

    turn: int
    renew: bool = False


@dataclass(frozen=True)
class ResumeReply:
    """Go on with the paused reply from where it stopped. ``held``: a voice was confirmed
    over it, but no words were heard, or only ``heard``, a backchannel ("Mm-hmm.").
    ``why``: what else it waited for and what came of it (for the log)."""

    turn: int
    held: bool = False
    heard: str = ""
    why: str = ""


@dataclass(frozen=True)
class Interrupt:
    """Stop the agent's run gracefully (the conversation stays resumable)."""

    turn: int


@dataclass(frozen=True)
class Answer:
    """Answer the agent's permission request."""

    turn: int
    request: str
    decision: Decision
    message: str = ""
    heard: str = field(default="", compare=False)  # the words it was read from, for the log


@dataclass(frozen=True)
class Dropped:
    """Words heard and deliberately not sent, said in the log: no word goes unaccounted for."""

    text: str
    why: str


@dataclass(frozen=True)
class PlayEarcon:
    name: EarconName


@dataclass(frozen=True)
class Say:
    """Speak a short line of the assistant's own (not the agent's reply)."""

    text: str


Action = (
    SetPhase
    | Transcribe
    | Analyze
    | EndSegment
    | StartSegment
    | Send
    | Release
    | StopReply
    | PauseReply
    | ResumeReply
    | Interrupt
    | Answer
    | Dropped
    | PlayEarcon
    | Say
)
