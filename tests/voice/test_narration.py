"""voice.narration: what a tool line says, for one call and for several told together."""

from __future__ import annotations

import pytest

from voice.narration import together, tool_line


@pytest.mark.parametrize(
    ("description", "said"),
    [
        ("Run the tests", "Running the tests."),
        ("List files in the project", "Listing files in the project."),
        ("Make the build directory", "Making the build directory."),
        ("Stop the dev server", "Stopping the dev server."),
        ("Set the version", "Setting the version."),
        ("Get the logs", "Getting the logs."),
        ("Format the code", "Formatting the code."),
        ("Create b.txt", "Creating b.txt."),
        ("Remove build files", "Removing build files."),
        ("Copy the config", "Copying the config."),
        ("install dependencies", "Installing dependencies."),
        ("Lint", "Linting."),
    ],
)
def test_a_command_verb_that_opens_a_description_is_said_as_what_it_is_doing(
    description: str, said: str
) -> None:
    # "Run the tests." sounded like an order to the user.
    assert tool_line("Bash", {"command": "make test", "description": description}) == said


def test_only_a_command_verb_that_opens_a_description_changes() -> None:
    def said(description: str) -> str:
        return tool_line("Bash", {"command": "x", "description": description})

    assert said("Run the tests and check the run") == "Running the tests and check the run."
    assert said("Running the tests") == "Running the tests."  # already so
    assert said("Type check the code") == "Type check the code."  # not a verb of the list
    assert said("Runtime check") == "Runtime check."  # a longer word that begins like one
    assert said("Git status") == "Git status."


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
