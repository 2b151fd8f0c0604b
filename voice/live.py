"""Assembles the live assistant from config: devices, engines, core, loop, controls."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from core.errors import DeviceError
from voice import app
from voice.config import Config
from voice.devices import Microphone, RecoveringSpeaker, Speaker
from voice.earcons import Earcons
from voice.loop import VoiceLoop
from voice.service import SystemdNotifier
from voice.speech_out import ReplySpeaker
from voice.status import StatusLine
from voice.turns import TurnRunner
from voice.vad import Segmenter, WebRtcDetector

log = logging.getLogger(__name__)


def _open(
    device: Microphone | Speaker, config: Config, notifier: SystemdNotifier, stop: threading.Event
) -> bool:
    """Open a device. Run by hand, a missing one is an error at once (it lists the devices);
    as a service, it is waited for: a USB microphone may appear after the service starts.
    False when stopped while waiting."""
    delay = 0.5
    while not stop.is_set():
        try:
            device.open()
            return True
        except DeviceError as e:
            if not notifier.enabled:
                raise
            log.warning("waiting for the %s: %s", type(device).__name__.lower(), e)
            notifier.extend_timeout(delay + 30)
            stop.wait(delay)
            delay = min(delay * 2, config.audio.reopen_backoff_max_s)
    return False


def run_live(config: Config, *, agent: str | None, stop: threading.Event) -> int:
    from core.process import stop_all as stop_agents
    from voice.control import ControlServer, socket_path
    from voice.hotkeys import choose_backend

    started = time.monotonic()
    notifier = SystemdNotifier()
    notifier.extend_timeout(120)  # loading models on a Raspberry Pi takes a while
    notifier.status("loading models")
    core = app.build_core(config, agent=agent)
    # One listener per room, whatever its control socket: a second one stops here, before
    # loading the models, instead of answering every utterance a second time.
    room_claim = core.claim_room(config.turn.room)
    try:
        engines = app.load_engines(config)
    except BaseException:
        room_claim.release()
        raise
    earcons = Earcons(config.earcons, engines.tts.sample_rate) if config.earcons.enabled else None
    status = StatusLine() if config.ui.status_line else None
    with room_claim, contextlib.ExitStack() as stack:
        microphone, speaker = Microphone(config.audio), Speaker(config.audio)
        for device in (microphone, speaker):
            if not _open(device, config, notifier, stop):
                return 0
            stack.callback(device.close)
        turns = TurnRunner(
            stt=engines.stt,
            speaker=ReplySpeaker(
                engines.tts,
                RecoveringSpeaker(speaker),
                first_chunk_max_chars=config.tts.first_chunk_max_chars,
            ),
            conversation=core,
            room=config.turn.room,
            earcons=earcons,
            thinking_repeat_s=config.earcons.thinking_repeat_s,
            speak_errors=config.turn.speak_errors,
        )
        segmenter = Segmenter(
            config.vad,
            WebRtcDetector(config.vad.aggressiveness),
            frame_ms=config.audio.frame_ms,
        )
        loop = VoiceLoop(
            config,
            source=microphone,
            segmenter=segmenter,
            turns=turns,
            status=status,
            watchdog=notifier,
        )
        control = socket_path(config.input.control_socket)
        server = ControlServer(control, loop.handle_command)
        server.start()
        stack.callback(server.close)
        if config.input.mode != "vad":
            backend = choose_backend(config.input)
            if backend is not None:
                backend.start(loop)
                stack.callback(backend.close)
            else:
                log.info("no hotkey backend: drive push-to-talk with `voice-assistant ptt`")
        if status is not None:
            stack.callback(status.clear)
        log.info(
            "ready in %.1f s: room %r, mode %s, control socket %s",
            time.monotonic() - started,
            config.turn.room,
            config.input.mode,
            control,
        )
        notifier.ready()
        notifier.status(f"listening in room {config.turn.room}")
        try:
            loop.run(stop)
        finally:
            notifier.stopping()
            # A turn still running is on a daemon thread: stop its agent (its own session
            # does not get the terminal's Ctrl-C) and let the turn record the interruption.
            if stop_agents():
                log.info("stopped the agent that was still working")
            loop.join_turn(timeout_s=5.0)
            notifier.close()
    return 0
