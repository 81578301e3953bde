"""Calibration (this project's addition, docs/method.md §3): each adapter's signal divided by its
typical signal on a fixed set of prompts, so that the loudest adapter does not win every prompt.

A `Calibration` is one kind: a prompt set and how the per-site constants come from the adapters'
raw signals on it. The `Router` owns the calibrations: it probes each prompt set once (every block,
every module) and caches the constants per (kind, block, module, signal, probe input).

Adding a kind is a few lines: a prompt set, a `fit` (its raw signals -> constants) and an `apply`
(raw signals and constants -> calibrated ones), registered in the router's `calibrations` dict.

Example:
    >>> neutral = Calibration("neutral", ["Hello!", "Tell me something."])
    >>> c = router.calibration(29, "v_proj", "norm", "residual")  # [N], neutral's constants
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from . import signals


def mean_signal(raw: Tensor) -> Tensor:
    """c_i: the mean raw signal of each adapter over the prompt set, [P, N] -> [N]; 1 where it is not a
    positive finite number (an adapter that does not adapt the module has c = 0 and keeps its zero score)."""
    c = raw.mean(0)
    return torch.where(torch.isfinite(c) & (c > 0), c, torch.ones_like(c))


def divide(sig: Tensor, c: Tensor) -> Tensor:
    """sigma_i / c_i: [B, N] raw signals, [N] constants -> [B, N] calibrated."""
    return sig / c.to(sig.device)


def standardize(sig: Tensor, c: tuple[Tensor, Tensor]) -> Tensor:
    """(sigma_i - mu_i) / s_i: [B, N] raw signals, c = (mu, s) [N] each -> [B, N] z-scores (the `background` kind)."""
    mu, sd = c
    return (sig - mu.to(sig.device)) / sd.to(sig.device)


def decorrelation_stats(bg: Tensor, strength: float) -> tuple[Tensor, Tensor, Tensor]:
    """(m, d, W) of the decorrelation step (docs/method.md §3): [P, N] calibrated scores of the background prompts ->
    their mean m and spread d [N], and W = ((1 - a) I + a R)^(-1/2) [N, N], R their correlation across adapters,
    a = `strength`.

    Siblings answer the same prompts alike (their scores correlate over the background), so the z-scores of a
    French prompt lift every French adapter together; W takes that shared part out (a = 1: full whitening, 0: none)
    and what is left tells the siblings apart. The shrinkage towards I keeps a correlation estimated from a few
    hundred prompts from amplifying noise.
    """
    m, d = signals.zscore_stats(bg)  # an adapter with no spread gets d = 1, as the z-scores' own stats do
    x = bg.double()
    z = (x - m.double()) / d.double()
    n = x.shape[1]
    corr = z.T @ z / max(x.shape[0] - 1, 1)
    corr = corr.fill_diagonal_(1.0)  # an adapter with no spread: correlated with nothing
    evals, evecs = torch.linalg.eigh((1 - strength) * torch.eye(n, dtype=x.dtype) + strength * corr)
    w = evecs @ torch.diag(evals.clamp_min(1e-6).rsqrt()) @ evecs.T
    return m, d, w.float()


def decorrelate(scores: Tensor, stats: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """((scores - m) / d) W: [..., N] calibrated scores -> decorrelated ones (`decorrelation_stats`). Affine, so a
    per-block sweep decorrelated block by block still averages to the decorrelated route."""
    m, d, w = (t.to(scores.device) for t in stats)
    return ((scores - m) / d) @ w


def unit_rows(h: Tensor) -> Tensor:
    """[..., D] vectors scaled to unit length in fp32: a `nearest` bank, or a prompt before `nearest_similarity`."""
    return torch.nn.functional.normalize(h.float(), dim=-1)


def nearest_similarity(h: Tensor, bank: Tensor) -> Tensor:
    """[B] the cosine similarity of each prompt vector h [B, D] to its nearest row of `bank` [P, D] (`unit_rows` of
    the background prompts' vectors): how close a prompt is to the kind of prompt the pool is for. The `nearest`
    abstain signal; label-free, since the background carries no adapter names."""
    return (unit_rows(h) @ bank.to(h.device).T).max(-1).values


@dataclass(frozen=True)
class Calibration:
    """One kind of calibration.

    Attributes:
        name: how options and traces name it.
        prompts: the prompt set it is measured on (probed once, through every block).
        fit: [P, N] raw (masked, uncalibrated) signals of the prompt set at one site -> its constants there.
        apply: ([B, N] raw signals, the constants) -> [B, N] calibrated signals.
    """

    name: str
    prompts: tuple[str, ...]
    fit: Callable[[Tensor], Tensor] = mean_signal
    apply: Callable[[Tensor, Tensor], Tensor] = divide

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))

    def constants(self, site: signals.Site, signal: str) -> Tensor:
        """[N] constants at one site, from the prompt set's vectors there (`site.h`, [P, D])."""
        return self.fit(signals.site_score(dataclasses.replace(site, calibration=None), signal))


class StatsStore:
    """The background calibration's (mu, sigma) of each setting on disk, so start-up does not probe the
    background set again: shipped files next to the pool (`assets/calibration/`, read-only) first,
    then a user cache.

    A file is named by a hash of everything the numbers depend on (the probe model, the pool's weight
    hashes in pool order, the prompt set, the setting), so a changed pool, model or prompt set never
    reads stale constants: it misses, recomputes and writes a new file.
    """

    def __init__(self, identity: dict, read_dirs: list[Path], write_dir: Path | None) -> None:
        self.identity = json.dumps(identity, sort_keys=True, default=str)
        self.read_dirs, self.write_dir = read_dirs, write_dir

    def name(self, key: tuple) -> str:
        return hashlib.sha256(f"{self.identity}|{key!r}".encode()).hexdigest()[:32] + ".safetensors"

    def load(self, key: tuple, names: tuple[str, ...] = ("mu", "sigma")) -> tuple[Tensor, ...] | None:
        """The tensors `names` of the file of `key` (shipped first), or None."""
        from safetensors.torch import load_file

        for d in [*self.read_dirs, *([self.write_dir] if self.write_dir else [])]:
            path = d / self.name(key)
            if path.is_file():
                try:
                    t = load_file(path)
                    return tuple(t[n] for n in names)
                except Exception:  # a truncated or foreign file: recompute rather than fail a request
                    continue
        return None

    def save(
        self,
        key: tuple,
        stats: tuple[Tensor, ...],
        directory: Path | None = None,
        names: tuple[str, ...] = ("mu", "sigma"),
    ) -> Path | None:
        """Write atomically to `directory` (default: the user cache); None when it cannot be written."""
        from safetensors.torch import save_file

        d = directory or self.write_dir
        if d is None:
            return None
        try:
            d.mkdir(parents=True, exist_ok=True)
            path = d / self.name(key)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file(
                {n: t.contiguous() for n, t in zip(names, stats, strict=True)}, str(tmp), metadata={"key": repr(key)}
            )
            tmp.replace(path)
            return path
        except OSError:  # a read-only home (some Spaces): keep the constants in memory only
            return None
