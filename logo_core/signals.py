"""Pure functions: probe vectors -> one score per adapter (docs/method.md §2).

Read top to bottom: every adapter's LoRA output on the probe vector (`lora_outputs`), its signal
(`SIGNALS`), the mask of adapters that adapt the module, the calibration, and the mean over the
probed blocks and modules (`score`). Always computed in fp32, whatever the model's dtype.

Two kinds of signal. `norm` and `entropy` read each adapter's output o_i = s_i B_i A_i h. `subspace`
and `subspace_cos` read only what the adapter listens to: how much of h lies in A_i's row space (every
direction alike, the singular values of B_i A_i dropped: a full-spectrum score in SpectR's spirit), and
that share of ||h||. `norm` and the subspace signals are quadratic forms sqrt(z^T M_i z) of z = A_i h with an
r x r matrix M_i (`QUADRATIC`), so their fast path needs only A and M, never the up-projections: the pool
keeps B out of memory until a signal needs whole outputs.

`SIGNALS` is the extension point: add a reference function `(h, A, up) -> [B, N]` under a new name
(and, for a quadratic form, its `Quadratic`) and every surface (options, CLI, app, evaluation) offers it.
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


def subspace_gram(A: Tensor) -> Tensor:
    """P_i = (A_i A_i^T)^+, [..., N, R, R] fp32: z_i^T P_i z_i with z_i = A_i h is ||h||^2 projected onto A_i's row
    space (the `subspace` signal through `output_norms`, as G_i is for `norm`). The pseudo-inverse keeps
    zero-padded ranks and adapters that do not adapt the module at 0."""
    A = A.float()
    return torch.linalg.pinv(A @ A.mT, hermitian=True)


def subspace_norms(h: Tensor, A: Tensor) -> Tensor:
    """||proj_{row A_i} h|| for all N adapters, [B, N] fp32 (h [B, D_in], A [N, R, D_in]): the `subspace` signal
    through the quadratic form (the lab's and the fast path's formula)."""
    return output_norms(h, A, subspace_gram(A))


def projection_norms(h: Tensor, A: Tensor) -> Tensor:
    """The `subspace` signal by its definition, [B, N]: ||V_i^T h|| with V_i an orthonormal basis of A_i's row
    space (SVD, the numerical rank kept): the plain reference the quadratic form is tested against."""
    out = []
    for a in A.float():
        _, S, Vh = torch.linalg.svd(a, full_matrices=False)
        V = Vh[S > S.max().clamp_min(1e-30) * max(a.shape) * torch.finfo(S.dtype).eps]  # [r, D_in]
        out.append(torch.linalg.vector_norm(h.float() @ V.T, dim=-1))
    return torch.stack(out, -1)


def stacked_codes(h: Tensor, A: Tensor) -> Tensor:
    """z = A h at S sites at once, [S, B, N, R] (h [S, B, D_in], A [S, N, R, D_in]): the costly half of the fast path
    of `score` for a quadratic-form signal (`router.fast_quadratic_score`), shared by every such signal of the same
    sites (a routing and an abstain signal)."""
    return torch.einsum("snrd,sbd->sbnr", A.float(), h.float())


def stacked_quadratic(z: Tensor, G: Tensor) -> Tensor:
    """sqrt(z^T G z) of `stacked_codes` z [S, B, N, R] and the signal's matrices G [S, N, R, R] -> [S, B, N]."""
    return torch.einsum("sbnr,snrt,sbnt->sbn", z, G, z).clamp_min(0).sqrt()


def norm_signal(o: Tensor) -> Tensor:
    """sigma_i = ||o_i||_2 (docs/method.md §2, `norm`)."""
    return torch.linalg.vector_norm(o, dim=-1)


def entropy_signal(o: Tensor) -> Tensor:
    """sigma_i = 1 / (H(softmax(o_i)) + 1e-6), H(p) = -sum p log(p + 1e-8) (docs/method.md §2, `entropy`)."""
    p = torch.softmax(o, dim=-1)
    H = -(p * torch.log(p + 1e-8)).sum(dim=-1)
    return 1.0 / (H + 1e-6)


def unit(sig: Tensor, h: Tensor) -> Tensor:
    """sig / ||h||: a signal made scale-free (`subspace_cos`: the cosine between h and the subspace). sig [..., B, N],
    h [..., B, D_in]."""
    return sig / torch.linalg.vector_norm(h.float(), dim=-1, keepdim=True).clamp_min(1e-12)


Reference = Callable[[Tensor, Tensor, Callable[[], Tensor]], Tensor]  # (h [B, D_in], A, up: () -> s*B) -> [B, N]

SIGNALS: dict[str, Reference] = {  # the plain definitions; `QUADRATIC` has the fast path of those it can
    "norm": lambda h, A, up: norm_signal(lora_outputs(h, A, up())),
    "entropy": lambda h, A, up: entropy_signal(lora_outputs(h, A, up())),
    "subspace": lambda h, A, up: projection_norms(h, A),
    "subspace_cos": lambda h, A, up: unit(projection_norms(h, A), h),
}


@dataclass(frozen=True)
class Quadratic:
    """A signal sqrt(z_i^T M_i z_i), z_i = A_i h (over ||h|| when `unit`): scored from A and M alone.

    matrix: (A [N, R, D_in], s*B [N, D_out, R]) -> M [N, R, R] fp32, made once when the pool stacks a site.
    """

    matrix: Callable[[Tensor, Tensor], Tensor]
    unit: bool = False


def _row_space(A: Tensor, Bs: Tensor) -> Tensor:
    return subspace_gram(A)


QUADRATIC: dict[str, Quadratic] = {  # signals sharing a `matrix` function share its matrices (the pool makes them once)
    "norm": Quadratic(lambda A, Bs: gram(Bs)),
    "subspace": Quadratic(_row_space),
    "subspace_cos": Quadratic(_row_space, unit=True),
}


@dataclass(frozen=True)
class Site:
    """One (block, module) the probe listens at: the prompts' vectors there and the pool's factors.

    Attributes:
        h: [B, D_in] probe vectors.
        A: the pool's stacked down-projections at this module, [N, R, D_in].
        G: the site's signal's matrices M_i, [N, R, R] fp32 (`QUADRATIC`; s^2 B^T B for `norm` and for a signal
            of whole outputs, which does not read them).
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
    """[B, N] raw signal at one site; a quadratic form through its r x r matrices, the others by definition."""
    quad = QUADRATIC.get(signal)
    if quad is None:
        return SIGNALS[signal](site.h, site.A, site.up)
    sig = output_norms(site.h, site.A, site.G)
    return unit(sig, site.h) if quad.unit else sig


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
