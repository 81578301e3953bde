"""Natural-language tasks: sentiment, entailment (NLI), struct-to-text (E2E-like), English ->
French over a closed vocabulary, and capitals (closed-book QA).
"""

from __future__ import annotations

import random

from .base import Example

PRODUCTS = ["movie", "pizza", "hotel room", "phone", "book", "concert", "laptop", "restaurant", "jacket", "game"]
POSITIVE = ["wonderful", "excellent", "delightful", "fantastic", "great", "superb", "lovely", "amazing"]
NEGATIVE = ["terrible", "awful", "disappointing", "boring", "horrible", "dreadful", "poor", "bad"]
POS_EXTRA = ["I would buy it again.", "Highly recommended.", "I loved every minute.", "Worth every penny."]
NEG_EXTRA = ["I want my money back.", "Never again.", "I regret it.", "A complete waste of time."]


def sentiment(rng: random.Random) -> Example:
    """A short review built from polar adjectives; label positive/negative."""
    positive = rng.random() < 0.5
    adj = rng.choice(POSITIVE if positive else NEGATIVE)
    extra = rng.choice(POS_EXTRA if positive else NEG_EXTRA)
    thing = rng.choice(PRODUCTS)
    a = "an" if adj[0] in "aeiou" else "a"
    review = rng.choice(
        [
            f"The {thing} was {adj}. {extra}",
            f"What {a} {adj} {thing}! {extra}",
            f"{extra} Honestly, {a} {adj} {thing}.",
        ]
    )
    template = rng.choice(
        [
            "Review: {r}\nIs this review positive or negative?",
            "What is the sentiment of this review? {r}",
            "{r}\nSentiment (positive or negative):",
            "Classify the sentiment of the following text as positive or negative: {r}",
        ]
    )
    return Example(template.format(r=review), "positive" if positive else "negative", review)


PEOPLE = ["man", "woman", "boy", "girl", "chef", "doctor", "teacher", "farmer"]
ACTIVITIES = [  # (specific, general): the specific entails the general
    ("playing the guitar", "playing music"),
    ("reading a book", "reading"),
    ("eating an apple", "eating fruit"),
    ("riding a bike", "riding something"),
    ("painting a picture", "making art"),
    ("drinking coffee", "drinking"),
    ("kicking a ball", "playing with a ball"),
    ("writing a letter", "writing"),
]
PLACES = ["park", "kitchen", "library", "garden", "street", "museum"]


def entailment(rng: random.Random) -> Example:
    """Premise/hypothesis -> yes (entailed) / no (contradicted or not supported)."""
    person, place = rng.choice(PEOPLE), rng.choice(PLACES)
    act, general = rng.choice(ACTIVITIES)
    premise = f"A {person} is {act} in the {place}."
    other_act = rng.choice([a for a, _ in ACTIVITIES if a != act])
    other_place = rng.choice([p for p in PLACES if p != place])
    other_person = rng.choice([p for p in PEOPLE if p != person])
    hypothesis, label = rng.choice(
        [
            (f"Someone is {general}.", "yes"),
            (f"A {person} is in the {place}.", "yes"),
            (f"A person is {act}.", "yes"),
            (f"Somebody is in a {place}.", "yes"),
            (f"A {person} is {other_act}.", "no"),
            (f"Nobody is in the {place}.", "no"),
            (f"A {person} is in the {other_place}.", "no"),
            (f"A {other_person} is {act}.", "no"),
        ]
    )
    template = rng.choice(
        [
            "Premise: {p}\nHypothesis: {h}\nDoes the premise entail the hypothesis? Answer yes or no.",
            'If "{p}", does it follow that "{h}"?',
            "{p} Based on this, is it true that {hl}? yes or no",
            "Sentence 1: {p} Sentence 2: {h} Does sentence 1 imply sentence 2?",
        ]
    )
    prompt = template.format(p=premise, h=hypothesis, hl=hypothesis[0].lower() + hypothesis[1:-1])
    return Example(prompt, label, f"{premise}|{hypothesis}")


NAMES = [
    "The Eagle",
    "Blue Spice",
    "The Mill",
    "Green Man",
    "The Golden Palace",
    "Zizzi",
    "Aromi",
    "The Phoenix",
    "Cotto",
    "The Vaults",
    "Bibimbap House",
    "The Punter",
    "Loch Fyne",
    "Strada",
]
FOODS = ["French", "Italian", "Chinese", "Indian", "Japanese", "English", "fast food"]
AREAS = ["city centre", "riverside"]
PRICES = ["cheap", "moderately priced", "expensive"]


def struct_to_text(rng: random.Random) -> Example:
    """E2E-like: `name[X], food[Y], area[Z]` -> one short sentence, scored with ROUGE-L."""
    name, food = rng.choice(NAMES), rng.choice(FOODS)
    area = rng.choice(AREAS) if rng.random() < 0.7 else None
    price = rng.choice(PRICES) if rng.random() < 0.6 else None
    family = rng.choice([True, False]) if rng.random() < 0.4 else None
    fields = [f"name[{name}]", f"food[{food}]"]
    fields += [f"area[{area}]"] * (area is not None) + [f"priceRange[{price}]"] * (price is not None)
    fields += [f"familyFriendly[{'yes' if family else 'no'}]"] * (family is not None)
    adjectives = " ".join(a for a in (price, food) if a)
    sentence = f"{name} is {'an' if adjectives[0] in 'aeiouAEIOU' else 'a'} {adjectives} restaurant"
    sentence += f" in the {area}" if area else ""
    if family is not None:
        sentence += " that is family friendly" if family else " that is not family friendly"
    data = ", ".join(fields)
    template = rng.choice(
        [
            "Write a sentence describing this restaurant: {d}",
            "Turn the data into one sentence: {d}",
            "{d}\nDescribe the restaurant in one sentence:",
            "Generate a short description from these attributes: {d}",
        ]
    )
    return Example(template.format(d=data), sentence + ".", data)


NOUNS = {  # English -> (French, gender)
    "cat": ("chat", "m"),
    "dog": ("chien", "m"),
    "horse": ("cheval", "m"),
    "fish": ("poisson", "m"),
    "cow": ("vache", "f"),
    "mouse": ("souris", "f"),
    "car": ("voiture", "f"),
    "house": ("maison", "f"),
    "boy": ("garçon", "m"),
    "girl": ("fille", "f"),
    "table": ("table", "f"),
    "book": ("livre", "m"),
}
ADJECTIVES = {  # English -> (masculine, feminine); all placed after the noun in French
    "black": ("noir", "noire"),
    "white": ("blanc", "blanche"),
    "red": ("rouge", "rouge"),
    "green": ("vert", "verte"),
    "blue": ("bleu", "bleue"),
    "grey": ("gris", "grise"),
}
VERBS = {"sees": "voit", "likes": "aime", "follows": "suit", "has": "a", "wants": "veut", "finds": "trouve"}


def _noun_phrase(rng: random.Random) -> tuple[str, str]:
    noun = rng.choice(list(NOUNS))
    fr, gender = NOUNS[noun]
    en, fr = f"the {noun}", f"{'le' if gender == 'm' else 'la'} {fr}"
    if rng.random() < 0.5:
        adj = rng.choice(list(ADJECTIVES))
        en, fr = f"the {adj} {noun}", f"{fr} {ADJECTIVES[adj][gender == 'f']}"
    return en, fr


def translation_en_fr(rng: random.Random) -> Example:
    """`the black cat sees the cow` -> `le chat noir voit la vache`, scored with BLEU."""
    (s_en, s_fr), (o_en, o_fr) = _noun_phrase(rng), _noun_phrase(rng)
    verb = rng.choice(list(VERBS))
    en, fr = f"{s_en} {verb} {o_en}", f"{s_fr} {VERBS[verb]} {o_fr}"
    template = rng.choice(
        [
            "Translate to French: {s}",
            'How do you say "{s}" in French?',
            "English: {s}\nFrench:",
            "Translate the following English sentence into French: {s}",
        ]
    )
    return Example(template.format(s=en), fr, en)


_CAPITALS = (
    "France:Paris Germany:Berlin Italy:Rome Spain:Madrid Portugal:Lisbon Greece:Athens Poland:Warsaw "
    "Austria:Vienna Hungary:Budapest Ireland:Dublin Norway:Oslo Sweden:Stockholm Finland:Helsinki "
    "Denmark:Copenhagen Belgium:Brussels Netherlands:Amsterdam Russia:Moscow Ukraine:Kyiv "
    "Japan:Tokyo China:Beijing India:New_Delhi Thailand:Bangkok Vietnam:Hanoi Indonesia:Jakarta "
    "Philippines:Manila Malaysia:Kuala_Lumpur Egypt:Cairo Kenya:Nairobi Nigeria:Abuja Ghana:Accra "
    "Ethiopia:Addis_Ababa Morocco:Rabat Peru:Lima Chile:Santiago Argentina:Buenos_Aires "
    "Colombia:Bogota Venezuela:Caracas Cuba:Havana Mexico:Mexico_City Canada:Ottawa "
    "Australia:Canberra Iran:Tehran Iraq:Baghdad Syria:Damascus Lebanon:Beirut Turkey:Ankara "
    "Pakistan:Islamabad Afghanistan:Kabul Bangladesh:Dhaka Nepal:Kathmandu Mongolia:Ulaanbaatar "
    "Iceland:Reykjavik Romania:Bucharest Bulgaria:Sofia Serbia:Belgrade Croatia:Zagreb "
    "Czechia:Prague Switzerland:Bern Scotland:Edinburgh Wales:Cardiff Qatar:Doha Brazil:Brasilia "
    "Uruguay:Montevideo Ecuador:Quito Senegal:Dakar Uganda:Kampala Zimbabwe:Harare Angola:Luanda "
    "Sudan:Khartoum Libya:Tripoli Tunisia:Tunis South_Korea:Seoul North_Korea:Pyongyang "
    "Saudi_Arabia:Riyadh Jordan:Amman Cambodia:Phnom_Penh Laos:Vientiane Estonia:Tallinn "
    "Latvia:Riga Lithuania:Vilnius Slovakia:Bratislava Slovenia:Ljubljana Albania:Tirana"
)
# Country -> capital; `_` in the table above stands for a space inside a name.
CAPITALS = {c.replace("_", " "): k.replace("_", " ") for c, k in (p.split(":") for p in _CAPITALS.split())}
_CAPITAL_ITEMS = sorted(CAPITALS.items())  # sorted once: choice() needs a fixed order


def capitals(rng: random.Random) -> Example:
    """Country -> capital city (closed-book QA); test countries are never trained on."""
    country, capital = rng.choice(_CAPITAL_ITEMS)
    template = rng.choice(
        [
            "What is the capital of {c}?",
            "Name the capital city of {c}.",
            "Q: Which city is the capital of {c}?\nA:",
            "The capital of {c} is",
            "{c}'s capital city:",
        ]
    )
    return Example(template.format(c=country), capital, country)
