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
GROUPED: dict[str, list[Step]] = {
    "calls of one kind are told as one line when the first is due": [
        *[("started", read, Lines(arm=read[0])) for read in READS],
        ("due", ("r0",), Lines(say=("Reading four files.",))),
        *[("due", (read[0],), Lines()) for read in READS[1:]],
        *[("finished", (read[0],), Lines()) for read in READS],
    ],
    "a call of another kind between them parts them": [
        ("started", READS[0], Lines(arm="r0")),
        ("started", READS[1], Lines(arm="r1")),
        ("started", ("l", LS, "LS"), Lines(arm="l")),
        ("started", READS[2], Lines(arm="r2")),
        ("due", ("r0",), Lines(say=("Reading two files.",))),
        ("due", ("l",), Lines(say=(LS,))),
        ("due", ("r2",), Lines(say=(READS[2][1],))),  # alone: said as today
    ],
    "text from the agent tells them as one line too": [
        *[("started", read, Lines(arm=read[0])) for read in READS[:3]],
        ("flush", (), Lines(say=("Reading three files.",))),
    ],
    "a question tells the calls before it as one line": [
        *[("started", read, Lines(arm=read[0])) for read in READS[:2]],
        ("started", ("b", BASH, "Bash"), Lines(arm="b")),
        ("asked", ("b",), Lines(say=("Reading two files.",))),
    ],
    "a line after one that has begun to play is told": [
        ("started", READS[0], Lines(arm="r0")),
        ("due", ("r0",), Lines(say=(READS[0][1],))),
        ("started", READS[1], Lines(arm="r1")),
        ("due", ("r1",), Lines(say=(READS[1][1],))),
    ],
}


@pytest.mark.parametrize("steps", GROUPED.values(), ids=GROUPED.keys())
def test_calls_of_one_kind_told_together_are_one_line(steps: list[Step]) -> None:
    lines = ToolLines()
    for i, (event, args, expected) in enumerate(steps):
        assert getattr(lines, event)(*args) == expected, (i, event, args)


def test_a_line_like_the_one_before_is_not_told_while_that_one_waits_to_play() -> None:
    waiting = [True]
    lines = ToolLines(begun=lambda: not waiting[0])
    assert lines.started(*READS[0]) == Lines(arm="r0")
    assert lines.due("r0") == Lines(say=(READS[0][1],))  # the first is told
    assert lines.started(*READS[1]) == Lines(arm="r1")  # (its block came a moment later)
    assert lines.due("r1") == Lines()  # "Reading m0.py." has not begun: nothing to add
    assert lines.started("l", LS, "LS") == Lines(arm="l")
    assert lines.due("l") == Lines(say=(LS,))  # another kind of thing is told
    waiting[0] = False
    assert lines.started(*READS[2]) == Lines(arm="r2")
    assert lines.due("r2") == Lines(say=(READS[2][1],))
    waiting[0] = True
    assert lines.flush() == Lines()  # (r2's line was told; nothing left)
    assert lines.started(*READS[3]) == Lines(arm="r3")
    assert lines.due("r3") == Lines(say=(READS[3][1],))  # the agent wrote in between


@pytest.mark.parametrize("steps", TABLES.values(), ids=TABLES.keys())
def test_tool_lines(steps: list[Step]) -> None:
    lines = ToolLines()
    for i, (event, args, expected) in enumerate(steps):
        assert getattr(lines, event)(*args) == expected, (i, event, args)
