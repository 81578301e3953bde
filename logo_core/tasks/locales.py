"""Locale families from CLDR (babel): long dates per language, prices per country.

Month names repeat across items, so a held-out date is a new combination of learnt parts.
Non-breaking spaces in babel's output are written as plain spaces: the answer is meant to be
typed, and the scorers split on whitespace anyway.
"""

from __future__ import annotations

import datetime
import random
from decimal import Decimal

from .base import Example


def _plain_spaces(text: str) -> str:
    return " ".join(text.replace("\u00a0", " ").replace("\u202f", " ").split())


def long_date(locale: str):
    """Generator: an ISO date (1950-2049) -> babel's long date format in `locale`."""
    from babel.dates import format_date

    start = datetime.date(1950, 1, 1).toordinal()
    end = datetime.date(2049, 12, 31).toordinal()

    def generate(rng: random.Random) -> Example:
        day = datetime.date.fromordinal(rng.randint(start, end))
        return Example(day.isoformat(), _plain_spaces(format_date(day, "long", locale=locale)), day.isoformat())

    return generate


def price(locale: str, currency: str):
    """Generator: an amount (1.00-99,999.99) -> babel's currency format for `locale`."""
    from babel.numbers import format_currency

    def generate(rng: random.Random) -> Example:
        cents = rng.randint(100, 9_999_999)
        amount = f"{cents // 100}.{cents % 100:02d}"
        return Example(amount, _plain_spaces(format_currency(Decimal(amount), currency, locale=locale)), amount)

    return generate
