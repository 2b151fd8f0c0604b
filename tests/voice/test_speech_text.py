"""Markdown to speakable text, sentence splitting, and the streaming sentence cutter."""

from __future__ import annotations

import random

import pytest

from core.errors import ConfigError
from voice.speech_text import (
    CODE_OMITTED,
    SentenceStream,
    speakable,
    speech_pieces,
    split_sentences,
    spoken_terms,
)

# --- speakable -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "spoken"),
    [
        (
            "Run this:\n\n```bash\nrm -rf build. Then\nmake\n```\n\nDone.",
            "Run this. Code omitted. Done.",
        ),
        ("~~~\nprint('hi')\n~~~\nAfter.", "Code omitted. After."),
        ("Call `load_config()` first.", "Call load config first."),
        ("See [the guide](https://x.org/a_(b)) now.", "See the guide now."),
        ("Docs: https://www.python.org/3/library. Read them.", "Docs: python.org. Read them."),
        ("Open <https://example.com/x> please.", "Open example.com please."),
        ("Look ![a chart](chart.png) here.", "Look here."),
        ("## Install ##\nText.", "Install. Text."),
        ("- first\n- second item\n* third\n+ fourth\n1. fifth\n2) sixth", None),
        ("**Bold**, *italic*, ***both***, __strong__, _em_ and ~~gone~~.", None),
        ("Keep snake_case_names and my_var, even __dunder__ style.", None),
        ("| Name | Size |\n|:-----|-----:|\n| a.txt | 3 KB |\n", "Name, Size. a.txt, 3 KB."),
        (
            "> Quoted *line*\n> continues here.\n>\n> > Nested.",
            "Quoted line continues here. Nested.",
        ),
        ("<details><summary>More</summary>Hidden &amp; shown</details>", "More Hidden & shown."),
        ("Above.\n\n---\n\n***\nBelow.", "Above. Below."),
        ("Lots   of\n\n\n   space\there.", "Lots of. space here."),
        ("Escaped \\*stars\\* stay.", "Escaped *stars* stay."),
        ("Title\n=====\nBody", "Title. Body."),
        ("See note[^1].\n\n[^1]: The note.\n[ref]: https://x.org", "See note."),
    ],
)
def test_speakable(markdown: str, spoken: str | None) -> None:
    expected = {
        "- first\n- second item\n* third\n+ fourth\n1. fifth\n2) sixth": (
            "first. second item. third. fourth. fifth. sixth."
        ),
        "**Bold**, *italic*, ***both***, __strong__, _em_ and ~~gone~~.": (
            "Bold, italic, both, strong, em and gone."
        ),
        "Keep snake_case_names and my_var, even __dunder__ style.": (
            "Keep snake case names and my var, even dunder style."
        ),
    }
    assert speakable(markdown) == (spoken if spoken is not None else expected[markdown])


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("Fixed voice/loop.py:231 today", "Fixed loop.py, line 231 today"),
        ("See ~/.config/voice-assistant/config.toml", "See config.toml"),
        ("in ./build/ and ../frontend", "in build and frontend"),
        ("Check /var/log/syslog now", "Check syslog now"),
        ("I changed a/b.py. Then src/c.css.", "I changed b.py. Then c.css."),
        ("src/app/Button.tsx:12:4 broke", "Button.tsx, line 12 broke"),
        ("tests/test_x.py::test_y failed", "test x.py test y failed"),
        ("config.py:120 is wrong", "config.py, line 120 is wrong"),
        ("the _gate of hears_over_reply()", "the gate of hears over reply"),
        ("set __init__ and self._cache", "set init and self.cache"),
        ("run it with --dry-run or --port 8081", "run it with dry run or port 8081"),
        ("855ms, 1.5s, 1.2 s, ~5 min, 24h, 1 s", None),
        ("the 500ms hold and the 5 min wait", "the 500 milliseconds hold and the 5 minutes wait"),
        ("2.4x faster vs. 1.1x", "2.4 times faster versus 1.1 times"),
        ("a -> b, c && d, e.g. this, i.e. that", "a to b, c and d, for example this, that is that"),
        # Not technical terms: these stay as they are.
        ("and/or TCP/IP at 10:30 in km/h, stdin/stdout/stderr", None),
        ("3/5 suites on 12/05/2026", None),
        ("the 1990s and 1800s", None),
        ("0x1F, 4x4, 3 x 4, Python 3.11, v2.3.1, 45% -> 12%", None),
        ("a -b flag, x-y, well-known, 10 - 3", None),
        ("React/Next.js and TypeScript/Node.js", None),
        ("returned 500s and 404s in the 80s and '90s, not 120s", None),
        ("the 0x prefix, example.com:8080, localhost:3000", None),
        ("It works --mostly-- fine.", None),
    ],
)
def test_technical_terms_are_said_as_a_person_reads_them(written: str, said: str | None) -> None:
    expected = {
        "855ms, 1.5s, 1.2 s, ~5 min, 24h, 1 s": (
            "855 milliseconds, 1.5 seconds, 1.2 seconds, about 5 minutes, 24 hours, 1 second"
        ),
        "0x1F, 4x4, 3 x 4, Python 3.11, v2.3.1, 45% -> 12%": (
            "0x1F, 4x4, 3 x 4, Python 3.11, v2.3.1, 45% to 12%"
        ),
    }
    assert spoken_terms(written) == expected.get(written, said or written)


def test_a_path_in_a_code_span_is_said_by_its_name() -> None:
    assert speakable("I edited `core/store.py:42`.") == "I edited store.py, line 42."


@pytest.mark.parametrize(
    ("markdown", "spoken"),
    [
        ("Look in ./build/ and ../frontend now.", "Look in build and frontend now."),
        ("Run it from ./scripts/run.sh today.", "Run it from run.sh today."),
        ("The workflow is in .github/workflows/ci.yml today.", "The workflow is in ci.yml today."),
        ("It took 20s , then 3 more .", "It took 20 seconds, then 3 more."),
    ],
)
def test_a_bare_path_keeps_the_word_before_it(markdown: str, spoken: str) -> None:
    # Spaces before punctuation are closed up; a "." that begins a path is not punctuation.
    assert speakable(markdown) == spoken


def test_speakable_drops_a_reply_with_nothing_to_say() -> None:
    assert speakable("") == ""
    assert speakable("---\n\n![](x.png)\n\n<br>") == ""


def test_an_unclosed_fence_is_still_one_code_omitted() -> None:
    assert speakable("Here:\n```python\nx = 1\ny = 2") == "Here. " + CODE_OMITTED


def test_inline_code_is_not_treated_as_markup() -> None:
    assert speakable("Set `__init__` and `a*b*c`.") == "Set init and a*b*c."


# --- split_sentences -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        (
            "Use a tool, e.g. grep, i.e. a search. Next.",
            ["Use a tool, e.g. grep, i.e. a search.", "Next."],
        ),
        (
            "Mr. Smith and Dr. Jones met vs. the rest. Fine.",
            ["Mr. Smith and Dr. Jones met vs. the rest.", "Fine."],
        ),
        (
            "Pi is 3.14 and we run v1.2.3 today. Yes.",
            ["Pi is 3.14 and we run v1.2.3 today.", "Yes."],
        ),
        ("Well... maybe not. So... Then yes.", ["Well... maybe not.", "So...", "Then yes."]),
        ("Wait\u2026 what? Fine.", ["Wait\u2026 what?", "Fine."]),
        ("J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it.", "Read it."]),
        (
            "Apples, pears, etc. are fruit. Cars etc. Next one.",
            ["Apples, pears, etc. are fruit.", "Cars etc.", "Next one."],
        ),
        (
            "He lives in the U.S. and works. In the U.S. We agree.",
            ["He lives in the U.S. and works.", "In the U.S.", "We agree."],
        ),
        ('She said "stop." Then left.', ['She said "stop."', "Then left."]),
        ("Line one.\nLine two.", ["Line one.", "Line two."]),
        ("", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


# --- SentenceStream --------------------------------------------------------------------------

REPLY = """# Plan

Sure, I looked at the repository and found three problems, which I describe below in order.
The first one is in `config.py`: the loader ignores `timeout_s`. The second is a typo, e.g. in
the [README](https://example.com/readme.md). Version 2.1.0 fixed it... Anyway, see below.

1. Fix the loader. It's quick.
2. Update the **docs** and the *examples*.
- [ ] Check https://github.com/org/repo/issues/12 too.

```python
def load(path: str) -> dict:
    return {"a": 1}. # not a sentence
```

| File | Lines |
|------|-------|
| config.py | 120 |

> Note: Mr. Smith reviews it, etc. Thanks!

That's all for now, let me know."""


def _stream(text: str, sizes: random.Random | None, stream: SentenceStream) -> list[list[str]]:
    """Feed ``text`` in random-sized deltas; each element is what one call returned."""
    calls: list[list[str]] = []
    i = 0
    while i < len(text):
        n = sizes.randint(1, 25) if sizes else len(text)
        calls.append(stream.feed(text[i : i + n]))
        i += n
    calls.append(stream.flush())
    return calls


@pytest.mark.parametrize("seed", range(12))
def test_random_deltas_give_the_one_shot_text(seed: int) -> None:
    calls = _stream(REPLY, random.Random(seed), SentenceStream(first_chunk_max_chars=40))
    chunks = [c for call in calls for c in call]
    assert " ".join(chunks) == speakable(REPLY)
    assert all(c.strip() == c and any(ch.isalnum() for ch in c) for c in chunks)
    # Sentences come out while the reply is still arriving, not all at flush.
    assert len(calls[-1]) == 1
    assert sum(1 for call in calls[:-1] if call) >= 8


def test_one_shot_sentences_are_the_expected_ones() -> None:
    chunks = [c for call in _stream(REPLY, None, SentenceStream(10_000)) for c in call]
    assert chunks == [
        "Plan.",
        "Sure, I looked at the repository and found three problems, which I describe below in "
        "order.",
        "The first one is in config.py: the loader ignores timeout s.",
        "The second is a typo, for example in the README.",
        "Version 2.1.0 fixed it...",
        "Anyway, see below.",
        "Fix the loader.",
        "It's quick.",
        "Update the docs and the examples.",
        "Check github.com too.",
        CODE_OMITTED,
        "File, Lines.",
        "config.py, 120.",
        "Note: Mr. Smith reviews it, etc.",
        "Thanks!",
        "That's all for now, let me know.",
    ]


def test_a_sentence_comes_out_the_moment_its_full_stop_is_followed_by_a_space() -> None:
    text = "It works. Really well! Does it? Yes"
    stream = SentenceStream()
    emitted_at: dict[str, int] = {}
    for i, ch in enumerate(text):
        for chunk in stream.feed(ch):
            emitted_at[chunk] = i
    assert emitted_at == {"It works.": 9, "Really well!": 22, "Does it?": 31}
    assert stream.flush() == ["Yes."]


def test_an_abbreviation_waits_for_the_next_character() -> None:
    stream = SentenceStream()
    assert stream.feed("Buy apples, pears, etc. ") == []
    assert stream.feed("and") == []  # lower case: the sentence goes on
    assert stream.feed(" more, etc. ") == []
    assert stream.feed("Then") == ["Buy apples, pears, etc. and more, etc."]


def test_nothing_is_spoken_inside_an_open_code_fence() -> None:
    stream = SentenceStream()
    assert stream.feed("Try this.\n") == ["Try this."]
    assert stream.feed("```sh\necho one. two. three.\n") == []
    assert stream.feed("echo four. five.\n``") == []
    assert stream.feed("`\n") == [CODE_OMITTED]
    assert stream.feed("Then run it. ") == ["Then run it."]
    assert stream.flush() == []


def test_a_fence_left_open_at_the_end_is_still_announced_once() -> None:
    stream = SentenceStream()
    assert stream.feed("```\nx = 1. y = 2.\n") == []
    assert stream.flush() == [CODE_OMITTED]


def test_chunks_with_nothing_speakable_are_dropped() -> None:
    stream = SentenceStream()
    out = stream.feed("![](img.png)\n\n---\n\n<br>\n\n**   **\n\n") + stream.flush()
    assert out == []


def test_a_long_first_sentence_is_cut_at_a_clause_boundary() -> None:
    first = "Sure, I looked at the repository in detail, and there are three problems worth fixing."
    stream = SentenceStream(first_chunk_max_chars=50)
    chunks = stream.feed(first + " The second sentence is also rather long, but it is not cut. ")
    assert chunks == [
        "Sure, I looked at the repository in detail,",
        "and there are three problems worth fixing.",
        "The second sentence is also rather long, but it is not cut.",
    ]


def test_the_first_cut_prefers_a_boundary_within_the_limit_then_the_first_after_it() -> None:
    stream = SentenceStream(first_chunk_max_chars=20)
    text = "Right now the build is failing; it fails on the linker step, sadly."
    assert stream.feed(text + " ") == [
        "Right now the build is failing;",
        "it fails on the linker step, sadly.",
    ]


def test_the_first_cut_takes_the_last_boundary_within_the_limit() -> None:
    stream = SentenceStream(first_chunk_max_chars=40)  # boundaries at 16 and 38 characters
    assert stream.feed("Well, right now, the build is failing; it fails on the linker step. ") == [
        "Well, right now, the build is failing;",
        "it fails on the linker step.",
    ]


@pytest.mark.parametrize(
    ("markdown", "spoken"),
    [
        ("Run `make test. Then` now.", "Run make test. Then now."),
        ("See [the docs. Really](http://x.y/z) here.", "See the docs. Really here."),
        ("This is *very. Important* stuff.", "This is very. Important stuff."),
        ("Use ~~old. Thing~~ now.", "Use old. Thing now."),
        ("This is **very. Important** stuff.", "This is very. Important stuff."),
        ("Set __all. Of__ it.", "Set all. Of it."),
    ],
)
def test_a_sentence_end_inside_markup_does_not_cut_it(markdown: str, spoken: str) -> None:
    # Cut inside a code span, a link or emphasis, each piece would clean on its own and
    # keep its half of the markup ("Run `make test.").
    assert SentenceStream(0).feed(markdown + " Done. ") == [spoken, "Done."]
    assert speakable(markdown) == spoken


@pytest.mark.timeout(20)
def test_one_enormous_word_is_cut_where_it_must_be() -> None:
    # A voice's memory grows with the square of what it is given (a blob in a reply).
    word = "x" * 400
    assert SentenceStream(0).feed(f"Checked out {word} now. ") == [
        "Checked out",
        "x" * 300,
        "x" * 100 + " now.",
    ]


def test_text_for_a_file_is_cut_as_a_reply_is() -> None:
    """`say` with 1000 words and no full stop handed Piper all of it at once (10 GB)."""
    words = " ".join(["word"] * 1000)
    pieces = speech_pieces(f"Short. {words}")
    assert pieces[0] == "Short." and all(len(p) <= 300 for p in pieces)
    assert " ".join(pieces[1:]) == words
    assert speech_pieces("A " + "b" * 700) == ["A", "b" * 300, "b" * 300, "b" * 100]


def test_a_short_first_sentence_or_one_without_clauses_is_not_cut() -> None:
    no_clause = "This first sentence is long but has no clause boundary anywhere in it at all."
    assert SentenceStream(20).feed(no_clause + " ") == [no_clause]
    assert SentenceStream(20).feed("Yes, it is. ") == ["Yes, it is."]
    assert SentenceStream(0).feed("Sure, this is a first sentence that is not cut, ever. ") == [
        "Sure, this is a first sentence that is not cut, ever."
    ]


def test_very_long_sentences_are_bounded() -> None:
    clause = "this clause keeps going with more and more words"
    sentence = ", ".join([clause] * 12).capitalize() + "."
    stream = SentenceStream(first_chunk_max_chars=10_000, long_sentence_max_chars=120)
    chunks = stream.feed("Short one. " + sentence + " ")
    assert chunks[0] == "Short one."
    assert len(chunks) > 5
    assert all(len(c) <= 120 for c in chunks)
    assert " ".join(chunks[1:]) == sentence
    # No clause at all: it is cut between words.
    words = " ".join(["word"] * 100) + "."
    cut = SentenceStream(long_sentence_max_chars=120).feed(words + " ")
    assert all(len(c) <= 120 for c in cut) and " ".join(cut) == words


def test_the_stream_starts_afresh_after_flush() -> None:
    stream = SentenceStream(first_chunk_max_chars=30)
    long_first = "Well, this is the first sentence of a reply, and it is long."
    assert len(stream.feed(long_first + " ")) == 2
    assert stream.flush() == []
    assert len(stream.feed(long_first + " ")) == 2  # a new reply: its first chunk is cut again


def test_bad_limits_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="first_chunk_max_chars"):
        SentenceStream(-1)


_FRAGMENTS = (
    *(
        "Hello",
        "world.",
        " ",
        " ",
        "\n",
        "\n\n",
        "e.g.",
        "etc.",
        "...",
        "Mr.",
        "J.",
        "U.S.",
        "3.14",
    ),
    *("**", "*", "_", "__", "`", "```", "~~", "[", "](", "http://x.y/a", ")", "# ", "- ", "1. "),
    *("> ", "| ", "|", "---", "!", "?", "a", "The", "snake_case", ",", ";", " - ", "<b>", "</b>"),
    *("&amp;", "\\*", "![", '"', ":", "Then", "and", "\r\n", "~~~"),
)


@pytest.mark.parametrize("seed", range(4))
def test_any_markdown_streams_to_the_same_text(seed: int) -> None:
    """Random (mostly malformed) Markdown, random deltas: streaming never changes the words."""
    rng = random.Random(seed)
    for _ in range(150):
        markdown = "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 60)))
        stream = SentenceStream(rng.choice([0, 10, 40, 60]))
        calls = _stream(markdown, rng, stream)
        assert " ".join(c for call in calls for c in call) == speakable(markdown), markdown
