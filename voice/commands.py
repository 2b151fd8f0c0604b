"""Short spoken commands: "stop" while the agent works, "yes"/"no"/"always" to a question;
and backchannels ("mm-hmm", "yeah", "I see"), which say the user is listening, not talking.

Only a whole, short utterance is a command: "stop" is one, "stop the server on port 80" is a
request. Whisper's punctuation and capitals are ignored.
"""

from __future__ import annotations

import difflib
import re

from voice.turn_events import Decision

_WORD = re.compile(r"[a-z']+")
_TOKEN = re.compile(r"[\w']+")  # words and numbers ("ten", "10")
_POLITE = frozenset(["please", "ok", "okay", "now", "hey", "just", "right"])
_STOP = frozenset(["stop", "cancel", "abort", "halt", "enough"])
_STOP_PHRASES = ("never mind", "nevermind", "forget it", "stop it", "stop that", "cancel that")
_MAX_COMMAND_WORDS = 4
# Said over a reply, these say "go on": they do not stop it. (Whisper also hears "Mmhmm" and
# "Oh" in music and coughs.) "Yes" and "no" are not among them: they may answer the reply.
_HUMS = frozenset(["mm", "mmm", "hmm", "hm", "mhm", "mmhmm", "mhmm", "uh", "uhhuh"])
_SOUNDS = frozenset(["um", "umm", "ah", "aha", "oh", "ooh"])
_AGREEING = frozenset(["yeah", "yep", "right", "okay", "ok", "alright", "sure"])
_BACKCHANNEL = _HUMS | _SOUNDS | _AGREEING
_HUM_PHRASES = frozenset([("uh", "huh")])  # "huh" alone asks "what?"
_BACKCHANNEL_PHRASES = _HUM_PHRASES | frozenset([("i", "see"), ("got", "it"), ("go", "on")])

_ALLOW = frozenset(
    ["yes", "yeah", "yep", "yup", "sure", "allow", "allowed", "approve", "approved", "proceed"]
)
_ALLOW_PHRASES = ("go ahead", "do it", "go for it", "sounds good")
_AGREE = frozenset(["ok", "okay", "right"])  # alone, they answer "yes"
_DENY = frozenset(
    ["no", "nope", "nah", "deny", "denied", "don't", "dont", "not", "reject", "refuse"]
)
_ALWAYS = frozenset(["always"])
# A yes with a condition is not a yes: "Yes, but only the unit tests." is refused with the
# words, which Claude reads (an allow carries no words).
_CONDITIONS = frozenset(["but", "only", "except", "unless", "without", "instead"])
_GOING_ON = frozenset(["then", "also", "afterwards", "afterward"])
# A yes that goes on with a no, a stop or a second thought takes itself back ("Yeah, no.",
# "Yes. No, wait, don't.", "Go ahead, never mind."): no tool runs on it, and the agent reads
# the words. Idioms of a yes ("Sure, why not.") are not taken back.
_TAKE_BACK = (
    _DENY
    | _STOP
    | frozenset(["wait", "never", "nevermind", "forget", "actually", "pause", "scratch", "undo"])
)
_TAKE_BACK_PHRASES = ("hold on", "hang on", "hold it", "second thought", "second thoughts")
_YES_IDIOMS = ("no problem", "not a problem", "no worries", "why not", "don't mind")
_ANSWER_WORDS = (
    _ALLOW
    | _AGREE
    | _POLITE
    | _DENY
    | _ALWAYS
    | frozenset(word for phrase in _ALLOW_PHRASES for word in phrase.split())
    | frozenset(["thanks", "thank", "you", "fine", "that's", "that", "is", "this", "once", "only"])
)


SIMILAR = 0.75  # a heard word this like another ("hopping", "shopping") is that word


def words(text: str) -> list[str]:
    # (Whisper may write "don't" with a curly apostrophe: it is the same word.)
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def word_count(text: str) -> int:
    """Words and numbers: Whisper writes "ten" or "10" as it likes."""
    return len(_TOKEN.findall(text))


def alike(a: str, b: str) -> bool:
    """The same word, as Whisper may write it twice ("test", "tests"; lower case)."""
    return a == b or difflib.SequenceMatcher(None, a, b).ratio() >= SIMILAR


def added_words(text: str, before: str) -> str:
    """The words of ``text`` after those of ``before`` (a transcript of a request and what
    went on with it, against the request's own). Whisper may write the old words a little
    differently ("test", "tests"; "all right", "alright"): they are matched, not counted."""
    said = _TOKEN.findall(text)
    old = [w.lower() for w in _TOKEN.findall(before)]
    known = set(old)

    def key(word: str) -> str:
        word = word.lower()
        if word in known:  # ("them" is itself, though alike "then")
            return word
        return next((o for o in old if alike(word, o)), word)

    blocks = difflib.SequenceMatcher(None, old, [key(w) for w in said], autojunk=False)
    end = max((b.b + b.size for b in blocks.get_matching_blocks() if b.size), default=0)
    return " ".join(said[end:])


def is_stop(text: str) -> bool:
    """True for "Stop.", "Cancel!", "okay stop", "never mind"; not for longer requests."""
    said = [w for w in words(text) if w not in _POLITE]
    if not said or len(said) > _MAX_COMMAND_WORDS:
        return False
    joined = " ".join(said)
    if any(joined == p or joined.startswith(p + " ") for p in _STOP_PHRASES):
        return True
    return all(w in _STOP for w in said)


def begins_with_stop(text: str) -> bool:
    """True for "Stop.", "Stop reading.", "Cancel the deploy": a stop word first."""
    said = [w for w in words(text) if w not in _POLITE]
    return bool(said) and said[0] in _STOP


def is_backchannel(text: str) -> bool:
    """True for "Mm-hmm.", "Yeah, right.", "Oh, I see."; not for "Yeah, but use the other
    file", "Okay, stop" nor a question ("Huh?", "Right?")."""
    return _only(text, _BACKCHANNEL, _BACKCHANNEL_PHRASES)


def is_hum(text: str) -> bool:
    """True for sounds with no word in them: "Mm-hmm.", "Oh.", "Uh-huh"; not for "Okay"."""
    return _only(text, _HUMS | _SOUNDS, _HUM_PHRASES, most=None)


def _only(
    text: str,
    singles: frozenset[str],
    pairs: frozenset[tuple[str, str]],
    most: int | None = _MAX_COMMAND_WORDS,
) -> bool:
    """``text`` is ``singles`` and ``pairs`` of words (at most ``most``), and asks nothing."""
    said = words(text)
    if not said or (most is not None and len(said) > most) or text.rstrip().endswith("?"):
        return False
    if any(c.isdigit() for c in text):  # "Um, 5." says something
        return False
    i = 0
    while i < len(said):
        if tuple(said[i : i + 2]) in pairs:
            i += 2
        elif said[i] in singles:
            i += 1
        else:
            return False
    return True


def answer_goes_on(text: str) -> bool:
    """A yes that goes on with more for the agent to do: "Yes, and then commit it.", "Sure,
    also update the docs." ("Yes, run the tests." only restates what was asked.)"""
    said = words(text)[1:]
    return any(w in _GOING_ON for w in said) or "after that" in " ".join(said)


def is_bare_answer(text: str) -> bool:
    """A yes or a no and nothing more ("Yes, please go ahead.", "No thanks."): an answer, with
    no words of its own to act on ("No, use yarn instead." has some)."""
    said = words(text)
    decision = permission_answer(text)
    if decision is None or not all(w in _ANSWER_WORDS for w in said):
        return False
    # "No, no, go ahead.": a no (nothing runs), but not all of it; the agent reads the words.
    return decision != "deny" or not _says_yes(said)


def permission_answer(text: str) -> Decision | None:
    """The decision an answer states, or None when it is neither yes nor no (nor "always")."""
    heard = words(text)
    said = [w for w in heard if w not in _POLITE]
    if not said:  # only polite words: "Okay." answers yes, "Just now." nothing
        return "allow" if any(w in _AGREE for w in heard) else None
    joined = " ".join(said)
    always = any(w in _ALWAYS for w in said[:3])
    if said[0] in _DENY or (always and any(w in _DENY for w in said[:3])):
        return "deny"  # "No.", "Always deny."
    if _takes_back(said) or (any(w in _CONDITIONS for w in said) and "this once" not in joined):
        return None  # "Yeah, no.", "Yes, but only the unit tests."
    if always:
        return "always"
    allow = said[0] in _ALLOW or any(joined.startswith(p) for p in _ALLOW_PHRASES)
    return "allow" if allow else None


def _takes_back(said: list[str]) -> bool:
    """A no, a stop or a second thought in the answer: "Yes, no.", "Go ahead, wait."."""
    joined = _padded(said)
    for idiom in _YES_IDIOMS:
        joined = joined.replace(f" {idiom} ", " ")
    return any(w in _TAKE_BACK for w in joined.split()) or _has_phrase(joined, _TAKE_BACK_PHRASES)


def _says_yes(said: list[str]) -> bool:
    return any(w in _ALLOW for w in said) or _has_phrase(_padded(said), _ALLOW_PHRASES)


def _padded(said: list[str]) -> str:
    return f" {' '.join(said)} "


def _has_phrase(padded: str, phrases: tuple[str, ...]) -> bool:
    return any(f" {phrase} " in padded for phrase in phrases)
