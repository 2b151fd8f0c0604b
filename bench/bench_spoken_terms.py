"""How well a listener catches the technical terms of an agent's reply, as the Piper voice says it.

    python bench/bench_spoken_terms.py [--show]

Claude Code is asked for short plain answers (core/claude.py VOICE_PROMPT), yet its replies
still name files, lines, flags, identifiers and timings. Each sentence below is the kind it
writes; it goes through the reply's cleaner (voice/speech_text.py ``speakable``), is said by
the bundled Piper voice and transcribed by Whisper (tiny.en, the listener here: a stand-in
for a person, who hears better), and each of its key terms is looked for in what Whisper
heard: a term counts when one of its accepted spellings is there ("loop.py" may come back as
"loop dot py" or "loop.pie"). It prints the terms caught, the sentences whose every term was
caught, and the seconds of speech. To compare two versions, run it once with each on
PYTHONPATH:

    PYTHONPATH=/path/to/other/checkout python bench/bench_spoken_terms.py
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voice import app
from voice.cli import render
from voice.config import Config
from voice.speech_text import speakable

_DOT = r"\W*(?:dot\W*)?"
# (what the agent writes, the terms a listener must catch, each a regex on lower case)
SENTENCES: list[tuple[str, list[str]]] = [
    (
        "I fixed the bug in `voice/loop.py:231`; the `_gate` method now checks `hears_over_reply`.",
        [rf"loop{_DOT}(?:py|pie|pi)", r"231", r"gate", r"(?:hears?|here's) over.?repl"],
    ),
    ("All 1597 tests pass in 18.9s.", [r"1,?597", r"18\.9 seconds"]),
    ("Run `make test` with `--dry-run` first.", [r"make test", r"dry.?run"]),
    ("The config lives in `~/.config/voice-assistant/config.toml`.", [rf"config{_DOT}toml"]),
    ("Latency went from 855ms to 500ms -> a 40% cut.", [r"855 millisec", r"500 millisec"]),
    (
        "I renamed `fetch_smart_turn.py` to `fetch_models.py`.",
        [r"fetch.smart.turn", r"fetch.models"],
    ),
    ("The `SessionStore.save()` call now patches the index in place.", [r"session.?store"]),
    ("It is about 2.4x faster (vs. 1.1x before).", [r"2\.4 times", r"versus", r"1\.1 times"]),
    ("Set `stt.cpu_threads = 2` in the config.", [r"c.?p.?u.?threads"]),
    (
        "The test `tests/core/test_claude_sessions.py::test_stop_leaves_no_process_behind` failed.",
        [r"claude.sessions", r"leaves no process behind"],
    ),
    ("Use `git commit --amend` to fix the message.", [r"amend"]),
    ("The build takes ~5 min on a Pi.", [r"5 minutes"]),
    (
        "I updated `src/components/Button.tsx` and `src/styles/main.css`.",
        [rf"button{_DOT}t", rf"main{_DOT}(?:css|c s)"],
    ),
    ("Check `/var/log/syslog` for errors.", [r"syslog|sys log"]),
    ("Memory use dropped from 512MB to 128MB.", [r"512", r"128"]),
    ("The `__init__` method sets `self._cache`.", [r"in ?it", r"cache|cash"]),
    ("Both `npm test` && `npm run lint` pass.", [r"npm run lint|npm run lent"]),
    ("Port 8080 is taken; use `--port 8081` instead.", [r"8,?081|8,?080 one"]),
    ("The request took 1.2 s, i.e. twice the budget.", [r"1\.2 seconds", r"that is"]),
    ("Then `cd ../frontend && npm install` sets it up.", [r"front.?end", r"npm install"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="print each sentence as heard")
    parser.add_argument(
        "--repeat", type=int, default=3, help="say each sentence this often (Piper varies)"
    )
    args = parser.parse_args()
    models = app.load_models(Config())
    tts, stt = models.tts, models.stt
    caught = terms = whole = 0
    speech_s = 0.0
    for text, wanted in [s for s in SENTENCES for _ in range(args.repeat)]:
        said = speakable(text)
        pcm = np.asarray(render(tts, said))
        audio = pcm.astype(np.float32) / (32768 if pcm.dtype == np.int16 else 1)
        speech_s += len(audio) / tts.sample_rate
        heard = stt.transcribe_file(soxr.resample(audio, tts.sample_rate, 16000)).text
        found = [bool(re.search(term, heard.lower())) for term in wanted]
        caught += sum(found)
        terms += len(found)
        whole += all(found)
        if args.show or not all(found):
            missed = [t for t, ok in zip(wanted, found, strict=True) if not ok]
            print(f"said:  {said}\nheard: {heard}\n" + (f"missed: {missed}\n" if missed else ""))
    print(f"terms caught: {caught} of {terms} ({caught / terms:.0%})")
    print(f"sentences with every term caught: {whole} of {len(SENTENCES) * args.repeat}")
    print(f"speech: {speech_s / args.repeat:.1f} s for the {len(SENTENCES)} sentences (mean)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
