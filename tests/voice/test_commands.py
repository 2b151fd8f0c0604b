"""Short spoken words as tables: which are backchannels ("mm-hmm"), which are only hums, how
an answer to a permission question is read, and which words a transcript adds to a request."""

from __future__ import annotations

import pytest

from voice.commands import (
    added_words,
    answer_goes_on,
    begins_with_stop,
    is_backchannel,
    is_bare_answer,
    is_hum,
    is_stop,
    permission_answer,
)


@pytest.mark.parametrize(
    ("text", "backchannel", "hum"),
    [
        ("Mm-hmm.", True, True),
        ("Um, 5.", False, False),  # a number says something
        ("Okay, 10.", False, False),
        ("Mmhmm", True, True),  # as Whisper writes it, in music too
        ("Uh-huh.", True, True),
        ("Oh.", True, True),
        ("Hmm.", True, True),
        ("Yeah.", True, False),  # a word: it may answer the reply
        ("Yeah, right.", True, False),
        ("Okay.", True, False),
        ("I see.", True, False),
        ("Got it.", True, False),
        ("Oh, I see.", True, False),
        ("Okay, go on.", True, False),
        ("Huh?", False, False),  # a question: "what?"
        ("Right?", False, False),
        ("Hmm?", False, False),
        ("Okay, stop.", False, False),  # a command
        ("Hmm, stop.", False, False),
        ("Stop.", False, False),
        ("Yes.", False, False),  # an answer, never taken for listening
        ("No.", False, False),
        ("Wait.", False, False),
        ("Yeah, but use the other file.", False, False),
        ("Oh, and update the README.", False, False),
        ("Mm-hmm, mm-hmm, yeah, right, okay.", False, False),  # too long to be only that
        ("Mm-hmm. Mm-hmm. Mm-hmm.", False, True),  # a hum, however long
        ("Hmm hmm hmm hmm hmm", False, True),  # (Whisper, in music)
        ("", False, False),
        ("...", False, False),
    ],
)
def test_a_backchannel_says_the_user_is_listening(text: str, backchannel: bool, hum: bool) -> None:
    assert is_backchannel(text) is backchannel
    assert is_hum(text) is hum


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("Stop.", True),
        ("Stop reading.", True),
        ("Please cancel the deploy.", True),
        ("Don't stop.", False),
        ("Read the stop list.", False),
        ("", False),
    ],
)
def test_a_request_that_begins_with_stop(text: str, stop: bool) -> None:
    assert begins_with_stop(text) is stop


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("Stop.", True),
        ("Cancel!", True),
        ("Okay, stop.", True),
        ("Stop, stop, stop.", True),
        ("Never mind.", True),
        ("Never mind that.", True),  # a stop phrase and a word
        ("Forget it, please.", True),
        ("Stop reading.", False),  # begins with stop: a request of its own
        ("Never mind the tests, just deploy it to staging.", False),  # a longer request
        ("Don't stop.", False),
        ("Okay.", False),
        ("", False),
    ],
)
def test_a_stop_command_is_short(text: str, stop: bool) -> None:
    assert is_stop(text) is stop


DASHWOOD = "And Mr. John Dashwood had then leisure to consider what might be done for them."


@pytest.mark.parametrize(
    ("heard", "before", "added"),
    [
        (DASHWOOD, DASHWOOD, ""),  # "them" is itself, though alike "then" (seen in the rig)
        ("Run the tests. Mm-hmm.", "Run the tests.", "Mm hmm"),
        ("Run the test. Mm-hmm.", "Run the tests.", "Mm hmm"),  # written a little differently
        ("Alright, delete it and the logs.", "All right, delete it.", "and the logs"),
        ("Run the tests in verbose mode", "Run the tests", "in verbose mode"),
        ("Run the tests.", "", "Run the tests"),
        ("", "Run the tests.", ""),
        ("Set a timer for 10 minutes", "Set a timer for", "10 minutes"),
    ],
)
def test_the_words_added_to_a_request_are_found_however_whisper_wrote_the_old_ones(
    heard: str, before: str, added: str
) -> None:
    assert added_words(heard, before) == added


@pytest.mark.parametrize(
    ("text", "decision", "bare"),
    [
        ("Yes.", "allow", True),
        ("Yes, please go ahead.", "allow", True),
        ("Okay.", "allow", True),
        ("Sure, do it.", "allow", True),
        ("Always.", "always", True),
        ("Yes, always.", "always", True),
        ("No.", "deny", True),
        ("No thanks.", "deny", True),
        ("Not always.", "deny", True),
        ("No, use yarn instead.", "deny", False),  # words for the agent
        ("Yes, and then commit it.", "allow", False),  # ... after the tool
        ("Yes, run the tests.", "allow", False),  # (only restates what was asked)
        ("Yes, only this once.", "allow", True),
        ("Yes, but only the unit tests.", None, False),  # a condition: no yes
        ("Sure, except the migrations.", None, False),
        ("Use yarn instead.", None, False),
        ("Maybe.", None, False),
        ("Okay, right.", "allow", True),
        ("Just now.", None, False),  # polite words alone answer nothing
        ("Go ahead.", "allow", True),
        ("Do it.", "allow", True),
        ("Sounds good.", "allow", True),
        ("Always deny.", "deny", True),  # "always" first, then a no: a no
        ("Always say no.", "deny", False),
        ("Sure, use pnpm instead.", None, False),
        # A yes taken back is no yes: nothing runs, and the agent reads the words.
        ("Yeah, no.", None, False),
        ("Yes, no.", None, False),
        ("Yes. No, wait, don't.", None, False),
        ("Yes, stop.", None, False),
        ("Go ahead, no wait.", None, False),
        ("Proceed, never mind, no.", None, False),
        ("Yes, don't push.", None, False),
        ("Sure, hold on.", None, False),
        ("Yes, actually let me check first.", None, False),
        ("Always, wait.", None, False),
        ("Yes, on second thoughts.", None, False),
        ("Yes. Scratch that.", None, False),
        ("Yes, hold it.", None, False),
        ("Yes, pause.", None, False),
        ("Go ahead. Don\u2019t!", None, False),  # Whisper's curly apostrophe
        ("Yes always, no wait.", "deny", False),  # "always" then a no, as "Always deny."
        ("Yeah, go ahead.", "allow", True),
        ("Yes please.", "allow", True),
        ("Sure, why not.", "allow", False),  # idioms of a yes take nothing back
        ("Yes, no problem.", "allow", False),
        ("Sure, I don't mind.", "allow", False),
        # A no that turns into a yes is still a no, but the agent reads the words.
        ("No, no, go ahead.", "deny", False),
        ("Nope, do it.", "deny", False),
    ],
)
def test_answers_to_a_permission_question(text: str, decision: str | None, bare: bool) -> None:
    assert permission_answer(text) == decision
    assert is_bare_answer(text) is bare


@pytest.mark.parametrize(
    ("text", "goes_on"),
    [
        ("Yes, and then commit it.", True),
        ("Sure, also update the docs.", True),
        ("Yes. After that, push to main.", True),
        ("Yes, run the tests.", False),
        ("Yeah, go ahead and run it.", False),
        ("Sure, why not.", False),
        ("Then yes.", False),  # the marker must follow the answer
    ],
)
def test_a_yes_that_goes_on_has_more_for_the_agent(text: str, goes_on: bool) -> None:
    assert answer_goes_on(text) is goes_on
