"""Script families: Cyrillic -> Latin transliteration (cyrtranslit) and romanisation of other
scripts (unidecode), both over CLDR territory names in each language (babel).

A transliteration is a per-letter rule, so names held out of training are reachable; chrF gives
credit for the letters an adapter gets right.
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


def romanize(locale: str):
    """Generator: a territory name in `locale` -> its ASCII romanisation (unidecode)."""
    from unidecode import unidecode

    items = territory_names(locale)

    def generate(rng: random.Random) -> Example:
        code, name = rng.choice(items)
        return Example(name, " ".join(unidecode(name).split()), code)

    return generate
