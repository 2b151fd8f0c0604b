"""voice.tool_lines: when a tool line is said, as tables of events and what each returns."""

from __future__ import annotations

import pytest

from voice.tool_lines import Lines, ToolLines

READ, BASH, LS = "Reading notes.txt.", "Create b.txt.", "Listing files."

# (event, arguments) -> what it returns; "due" is the timer armed for that tool running out.
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
        ("due", ("a",), Lines()),  # a timer that ran out anyway says nothing again
    ],
    "a tool asked about is never told": [
        ("started", ("a", BASH), Lines(arm="a")),
        ("asked", ("a",), Lines()),
        ("due", ("a",), Lines()),
        ("finished", ("a",), Lines()),
    ],
    # The real CLI, both calls in one message: each is asked about as its block ends.
    "two calls, each asked about": [
        ("started", ("a", BASH), Lines(arm="a")),
        ("asked", ("a",), Lines()),
        ("started", ("b", BASH), Lines()),  # waits: the call before it is open
        ("asked", ("b",), Lines()),
        ("finished", ("a",), Lines()),
        ("finished", ("b",), Lines()),
    ],
    # What the old worker said: the second call's event told the first, then it was asked.
    "two calls made before the first is asked about": [
        ("started", ("a", BASH), Lines(arm="a")),
        ("started", ("b", LS), Lines()),
        ("asked", ("a",), Lines()),
        ("due", ("a",), Lines()),
        ("finished", ("a",), Lines(arm="b")),  # now the second one's moment
        ("due", ("b",), Lines(say=(LS,))),
        ("finished", ("b",), Lines()),
    ],
    "a question about a later call tells the earlier ones first": [
        ("started", ("a", READ), Lines(arm="a")),
        ("started", ("b", BASH), Lines()),
        ("asked", ("b",), Lines(say=(READ,))),
        ("due", ("a",), Lines()),
        ("finished", ("a",), Lines()),
        ("finished", ("b",), Lines()),
    ],
    "a question that names no call withdraws the first untold line": [
        ("started", ("a", READ), Lines(arm="a")),
        ("due", ("a",), Lines(say=(READ,))),
        ("started", ("b", BASH), Lines()),
        ("asked", ("",), Lines()),
        ("finished", ("a",), Lines()),  # b was asked about: nothing to arm
        ("finished", ("b",), Lines()),
    ],
    "text from the agent tells every line not yet told, in order": [
        ("started", ("a", READ), Lines(arm="a")),
        ("started", ("b", LS), Lines()),
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
