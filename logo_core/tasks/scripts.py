"""Script families over CLDR names in each language (babel): Cyrillic -> Latin transliteration
(cyrtranslit) and removing diacritics from Latin-script names (unidecode).

Both are per-letter rules, so names held out of training are reachable.
"""

from __future__ import annotations

import random
import re
from functools import cache

from .base import Example


@cache
def territory_names(locale: str, max_chars: int = 20) -> tuple[tuple[str, str], ...]:
    """(ISO code, name) of every country/territory in `locale`'s CLDR data (babel), short names only.

    Names with digits, brackets or Latin letters (e.g. "ЕС", "Congo (Kinshasa)") are left out:
    they are abbreviations or mix scripts.
    """
    from babel import Locale

    names = Locale.parse(locale).territories
    return tuple(
        (code, name)
        for code, name in sorted(names.items())
        if code.isalpha() and len(name) <= max_chars and not re.search(r"[\dA-Za-z().,/&]", name)
    )


def cyrillic_to_latin(locale: str, scheme: str):
    """Generator: a territory name in `locale` (Cyrillic) -> its Latin transliteration (cyrtranslit)."""
    import cyrtranslit

    items = territory_names(locale)

    def generate(rng: random.Random) -> Example:
        code, name = rng.choice(items)
        return Example(name, cyrtranslit.to_latin(name, scheme), code)

    return generate


@cache
def accented_names(locale: str, max_chars: int = 20) -> tuple[str, ...]:
    """Names of territories and languages in `locale` (CLDR via babel) that carry a diacritic."""
    from babel import Locale
    from unidecode import unidecode

    loc = Locale.parse(locale)
    names = {n for table in (loc.territories, loc.languages) for n in table.values()}
    return tuple(
        sorted(n for n in names if len(n) <= max_chars and not re.search(r"[\d().,/&'’]", n) and unidecode(n) != n)
    )


def deaccent(locale: str):
    """Generator: a name with diacritics in `locale` -> the name in plain ASCII letters (unidecode)."""
    from unidecode import unidecode

    items = accented_names(locale)

    def generate(rng: random.Random) -> Example:
        name = rng.choice(items)
        return Example(name, unidecode(name), name)

    return generate
