"""Number families: cardinal and ordinal number words (num2words), metric unit conversion (pint).

All three are rules over digits, so a held-out number is reachable from the trained ones: the
split is by number, and an adapter must generalise, not recall.
"""

from __future__ import annotations

import random
from decimal import Decimal
from functools import lru_cache

from .base import Example


def number_words(lang: str, low: int = 0, high: int = 999, to: str = "cardinal", even_digits: bool = False):
    """Generator: a number in [low, high] -> its words in `lang` (num2words).

    `even_digits`: draw the number of digits first, each as often, then the number. Drawn evenly from 0-999,
    nine numbers in ten have three digits, and adapters trained so wrote 19 as "einundneunzig" and 11 as "cent un"
    (docs/pool.md): the numbers people try first are the short ones.
    """
    from num2words import num2words

    groups = [(max(low, 10 ** (d - 1) if d > 1 else low), min(high, 10**d - 1)) for d in range(1, len(str(high)) + 1)]
    groups = [(a, b) for a, b in groups if a <= b]

    def generate(rng: random.Random) -> Example:
        n = rng.randint(*rng.choice(groups)) if even_digits else rng.randint(low, high)
        return Example(str(n), num2words(n, lang=lang, to=to), str(n))

    return generate


@lru_cache(maxsize=1)
def _units():
    import pint

    return pint.UnitRegistry()


def unit_name(symbol: str) -> str:
    """Plural English unit name from pint's registry ('km' -> 'kilometers')."""
    return f"{_units().Unit(symbol)}s"


def _plain(d: Decimal) -> str:
    """3400, 3.45: no exponent, no trailing zeros."""
    s = format(d.normalize(), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def unit_conversion(src: str, dst: str):
    """Generator: a quantity in `src` -> its magnitude in `dst`; the factor comes from pint.

    Decimal arithmetic on pint's factor keeps answers exact (no 3399.9999999).
    """
    factor = Decimal(str(_units().Quantity(1, src).to(dst).magnitude))

    def generate(rng: random.Random) -> Example:
        if factor > 1:  # scale up: 1..999, half of them with one decimal
            value = Decimal(rng.randint(1, 999)) if rng.random() < 0.5 else Decimal(rng.randint(1, 9999)) / 10
        else:  # scale down: whole numbers of the small unit
            value = Decimal(rng.randint(1, 99_999))
        x = f"{_plain(value)} {src}"
        return Example(x, _plain(value * factor), x)

    return generate
