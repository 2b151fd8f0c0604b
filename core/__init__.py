"""The core: everything between "the user said T in room R" and "here is the reply".

``Core`` (conversations per room, a per-room lock, the session store and the agent) and a
module-level :func:`send_message` that uses a default ``Core`` built from ``config.toml``.

Names are imported lazily so ``python -m core.echo_agent`` (which imports this package first)
starts without loading the store, the subprocess machinery or the config.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.agent import AgentResult, AgentRunner, TextCallback
    from core.conversation import Core
    from core.session import Message, Session, make_message
    from core.store import SessionStore

__all__ = [
    "AgentResult",
    "AgentRunner",
    "Core",
    "Message",
    "Session",
    "SessionStore",
    "default_core",
    "make_message",
    "send_message",
]

_LAZY = {
    "AgentResult": "core.agent",
    "AgentRunner": "core.agent",
    "Core": "core.conversation",
    "Message": "core.session",
    "Session": "core.session",
    "SessionStore": "core.store",
    "make_message": "core.session",
}

_default: Core | None = None
_default_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def default_core() -> Core:
    """The ``Core`` built once from config.toml's ``[agent]`` and ``[session]`` tables."""
    global _default  # noqa: PLW0603 - one lazily built default per process, by design
    with _default_lock:
        if _default is None:
            from core.config import CoreConfig, default_config_path, read_toml
            from core.conversation import Core

            path = default_config_path()
            tables = read_toml(path) if path is not None else {}
            _default = Core.from_config(CoreConfig.from_tables(tables))
        return _default


def send_message(room_id: str, text: str, *, on_text: TextCallback | None = None) -> str:
    """Send ``text`` in ``room_id`` through the default ``Core``; returns the reply."""
    return default_core().send_message(room_id, text, on_text=on_text)
