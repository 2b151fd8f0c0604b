"""voice.tool_lines: when a tool line is said, as tables of events and what each returns."""

from __future__ import annotations

import pytest

from voice.tool_lines import Lines, ToolLines

READ, BASH, LS = "Reading notes.txt.", "Create b.txt.", "Listing files."

# (event, arguments) -> what it returns; "due" is the timer armed for that key running out.
Step = tuple[str, tuple[str, ...], Lines]

TABLES: dict[str, list[Step]] = {
    "a tool nobody asks about is told when its moment ends": [
        ("started", ("a", READ), Lines(arm="a")),
        ("due", ("a",), Lines(say=(READ,))),
        ("finished", ("a",), Lines()),
    ],
    "a quick tool is told at its result": [
        ("started", ("a", READ), Lines(arm="a")),
        ("finished", ("a",), Lines(say=(READ,))),
        ("due", ("a",), Lines()),  # its timer ran out anyway: nothing said again
    ],
    "a tool asked about is never told": [
        ("started", ("a", BASH), Lines(arm="a")),
        ("asked", ("a",), Lines()),
        ("due", ("a",), Lines()),
        ("finished", ("a",), Lines()),
    ],
    # The real CLI, both calls in one message: it asks about each as its block ends.
    "two calls, each asked about": [
        ("started", ("a", BASH), Lines(arm="a")),
        ("asked", ("a",), Lines()),
        ("started", ("b", BASH), Lines(arm="b")),
        ("asked", ("b",), Lines()),
        ("due", ("a",), Lines()),
        ("due", ("b",), Lines()),
        ("finished", ("a",), Lines()),
        ("finished", ("b",), Lines()),
    ],
    # Both calls before the first question: the old worker told the first just before it
    # was asked about, and lost the second's line.
    "a later line waits while the user answers": [
        ("started", ("a", BASH), Lines(arm="a")),
        ("started", ("b", LS), Lines(arm="b")),
        ("asked", ("a",), Lines()),
        ("due", ("a",), Lines()),
        ("due", ("b",), Lines()),  # the question about a is open
        ("finished", ("a",), Lines(say=(LS,))),
        ("finished", ("b",), Lines()),
    ],
    "a question about a later call tells the earlier ones first": [
        ("started", ("a", READ), Lines(arm="a")),
        ("started", ("b", BASH), Lines(arm="b")),
        ("asked", ("b",), Lines(say=(READ,))),
        ("due", ("a",), Lines()),
        ("finished", ("a",), Lines()),
        ("due", ("b",), Lines()),
        ("finished", ("b",), Lines()),
    ],
    "calls that run side by side are told in their order": [
        ("started", ("a", READ), Lines(arm="a")),
        ("started", ("b", LS), Lines(arm="b")),
        ("finished", ("b",), Lines()),  # after a's line
        ("due", ("a",), Lines(say=(READ, LS))),
        ("finished", ("a",), Lines()),
    ],
    "a question that names no call withdraws the first untold line": [
        ("started", ("a", READ), Lines(arm="a")),
        ("due", ("a",), Lines(say=(READ,))),
        ("started", ("b", BASH), Lines(arm="b")),
        ("asked", ("",), Lines()),
        ("due", ("b",), Lines()),
        ("finished", ("a",), Lines()),
        ("finished", ("b",), Lines()),
    ],
    "a question before its call": [
        ("asked", ("b",), Lines()),
        ("started", ("a", READ), Lines(arm="a")),
        ("started", ("b", BASH), Lines()),  # already asked about: no moment of its own
        ("due", ("a",), Lines(say=(READ,))),
        ("finished", ("b",), Lines()),
    ],
    "a question about a call never seen (a helper agent's) leaves the lines alone": [
        ("started", ("a", READ), Lines(arm="a")),
        ("asked", ("toolu_sub",), Lines()),
        ("due", ("a",), Lines(say=(READ,))),
    ],
    "calls without ids are each told": [
        ("started", ("", READ), Lines(arm="#1")),
        ("started", ("", LS), Lines(arm="#2")),
        ("due", ("#1",), Lines(say=(READ,))),
        ("finished", ("",), Lines()),
        ("finished", ("",), Lines(say=(LS,))),
    ],
    "text from the agent tells every line not yet told, in order": [
        ("started", ("a", READ), Lines(arm="a")),
        ("started", ("b", LS), Lines(arm="b")),
        ("flush", (), Lines(say=(READ, LS))),
        ("due", ("a",), Lines()),
        ("finished", ("a",), Lines()),
        ("flush", (), Lines()),
    ],
}


# One message reading four files and listing one folder (the tool's name is the kind).
READS = [(f"r{n}", f"Reading m{n}.py.", "Read") for n in range(4)]
TESTS, PUSH = ("a", "Running the tests.", "Bash"), ("b", "Pushing the branch.", "Bash")
GROUPED: dict[str, list[Step]] = {
    # Their timers end a few milliseconds apart, in call order.
    "calls of one kind are told as one line when the last is due": [
        *[("started", read, Lines(arm=read[0])) for read in READS],
        *[("due", (read[0],), Lines()) for read in READS[:-1]],
        ("due", ("r3",), Lines(say=("Reading four files.",))),
        *[("finished", (read[0],), Lines()) for read in READS],
    ],
    "quick calls of one kind are told as one line at the last result": [
        *[("started", read, Lines(arm=read[0])) for read in READS[:3]],
        ("finished", ("r0",), Lines()),
        ("finished", ("r1",), Lines()),
        ("finished", ("r2",), Lines(say=("Reading three files.",))),
    ],
    "a call made while its kind's line waits joins it": [
        ("started", READS[0], Lines(arm="r0")),
        ("started", READS[1], Lines(arm="r1")),
        ("due", ("r0",), Lines()),
        ("started", READS[2], Lines(arm="r2")),  # (its block ended a moment later)
        ("due", ("r1",), Lines()),
        ("due", ("r2",), Lines(say=("Reading three files.",))),
    ],
    "a call of another kind between them parts them": [
        ("started", READS[0], Lines(arm="r0")),
        ("started", READS[1], Lines(arm="r1")),
        ("started", ("l", LS, "LS"), Lines(arm="l")),
        ("started", READS[2], Lines(arm="r2")),
        ("due", ("r0",), Lines()),
        ("due", ("r1",), Lines(say=("Reading two files.",))),  # r2 does not hold them
        ("due", ("l",), Lines(say=(LS,))),
        ("due", ("r2",), Lines(say=(READS[2][1],))),  # alone: said as today
    ],
    # A quick allowed command, then one that asks: the line said before the question was
    # "Running two commands.", counting the command the question was about.
    "a call asked about is not counted in the line of its kind": [
        ("started", TESTS, Lines(arm="a")),
        ("started", PUSH, Lines(arm="b")),
        ("finished", ("a",), Lines()),  # b's moment is not over: it may still be asked
        ("asked", ("b",), Lines(say=(TESTS[1],))),
        ("due", ("a",), Lines()),
        ("due", ("b",), Lines()),
        ("finished", ("b",), Lines()),
    ],
    "a question about the last of a kind tells the ones before it as one line": [
        ("started", TESTS, Lines(arm="a")),
        ("started", ("c", "Running the linter.", "Bash"), Lines(arm="c")),
        ("started", PUSH, Lines(arm="b")),
        ("due", ("a",), Lines()),
        ("due", ("c",), Lines()),
        ("asked", ("b",), Lines(say=("Running two commands.",))),
        ("due", ("b",), Lines()),
    ],
    "a call asked about before it came holds no line back": [
        ("asked", ("b",), Lines()),
        ("started", TESTS, Lines(arm="a")),
        ("started", PUSH, Lines()),
        ("due", ("a",), Lines(say=(TESTS[1],))),
    ],
    # (An agent that names no call in its questions.) The first untold call is one waiting
    # for a later call of its kind: the question is about the later one.
    "a question that names no call withdraws one whose moment is not over": [
        ("started", TESTS, Lines(arm="a")),
        ("started", PUSH, Lines(arm="b")),
        ("due", ("a",), Lines()),
        ("asked", ("",), Lines(say=(TESTS[1],))),
        ("due", ("b",), Lines()),
    ],
    "text from the agent tells them as one line too": [
        *[("started", read, Lines(arm=read[0])) for read in READS[:3]],
        ("due", ("r0",), Lines()),
        ("flush", (), Lines(say=("Reading three files.",))),
    ],
    "a question tells the calls before it as one line": [
        *[("started", read, Lines(arm=read[0])) for read in READS[:2]],
        ("started", ("b", BASH, "Bash"), Lines(arm="b")),
        ("asked", ("b",), Lines(say=("Reading two files.",))),
    ],
    # No line is left out: a list read out before the answer is said as one line, but a
    # call made after its kind's line was told is told too (it may run for minutes).
    "a call of the kind told last is told": [
        ("started", TESTS, Lines(arm="a")),
        ("finished", ("a",), Lines(say=(TESTS[1],))),
        ("started", PUSH, Lines(arm="b")),
        ("due", ("b",), Lines(say=(PUSH[1],))),
    ],
}


@pytest.mark.parametrize("steps", GROUPED.values(), ids=GROUPED.keys())
def test_calls_of_one_kind_told_together_are_one_line(steps: list[Step]) -> None:
    lines = ToolLines()
    for i, (event, args, expected) in enumerate(steps):
        assert getattr(lines, event)(*args) == expected, (i, event, args)


@pytest.mark.parametrize("steps", TABLES.values(), ids=TABLES.keys())
def test_tool_lines(steps: list[Step]) -> None:
    lines = ToolLines()
    for i, (event, args, expected) in enumerate(steps):
        assert getattr(lines, event)(*args) == expected, (i, event, args)
