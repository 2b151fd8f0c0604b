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

from voice.commands import word_count
from voice.endpoint import SentenceState, sentence_state

# The end-of-turn model is asked once the pause has lasted this long: its thresholds were
# measured with a pause this long (offline, of digital silence: bench/bench_end_of_turn.py),
# and it hears a shorter pause as less finished (a true end at 0.967 with 100 ms, 0.985 with
# 200 ms). The words are transcribed sooner, at vad.pause_ms. The model hears the room's own
# pause; only what the segmenter does not keep is silence added (zeros made a request on the
# sure line doubtful, in the rig).
MODEL_PAUSE_S = 0.2
# A transcript of this many words or fewer, decoded less surely than faster-whisper's own bound
# for a decode it would redo (voice.stt.MIN_AVG_LOGPROB), is a guess at a murmur or a word
# begun, not a finished request: its full stop says little. Short commands heard clearly
# score above it (card names and digits -0.4 to -0.8, voice.stt): their form still decides.
UNCLEAR_MAX_WORDS = 2
UNCLEAR_AVG_LOGPROB = -1.0


@dataclass(frozen=True)
class PauseEvidence:
    """What is known about a pause. ``None``: that piece has not arrived (yet)."""

    text: str | None = None
    probability: float | None = None
    model: bool = False  # an end-of-turn model runs at each pause, so a probability will come
    # The user is heard over the reply (echo cancelled, or a headset): words said over it
    # stop it and join the request. Otherwise (half-duplex) they would be lost.
    heard_over_reply: bool = False
    avg_logprob: float = 0.0  # how sure the decode of ``text`` was (0: unknown)


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

    The words (:func:`~voice.endpoint.sentence_state`) are complete, incomplete or unsure
    (a word or two decoded unsurely, :data:`UNCLEAR_AVG_LOGPROB`, is at most unsure);
    the model's probability ``p`` says "finished" from ``threshold``, and is *sure* from
    ``sure``. When the turn ends / when its reply may be heard:

    ==========  ====================  ====================  ====================
    words       p >= sure             threshold <= p        p < threshold
    ==========  ====================  ====================  ====================
    complete    quick / quick         quick / likely        likely / likely
    unsure      quick / quick         likely / likely       max / max
    incomplete  likely / likely       max / max             max / max
    ==========  ====================  ====================  ====================

    A turn goes to the agent as soon as it ends, so the agent starts early; its reply is
    held until the user has surely finished. Half-duplex cannot hear words said over the
    reply, so there it is never heard before ``max``, the longest pause inside a request
    (live on real voices, replies heard sooner came mid-request in 6 of 20 requests with a
    pause inside; after ``likely``, a pause of 800 ms still lost a sentence). Heard over the
    reply, a word said over it stops it and joins the request, so a turn that ends at
    ``likely`` plays then: read sentences that smart-turn hears as open ("He might even have
    been made amiable himself.", p 0.04) or that end on a word the table distrusts ("...
    than he was.") do not wait for ``max``. A missing piece of evidence counts as the least
    favourable value. Without a model the words decide alone, as they did before the model:
    complete -> quick / quick.
    """

    quick_ms: float = 300.0
    likely_ms: float = 800.0
    max_ms: float = 1500.0
    threshold: float = 0.5
    sure: float = 0.98

    def __post_init__(self) -> None:
        if not 0 < self.quick_ms <= self.likely_ms <= self.max_ms:
            raise ValueError("end-of-turn waits must satisfy 0 < quick <= likely <= max")
        if not 0.0 <= self.threshold <= self.sure <= 1.0:
            raise ValueError("end-of-turn probabilities must satisfy 0 <= threshold <= sure <= 1")

    def end_after_ms(self, evidence: PauseEvidence) -> float:
        return self._verdict(evidence)[0]

    def speak_after_ms(self, evidence: PauseEvidence) -> float:
        speak = self._verdict(evidence)[1]
        return speak if evidence.heard_over_reply else max(speak, self.max_ms)

    def _verdict(self, evidence: PauseEvidence) -> tuple[float, float]:
        quick, likely, longest = self.quick_ms, self.likely_ms, self.max_ms
        words = _words(evidence)
        if not evidence.model:
            return (quick, quick) if words == "complete" else (longest, longest)
        p = -1.0 if evidence.probability is None else evidence.probability
        voice = "sure" if p >= self.sure else "finished" if p >= self.threshold else "open"
        table = {
            ("complete", "sure"): (quick, quick),
            ("complete", "finished"): (quick, likely),
            ("complete", "open"): (likely, likely),
            ("unsure", "sure"): (quick, quick),
            ("unsure", "finished"): (likely, likely),
            ("incomplete", "sure"): (likely, likely),
        }
        return table.get((words, voice), (longest, longest))


def _words(evidence: PauseEvidence) -> SentenceState:
    """What the words say; a word or two heard unclearly is unsure (see UNCLEAR_MAX_WORDS)."""
    text = evidence.text
    if text is None:
        return "incomplete"
    state = sentence_state(text)
    unclear = word_count(text) <= UNCLEAR_MAX_WORDS and evidence.avg_logprob < UNCLEAR_AVG_LOGPROB
    return "unsure" if state == "complete" and unclear else state
