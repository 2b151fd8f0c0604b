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


@pytest.mark.parametrize("steps", TABLES.values(), ids=TABLES.keys())
def test_tool_lines(steps: list[Step]) -> None:
    lines = ToolLines()
    for i, (event, args, expected) in enumerate(steps):
        assert getattr(lines, event)(*args) == expected, (i, event, args)
