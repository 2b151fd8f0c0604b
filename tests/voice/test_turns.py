"""A turn's own lines ("Still working.", "... is not answering.") among the agent's streamed
reply: agent events go into a :class:`TurnWorker`, the sentences handed to the voice come out.
No line cuts a sentence, and nothing of the reply is lost or moved."""

from __future__ import annotations

import pytest

from core.agent_events import (
    AgentEvent,
    ApiRetry,
    EventCallback,
    StreamRestarted,
    TextDelta,
    TextDone,
    ToolResult,
    ToolUse,
    TurnControl,
)
from core.conversation import TurnOutcome
from core.errors import AgentTimeout
from voice.speech_out import ReplySpeaker
from voice.turn_events import Event, ReplyDone
from voice.turns import TurnSettings, TurnWorker

from .fakes import FakeSink, FakeTts, wait_until

STALL = "stall"  # the agent stops writing until the progress line was handed to the voice
TIME_OUT = "time out"  # ... and then runs out of time
HEARD = "heard: "  # ... the agent waits until this sentence was handed to the voice
PROGRESS_S = 20.0


class Clock:
    """Moves only when the agent stalls: the progress line comes then and only then."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class StreamingAgent:
    """Emits a script of agent events; at :data:`STALL` it waits out ``PROGRESS_S``."""

    def __init__(self, script: list[AgentEvent | str], clock: Clock, tts: FakeTts) -> None:
        self._script, self._clock, self._tts = script, clock, tts

    def run_turn(
        self,
        room_id: str,
        text: str,
        *,
        on_event: EventCallback | None = None,
        control: TurnControl | None = None,
        revises: bool = False,
    ) -> TurnOutcome:
        assert on_event is not None
        written = ""
        for step in self._script:
            if step == TIME_OUT:
                raise AgentTimeout("the agent ran past its timeout")
            if step == STALL:
                lines = self._tts.texts.count("Still working.")
                self._clock.now += PROGRESS_S
                assert wait_until(lambda: self._tts.texts.count("Still working.") > lines)
            elif isinstance(step, AgentEvent):
                written += step.text if isinstance(step, TextDelta) else ""
                on_event(step)
            elif step.startswith(HEARD):
                assert wait_until(lambda: step.removeprefix(HEARD) in self._tts.texts), step
        return TurnOutcome(written)


def spoken(script: list[AgentEvent | str], *, held: bool = False) -> list[str]:
    """The sentences the turn handed to the voice, in order; ``held``: the reply is released
    only once the agent is done (the user was still talking)."""
    clock, tts = Clock(), FakeTts()
    posted: list[Event] = []
    worker = TurnWorker(
        1,
        "What is the capital of France?",
        revises=False,
        speech_end_s=0.0,
        conversation=StreamingAgent(script, clock, tts),
        speaker=ReplySpeaker(tts, FakeSink(), first_chunk_max_chars=0),
        settings=TurnSettings(agent_name="Claude", progress_s=PROGRESS_S),
        post=posted.append,
        play_earcon=lambda _name: None,
        clock=clock,
    )
    worker.start()
    if held:
        assert wait_until(lambda: worker.agent_over)
    worker.release()
    assert wait_until(lambda: any(isinstance(e, ReplyDone) for e in posted))
    return tts.texts


RETRYING = ["Claude's service is not answering.", "Still trying."]


@pytest.mark.parametrize(
    ("script", "said"),
    [
        pytest.param(
            [TextDelta("Paris is big. The capital of F"), STALL, TextDelta("rance is Paris.")],
            ["Paris is big.", "Still working.", "The capital of France is Paris."],
            id="progress mid-word",
        ),
        pytest.param(
            [
                TextDelta("Paris is big. The capital of F"),
                ApiRetry(1, 10, 529),
                TextDelta("The capital of France is Paris."),  # the call again, from its start
            ],
            ["Paris is big.", *RETRYING, "The capital of France is Paris."],
            id="retry mid-word",
        ),
        pytest.param(
            [
                TextDelta("Paris is big. The capital of F"),
                ApiRetry(1, 10, 529),
                TextDelta("The capital of Fr"),
                ApiRetry(2, 10, 529),  # (said once a turn, but each drops the cut-off words)
                TextDelta("The capital of France is Paris."),
            ],
            ["Paris is big.", *RETRYING, "The capital of France is Paris."],
            id="retried twice mid-word",
        ),
        pytest.param(
            [
                TextDelta("Paris is big. The capital of F"),
                # The stream broke off and its block came whole (Claude Code says nothing).
                StreamRestarted(
                    "Paris is big. The capital of F", "Paris is big. The capital of France."
                ),
                TextDone(),
            ],
            ["Paris is big.", "The capital of France."],
            id="stream restarted mid-word",
        ),
        pytest.param(
            [
                TextDelta("Use e.g. the fo"),  # not a sentence's end: nothing was said
                StreamRestarted("Use e.g. the fo", "Use e.g. the following command."),
                TextDone(),
            ],
            ["Use for example the following command."],
            id="stream restarted after an abbreviation",
        ),
        pytest.param(
            [
                TextDelta("The delay is 3."),  # (its stop waits for what follows)
                StreamRestarted("The delay is 3.", "The delay is 3.5 seconds."),
                TextDone(),
            ],
            ["The delay is 3.5 seconds."],
            id="stream restarted after a decimal point",
        ),
        pytest.param(
            [
                TextDelta("Paris is big. The capita"),
                # Asked again, the model says something else: said from where it differs.
                StreamRestarted("Paris is big. The capita", "Paris is old. It is big."),
                TextDone(),
            ],
            ["Paris is big.", "Paris is old.", "It is big."],
            id="stream restarted, said anew",
        ),
        pytest.param(
            [
                TextDelta("Paris is big. It is old."),
                STALL,  # the stall before the break: "It is old." is said before the line
                StreamRestarted(
                    "Paris is big. It is old.", "Paris is big. It is old. The capital is Paris."
                ),
                TextDone(),
            ],
            ["Paris is big.", "It is old.", "Still working.", "The capital is Paris."],
            id="stream restarted after a progress line",
        ),
        pytest.param(
            [
                TextDelta("Paris is big. The capi"),
                ApiRetry(1, 10, 529),  # the call that asks again failed once too
                StreamRestarted("Paris is big. The capi", "Paris is big. The capital is Paris."),
                TextDone(),
            ],
            ["Paris is big.", *RETRYING, "The capital is Paris."],
            id="stream restarted after a retry",
        ),
        pytest.param(
            [
                TextDelta("Paris is big. The capi"),
                StreamRestarted("Paris is big. The capi", ""),  # asked again: a tool at once
                TextDone(),
                STALL,
            ],
            ["Paris is big.", "Still working."],
            id="stream restarted with no text",
        ),
        pytest.param(
            [TextDelta("Run this:\n```sh\nmake test."), STALL, TextDelta("\n```\nThen push.")],
            ["Run this.", "Still working.", "Code omitted.", "Then push."],
            id="progress inside a code block",  # the code is not read, and no word is lost
        ),
        pytest.param(
            [TextDelta("Paris is big."), STALL, TextDelta(" It is old.")],
            ["Paris is big.", "Still working.", "It is old."],
            id="progress after a full stop",  # (the sentence waited for the next space)
        ),
        pytest.param(
            [TextDelta("Thinking hard ab"), STALL, TIME_OUT],
            ["Still working.", "Sorry, the agent took too long and was stopped."],
            id="no end comes",  # never "Thinking hard ab. Still working. Sorry, ..."
        ),
    ],
)
def test_a_line_of_the_assistants_own_never_cuts_the_reply(
    script: list[AgentEvent | str], said: list[str]
) -> None:
    assert spoken(script) == said


@pytest.mark.parametrize(
    "results",
    [
        pytest.param([], id="quick reads"),
        pytest.param(["heard: Reading six files."], id="reads that outlast their moment"),
    ],
)
def test_one_messages_calls_of_one_kind_are_said_as_one_line(results: list[str]) -> None:
    # Six reads in one message were six lines, about a second each, before the answer.
    reads = [ToolUse(f"r{n}", "Read", {"file_path": f"/src/m{n}.py"}) for n in range(6)]
    script: list[AgentEvent | str] = [
        TextDelta("I will read the modules."),
        TextDone(),
        *reads,
        *results,  # (their timers end a few milliseconds apart)
        ToolUse("g", "Grep", {"pattern": "compute"}),
        *[ToolResult(read.tool_use_id) for read in reads],
        ToolResult("g"),
        TextDelta("They all use the same pattern."),
    ]
    assert spoken(script) == [
        "I will read the modules.",
        "Reading six files.",
        "Searching the code.",
        "They all use the same pattern.",
    ]


def test_a_tool_line_is_said_while_the_one_before_it_waits_to_be_heard() -> None:
    # A line like the one before it was left out while that one waited to play (here the
    # reply is held; a paused reply or a slow voice too), and no other line took its place:
    # a command running for minutes went unsaid until "Still working.".
    script: list[AgentEvent | str] = [
        ToolUse("a", "Bash", {"command": "git status", "description": "Show git status"}),
        ToolResult("a"),
        ToolUse("b", "Bash", {"command": "npm test", "description": "Run the test suite"}),
        ToolResult("b"),
        TextDelta("All tests pass."),
    ]
    assert spoken(script, held=True) == [
        "Showing git status.",
        "Running the test suite.",
        "All tests pass.",
    ]
