"""Script families over CLDR names in each language (babel): Cyrillic -> Latin transliteration
(cyrtranslit) and removing diacritics from Latin-script names (unidecode).

Both are per-letter rules, so names held out of training are reachable.
"""

from __future__ import annotations

import random
import re
from functools import cache

from .base import Example

TABLES = ("territories", "languages", "currencies", "scripts")  # CLDR name tables per locale (babel)


@cache
def cldr_names(locale: str) -> frozenset[str]:
    """Every name in `locale`'s CLDR tables of territories, languages, currencies and scripts.

    About 1,100-1,300 names a locale. The first pool drew from territories alone (~240): its
    transliteration adapters learnt those names by heart and misspelt held-out ones (docs/pool.md).
    """
    from babel import Locale

    loc = Locale.parse(locale)
    return frozenset(n for table in TABLES for n in getattr(loc, table).values())


@cache
def cyrillic_names(locale: str, max_chars: int = 24) -> tuple[str, ...]:
    """Names in `locale` (Cyrillic) written in that script alone, short names only.

    Names with digits, brackets, quotes or Latin letters (e.g. "ЕС", "Congo (Kinshasa)") are left
    out: they are abbreviations or mix scripts.
    """
    return tuple(
        sorted(n for n in cldr_names(locale) if len(n) <= max_chars and not re.search(r"[\dA-Za-z().,/&'’«»\"-]", n))
    )


def cyrillic_to_latin(locale: str, scheme: str):
    """Generator: a name in `locale` (Cyrillic) -> its Latin transliteration (cyrtranslit)."""
    import cyrtranslit

    items = cyrillic_names(locale)

    def generate(rng: random.Random) -> Example:
        name = rng.choice(items)
        return Example(name, cyrtranslit.to_latin(name, scheme), name)

    return generate


@cache
def accented_names(locale: str, max_chars: int = 30) -> tuple[str, ...]:
    """Names (CLDR tables) and number words 1-999 (num2words) in `locale` that carry a diacritic.

    Number words widen the item space where CLDR has few accented names (Polish: 294 names,
    about 1,000 items with the numbers), so a held-out item is a new word, not a new order of
    memorised ones.
    """
    from num2words import num2words
    from unidecode import unidecode

    numbers = {num2words(n, lang=locale) for n in range(1, 1000)}
    return tuple(
        sorted(
            n
            for n in cldr_names(locale) | numbers
            if len(n) <= max_chars and not re.search(r"[\d().,/&'’]", n) and unidecode(n) != n
        )
    )


def deaccent(locale: str):
    """Generator: a name with diacritics in `locale` -> the name in plain ASCII letters (unidecode)."""
    from unidecode import unidecode

    items = accented_names(locale)

    def generate(rng: random.Random) -> Example:
        name = rng.choice(items)
        return Example(name, unidecode(name), name)

    return generate
