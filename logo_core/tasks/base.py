"""The `Task` dataclass: a seeded example generator, a train/test split rule and a scorer.

Why a split by *key* and not by prompt: a task item (a country, an expression, an English
sentence) is shown in several phrasings. Deciding the split from the item, not from the phrased
prompt, keeps every phrasing of a test item out of training, so test scores measure more than
recall of a memorised prompt. Disjointness by prompt text follows and is asserted by the tests.

Why phrasings live on the task and some are test-only: a router that keyed on one memorised
template would look good on prompts phrased like the training data and fail on any other. Test
prompts are phrased with every template, including `test_templates` that training never sees.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .metrics import METRICS

Split = Literal["train", "dev", "test", "people", "people_dev"]
SPLITS = ("train", "dev", "test", "people", "people_dev")
ITEMS = {"people": "test", "people_dev": "dev"}  # the people-style splits rephrase another split's items
MetricName = Literal["exact_match", "exact_match_cased", "rouge_l", "bleu", "chrf"]


@dataclass(frozen=True)
class Example:
    """One prompt and its reference answer.

    `key` names the underlying item (all phrasings of an item share it) and decides the split;
    it is an implementation detail for callers, who only need `prompt` and `answer`. A generator
    of a task with `templates` returns the bare input in `prompt`; `Task.examples` phrases it.
    """

    prompt: str
    answer: str
    key: str = ""
    template: str = ""  # the phrasing used (set by `Task.phrase`), so tests and checks can group by it


Generator = Callable[[random.Random], Example]


@dataclass(frozen=True)
class Task:
    """A generated task: `examples()` draws from a fixed split, `score()` grades an answer.

    Example:
        >>> task = get_task("number_words_fr")
        >>> ex = task.examples("test", 50)[0]
        >>> task.score("quarante-deux", ex.answer)
    """

    name: str
    description: str
    metric: MetricName
    generate: Generator
    unseen: bool = False  # no adapter is trained for it: it measures generalisation
    test_fraction: float = 0.25  # share of items (keys) that belong to the test split
    dev_fraction: float = 0.10  # share of items for choosing settings (recipes, routing); never trained on
    family: str = ""  # related tasks share a family (one per language, unit, case style, ...)
    templates: tuple[str, ...] = ()  # phrasings with an `{x}` slot, used in train and test
    test_templates: tuple[str, ...] = ()  # phrasings never used in training, only in test prompts
    people_templates: tuple[str, ...] = ()  # how people ask: the `people` split only (test items)
    people_dev_templates: tuple[str, ...] = ()  # other people-style phrasings, for choosing: `people_dev` (dev items)
    source: str = ""  # the package the data comes from (`name==version` is read at run time)
    train_extra: Generator | None = None  # train-only items that teach the rule (`extra_examples`); None: none

    def phrase(self, ex: Example, split: Split, rng: random.Random) -> Example:
        """The example with its input put into a template of `split` (unchanged without templates).

        train and dev use the training phrasings; test adds the test-only ones; `people` uses only
        the people-style phrasings (other word orders, word problems, a sentence around the request);
        `people_dev` others of that kind, written apart, so that a choice can see such prompts without
        ever reading the ones it is reported on.
        """
        if not self.templates:
            return ex
        template = rng.choice(self.phrase_pool(split))
        return Example(template.replace("{x}", ex.prompt), ex.answer, ex.key or ex.prompt, template)

    def phrase_pool(self, split: Split) -> tuple[str, ...]:
        """The phrasings a prompt of `split` is put in."""
        return {
            "test": self.templates + self.test_templates,
            "people": self.people_templates,
            "people_dev": self.people_dev_templates,
        }.get(split, self.templates)

    def split_of(self, ex: Example) -> Literal["train", "dev", "test"]:
        """Stable split of an item: md5, not `hash()`, so it survives PYTHONHASHSEED.

        The `people` split reuses the test items (phrased differently), so it is never trained on either;
        `people_dev` the dev items.
        """
        digest = hashlib.md5(f"{self.name}:{ex.key or ex.prompt}".encode()).hexdigest()
        u = int(digest[:8], 16) % 10_000
        if u < self.test_fraction * 10_000:
            return "test"
        return "dev" if u < (self.test_fraction + self.dev_fraction) * 10_000 else "train"

    def examples(self, split: Split, n: int, seed: int = 0, distinct: bool = True) -> list[Example]:
        """`n` examples of one split; the same (split, n, seed) always gives the same list.

        Args:
            split: "train", "dev" (held out from training, for choosing settings), "test",
                "people" (test items in people-style phrasings) or "people_dev" (dev items in other
                people-style phrasings, for choosing).
            n: how many examples.
            seed: selects another deterministic sample of the same split.
            distinct: no repeated prompt. Training sets larger than a small task's item space
                (a few hundred items, 400 training examples) pass False and get repeats.

        Raises:
            ValueError: bad split or n, or fewer than n distinct prompts exist in the split.
        """
        if split not in SPLITS:
            raise ValueError(f"`split` must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
        if split in ITEMS and not self.phrase_pool(split):
            raise ValueError(f"task {self.name!r} has no people-style phrasings, so no `{split}` split")
        if n < 0:
            raise ValueError(f"`n` must be >= 0, got {n}")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        out: list[Example] = []
        seen: set[str] = set()
        for _ in range(200 * n + 2000):  # rejection sampling; bounded so a small space fails loudly
            if len(out) == n:
                return out
            ex = self.generate(rng)
            if self.split_of(ex) != ITEMS.get(split, split):
                continue
            ex = self.phrase(ex, split, rng)
            if distinct and ex.prompt in seen:
                continue
            seen.add(ex.prompt)
            out.append(ex)
        if len(out) == n:
            return out
        raise ValueError(
            f"task {self.name!r}: only {len(out)} distinct {split} prompts found, asked for n={n}; "
            "pass distinct=False or a smaller n"
        )

    def extra_examples(self, n: int, seed: int = 0) -> list[Example]:
        """`n` train-only examples from `train_extra`, phrased with the training templates ([] without it).

        Their items are not the task's items (pseudo-names that exist nowhere), so no dev or test prompt can be
        among them; the trainer mixes a share of them in (`--extra-train`)."""
        if self.train_extra is None or n <= 0:
            return []
        rng = random.Random(f"{self.name}:extra:{seed}")
        return [self.phrase(self.train_extra(rng), "train", rng) for _ in range(n)]

    def score(self, prediction: str, answer: str) -> float:
        """Score one model output against the reference, in [0, 100]."""
        return METRICS[self.metric](prediction, answer)

    EXAMPLE_SEED = 1234  # the training-split sample that adapters.yaml's examples are taken from
    EXAMPLE_CANDIDATES = 12  # how many of that sample `scripts/pick_examples.py` tries per adapter

    def example_candidates(self, n: int = EXAMPLE_CANDIDATES) -> list[Example]:
        """The first n training prompts (never test prompts) that adapters.yaml's examples are picked from."""
        return self.examples("train", n, seed=self.EXAMPLE_SEED)

    def example_prompts(self, k: int = 3) -> list[str]:
        """k training prompts for adapters.yaml and UI examples, before `pick_examples` keeps the right ones."""
        return [ex.prompt for ex in self.example_candidates(k)]
