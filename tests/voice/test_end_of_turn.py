"""The end-of-turn analyzer as a table: evidence in, (turn ends, reply heard) out."""

from __future__ import annotations

import pytest

from voice.end_of_turn import CombinedAnalyzer, PauseEvidence

ANALYZER = CombinedAnalyzer(quick_ms=300, likely_ms=800, max_ms=1500, threshold=0.5, sure=0.98)
COMPLETE, UNSURE, INCOMPLETE = "Run the test suite.", "ten of clubs", "Run the test suite and"


@pytest.mark.parametrize(
    ("text", "p", "half_duplex", "heard_over_reply"),
    [
        # words       voice   (ends, heard) half-duplex / heard over the reply
        (COMPLETE, 0.99, (300, 1500), (300, 300)),
        (COMPLETE, 0.90, (300, 1500), (300, 800)),
        (COMPLETE, 0.04, (800, 1500), (800, 800)),  # "... made amiable himself." read aloud
        (COMPLETE, 0.98, (300, 1500), (300, 300)),  # on the sure line: sure
        (COMPLETE, 0.50, (300, 1500), (300, 800)),  # on the threshold: finished
        (UNSURE, 0.99, (300, 1500), (300, 300)),
        (UNSURE, 0.90, (800, 1500), (800, 800)),
        (UNSURE, 0.10, (1500, 1500), (1500, 1500)),
        (INCOMPLETE, 0.99, (800, 1500), (800, 800)),  # "... than he was."
        (INCOMPLETE, 0.90, (1500, 1500), (1500, 1500)),
        (INCOMPLETE, 0.10, (1500, 1500), (1500, 1500)),
        (None, 0.99, (800, 1500), (800, 800)),  # the words not transcribed yet
        (COMPLETE, None, (800, 1500), (800, 800)),  # the model not answered yet: "open"
    ],
)
def test_how_long_a_pause_must_last(
    text: str | None,
    p: float | None,
    half_duplex: tuple[float, float],
    heard_over_reply: tuple[float, float],
) -> None:
    """Heard over the reply, a word said over it stops it and joins the request, so a
    reply never waits past the likely wait; half-duplex, the words would be lost."""
    for heard, expected in ((False, half_duplex), (True, heard_over_reply)):
        evidence = PauseEvidence(text, p, model=True, heard_over_reply=heard)
        assert (ANALYZER.end_after_ms(evidence), ANALYZER.speak_after_ms(evidence)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [(COMPLETE, (300, 300)), (UNSURE, (1500, 1500)), (INCOMPLETE, (1500, 1500))],
)
def test_without_the_model_the_words_decide_alone(text: str, expected: tuple[float, float]) -> None:
    evidence = PauseEvidence(text, None, model=False, heard_over_reply=True)
    assert (ANALYZER.end_after_ms(evidence), ANALYZER.speak_after_ms(evidence)) == expected


@pytest.mark.parametrize("text", [COMPLETE, UNSURE, INCOMPLETE, None])
@pytest.mark.parametrize("p", [0.99, 0.90, 0.10, None])
@pytest.mark.parametrize("heard", [False, True])
def test_a_reply_is_heard_neither_before_its_turn_ends_nor_after_the_longest_pause(
    text: str | None, p: float | None, heard: bool
) -> None:
    evidence = PauseEvidence(text, p, model=True, heard_over_reply=heard)
    end, speak = ANALYZER.end_after_ms(evidence), ANALYZER.speak_after_ms(evidence)
    assert 300 <= end <= speak <= 1500
    assert heard or speak == 1500  # half-duplex: words said over it would be lost


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quick_ms": 0},
        {"quick_ms": 900, "likely_ms": 800},
        {"likely_ms": 1600, "max_ms": 1500},
        {"threshold": 0.99, "sure": 0.98},
        {"sure": 1.5},
    ],
)
def test_waits_and_probabilities_out_of_order_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must satisfy"):
        CombinedAnalyzer(**kwargs)
