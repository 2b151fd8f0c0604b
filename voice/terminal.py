"""Text from the agent or a transcript, made safe to print on a terminal.

An agent's reply can carry escape sequences (set the window title, clear the screen, move
the cursor, rewrite the line with a carriage return); printed raw they act on the user's
terminal. Whole sequences are removed first, so their parameters do not leak as garbage, then
every remaining C0 and C1 control character except newline and tab.
"""

from __future__ import annotations

import re

_SEQUENCES = re.compile(
    r"""
    (?:\x1b\[|\x9b) [0-?]* [ -/]* [@-~]                        # CSI: colours, cursor, clear
  | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])                     # OSC (title, links), DCS,
    [^\x07\x1b\x9c\n]* (?:\x07|\x1b\\|\x9c)?                       # ... to its terminator
  | \x1b [ -/]* [0-~]                                          # other escapes (charset, reset)
    """,
    re.VERBOSE,
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (``\\n`` and ``\\t``
    stay)."""
    return _CONTROLS.sub("", _SEQUENCES.sub("", text))
