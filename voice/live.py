"""Assembles the live assistant from config: devices, engines, core, loop, controls."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from core.errors import DeviceError
from voice import app
from voice.config import Config
from voice.devices import DuplexDevice, Microphone, RecoveringSpeaker, Speaker
from voice.echo import HALF_DUPLEX, load_canceller, load_word_canceller
from voice.loop import IDLE_BATCH_S, WAKE_IDLE_BATCH_S
from voice.pipeline import build_loop
from voice.service import SystemdNotifier
from voice.status import StatusLine

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
            notifier.status(f"waiting for the {type(device).__name__.lower()}: {e}")
            notifier.extend_timeout(delay + 30)
            stop.wait(delay)
            delay = min(delay * 2, config.audio.reopen_backoff_max_s)
    return False


def _duplex(
    config: Config, notifier: SystemdNotifier, stop: threading.Event
) -> DuplexDevice | None:
    """The echo-cancelled duplex device ``audio.echo_cancel`` asks for, open; None for
    half-duplex. In "auto", a missing library or a stream that will not open is one line
    in the log; in "on", an error (or, as a service, waited for like any device)."""
    canceller = load_canceller(config.audio.echo_cancel, barge_in=config.turn.barge_in)
    if canceller is None:
        return None
    duplex = DuplexDevice(config.audio, canceller, words=load_word_canceller())
    if config.audio.echo_cancel == "on":
        return duplex if _open(duplex, config, notifier, stop) else None
    try:
        duplex.open()
    except DeviceError as e:
        log.info("echo cancellation off: %s; %s", e, HALF_DUPLEX)
        return None
    return duplex


def _devices(
    config: Config, notifier: SystemdNotifier, stop: threading.Event, stack: contextlib.ExitStack
) -> tuple[Microphone | DuplexDevice, Speaker, DuplexDevice | None] | None:
    """The open microphone and speaker (one duplex device with echo cancellation, or two),
    closed by ``stack``; None when stopped while waiting for them."""
    duplex = _duplex(config, notifier, stop)
    if stop.is_set():
        return None
    if duplex is not None:
        stack.callback(duplex.close)
        return duplex, duplex, duplex
    microphone, speaker = Microphone(config.audio), Speaker(config.audio)
    for device in (microphone, speaker):
        if not _open(device, config, notifier, stop):
            return None
        stack.callback(device.close)
    return microphone, speaker, None


def run_live(config: Config, *, agent: str | None, stop: threading.Event) -> int:
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
        models = app.load_models(config)
    except BaseException:
        room_claim.release()
        raise
    line = StatusLine()
    status = line if config.ui.status_line and line.enabled else None  # no meter, no levels
    with room_claim, contextlib.ExitStack() as stack:
        stack.callback(core.stop)  # every exit path stops the agents
        devices = _devices(config, notifier, stop, stack)
        if devices is None:
            return 0
        microphone, speaker, duplex = devices
        loop = build_loop(
            config,
            source=microphone,
            sink=RecoveringSpeaker(speaker),
            echo=duplex,
            models=models,
            conversation=core,
            agent_command=app.agent_command(agent, config),
            status=status,
            watchdog=notifier,
            idle_batch_s=WAKE_IDLE_BATCH_S if config.input.mode == "wake" else IDLE_BATCH_S,
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
        try:
            core.prepare(config.turn.room)  # a session agent (Claude: a second) starts now
        except Exception as e:  # the first turn will try again and say what is wrong
            log.warning("could not start the agent ahead of the first turn: %s", e)
        notifier.ready()
        notifier.status(f"listening in room {config.turn.room}")
        try:
            loop.run(stop)
        finally:
            notifier.stopping()
            # A turn still running: its agent is interrupted (shutdown), then stopped.
            loop.join_turns(timeout_s=5.0)
            notifier.close()
    return 0
