"""A reply's pause and resume reach the speaker only once the reply has played something:
the speaker is shared with the earcons and the next reply."""

from __future__ import annotations

import threading
import time

from tests.voice.fakes import FakeSink, FakeTts, wait_until
from voice.speech_out import Reply


def test_a_paused_reply_holds_the_speaker_and_resumes_where_it_was() -> None:
    sink, tts = FakeSink(), FakeTts()
    reply = Reply(tts, sink, first_chunk_max_chars=200)
    reply.feed("A sentence of forty characters or so here. ")  # 0.43 s of audio
    assert wait_until(lambda: bool(sink.played))
    reply.pause()
    time.sleep(0.6)  # longer than the audio: paused, it has not played out
    assert sink.playing
    resumed_s = time.monotonic()
    reply.resume()
    reply.finish()
    assert reply.wait(5)
    assert time.monotonic() - resumed_s > 0.2  # what was left of it still played
    assert [kind for kind, _ in sink.pauses] == ["pause", "resume"]
    assert sink.stops == 0


def test_a_reply_that_has_not_played_leaves_the_speaker_alone() -> None:
    sink, tts = FakeSink(), FakeTts()
    reply = Reply(tts, sink, first_chunk_max_chars=200, held=True)
    reply.feed("Held until the user is quiet. ")
    reply.pause()
    reply.resume()
    reply.cancel()
    assert sink.pauses == [] and sink.stops == 0 and sink.played == []


def test_stopping_a_paused_reply_ends_the_pause() -> None:
    sink, tts = FakeSink(), FakeTts()
    reply = Reply(tts, sink, first_chunk_max_chars=200)
    reply.feed("Someone talked over this one. ")
    assert wait_until(lambda: bool(sink.played))
    reply.pause()
    reply.cancel()
    reply.resume()  # too late: nothing of it is left
    assert [kind for kind, _ in sink.pauses] == ["pause"] and sink.stops == 1
    assert not sink.playing
    assert reply.wait(5)


def test_a_reply_paused_before_it_began_does_not_begin_until_resumed() -> None:
    """Paused for a user who may be going on with the request (or says another), a reply
    whose first sentence was not yet played keeps it back: half-duplex, a sentence begun over
    them gated the microphone over their words."""
    sink, tts = FakeSink(), FakeTts()
    reply = Reply(tts, sink, first_chunk_max_chars=200)
    reply.pause()
    reply.feed("Ready before the user was done. ")
    time.sleep(0.3)
    assert sink.played == [] and not sink.playing
    reply.resume()
    assert wait_until(lambda: bool(sink.played))
    reply.finish()
    assert reply.wait(5) and sink.pauses == []  # the speaker itself was never paused


def test_a_reply_paused_between_sentences_leaves_the_shared_speaker_alone() -> None:
    """Paused while a tool runs (nothing of it sounding), a reply holds back its next
    sentence but not the speaker, which the earcons share: a listening chime played then
    was frozen until the reply went on."""
    sink, tts = FakeSink(), FakeTts()
    idle = threading.Event()
    reply = Reply(tts, sink, first_chunk_max_chars=200, on_idle=idle.set)
    reply.feed("The first sentence. ")
    assert idle.wait(5)  # played, and the reply fell quiet
    reply.pause()
    reply.feed("The second one. ")
    time.sleep(0.3)
    assert len(sink.played) == 1 and sink.pauses == []
    reply.resume()
    assert wait_until(lambda: len(sink.played) == 2)
    reply.finish()
    assert reply.wait(5) and sink.pauses == []


def test_a_pause_renewed_before_its_limit_keeps_the_next_sentence_back() -> None:
    """The machine renews a pause while the user still speaks (PauseReply.renew): the
    limit after which a reply plays on by itself runs from the last pause."""
    sink, tts = FakeSink(), FakeTts()
    reply = Reply(tts, sink, first_chunk_max_chars=200, pause_limit_s=2.0)
    reply.pause()
    reply.feed("Ready while the user was still talking. ")
    for _ in range(12):  # 3 s in all, past the limit, a renewal every 0.25 s
        time.sleep(0.25)
        reply.pause()
    assert sink.played == []
    assert wait_until(lambda: bool(sink.played))  # no more renewals: it plays on by itself
    reply.finish()
    assert reply.wait(5)
