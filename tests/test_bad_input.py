"""Bad input raises a clear, typed error or skips the adapter with a named warning."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import make_adapter, tiny_engine, tiny_model
from safetensors.torch import load_file, save_file

from logo_core.errors import AdapterLoadError, ConfigError, RequestError
from logo_core.loading import load_adapter
from logo_core.pool import load_pool
from logo_core.registry import load_config, parse_config


@pytest.fixture(scope="module")
def world(tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    model = tiny_model("llama", len(tokenizer))
    good = {n: make_adapter(model, root / n, seed=i) for i, n in enumerate(["good0", "good1"])}
    engine = tiny_engine(copy.deepcopy(model), tokenizer, root, good, k=1)
    return model, root, engine  # `model` stays unwrapped, for PEFT to build more adapters on


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "`prompt` is empty"),
        ({"prompt": "   \n\t"}, "`prompt` is empty"),
        ({"k": 0}, "`k` must be between 1 and 2 (the pool size), got 0"),
        ({"k": 3}, "`k` must be between 1 and 2"),
        ({"k": True}, "`k` must be between"),
        ({"k": "2"}, "`k` must be between"),
        ({"signal": "loudness"}, "`signal` must be one of ['entropy', 'norm'], got 'loudness'"),
        ({"layer": 4}, "`layer` must be between -4 and 3 (the model has 4 blocks), got 4"),
        ({"layer": -5}, "`layer` must be between -4 and 3"),
        ({"layer": "2:2"}, "selects no block"),
        ({"layer": "top"}, "`layer` must be an int, 'a:b' or a list of ints"),
        ({"module": "gate_proj"}, "`module` 'gate_proj' is not adapted by any adapter"),
        ({"probe_input": "output"}, "`probe_input` must be one of"),
    ],
)
def test_bad_requests_raise_request_error(world, kwargs, message):
    engine = world[2]
    prompt = kwargs.pop("prompt", "What is 2 + 2?")
    with pytest.raises(RequestError) as info:
        engine.route(prompt, **kwargs)
    assert message in str(info.value)
    with pytest.raises(RequestError):
        engine.generate(prompt, max_new_tokens=2, **kwargs)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_max_new_tokens(world, bad):
    with pytest.raises(RequestError, match="max_new_tokens"):
        world[2].generate("hi", max_new_tokens=bad)


def test_unknown_explicit_adapter(world):
    with pytest.raises(RequestError, match="unknown adapter 'nope'"):
        world[2].generate("hi", max_new_tokens=2, adapters={"nope": 1.0})


def test_huge_max_new_tokens_is_capped_with_notice(world):
    from logo_core import engine as engine_module

    g = world[2].generate("hi", max_new_tokens=engine_module.MAX_NEW_TOKENS_CAP + 1, min_new_tokens=1, adapters={})
    assert any("capped" in n for n in g.notices)


def test_engine_survives_errors(world):
    engine = world[2]
    with pytest.raises(RequestError):
        engine.route("")
    assert engine.route("still serving?").selected


# ---------------------------------------------------------------- adapters.yaml


def _write(tmp_path, text: str):
    path = tmp_path / "adapters.yaml"
    path.write_text(text)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the adapter pool file"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_yaml_names_the_file(tmp_path):
    path = _write(tmp_path, "adapters: [\n  - name: x\n   path: {")
    with pytest.raises(ConfigError, match="adapters.yaml: not valid YAML"):
        load_config(path)


def test_yaml_tags_are_not_executed(tmp_path):
    path = _write(tmp_path, "adapters: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("adapters:\n  - name: math\n    path: a\n    examples: 3\n", "adapter 'math' (entry 0) field 'examples'"),
        ("adapters:\n  - name: math\n", "adapter 'math' (entry 0) field '(entry)': Value error, give exactly one of"),
        ("adapters:\n  - path: a\n", "adapter entry 0 field 'name'"),
        ("defaults:\n  k: 0\n", "field 'defaults.k'"),
        ("defaults:\n  signal: loud\n", "field 'defaults.signal'"),
        ("base_model:\n  dtype: fp8\n", "field 'base_model.dtype'"),
        ("adaptors: []\n", "field 'adaptors': Extra inputs are not permitted"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("adapters:\n  - {name: a, path: x}\n  - {name: a, path: y}\n", "adapter name 'a' appears twice"),
    ],
)
def test_validation_errors_name_file_adapter_and_field(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert str(tmp_path / "adapters.yaml") in str(info.value)
    assert expected in str(info.value)


def test_shipped_config_is_valid():
    from conftest import ROOT

    cfg = load_config(ROOT / "adapters.yaml")
    for spec in cfg.adapters:
        assert (cfg.adapter_dir(spec) / "adapter_model.safetensors").is_file(), spec.name


# ---------------------------------------------------------------- broken adapters


def _broken(model, root, kind: str):
    path = make_adapter(model, root / kind, seed=7)
    weights = path / "adapter_model.safetensors"
    if kind == "missing_dir":
        return root / "does-not-exist", "directory does not exist"
    if kind == "pickle_bin":
        torch.save(load_file(weights), path / "adapter_model.bin")
        weights.unlink()
        return path, "only a pickle `adapter_model.bin`"
    if kind == "nan":
        t = load_file(weights)
        key = next(k for k in t if "lora_B" in k)
        t[key][0, 0] = float("nan")
        save_file(t, weights)
        return path, "NaN or inf"
    if kind == "shape":
        t = load_file(weights)
        key = next(k for k in t if "lora_A" in k)
        t[key] = torch.zeros(t[key].shape[0], 32)
        save_file(t, weights)
        return path, "do not fit the base layer"
    if kind == "unknown_module":
        t = load_file(weights)
        t = {k.replace("q_proj", "qkv_proj"): v for k, v in t.items()}
        save_file(t, weights)
        return path, "targets a module the base model does not have"
    if kind == "no_config":
        (path / "adapter_config.json").unlink()
        return path, "adapter_config.json is missing"
    if kind == "bad_config":
        (path / "adapter_config.json").write_text("{not json")
        return path, "not a valid LoRA config"
    if kind == "corrupt":
        weights.write_bytes(b"garbage" * 10)
        return path, "unreadable"
    if kind == "dora":
        cfg = json.loads((path / "adapter_config.json").read_text())
        cfg["use_dora"] = True
        (path / "adapter_config.json").write_text(json.dumps(cfg))
        return path, "DoRA"
    raise AssertionError(kind)


KINDS = ["missing_dir", "pickle_bin", "nan", "shape", "unknown_module", "no_config", "bad_config", "corrupt", "dora"]


@pytest.mark.parametrize("kind", KINDS)
def test_broken_adapter_raises_named_error(world, tmp_path, kind):
    model = world[0]
    path, message = _broken(model, tmp_path, kind)
    with pytest.raises(AdapterLoadError) as info:
        load_adapter(kind, path, model)
    assert f"adapter {kind!r}" in str(info.value)
    assert message in str(info.value)


def test_broken_adapters_are_skipped_and_the_rest_loads(world, tmp_path):
    model, root, _ = world
    entries = [{"name": "good0", "path": str(root / "good0")}]
    for kind in KINDS:
        path, _ = _broken(model, tmp_path, kind)
        entries.append({"name": kind, "path": str(path)})
    entries.append({"name": "good1", "path": str(root / "good1")})
    cfg = parse_config({"adapters": entries}, file=str(tmp_path / "adapters.yaml"))
    with pytest.warns(UserWarning) as record:
        pool, report = load_pool(cfg, model)
    assert pool.names == ["good0", "good1"]
    assert set(report.skipped) == set(KINDS)
    assert len(record) == len(KINDS)
    assert all(any(f"'{k}'" in m for m in report.messages) for k in KINDS)


def test_empty_pool_routes_with_clear_error(world, tokenizer, tmp_path):
    model = tiny_model("qwen2", len(tokenizer))
    engine = tiny_engine(model, tokenizer, tmp_path, {})
    with pytest.raises(RequestError, match="the adapter pool is empty"):
        engine.route("hello")
    assert engine.generate("hello", max_new_tokens=2, adapters={}).timings["new_tokens"] >= 1
