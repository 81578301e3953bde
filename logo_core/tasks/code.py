"""A small code task: identifier case conversion (snake_case <-> camelCase)."""

from __future__ import annotations

import random

from .base import Example

IDENT_WORDS = [
    "get",
    "set",
    "user",
    "name",
    "file",
    "path",
    "max",
    "min",
    "count",
    "total",
    "item",
    "list",
    "index",
    "value",
    "key",
    "buffer",
    "size",
    "read",
    "write",
    "load",
    "save",
    "parse",
    "open",
    "close",
    "start",
    "stop",
    "request",
    "response",
    "token",
    "cache",
    "config",
    "http",
    "json",
    "data",
    "table",
    "row",
    "column",
    "error",
    "retry",
    "timeout",
]


def case_conversion(rng: random.Random) -> Example:
    """Convert an identifier of 2-3 words between snake_case and camelCase (case-sensitive)."""
    words = rng.sample(IDENT_WORDS, rng.randint(2, 3))
    snake = "_".join(words)
    camel = words[0] + "".join(w.capitalize() for w in words[1:])
    if rng.random() < 0.6:
        source, target, style = snake, camel, "camelCase"
        template = rng.choice(
            [
                "Convert {x} to camelCase.",
                "snake_case: {x}\ncamelCase:",
                "Rewrite the Python identifier `{x}` in camelCase.",
                "What is the camelCase form of the variable name {x}?",
            ]
        )
    else:
        source, target, style = camel, snake, "snake_case"
        template = rng.choice(
            [
                "Convert {x} to snake_case.",
                "camelCase: {x}\nsnake_case:",
                "Rewrite the JavaScript identifier `{x}` in snake_case.",
                "What is the snake_case form of the variable name {x}?",
            ]
        )
    return Example(template.format(x=source), target, f"{snake}>{style}")
