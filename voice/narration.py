"""Saying what the agent is doing in a few words: tool lines, questions and refusals.

Pure text functions. Never read out code, long paths or raw JSON: a Bash call is described
by the agent's own ``description`` of it, a short plain command, or just "a command"; a
file by its name alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from core.agent_output import Denial

_PLAIN_COMMAND = re.compile(r"[A-Za-z0-9 ._-]{1,40}")  # "npm test", "ls -la": safe to say
_MAX_DESCRIPTION = 80
_MAX_DENIALS_SAID = 2


def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


# tool name -> (what it is doing, what it would do), "{file}" filled with the file's name.
_TOOLS: dict[str, tuple[str, str]] = {
    "Read": ("Reading {file}.", "read {file}"),
    "Write": ("Writing {file}.", "write {file}"),
    "Edit": ("Editing {file}.", "edit {file}"),
    "MultiEdit": ("Editing {file}.", "edit {file}"),
    "NotebookEdit": ("Editing {file}.", "edit {file}"),
    "Glob": ("Looking for files.", "look for files"),
    "Grep": ("Searching the code.", "search the code"),
    "LS": ("Listing files.", "list files"),
    "WebFetch": ("Fetching a web page.", "fetch a web page"),
    "WebSearch": ("Searching the web.", "search the web"),
    "Task": ("Starting a helper agent.", "start a helper agent"),
    "Agent": ("Starting a helper agent.", "start a helper agent"),
    "TodoWrite": ("Updating the plan.", "update its plan"),
}
# tool name -> what several of its calls, told together, are doing; "{n}" their number. The
# other tools say the same line for every call.
_SEVERAL: dict[str, str] = {
    "Bash": "Running {n} commands.",
    "Read": "Reading {n} files.",
    "Write": "Writing {n} files.",
    "Edit": "Editing {n} files.",
    "MultiEdit": "Editing {n} files.",
    "NotebookEdit": "Editing {n} notebooks.",
    "WebFetch": "Fetching {n} web pages.",
    "Task": "Starting {n} helper agents.",
    "Agent": "Starting {n} helper agents.",
}
_NUMBERS = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"
)  # fmt: skip
# Verbs Claude opens its Bash descriptions with ("Run the tests"): said in the -ing form
# ("Running the tests."), so the line says what it is doing, not what the user should do.
_COMMAND_VERBS = _words(
    """add analyze apply build check clean close commit compare compile configure copy count
    create debug delete deploy diff display download edit execute extract fetch find format
    generate get grep initialize inspect install kill lint list load look make measure merge
    move open parse print pull push read rebuild reload remove rename rerun reset restart run
    save scan search set show sort split start stop tag test uninstall update upgrade validate
    verify view wait watch write"""
)
# ... of those, the ones that double their last letter: "running", "formatting".
_DOUBLING = _words("commit debug format get grep rerun reset run scan set split stop tag")


def _file(tool_input: Mapping[str, Any]) -> str | None:
    path = tool_input.get("file_path") or tool_input.get("notebook_path") or tool_input.get("path")
    if not isinstance(path, str) or not path.strip():
        return None
    name = os.path.basename(path.rstrip("/"))
    return name if 0 < len(name) <= 40 else "a file"


def _description(tool_input: Mapping[str, Any]) -> str | None:
    text = tool_input.get("description")
    if not isinstance(text, str):
        return None
    text = " ".join(text.split()).rstrip(".")
    return text if 0 < len(text) <= _MAX_DESCRIPTION else None


def _command(tool_input: Mapping[str, Any]) -> str | None:
    command = tool_input.get("command")
    if isinstance(command, str) and _PLAIN_COMMAND.fullmatch(command.strip()):
        return command.strip()
    return None


def tool_line(name: str, tool_input: Mapping[str, Any]) -> str:
    """What to say when the agent starts a tool: "Running the tests.", "Reading store.py."."""
    if name == "Bash":
        description = _description(tool_input)
        if description:
            description = _doing(description)
            return description[0].upper() + description[1:] + "."
        command = _command(tool_input)
        return f"Running {command}." if command else "Running a command."
    if name in _TOOLS:
        doing = _TOOLS[name][0]
        return doing.format(file=_file(tool_input) or "a file")
    return f"Using {_tool_name(name)}."


def _doing(description: str) -> str:
    """ "Run the tests" -> "Running the tests": a command verb that opens it, in its -ing
    form; any other first word is left as it is."""
    verb, space, rest = description.partition(" ")
    base = verb.lower()
    if base not in _COMMAND_VERBS:
        return description
    if base in _DOUBLING:
        doing = f"{base}{base[-1]}ing"
    elif base.endswith("e") and not base.endswith("ee"):
        doing = f"{base[:-1]}ing"
    else:
        doing = f"{base}ing"
    return doing + space + rest


def together(name: str, lines: Sequence[str]) -> str:
    """One line for calls of one tool told together: "Reading six files.", not six lines
    read out one after another while the answer waits behind them."""
    distinct = list(dict.fromkeys(lines))
    several = _SEVERAL.get(name)
    if len(distinct) <= 1 or several is None:
        return " ".join(distinct)
    count = len(distinct)  # (a file read twice is one file)
    return several.format(n=_NUMBERS[count - 2] if count - 2 < len(_NUMBERS) else count)


def would_do(name: str, tool_input: Mapping[str, Any]) -> str:
    """What the tool would do, to finish "Claude wants to ...": "run npm test"."""
    if name == "Bash":
        command = _command(tool_input)
        if command:
            return f"run {command}"
        description = _description(tool_input)
        return description[0].lower() + description[1:] if description else "run a command"
    if name in _TOOLS:
        return _TOOLS[name][1].format(file=_file(tool_input) or "a file")
    return f"use {_tool_name(name)}"


def question(agent: str, name: str, tool_input: Mapping[str, Any]) -> str:
    """The permission question: "Claude wants to run npm test. Allow?"."""
    return f"{agent} wants to {would_do(name, tool_input)}. Allow?"


def retrying(agent: str, status: int | None) -> str:
    """The agent's service did not answer and it tries again: "Claude cannot reach its
    service. Still trying."."""
    if status is None:
        return f"{agent} cannot reach its service. Still trying."
    return f"{agent}'s service is not answering. Still trying."


def conversation_lost(agent: str) -> str:
    """The agent no longer had the room's conversation: said before its reply."""
    return f"{agent} no longer has our earlier conversation, so this starts a new one."


def refusals(agent: str, denials: Sequence[Denial]) -> str:
    """One sentence at the end of a turn about what the agent was not allowed to do."""
    if not denials:
        return ""
    things = [
        would_do(
            d.tool_name,
            {"command": d.summary, "file_path": d.summary, "description": d.description},
        )
        for d in denials
    ]
    said = things[:_MAX_DENIALS_SAID]
    more = len(things) - len(said)
    listed = " or ".join(said) if len(said) <= 2 else ", ".join(said)
    tail = f", and {more} more" if more else ""
    return f"Note: {agent} was not allowed to {listed}{tail}."


def _tool_name(name: str) -> str:
    """An MCP tool ``mcp__server__do_thing`` is said as "do thing"."""
    short = name.rsplit("__", 1)[-1]
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", short).replace("_", " ")
    return " ".join(spaced.split()) or "a tool"
