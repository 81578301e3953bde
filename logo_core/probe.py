"""The one probe pass (docs/method.md §1): run the clean base model up to the probe block(s) and stop.

The pass runs on a private view of the model (`views.private_view`) whose probed blocks and
modules are wrapped by capture taps; the shared model is never touched, so concurrent probes and
generations cannot interfere, and the probe always sees the clean base model. The pass stops as
soon as every wanted vector is captured: blocks after the last probe block never run.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import torch
from torch import Tensor, nn

from .anatomy import decoder_layers, layers_path, module_paths
from .views import private_view

PROBE_INPUTS = ("residual", "module")  # the hidden state entering a block, or a module's own input
RESIDUAL = "<residual>"  # capture key of a block's input (before its norm), beside module names
MEAN = "@mean"  # suffix of a capture key pooled over the user's tokens instead of the last token
TOKENS = "@tokens"  # suffix of a capture key kept per token (every position, [B, T, D]) for the token evidence
POOLINGS = ("last", "mean")  # the last prompt token, or the mean over the user's tokens
SUFFIXES = {"last": "", "mean": MEAN, "tokens": TOKENS}  # pooling (or every token) -> capture key suffix
Key = tuple[int, str]  # (block, module name or RESIDUAL, + MEAN when mean-pooled)


class StopProbe(Exception):
    """Raised inside the forward pass once the probe has what it needs."""


class _Capture:
    """The vectors one pass must record (last token, or mean over the user's tokens); complete -> stop
    the pass (early exit)."""

    def __init__(self, wants: set[Key], user: Tensor | None = None) -> None:
        self.wants, self.found = wants, {}
        # [B, T] averaging weights over the user's tokens, made once per pass (not once per captured vector)
        self.user = None if user is None else user.float() / user.float().sum(-1, keepdim=True).clamp_min(1)

    def record(self, key: Key, x: Tensor) -> None:
        # [B, T, D] -> [B, D] of the last (left-padded: real) token; a copy, so no cached vector
        # keeps the whole sequence's activations alive.
        if key in self.wants:
            self.found[key] = x[:, -1].to(torch.float32, copy=True)
        mean_key = (key[0], key[1] + MEAN)
        if mean_key in self.wants:
            self.found[mean_key] = torch.einsum("bt,btd->bd", self.user.to(x.device), x.float())
        tokens_key = (key[0], key[1] + TOKENS)
        if tokens_key in self.wants:
            self.found[tokens_key] = x.to(torch.float32, copy=True)
        if self.found.keys() >= self.wants:
            raise StopProbe


class _BlockTap(nn.Module):
    """Records the hidden state entering a block (the residual stream before its norm)."""

    def __init__(self, block: nn.Module, key: Key, capture: _Capture) -> None:
        super().__init__()
        self.block, self.key, self.capture = block, key, capture

    def forward(self, *args, **kwargs):
        self.capture.record(self.key, args[0] if args else kwargs["hidden_states"])
        return self.block(*args, **kwargs)


class _InputTap(nn.Module):
    """Records a module's own input (after the block's norm)."""

    def __init__(self, module: nn.Module, key: Key, capture: _Capture) -> None:
        super().__init__()
        self.module, self.key, self.capture = module, key, capture

    def forward(self, x: Tensor, *args, **kwargs):
        self.capture.record(self.key, x)
        return self.module(x, *args, **kwargs)


def wants_for(blocks, modules, probe_input: str, poolings=("last",)) -> set[Key]:
    """Capture keys for probing `blocks` x `modules` x `poolings` with the given probe input."""
    return {vector_key(b, m, probe_input, p) for b in blocks for m in modules for p in poolings}


def vector_key(block: int, module: str, probe_input: str, pooling: str = "last") -> Key:
    """The capture key of the vector a site listens to: the block's residual input or the module's own,
    at the last token, averaged over the user's tokens, or at every token ([B, T, D])."""
    name = RESIDUAL if probe_input == "residual" else module
    return (block, name + SUFFIXES[pooling])


def neutral_wants(n_layers: int, modules) -> set[Key]:
    """Every block's residual and module inputs, both poolings: what calibration captures once for all settings."""
    return {(b, m + s) for b in range(n_layers) for m in (RESIDUAL, *modules) for s in ("", MEAN)}


@torch.inference_mode()
def run_probe(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, wants: set[Key], user: Tensor | None = None
) -> dict[Key, Tensor]:
    """One forward pass of the clean base model that returns the requested vectors.

    Args:
        model: the shared causal LM (never modified).
        input_ids, attention_mask: [B, T], left-padded, so the last prompt token is at position -1.
        wants: capture keys, (block, RESIDUAL) or (block, module name), `+ MEAN` for mean pooling, `+ TOKENS` for
            every token.
        user: [B, T] the user's tokens (`Encoded.user`), needed by mean-pooled keys; every real token if None.

    Returns:
        {key: [B, D] fp32 vector ([B, T, D] for `TOKENS` keys)}, each owning its storage.
    """
    capture = _Capture(set(wants), attention_mask.bool() if user is None else user)
    layers, paths = layers_path(model), module_paths(model)
    taps = {}
    for block, key in {(b, k.removesuffix(MEAN).removesuffix(TOKENS)) for b, k in wants}:  # one tap per place
        if key == RESIDUAL:
            taps[f"{layers}.{block}"] = lambda m, k=(block, key): _BlockTap(m, k, capture)
        else:
            taps[f"{layers}.{block}.{paths[key]}"] = lambda m, k=(block, key): _InputTap(m, k, capture)
    view = private_view(model, taps)
    # Left padding shifts rows; explicit positions keep each row identical to its unpadded run.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    inner = getattr(view, getattr(view, "base_model_prefix", "model"), view)
    try:
        inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    except StopProbe:
        pass
    missing = capture.wants - capture.found.keys()
    assert not missing, f"probe did not capture {missing} (of {len(decoder_layers(model))} blocks)"
    return capture.found


def probe(model: nn.Module, enc, wants: set[Key], cache: ProbeCache | None, modules) -> dict[Key, Tensor]:
    """`run_probe` on an encoded batch, through the cache for single prompts (a prompt's vectors never
    depend on what it was batched with). A miss captures every block up to the deepest one wanted,
    so any later setting on the same prompt hits."""
    if cache is None or enc.input_ids.shape[0] != 1:
        return run_probe(model, enc.input_ids, enc.attention_mask, wants, enc.user)
    key = tuple(enc.input_ids[0].tolist())
    hit = cache.get(key, wants)
    if hit is None:
        every = neutral_wants(max(b for b, _ in wants) + 1, modules)
        hit = run_probe(model, enc.input_ids, enc.attention_mask, wants | every, enc.user)
        cache.put(key, hit)
    return hit


class ProbeCache:
    """Probe vectors of recent prompts, bounded in bytes, so re-routing the same prompt with other
    settings (an app control) costs no forward pass. Thread-safe.

    Args:
        max_bytes: the budget; the least recently used prompts are dropped beyond it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.nbytes = max_bytes, 0
        self._entries: OrderedDict[Hashable, dict[Key, Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, wants: set[Key]) -> dict[Key, Tensor] | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or not wants <= hit.keys():
                return None
            self._entries.move_to_end(key)
            return hit

    def put(self, key: Hashable, vectors: dict[Key, Tensor]) -> None:
        size = sum(v.nbytes for v in vectors.values())
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self.nbytes -= sum(v.nbytes for v in old.values()) if old else 0
            self._entries[key] = vectors
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.nbytes -= sum(v.nbytes for v in dropped.values())

    def __len__(self) -> int:
        return len(self._entries)
