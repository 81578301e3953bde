"""A routing idea measured on dev only (issue 19): pool the residual stream with the model's own attention.

People-style prompts put the request among other words ("A bag of flour weighs 1.5 kg. How many grams is
that?"); the default pools the last token and the flat mean over the user's tokens. Here the user's tokens
are weighted by the last token's attention (mean over heads), either each block's own or the average over
blocks: label-free, the model itself says which words the end of the prompt reads. Scored with the shipped
default's other axes, paired against it on the lab's dev and people_dev prompts (test prompts never read).
The result (it did not help) is kept in docs/lab/attention_pooling.md.

    python scripts/lab_attention_pooling.py [--config adapters.yaml] [--cache runs/lab]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logo_core import lab as L  # noqa: E402
from logo_core.ideas import RULE_HEADER, pooling_labs, rule_lines  # noqa: E402

POOLS = ("last", "mean", "attn_block", "attn_avg")


def collect(model, encoder, texts: list[str], batch: int = 16) -> torch.Tensor:
    """[P, L, 4, D] residual inputs of every block: last token, flat mean, and the two attention-weighted means."""
    out = []
    for s in range(0, len(texts), batch):
        enc = encoder(texts[s : s + batch], 0, torch.device("cpu"))
        user = enc.user.float()  # [B, T] the user's own tokens
        with torch.inference_mode():
            o = model(**enc.inputs(), output_hidden_states=True, output_attentions=True)
        w = torch.stack([a[:, :, -1].float().mean(1) for a in o.attentions], 1) * user[:, None]  # [B, L, T]
        weights = {
            "mean": (user / user.sum(-1, keepdim=True))[:, None].expand_as(w),
            "attn_block": w / w.sum(-1, keepdim=True).clamp_min(1e-12),
            "attn_avg": (w.mean(1, keepdim=True) / w.mean(1, keepdim=True).sum(-1, keepdim=True)).expand_as(w),
        }
        X = torch.stack([h.float() for h in o.hidden_states[: w.shape[1]]], 1)  # [B, L, T, D]
        pooled = [X[:, :, -1]] + [torch.einsum("blt,bltd->bld", weights[p], X) for p in POOLS[1:]]
        out.append(torch.stack(pooled, 2).half())
        print(f"probe vectors: {min(s + batch, len(texts))} / {len(texts)}", flush=True)
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "adapters.yaml"))
    p.add_argument("--cache", default=str(ROOT / "runs" / "lab"))
    p.add_argument("--out", default=str(ROOT / "docs" / "lab" / "attention_pooling.md"))
    args = p.parse_args()
    from logo_core.loading import load
    from logo_core.prompts import PromptEncoder
    from logo_core.registry import load_config

    t0 = time.perf_counter()
    cfg = load_config(args.config)
    loaded = load(cfg.base_model)
    prompts = [q for q in L.prompt_sets(cfg, 10, 20) if q.split in ("dev", "background", "neutral")]
    prompts += L.people_dev_prompts(10)
    texts = [q.text for q in prompts]
    key = hashlib.sha256(json.dumps([cfg.base_model.model_dump(mode="json"), texts]).encode()).hexdigest()[:16]
    path = Path(args.cache) / f"attn-vectors-{key}.pt"
    cached = path.is_file()
    if cached:
        V = torch.load(path, weights_only=True)
    else:
        model = loaded.probe_model
        model.set_attn_implementation("eager")  # sdpa returns no attention weights
        V = collect(model, PromptEncoder(loaded.tokenizer, cfg.engine.max_prompt_tokens, 8192), texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(V, path)
    pool = L.pool_factors(cfg, loaded.model)
    st = L.library_setting(cfg.defaults)
    one = replace(st, pooling="last")  # each pooling's vectors scored alone, then averaged as `both` does
    labs = pooling_labs(prompts, V, pool, list(POOLS))
    lines = []
    for split in ("dev", "people_dev"):
        idx = labs["last"].index[split]
        S = {n: labs[n].scores(one, idx) for n in POOLS}
        rules = {
            "default: last + mean": (S["last"] + S["mean"]) / 2,
            "last + attention (each block's)": (S["last"] + S["attn_block"]) / 2,
            "last + attention (averaged over blocks)": (S["last"] + S["attn_avg"]) / 2,
            "attention (each block's) alone": S["attn_block"],
            "attention (averaged over blocks) alone": S["attn_avg"],
            "last + mean + attention (each block's)": (S["last"] + S["mean"] + S["attn_block"]) / 3,
            "last + mean + attention (averaged)": (S["last"] + S["mean"] + S["attn_avg"]) / 3,
        }
        lines += rule_lines(labs["last"], rules, split, "default: last + mean")
    text = "\n".join(
        [
            "# Attention-weighted pooling (a routing idea, dev only)",
            "",
            f"Pool sha256 {L.pool_hash(cfg)}; default `{st.name}`; the user's tokens weighted by the last token's "
            "attention (mean over heads), paired against the default; 95% bootstrap intervals. "
            f"`python scripts/lab_attention_pooling.py` ({time.perf_counter() - t0:.0f} s"
            f"{', probe vectors from its cache' if cached else ''}).",
            "",
            RULE_HEADER,
            *lines,
        ]
    )
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
