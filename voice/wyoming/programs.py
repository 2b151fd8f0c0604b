"""What ``serve`` offers: the engines behind its three programs, and the ``info`` that lists them.

- ``asr``: this project's Whisper (trimmed encoder window, hallucination guard). Whisper is not
  a streaming recognizer, so ``supports_transcript_streaming`` is false: clients get one
  ``transcript`` after ``audio-stop``, which is what the protocol tells them to expect.
- ``tts``: Piper through the speakable-text cleaner, with the streaming
  ``synthesize-start/-chunk/-stop`` form.
- ``handle``: the core as a conversation agent, streaming ``handled-start/-chunk/-stop``
  (``handled`` is always sent too, for clients that do not stream).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

import numpy as np
import numpy.typing as npt
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
)

from voice.audio import Utterance
from voice.stt import Transcript
from voice.turns import Conversation

PROJECT = Attribution(name="voice-assistant", url="")


class Transcriber(Protocol):
    def transcribe(self, utterance: Utterance) -> Transcript: ...


class Voice(Protocol):
    @property
    def sample_rate(self) -> int: ...

    def synthesize(self, text: str) -> Iterator[npt.NDArray[np.int16]]: ...


def _our_version() -> str | None:
    try:
        return version("voice-assistant")
    except PackageNotFoundError:
        return None


@dataclass
class Programs:
    """The engines ``serve`` runs; ``None`` leaves that program out of ``info``."""

    stt: Transcriber | None = None
    tts: Voice | None = None
    conversation: Conversation | None = None
    asr_model: str = "tiny.en"
    asr_languages: list[str] = field(default_factory=lambda: ["en"])
    tts_voice: str = "en_US-joe-medium"
    tts_languages: list[str] = field(default_factory=lambda: ["en_US"])
    agent_name: str = "The agent"  # how a spoken sentence names it (narration)
    agent_label: str = "agent"  # the agent program, for info
    first_chunk_max_chars: int = 24  # tts.first_chunk_max_chars

    def offered(self) -> list[str]:
        return [
            name
            for name, engine in (
                ("asr", self.stt),
                ("tts", self.tts),
                ("handle", self.conversation),
            )
            if engine is not None
        ]

    def info(self) -> Info:
        ours = _our_version()
        info = Info()
        if self.stt is not None:
            info.asr.append(
                AsrProgram(
                    name="voice-assistant-whisper",
                    description="Whisper with a trimmed encoder window and a hallucination guard",
                    attribution=PROJECT,
                    installed=True,
                    version=ours,
                    models=[
                        AsrModel(
                            name=self.asr_model,
                            description=f"Whisper {self.asr_model} (faster-whisper)",
                            attribution=Attribution(
                                name="OpenAI", url="https://github.com/openai/whisper"
                            ),
                            installed=True,
                            version=None,
                            languages=list(self.asr_languages),
                        )
                    ],
                    supports_transcript_streaming=False,
                    requires_external_vad=True,
                )
            )
        if self.tts is not None:
            info.tts.append(
                TtsProgram(
                    name="voice-assistant-piper",
                    description="Piper, speaking Markdown as plain sentences",
                    attribution=PROJECT,
                    installed=True,
                    version=ours,
                    voices=[
                        TtsVoice(
                            name=self.tts_voice,
                            description=self.tts_voice,
                            attribution=Attribution(
                                name="rhasspy", url="https://github.com/rhasspy/piper"
                            ),
                            installed=True,
                            version=None,
                            languages=list(self.tts_languages),
                        )
                    ],
                    supports_synthesize_streaming=True,
                )
            )
        if self.conversation is not None:
            info.handle.append(
                HandleProgram(
                    name="voice-assistant",
                    description=f"{self.agent_label} through voice-assistant, by room",
                    attribution=PROJECT,
                    installed=True,
                    version=ours,
                    # No languages: the agent answers in any (Home Assistant reads [] as "all").
                    models=[
                        HandleModel(
                            name=os.path.basename(self.agent_label),
                            description=self.agent_label,
                            attribution=PROJECT,
                            installed=True,
                            version=ours,
                            languages=[],
                        )
                    ],
                    supports_handled_streaming=True,
                )
            )
        return info
