"""Pure functions: probe vectors -> one score per adapter (docs/method.md §2).

Read top to bottom: every adapter's LoRA output on the probe vector (`lora_outputs`), its signal
(`SIGNALS`), the mask of adapters that adapt the module, the calibration, and the mean over the
probed blocks and modules (`score`). Always computed in fp32, whatever the model's dtype.

`norm` has a fast path (`output_norms`) that needs only A and each adapter's r x r Gram matrix
s^2 B^T B, never the up-projections: the pool keeps B out of memory until a signal needs whole outputs.

`SIGNALS` is the extension point: add a function `[B, N, D_out] -> [B, N]` under a new name and
every surface (options, CLI, app, evaluation) offers it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def lora_outputs(h: Tensor, A: Tensor, Bs: Tensor) -> Tensor:
    """o_i = s_i * B_i (A_i h) for all N adapters at once (two batched matmuls, no Python loop).

    Args:
        h: [B, D_in] probe vectors, one per prompt.
        A: [N, R, D_in] stacked down-projections (zero-padded to the largest rank).
        Bs: [N, D_out, R] stacked up-projections, each adapter's scale s_i folded in.

    Returns:
        [B, N, D_out] adapter outputs, fp32.
    """
    z = torch.einsum("nrd,bd->bnr", A.float(), h.float())  # [B, N, R]
    return torch.einsum("nor,bnr->bno", Bs.float(), z)  # [B, N, D_out]


def gram(Bs: Tensor) -> Tensor:
    """G_i = (s_i B_i)^T (s_i B_i), [N, R, R] fp32: ||o_i||^2 = z_i^T G_i z_i with z_i = A_i h."""
    Bs = Bs.float()
    return Bs.mT @ Bs


def output_norms(h: Tensor, A: Tensor, G: Tensor) -> Tensor:
    """||o_i|| for all N adapters from A and the Gram matrices (`norm_signal(lora_outputs(...))`
    without B). [B, N], fp32."""
    z = torch.einsum("nrd,bd->bnr", A.float(), h.float())  # [B, N, R]
    return torch.einsum("bnr,nrs,bns->bn", z, G, z).clamp_min(0).sqrt()


def stacked_norms(h: Tensor, A: Tensor, G: Tensor) -> Tensor:
    """[S, B, N] `output_norms` at S sites of one stream at once (h [S, B, D_in], A [S, N, R, D_in], G [S, N, R, R]):
    the fast path of `score` for `norm` (`router.fast_norm_score`), two einsums instead of two per site."""
    z = torch.einsum("snrd,sbd->sbnr", A.float(), h.float())  # [S, B, N, R]
    return torch.einsum("sbnr,snrt,sbnt->sbn", z, G, z).clamp_min(0).sqrt()


def norm_signal(o: Tensor) -> Tensor:
    """sigma_i = ||o_i||_2 (docs/method.md §2, `norm`)."""
    return torch.linalg.vector_norm(o, dim=-1)


def entropy_signal(o: Tensor) -> Tensor:
    """sigma_i = 1 / (H(softmax(o_i)) + 1e-6), H(p) = -sum p log(p + 1e-8) (docs/method.md §2, `entropy`)."""
    p = torch.softmax(o, dim=-1)
    H = -(p * torch.log(p + 1e-8)).sum(dim=-1)
    return 1.0 / (H + 1e-6)


SIGNALS: dict[str, Callable[[Tensor], Tensor]] = {"norm": norm_signal, "entropy": entropy_signal}


@dataclass(frozen=True)
class Site:
    """One (block, module) the probe listens at: the prompts' vectors there and the pool's factors.

    Attributes:
        h: [B, D_in] probe vectors.
        A: the pool's stacked down-projections at this module, [N, R, D_in].
        G: their Gram matrices s^2 B^T B, [N, R, R] fp32 (`gram`): enough for `norm`.
        up: () -> the stacked up-projections s*B [N, D_out, R], read only for a signal of whole outputs.
        mask: [N] bool, the adapters that adapt this module (the others say nothing here).
        calibration: raw [B, N] -> calibrated [B, N] (a `calibration.Calibration`'s `apply` with its constants
            at this site), or None for raw signals.
    """

    h: Tensor
    A: Tensor
    G: Tensor
    up: Callable[[], Tensor]
    mask: Tensor
    calibration: Callable[[Tensor], Tensor] | None = None


def site_signal(site: Site, signal: str) -> Tensor:
    """[B, N] raw signal at one site; `norm` through the Gram matrices, the others on whole outputs."""
    if signal == "norm":
        return output_norms(site.h, site.A, site.G)
    return SIGNALS[signal](lora_outputs(site.h, site.A, site.up()))


def site_score(site: Site, signal: str) -> Tensor:
    """[B, N]: each adapter's signal at one site, masked and (when given) calibrated."""
    sig = site_signal(site, signal)  # [B, N]
    # An adapter that does not adapt this module says nothing here (the entropy of o = 0 is not 0).
    sig = torch.where(site.mask.to(sig.device), sig, torch.zeros_like(sig))
    return sig if site.calibration is None else site.calibration(sig)


def average(per_site: Sequence[Tensor]) -> Tensor:
    """The mean over sites (probed blocks x modules) of per-site scores [B, N] (this project's
    multi-block listening, docs/method.md §4)."""
    return torch.stack(list(per_site)).mean(0)


def score(sites: Sequence[Site], signal: str) -> Tensor:
    """[B, N]: every adapter's score for every prompt, averaged over the probed sites."""
    return average([site_score(s, signal) for s in sites])


def zscore_stats(raw: Tensor) -> tuple[Tensor, Tensor]:
    """(mu, sigma), [N] each: mean and spread of every adapter's raw score over a background [P, N].

    An adapter with no spread (it does not adapt the probed modules, or one prompt) gets sigma = 1, so
    its z-score stays finite (docs/method.md, background calibration).
    """
    raw = raw.double()
    mu = raw.mean(0)
    sd = raw.std(0) if raw.shape[0] > 1 else torch.zeros_like(mu)
    sd = torch.where(torch.isfinite(sd) & (sd > 1e-12 * mu.abs().clamp_min(1.0)), sd, torch.ones_like(sd))
    return mu.float(), sd.float()
