"""English families: inflection (lemminflect) and identifier case styles (words from CLDR's
English names of territories, languages and currencies, via babel).

Both are regular rules with exceptions, learnable from a few hundred examples and testable on
held-out words.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from functools import cache, lru_cache

from .base import Example


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, dict[str, tuple[str, ...]]]:
    """lemminflect's lemma -> {Penn tag: forms} table (its own lookup data, ~34k lemmas)."""
    from lemminflect.core.Inflections import Inflections

    return Inflections()._getInflDict()  # the table getInflection reads; no public accessor


def _form(lemma: str, forms: dict[str, tuple[str, ...]], tag: str) -> str | None:
    """The lexicon's own `tag` form; VBN falls back to lemminflect's rules, as the lexicon only
    lists irregular participles. Comparatives never do: the rules would invent "advisabler"."""
    if tag in forms:
        return forms[tag][0]
    if tag == "VBN" and "VBD" in forms:
        from lemminflect import getInflection

        return getInflection(lemma, tag)[0]
    return None


@cache
def inflections(pos: str, tag: str) -> tuple[tuple[str, str], ...]:
    """(lemma, form) pairs: lower-case lemmas of 3-10 letters of part of speech `pos` whose `tag`
    form exists and differs from the lemma."""
    out = []
    for lemma, forms in sorted(_lexicon().items()):
        if pos not in forms or not re.fullmatch(r"[a-z]{3,10}", lemma):
            continue
        form = _form(lemma, forms, tag)
        if form and form != lemma and re.fullmatch(r"[a-z]+", form):
            out.append((lemma, form))
    return tuple(out)


@cache
def _unambiguous(pos: str, tag: str) -> tuple[tuple[str, str], ...]:
    """The pairs whose form is the `tag` form of no other lemma ("annexed" is that of annex and annexe),
    so that the way back has one answer."""
    count = Counter(form for _, form in inflections(pos, tag))
    return tuple(pair for pair in inflections(pos, tag) if count[pair[1]] == 1)


def inflection(pos: str, tag: str, back: bool = False):
    """Generator: a lemma of part of speech `pos` -> its `tag` form (lemminflect's lexicon); with `back`, the
    form -> its lemma (e.g. the past tense back to the infinitive). The item key is the lemma either way."""

    def generate(rng: random.Random) -> Example:
        if back:
            lemma, form = rng.choice(_unambiguous(pos, tag))
            return Example(form, lemma, lemma)
        lemma, form = rng.choice(inflections(pos, tag))
        return Example(lemma, form, lemma)

    return generate


@lru_cache(maxsize=1)
def phrases() -> tuple[str, ...]:
    """Lower-cased 2-4 word English names of territories, languages, currencies and scripts (CLDR via babel).

    About 900 phrases: with the first pool's 2-3 words over three tables (470) the adapters learnt the
    training names rather than the rule (docs/pool.md, "Choosing the training recipe").
    """
    from babel import Locale

    en = Locale.parse("en")
    names = [n for table in (en.territories, en.languages, en.currencies, en.scripts) for n in table.values()]
    return tuple(sorted({n.lower() for n in names if re.fullmatch(r"[A-Za-z]+( [A-Za-z]+){1,3}", n)}))


CASES = {  # style name -> words -> identifier; the rule, not data
    "snake_case": lambda w: "_".join(w),
    "camelCase": lambda w: w[0] + "".join(x.capitalize() for x in w[1:]),
    "PascalCase": lambda w: "".join(x.capitalize() for x in w),
    "kebab-case": lambda w: "-".join(w),
    "dot.case": lambda w: ".".join(w),  # replaced CONSTANT_CASE (docs/pool.md: upper-case spelling did not learn)
    "Train-Case": lambda w: "-".join(x.capitalize() for x in w),
    "COBOL-CASE": lambda w: "-".join(w).upper(),
}


def identifier_case(style: str):
    """Generator: a lower-case phrase -> the identifier in `style`."""
    convert = CASES[style]

    def generate(rng: random.Random) -> Example:
        phrase = rng.choice(phrases())
        return Example(phrase, convert(phrase.split()), phrase)

    return generate
