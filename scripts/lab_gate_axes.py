"""The abstain gate with its own modules and blocks: what abstaining costs on pool dev prompts at the `target` rule.

The library's gate (`RouteOptions.gate`) reads the routing setting's modules and blocks with another signal. On the
retrained pool the routing default reads v_proj alone, and every gate there abstains on a fifth or more of the
people-style dev prompts at 95% of off-pool dev questions. This scores each (modules, blocks, signal) gate with the
lab's arithmetic (`lab.top_margin`, the `target` threshold of `lab.thresholds`), dev prompts only.

    python scripts/lab_gate_axes.py            # prints the table (reads the lab's probe vector cache, runs/lab)
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logo_core import lab as L  # noqa: E402


def main() -> None:
    from logo_core.loading import load
    from logo_core.prompts import PromptEncoder
    from logo_core.registry import load_config

    torch.set_num_threads(2)
    cfg = load_config(ROOT / "adapters.yaml")
    prompts, extra = L.prompt_sets(cfg, 10, 20), L.short_prompts() + L.people_dev_prompts(10)
    loaded = load(cfg.base_model)
    cache = ROOT / "runs" / "lab"
    vectors = torch.cat([L.cached_vectors(cfg, loaded, ps, cache) for ps in (prompts, extra)])
    tokens = L.user_tokens(
        PromptEncoder(loaded.tokenizer, cfg.engine.max_prompt_tokens, 8192), [p.text for p in prompts + extra]
    )
    lab = L.Lab(prompts + extra, vectors, L.pool_factors(cfg, loaded.model), tokens)
    st = L.library_setting(cfg.defaults)
    print(f"routing default `{st.name}`; gate threshold: the `target` rule (>= 95% of off-pool dev questions)\n")
    print("| gate modules | blocks | signal | threshold | dev abstained | people_dev abstained |")
    print("|---|---|---|---:|---:|---:|")
    for blocks in ("0:30", "10:30"):
        for r in L.gate_rows(lab, replace(st, blocks=blocks)):  # every signal on every choice of modules
            print(
                f"| {r['module']} | {blocks} | {r['signal']} | {r['threshold']:.3f} | {r['dev']:.1f} | "
                f"{r['people_dev']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
