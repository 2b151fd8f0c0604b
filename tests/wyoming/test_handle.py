"""The handle program with a fake conversation: streaming, rooms, failures, permissions, and a
client that leaves mid-turn. (The real core and echo agent: test_serve.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from wyoming.asr import Transcript
from wyoming.handle import Handled, NotHandled

from core.agent_events import EventCallback, TextDelta, TurnControl
from core.conversation import TurnOutcome
from core.errors import AgentTimeout, StoreError
from tests.voice.fakes import FakeConversation, wait_until
from tests.wyoming.peers import Client, ServerThread
from voice.config import WyomingConfig
from voice.wyoming.handlers import NOBODY_TO_ASK, NOT_SAVED, NOTHING_HEARD, STOPPING
from voice.wyoming.programs import Programs

CONFIG = WyomingConfig(client_timeout_s=30)


@pytest.fixture
def fake() -> FakeConversation:
    return FakeConversation()


@pytest.fixture
def server(fake: FakeConversation) -> Iterator[ServerThread]:
    with ServerThread(CONFIG, Programs(conversation=fake)) as running:
        yield running


def ask(server: ServerThread, text: str, context: dict[str, object] | None = None) -> list:
    with Client(server.address) as client:
        client.send(Transcript(text, context=context).event())
        return client.read_until("handled-stop")


def test_the_reply_streams_then_comes_whole_for_clients_that_do_not_stream(
    server: ServerThread, fake: FakeConversation
) -> None:
    context = {"conversation_id": "01JABCDEF", "device_id": "dev1"}
    events = ask(server, "turn on the lights", context)
    kinds = [e.type for e in events]
    assert kinds[0] == "handled-start" and kinds[-2:] == ["handled", "handled-stop"]
    chunks = [e.data["text"] for e in events if e.type == "handled-chunk"]
    assert len(chunks) == 2  # the fake writes the reply in two pieces
    handled = Handled.from_event(events[-2])
    assert "".join(chunks) == handled.text == "You said: turn on the lights"
    assert events[0].data["context"] == context and handled.context == context


@pytest.mark.parametrize(
    ("context", "room"),
    [
        (
            {"conversation_id": "01JABC", "satellite_id": "assist_satellite.kitchen"},
            "assist_satellite.kitchen",
        ),
        ({"conversation_id": "01JABC", "device_id": "d42"}, "d42"),
        ({"conversation_id": "01JABC"}, "01JABC"),
        ({"room": "attic", "satellite_id": "sat"}, "attic"),
        (None, "wyoming"),
        ({"conversation_id": ""}, "wyoming"),
        # One that is no usable room name is skipped: the next key, else the default room.
        ({"room": "../../etc", "satellite_id": "assist_satellite.hall"}, "assist_satellite.hall"),
        ({"room": 42, "device_id": "d42"}, "d42"),
        ({"conversation_id": "kitchen chat"}, "wyoming"),
    ],
)
def test_the_room_is_the_first_of_room_keys_in_the_context(
    server: ServerThread, fake: FakeConversation, context: dict | None, room: str
) -> None:
    ask(server, "hello", context)
    assert fake.messages[-1] == (room, "hello")


def test_a_room_name_that_cannot_be_used_is_logged_and_the_request_answered(
    server: ServerThread, fake: FakeConversation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voice.wyoming")
    events = ask(server, "hello", {"conversation_id": "../../etc"})
    assert Handled.from_event(events[-2]).text == "You said: hello"
    assert fake.messages[-1] == ("wyoming", "hello")
    assert "the context's conversation_id is not a usable room, skipped: room id '../../etc'" in (
        caplog.text
    )


def test_permission_questions_are_answered_no_with_the_reason(server: ServerThread) -> None:
    fake = FakeConversation(script=[("ask", "Bash", {"command": "rm -rf build"}), ("text", "Ok.")])
    with ServerThread(CONFIG, Programs(conversation=fake)) as asking:
        events = ask(asking, "clean up")
    assert fake.answers == [("deny", NOBODY_TO_ASK)]
    assert Handled.from_event(events[-2]).text == "Ok."


def test_an_agent_failure_is_one_spoken_sentence_and_the_connection_goes_on() -> None:
    fake = FakeConversation(error=AgentTimeout("killed after 300 s: /home/x/secret"))
    with ServerThread(CONFIG, Programs(conversation=fake)) as failing:
        with Client(failing.address) as client:
            client.send(Transcript("hello").event())
            events = client.read_until("handled-stop")
            not_handled = NotHandled.from_event(events[-2])
            assert events[-2].type == "not-handled"
            assert not_handled.text == "Sorry, the agent took too long and was stopped."
            client.send(Transcript("").event())  # and the same connection is still served
            assert NotHandled.from_event(client.read()).text == NOTHING_HEARD  # type: ignore[arg-type]


def test_a_client_that_leaves_mid_turn_interrupts_it(fake: FakeConversation) -> None:
    slow = FakeConversation(script=[("text", "Thinking"), ("sleep", 60), ("text", "done")])
    with ServerThread(CONFIG, Programs(conversation=slow)) as server:
        with Client(server.address) as client:
            client.send(Transcript("take your time").event())
            assert client.read().type == "handled-start"  # type: ignore[union-attr]
            assert client.read().data["text"] == "Thinking"  # type: ignore[union-attr]
        started = time.monotonic()
        assert wait_until(lambda: slow.interrupts == 1, timeout_s=20)
        assert time.monotonic() - started < 20


def test_a_turn_in_flight_when_the_server_stops_is_told_not_hung_up_on() -> None:
    slow = FakeConversation(script=[("text", "Thinking"), ("sleep", 60), ("text", "done")])
    server = ServerThread(CONFIG, Programs(conversation=slow)).__enter__()
    with Client(server.address) as client:
        client.send(Transcript("take your time").event())
        assert client.read().type == "handled-start"  # type: ignore[union-attr]
        assert client.read().data["text"] == "Thinking"  # type: ignore[union-attr]
        server.__exit__(None, None, None)  # SIGTERM
        events = []
        while (event := client.read()) is not None:
            events.append(event)
    assert [e.type for e in events] == ["not-handled", "handled-stop"]
    assert NotHandled.from_event(events[0]).text == STOPPING
    assert slow.interrupts == 1


def test_a_client_that_only_stops_sending_still_gets_the_whole_answer() -> None:
    # nc -N, or a script that shuts down its sending side after the request, then reads.
    slow = FakeConversation(script=[("text", "Thinking"), ("sleep", 1), ("text", " done")])
    with ServerThread(CONFIG, Programs(conversation=slow)) as server:
        with Client(server.address) as client:
            client.send(Transcript("take your time").event())
            client.sock.shutdown(socket.SHUT_WR)
            events = client.read_until("handled-stop")
    assert slow.interrupts == 0
    assert [e.type for e in events if e.data.get("text") != ""] == [
        "handled-start",
        "handled-chunk",
        "handled-chunk",
        "handled",
        "handled-stop",
    ]
    assert Handled.from_event(events[-2]).text == "Thinking done"


def test_garbage_after_a_request_interrupts_it_and_is_the_only_answer() -> None:
    slow = FakeConversation(script=[("text", "Thinking"), ("sleep", 60), ("text", "done")])
    with ServerThread(CONFIG, Programs(conversation=slow)) as server:
        with Client(server.address) as client:
            client.send(Transcript("take your time").event())
            assert client.read().type == "handled-start"  # type: ignore[union-attr]
            client.raw(b"this is not json\n")
            after = []
            while (event := client.read()) is not None:
                after.append(event)
        assert wait_until(lambda: slow.interrupts == 1, timeout_s=20)
    # The turn was cut short, so no (empty) reply is sent as if it were the answer.
    kinds = [e.type for e in after if e.type != "handled-chunk"]
    assert kinds == ["error"], [(e.type, e.data) for e in after]
    assert after[-1].data["code"] == "protocol-error"
    assert "is not JSON" in after[-1].data["text"]


class Unsaved:
    """A turn that was answered, with a refused tool, but could not be saved."""

    def run_turn(
        self,
        room_id: str,
        text: str,
        *,
        on_event: EventCallback | None = None,
        control: TurnControl | None = None,
        revises: bool = False,
    ) -> TurnOutcome:
        from core.agent_output import Denial

        assert on_event is not None
        on_event(TextDelta("Done."))
        return TurnOutcome(
            "Done.",
            denials=(Denial("Bash", "npm test"),),
            save_error=StoreError("disk full: /var/x"),
        )


def test_refusals_and_an_unsaved_turn_are_said_after_the_reply() -> None:
    with ServerThread(CONFIG, Programs(conversation=Unsaved(), agent_name="Claude")) as server:
        events = ask(server, "run the tests")
    text = Handled.from_event(events[-2]).text or ""
    assert text.startswith("Done.\n\nNote: Claude was not allowed to run npm test.")
    assert text.endswith(NOT_SAVED)
    chunks = "".join(e.data["text"] for e in events if e.type == "handled-chunk")
    assert chunks == text


def test_a_client_that_stops_reading_at_handled_like_home_assistant_is_no_trouble(
    server: ServerThread, fake: FakeConversation, caplog: pytest.LogCaptureFixture
) -> None:
    """Home Assistant's conversation entity reads until ``handled`` and hangs up: the
    ``handled-stop`` that follows finds no one, which is normal, not an error."""
    import asyncio
    import logging

    from wyoming.client import AsyncTcpClient

    caplog.set_level(logging.INFO, logger="voice.wyoming")

    async def home_assistant() -> str | None:
        host, port = server.address
        async with AsyncTcpClient(host, port) as client:
            context = {"conversation_id": "01JXYZ", "satellite_id": "assist_satellite.hall"}
            await client.write_event(Transcript("what time is it", context=context).event())
            while True:
                event = await client.read_event()
                assert event is not None
                if Handled.is_type(event.type):
                    return Handled.from_event(event).text

    for _ in range(3):
        assert asyncio.run(home_assistant()) == "You said: what time is it"
    time.sleep(0.2)  # let the server notice the hang-ups
    assert fake.interrupts == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


class LatestFirst(FakeConversation):
    """Turns run one at a time, as the core's room locks run them. The core promises no order
    among the turns waiting for it; this one takes the latest first."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s=delay_s)
        self._turns = threading.Condition()
        self._busy = False
        self._waiting: list[str] = []
        self.stopped_before: list[bool] = []  # each turn's: interrupted before it began

    def run_turn(self, room_id: str, text: str, **kwargs: Any) -> TurnOutcome:
        self.stopped_before.append(kwargs["control"].interrupted)
        with self._turns:
            self._waiting.append(text)
            ours = self._turns.wait_for(lambda: not self._busy and self._waiting[-1] == text, 60)
            assert ours, "never got the room"
            self._waiting.remove(text)
            self._busy = True
        try:
            return super().run_turn(room_id, text, **kwargs)
        finally:
            with self._turns:
                self._busy = False
                self._turns.notify_all()


def test_requests_to_one_room_are_answered_in_the_order_they_came() -> None:
    fake = LatestFirst(delay_s=1.0)
    with ServerThread(CONFIG, Programs(conversation=fake)) as server:
        clients = [Client(server.address) for _ in range(4)]
        for n, client in enumerate(clients):
            client.send(Transcript(f"request {n}", context={"room": "desk"}).event())
            assert client.read().type == "handled-start"  # type: ignore[union-attr]
        replies = [Handled.from_event(c.read_until("handled")[-1]).text for c in clients]
        for client in clients:
            client.close()
    assert [text for _room, text in fake.messages] == [f"request {n}" for n in range(4)]
    assert replies == [f"You said: request {n}" for n in range(4)]
    assert len(server.server.rooms) == 0  # nothing kept for a room nobody waits for


def test_a_request_whose_client_leaves_while_its_room_is_busy_is_kept_never_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voice.wyoming")
    fake = LatestFirst(delay_s=2.0)
    with ServerThread(CONFIG, Programs(conversation=fake)) as server:
        with Client(server.address) as first:
            first.send(Transcript("a long one", context={"room": "busy"}).event())
            assert first.read().type == "handled-start"  # type: ignore[union-attr]
            with Client(server.address) as quitter:
                quitter.send(Transcript("never mind", context={"room": "busy"}).event())
                assert quitter.read().type == "handled-start"  # type: ignore[union-attr]
            assert first.read_until("handled")[-1].data["text"] == "You said: a long one"
        assert ask(server, "and then", {"room": "busy"})[-2].data["text"] == "You said: and then"
    # Its words are stored in their place, with a turn the agent never hears of (the core
    # records it interrupted).
    assert [text for _room, text in fake.messages] == ["a long one", "never mind", "and then"]
    assert fake.stopped_before == [False, True, False]
    assert "the client left before its turn; kept, not sent: 'never mind'" in caplog.text


def test_a_request_waiting_for_its_room_when_the_server_stops_is_told_so() -> None:
    fake = LatestFirst(delay_s=60.0)
    server = ServerThread(CONFIG, Programs(conversation=fake)).__enter__()
    with Client(server.address) as first, Client(server.address) as waiting:
        first.send(Transcript("a long one", context={"room": "busy"}).event())
        assert first.read().type == "handled-start"  # type: ignore[union-attr]
        waiting.send(Transcript("me next", context={"room": "busy"}).event())
        assert waiting.read().type == "handled-start"  # type: ignore[union-attr]
        server.__exit__(None, None, None)  # SIGTERM
        events = []
        while (event := waiting.read()) is not None:
            events.append(event)
    assert [e.type for e in events] == ["not-handled", "handled-stop"]
    assert NotHandled.from_event(events[0]).text == STOPPING
    assert [text for _room, text in fake.messages] == ["a long one"]


def test_requests_kept_for_departed_clients_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voice.wyoming")
    fake = LatestFirst(delay_s=2.0)
    config = dataclasses.replace(CONFIG, max_connections=3)
    with ServerThread(config, Programs(conversation=fake)) as server:
        with Client(server.address) as first:
            first.send(Transcript("a long one", context={"room": "busy"}).event())
            assert first.read().type == "handled-start"  # type: ignore[union-attr]
            for n in range(4):
                with Client(server.address) as quitter:
                    quitter.send(Transcript(f"gone {n}", context={"room": "busy"}).event())
                    assert quitter.read().type == "handled-start"  # type: ignore[union-attr]
                # Once it is known to have left, it no longer counts: the next one gets in.
                assert wait_until(lambda n=n: server.server.rooms.kept == min(n + 1, 3))
            assert wait_until(lambda: "not kept: 'gone 3'" in caplog.text)
            first.read_until("handled")
        assert ask(server, "and then", {"room": "busy"})[-2].data["text"] == "You said: and then"
    kept = [text for _room, text in fake.messages if text.startswith("gone")]
    assert len(kept) == 3 and "not kept: 'gone" in caplog.text  # max_connections of them


def test_a_stop_while_a_request_is_kept_behind_a_turn_ends_both_cleanly() -> None:
    # serve's stop cancels every connection: the running turn's first, then the one kept
    # behind it. Its wait was a plain await, so the cancel also cancelled the future the turn
    # before hands over to, and that hand-over raised InvalidStateError in the running turn.
    from voice.wyoming.handlers import RoomTurns

    async def scenario() -> list[object]:
        rooms = RoomTurns(max_kept=4)
        loop = asyncio.get_running_loop()
        stays, leaves = loop.create_future(), loop.create_future()
        kept = asyncio.Event()

        async def request(left: asyncio.Future[None]) -> None:
            async with rooms.turn("desk", left, kept.set) as turn:
                assert turn == ("answer" if left is stays else "keep")
                await asyncio.Event().wait()  # (answering)

        running = asyncio.create_task(request(stays))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(request(leaves))
        await asyncio.sleep(0)
        leaves.set_result(None)  # its client leaves: kept, waiting for the room
        await asyncio.wait_for(kept.wait(), 5)
        running.cancel()
        waiting.cancel()
        results = await asyncio.gather(running, waiting, return_exceptions=True)
        assert len(rooms) == 0 and rooms.kept == 0
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
