"""The task suite: 8 families of related tasks with an adapter each, held-out members, and one
family held out whole (no adapter in it), so an evaluation can ask whether routing to relatives helps.

Every family is a table of members (task suffix, display name, generator); the phrasings are the
family's, with the member's name filled in. Data come from packages (num2words, babel/CLDR,
cyrtranslit, unidecode, lemminflect, pint), never from lists typed here.

Example:
    >>> from logo_core.tasks import TASKS, get_task
    >>> task = get_task("number_words_fr")
    >>> test = task.examples("test", 50)          # same list on every call
    >>> task.score("quarante-deux", test[0].answer)   # float in [0, 100]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from babel import Locale

from . import english, locales, numbers, scripts
from .base import Example, Generator, MetricName, Task
from .metrics import METRICS, normalize


@dataclass(frozen=True)
class Family:
    """Related tasks sharing phrasings; members listed in `unseen` get no adapter."""

    name: str
    description: str  # with `{name}`, the member's display name
    metric: MetricName
    source: str  # packages the data come from
    templates: tuple[str, ...]  # `{x}` is the item, `{name}` the member's display name
    test_templates: tuple[str, ...]
    members: tuple[tuple[str, str, Generator], ...]  # (task suffix, display name, generator)
    unseen: tuple[str, ...] = ()  # suffixes of held-out members
    whole_unseen: bool = False  # the whole family is held out
    people_templates: tuple[str, ...] = ()  # how people ask (word problems, context): the `people` split only
    people_dev_templates: tuple[str, ...] = ()  # more of that kind, written apart: `people_dev`, for choosing

    def tasks(self) -> list[Task]:
        def fill(texts: tuple[str, ...], name: str) -> tuple[str, ...]:
            return tuple(t.replace("{name}", name) for t in texts)

        return [
            Task(
                f"{self.name}_{suffix}",
                self.description.replace("{name}", name),
                self.metric,
                gen,
                unseen=self.whole_unseen or suffix in self.unseen,
                family=self.name,
                templates=fill(self.templates, name),
                test_templates=fill(self.test_templates, name),
                people_templates=fill(self.people_templates, name),
                people_dev_templates=fill(self.people_dev_templates, name),
                source=self.source,
                train_extra=getattr(gen, "train_extra", None),
            )
            for suffix, name, gen in self.members
        ]


def lang(code: str) -> str:
    """A language's English name, as babel's CLDR data spell it (display only; the data are num2words'/babel's)."""
    return Locale.parse(code).english_name


FAMILIES = [
    Family(
        "number_words",
        "Write a number (0-999) in {name} words.",
        "chrf",
        "num2words",
        (
            "Write the number {x} in {name} words.",
            "How do you say {x} in {name}? Answer in words.",
            "{x} in {name} words:",
        ),
        ("Spell out {x} in {name}.",),
        tuple(
            (c, lang(c), numbers.number_words(c, even_digits=True))
            for c in ("en", "fr", "es", "de", "it", "pt", "nl", "eo", "vi", "ja")
        ),
        # it, es and pt scored under 80 on dev with the pool's recipe, eo, vi and ja over 95 (docs/pool.md): the
        # adapters are theirs, the Romance three stay in the suite as held-out members.
        unseen=("nl", "it", "es", "pt"),
        people_templates=(
            "My kid asked me how to write {x} in {name}. Could you spell it out in words for me?",
            "I am filling in a cheque in {name} and need the amount {x} written out in words. What do I write?",
            "Quick one: {x}, but written as {name} words please.",
            "For my {name} homework I have to write the number {x} as words. What is it?",
        ),
        people_dev_templates=(
            "How would I write out {x} in {name}, in words, on a form?",
            "Writing a birthday card in {name}: how is the number {x} spelled out?",
            "Need {x} as {name} words, not digits. Thanks!",
        ),
    ),
    Family(
        "ordinal_words",
        "Write an ordinal number (1-100) in {name} words.",
        "chrf",
        "num2words",
        (
            "Write the ordinal of {x} in {name} words.",
            "What is the {name} ordinal word for {x}?",
            "{x} as an ordinal in {name} words:",
        ),
        ("Spell out the {name} ordinal number for position {x}.",),
        tuple((c, lang(c), numbers.number_words(c, 1, 100, "ordinal")) for c in ("en", "fr", "es", "de", "it")),
        whole_unseen=True,
        people_templates=(
            "I came in at position {x} in the race. How would a {name} speaker write my place as an ordinal word?",
            "Help me with my {name} class: what is the ordinal for {x}, written in words?",
            'In {name}, how do I write "number {x}" as in first, second, third... but for {x}?',
            "What do you call item number {x} in a list, as an ordinal word in {name}?",
        ),
        people_dev_templates=(
            "My flat is on floor {x}. How do I say that as an ordinal in {name}, spelled out?",
            "In a {name} text I want the ordinal for {x} in words. What is it?",
            "Ranking list in {name}: spell out the ordinal form of {x}.",
        ),
    ),
    Family(
        "translit",
        "Transliterate a {name} name from Cyrillic to Latin letters.",
        "chrf",
        "babel (CLDR names), cyrtranslit",
        (
            "Transliterate the {name} word {x} into Latin letters.",
            "Write {x} ({name}) in the Latin alphabet.",
            "{name} {x} in Latin script:",
        ),
        ("How is the {name} name {x} spelled in Latin letters?",),
        tuple(
            (loc, name, scripts.cyrillic_to_latin(loc, scheme))
            for loc, scheme, name in [
                ("uk", "ua", "Ukrainian"),
                ("bg", "bg", "Bulgarian"),
                ("sr", "rs", "Serbian"),
                ("mk", "mk", "Macedonian"),
                ("be", "by", "Belarusian"),
                ("tg", "tj", "Tajik"),  # replaces Russian, which did not learn (docs/pool.md)
                ("mn", "mn", "Mongolian"),
            ]
        ),
        unseen=("mn",),
        people_templates=(
            "My pen pal signs her letters {x}. She writes {name}. How do I write that in Latin letters?",
            "I saw {x} on a {name} map. Can you write it out in our alphabet?",
            "Could you romanize the {name} name {x} for a passport form?",
            "How would you type {x} ({name}) on a keyboard with only Latin letters?",
        ),
        people_dev_templates=(
            "A {name} friend wrote {x}. How would that look in Latin letters?",
            "I'm putting {x} ({name}) on a shipping label that only takes Latin characters. How do I write it?",
            "Can you spell {x} from {name} using English letters?",
        ),
    ),
    Family(
        "deaccent",
        "Write a {name} name without diacritics.",
        "exact_match",
        "babel (CLDR names), unidecode",
        (
            "Remove the accents from '{x}'.",
            "Write {x} ({name}) without diacritics.",
            "{name} text {x} in plain ASCII:",
        ),
        ("Strip the diacritical marks from the {name} words {x}.",),
        tuple(
            (loc, name, scripts.deaccent(loc))
            for loc, name in [
                ("cs", "Czech"),
                ("pl", "Polish"),
                ("tr", "Turkish"),
                ("hu", "Hungarian"),
                ("vi", "Vietnamese"),
                ("ro", "Romanian"),
                ("sk", "Slovak"),
            ]
        ),
        unseen=("sk",),
        people_templates=(
            "My old system cannot take accents. How should I type the {name} name {x}?",
            "Please give me {x} ({name}) with all the accent marks taken off.",
            "I need {x} in plain letters without any {name} diacritics for a file name. What is it?",
            "Write the {name} words {x} the way you would on a keyboard without special characters.",
        ),
        people_dev_templates=(
            "My email client breaks on accents. What is {x} ({name}) without them?",
            "Strip the {name} diacritics from {x} for me, please.",
            "How do I write {x} in plain ASCII letters? It is {name}.",
        ),
    ),
    Family(
        "inflect",
        "Give the {name} of an English word.",
        "exact_match",
        "lemminflect",
        ("What is the {name} of '{x}'?", "Give the {name} of the word {x}.", "{x} -> {name}:"),
        ("Which word is the {name} of {x}?",),
        tuple(
            (suffix, name, english.inflection(pos, tag, back))
            for suffix, name, pos, tag, back in [
                ("plural", "plural", "NN", "NNS", False),
                ("past", "past tense", "VB", "VBD", False),
                # The plural back to its singular: in place of the past participle, which did not learn past 62.5
                # on dev at 150 or 300 steps (docs/pool.md); the participle is held out with the comparative.
                ("singular", "singular", "NN", "NNS", True),
                ("gerund", "-ing form", "VB", "VBG", False),
                ("third_person", "third-person singular", "VB", "VBZ", False),
                # The past tense back to its infinitive: in place of the comparative, which did not learn past
                # 50 on dev under any recipe (docs/pool.md); the comparative is held out with the superlative.
                ("infinitive", "infinitive", "VB", "VBD", True),
                ("comparative", "comparative", "JJ", "JJR", False),
                ("superlative", "superlative", "JJ", "JJS", False),
                ("participle", "past participle", "VB", "VBN", False),
            ]
        ),
        unseen=("comparative", "superlative", "participle"),
        people_templates=(
            "I'm writing an essay and need the {name} of {x}. What is it?",
            "English is not my first language. What is the {name} form of the word {x}?",
            'Fill the gap: I need the {name} of "{x}".',
            "My teacher asked for the {name} of {x}. Which word should I write?",
        ),
        people_dev_templates=(
            "Grammar question: what's the {name} of {x}?",
            "I keep forgetting the {name} of {x}. Can you remind me?",
            "Which English word is the {name} of {x}?",
        ),
    ),
    Family(
        "case",
        "Write a phrase as a {name} identifier.",
        "exact_match_cased",
        "babel (CLDR English names)",
        ("Convert '{x}' to {name}.", "Write {x} as a {name} identifier.", '{name} of "{x}":'),
        ("Turn the words '{x}' into a {name} name.",),
        tuple(
            (re.split(r"[_.-]|Case", style)[0].lower(), style, english.identifier_case(style))
            for style in english.CASES
        ),
        unseen=("cobol",),
        people_templates=(
            'I am naming a variable for "{x}". What does it look like in {name}?',
            "Our style guide wants {name}. How do I write the phrase {x} that way?",
            'Can you rewrite "{x}" in {name} for my code?',
            'What is "{x}" in {name} style?',
        ),
        people_dev_templates=(
            "Turn the words {x} into a {name} identifier, please.",
            'My linter wants {name}. What should I call something named "{x}"?',
            'How does "{x}" look when written in {name}?',
        ),
    ),
    Family(
        "date",
        "Write an ISO date in {name} long format.",
        "exact_match",
        "babel (CLDR date formats)",
        (
            "Write the date {x} in {name}.",
            "How is {x} written in {name}? Use the long date format.",
            "{x} written as a date in {name}:",
        ),
        ("Express the date {x} in long {name} format.",),
        tuple((loc, lang(loc), locales.long_date(loc)) for loc in ("fr", "de", "es", "it", "pt", "nl", "sv")),
        unseen=("sv",),
        people_templates=(
            "I am writing a letter in {name} and need to put the date {x} at the top. How do I write it out?",
            "How would a {name} newspaper print the date {x}, written out in full?",
            "My invitation says {x}. Write that date out in words in {name}.",
            "Spell out the date {x} in {name}.",
        ),
        people_dev_templates=(
            "I need the date {x} written out the {name} way for a form. What is it?",
            "How do you write {x} as a full date in {name}?",
            "Put {x} into words the way a {name} calendar would say it.",
        ),
    ),
    Family(
        "money",
        "Format an amount as a price in {name}.",
        "exact_match",
        "babel (CLDR currency formats)",
        (
            "Format {x} as a price in {name}.",
            "How is an amount of {x} written on a price tag in {name}?",
            "Price format of {name} for {x}:",
        ),
        ("Write {x} the way prices are written in {name}.",),
        tuple(
            (suffix, f"{country} ({currency})", locales.price(loc, currency))
            for suffix, loc, currency, country in [
                ("de", "de_DE", "EUR", "Germany"),
                ("fr", "fr_FR", "EUR", "France"),
                ("us", "en_US", "USD", "the US"),
                ("in", "en_IN", "INR", "India"),
                ("br", "pt_BR", "BRL", "Brazil"),
                ("jp", "ja_JP", "JPY", "Japan"),
                ("ch", "de_CH", "CHF", "Switzerland"),
            ]
        ),
        unseen=("ch",),
        people_templates=(
            "I am making price labels for a shop in {name}. How should I write {x}?",
            "A customer asks how {x} would appear on a receipt in {name}. What do I show?",
            "How do they write an amount like {x} on price tags in {name}?",
            "Show {x} written the way a store in {name} would display it.",
        ),
        people_dev_templates=(
            "What does {x} look like on a {name} price tag?",
            "I'm writing an invoice for a client in {name}. How do I format {x}?",
            "Format the amount {x} the way people in {name} write prices.",
        ),
    ),
    Family(
        "units",
        "Convert a metric quantity to {name}.",
        "exact_match",
        "pint",
        ("Convert {x} to {name}.", "How many {name} are in {x}?", "{x} = ? {name}"),
        ("Express {x} in {name}.",),
        tuple(
            (f"{src}_{dst}", numbers.unit_name(dst), numbers.unit_conversion(src, dst))
            for src, dst in [("km", "m"), ("m", "cm"), ("cm", "mm"), ("kg", "g"), ("m", "km"), ("g", "kg"), ("l", "ml")]
        ),
        unseen=("l_ml",),
        people_templates=(
            "A recipe lists {x}. How many {name} is that?",
            "My package is {x}. What is that in {name}?",
            "I have {x} of it. Tell me the amount in {name}.",
            "For my science homework: change {x} into {name}.",
        ),
        people_dev_templates=(
            "The label says {x}. What's that in {name}?",
            "Quick conversion please: {x} to {name}.",
            "I measured {x}. How much is that in {name}?",
        ),
    ),
]

TASKS: dict[str, Task] = {t.name: t for f in FAMILIES for t in f.tasks()}


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


__all__ = ["FAMILIES", "METRICS", "TASKS", "Example", "Family", "Task", "adapter_tasks", "get_task", "normalize"]
