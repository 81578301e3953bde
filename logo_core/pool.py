"""The adapter pool: stacked probe tensors for scoring, lazily loaded full factors for mixing.

Memory stays small for hundreds of adapters: only the probe (block, module) pairs in use are
stacked in memory, and full adapter weights are read from safetensors when an adapter is chosen
(kept in a small LRU cache).
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import AdapterLoadError
from .loading import AdapterFile, fetch_adapter, load_adapter
from .mixing import Key
from .registry import AdapterSpec, PoolConfig


@dataclass
class LoadReport:
    """What happened at load time: adapters left out, by name, with the reason."""

    skipped: dict[str, str]

    @property
    def messages(self) -> list[str]:
        return [f"adapter {name!r} was left out: {why}" for name, why in self.skipped.items()]


class AdapterPool:
    """N validated adapters in pool order.

    Args:
        files: the adapters, already checked against the base model.
        specs: their registry entries (descriptions, examples), same order.
        cache_size: how many adapters' full weights to keep in memory.
    """

    def __init__(self, files: list[AdapterFile], specs: list[AdapterSpec], cache_size: int = 64) -> None:
        self.files, self.specs = files, specs
        self.names = [f.name for f in files]
        self.scales = torch.tensor([f.scale for f in files])  # [N]
        self.modules = sorted(set().union(*(f.modules for f in files))) if files else []
        self._stacks: dict[Key, tuple[Tensor, Tensor]] = {}
        self._full: OrderedDict[str, dict] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.files)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def probe_stack(self, block: int, module: str) -> tuple[Tensor, Tensor]:
        """(A [N, R, D_in], s*B [N, D_out, R]) of every adapter at one module, zero-padded.

        An adapter that does not adapt this module gets zeros (see `has_module`).
        """
        key = (block, module)
        with self._lock:
            if key not in self._stacks:
                pairs = [f.read(block, module) for f in self.files]
                shapes = next(((a.shape[1], b.shape[0]) for p in pairs if p for a, b in [p]), None)
                if shapes is None:
                    raise KeyError(key)
                d_in, d_out = shapes
                R = max(p[0].shape[0] for p in pairs if p)
                A = torch.zeros(len(pairs), R, d_in)
                Bs = torch.zeros(len(pairs), d_out, R)
                for i, p in enumerate(pairs):
                    if p is not None:
                        r = p[0].shape[0]
                        A[i, :r], Bs[i, :, :r] = p[0], self.files[i].scale * p[1]
                self._stacks[key] = (A, Bs)
            return self._stacks[key]

    def has_module(self, block: int, module: str) -> Tensor:
        """[N] bool: which adapters adapt this module (the others get no signal there)."""
        return torch.tensor([(block, module) in f.keys for f in self.files])

    def factors(self, name: str) -> dict[Key, tuple[Tensor, Tensor]]:
        """All (A, B) of one adapter in fp32, from the LRU cache or from disk."""
        with self._lock:
            if name in self._full:
                self._full.move_to_end(name)
                return self._full[name]
        full = self.files[self.index(name)].read_all()
        with self._lock:
            self._full[name] = full
            while len(self._full) > self._cache_size:
                self._full.popitem(last=False)
        return full

    def description(self, name: str) -> str:
        return self.specs[self.index(name)].description


def load_pool(cfg: PoolConfig, model: nn.Module) -> tuple[AdapterPool, LoadReport]:
    """Load every adapter in `cfg`; broken or incompatible ones are skipped with a named warning."""
    files, specs, skipped = [], [], {}
    for spec in cfg.adapters:
        try:
            files.append(load_adapter(spec.name, fetch_adapter(cfg, spec), model))
            specs.append(spec)
        except AdapterLoadError as e:
            skipped[spec.name] = str(e)
            warnings.warn(str(e), stacklevel=2)
        except OSError as e:  # hub download failed, permissions, ...
            msg = f"adapter {spec.name!r}: cannot fetch it: {e}"
            skipped[spec.name] = msg
            warnings.warn(msg, stacklevel=2)
    return AdapterPool(files, specs), LoadReport(skipped)
