"""95% intervals for every figure the lab, the merges study and the evaluation report.

Percentile bootstrap over prompts (2,000 resamples, seeded); a difference between two conditions is
bootstrapped on the per-prompt differences over the same prompts (paired), so "better than X" reads
from one interval: its lower end above 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bootstrap(x: Tensor, reps: int = 2000, seed: int = 0, scale: float = 100.0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `x` times `scale` (0/1 hits -> percent) and its 95% interval."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(x), (reps, len(x)), generator=g)
    means = x[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return scale * x.mean().item(), scale * lo, scale * hi


def paired(a: Tensor, b: Tensor, reps: int = 2000, seed: int = 0, scale: float = 100.0) -> tuple[float, float, float]:
    """Mean of a - b over the same prompts and its 95% paired bootstrap interval."""
    return bootstrap(
        torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64), reps, seed, scale
    )


def fmt(m: tuple[float, float, float]) -> str:
    """'86.7 [84.6, 88.9]'."""
    return f"{m[0]:.1f} [{m[1]:.1f}, {m[2]:.1f}]"
