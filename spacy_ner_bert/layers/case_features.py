"""Casing features of each token, for uncased encoders (their wordpieces cannot see case)."""
from typing import List

import numpy
from spacy.attrs import IS_DIGIT, IS_LOWER, IS_TITLE, IS_UPPER, LOWER, ORTH, SENT_START
from spacy.tokens import Doc

# Columns of `case_features`, in order.
CASE_FEATURES = ("lower", "upper", "title", "mixed", "uncased", "digit", "sent_start")


def case_features(docs: List[Doc]) -> numpy.ndarray:
    """A 0/1 row per token of all docs (concatenated): the flags named in CASE_FEATURES.

    "mixed" is any other use of capitals ("iPhone", "McDonald"); "uncased" marks tokens with no
    cased letter (punctuation, numbers); "sent_start" marks the
    first token of a sentence (always the doc's first token), where a capital says less.

    docs (List[Doc]): The documents.
    RETURNS (numpy.ndarray): float32, (total tokens, len(CASE_FEATURES)).
    """
    rows = [doc.to_array([IS_LOWER, IS_UPPER, IS_TITLE, IS_DIGIT, SENT_START, ORTH, LOWER]) for doc in docs if len(doc)]
    if not rows:
        return numpy.zeros((0, len(CASE_FEATURES)), dtype="float32")
    flags = numpy.concatenate(rows)
    out = numpy.zeros((len(flags), len(CASE_FEATURES)), dtype="float32")
    lower, upper, title = flags[:, 0] == 1, flags[:, 1] == 1, flags[:, 2] == 1
    has_capital = flags[:, 5] != flags[:, 6]  # ORTH != LOWER
    out[:, 0] = lower
    out[:, 1] = upper
    out[:, 2] = title
    out[:, 3] = has_capital & ~upper & ~title
    out[:, 4] = ~has_capital & ~lower
    out[:, 5] = flags[:, 3] == 1
    out[:, 6] = flags[:, 4] == 1
    # A doc's first token starts a sentence even when no sentence boundaries were set.
    starts = numpy.cumsum([0] + [len(doc) for doc in docs if len(doc)][:-1])
    out[starts, 6] = 1.0
    return out
