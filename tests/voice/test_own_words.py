"""The reply's own words heard back (voice.own_words): which transcripts are echo, and when
a sentence could be heard."""

from __future__ import annotations

import pytest

from voice.own_words import LATE_S, SaidLog, heard_back, says, split_echo

REPLY = [
    "You said:",
    "Please read me the whole shopping list for the weekend slowly and one item at a time.",
]


@pytest.mark.parametrize(
    ("heard", "echo"),
    [
        ("Hopping list.", True),  # seen in the rig: "shopping list" through the canceller
        ("the whole shopping list", True),
        ("The whole list for the weekend.", True),  # Whisper lost one faint word
        ("You said, please read me.", True),  # across the two sentences
        ("Slowly, and one item at a time.", True),
        ("Time.", False),  # one word may well be the user's
        ("Stop reading.", False),  # ... and so may "stop"
        ("Stop.", False),
        ("Read me the weather for the weekend.", False),  # the user's own request
        ("list shopping", False),  # out of order
        ("the whole list weekend", False),  # too many said words missing
        ("Please read me the shopping list.", True),  # one missing in 6 heard
        ("Please me the shopping list.", False),  # two missing in 5
        ("the whole list", False),  # one missing in 3 is too many
        ("", False),
        ("...", False),
    ],
)
def test_a_transcript_is_echo_only_when_it_is_a_run_of_the_replys_words(
    heard: str, echo: bool
) -> None:
    assert heard_back(heard, REPLY) is echo


def test_nothing_said_hears_nothing_back() -> None:
    assert not heard_back("the whole shopping list", [])


@pytest.mark.parametrize("heard", ["Stop it.", "Stop reading.", "Okay, stop reading."])
def test_stop_is_never_the_replys_echo_even_in_its_words(heard: str) -> None:
    said = ["Say okay, stop reading now, or stop it at any time."]
    assert heard_back("or stop it at any time", said)  # the reply's words: no command
    assert not heard_back(heard, said)


VOICE = "He might even have been made amiable himself."


@pytest.mark.parametrize(
    ("heard", "echo", "said"),
    [
        ("Hopping list.", "Hopping list.", ""),
        (f"Please read me. {VOICE}", "Please read me.", VOICE),  # the echo, then the voice
        (
            f"Please read me! The whole shopping list. {VOICE}",
            "Please read me! The whole shopping list.",
            VOICE,
        ),
        (VOICE, "", VOICE),
        (f"{VOICE} Shopping list.", "", f"{VOICE} Shopping list."),  # only before the voice
        (f"Time. {VOICE}", "", f"Time. {VOICE}"),  # one word may be the user's
        (f"Stop it. {VOICE}", "", f"Stop it. {VOICE}"),
        # Two words are too few to cut from before the user's words: maybe theirs.
        (f"Shopping list. {VOICE}", "", f"Shopping list. {VOICE}"),
        (" Please read me the whole shopping list ", "Please read me the whole shopping list", ""),
    ],
)
def test_the_echo_is_the_whole_transcript_or_its_first_sentences(
    heard: str, echo: str, said: str
) -> None:
    assert split_echo(heard, REPLY) == (echo, said)


def said_log(steps: list[tuple[str, float, float | str]]) -> SaidLog:
    """("begin", at, text), ("played", at, seconds), ("pause"|"resume"|"stop", at, 0), and
    ("reply", at, 0) for the next reply's sentences."""
    log = SaidLog()
    reply = log.new_reply()
    for step, at, arg in steps:
        if step == "begin":
            assert isinstance(arg, str)
            log.begin(arg, at, reply)
        elif step == "reply":
            reply = log.new_reply()
        elif step == "played":
            assert isinstance(arg, float)
            log.played(arg, at)
        else:
            getattr(log, step)(at)
    return log


TWO = [("begin", 10.0, "one"), ("played", 10.0, 2.0), ("begin", 10.5, "two"), ("played", 10.5, 3.0)]


@pytest.mark.parametrize(
    ("steps", "window", "heard"),
    [
        # "one" plays 10-12 s; "two" was given at 10.5 s and plays after it, 12-15 s.
        (TWO, (9.0, 9.5), []),
        (TWO, (10.2, 10.4), ["one"]),
        (TWO, (11.0, 13.0), ["one", "two"]),
        (TWO, (12.0 + LATE_S + 0.1, 14.0), ["two"]),  # "one" is over, its echo too
        (TWO, (15.0 + LATE_S + 0.1, 17.0), []),
        # A pause of 4 s at 11 s: what was still to play plays 4 s later.
        ([*TWO, ("pause", 11.0, 0), ("resume", 15.0, 0)], (18.0, 18.5), ["two"]),
        ([*TWO, ("pause", 11.0, 0), ("resume", 15.0, 0)], (19.0 + LATE_S + 0.1, 21.0), []),
        # Stopped at 11 s: nothing plays after it.
        ([*TWO, ("stop", 11.0, 0)], (11.0 + LATE_S + 0.1, 14.0), []),
        # Paused at 13 s, after "one" was over: only what was still to play moves.
        ([*TWO, ("pause", 13.0, 0), ("resume", 17.0, 0)], (12.0 + LATE_S + 0.1, 13.5), ["two"]),
        # A sentence given after a pause plays after what the pause moved.
        (
            [
                *TWO,
                ("pause", 11.0, 0),
                ("resume", 15.0, 0),
                ("begin", 15.5, "three"),
                ("played", 15.5, 1.0),
            ],
            (20.5, 20.9),
            ["three"],
        ),
        # ... and one given after a stop plays at once.
        (
            [*TWO, ("stop", 11.0, 0), ("begin", 11.5, "three"), ("played", 11.5, 1.0)],
            (14.0, 14.5),
            [],
        ),
        # The speaker ran dry before "three" was given: it plays from when it was given.
        ([*TWO, ("begin", 20.0, "three"), ("played", 20.0, 1.0)], (20.5, 21.0), ["three"]),
        # Given in several chunks, a sentence ends after the last of them.
        (
            [("begin", 10.0, "long"), ("played", 10.0, 1.0), ("played", 10.4, 1.0)],
            (12.0 + LATE_S - 0.1, 13.5),
            ["long"],
        ),
    ],
)
def test_a_sentence_could_be_heard_while_it_played_and_a_moment_after(
    steps: list[tuple[str, float, float | str]], window: tuple[float, float], heard: list[str]
) -> None:
    assert said_log(steps).around(*window) == heard


@pytest.mark.parametrize(
    ("began", "window", "echo"),
    [
        ([(11.0, True)], (10.7, 12.5), True),  # speech began over the reply: its echo
        ([(11.0, False)], (10.7, 12.5), False),  # once the reply was over: the user's answer
        ([], (10.7, 12.5), False),
        ([(5.0, True)], (10.7, 12.5), False),  # (speech over an earlier reply)
        ([(20.5, True)], (20.0, 21.0), False),  # over a later reply, not this sentence
        # A request begun before the reply and going on over it ("continue"): its words
        # may be the reply's ("You said: ..."), and are the user's.
        ([(9.0, False), (11.0, True)], (8.7, 12.5), False),
    ],
)
def test_only_speech_begun_over_the_reply_is_taken_for_its_echo(
    began: list[tuple[float, bool]], window: tuple[float, float], echo: bool
) -> None:
    log = said_log([("begin", 10.0, REPLY[1]), ("played", 10.0, 5.0)])
    for at, over_reply in began:
        log.speech_began(at, over_reply=over_reply)
    heard = "the whole shopping list"
    assert log.split(heard, *window) == ((heard, "") if echo else ("", heard))
    weather = "Read me the weather for the weekend."
    assert log.split(weather, *window) == ("", weather)


def test_a_request_begun_over_one_reply_is_not_taken_for_the_next_ones_echo() -> None:
    """Said over reply 1, sent, and echoed by reply 2 ("You said: ..."); the user goes on
    over reply 2: the joined request begins over reply 1, and only its words could be echo."""
    request = "What is the weather in Paris?"
    log = said_log(
        [
            ("begin", 10.0, "You said: tell me a joke."),
            ("played", 10.0, 2.0),
            ("reply", 14.0, 0),
            ("begin", 14.0, f"You said: {request}"),
            ("played", 14.0, 2.0),
        ]
    )
    log.speech_began(11.0, over_reply=True)  # the request, over reply 1
    log.speech_began(14.5, over_reply=True)  # going on, over reply 2
    heard = f"{request} And in London tomorrow morning, please."
    assert log.split(heard, 10.7, 17.0) == ("", heard)
    # What went on over reply 2 alone is checked against reply 2.
    assert log.split(f"{request} Tomorrow?", 14.2, 17.0) == (request, "Tomorrow?")


@pytest.mark.parametrize(
    ("phrase", "said", "expected"),
    [
        ("Hey Jarvis", ["You said: hey, Jarvis.", "Go on."], True),
        ("Hey Jarvis", ["You said: hey", "Jarvis, go on."], True),  # across sentences
        ("Hey Jarvis", ["Hey there, Jarvis."], False),  # not in a row
        ("Hey Jarvis", ["Jarvis, hey."], False),
        ("Alexa", ["Ask Alexa."], True),
        ("Alexa", ["Alex, here is the list."], False),  # written words match exactly
        ("Hey Mycroft", ["Hey, Microsoft!"], False),
        ("Okay Nabu", ["OK, Nabu."], True),  # Piper says "okay" either way
        ("Hey Jarvis", ["That is Hey Jarvis's list."], True),
        ("Okay Nabu", [], False),
        ("", ["Anything at all."], False),
    ],
)
def test_the_reply_says_the_wake_word_only_with_its_words_in_a_row_as_written(
    phrase: str, said: list[str], expected: bool
) -> None:
    assert says(phrase, said) is expected
