"""LoGo: instance-level LoRA routing and on-the-fly merging, with no training and no labels.

>>> from logo_core import LoGoEngine
>>> engine = LoGoEngine.from_config("adapters.yaml")
>>> engine.route("What is 47 + 38?", k=3).selected
"""

from .errors import AdapterLoadError, ConfigError, LoGoError, RequestError

__all__ = ["LoGoEngine", "Routing", "Generation", "LoGoError", "ConfigError", "AdapterLoadError", "RequestError"]


def __getattr__(name: str):
    # Lazy, so `logo_core.tasks` and the CLI's --help do not pay for importing torch/transformers.
    if name in ("LoGoEngine", "Routing", "Generation"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)
