"""The real embedded SmolLM2-135M-Instruct with the shipped, trained adapter pool."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT


def test_routing_is_deterministic_and_complete(real_engine):
    prompt = real_engine.pool.specs[0].examples[0]
    a = real_engine.route(prompt, k=2)
    real_engine.generate("Something else entirely, please.", max_new_tokens=4)
    b = real_engine.route(prompt, k=2)
    assert a.scores == b.scores and a.selected == b.selected
    assert set(a.scores) == set(real_engine.adapters)
    assert sum(a.weights.values()) == pytest.approx(1.0)


def test_generation_comes_back_with_timings(real_engine):
    g = real_engine.generate("What is 47 + 38?", max_new_tokens=16)
    assert g.text.strip()
    assert g.timings["new_tokens"] >= 1
    assert 0 < g.timings["probe_s"] < g.timings["total_s"]
    assert len(g.routing.selected) == min(real_engine.defaults.k, len(real_engine.pool))


def test_own_adapter_wins_on_its_examples(real_engine):
    """Each shipped adapter's own example prompts route to it (top-1) at the default setting."""
    hits = total = 0
    for spec in real_engine.pool.specs:
        for prompt in spec.examples:
            hits += real_engine.route(prompt).selected[0] == spec.name
            total += 1
    assert hits / total >= 0.8, f"{hits}/{total}"


def test_batch_routing_matches_single(real_engine):
    prompts = [s.examples[0] for s in real_engine.pool.specs[:4]]
    batch = real_engine.route_batch(prompts, k=2)
    for p, r in zip(prompts, batch):
        single = real_engine.route(p, k=2)
        assert r.selected == single.selected
        for name in r.scores:
            assert r.scores[name] == pytest.approx(single.scores[name], rel=1e-4)


@pytest.mark.parametrize("command", ["route", "generate"])
def test_cli_prints_the_trace_as_json(real_engine, command):
    args = [sys.executable, "-m", "logo_core", command, "--prompt", "What is 12 + 30?", "--k", "2", "--json"]
    if command == "generate":
        args += ["--max-new-tokens", "8"]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    trace = json.loads(out.stdout)
    routing = trace if command == "route" else trace["routing"]
    assert set(routing["scores"]) == set(real_engine.adapters)
    assert len(routing["selected"]) == 2
    assert routing["scores"] == pytest.approx(real_engine.route("What is 12 + 30?", k=2).scores, rel=1e-4)


def test_cli_reports_bad_input_without_a_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "logo_core", "route", "--prompt", "hi", "--k", "999"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert "error: `k` must be between 1 and" in out.stderr
    assert "Traceback" not in out.stderr
