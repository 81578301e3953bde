"""Trainer pieces on a tiny random Llama: batching, answer-only loss, fp16 PEFT output."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors import safe_open

from logo_core.registry import load_config
from logo_core.tasks import get_task
from logo_core.train import IGNORE, answer_loss, collate, lora_model, register, save_adapter


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval().requires_grad_(False)


ROWS = [([5, 6, 7, 8, 9], [IGNORE, IGNORE, IGNORE, 8, 9]), ([3, 4, 10], [IGNORE, 4, 10])]


def test_collate_left_pads_and_keeps_answers_at_the_end():
    batch = collate(ROWS, pad_id=0, max_len=32)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [0, 0, 3, 4, 10]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert batch["position_ids"][1].tolist() == [0, 0, 0, 1, 2]
    assert batch["labels"][1].tolist() == [IGNORE, IGNORE, IGNORE, 4, 10]


def test_collate_cuts_from_the_left():
    batch = collate(ROWS, pad_id=0, max_len=3)
    assert batch["input_ids"][0].tolist() == [7, 8, 9]


def test_answer_loss_matches_full_logits_loss(tiny):
    batch = collate(ROWS, pad_id=0, max_len=32)
    reference = tiny(**batch).loss  # transformers' own shifted loss over all positions
    assert torch.allclose(answer_loss(tiny, batch), reference, atol=1e-5)


def test_two_steps_train_and_save_fp16(tiny, tmp_path):
    model = lora_model(tiny, rank=4, alpha=8)
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(params, lr=1e-2)
    batch = collate(ROWS, pad_id=0, max_len=32)
    for _ in range(2):
        answer_loss(model, batch).backward()
        opt.step()
        opt.zero_grad()
    save_adapter(model, tmp_path / "demo")
    config = json.loads((tmp_path / "demo" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    with safe_open(tmp_path / "demo" / "adapter_model.safetensors", framework="pt") as f:
        keys = list(f.keys())
        assert len(keys) == 2 * 2 * 2  # blocks x modules x (A, B)
        assert all(f.get_tensor(k).dtype == torch.float16 for k in keys)
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())  # atomic write left no temp dir


def test_extra_modules_train_at_their_own_rank_and_load_with_their_own_scale(tiny, tmp_path):
    """`--extra-modules down_proj:2`: down_proj is adapted at rank 2 beside q_proj and v_proj at the recipe's rank,
    with the same alpha / rank; the saved adapter (PEFT's rank_pattern) loads in the engine with those ranks and
    one scale everywhere, and the recipe key names it (the plain recipe's key is unchanged)."""
    from logo_core.loading import load_adapter
    from logo_core.train import extra_modules, parse_args, recipe_key

    model = lora_model(tiny, rank=4, alpha=8, extra=extra_modules("down_proj:2"))
    batch = collate(ROWS, pad_id=0, max_len=32)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(2):
        answer_loss(model, batch).backward()
        opt.step()
        opt.zero_grad()
    save_adapter(model, tmp_path / "demo")
    f = load_adapter("demo", tmp_path / "demo", model.get_base_model())
    ranks = {m: f.read([(0, m)])[(0, m)][0].shape[0] for m in ("q_proj", "v_proj", "down_proj")}
    assert ranks == {"q_proj": 4, "v_proj": 4, "down_proj": 2} and f.rank == 4
    assert set(f.scales.values()) == {2.0} and f.scale == 2.0
    args = parse_args(["--steps", "300", "--lr", "2e-3", "--schedule", "cosine", "--bf16"])
    assert recipe_key(args) == "steps300-b8-lr0.002-cosine-r8-a16-bf16-seed0"
    args = parse_args(
        ["--steps", "300", "--lr", "2e-3", "--schedule", "cosine", "--bf16", "--extra-modules", "down_proj:2"]
    )
    assert recipe_key(args) == "steps300-b8-lr0.002-cosine-r8-a16-bf16-seed0-down_proj2"
    for bad in ("down_proj", "down_proj:0", "q_proj:4", "down_proj:x", "../x:2"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not name:rank"):
            extra_modules(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="'down_proj' is given twice"):
        extra_modules("down_proj:2,down_proj:3")
    with pytest.raises(ValueError, match="no linear module named 'mlp_down'; its linear modules are "):
        lora_model(tiny, rank=4, alpha=8, extra=extra_modules("down_proj:2,mlp_down:2"))  # PEFT alone adapts the rest


def test_a_resumed_pool_keeps_its_recipe(tiny, tmp_path):
    """Each adapter records its recipe; `train` refuses to resume into a folder whose finished adapters were trained
    with another (a pool of two recipes would route and answer unevenly), keeps those of its own and of none
    recorded (older adapters), and names --force."""
    from logo_core.train import main, parse_args, recipe_key, trained_recipe

    flags = ["--steps", "300", "--lr", "2e-3", "--schedule", "cosine", "--bf16"]
    save_adapter(lora_model(tiny, rank=4, alpha=8), tmp_path / "case_snake", recipe_key(parse_args(flags)))
    assert trained_recipe(tmp_path / "case_snake") == "steps300-b8-lr0.002-cosine-r8-a16-bf16-seed0"
    save_adapter(lora_model(tiny, rank=4, alpha=8), tmp_path / "case_kebab")  # no recipe recorded
    assert trained_recipe(tmp_path / "case_kebab") is None
    run = ["--tasks", "case_snake,case_kebab", "--no-register", "--out", str(tmp_path), *flags]
    main(run)  # both finished, nothing to train: returns at once
    with pytest.raises(
        SystemExit,
        match=r"1 finished adapter\(s\) there were trained with another recipe \(case_snake: "
        r"steps300-b8-lr0.002-cosine-r8-a16-bf16-seed0\), not steps300-.*-down_proj2; pass --force",
    ):
        main([*run, "--extra-modules", "down_proj:2"])


def test_register_keeps_comments_and_replaces_entries(tmp_path):
    config = tmp_path / "adapters.yaml"
    config.write_text("# my pool\nbase_model:\n  id: default  # keep me\nadapters: []\n")
    for _ in range(2):  # registering twice replaces, never duplicates
        register(get_task("date_fr"), tmp_path / "assets" / "date_fr", config)
    text = config.read_text()
    assert text.startswith("# my pool\n") and "# keep me" in text
    cfg = load_config(config)
    (spec,) = cfg.adapters
    assert spec.name == "date_fr" and spec.path == "assets/date_fr" and len(spec.examples) == 3
    assert spec.family == "date"
    unseen = {u.task: u for u in cfg.unseen_examples}
    assert unseen["date_sv"].family == "date" and unseen["ordinal_words_en"].family == ""  # held out whole
    register(get_task("money_de"), tmp_path / "assets" / "money_de", config)  # after unseen_examples exists
    text = config.read_text()
    assert "# keep me" in text and text.count("unseen_examples:") == 1
    assert [a.name for a in load_config(config).adapters] == ["date_fr", "money_de"]
    # a retired task's entry goes when the pool is re-registered with `keep` (scripts/swap_pool.py)
    register(get_task("units_km_m"), tmp_path / "assets" / "units_km_m", config, keep={"money_de", "units_km_m"})
    assert [a.name for a in load_config(config).adapters] == ["money_de", "units_km_m"]
    assert "# keep me" in config.read_text()


def test_round_robin_covers_every_family_first():
    from logo_core.tasks import adapter_tasks
    from logo_core.train import round_robin

    tasks = adapter_tasks()
    order = round_robin(tasks)
    families = {t.family for t in tasks}
    assert sorted(t.name for t in order) == sorted(t.name for t in tasks)
    assert {t.family for t in order[: len(families)]} == families


def test_pick_examples_keeps_the_first_ones_its_adapter_answers_right():
    """scripts/pick_examples.py: right answers first, in the candidates' order; wrong ones only to fill up."""
    from logo_core.tasks import get_task
    from scripts.pick_examples import pick

    t = get_task("inflect_past")
    exs = t.example_candidates(5)
    assert [ex.prompt for ex in exs[:3]] == t.example_prompts(3)  # the same sample, so unpicked = the first three
    answers = ["wrong", exs[1].answer, "x", exs[3].answer, exs[4].answer]
    assert pick(t, exs, answers) == ([exs[1].prompt, exs[3].prompt, exs[4].prompt], 3)
    got = pick(t, exs, ["no", "no", exs[2].answer, "no", "no"])
    assert got == ([exs[2].prompt, exs[0].prompt, exs[1].prompt], 1)
    assert pick(t, exs, ["no"] * 5) == ([ex.prompt for ex in exs[:3]], 0)  # none right: the task's own first three


def test_swap_keeps_the_scores_made_while_the_pool_trained(tmp_path):
    """scripts/swap_pool.py: rows that `tasks.check --pool assets/pool_next` scored replace the shipped rows of
    their tasks (the check after the swap reuses them: same adapter files); other tasks' rows stay; rows of
    another `n` are dropped, since the check would score them again anyway."""
    import json

    from scripts.swap_pool import merge_scores

    new, into = tmp_path / "scores.json", tmp_path / "pool_scores.json"
    assert merge_scores(new, into) == 0 and not into.exists()  # nothing scored while training: nothing changes
    row = lambda task, sha: {"task": task, "n": 20, "adapter_sha": sha}  # noqa: E731
    into.write_text(json.dumps({"n": 20, "rows": [row("date_fr", "old"), row("date_sv", None)]}))
    new.write_text(json.dumps({"n": 20, "rows": [row("date_fr", "new"), row("money_de", "new")]}))
    assert merge_scores(new, into) == 2
    got = json.loads(into.read_text())
    assert got["n"] == 20
    assert {r["task"]: r["adapter_sha"] for r in got["rows"]} == {"date_fr": "new", "date_sv": None, "money_de": "new"}
    new.write_text(json.dumps({"n": 10, "rows": [row("units_km_m", "x")]}))
    merge_scores(new, into)
    got = json.loads(into.read_text())
    assert got["n"] == 10 and [r["task"] for r in got["rows"]] == ["units_km_m"]


def test_keep_shipped_seeds_the_next_pool_with_the_tasks_that_stay(tmp_path):
    """scripts/swap_pool.py --keep-shipped: the shipped adapters of tasks still in the suite are copied with their
    loss rows and score rows, so `make pool` trains only the new tasks; a retired task's adapter is not copied, and an
    adapter already in the next pool (trained there) is never overwritten."""
    import json

    from logo_core.tasks import adapter_tasks
    from logo_core.train import trained_recipe
    from scripts.swap_pool import keep_shipped

    stays, new = [t.name for t in adapter_tasks()][:2]
    shipped, nxt = tmp_path / "adapters", tmp_path / "pool_next"
    for name, text in ((stays, "shipped"), (new, "shipped"), ("number_words_retired", "shipped")):
        (shipped / name).mkdir(parents=True)
        (shipped / name / "adapter_model.safetensors").write_text(text)
    (nxt / new).mkdir(parents=True)
    (nxt / new / "adapter_model.safetensors").write_text("trained in the next pool")
    losses, scores = tmp_path / "losses.jsonl", tmp_path / "scores.json"
    losses.write_text(
        "\n".join(json.dumps({"task": n, "recipe": "r", "losses": [1.0]}) for n in (stays, new, "number_words_retired"))
    )
    scores.write_text(json.dumps({"n": 20, "rows": [{"task": stays}, {"task": "number_words_retired"}]}))

    assert keep_shipped(shipped, nxt, losses, scores) == [stays]
    assert (nxt / stays / "adapter_model.safetensors").read_text() == "shipped"
    assert trained_recipe(nxt / stays) == "r"  # from its loss row: a `make pool` of another recipe refuses it
    assert (nxt / new / "adapter_model.safetensors").read_text() == "trained in the next pool"
    assert not (nxt / "number_words_retired").exists()
    assert [json.loads(line)["task"] for line in (nxt / "losses.jsonl").read_text().splitlines()] == [stays]
    assert [r["task"] for r in json.loads((nxt / "scores.json").read_text())["rows"]] == [stays]


def test_extra_train_names_the_recipe_and_leaves_the_old_keys_alone():
    from logo_core.train import parse_args, recipe_key

    plain = parse_args(["--steps", "300", "--lr", "2e-3", "--schedule", "cosine", "--bf16"])
    assert recipe_key(plain) == "steps300-b8-lr0.002-cosine-r8-a16-bf16-seed0"  # the previous pool's key
    extra = parse_args(["--steps", "300", "--lr", "2e-3", "--schedule", "cosine", "--bf16", "--extra-train", "0.5"])
    assert recipe_key(extra) == "steps300-b8-lr0.002-cosine-r8-a16-bf16-seed0-extra0.5"
