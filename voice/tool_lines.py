"""When to say a tool line ("Reading store.py."), as one message's tools run and ask.

Claude asks for permission right after it calls a tool, so a line waits a moment
(:data:`voice.turns.TOOL_LINE_DELAY_S`): a question about that tool says what it would do
instead, and the line is never said. One message can call several tools, and a question
names its call (``tool_use_id``): that tool's line alone is withdrawn, the lines of tools
called before it are said before the question, and a later tool's line waits until the
tools before it are told or asked about and have finished (its own moment starts then).

Pure: the turn worker owns the timer and carries out what these methods return.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Tool:
    line: str
    said: bool = False  # or withdrawn: a question said what it would do


@dataclass(frozen=True)
class Lines:
    """What to do now: ``say`` these lines in order; ``arm``: start the timer for that tool
    (whose end is :meth:`ToolLines.due`), replacing any timer running."""

    say: tuple[str, ...] = ()
    arm: str | None = None


class ToolLines:
    def __init__(self) -> None:
        self._open: dict[str, _Tool] = {}  # called and not finished, in call order
        self._armed: str | None = None

    @property
    def armed(self) -> str | None:
        """The tool whose moment the timer counts, if any."""
        return self._armed

    def started(self, tool_id: str, line: str) -> Lines:
        self._open[tool_id] = _Tool(line)
        return self._arm_next()

    def due(self, tool_id: str) -> Lines:
        """The timer armed for ``tool_id`` ran out: its line is said, unless withdrawn."""
        if tool_id != self._armed:
            return Lines()
        self._armed = None
        tool = self._open.get(tool_id)
        if tool is None or tool.said:
            return Lines()
        tool.said = True
        return Lines(say=(tool.line,))

    def asked(self, tool_id: str) -> Lines:
        """A question about ``tool_id`` (empty: the agent did not say which, so the first
        unsaid one) says what it would do, so its line is withdrawn; the lines of tools
        called before it are said first. Later tools' lines wait their turn."""
        if tool_id not in self._open:
            tool_id = next((i for i, t in self._open.items() if not t.said), "")
        say: list[str] = []
        for i, tool in self._open.items():
            if i == tool_id:
                tool.said = True
                break
            if not tool.said:
                tool.said = True
                say.append(tool.line)
        if self._armed is not None and self._open[self._armed].said:
            self._armed = None
        return Lines(say=tuple(say))

    def finished(self, tool_id: str) -> Lines:
        """A tool's result: a line not yet said is said now (a quick tool is still told),
        and the next tool's moment starts."""
        tool = self._open.pop(tool_id, None)
        say = (tool.line,) if tool is not None and not tool.said else ()
        if tool_id == self._armed:
            self._armed = None
        return Lines(say=say, arm=self._arm_next().arm)

    def flush(self) -> Lines:
        """The agent goes on (text): every line not yet said is said first, in order."""
        self._armed = None
        say = tuple(t.line for t in self._open.values() if not t.said)
        self._open.clear()
        return Lines(say=say)

    def _arm_next(self) -> Lines:
        """The first open tool is the one running or about to ask: if its line is unsaid and
        no timer runs for it, its moment starts."""
        first = next(iter(self._open), None)
        if first is None or self._open[first].said or self._armed == first:
            return Lines()
        self._armed = first
        return Lines(arm=first)
