"""Tiny random models and adapters for the math tests (built from configs, no download)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from logo_core.engine import LoGoEngine
from logo_core.pool import load_pool
from logo_core.registry import parse_config

ARCHS = ("llama", "qwen2")


def tiny_model(arch: str, vocab_size: int, n_layers: int = 4, seed: int = 0) -> nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=2,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def make_adapter(
    model: nn.Module,
    directory: Path,
    seed: int,
    r: int = 4,
    alpha: int = 8,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    std: float = 0.2,
) -> Path:
    """Save a PEFT LoRA adapter with random (non-zero) A and B."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets)))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    peft_model.save_pretrained(directory, safe_serialization=True)
    return directory


def tiny_engine(model: nn.Module, tokenizer, root: Path, adapters: dict[str, Path], **defaults) -> LoGoEngine:
    cfg = parse_config(
        {"adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()], "defaults": defaults},
        file=str(root / "adapters.yaml"),
        root=root,
    )
    pool, report = load_pool(cfg, model)
    return LoGoEngine(model, tokenizer, pool, cfg.defaults, cfg.neutral_prompts, report)
