"""The three programs' requests, one object of each per connection.

- :class:`AsrRequest`: ``transcribe``? ``audio-start`` ``audio-chunk``* ``audio-stop`` ->
  ``transcript`` (the hallucination guard's verdict is an empty transcript).
- :class:`TtsRequest`: ``synthesize`` -> ``audio-start`` ``audio-chunk``* ``audio-stop``, one
  sentence synthesized (and sent) at a time; or the streaming form, where each sentence is
  spoken as soon as its text is complete: ``synthesize-start`` ``synthesize-chunk``*
  [``synthesize``, ignored: it repeats the chunks for older servers] ``synthesize-stop`` ->
  one ``audio-start`` .. ``audio-stop`` per sentence, then ``synthesize-stopped``.
- :class:`HandleRequest`: ``transcript`` (with ``context``) -> ``handled-start``,
  ``handled-chunk`` per piece of text the agent writes, ``handled`` (the whole reply, for
  clients that do not stream), ``handled-stop``; ``not-handled`` with one spoken sentence when
  the agent fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from wyoming.asr import Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.tts import SynthesizeStopped

from core.agent_events import AgentEvent, PermissionRequest, TurnControl, text_only
from core.conversation import TurnOutcome
from core.errors import AssistantError, InvalidIdError, ProtocolError
from core.paths import validate_room_id
from voice import narration
from voice.speech_text import SentenceStream
from voice.turns import spoken_error
from voice.wyoming.audio_in import IncomingAudio, audio_format
from voice.wyoming.protocol import ClientGone, Stalled

if TYPE_CHECKING:
    from voice.wyoming.server import Connection

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20_000  # one request's text to speak: about twenty minutes of speech
SAMPLES_PER_CHUNK = 1024  # audio-chunk size sent, as wyoming-piper sends it
NOBODY_TO_ASK = (
    "Nobody can answer permission questions through Home Assistant (Wyoming), so this was "
    "not allowed."
)
NOTHING_HEARD = "Sorry, there was nothing to send to the agent."
NOT_SAVED = "I could not save this conversation."
STOPPING = "Sorry, the assistant is stopping. Ask again when it is back."
# Between the writes that tell a client that closed only its sending side from one that
# closed for good: longer than the reset takes to come back across a home network.
HALF_CLOSE_PROBE_S = 0.2


def _text(data: dict[str, Any], kind: str) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise ProtocolError(f"a {kind} event needs a 'text' string")
    return text


class AsrRequest:
    """Collects one request's audio and answers with its transcript."""

    TYPES = frozenset({"transcribe", "audio-start", "audio-chunk", "audio-stop"})

    def __init__(self, link: Connection) -> None:
        self.link = link
        self._audio: IncomingAudio | None = None
        self._lock = link.server.stt_lock

    def takes(self, kind: str) -> bool:
        return kind in self.TYPES

    async def on_event(self, event: Any) -> None:
        kind, data = event.type, event.data
        if kind == "transcribe":
            self._audio = None  # a new request
        elif kind == "audio-start":
            fmt = audio_format(data)
            self._audio = IncomingAudio(*fmt, max_audio_s=self.link.server.config.max_audio_s)
        elif kind == "audio-chunk":
            if self._audio is None:
                raise ProtocolError("audio-chunk before audio-start")
            self._audio.add(audio_format(data), event.payload or b"")
        else:  # audio-stop
            if self._audio is None:
                raise ProtocolError("audio-stop without audio-start")
            audio, self._audio = self._audio, None
            await self._answer(audio)

    async def _answer(self, audio: IncomingAudio) -> None:
        stt = self.link.server.programs.stt
        assert stt is not None
        utterance = audio.finish()

        def work() -> str | None:
            with self._lock:  # one model: requests take turns (parallel ones only share cores)
                if self.link.unheard:  # by the time its turn came
                    return None
                return stt.transcribe(utterance).text.strip()

        text = await self.link.server.run_blocking(work)
        if text is None:
            log.info(
                "%s: %.1f s of audio not transcribed: nobody hears it",
                self.link.peer,
                utterance.duration_s,
            )
            return
        log.info("%s: transcribed %.1f s: %r", self.link.peer, utterance.duration_s, text)
        await self.link.send(Transcript(text=text).event())


class TtsRequest:
    """Speaks one request's text, sentence by sentence, as soon as each is complete."""

    TYPES = frozenset({"synthesize", "synthesize-start", "synthesize-chunk", "synthesize-stop"})

    def __init__(self, link: Connection) -> None:
        self.link = link
        self._stream: SentenceStream | None = None
        self._chars = 0
        self._lock = link.server.tts_lock

    def takes(self, kind: str) -> bool:
        return kind in self.TYPES

    def _new_stream(self) -> SentenceStream:
        self._chars = 0
        return SentenceStream(self.link.server.programs.first_chunk_max_chars)

    def _count(self, text: str) -> None:
        self._chars += len(text)
        if self._chars > MAX_TEXT_CHARS:
            raise ProtocolError(f"more than {MAX_TEXT_CHARS} characters to speak in one request")

    async def on_event(self, event: Any) -> None:
        kind, data = event.type, event.data
        if kind == "synthesize":
            if self._stream is not None:
                return  # a streaming client repeats its text here for older servers
            text = _text(data, kind)
            stream = self._new_stream()
            self._count(text)
            await self._speak(stream.feed(text) + stream.flush())
        elif kind == "synthesize-start":
            self._stream = self._new_stream()
        elif self._stream is None:
            raise ProtocolError(f"{kind} without synthesize-start")
        elif kind == "synthesize-chunk":
            text = _text(data, kind)
            self._count(text)
            for sentence in self._stream.feed(text):
                await self._speak([sentence])
        else:  # synthesize-stop
            stream, self._stream = self._stream, None
            for sentence in stream.flush():
                await self._speak([sentence])
            await self.link.send(SynthesizeStopped().event())

    async def _speak(self, pieces: list[str]) -> None:
        """One audio stream (start, chunks, stop) for ``pieces``, each sent once synthesized."""
        tts = self.link.server.programs.tts
        assert tts is not None
        rate = tts.sample_rate
        await self.link.send(AudioStart(rate=rate, width=2, channels=1).event())
        for piece in pieces:

            def work(text: str = piece) -> list[npt.NDArray[np.int16]] | None:
                with self._lock:
                    return None if self.link.unheard else list(tts.synthesize(text))

            spoken = await self.link.server.run_blocking(work)
            if spoken is None:
                return  # nobody hears it
            for audio in spoken:
                pcm = np.ascontiguousarray(audio, dtype="<i2").tobytes()
                step = SAMPLES_PER_CHUNK * 2
                for offset in range(0, len(pcm), step):
                    chunk = AudioChunk(
                        rate=rate, width=2, channels=1, audio=pcm[offset : offset + step]
                    )
                    await self.link.send(chunk.event())
        await self.link.send(AudioStop().event())


@dataclass(frozen=True)
class _Done:
    outcome: TurnOutcome | None = None
    error: BaseException | None = None


class RoomTurns:
    """The requests to one room take their turns in the order they came, waiting here on the
    event loop. (The core's room locks run one turn at a time, but in no particular order,
    and a request waiting on them holds a pool thread.)

    A request whose client leaves while it waits keeps its place: its words are stored in
    their turn, never sent. It no longer counts against wyoming.max_connections (it holds
    only its text), so up to ``max_kept`` such requests wait; beyond that one is dropped."""

    def __init__(self, max_kept: int) -> None:
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self.max_kept = max_kept
        self.kept = 0  # requests waiting whose client has left

    @contextlib.asynccontextmanager
    async def turn(
        self, room: str, left: asyncio.Future[None], on_left: Callable[[], None]
    ) -> AsyncIterator[Literal["answer", "keep", "drop"]]:
        """Yields once it is this request's turn in ``room``: "answer" while its client is
        there; "keep" if it left (its words are to be stored, and ``on_left`` was called if
        it left while the request waited); "drop" if it left while ``max_kept`` such requests
        were waiting already (it then ends at once)."""
        queue = self._queues.setdefault(room, deque())
        mine = asyncio.get_running_loop().create_future()
        queue.append(mine)
        if len(queue) == 1:
            mine.set_result(None)  # nobody before it
        kept = False
        try:
            # (asyncio.wait, never a plain await: a cancelled waiter must not cancel ``mine``,
            # which the request before it hands the turn to.)
            await asyncio.wait({mine, left}, return_when=asyncio.FIRST_COMPLETED)
            if not left.done():
                yield "answer"
            elif mine.done():
                yield "keep"
            elif self.kept < self.max_kept:
                kept = True
                self.kept += 1
                on_left()
                await asyncio.wait({mine})
                yield "keep"
            else:
                yield "drop"
        finally:
            self.kept -= kept
            first = queue[0] is mine
            queue.remove(mine)
            if not queue:
                del self._queues[room]
            elif first and not queue[0].done():
                queue[0].set_result(None)  # the next one's turn

    def __len__(self) -> int:
        return len(self._queues)


class HandleRequest:
    """Runs one agent turn per ``transcript`` in the room its context names."""

    TYPES = frozenset({"transcript"})

    def __init__(self, link: Connection) -> None:
        self.link = link
        self._control: TurnControl | None = None

    def takes(self, kind: str) -> bool:
        return kind in self.TYPES

    def room(self, context: dict[str, Any]) -> str:
        """The room named by the first of ``wyoming.room_keys`` in ``context`` that is a usable
        room name, else the default room. One that is not is logged and skipped: Home
        Assistant passes a conversation_id chosen by its caller ("kitchen chat") unchanged."""
        config = self.link.server.config
        for key in config.room_keys:
            value = context.get(key)
            if value is None or value == "":
                continue
            try:
                return validate_room_id(value)
            except InvalidIdError as e:
                log.info(
                    "%s: the context's %s is not a usable room, skipped: %s", self.link.peer, key, e
                )
        return config.default_room

    async def close(self) -> None:
        """The connection ends: a turn still running is interrupted (nobody would hear it)."""
        if self._control is not None:
            self._control.interrupt()

    async def on_event(self, event: Any) -> None:
        text = _text(event.data, "transcript")
        context = event.data.get("context") or {}
        if not isinstance(context, dict):
            raise ProtocolError("a transcript's context must be a JSON object")
        room = self.room(context)
        if not text.strip():
            await self.link.send(NotHandled(text=NOTHING_HEARD, context=context).event())
            return
        log.info("%s: room %s: %r", self.link.peer, room, text[:200])
        # First, before any turn starts: a client that cannot take it costs no agent turn.
        await self.link.send(HandledStart(context=context).event())
        left = asyncio.create_task(self._left())

        def detach() -> None:
            self.link.detached = True  # it holds only its words now: it stops counting
            log.info("room %s: the client left while its request waited: kept: %r", room, text)

        try:
            async with self.link.server.rooms.turn(room, left, detach) as turn:
                if turn != "answer":
                    await self._keep(room, text, dropped=turn == "drop")
                    return
                done = await self._turn(room, text, left)
        except asyncio.CancelledError:  # the server stops: say so, not just hang up
            if self.link.detached:
                log.warning("room %s: the server stopped before its turn: not kept: %r", room, text)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.link.send(NotHandled(text=STOPPING, context=context).event())
                    await self.link.send(HandledStop().event())
            raise
        finally:
            left.cancel()
        await self._finish(done, context, room)

    async def _keep(self, room: str, text: str, *, dropped: bool) -> None:
        """Its client left before its turn: the words are stored in their turn (as a request
        nobody heard answered), never sent to the agent."""
        if dropped:
            log.warning("room %s: the client left before its turn; not kept: %r", room, text)
            return
        conversation = self.link.server.programs.conversation
        assert conversation is not None
        control = TurnControl()
        control.interrupt()  # before it begins: the agent never hears of it

        def keep() -> None:
            conversation.run_turn(room, text, control=control)

        log.info("room %s: the client left before its turn; kept, not sent: %r", room, text)
        try:
            await self.link.server.run_blocking(keep)
        except AssistantError as e:
            log.warning("room %s: could not keep %r: %s", room, text, e)
        finally:
            self.link.detached = False  # what else it sent counts again

    async def _turn(self, room: str, text: str, left: asyncio.Task[None]) -> _Done:
        conversation = self.link.server.programs.conversation
        assert conversation is not None
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | _Done] = asyncio.Queue()
        control = self._control = TurnControl()

        def put(item: str | _Done) -> None:
            with contextlib.suppress(RuntimeError):  # the server stopped meanwhile
                loop.call_soon_threadsafe(pieces.put_nowait, item)

        forward = text_only(put)

        def on_event(event: AgentEvent) -> None:
            if isinstance(event, PermissionRequest):
                # Nobody can be asked: a satellite has no way to say yes. The agent hears why.
                log.info("room %s: the agent asked to use %s; denied", room, event.tool_name)
                control.answer(event.request_id, "deny", NOBODY_TO_ASK)
            elif forward is not None:
                forward(event)

        def work() -> None:
            try:
                outcome = conversation.run_turn(room, text, on_event=on_event, control=control)
            except BaseException as e:  # reported to the client, never lost in the pool
                put(_Done(error=e))
            else:
                put(_Done(outcome=outcome))

        self.link.server.pool.submit(work)
        done = await self._relay(pieces, left)
        self._control = None
        return done

    async def _finish(self, done: _Done, context: dict[str, Any], room: str) -> None:
        if self.link.broken:  # its turn was interrupted: what it gets is the protocol error
            log.info("room %s: the turn was cut short; no answer is sent", room)
            return
        if done.error is not None:
            unexpected = not isinstance(done.error, AssistantError)  # a bug: keep its traceback
            log.warning("room %s: the agent failed: %s", room, done.error, exc_info=unexpected)
            await self.link.send(NotHandled(text=spoken_error(done.error), context=context).event())
            await self.link.send(HandledStop().event())
            return
        assert done.outcome is not None
        outcome = done.outcome
        notes = []
        if outcome.denials and not outcome.interrupted:
            notes.append(narration.refusals(self.link.server.programs.agent_name, outcome.denials))
        if not outcome.saved:  # the core logged why; the user hears one sentence
            notes.append(NOT_SAVED)
        reply = outcome.reply
        if notes:
            extra = " ".join(notes)
            await self.link.send(HandledChunk(text=("\n\n" if reply else "") + extra).event())
            reply = f"{reply}\n\n{extra}" if reply else extra
        await self.link.send(Handled(text=reply, context=context).event())
        await self.link.send(HandledStop().event())

    async def _relay(self, pieces: asyncio.Queue[str | _Done], left: asyncio.Task[None]) -> _Done:
        """Send the reply's text as it comes, until the turn is done. If the client goes away
        (or the connection is stopped), the turn is interrupted; its end is still awaited
        unless the server itself stops, and the core records it either way."""
        listening = True
        try:
            while True:
                get = asyncio.create_task(pieces.get())
                try:
                    await asyncio.wait({get, left}, return_when=asyncio.FIRST_COMPLETED)
                    if listening and left.done():
                        listening = False
                        self._interrupt("the client went away")
                    item = await get
                except BaseException:
                    get.cancel()
                    raise
                if isinstance(item, _Done):
                    return item
                if listening:
                    try:
                        await self.link.send(HandledChunk(text=item).event())
                    except (ClientGone, Stalled) as e:
                        listening = False
                        self._interrupt(str(e))
        except asyncio.CancelledError:
            self._interrupt("the server is stopping")
            raise

    async def _left(self) -> None:
        """Returns once the client has gone for good: it closed, broke the protocol or stalled,
        or the connection was stopped. One that closed only its sending side, and still
        reads, has not: it is waited for."""
        await self.link.gone.wait()
        if self.link.ended and await self._still_reading():
            await asyncio.Event().wait()  # never

    async def _still_reading(self) -> bool:
        """The client ended its input: did it close only its sending side (``nc -N``, a
        script's ``shutdown``) and wait for the answer? TCP tells only when written to: a
        socket closed for good answers the first write with a reset, so the second fails."""
        try:
            for _ in range(2):
                await self.link.send(HandledChunk(text="").event())
                await asyncio.sleep(HALF_CLOSE_PROBE_S)
        except (ClientGone, Stalled):
            return False
        log.info("%s: the client closed its sending side; it still gets the answer", self.link.peer)
        return True

    def _interrupt(self, why: str) -> None:
        if self._control is not None:
            log.info("%s: %s; interrupting its turn", self.link.peer, why)
            self._control.interrupt()
