"""Top-k, merge weights, and the mixture y = W x + sum_i w_i s_i B_i (A_i x) (docs/method.md §5 and §6).

A request's mixture lives in modules of its own: `attach` returns a private view of the shared
model (`views.private_view`) in which each adapted linear layer is replaced by

- `MixedLinear`: the base layer plus one low-rank pair, x -> Bw (A x), with A the stacked A_i and
  Bw the side-by-side w_i s_i B_i (the rank-concatenation of docs/method.md §6); one pair per row when rows
  of a batch carry different mixtures. Also the fixed-shape buffers of the compiled path.
- or a folded `nn.Linear` with W + Bw A: one mixture, float weights (CPU default): decoding then
  costs exactly what the base model costs.

`reference_delta` is the plain path, one adapter at a time (the authors' loop), for the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anatomy import layers_path, module_paths
from .views import private_view

Key = tuple[int, str]  # (block index, module short name)
Factors = dict[Key, tuple[Tensor, Tensor]]  # one adapter: {key: (A [R, D_in], s*B [D_out, R])}


# How the chosen adapters' scores become merge weights (docs/method.md §5). `lead` keeps the best adapter at full
# strength and gives the others LEAD_SHARE of their proportional weight: the merge lab's choice on dev prompts
# (docs/lab/merges/dev.md), where the paper's `proportional` weights at k = 3 cost 21 points against k = 1.
WEIGHTINGS = ("proportional", "lead")
LEAD_SHARE = 0.25


def merge_weights(scores: Sequence[float], weighting: str = "proportional", share: float = LEAD_SHARE) -> list[float]:
    """Merge weights of the chosen adapters, best first: `proportional` w_i = max(s_i, 0) / sum_j max(s_j, 0)
    (uniform when no score is positive); `lead` w_1 = 1, w_i = `share` x the proportional w_i after it (the merge
    lab scores other shares; the library uses LEAD_SHARE)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r}: use one of {', '.join(WEIGHTINGS)}")
    if not scores:
        return []
    pos = [max(float(s), 0.0) for s in scores]
    total = sum(pos)
    prop = [p / total for p in pos] if total > 0 else [1.0 / len(pos)] * len(pos)
    return prop if weighting == "proportional" else [1.0] + [share * w for w in prop[1:]]


def select_top_k(scores: Tensor, k: int, weighting: str = "proportional") -> tuple[list[int], list[float]]:
    """Indices of the k largest scores (ties -> lower pool index first) and their weights (`merge_weights`).

    Proportional weights are the plain normalisation of docs/method.md §5 (no softmax), over the positive
    part of each score: a calibrated z-score below 0 gets no weight, and when no chosen score is positive
    the weights are uniform.
    A NaN or infinite score (a broken adapter) is never selected; if fewer than k scores are finite,
    fewer than k adapters are returned.
    """
    scores = scores.double()
    finite = torch.isfinite(scores)
    ranked = torch.where(finite, scores, torch.full_like(scores, -torch.inf))
    # Stable descending sort keeps pool order among equal scores: deterministic ties.
    order = [i for i in torch.sort(ranked, descending=True, stable=True).indices.tolist() if finite[i]][:k]
    return order, merge_weights(scores[order].tolist(), weighting)


def acting(weights: dict[str, float]) -> dict[str, float]:
    """The adapters of a routed mixture that act on the answer: top-k keeps a chosen adapter whose score is
    not positive at weight 0 (shown as chosen), but an explicit mixture is > 0 by contract (`check_mixture`)."""
    return {name: w for name, w in weights.items() if w > 0}


TIE_RTOL = 1e-5  # fp32 round-off of a probe pass and its calibration mean is ~1e-6 relative
TIE_ATOL = 1e-5  # scores near 0 (a calibrated block where every adapter reads alike: float noise of ~1e-7)


def ties_at_cut(scores: Tensor, chosen: Sequence[int]) -> list[int]:
    """Indices whose score equals the last chosen one, up to round-off, when that tie straddles the
    top-k cut (some tied adapters are in, some out: noise decided); [] when the cut is clean."""
    if not chosen or len(chosen) == len(scores):
        return []
    last = scores[chosen[-1]]
    tied = torch.isclose(scores, last, rtol=TIE_RTOL, atol=TIE_ATOL).nonzero().flatten().tolist()
    return tied if set(tied) - set(chosen) else []


def stack_factors(pairs: Sequence[tuple[Tensor, Tensor] | None], rank: int | None = None) -> tuple[Tensor, Tensor]:
    """Zero-pad and stack LoRA pairs: [(A [R_i, D_in], B [D_out, R_i]) or None] -> A [N, R, D_in], B [N, D_out, R].

    R is the largest R_i (or `rank`); a None entry (an adapter that does not adapt this module)
    and the padding are zeros, which add nothing to A x or B z.
    """
    first = next(p for p in pairs if p is not None)
    D_in, D_out = first[0].shape[1], first[1].shape[0]
    R = rank if rank is not None else max(p[0].shape[0] for p in pairs if p is not None)
    kw = dict(device=first[0].device, dtype=first[0].dtype)
    A = torch.zeros(len(pairs), R, D_in, **kw)  # [N, R, D_in]
    B = torch.zeros(len(pairs), D_out, R, **kw)  # [N, D_out, R]
    for i, p in enumerate(pairs):
        if p is not None:
            r = p[0].shape[0]
            A[i, :r], B[i, :, :r] = p
    return A, B


@dataclass(frozen=True)
class Mixture:
    """The low-rank factors of one request, per adapted module.

    factors[key] = (A [M, R, D_in], Bw [M, D_out, R]): M is 1 (one mixture for every row) or the
    batch size, R the summed rank of the row's adapters (zero-padded across rows), and
    Bw = [w_1 s_1 B_1 | ... | w_K s_K B_K], so Bw (A x) = sum_i w_i s_i B_i A_i x.
    """

    factors: dict[Key, tuple[Tensor, Tensor]]

    @classmethod
    def build(cls, rows: Sequence[Sequence[tuple[Factors, float]]]) -> Mixture | None:
        """Concatenate weighted adapters into one LoRA per row.

        Args:
            rows: per batch row, [(adapter factors, merge weight w_i)] (the scale s_i is in the factors).

        Returns:
            The mixture, with M = 1 when every row is the same; None when no row has an adapter.
        """
        if not any(rows):
            return None
        if all(_same(r, rows[0]) for r in rows):
            rows = rows[:1]
        keys = sorted({key for row in rows for factors, _ in row for key in factors})
        out = {}
        for key in keys:
            per_row = []
            for row in rows:
                parts = [(f[key][0], w * f[key][1]) for f, w in row if key in f]
                cat = (torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts], dim=1)) if parts else None
                per_row.append(cat)
            out[key] = stack_factors(per_row)  # [M, R, D_in], [M, D_out, R]
        return cls(out)


def _same(a: Sequence[tuple[Factors, float]], b: Sequence[tuple[Factors, float]]) -> bool:
    return len(a) == len(b) and all(fa is fb and wa == wb for (fa, wa), (fb, wb) in zip(a, b))


class MixedLinear(nn.Module):
    """A base linear layer plus a low-rank mixture: y = base(x) + Bw (A x).

    A [M, R, D_in] and Bw [M, D_out, R] are buffers (so `.to()` moves them with the layer): M = 1
    applies one mixture to every row, M >= batch gives row b its own pair (a compiled path's
    fixed-shape buffers have M = the largest batch bucket and R = K_max x rank, zero-padded).
    """

    def __init__(self, base: nn.Module, A: Tensor, Bw: Tensor) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("A", A, persistent=False)
        self.register_buffer("Bw", Bw, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        xf = x.to(self.A.dtype)
        if self.A.shape[0] == 1:  # one mixture for all rows: two plain GEMMs, [B, T, D_in] -> [B, T, D_out]
            delta = F.linear(F.linear(xf, self.A[0]), self.Bw[0])
        else:  # a mixture per row: batched matmuls, [B, T, D_in] -> [B, T, R] -> [B, T, D_out]
            B = x.shape[0]
            delta = torch.bmm(torch.bmm(xf, self.A[:B].transpose(1, 2)), self.Bw[:B].transpose(1, 2))
        return y + delta.to(y.dtype)


def foldable(base: nn.Module) -> bool:
    """A plain float linear layer, whose weight can take the mixture in (quantised ones cannot)."""
    return type(base) is nn.Linear and base.weight.is_floating_point()


def fold(base: nn.Linear, A: Tensor, Bw: Tensor) -> nn.Linear:
    """A private nn.Linear with W' = W + Bw A (computed in fp32), sharing the base layer's bias."""
    W = (base.weight.float() + Bw.float() @ A.float()).to(base.weight.dtype)  # [D_out, D_in]
    out = nn.Linear.__new__(nn.Linear)  # no init: the weight is set right below
    nn.Module.__init__(out)
    out.in_features, out.out_features = base.in_features, base.out_features
    out.weight = nn.Parameter(W, requires_grad=False)
    out.bias = base.bias
    return out


def attach(model: nn.Module, mixture: Mixture | None, fold_weights: bool = False) -> nn.Module:
    """A private view of `model` that computes with `mixture` (the model itself if None).

    Args:
        model: the shared base model (never modified).
        mixture: the request's factors.
        fold_weights: fold a one-row mixture into private weight copies where the layer allows it
            (decoding at the base model's speed; costs one copy of the adapted weights).
    """
    if mixture is None:
        return model
    layers, paths = layers_path(model), module_paths(model)

    def replace(A: Tensor, Bw: Tensor):
        def make(base: nn.Module) -> nn.Module:
            if fold_weights and A.shape[0] == 1 and foldable(base):
                return fold(base, A[0], Bw[0])
            return MixedLinear(base, A, Bw)

        return make

    return private_view(
        model, {f"{layers}.{b}.{paths[m]}": replace(A, Bw) for (b, m), (A, Bw) in mixture.factors.items()}
    )


def reference_delta(x: Tensor, adapters: Sequence[tuple[Tensor, Tensor, float]]) -> Tensor:
    """Plain path for tests: sum_i c_i B_i (A_i x), one adapter at a time (the reference's loop)."""
    return sum(c * F.linear(F.linear(x, A), B) for A, B, c in adapters)


def uniform(names: Sequence[str]) -> dict[str, float]:
    """Every adapter with the same weight (the uniform-merge baseline)."""
    return {n: 1.0 / len(names) for n in names}


def to_peft_state(mixture: Mixture, model: nn.Module) -> tuple[dict[str, Tensor], int, list[str]]:
    """A one-row mixture as one PEFT LoRA: (tensors, rank R, target module names).

    Every module's pair is zero-padded to the largest rank R; saved with `LoraConfig(r=R,
    lora_alpha=R)` (scale 1), `PeftModel.from_pretrained` computes exactly Bw (A x) there.
    """
    layers, paths = layers_path(model), module_paths(model)
    R = max(A.shape[1] for A, _ in mixture.factors.values())
    out = {}
    for (b, m), (A, Bw) in mixture.factors.items():
        assert A.shape[0] == 1, "only a one-row mixture is one adapter"
        A1, B1 = stack_factors([(A[0], Bw[0])], rank=R)  # [1, R, D_in], [1, D_out, R]
        key = f"base_model.model.{layers}.{b}.{paths[m]}"
        out[f"{key}.lora_A.weight"] = A1[0].float().contiguous()
        out[f"{key}.lora_B.weight"] = B1[0].float().contiguous()
    return out, R, sorted({m for _, m in mixture.factors})
