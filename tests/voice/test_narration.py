"""voice.narration: what a tool line says for several calls told together."""

from __future__ import annotations

import pytest

from voice.narration import together


@pytest.mark.parametrize(
    ("name", "lines", "said"),
    [
        ("Read", [f"Reading m{n}.py." for n in range(6)], "Reading six files."),
        ("Read", ["Reading a.py.", "Reading b.py."], "Reading two files."),
        ("Read", [f"Reading m{n}.py." for n in range(24)], "Reading 24 files."),
        ("Bash", ["Running the tests.", "Building the project."], "Running two commands."),
        ("Edit", ["Editing a.py.", "Editing a.py."], "Editing a.py."),  # one file, twice
        ("Read", ["Reading a.py.", "Reading b.py.", "Reading a.py."], "Reading two files."),
        ("Grep", ["Searching the code."] * 3, "Searching the code."),
        ("Read", ["Reading a.py."], "Reading a.py."),
    ],
)
def test_calls_of_one_tool_told_together_are_one_line(
    name: str, lines: list[str], said: str
) -> None:
    assert together(name, lines) == said
