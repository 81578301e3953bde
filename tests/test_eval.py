"""The evaluation harness end to end (`--quick` slice) on the real model and shipped pool, and its parts."""

from __future__ import annotations

import json

import pytest
import torch

from logo_core import baselines
from logo_core import eval as logo_eval
from logo_core.errors import RequestError

pytestmark = pytest.mark.slow  # the real model, a browser or a subprocess run: `make test-fast` leaves it out


@pytest.fixture(scope="module")
def quick(real_engine):
    return logo_eval.evaluate(real_engine, n_test=3, n_dev=2, batch_size=8, ks=(1, 3), quick=True, lorahub_steps=3)


def test_setting_scores_equal_engine_routing(real_engine):
    """Scores reassembled from one sweep must be exactly what the engine routes with."""
    prompts = [s.examples[0] for s in real_engine.pool.specs[:3]]
    sweep = logo_eval.run_sweep(real_engine, prompts, batch_size=2)
    L = real_engine.n_layers
    mods = ",".join(real_engine.pool.modules)
    settings = [
        logo_eval.grid_options(
            real_engine, layer=L - 1, module="q_proj", probe_input="residual", signal="norm", calibrated=False
        ),
        logo_eval.grid_options(
            real_engine, layer=f"{L // 2}:{L}", module=mods, probe_input="module", signal="entropy", calibrated=True
        ),
    ]
    for s in settings:
        ours = logo_eval.setting_scores(sweep, s)
        for i, p in enumerate(prompts):
            kw = dict(layer=s.layer_text, module=",".join(s.module), probe_input=s.probe_input, signal=s.signal)
            routed = real_engine.route(p, calibrated=s.calibrated, **kw, **logo_eval.GRID)
            expected = torch.tensor(list(routed.scores.values()))
            torch.testing.assert_close(ours[i], expected, rtol=1e-5, atol=1e-6)


def test_the_grids_probe_down_proj_from_its_own_input_only(real_engine):
    """The shipped adapters adapt down_proj too (rank 2): the harness probes it from its own input, never from the
    residual stream it does not read, and the engine refuses that pairing by name."""
    sites = logo_eval.probe_sites(real_engine)
    assert ("module", "down_proj") in sites and ("residual", "down_proj") not in sites
    assert {("residual", "q_proj"), ("residual", "v_proj"), ("module", "q_proj")} <= set(sites)
    assert real_engine.router.context.residual_modules == ("q_proj", "v_proj")
    with pytest.raises(RequestError, match="`module` 'down_proj' reads the block's inner activations"):
        real_engine.route("Spell out 19 in German.", module="down_proj", probe_input="residual")
    assert real_engine.route("Spell out 19 in German.", module="down_proj", probe_input="module").selected
    sets = {(s.probe_input, ",".join(s.module)) for s in logo_eval.candidate_settings(real_engine, every=30)}
    assert ("residual", "q_proj,v_proj") in sets and ("module", "down_proj,q_proj,v_proj") in sets
    assert ("residual", "down_proj,q_proj,v_proj") not in sets


def test_a_pool_with_no_residual_width_module_gets_no_residual_site():
    """An empty `residual_modules` means none (a pool adapting down_proj alone), not "unknown": no residual site."""
    from types import SimpleNamespace

    from logo_core.options import Context

    engine = SimpleNamespace(
        pool=SimpleNamespace(modules=["down_proj"]), router=SimpleNamespace(context=Context(2, 4, ("down_proj",), ()))
    )
    assert logo_eval.probe_sites(engine) == [("module", "down_proj")]
    engine.router.context = Context(2, 4, ("down_proj",))  # no width information: every module is offered
    assert logo_eval.probe_sites(engine) == [("residual", "down_proj"), ("module", "down_proj")]


def test_every_reference_answer_fits_its_generation_length(tokenizer):
    """A right answer must never be cut short: each task's length holds its longest reference in tokens.

    Counted in words alone, a German number or a COBOL-CASE identifier (one word, up to 17 tokens)
    was truncated and scored wrong whoever routed it.
    """
    from logo_core.tasks import TASKS

    for task in TASKS.values():
        for split, n in (("test", 20), ("dev", 60)):
            exs = task.examples(split, n, distinct=False)
            n_new = logo_eval.max_tokens(exs, tokenizer)
            longest = max(len(tokenizer(ex.answer, add_special_tokens=False).input_ids) for ex in exs)
            assert longest < n_new <= 48, (task.name, split, longest, n_new)
    one = logo_eval.max_tokens([TASKS["number_words_de"].examples("test", 1)[0]], tokenizer)
    assert one >= 11, "the word rule stays the floor: room for an answer a little longer than the reference"


def test_top_hits_and_family_hits():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.7, 0.1], [0.2, 0.3, 0.4]])
    assert logo_eval.top_hits(scores, [1, 1, 0]).tolist() == [True, False, False]  # a tie goes to pool order
    assert logo_eval.top_hits(scores, [1, 1, 0], k=2).tolist() == [True, True, False]
    fam = ["a", "a", "b"]
    assert logo_eval.family_hits(scores, ["a", "a", "a"], fam).tolist() == [True, True, False]


def test_mixtures_leave_out_adapters_at_weight_zero():
    """Top-3 keeps a non-positive score at weight 0; the mixture it becomes is a valid explicit one (> 0), which
    the engine refuses otherwise (the first full evaluation on the retrained pool stopped on it)."""
    from logo_core.options import check_mixture

    names = ["a", "b", "c", "d"]
    mixes = logo_eval.mixtures_from_scores(torch.tensor([[2.0, 1.0, -0.5, -1.0], [-1.0, -2.0, -3.0, -4.0]]), names, 3)
    assert mixes[0] == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    assert mixes[1] == {n: pytest.approx(1 / 3) for n in "abc"}  # nothing positive: uniform, as select_top_k
    assert all(check_mixture(m, names) == m for m in mixes)


def test_k_is_the_smallest_unless_a_larger_one_wins_by_a_paired_interval():
    flat = [0.0, 100.0] * 20
    assert logo_eval.choose_k({1: flat, 3: flat[1:] + flat[:1], 20: flat}) == 1  # same means, or noise: the smallest
    one_up = [0.0] * 10 + flat  # k = 3 adds one right answer to one prompt: not a paired win
    assert logo_eval.choose_k({1: one_up, 3: one_up[:-2] + [100.0, 100.0]}) == 1
    better = [100.0] * 50
    assert logo_eval.choose_k({1: [0.0] * 25 + [100.0] * 25, 3: better, 5: [50.0] * 25 + [100.0] * 25}) == 3
    assert logo_eval.choose_k({5: [0.0] * 30, 10: [100.0] * 30}) == 10  # the smallest given, not 1


def test_lorahub_merges_a_and_b_separately(real_engine):
    hub = baselines.LoraHub(real_engine, n_candidates=3, steps=3)
    names, w = real_engine.adapters[:2], [0.5, -1.25]
    mix = hub.mixture(names, w)
    key = next(iter(mix.factors))
    (A0, B0), (A1, B1) = (real_engine.pool.factors(n)[key] for n in names)
    A, B = mix.factors[key]
    torch.testing.assert_close(A[0], 0.5 * A0 - 1.25 * A1)  # not LoGo's concatenation: a rank-R merge
    torch.testing.assert_close(B[0], 0.5 * B0 - 1.25 * B1)
    assert A.shape[1] == A0.shape[0]


def test_quick_evaluation_structure(quick, real_engine):
    seen, unseen = quick["seen_tasks"], quick["unseen_tasks"]
    assert len(seen) == 3 and unseen
    assert quick["adapters"] == real_engine.adapters
    for cond in ("base", "oracle", "LoGo k=1", "LoGo k=3", "uniform (all adapters)", "Arrow top_k=1 (PEFT)"):
        assert set(quick["scores"]["seen"][cond]) == set(seen) | {"average"}
        assert len(quick["per_prompt"]["seen"][cond]) == 3 * len(seen)
    assert {"LoraHub (5 examples per task)", "Arrow top_k=3 (PEFT)"} <= set(quick["scores"]["unseen"])
    own, lo, hi = quick["shipped_routing"]["own_top1"]
    assert 0 <= lo <= own <= hi <= 100
    assert quick["k_seen"] in (1, 3) and quick["default"]["label"] in {c["setting"] for c in quick["probe_cost"]}
    chosen = next(c for c in quick["probe_cost"] if c["setting"] == quick["default"]["label"])
    assert chosen["dev_top1"] >= quick["best_dev_top1"] - 1.0  # the cheapest setting within a point of the best
    for name, w in quick["lorahub"].items():
        assert all(-1.5 <= x <= 1.5 for x in w.values()), name
    by_block = quick["routing_by_block"]  # every probe site the engine can read, down_proj from its own input only
    assert set(by_block) == {f"{m} {pi}" for pi, m in logo_eval.probe_sites(real_engine)}
    assert "down_proj module" in by_block and "down_proj residual" not in by_block
    assert all(len(v) == real_engine.n_layers for v in by_block.values())


def test_outputs_written(quick, tmp_path):
    logo_eval.write_outputs(quick, tmp_path, png=False)  # kaleido's Chrome is slow to start
    assert json.loads((tmp_path / "results.json").read_text())["seen_tasks"] == quick["seen_tasks"]
    md = (tmp_path / "results.md").read_text()
    assert "| oracle |" in md and "Unseen tasks" in md and "Probe cost" in md
    for name in ("heatmap", "routing_by_block", "probe_cost"):
        assert (tmp_path / f"{name}.html").stat().st_size > 1000


def test_targets_read_paired_intervals_at_the_dev_chosen_k(quick):
    """Each target row is LoGo at the dev-chosen k against one condition over the same prompts: a '>' row
    is met only when the paired interval is above the bar, a tie or a noisy lead is not."""
    r = json.loads(json.dumps(quick))  # a copy to doctor
    seen, unseen = r["per_prompt"]["seen"], r["per_prompt"]["unseen"]
    logo_s, logo_u = f"LoGo k={r['k_seen']}", f"LoGo k={r['k_unseen']}"
    n_u = len(unseen[logo_u])
    unseen[logo_u] = [50.0] * n_u
    unseen["base"] = [35.0] * n_u  # LoGo 15 points above base: >= +10
    unseen[f"random k={r['k_unseen']}"] = [50.0] * n_u  # a tie is not above
    unseen["Arrow top_k=1 (PEFT)"] = [40.0 + 20.0 * (i % 2) for i in range(n_u)]  # ahead on average, not surely
    unseen["Arrow top_k=3 (PEFT)"] = [30.0] * n_u  # surely below LoGo
    seen[logo_s] = [v - 6.0 for v in seen["oracle"]]  # 6 points under the oracle: misses oracle - 5
    rows = {(x[2].strip(), x[3].strip()): x[6].strip() for x in (line.split("|") for line in logo_eval.targets(r)[4:])}
    assert rows[(logo_u, "base")] == "yes" and rows[(logo_u, f"random k={r['k_unseen']}")] == "**no**"
    assert rows[(logo_s, "oracle")] == "**no**" and rows[(logo_u, "Arrow top_k=3 (PEFT)")] == "yes"
    assert n_u < 4 or rows[(logo_u, "Arrow top_k=1 (PEFT)")] == "**no**"
    peers = {"uniform (all adapters)", f"retrieval k={r['k_unseen']}", "LoraHub (5 examples per task)"}
    assert peers <= {b for (a, b) in rows if a == logo_u}
    # abstaining may cost the pool's own prompts 2 points at most: 3 points lost is a miss, 1 point is not
    never = f"{logo_s}, never abstaining"
    for lost, met in ((3.0, "**no**"), (1.0, "yes")):
        seen[never] = [v + lost for v in seen[logo_s]]
        rows = {(x[2].strip(), x[3].strip()): x[6].strip() for x in (ln.split("|") for ln in logo_eval.targets(r)[4:])}
        assert rows[(logo_s, never)] == met


def test_answers_are_kept_on_disk_and_a_rerun_generates_nothing(real_engine, tmp_path, monkeypatch):
    names = real_engine.adapters
    jobs = [("Spell out 19 in German.", {names[0]: 1.0}, 6), ("Convert 5 km to m.", {}, 6)]
    first = logo_eval.Runner(real_engine, 4, tmp_path).run(jobs, "first")
    monkeypatch.setattr(real_engine, "generate_batch", lambda *a, **k: pytest.fail("should come from the disk cache"))
    again = logo_eval.Runner(real_engine, 4, tmp_path).run(jobs, "again")
    assert again == first and len(list(tmp_path.glob("answers-*.jsonl"))) == 1
    (file,) = tmp_path.glob("answers-*.jsonl")
    with file.open("a", encoding="utf-8") as f:
        f.write('{"key": "cut mid-wri')  # a run killed while writing: the rest still resumes
    assert logo_eval.Runner(real_engine, 4, tmp_path).run(jobs, "resumed") == first
    other = dict(real_engine.provenance, adapters="another pool")
    monkeypatch.setattr(real_engine, "provenance", other)
    assert logo_eval.Runner(real_engine, 4, tmp_path).cache == {}  # another pool's answers are not reused


def test_jsonl_scoring(real_engine, tmp_path):
    rows = [{"context": "What is 12 + 30?", "completion": "42"}, {"context": "What is 50 - 8?", "completion": "42"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    out = logo_eval.score_jsonl(real_engine, path, "exact_match", max_new_tokens=8, batch_size=2)
    assert out["rows"] == 2 and set(out["scores"]) == {"base", "LoGo"}


def test_readme_says_when_the_evaluation_ran_with_another_routing_default(tmp_path, monkeypatch):
    """scripts/update_readme.py heads the evaluation's section with a note when adapters.yaml routes otherwise now."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "update_readme", Path(__file__).parents[1] / "scripts/update_readme.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "docs/eval").mkdir(parents=True)
    ran = {"signal": "norm", "module": ["q_proj", "v_proj"], "layer": "0:30", "abstain_below": 0.4}
    (tmp_path / "docs/eval/results.json").write_text(json.dumps({"shipped_default": ran}))
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    config = tmp_path / "adapters.yaml"
    config.write_text("defaults:\n  signal: norm\n  module: q_proj,v_proj\n  layer: '0:30'\n  abstain_below: 0.5\n")
    assert mod.eval_default_note() == ""  # the same routing (a threshold is not how a prompt is routed)
    config.write_text("defaults:\n  signal: subspace\n  module: q_proj,v_proj\n  layer: '0:30'\n")
    note = mod.eval_default_note()
    assert "previous routing default" in note and "signal norm -> subspace" in note and "module" not in note
    config.write_text("defaults:\n  signal: norm\n  module: q_proj,v_proj\n  layer: '0:30'\n  token_weight: 1.0\n")
    assert "token_weight None -> 1.0" in mod.eval_default_note()  # the token evidence routes too


def test_readme_marks_an_evaluation_of_other_weights_as_the_previous_pool(tmp_path, monkeypatch):
    """The README's evaluation tables describe the shipped pool only if `make eval` scored these very weights
    (`pool`, the lab's hash, recorded by the evaluation); retrained adapters under the same names mark them as the
    previous pool's. A run that predates the record is matched by names."""
    import importlib.util
    import shutil
    from pathlib import Path

    root = Path(__file__).parents[1]
    spec = importlib.util.spec_from_file_location("update_readme", root / "scripts/update_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from logo_core.lab import pool_hash
    from logo_core.registry import load_config

    for name in ("case_snake", "units_kg_g"):
        shutil.copytree(root / "assets/adapters" / name, tmp_path / "assets" / name)
    config = tmp_path / "adapters.yaml"
    config.write_text(
        "adapters:\n  - {name: case_snake, path: assets/case_snake}\n  - {name: units_kg_g, path: assets/units_kg_g}\n"
    )
    (tmp_path / "docs/eval").mkdir(parents=True)
    results = tmp_path / "docs/eval/results.json"
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    results.write_text(json.dumps({"adapters": ["case_snake", "units_kg_g"], "pool": pool_hash(load_config(config))}))
    assert mod.eval_matches_pool()
    weights = tmp_path / "assets/units_kg_g/adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-2] + b"\x00\x3c")  # one fp16 weight changed: a retrained adapter
    assert not mod.eval_matches_pool()
    results.write_text(json.dumps({"adapters": ["case_snake", "units_kg_g"]}))  # before the hash was recorded
    assert mod.eval_matches_pool()
    assert "previous pool" in mod.stale_note()
