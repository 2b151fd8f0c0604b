"""Echo cancellation: frame pairing, the choice of canceller, and WebRTC's canceller itself
on real speech (fast: no audio device)."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

from core.errors import ConfigError
from tests.voice.audio_util import load_16k, shared
from voice.echo import (
    FRAME,
    RATE,
    EchoCanceller,
    EchoCancelUnavailable,
    EchoFrames,
    SpeexCanceller,
    WebRtcCanceller,
    load_canceller,
    load_word_canceller,
)
from voice.echo_guard import db, erle_db, power

Int16 = np.ndarray


def ramp(n: int, start: int = 0) -> Int16:
    return (np.arange(start, start + n) % 30000).astype(np.int16)


def real_speech(seconds: float) -> Int16:
    """Real voices from the shared recordings, looped to ``seconds``, at about -20 dBFS."""
    audio = np.concatenate(
        [load_16k(shared(f"real/librivox-{n}.wav")) for n in ("0870", "0880", "0890")]
    )
    audio = np.resize(audio, int(seconds * RATE))
    return (audio / np.max(np.abs(audio)) * 12000).astype(np.int16)


# ---- frames ----------------------------------------------------------------------------------


def test_frames_pair_sample_k_with_sample_k_whatever_the_block_sizes() -> None:
    frames = EchoFrames()
    near, far = ramp(2000), ramp(2000, start=5)
    out = []
    cuts = [0, 7, 160, 161, 500, 1203, 1999, 2000]
    for a, b in itertools.pairwise(cuts):
        out += frames.push(near[a:b], far[a:b], 10.0 + a / RATE)
    assert len(out) == 2000 // FRAME
    for k, frame in enumerate(out):
        assert np.array_equal(frame.near, near[k * FRAME : (k + 1) * FRAME])
        assert np.array_equal(frame.far, far[k * FRAME : (k + 1) * FRAME])
        assert frame.start_s == pytest.approx(10.0 + k * FRAME / RATE, abs=1e-9)


def test_frames_wait_for_the_stream_that_is_behind() -> None:
    frames = EchoFrames()
    assert frames.push(ramp(400), ramp(100), 0.0) == []  # no far frame yet
    out = frames.push(np.zeros(0, np.int16), ramp(300, start=100), 0.0)
    assert [f.start_s for f in out] == [0.0, FRAME / RATE]
    assert np.array_equal(out[1].near, ramp(400)[FRAME : 2 * FRAME])
    assert np.array_equal(out[1].far, ramp(400)[FRAME : 2 * FRAME])


def test_frames_take_their_time_from_the_newest_block_and_clear_drops_the_rest() -> None:
    frames = EchoFrames()
    frames.push(ramp(100), ramp(100), 5.0)
    # The next block's stamp says where the 100 pending samples were: just before it.
    [frame] = frames.push(ramp(100), ramp(100), 7.0)
    assert frame.start_s == pytest.approx(7.0 - 100 / RATE)
    frames.clear()
    assert frames.push(ramp(100), ramp(100), 9.0) == []


# ---- which canceller ------------------------------------------------------------------------


def missing() -> WebRtcCanceller:
    raise EchoCancelUnavailable("the livekit package is not installed (no module)")


def test_off_needs_no_library() -> None:
    assert load_canceller("off", factory=missing) is None


def test_auto_without_the_library_is_half_duplex_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="voice.echo"):
        assert load_canceller("auto", factory=missing) is None
    [record] = caplog.records
    assert "echo cancellation off: the livekit package is not installed" in record.message
    assert "muted while the assistant speaks" in record.message


def test_on_without_the_library_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"pip install livekit.*echo_cancel = \"auto\""):
        load_canceller("on", factory=missing)


def test_auto_and_on_load_webrtc() -> None:
    assert isinstance(load_canceller("auto"), WebRtcCanceller)
    assert isinstance(load_canceller("on"), WebRtcCanceller)


def test_barge_in_means_no_echo_so_auto_is_off_and_on_stays_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def never() -> WebRtcCanceller:
        raise AssertionError("the canceller was made")

    with caplog.at_level(logging.INFO, logger="voice.echo"):
        assert load_canceller("auto", factory=never, barge_in=True) is None
        assert load_canceller("off", factory=never, barge_in=True) is None
    auto, off = (r.message for r in caplog.records)
    assert "turn.barge_in" in auto and 'echo_cancel = "on"' in auto
    assert "turn.barge_in" in off
    assert "muted" not in auto + off  # barge-in: nothing is muted
    assert isinstance(load_canceller("on", barge_in=True), WebRtcCanceller)


# ---- WebRTC's canceller on real speech ---------------------------------------------------------


def echo_of(played: Int16, delay_s: float) -> Int16:
    delay = int(delay_s * RATE)
    echo = np.zeros_like(played)
    echo[delay:] = (played[:-delay] * 0.5).astype(np.int16)
    return echo


def cancel(canceller: EchoCanceller, near: Int16, far: Int16) -> Int16:
    frames = EchoFrames()
    out = [canceller.process(f.near, f.far) for f in frames.push(near, far, 0.0)]
    return np.concatenate(out)


def test_webrtc_removes_a_delayed_echo_of_real_speech_and_keeps_the_voice() -> None:
    played = real_speech(12.0)
    echo = echo_of(played, 0.09)  # the delay the loopback rig measures
    canceller = WebRtcCanceller()
    canceller.set_delay_ms(80)
    left = cancel(canceller, echo, played)
    late = slice(6 * RATE, 12 * RATE)  # learnt by then
    assert erle_db(echo[late], left[late]) > 30

    # A voice over silence (nothing played) comes through: the canceller is not a mute.
    voice = real_speech(3.0)
    silence = np.zeros_like(voice)
    through = cancel(canceller, voice, silence)
    assert abs(erle_db(voice[RATE:], through[RATE:])) < 3


def test_webrtc_takes_only_whole_frames() -> None:
    with pytest.raises(ValueError, match="160-sample"):
        WebRtcCanceller().process(np.zeros(100, np.int16), np.zeros(100, np.int16))


# ---- the words' canceller: speexdsp's linear filter ---------------------------------------------


@pytest.mark.parametrize("delay_s", [0.09, 0.35])
def test_speex_takes_the_echo_away_and_never_turns_a_voice_down(delay_s: float) -> None:
    # The delay hint (the stream's latency) moves its 300 ms filter to where the echo is:
    # 350 ms is past the filter's reach without it.
    played = real_speech(12.0)
    echo = echo_of(played, delay_s)
    voice = load_16k(shared("real/librivox-0930.wav"))
    voice = (voice / np.max(np.abs(voice)) * 8000).astype(np.int16)
    at = 8 * RATE  # a voice over the reply, once the filter has learnt the echo
    near = echo.copy()
    near[at : at + len(voice)] += voice[: len(near) - at]
    canceller = SpeexCanceller()
    canceller.set_delay_ms(round(delay_s * 1000) - 10)
    left = cancel(canceller, near, played)
    learnt = slice(5 * RATE, at)
    assert erle_db(echo[learnt], left[learnt]) > 12
    # Linear: the voice comes through at its own level from its first word on.
    for start_ms, end_ms in ((0, 400), (400, 1000), (1000, 2500)):
        span = slice(at + start_ms * 16, at + end_ms * 16)
        alone = db(power(voice[start_ms * 16 : end_ms * 16]))
        assert abs(db(power(left[span])) - alone) < 2, (start_ms, alone)


def test_speex_takes_only_whole_frames() -> None:
    with pytest.raises(ValueError, match="160-sample"):
        SpeexCanceller().process(np.zeros(100, np.int16), np.zeros(100, np.int16))


def test_without_speexdsp_whisper_hears_aec3_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_library() -> EchoCanceller:
        raise EchoCancelUnavailable("libspeexdsp does not load (not found)")

    with caplog.at_level(logging.INFO, logger="voice.echo"):
        assert load_word_canceller(factory=no_library) is None
    [record] = caplog.records
    assert "libspeexdsp does not load" in record.message
    assert "install libspeexdsp1" in record.message


def test_the_words_canceller_is_speexdsp_where_set_up_installed_it() -> None:
    assert isinstance(load_word_canceller(), SpeexCanceller)
