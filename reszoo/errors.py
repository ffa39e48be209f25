"""reszoo's one error hierarchy.

Every error reszoo raises on purpose derives from :class:`ReszooError`, so the command line
prints it as one line (``reszoo: error: ...``) and exits 1, and a caller can catch them all.
The second base of each keeps the built-in meaning (``ValueError`` for bad values, ``KeyError``
for unknown names) for code that catches those.
"""

from __future__ import annotations

__all__ = [
    "ConversionError",
    "HubError",
    "InputError",
    "IntegrityError",
    "LoadError",
    "NotCachedError",
    "RegistryError",
    "ReszooError",
    "UnknownModelError",
    "WeightsNotFoundError",
]


class ReszooError(Exception):
    """Base of every error reszoo raises on purpose."""


class RegistryError(ReszooError, ValueError):
    """A registry entry, registry file or reszoo ``config.json`` is malformed."""


class UnknownModelError(ReszooError, KeyError):
    """No entry has that name or alias."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class HubError(ReszooError, RuntimeError):
    """Getting a file failed: not found, not cached, unreachable Hub, bad download."""


class WeightsNotFoundError(HubError):
    """The repo, revision or file does not exist where it was looked for."""


class NotCachedError(HubError):
    """Offline (or the Hub unreachable) and the file is in no mirror and not in the cache."""


class IntegrityError(HubError):
    """A file's sha256 differs from the registry's pin."""


class LoadError(ReszooError):
    """A weight file was read but cannot become the model: unreadable, unsafe, or not fitting."""


class ConversionError(LoadError, ValueError):
    """An upstream checkpoint does not have the layout its converter expects."""


class InputError(ReszooError, ValueError):
    """An input a model was given (image, audio, text, observation, option) cannot be used."""
