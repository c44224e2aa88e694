"""The exceptions avrec raises.

Every error a user can cause derives from :class:`AvrecError`, so the CLI and the service can tell
a user's mistake (clear one-line message) from a bug (traceback). HTTP statuses are assigned only in
``avrec.service``.
"""

from __future__ import annotations

__all__ = [
    "AvrecError",
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "MediaError",
    "NotFittedError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownEntityError",
]


class AvrecError(Exception):
    """Root of every error avrec raises on purpose."""


class ConfigError(AvrecError):
    """A setting, TOML key or argument has an invalid value."""


class DataError(AvrecError):
    """Input data cannot be used as given (missing columns, unreadable file, bad counts)."""


class DatasetNotFoundError(DataError):
    """A public dataset's files are not where avrec looked for them."""


class StoreError(AvrecError):
    """The store could not be opened, or a write could not be completed."""


class StoreUnavailableError(StoreError):
    """The store's server cannot be reached now (down, restarting): try again shortly. The
    service answers 503 with ``Retry-After``."""


class NotFittedError(AvrecError):
    """A model or component was used before ``fit``."""


class UnknownEntityError(AvrecError, KeyError):
    """A user, item or model id is not known."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MediaError(AvrecError):
    """A media file is missing, corrupt or in an unsupported format."""


class BudgetSpentError(AvrecError):
    """A differentially private release would spend more privacy budget than is left."""
