"""Private views of a shared model: the same parameters, a few modules swapped, nothing mutated.

A request that needs a different model (the probe with its capture taps, a generation with its
adapter mixture) gets a view: a shallow copy of the module tree along the paths it changes, every
other module and every parameter shared with the base model. Building one costs microseconds per
copied module; the shared model is never touched, so concurrent requests cannot see each other
and a view has no per-call overhead that the base model does not have.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import types
from collections.abc import Callable, Mapping

import torch
from torch import nn

Replace = Callable[[nn.Module], nn.Module]  # the module now at a path -> its replacement


def _shallow_copy(module: nn.Module) -> nn.Module:
    """A new module object sharing parameters, buffers and children with `module`, with a child
    table of its own (so replacing a child does not touch the original)."""
    new = copy.copy(module)
    new.__dict__["_modules"] = dict(module._modules)
    if module.__dict__.get("_hf_hook") is not None:
        # accelerate's dispatch hook rewrote `forward` as a closure over the original module: rebind it.
        new.__dict__["_old_forward"] = types.MethodType(type(module).forward, new)
        new.__dict__["forward"] = functools.partial(_hooked_forward, new)
    return new


def _hooked_forward(module: nn.Module, *args, **kwargs):
    """`accelerate.hooks.add_hook_to_module`'s forward, for a copy of a hooked module."""
    hook = module._hf_hook
    args, kwargs = hook.pre_forward(module, *args, **kwargs)
    with torch.no_grad() if hook.no_grad else contextlib.nullcontext():
        out = module._old_forward(*args, **kwargs)
    return hook.post_forward(module, out)


def private_view(model: nn.Module, replace: Mapping[str, Replace]) -> nn.Module:
    """A view of `model` in which the module at each dotted path is replaced by `replace[path](module)`.

    Deeper paths are replaced first, so a block and a linear layer inside it can both be replaced
    (the block's function then receives the block that already holds the new linear layer).

    Example:
        >>> view = private_view(model, {"model.layers.3.self_attn.q_proj": lambda q: MyLinear(q)})
        >>> view(**inputs)          # model itself is unchanged
    """
    root = _shallow_copy(model)
    copies: dict[str, nn.Module] = {"": root}
    for path in sorted(replace, key=lambda p: -p.count(".")):
        parent, prefix = root, ""
        *ancestors, leaf = path.split(".")
        for name in ancestors:
            prefix = f"{prefix}.{name}" if prefix else name
            if prefix not in copies:
                copies[prefix] = _shallow_copy(parent._modules[name])
                parent._modules[name] = copies[prefix]
            parent = copies[prefix]
        parent._modules[leaf] = replace[path](parent._modules[leaf])
        copies[path] = parent._modules[leaf]
    return root
