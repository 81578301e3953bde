"""The generated task suite: splits, determinism, phrasings, scorers."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from logo_core.tasks import TASKS, adapter_tasks, get_task
from logo_core.tasks.metrics import bleu, exact_match, exact_match_cased, normalize, rouge_l

ALL = sorted(TASKS)


def test_suite_size():
    assert len(adapter_tasks()) >= 10
    assert sum(t.unseen for t in TASKS.values()) >= 2


@pytest.mark.parametrize("name", ALL)
def test_deterministic(name):
    task = get_task(name)
    assert task.examples("test", 50) == task.examples("test", 50)
    assert task.examples("train", 20, seed=3) == task.examples("train", 20, seed=3)
    assert task.examples("train", 20, seed=3) != task.examples("train", 20, seed=4)


@pytest.mark.parametrize("name", ALL)
def test_splits_disjoint(name):
    task = get_task(name)
    test = task.examples("test", 50)
    assert len({ex.prompt for ex in test}) == 50
    train = task.examples("train", 400, distinct=False)
    assert not {ex.prompt for ex in train} & {ex.prompt for ex in test}
    assert not {ex.key for ex in train} & {ex.key for ex in test}  # whole items are held out


def _skeleton(prompt: str, key: str, answer: str) -> str:
    """The prompt with the item's own words masked: what is left is the phrasing."""
    for word in sorted(set(re.findall(r"\w+", f"{key} {answer}")), key=len, reverse=True):
        prompt = re.sub(rf"\b{re.escape(word)}\b", "_", prompt)
    return prompt


@pytest.mark.parametrize("name", ALL)
def test_several_phrasings(name):
    examples = get_task(name).examples("train", 200, distinct=False)
    counts = Counter(_skeleton(ex.prompt, ex.key, ex.answer) for ex in examples)
    assert len(counts) >= 3
    assert counts.most_common(1)[0][1] < 0.6 * len(examples)


@pytest.mark.parametrize("name", ALL)
def test_answers_short_and_self_scoring(name):
    task = get_task(name)
    for ex in task.examples("test", 50):
        assert 0 < len(ex.answer.split()) <= 20 and "\n" not in ex.answer
        assert task.score(ex.answer, ex.answer) == pytest.approx(100.0)


def test_generators_are_correct():
    for ex in get_task("arithmetic").examples("test", 50):
        assert int(ex.answer) == eval(ex.key)
    for ex in get_task("boolean_expressions").examples("test", 50):
        assert str(eval(ex.key, {"__builtins__": {}})) == ex.answer
    for ex in get_task("word_sorting").examples("test", 50):
        assert ex.answer.split() == sorted(ex.key.split())
    for ex in get_task("case_conversion").examples("test", 50):
        snake = ex.key.split(">")[0]
        assert ex.answer in (snake, re.sub(r"_(\w)", lambda m: m.group(1).upper(), snake))


def test_example_prompts_come_from_train():
    task = get_task("capitals")
    prompts = task.example_prompts(3)
    assert len(prompts) == 3
    assert not set(prompts) & {ex.prompt for ex in task.examples("test", 50)}


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")
    with pytest.raises(ValueError, match="split"):
        get_task("arithmetic").examples("dev", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        get_task("plurals").examples("test", 1000)


@pytest.mark.parametrize(
    ("prediction", "answer", "expected"),
    [
        ("True", "True", 100),
        ("True.", "True", 100),  # periods removed, as in the paper
        ("  true ", "True", 100),
        ("False", "True", 0),
        ("not True", "True", 0),
        ("85", "85", 100),
        ("85 is the sum.", "85", 100),  # one-word answer first, then an explanation
        ("The answer is 85", "85", 0),  # honest: the answer must come first
        ("Answer: yes", "yes", 100),
        ("Paris\nIt is also the largest city.", "Paris", 100),  # first line only
        ("", "Paris", 0),
        ("apple banana cherry.", "apple banana cherry", 100),
        ("apple banana", "apple banana cherry", 0),
        ("apple banana cherry dragon", "apple banana cherry", 0),  # multi-word answers match whole
    ],
)
def test_exact_match(prediction, answer, expected):
    assert exact_match(prediction, answer) == expected


def test_exact_match_cased():
    assert exact_match_cased("`getUserName`", "getUserName") == 100
    assert exact_match_cased("getusername", "getUserName") == 0
    assert normalize('"Hello World."', lower=False) == "Hello World"


def test_rouge_and_bleu():
    ref = "The Eagle is a cheap French restaurant in the city centre."
    assert rouge_l(ref, ref) == pytest.approx(100.0)
    assert rouge_l("Completely unrelated words here", ref) == 0.0
    assert 0 < rouge_l("The Eagle is a French restaurant.", ref) < 100
    assert rouge_l("", ref) == 0.0
    fr = "le chat noir voit la vache"
    assert bleu(fr, fr) == pytest.approx(100.0)
    assert bleu("one two three four five six", fr) < 5
    assert 0 < bleu("le chat noir voit le chien", fr) < 100
    assert bleu("", fr) == 0.0
