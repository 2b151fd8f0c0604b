"""``voice-assistant``: listen, ask, transcribe, say, devices, history, reset, ptt, demo, serve.

Exit status: 0 done (``listen`` and ``serve``: also when stopped by SIGTERM, SIGINT or SIGHUP
once running); 1 the command ran but failed (the agent failed, nothing was heard, the
listener replied with an error); 2 any other error; 75 another listener already answers in the
room; 78 the configuration (the file, a flag, or a model or store it names that is not
there) is unusable, so restarting cannot help (the systemd unit does not restart on it);
128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from core import Core
from core.errors import AssistantError, ConfigError, InvalidIdError, RoomClaimed
from core.paths import validate_room_id
from core.store import SessionStore
from voice import app
from voice.config import Config, check_uri, load
from voice.control import COMMANDS as CONTROL_COMMANDS
from voice.devices import AudioSink
from voice.pipeline import Models, build_loop
from voice.speech_text import speakable
from voice.terminal import printable
from voice.tts import render
from voice.turns import TurnReport
from voice.wyoming.server import check_address

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger("voice.cli")

DEMO_QUESTION = "What is the capital of France?"

TOP_OPTIONS = ("--config", "-q", "--quiet", "-v", "--verbose")
_QV = re.compile(r"-[qv]+")  # -qv: short flags bundled

EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_ROOM_CLAIMED = 75  # EX_TEMPFAIL: the room is free again once the other listener stops
EXIT_CONFIG = 78  # EX_CONFIG: deploy/voice-assistant.service does not restart on it


class Stopped(BaseException):
    """SIGTERM or SIGHUP during a one-shot command, raised where the main thread is, so every
    ``finally`` on the way out runs: the agent is stopped (SIGTERM, then SIGKILL)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_with_command(argv if argv is not None else sys.argv[1:]))
    try:
        config = _config(args)
    except ConfigError as e:
        print(f"voice-assistant: {e}", file=sys.stderr)
        return EXIT_CONFIG
    app.configure_logging(config.ui.log_level, quiet=args.quiet, verbose=args.verbose)
    # Every run of a long-lived command says which file; a key's `ptt press` stays quiet.
    say = log.info if args.run in (cmd_listen, cmd_serve) else log.debug
    if config.source is not None:
        say("configuration read from %s", config.source)
    else:
        say("no configuration file: using the defaults")
    if args.run is not cmd_listen:
        _stop_on_signals()
    try:
        return int(args.run(args, config))
    except KeyboardInterrupt:
        return 130
    except Stopped as e:
        return _stopped(e.signum)
    except Exception as e:
        if _stopped_by:  # the stop came back as a library's error (an import it broke)
            return _stopped(_stopped_by[0])
        if not isinstance(e, AssistantError):
            raise
        print(f"voice-assistant: {e}", file=sys.stderr)
        return _exit_status(e)


def _stopped(signum: int) -> int:
    log.info("stopped by %s", signal.Signals(signum).name)
    return 128 + signum


def _exit_status(error: AssistantError) -> int:
    if isinstance(error, RoomClaimed):
        return EXIT_ROOM_CLAIMED
    if isinstance(error, ConfigError):  # also found once a setting is used: ModelNotFound
        return EXIT_CONFIG
    return EXIT_ERROR


def _with_command(argv: list[str]) -> list[str]:
    """``argv`` with ``listen`` put first when it starts with listen's options and names no
    command: "voice-assistant" and "voice-assistant --agent echo" both listen. A word where
    the command goes is left for argparse, which lists the commands if it is none of them."""
    i = 0
    while i < len(argv) and (
        argv[i] in TOP_OPTIONS or argv[i].startswith("--config=") or _QV.fullmatch(argv[i])
    ):
        i += 2 if argv[i] == "--config" else 1
    if i < len(argv) and (not argv[i].startswith("-") or argv[i] in ("-h", "--help")):
        return list(argv)
    return ["listen", *argv]


_stopped_by: list[int] = []  # the signal that stopped a one-shot command, once it came


def _stop_on_signals() -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):  # once: never interrupt the cleanup
            signal.signal(sig, signal.SIG_IGN)
        _stopped_by.append(signum)
        raise Stopped(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def _config(args: argparse.Namespace) -> Config:
    config = load(args.config)
    turn, audio, inp = config.turn, config.audio, config.input
    if getattr(args, "room", None) is not None:
        try:
            validate_room_id(args.room)
        except InvalidIdError as e:
            raise ConfigError(f"--room: {e}") from None
        turn = dataclasses.replace(turn, room=args.room)
    if getattr(args, "device", None) is not None:
        audio = dataclasses.replace(audio, input_device=args.device)
    if getattr(args, "output_device", None) is not None:
        audio = dataclasses.replace(audio, output_device=args.output_device)
    if getattr(args, "mode", None):
        inp = dataclasses.replace(inp, mode=args.mode)
    wyoming = config.wyoming
    if getattr(args, "uri", None) is not None:
        check_uri(args.uri, "--uri")
        wyoming = dataclasses.replace(wyoming, uri=args.uri)
    if getattr(args, "allow_remote", False):
        wyoming = dataclasses.replace(wyoming, allow_remote=True)
    if args.run is cmd_serve:
        check_address(wyoming.uri, allow_remote=wyoming.allow_remote)
    return dataclasses.replace(config, turn=turn, audio=audio, input=inp, wyoming=wyoming)


def _user_path(text: str) -> Path:
    """A path from the command line; ``--config=~/x`` reaches us unexpanded (the shell
    expands ``~`` only at a word's start)."""
    return Path(text).expanduser()


def _common(*, top: bool) -> argparse.ArgumentParser:
    """--config, --quiet and --verbose, before the command or after it. After it, they
    default to nothing, so the command's own defaults do not undo what came before it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=_user_path,
        default=None if top else argparse.SUPPRESS,
        help="config file (default: $VOICE_ASSISTANT_CONFIG, else "
        "~/.config/voice-assistant/config.toml if it exists)",
    )
    flag = False if top else argparse.SUPPRESS
    common.add_argument(
        "-q", "--quiet", action="store_true", default=flag, help="only warnings and errors"
    )
    common.add_argument("-v", "--verbose", action="store_true", default=flag, help="debug logging")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common(top=False)
    agent = argparse.ArgumentParser(add_help=False)
    agent.add_argument("--agent", help="agent command line; 'echo' for the built-in echo agent")
    agent.add_argument("--room", help="conversation room (default: turn.room)")

    parser = argparse.ArgumentParser(
        prog="voice-assistant",
        allow_abbrev=False,  # what _with_command recognises is what the top level takes
        description=(__doc__ or "").replace("``", ""),  # the docstring, without its markup
        parents=[_common(top=True)],
    )
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("listen", parents=[common, agent], help="run the live loop (default)")
    p.add_argument("--device", help="microphone: name substring or index")
    p.add_argument("--output-device", help="speaker: name substring or index")
    p.add_argument("--mode", choices=["vad", "ptt-hold", "ptt-toggle", "wake"], help="input mode")
    p.set_defaults(run=cmd_listen)

    p = sub.add_parser("ask", parents=[common, agent], help="one turn from an audio file")
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", type=_wav_path, help="write the spoken reply to this WAV file")
    p.set_defaults(run=cmd_ask)

    p = sub.add_parser("transcribe", parents=[common], help="print the transcript of a file")
    p.add_argument("file", type=Path)
    p.set_defaults(run=cmd_transcribe)

    p = sub.add_parser("say", parents=[common], help="speak text (or write it to a WAV file)")
    p.add_argument("text")
    p.add_argument("-o", "--output", type=_wav_path, help="write the speech to this WAV file")
    p.add_argument("--output-device", help="speaker: name substring or index")
    p.set_defaults(run=cmd_say)

    p = sub.add_parser("devices", parents=[common], help="list audio devices")
    p.set_defaults(run=cmd_devices)

    p = sub.add_parser("history", parents=[common], help="list conversations, newest first")
    p.add_argument("--room", help="only this room")
    p.add_argument(
        "-n", "--limit", type=_positive_int, default=20, help="at most this many (default 20)"
    )
    p.add_argument(
        "--ids",
        action="store_true",
        help="each conversation's id and the agent's own (claude --resume ID, run in "
        "agent.cwd, goes on with it at the keyboard)",
    )
    p.set_defaults(run=cmd_history)

    p = sub.add_parser("reset", parents=[common], help="start a new conversation in a room")
    p.add_argument("--room", help="the room (default: turn.room)")
    p.set_defaults(run=cmd_reset)

    p = sub.add_parser(
        "ptt", parents=[common], help="drive a running listener: push-to-talk, stop, answers"
    )
    p.add_argument("action", choices=list(CONTROL_COMMANDS))
    p.set_defaults(run=cmd_ptt)

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve Whisper, Piper and the agent over Wyoming (Home Assistant)",
    )
    p.add_argument("--agent", help="agent command line; 'echo' for the built-in echo agent")
    p.add_argument(
        "--uri", help="tcp://HOST:PORT or unix://PATH (default: wyoming.uri, tcp://127.0.0.1:10700)"
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen on a non-loopback address (Wyoming has no authentication)",
    )
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("demo", parents=[common], help="a spoken round trip with the echo agent")
    p.add_argument("-o", "--output", type=_wav_path, help="where to write the reply (WAV)")
    p.set_defaults(run=cmd_demo, agent="echo", room="demo")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _wav_path(text: str) -> Path:
    """An ``-o`` path a WAV file can be written to, checked before any work is done (with a
    real agent, a turn is paid for by the time its reply is written)."""
    path = Path(text)
    if path.suffix.lower() != ".wav":
        raise argparse.ArgumentTypeError(f"{path}: replies are written as WAV; name a .wav file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: that is a folder; name a .wav file in it")
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"{path}: cannot write into {folder} (missing, or no access)"
        )
    return path


# ---- one-shot commands ----------------------------------------------------------------------
def cmd_ask(args: argparse.Namespace, config: Config) -> int:
    # A bad --agent or [agent] table is told before the models load.
    core = app.build_core(config, agent=args.agent)
    audio = app.read_audio(args.file)  # and a bad file too
    started = time.monotonic()
    models = app.load_models(config)
    log.info("models loaded in %.2f s", time.monotonic() - started)  # not with --quiet
    return _ask(audio, config, models, core, agent=args.agent, output=args.output)


def _ask(
    audio: npt.NDArray[np.float32],
    config: Config,
    models: Models,
    core: Core,
    *,
    agent: str | None,
    output: Path | None,
) -> int:
    """One request from a recording, through the live loop's own pipeline."""
    from voice.devices import Speaker
    from voice.devices.files import FileSource, WavSink

    source = FileSource(audio, rate=app.STT_RATE, frame_ms=config.audio.frame_ms)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(core.stop)
        if output is not None:
            sink: AudioSink = WavSink(models.tts.sample_rate)
        else:
            sink = stack.enter_context(Speaker(config.audio))
        loop = build_loop(
            config,
            source=source,
            sink=sink,
            models=models,
            conversation=core,
            agent_command=app.agent_command(agent, config),
            earcons=False,
            mode="vad",
            questions=False,  # nobody can answer a question asked of a recording
        )
        loop.run(threading.Event(), until_idle=True)
    answered = [r for r in loop.reports if r.outcome != "interrupted" or r is loop.reports[-1]]
    if not answered:
        print("transcript: (nothing heard)")
        print("nothing to send to the agent: no speech found", file=sys.stderr)
        return 1
    report = answered[-1]
    print(f"transcript: {printable(report.transcript)}")
    print(f"reply: {printable(report.reply or spoken_reply(report))}")
    for note in report.notes:
        print(f"note: {printable(note.removeprefix('Note: '))}")
    if isinstance(sink, WavSink) and output is not None:
        samples = sink.samples()
        app.write_wav(output, samples, sink.rate)
        print(f"wrote {output} ({len(samples) / sink.rate:.1f} s)")

    def after(t: float | None) -> str:
        return "-" if t is None else f"{t - report.sent_s:.2f}s"

    print(
        f"timings: {len(audio) / app.STT_RATE:.1f}s of audio in {time.monotonic() - started:.2f}s; "
        f"from sending: agent first text {after(report.agent_first_text_s)}, "
        f"first audio {after(report.first_audio_s)}"
    )
    if core.unsaved_rooms():  # tried again as the core stopped: this turn is not kept
        print("error: the conversation could not be saved (see the log)", file=sys.stderr)
        return 1
    if report.speech_error is not None:
        print(f"error: the reply could not be spoken: {report.speech_error}", file=sys.stderr)
        return 1
    return 1 if report.error is not None else 0


def spoken_reply(report: TurnReport) -> str:
    return " ".join(report.spoken)


def cmd_transcribe(args: argparse.Namespace, config: Config) -> int:
    from voice.stt import squash

    audio = app.read_audio(args.file)
    if config.stt.engine == "wyoming":  # the server, else the local model as configured
        result = app.load_stt(config).transcribe(app.as_utterance(audio))
    else:
        result = app.load_whisper(config).transcribe_file(audio)
    if result.dropped or not squash(result.text):  # a script sees no words, a person why
        print(f"no speech heard in {args.file}: {result.dropped or 'no words'}", file=sys.stderr)
        return 0
    print(result.text.strip())
    return 0


def cmd_say(args: argparse.Namespace, config: Config) -> int:
    text = speakable(args.text)
    if not text.strip():
        raise AssistantError(f"nothing to say in {args.text!r}: give some words")
    tts = app.load_tts(config)
    samples = render(tts, text)
    if args.output is not None:
        app.write_wav(args.output, samples, tts.sample_rate)
        return 0
    from voice.devices import Speaker

    with Speaker(config.audio) as speaker:
        speaker.play(samples, tts.sample_rate)
        speaker.wait(len(samples) / tts.sample_rate + 5)
    return 0


def cmd_devices(args: argparse.Namespace, config: Config) -> int:
    from voice.devices import list_devices

    print(list_devices())
    return 0


def cmd_history(args: argparse.Namespace, config: Config) -> int:
    root = config.core.session.root
    if not root.exists():  # reading creates nothing: a mistyped store_dir stays visible
        print(f"no conversations yet (there is no store at {root})")
        return 0
    core = app.build_core(config)
    every = core.store.list()
    rows = [e for e in every if args.room is None or e.get("room_id") == args.room]
    if not rows and every:  # a mistyped room: say which there are
        rooms = ", ".join(sorted({printable(str(e.get("room_id", "?"))) for e in every}))
        print(f"no conversations in room {printable(args.room)!r}; rooms with some: {rooms}")
    elif not rows:
        print("no conversations yet")
    for entry in rows[: args.limit]:
        when = _when(entry["updated_at"])
        count = entry.get("message_count", "?")
        title = printable(str(entry.get("title", "")))
        closed = "  (closed: the room's next message starts anew)" if entry.get("closed") else ""
        print(f"{when}  {entry.get('room_id', '?'):<12} {count!s:>4} msgs  {title}{closed}")
        if args.ids:
            print(f"{'':18}{_ids(core.store, str(entry['session_id']))}")
    return 0


def _when(stamp: float) -> str:
    """A stored time as the user reads it; one no clock can show (a file edited by hand,
    or a clock that was decades off) is shown as it is."""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
    except (OverflowError, OSError, ValueError):
        return f"{stamp:>16.6g}"


def _ids(store: SessionStore, session_id: str) -> str:
    try:
        session = store.load(session_id)
    except AssistantError as e:  # listed, then unreadable: say so and go on
        return f"conversation {session_id} (unreadable: {e})"
    if session is None:  # gone since it was listed, or moved aside as corrupt
        return f"conversation {session_id} (no longer readable)"
    agent_id, program = session.agent_session_id, session.agent_program
    by = f" ({printable(program)})" if program else ""
    return f"conversation {session_id}" + (
        f", agent session {printable(agent_id)}{by}" if agent_id else ""
    )


def cmd_reset(args: argparse.Namespace, config: Config) -> int:
    room = config.turn.room
    if app.build_core(config).reset(room):
        print(f"room {room}: conversation closed; the next message starts a new one")
    else:
        print(f"room {room} has no open conversation; the next message starts a new one")
    return 0


def cmd_ptt(args: argparse.Namespace, config: Config) -> int:
    from voice.control import send_command, socket_path

    reply = send_command(socket_path(config.input.control_socket), args.action)
    print(printable(reply))
    return EXIT_FAILED if reply.startswith("error") else 0


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    """Say a question with the TTS, then run ``ask`` on it with the echo agent."""
    workdir = Path(tempfile.mkdtemp(prefix="voice-assistant-demo-"))
    try:
        models = app.load_models(config)
        question = workdir / "question.wav"
        app.write_wav(question, render(models.tts, DEMO_QUESTION), models.tts.sample_rate)
        where = "a scratch file" if args.output else question  # kept only without -o
        print(f"question: {DEMO_QUESTION!r} spoken into {where}")
        output = args.output or workdir / "reply.wav"
        core = app.build_core(config, agent="echo", store_dir=workdir / "sessions")
        status = _ask(app.read_audio(question), config, models, core, agent="echo", output=output)
        if status == 0:
            reply = app.read_audio(output)
            heard_back = models.stt.transcribe(app.as_utterance(reply))
            print(f"reply heard back: {heard_back.text.strip()}")
    finally:
        # The demo's conversation is no one's; the two WAV files stay to be listened to,
        # unless the reply went where -o said.
        shutil.rmtree(workdir if args.output else workdir / "sessions", ignore_errors=True)
    return status


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from voice.wyoming.serve import serve

    return serve(config, agent=args.agent)


# ---- the live loop ---------------------------------------------------------------------------
def cmd_listen(args: argparse.Namespace, config: Config) -> int:
    from voice.live import run_live

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        hint = "; Ctrl-C again to force" if signum == signal.SIGINT else ""
        log.info("stopping (%s)%s", signal.Signals(signum).name, hint)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    status = run_live(config, agent=args.agent, stop=stop)
    log.info("stopped")  # a clean stop, in a journal that otherwise looks like a hang
    return status


def run() -> None:
    """The console script: :func:`main`, then out.

    With livekit's canceller loaded, out without the interpreter's finalization. Its native
    runtime hands its log records to Python from threads of its own; one that arrives while
    the interpreter finalizes is ended mid-call, which aborts the process (SIGABRT, where a
    stop should exit 0: a listener in the rig did so about once in 25 stops). So the exit
    handlers run now, livekit's own shutdown among them, and the process ends at once.
    """
    try:
        status = main()
    except Exception:
        if "livekit.rtc" not in sys.modules:
            raise
        traceback.print_exc()  # what the interpreter would print, then the same way out
        status = 1
    if "livekit.rtc" not in sys.modules:
        sys.exit(status)
    app.exit_now(status)


if __name__ == "__main__":
    run()
