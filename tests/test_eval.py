"""The evaluation harness end to end (`--quick` slice) on the real model and shipped pool."""

from __future__ import annotations

import json

import pytest
import torch

from logo_core import eval as logo_eval


@pytest.fixture(scope="module")
def quick(real_engine):
    return logo_eval.evaluate(real_engine, n_test=6, n_dev=4, k_max=2, batch_size=8, quick=True)


def test_setting_scores_equal_engine_routing(real_engine):
    """Scores reassembled from the sweep must be exactly what the engine routes with."""
    prompts = [s.examples[0] for s in real_engine.pool.specs[:3]]
    sweep = logo_eval.run_sweep(real_engine, prompts, batch_size=2)
    L = real_engine.n_layers
    settings = [
        logo_eval.Setting((L - 1,), ("q_proj",), "residual", "norm", False),
        logo_eval.Setting(tuple(range(L // 2, L)), tuple(real_engine.pool.modules), "module", "entropy", True),
    ]
    for s in settings:
        ours = logo_eval.setting_scores(sweep, s)
        for i, p in enumerate(prompts):
            expected = torch.tensor(list(real_engine.route(p, **s.route_kwargs()).scores.values()))
            torch.testing.assert_close(ours[i], expected, rtol=1e-4, atol=1e-6)


def test_quick_evaluation_structure(quick, real_engine):
    assert quick["adapters"] == real_engine.adapters
    seen = quick["seen_tasks"]
    assert len(seen) == 3 and quick["unseen_tasks"]
    for cond in ("base", "oracle", "uniform (all adapters)", "random k=2", "retrieval k=2"):
        assert set(quick["scores"][cond]) == set(seen) | {"average"}
        assert all(0 <= v <= 100 for v in quick["scores"][cond].values())
    assert any(c.startswith("LoGo k=1") for c in quick["scores"])
    assert all(0 <= r["test_top1"] <= r["test_top2"] <= 100 for r in quick["routing"])
    assert len(quick["routing_by_block"]["norm/cal residual"]) == real_engine.n_layers
    assert quick["default"]["label"] in {r["setting"] for r in quick["routing"]}
    assert len(quick["heatmap"]) == 3 and len(quick["heatmap"][0]) == len(real_engine.adapters)
    assert any("own adapter removed" in t for t in quick["generalisation"])


def test_outputs_written(quick, tmp_path):
    logo_eval.write_outputs(quick, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["seen_tasks"] == quick["seen_tasks"]
    md = (tmp_path / "results.md").read_text()
    assert "| oracle |" in md and "Routing accuracy" in md
    for name in ("heatmap", "routing_by_block", "weight_vs_similarity"):
        assert (tmp_path / f"{name}.html").stat().st_size > 1000


def test_jsonl_scoring(real_engine, tmp_path):
    rows = [{"context": "What is 12 + 30?", "completion": "42"}, {"context": "What is 50 - 8?", "completion": "42"}]
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    out = logo_eval.score_jsonl(real_engine, path, "exact_match", k=2, max_new_tokens=8, batch_size=2)
    assert out["rows"] == 2 and set(out["scores"]) == {"base", "LoGo"}
    assert all(0 <= v <= 100 for v in out["scores"].values())
