"""Tasks that get no adapter (`unseen=True`): they measure how routing generalises."""

from __future__ import annotations

import random

from .base import Example

_ANTONYMS = (
    "hot:cold big:small fast:slow happy:sad light:dark open:closed early:late rich:poor "
    "strong:weak young:old hard:soft high:low full:empty wet:dry clean:dirty loud:quiet "
    "thick:thin heavy:light long:short wide:narrow near:far cheap:expensive true:false "
    "win:lose push:pull buy:sell give:take begin:end inside:outside up:down day:night "
    "love:hate friend:enemy arrive:depart accept:reject increase:decrease remember:forget "
    "always:never ancient:modern brave:cowardly safe:dangerous sharp:dull sweet:sour "
    "question:answer north:south above:below first:last asleep:awake"
)
ANTONYMS = dict(p.split(":") for p in _ANTONYMS.split())
_ANTONYM_ITEMS = sorted(ANTONYMS.items())


def antonyms(rng: random.Random) -> Example:
    """Word -> its antonym."""
    word, opposite = rng.choice(_ANTONYM_ITEMS)
    template = rng.choice(
        [
            'What is the opposite of "{w}"?',
            "Give an antonym of the word {w}.",
            "Antonym of {w}:",
            "Q: What word means the opposite of {w}?\nA:",
        ]
    )
    return Example(template.format(w=word), opposite, word)


_PLURALS = (
    "cat:cats dog:dogs box:boxes bus:buses church:churches baby:babies city:cities "
    "knife:knives leaf:leaves wolf:wolves man:men woman:women child:children mouse:mice "
    "foot:feet tooth:teeth goose:geese sheep:sheep fish:fish potato:potatoes hero:heroes "
    "story:stories party:parties key:keys day:days toy:toys glass:glasses dish:dishes "
    "person:people ox:oxen cactus:cacti house:houses tree:trees apple:apples "
    "fox:foxes watch:watches lady:ladies wife:wives life:lives shelf:shelves"
)
PLURALS = dict(p.split(":") for p in _PLURALS.split())
_PLURAL_ITEMS = sorted(PLURALS.items())


def plurals(rng: random.Random) -> Example:
    """Noun -> plural (regular and irregular)."""
    noun, plural = rng.choice(_PLURAL_ITEMS)
    template = rng.choice(
        [
            'What is the plural of "{w}"?',
            "Plural form of {w}:",
            "Write the plural of the noun {w}.",
            "Q: One {w}, two ...?\nA:",
        ]
    )
    return Example(template.format(w=noun), plural, noun)


LETTER_WORDS = [
    "strawberry",
    "banana",
    "mississippi",
    "bookkeeper",
    "committee",
    "balloon",
    "letter",
    "coffee",
    "pepper",
    "address",
    "cinnamon",
    "parallel",
    "tomorrow",
    "raccoon",
    "success",
    "grammar",
    "apple",
    "puppy",
    "butterfly",
    "engineer",
]


def letter_counting(rng: random.Random) -> Example:
    """How many times a letter occurs in a word (the letter is present at least once)."""
    word = rng.choice(LETTER_WORDS)
    letter = rng.choice(sorted(set(word)))
    template = rng.choice(
        [
            "How many times does the letter '{l}' appear in '{w}'?",
            "Count the letter {l} in the word {w}.",
            "How many {l}'s are in {w}?",
            'Number of times "{l}" occurs in "{w}":',
        ]
    )
    return Example(template.format(l=letter, w=word), str(word.count(letter)), f"{word}:{letter}")
