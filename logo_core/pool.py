"""The adapter pool: stacked probe factors for scoring, device-cached full factors for mixing.

Memory stays small for hundreds of adapters: only the (block, module) pairs that the probe uses
are stacked, in the adapters' own dtype (fp16 as trained; signals are computed in fp32), on the
device of the module they belong to, and of B only its r x r Gram matrix until a signal needs B;
the full factors of chosen adapters are read from safetensors once and kept on their devices in the
compute dtype, in an LRU cache bounded in bytes, so nothing crosses PCIe per request once an adapter
is warm.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import AdapterLoadError
from .loading import AdapterFile, fetch_adapter, load_adapter
from .mixing import Factors, Key, stack_factors
from .registry import AdapterSpec, PoolConfig
from .signals import QUADRATIC

Where = Callable[[Key], tuple[torch.device, torch.dtype]]  # (block, module) -> its device and compute dtype


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
        specs: their registry entries (descriptions, examples, families), same order.
        where: (block, module) -> (device, compute dtype) of the layer there (CPU fp32 if omitted).
        cache_bytes: budget of the device cache of chosen adapters' factors.
    """

    def __init__(
        self, files: list[AdapterFile], specs: list[AdapterSpec], where: Where | None = None, cache_bytes: int = 2**29
    ) -> None:
        self.files, self.specs = files, specs
        self.names = [f.name for f in files]
        self._index = {n: i for i, n in enumerate(self.names)}
        self.modules = sorted(set().union(*(f.modules for f in files))) if files else []
        self.where = where or (lambda key: (torch.device("cpu"), torch.float32))
        self.cache_bytes, self.cached_bytes = cache_bytes, 0
        self._stacks: dict[Key, tuple[Tensor, dict[str, Tensor], Tensor]] = {}  # A, {signal: M}, mask
        # probe_stacks: (keys, None) -> (A, mask); (keys, signal) -> (M,)
        self._runs: OrderedDict[tuple, tuple[Tensor, ...]] = OrderedDict()
        self._ups: dict[Key, Tensor] = {}
        self._full: OrderedDict[str, Factors] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.files)

    def index(self, name: str) -> int:
        return self._index[name]

    def family(self, name: str) -> str:
        return self.specs[self._index[name]].family

    def description(self, name: str) -> str:
        return self.specs[self._index[name]].description

    def _stacked(self, key: Key) -> tuple[Tensor, Tensor, Tensor]:
        pairs = [f.read([key]).get(key) for f in self.files]
        if all(p is None for p in pairs):
            raise KeyError(key)
        device, _ = self.where(key)
        A, Bs = stack_factors(pairs)  # [N, R, D_in], [N, D_out, R]
        return A.to(device), Bs.to(device), torch.tensor([p is not None for p in pairs], device=device)

    def probe_stack(self, key: Key, signal: str = "norm") -> tuple[Tensor, Tensor, Tensor]:
        """(A [N, R, D_in], M [N, R, R], mask [N]) of every adapter at one module, on the module's device:
        A zero-padded in the adapters' dtype; M the r x r matrices of `signal`'s quadratic form in fp32
        (`signals.QUADRATIC`: (s*B)^T (s*B) for `norm`, and for a signal of whole outputs); mask says which
        adapters adapt the module. B itself (three times M's size and more) waits for `probe_up`."""
        with self._lock:
            if key not in self._stacks:
                A, Bs, mask = self._stacked(key)
                made: dict = {}  # one matrix per distinct `Quadratic.matrix` (subspace and subspace_cos share one)
                for q in QUADRATIC.values():
                    if q.matrix not in made:
                        made[q.matrix] = q.matrix(A, Bs)
                self._stacks[key] = (A, {name: made[q.matrix] for name, q in QUADRATIC.items()}, mask)
            A, M, mask = self._stacks[key]
            return A, M.get(signal, M["norm"]), mask

    def probe_stacks(self, keys: tuple[Key, ...], signal: str = "norm") -> tuple[Tensor, Tensor, Tensor] | None:
        """`probe_stack` of several sites stacked ([S, N, R, D_in] in fp32, [S, N, R, R], [S, N]) for the router's
        fast path, kept for the last few key sets (A and the mask once per key set, whatever the signal: the largest
        part, shared by a routing signal and an abstain signal on the same sites); None when the sites live on
        different devices (a model spread over GPUs)."""
        parts = [self.probe_stack(k, signal) for k in keys]
        if len({A.device for A, _, _ in parts}) != 1 or len({A.shape for A, _, _ in parts}) != 1:
            return None
        with self._lock:
            for run, make in (
                (
                    (keys, None),
                    lambda: (torch.stack([A for A, _, _ in parts]).float(), torch.stack([m for *_, m in parts])),
                ),
                ((keys, signal), lambda: (torch.stack([M for _, M, _ in parts]),)),
            ):
                if run not in self._runs:
                    self._runs[run] = make()
                self._runs.move_to_end(run)
            while len(self._runs) > 8:  # the default's streams, its abstain signal's and a few other settings
                self._runs.popitem(last=False)
            (A, mask), (M,) = self._runs[(keys, None)], self._runs[(keys, signal)]
            return A, M, mask

    def probe_up(self, key: Key) -> Tensor:
        """s*B [N, D_out, R] of every adapter at one module (as `probe_stack`), kept once read: for a signal
        of whole outputs (entropy)."""
        with self._lock:
            if key not in self._ups:
                self._ups[key] = self._stacked(key)[1]
            return self._ups[key]

    @property
    def stacked_bytes(self) -> int:
        stacks = sum(
            A.nbytes + m.nbytes + sum(M.nbytes for M in {id(M): M for M in Ms.values()}.values())  # shared ones once
            for A, Ms, m in self._stacks.values()
        )
        stacks += sum(t.nbytes for run in self._runs.values() for t in run)
        return stacks + sum(B.nbytes for B in self._ups.values())

    def factors(self, name: str) -> Factors:
        """All (A, s*B) of one adapter, on each module's device in its compute dtype (LRU cache)."""
        with self._lock:
            if name in self._full:
                self._full.move_to_end(name)
                return self._full[name]
        full = {}
        for key, (A, Bs) in self.files[self.index(name)].read().items():
            device, dtype = self.where(key)
            full[key] = (A.to(device, dtype), Bs.to(device, dtype))
        size = sum(A.nbytes + B.nbytes for A, B in full.values())
        with self._lock:
            if name not in self._full:
                self._full[name] = full
                self.cached_bytes += size
            while len(self._full) > 1 and self.cached_bytes > self.cache_bytes:
                _, dropped = self._full.popitem(last=False)
                self.cached_bytes -= sum(A.nbytes + B.nbytes for A, B in dropped.values())
            return self._full.get(name, full)


def load_pool(cfg: PoolConfig, model: nn.Module, where: Where | None = None) -> tuple[AdapterPool, LoadReport]:
    """Load every adapter in `cfg`; broken or incompatible ones are skipped with a named warning."""
    files, specs, skipped = [], [], {}
    for spec in cfg.adapters:
        try:
            files.append(load_adapter(spec.name, fetch_adapter(cfg, spec), model))
            specs.append(spec)
        except AdapterLoadError as e:
            skipped[spec.name] = str(e)
            warnings.warn(str(e), stacklevel=2)
        except Exception as e:  # hub download failed (no network, no such repo), permissions, ...
            msg = f"adapter {spec.name!r}: cannot fetch it: {type(e).__name__}: {e}"
            skipped[spec.name] = msg
            warnings.warn(msg, stacklevel=2)
    cache = int(cfg.engine.factor_cache_mb * 2**20)
    return AdapterPool(files, specs, where, cache), LoadReport(skipped)
