"""The contenders of the end-to-end comparison, each `request(prompt, n) -> Sample` (n new tokens):

- `Base`: the base model alone, transformers' `generate`.
- `Engine`: ours, through the public API: `engine.plan` (encode, probe, top-k, mixture), then
  `engine.decoder.run` (a private view with the mixture folded or as low-rank pairs) and `.finish`.
- `Reference`: the authors' approach written with PEFT's public API (reference-style, not their
  code): every adapter loaded into one PEFT model, a full forward pass with the previous request's
  adapters still active, each adapter's q_proj output in a Python loop, `set_adapter(selected)` and
  each LoRA layer's scaling multiplied by its weight: k LoRA pairs per module per token.
- `PeftMerge`: PEFT's own merge per request: the same probe on the clean base, then
  `add_weighted_adapter(selected, weights, combination_type="cat")`, generate, delete.

All of them see the same ids (`engine.encode`) and the same generation settings
(`generation.generation_config`: greedy, exactly n tokens, EOS suppressed until then).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import torch
from torch import nn

from ..anatomy import decoder_layers, module_paths
from ..engine import LoGoEngine
from ..generation import generation_config, run_generate
from ..options import GenerateOptions
from .common import Sample, timed


def fixed_length(tok, n: int):
    """transformers' GenerationConfig of an n-token greedy answer (the engine's own settings)."""
    return generation_config(GenerateOptions(max_new_tokens=n, min_new_tokens=n), tok)


class Base:
    """The floor: the base model generating the same number of tokens, its text decoded."""

    def __init__(self, model: nn.Module, engine: LoGoEngine, name: str = "base") -> None:
        self.name, self.k, self.model, self.engine = name, 0, model, engine

    def request(self, prompt: str, n: int) -> Sample:
        e = self.engine
        tok = e.tokenizer

        def prepare():
            enc = e.encode([prompt], n, e.placement.device)

            def run(clock):
                out = run_generate(self.model, enc.inputs(), fixed_length(tok, n), streamer=clock)
                return tok.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)

            return run

        return timed(n, prepare, e.placement.device)


class Engine:
    """Ours: one early-exit probe, top-k, the mixture folded into private weights or as one low-rank
    pair per module (`engine.decoder.fold`). k = 0 is the engine with no mixture (an explicit `{}`)."""

    def __init__(self, engine: LoGoEngine, k: int, name: str | None = None) -> None:
        self.name = name or (f"engine k={k}" if k else "engine, no adapters")
        self.k, self.engine = k, engine

    def request(self, prompt: str, n: int) -> Sample:
        e = self.engine

        def prepare():
            route = {"k": self.k} if self.k else {}
            plan = e.plan([prompt], [{}] if self.k == 0 else None, max_new_tokens=n, min_new_tokens=n, **route)

            def run(clock):
                return e.decoder.finish(e.decoder.run(plan, streamer=clock)[0])

            return run

        return timed(n, prepare, e.placement.device)


# --------------------------------------------------------------------------- reference-style


def shared_copy(model: nn.Module) -> nn.Module:
    """A new module tree over the same parameter and buffer tensors: no weight is copied, and
    nothing done to the copy's modules (PEFT's injection, transformers' output hooks) reaches `model`."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def load_peft(model: nn.Module, adapters: dict[str, Path]):
    """Every adapter of the pool in one PEFT model, all active (as the authors start).

    PEFT injects its LoRA layers into the model it is given, so it is given a `shared_copy`: the
    shared model (and every engine over it) stays clean, and the weights are not duplicated.
    """
    from peft import PeftModel

    names = list(adapters)
    peft_model = PeftModel.from_pretrained(shared_copy(model), str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(str(adapters[name]), adapter_name=name)
    peft_model.eval()
    peft_model.base_model.set_adapter(names, inference_mode=True)
    return peft_model


def reference_probe(peft_model, inputs: dict, k: int, block: int = -1, module: str = "q_proj"):
    """The authors' routing: a full forward pass with `output_hidden_states=True` through the PEFT
    model as it stands, then every adapter's output at the probe module, in a Python loop, on the
    hidden state entering the probe block; raw norm of the last token's, top-k, w = sigma / sum.

    Returns:
        (selected names, best first; their weights).
    """
    from peft.tuners.lora import LoraLayer

    out = peft_model(**inputs, output_hidden_states=True, return_dict=True)
    L = len(out.hidden_states) - 1  # embeddings, then one entry per block
    h = out.hidden_states[block % L]  # [1, T, D]: the residual stream entering the probe block
    inner = peft_model.base_model.model
    layer = decoder_layers(inner)[block % L].get_submodule(module_paths(inner)[module])
    assert isinstance(layer, LoraLayer)
    names = list(layer.lora_A.keys())
    proj = torch.stack(
        [layer.lora_B[n](layer.lora_A[n](h.to(layer.lora_A[n].weight.dtype))) * layer.scaling[n] for n in names],
        dim=1,
    )  # [1, N, T, D_out]: every token, as the reference computes it; the last one is kept
    sigma = torch.linalg.vector_norm(proj[:, :, -1].float(), dim=-1)[0]  # [N]
    top, idx = torch.topk(sigma, k)
    return [names[i] for i in idx.tolist()], (top / top.sum()).tolist()


class Reference:
    """Reference-style LoGo (see the module docstring); the request's scaling is restored after."""

    def __init__(self, peft_model, engine: LoGoEngine, k: int) -> None:
        self.name, self.k, self.peft, self.engine = f"reference k={k}", k, peft_model, engine

    def request(self, prompt: str, n: int) -> Sample:
        from peft.tuners.lora import LoraLayer

        e, restore = self.engine, {}

        def prepare():
            enc = e.encode([prompt], n, e.placement.device)
            with torch.inference_mode():
                selected, weights = reference_probe(self.peft, enc.inputs(), self.k)
            self.peft.base_model.set_adapter(selected, inference_mode=True)
            mult = dict(zip(selected, weights, strict=True))
            for mod in self.peft.modules():
                if isinstance(mod, LoraLayer):
                    restore[mod] = dict(mod.scaling)
                    mod.scaling = {a: s * mult.get(a, 1.0) for a, s in mod.scaling.items()}

            def run(clock):
                out = run_generate(self.peft, enc.inputs(), fixed_length(e.tokenizer, n), streamer=clock)
                text = e.tokenizer.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)
                undo()  # the reference's context manager restores the scaling inside the request
                return text

            return run

        def undo() -> None:
            for mod, scaling in restore.items():
                mod.scaling = scaling
            restore.clear()

        try:
            return timed(n, prepare, e.placement.device)
        finally:
            undo()  # after a failure too


class PeftMerge:
    """PEFT merge per request: the reference probe on the clean base (adapters disabled), then
    `add_weighted_adapter(selected, weights, "mix", combination_type="cat")`, generate, delete."""

    def __init__(self, peft_model, engine: LoGoEngine, k: int) -> None:
        self.name, self.k, self.peft, self.engine = f"peft merge k={k}", k, peft_model, engine

    def request(self, prompt: str, n: int) -> Sample:
        e = self.engine

        def prepare():
            enc = e.encode([prompt], n, e.placement.device)
            with torch.inference_mode(), self.peft.disable_adapter():
                selected, weights = reference_probe(self.peft, enc.inputs(), self.k)
            self.peft.base_model.add_weighted_adapter(selected, weights, "mix", combination_type="cat")
            self.peft.base_model.set_adapter("mix", inference_mode=True)

            def run(clock):
                out = run_generate(self.peft, enc.inputs(), fixed_length(e.tokenizer, n), streamer=clock)
                text = e.tokenizer.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)
                undo()
                return text

            return run

        def undo() -> None:
            if "mix" in self.peft.peft_config:
                self.peft.base_model.delete_adapter("mix")

        try:
            return timed(n, prepare, e.placement.device)
        finally:
            undo()
