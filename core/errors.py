"""The project's one error hierarchy.

Every message says what was expected and what to do, because the voice loop speaks
``str(error)`` to the user.
"""

from __future__ import annotations


class AssistantError(Exception):
    """Base of every error the assistant raises on purpose."""


class ConfigError(AssistantError, ValueError):
    """config.toml (or a CLI flag) holds something the assistant cannot use."""


class AgentError(AssistantError):
    """The agent CLI failed: crashed, printed garbage, or reported ``is_error``."""


class AgentTimeout(AgentError, TimeoutError):
    """The agent CLI ran past its timeout and was killed."""


class StoreError(AssistantError):
    """The session store could not be read or written."""


class InvalidIdError(StoreError, ValueError):
    """A room id or session id that could leave the store directory, or is malformed."""


class RoomClaimed(AssistantError):
    """Another listener already answers in this room (one listener per room)."""


class DeviceError(AssistantError):
    """An audio or input device is missing, busy or lost."""


class ModelError(AssistantError):
    """A speech model could not be found or loaded."""
