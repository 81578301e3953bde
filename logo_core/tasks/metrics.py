"""Scorers, each `(prediction, answer) -> float in [0, 100]`.

Only the first non-empty line of a prediction is graded: every answer in the suite is one line,
and a model that answers and then rambles should be judged on its answer. ROUGE-L, BLEU and chrF come
from `rouge-score` and `sacrebleu`; they are never re-implemented here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:answer|a)\s*(?:is)?\s*:\s*", re.IGNORECASE)
_EDGE = "\"'`*_ \t,;:!?"  # markup and punctuation trimmed from both ends


def first_line(text: str) -> str:
    """The first non-empty line, stripped ('' when there is none)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def normalize(text: str, lower: bool = True) -> str:
    """Normalise a short answer like the paper (lower-case, strip, remove periods).

    Also drops an "Answer:" prefix and surrounding quotes/markdown, which are format, not content.
    """
    s = _PREFIX.sub("", first_line(text))
    s = s.replace(".", "").strip(_EDGE)
    s = " ".join(s.split())
    return s.lower() if lower else s


def _exact(prediction: str, answer: str, lower: bool) -> float:
    pred, gold = normalize(prediction, lower), normalize(answer, lower)
    if pred == gold:
        return 100.0
    # Heuristic: a one-word answer followed by an explanation ("True, because ...", "85 is the
    # sum") gets credit; the answer must be the first word, so "not True" or "The answer is 85"
    # without a colon do not.
    words = pred.split()
    if " " not in gold and words and words[0].strip(_EDGE) == gold:
        return 100.0
    return 0.0


def exact_match(prediction: str, answer: str) -> float:
    """100 if the normalised first line (or its first word, for one-word answers) matches."""
    return _exact(prediction, answer, lower=True)


def exact_match_cased(prediction: str, answer: str) -> float:
    """As `exact_match` but case-sensitive, for identifiers (`getUserName` != `getusername`)."""
    return _exact(prediction, answer, lower=False)


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(prediction: str, answer: str) -> float:
    """ROUGE-L F-measure x 100 of the first line against the reference."""
    pred = first_line(prediction)
    if not pred:
        return 0.0
    return 100.0 * _rouge().score(answer, pred)["rougeL"].fmeasure


def bleu(prediction: str, answer: str) -> float:
    """Sentence BLEU (sacrebleu defaults: BLEU-4, 13a tokeniser, exp smoothing) of the first line."""
    import sacrebleu

    pred = first_line(prediction)
    if not pred:
        return 0.0
    return float(sacrebleu.sentence_bleu(pred, [answer]).score)


def chrf(prediction: str, answer: str) -> float:
    """Sentence chrF (sacrebleu defaults) of the first line: partial credit for near-miss spellings
    (number words, transliterations), where exact match would hide an adapter that is almost right."""
    import sacrebleu

    pred = first_line(prediction)
    if not pred:
        return 0.0
    return float(sacrebleu.sentence_chrf(pred, [answer]).score)


METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "exact_match_cased": exact_match_cased,
    "rouge_l": rouge_l,
    "bleu": bleu,
    "chrf": chrf,
}
