"""Is a speculative transcript a finished thought? Decides whether a short pause ends the turn.

Whisper ends nearly every transcript with a period, even mid-sentence ("Set a timer for."), so
the punctuation alone says little: the last word must also be one a sentence cannot end on.
"""

from __future__ import annotations

import re
from typing import Literal

SentenceState = Literal["complete", "incomplete", "unsure"]

# Words that leave a sentence hanging: articles, conjunctions, prepositions, possessives, a few
# auxiliaries and fillers. A pause after one of them is the user thinking, not finishing.
# Erring towards "dangling" only costs the normal hangover; erring the other way cuts the
# user off, so words that end both kinds of sentence ("on", "so", "is") are in the list.
_PREPOSITIONS = """
    to of for from with without in on at by about into onto over under after before
    between through during as per via
"""
_DANGLING = """
    a an the my your his its our their every
    and or but nor so because if when while though although unless until than
    is are was were
    um uh er erm
"""
PREPOSITIONS = frozenset(_PREPOSITIONS.split())
DANGLING_WORDS = frozenset(_DANGLING.split()) | PREPOSITIONS
# Whisper closes a phrase cut off at a preposition with a filler object or a homophone
# ("Set a timer for" -> "... for it.", "in the" -> "in there.", "by" -> "bye."), measured with
# tiny.en on spliced pauses; after a preposition these do not make a sentence complete.
# "them" is not among them: real sentences end "... to do for them." (LibriVox 0870).
FILLER_ENDINGS = frozenset(["it", "this", "that", "there", "bye"])
_FINAL = (".", "?", "!")
_WORD = re.compile(r"[\w']+")


def sentence_state(text: str) -> SentenceState:
    """Whether ``text`` reads as a finished sentence.

    "incomplete": it ends on a word a sentence cannot end on, or trails off ("..."); "unsure":
    no full stop but nothing dangling either (Whisper often leaves "ten of clubs" bare);
    "complete": a full stop after a word that can end a sentence.
    """
    stripped = text.strip().rstrip("\"')]\u00bb\u201d\u2019").rstrip()
    words = _WORD.findall(stripped.lower())
    if not words or stripped.endswith(("...", "\u2026")) or words[-1] in DANGLING_WORDS:
        return "incomplete"
    if words[-1] in FILLER_ENDINGS and len(words) > 1 and words[-2] in PREPOSITIONS:
        return "incomplete"
    if words[-1] == "bye" and len(words) > 1:  # "by" heard as a farewell
        return "incomplete"
    return "complete" if stripped.endswith(_FINAL) else "unsure"


def looks_complete(text: str) -> bool:
    """True when ``text`` ends like a complete sentence and not on a dangling word."""
    return sentence_state(text) == "complete"
