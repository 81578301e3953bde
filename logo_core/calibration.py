"""Calibration constants c_i (this project's addition, LOGO.md 2): each adapter's mean signal on neutral,
task-free prompts, computed once per (block, module, signal, probe input) and cached.

Adapters trained with different intensity differ in overall output scale; dividing by c_i keeps the
loudest adapter from winning every prompt. One probe pass of the neutral prompts through every block
serves all settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from torch import Tensor

from . import signals
from .probe import RESIDUAL


class Calibration:
    """c_i per site, lazily: the neutral prompts are probed on first use, then each site's constants.

    Args:
        probe_neutral: () -> {(block, RESIDUAL or module): [P, D]} vectors of the neutral prompts.
        site: (vectors, block, module) -> a `signals.Site` with the pool's factors there.
    """

    def __init__(self, probe_neutral: Callable[[], dict], site: Callable[..., signals.Site]) -> None:
        self.probe_neutral, self.site = probe_neutral, site
        self._vectors: dict | None = None
        self._constants: dict[tuple, Tensor] = {}
        self._lock = threading.Lock()

    def __call__(self, block: int, module: str, signal: str, probe_input: str) -> Tensor:
        """[N] constants for one site."""
        key = (block, module, signal, probe_input)
        with self._lock:
            if self._vectors is None:
                self._vectors = self.probe_neutral()
            if key not in self._constants:
                h = self._vectors[(block, RESIDUAL if probe_input == "residual" else module)]
                self._constants[key] = signals.calibration(self.site(h, block, module), signal)
            return self._constants[key]
