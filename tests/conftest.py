"""Fixtures shared by every test package: the PulseAudio rig and the shared recordings."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rig import PulseRig

SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    """``../shared/audio`` beside the repository: real recordings with their transcripts."""
    assert SHARED_AUDIO.is_dir(), f"missing shared recordings directory {SHARED_AUDIO}"
    return SHARED_AUDIO


@pytest.fixture(scope="module")
def pulse_rig() -> Iterator[PulseRig]:
    """A PulseAudio server of the module's own (see tests/rig.py); skipped only when the
    ``pulseaudio`` binary is not installed, and never in CI, which installs it."""
    if shutil.which("pulseaudio") is None:
        why = "pulseaudio is not installed (apt-get install pulseaudio pulseaudio-utils)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    rig = PulseRig().start()
    try:
        yield rig
    finally:
        rig.stop()
