"""The benchmark: its `--quick` CPU run and its device run on the tiny shape (`--device cpu --shape tiny`),
end to end (structure of the outputs, not timings); the reference-style router against the engine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_adapter, tiny_engine, tiny_model

from logo_core.bench import contenders, cpu, device, synthetic
from logo_core.bench.common import PROMPTS

pytestmark = pytest.mark.slow  # the real model, a browser or a subprocess run: `make test-fast` leaves it out

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run(
        [sys.executable, "-m", "logo_core.bench", *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def positive_finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


# --------------------------------------------------------------------------- the CPU run, --quick


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    # Both cores: the suite waits on this run (the bench would pick one thread on a machine it finds busy).
    assert "## Targets" in bench("--quick", "--threads", "2", out=out).stdout  # the report is printed
    return out


@pytest.fixture(scope="module")
def report(quick_run: Path) -> dict:
    return json.loads((quick_run / "bench.json").read_text())


def expected_contenders() -> list[str]:
    s = cpu.QUICK
    names = ["base", "engine, no adapters"] + [f"engine k={k}" for k in s.ks]
    names += [f"engine k={k}, low-rank" for k in s.lowrank_ks]
    return names + [f"reference k={k}" for k in s.peer_ks] + [f"peft merge k={k}" for k in s.peer_ks]


def test_outputs_written(quick_run: Path, report: dict):
    """Each output is what its name says: the JSON's sections, the reports' headings, a plotly page, a PNG."""
    assert set(report) >= {
        "settings",
        "e2e",
        "probe_vs_n",
        "batched",
        "dtype",
        "app_speed",
        "memory",
        "meta",
        "targets",
    }
    assert report["amortisation_png_error"] is None and report["settings"]["n_pool"] == cpu.QUICK.n_pool
    bench_md = (quick_run / "bench.md").read_text()
    for heading in ("## End to end, per request", "## Batched routing", "## Resident memory", "## Targets"):
        assert heading in bench_md, heading
    readme = (quick_run / "readme.md").read_text()
    assert "## Targets" in readme and "| issue | target | measured |" in readme
    assert "plotly" in (quick_run / "amortisation.html").read_text()
    assert (quick_run / "amortisation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_contender_with_positive_finite_ratios(report: dict, quick_run: Path):
    rows = {r["contender"]: r for r in report["e2e"]["rows"]}
    assert list(rows) == expected_contenders()
    short, long_ = cpu.QUICK.lengths
    for name, r in rows.items():
        for key in (f"e2e_{short}_ratio", f"e2e_{long_}_ratio", "decode_ratio", f"e2e_{long_}_s", "first_token_ms"):
            assert positive_finite(r[key]), (name, key, r[key])
    assert rows["base"]["decode_ratio"] == pytest.approx(1.0)
    table = (quick_run / "bench.md").read_text()
    for name in rows:
        assert f"| {name} |" in table


def test_trained_pool_at_two_sizes(report: dict, quick_run: Path):
    rows = report["trained_pools"]
    assert [r["n"] for r in rows] == list(cpu.QUICK.trained_sizes)  # the real pool, cut to its first n
    assert rows[0]["load_s_ratio"] == rows[0]["route_ms_ratio"] == rows[0]["rss_mb_ratio"] == 1.0
    for r in rows:
        assert all(positive_finite(r[k]) for k in ("load_s", "route_ms", "rss_mb", "stacks_mb")), r
    assert rows[1]["stacks_mb"] == pytest.approx(2 * rows[0]["stacks_mb"], rel=1e-6)  # stacks grow with N
    assert "## The trained pool as it grows" in (quick_run / "bench.md").read_text()


def test_amortisation_curves(report: dict):
    curves = report["e2e"]["ms_per_token"]
    assert set(curves) == set(expected_contenders())
    for ys in curves.values():
        assert len(ys) == cpu.QUICK.lengths[1] and all(positive_finite(y) for y in ys)
    assert report["amortisation_png_error"] is None


def test_routing_memory_dtype_app_and_targets(report: dict):
    s = cpu.QUICK
    assert [(r["routing"], r["n"]) for r in report["probe_vs_n"]] == [
        (r, n) for r in synthetic.ROUTINGS for n in s.pool_sizes
    ]
    assert all(positive_finite(r["ratio"]) and positive_finite(r["route_ms"]) for r in report["probe_vs_n"])
    b = report["batched"]
    assert b["prompts"] == s.batch and positive_finite(b["speedup"]) and b["same_selection"] == 1.0
    configs = [m["config"] for m in report["memory"]]
    assert configs[0] == "base alone" and len(configs) == 1 + len(s.memory_routings) * len(s.memory_pools)
    assert all(positive_finite(m["rss_mb"]) for m in report["memory"])
    assert [m.get("over_smallest_pool_mb") for m in report["memory"]][1] == 0
    dtypes = {r["dtype"]: r for r in report["dtype"]}
    assert tuple(dtypes) == s.dtypes and dtypes["fp32"]["same_top1"] == 1.0
    for r in dtypes.values():
        assert positive_finite(r["base_tps"]) and positive_finite(r["routed_vs_fp32"])
        assert 0.0 <= r["same_top3"] <= 1.0 and 0.0 <= r["synthetic_same_top1"] <= 1.0
    app = {r["candidate"]: r for r in report["app_speed"]}
    assert tuple(app) == s.candidates
    assert all(positive_finite(r["tps"]) for r in app.values())
    # an fp32 probe beside bf16 generation routes exactly as fp32 does
    assert app["bf16 + fp32 probe, fold"]["routing_identical"] is True
    assert len(report["targets"]) == 11
    for t in report["targets"]:
        assert t["met"] in (True, False, None) and (t["met"] is None or math.isfinite(t["measured"]))
    assert report["meta"]["mode"] == "quick"


# --------------------------------------------------------------------------- the device run, tiny shape on a CPU


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("device")
    bench("--device", "cpu", "--shape", "tiny", out=out)
    runs = json.loads((out / "gpu.json").read_text())
    assert len(runs) == 1
    ((key, entry),) = runs.items()
    assert key.endswith("/ tiny")
    md = (out / "gpu.md").read_text()
    for title in (
        "First answer after load",
        "Device memory",
        "End to end",
        "Routing against pool size",
        "Batched generation",
        "Micro-batching",
        "Compiled decode path",
    ):
        assert title in md, title
    return entry


def test_device_run_sections(tiny_run: dict):
    assert set(device.SECTIONS) <= set(tiny_run) and tiny_run["meta"]["device"] == "cpu"
    s, shape = device.SETTINGS["tiny"], synthetic.SHAPES["tiny"]
    assert positive_finite(tiny_run["first"]["first_after_load_s"])
    assert [m["routing"] for m in tiny_run["memory"]] == list(synthetic.ROUTINGS)
    assert all(positive_finite(m["stacks_mb"]) and "peak_added_mb" not in m for m in tiny_run["memory"])  # no CUDA
    rows = {r["contender"]: r for r in tiny_run["e2e"]["rows"]}
    assert list(rows) == ["base", f"engine k={shape.k}", f"reference k={shape.k}"]
    assert all(len(v) == s.reps for v in tiny_run["e2e"]["raw"][str(s.new_tokens)].values())
    assert [r["n"] for r in tiny_run["routing"]] == [s.small_pool, shape.pool] * len(synthetic.ROUTINGS)
    assert tiny_run["batch"]["prompts"] == s.batch and positive_finite(tiny_run["batch"]["speedup"])
    assert tiny_run["microbatch"]["callers"] == s.callers and positive_finite(
        tiny_run["microbatch"]["throughput_ratio"]
    )


def test_device_run_compiled_path(tiny_run: dict):
    c = tiny_run["compiled"]
    assert c["k"] == synthetic.SHAPES["tiny"].compiled_k and c["batch"] == device.SETTINGS["tiny"].compiled_batch
    for key in ("compile_s", "base compiled_tps", "engine compiled_tps", "engine eager_tps", "batch_vs_batch1"):
        assert positive_finite(c[key]), key
    assert c["recompiles_on_switch"] == 0  # a new mixture is new buffer data, not a new graph
    assert c["batch_on_compiled_path"] is True


# --------------------------------------------------------------------------- pieces


def test_reference_router_picks_what_the_engine_picks(tmp_path, tiny_tok):
    """At the reference setting (raw norm, last block, q_proj, residual) on a clean model, the
    reference-style router (full pass with hidden states, a Python loop over adapters) selects and
    weighs exactly as `engine.route`."""
    model = tiny_model("llama", len(tiny_tok), n_layers=3)
    adapters = {f"a{i}": make_adapter(model, tmp_path / f"a{i}", seed=i) for i in range(6)}
    engine = tiny_engine(model, tiny_tok, tmp_path, adapters)
    peft_model = contenders.load_peft(model, adapters)
    for prompt in PROMPTS[:5]:
        r = engine.route(prompt, k=3, **synthetic.PAPER)
        inputs = engine.encode([prompt], 0, engine.placement.device).inputs()
        with torch.inference_mode(), peft_model.disable_adapter():
            selected, weights = contenders.reference_probe(peft_model, inputs, 3)
        assert selected == r.selected, prompt
        assert weights == pytest.approx([r.weights[n] for n in selected], rel=1e-4)


def test_peft_gets_a_copy_sharing_the_weights(tmp_path, tiny_tok):
    """PEFT's injection never reaches the shared model, and no weight is duplicated."""
    from peft.tuners.lora import LoraLayer

    model = tiny_model("llama", len(tiny_tok), n_layers=2)
    peft_model = contenders.load_peft(model, {"a0": make_adapter(model, tmp_path / "a0", seed=0)})
    assert not any(isinstance(m, LoraLayer) for m in model.modules())
    ours = {p.data_ptr() for p in model.parameters()}
    theirs = {p.data_ptr() for n, p in peft_model.named_parameters() if "lora_" not in n}
    assert theirs == ours


def test_synthetic_adapters_load_as_peft_adapters(tmp_path):
    """The synthetic writer's files pass the engine's adapter checks (shapes, scale); one seed each."""
    from logo_core.loading import load_adapter

    model = tiny_model("llama", vocab_size=64, n_layers=2)
    paths = synthetic.write_adapters(model, tmp_path, 2)
    files = [load_adapter(name, path, model) for name, path in paths.items()]
    assert [f.rank for f in files] == [synthetic.RANK, synthetic.RANK]
    assert files[0].scale == pytest.approx(synthetic.ALPHA / synthetic.RANK)
    assert {m for _, m in files[0].keys} == set(synthetic.TARGETS)
    (a0, _), (a1, _) = files[0].read([(0, "q_proj")])[(0, "q_proj")], files[1].read([(0, "q_proj")])[(0, "q_proj")]
    assert not a0.equal(a1)


def test_random_base_follows_the_placement():
    from logo_core.loading import decide_placement
    from logo_core.registry import BaseModelSpec

    place = decide_placement(BaseModelSpec(device="cpu", dtype="bf16"))
    model = synthetic.random_base(synthetic.SHAPES["tiny"], place)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert model.config.hidden_size == synthetic.TINY["hidden_size"]
