"""The `Task` dataclass: a seeded example generator, a train/test split rule and a scorer.

Why a split by *key* and not by prompt: a task item (a country, an expression, an English
sentence) is shown in several phrasings. Deciding the split from the item, not from the phrased
prompt, keeps every phrasing of a test item out of training, so test scores measure more than
recall of a memorised prompt. Disjointness by prompt text follows and is asserted by the tests.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .metrics import METRICS

Split = Literal["train", "test"]
MetricName = Literal["exact_match", "exact_match_cased", "rouge_l", "bleu"]


@dataclass(frozen=True)
class Example:
    """One prompt and its reference answer.

    `key` names the underlying item (all phrasings of an item share it) and decides the split;
    it is an implementation detail for callers, who only need `prompt` and `answer`.
    """

    prompt: str
    answer: str
    key: str = ""


Generator = Callable[[random.Random], Example]


@dataclass(frozen=True)
class Task:
    """A generated task: `examples()` draws from a fixed split, `score()` grades an answer.

    Example:
        >>> task = get_task("arithmetic")
        >>> ex = task.examples("test", 50)[0]
        >>> task.score("85", ex.answer)
    """

    name: str
    description: str
    metric: MetricName
    generate: Generator
    unseen: bool = False  # no adapter is trained for it: it measures generalisation
    test_fraction: float = 0.25  # share of items (keys) that belong to the test split
    family: str = ""  # related tasks share a family

    def split_of(self, ex: Example) -> Split:
        """Stable split of an item: md5, not `hash()`, so it survives PYTHONHASHSEED."""
        digest = hashlib.md5(f"{self.name}:{ex.key or ex.prompt}".encode()).hexdigest()
        return "test" if int(digest[:8], 16) % 10_000 < self.test_fraction * 10_000 else "train"

    def examples(self, split: Split, n: int, seed: int = 0, distinct: bool = True) -> list[Example]:
        """`n` examples of one split; the same (split, n, seed) always gives the same list.

        Args:
            split: "train" or "test".
            n: how many examples.
            seed: selects another deterministic sample of the same split.
            distinct: no repeated prompt. Training sets larger than a small task's item space
                (capitals) pass False and get repeats.

        Raises:
            ValueError: bad split or n, or fewer than n distinct prompts exist in the split.
        """
        if split not in ("train", "test"):
            raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
        if n < 0:
            raise ValueError(f"`n` must be >= 0, got {n}")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        out: list[Example] = []
        seen: set[str] = set()
        for _ in range(200 * n + 2000):  # rejection sampling; bounded so a small space fails loudly
            if len(out) == n:
                return out
            ex = self.generate(rng)
            if self.split_of(ex) != split or (distinct and ex.prompt in seen):
                continue
            seen.add(ex.prompt)
            out.append(ex)
        if len(out) == n:
            return out
        raise ValueError(
            f"task {self.name!r}: only {len(out)} distinct {split} prompts found, asked for n={n}; "
            "pass distinct=False or a smaller n"
        )

    def score(self, prediction: str, answer: str) -> float:
        """Score one model output against the reference, in [0, 100]."""
        return METRICS[self.metric](prediction, answer)

    def example_prompts(self, k: int = 3) -> list[str]:
        """k training prompts (never test prompts) for adapters.yaml and UI examples."""
        return [ex.prompt for ex in self.examples("train", k, seed=1234)]
