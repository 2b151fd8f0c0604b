"""Is a speculative transcript a finished thought? Decides whether a short pause ends the turn.

Whisper ends nearly every transcript with a period, even mid-sentence ("Set a timer for."), so
the punctuation alone says little: the last word must also be one a sentence cannot end on.
"""

from __future__ import annotations

import re

# Words that leave a sentence hanging: articles, conjunctions, prepositions, possessives, a few
# auxiliaries and fillers. A pause after one of them is the user thinking, not finishing.
# Erring towards "dangling" only costs the normal hangover; erring the other way cuts the
# user off, so words that end both kinds of sentence ("on", "so", "is") are in the list.
_DANGLING = """
    a an the my your his its our their every
    and or but nor so because if when while though although unless until than
    to of for from with without in on at by about into onto over under after before
    between through during as per via
    is are was were
    um uh er erm
"""
DANGLING_WORDS = frozenset(_DANGLING.split())
_FINAL = (".", "?", "!")
_WORD = re.compile(r"[\w']+")


def looks_complete(text: str) -> bool:
    """True when ``text`` ends like a complete sentence and not on a dangling word."""
    stripped = text.strip().rstrip("\"')]\u00bb\u201d\u2019").rstrip()
    if not stripped or stripped.endswith(("...", "\u2026")) or not stripped.endswith(_FINAL):
        return False
    words = _WORD.findall(stripped.lower())
    return bool(words) and words[-1] not in DANGLING_WORDS
