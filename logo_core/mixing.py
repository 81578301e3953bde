"""Top-k, merge weights, and the per-request mixture y = W x + sum_i w_i s_i B_i A_i x.

The mixture of a request lives in a `ContextVar`, never in module attributes: the wrapped
modules are shared by every request and read-only, so concurrent requests (threads) cannot see
each other's adapters. Rows of one batch may carry different mixtures.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .probe import CAPTURE

Key = tuple[int, str]  # (block index, module short name)


def select_top_k(scores: Tensor, k: int) -> tuple[list[int], list[float]]:
    """Indices of the k largest scores (ties -> lower pool index first) and their weights.

    Weights are w_i = sigma_i / sum_{j in S} sigma_j (LOGO.md 3: plain normalisation, no softmax).
    """
    scores = scores.double()
    # Stable descending sort keeps pool order among equal scores: deterministic ties.
    order = torch.sort(scores, descending=True, stable=True).indices[:k].tolist()
    chosen = scores[order]
    total = float(chosen.sum())
    weights = [1.0 / len(order)] * len(order) if total <= 0 else (chosen / total).tolist()
    return order, weights


@dataclass(frozen=True)
class Mixture:
    """Low-rank factors of one request, per adapted module.

    For each (block, module): A [M, R, D_in] and Bw [M, D_out, R], where M is 1 (same mixture
    for every row) or the batch size, R the summed rank of the chosen adapters (zero-padded per
    row), and Bw = [w_1 s_1 B_1 | ... | w_K s_K B_K] (the concatenation trick, LOGO.md 4).
    """

    factors: dict[Key, tuple[Tensor, Tensor]]

    @property
    def rank(self) -> int:
        return max((a.shape[1] for a, _ in self.factors.values()), default=0)


def build_mixture(rows: Sequence[Sequence[tuple[dict[Key, tuple[Tensor, Tensor]], float]]]) -> Mixture:
    """Concatenate weighted adapters into one LoRA per row.

    Args:
        rows: per batch row, a list of (adapter factors {key: (A [R, D_in], B [D_out, R])},
            coefficient w_i * s_i).
    """
    keys = sorted({key for row in rows for factors, _ in row for key in factors})
    out: dict[Key, tuple[Tensor, Tensor]] = {}
    for key in keys:
        per_row = []
        for row in rows:
            parts = [(f[key][0], c * f[key][1]) for f, c in row if key in f]
            per_row.append(
                (torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts], dim=1)) if parts else None
            )
        d_in, d_out = next((a.shape[1], b.shape[0]) for p in per_row if p for a, b in [p])
        R = max((p[0].shape[0] for p in per_row if p), default=0)
        A = torch.zeros(len(rows), R, d_in)
        Bw = torch.zeros(len(rows), d_out, R)
        for i, p in enumerate(per_row):
            if p is not None:
                r = p[0].shape[0]
                A[i, :r], Bw[i, :, :r] = p
        out[key] = (A, Bw)
    return Mixture(out)


_ACTIVE: contextvars.ContextVar[Mixture | None] = contextvars.ContextVar("logo_mixture", default=None)


@contextlib.contextmanager
def use_mixture(mixture: Mixture | None) -> Iterator[None]:
    """Activate a mixture for model calls made in this context (this thread / task only)."""
    token = _ACTIVE.set(mixture)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class MixtureLinear(nn.Module):
    """A base linear layer plus whatever mixture the current request activated.

    Installed once by the engine; holds no per-request state. With no mixture active it is the
    base layer exactly (the probe runs this way).
    """

    def __init__(self, base: nn.Module, key: Key, in_features: int, out_features: int) -> None:
        super().__init__()
        self.base, self.key = base, key
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: Tensor) -> Tensor:
        capture = CAPTURE.get()
        if capture is not None and self.key in capture.wants:
            capture.record(self.key, x[:, -1].float())  # module input of the last token, for the probe
        y = self.base(x)
        mixture = _ACTIVE.get()
        if mixture is None or self.key not in mixture.factors:
            return y
        A, Bw = mixture.factors[self.key]  # [M, R, D_in], [M, D_out, R]
        xf = x.to(A.dtype)
        if A.shape[0] == 1:  # one mixture for all rows: two plain GEMMs
            delta = F.linear(F.linear(xf, A[0]), Bw[0])
        else:  # a mixture per row: batched matmuls, [B, T, D_in] -> [B, T, R] -> [B, T, D_out]
            delta = torch.bmm(torch.bmm(xf, A.transpose(1, 2)), Bw.transpose(1, 2))
        return y + delta.to(y.dtype)


def reference_delta(x: Tensor, adapters: Sequence[tuple[Tensor, Tensor, float]]) -> Tensor:
    """Plain path for tests: sum_i c_i B_i (A_i x), one adapter at a time (the reference's loop)."""
    return sum(c * F.linear(F.linear(x, A), B) for A, B, c in adapters)
