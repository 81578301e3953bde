"""Where things are in a transformers causal LM: the block list, a block's linear layers, their shapes.

Llama, Qwen2, Gemma, Phi-3, Mistral and DeepSeek all keep their blocks in `model.layers` and name
each projection inside a block (`self_attn.q_proj`, Phi-3's fused `self_attn.qkv_proj`, ...).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from torch import Tensor, nn

from .errors import ConfigError


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks (Llama, Qwen2, Gemma, Phi-3, DeepSeek, Mistral: `model.layers`)."""
    inner = getattr(model, getattr(model, "base_model_prefix", "model"), None) or model
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"base model {type(model).__name__} has no `model.layers`; unsupported architecture")
    return layers


_PATHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layers_path(model: nn.Module) -> str:
    """Dotted path of the block list inside `model` (`model.layers`), for `views.private_view`."""
    if model not in _PATHS:
        layers = decoder_layers(model)
        _PATHS[model] = next(name for name, mod in model.named_modules() if mod is layers)
    return _PATHS[model]


def module_paths(model: nn.Module) -> dict[str, str]:
    """Short module name (`q_proj`) -> path inside a block (`self_attn.q_proj`), for linear layers.

    Names that occur twice in a block (mixture-of-experts copies) are left out: a short name must
    say which layer it is.
    """
    out: dict[str, str] = {}
    seen: set[str] = set()
    for path, mod in decoder_layers(model)[0].named_modules():
        if path and (isinstance(mod, nn.Linear) or "Linear" in type(mod).__name__):
            short = path.rsplit(".", 1)[-1]
            if short in seen:
                out.pop(short, None)
            else:
                out[short] = path
            seen.add(short)
    return out


def residual_modules(model: nn.Module, modules: Sequence[str]) -> tuple[str, ...]:
    """Those of `modules` whose input is as wide as the residual stream (q/k/v, gate/up): the hidden state entering
    the block (`probe_input` residual) can stand in for their input. down_proj and o_proj read the block's inner
    activations, so only their own input (`probe_input` module) can probe them."""
    width = model.get_input_embeddings().embedding_dim
    block, paths = decoder_layers(model)[0], module_paths(model)
    return tuple(m for m in modules if m in paths and linear_shape(block.get_submodule(paths[m]))[0] == width)


def weight_of(module: nn.Module) -> Tensor:
    """A linear layer's weight: an attribute, or a method on dynamically quantised layers."""
    return module.weight() if callable(getattr(module, "weight", None)) else module.weight


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(D_in, D_out) of a float, dynamically quantised or bitsandbytes linear layer."""
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features
    weight = weight_of(module)
    return weight.shape[1], weight.shape[0]
