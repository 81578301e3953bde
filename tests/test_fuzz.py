"""Property-based bad input (issue #9): hypothesis throws values of every type at the public API, at
adapters.yaml and at adapter_config.json.

For every generated case: a valid input succeeds; an invalid one raises only the library's own typed
error (RequestError, ConfigError, AdapterLoadError: ValueErrors) whose message names, in backticks,
an argument that was given; and the engine answers a normal request afterwards. Validity is judged
by the small oracles below, written from the rules (options.py's docstring, issue #9), not from the
code. Deterministic (`derandomize=True`), about 500 cases, on a tiny random model. A deeper, random
search: `LOGO_FUZZ_SCALE=20 python -m pytest tests/test_fuzz.py`.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
import re
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from helpers import make_adapter, three_adapters, tiny_engine, tiny_model
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from logo_core.errors import AdapterLoadError, ConfigError, LoGoError, RequestError
from logo_core.loading import load_adapter
from logo_core.registry import load_config, parse_config, save_config

P = "What is 2 + 2?"
L = 4  # blocks of the tiny model
NAMES = ["arithmetic", "translate", "other"]
MODULES = {"q_proj", "v_proj", "o_proj"}  # adapted by some adapter of the pool
MAX_CHARS = 200
DEFAULT_MAX_NEW = 2
NAN, INF = float("nan"), float("inf")


SCALE = int(os.environ.get("LOGO_FUZZ_SCALE", "1"))


def fuzz(n: int):
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        derandomize=SCALE == 1,  # CI: the same cases every run
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,  # `after` runs once per property, on purpose
        ],
    )


@pytest.fixture(scope="module")
def world(tiny_tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    model = tiny_model("llama", len(tiny_tok), n_layers=L)
    adapters = three_adapters(model, root)
    engine = tiny_engine(
        copy.deepcopy(model),
        tiny_tok,
        root,
        adapters,
        k=1,
        max_new_tokens=DEFAULT_MAX_NEW,
        engine={"max_prompt_chars": MAX_CHARS},
    )
    return model, root, engine, engine.route(P).selected


def serves(world, generate: bool = False) -> None:
    """The engine still routes P as before (and generates, at the end of a property)."""
    engine, before = world[2], world[3]
    assert engine.route(P).selected == before
    if generate:
        assert isinstance(engine.generate(P, max_new_tokens=1).text, str)


@pytest.fixture
def after(world):
    yield
    serves(world, generate=True)


def named(error: LoGoError, names) -> bool:
    msg = str(error)
    return any(f"`{n}" in msg for n in names)


# ------------------------------------------------------------------ values of every type

JSONISH = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-8, 8),
    st.integers(),
    st.sampled_from([10**30, -(10**30), 2**63, 2**64, 10**400]),
    st.floats(),  # nan, inf, -0.0, 1e300, subnormals
    st.sampled_from([NAN, INF, -INF, -0.0, 1e300, 5e-324, 1.0, 2.0, 3.0, 0.5, 1e-300]),
    st.text(max_size=6),
    st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc", "Cf", "Zs", "Mn", "Nd"]), max_size=4),
    st.sampled_from(
        [
            "norm",
            "entropy",
            "q_proj",
            "v_proj",
            "q_proj,v_proj",
            "residual",
            "module",
            "0:2",
            "-1",
            "1,2",
            "3",
            "3.0",
            "true",
            "false",
            "nan",
            ":",
            "-4:",
            "15:30",
            "",
            " ",
            "--1",
            "\u0663",
            "1e3",
        ]
    ),
    st.lists(st.one_of(st.integers(-6, 6), st.floats(), st.booleans(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-2, 2), max_size=2),
)
ANY = st.one_of(
    JSONISH,
    st.complex_numbers(max_magnitude=10),
    st.binary(max_size=3),
    st.tuples(st.integers(-5, 5)),
    st.integers(-5, 5).map(np.int64),
    st.floats(-3, 3, width=32).map(np.float32),
    st.booleans().map(np.bool_),
    st.just(iter([1])),
)


# ------------------------------------------------------------------ the rules, as oracles


def as_int(v):
    """The integer v stands for (an int, a numpy int, an integral finite float), else None."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    try:
        f = float(v)
    except OverflowError:
        return None
    return int(f) if math.isfinite(f) and f.is_integer() else None


def as_real(v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


INT_TEXT = r"-?[0-9]{1,9}"


def layer_ok(v) -> bool:
    if isinstance(v, str):
        if ":" in v:
            m = re.fullmatch(rf"\s*({INT_TEXT})?\s*:\s*({INT_TEXT})?\s*", v)
            if not m:
                return False
            a, b = (int(g) if g is not None else None for g in m.groups())
            if any(e is not None and not -L <= e <= L for e in (a, b)):
                return False
            return len(range(L)[a:b]) > 0
        items = v.split(",")
        return all(re.fullmatch(rf"\s*{INT_TEXT}\s*", i) for i in items) and all(-L <= int(i) < L for i in items)
    if isinstance(v, list | tuple):
        return bool(v) and all(as_int(i) is not None and -L <= as_int(i) < L for i in v)
    return as_int(v) is not None and -L <= as_int(v) < L


def module_ok(v) -> bool:
    if isinstance(v, str):
        items = [m.strip() for m in v.split(",")]
    elif isinstance(v, list | tuple) and all(isinstance(m, str) for m in v):
        items = [m.strip() for m in v]
    else:
        return False
    items = [m for m in items if m]
    return bool(items) and set(items) <= MODULES


ROUTE_RULES = {
    "k": lambda v: as_int(v) is not None and 1 <= as_int(v) <= len(NAMES),
    "signal": lambda v: isinstance(v, str) and v in ("norm", "entropy", "subspace", "subspace_cos"),
    "calibrated": lambda v: type(v) is bool,
    "layer": layer_ok,
    "module": module_ok,
    "probe_input": lambda v: isinstance(v, str) and v in ("residual", "module"),
    "weighting": lambda v: isinstance(v, str) and v in ("proportional", "lead"),
}


def generate_bad(gen: dict) -> set[str]:
    """The generation settings that break the rules (None = the default)."""
    bad = set()
    val = {"max_new_tokens": DEFAULT_MAX_NEW, "min_new_tokens": 0, **{k: v for k, v in gen.items() if v is not None}}
    mx, mn = as_int(val["max_new_tokens"]), as_int(val["min_new_tokens"])
    if mx is None or not 1 <= mx <= 1024:
        bad.add("max_new_tokens")
    if mn is None or not 0 <= mn <= 1024:
        bad.add("min_new_tokens")
    if not bad and mn > mx:
        bad.add("min_new_tokens")
    for key, ok in {
        "do_sample": lambda v: type(v) is bool,
        "temperature": lambda v: as_real(v) is not None and 0.01 <= as_real(v) <= 10,
        "top_p": lambda v: as_real(v) is not None and 0 < as_real(v) <= 1,
        "top_k": lambda v: as_int(v) is not None and as_int(v) >= 0,
        "seed": lambda v: as_int(v) is not None and 0 <= as_int(v) < 2**63,
    }.items():
        if gen.get(key) is not None and not ok(gen[key]):
            bad.add(key)
    return bad


def mixture_ok(m) -> bool:
    if not isinstance(m, dict):
        return False
    return all(n in NAMES and as_real(w) is not None and 0 < as_real(w) <= 10 for n, w in m.items())


BLANK = set("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")


def prompt_ok(p) -> bool:
    """Text (no lone surrogate), within the cap, with at least one character that shows."""
    if not isinstance(p, str) or len(p) > MAX_CHARS or any(0xD800 <= ord(c) <= 0xDFFF for c in p):
        return False
    return any(
        (unicodedata.category(c)[0] in "LNPS" or unicodedata.category(c) in ("Mc", "Me"))
        and c not in BLANK
        and not c.isspace()
        for c in p
    )


# ------------------------------------------------------------------ the Python API

ROUTE_VALUES = {
    "k": st.one_of(st.integers(-1, 5), st.sampled_from([1.0, 2.0, 3.0, 2.5, np.int64(2)])),
    "signal": st.sampled_from(["norm", "entropy", "nrm"]),
    "calibrated": st.booleans(),
    "layer": st.one_of(
        st.integers(-6, 5),
        st.lists(st.integers(-5, 4), max_size=3),
        st.from_regex(r"\A ?-?[0-9]? ?: ?-?[0-9]? ?\Z"),
        st.sampled_from(["0,2", "1 , 3", "3,", "2.0"]),
    ),
    "module": st.one_of(
        st.sampled_from(["q_proj", "v_proj", "o_proj", "gate_proj", "q_proj, v_proj", ",v_proj"]),
        st.lists(st.sampled_from(["q_proj", "v_proj", "o_proj", "k_proj", " v_proj"]), max_size=3),
    ),
    "probe_input": st.sampled_from(["residual", "module", "mod"]),
    "weighting": st.sampled_from(["proportional", "lead", "softmax", "Lead"]),
}
_ROUTE = st.fixed_dictionaries({}, optional={k: st.one_of(v, v, ANY) for k, v in ROUTE_VALUES.items()})
ROUTE_KWARGS = st.one_of(_ROUTE, _ROUTE, _ROUTE, st.tuples(_ROUTE, ANY).map(lambda t: {**t[0], "foo": t[1]}))


def _slow(v) -> bool:  # a valid length that would make the case slow: generated lengths stay tiny
    return as_int(v) is not None and 3 < as_int(v) <= 1024


GEN_VALUES = {
    "max_new_tokens": st.one_of(
        st.integers(1, 3), st.sampled_from([0, -1, 1025, 2.0, 1.5]), ANY.filter(lambda v: not _slow(v))
    ),
    "min_new_tokens": st.one_of(st.integers(0, 3), st.sampled_from([-1, 5, 1.0]), ANY.filter(lambda v: not _slow(v))),
    "do_sample": st.one_of(st.booleans(), ANY),
    "temperature": st.one_of(st.floats(0, 11), st.sampled_from([0.01, 10, 1e-300, 0]), ANY),
    "top_p": st.one_of(st.floats(0, 1.1), st.sampled_from([1, 1e-300, 0]), ANY),
    "top_k": st.one_of(st.integers(-2, 50), st.sampled_from([2**70]), ANY),
    "seed": st.one_of(st.integers(-1, 2**64), ANY),
}
WEIGHT = st.one_of(st.floats(0, 12), st.sampled_from([1, 10, 5e-324]), ANY)
MIXTURE = st.one_of(
    st.dictionaries(st.sampled_from([*NAMES, "zzz"]), WEIGHT, max_size=3),
    st.dictionaries(st.sampled_from(NAMES), st.floats(0.01, 10), max_size=3),  # valid more often
    ANY,
)


@fuzz(120)
@given(kwargs=ROUTE_KWARGS)
def test_route_keywords(world, after, kwargs):
    engine = world[2]
    bad = {k for k, v in kwargs.items() if k not in ROUTE_RULES or (v is not None and not ROUTE_RULES[k](v))}
    for call in (lambda: engine.route(P, **kwargs), lambda: engine.route_batch([P, "Hello"], **kwargs)):
        try:
            out = call()
        except RequestError as e:
            assert bad, f"valid {kwargs!r} refused: {e}"
            assert named(e, bad), (kwargs, str(e))
        else:
            assert not bad, f"{sorted(bad)} of {kwargs!r} accepted"
            r = out if not isinstance(out, list) else out[0]
            k = as_int(kwargs.get("k")) if kwargs.get("k") is not None else 1
            assert len(r.selected) == k and math.isclose(sum(r.weights.values()), 1.0)
            json.dumps(r.to_dict())
    serves(world)


@fuzz(80)
@given(
    route=ROUTE_KWARGS,
    gen=st.fixed_dictionaries({}, optional=GEN_VALUES),
    explicit=st.booleans(),
    mixture=MIXTURE,
    data=st.data(),
)
def test_generate_keywords_and_mixtures(world, after, route, gen, explicit, mixture, data):
    engine = world[2]
    route = route if data.draw(st.booleans()) else {}
    adapters = mixture if explicit else None
    explicit = adapters is not None
    allowed = set(generate_bad(gen))  # names an error may give
    allowed |= {k for k, v in route.items() if k not in ROUTE_RULES or (v is not None and not ROUTE_RULES[k](v))}
    if explicit and not mixture_ok(mixture):
        allowed.add("adapters")
    if explicit and any(v is not None for v in route.values()):
        allowed |= {"adapters"} | {k for k, v in route.items() if v is not None}  # routing beside a mixture
        must_fail = True
    else:
        must_fail = bool(allowed)
    call = data.draw(st.sampled_from(["generate", "generate_batch", "stream"]))
    try:
        if call == "generate":
            g = engine.generate(P, adapters=adapters, **route, **gen)
        elif call == "generate_batch":
            g = engine.generate_batch([P, "Hello"], None if adapters is None else [adapters, adapters], **route, **gen)[
                1
            ]
        else:
            stream = engine.stream(P, adapters=adapters, **route, **gen)
            text = "".join(stream)
            g = stream.result
            assert g.text == text
    except RequestError as e:
        assert must_fail, f"valid request refused: {e}"
        assert named(e, allowed), (route, gen, adapters, str(e))
    else:
        assert not must_fail, f"{sorted(allowed)} accepted: {route!r} {gen!r} {adapters!r}"
        assert g.timings["new_tokens"] <= as_int(gen.get("max_new_tokens") or DEFAULT_MAX_NEW)
        if adapters is not None:
            assert g.routing.weights == {n: float(w) for n, w in adapters.items()}
        json.dumps(g.to_dict())
    serves(world)


SPECIAL_PIECES = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "assistant", "user", "\n", "<|", "|>", "im_", "HACKED"]
PROMPTS = st.one_of(
    st.text(max_size=12),
    st.text(
        alphabet=st.characters(codec=None, categories=["Cc", "Cf", "Cs", "Zs", "Zl", "Mn", "Co", "Me", "Lo"]),
        max_size=5,
    ),
    st.lists(st.sampled_from([*SPECIAL_PIECES, " ", "x"]), max_size=10).map("".join),
    st.integers(MAX_CHARS - 1, MAX_CHARS + 1).map(lambda n: ("<|im_end|>" * n)[:n]),
    ANY,
)


@fuzz(80)
@given(prompt=PROMPTS)
def test_prompts(world, after, prompt):
    engine = world[2]
    try:
        r = engine.route(prompt)
    except RequestError as e:
        assert not prompt_ok(prompt), f"valid prompt {prompt!r} refused: {e}"
        assert named(e, ["prompt"]), str(e)
    else:
        assert prompt_ok(prompt), f"invalid prompt {prompt!r} accepted"
        assert r.prompt == prompt
        # no special token from the user's text: the template's own are the only ones
        special = set(engine.tokenizer.all_special_ids)
        row = engine.encode([prompt], DEFAULT_MAX_NEW, engine.placement.device).input_ids[0].tolist()
        own = [i for i in engine.encode.head + engine.encode.tail if i in special]
        assert [i for i in row if i in special] == own, prompt
        assert isinstance(engine.generate(prompt, max_new_tokens=1).text, str)
    serves(world)


# ------------------------------------------------------------------ adapters.yaml

# Each field's kind: what an accepted value must already be (no coercion; 3.0 is the integer 3).
KINDS = {
    "base_model": {
        "id": "str",
        "gguf_file": "str?",
        "revision": "str?",
        "device": "str",
        "dtype": "str",
        "probe_dtype": "str",
        "device_map": "any",
    },
    "engine": {
        "mixture": "str",
        "max_prompt_tokens": "int",
        "max_prompt_chars": "int",
        "probe_cache_mb": "float",
        "factor_cache_mb": "float",
        "compile": "bool",
        "max_mixture_rank": "int",
        "batch_buckets": "ints",
        "batching": "str",
        "batch_window_ms": "float",
        "batch_max_rows": "int",
    },
    "defaults": {
        "k": "int",
        "signal": "str",
        "calibrated": "bool",
        "layer": "any",
        "module": "any",
        "probe_input": "str",
        "max_new_tokens": "int",
        "min_new_tokens": "int",
        "do_sample": "bool",
        "temperature": "float",
        "top_p": "float",
        "top_k": "int",
        "seed": "int?",
    },
    "adapters": {
        "name": "str",
        "path": "str?",
        "hub": "any",
        "description": "str",
        "family": "str",
        "examples": "strs",
    },
    "unseen_examples": {"task": "str", "family": "str", "prompt": "str"},
}
GOOD = {
    "str": st.sampled_from(
        [
            "auto",
            "cpu",
            "cuda:1",
            "fp32",
            "bf16",
            "same",
            "fold",
            "lowrank",
            "on",
            "off",
            "norm",
            "residual",
            "module",
            "a",
            "Tell me something.",
            "x/y",
        ]
    ),
    "str?": st.one_of(st.none(), st.sampled_from(["main", "model.gguf", "x"])),
    "int": st.one_of(st.integers(-2, 2000), st.sampled_from([16.0, 100.0])),
    "int?": st.one_of(st.none(), st.integers(-1, 10)),
    "float": st.one_of(st.floats(-1, 5000), st.integers(0, 100)),
    "bool": st.booleans(),
    "ints": st.lists(st.integers(-1, 300), max_size=3),
    "strs": st.lists(st.sampled_from(["What is 1 + 1?", "", " ", "\x00"]), max_size=2),
    "any": st.one_of(
        st.sampled_from(["auto", "15:30", "v_proj", -1, 3]),
        st.lists(st.integers(-3, 3), max_size=2),
        st.fixed_dictionaries({"repo": st.sampled_from(["a/b", "../x", "a/.."])}),
    ),
}


def coerced(kind: str, given, got) -> str | None:
    """Why accepting `given` as `got` would be a coercion, or None."""
    if kind.endswith("?") and given is None:
        return None if got is None else "None changed"
    kind = kind.rstrip("?")
    if kind == "int":
        return None if as_int(given) is not None and type(got) is int and got == given else "not an integer"
    if kind == "float":
        return None if as_real(given) is not None and got == given else "not a finite number"
    if kind == "bool":
        return None if type(given) is bool and got is given else "not a bool"
    if kind == "str":
        return None if type(given) is str and got == given else "not a string"
    if kind == "ints":
        return None if type(given) is list and all(as_int(i) is not None for i in given) and got == given else "ints"
    if kind == "strs":
        return None if type(given) is list and all(type(s) is str for s in given) and got == given else "strs"
    return None


def section_values(section: str):
    kinds = KINDS[section]
    return st.fixed_dictionaries(
        {}, optional={f: st.one_of(GOOD[k], GOOD[k], JSONISH) for f, k in kinds.items()} | {"junk": JSONISH}
    )


@fuzz(40)
@given(section=st.sampled_from(["base_model", "engine", "defaults"]), data=st.data())
def test_config_sections(section, data):
    fields = data.draw(section_values(section))
    try:
        cfg = parse_config({section: fields}, "fz/adapters.yaml")
    except ConfigError as e:
        msg = str(e)
        assert msg.startswith("fz/adapters.yaml: "), msg
        # a field's own error names `section.field`; a cross-field one (min > max) names the fields
        assert named(e, [f"{section}.{f}" for f in fields] + list(fields)), (fields, msg)
    else:
        assert "junk" not in fields
        for field, value in fields.items():
            why = coerced(KINDS[section][field], value, getattr(getattr(cfg, section), field))
            assert why is None, f"{section}.{field} = {value!r} accepted: {why}"


@fuzz(60)
@given(data=st.data())
def test_config_adapter_and_example_entries(data):
    section = data.draw(st.sampled_from(["adapters", "unseen_examples"]))
    entries = data.draw(st.lists(st.one_of(section_values(section), JSONISH), min_size=1, max_size=3))
    try:
        cfg = parse_config({section: entries}, "fz/adapters.yaml")
    except ConfigError as e:
        msg = str(e)
        assert msg.startswith("fz/adapters.yaml: "), msg
        if section == "adapters":
            assert "entry " in msg or "`adapters`" in msg, msg
        else:
            assert "`unseen_examples." in msg, msg
    else:
        for entry, got in zip(entries, getattr(cfg, section)):
            assert isinstance(entry, dict) and "junk" not in entry
            for field, value in entry.items():
                why = coerced(KINDS[section][field], value, getattr(got, field))
                assert why is None, f"{section}.{field} = {value!r} accepted: {why}"
            if section == "adapters":
                assert (entry.get("path") is None) != (entry.get("hub") is None)
                assert all(prompt_ok(p) or len(p) > MAX_CHARS for p in entry.get("examples", []))
            else:
                assert prompt_ok(entry["prompt"]) or len(entry["prompt"]) > MAX_CHARS


VALID_DEFAULTS = st.fixed_dictionaries(
    {},
    optional={
        "k": st.integers(1, 5),  # up to the pool size: a larger default is clamped (engine.route_options)
        "signal": st.sampled_from(["norm", "entropy", "subspace", "subspace_cos"]),
        "calibrated": st.booleans(),
        "layer": st.one_of(st.integers(-L, L - 1), st.sampled_from(["0:2", "-2:", "1,3", ":"])),
        "module": st.sampled_from(["q_proj", "v_proj", "q_proj,o_proj"]),
        "probe_input": st.sampled_from(["residual", "module"]),
        "max_new_tokens": st.integers(1, 3),
        "do_sample": st.booleans(),
        "temperature": st.floats(0.01, 10),
        "top_p": st.floats(0.001, 1),
        "seed": st.integers(0, 2**63 - 1),
    },
)
VALID_ENGINE = st.fixed_dictionaries(
    {},
    optional={
        "mixture": st.sampled_from(["auto", "fold", "lowrank"]),
        "max_prompt_tokens": st.integers(16, 4096),
        "max_prompt_chars": st.integers(100, 10**6),
        "probe_cache_mb": st.one_of(st.floats(0, 4096), st.integers(0, 8)),
        "factor_cache_mb": st.one_of(st.floats(0, 1e6), st.integers(0, 8)),
    },
)


@fuzz(12)
@given(defaults=VALID_DEFAULTS, engine=VALID_ENGINE)
def test_valid_configs_load_round_trip_and_serve(world, tiny_tok, tmp_path_factory, defaults, engine):
    model, root = world[0], world[1]
    raw = {
        "defaults": defaults,
        "engine": engine,
        "adapters": [{"name": n, "path": str(root / n)} for n in NAMES],
        "unseen_examples": [{"task": "t", "prompt": "Say hi."}],
    }
    cfg = parse_config(raw, str(root / "adapters.yaml"))
    path = tmp_path_factory.mktemp("rt") / "adapters.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again.defaults == cfg.defaults and again.engine == cfg.engine
    from logo_core.engine import LoGoEngine
    from logo_core.pool import load_pool

    pool, report = load_pool(cfg, model)
    assert not report.skipped
    e = LoGoEngine(model, tiny_tok, pool, cfg, load_report=report)
    assert e.route(P).selected
    assert isinstance(e.generate(P).text, str)


# ------------------------------------------------------------------ adapter_config.json

R = 4  # the rank of the adapter's tensors


@pytest.fixture(scope="module")
def adapter_dir(world, tmp_path_factory):
    return make_adapter(world[0], tmp_path_factory.mktemp("cfg") / "base", seed=5, r=R, alpha=8)


@fuzz(60)
@given(
    r=st.one_of(st.just(R), st.integers(-1, 9), JSONISH),
    alpha=st.one_of(st.floats(0.01, 100), st.integers(-1, 64), JSONISH),
    rslora=st.one_of(st.booleans(), JSONISH),
    dora=st.one_of(st.just(False), JSONISH),
)
def test_adapter_config_values(world, adapter_dir, tmp_path_factory, r, alpha, rslora, dora):
    real = as_real(alpha)
    assume(real is None or real <= 100 or real >= 1e4)  # between: valid or refused by the update-size bound
    folder = tmp_path_factory.mktemp("a") / "ad"
    shutil.copytree(adapter_dir, folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(r=r, lora_alpha=alpha, use_rslora=rslora, use_dora=dora)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    ok = (
        type(r) is int
        and r == R
        and real is not None
        and 0 < real <= 100
        and not isinstance(alpha, bool)
        and type(rslora) is bool
        and dora is False
    )
    try:
        a = load_adapter("fz", Path(folder), world[0])
    except AdapterLoadError as e:
        assert not ok, f"valid config refused: {e}"
        assert str(e).startswith("adapter 'fz' ("), str(e)
        assert named(e, ["r", "lora_alpha", "use_rslora", "use_dora"]) or "do not fit r" in str(e) or "DoRA" in str(e)
    else:
        assert ok, f"r={r!r} lora_alpha={alpha!r} use_rslora={rslora!r} use_dora={dora!r} accepted"
        assert math.isclose(a.scale, real / (math.sqrt(R) if rslora else R))
