"""The shipped pool answers right: every adapter beats the base model on its own task's test prompts, and the
prompts a visitor sees first (each adapter's first example in the app's Examples, the README's prompts) come
out right with their own adapter."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest
from num2words import num2words

from logo_core.eval import Runner, max_tokens
from logo_core.tasks import TASKS

pytestmark = pytest.mark.slow  # the real model and the whole pool

N = 6  # test prompts per task: 288 answers of each condition, two engine batches of mixed adapters each
MARGIN = 30.0  # points (0-100) an adapter must add to the base model on its own task, in every family


def answers(engine, jobs: list[tuple[str, dict, int]]) -> list[str]:
    """Greedy answers of (prompt, mixture, max_new_tokens) jobs, many adapters in one batch."""
    return Runner(engine, batch_size=48).run(jobs, "pool answers")


@pytest.fixture(scope="module")
def own_and_base(real_engine):
    """Per pool task: (mean score with its own adapter, mean score of the base model) on N test prompts."""
    tasks = [TASKS[n] for n in real_engine.adapters if n in TASKS]
    rows = [(t, ex) for t in tasks for ex in t.examples("test", N)]
    length = {t.name: max_tokens(t.examples("test", N), real_engine.tokenizer) for t in tasks}
    own = answers(real_engine, [(ex.prompt, {t.name: 1.0}, length[t.name]) for t, ex in rows])
    base = answers(real_engine, [(ex.prompt, {}, length[t.name]) for t, ex in rows])
    out: dict[str, tuple[list, list]] = {t.name: ([], []) for t in tasks}
    for (t, ex), a, b in zip(rows, own, base):
        out[t.name][0].append(t.score(a, ex.answer))
        out[t.name][1].append(t.score(b, ex.answer))
    return {name: (statistics.fmean(a), statistics.fmean(b)) for name, (a, b) in out.items()}


def test_every_adapter_beats_the_base_model_on_its_own_task(own_and_base, real_engine):
    assert len(own_and_base) == len(real_engine.adapters)  # every shipped adapter has its task
    short = {n: (round(a, 1), round(b, 1)) for n, (a, b) in own_and_base.items() if a - b < MARGIN}
    assert not short, f"adapters less than {MARGIN} points above the base model (adapter, base): {short}"
    by_family: dict[str, list[float]] = {}
    for name, (a, b) in own_and_base.items():
        by_family.setdefault(TASKS[name].family, []).append(a - b)
    assert all(min(v) >= MARGIN for v in by_family.values()), by_family


README = Path(__file__).resolve().parent.parent / "README.md"
# Every prompt of the README's code, with its own adapter and the right answer (from the task's package);
# OFF_POOL: prompts that no adapter is for (they show routing and abstaining, not an adapter's answer).
README_PROMPTS = {
    "Write the number 342 in French words.": ("number_words_fr", num2words(342, lang="fr")),
    "How do you say 8 in German? Answer in words.": ("number_words_de", num2words(8, lang="de")),
}
OFF_POOL = {"What is 47 + 38?", "..."}


def test_each_adapters_first_example_answers_right(real_engine):
    specs = [s for s in real_engine.pool.specs if s.name in TASKS]
    assert len(specs) == len(real_engine.adapters)
    refs = []
    for spec in specs:  # the reference answer: the example is one of its task's training prompts
        by_prompt = {ex.prompt: ex for ex in TASKS[spec.name].example_candidates()}
        assert spec.examples and spec.examples[0] in by_prompt, f"{spec.name}: first example not from its task"
        refs.append(by_prompt[spec.examples[0]])
    n = max_tokens(refs, real_engine.tokenizer)
    got = answers(real_engine, [(ex.prompt, {s.name: 1.0}, n) for s, ex in zip(specs, refs)])
    wrong = {
        s.name: (ex.prompt, a, ex.answer)
        for s, ex, a in zip(specs, refs, got)
        if TASKS[s.name].score(a, ex.answer) < 100
    }
    assert not wrong, f"first examples answered wrong by their own adapter (prompt, answer, right): {wrong}"


def test_the_readmes_prompts_answer_right_with_their_own_adapter(real_engine):
    text = README.read_text(encoding="utf-8")
    shown = set(re.findall(r'(?:route|generate|stream)\("([^"]+)"', text)) | set(
        re.findall(r'--prompt "([^"]+)"', text)
    )
    assert shown - OFF_POOL == set(README_PROMPTS), "a README prompt without its adapter and answer here"
    prompts = list(README_PROMPTS)
    got = answers(real_engine, [(p, {README_PROMPTS[p][0]: 1.0}, 24) for p in prompts])
    wrong = {p: a for p, a in zip(prompts, got) if a.strip() != README_PROMPTS[p][1]}
    assert not wrong, f"README prompts answered wrong by their own adapter: {wrong}"


def test_dev_scores_table_lists_the_weakest_first_and_marks_the_rule():
    """The replacement rule's table (scripts/dev_scores.py): weakest adapter first, an interval on each score,
    'yes' exactly under the bar, and the mean and worst over the adapters."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "dev_scores.py"
    spec = importlib.util.spec_from_file_location("dev_scores", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cache = {
        "a": {"task": "a", "family": "f", "scores": [100.0, 100.0, 60.0, 100.0]},  # 90
        "b": {"task": "b", "family": "f", "scores": [0.0, 100.0, 100.0, 100.0]},  # 75
        "c": {"task": "c", "family": "g", "scores": [80.0, 80.0, 80.0, 80.0]},  # 80: at the bar, not under it
    }
    rows = [
        line.split(" | ") for line in mod.table(cache, 80.0).splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert [r[0] for r in rows[1:]] == ["| b", "| c", "| a"]
    assert rows[1][2].startswith("75.0 [") and rows[1][3] == "yes |" and rows[2][3] == " |"
    assert "Mean over 3 adapters: 81.7; worst 75.0." in mod.table(cache, 80.0)


def test_targets_table_reads_one_evaluation_run_and_pairs_dev_scores_of_the_same_weights(tmp_path):
    """docs/pool.md's issue-22 figures: the oracle's mean over every prompt, the tasks under the bar worst first,
    and a dev score only where it was measured on the weights that are shipped now."""
    import hashlib
    import json

    from logo_core.tasks.check import targets_table

    for name, payload in (("inflect_past", b"x" * 1000), ("translit_be", b"y" * 2000), ("date_fr", b"z" * 3000)):
        (tmp_path / "pool" / name).mkdir(parents=True)
        (tmp_path / "pool" / name / "adapter_model.safetensors").write_bytes(payload)
    seen = ["date_fr", "translit_be", "inflect_past"]
    results = {
        "n_test": 2,
        "seen_tasks": seen,
        "pool": "abc",
        "per_prompt": {"seen": {"oracle": [100.0, 100.0, 80.0, 50.0, 0.0, 100.0], "base": [0.0] * 6}},
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    digest = hashlib.sha256(b"x" * 1000).hexdigest()[:16]
    dev = {
        "inflect_past": {"task": "inflect_past", "family": "inflect", "digest": digest, "scores": [100.0, 60.0]},
        "translit_be": {"task": "translit_be", "family": "translit", "digest": "stale", "scores": [90.0, 90.0]},
    }
    (tmp_path / "dev.json").write_text(json.dumps(dev))
    text = targets_table(tmp_path / "results.json", tmp_path / "dev.json", tmp_path / "pool")
    assert "| oracle, average over 3 tasks | 71.7 [" in text and "| oracle, tasks under 70 | 2 of 3 |" in text
    assert "| pool on disk | 0 MB |" in text
    rows = [line for line in text.splitlines() if line.startswith(("| inflect_past", "| translit_be", "| date_fr"))]
    assert rows[0].startswith("| inflect_past | inflect | 50.0 [") and "| 80.0 [" in rows[0]
    assert rows[1].startswith("| translit_be | translit | 65.0 [") and rows[1].endswith("| not scored |")
    assert len(rows) == 2  # date_fr (100) is not under the bar
    # Measured again on more test prompts: a task under the bar there alone gets a row too.
    payloads = {"inflect_past": b"x" * 1000, "translit_be": b"y" * 2000, "date_fr": b"z" * 3000}
    more = {
        t: {"task": t, "digest": hashlib.sha256(b).hexdigest()[:16], "scores": s}
        for (t, b), s in zip(payloads.items(), ([100.0, 100.0, 40.0], [80.0, 80.0, 80.0], [50.0, 60.0, 70.0]))
    }
    (tmp_path / "more.json").write_text(json.dumps(more))
    text = targets_table(
        tmp_path / "results.json", tmp_path / "dev.json", tmp_path / "pool", test_scores=tmp_path / "more.json"
    )
    assert (
        "| oracle, average on 3 test prompts per task" in text
        and "the evaluation's 2 among them, scored the same on 2 of 6) | 73.3 [" in text  # inflect_past, translit_be
        and "under 70: date_fr 60.0 |" in text
    )
    rows = [line for line in text.splitlines() if line.startswith(("| inflect_past", "| translit_be", "| date_fr"))]
    assert [r.split(" | ")[0] for r in rows] == ["| inflect_past", "| translit_be", "| date_fr"]
    assert (
        rows[2].startswith("| date_fr | date | 100.0 [")
        and "| 60.0 [" in rows[2]
        and rows[2].endswith("| not scored |")
    )
    results["per_prompt"]["seen"]["oracle"].pop()
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match="5 oracle answers for 3 tasks x 2 prompts"):
        targets_table(tmp_path / "results.json", tmp_path / "dev.json", tmp_path / "pool")


def test_dev_scores_pairs_other_adapters_with_the_shipped_ones_of_their_task():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "dev_scores.py"
    spec = importlib.util.spec_from_file_location("dev_scores", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shipped = {"a": {"scores": [0.0, 50.0, 100.0, 100.0]}, "b": {"scores": [100.0] * 4}, "c": {"scores": [0.0] * 2}}
    other = {"a": {"scores": [100.0, 50.0, 100.0, 100.0]}, "c": {"scores": [100.0] * 3}}  # c: other prompts, left out
    lines = mod.paired_table(other, shipped).splitlines()
    assert lines[2].startswith("| a | 62.5 | 87.5 | 25.0 [")
    assert lines[3].startswith("| all 1 | 62.5 | 87.5 | 25.0 [") and len(lines) == 4


def test_dev_scores_scores_each_prompt_with_the_adapter_applied():
    """`recipes.dev_scores`, the one dev measurement of the recipe search and `scripts/dev_scores.py`: one score
    per dev prompt, from answers generated with the adapter on (the base model alone cannot convert units)."""
    from peft import PeftModel

    from logo_core.loading import load_base
    from logo_core.recipes import dev_scores
    from logo_core.registry import load_config

    cfg = load_config("adapters.yaml")
    base, tok = load_base(cfg.base_model)
    adapter = next(a for a in cfg.adapters if a.name == "units_kg_g")
    model = PeftModel.from_pretrained(base, str(cfg.adapter_dir(adapter))).eval()
    task = TASKS["units_kg_g"]
    scores = dev_scores(model, tok, task, 4)
    with model.disable_adapter():
        plain = dev_scores(model, tok, task, 4)
    assert len(scores) == len(plain) == 4 and all(0 <= s <= 100 for s in scores + plain)
    assert statistics.fmean(scores) >= 75 > statistics.fmean(plain)


def test_the_shipped_pool_fits_its_budget_and_adapts_the_probed_modules():
    """Issue 22's bar: the pool on disk is at most 60 MB, and every adapter adapts q_proj and v_proj in every block
    (what the router reads), whatever else a recipe adds (`--extra-modules`)."""
    from safetensors import safe_open

    from logo_core.registry import load_config

    cfg = load_config("adapters.yaml")
    files = [cfg.adapter_dir(a) / "adapter_model.safetensors" for a in cfg.adapters]
    assert sum(f.stat().st_size for f in files) <= 60e6
    for f in files:
        with safe_open(f, framework="pt") as weights:
            sites = {
                (k.split("layers.")[1].split(".")[0], m)
                for k in weights.keys()
                for m in ("q_proj", "v_proj")
                if f".{m}." in k
            }
        assert len(sites) == 2 * 30, f"{f.parent.name} does not adapt q_proj and v_proj in all 30 blocks"


def test_compare_pools_routes_each_pool_as_the_router_does(tmp_path):
    """scripts/compare_pools.py (the rule that decides whether a retrained pool ships) routes with the shipped
    default, token evidence included (it once failed there): two pools holding the same three shipped adapters route
    every dev prompt alike, and to its own task."""
    import importlib.util

    from logo_core import lab as L
    from logo_core.loading import load
    from logo_core.registry import load_config

    spec = importlib.util.spec_from_file_location("compare_pools", Path("scripts") / "compare_pools.py")
    cp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cp)
    three = {"date_fr", "units_kg_g", "case_snake"}
    cfg = load_config("adapters.yaml")
    (tmp_path / "pool").mkdir()
    for a in cfg.adapters:
        if a.name in three:
            (tmp_path / "pool" / a.name).symlink_to(cfg.adapter_dir(a).resolve())
    shipped, pools, both = cp.shared_pools("adapters.yaml", str(tmp_path / "pool"))
    assert set(both) == three
    prompts = [q for s in ("dev", "people_dev") for q in L.split_prompts(s, 2, seed=5) if q.task in three]
    prompts += [L.Prompt(t, "", "", False, "background") for t in L.background_prompts(shipped)]
    prompts += [L.Prompt(t, "", "", False, "neutral") for t in shipped.neutral_prompts]
    loaded = load(shipped.base_model)
    vectors = L.cached_vectors(shipped, loaded, prompts, tmp_path / "cache")
    st = L.library_setting(shipped.defaults)
    assert st.token_weight  # the shipped default reads token evidence
    got = {name: cp.route(c, loaded, prompts, vectors, st, both, tmp_path / "cache") for name, c in pools.items()}
    assert got["shipped"] == got["retrained"]
    for split in ("dev", "people_dev"):
        own = [q.task for q in prompts if q.split == split]
        assert len(got["shipped"][split]) == len(own) == 6 and got["shipped"][split] == own
