"""Turn completeness of a speculative transcript."""

from __future__ import annotations

import pytest

from voice.endpoint import looks_complete, sentence_state


@pytest.mark.parametrize(
    "text",
    [
        "What time is it?",
        "Set a timer for ten minutes.",
        "Set a timer for 10 minutes.",
        "Set a timer for 10.",
        "Turn off the kitchen lights!",
        "Thank you.",
        '  He said "stop."  ',
        "Call her.",
        "Is it raining in Paris?",
    ],
)
def test_complete_sentences(text: str) -> None:
    assert looks_complete(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        ".",
        "Set a timer for",  # no final punctuation
        "Remind me to call my mother and",
        "Remind me to call my mother and.",  # Whisper's period on a dangling word
        "What is the weather like in.",
        "Play some music by the.",
        "I want to.",
        "Book a table for two because.",
        "Send it to my.",
        "The answer is.",
        "Um.",
        "Well, let me think...",
        "Well, let me think\u2026",
        "First the eggs,",
        "Turn off the lights,",
        "Set a tim-",
    ],
)
def test_incomplete_sentences(text: str) -> None:
    assert not looks_complete(text)


def test_dangling_word_check_ignores_case_and_quotes() -> None:
    assert not looks_complete("Remind me AND.")
    assert not looks_complete('He said "the."')


@pytest.mark.parametrize(
    "text",
    ["Set a timer for it.", "Open the door for that.", "Play some music, bye."],
)
def test_whisper_fillers_after_a_dangling_word_are_not_complete(text: str) -> None:
    assert not looks_complete(text)


def test_a_real_sentence_may_end_on_them() -> None:
    # What tiny.en heard from a real reader (shared/audio/real/librivox-0870).
    assert looks_complete(
        "And Mr. John Dashwood had then leisure to consider how much there might be "
        "prudently in his power to do for them."
    )


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("Ten of clubs", "unsure"),
        ("10 of clubs.", "complete"),
        ("Can you run the test suite and", "incomplete"),
        ("Let me think...", "incomplete"),
        ("", "incomplete"),
    ],
)
def test_sentence_states(text: str, state: str) -> None:
    assert sentence_state(text) == state


@pytest.mark.parametrize("text", ["Do it.", "I love that.", "Bye.", "Turn it off."])
def test_short_complete_sentences_with_those_words_still_complete(text: str) -> None:
    assert looks_complete(text)
