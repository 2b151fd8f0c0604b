"""When to say a tool line ("Reading store.py."), as one message's tools run and ask.

Claude asks for permission right after it calls a tool, so each line waits a moment of its
own (:data:`voice.turns.TOOL_LINE_DELAY_S`): a question about that tool says what it would
do instead, and the line is never said. One message can call several tools, and a question
names its call (``tool_use_id``): that tool's line alone is withdrawn, and the lines of the
calls before it are said before the question. Lines keep the calls' order, and none is said
while a question is open (asked, its tool not finished): the user is answering it.

Calls of one kind (one tool) side by side are one line ("Reading six files."): a call whose
moment is over waits for the calls of its kind made right after it, until their moments are
over too (one message's calls come within a fraction of a second), so the line counts no
call whose question may still come. It waits at most :data:`~voice.turns.TOOL_LINE_DELAY_S`
after the last of them was made, and a question about one of them tells the calls before it.

Pure: the turn worker owns the timers and carries out what these methods return.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from voice import narration


@dataclass
class _Tool:
    id: str
    line: str
    kind: str = ""  # the tool's name ("": never told together with another call)
    said: bool = False  # or withdrawn: a question said what it would do
    asked: bool = False
    due: bool = False  # its moment is over (or it finished): say it when its turn comes
    finished: bool = False


@dataclass(frozen=True)
class Lines:
    """What to do now: ``say`` these lines in order; ``arm``: start a timer for that key,
    whose end is :meth:`ToolLines.due`."""

    say: tuple[str, ...] = ()
    arm: str | None = None


class ToolLines:
    def __init__(self) -> None:
        self._open: dict[str, _Tool] = {}  # by key, in call order
        self._asked_early: set[str] = set()  # questions about calls not seen yet
        self._keys = itertools.count(1)

    def started(self, tool_id: str, line: str, kind: str = "") -> Lines:
        # An agent that gives no ids, or the same one twice, still gets every line said.
        key = tool_id if tool_id and tool_id not in self._open else f"{tool_id}#{next(self._keys)}"
        tool = _Tool(tool_id, line, kind)
        if tool_id and tool_id in self._asked_early:
            self._asked_early.discard(tool_id)
            tool.said = tool.asked = True
        self._open[key] = tool
        return Lines(arm=None if tool.said else key)

    def due(self, key: str) -> Lines:
        tool = self._open.get(key)
        if tool is not None:
            tool.due = True
        return self._release()

    def asked(self, tool_id: str) -> Lines:
        """A question about ``tool_id`` (empty: the agent did not say which, so the first
        unsaid call whose moment is not over, else the first unsaid) says what it would do:
        its line is withdrawn, and the lines of the calls before it are said first."""
        if tool_id:
            key = self._key(tool_id, lambda t: not t.asked)
        else:
            key = self._key(None, lambda t: not (t.said or t.due)) or self._key(
                None, lambda t: not t.said
            )
        if key is None:
            if tool_id:  # its call has not come yet (or never will: a helper agent's)
                self._asked_early.add(tool_id)
            return Lines()
        before: list[_Tool] = []
        for k, tool in self._open.items():
            if k == key:
                tool.said = tool.asked = True
                break
            if not tool.said:
                tool.said = True
                before.append(tool)
        return Lines(say=self._tell(before))

    def finished(self, tool_id: str) -> Lines:
        """A call's result: a quick tool is still told, once its turn comes."""
        key = self._key(tool_id or None, lambda t: not t.finished)
        if key is not None:
            tool = self._open[key]
            tool.finished = tool.due = True
        return self._release()

    def flush(self) -> Lines:
        """The agent goes on (text): every line not yet said is said first, in order."""
        say = self._tell([t for t in self._open.values() if not t.said])
        self._open.clear()
        return Lines(say=say)

    def _release(self) -> Lines:
        """Say the lines whose turn has come: in call order, up to the first that is not due
        yet or that waits for an answer. The calls of its kind just before that one wait
        with it, to be one line."""
        told: list[_Tool] = []
        for tool in self._open.values():
            if tool.asked and not tool.finished:
                break
            if tool.said:
                continue
            if not tool.due:
                while told and tool.kind and told[-1].kind == tool.kind:
                    told.pop()
                break
            told.append(tool)
        for tool in told:
            tool.said = True
        self._open = {k: t for k, t in self._open.items() if not (t.said and t.finished)}
        return Lines(say=self._tell(told))

    def _tell(self, tools: list[_Tool]) -> tuple[str, ...]:
        """The lines of ``tools``, in call order: calls of one kind side by side are one line."""
        say: list[str] = []
        for _, run in itertools.groupby(tools, key=lambda t: t.kind or id(t)):
            calls = list(run)
            say.append(narration.together(calls[0].kind, [t.line for t in calls]))
        return tuple(say)

    def _key(self, tool_id: str | None, wanted: Callable[[_Tool], bool]) -> str | None:
        """The first open call with ``tool_id`` (None: any) that is ``wanted``."""
        return next(
            (k for k, t in self._open.items() if tool_id in (None, t.id) and wanted(t)), None
        )
