"""The assistant's own words, heard back.

The canceller leaves some of the reply's echo now and then: after an underrun has moved the
echo, or when a sound over the reply keeps a segment open and the echo's residue follows it
in. Whisper then hears the reply's own words ("Hopping list." while the reply says "... the
whole shopping list ..."), and they would stop the reply and become a request.

:class:`SaidLog` keeps what the speaker said and when it could be heard, and when speech
began over it; :func:`heard_back` says whether a transcript is nothing but a run of those
words, or :func:`split_echo` which of its first sentences are. Only speech begun while the
reply played is checked: a user who answers in its words once it is over is heard. "Stop" is
never taken for the reply, nor is a single word. :func:`says` tells whether the reply said
the wake word, so its echo does not wake the loop.
"""

from __future__ import annotations

import collections
import itertools
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from voice.commands import alike, begins_with_stop, words

MIN_WORDS = 2  # one word ("Sure.") is too likely the user's own to drop
CUT_MIN_WORDS = 3  # a sentence cut from before the user's words: "Please read me."
# Whisper loses words of a faint echo: a said word may be missing, one in every this many
# heard words ("the whole list" for "the whole shopping list").
SKIP_EVERY = 4
# The echo reaches the microphone after the sound left the process: the device's buffer and
# the room. A sentence counts this long after its last sample was due.
LATE_S = 1.0
KEEP = 64  # sentences remembered
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_READ_AS = {"ok": "okay"}  # written either way, said alike (see says)


@dataclass(frozen=True)
class Said:
    text: str
    from_s: float  # its first audio went to the speaker
    until_s: float  # when its last sample is due out, had the speaker played in order
    reply: int  # which reply said it


class SaidLog:
    """What the speaker was given to say, with when it could be heard, on the monotonic clock
    the microphone's frames are stamped with. Sentences play in the order given (the speaker
    is a queue), so each ends its own length after the one before it, or after it was given
    if the speaker had run dry; a pause moves what was still to play."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._said: collections.deque[Said] = collections.deque(maxlen=KEEP)
        self._end_s = 0.0  # when what was given so far is due to have played
        self._paused_s: float | None = None
        self._replies = 0
        # When speech began, and the reply playing then (None: none was).
        self._began: collections.deque[tuple[float, int | None]] = collections.deque(maxlen=KEEP)

    def new_reply(self) -> int:
        with self._lock:
            self._replies += 1
            return self._replies

    def speech_began(self, at_s: float, *, over_reply: bool) -> None:
        """Speech began at ``at_s``, over the reply or not."""
        with self._lock:
            playing = [s.reply for s in self._said if s.from_s <= at_s]
            self._began.append((at_s, playing[-1] if over_reply and playing else None))

    def split(self, heard: str, start_s: float, end_s: float) -> tuple[str, str]:
        """``heard``, the words of speech from ``start_s`` to ``end_s``, as the echo of the
        reply it began over and the user's words (:func:`split_echo`). Speech that began with
        no reply playing is all the user's: an answer in the reply's words once it is over,
        and a request begun before a reply that goes on over it (its words may be that
        reply's: "You said: ...")."""
        with self._lock:
            began = [reply for at, reply in self._began if start_s <= at <= end_s]
        if not began or began[0] is None:
            return "", heard.strip()
        return split_echo(heard, self.around(start_s, end_s, reply=began[0]))

    def begin(self, text: str, at_s: float, reply: int) -> None:
        """The first audio of ``text``, of ``reply``, goes to the speaker now."""
        with self._lock:
            self._said.append(Said(text, at_s, max(at_s, self._end_s), reply))

    def played(self, seconds: float, at_s: float) -> None:
        """More audio of the sentence begun last went to the speaker."""
        with self._lock:
            self._end_s = max(at_s, self._end_s) + seconds
            if self._said:
                last = self._said[-1]
                self._said[-1] = replace(last, until_s=self._end_s)

    def pause(self, at_s: float) -> None:
        with self._lock:
            if self._paused_s is None:
                self._paused_s = at_s

    def resume(self, at_s: float) -> None:
        """What was still to play when the speaker paused plays that much later."""
        with self._lock:
            since, self._paused_s = self._paused_s, None
            if since is None or at_s <= since:
                return
            moved = at_s - since
            self._end_s = self._end_s + moved if self._end_s > since else self._end_s
            self._said = collections.deque(
                [
                    replace(s, until_s=s.until_s + moved) if s.until_s > since else s
                    for s in self._said
                ],
                maxlen=KEEP,
            )

    def stop(self, at_s: float) -> None:
        """The speaker was stopped: nothing given so far plays after now."""
        with self._lock:
            self._paused_s = None
            self._end_s = min(self._end_s, at_s)
            self._said = collections.deque(
                [replace(s, until_s=min(s.until_s, at_s)) for s in self._said], maxlen=KEEP
            )

    def around(self, start_s: float, end_s: float, reply: int | None = None) -> list[str]:
        """The sentences (of ``reply``, or any) that could be heard between ``start_s`` and
        ``end_s``, in order."""
        with self._lock:
            return [
                s.text
                for s in self._said
                if s.from_s <= end_s
                and s.until_s + LATE_S >= start_s
                and (reply is None or s.reply == reply)
            ]


def split_echo(heard: str, said: Sequence[str]) -> tuple[str, str]:
    """``heard`` as the reply's echo and the user's words after it. The echo is all of it
    (:func:`heard_back`), or its first sentences, each heard back, before the words of a
    voice that followed them in ("Please read me. He might even have been made amiable
    himself.")."""
    heard = heard.strip()
    if heard_back(heard, said):
        return heard, ""
    sentences = _SENTENCE_END.split(heard)
    echo = list(
        itertools.takewhile(
            lambda sentence: len(words(sentence)) >= CUT_MIN_WORDS and heard_back(sentence, said),
            sentences,
        )
    )
    return " ".join(echo), " ".join(sentences[len(echo) :])


def heard_back(heard: str, said: Sequence[str]) -> bool:
    """True when the words of ``heard`` (:data:`MIN_WORDS` or more, not begun with "stop")
    are a run of the words of ``said`` in order: alike (:func:`voice.commands.alike`), with
    at most one said word missing in every :data:`SKIP_EVERY` heard."""
    got = words(heard)
    if len(got) < MIN_WORDS or begins_with_stop(heard):
        return False
    spoken = [w for sentence in said for w in words(sentence)]
    return any(_run_from(got, spoken, start) for start in range(len(spoken)))


def says(phrase: str, said: Sequence[str]) -> bool:
    """True when ``said`` has the words of ``phrase`` in a row ("Hey, Jarvis." says "Hey
    Jarvis"; "OK Nabu" says "Okay Nabu", and "Alexa's" says "Alexa", as Piper reads them).
    Written text, not a transcript: words match exactly ("Alex" is not "Alexa")."""
    got = [_as_read(w) for w in words(phrase)]
    spoken = [_as_read(w) for sentence in said for w in words(sentence)]
    n = len(got)
    return n > 0 and any(spoken[i : i + n] == got for i in range(len(spoken) - n + 1))


def _as_read(word: str) -> str:
    word = word.removesuffix("'s")
    return _READ_AS.get(word, word)


def _run_from(got: list[str], spoken: list[str], start: int) -> bool:
    if not alike(got[0], spoken[start]):
        return False
    skips = len(got) // SKIP_EVERY
    at = start + 1
    for word in got[1:]:
        for step in range(skips + 1):
            if at + step < len(spoken) and alike(word, spoken[at + step]):
                skips -= step
                at += step + 1
                break
        else:
            return False
    return True
