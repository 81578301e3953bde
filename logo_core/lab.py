"""The routing lab: score many routing settings on dev, test and people-style prompts in minutes.

Routing needs only probe vectors, and those depend on the base model and the prompts, not on the
pool. So the lab runs the base model once over every prompt set, keeps each block's vectors
(residual stream and the attention input, last token and mean over the user's tokens) on disk,
then computes every adapter's signal at every block for every setting as tensor algebra. A new
pool or a new signal costs seconds, not a re-run of the model.

A setting is (variant, module, input, pooling, calibration, blocks, decision); see `Setting`.
Everything here is label-free: the background set is the pool's example prompts pooled (which
adapter each came from is never read), the task of a dev/test prompt is used only to score.

Example:
    python -m logo_core.lab --out docs/lab            # dev table, chosen setting, test + people report
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import yaml
from torch import Tensor

from .calibration import decorrelate, decorrelation_stats, nearest_similarity, unit_rows
from .intervals import bootstrap, fmt, paired  # noqa: F401 (the lab's tables and its tests use them)
from .options import NEAREST  # the gate that reads how close a prompt is to the background prompts
from .probe import POOLINGS  # the last prompt token, or the mean over the user's tokens
from .probe import PROBE_INPUTS as INPUTS  # the block's input (before its norm), or q/v's own input
from .signals import gram, output_norms, subspace_norms, unit, zscore_stats

log = logging.getLogger(__name__)

MODULES = ("q_proj", "v_proj")
OFFPOOL = Path(__file__).resolve().parent.parent / "assets" / "offpool.yaml"  # questions no adapter is for
VARIANTS = ("norm", "centred", "whitened", "contrast_pool", "contrast_family", "subspace", "subspace_cos")


# --------------------------------------------------------------------------------------------
# Prompt sets


@dataclass(frozen=True)
class Prompt:
    text: str
    task: str  # "" for background / neutral / off-pool prompts (the lab never routes with it)
    family: str
    unseen: bool
    split: str  # dev | test | people | offpool_dev | offpool_test | background | neutral


def prompt_sets(cfg, n_dev: int, n_test: int) -> list[Prompt]:
    """Dev, test and people-style prompts of every task, then the background and neutral prompts."""
    out = split_prompts("dev", min(n_dev, 20), seed=5) + split_prompts("test", n_test) + split_prompts("people", n_test)
    offpool = offpool_prompts()
    for split in ("dev", "test"):
        out += [Prompt(p, "", "", False, f"offpool_{split}") for p in offpool[split]]
    out += [Prompt(p, "", "", False, "background") for p in background_prompts(cfg)]
    out += [Prompt(p, "", "", False, "neutral") for p in cfg.neutral_prompts]
    return out


def offpool_prompts() -> dict[str, list[str]]:
    """assets/offpool.yaml: lists of questions no adapter is for; raises naming an entry that is not text."""
    offpool = yaml.safe_load(OFFPOOL.read_text(encoding="utf-8"))
    for key, texts in offpool.items():
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise ValueError(f"{OFFPOOL}: `{key}` holds {bad!r}, not text; quote it (YAML reads yes/no as booleans)")
    return offpool


def people_dev_prompts(n: int) -> list[Prompt]:
    """`people_dev`: dev items in people-style phrasings written apart from the `people` test ones (n a task),
    so that the abstain threshold is chosen on prompts worded as visitors word them, never on the test ones."""
    return split_prompts("people_dev", n, seed=5)


def split_prompts(split: str, n: int, seed: int = 0, name: str | None = None) -> list[Prompt]:
    """`n` prompts of every task from one split of the task suite (`Task.examples`), labelled `name` (the split)."""
    from .tasks import TASKS

    return [
        Prompt(ex.prompt, t.name, t.family, t.unseen, name or split)
        for t in TASKS.values()
        for ex in t.examples(split, n, seed=seed)
    ]


def short_prompts() -> list[Prompt]:
    """Short chit-chat (a greeting, a word) that no adapter is for: `short_dev` and `short_test`."""
    offpool = offpool_prompts()
    return [Prompt(p, "", "", False, split) for split in ("short_dev", "short_test") for p in offpool.get(split, [])]


def user_tokens(encoder, texts: list[str]) -> Tensor:
    """[P] how many tokens of each prompt are the user's (what `abstain_min_tokens` counts)."""
    return torch.cat(
        [encoder(texts[s : s + 256], 0, torch.device("cpu")).user.sum(-1) for s in range(0, len(texts), 256)]
    )


def background_prompts(cfg) -> list[str]:
    """The unlabelled background: every adapter's example prompts, pooled and de-duplicated.

    Which adapter a prompt came from is dropped here, so nothing downstream can use it.
    """
    seen: dict[str, None] = {}
    for a in cfg.adapters:
        for p in a.examples:
            seen.setdefault(p, None)
    return list(seen)


# --------------------------------------------------------------------------------------------
# Probe vectors (pool-independent, cached)


def collect(model, encoder, prompts: list[str], batch: int = 16) -> Tensor:
    """[P, L, 2 inputs, 2 poolings, D] fp32 vectors of every prompt at every block.

    The residual input of block l is `hidden_states[l]`; the module input is what q_proj (and
    v_proj: same tensor) receives, read with a forward pre-hook. Mean pooling covers the user's
    tokens only (the chat template's head and tail are the same for every prompt).
    """
    from .anatomy import decoder_layers

    layers = decoder_layers(model)
    L = len(layers)
    captured: dict[int, Tensor] = {}
    hooks = [
        layer.self_attn.q_proj.register_forward_pre_hook(lambda m, a, i=i: captured.__setitem__(i, a[0]))
        for i, layer in enumerate(layers)
    ]
    out = []
    try:
        for s in range(0, len(prompts), batch):
            enc = encoder(prompts[s : s + batch], 0, torch.device("cpu"))
            user = enc.user.float()  # [B, T] the user's own tokens (left padded)
            user = user / user.sum(-1, keepdim=True).clamp_min(1)
            with torch.inference_mode():
                hs = model(**enc.inputs(), output_hidden_states=True).hidden_states  # L+1 x [B, T, D]
            rows = []
            for i in range(L):
                per_input = []
                for x in (hs[i], captured[i]):  # residual, module input
                    x = x.float()
                    per_input.append(torch.stack([x[:, -1], torch.einsum("bt,btd->bd", user, x)], 1))  # [B, 2, D]
                rows.append(torch.stack(per_input, 1))  # [B, 2, 2, D]
            out.append(torch.stack(rows, 1))  # [B, L, 2, 2, D]
            log.info("probe vectors: %d / %d prompts", min(s + batch, len(prompts)), len(prompts))
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(out)


def cached_vectors(cfg, loaded, prompts: list[Prompt], cache: Path) -> Tensor:
    """`collect` once per (model, prompt list); kept on disk under `cache`."""
    from .prompts import PromptEncoder

    key = hashlib.sha256(json.dumps([cfg.base_model.model_dump(mode="json"), [p.text for p in prompts]]).encode())
    path = cache / f"vectors-{key.hexdigest()[:16]}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    encoder = PromptEncoder(loaded.tokenizer, cfg.engine.max_prompt_tokens, 8192)
    x = collect(loaded.probe_model, encoder, [p.text for p in prompts]).half()  # fp16 on disk: 4x smaller
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(x, path)
    return x


# --------------------------------------------------------------------------------------------
# The pool's factors and per-block signals


@dataclass
class PoolFactors:
    names: list[str]
    families: list[str]
    A: dict[str, Tensor]  # module -> [L, N, R, D_in]
    B: dict[str, Tensor]  # module -> [L, N, D_out, R], scale folded in


def pool_factors(cfg, model) -> PoolFactors:
    """Every adapter's A and s*B at every block, for q_proj and v_proj (zero where not adapted)."""
    from .loading import load_adapter

    files = [load_adapter(a.name, cfg.adapter_dir(a), model) for a in cfg.adapters]
    L = 1 + max(b for f in files for b, _ in f.keys)
    R = max(f.rank for f in files)
    A, B = {}, {}
    for m in MODULES:
        shapes = [(t[0].shape, t[1].shape) for f in files for k, t in f.read().items() if k[1] == m][:1]
        (r0, d_in), (d_out, _) = shapes[0]
        A[m] = torch.zeros(L, len(files), R, d_in)
        B[m] = torch.zeros(L, len(files), d_out, R)
    for n, f in enumerate(files):
        for (b, m), (a, sb) in f.read().items():
            if m in A:
                A[m][b, n, : a.shape[0]] = a.float()
                B[m][b, n, :, : sb.shape[1]] = sb.float()
    return PoolFactors([a.name for a in cfg.adapters], [a.family or a.name for a in cfg.adapters], A, B)


TOKEN_BLOCKS = 16  # the token evidence the lab scores reads blocks below this (early blocks: words, not summaries)


def collect_token_signals(
    model, encoder, prompts: list[str], pool: PoolFactors, variant: str, inp: str, batch: int = 16
) -> dict[str, Tensor]:
    """{module (+ "@recency"): [P, TOKEN_BLOCKS, N]}: each adapter's `variant` signal at every user token of each block,
    averaged over the tokens alike and by recency (the router's `token_raw` before its mean over blocks, for each
    `token_pooling`). Pool-dependent, unlike `collect`."""
    from .probe import run_probe, vector_key
    from .router import user_weights

    wants = {vector_key(b, m, inp, "tokens") for b in range(TOKEN_BLOCKS) for m in MODULES}
    out: dict[str, list[Tensor]] = {m + s: [] for m in MODULES for s in ("", "@recency")}
    for s in range(0, len(prompts), batch):
        enc = encoder(prompts[s : s + batch], 0, torch.device("cpu"))
        hs = run_probe(model, enc.input_ids, enc.attention_mask, wants, enc.user)
        w, recent = user_weights(enc), user_weights(enc, "recency")  # [B, T] each
        B, T = w.shape
        for m in MODULES:
            x = torch.stack([hs[vector_key(b, m, inp, "tokens")] for b in range(TOKEN_BLOCKS)], 2)  # [B, T, L, D]
            x = torch.where(w[..., None, None] > 0, x, 0.0).reshape(B * T, TOKEN_BLOCKS, -1)
            sig = block_signals(x, pool, x, variant, m).reshape(B, T, TOKEN_BLOCKS, -1)
            out[m].append(torch.einsum("bt,btln->bln", w, sig))
            out[m + "@recency"].append(torch.einsum("bt,btln->bln", recent, sig))
        log.info("token signals: %d / %d prompts", min(s + batch, len(prompts)), len(prompts))
    return {m: torch.cat(v) for m, v in out.items()}


def cached_token_signals(cfg, loaded, prompts: list[Prompt], variant: str, inp: str, cache: Path) -> dict[str, Tensor]:
    """`collect_token_signals` once per (model, pool, prompt list, variant, input); kept on disk under `cache`."""
    from .prompts import PromptEncoder

    ident = [
        cfg.base_model.model_dump(mode="json"),
        pool_hash(cfg),
        variant,
        inp,
        TOKEN_BLOCKS,
        "v2: mean and recency",
        [p.text for p in prompts],
    ]
    path = cache / f"tokens-{hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    encoder = PromptEncoder(loaded.tokenizer, cfg.engine.max_prompt_tokens, 8192)
    pool = pool_factors(cfg, loaded.model)
    x = collect_token_signals(loaded.probe_model, encoder, [p.text for p in prompts], pool, variant, inp)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(x, path)
    return x


def token_source(cfg, loaded, prompts: list[Prompt], cache: Path):
    """`Lab.token_signals` for these prompts: (variant, input) -> `cached_token_signals`, each probed once."""
    made: dict[tuple[str, str], dict[str, Tensor]] = {}

    def get(variant: str, inp: str) -> dict[str, Tensor]:
        if (variant, inp) not in made:
            made[variant, inp] = cached_token_signals(cfg, loaded, prompts, variant, inp, cache)
        return made[variant, inp]

    return get


def pool_hash(cfg) -> str:
    """sha256 over the adapters' weight files, in pool order."""
    h = hashlib.sha256()
    for a in cfg.adapters:
        h.update(a.name.encode())
        h.update((cfg.adapter_dir(a) / "adapter_model.safetensors").read_bytes())
    return h.hexdigest()[:16]


def block_signals(x: Tensor, pool: PoolFactors, bg: Tensor, variant: str, module: str, chunk: int = 512) -> Tensor:
    """[P, L, N] signal of every adapter at every block for vectors x [P, L, D] (one input, one pooling).

    Variants (all `norm` of an output vector, fp32):
    - `norm`: ||s B A h|| (the paper's signal).
    - `centred`: ||s B A (h - mean_bg h)||: the input's departure from the background's mean prompt.
    - `whitened`: the same after whitening h by the background's (shrunk) covariance (SpectR-like:
      every input direction counts by how unusual it is, not by how large it is).
    - `contrast_pool` / `contrast_family`: ||o_i - mean_j o_j|| over the pool / over adapter i's
      family (GenKnowSub's subtraction, in output space: what adapter i adds beyond its relatives).
    - `subspace`: ||V_i^T h||, V_i the right singular vectors of s B_i A_i, every direction counted
      alike (full spectrum, singular values dropped: SpectR-like): how much of h lies in what adapter i
      reads. With B_i of full rank that is the projection onto A_i's row space, z^T (A A^T)^+ z, z = A h.
    - `subspace_cos`: the same over ||h||: the cosine between h and that subspace.
    bg: [P_bg, L, D] background vectors (for the centring and whitening statistics).
    """
    P, L, D = x.shape
    A, Bm = pool.A[module], pool.B[module]  # [L, N, R, D], [L, N, O, R]
    N = A.shape[1]
    fam_idx = {f: [i for i, g in enumerate(pool.families) if g == f] for f in dict.fromkeys(pool.families)}
    fam_mat = torch.zeros(N, N)  # row i: the mean over i's family
    for members in fam_idx.values():
        for i in members:
            fam_mat[i, members] = 1 / len(members)
    out = torch.empty(P, L, N)
    for layer in range(L):
        h = x[:, layer].float()  # [P, D]
        if variant in ("centred", "whitened"):
            hb = bg[:, layer].float()
            mu = hb.mean(0)
            h = h - mu
            if variant == "whitened":
                cov = torch.cov((hb - mu).T)  # [D, D]
                shrunk = 0.5 * cov + 0.5 * cov.trace() / D * torch.eye(D)  # shrinkage: P_bg << D
                evals, evecs = torch.linalg.eigh(shrunk)
                W = evecs @ torch.diag(evals.clamp_min(1e-8).rsqrt()) @ evecs.T
                h = h @ W * (cov.trace() / D).sqrt()  # keep the overall scale comparable
        a, b = A[layer], Bm[layer]  # [N, R, D], [N, O, R]
        if variant in ("subspace", "subspace_cos"):
            sig = subspace_norms(h, a)
            out[:, layer] = unit(sig, h) if variant == "subspace_cos" else sig
            continue
        if variant in ("norm", "centred", "whitened"):  # ||B A h|| through B's Gram matrix: no [P, N, O] outputs
            out[:, layer] = output_norms(h, a, gram(b))
            continue
        for s in range(0, P, chunk):
            z = torch.einsum("nrd,pd->pnr", a, h[s : s + chunk])
            o = torch.einsum("nor,pnr->pno", b, z)  # [p, N, O]
            if variant == "contrast_pool":
                o = o - o.mean(1, keepdim=True)
            elif variant == "contrast_family":
                o = o - torch.einsum("nm,pmo->pno", fam_mat, o)
            out[s : s + chunk, layer] = torch.linalg.vector_norm(o, dim=-1)
    return out


# --------------------------------------------------------------------------------------------
# Settings: calibration, blocks, decision


CALIBRATIONS = ("raw", "neutral", "bg_mean", "z_before", "z_after", "z_wide", "percentile")


@dataclass(frozen=True)
class Setting:
    variant: str = "norm"
    module: str = "v_proj"  # q_proj | v_proj | both
    input: str = "residual"
    pooling: str = "last"  # last | mean | both (z-scores summed)
    calibration: str = "neutral"
    blocks: str = "15:30"
    decision: str = "flat"  # flat | family (family by its best member, then the member)
    decorrelate: float = 0.0  # z_after only: `calibration.decorrelation_stats`'s strength (0: none)
    tokens: str = ""  # z_after only: the token evidence's blocks (`a:b`, below `TOKEN_BLOCKS`); "" = none
    token_weight: float = 0.0  # its weight (the router's `token_weight`)
    token_pooling: str = "mean"  # mean | recency (the router's `token_pooling`)

    @property
    def name(self) -> str:
        *axes, a, tokens, w, pooling = asdict(self).values()
        text = "/".join(map(str, axes)) + (f"/decorrelate {a:g}" if a else "")
        return text + (f"/tokens {tokens} x{w:g}" + (f" {pooling}" if pooling != "mean" else "") if w else "")


def _blocks(text: str) -> slice:
    a, b = text.split(":")
    return slice(int(a), int(b))


def calibrate(sig: Tensor, bg: Tensor, neutral: Tensor, how: str, blocks: slice) -> Tensor:
    """[P, N] scores from per-block signals sig [P, L, N] and the same signals of the background
    bg [P_bg, L, N] and neutral [P_n, L, N] prompts.

    raw: mean over blocks. neutral / bg_mean: each block's signal over its mean on neutral /
    background prompts, then the mean (the project's calibration; neutral is today's).
    z_before: each block z-scored against the background, then the mean over blocks. z_after: the
    mean over blocks, then z-scored. z_wide: z_after against the background and the neutral chat prompts
    together (a background that also holds prompts no adapter is for). percentile: the share of background
    prompts the mean beats.
    """
    s, b, n = sig[:, blocks], bg[:, blocks], neutral[:, blocks]
    if how == "raw":
        return s.mean(1)
    if how == "neutral":
        return (s / n.mean(0).clamp_min(1e-12)).mean(1)
    if how == "bg_mean":
        return (s / b.mean(0).clamp_min(1e-12)).mean(1)
    if how == "z_before":
        return ((s - b.mean(0)) / b.std(0).clamp_min(1e-12)).mean(1)
    sm, bm = s.mean(1), b.mean(1)  # [P, N], [P_bg, N]
    if how == "z_after":
        return (sm - bm.mean(0)) / bm.std(0).clamp_min(1e-12)
    if how == "z_wide":
        wide = torch.cat([bm, n.mean(1)])
        return (sm - wide.mean(0)) / wide.std(0).clamp_min(1e-12)
    if how == "percentile":
        return (sm[:, None, :] > bm[None]).float().mean(1)
    raise ValueError(f"`calibration` must be one of {', '.join(CALIBRATIONS)}, got {how!r}")


class Lab:
    """Per-block signals of every prompt for every (variant, module, input, pooling), computed lazily."""

    def __init__(
        self,
        prompts: list[Prompt],
        vectors: Tensor,
        pool: PoolFactors,
        tokens: Tensor | None = None,
        token_signals=None,
    ) -> None:
        self.prompts, self.vectors, self.pool = prompts, vectors, pool
        self.tokens = tokens  # [P] the user's tokens of each prompt (`user_tokens`), for `abstain_min_tokens`
        # (variant, input) -> {module: [P, TOKEN_BLOCKS, N]} (`collect_token_signals`), for settings with token evidence
        self.token_signals = token_signals
        self.index = {
            s: torch.tensor([i for i, p in enumerate(prompts) if p.split == s], dtype=torch.long)
            for s in dict.fromkeys(p.split for p in prompts)
        }
        self._signals: dict[tuple, Tensor] = {}

    def signals(self, variant: str, module: str, inp: str, pooling: str) -> Tensor:
        key = (variant, module, inp, pooling)
        if key not in self._signals:
            x = self.vectors[:, :, INPUTS.index(inp), POOLINGS.index(pooling)].float()  # [P, L, D]
            bg = x[self.index["background"]]
            self._signals[key] = block_signals(x, self.pool, bg, variant, module)
        return self._signals[key]

    def scores(self, st: Setting, idx: Tensor) -> Tensor:
        """[P, N] calibrated scores of the prompts `idx` under one setting (modules and poolings averaged)."""
        mods = MODULES if st.module == "both" else (st.module,)
        pools = POOLINGS if st.pooling == "both" else (st.pooling,)
        if st.token_weight:  # the router's token evidence, added after everything else
            flat = replace(st, tokens="", token_weight=0.0, token_pooling="mean")
            return self.scores(flat, idx) + st.token_weight * self.token_z(st, idx)
        if st.decorrelate:  # the router's decorrelation, its stats from the background under the same setting
            if st.calibration != "z_after":
                raise ValueError(f"`decorrelate` needs calibration z_after (the library's background), got {st.name!r}")
            flat = replace(st, decorrelate=0.0)
            key = ("decorrelate", flat, st.decorrelate)
            if key not in self._signals:
                self._signals[key] = decorrelation_stats(self.scores(flat, self.index["background"]), st.decorrelate)
            return decorrelate(self.scores(flat, idx), self._signals[key])
        parts = []
        for m, pl in itertools.product(mods, pools):
            sig = self.signals(st.variant, m, st.input, pl)
            bg, ne = sig[self.index["background"]], sig[self.index["neutral"]]
            parts.append(calibrate(sig[idx], bg, ne, st.calibration, _blocks(st.blocks)))
        return torch.stack(parts).mean(0)

    def token_z(self, st: Setting, idx: Tensor) -> Tensor:
        """[P, N] the token evidence of `st` (the router's `token_scores`): each module's token signal averaged over
        the `tokens` blocks, z-scored against the background prompts, averaged over the modules."""
        if st.calibration != "z_after":
            raise ValueError(f"token evidence needs calibration z_after (the library's background), got {st.name!r}")
        if self.token_signals is None:
            raise ValueError("this lab has no token signals (Lab(token_signals=...)); the token evidence needs them")
        key = ("tokens", st.variant, st.input, st.module, st.tokens, st.token_pooling)
        if key not in self._signals:
            sig, parts = self.token_signals(st.variant, st.input), []
            for m in MODULES if st.module == "both" else (st.module,):
                suffix = "" if st.token_pooling == "mean" else "@" + st.token_pooling
                raw = sig[m + suffix][:, _blocks(st.tokens)].float().mean(1)  # [P, N]
                mu, sd = zscore_stats(raw[self.index["background"]])
                parts.append((raw - mu) / sd)
            self._signals[key] = torch.stack(parts).mean(0)
        return self._signals[key][idx]

    def ranking(self, st: Setting, scores: Tensor, idx: Tensor) -> Tensor:
        """[P, N] adapter indices, best first, under the setting's decision rule.

        flat: by score. family: the family with the best mean member score first (evidence pooled
        over siblings), then its members by score. family_contrast: the same families, members
        ranked by the family-contrast variant of the setting (what each adds beyond its siblings).
        """
        order = scores.argsort(dim=-1, descending=True, stable=True)
        if st.decision == "flat":
            return order
        fams = list(dict.fromkeys(self.pool.families))
        member = torch.tensor([fams.index(f) for f in self.pool.families])  # [N] family of each adapter
        counts = torch.bincount(member, minlength=len(fams)).float()
        fam_score = torch.zeros(scores.shape[0], len(fams)).index_add_(1, member, scores) / counts  # [P, F]
        if st.decision == "family_contrast":
            inner = self.scores(replace(st, variant="contrast_family", decision="flat"), idx)
            order = inner.argsort(dim=-1, descending=True, stable=True)
        fam_rank = fam_score.argsort(dim=-1, descending=True, stable=True).argsort(-1)  # [P, F]
        ranks = fam_rank[:, member].gather(1, order)  # family rank of each adapter, in member order
        return order.gather(1, ranks.argsort(dim=-1, stable=True))


# --------------------------------------------------------------------------------------------
# Metrics with bootstrap intervals


def hits(lab: Lab, st: Setting, split: str) -> dict[str, Tensor]:
    """Per-prompt 0/1 hits of one setting on one split: own top-1, own top-3, family hit (seen
    tasks), unseen family hit (unseen tasks whose family has adapters)."""
    idx = lab.index[split]
    prompts = [lab.prompts[i] for i in idx]
    order = lab.ranking(st, lab.scores(st, idx), idx)  # [P, N]
    names, fams = lab.pool.names, lab.pool.families
    top1 = [names[i] for i in order[:, 0].tolist()]
    top3 = [[names[i] for i in row] for row in order[:, :3].tolist()]
    top1_fam = [fams[i] for i in order[:, 0].tolist()]
    seen = [i for i, p in enumerate(prompts) if not p.unseen and p.task in names]
    unseen = [i for i, p in enumerate(prompts) if p.unseen and p.family in fams]
    t = torch.tensor
    return {
        "own_top1": t([float(top1[i] == prompts[i].task) for i in seen]),
        "own_top3": t([float(prompts[i].task in top3[i]) for i in seen]),
        "family_hit": t([float(top1_fam[i] == prompts[i].family) for i in seen]),
        "unseen_family_hit": t([float(top1_fam[i] == prompts[i].family) for i in unseen]),
    }


# --------------------------------------------------------------------------------------------
# The grid and the report

NAMED = {  # settings kept selectable by name
    "paper": Setting("norm", "q_proj", "residual", "last", "raw", "29:30"),
    "neutral-15:30": Setting(),  # the shipped default before this lab
    "norm-0:30": Setting("norm", "both", "residual", "both", "z_after", "0:30"),  # the lab's first choice (norm)
}


def grid() -> list[Setting]:
    """The settings the lab tries on dev prompts."""
    out = list(NAMED.values())
    for variant, module, inp, pooling, cal, blocks in itertools.product(
        VARIANTS,
        ("q_proj", "v_proj", "both"),
        INPUTS,
        ("last", "mean", "both"),
        CALIBRATIONS,
        ("0:30", "10:30", "15:30", "20:30", "25:30", "5:15"),
    ):
        out.append(Setting(variant, module, inp, pooling, cal, blocks))
    return out


def dev_row(lab: Lab, st: Setting) -> dict:
    """One setting's dev figures (percent): the template dev prompts' four, and own top-1 on `people_dev` when the
    lab has it."""
    row = {"setting": st, **{k: 100 * v.mean().item() for k, v in hits(lab, st, "dev").items()}}
    if "people_dev" in lab.index:
        row["people_top1"] = 100 * hits(lab, st, "people_dev")["own_top1"].mean().item()
    return row


def search(lab: Lab, top: int = 20) -> tuple[Setting, list[dict]]:
    """The grid on dev prompts (flat decisions), then the best `top` with each decision rule.

    Chosen: the best `rank`, then the grid's order.
    """
    rows = [dev_row(lab, st) for st in grid()]
    for r in sorted(rows, key=order)[:top]:
        rows += [dev_row(lab, replace(r["setting"], decision=d)) for d in ("family", "family_contrast")]
    rows += decorrelated_rows(lab, rows, top)
    chosen = max(rows, key=rank)["setting"]
    return chosen, rows


DECORRELATE = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)  # strengths the lab tries (`calibration.decorrelation_stats`)
TOKEN_RANGES = ("0:4", "0:8", "0:10", "0:12", "0:16", "2:10", "2:12", "4:12")  # token evidence blocks the lab tries
TOKEN_WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
TOKEN_POOLINGS = ("mean", "recency")


def token_rows(lab: Lab, st: Setting) -> list[dict]:
    """`st` (background-calibrated) with token evidence at every `TOKEN_RANGES` x `TOKEN_WEIGHTS`, on dev; none when the
    lab has no token signals or `st` is not z_after."""
    if lab.token_signals is None or st.calibration != "z_after":
        return []
    return [
        dev_row(lab, replace(st, tokens=t, token_weight=w, token_pooling=p))
        for t in TOKEN_RANGES
        for w in TOKEN_WEIGHTS
        for p in TOKEN_POOLINGS
    ]


def decorrelated_rows(lab: Lab, rows: list[dict], top: int = 20) -> list[dict]:
    """The best `top` background-calibrated (z_after) flat settings of `rows`, each at every `DECORRELATE` strength."""
    best = [r["setting"] for r in sorted(rows, key=order) if r["setting"].calibration == "z_after"]
    best = list(dict.fromkeys(st for st in best if st.decision == "flat" and not st.decorrelate))[:top]
    return [dev_row(lab, replace(st, decorrelate=a)) for st in best for a in DECORRELATE]


def rank(row: dict) -> tuple[float, float]:
    """How the lab orders settings: own top-1 on dev, the mean of the template and the people-style dev prompts
    (a visitor's wording counts as much as the templates'), ties broken by family hit."""
    return (row["own_top1"] + row.get("people_top1", row["own_top1"])) / 2, row["family_hit"]


def order(row: dict) -> tuple[float, float]:
    """Sort key: best `rank` first."""
    return tuple(-x for x in rank(row))


def runs_in_library(st: Setting) -> bool:
    """The router runs it (`library_defaults` can write it into adapters.yaml)."""
    return st.variant in LIBRARY_SIGNALS and st.decision == "flat" and st.calibration in LIBRARY_CALIBRATION


def best_in_library(rows: list[dict]) -> Setting:
    """The dev-best setting among those the library runs (same order as `search`)."""
    return max((r for r in rows if runs_in_library(r["setting"])), key=rank)["setting"]


def top_margin(lab: Lab, st: Setting, split: str) -> Tensor:
    """[P] the best adapter's calibrated score: what the abstain rule thresholds."""
    idx = lab.index[split]
    return lab.scores(st, idx).max(-1).values


def nearest_margin(lab: Lab, block: int, split: str) -> Tensor:
    """[P] each prompt's similarity to its nearest background prompt at `block`: the `nearest` abstain signal, as the
    router computes it (`calibration.nearest_similarity` of the residual input's mean over the user's tokens)."""
    x = lab.vectors[:, block, INPUTS.index("residual"), POOLINGS.index("mean")].float()
    return nearest_similarity(x[lab.index[split]], unit_rows(x[lab.index["background"]]))


ABSTAIN_RULES = {
    "target": "dev: the lowest threshold that abstains on at least 95% of off-pool dev questions (fewest pool prompts lost)",
    "balanced": "dev: least balanced error between off-pool dev questions and pool dev prompts (template and people-style)",
}


THRESHOLD_DECIMALS = 3  # adapters.yaml's `abstain_below` (`library_defaults`) and every figure the lab reports at it


def thresholds(off: Tensor, pool: Tensor) -> dict[str, float]:
    """The abstain threshold of each rule (`ABSTAIN_RULES`), from dev maxima only.

    target: the issue asks for >= 90% of off-pool questions answered by the base model at the least cost on
    pool prompts; the threshold is the lowest that abstains on >= 95% of off-pool dev questions (a margin
    over 90% for a test set that differs). balanced: the mean of (off-pool routed) and (pool abstained) is
    least; among equal errors the midpoint. Both are rounded as adapters.yaml stores them (`THRESHOLD_DECIMALS`; the
    target rule's upward, so it still abstains on >= 95%), so every figure the lab reports is the shipped gate's.
    """
    cands = torch.cat([off, pool]).sort().values
    cands = torch.cat([cands[:1] - 1, (cands[1:] + cands[:-1]) / 2, cands[-1:] + 1])
    err = torch.stack([((off >= t).float().mean() + (pool < t).float().mean()) / 2 for t in cands])
    best = cands[err == err.min()]
    enough = cands[torch.stack([(off < t).float().mean() >= 0.95 for t in cands])]
    scale = 10**THRESHOLD_DECIMALS
    up = math.ceil(round(enough.min().item() * scale, 3)) / scale  # round(.., 3): float32 0.935 * 1000 is 935.0000024
    return {"target": up, "balanced": round(((best.min() + best.max()) / 2).item(), THRESHOLD_DECIMALS)}


def min_tokens(lab: Lab) -> int:
    """`abstain_min_tokens` from dev: the largest count that abstains on no dev pool prompt (their shortest);
    0 (never) without token counts."""
    return 0 if lab.tokens is None else int(lab.tokens[lab.index["dev"]].min())


ABSTAIN_SPLITS = ("offpool_dev", "offpool_test", "short_dev", "short_test", "dev", "people_dev", "test", "people")
POOL_DEV = ("dev", "people_dev")  # the pool prompts a threshold is chosen on (template and people-style)


GATE_MODULES = ("both", "q_proj", "v_proj")  # the modules an abstain gate may read (besides the routing ones)


def gate_margin(lab: Lab, st: Setting, gate: tuple[str, str | int], split: str) -> Tensor:
    """[P] what the abstain gate (signal, modules) reads on `split`: the best score of that signal, calibrated as
    `st` is, never decorrelated; for (`nearest`, block) the similarity to the nearest background prompt there."""
    signal, where = gate
    if signal == NEAREST:
        return nearest_margin(lab, int(where), split)
    flat = replace(st, variant=signal, module=where, decision="flat", decorrelate=0.0, tokens="", token_weight=0.0)
    flat = replace(flat, token_pooling="mean")
    return top_margin(lab, flat, split)


def gate_rows(lab: Lab, st: Setting) -> list[dict]:
    """Each signal the library runs, on each of `GATE_MODULES`, as the abstain gate of `st` (its other axes alike),
    and the `nearest` gate at each block, on dev: the `target` rule's threshold and the share of off-pool and pool
    dev prompts it abstains on."""
    gates = [(v, m) for v in LIBRARY_SIGNALS for m in dict.fromkeys((st.module, *GATE_MODULES))]
    if "background" in lab.index:
        gates += [(NEAREST, b) for b in range(lab.vectors.shape[1])]
    rows = []
    for gate in gates:
        m = {s: gate_margin(lab, st, gate, s) for s in ("offpool_dev", *POOL_DEV) if s in lab.index}
        tau = thresholds(m["offpool_dev"], torch.cat([m[s] for s in POOL_DEV if s in m]))["target"]
        abst = {s: 100 * (v < tau).float().mean().item() for s, v in m.items()}
        pool = sum(abst[s] for s in POOL_DEV if s in abst) / sum(s in abst for s in POOL_DEV)
        rows.append({"signal": gate[0], "module": gate[1], "threshold": tau, **abst, "pool_dev": pool})
    return rows


def choose_gate(rows: list[dict], st: Setting) -> tuple[str, str | int]:
    """The abstain gate (signal, modules; or `nearest`, block) chosen on dev from `gate_rows`: the one whose `target`
    threshold abstains on the fewest pool dev prompts (template and people-style alike); on a tie the routing signal,
    then the routing modules. What tells adapters apart need not be what tells pool prompts from others."""
    best = min(rows, key=lambda r: (r["pool_dev"], r["signal"] != st.variant, r.get("module", st.module) != st.module))
    return best["signal"], best.get("module", st.module)


def abstained(lab: Lab, st: Setting, gate: tuple[str, str | int], tau: float, shortest: int, split: str) -> Tensor:
    """[P] bool: the prompts of `split` that the gate sends to the base model (under `tau`, or too short)."""
    idx = lab.index[split]
    short = lab.tokens[idx] < shortest if lab.tokens is not None else torch.zeros(len(idx), dtype=torch.bool)
    return (gate_margin(lab, st, gate, split) < tau) | short


def unseen_by_task(lab: Lab, st: Setting, ab: dict, split: str) -> list[dict]:
    """Per unseen task whose family has adapters, on `split`: how often the top-1 is in its family, how often the
    gate abstains, both together (an abstained prompt chose no adapter: what the evaluation counts), and the
    adapters most often on top. Where the unseen family hit is lost, task by task."""
    idx = lab.index[split]
    top1 = lab.ranking(st, lab.scores(st, idx), idx)[:, 0].tolist()
    off = abstained(lab, st, (ab["signal"], ab["module"]), ab["threshold"], ab["min_tokens"], split).tolist()
    names, fams = lab.pool.names, lab.pool.families
    rows: dict[str, dict] = {}
    for j, i in enumerate(idx.tolist()):
        p = lab.prompts[i]
        if not (p.unseen and p.family in fams):
            continue
        r = rows.setdefault(p.task, {"task": p.task, "family": p.family, "n": 0, "hit": 0, "abstained": 0, "both": 0})
        hit = fams[top1[j]] == p.family
        r["n"] += 1
        r["hit"] += hit
        r["abstained"] += off[j]
        r["both"] += hit and not off[j]
        r.setdefault("top", Counter())[names[top1[j]]] += 1
    return [{**r, "top": r["top"].most_common(2)} for r in rows.values()]


def abstain(lab: Lab, st: Setting, gate: tuple[str, str] | str | None = None) -> dict:
    """Choose the abstain threshold on dev by each rule and report them; `threshold` is the `target` rule's.

    A prompt abstains when the best score of the `gate` signal (default: the routing one), calibrated as `st` is,
    is under the threshold, or it has fewer user tokens than `min_tokens` (chosen on dev pool prompts alone).
    Reported per rule and split: the share abstained, and for pool prompts the share whose own adapter was top-1
    (under `st`) and is now lost to the base model (what abstaining costs).
    """
    signal, module = (gate, st.module) if gate is None or isinstance(gate, str) else gate
    gate = (signal or st.variant, module)
    pool_dev = torch.cat([gate_margin(lab, st, gate, s) for s in POOL_DEV if s in lab.index])
    taus = thresholds(gate_margin(lab, st, gate, "offpool_dev"), pool_dev)
    shortest = min_tokens(lab)
    out = {
        "threshold": taus["target"],
        "min_tokens": shortest,
        "signal": gate[0],
        "module": gate[1],
        "chosen_on": ABSTAIN_RULES["target"],
        "rules": {},
    }
    for rule, tau in taus.items():
        fig = {"threshold": tau, "chosen_on": ABSTAIN_RULES[rule]}
        for split in (s for s in ABSTAIN_SPLITS if s in lab.index):
            idx = lab.index[split]
            off = abstained(lab, st, gate, tau, shortest, split)
            fig[split] = bootstrap(off.float())
            if split in ("dev", "people_dev", "test", "people"):
                h = hits(lab, st, split)["own_top1"]
                seen = torch.tensor([not lab.prompts[i].unseen for i in idx.tolist()])
                fig[f"{split}_lost"] = bootstrap(off[seen].float() * h)
        out["rules"][rule] = fig
        if rule == "target":
            out.update({k: v for k, v in fig.items() if k not in ("threshold", "chosen_on")})
    return out


def report(lab: Lab, chosen: Setting, rows: list[dict], previous: Setting | None = None) -> tuple[str, dict]:
    """Markdown and JSON: the dev grid's best rows, then test and people-style figures with 95% intervals, the chosen
    setting paired against the named ones, the `previous` default and, when it decorrelates, itself without that."""
    named = {**NAMED, "chosen": chosen}
    if previous is not None and previous not in named.values():
        named["previous default"] = previous
    if chosen.decorrelate:
        named["chosen, not decorrelated"] = replace(chosen, decorrelate=0.0)
    if chosen.token_weight:
        named["chosen, no token evidence"] = replace(chosen, tokens="", token_weight=0.0, token_pooling="mean")
        if chosen.token_pooling != "mean":
            named["chosen, tokens alike"] = replace(chosen, token_pooling="mean")
    metrics = ("own_top1", "own_top3", "family_hit", "unseen_family_hit")
    data: dict = {"chosen": asdict(chosen), "named": {k: asdict(v) for k, v in named.items()}, "splits": {}}
    lines = [
        "## Dev: the best settings of the grid",
        "",
        f"{len(rows)} settings scored on {len(lab.index['dev'])} template dev prompts and "
        f"{len(lab.index.get('people_dev', []))} people-style dev prompts (`people_dev`: dev items in phrasings written "
        f"apart from the people-style test ones). Ranked by own top-1 over both (their mean), then family hit. "
        f"Chosen: `{chosen.name}`.",
        "",
        "| setting (variant/module/input/pooling/calibration/blocks/decision) | rank: own top-1, both | own top-1 | "
        "own top-3 | family hit | unseen family hit | own top-1, people_dev |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=order)[:15]:
        cells = [f"{rank(r)[0]:.1f}", *(f"{r[m]:.1f}" for m in metrics), f"{r.get('people_top1', float('nan')):.1f}"]
        lines.append(f"| `{r['setting'].name}` | " + " | ".join(cells) + " |")
    by_axis = {}  # the best dev own top-1 for each value of each axis: what mattered
    for r in rows:
        for axis, value in asdict(r["setting"]).items():
            key = (axis, value)
            by_axis[key] = max(by_axis.get(key, 0.0), rank(r)[0])
    lines += [
        "",
        "Best rank (own top-1 over both dev sets) for each value of each axis (the others free):",
        "",
        "| axis | value: best rank |",
        "|---|---|",
    ]
    for axis in asdict(chosen):
        vals = [(v, s) for (a, v), s in by_axis.items() if a == axis]
        lines.append(f"| {axis} | " + ", ".join(f"{v}: {s:.1f}" for v, s in vals) + " |")
    for split, title in (("test", "Test prompts (template phrasings)"), ("people", "People-style test prompts")):
        lines += [
            "",
            f"## {title}",
            "",
            "95% percentile-bootstrap intervals over prompts.",
            "",
            "| setting | own top-1 | own top-3 | family hit | unseen family hit |",
            "|---|---:|---:|---:|---:|",
        ]
        per = {name: hits(lab, st, split) for name, st in named.items()}
        data["splits"][split] = {}
        for name, h in per.items():
            cells = {m: bootstrap(h[m]) for m in metrics}
            data["splits"][split][name] = cells
            lines.append(f"| {name} (`{named[name].name}`) | " + " | ".join(fmt(cells[m]) for m in metrics) + " |")
        for base in (n for n in named if n != "chosen"):
            d = {m: paired(per["chosen"][m], per[base][m]) for m in metrics}
            data["splits"][split][f"chosen - {base}"] = d
            lines.append(f"| chosen - {base} (paired) | " + " | ".join(fmt(d[m]) for m in metrics) + " |")
    gates = gate_rows(lab, chosen) if chosen.variant in LIBRARY_SIGNALS else []
    gate = choose_gate(gates, chosen) if gates else None
    ab = abstain(lab, chosen, gate)
    data["abstain"], data["abstain_signals"] = ab, gates
    lines += [
        "",
        "## Abstaining",
        "",
        "The abstain gate, chosen on dev: each signal's best calibrated score on each choice of modules (the chosen "
        "setting's other axes), and `nearest` (the prompt's cosine similarity to its nearest background prompt, "
        "residual input averaged over the user's tokens) at each block, thresholded by the `target` rule; chosen: "
        f"the fewest pool dev prompts abstained ({gate_words(ab)}).",
        "",
        "| abstain signal | modules or block | threshold | offpool_dev abstained | dev abstained | people_dev "
        "abstained |",
        "|---|---|---:|---:|---:|---:|",
        *(
            f"| {g['signal']} | {g.get('module', chosen.module)} | {g['threshold']:.3f} | {g['offpool_dev']:.1f} | "
            f"{g.get('dev', float('nan')):.1f} | {g.get('people_dev', float('nan')):.1f} |"
            for g in sorted(gates, key=lambda g: g["pool_dev"])[:GATE_ROWS_SHOWN]
        ),
        "",
        f"The {GATE_ROWS_SHOWN} gates that lose the fewest pool dev prompts of {len(gates)} (all in results.json). "
        f"Threshold on {gate_words(ab)}, chosen on dev by each rule; the first is the default's.",
        "",
        f"Both rules also abstain on prompts of fewer than {ab['min_tokens']} user tokens (`abstain_min_tokens`: "
        "the shortest dev pool prompt, so no dev pool prompt is lost to it). short_dev / short_test: chit-chat of a "
        "word or two (assets/offpool.yaml), never used to choose.",
        "",
        "| rule | threshold | prompts | abstained (answered by the base model) | own adapter was top-1 but abstained |",
        "|---|---:|---|---:|---:|",
    ]
    for rule, fig in ab["rules"].items():
        for split in (s for s in ABSTAIN_SPLITS if s in fig):
            lost = fmt(fig[f"{split}_lost"]) if f"{split}_lost" in fig else ""
            lines.append(f"| {rule} | {fig['threshold']:.3f} | {split} | {fmt(fig[split])} | {lost} |")
    lines += ["", *(f"- {rule}: {text}" for rule, text in ABSTAIN_RULES.items())]
    lines += [
        "",
        "## Unseen tasks one by one",
        "",
        "The chosen setting on the tasks without an adapter whose family has adapters: how often the top-1 adapter is "
        "of the prompt's family, how often the `target` gate sends the prompt to the base model, and both (a "
        "family hit that was not abstained: what `make eval` reports as the unseen family hit).",
    ]
    data["unseen_by_task"] = {}
    for split, title in (("test", "template test prompts"), ("people", "people-style test prompts")):
        per_task = unseen_by_task(lab, chosen, ab, split)
        data["unseen_by_task"][split] = per_task
        lines += [
            "",
            f"| task ({title}) | family | prompts | family hit | abstained | family hit, not abstained | top-1 most often |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in per_task:
            top = ", ".join(f"{name} ({count})" for name, count in r["top"])
            lines.append(
                f"| {r['task']} | {r['family']} | {r['n']} | {100 * r['hit'] / r['n']:.0f} | "
                f"{100 * r['abstained'] / r['n']:.0f} | {100 * r['both'] / r['n']:.0f} | {top} |"
            )
        n = sum(r["n"] for r in per_task)
        if n:
            lines.append(
                f"| all | | {n} | {100 * sum(r['hit'] for r in per_task) / n:.1f} | "
                f"{100 * sum(r['abstained'] for r in per_task) / n:.1f} | {100 * sum(r['both'] for r in per_task) / n:.1f} | |"
            )
    return "\n".join(lines) + "\n", data


LIBRARY_CALIBRATION = {"z_after": ("background", True), "neutral": ("neutral", True), "raw": ("neutral", False)}
LIBRARY_SIGNALS = ("norm", "subspace", "subspace_cos")  # variants that are the router's signals of the same name


GATE_ROWS_SHOWN = 12


def gate_words(ab: dict) -> str:
    """The chosen abstain gate in words, as adapters.yaml will name it."""
    if ab["signal"] == NEAREST:
        return f"`abstain_signal`: **nearest**, `abstain_layer`: **{ab['module']}**"
    return f"`abstain_signal`: **{ab['signal']}** (its best calibrated score), `abstain_module`: **{ab['module']}**"


def library_defaults(
    st: Setting,
    abstain_below: float,
    abstain_min_tokens: int = 0,
    abstain_signal: str | None = None,
    abstain_module: str | int | None = None,
) -> dict:
    """adapters.yaml `defaults:` fields that make the library route as `st` (docs/method.md §3).

    Raises ValueError for a setting the lab can score but the library does not run (a whitened or
    contrast variant, a family decision, a per-block or percentile calibration)."""
    if not runs_in_library(st):
        raise ValueError(
            f"the lab chose {st.name!r}, which the library does not run (it runs variant {', '.join(LIBRARY_SIGNALS)}, "
            f"decision flat, "
            f"calibration {', '.join(LIBRARY_CALIBRATION)}): set adapters.yaml's defaults by hand or add it to the router"
        )
    calibration, calibrated = LIBRARY_CALIBRATION[st.calibration]
    return {
        "signal": st.variant,
        "calibrated": calibrated,
        "calibration": calibration,
        "layer": st.blocks,
        "module": _modules(st.module),
        "probe_input": st.input,
        "pooling": st.pooling,
        "abstain_below": round(abstain_below, THRESHOLD_DECIMALS),
        "abstain_min_tokens": abstain_min_tokens,
        "abstain_signal": "same" if abstain_signal in (None, st.variant) else abstain_signal,
        "abstain_module": "same"
        if abstain_signal == NEAREST or abstain_module in (None, st.module)
        else _modules(abstain_module),
        "decorrelate": st.decorrelate,
        "abstain_layer": int(abstain_module) if abstain_signal == NEAREST else None,
        "token_weight": st.token_weight,
        **({"token_layer": st.tokens, "token_pooling": st.token_pooling} if st.token_weight else {}),
    }


def _modules(module: str) -> str:
    """A lab module axis value as adapters.yaml writes it."""
    return "q_proj,v_proj" if module == "both" else module


def _range_text(value, field: str) -> str:
    """A block choice of the library's defaults (an int, a run of consecutive blocks or "a:b") as the lab's "a:b".

    Raises ValueError naming `field` for anything else (blocks with gaps, blank), which the lab cannot score."""
    if isinstance(value, int):
        value = f"{value}:{value + 1}"
    elif isinstance(value, tuple) and value and value == tuple(range(value[0], value[0] + len(value))):
        value = f"{value[0]}:{value[-1] + 1}"
    if not isinstance(value, str) or not re.fullmatch(r"\d+:\d+", value):
        raise ValueError(f"defaults `{field}` {value!r} is not one `a:b` block range, which the lab needs")
    return value


def library_setting(defaults) -> Setting:
    """The lab setting that adapters.yaml's `defaults:` route as: the inverse of `library_defaults`.

    Raises ValueError naming the field when the defaults are not a lab setting (another signal, or
    blocks that are not one `a:b` range)."""
    calibration = {v: k for k, v in LIBRARY_CALIBRATION.items()}.get((defaults.calibration, defaults.calibrated))
    if defaults.calibrated is False:
        calibration = "raw"
    layer = _range_text(defaults.layer, "layer")
    if defaults.signal not in LIBRARY_SIGNALS or calibration is None:
        raise ValueError(
            f"defaults signal {defaults.signal!r} / calibration {defaults.calibration!r} have no lab setting "
            f"(the lab scores signals {', '.join(LIBRARY_SIGNALS)} with calibration {', '.join(LIBRARY_CALIBRATION)})"
        )
    module = "both" if set(defaults.module) == set(MODULES) else ",".join(defaults.module)
    a = defaults.decorrelate if calibration == "z_after" else 0.0
    w = defaults.token_weight if calibration == "z_after" else 0.0
    tokens = _range_text(defaults.token_layer, "token_layer") if w else ""
    pooling = defaults.token_pooling if w else "mean"
    return Setting(
        defaults.signal,
        module,
        defaults.probe_input,
        defaults.pooling,
        calibration,
        layer,
        "flat",
        a,
        tokens,
        w,
        pooling,
    )


def apply_defaults(config: Path, fields: dict) -> None:
    """Rewrite those keys of the `defaults:` block in place (one `key: value` line each; comments kept)."""
    text = config.read_text(encoding="utf-8")
    block = re.search(r"^defaults:\n((?:[ \t]+.*\n)+)", text, re.MULTILINE)
    if block is None:
        raise ValueError(f"{config} has no block-style `defaults:` mapping to update")
    body = block.group(1)
    for key, value in fields.items():
        literal = json.dumps(value) if isinstance(value, str) and ":" in value else yaml.safe_dump(value).split("\n")[0]
        line = re.compile(rf"^([ \t]+){key}:[^#\n]*?(\s*#.*)?$", re.MULTILINE)
        if line.search(body):
            body = line.sub(lambda m, k=key, v=literal: f"{m.group(1)}{k}: {v}{m.group(2) or ''}", body, count=1)
        else:
            body += f"  {key}: {literal}\n"
    text = text[: block.start(1)] + body + text[block.end(1) :]
    yaml.safe_load(text)  # still YAML
    config.write_text(text, encoding="utf-8")


def previous_grid(out: Path, pool: str) -> tuple[Setting, list[dict]]:
    """The dev grid an earlier run wrote to `out` (results.json) and its best setting, as `search` returns them.

    Raises ValueError when there is none, or when it was scored on another pool (the hash in results.json, or
    in results.md's header for a run written before results.json kept it)."""
    path = out / "results.json"
    if not path.is_file():
        raise ValueError(f"--rescore: {path} does not exist; run the lab once without --rescore")
    data = json.loads(path.read_text())
    found = data.get("pool")
    if found is None and (out / "results.md").is_file():
        m = re.search(r"sha256 of its weights (\w+)", (out / "results.md").read_text())
        found = m and m.group(1)
    if found != pool:
        raise ValueError(
            f"--rescore: {path} was scored on pool {found}, not this one ({pool}); run the lab without --rescore"
        )
    rows = [{**r, "setting": Setting(**r["setting"])} for r in data["dev_grid"]]
    return max(rows, key=rank)["setting"], rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m logo_core.lab", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="adapters.yaml")
    p.add_argument("--n-dev", type=int, default=10)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--cache", default="runs/lab")
    p.add_argument("--out", default="docs/lab")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--apply", action="store_true", help="write the chosen setting into the config's defaults")
    p.add_argument(
        "--library-only", action="store_true", help="choose among the settings the library runs (for --apply)"
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="reuse the dev grid of OUT/results.json (the same pool only) instead of searching it again: the report, "
        "the abstain signal and its threshold are made anew (minutes, not the grid's half hour)",
    )
    args = p.parse_args(argv)
    from .loading import load
    from .prompts import PromptEncoder
    from .registry import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    t0 = time.perf_counter()
    prompts, extra = prompt_sets(cfg, args.n_dev, args.n_test), short_prompts() + people_dev_prompts(args.n_dev)
    loaded = load(cfg.base_model)
    vectors = torch.cat([cached_vectors(cfg, loaded, ps, Path(args.cache)) for ps in (prompts, extra)])
    encoder = PromptEncoder(loaded.tokenizer, cfg.engine.max_prompt_tokens, 8192)
    tokens = user_tokens(encoder, [p.text for p in prompts + extra])
    lab = Lab(
        prompts + extra,
        vectors,
        pool_factors(cfg, loaded.model),
        tokens,
        token_source(cfg, loaded, prompts + extra, Path(args.cache)),
    )
    log.info("vectors ready (%d prompts) in %.0f s", len(prompts), time.perf_counter() - t0)
    best, rows = previous_grid(Path(args.out), pool_hash(cfg)) if args.rescore else search(lab)
    if not any(r["setting"].decorrelate for r in rows):  # a grid scored before the decorrelation axis
        rows += decorrelated_rows(lab, rows)
        best = max(rows, key=rank)["setting"]
    # the token evidence, on the best setting the library runs without it (a grid scored before it, or before some of
    # its values, gets the rows it lacks)
    have = {r["setting"] for r in rows}  # (rows of a grid before `token_pooling` read back as mean)
    rows += [
        r
        for r in token_rows(lab, best_in_library([r for r in rows if not r["setting"].token_weight]))
        if r["setting"] not in have
    ]
    best = max(rows, key=rank)["setting"]
    chosen = best_in_library(rows) if args.library_only else best
    log.info("grid of %d settings on dev in %.0f s; chosen %s", len(rows), time.perf_counter() - t0, chosen.name)
    try:
        previous = library_setting(cfg.defaults)
    except ValueError:  # defaults the lab cannot score: no row for them
        previous = None
    text, data = report(lab, chosen, rows, previous)
    if chosen != best:
        text = (
            f"The dev-best setting of the whole grid is `{best.name}`, which the library does not run; "
            f"chosen (`--library-only`): the best that it runs.\n\n" + text
        )
    data["pool"] = pool_hash(cfg)
    header = (
        f"# Routing lab\n\nPool `{args.config}` (sha256 of its weights {pool_hash(cfg)}), "
        f"{args.n_dev} dev and {args.n_test} test prompts per task; "
        f"`python -m logo_core.lab --out {args.out}` ({time.perf_counter() - t0:.0f} s).\n\n"
    )
    if args.rescore:
        header += (
            f"The dev grid is the one an earlier run scored on this pool (`--rescore`); the report, the abstain "
            f"signal and its threshold were made anew with `python -m logo_core.lab --out {args.out} --rescore`.\n\n"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(header + text)
    data["dev_grid"] = [{**r, "setting": asdict(r["setting"])} for r in rows]
    (out / "results.json").write_text(json.dumps(data, indent=0) + "\n")
    print(header + text)
    if args.apply:
        ab = data["abstain"]
        fields = library_defaults(chosen, ab["threshold"], ab["min_tokens"], ab["signal"], ab["module"])
        apply_defaults(Path(args.config), fields)
        print(f"{args.config}: defaults set to {fields}; rerun scripts/ship_calibration.py")


if __name__ == "__main__":
    main()
