"""A deterministic generated task suite: one adapter per seen task, unseen tasks held out.

Example:
    >>> from logo_core.tasks import TASKS, get_task
    >>> task = get_task("arithmetic")
    >>> test = task.examples("test", 50)          # same list on every call
    >>> task.score("85", test[0].answer)           # float in [0, 100]
"""

from __future__ import annotations

from . import code, language, reasoning, unseen
from .base import Example, Task
from .metrics import METRICS, normalize

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "boolean_expressions",
            "Evaluate a Boolean expression of True/False with not/and/or.",
            "exact_match",
            reasoning.boolean_expressions,
        ),
        Task("arithmetic", "Add or subtract two two-digit numbers.", "exact_match", reasoning.arithmetic),
        Task("word_sorting", "Sort a short list of words alphabetically.", "exact_match", reasoning.word_sorting),
        Task(
            "object_counting",
            "Count the objects of one category (fruits, animals, ...) in a list.",
            "exact_match",
            reasoning.object_counting,
        ),
        Task(
            "sentiment", "Classify a short product review as positive or negative.", "exact_match", language.sentiment
        ),
        Task(
            "entailment", "Decide whether a premise entails a hypothesis (yes/no).", "exact_match", language.entailment
        ),
        Task(
            "struct_to_text",
            "Describe a restaurant from attribute data (name[..], food[..]) in one sentence.",
            "rouge_l",
            language.struct_to_text,
        ),
        Task(
            "translation_en_fr", "Translate a simple English sentence into French.", "bleu", language.translation_en_fr
        ),
        Task("capitals", "Name the capital city of a country.", "exact_match", language.capitals, test_fraction=0.4),
        Task(
            "case_conversion",
            "Convert a code identifier between snake_case and camelCase.",
            "exact_match_cased",
            code.case_conversion,
        ),
        Task(
            "antonyms", "Give the opposite of a word.", "exact_match", unseen.antonyms, unseen=True, test_fraction=0.5
        ),
        Task(
            "plurals",
            "Give the plural of an English noun.",
            "exact_match",
            unseen.plurals,
            unseen=True,
            test_fraction=0.5,
        ),
        Task(
            "letter_counting",
            "Count how often a letter occurs in a word.",
            "exact_match",
            unseen.letter_counting,
            unseen=True,
            test_fraction=0.5,
        ),
    ]
}


def get_task(name: str) -> Task:
    """The task called `name`.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def adapter_tasks() -> list[Task]:
    """Tasks that get a trained adapter (not `unseen`), in suite order."""
    return [t for t in TASKS.values() if not t.unseen]


__all__ = ["METRICS", "TASKS", "Example", "Task", "adapter_tasks", "get_task", "normalize"]
