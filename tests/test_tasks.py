"""The generated task suite: families, splits, determinism, phrasings, data sources, scorers."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from logo_core.tasks import FAMILIES, TASKS, adapter_tasks, get_task
from logo_core.tasks.metrics import bleu, chrf, exact_match, exact_match_cased, normalize, rouge_l

ALL = sorted(TASKS)


def _families() -> dict[str, list]:
    out = defaultdict(list)
    for t in TASKS.values():
        out[t.family].append(t)
    return out


def test_suite_shape():
    """Issue #12: >= 48 adapters in >= 8 families of >= 6, held-out members, a held-out family."""
    fams = _families()
    assert len(adapter_tasks()) >= 48
    seen_sizes = {f: sum(not t.unseen for t in ts) for f, ts in fams.items()}
    assert sum(n >= 6 for n in seen_sizes.values()) >= 8
    mixed = [f for f, ts in fams.items() if any(t.unseen for t in ts) and seen_sizes[f] >= 6]
    assert len(mixed) >= 6  # a held-out member beside trained relatives
    whole = [f for f, ts in fams.items() if all(t.unseen for t in ts)]
    assert any(len(fams[f]) >= 4 for f in whole)
    assert all(t.family for t in TASKS.values())


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
    dev = task.examples("dev", 20)
    assert not {ex.prompt for ex in train} & {ex.prompt for ex in test}
    assert not {ex.key for ex in train} & {ex.key for ex in test}  # whole items are held out
    assert not {ex.key for ex in dev} & ({ex.key for ex in train} | {ex.key for ex in test})  # dev: its own items


@pytest.mark.parametrize("name", ALL)
def test_people_split(name):
    """People-style prompts: test items only, in phrasings that neither training nor the template test uses."""
    task = get_task(name)
    people = task.examples("people", 20)
    assert {task.split_of(ex) for ex in people} == {"test"}  # the items of the test split, never trained on
    assert {ex.template for ex in people} <= set(task.people_templates)
    assert len({ex.template for ex in people}) >= 3  # several ways of asking, not one
    assert not set(task.people_templates) & set(task.templates + task.test_templates)
    assert all(ex.prompt not in {t.replace("{x}", ex.key) for t in task.templates} for ex in people)


@pytest.mark.parametrize("name", ALL)
def test_people_dev_split(name):
    """People-style dev prompts (for choosing): dev items only, in phrasings of their own, never the people test's."""
    task = get_task(name)
    people_dev = task.examples("people_dev", 20)
    assert {task.split_of(ex) for ex in people_dev} == {"dev"}
    assert {ex.template for ex in people_dev} <= set(task.people_dev_templates)
    assert len({ex.template for ex in people_dev}) >= 3
    assert not set(task.people_dev_templates) & set(task.people_templates + task.templates + task.test_templates)
    assert not {ex.key for ex in people_dev} & {ex.key for ex in task.examples("people", 20)}  # other items too


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{x}"), ".+", 1), re.DOTALL)


@pytest.mark.parametrize("name", ALL)
def test_phrasings(name):
    """>= 3 trained phrasings, none dominant; test-only phrasings never in a train prompt, but in test ones."""
    task = get_task(name)
    assert len(task.templates) >= 2 and task.test_templates
    assert len(task.templates) + len(task.test_templates) >= 3
    train = task.examples("train", 400, distinct=False)
    counts = Counter(ex.template for ex in train)
    assert set(counts) == set(task.templates)
    assert counts.most_common(1)[0][1] < 0.6 * len(train)
    test_only = [_pattern(t) for t in task.test_templates]
    assert not any(p.fullmatch(ex.prompt) for ex in train for p in test_only)  # by text, not only by label
    test = task.examples("test", 50)
    assert {ex.template for ex in test} >= set(task.test_templates)


def test_trained_tasks_have_three_trained_phrasings():
    assert all(len(t.templates) >= 3 for t in adapter_tasks())


@pytest.mark.parametrize("name", ALL)
def test_answers_short_and_self_scoring(name):
    task = get_task(name)
    for ex in task.examples("test", 50):
        assert 0 < len(ex.answer.split()) <= 8 and "\n" not in ex.answer
        assert task.score(ex.answer, ex.answer) == pytest.approx(100.0)


@pytest.mark.parametrize("name", ALL)
def test_item_space_is_data_not_a_short_list(name):
    """Each task draws from ~100 or more items (a package's table or a number range), so a held-out
    quarter is large enough to measure and too large to be a typed list."""
    task = get_task(name)
    keys = {ex.key for ex in task.examples("train", 1500, distinct=False)}
    keys |= {ex.key for ex in task.examples("dev", 300, distinct=False)}
    keys |= {ex.key for ex in task.examples("test", 500, distinct=False)}
    assert len(keys) >= 90


def test_sources_are_installed_packages():
    for family in FAMILIES:
        names = re.findall(r"[a-z][a-z0-9]+(?= \(|,|$)", family.source)
        assert names, family.source
        for name in names:
            assert importlib.metadata.version(name)  # raises PackageNotFoundError when not a package


def test_no_long_literal_word_lists():
    """No list/tuple/set/dict literal of more than 10 strings in the task modules: data come from packages."""
    for path in Path("logo_core/tasks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            elts = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)) and elts:
                strings = [e for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                assert len(strings) <= 10, f"{path}:{node.lineno}: literal with {len(strings)} strings"


def test_generators_agree_with_their_packages():
    import cyrtranslit
    import pint
    from babel import Locale
    from babel.dates import format_date
    from lemminflect import getInflection
    from num2words import num2words
    from unidecode import unidecode

    for ex in get_task("number_words_de").examples("test", 20):
        assert ex.answer == num2words(int(ex.key), lang="de")
    tg = Locale.parse("tg")
    tajik = {n for table in (tg.territories, tg.languages, tg.currencies, tg.scripts) for n in table.values()}
    for ex in get_task("translit_tg").examples("test", 20):
        assert ex.key in tajik and ex.key in ex.prompt and ex.answer == cyrtranslit.to_latin(ex.key, "tj")
    uk = Locale.parse("uk")
    ukrainian = {n for table in (uk.territories, uk.languages, uk.currencies, uk.scripts) for n in table.values()}
    for ex in get_task("translit_uk").examples("test", 20):
        assert ex.key in ukrainian and ex.answer == cyrtranslit.to_latin(ex.key, "ua")
    for ex in get_task("deaccent_pl").examples("test", 20):
        assert ex.key in ex.prompt and ex.answer == unidecode(ex.key) != ex.key
    for ex in get_task("inflect_past").examples("test", 20):
        assert ex.answer in getInflection(ex.key, "VBD")
    for ex in get_task("inflect_infinitive").examples("test", 20):  # the way back: the past form is asked
        past = getInflection(ex.answer, "VBD")[0]
        assert ex.key == ex.answer and past in ex.prompt and past != ex.answer
    digits = {len(ex.key) for ex in get_task("number_words_en").examples("test", 20)}
    assert digits == {1, 2, 3}  # short numbers are asked too, not nine in ten of three digits
    for ex in get_task("date_de").examples("test", 20):
        assert ex.answer == format_date(__import__("datetime").date.fromisoformat(ex.key), "long", locale="de")
    ureg = pint.UnitRegistry()
    for ex in get_task("units_g_kg").examples("test", 20):
        value, unit = ex.key.split()
        assert Decimal(ex.answer) == Decimal(value) * Decimal(str(ureg.Quantity(1, unit).to("kg").magnitude))
    for ex in get_task("case_camel").examples("test", 20):
        first, *rest = ex.key.split()
        assert ex.answer == first + "".join(w.title() for w in rest)


def test_unseen_examples_cover_every_unseen_task():
    from logo_core.train import unseen_examples

    examples = unseen_examples()
    assert {u.task for u in examples} == {t.name for t in TASKS.values() if t.unseen}
    assert all(u.family == get_task(u.task).family or u.family == "" for u in examples)


def test_example_prompts_come_from_train():
    task = get_task("date_fr")
    prompts = task.example_prompts(3)
    assert len(prompts) == 3
    assert not set(prompts) & {ex.prompt for ex in task.examples("test", 50)}


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")
    with pytest.raises(ValueError, match="split"):
        get_task("date_fr").examples("validation", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        get_task("ordinal_words_en").examples("test", 1000)


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
        ("1\u202f234,50\u00a0€", "1 234,50 €", 100),  # CLDR's narrow/no-break spaces count as spaces
    ],
)
def test_exact_match(prediction, answer, expected):
    assert exact_match(prediction, answer) == expected


def test_exact_match_cased():
    assert exact_match_cased("`getUserName`", "getUserName") == 100
    assert exact_match_cased("getusername", "getUserName") == 0
    assert normalize('"Hello World."', lower=False) == "Hello World"


def test_rouge_bleu_chrf():
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
    words = "trois cent quarante-deux"
    assert chrf(words, words) == pytest.approx(100.0)
    assert 50 < chrf("trois cent quarante", words) < 100  # near miss: partial credit
    assert chrf("xyz", words) < 10
    assert chrf("", words) == 0.0


def test_check_tables_and_doc_sections(tmp_path):
    """The pool check's Markdown (no model): suite table, score table, filling marked sections."""
    from logo_core.tasks.check import fill, suite_table, table, training_table

    suite = suite_table()
    assert all(f.name in suite for f in FAMILIES) and "whole family" in suite
    rows = [
        {
            "task": "date_fr",
            "family": "date",
            "unseen": False,
            "base_all": 0.0,
            "base_test_only_phrasing": 0.0,
            "adapter_all": 90.0,
            "adapter_test_only_phrasing": 80.0,
        },
        {"task": "date_sv", "family": "date", "unseen": True, "base_all": 5.0, "base_test_only_phrasing": float("nan")},
    ]
    text = table(rows, n=20)
    assert "| date | date_fr | exact_match | 0 | 90 | +90 | 0 | 80 |" in text
    assert "date_sv (unseen)" in text and "beats the base on 1 of 1" in text
    log = tmp_path / "train.log"
    log.write_text("x 2026 date_fr: trained in 170 s, final loss 0.0820\n")
    assert "| date_fr | 170 | 0.0820 |" in training_table(log)
    doc = tmp_path / "pool.md"
    doc.write_text("intro\n<!-- BEGIN scores -->\nold\n<!-- END scores -->\nend\n")
    fill(doc, {"scores": "new\n"})
    assert doc.read_text() == "intro\n<!-- BEGIN scores -->\nnew\n<!-- END scores -->\nend\n"
    with pytest.raises(ValueError, match="BEGIN suite"):
        fill(doc, {"suite": "x"})


def test_training_table_and_loss_curves_from_the_loss_log(tmp_path):
    from logo_core.tasks.check import loss_figure, training_table

    log = tmp_path / "losses.jsonl"
    rows = [
        {"task": "date_fr", "recipe": "r1", "seconds": 100.4, "threads": 2, "losses": [3.0] * 5 + [0.5] * 10},
        {"task": "money_de", "recipe": "r1", "seconds": 50.0, "threads": 2, "losses": [2.0, 1.0]},
        {
            "task": "date_fr",
            "recipe": "r1",
            "seconds": 120.0,
            "threads": 2,
            "losses": [1.0] * 10,
        },  # retrained: last wins
    ]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = training_table(log)
    assert text.startswith("2 adapters, 170 s of training in all") and "`r1`; 2 CPU threads" in text
    assert "| date_fr | 120 | 1.0000 |" in text and "| money_de | 50 | 1.5000 |" in text
    fig = loss_figure(log)
    assert [t.hovertext for t in fig.data] == ["date_fr", "money_de"]
    assert [t.showlegend for t in fig.data] == [True, True]  # two families, each once in the legend
    assert list(fig.data[1].y) == [2.0, 1.5]  # the running mean


@pytest.mark.parametrize("name", [t.name for t in TASKS.values() if t.family == "translit"])
def test_transliteration_pseudo_names_are_train_only_and_transliterated_by_the_package(name):
    """The train-only items (`--extra-train`) are names that exist nowhere: never a real CLDR name of any split (so
    no dev or test prompt is trained on), written in the locale's own letters, answered by cyrtranslit."""
    import cyrtranslit

    from logo_core.tasks import scripts

    task = get_task(name)
    extra = task.extra_examples(300, seed=0)
    real = {ex.key for split in ("dev", "test") for ex in task.examples(split, 40)}
    names = set(scripts.cyrillic_names(name.split("_")[1]))
    alphabet = {c for n in names for c in n.lower()}
    assert len(extra) == 300 and len({ex.key for ex in extra}) > 250  # varied, not a handful repeated
    for ex in extra:
        assert ex.key not in real and ex.key not in names
        assert set(ex.key.lower()) <= alphabet
        assert ex.prompt != ex.key and ex.key in ex.prompt and ex.template in task.templates  # training phrasings
        scheme = {"uk": "ua", "sr": "rs", "be": "by", "tg": "tj"}.get(name.split("_")[1], name.split("_")[1])
        assert ex.answer == cyrtranslit.to_latin(ex.key, scheme)
    assert task.extra_examples(5, seed=0) == extra[:5]  # deterministic per seed
    assert get_task("units_kg_g").extra_examples(5) == []  # tasks without pseudo-items add none
