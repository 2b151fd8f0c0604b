"""When has the user finished? The end-of-turn decision, behind one small interface.

At a pause the loop gathers evidence: the words so far (a speculative transcript, judged by
:func:`voice.endpoint.looks_complete`) and, when the smart-turn model is installed, its
probability that the speaker finished (it hears intonation). The analyzer turns that evidence
into how long the pause must last before the turn ends. Evidence arrives piece by piece, so
the machine asks again each time: the wait can only be decided, never undone.

A wrong guess costs time, never words: speech that resumes after the turn ended still joins
the same request (see :mod:`voice.turn_taking`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from voice.endpoint import looks_complete


@dataclass(frozen=True)
class PauseEvidence:
    """What is known about a pause. ``None``: that piece has not arrived (yet)."""

    text: str | None = None
    probability: float | None = None
    model: bool = False  # an end-of-turn model runs at each pause, so a probability will come


class TurnAnalyzer(Protocol):
    def end_after_ms(self, evidence: PauseEvidence) -> float:
        """Milliseconds of silence after which the turn ends, given ``evidence``."""
        ...

    def speak_after_ms(self, evidence: PauseEvidence) -> float:
        """Milliseconds of silence before the reply may be heard. A turn ended on a guess
        goes to the agent at once but its reply waits, so a user who was only thinking can
        still go on (half-duplex: words said over the reply would not be heard)."""
        ...


@dataclass(frozen=True)
class CombinedAnalyzer:
    """Words and intonation must agree before a pause ends the turn quickly.

    ============================================  =================
    evidence                                       the turn ends at
    ============================================  =================
    the words end a sentence and the model agrees  ``quick_ms``
    only one of the two says finished              ``likely_ms``
    neither (or nothing known yet)                 ``max_ms``
    ============================================  =================

    Without a model the words decide alone, as two votes: a complete sentence ends after
    ``quick_ms``. A model that says "finished" with a probability below ``threshold`` counts
    as "not finished". A turn ended on one vote is a guess: its reply is held until the pause
    reaches ``max_ms``.
    """

    quick_ms: float = 300.0
    likely_ms: float = 800.0
    max_ms: float = 1500.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.quick_ms <= self.likely_ms <= self.max_ms:
            raise ValueError("end-of-turn waits must satisfy 0 < quick <= likely <= max")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("the end-of-turn threshold is a probability, 0 to 1")

    def end_after_ms(self, evidence: PauseEvidence) -> float:
        words = None if evidence.text is None else looks_complete(evidence.text)
        if not evidence.model:
            return self.quick_ms if words else self.max_ms
        voice = None if evidence.probability is None else evidence.probability >= self.threshold
        votes = [vote for vote in (words, voice) if vote is not None]
        finished = sum(votes)
        if finished == 2:
            return self.quick_ms
        if finished == 1:
            # One "finished" and one missing vote: the other may still agree, wait no less.
            return self.likely_ms
        return self.max_ms

    def speak_after_ms(self, evidence: PauseEvidence) -> float:
        end = self.end_after_ms(evidence)
        return end if end <= self.quick_ms else self.max_ms
