"""The real models, loaded once for the whole run: loading them costs seconds on two cores."""

from __future__ import annotations

import pytest

from voice.config import SttConfig, TtsConfig
from voice.smart_turn import SmartTurnModel
from voice.stt import WhisperTranscriber
from voice.tts import PiperSynthesizer


@pytest.fixture(scope="session")
def tts() -> PiperSynthesizer:
    return PiperSynthesizer(TtsConfig())


@pytest.fixture(scope="session")
def stt() -> WhisperTranscriber:
    model = WhisperTranscriber(SttConfig())
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def smart_turn() -> SmartTurnModel:
    model = SmartTurnModel(threads=1)
    model.warm_up()
    return model
