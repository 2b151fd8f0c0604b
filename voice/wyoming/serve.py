"""``voice-assistant serve``: build the programs from the config and run the server.

``serve`` claims no room. A listener claims its room because it answers a microphone (two of
them would answer every utterance twice); ``serve`` answers only what a client sends it, like
``ask`` does, so it shares rooms with listeners the way ``ask`` does: turns in one room take
turns across processes through the room's lock, and the conversation is the same one. A
listener therefore never fails to start because ``serve`` runs, and ``serve`` never refuses a
room because a listener runs. Name satellite rooms apart from a listener's room
(``turn.room``) to keep their conversations apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
import signal
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from core import Core
from core.process import searched
from voice import app
from voice.config import Config
from voice.pipeline import agent_name
from voice.wyoming.programs import Programs
from voice.wyoming.server import WyomingServer, check_address

log = logging.getLogger(__name__)

# From the stop signal to the exit, at most (the service's TimeoutStopSec is 15): what still
# runs then is a transcription or speech, which nobody waits for.
STOP_S = 10.0


def load_programs(config: Config, programs: Programs, *, agent: str | None) -> Core | None:
    """Give ``programs`` the engines of ``wyoming.programs`` (models are loaded only for the
    programs served); returns the core behind ``handle``, if served."""
    wanted = set(config.wyoming.programs)
    log.info("loading what %s need", ", ".join(sorted(wanted)))
    core = None
    if "handle" in wanted:
        core = app.build_core(config, agent=agent)
        programs.conversation = core
        command = app.agent_command(agent, config)
        _check_agent(command[0], "--agent" if agent else "agent.command")
        programs.agent_name = agent_name(command)
        programs.agent_label = "echo" if tuple(command) == app.ECHO_AGENT else command[0]
    for table, program, engine in (
        ("stt", "asr", config.stt.engine),
        ("tts", "tts", config.tts.engine),
    ):
        if engine == "wyoming" and program in wanted:
            # Serving another server's engine would only relay it: serve its own models.
            log.info(
                "serve answers with the local %s model (%s.engine = 'wyoming' applies to "
                "listen, ask, say and transcribe)",
                table,
                table,
            )
    if "asr" in wanted:
        stt = app.load_whisper(config)
        programs.stt = stt
        programs.asr_model = config.stt.model
        programs.asr_languages = ["en"] if stt.english_only else [config.stt.language]
    if "tts" in wanted:
        tts = app.load_piper(config)
        programs.tts = tts
        programs.tts_voice = tts.name
        programs.tts_languages = [tts.language]
    return core


def _check_agent(program: str, named_by: str) -> None:
    """Without its agent program, every request to handle fails ("Sorry, the agent program
    is not installed."): say so once, at start."""
    if shutil.which(program) is None:
        log.warning(
            "the agent program %r (%s) was not found%s: every request to the handle program "
            "will fail until it is installed. A service has no login shell's PATH: give its "
            "full path",
            program,
            named_by,
            searched(program),
        )


def serve(
    config: Config,
    *,
    agent: str | None,
    uri: str | None = None,
    allow_remote: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Serve until SIGTERM, SIGINT or SIGHUP; returns the exit status (0)."""
    uri = uri or config.wyoming.uri
    if check_address(uri, allow_remote=allow_remote or config.wyoming.allow_remote):
        log.warning(
            "serving Wyoming on %s, beyond this machine: there is no authentication, anyone "
            "who can reach the port can run the agent; restrict it with a firewall",
            uri,
        )
    server = WyomingServer(
        config.wyoming, Programs(first_chunk_max_chars=config.tts.first_chunk_max_chars), uri=uri
    )
    stopping = asyncio.run(_serve(config, server, agent, on_ready))
    if not server.wait_for_jobs(stopping + STOP_S - time.monotonic()):
        # The interpreter's exit would wait for it. Turns have been stopped and saved by now.
        log.warning(
            "exiting without waiting for the work still running %g s after the signal (Whisper "
            "or Piper cannot be stopped part way)",
            STOP_S,
        )
        app.exit_now(0)
    return 0


def _where_to_add(address: str) -> str:
    """What to give Home Assistant: a wildcard address is no host it can connect to."""
    parts = urlsplit(address)
    if parts.scheme == "tcp" and _unspecified(parts.hostname or ""):
        return (
            f"Home Assistant's Wyoming integration can add this machine's address, port "
            f"{parts.port} (serving on every interface, {address})"
        )
    if parts.scheme == "unix":
        return (
            f"clients on this machine can use {address} (Home Assistant's Wyoming integration "
            "takes a host and port: serve on tcp:// for it)"
        )
    return f"Home Assistant's Wyoming integration can add {address}"


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


async def _serve(
    config: Config,
    server: WyomingServer,
    agent: str | None,
    on_ready: Callable[[str], None] | None,
) -> float:
    """Serve until a signal; returns when the stop began (monotonic)."""
    await server.bind()  # a taken port fails now, before the models load
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    core = None
    try:
        # Loaded on this thread, so nothing is accepted meanwhile; a signal meanwhile reaches
        # the command's own handlers, which stop the load (the handlers below come after).
        core = load_programs(config, server.programs, agent=agent)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, _stopper(stop, sig))
        address = await server.start()
        log.info("ready: %s", _where_to_add(address))
        if on_ready is not None:
            on_ready(address)
        await stop.wait()
    finally:
        stopping = time.monotonic()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await server.close()
        if core is not None:
            core.stop()  # every agent process this server started
    return stopping


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        log.info("stopping (%s)", sig.name)
        stop.set()

    return handler
