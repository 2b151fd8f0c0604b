"""Turning an agent's Markdown reply into text a voice can speak, sentence by sentence.

Three entry points share one parser, so the streaming path and the one-shot path agree by
construction:

- :func:`speakable` cleans a whole reply (code blocks become "Code omitted.", links their
  text, bare URLs their host, list items and headings sentences of their own ...);
- :func:`split_sentences` splits plain text into sentences without breaking on
  abbreviations, decimals, version numbers, ellipses followed by lower case, or initials;
- :class:`SentenceStream` takes the reply as the agent writes it and hands out each sentence
  the moment it is certainly complete, already cleaned; ``" ".join`` of everything it
  returns equals :func:`speakable` of the whole reply.

The parser reads Markdown line by line (block structure: fences, headings, lists, tables,
quotes) and cuts the text of each block at sentence boundaries *in the raw Markdown*, only
where no inline construct (code span, link, emphasis) is left open; each piece is then
cleaned on its own. A boundary depends only on the text before it and at most one
character after it, so feeding the reply in any pieces yields the same sentences.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Literal
from urllib.parse import urlsplit

from core.errors import ConfigError

CODE_OMITTED = "Code omitted."
LONG_SENTENCE_MAX_CHARS = 300  # longer sentences are split too, to bound synthesis time
_MIN_PART_CHARS = 8  # a clause split never leaves a piece shorter than this (~2 words)

# --- inline Markdown -------------------------------------------------------------------------

_SLOT_BASE = 0xF0000  # private-use characters stand in for protected text while cleaning
_SLOT = re.compile("[\U000f0000-\U000f0fff]")
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_URL_TARGET = r"\((?:[^()\s]|\([^()\s]*\))*(?:\s+\"[^\"]*\")?\)"  # one level of () in URLs
_LINK_TARGET = re.compile(r"\]" + _URL_TARGET)
_IMAGE = re.compile(r"!\[([^\]]*)\]" + _URL_TARGET)
_LINK = re.compile(r"\[([^\]]+)\]" + _URL_TARGET)
_REF_LINK = re.compile(r"\[([^\]^][^\]]*)\]\[[^\]]*\]")
_FOOTNOTE = re.compile(r"\[\^[^\]]+\]")
_AUTOLINK = re.compile(r"<((?:https?|ftp)://[^>\s]+|www\.[^>\s]+)>")
_BARE_URL = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>()\[\]\"']+")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>|<!--.*?-->", re.S)
# Emphasis needs a non-space just inside both markers; "_" must not touch a word on the
# outside, so snake_case and __dunder__-like identifiers keep their underscores.
_STAR_EMPHASIS = re.compile(r"(?<!\*)(\*{1,3})(?=[^\s*])(.+?)(?<=[^\s*])\1(?!\*)", re.S)
_UNDERSCORE_EMPHASIS = re.compile(r"(?<![\w_])(_{1,3})(?=[^\s_])(.+?)(?<=[^\s_])\1(?![\w_])", re.S)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.S)
# Terminal colour codes, other control characters and lone UTF-16 surrogates (an agent's
# JSON can spell them all) are no text: Piper refuses NUL and cannot encode a surrogate, and
# the reply would stop there.
_UNSPEAKABLE = re.compile("\x1b\\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# (A "." that begins a path or a name, "./build", ".github", is not punctuation.)
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,;:!?)]|\.(?![\w/.~]))")
_REPEATED_COMMAS = re.compile(r",(?:\s*,)+")


def _host(url: str) -> str:
    """What a listener needs of a URL: its host without ``www.`` (or just "link")."""
    try:
        host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    except ValueError:
        host = ""
    return host.removeprefix("www.") or "link"


def _bare_url(match: re.Match[str]) -> str:
    url = match.group(0)
    core = url.rstrip(".,;:!?")  # sentence punctuation after a URL is not part of it
    return _host(core) + url[len(core) :]


def _unwrap(pattern: re.Pattern[str], text: str, group: int) -> str:
    """Replace matches by their inner text until none are left (emphasis nests)."""
    while True:
        new = pattern.sub(lambda m: m.group(group), text)
        if new == text:
            return text
        text = new


def clean_inline(text: str) -> str:
    """Inline Markdown to plain words: markers go, the words they mark stay."""
    slots: list[str] = []

    def protect(kept: str) -> str:
        slots.append(kept)
        return chr(_SLOT_BASE + len(slots) - 1)

    text = _UNSPEAKABLE.sub(" ", text)
    text = _CODE_SPAN.sub(lambda m: protect(m.group(2).strip()), text)
    text = _ESCAPE.sub(lambda m: protect(m.group(1)), text)
    text = _IMAGE.sub(" ", text)  # a picture has nothing to say out loud
    text = _LINK.sub(r"\1", text)
    text = _REF_LINK.sub(r"\1", text)
    text = _FOOTNOTE.sub("", text)
    text = _AUTOLINK.sub(lambda m: protect(_host(m.group(1))), text)
    text = _BARE_URL.sub(lambda m: protect(_bare_url(m)), text)
    text = _HTML_TAG.sub(" ", text)
    text = _unwrap(_STAR_EMPHASIS, text, 2)
    text = _unwrap(_UNDERSCORE_EMPHASIS, text, 2)
    text = _unwrap(_STRIKE, text, 1)
    text = html.unescape(text.replace("|", ","))  # table cells without a leading pipe
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", _REPEATED_COMMAS.sub(",", text)).strip(" ,")
    return spoken_terms(_SLOT.sub(lambda m: slots[ord(m.group(0)) - _SLOT_BASE], text))


def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


# --- technical terms, as a person would say them ------------------------------------------------

# A path: a file's name after parts joined by "/", or anything after "/", "~/", "./" or "../"
# or before a last "/". Said by its last part (as tool lines name a file), and a ":LINE"
# after it as ", line LINE".
_PATH = re.compile(
    r"(?<![\w@/.~:-])(~/|\.{1,2}/|/)?((?:[\w.@+-]+/)*[\w.@+-]*[A-Za-z][\w.@+-]*)(/?)"
    r"(?::(\d+)(?:[:-]\d+)?)?(?![\w/])"
)
_FILE_NAME = re.compile(r"[\w@+-]+\.[A-Za-z][A-Za-z0-9]{0,5}")
_NODE = re.compile(r"(?<=\w)::(?=\w)")  # pytest's file::test, C++'s a::b
_CALL = re.compile(r"(?<=\w)\(\)")
_FLAG = re.compile(r"(?<![\w-])--([A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*)(?![\w-])")
# Files a line number is said for when no folder marks them as files ("example.com:8080" is not).
_SOURCE_FILES = _words(
    "py pyi js jsx ts tsx mjs cjs json toml yaml yml md rst txt ini cfg conf sh bash zsh c h cc "
    "cpp hpp cxx rs go java kt kts scala rb php cs swift m mm lua pl r sql html htm css scss vue "
    "svelte ex exs erl hs ml dart zig nim tf proto xml gradle mk cmake lock env ipynb"
)
_UNDERSCORES = re.compile(r"(?<=[A-Za-z0-9])_+(?=[A-Za-z0-9])")
_EDGE_UNDERSCORES = re.compile(r"(?<![\w])_+(?=[A-Za-z0-9])|(?<=[A-Za-z0-9])_+(?![\w])")
_UNITS = {
    "ms": ("millisecond", "milliseconds"),
    "s": ("second", "seconds"),
    "sec": ("second", "seconds"),
    "min": ("minute", "minutes"),
    "h": ("hour", "hours"),
    "x": ("times", "times"),
}
# A number and its unit: "855ms", "1.5 s", "~5 min", "2.4x". Not "3 x 4", nor "0x"; a bare
# "s" only after a decimal or one or two digits, and not after "the" or "'": "the 80s", "'90s",
# "the 1990s", HTTP's "500s" stay.
_AMOUNT = re.compile(
    r"(?<![\w.])(~\s?)?(?:(?<!the )(?<!')(\d+\.\d+|\d{1,2})(s)"
    r"|(\d+(?:\.\d+)?)(?:(ms|x)|\s?(ms|sec|min|h)|\s(s)))(?![\w%])"
)
_WORDS = [
    (re.compile(r"\s(?:->|=>|\u2192)\s"), " to "),
    (re.compile(r"\s&&\s"), " and "),
    (re.compile(r"(?<![\w.])vs\.?(?=\s)"), "versus"),
    (re.compile(r"(?<![\w.])e\.g\.(?=[\s,])"), "for example"),
    (re.compile(r"(?<![\w.])i\.e\.(?=[\s,])"), "that is"),
    (re.compile(r"(?<![\w.~])~(?=\d)"), "about "),
]


def _path(match: re.Match[str]) -> str:
    lead, body, trail, line = match.group(1), match.group(2), match.group(3), match.group(4)
    kept = body.rstrip(".")  # a sentence's full stop is not part of the name
    end, body = body[len(kept) :], kept
    parts = [p for p in body.split("/") if p]
    if not parts:
        return match.group(0)
    name = parts[-1]
    named_file = _FILE_NAME.fullmatch(name) is not None
    # "and/or", "stdin/stdout/stderr" stay; a path is marked by its start, its end or a file.
    if not (lead or trail or (len(parts) > 1 and named_file) or line):
        return match.group(0)
    if len(parts) == 1 and line and not lead and not _source_file(name):
        return match.group(0)  # "at 10:30" is a time, "example.com:8080" a port
    if len(parts) == 2 and not (lead or trail) and parts[0][0].isupper():
        return match.group(0)  # "React/Next.js", "TypeScript/Node.js": names, not a folder
    return (f"{name}, line {line}" if line else name) + end


def _source_file(name: str) -> bool:
    return _FILE_NAME.fullmatch(name) is not None and name.rsplit(".", 1)[1] in _SOURCE_FILES


def _amount(match: re.Match[str]) -> str:
    about = match.group(1)
    number = match.group(2) or match.group(4)
    unit = match.group(3) or match.group(5) or match.group(6) or match.group(7)
    if unit == "x" and float(number) == 0:
        return match.group(0)  # "0x": a hex prefix
    one, more = _UNITS[unit]
    return f"{'about ' if about else ''}{number} {one if number == '1' else more}"


def spoken_terms(text: str) -> str:
    """Technical terms as a person reading them out would say them: a path by its file's name
    ("voice/loop.py:231" -> "loop.py, line 231"), identifiers without underscores or call
    parentheses ("_gate", "hears_over_reply()" -> "gate", "hears over reply"), flags without
    dashes ("--dry-run" -> "dry run"), units in words ("855ms" -> "855 milliseconds", "2.4x"
    -> "2.4 times") and "->", "&&", "vs.", "e.g.", "i.e.", "~5" in words. Piper reads them
    letter by letter or not at all (bench/bench_spoken_terms.py)."""
    text = _NODE.sub(" ", text)
    text = _PATH.sub(_path, text)
    text = _CALL.sub("", text)
    text = _FLAG.sub(lambda m: m.group(1).replace("-", " "), text)
    text = _AMOUNT.sub(_amount, text)
    for pattern, words in _WORDS:
        text = pattern.sub(words, text)
    text = _UNDERSCORES.sub(" ", text)
    return _EDGE_UNDERSCORES.sub("", text)


def _balanced(raw: str) -> bool:
    """True when no code span, link, bracket or emphasis is left open at the end of ``raw``.

    A sentence is only cut where this holds, so each piece cleans the same on its own as it
    would inside the whole text. Heuristic on purpose: when unsure, it says no, and the cut
    simply happens later (at the end of the block).
    """
    text = _CODE_SPAN.sub("", raw)
    if "`" in text:
        return False
    text = _ESCAPE.sub("", text)
    text = _LINK_TARGET.sub("]", text)
    if "](" in text:
        return False  # inside a link's URL
    depth = 0  # brackets of a link's text; prose parentheses do not matter to cleaning
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
    if depth:
        return False
    # Marker runs that could open or close emphasis, counted as runs ("**" opens once): "2 * 3"
    # and snake_case do not count.
    stars = len(re.findall(r"(?<!\s)\*+|\*+(?!\s)", text))
    tildes = len(re.findall(r"~~+", text))
    unders = len(re.findall(r"(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])", text))
    return stars % 2 == 0 and tildes % 2 == 0 and unders % 2 == 0


# --- sentence boundaries ---------------------------------------------------------------------

_TERMINATOR = re.compile(r"([.!?\u2026]+)[\"'\u201d\u2019)\]*_~]*(?=\s)")


# Never a sentence end; words that often end one ("no.", "max.", "sec.") are left out.
_NEVER_ENDS = _words(
    "mr. mrs. ms. dr. prof. st. vs. e.g. i.e. cf. approx. fig. figs. eq. vol. ch. pp. ca. viz. "
    "mt. resp. incl. esp. dept. sgt. capt. gov. lt. col."
)
_MAYBE_ENDS = _words("etc. inc. ltd. co. jr. sr. al. corp. bros.")
_WAIT: Literal["wait"] = "wait"


def _word_before(text: str, end: int) -> str:
    """The whitespace-delimited token ending at ``end``, without leading quotes or markup."""
    start = max(text.rfind(" ", 0, end), text.rfind("\n", 0, end), text.rfind("\t", 0, end))
    return text[start + 1 : end].lstrip("\"'\u201c\u2018([*_~`")


def _kind_of_stop(text: str, match: re.Match[str]) -> Literal["never", "maybe", "end"]:
    punct = match.group(1)
    if "?" in punct or "!" in punct:
        return "end"
    if len(punct) > 1 or "\u2026" in punct:
        return "maybe"  # an ellipsis ends a sentence only when a capital follows
    word = _word_before(text, match.end(1))
    lowered = word.lower()
    if lowered in _NEVER_ENDS or re.fullmatch(r"[A-Z]\.", word):
        return "never"  # "Dr. Smith", "J. R. R. Tolkien"
    if lowered in _MAYBE_ENDS or re.fullmatch(r"(?:[A-Za-z]\.){2,}", word):
        return "maybe"  # "etc.", "U.S." end a sentence only when a capital follows
    return "end"


def _next_cut(
    text: str, start: int, closed: bool, scan_from: int = 0
) -> tuple[int | Literal["wait"] | None, int]:
    """Index just after the next certain sentence end in ``text[start:]``.

    None: no sentence end in the text so far; "wait": a possible one needs the next
    character, which has not arrived (``closed`` says nothing more will come). The second
    value is where a later call may resume (``scan_from``): every candidate before it was
    rejected for good, which keeps streaming a long paragraph linear.
    """
    settled = max(start, scan_from)
    for match in _TERMINATOR.finditer(text, settled):
        kind = _kind_of_stop(text, match)
        if kind == "maybe":
            rest = text[match.end() :].lstrip()
            if not rest:
                return (None if closed else _WAIT), settled
            kind = "never" if rest[0].islower() else "end"
        if kind == "end" and _balanced(text[start : match.end()]):
            return match.end(), match.end()
        settled = match.end()
    return None, settled


def _raw_sentences(text: str) -> Iterator[str]:
    start = 0
    while isinstance(cut := _next_cut(text, start, closed=True)[0], int):
        yield text[start:cut]
        start = cut
    yield text[start:]


def ends_sentence(text: str) -> bool:
    """``text`` ends with a full stop, question or exclamation mark (quotes may follow)."""
    return bool(_TERMINAL.search(text.rstrip()))


def split_sentences(text: str) -> list[str]:
    """Plain text to sentences; whitespace inside a sentence is kept as it was."""
    return [s.strip() for s in _raw_sentences(text) if s.strip()]


def speech_pieces(text: str) -> list[str]:
    """Plain text in the pieces a voice is given: sentences, long ones cut as a reply's are
    (:data:`LONG_SENTENCE_MAX_CHARS`). Piper's memory grows with the square of a piece: 1000
    words with no full stop took 10 GB, and 20 000 failed to allocate 230 GB."""
    return [p for s in split_sentences(text) for p in _split_long(s, LONG_SENTENCE_MAX_CHARS)]


# --- block Markdown --------------------------------------------------------------------------

_QUOTE = re.compile(r"^ {0,3}> ?")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_RULE = re.compile(r"^ {0,3}(?:([-*_])(?:[ \t]*\1){2,}|=+)[ \t]*$")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+|$)")
_HEADING_TAIL = re.compile(r"[ \t]+#+[ \t]*$")
_REF_DEF = re.compile(r"^ {0,3}\[[^\].!?]+\]:")
_TABLE_ROW = re.compile(r"^[ \t]*\|")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)(?:\[[ xX]\][ \t]+)?")
# A line's kind is fixed by its start; once a partial line holds a possible sentence end it
# is long enough to classify (a rule, a fence marker or a list marker cannot grow into text).
_DECIDABLE = re.compile(r"[.!?\u2026]\S*\s")
_TERMINAL = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*$")

BlockKind = Literal["paragraph", "item", "line", "skip"]


def _is_table_separator(line: str) -> bool:
    return "|" in line and "-" in line and not set(line.strip()) - set("|:- \t")


def _end_sentence(text: str) -> str:
    """A block's last words become a sentence: headings and list items get a full stop."""
    if _TERMINAL.search(text):
        return text
    return text.rstrip(",;:-\u2013\u2014 ") + "."


class _Parser:
    """Incremental Markdown reader that yields cleaned sentences as they become certain."""

    def __init__(self) -> None:
        self._line = ""  # the current line so far
        self._line_taken: int | None = None  # chars of it already in the block; None: undecided
        self._fence: str | None = None  # the opening marker while inside a code fence
        self._kind: BlockKind | None = None
        self._text = ""  # raw inline Markdown of the open block
        self._done = 0  # how much of _text has been handed out
        self._scanned = 0  # sentence-end candidates before this index are settled

    @property
    def in_code(self) -> bool:
        return self._fence is not None

    def feed(self, delta: str) -> list[str]:
        out: list[str] = []
        self._line += delta
        while (newline := self._line.find("\n")) >= 0:
            line, self._line = self._line[:newline].rstrip("\r"), self._line[newline + 1 :]
            out += self._complete_line(line)
            self._line_taken = None
        if self._fence is None and self._line:
            if self._line_taken is None and _DECIDABLE.search(self._line):
                out += self._start_line(self._line)
                self._line_taken = len(self._line)
            elif self._line_taken is not None:
                self._text += self._line[self._line_taken :]
                self._line_taken = len(self._line)
            out += self._sentences(closed=False)
        return out

    def flush(self) -> list[str]:
        out = self.feed("\n") if self._line else []
        if self._fence is not None:
            self._fence = None
            out.append(CODE_OMITTED)  # the reply ended inside a code block
        out += self._close_block()
        return out

    def _complete_line(self, line: str) -> list[str]:
        if self._fence is not None and self._line_taken is not None:
            return []  # the rest of the fence's opening line (its info string)
        if self._fence is not None:
            closing = re.fullmatch(r" {0,3}(`{3,}|~{3,})[ \t]*", line)
            marker = closing.group(1) if closing else ""
            if marker[:1] == self._fence[0] and len(marker) >= len(self._fence):
                self._fence = None
                return [CODE_OMITTED]
            return []
        if self._line_taken is None:
            out = self._start_line(line)
        else:
            self._text += line[self._line_taken :]
            out = self._sentences(closed=False)
        if self._kind in ("line", "skip"):
            if self._kind == "line":
                self._text = _HEADING_TAIL.sub("", self._text)
            out += self._close_block()
        elif self._kind is not None:
            # The line break is a space in the paragraph: "end.\n" is a finished sentence.
            self._text += " "
            out += self._sentences(closed=False)
        return out

    def _start_line(self, line: str) -> list[str]:
        """Classify a line by its start: close or continue the open block, open a new one."""
        while quote := _QUOTE.match(line):
            line = line[quote.end() :]
        out: list[str] = []
        continuing = self._kind in ("paragraph", "item")
        new_kind: BlockKind
        if fence := _FENCE.match(line):
            out += self._close_block()
            self._fence = fence.group(1)
            return out
        if not line.strip() or _RULE.match(line) or _is_table_separator(line):
            return self._close_block()
        marker = _HEADING.match(line) or _TABLE_ROW.match(line) or _LIST_ITEM.match(line)
        if marker is not None:
            new_kind = "item" if marker.re is _LIST_ITEM else "line"
            content = line[marker.end() :]
        elif _REF_DEF.match(line):
            new_kind, content = "skip", ""
        elif continuing:
            self._text += line.lstrip()
            return out
        else:
            new_kind, content = "paragraph", line.lstrip()
        out += self._close_block()
        self._kind, self._text, self._done, self._scanned = new_kind, content, 0, 0
        return out

    def _close_block(self) -> list[str]:
        out = self._sentences(closed=True)
        self._kind, self._text, self._done, self._scanned = None, "", 0, 0
        return out

    def _sentences(self, *, closed: bool) -> list[str]:
        """Hand out the open block's complete sentences (all of it when ``closed``)."""
        if self._kind in (None, "skip"):
            return []
        out: list[str] = []
        while True:
            cut, self._scanned = _next_cut(self._text, self._done, closed, self._scanned)
            if not isinstance(cut, int):
                break
            out.append(clean_inline(self._text[self._done : cut]))
            self._done = cut
        if closed:
            last = clean_inline(self._text[self._done :])
            out.append(_end_sentence(last) if last else last)
            self._done = len(self._text)
        return [s for s in out if any(ch.isalnum() for ch in s)]


def speakable(markdown: str) -> str:
    """A whole Markdown reply as one speakable string."""
    parser = _Parser()
    return " ".join(parser.feed(markdown) + parser.flush())


# --- chunking for low latency ----------------------------------------------------------------

_CLAUSE_END = re.compile(r"[,;:](?= )| [-\u2013\u2014](?= )")


def _split_at_clause(text: str, limit: int) -> tuple[str, str] | None:
    """Cut ``text`` at the last clause boundary within ``limit`` chars, else the first after.

    Pieces shorter than a few words are not worth a cut: None then.
    """
    cuts = [
        m.end()
        for m in _CLAUSE_END.finditer(text)
        if m.end() >= _MIN_PART_CHARS and len(text) - m.end() > _MIN_PART_CHARS
    ]
    if not cuts:
        return None
    within = [c for c in cuts if c <= limit]
    cut = within[-1] if within else cuts[0]
    return text[:cut], text[cut + 1 :]


def _split_long(text: str, limit: int) -> list[str]:
    """Keep every piece under ``limit`` chars: at clauses, else between words, else anywhere
    (one enormous word, a hash or an encoded blob nobody listens to whole)."""
    parts: list[str] = []
    while len(text) > limit:
        split = _split_at_clause(text, limit)
        if split is None or len(split[0]) > limit:
            space = text.rfind(" ", 0, limit + 1)
            split = (text[:space], text[space + 1 :]) if space > 0 else (text[:limit], text[limit:])
        parts.append(split[0])
        text = split[1]
    return [*parts, text]


class SentenceStream:
    """Cuts a streamed Markdown reply into speakable chunks, each as soon as it is complete.

    A chunk is handed out only when its sentence is certainly over (its full stop is
    followed by white space, its block ended, or the reply was flushed); nothing inside an
    open code fence is spoken ("Code omitted." comes when the fence closes). The first chunk,
    when longer than ``first_chunk_max_chars``, is cut at a clause boundary so the first
    sound comes early; later ones only when longer than ``long_sentence_max_chars``.
    """

    def __init__(
        self,
        first_chunk_max_chars: int = 60,
        *,
        long_sentence_max_chars: int = LONG_SENTENCE_MAX_CHARS,
        started: bool = False,
    ) -> None:
        """``started``: the reply's first chunk was handed out already (by another stream)."""
        if first_chunk_max_chars < 0 or long_sentence_max_chars < _MIN_PART_CHARS:
            raise ConfigError(
                "tts.first_chunk_max_chars must be 0 (never split) or positive, and "
                f"long_sentence_max_chars at least {_MIN_PART_CHARS}; got "
                f"{first_chunk_max_chars} and {long_sentence_max_chars}"
            )
        self._first_max = first_chunk_max_chars
        self._long_max = long_sentence_max_chars
        self._parser = _Parser()
        self._started = started

    @property
    def started(self) -> bool:
        """The reply's first chunk was handed out."""
        return self._started

    def feed(self, delta: str) -> list[str]:
        """More reply text; returns the chunks it completed (often none)."""
        return self._chunks(self._parser.feed(delta))

    def flush(self) -> list[str]:
        """The reply is over: the rest, then the stream is ready for a new reply."""
        out = self._chunks(self._parser.flush())
        self.discard()
        return out

    @property
    def in_code(self) -> bool:
        """Inside a code fence: a flush would end it, and the rest of the code be read out."""
        return self._parser.in_code

    def discard(self) -> None:
        """Forget the text not yet handed out (an unfinished sentence); ready for a new reply."""
        self._parser = _Parser()
        self._started = False

    def _chunks(self, sentences: list[str]) -> list[str]:
        out: list[str] = []
        for sentence in sentences:
            parts = [sentence]
            if not self._started:
                self._started = True
                if 0 < self._first_max < len(sentence):
                    parts = list(_split_at_clause(sentence, self._first_max) or parts)
            for part in parts:
                out += _split_long(part, self._long_max)
        return out
