"""Tiny random models, a tiny tokenizer and random adapters for the math tests (built in memory, no download)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from logo_core.engine import LoGoEngine
from logo_core.pool import load_pool
from logo_core.registry import parse_config

ARCHS = ("llama", "qwen2")  # the two the engine math is checked on everywhere; gemma and phi3 in test_arch.py
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "What is 47 + 38? Translate the cat to French. Is this review positive? I loved it.",
    "Hello there, how are you today? The quick brown fox jumps over the lazy dog.",
    "Tell me something. Can you help me? Please answer. Good morning. I have a question.",
]


def tiny_tokenizer():
    """A byte-level BPE tokenizer of ~330 tokens with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS * 5, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_model(arch: str, vocab_size: int, n_layers: int = 4, seed: int = 0) -> nn.Module:
    """A random causal LM of one of the supported families, small enough to run in milliseconds."""
    from transformers import AutoModelForCausalLM, GemmaConfig, LlamaConfig, Phi3Config, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    configs = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma": GemmaConfig, "phi3": Phi3Config}
    extra = {"head_dim": 16} if arch == "gemma" else {}
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(configs[arch](**common, **extra)).eval()


def make_adapter(
    model: nn.Module,
    directory: Path,
    seed: int,
    r: int = 4,
    alpha: int = 8,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    std: float = 0.2,
    **lora,
) -> Path:
    """Save a PEFT LoRA adapter with random (non-zero) A and B."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), **lora)
    peft_model = get_peft_model(copy.deepcopy(model), config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    peft_model.save_pretrained(directory, safe_serialization=True)
    return directory


def tiny_engine(model: nn.Module, tokenizer, root: Path, adapters: dict[str, Path], **defaults) -> LoGoEngine:
    """An engine over `model` and these adapter folders; `defaults` override adapters.yaml's `defaults`."""
    engine = defaults.pop("engine", {})
    cfg = parse_config(
        {
            "adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()],
            "defaults": defaults,
            "engine": engine,
        },
        file=str(root / "adapters.yaml"),
        root=root,
    )
    pool, report = load_pool(cfg, model)
    return LoGoEngine(model, tokenizer, pool, cfg, load_report=report)


def three_adapters(model: nn.Module, root: Path) -> dict[str, Path]:
    """A small mixed pool: rank 4 on q/v, rank 2 on q/v/o, rank 6 (alpha 6) on v only."""
    return {
        "arithmetic": make_adapter(model, root / "arithmetic", seed=0),
        "translate": make_adapter(model, root / "translate", seed=1, r=2, targets=("q_proj", "v_proj", "o_proj")),
        "other": make_adapter(model, root / "other", seed=2, r=6, alpha=6, targets=("v_proj",)),
    }


def concurrently(fn: Callable[[int], object], n: int) -> list:
    """[fn(0), ..., fn(n-1)], each in a thread of its own, all released at once (a barrier)."""
    out: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out
