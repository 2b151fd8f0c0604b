"""Speaking a reply while it is still being written.

A :class:`Reply` takes text as the agent streams it (``feed``), cuts it into speakable
sentences, and a worker thread synthesizes each one and hands its audio to the speaker as
soon as the first chunk exists. Synthesis of sentence N+1 overlaps the playback of N.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from voice.devices import AudioSink
from voice.speech_text import SentenceStream
from voice.tts import TextToSpeech

log = logging.getLogger(__name__)

_END = object()


class Reply:
    """One reply being spoken. ``feed`` may be called from any thread (e.g. ``on_text``)."""

    def __init__(
        self,
        tts: TextToSpeech,
        sink: AudioSink,
        *,
        first_chunk_max_chars: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tts = tts
        self._sink = sink
        self._clock = clock
        self._stream = SentenceStream(first_chunk_max_chars)
        self._stream_lock = threading.Lock()
        self._sentences: queue.Queue[object] = queue.Queue()
        self._cancelled = threading.Event()
        self._play_lock = threading.Lock()  # cancel() and a chunk going to the speaker
        self._synth_done = threading.Event()
        self.first_audio_s: float | None = None  # when the first samples went to the speaker
        self.spoken: list[str] = []
        self.error: BaseException | None = None
        self._worker = threading.Thread(target=self._run, name="reply-tts", daemon=True)
        self._worker.start()

    def feed(self, delta: str) -> None:
        with self._stream_lock:
            sentences = self._stream.feed(delta)
        for sentence in sentences:
            self._sentences.put(sentence)

    def finish(self) -> None:
        """No more text will come: speak what is left."""
        with self._stream_lock:
            sentences = self._stream.flush()
        for sentence in sentences:
            self._sentences.put(sentence)
        self._sentences.put(_END)

    def cancel(self) -> None:
        """Stop at once (barge-in): nothing more is synthesized, nothing queued plays."""
        with self._play_lock:
            self._cancelled.set()
            played = self.first_audio_s is not None
        self._sentences.put(_END)
        if played:  # the speaker is shared: a reply that never played leaves it alone
            self._sink.stop()

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
        return self._sink.wait(remaining)

    def _run(self) -> None:
        try:
            while not self._cancelled.is_set():
                item = self._sentences.get()
                if item is _END or self._cancelled.is_set():
                    break
                assert isinstance(item, str)
                self._speak(item)
        except Exception as e:  # a TTS or device failure must not kill the loop
            log.exception("speaking failed")
            self.error = e
        finally:
            self._synth_done.set()

    def _speak(self, sentence: str) -> None:
        log.debug("speaking: %s", sentence)
        for chunk in self._tts.synthesize(sentence):
            with self._play_lock:
                if self._cancelled.is_set():
                    return
                self._sink.play(chunk, self._tts.sample_rate)
                if self.first_audio_s is None:
                    self.first_audio_s = self._clock()
        self.spoken.append(sentence)


class ReplySpeaker:
    """Makes :class:`Reply` objects bound to one TTS engine and one speaker."""

    def __init__(self, tts: TextToSpeech, sink: AudioSink, *, first_chunk_max_chars: int) -> None:
        self.tts = tts
        self.sink = sink
        self._first_chunk_max_chars = first_chunk_max_chars

    def begin(self) -> Reply:
        return Reply(self.tts, self.sink, first_chunk_max_chars=self._first_chunk_max_chars)
