"""The project's one error hierarchy.

Every message says what was expected and what to do. The voice loop speaks one short sentence
for an error and logs ``str(error)``, which may name files and ids::

    AssistantError
    ├── ConfigError (ValueError)         config.toml or a CLI flag holds something unusable
    │   └── NotAStoreError (StoreError)  session.store_dir is a directory the store does not own
    ├── AgentError                       the agent CLI crashed, printed garbage or said is_error
    │   ├── AgentTimeout (TimeoutError)  ... or ran past its timeout and was killed
    │   ├── ResumeFailed                 ... or does not know the conversation given to --resume
    │   ├── AgentUnavailable             ... or its service did not answer (network, overload)
    │   └── AgentLoginError              ... or its service refused its login or API key
    ├── StoreError                       the session store could not be read or written
    │   ├── InvalidIdError (ValueError)  a room or session id that could leave the store
    │   ├── SessionFormatError (ValueError)  a session or index document of the wrong shape
    │   └── NotAStoreError (ConfigError) see above
    ├── RoomClaimed                      another listener already answers in this room
    ├── DeviceError                      an audio or input device is missing, busy or lost
    ├── ModelError                       a speech model could not be found or loaded
    └── WyomingError                     talking to a Wyoming peer (Home Assistant, a server) failed
        ├── ProtocolError                ... it sent something that is not the protocol
        └── RemoteEngineError            ... a remote speech engine is unreachable or failed
"""

from __future__ import annotations


class AssistantError(Exception):
    """Base of every error the assistant raises on purpose."""


class ConfigError(AssistantError, ValueError):
    """config.toml (or a CLI flag) holds something the assistant cannot use."""


class AgentError(AssistantError):
    """The agent CLI failed: crashed, printed garbage, or reported ``is_error``."""


class AgentMissing(AgentError):
    """The agent program, or the folder it runs in, is not there: only the config can fix it.
    ``spoken``: what the user hears."""

    def __init__(self, message: str, *, spoken: str) -> None:
        super().__init__(message)
        self.spoken = spoken


class AgentTimeout(AgentError, TimeoutError):
    """The agent CLI ran past its timeout and was killed."""


class ResumeFailed(AgentError):
    """The agent does not know the conversation passed with --resume."""


class AgentUnavailable(AgentError):
    """The agent's service did not answer: no network, a rate limit, an overload. Trying
    again later may work."""


class AgentLoginError(AgentError):
    """The agent's service refused its login or API key: only the user can fix that."""


class StoreError(AssistantError):
    """The session store could not be read or written."""


class InvalidIdError(StoreError, ValueError):
    """A room id or session id that could leave the store directory, or is malformed."""


class SessionFormatError(StoreError, ValueError):
    """A session or index document that does not have the expected shape (corrupt data)."""


class NotAStoreError(StoreError, ConfigError):
    """``session.store_dir`` names an existing directory that is not a session store.

    The store refuses it rather than touch files it did not write (a project, a home
    directory); it is a configuration mistake, so it is also a :class:`ConfigError`.
    """


class RoomClaimed(AssistantError):
    """Another listener already answers in this room (one listener per room)."""


class DeviceError(AssistantError):
    """An audio or input device is missing, busy or lost."""


class ModelError(AssistantError):
    """A speech model could not be found or loaded."""


class ModelNotFound(ModelError, ConfigError):
    """A setting names a model that is not there, or is not one: only the config can fix it
    (a model that is there and fails to load may load on the next try)."""


class WyomingError(AssistantError):
    """Talking Wyoming (Home Assistant's voice protocol) with a peer failed."""


class ProtocolError(WyomingError):
    """A Wyoming peer sent something that is not the protocol: malformed, oversized, unexpected."""


class RemoteEngineError(WyomingError):
    """A remote speech engine could not be reached, timed out, or failed during a request."""
