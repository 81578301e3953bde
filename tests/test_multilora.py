"""The batched trainer (`multilora.train_many`) against the plain one (`train.train_one`): same adapters."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import load_file

from logo_core import multilora
from logo_core.tasks import get_task
from logo_core.train import parse_args, train_one

pytestmark = pytest.mark.slow


def _args(out, **kw) -> argparse.Namespace:
    args = parse_args(["--steps", "3", "--batch-size", "2", "--lr", "5e-3", "--schedule", "cosine", "--threads", "2"])
    args.out = str(out)
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_train_many_takes_the_steps_of_separate_runs(tmp_path):
    """Two siblings of different answer lengths trained in one batch end where each one's own run ends:
    per-adapter loss means, per-adapter clipping and elementwise AdamW make the batching invisible."""
    tasks = [get_task("number_words_de"), get_task("units_kg_g")]
    for t in tasks:
        train_one(t, _args(tmp_path / "one"))
    trained = multilora.train_many(tasks, _args(tmp_path / "many"))
    trained.save(tmp_path / "many")
    for t in tasks:
        one = load_file(str(tmp_path / "one" / t.name / "adapter_model.safetensors"))
        many = load_file(str(tmp_path / "many" / t.name / "adapter_model.safetensors"))
        assert one.keys() == many.keys() and len(one) == 2 * 2 * 30  # A and B of q and v in 30 blocks
        for k in one:
            a, b = one[k].float(), many[k].float()
            assert a.abs().max() > 0  # trained (B starts at 0)
            torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-4, msg=f"{t.name} {k}")
    first = [trained.curves[t.name][0] for t in tasks]
    assert first[0] != first[1]  # each adapter's own loss, not a shared mean


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
