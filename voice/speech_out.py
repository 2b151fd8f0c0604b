"""Speaking a reply while it is still being written.

A :class:`Reply` takes text as the agent streams it (``feed``), cuts it into speakable
sentences, and a worker thread synthesizes each one and hands its audio to the speaker as
soon as the first chunk exists. Synthesis of sentence N+1 overlaps the playback of N.

A reply starts *held*: it synthesizes ahead but plays nothing until ``release`` (the
turn-taking machine releases it when the user is not speaking). It reports when it starts
to be heard and when it falls silent waiting for more text (a tool is running), so the loop
knows when the microphone hears the assistant and when a thinking cue may play.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

from core.errors import AssistantError, DeviceError
from voice.devices import AudioSink
from voice.devices.speaker import PAUSE_LIMIT_S
from voice.own_words import SaidLog
from voice.speech_text import SentenceStream, ends_sentence
from voice.tts import TextToSpeech

log = logging.getLogger(__name__)

_END = object()
_IDLE_POLL_S = 0.03  # how often a silent reply checks whether the speaker has finished


def _nothing() -> None:
    pass


class Reply:
    """One reply being spoken. ``feed`` may be called from any thread (e.g. ``on_text``)."""

    def __init__(
        self,
        tts: TextToSpeech,
        sink: AudioSink,
        *,
        first_chunk_max_chars: int,
        held: bool = False,
        on_playing: Callable[[], None] = _nothing,
        on_idle: Callable[[], None] = _nothing,
        clock: Callable[[], float] = time.monotonic,
        said: SaidLog | None = None,
        pause_limit_s: float = PAUSE_LIMIT_S,
    ) -> None:
        """``pause_limit_s``: a pause that no resume (nor another pause) follows within this
        long ends by itself, as the speaker's does."""
        self._tts = tts
        self._pause_limit_s = pause_limit_s
        self._said = SaidLog() if said is None else said
        self._said_as = self._said.new_reply()
        self._sink = sink
        self._clock = clock
        self._on_playing = on_playing
        self._on_idle = on_idle
        self._first_chunk_max_chars = first_chunk_max_chars
        self._stream = SentenceStream(first_chunk_max_chars)
        self._tail = ""  # the end of the text fed so far
        # The block of text being fed (Reply.restart): the sentences queued of it so far, and
        # whether the reply's first chunk had been handed out as it began (None: no block).
        self._block: list[str] = []
        self._block_started: bool | None = None
        self._stream_lock = threading.Lock()
        self._sentences: queue.Queue[object] = queue.Queue()
        self._cancelled = threading.Event()
        self._released = threading.Event()
        if not held:
            self._released.set()
        # Cleared while paused: no new sentence starts then (one paused before it began, or
        # between sentences, would otherwise play over the user it was paused for).
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._pause_ends_s = 0.0  # (time.monotonic, as the waits) no resume came: play on
        self._sink_paused = False  # pause() paused the shared speaker (resume() resumes it)
        self._play_lock = threading.Lock()  # cancel() and a chunk going to the speaker
        self._quiet = threading.Condition()  # the reply has played all it was given
        self._pending = 0  # sentences queued and not yet played
        self._audible = False  # between on_playing and on_idle
        self._synth_done = threading.Event()
        self.first_audio_s: float | None = None  # when the first samples went to the speaker
        self.spoken: list[str] = []
        self.error: BaseException | None = None
        self._worker = threading.Thread(target=self._run, name="reply-tts", daemon=True)
        self._worker.start()

    # ---- text in ---------------------------------------------------------------------------
    def feed(self, delta: str) -> None:
        with self._stream_lock:
            self._tail = (self._tail + delta)[-16:]
            if self._block_started is None:
                self._block_started = self._stream.started
            self._queue_fed(self._stream.feed(delta))

    def flush(self) -> None:
        """A block of text ended (e.g. before a tool call): speak what it holds now."""
        with self._stream_lock:
            self._queue(self._stream.flush())
            self._block, self._block_started = [], None

    def restart(self, text: str) -> None:
        """The block being fed broke off and came again whole, as ``text``: what was fed of
        it and not said yet is dropped (a cut-off word), and of ``text`` the sentences it
        begins with that were said already are not said again. The same splitter cuts
        both, so they match where the words do."""
        with self._stream_lock:
            started = self._stream.started if self._block_started is None else self._block_started
            again = SentenceStream(self._first_chunk_max_chars, started=started)
            sentences = again.feed(text) + again.flush()
            same = 0
            for before, now in zip(self._block, sentences, strict=False):
                if before != now:
                    break
                same += 1
            self._queue(sentences[same:])
            self._stream = SentenceStream(self._first_chunk_max_chars, started=again.started)
            self._block, self._block_started, self._tail = [], None, ""

    def drop_unfinished(self) -> None:
        """The agent failed: a sentence it had not finished is not said (a cut-off word); one
        it had finished is."""
        with self._stream_lock:
            if ends_sentence(self._tail):
                self._flush_fed()
            else:
                self._stream.discard()
            # (The block's record stays: a retry can still send it again whole.)

    def say(self, text: str) -> None:
        """A whole sentence of the assistant's own, after what was fed so far."""
        with self._stream_lock:
            self._flush_fed()
            self._queue(self._stream.feed(text))
            self._queue(self._stream.flush())

    def interject(self, text: str) -> None:
        """A line of the assistant's own while the agent writes ("Still working."), never
        inside a sentence (``say`` flushes: "the capital of F. Still working. Rance is
        Paris."). A finished sentence is said first; an unfinished one waits for the text that
        ends it, or is dropped with the turn."""
        line = SentenceStream(self._first_chunk_max_chars)
        with self._stream_lock:
            if ends_sentence(self._tail) and not self._stream.in_code:
                self._flush_fed()  # it waited only for the next space
            self._queue(line.feed(text) + line.flush())

    def finish(self) -> None:
        """No more text will come: speak what is left."""
        self.flush()
        self._sentences.put(_END)

    def _flush_fed(self) -> None:
        """Queue what the stream holds of the agent's text."""
        self._queue_fed(self._stream.flush())

    def _queue_fed(self, sentences: list[str]) -> None:
        """Queue sentences of the agent's text: of the block being fed, so a restart of it
        (:meth:`restart`) knows they were said."""
        if self._block_started is not None:
            self._block += sentences
        self._queue(sentences)

    def _queue(self, sentences: list[str]) -> None:
        if sentences:
            with self._quiet:
                self._pending += len(sentences)
        for sentence in sentences:
            self._sentences.put(sentence)

    # ---- control ---------------------------------------------------------------------------
    def release(self) -> None:
        """Playback may start (a held reply synthesized ahead and waited)."""
        self._released.set()

    def cancel(self) -> None:
        """Stop at once (barge-in): nothing more is synthesized, nothing queued plays."""
        with self._play_lock:
            self._cancelled.set()
            played = self.first_audio_s is not None
        self._released.set()
        self._unpaused.set()
        self._sentences.put(_END)
        if played:  # the speaker is shared: a reply that never played leaves it alone
            self._sink.stop()
            self._said.stop(self._clock())
        with self._quiet:
            self._quiet.notify_all()

    def pause(self) -> None:
        """Fall silent where it is (someone may be talking over it), until :meth:`resume`;
        a reply that has not begun, or is between sentences, does not begin one. Paused
        again, the pause limit runs from then."""
        with self._play_lock:
            if self._cancelled.is_set():
                return
            self._pause_ends_s = time.monotonic() + self._pause_limit_s  # (before the clear)
            self._unpaused.clear()
            if not self._audible:  # (never, before its first audio)
                return  # nothing of ours is on the (shared) speaker: earcons still play
            self._sink.pause()
            self._sink_paused = True
            self._said.pause(self._clock())

    def resume(self) -> None:
        with self._play_lock:
            self._unpaused.set()
            if self._cancelled.is_set() or not self._sink_paused:
                return
            self._sink_paused = False
            self._sink.resume()
            self._said.resume(self._clock())

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until every sentence was synthesized and played (or the reply was cancelled)."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        if not self._synth_done.wait(timeout_s):
            return False
        if self._cancelled.is_set():
            return True
        remaining = None if deadline is None else max(0.0, deadline - self._clock())
        try:
            return self._sink.wait(remaining)
        except DeviceError as e:  # the speaker died mid-reply: nothing more will play
            log.warning("the reply was cut short: %s", e)
            return True

    def wait_quiet(self, timeout_s: float) -> bool:
        """Block until everything fed so far has been played (e.g. a question was asked)."""
        deadline = self._clock() + timeout_s
        with self._quiet:
            while (self._pending or self._audible) and not self._cancelled.is_set():
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._quiet.wait(min(left, 0.1))
        return True

    # ---- the worker ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._cancelled.is_set():
                try:
                    item = self._sentences.get(timeout=_IDLE_POLL_S if self._audible else None)
                except queue.Empty:
                    self._check_quiet()
                    continue
                if item is _END or self._cancelled.is_set():
                    break
                assert isinstance(item, str)
                self._speak(item)
            if not self._cancelled.is_set():
                self._sink.wait(None)
        except Exception as e:  # a TTS or device failure must not kill the loop
            log.error("speaking failed: %s", e, exc_info=not isinstance(e, AssistantError))
            self.error = e
        finally:
            self._synth_done.set()
            with self._quiet:
                self._pending = 0
                self._quiet.notify_all()
            if self._audible:
                self._audible = False
                self._on_idle()

    def _check_quiet(self) -> None:
        if self._sink.playing:
            return
        with self._quiet:
            self._audible = False
            self._quiet.notify_all()
        self._on_idle()

    def _speak(self, sentence: str) -> None:
        log.debug("speaking: %s", sentence)
        begun = False
        for chunk in self._tts.synthesize(sentence):
            with self._unpaused_lock() as live:
                if not live:
                    return  # cancelled
                self._sink.play(chunk, self._tts.sample_rate)
                now = self._clock()
                if not begun:
                    self._said.begin(sentence, now, self._said_as)
                    begun = True
                self._said.played(len(chunk) / self._tts.sample_rate, now)
                if self.first_audio_s is None:
                    self.first_audio_s = now
                began, self._audible = not self._audible, True  # (before a pause looks)
            if began:
                self._on_playing()
        with self._quiet:
            self._pending -= 1
        self.spoken.append(sentence)

    @contextlib.contextmanager
    def _unpaused_lock(self) -> Iterator[bool]:
        """``_play_lock``, once the reply is released and not paused (a pause that comes
        while waiting for the lock is waited out too); yields False if it was cancelled."""
        while True:
            self._released.wait()
            if not self._unpaused.wait(max(0.0, self._pause_ends_s - time.monotonic())):
                if time.monotonic() < self._pause_ends_s:
                    continue  # paused again meanwhile (the user still speaks)
                self._unpaused.set()  # no resume came: play on, as the speaker itself would
            with self._play_lock:
                if self._cancelled.is_set():
                    yield False
                    return
                if self._unpaused.is_set():
                    yield True
                    return


class ReplySpeaker:
    """Makes :class:`Reply` objects bound to one TTS engine and one speaker."""

    def __init__(self, tts: TextToSpeech, sink: AudioSink, *, first_chunk_max_chars: int) -> None:
        self.tts = tts
        self.sink = sink
        self._first_chunk_max_chars = first_chunk_max_chars
        self.said = SaidLog()  # what every reply of this speaker said, and when

    def begin(
        self,
        *,
        held: bool = False,
        on_playing: Callable[[], None] = _nothing,
        on_idle: Callable[[], None] = _nothing,
    ) -> Reply:
        return Reply(
            self.tts,
            self.sink,
            first_chunk_max_chars=self._first_chunk_max_chars,
            held=held,
            on_playing=on_playing,
            on_idle=on_idle,
            said=self.said,
        )
