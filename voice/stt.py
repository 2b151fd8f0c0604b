"""Speech to text: faster-whisper behind a one-method interface, and a hallucination guard.

Fast path: Whisper's encoder is normally run on a 30 s window whatever the utterance length;
its cost grows with the window, so a 2 s command pays for 30 s. Here a short utterance is
encoded in a window of ``max(utterance, stt.min_window_s)`` (never under 10 s: shorter windows
lose accuracy badly) and decoded with CTranslate2 directly, using the same prompt, token
suppression and scores as faster-whisper's own ``transcribe``. On two cores this takes a
2-3 s command from ~300 ms to ~100 ms with the same words (``bench/bench_stt.py``).

Audio longer than ``FAST_MAX_S`` (and everything when ``stt.fast_window = false``) takes
faster-whisper's stock ``transcribe``: greedy or beam search, no timestamps for one window,
timestamped long-form decoding beyond it. Our own segmenter has already cut the speech, so
faster-whisper's VAD filter stays off.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from core.errors import ConfigError, ModelError
from voice.audio import Utterance, float_to_pcm, rms_dbfs
from voice.config import SttConfig
from voice.models import default_models_dir, resolve_whisper_model

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
FULL_WINDOW_S = 30.0
# Whisper loops ("in the exhibition, in the exhibition, ...") when its window ends exactly
# where the speech ends; a second of silence after the words lets it close the sentence.
TAIL_MARGIN_S = 1.0
FAST_MAX_S = FULL_WINDOW_S - TAIL_MARGIN_S  # longer audio takes the stock long-form path
MIN_AVG_LOGPROB = -1.0  # faster-whisper's own bound for a decode it would retry
# A trimmed window is not what Whisper was trained on: a decode this unsure is done again in
# a wider window ("what time is it in Tokyo", heard in the rig: -0.71 and "What's the most
# in Tokyo" trimmed, -0.15 and right in 30 s; right ones scored -0.03 to -0.5 on real clips,
# short card names and digits -0.4 to -0.8), twice as wide and 20-30 s. Short clips at 20 s,
# not 30: on the 22 unsure of bench/bench_stt.py --unsure's 102 clips, WER 0.048 against
# 0.057 at 30 s (0.071 not redone), median 438 ms against 646 for both decodes. The redo is
# on the path to the reply.
UNSURE_AVG_LOGPROB = -0.5
UNSURE_REDO_WINDOW_S = 20.0
# Whisper's own limit for a "too repetitive" decode (zlib ratio), the mark of a looping model.
MAX_COMPRESSION_RATIO = 2.4
# Generous bound on tokens per second of audio (fast speech is ~5): caps a runaway loop.
_MAX_TOKENS_PER_S = 10
_NOT_WORD = re.compile(r"[\W_]+")

FloatAudio = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Transcript:
    text: str
    audio_s: float
    elapsed_s: float
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    dropped: str | None = None  # why the guard dropped it (then text is "")
    looped: bool = False  # cut down from a repetition loop (collapse_repeats)


class SpeechToText(Protocol):
    def transcribe(self, utterance: Utterance) -> Transcript: ...

    def transcribe_whole(self, utterance: Utterance) -> Transcript:
        """Heard again when :meth:`transcribe` ended early (voice.turn_taking): by a decode
        that does not stop after the first sentence, where the engine has one."""
        ...


def squash(text: str) -> str:
    """Lowercase with punctuation and spaces removed: "Thank you." and "thank you" compare equal."""
    return _NOT_WORD.sub("", text.lower())


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def looks_degenerate(text: str, avg_logprob: float) -> bool:
    """faster-whisper's test of a decode it would redo: too repetitive or too unlikely."""
    return compression_ratio(text) > MAX_COMPRESSION_RATIO or avg_logprob < MIN_AVG_LOGPROB


_TOKEN = re.compile(r"\S+")
_MIN_REPEATS = 3
_MIN_REPEATS_OF_ONE_WORD = 5  # "no, no, no" can be meant; five times is a loop
# Whisper also loops on a letter inside a word (live, over music: "old-s-y-y-y-y-y-y-...").
_LETTER_LOOP = re.compile(r"\b([^\W\d_])(?:-\1){4,}\b", re.IGNORECASE)
_TRAILING = re.compile(r"\W+$")
# More words a second than anyone says: beyond one window, only such a text is cut of repeats.
MAX_WORDS_PER_S = 5.0


def collapse_repeats(text: str) -> tuple[str, str]:
    """Cut a phrase repeated three or more times in a row down to its first occurrence.

    Returns the text and what was cut ("" if nothing). Words compare without case and
    punctuation, so "in the exhibition, in the exhibition," is a repeat; the punctuation
    after the last repeat stays ("go, go, go, go, go." -> "go.").
    """
    letters = [m.group(0) for m in _LETTER_LOOP.finditer(text)]
    text = _LETTER_LOOP.sub(r"\1", text)
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    words = [squash(text[a:b]) for a, b in tokens]
    i = 0
    removed: list[tuple[int, int]] = []
    while i < len(words):
        best = 0, 0  # (phrase length, repeats)
        for n in range(1, (len(words) - i) // _MIN_REPEATS + 1):
            phrase = words[i : i + n]
            if not any(phrase):
                continue
            k = 1
            while words[i + k * n : i + (k + 1) * n] == phrase:
                k += 1
            needed = _MIN_REPEATS_OF_ONE_WORD if n == 1 else _MIN_REPEATS
            if k >= needed and n * (k - 1) > best[0] * max(best[1] - 1, 0):
                best = n, k
        n, k = best
        if n:
            removed.append((i + n, i + n * k))
            i += n * k
        else:
            i += 1

    def word_end(token: int) -> int:
        start, end = tokens[token]
        return start + len(_TRAILING.sub("", text[start:end]))

    # Each repeat goes, with what joins it to the one before: from the end of the first
    # occurrence's last word to the end of the last repeat's (its punctuation stays).
    spans = [(word_end(a - 1), word_end(b - 1)) for a, b in removed]
    kept, at = [], 0
    for start, end in spans:
        kept.append(text[at:start])
        at = end
    kept.append(text[at:])
    cut = [*letters, *(text[start:end].strip(" ,") for start, end in spans)]
    return "".join(kept), " ".join(cut)


class HallucinationGuard:
    """Drops what Whisper invents from silence and noise. Pure: no model involved."""

    def __init__(self, config: SttConfig) -> None:
        self._config = config
        self._blocked = frozenset(squash(phrase) for phrase in config.blocklist)

    def before(self, utterance: Utterance) -> str | None:
        """Energy gate: a reason not to transcribe ``utterance`` at all, else None."""
        level = rms_dbfs(utterance.pcm)
        if level < self._config.min_level_dbfs:
            return (
                f"too quiet ({level:.0f} dBFS < stt.min_level_dbfs {self._config.min_level_dbfs:g})"
            )
        return None

    def file_too_quiet(self, pcm: bytes) -> str | None:
        """A reason not to transcribe a whole recording: no 30 ms of it as loud as
        stt.min_level_dbfs (a long file's average says too little: one word in minutes of
        silence). 35 s of digital silence came back "you"."""
        frame = 2 * WHISPER_RATE * 30 // 1000
        loudest = max(
            (rms_dbfs(pcm[i : i + frame]) for i in range(0, len(pcm), frame)), default=-120.0
        )
        floor = self._config.min_level_dbfs
        if loudest < floor:
            return f"too quiet (loudest {loudest:.0f} dBFS < stt.min_level_dbfs {floor:g})"
        return None

    def only_blocked(self, text: str) -> str | None:
        """A reason to call a whole recording's transcript no speech: it is nothing but a
        blocklisted phrase."""
        return (
            f"only a blocklisted phrase {text.strip()!r}" if squash(text) in self._blocked else None
        )

    def after(self, text: str, no_speech_prob: float, avg_logprob: float) -> str | None:
        """A reason to discard a transcript, else None."""
        squashed = squash(text)
        if not squashed:
            return "empty transcript"
        if squashed in self._blocked:
            return f"blocklisted phrase {text.strip()!r}"
        reason = self.no_speech(no_speech_prob, avg_logprob)
        if reason:
            return reason
        ratio = len(text.encode()) / len(zlib.compress(text.encode()))
        if ratio > MAX_COMPRESSION_RATIO:
            return f"repetitive text (compression ratio {ratio:.1f} > {MAX_COMPRESSION_RATIO})"
        return None

    def no_speech(self, no_speech_prob: float, avg_logprob: float) -> str | None:
        """Whisper's own rule: a confident decode outweighs the no-speech estimate."""
        if (
            no_speech_prob > self._config.max_no_speech_prob
            and avg_logprob < self._config.min_avg_logprob
        ):
            return (
                f"no speech (no_speech_prob {no_speech_prob:.2f} > "
                f"{self._config.max_no_speech_prob:g}, avg_logprob {avg_logprob:.2f} < "
                f"{self._config.min_avg_logprob:g})"
            )
        return None


class WhisperTranscriber:
    """faster-whisper on the CPU; loads the model once, in the constructor."""

    def __init__(
        self,
        config: SttConfig,
        *,
        models_dir: Path | None = None,
        unsure_below: float = UNSURE_AVG_LOGPROB,
        unsure_redo_s: float = UNSURE_REDO_WINDOW_S,
    ) -> None:
        """``unsure_below``: the trimmed-window decodes redone in a wider window of at least
        ``unsure_redo_s`` (a benchmark sets them to compare)."""
        from faster_whisper import WhisperModel  # heavy import
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._config = config
        self._guard = HallucinationGuard(config)
        # SttConfig keeps this within 10-30 s: shorter loses words, 30 s is the encoder's limit.
        self._window_s = config.min_window_s
        self.unsure_below = unsure_below
        self.unsure_redo_s = unsure_redo_s
        self.model_ref = resolve_whisper_model(
            config.model,
            models_dir=models_dir if models_dir is not None else default_models_dir(),
            allow_download=config.allow_download,
        )
        started = time.perf_counter()
        try:
            self._model: Any = WhisperModel(
                self.model_ref,
                device=config.device,
                compute_type=config.compute_type,
                cpu_threads=config.cpu_threads,
                num_workers=1,
                local_files_only=not config.allow_download,
            )
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelError(
                f"cannot load Whisper model {self.model_ref} on {config.device} with "
                f"compute_type {config.compute_type}: {e}; check stt.model, stt.device and "
                "stt.compute_type"
            ) from e
        where = "" if self.model_ref == config.model else f" ({self.model_ref})"
        log.info(
            "loaded Whisper %s%s in %.1f s", config.model, where, time.perf_counter() - started
        )
        self.english_only = not self._model.model.is_multilingual
        self._language = self._pick_language(config.language)
        try:
            tokenizer = Tokenizer(
                self._model.hf_tokenizer,
                self._model.model.is_multilingual,
                task="transcribe",
                language=self._language,
            )
        except ValueError as e:
            raise ConfigError(f"stt.language = {config.language!r}: {e}") from None
        self._tokenizer = tokenizer
        # <|startoftranscript|>[<|en|><|transcribe|>]<|notimestamps|>, as faster-whisper builds it
        self._prompt: list[int] = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._suppress: list[int] = list(get_suppressed_tokens(tokenizer, [-1]))

    def _pick_language(self, language: str) -> str:
        if self._model.model.is_multilingual:
            return language
        if language != "en":
            log.warning("Whisper %s is English-only; ignoring stt.language", self.model_ref)
        return "en"

    def warm_up(self) -> None:
        """One dummy inference so the first real turn does not pay for lazy allocations."""
        started = time.perf_counter()
        self.transcribe_audio(np.zeros(WHISPER_RATE, dtype=np.float32))
        log.debug("Whisper warm-up took %.2f s", time.perf_counter() - started)

    def transcribe(self, utterance: Utterance) -> Transcript:
        """Transcribe one utterance through the guard; a dropped one has ``text == ""``."""
        return self._guarded(utterance, whole=False)

    def transcribe_whole(self, utterance: Utterance) -> Transcript:
        """As :meth:`transcribe`, by faster-whisper's path with timestamps: slower (about
        0.4 s for 10 s of speech), but it does not end several sentences after the first."""
        return self._guarded(utterance, whole=True)

    def _guarded(self, utterance: Utterance, *, whole: bool) -> Transcript:
        reason = self._guard.before(utterance)
        if reason:
            log.info("dropped a %.1f s utterance untranscribed: %s", utterance.duration_s, reason)
            return Transcript("", utterance.duration_s, 0.0, dropped=reason)
        audio = utterance.to_float32()
        if utterance.rate != WHISPER_RATE:
            import soxr

            audio = soxr.resample(audio, utterance.rate, WHISPER_RATE).astype(np.float32)
        result = self.transcribe_audio(audio, fast=False if whole else None, timestamps=whole)
        reason = self._guard.after(result.text, result.no_speech_prob, result.avg_logprob)
        if reason:
            log.info("dropped transcript %r: %s", result.text, reason)
            return dataclasses.replace(result, text="", dropped=reason)
        log.debug("transcribed %.1f s in %.2f s", result.audio_s, result.elapsed_s)
        return result

    def transcribe_file(self, audio: FloatAudio) -> Transcript:
        """A whole recording (``transcribe``), by faster-whisper's own path with timestamps:
        without them tiny.en can stop after the first of several sentences (bench_stt.py
        --sentences), and a file is not waited for as a reply is. That path drops segments by
        Whisper's no-speech rule; a transcript without a word, of a recording with no sound
        loud enough, or of only a blocklisted phrase is no speech (``text == ""``)."""
        quiet = self._guard.file_too_quiet(float_to_pcm(audio))
        if quiet:  # not worth decoding
            log.info("nothing transcribed: %s", quiet)
            return Transcript("", audio.size / WHISPER_RATE, 0.0, dropped=quiet)
        result = self.transcribe_audio(audio, fast=False, timestamps=True)
        if not squash(result.text):
            return dataclasses.replace(result, text="", dropped=f"no words in {result.text[:20]!r}")
        reason = self._guard.only_blocked(result.text)
        if reason:
            log.info("dropped transcript %r: %s", result.text, reason)
            return dataclasses.replace(result, text="", dropped=reason)
        return result

    def transcribe_audio(
        self, audio: FloatAudio, *, fast: bool | None = None, timestamps: bool = False
    ) -> Transcript:
        """Transcribe float32 16 kHz mono audio, without the guard (files, benchmarks).

        ``fast`` picks the trimmed-window path (default ``stt.fast_window``); audio longer
        than ``FAST_MAX_S`` always takes the stock path.
        """
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        audio_s = audio.size / WHISPER_RATE
        use_fast = (self._config.fast_window if fast is None else fast) and audio_s <= FAST_MAX_S
        started = time.perf_counter()
        if use_fast:
            window_s = min(FULL_WINDOW_S, max(audio_s + TAIL_MARGIN_S, self._window_s))
            text, no_speech, logprob = self._decode_window(audio, window_s)
            unsure = logprob < self.unsure_below and not looks_degenerate(text, logprob)
            redo_s = min(FULL_WINDOW_S, max(window_s * 2, self.unsure_redo_s))
            if unsure and window_s < redo_s:
                log.debug("fast decode unsure (%r, %.2f): again in %.0f s", text, logprob, redo_s)
                text, no_speech, logprob = self._decode_window(audio, redo_s)
            if looks_degenerate(text, logprob) and no_speech < self._config.max_no_speech_prob:
                # Checked as faster-whisper checks its own decodes: retry its way, with its
                # temperature fallback, rather than return a loop.
                log.info("fast decode looks degenerate (%r...); retrying", text[:60])
                text, no_speech, logprob = self._transcribe_stock(audio)
        else:
            text, no_speech, logprob = self._transcribe_stock(audio, timestamps=timestamps)
        # Beyond one window each 30 s is decoded on its own, with faster-whisper's loop check:
        # there a sentence said three times was said three times (jfk.flac x3 was cut to one).
        plausible = len(text.split()) <= MAX_WORDS_PER_S * audio_s
        text, cut = (text, "") if audio_s > FAST_MAX_S and plausible else collapse_repeats(text)
        if cut:
            log.warning("cut a repetition loop from the transcript: %r", cut[:120])
        elapsed = time.perf_counter() - started
        return Transcript(text, audio_s, elapsed, no_speech, logprob, looped=bool(cut))

    def _decode_window(self, audio: FloatAudio, window_s: float) -> tuple[str, float, float]:
        """Encode ``audio`` in a ``window_s`` window and decode greedily / with beam search."""
        import ctranslate2

        extractor = self._model.feature_extractor
        # Like faster-whisper: mel of the audio alone (its last frame dropped), zero-padded
        # after. Padding the waveform with silence instead measurably hurts short windows.
        features = extractor(audio)[:, :-1]
        frames = round(window_s * extractor.sampling_rate / extractor.hop_length)
        frames += frames % 2  # the encoder's stride-2 convolution wants an even length
        features = features[:, :frames]
        features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
        max_new = min(int(window_s * _MAX_TOKENS_PER_S), self._model.max_length)
        result = self._model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[np.newaxis])),
            [self._prompt],
            beam_size=self._config.beam_size,
            max_length=min(len(self._prompt) + max_new, self._model.max_length),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens: list[int] = result.sequences_ids[0]
        # scores[0] is the length-normalised log-probability; faster-whisper's avg_logprob
        # also counts the end-of-text token.
        avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
        text: str = self._tokenizer.decode(tokens).strip()
        return text, float(result.no_speech_prob), avg_logprob

    def _transcribe_stock(
        self, audio: FloatAudio, *, timestamps: bool = False
    ) -> tuple[str, float, float]:
        # Beyond one window, timestamps let Whisper resume at the last complete segment;
        # without them every 30 s cut lands mid-word and tiny.en "completes" the sentence
        # twice (measured: jfk x3 came out as four sentences).
        long_form = audio.size / WHISPER_RATE > FAST_MAX_S
        segments, _info = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=self._config.beam_size,
            without_timestamps=not (long_form or timestamps),
            vad_filter=False,  # the segmenter already cut the speech out
            condition_on_previous_text=False,  # a loop in one window must not feed the next
            no_speech_threshold=self._config.max_no_speech_prob,
            log_prob_threshold=self._config.min_avg_logprob,
        )
        kept = list(segments)
        if not kept:
            return "", 0.0, 0.0
        text = " ".join(s.text.strip() for s in kept).strip()
        weights = [max(s.end - s.start, 1e-3) for s in kept]
        no_speech = float(np.average([s.no_speech_prob for s in kept], weights=weights))
        logprob = float(np.average([s.avg_logprob for s in kept], weights=weights))
        return text, no_speech, logprob
