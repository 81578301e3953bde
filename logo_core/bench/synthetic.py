"""Synthetic pools and random-weight models: what lets the benchmark reach N = 260 and an 8B shape.

- `write_adapters`: N random PEFT LoRA adapters (rank 8, alpha 16, q_proj + v_proj, fp16
  safetensors), one seed each, for any base model's shape.
- `SHAPES` and `random_base`: a causal LM with random weights of a known model's shape (Llama-3.1-8B,
  SmolLM2-135M, a tiny one), built directly on the device and in the dtype that the library's
  `decide_placement` chooses from `base_model.device` / `dtype`. Timings depend on the shape, not
  on the weights' values; the routing they produce means nothing.
- `engine_for`: a `LoGoEngine` over a model and a pool config, placed as `from_pool_config` places one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..anatomy import decoder_layers, layers_path, linear_shape, module_paths
from ..engine import LoGoEngine
from ..loading import FLOAT_DTYPES, Placement, decide_placement, site_placement
from ..pool import AdapterPool, load_pool
from ..registry import PoolConfig, parse_config, with_overrides

RANK, ALPHA, TARGETS, STD = 8, 16, ("q_proj", "v_proj"), 0.02

# The paper's reference routing (docs/method.md §8: k of 260, raw norm, last block, q_proj, residual): the
# synthetic pools route this way unless a measurement says otherwise.
PAPER = {"signal": "norm", "calibrated": False, "layer": -1, "module": "q_proj", "probe_input": "residual"}
# Where the probe listens: the paper's setting, and the multi-block one adapters.yaml ships (every
# block's stack kept: the costly end of the range, for cost and memory).
ROUTINGS = {
    "last block, q_proj (paper)": {"layer": -1, "module": "q_proj"},
    "all blocks, v_proj (multi-block)": {"layer": "0:", "module": "v_proj"},
}


def write_adapters(model: nn.Module, root: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """Write n random PEFT LoRA adapters (fp16 safetensors + adapter_config.json) under root.

    Adapter i is drawn from seed + i, so the first n of a larger pool are the same files.
    Existing files are kept (pools of growing size share them).
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    layers, paths = layers_path(model), module_paths(model)
    L = len(decoder_layers(model))
    shapes = {m: linear_shape(decoder_layers(model)[0].get_submodule(paths[m])) for m in TARGETS}  # (D_in, D_out)
    out = {}
    for i in range(n):
        name = f"synth{i:03d}"
        out[name] = d = root / name
        if (d / "adapter_model.safetensors").is_file():
            continue
        gen = torch.Generator().manual_seed(seed + i)
        tensors = {}
        for b in range(L):
            for m, (D_in, D_out) in shapes.items():
                key = f"base_model.model.{layers}.{b}.{paths[m]}"
                tensors[f"{key}.lora_A.weight"] = (torch.randn(RANK, D_in, generator=gen) * STD).half()
                tensors[f"{key}.lora_B.weight"] = (torch.randn(D_out, RANK, generator=gen) * STD).half()
        d.mkdir(parents=True, exist_ok=True)
        save_file(tensors, d / "adapter_model.safetensors")
        LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(TARGETS), task_type="CAUSAL_LM").save_pretrained(d)
    return out


def pool_config(adapters: dict[str, Path], root: Path, base_model: dict | None = None, **sections) -> PoolConfig:
    """adapters.yaml of a synthetic pool, routing at the paper's setting by default.

    Args:
        base_model: `base_model` fields (device, dtype, probe_dtype).
        **sections: `engine` / `defaults` fields, e.g. `engine={"mixture": "lowrank"}`.
    """
    raw = {
        "base_model": base_model or {"device": "cpu", "dtype": "fp32"},
        "defaults": {**PAPER, **sections.pop("defaults", {})},
        "engine": sections.pop("engine", {}),
        "adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()],
    }
    return parse_config(raw, file=str(root / "adapters.yaml"), root=root)


def engine_for(
    model: nn.Module,
    tok,
    cfg: PoolConfig,
    placement: Placement | None = None,
    probe_model: nn.Module | None = None,
    pool: AdapterPool | None = None,
    **engine,
) -> LoGoEngine:
    """An engine over a loaded model and a pool config (`engine` overrides its engine settings).

    The model is shared and never modified, so several engines may use it at once; they may share
    a loaded `pool` too (its stacks and factor cache are thread-safe), else the pool is loaded here.
    """
    if engine:
        cfg = with_overrides(cfg, engine=engine)
    place = placement or decide_placement(cfg.base_model)
    report = None
    if pool is None:
        pool, report = load_pool(cfg, model, where=lambda key: site_placement(model, *key, place))
    return LoGoEngine(model, tok, pool, cfg, place, probe_model, report)


# --------------------------------------------------------------------------- random-weight shapes


@dataclass(frozen=True)
class Shape:
    """A model shape (a transformers LlamaConfig's fields) and what the run measures on it."""

    name: str
    config: dict
    k: int  # the mixture size of the end-to-end comparison (the paper's k = 20 of 260)
    compiled_k: int  # the mixture size of the compiled path's tok/s
    pool: int  # N


def llama_config(
    vocab: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, context: int, **rest
) -> dict:
    """A transformers LlamaConfig's fields: sizes, then anything else (rope, norm eps, tied embeddings)."""
    sizes = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers)
    return sizes | dict(num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=context) | rest


# Known shapes (rope scaling left out: it changes no cost), as llama_config(vocab, hidden, intermediate, layers,
# heads, kv_heads, context, ...).
LLAMA_8B = llama_config(
    128256, 4096, 14336, 32, 32, 8, 131072, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False
)  # meta-llama/Llama-3.1-8B's config.json
SMOLLM2_135M = llama_config(
    49152, 576, 1536, 30, 9, 3, 8192, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True
)  # HuggingFaceTB/SmolLM2-135M-Instruct's: the demo's model
TINY = llama_config(49152, 64, 128, 2, 4, 2, 1024, tie_word_embeddings=True)  # SmolLM2's tokenizer, a tiny body
SHAPES = {
    "llama-8b": Shape("llama-8b", LLAMA_8B, k=20, compiled_k=20, pool=260),
    "smollm2": Shape("smollm2", SMOLLM2_135M, k=20, compiled_k=3, pool=260),
    "tiny": Shape("tiny", TINY, k=3, compiled_k=2, pool=8),
}


def random_base(shape: Shape, placement: Placement, seed: int = 0) -> nn.Module:
    """A Llama-architecture causal LM of `shape` with random weights, created on `placement.device`
    in `placement.dtype` (no CPU copy, no download), eval mode, gradients off."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    if placement.dtype not in FLOAT_DTYPES:
        raise ValueError(f"random weights need a float dtype (fp32, bf16, fp16), got {placement.dtype!r}")
    config = LlamaConfig(**shape.config, pad_token_id=2, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    with torch.device(placement.device):
        model = AutoModelForCausalLM.from_config(config, dtype=FLOAT_DTYPES[placement.dtype])
    return model.eval().requires_grad_(False)


def smollm2_tokenizer(directory: str | Path | None = None):
    """SmolLM2-135M-Instruct's tokenizer, left padding: from `directory` (its tokenizer files, e.g.
    carried to a machine without the embedded model) or from the embedded model's local cache."""
    from transformers import AutoTokenizer

    from ..loading import resolve_model_dir
    from ..registry import BaseModelSpec

    try:
        tok = AutoTokenizer.from_pretrained(str(directory) if directory else resolve_model_dir(BaseModelSpec()))
    except OSError as e:
        raise SystemExit(
            f"SmolLM2's tokenizer is not available here ({e}); pass --tokenizer DIR, a folder with its tokenizer "
            "files (tokenizer.json, tokenizer_config.json, chat_template.jinja)"
        ) from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
