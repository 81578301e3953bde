"""The one probe pass: run the clean base model up to the probe block(s) and stop.

Hooks are installed once per model and stay inert unless the calling context asks for a
capture (a `ContextVar`), so concurrent probes and generations never interfere.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .loading import decoder_layers

RESIDUAL = "<residual>"  # capture key for a block's input hidden state (before its norm)


@dataclass
class Capture:
    """What one probe pass should record: keys (block, module or RESIDUAL) -> [B, D] vectors."""

    wants: set[tuple[int, str]]
    found: dict[tuple[int, str], Tensor] = field(default_factory=dict)

    def record(self, key: tuple[int, str], vector: Tensor) -> None:
        """Store a vector; once everything wanted is in, stop the pass (early exit)."""
        self.found[key] = vector
        if len(self.found) == len(self.wants):
            raise StopProbe


CAPTURE: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("logo_capture", default=None)


class StopProbe(Exception):
    """Raised inside the forward pass once the probe has what it needs."""


def _pre_hook(block: int):
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        cap = CAPTURE.get()
        if cap is not None and (block, RESIDUAL) in cap.wants:
            hidden = args[0] if args else kwargs["hidden_states"]
            cap.record((block, RESIDUAL), hidden[:, -1].float())  # [B, D], last prompt token

    return hook


def install_probe_hooks(model: nn.Module) -> None:
    """Add the (inert) capture hooks to every block; idempotent."""
    if getattr(model, "_logo_probe_hooks", False):
        return
    for i, layer in enumerate(decoder_layers(model)):
        layer.register_forward_pre_hook(_pre_hook(i), with_kwargs=True)
    model._logo_probe_hooks = True


@torch.inference_mode()
def run_probe(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, wants: set[tuple[int, str]]
) -> dict[tuple[int, str], Tensor]:
    """One forward pass of the base model that returns the requested last-token vectors.

    Prompts must be left-padded so that the last prompt token is at position -1 of every row.
    Module inputs are recorded by the engine's `MixtureLinear` wrappers, residuals by the hooks.
    """
    from .mixing import use_mixture

    cap = Capture(wants=set(wants))
    # Left padding shifts rows; explicit positions keep each row identical to its unpadded run.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    inner = getattr(model, "model", model)
    token = CAPTURE.set(cap)
    try:
        with use_mixture(None):  # the probe always sees the clean base model
            inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    except StopProbe:
        pass
    finally:
        CAPTURE.reset(token)
    missing = cap.wants - cap.found.keys()
    assert not missing, f"probe did not capture {missing}"
    return cap.found
