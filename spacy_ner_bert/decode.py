"""Constrained decoding: Viterbi over log-probabilities under IOB transition constraints.

Vectorized over the batch and the tag set with numpy; the only Python loop runs over positions
(the longest doc's length), never over tokens of each doc.
"""
from typing import List, Optional, Sequence, Tuple

import numpy

from .tags import IOBTags

# Logits are clipped to this range: NaN and +inf from a broken model must not break decoding.
_LOGIT_LIMIT = 1e6


def log_softmax(logits: numpy.ndarray) -> numpy.ndarray:
    """Log-probabilities from logits, robust to NaN/inf.

    A logit of -inf means "this tag is impossible here" and stays -inf (the model uses it to
    force O on tokens with no wordpiece). NaN counts as 0, +inf as a large finite logit, and a
    row that forbids every tag is treated as uniform.

    logits (numpy.ndarray): (n_tokens, n_tags).
    RETURNS (numpy.ndarray): float64 log-probabilities, -inf where forbidden.
    """
    x = numpy.array(logits, dtype="float64")
    x[numpy.isnan(x)] = 0.0
    forbidden = numpy.isneginf(x)
    all_forbidden = forbidden.all(axis=-1, keepdims=True)
    forbidden &= ~all_forbidden
    x = numpy.clip(x, -_LOGIT_LIMIT, _LOGIT_LIMIT)
    x[forbidden] = -numpy.inf
    x -= x.max(axis=-1, keepdims=True)
    with numpy.errstate(divide="ignore"):
        x -= numpy.log(numpy.exp(x).sum(axis=-1, keepdims=True))
    return x


class LogLinearPool:
    """Several models' tag scores as one: the mean of their log-softmax, doc by doc, normalized again
    (a log-linear pool). Members are added one at a time and only the running sum is kept, so a
    large corpus's logits from many models never sit in memory at once.
    """

    def __init__(self) -> None:
        self.total: Optional[List[numpy.ndarray]] = None
        self.n = 0

    def add(self, logits: Sequence[numpy.ndarray]) -> None:
        """Add one member: its (n_tokens, n_tags) logits per doc, docs as the other members'.

        RAISES (ValueError): If the shapes differ from the members' before.
        """
        member = [log_softmax(x) for x in logits]
        if self.total is None:
            self.total = member
        elif [x.shape for x in member] != [x.shape for x in self.total]:
            raise ValueError("ensemble members have logits of different shapes")
        else:
            self.total = [a + b for a, b in zip(self.total, member)]
        self.n += 1

    def log_probs(self) -> List[numpy.ndarray]:
        """The pooled log-probabilities per doc (-inf where any member forbids the tag)."""
        if self.total is None:
            raise ValueError("no ensemble members were added")
        return [log_softmax(x / self.n) for x in self.total]


def viterbi_batch(
    log_probs: Sequence[numpy.ndarray],
    tags: IOBTags,
    trans_scores: Optional[numpy.ndarray] = None,
    start_scores: Optional[numpy.ndarray] = None,
) -> List[numpy.ndarray]:
    """Best valid tag sequence for each doc.

    log_probs (Sequence[numpy.ndarray]): One (n_tokens, n_tags) array per doc.
    tags (IOBTags): The tag set, with its allowed transitions.
    trans_scores (Optional[numpy.ndarray]): (n_tags, n_tags) scores added for each allowed transition
        (previous tag, next tag); None: 0, only the constraints count.
    start_scores (Optional[numpy.ndarray]): (n_tags,) scores added for each allowed first tag.
    RETURNS (List[numpy.ndarray]): One int array of tag ids per doc, always a valid sequence.
    """
    lengths = numpy.array([len(lp) for lp in log_probs], dtype="int64")
    n_tags = len(tags)
    if len(lengths) == 0 or lengths.max() == 0:
        return [numpy.zeros((int(n),), dtype="int64") for n in lengths]
    batch, max_len = len(lengths), int(lengths.max())
    emit = numpy.zeros((batch, max_len, n_tags), dtype="float64")
    for b, lp in enumerate(log_probs):
        emit[b, : len(lp)] = lp
    paths = _viterbi(emit, lengths, tags.allowed, tags.allowed_start, trans_scores, start_scores)
    # Per-token forbidden tags (-inf) can make every valid path impossible (e.g. a forced O
    # between I-X and I-X is fine, but an adversarial mask may allow only I-X after O).
    # Then the doc is decoded again ignoring those per-token masks: the transitions still hold.
    bad = ~numpy.isfinite(_path_scores(emit, paths, lengths))
    if bad.any():
        finite = numpy.where(numpy.isneginf(emit[bad]), -_LOGIT_LIMIT * 4, emit[bad])
        paths[bad] = _viterbi(finite, lengths[bad], tags.allowed, tags.allowed_start, trans_scores, start_scores)
    return [paths[b, : lengths[b]] for b in range(batch)]


def _viterbi(
    emit: numpy.ndarray,
    lengths: numpy.ndarray,
    allowed: numpy.ndarray,
    allowed_start: numpy.ndarray,
    trans_scores: Optional[numpy.ndarray] = None,
    start_scores: Optional[numpy.ndarray] = None,
) -> numpy.ndarray:
    batch, max_len, n_tags = emit.shape
    trans = numpy.where(allowed, 0.0 if trans_scores is None else trans_scores, -numpy.inf)
    delta = emit[:, 0] + numpy.where(allowed_start, 0.0 if start_scores is None else start_scores, -numpy.inf)
    backptr = numpy.zeros((batch, max_len, n_tags), dtype="int64")
    identity = numpy.arange(n_tags)
    for t in range(1, max_len):
        cand = delta[:, :, None] + trans[None, :, :]  # (batch, prev, next)
        best_prev = cand.argmax(axis=1)
        best = numpy.take_along_axis(cand, best_prev[:, None, :], axis=1)[:, 0, :]
        active = (t < lengths)[:, None]
        # Past a doc's end its state is carried forward unchanged.
        delta = numpy.where(active, best + emit[:, t], delta)
        backptr[:, t] = numpy.where(active, best_prev, identity[None, :])
    paths = numpy.zeros((batch, max_len), dtype="int64")
    paths[:, -1] = delta.argmax(axis=1)
    rows = numpy.arange(batch)
    for t in range(max_len - 1, 0, -1):
        paths[:, t - 1] = backptr[rows, t, paths[:, t]]
    return paths


def _path_scores(emit: numpy.ndarray, paths: numpy.ndarray, lengths: numpy.ndarray) -> numpy.ndarray:
    batch, max_len, _ = emit.shape
    picked = numpy.take_along_axis(emit, paths[:, :, None], axis=2)[:, :, 0]
    mask = numpy.arange(max_len)[None, :] < lengths[:, None]
    return numpy.where(mask, picked, 0.0).sum(axis=1)


def decode_docs(
    logits: Sequence[numpy.ndarray], tags: IOBTags
) -> Tuple[List[numpy.ndarray], List[numpy.ndarray]]:
    """Decode logits of several docs into valid tag ids and each chosen tag's probability.

    A doc whose per-token argmax already is a valid sequence keeps it: no valid sequence scores
    higher, so it is what Viterbi finds (up to exact ties). Only the other docs run Viterbi.

    logits (Sequence[numpy.ndarray]): One (n_tokens, n_tags) array per doc (on CPU).
    tags (IOBTags): The tag set.
    RETURNS (Tuple[List[numpy.ndarray], List[numpy.ndarray]]): tag ids and their probabilities.
    """
    lengths = numpy.array([len(x) for x in logits], dtype="int64")
    ends = numpy.cumsum(lengths)
    starts = ends - lengths
    total = int(lengths.sum())
    if total == 0:
        return [numpy.zeros((0,), dtype="int64") for _ in logits], [numpy.zeros((0,)) for _ in logits]
    # One log-softmax and one argmax over all tokens of all docs.
    flat = log_softmax(numpy.concatenate([numpy.asarray(x).reshape(-1, len(tags)) for x in logits]))
    best = flat.argmax(axis=1)
    first = numpy.zeros((total,), dtype=bool)
    first[starts[lengths > 0]] = True
    prev = numpy.roll(best, 1)
    valid = numpy.where(first, tags.allowed_start[best], tags.allowed[prev, best])
    doc_of = numpy.repeat(numpy.arange(len(lengths)), lengths)
    invalid_docs = numpy.unique(doc_of[~valid])
    path_flat = best
    if len(invalid_docs):
        path_flat = best.copy()
        fixed = viterbi_batch([flat[starts[b] : ends[b]] for b in invalid_docs], tags)
        for b, path in zip(invalid_docs, fixed):
            path_flat[starts[b] : ends[b]] = path
    probs_flat = numpy.exp(flat[numpy.arange(total), path_flat])
    paths = [path_flat[a:b] for a, b in zip(starts, ends)]
    probs = [probs_flat[a:b] for a, b in zip(starts, ends)]
    return paths, probs
