"""The benchmark's `--quick` mode, end to end on CPU: structure of its outputs, not its timings."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from logo_core import bench

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    """Run `python -m logo_core.bench --quick` once into a temporary folder."""
    out = tmp_path_factory.mktemp("bench")
    res = subprocess.run(
        [sys.executable, "-m", "logo_core.bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "## Targets" in res.stdout  # the table is printed
    return out


@pytest.fixture(scope="module")
def report(quick_run: Path) -> dict:
    return json.loads((quick_run / "bench.json").read_text())


def positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def expected_contenders() -> list[str]:
    s = bench.QUICK
    names = ["base", "engine, no adapters"] + [f"engine k={k}" for k in s.ks]
    return names + [f"reference k={k}" for k in s.peer_ks] + [f"peft merge k={k}" for k in s.peer_ks]


def test_outputs_written(quick_run: Path):
    for name in ("bench.json", "bench.md", "amortisation.html", "amortisation.png"):
        assert (quick_run / name).stat().st_size > 0, name


def test_every_contender_with_positive_finite_ratios(report: dict, quick_run: Path):
    rows = {r["contender"]: r for r in report["e2e"]}
    assert list(rows) == expected_contenders()
    short, long_ = bench.QUICK.lengths
    for name, r in rows.items():
        for key in (f"e2e_{short}_ratio", f"e2e_{long_}_ratio", "decode_ratio", f"e2e_{long_}_s", "decode_tps"):
            assert positive_finite(r[key]), (name, key, r[key])
    assert rows["base"]["decode_ratio"] == pytest.approx(1.0)
    table = (quick_run / "bench.md").read_text()
    for name in rows:
        assert f"| {name} |" in table


def test_amortisation_curves(report: dict):
    curves = report["amortisation"]["ms_per_token"]
    assert set(curves) == set(expected_contenders())
    for ys in curves.values():
        assert len(ys) == bench.QUICK.lengths[1] and all(positive_finite(y) for y in ys)
    assert report["amortisation"]["png_error"] is None


def test_routing_memory_dtype_and_targets(report: dict):
    s = bench.QUICK
    rows = [(r["routing"], r["n"]) for r in report["probe_vs_n"]]
    assert rows == [(r, n) for r in bench.ROUTINGS for n in s.pool_sizes]
    assert all(positive_finite(r["ratio"]) and positive_finite(r["route_ms"]) for r in report["probe_vs_n"])
    b = report["batched"]
    assert b["prompts"] == s.batch and positive_finite(b["speedup"]) and b["same_selection"] == 1.0
    configs = [m["config"] for m in report["memory"]]
    assert configs[0] == "base alone" and f"engine N={s.memory_pools[-1]}" in configs
    assert all(positive_finite(m["rss_mb"]) for m in report["memory"])
    dtypes = {r["dtype"]: r for r in report["dtype"]}
    assert set(dtypes) == {"fp32", "bf16", "int8"}
    assert dtypes["fp32"]["same_topk"] == 1.0
    for r in dtypes.values():
        assert positive_finite(r["base_decode_tps"]) and positive_finite(r["k3_vs_fp32"])
        assert 0.0 <= r["same_topk"] <= 1.0 and 0.0 <= r["same_top1"] <= 1.0
    assert len(report["targets"]) == 9
    assert all(isinstance(t["met"], bool) and math.isfinite(t["measured"]) for t in report["targets"])
    assert report["meta"]["mode"] == "quick"


def test_synthetic_adapters_load_as_peft_adapters(tmp_path):
    """The synthetic writer's files pass the engine's adapter checks (shapes, scale)."""
    from helpers import tiny_model

    from logo_core.loading import load_adapter

    model = tiny_model("llama", vocab_size=64, n_layers=2)
    paths = bench.write_adapters(model, tmp_path, 2)
    files = [load_adapter(name, path, model) for name, path in paths.items()]
    assert [f.rank for f in files] == [bench.RANK, bench.RANK]
    assert files[0].scale == pytest.approx(bench.ALPHA / bench.RANK)
    assert {m for _, m in files[0].keys} == set(bench.TARGETS)
    a0, _ = files[0].read(0, "q_proj")
    a1, _ = files[1].read(0, "q_proj")
    assert not a0.equal(a1)  # one seed per adapter
