"""The routing lab's arithmetic, the recipe search's plumbing and the merge schemes, without a model."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
import yaml

from logo_core import lab, merges
from logo_core.recipes import parse_recipe, table
from logo_core.train import lr_factor, recipe_key


def _signals(seed: int, P: int, L: int = 5, N: int = 3) -> torch.Tensor:
    return torch.rand(P, L, N, generator=torch.Generator().manual_seed(seed)) + 0.1


@pytest.mark.parametrize("how", lab.CALIBRATIONS)
def test_calibrations_match_their_formulas(how):
    sig, bg, ne = _signals(0, 4), _signals(1, 20), _signals(2, 6)
    blocks = slice(1, 4)
    s, b, n = sig[:, blocks], bg[:, blocks], ne[:, blocks]
    expected = {
        "raw": s.mean(1),
        "neutral": (s / n.mean(0)).mean(1),
        "bg_mean": (s / b.mean(0)).mean(1),
        "z_before": ((s - b.mean(0)) / b.std(0)).mean(1),
        "z_after": (s.mean(1) - b.mean(1).mean(0)) / b.mean(1).std(0),
        "z_wide": (s.mean(1) - torch.cat([b, n]).mean(1).mean(0)) / torch.cat([b, n]).mean(1).std(0),
        "percentile": torch.stack([(b.mean(1) < row).float().mean(0) for row in s.mean(1)]),
    }[how]
    torch.testing.assert_close(lab.calibrate(sig, bg, ne, how, blocks), expected)


def test_unknown_calibration_is_named():
    with pytest.raises(ValueError, match="`calibration` must be one of raw, neutral"):
        lab.calibrate(_signals(0, 2), _signals(1, 3), _signals(2, 3), "zz", slice(0, 2))


def test_bootstrap_interval_brackets_the_mean_and_paired_zero():
    x = torch.tensor([1.0] * 30 + [0.0] * 70)
    mean, lo, hi = lab.bootstrap(x)
    assert mean == pytest.approx(30.0) and lo < 30 < hi and hi - lo < 25
    assert lab.paired(x, x) == (0.0, 0.0, 0.0)
    d, dlo, dhi = lab.paired(torch.ones(50), torch.zeros(50))
    assert d == dlo == dhi == 100.0


def test_family_decision_keeps_families_together():
    """`family`: the family with the best mean score first, then its members by score."""

    class Pool:
        families = ["a", "a", "b", "b"]

    st = lab.Setting(decision="family")
    fake = lab.Lab.__new__(lab.Lab)
    fake.pool = Pool()
    scores = torch.tensor([[5.0, -3.0, 2.0, 1.9]])  # a: mean 1.0, b: mean 1.95 -> b first despite a's 5.0
    assert fake.ranking(st, scores, torch.tensor([0])).tolist() == [[2, 3, 0, 1]]
    assert fake.ranking(lab.Setting(), scores, torch.tensor([0])).tolist() == [[0, 2, 3, 1]]


def test_recipes_parse_and_name():
    args = parse_recipe("steps=150 lr=5e-3 schedule=cosine", argparse.Namespace(threads=1))
    assert (args.steps, args.lr, args.schedule, args.bf16) == (150, 5e-3, "cosine", True)
    assert recipe_key(args) == "steps150-b8-lr0.005-cosine-r8-a16-bf16-seed0"
    assert parse_recipe("bf16=0", argparse.Namespace(threads=1)).bf16 is False
    cells = {
        "x/v1/t1": dict(recipe="x", data="v1", task="t1", n_dev=8, dev=50.0, seconds=10.0),
        "x/v1/t2": dict(recipe="x", data="v1", task="t2", n_dev=8, dev=70.0, seconds=30.0),
    }
    cells["y/v1/t1"] = dict(recipe="y", data="v1", task="t1", n_dev=8, dev=90.0, seconds=50.0)
    cells["x/v2/t1"] = dict(recipe="x", data="v2", task="t1", n_dev=8, dev=80.0, seconds=10.0)  # new item spaces
    text = table(cells)
    assert "| `x` v1 | 50.0 | 70.0 | 60.0 | 50.0 | 20 |" in text and "90.0 (1 of 2 tasks)" in text
    assert "| `x` v2 | 80.0 |  | 80.0 (1 of 2 tasks) |" in text  # a row per (recipe, item spaces)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_schedule_warms_up_then_decays(schedule):
    f = [lr_factor(s, 100, schedule) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and max(f) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))  # never rises after warm-up
    assert f[-1] < (0.15 if schedule == "linear" else 0.01)


def test_merge_schemes():
    s = [2.0, 1.0, -0.5]
    assert merges.proportional(s) == pytest.approx([2 / 3, 1 / 3, 0.0])
    w = merges.softmax(0.5)(s)
    assert sum(w) == pytest.approx(1.0) and w[0] > w[1] > w[2] > 0
    assert merges.top_full(0.25)(s) == pytest.approx([1.0, 0.25 / 3, 0.0])


def test_family_schemes_merge_the_top_adapters_family_only():
    scores = {"fr": 3.0, "units": 2.5, "de": 2.0, "eo": 1.0, "ja": 0.5, "solo": 2.8}
    families = {"fr": "words", "de": "words", "eo": "words", "ja": "words", "units": "units", "solo": ""}
    selected = ["fr", "solo", "units"]  # the routing's top 3
    assert merges.pick("k3 proportional", scores, selected, families) == selected
    assert merges.pick("k1", scores, selected, families) == ["fr"]
    assert merges.pick("k3 family, proportional", scores, selected, families) == ["fr", "de", "eo"]
    assert merges.pick("k3 family, proportional", scores, ["solo"], families) == ["solo"]  # no family: itself
    assert merges.pick("k3 family, proportional", scores, [], families) == []  # abstained: the base model


def test_merge_report_by_unseen_family():
    tasks = [("a", "words", True), ("b", "words", True), ("c", "", True), ("d", "words", False)]

    def rows(scores):
        return [{"task": t, "family": f, "unseen": u, "score": s} for (t, f, u), s in zip(tasks, scores, strict=True)]

    text = merges.by_family({"k1": rows([0, 50, 100, 100]), "k3 x": rows([100, 50, 0, 0])})
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert lines["| words"].startswith("| words | 2 | 25.0") and "50.0" in lines["| words"].split(" | ")[3]
    assert lines["| c"].startswith("| c | 1 | 100.0") and "-100.0" in lines["| c"]  # no family: by task
    assert "| d" not in lines  # seen tasks are left out


def test_abstain_thresholds_of_both_rules():
    off = torch.linspace(0.0, 1.0, 21)  # off-pool dev maxima
    pool = torch.linspace(0.9, 3.0, 50)  # pool dev maxima, overlapping off-pool's top
    t = lab.thresholds(off, pool)
    assert (off < t["target"]).float().mean() >= 0.95  # at least 95% of off-pool questions abstain
    assert (off < t["target"] - 0.051).float().mean() < 0.95  # and it is the lowest such threshold
    separable = lab.thresholds(torch.tensor([0.0, 0.5]), torch.tensor([2.0, 3.0]))
    assert separable["balanced"] == pytest.approx(1.25)  # the midpoint of the gap
    assert separable["target"] == pytest.approx(1.25)  # the first threshold above every off-pool maximum
    # rounded as adapters.yaml stores them, the target rule upward: the lab reports the gate that ships
    fine = lab.thresholds(torch.tensor([0.93, 0.934]), torch.tensor([0.9351, 0.98]))  # exact target: 0.93455
    assert fine["target"] == 0.935 and fine["balanced"] == 0.935
    assert lab.thresholds(torch.tensor([0.9]), torch.tensor([0.97]))["target"] == 0.935  # 0.935 stays 0.935


def _gate_lab(off_norm, pool_norm, off_sub, pool_sub):
    """A lab whose best calibrated score per split is given for the `norm` and `subspace` signals."""
    prompts = [lab.Prompt("o", "", "", False, "offpool_dev")] * len(off_norm)
    prompts += [lab.Prompt("d", "t0", "f", False, "dev")] * len(pool_norm)
    fake = lab.Lab.__new__(lab.Lab)
    fake.prompts, fake.tokens = prompts, None
    fake.pool = lab.PoolFactors(["t0", "t1"], ["f", "f"], {}, {})
    fake.index = {s: torch.tensor([i for i, p in enumerate(prompts) if p.split == s]) for s in ("offpool_dev", "dev")}
    best = {"norm": torch.cat([off_norm, pool_norm]), "subspace": torch.cat([off_sub, pool_sub])}
    best["subspace_cos"] = best["subspace"] - 5  # the same order as subspace: ties broken by the routing signal
    fake.scores = lambda st, idx: torch.stack([best[st.variant][idx], torch.full((len(idx),), -9.0)], -1)
    return fake


def test_the_abstain_signal_is_the_one_that_loses_fewest_pool_dev_prompts():
    """Chosen on dev: each signal's own target threshold; the winner abstains on fewer pool dev prompts."""
    off = torch.linspace(0, 1, 20)
    separable, overlapping = torch.linspace(2, 3, 40), torch.linspace(0.5, 3, 40)
    st = lab.Setting("subspace", "both", "residual", "both", "z_after", "10:30")
    fake = _gate_lab(off, separable, off, overlapping)
    rows = {r["signal"]: r for r in lab.gate_rows(fake, st) if r["module"] == st.module}
    assert rows["norm"]["dev"] == 0 and rows["subspace"]["dev"] > 10 and rows["norm"]["offpool_dev"] > 94.99
    assert lab.choose_gate(list(rows.values()), st) == ("norm", "both")
    ab = lab.abstain(fake, st, "norm")
    assert ab["signal"] == "norm" and ab["threshold"] == pytest.approx(rows["norm"]["threshold"])
    assert ab["dev"][0] == 0 and ab["dev_lost"][0] == 0  # no pool prompt lost to the norm gate
    assert lab.abstain(fake, st)["dev_lost"][0] > 10  # the routing signal's own gate loses some
    assert lab.choose_gate(lab.gate_rows(_gate_lab(off, overlapping, off, separable), st), st) == ("subspace", "both")
    assert lab.choose_gate(lab.gate_rows(_gate_lab(off, separable, off, separable), st), st) == (
        "subspace",
        "both",
    )  # tie: the routing signal on the routing modules
    fields = lab.library_defaults(st, ab["threshold"], 4, ab["signal"], ab["module"])
    assert fields["abstain_signal"] == "norm" and fields["signal"] == "subspace" and fields["abstain_module"] == "same"
    assert lab.library_defaults(st, 0.5, 4, "subspace")["abstain_signal"] == "same"


def test_the_abstain_gate_may_read_other_modules_than_routing():
    """The gate's modules are chosen on dev too: routing reads v_proj, but if q_proj and v_proj together tell pool
    prompts from off-pool ones, that gate wins, is what `abstain` thresholds, and adapters.yaml names it."""
    off = torch.linspace(0, 1, 20)
    separable, overlapping = torch.linspace(2, 3, 40), torch.linspace(0.5, 3, 40)
    st = lab.Setting("subspace", "v_proj", "residual", "both", "z_after", "0:30")
    fake = _gate_lab(off, overlapping, off, overlapping)
    fake.scores = lambda s, idx: torch.stack(  # only the gate on both modules separates
        [torch.cat([off, separable if s.module == "both" else overlapping])[idx], torch.full((len(idx),), -9.0)], -1
    )
    rows = lab.gate_rows(fake, st)
    assert {(r["signal"], r["module"]) for r in rows} == {
        (v, m) for v in lab.LIBRARY_SIGNALS for m in ("v_proj", "both", "q_proj")
    }
    assert lab.choose_gate(rows, st) == ("subspace", "both")  # the routing signal wins the tie among signals
    ab = lab.abstain(fake, st, lab.choose_gate(rows, st))
    assert ab["module"] == "both" and ab["dev"][0] == 0
    fields = lab.library_defaults(st, ab["threshold"], 4, ab["signal"], ab["module"])
    assert fields["abstain_module"] == "q_proj,v_proj" and fields["module"] == "v_proj"
    assert fields["abstain_signal"] == "same"


def test_unseen_tasks_one_by_one_count_family_hits_abstentions_and_both():
    """Where the unseen family hit is lost: per unseen task (whose family has adapters) the top-1's family, the
    gate's abstentions (threshold or too short), both together, and the adapters most often on top; seen tasks and
    unseen tasks of a family without adapters are left out."""
    prompts = [lab.Prompt(f"u{i}", "f_new", "f", True, "test") for i in range(4)]
    prompts += [lab.Prompt("s", "f_a", "f", False, "test"), lab.Prompt("o", "g_new", "g", True, "test")]
    fake = lab.Lab.__new__(lab.Lab)
    fake.prompts, fake.tokens = prompts, torch.tensor([9, 9, 9, 2, 9, 9])
    fake.pool = lab.PoolFactors(["f_a", "f_b", "h_a"], ["f", "f", "h"], {}, {})
    fake.index = {"test": torch.arange(len(prompts))}
    table = torch.tensor([[3.0, 1, 0], [1, 4, 0], [0, 1, 5], [2, 0, 1], [5, 0, 0], [0, 0, 5]])
    fake.scores = lambda st, idx: table[idx]  # u0 -> f_a, u1 -> f_b (under the threshold), u2 -> h_a, u3 short
    st = lab.Setting("subspace", "both", "residual", "both", "z_after", "0:30")
    ab = {"signal": "subspace", "module": "both", "threshold": 4.5, "min_tokens": 3}
    (row,) = lab.unseen_by_task(fake, st, ab, "test")
    assert (row["task"], row["n"], row["hit"], row["abstained"], row["both"]) == ("f_new", 4, 3, 3, 0)
    assert row["top"] == [("f_a", 2), ("f_b", 1)]
    ab["threshold"] = 0.5
    (row,) = lab.unseen_by_task(fake, st, ab, "test")
    assert (row["abstained"], row["both"]) == (1, 2)  # only the short prompt abstains


def test_rescore_reuses_the_grid_of_this_pool_only(tmp_path):
    rows = [{"setting": lab.asdict(lab.Setting()), "own_top1": 50.0, "family_hit": 90.0, "people_top1": 40.0}]
    rows.append({**rows[0], "setting": lab.asdict(lab.Setting("subspace")), "own_top1": 60.0})
    (tmp_path / "results.json").write_text(lab.json.dumps({"dev_grid": rows, "pool": "abc"}))
    best, got = lab.previous_grid(tmp_path, "abc")
    assert best == lab.Setting("subspace") and [r["setting"] for r in got] == [lab.Setting(), best]
    with pytest.raises(ValueError, match="scored on pool abc, not this one \\(def\\)"):
        lab.previous_grid(tmp_path, "def")
    with pytest.raises(ValueError, match="does not exist"):
        lab.previous_grid(tmp_path / "none", "abc")


def test_min_tokens_is_the_shortest_dev_pool_prompt_and_abstains_alongside_the_threshold():
    """`abstain_min_tokens` comes from dev pool prompts only; a short off-pool prompt abstains whatever its score."""
    prompts = [lab.Prompt("d", "t0", "f", False, "dev")] * 2 + [lab.Prompt("s", "", "", False, "short_test")] * 2
    prompts += [lab.Prompt("o", "", "", False, "offpool_dev")]
    fake = lab.Lab.__new__(lab.Lab)
    fake.prompts, fake.tokens = prompts, torch.tensor([5, 9, 2, 6, 1])
    fake.index = {s: torch.tensor([i for i, p in enumerate(prompts) if p.split == s]) for s in ("dev", "short_test")}
    assert lab.min_tokens(fake) == 5  # the shorter dev prompt; the 1-token off-pool prompt does not count
    fake.tokens = None
    assert lab.min_tokens(fake) == 0  # no counts: never abstain on length


def test_apply_writes_the_chosen_setting_into_the_defaults_block(tmp_path):
    config = tmp_path / "adapters.yaml"
    shipped = (Path(__file__).resolve().parents[1] / "adapters.yaml").read_text(encoding="utf-8")
    config.write_text(shipped, encoding="utf-8")
    st = lab.Setting("norm", "v_proj", "residual", "mean", "z_after", "10:30")
    lab.apply_defaults(config, lab.library_defaults(st, 1.23456, 7))
    text = config.read_text(encoding="utf-8")
    d = yaml.safe_load(text)["defaults"]
    got = (d["layer"], d["module"], d["pooling"], d["calibration"], d["abstain_below"], d["abstain_min_tokens"])
    assert got == ("10:30", "v_proj", "mean", "background", 1.235, 7)
    assert d["k"] == yaml.safe_load(shipped)["defaults"]["k"] and "# the lab's dev choice" in text  # rest kept
    assert yaml.safe_load(text)["adapters"] == yaml.safe_load(shipped)["adapters"]
    with pytest.raises(ValueError, match="which the library does not run"):
        lab.library_defaults(lab.Setting("whitened"), 0.5)


@pytest.mark.parametrize(
    "st",
    [
        lab.Setting("norm", "v_proj", "residual", "mean", "z_after", "10:30"),
        lab.Setting("norm", "both", "module", "both", "neutral", "0:30"),
        lab.Setting("subspace_cos", "both", "module", "both", "z_after", "0:30"),
        lab.Setting("subspace", "both", "residual", "both", "z_after", "0:30", "flat", 0.15),
        lab.Setting("subspace", "both", "residual", "both", "z_after", "0:30", "flat", 0.2, "0:10", 1.5),
        lab.Setting("subspace", "both", "residual", "both", "z_after", "0:30", "flat", 0.2, "0:10", 1.0, "recency"),
        lab.NAMED["paper"],
    ],
    ids=lambda st: st.name,
)
def test_library_setting_reads_back_what_apply_wrote(tmp_path, st):
    from logo_core.registry import load_config

    config = tmp_path / "adapters.yaml"
    config.write_text((Path(__file__).resolve().parents[1] / "adapters.yaml").read_text(encoding="utf-8"))
    lab.apply_defaults(config, lab.library_defaults(st, 0.5))
    assert lab.library_setting(load_config(config).defaults) == st  # what ideas.py pairs against


def test_library_setting_names_defaults_the_lab_cannot_score():
    from logo_core.registry import Defaults

    with pytest.raises(ValueError, match="`layer`"):
        lab.library_setting(Defaults(layer="3,5"))
    with pytest.raises(ValueError, match="calibration"):
        lab.library_setting(Defaults(signal="entropy", layer="0:30"))
    with pytest.raises(ValueError, match="`token_layer`"):  # blocks with a gap are no one range
        lab.library_setting(Defaults(layer="0:30", calibration="background", token_weight=1.0, token_layer="2,5"))
    consecutive = lab.library_setting(
        Defaults(layer="0:30", calibration="background", token_weight=1.0, token_layer="2,3,4")
    )
    assert consecutive.tokens == "2:5" and consecutive.blocks == "0:30"


def test_offpool_sets_are_text_and_a_non_string_entry_is_named(tmp_path, monkeypatch):
    sets = lab.offpool_prompts()
    assert {"dev", "test", "short_dev", "short_test"} <= set(sets)
    assert all(isinstance(t, str) and t for texts in sets.values() for t in texts)
    bad = tmp_path / "offpool.yaml"
    bad.write_text("short_dev:\n- Hi!\n- yes\n", encoding="utf-8")  # YAML 1.1: yes is a boolean
    monkeypatch.setattr(lab, "OFFPOOL", bad)
    with pytest.raises(ValueError, match=r"`short_dev` holds \[True\], not text; quote it"):
        lab.offpool_prompts()


def test_whitening_decorrelates_the_background_and_shrinks_to_a_rescale():
    from logo_core.ideas import whiten

    g = torch.Generator().manual_seed(0)
    bg = torch.randn(400, 3, generator=g) @ torch.tensor([[1.0, 0.9, 0.0], [0.0, 0.4, 0.0], [0.0, 0.0, 2.0]])
    full = whiten(bg, bg, 0.0)  # no shrinkage: the background's own covariance becomes the identity
    torch.testing.assert_close(torch.cov(full.T), torch.eye(3), atol=1e-4, rtol=0)
    diag = whiten(bg, bg, 1.0)  # all shrinkage: each score centred and divided by its own spread, no mixing
    torch.testing.assert_close(diag, (bg - bg.mean(0)) / bg.std(0), atol=1e-4, rtol=0)


def test_the_lab_ranks_by_template_and_people_style_dev_prompts_alike():
    a = {"own_top1": 90.0, "people_top1": 60.0, "family_hit": 99.0}  # great on templates, poor as people ask
    b = {"own_top1": 84.0, "people_top1": 70.0, "family_hit": 98.0}
    assert lab.rank(a) == (75.0, 99.0) and lab.rank(b) == (77.0, 98.0)
    assert sorted([a, b], key=lab.order) == [b, a]
    assert lab.rank({"own_top1": 80.0, "family_hit": 90.0}) == (80.0, 90.0)  # no people_dev prompts: templates alone


def test_self_trained_centroids_follow_the_routers_own_top1():
    from logo_core.ideas import self_trained

    bg = torch.tensor([[3.0, 0.0, 1.0], [2.0, 0.5, 1.5], [0.0, 4.0, 0.0]])  # adapter 2 is never anyone's top-1
    sim = self_trained(torch.tensor([[2.5, 0.2, 1.2], [0.0, 1.0, 0.0]]), bg)
    assert sim.argmax(-1).tolist() == [0, 1] and (sim[:, 2] == -1).all()
    centroid0 = torch.nn.functional.normalize(bg[:2].mean(0), dim=0)  # the mean of the prompts it won
    torch.testing.assert_close(
        sim[0, 0], torch.nn.functional.normalize(torch.tensor([2.5, 0.2, 1.2]), dim=0) @ centroid0
    )


def test_confidence_rules_pick_by_score_by_confidence_or_both():
    from logo_core.ideas import confidence_rows

    out = [  # the right adapter "a" scores lower but answers far more confidently
        {
            "task": "a",
            "scores": {"b": 1.0, "a": 0.9},
            "cand": {"b": {"lps": [-3.0], "score": 0.0}, "a": {"lps": [-0.1], "score": 100.0}},
        }
    ] * 4
    rows = {r["rule"]: r for r in confidence_rows(out)}
    assert rows["default (top score)"]["own_top1"][0] == 0.0 and rows["confidence alone"]["own_top1"][0] == 100.0
    assert rows["score + 1 x confidence"]["task"][0] == 100.0  # 0.9 - 0.1 > 1.0 - 3.0
    assert rows["confidence alone"]["task_vs_default"][0] == 100.0
    assert rows["best of the three answers (a ceiling no rule can see)"]["task"][0] == 100.0


def test_the_readme_shows_the_shipped_defaults():
    """README's adapters.yaml example carries adapters.yaml's `defaults:` as they are (the lab's `--apply`
    rewrites adapters.yaml; a README left behind would teach an earlier default)."""
    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```yaml\n(.*?)```", (root / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    shown = [yaml.safe_load(b)["defaults"] for b in blocks if re.search(r"^defaults:", b, re.MULTILINE)]
    shipped = yaml.safe_load((root / "adapters.yaml").read_text(encoding="utf-8"))["defaults"]
    assert shown == [shipped]


def test_update_readme_writes_the_shipped_defaults_into_the_readme():
    """scripts/update_readme.py (run by `make pool-ship` after `lab --apply`) rewrites the README's defaults
    mapping from adapters.yaml: whatever values it holds, the block reads back as them."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("update_readme", root / "scripts/update_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for d in (
        {"k": 3, "layer": "10:30", "module": "q_proj,v_proj", "calibrated": False, "abstain_below": -0.25},
        {"k": 1, "signal": "subspace_cos", "layer": -1, "abstain_signal": "same", "max_new_tokens": 64} | {"x": "a b"},
    ):
        assert yaml.safe_load(mod.defaults_block(d)) == {"defaults": d}
        assert all(len(line) <= 110 for line in mod.defaults_block(d).splitlines())
    stale = "```yaml\nbase_model: {id: default}\ndefaults: {k: 9,\n           layer: -1}\nadapters: []\n```\n"
    synced = mod.sync_defaults(stale)
    shipped = yaml.safe_load((root / "adapters.yaml").read_text(encoding="utf-8"))["defaults"]
    assert yaml.safe_load(synced.split("```yaml\n")[1].split("```")[0])["defaults"] == shipped
    assert synced.startswith("```yaml\nbase_model: {id: default}\n") and synced.endswith("adapters: []\n```\n")


@pytest.mark.parametrize("variant", ["norm", "centred", "whitened", "contrast_pool", "contrast_family"])
def test_block_signals_are_the_norms_of_the_adapters_outputs(variant):
    """The lab's per-block signals (the `norm`-like ones through B's Gram matrix, the fast way) equal the norm of
    every adapter's explicit output s B A h, on the input each variant defines (raw, centred on the background's
    mean, or also whitened by its shrunk covariance, ZCA)."""
    from logo_core.signals import lora_outputs

    torch.manual_seed(0)
    P, L_, N, R, D, D_out = 7, 2, 4, 3, 16, 5
    A, B = torch.randn(L_, N, R, D), torch.randn(L_, N, D_out, R)
    pool = lab.PoolFactors([f"t{i}" for i in range(N)], ["f", "f", "g", "g"], {"q_proj": A}, {"q_proj": B})
    x, bg = torch.randn(P, L_, D), torch.randn(9, L_, D) + 0.5
    got = lab.block_signals(x, pool, bg, variant, "q_proj", chunk=3)
    for layer in range(L_):
        h, hb = x[:, layer], bg[:, layer]
        if variant in ("centred", "whitened"):
            h = h - hb.mean(0)
        if variant == "whitened":
            cov = torch.cov((hb - hb.mean(0)).T)
            ev, U = torch.linalg.eigh(0.5 * cov + 0.5 * cov.trace() / D * torch.eye(D))
            h = h @ (U @ torch.diag(ev.rsqrt()) @ U.T) * (cov.trace() / D).sqrt()
        o = lora_outputs(h, A[layer], B[layer])  # [P, N, O]
        if variant == "contrast_pool":
            o = o - o.mean(1, keepdim=True)
        if variant == "contrast_family":
            o = o - torch.stack([o[:, :2].mean(1)] * 2 + [o[:, 2:].mean(1)] * 2, 1)
        torch.testing.assert_close(got[:, layer], o.norm(dim=-1), rtol=1e-4, atol=1e-4)


def test_recipe_cells_from_a_pool_folder(tmp_path, monkeypatch):
    """`recipes --pool DIR`: each finished adapter becomes a cell of the recipe its loss log names (the later run
    when a task was trained twice), an unfinished one is skipped, and a cell already scored is not scored again."""
    import json

    from logo_core import recipes

    scored = []
    monkeypatch.setattr(recipes, "score_dev", lambda name, path, n: scored.append((name, path.name)) or 50.0 + n)
    pool, out = tmp_path / "pool", tmp_path / "cache.json"
    for name in ("date_fr", "money_de"):
        (pool / name).mkdir(parents=True)
        (pool / name / "adapter_model.safetensors").write_bytes(b"x")
    (pool / "units_km_m").mkdir()  # interrupted: no weights yet
    log = [
        {"task": "date_fr", "recipe": "steps150-old", "seconds": 1.0, "threads": 1, "losses": [9.0]},
        {"task": "date_fr", "recipe": "steps300-new", "seconds": 2.0, "threads": 2, "losses": [4.0] * 5 + [1.0] * 10},
        {"task": "money_de", "recipe": "steps300-new", "seconds": 3.0, "threads": 2, "losses": [2.0]},
        {"task": "units_km_m", "recipe": "steps300-new", "seconds": 3.0, "threads": 2, "losses": [2.0]},
    ]
    (pool / "losses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    cache = recipes.from_pool(pool, None, 24, out)
    assert set(cache) == {f"steps300-new/{recipes.DATA}/date_fr", f"steps300-new/{recipes.DATA}/money_de"}
    cell = cache[f"steps300-new/{recipes.DATA}/date_fr"]
    assert (cell["dev"], cell["loss"], cell["seconds"], cell["n_dev"]) == (74.0, 1.0, 2.0, 24)
    assert json.loads(out.read_text()) == cache
    recipes.from_pool(pool, ["date_fr"], 24, out)  # cached: nothing scored again
    assert scored == [("date_fr", "date_fr"), ("money_de", "money_de")]
    assert "steps300-new" in recipes.table(cache)


def test_rule_lines_pair_each_rule_against_the_default_on_the_same_prompts():
    """`ideas.rule_lines`: the default's row differs from itself by 0, a rule that always picks the wrong adapter
    loses all of the default's own top-1 hits, and unseen prompts count toward the family hit only."""
    from logo_core.ideas import pooling_labs, rule_lines

    prompts = [
        lab.Prompt("a", "t0", "f", False, "dev"),
        lab.Prompt("b", "t1", "f", False, "dev"),
        lab.Prompt("c", "", "g", True, "dev"),
    ]
    pool = lab.PoolFactors(["t0", "t1", "t2"], ["f", "f", "g"], {}, {})
    labs = pooling_labs(prompts, torch.zeros(3, 1, 2, 4), pool, ["last", "mean"])
    assert set(labs) == {"last", "mean"} and labs["mean"].vectors.shape == (3, 1, 2, 2, 4)
    right = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])  # own adapter, own adapter, the unseen one's family
    wrong = torch.tensor([[0.0, 1, 0], [1, 0, 0], [1, 0, 0]])
    lines = rule_lines(labs["last"], {"default": right, "swapped": wrong}, "dev", "default")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0][:2] == ["dev", "default"] and cells[0][2].startswith("100.0") and cells[0][3].startswith("0.0")
    assert cells[1][2].startswith("0.0") and cells[1][3].startswith("-100.0")  # own top-1, paired
    assert cells[1][4].startswith("0.0") and cells[1][5].startswith("-100.0")  # unseen family hit, paired


def test_the_lab_decorrelates_as_the_router_and_tries_each_strength_once(monkeypatch):
    """`Setting.decorrelate`: the lab's scores are `calibration.decorrelate` of the flat setting's, with the stats of
    the background's scores under it; `decorrelated_rows` tries the best z_after settings once each (the grid holds
    named settings twice) at every strength; other calibrations are refused by name."""
    from logo_core.calibration import decorrelate, decorrelation_stats

    g = torch.Generator().manual_seed(0)
    flat = lab.Setting("norm", "both", "residual", "both", "z_after", "0:30")

    class Fake(lab.Lab):
        """Flat scores given directly: four adapters that rise together over 30 background and 10 dev prompts."""

        def __init__(self):
            self.index = {"background": torch.arange(0, 30), "dev": torch.arange(30, 40)}
            self._signals = {}
            self.raw = torch.randn(40, 1, generator=g) + 0.5 * torch.randn(40, 4, generator=g)

        def scores(self, st, idx):
            return super().scores(st, idx) if st.decorrelate else self.raw[idx]

    fake, a = Fake(), 0.5
    got = fake.scores(lab.replace(flat, decorrelate=a), fake.index["dev"])
    torch.testing.assert_close(got, decorrelate(fake.raw[30:], decorrelation_stats(fake.raw[:30], a)))
    assert not torch.allclose(got, (fake.raw[30:] - fake.raw[:30].mean(0)) / fake.raw[:30].std(0))  # it mixes
    assert lab.replace(flat, decorrelate=a).name == flat.name + "/decorrelate 0.5"
    with pytest.raises(ValueError, match="`decorrelate` needs calibration z_after"):
        fake.scores(lab.replace(flat, calibration="neutral", decorrelate=a), fake.index["dev"])
    rows = [{"setting": st, "own_top1": 50.0, "family_hit": 90.0} for st in (flat, flat)]
    rows.append({**rows[0], "setting": lab.replace(flat, calibration="neutral")})
    seen = []
    monkeypatch.setattr(lab, "dev_row", lambda lab_, st: seen.append(st) or {"setting": st})
    lab.decorrelated_rows(fake, rows)
    assert seen == [lab.replace(flat, decorrelate=x) for x in lab.DECORRELATE]  # once each, z_after only


def test_the_nearest_gate_reads_the_similarity_to_the_background_and_can_win():
    """`nearest` at each block is a gate candidate: the cosine similarity of a prompt's residual mean to its nearest
    background prompt (checked against numpy). Where only block 1 tells pool prompts (near the background) from
    off-pool ones (orthogonal to it), the nearest gate at block 1 wins, abstains on no pool dev prompt, and
    adapters.yaml gets `abstain_signal: nearest`, `abstain_layer: 1`."""
    import numpy as np

    n_off, n_dev, n_bg, L, D = 20, 40, 10, 3, 6
    g = torch.Generator().manual_seed(0)
    off = torch.linspace(0, 1, n_off)
    fake = _gate_lab(off, torch.linspace(0.5, 3, n_dev), off, torch.linspace(0.5, 3, n_dev))  # both signals overlap
    fake.prompts = fake.prompts + [lab.Prompt("b", "", "", False, "background")] * n_bg
    fake.index["background"] = torch.arange(n_off + n_dev, n_off + n_dev + n_bg)
    x = torch.randn(n_off + n_dev + n_bg, L, 2, 2, D, generator=g)
    e = torch.eye(D)
    x[n_off:, 1, 0, 1] = 3 * e[0] + 0.3 * torch.randn(n_dev + n_bg, D, generator=g)  # pool and background: along e0
    x[:n_off, 1, 0, 1] = 3 * e[1] + 0.3 * torch.randn(n_off, D, generator=g)  # off-pool: along e1
    fake.vectors = x
    st = lab.Setting("subspace", "both", "residual", "both", "z_after", "0:3")

    v = x[:, 1, 0, 1].numpy()
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    want = (v[fake.index["dev"]] @ v[fake.index["background"]].T).max(1)
    np.testing.assert_allclose(lab.nearest_margin(fake, 1, "dev").numpy(), want, rtol=1e-5)

    rows = lab.gate_rows(fake, st)
    assert {r["module"] for r in rows if r["signal"] == "nearest"} == {0, 1, 2}
    assert lab.choose_gate(rows, st) == ("nearest", 1)
    ab = lab.abstain(fake, st, ("nearest", 1))
    assert ab["dev"][0] == 0 and ab["offpool_dev"][0] >= 95  # the target rule: the lowest threshold at 95%
    fields = lab.library_defaults(st, ab["threshold"], 4, ab["signal"], ab["module"])
    assert (fields["abstain_signal"], fields["abstain_layer"], fields["abstain_module"]) == ("nearest", 1, "same")
    assert lab.library_defaults(st, 0.5, 4, "norm", "both")["abstain_layer"] is None


def test_token_evidence_is_the_z_scored_block_mean_of_the_token_signals_added_to_the_score(monkeypatch):
    """`Setting.tokens` / `token_weight`: score = the setting's score without it + w * t, t each module's token signal
    averaged over the `tokens` blocks and z-scored against the background prompts, averaged over the modules (the
    router's `token_scores`); only with z_after, and only when the lab has token signals."""
    P, L, N = 9, lab.TOKEN_BLOCKS, 3
    prompts = [lab.Prompt(f"p{i}", "", "", False, "background" if i < 6 else "dev") for i in range(P)]
    keys = [m + s for m in lab.MODULES for s in ("", "@recency")]
    sig = {k: torch.rand(P, L, N, generator=torch.Generator().manual_seed(i)) for i, k in enumerate(keys)}
    fake = lab.Lab(prompts, torch.zeros(P, 1, 2, 2, 4), None, token_signals=lambda v, i: sig)
    base = torch.rand(P, N, generator=torch.Generator().manual_seed(7))
    plain = lambda st, idx: base[idx]  # noqa: E731
    st = lab.Setting("subspace", "both", "residual", "both", "z_after", "0:30", "flat", 0.0, "2:5", 0.8)
    assert st.name.endswith("/tokens 2:5 x0.8")
    fake_scores = lab.Lab.scores

    def scores(self, s, idx):
        return plain(s, idx) if not s.token_weight else fake_scores(self, s, idx)

    monkeypatch.setattr(lab.Lab, "scores", scores)  # the score without token evidence: `base`
    idx = fake.index["dev"]
    want = []
    for m in lab.MODULES:
        raw = sig[m][:, 2:5].mean(1)
        bg = raw[:6]
        want.append((raw[idx] - bg.mean(0)) / bg.std(0))
    torch.testing.assert_close(fake.scores(st, idx), base[idx] + 0.8 * torch.stack(want).mean(0))
    recent = lab.replace(st, token_pooling="recency")  # the same from the recency-weighted token means
    want = []
    for m in lab.MODULES:
        raw = sig[m + "@recency"][:, 2:5].mean(1)
        want.append((raw[idx] - raw[:6].mean(0)) / raw[:6].std(0))
    torch.testing.assert_close(fake.scores(recent, idx), base[idx] + 0.8 * torch.stack(want).mean(0))
    assert recent.name.endswith("/tokens 2:5 x0.8 recency")
    with pytest.raises(ValueError, match="token evidence needs calibration z_after"):
        fake.token_z(lab.Setting(tokens="0:4", token_weight=1.0), idx)
    assert lab.token_rows(lab.Lab(prompts, torch.zeros(P, 1, 2, 2, 4), None), st) == []  # no token signals
