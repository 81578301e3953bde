"""Symbolic tasks in the spirit of BIG-Bench Hard: boolean expressions, arithmetic, word sorting,
object counting. Each generator draws one item and phrases it with one of several templates.
"""

from __future__ import annotations

import random

from .base import Example


def boolean_expressions(rng: random.Random) -> Example:
    """BBH format: `not ( True and False ) or True is` -> `True`.

    Kept to 2-4 literals: with deeper trees a 135M model trained for a few dozen steps stays at
    chance (measured: adapter = base = 40% on depth-2 trees).
    """

    def literal() -> str:
        value = str(rng.random() < 0.5)
        return f"not {value}" if rng.random() < 0.3 else value

    text = f" {rng.choice(['and', 'or'])} ".join(literal() for _ in range(rng.choice([2, 2, 3])))
    if rng.random() < 0.3:
        text = f"not ( {text} )"
    elif rng.random() < 0.4:
        text = f"( {text} ) {rng.choice(['and', 'or'])} {literal()}"
    val = eval(text, {"__builtins__": {}})  # safe: the text holds only True/False/not/and/or/()
    template = rng.choice(
        [
            "{e} is",
            "Evaluate the result of a random Boolean expression.\n\nQ: {e} is\nA:",
            "Is the following expression True or False? {e}",
            "What does the Boolean expression `{e}` evaluate to?",
        ]
    )
    return Example(template.format(e=text), str(val), text)


def arithmetic(rng: random.Random) -> Example:
    """Two-digit addition and subtraction with a non-negative result."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if rng.random() < 0.5:
        sign, word, result = "+", "plus", a + b
    else:
        a, b = max(a, b), min(a, b)
        sign, word, result = "-", "minus", a - b
    template = rng.choice(
        [
            "What is {a} {s} {b}?",
            "Compute {a} {w} {b}.",
            "{a} {s} {b} =",
            "Calculate {a} {s} {b}. Reply with the number only.",
            "Q: What do you get from {a} {w} {b}?\nA:",
        ]
    )
    return Example(template.format(a=a, b=b, s=sign, w=word), str(result), f"{a}{sign}{b}")


SORT_WORDS = [
    "apple",
    "banana",
    "cherry",
    "dragon",
    "eagle",
    "forest",
    "garden",
    "harbor",
    "island",
    "jungle",
    "kettle",
    "lemon",
    "mirror",
    "needle",
    "orange",
    "pencil",
    "quartz",
    "river",
    "silver",
    "tiger",
    "umbrella",
    "valley",
    "window",
    "yellow",
    "zebra",
    "anchor",
    "basket",
    "candle",
    "desert",
    "engine",
    "falcon",
    "guitar",
    "hammer",
    "insect",
    "jacket",
    "ladder",
    "marble",
    "nickel",
    "ocean",
    "pepper",
    "rabbit",
    "saddle",
    "tunnel",
    "velvet",
    "walnut",
    "bridge",
    "copper",
    "donkey",
    "feather",
    "ginger",
    "helmet",
]


def word_sorting(rng: random.Random) -> Example:
    """Sort 3-4 words alphabetically; the answer is the words joined by spaces."""
    words = rng.sample(SORT_WORDS, rng.randint(3, 4))
    listed = " ".join(words)
    template = rng.choice(
        [
            "Sort the following words alphabetically: List: {l}",
            "Put these words in alphabetical order: {l}",
            "Alphabetize: {c}",
            "Q: Sort alphabetically: {l}\nA:",
        ]
    )
    prompt = template.format(l=listed, c=", ".join(words))
    return Example(prompt, " ".join(sorted(words)), listed)


COUNT_ITEMS = {
    "fruits": ["apple", "banana", "peach", "plum", "orange", "grape", "strawberry", "nectarine"],
    "animals": ["cat", "dog", "goat", "rabbit", "cow", "pig", "duck", "snake"],
    "vegetables": ["carrot", "onion", "potato", "cabbage", "yam", "celery", "garlic", "lettuce head"],
    "musical instruments": ["piano", "flute", "violin", "drum", "trumpet", "accordion", "clarinet"],
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four"]


def _quantity(n: int, item: str) -> str:
    """`a plum`, `an onion`, `two peaches`, `three strawberries`."""
    if n == 1:
        return f"{'an' if item[0] in 'aeiou' else 'a'} {item}"
    if item.endswith("y"):
        plural = item[:-1] + "ies"
    elif item.endswith(("ch", "sh", "o")):
        plural = item + "es"
    else:
        plural = item + "s"
    return f"{NUMBER_WORDS[n]} {plural}"


def object_counting(rng: random.Random) -> Example:
    """BBH style: a list of owned things, some of another category; count one category."""
    category, other = rng.sample(sorted(COUNT_ITEMS), 2)
    picked = [(category, i) for i in rng.sample(COUNT_ITEMS[category], rng.randint(2, 4))]
    picked += [(other, i) for i in rng.sample(COUNT_ITEMS[other], rng.randint(0, 2))]
    rng.shuffle(picked)
    counts = [rng.choice([1, 1, 2, 3]) for _ in picked]
    phrases = [_quantity(n, item) for n, (_, item) in zip(counts, picked)]
    listed = " and ".join(phrases) if len(phrases) == 2 else ", ".join(phrases[:-1]) + f", and {phrases[-1]}"
    total = sum(n for n, (c, _) in zip(counts, picked) if c == category)
    template = rng.choice(
        [
            "I have {l}. How many {c} do I have?",
            "Q: I have {l}. How many {c} do I have?\nA:",
            "Count the {c}: I own {l}.",
            "There are {l}. How many {c} are there in total?",
        ]
    )
    return Example(template.format(l=listed, c=category), str(total), f"{listed}|{category}")
