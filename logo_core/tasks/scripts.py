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
    """Generator: a name in `locale` (Cyrillic) -> its Latin transliteration (cyrtranslit). It offers train-only
    pseudo-names as `generate.train_extra` (`pseudo_names`)."""
    import cyrtranslit

    items = cyrillic_names(locale)

    def generate(rng: random.Random) -> Example:
        name = rng.choice(items)
        return Example(name, cyrtranslit.to_latin(name, scheme), name)

    generate.train_extra = pseudo_names(locale, scheme)
    return generate


@cache
def letter_bigrams(locale: str) -> dict[str, tuple[str, ...]]:
    """Which letter follows which in `locale`'s Cyrillic names (lower case; "^" starts a word, "$" ends it)."""
    follow: dict[str, list[str]] = {}
    for name in cyrillic_names(locale):
        for word in name.lower().split():
            for a, b in zip("^" + word, word + "$"):
                follow.setdefault(a, []).append(b)
    return {a: tuple(b) for a, b in follow.items()}


def pseudo_names(locale: str, scheme: str, max_chars: int = 24):
    """Generator of train-only items: pseudo-names drawn letter by letter from `letter_bigrams` (one or two
    words, capitalised as often as the real names are), never a real CLDR name, transliterated by cyrtranslit.

    The real names are a few hundred per split; an adapter trained on them alone learns them by heart and drops
    or doubles letters in held-out ones (docs/pool.md). Names that exist nowhere can only be copied by the
    per-letter rule. Dev and test stay the real names (`Task.extra_examples` never enters a split)."""
    import cyrtranslit

    real = set(cyrillic_names(locale))
    follow = letter_bigrams(locale)
    words = [w for n in real for w in n.split()]
    capitalised = sum(w[:1].isupper() for w in words) / len(words)
    two_words = sum(" " in n for n in real) / len(real)

    def word(rng: random.Random) -> str:
        letters, c = "", "^"
        while len(letters) < 12:
            c = rng.choice(follow[c])
            if c == "$":
                break
            letters += c
        return letters.capitalize() if rng.random() < capitalised else letters

    def generate(rng: random.Random) -> Example:
        while True:
            name = " ".join(word(rng) for _ in range(2 if rng.random() < two_words else 1))
            if name not in real and 3 <= len(name) <= max_chars and all(len(w) >= 2 for w in name.split()):
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
