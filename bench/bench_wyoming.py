"""``voice-assistant serve`` against the reference Wyoming servers, side by side, in one run.

    python bench/bench_wyoming.py [--runs 3]

Three servers on 127.0.0.1, each a process, all idle but the one being asked:
- serve: ``voice-assistant serve --agent echo`` (asr, tts, handle);
- wyoming-faster-whisper with the same tiny.en directory, int8, 2 CPU threads, language en:
  once with beam 1 (our setting: the same decoder work) and once with beam 5 (its x86 default);
- wyoming-piper with the same en_US-joe-medium voice.

Measured through the ``wyoming`` client library, as Home Assistant talks:
1. transcription latency, from ``audio-stop`` sent to ``transcript`` received, on the real
   recordings of ../shared/audio/real and jfk.flac (audio sent as fast as the socket takes it),
   with the word error rate of each server;
2. first TTS audio chunk after ``synthesize`` (and after the streaming form's first text) for a
   reply whose first sentence is long;
3. ``handle`` round trip with the echo agent: one turn at a time, then 8 rooms at once; and
   8 rooms at once with an agent that thinks 1 s per turn (a second ``serve``, handle only),
   where what the rooms share is waiting, not the two cores.

Requests are interleaved (serve, then each other server, per clip and run) so load from other
processes hits all alike; figures are medians over --runs after one untimed warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.* when run as a plain script

from wyoming.asr import Transcribe, Transcript  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.event import Event  # noqa: E402
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop  # noqa: E402

from tests.voice.audio_util import real_references, reference, shared, wer  # noqa: E402
from tests.wyoming.peers import (  # noqa: E402
    Process,
    faster_whisper_server,
    free_port,
    piper_server,
    serve_process,
    wait_for_port,
)

LONG_FIRST = (
    "I looked through the repository and the failing test, and the problem is that the "
    "session index is rebuilt while the lock is still held, which deadlocks. "
    "The fix is small. I will move the rebuild outside the lock and add a test for it."
)
ROOMS = 8
THINK_MS = 1000


def clips() -> dict[str, tuple[bytes, int, int, str]]:
    """name -> (int16 pcm, rate, channels, reference words), real voices as recorded."""
    out = {}
    for name, words in real_references().items():
        audio, rate = soundfile.read(str(shared(f"real/{name}.wav")), dtype="int16", always_2d=True)
        out[name] = (audio.tobytes(), rate, audio.shape[1], words)
    audio, rate = soundfile.read(str(shared("jfk.flac")), dtype="int16", always_2d=True)
    out["jfk"] = (audio.tobytes(), rate, audio.shape[1], reference("jfk.flac"))
    return out


def client(port: int) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", port, connect_timeout=10, read_timeout=300)


async def until(c: AsyncTcpClient, kinds: tuple[str, ...]) -> Event:
    while True:
        event = await c.read_event()
        assert event is not None, f"closed before {kinds}"
        if event.type in kinds:
            return event


async def transcribe(port: int, pcm: bytes, rate: int, channels: int) -> tuple[str, float]:
    async with client(port) as c:
        await c.write_event(Transcribe(language="en").event())
        await c.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
        step = rate * channels * 2 // 10
        for offset in range(0, len(pcm), step):
            chunk = pcm[offset : offset + step]
            await c.write_event(
                AudioChunk(rate=rate, width=2, channels=channels, audio=chunk).event()
            )
        await c.write_event(AudioStop().event())
        sent = time.perf_counter()
        event = await until(c, ("transcript",))
        return Transcript.from_event(event).text, time.perf_counter() - sent


async def first_audio(port: int, *, streaming: bool) -> float:
    async with client(port) as c:
        started = time.perf_counter()
        if streaming:
            await c.write_event(SynthesizeStart().event())
            await c.write_event(SynthesizeChunk(text=LONG_FIRST).event())
        else:
            await c.write_event(Synthesize(text=LONG_FIRST).event())
        await until(c, ("audio-chunk",))
        first = time.perf_counter() - started
        if streaming:
            await c.write_event(Synthesize(text=LONG_FIRST).event())
            await c.write_event(SynthesizeStop().event())
            await until(c, ("synthesize-stopped",))
        else:
            await until(c, ("audio-stop",))
        return first


async def handle(port: int, room: str, text: str) -> float:
    async with client(port) as c:
        started = time.perf_counter()
        await c.write_event(Transcript(text, context={"conversation_id": room}).event())
        event = await until(c, ("handled", "not-handled"))
        assert event.type == "handled", event
        return time.perf_counter() - started


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.0f}"


def bench_stt(servers: dict[str, int], runs: int) -> None:
    cases = clips()
    times: dict[str, dict[str, list[float]]] = {s: {n: [] for n in cases} for s in servers}
    texts: dict[str, dict[str, str]] = {s: {} for s in servers}
    pcm, rate, channels, _ = next(iter(cases.values()))
    for port in servers.values():  # warm-up, untimed
        asyncio.run(transcribe(port, pcm, rate, channels))
    for _ in range(runs):
        for name, (pcm, rate, channels, _) in cases.items():
            for server, port in servers.items():
                text, elapsed = asyncio.run(transcribe(port, pcm, rate, channels))
                times[server][name].append(elapsed)
                texts[server][name] = text
    names = list(servers)
    print("\n1. transcription latency, audio-stop -> transcript (ms, median)")
    print(f"   {'clip':<16} {'audio s':>7} " + " ".join(f"{n:>15}" for n in names) + "   ratios")
    medians = {s: {n: statistics.median(times[s][n]) for n in cases} for s in servers}
    for name, (pcm, rate, channels, _) in cases.items():
        seconds = len(pcm) / 2 / channels / rate
        cells = " ".join(f"{ms(medians[s][name]):>15}" for s in names)
        ratios = " ".join(f"{medians[s][name] / medians[names[0]][name]:5.1f}x" for s in names[1:])
        print(f"   {name:<16} {seconds:7.1f} {cells}   {ratios}")
    print(
        f"   {'median':<16} {'':7} "
        + " ".join(f"{ms(statistics.median(medians[s].values())):>15}" for s in names)
    )
    for server in names[1:]:
        ratio = statistics.median(medians[server][n] / medians[names[0]][n] for n in cases)
        print(f"   {server} / {names[0]}: median ratio {ratio:.2f}x")
    for server in names:
        errors = [wer(cases[n][3], texts[server][n]) for n in cases]
        words = sum(len(cases[n][3].split()) for n in cases)
        weighted = sum(e * len(cases[n][3].split()) for e, n in zip(errors, cases, strict=True))
        print(f"   WER {server:<24} {weighted / words:6.1%} over {words} words")
    for name in cases:
        heard = {server: texts[server][name] for server in names}
        if len({wer(cases[name][3], text) for text in heard.values()}) > 1:
            print(f"   {name}: " + " | ".join(f"{s}: {t.strip()!r}" for s, t in heard.items()))


def bench_tts(servers: dict[str, int], runs: int) -> None:
    first = LONG_FIRST.split(".", maxsplit=1)[0]
    print(f"\n2. first audio chunk, a reply whose first sentence has {len(first)} characters (ms)")
    for streaming in (False, True):
        for port in servers.values():
            asyncio.run(first_audio(port, streaming=streaming))  # warm-up (wyoming-piper loads)
        firsts: dict[str, list[float]] = {s: [] for s in servers}
        for _ in range(runs):
            for server, port in servers.items():
                firsts[server].append(asyncio.run(first_audio(port, streaming=streaming)))
        form = "synthesize-start/-chunk" if streaming else "synthesize"
        medians = {s: statistics.median(v) for s, v in firsts.items()}
        names = list(servers)
        cells = "  ".join(f"{s} {ms(medians[s]).strip()} ms" for s in names)
        print(f"   {form:<24} {cells}   ratio {medians[names[1]] / medians[names[0]]:.1f}x")


def bench_handle(port: int, runs: int) -> None:
    asyncio.run(handle(port, "warm", "warm up"))
    single = [asyncio.run(handle(port, "solo", f"question {i}")) for i in range(runs * 3)]

    async def rooms() -> tuple[float, list[float]]:
        started = time.perf_counter()
        each = await asyncio.gather(*(handle(port, f"room{i}", f"hello {i}") for i in range(ROOMS)))
        return time.perf_counter() - started, list(each)

    walls, eaches = [], []
    for _ in range(runs):
        wall, each = asyncio.run(rooms())
        walls.append(wall)
        eaches += each
    one = statistics.median(single)
    wall = statistics.median(walls)
    print("\n3. handle round trip with the echo agent (transcript -> handled)")
    print(f"   one turn at a time        median {ms(one).strip()} ms over {len(single)} turns")
    print(
        f"   {ROOMS} rooms at once          all done in {ms(wall).strip()} ms (median of {runs}),"
        f" each {ms(statistics.median(eaches)).strip()} ms; {ROOMS} turns one after the other"
        f" would take ~{ms(ROOMS * one).strip()} ms ({ROOMS * one / wall:.1f}x)"
    )


def bench_thinking_rooms(port: int, runs: int) -> None:
    asyncio.run(handle(port, "warm", "warm up"))

    async def rooms() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(handle(port, f"think{i}", f"hello {i}") for i in range(ROOMS)))
        return time.perf_counter() - started

    wall = statistics.median(asyncio.run(rooms()) for _ in range(runs))
    print(
        f"   {ROOMS} rooms at once, agent thinking {THINK_MS} ms per turn: all done in"
        f" {ms(wall).strip()} ms (median of {runs}); one after the other: at least"
        f" {ROOMS * THINK_MS} ms ({ROOMS * THINK_MS / 1000 / wall:.1f}x)"
    )


def start(process: Process, port: int) -> Process:
    process.wait_ready()
    wait_for_port(port)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-wyoming-"))
    config = work / "config.toml"
    config.write_text(f'[session]\nstore_dir = "{work / "sessions"}"\n')
    ports = {name: free_port() for name in ("wfw1", "wfw5", "piper")}
    processes = []
    try:
        t0 = time.perf_counter()
        serve = serve_process(config, agent="echo")
        processes.append(serve)
        serve_port = int(serve.wait_ready()["uri"].rsplit(":", 1)[1])
        handle_only = work / "handle-only.toml"
        handle_only.write_text(
            f'[session]\nstore_dir = "{work / "sessions2"}"\n[wyoming]\nprograms = ["handle"]\n'
        )
        thinker = serve_process(
            handle_only, agent=f"{sys.executable} -m core.echo_agent --think-ms {THINK_MS}"
        )
        processes.append(thinker)
        thinker_port = int(thinker.wait_ready()["uri"].rsplit(":", 1)[1])
        for name, beam in (("wfw1", 1), ("wfw5", 5)):
            (work / name).mkdir()
            processes.append(
                start(faster_whisper_server(ports[name], work / name, beam_size=beam), ports[name])
            )
        (work / "piper").mkdir()
        processes.append(start(piper_server(ports["piper"], work / "piper"), ports["piper"]))
        print(f"servers ready in {time.perf_counter() - t0:.1f} s; runs: {args.runs}")
        bench_stt(
            {
                "serve": serve_port,
                "wfw beam 1": ports["wfw1"],
                "wfw beam 5": ports["wfw5"],
            },
            args.runs,
        )
        bench_tts({"serve": serve_port, "wyoming-piper": ports["piper"]}, args.runs)
        bench_handle(serve_port, args.runs)
        bench_thinking_rooms(thinker_port, args.runs)
    finally:
        for process in processes:
            process.stop()


if __name__ == "__main__":
    main()
