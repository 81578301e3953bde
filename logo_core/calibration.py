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
from collections.abc import Callable
from dataclasses import dataclass

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
