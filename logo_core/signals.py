"""Pure functions: probe vectors -> one score per adapter (LOGO.md, section 2).

`SIGNALS` is the extension point: add a function `[B, N, O] -> [B, N]` under a new name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def lora_outputs(h: Tensor, A: Tensor, Bs: Tensor) -> Tensor:
    """o_i = s_i * B_i (A_i h) for all N adapters at once (two batched matmuls, no Python loop).

    Args:
        h: [B, D] probe vectors (one per prompt).
        A: [N, R, D] stacked down-projections (zero-padded to the largest rank).
        Bs: [N, O, R] stacked up-projections with each adapter's scale s_i folded in.

    Returns:
        [B, N, O] adapter outputs.
    """
    z = torch.einsum("nrd,bd->bnr", A, h.to(A.dtype))  # [B, N, R]
    return torch.einsum("nor,bnr->bno", Bs, z)  # [B, N, O]


def norm_signal(o: Tensor) -> Tensor:
    """sigma_i = ||o_i||_2 (LOGO.md 2, `norm`)."""
    return torch.linalg.vector_norm(o, dim=-1)


def entropy_signal(o: Tensor) -> Tensor:
    """sigma_i = 1 / (H(softmax(o_i)) + 1e-6), H(p) = -sum p log(p + 1e-8) (LOGO.md 2, `entropy`)."""
    p = torch.softmax(o, dim=-1)
    H = -(p * torch.log(p + 1e-8)).sum(dim=-1)
    return 1.0 / (H + 1e-6)


SIGNALS: dict[str, Callable[[Tensor], Tensor]] = {"norm": norm_signal, "entropy": entropy_signal}
