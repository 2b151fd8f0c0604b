"""One pipeline for every command: microphone or file in, speaker or WAV out, same loop.

``listen`` wires the microphone and the speaker; ``ask`` and ``demo`` wire a file source and
a WAV sink (or the speaker) into the very same :class:`~voice.loop.VoiceLoop`, so the main
job of the README exercises the streaming path the live loop uses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.errors import ConfigError
from voice.config import Config
from voice.devices import AudioSink
from voice.earcons import Earcons
from voice.echo import EchoState
from voice.end_of_turn import MODEL_PAUSE_S, CombinedAnalyzer
from voice.loop import Engines, ReopenableSource, StatusSink, TurnModel, VoiceLoop, Watchdog
from voice.silero import SileroModel, SileroOnset
from voice.speech_out import ReplySpeaker
from voice.stt import SpeechToText
from voice.tts import TextToSpeech
from voice.turn_taking import TurnPolicy, TurnTaking
from voice.turns import Conversation, TurnSettings
from voice.vad import Segmenter, SpeechDetector, WebRtcDetector
from voice.wake import WakeDetector

log = logging.getLogger(__name__)

Mode = Literal["vad", "ptt-hold", "ptt-toggle", "wake"]


@dataclass
class Models:
    """The loaded speech models, shared by every loop of a process.

    ``silero`` None: webrtcvad alone decides onsets. ``wake``: the wake word detector, which
    wake mode needs (it keeps the state of the audio stream: one loop at a time).
    """

    stt: SpeechToText
    tts: TextToSpeech
    turn_model: TurnModel | None = None
    silero: SileroModel | None = None
    wake: WakeDetector | None = None


def turn_policy(config: Config, *, model: bool, mode: Mode | None = None) -> TurnPolicy:
    turn = config.turn
    analyzer = None
    if turn.smart_endpoint:
        analyzer = CombinedAnalyzer(
            quick_ms=turn.quick_hangover_ms,
            likely_ms=turn.likely_hangover_ms,
            max_ms=max(turn.likely_hangover_ms, config.vad.hangover_ms),
            threshold=turn.end_model_threshold,
            sure=turn.end_model_sure,
        )
    return TurnPolicy(
        mode=mode or config.input.mode,
        analyzer=analyzer,
        model=model and analyzer is not None,
        thinking_repeat_s=config.earcons.thinking_repeat_s if config.earcons.thinking else 0.0,
        permission_timeout_s=config.core.agent.permission_timeout_s,
        release_grace_s=config.input.release_grace_ms / 1000,
        follow_up_s=config.wake.follow_up_s,
        wake_listen_s=config.wake.listen_s,
        longest_pause_s=config.vad.hangover_ms / 1000,
        pause_likelihood=config.vad.silero_threshold,
    )


def agent_name(command: Sequence[str]) -> str:
    """How questions name the agent: "Claude" for Claude Code, else "The agent"."""
    program = os.path.basename(command[0]) if command else ""
    return "Claude" if program == "claude" else "The agent"


def build_loop(
    config: Config,
    *,
    source: ReopenableSource,
    sink: AudioSink,
    models: Models,
    conversation: Conversation,
    agent_command: Sequence[str] = (),
    earcons: bool = True,
    status: StatusSink | None = None,
    watchdog: Watchdog | None = None,
    mode: Mode | None = None,
    detector: SpeechDetector | None = None,
    echo: EchoState | None = None,
    idle_batch_s: float = 0.0,
    questions: bool = True,
) -> VoiceLoop:
    """The loop for ``source`` and ``sink``: segmenter, turn-taking machine and engines.

    ``detector`` replaces webrtcvad (tests). ``echo``: the source cancels the speaker's echo
    (:class:`~voice.devices.duplex.DuplexDevice`); once it tells a voice from the echo, the
    assistant's own sound is no longer gated and speech over a reply stops it.
    ``idle_batch_s``: a live device's frames are read in batches while idle (see VoiceLoop).
    ``questions``: False when nobody can answer the agent's questions (a recording).
    """
    mode = mode or config.input.mode
    if mode == "wake" and models.wake is None:
        raise ConfigError(
            "input.mode = wake needs a wake word detector, and none was loaded "
            "(voice.app.load_models loads one in wake mode)"
        )
    detector = detector or WebRtcDetector(config.vad.aggressiveness)
    onset_check = None
    if config.vad.silero and models.silero is not None:
        onset_check = SileroOnset(models.silero, threshold=config.vad.silero_threshold)
    policy = turn_policy(config, model=models.turn_model is not None, mode=mode)
    segmenter = Segmenter(
        config.vad,
        detector,
        frame_ms=config.audio.frame_ms,
        onset_check=onset_check,
        speech_check=onset_check,  # the same Silero state, fed without gaps
        # the machine asks the end-of-turn model when the pause is this long
        pauses_ms=(round(MODEL_PAUSE_S * 1000),) if policy.model else (),
    )
    tts = models.tts
    engines = Engines(
        stt=models.stt,
        speaker=ReplySpeaker(tts, sink, first_chunk_max_chars=config.tts.first_chunk_max_chars),
        conversation=conversation,
        turn_model=models.turn_model,
        earcons=Earcons(config.earcons, tts.sample_rate)
        if earcons and config.earcons.enabled
        else None,
        wake=models.wake if mode == "wake" else None,
    )
    settings = TurnSettings(
        room=config.turn.room,
        agent_name=agent_name(agent_command),
        tools=config.core.agent.tools,
        progress_s=config.core.agent.progress_s,
        speak_errors=config.turn.speak_errors,
        questions=questions,
    )
    machine = TurnTaking(policy)
    return VoiceLoop(
        config,
        source=source,
        segmenter=segmenter,
        machine=machine,
        engines=engines,
        settings=settings,
        status=status,
        watchdog=watchdog,
        echo=echo,
        idle_batch_s=idle_batch_s,
    )
