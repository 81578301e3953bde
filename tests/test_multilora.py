"""The batched trainer (`multilora.train_many`) against the plain one (`train.train_one`): same adapters."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import load_file

from logo_core import multilora
from logo_core.tasks import get_task
from logo_core.train import parse_args, train_one


def _args(out, **kw) -> argparse.Namespace:
    args = parse_args(["--steps", "3", "--batch-size", "2", "--lr", "5e-3", "--schedule", "cosine", "--threads", "2"])
    args.out = str(out)
    for k, v in kw.items():
        setattr(args, k, v)
    return args


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"down_proj": 2}], ids=["q_v", "q_v_down2"])
def test_train_many_takes_the_steps_of_separate_runs(tmp_path, extra):
    """Two siblings of different answer lengths trained in one batch end where each one's own run ends:
    per-adapter loss means, per-adapter clipping and elementwise AdamW make the batching invisible (also with a
    module of its own rank beside q_proj and v_proj, `--extra-modules`)."""
    tasks = [get_task("number_words_de"), get_task("units_kg_g")]
    for t in tasks:
        train_one(t, _args(tmp_path / "one", extra_modules=extra))
    trained = multilora.train_many(tasks, _args(tmp_path / "many", extra_modules=extra))
    trained.save(tmp_path / "many")
    for t in tasks:
        one = load_file(str(tmp_path / "one" / t.name / "adapter_model.safetensors"))
        many = load_file(str(tmp_path / "many" / t.name / "adapter_model.safetensors"))
        assert one.keys() == many.keys() and len(one) == 2 * (2 + len(extra)) * 30  # A and B of each module, 30 blocks
        assert all(one[k].shape[0] == 2 for k in one if "down_proj.lora_A" in k)
        for k in one:
            a, b = one[k].float(), many[k].float()
            assert a.abs().max() > 0  # trained (B starts at 0)
            # AdamW's first steps move each weight by about lr * sign(gradient): where a gradient is ~0 its sign is
            # rounding, and another CPU's kernels (AMX) flip one element in thousands. A batching bug (a shared loss
            # mean, another adapter's gradient) moves most elements and the tensor's norm.
            off = ~torch.isclose(b, a, rtol=2e-2, atol=2e-4)
            assert off.sum() <= max(2, 0.002 * a.numel()), f"{t.name} {k}: {int(off.sum())} of {a.numel()} differ"
            assert (b - a).norm() <= 2e-2 * a.norm(), f"{t.name} {k}"
    first = [trained.curves[t.name][0] for t in tasks]
    assert first[0] != first[1]  # each adapter's own loss, not a shared mean


@pytest.mark.slow
def test_answers_use_each_rows_adapter(tmp_path):
    """Generation with the stacked layers answers prompt j with adapter j's weights: the same text as PEFT with
    that adapter alone, and a different text for a different adapter."""
    from peft import PeftModel

    from logo_core.loading import load_base
    from logo_core.tasks.check import generate

    tasks = [get_task("number_words_de"), get_task("case_snake")]
    trained = multilora.train_many(tasks, _args(tmp_path, steps=6, lr=1e-2))
    prompts = ["Write the number 19 in German words.", "Convert 'New Zealand' to snake_case."]
    mixed = trained.answers(prompts * 2, [0, 1, 1, 0], 12)
    trained.save(tmp_path)
    base, tok = load_base()
    for j, t in enumerate(tasks):
        model = PeftModel.from_pretrained(base, str(tmp_path / t.name)).eval()
        assert mixed[j] == generate(model, tok, [prompts[j]], 12)[0]
        base = model.unload()
    assert mixed[:2] != mixed[2:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU machine)")
def test_train_many_on_cuda_matches_the_cpu(tmp_path):
    """The batched trainer on CUDA (how the shipped pool was trained) ends where it ends on the CPU, in fp32."""
    tasks = [get_task("number_words_de"), get_task("units_kg_g")]
    for device in ("cpu", "cuda"):
        multilora.train_many(tasks, _args(tmp_path / device)).save(tmp_path / device)
    for t in tasks:
        a = load_file(str(tmp_path / "cpu" / t.name / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "cuda" / t.name / "adapter_model.safetensors"))
        for k in a:
            torch.testing.assert_close(b[k].float(), a[k].float(), rtol=2e-2, atol=2e-4, msg=f"{t.name} {k}")


def _script(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "scripts"))
    spec = importlib.util.spec_from_file_location(name, root / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pool_recipes_report_pairs_each_recipe_against_the_reference(tmp_path):
    """The recipe table: rows by LoGo k=1 on template dev, intervals on every cell, the paired difference over the
    same prompts against the reference recipe (blank on its own row), and a later file's recipe replacing an
    earlier one's; the compact JSON keeps the per-prompt hits and drops the answers."""
    import json

    mod = _script("pool_recipes")

    def recipe(logo: list[float], train_s: float) -> dict:
        split = {
            "task": ["a", "a", "b", "b"], "chosen": ["a", "b", "b", "b"], "own top-1": [1.0, 0.0, 1.0, 1.0],
            "LoGo k=1 task score": logo, "oracle task score": [1.0] * 4, "answers": ["x"] * 4, "prompt": ["p"] * 4,
        }  # fmt: skip
        return {"train_s": train_s, "splits": {"dev": split, "people_dev": split}}

    ref, other = "steps150-ref", "steps300-other"
    meta = {"n": 2, "setting": "s", "device": "cuda", "gpu": "GPU X"}
    first = {**meta, "recipes": {ref: recipe([0.0, 0.0, 1.0, 0.0], 10.0), other: recipe([0.0] * 4, 20.0)}}
    second = {**meta, "recipes": {other: recipe([1.0, 1.0, 1.0, 0.0], 30.0)}}  # the rerun replaces the first
    files = [tmp_path / "1.json", tmp_path / "2.json"]
    files[0].write_text(json.dumps(first))
    files[1].write_text(json.dumps(second))
    text, compact = mod.report(files, ref)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [other, ref]  # 75 before 25 on template dev
    assert rows[0].split("|")[2].strip() == "30"  # the second file's run
    assert rows[0].rstrip(" |").endswith("]") and rows[0].split("|")[-2].strip().startswith("50.0")  # 75 - 25
    assert rows[1].split("|")[-2].strip() == ""
    assert "2 tasks, 2 prompts a task" in text and "GPU X" in text
    assert "answers" not in json.dumps(compact) and compact["recipes"][other]["dev"]["LoGo k=1 task score"][0] == 1.0


@pytest.mark.slow
def test_pool_recipes_runs_end_to_end_and_returns_the_leading_pool(tmp_path):
    """`scripts/pool_recipes.py` as a device run uses it, on the CPU at toy size: each recipe's whole pool trained,
    routed and answered on dev prompts, results written, and the leader's adapters packed in pieces that unpack
    into loadable PEFT adapters."""
    import json
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, str(root / "scripts/pool_recipes.py"), "--tasks", "number_words_de,case_snake", "--n", "1"]
    cmd += ["--out", str(out), "--work", str(work), "--parts", "2", "--recipes", "steps=2", "steps=3 lr=1e-2"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    results = json.loads((out / "results.json").read_text())
    assert len(results["recipes"]) == 2 and results["chosen"] in results["recipes"]
    for r in results["recipes"].values():
        dev = r["splits"]["dev"]
        assert sorted(dev["task"]) == ["case_snake", "number_words_de"] and set(dev["chosen"]) <= set(dev["task"])
        steps = int(r["recipe"].split()[0].removeprefix("steps="))
        assert len(dev["answers"]) == 2 * len(dev["task"]) and all(len(c) == steps for c in r["curves"].values())
    blob = b"".join((out / f"pool.tar.{k}").read_bytes() for k in range(2))
    (tmp_path / "pool.tar").write_bytes(blob)
    with tarfile.open(tmp_path / "pool.tar") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    got = tmp_path / "back" / results["chosen"]
    assert sorted(p.name for p in got.iterdir()) == ["case_snake", "number_words_de"]
    assert load_file(str(got / "case_snake" / "adapter_model.safetensors"))
