"""Bases users bring: Qwen2, Gemma and Phi-3 (fused qkv_proj / gate_up_proj) configurations, a model
dispatched by accelerate (hooks on its blocks, as `device_map` leaves them), and the device/dtype rules."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_adapter, tiny_engine, tiny_model

from logo_core.errors import AdapterLoadError, ConfigError
from logo_core.loading import decide_placement, load_adapter
from logo_core.mixing import attach
from logo_core.registry import BaseModelSpec
from logo_core.results import Routing

PROMPTS = ["What is 47 + 38?", "Translate the cat to French."]
TARGETS = {
    "qwen2": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj", "down_proj"),
    "phi3": ("qkv_proj", "gate_up_proj"),  # Phi-3's fused projections are adapted as the layers they are
}


def _peft_cat(reference, adapters, names, weights):
    from peft import PeftModel

    model = PeftModel.from_pretrained(copy.deepcopy(reference), str(adapters[names[0]]), adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(str(adapters[n]), adapter_name=n)
    model.add_weighted_adapter(names, weights, "mix", combination_type="cat")
    model.set_adapter("mix")
    return model.eval()


@pytest.mark.parametrize("arch", list(TARGETS))
def test_architecture_routes_and_mixes_like_peft(arch, tiny_tok, tmp_path):
    model = tiny_model(arch, len(tiny_tok))
    reference = copy.deepcopy(model)
    adapters = {f"a{i}": make_adapter(model, tmp_path / f"a{i}", seed=i, targets=TARGETS[arch]) for i in range(3)}
    engine = tiny_engine(model, tiny_tok, tmp_path, adapters, k=2, module=TARGETS[arch][0])
    assert set(engine.pool.modules) == set(TARGETS[arch])
    r = engine.route(PROMPTS[0])
    assert len(r.selected) == 2 and list(r.scores) == ["a0", "a1", "a2"]
    assert engine.route(PROMPTS[0], module=TARGETS[arch][-1], probe_input="module").scores != r.scores

    names, weights = ["a2", "a0"], [0.6, 0.4]
    view = attach(engine.model, engine.decoder.mixture_for([Routing("", {}, names, dict(zip(names, weights)), {})]))
    enc = engine.encode(PROMPTS, 0, engine.placement.device).inputs()
    with torch.no_grad():
        ours, theirs = view(**enc).logits, _peft_cat(reference, adapters, names, weights)(**enc).logits
        base = reference(**enc).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert (ours - base).abs().max() > 1e-3
    assert engine.generate(PROMPTS[1], max_new_tokens=4).timings["new_tokens"] >= 1


def test_adapter_for_another_architecture_is_refused_by_name(tiny_tok, tmp_path):
    llama, phi3 = tiny_model("llama", len(tiny_tok)), tiny_model("phi3", len(tiny_tok))
    path = make_adapter(llama, tmp_path / "llama_q", seed=0, targets=("q_proj",))
    with pytest.raises(AdapterLoadError, match="targets a module the base model does not have.*qkv_proj"):
        load_adapter("llama_q", path, phi3)


def test_accelerate_dispatched_model_gives_the_same_routing_and_mixture(tiny_tok, tmp_path):
    """With a device_map, accelerate rewrites the blocks' forward; private views must keep its hooks
    and still route and mix exactly as on the plain model."""
    from accelerate import dispatch_model

    plain = tiny_model("llama", len(tiny_tok))
    hooked = dispatch_model(copy.deepcopy(plain), device_map={"": "cpu"}, force_hooks=True)
    assert hasattr(hooked.model.layers[0], "_hf_hook")
    adapters = {f"a{i}": make_adapter(plain, tmp_path / f"a{i}", seed=i) for i in range(3)}
    e_plain = tiny_engine(plain, tiny_tok, tmp_path, adapters, k=2)
    e_hooked = tiny_engine(hooked, tiny_tok, tmp_path, adapters, k=2)
    for kw in ({}, {"probe_input": "module", "layer": "1:3"}):
        assert e_hooked.route(PROMPTS[0], **kw).scores == pytest.approx(e_plain.route(PROMPTS[0], **kw).scores)
    mix = {"a0": 0.7, "a2": 0.3}
    assert e_hooked.generate(PROMPTS[1], adapters=mix, max_new_tokens=6).text == (
        e_plain.generate(PROMPTS[1], adapters=mix, max_new_tokens=6).text
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, ("cpu", "fp32", torch.float32)),
        ({"device": "cpu", "dtype": "bf16"}, ("cpu", "bf16", torch.bfloat16)),
        ({"dtype": "int8"}, ("cpu", "int8", torch.float32)),
        ({"dtype": "bf16", "probe_dtype": "fp32"}, ("cpu", "bf16", torch.bfloat16)),
    ],
)
def test_placement_on_a_cpu(spec, expected):
    place = decide_placement(BaseModelSpec(**spec), cuda=False)
    assert (place.device.type, place.dtype, place.compute_dtype) == expected
    assert place.probe_dtype == ("fp32" if spec.get("probe_dtype") == "fp32" else None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"device": "cuda"}, "CUDA is not available here"),
        ({"dtype": "8bit"}, "needs a CUDA device"),
        ({"dtype": "4bit"}, "needs a CUDA device"),
    ],
)
def test_placement_refuses_what_this_machine_cannot_do(spec, message):
    with pytest.raises(ConfigError, match=message):
        decide_placement(BaseModelSpec(**spec), cuda=False)


def test_export_adapter_loads_in_peft_with_the_same_logits(tiny_tok, tmp_path):
    """The exported mixture (rank-concatenated, padded to one rank, scale 1) is one ordinary PEFT adapter."""
    from peft import PeftModel

    model = tiny_model("llama", len(tiny_tok))
    reference = copy.deepcopy(model)
    adapters = {
        "a0": make_adapter(model, tmp_path / "a0", seed=0, r=4, targets=("q_proj", "v_proj")),
        "a1": make_adapter(model, tmp_path / "a1", seed=1, r=2, alpha=6, targets=("v_proj", "o_proj")),
    }
    engine = tiny_engine(model, tiny_tok, tmp_path, adapters)
    weights = {"a0": 0.3, "a1": 0.7}
    out = engine.export_adapter(weights, tmp_path / "export")
    peft_model = PeftModel.from_pretrained(reference, str(out)).eval()
    view = attach(engine.model, engine.decoder.mixture_for([Routing("", {}, list(weights), weights, {})]))
    enc = engine.encode(PROMPTS, 0, engine.placement.device).inputs()
    with torch.no_grad():
        torch.testing.assert_close(view(**enc).logits, peft_model(**enc).logits, rtol=1e-4, atol=1e-4)
