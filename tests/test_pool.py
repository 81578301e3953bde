"""The shipped pool answers right: every adapter beats the base model on its own task's test prompts, and
the prompts shown to people (the app's Examples, the README's) come out right with their own adapter."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from logo_core.eval import max_tokens
from logo_core.tasks import TASKS

pytestmark = pytest.mark.slow  # the real model and the whole pool

ROOT = Path(__file__).resolve().parents[1]
N = 6  # test prompts per task: 288 answers of each condition, two engine batches of mixed adapters each
MARGIN = 30.0  # points (0-100) an adapter must add to the base model on its own task, in every family


def answers(engine, prompts_mixes: list[tuple[str, dict, int]]) -> list[str]:
    """Greedy answers, many adapters in one batch (each row its own mixture)."""
    out = []
    for i in range(0, len(prompts_mixes), 48):
        chunk = prompts_mixes[i : i + 48]
        n = max(c[2] for c in chunk)
        out += [g.text for g in engine.generate_batch([c[0] for c in chunk], [c[1] for c in chunk], max_new_tokens=n)]
    return out


@pytest.fixture(scope="module")
def own_and_base(real_engine):
    """Per pool task: (mean score with its own adapter, mean score of the base model) on N test prompts."""
    tasks = [TASKS[n] for n in real_engine.adapters if n in TASKS]
    rows = [(t, ex) for t in tasks for ex in t.examples("test", N)]
    length = {t.name: max_tokens(t.examples("test", N)) for t in tasks}
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


def test_each_adapters_first_example_answers_right_with_its_adapter(real_engine):
    """The app's Examples show each adapter's first example (adapters.yaml, `Task.example_prompts`)."""
    specs = [s for s in real_engine.pool.specs if s.name in TASKS and s.examples]
    refs = {}
    for s in specs:
        ex = TASKS[s.name].examples("train", 3, seed=1234)[0]
        assert ex.prompt == s.examples[0], f"{s.name}: adapters.yaml's examples are stale: run the trainer's register"
        refs[s.name] = ex
    got = answers(real_engine, [(refs[s.name].prompt, {s.name: 1.0}, 48) for s in specs])
    wrong = {
        s.name: (refs[s.name].prompt, refs[s.name].answer, a)
        for s, a in zip(specs, got)
        if TASKS[s.name].score(a, refs[s.name].answer) < 100.0
    }
    assert not wrong, f"{len(wrong)} of {len(specs)} first examples answered wrong (prompt, reference, answer): {wrong}"


def test_readme_prompts_answer_right_with_their_own_adapter(real_engine):
    """Every pool prompt the README shows, checked against the package that defines its answer."""
    from num2words import num2words

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    langs = {"French": ("fr", "number_words_fr"), "German": ("de", "number_words_de")}
    cases = []
    for m in re.finditer(r'"(?:Write the number|Spell out) (\d+) in (\w+)(?: words)?\."', text):
        lang, task = langs[m.group(2)]
        if task in real_engine.adapters:
            cases.append((m.group(0).strip('"'), task, num2words(int(m.group(1)), lang=lang)))
    assert len({c[0] for c in cases}) >= 2  # the README's route, generate and stream examples
    got = answers(real_engine, [(p, {task: 1.0}, 32) for p, task, _ in cases])
    for (prompt, task, ref), a in zip(cases, got):
        assert TASKS[task].score(a, ref) == 100.0, (prompt, ref, a)
