"""Typed errors raised at the library's public boundary.

All of them subclass `ValueError` (bad values) so callers can catch the broad class, while the
app and tests can tell a config problem from an adapter problem from a bad request.
"""


class LoGoError(ValueError):
    """Base class of every error this library raises on purpose."""


class ConfigError(LoGoError):
    """`adapters.yaml` is missing, malformed or fails validation."""


class AdapterLoadError(LoGoError):
    """One adapter cannot be used with the base model (missing file, pickle, NaN, shape)."""


class RequestError(LoGoError):
    """A route/generate request has a bad argument (empty prompt, k out of range, ...)."""
