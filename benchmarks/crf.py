"""Tag transition scores fitted on validation data: a linear-chain CRF over a trained model's outputs.

The model scores each token's tags on its own (a softmax per token); constrained Viterbi only
forbids invalid IOB steps. Here the model stays fixed and a CRF learns, from gold tag sequences,
how much each allowed step (previous tag -> tag) and each first tag is worth beside the model's
log-probabilities, and how far to trust those (one emission scale). Decoding then adds the
fitted scores in Viterbi (`decode.viterbi_batch`'s trans_scores / start_scores). 13 x 13 + 13 + 1
numbers: a convex problem, solved by L-BFGS (scipy) over docs bucketed by length.

Used by calibration_cv.py's `tau+crf` family; not part of the component.
"""
from typing import Dict, Sequence, Tuple

import numpy

from spacy_ner_bert.tags import IOBTags

# Docs per padded chunk, sorted by length: the forward-backward loop runs over each chunk's longest doc.
CHUNK = 256

# Emissions are floored here: a forbidden tag (-inf) stays impossible in practice, never NaN.
_EMIT_FLOOR = -50.0


def pad_emissions(
    log_probs: Sequence[numpy.ndarray], golds: Sequence[numpy.ndarray], n_tags: int
) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Docs as one padded batch: (emissions (B, L, K), gold ids (B, L), lengths (B,))."""
    lengths = numpy.array([len(x) for x in log_probs], dtype="int64")
    batch, max_len = len(lengths), int(lengths.max())
    emit = numpy.zeros((batch, max_len, n_tags), dtype="float64")
    gold = numpy.zeros((batch, max_len), dtype="int64")
    for b, (lp, g) in enumerate(zip(log_probs, golds)):
        emit[b, : len(lp)] = numpy.maximum(lp, _EMIT_FLOOR)
        gold[b, : len(g)] = g
    return emit, gold, lengths


def crf_loss(
    emit: numpy.ndarray,
    gold: numpy.ndarray,
    lengths: numpy.ndarray,
    tags: IOBTags,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    scale: float,
) -> Tuple[float, numpy.ndarray, numpy.ndarray, float]:
    """Summed negative log-likelihood of the gold paths, and its gradients.

    A path's score is start[y_0] + sum_t scale * emit[t, y_t] + sum_t trans[y_(t-1), y_t];
    forbidden steps and first tags (tags.allowed, tags.allowed_start) are impossible. Forward-
    backward in probability space, each position normalized (matrix products, no per-pair logs).

    RETURNS (Tuple): loss, d trans (K, K), d start (K,), d scale.
    """
    batch, max_len, n_tags = emit.shape
    active = numpy.arange(max_len)[None, :] < lengths[:, None]  # (B, L)
    t_top = float(trans[tags.allowed].max())
    step_w = numpy.where(tags.allowed, numpy.exp(trans - t_top), 0.0)  # (K, K)
    e = scale * emit
    e_top = e.max(axis=2, keepdims=True)
    w = numpy.exp(e - e_top)  # (B, L, K), each row's best tag at 1
    first = w[:, 0] * numpy.where(tags.allowed_start, numpy.exp(start - start.max()), 0.0)
    alpha = numpy.empty((batch, max_len, n_tags))
    norm = numpy.ones((batch, max_len))
    norm[:, 0] = first.sum(axis=1)
    alpha[:, 0] = first / norm[:, 0, None]
    for t in range(1, max_len):
        nxt = (alpha[:, t - 1] @ step_w) * w[:, t]
        # floored: a row whose allowed tags all underflow must not divide by zero
        z = numpy.where(active[:, t], numpy.maximum(nxt.sum(axis=1), 1e-300), 1.0)
        norm[:, t] = z
        alpha[:, t] = numpy.where(active[:, t, None], nxt / z[:, None], alpha[:, t - 1])
    log_z = (
        float(start.max())
        + e_top[:, 0, 0]
        + numpy.log(norm).sum(axis=1)
        + ((e_top[:, 1:, 0] + t_top) * active[:, 1:]).sum(axis=1)
    )
    beta = numpy.ones((batch, max_len, n_tags))
    d_trans = numpy.zeros((n_tags, n_tags))
    for t in range(max_len - 1, 0, -1):
        right = w[:, t] * beta[:, t] / norm[:, t, None] * active[:, t, None]  # (B, K)
        d_trans += step_w * (alpha[:, t - 1].T @ right)
        beta[:, t - 1] = numpy.where(active[:, t, None], right @ step_w.T, 1.0)
    marg = alpha * beta * active[:, :, None]  # (B, L, K): each active row sums to 1
    rows = numpy.arange(batch)[:, None]
    cols = numpy.arange(max_len)[None, :]
    gold_emit = numpy.where(active, emit[rows, cols, gold], 0.0)
    prev, nxt_gold = gold[:, :-1], gold[:, 1:]
    steps = active[:, 1:]
    gold_trans = numpy.where(steps, numpy.where(tags.allowed, trans, -numpy.inf)[prev, nxt_gold], 0.0)
    gold_start = numpy.where(tags.allowed_start, start, -numpy.inf)[gold[:, 0]]
    gold_score = gold_start + scale * gold_emit.sum(axis=1) + gold_trans.sum(axis=1)
    loss = float((log_z - gold_score).sum())
    numpy.add.at(d_trans, (prev[steps], nxt_gold[steps]), -1.0)
    d_start = marg[:, 0].sum(axis=0) - numpy.bincount(gold[:, 0], minlength=n_tags)
    d_scale = float((marg * emit).sum() - gold_emit.sum())
    d_trans = numpy.where(tags.allowed, d_trans, 0.0)
    d_start = numpy.where(tags.allowed_start, d_start, 0.0)
    return loss, d_trans, d_start, d_scale


def fit_transitions(
    log_probs: Sequence[numpy.ndarray],
    golds: Sequence[numpy.ndarray],
    tags: IOBTags,
    l2: float = 1.0,
    max_iter: int = 200,
) -> Tuple[numpy.ndarray, numpy.ndarray, Dict[str, float]]:
    """Fit transition and first-tag scores for decoding `log_probs`, by CRF likelihood on `golds`.

    log_probs (Sequence[numpy.ndarray]): One (n_tokens, n_tags) array of log-probabilities per doc.
    golds (Sequence[numpy.ndarray]): The gold tag ids per doc; every path must be a valid IOB one.
    tags (IOBTags): The tag set.
    l2 (float): Penalty 0.5 * l2 * (|trans|^2 + |start|^2), against fitting the rare steps' noise.
    max_iter (int): L-BFGS iterations at most.
    RETURNS (Tuple): trans_scores (K, K) and start_scores (K,) to add to log-probabilities in
        Viterbi (divided by the fitted emission scale; 0 where forbidden), and the fit's
        emission scale, mean loss per doc and iteration count.
    """
    from scipy.optimize import minimize

    n_tags = len(tags)
    if len(log_probs) != len(golds) or not len(log_probs):
        raise ValueError(f"fit_transitions needs one gold path per doc: {len(log_probs)} docs, {len(golds)} paths")
    for i, (x, g) in enumerate(zip(log_probs, golds)):
        if len(x) != len(g) or (len(x) and numpy.shape(x)[1] != n_tags):
            raise ValueError(f"doc {i}: log-probabilities of shape {numpy.shape(x)} for {len(g)} gold tags ({n_tags} tags)")
        if not tags.is_valid(numpy.asarray(g)):
            raise ValueError(f"doc {i}: its gold tags are not a valid IOB sequence")
    order = sorted((i for i in range(len(golds)) if len(golds[i])), key=lambda i: len(golds[i]))
    if not order:
        raise ValueError("fit_transitions needs at least one doc with tokens")
    chunks = [
        pad_emissions([log_probs[i] for i in part], [numpy.asarray(golds[i]) for i in part], n_tags)
        for part in (order[k : k + CHUNK] for k in range(0, len(order), CHUNK))
    ]
    n_docs = len(order)

    def objective(x: numpy.ndarray):
        trans, start = x[: n_tags * n_tags].reshape(n_tags, n_tags), x[n_tags * n_tags : -1]
        scale = float(numpy.exp(x[-1]))
        loss = 0.5 * l2 * float((trans**2).sum() + (start**2).sum())
        d_trans, d_start, d_scale = l2 * trans, l2 * start, 0.0
        for emit, gold, lengths in chunks:
            part = crf_loss(emit, gold, lengths, tags, trans, start, scale)
            loss += part[0]
            d_trans = d_trans + part[1]
            d_start = d_start + part[2]
            d_scale += part[3]
        grad = numpy.concatenate([d_trans.ravel(), d_start, [d_scale * scale]])
        return loss / n_docs, grad / n_docs

    x0 = numpy.zeros(n_tags * n_tags + n_tags + 1)
    fitted = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    x = fitted.x
    scale = float(numpy.exp(x[-1]))
    trans = numpy.where(tags.allowed, x[: n_tags * n_tags].reshape(n_tags, n_tags) / scale, 0.0)
    start = numpy.where(tags.allowed_start, x[n_tags * n_tags : -1] / scale, 0.0)
    return trans, start, {"scale": scale, "loss": float(fitted.fun), "iterations": int(fitted.nit)}
