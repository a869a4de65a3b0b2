"""Scores: NeMo's token-level report (each word by its first wordpiece) and entity-level P/R/F."""
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy
from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

# NeMo's published ner_en_bert score on the GMB dev split (our test split): macro average.
NEMO_NER_EN_BERT = {
    "macro avg": {"precision": 0.7818, "recall": 0.7234, "f1-score": 0.7421},
    "accuracy": 0.9689,
}


def doc_iob_tags(doc: Doc) -> List[str]:
    """One IOB tag per token from the doc's entities ('O', 'B-X', 'I-X')."""
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc]


def token_report(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> Dict:
    """Per-label precision/recall/F1/support, accuracy, macro and weighted averages.

    Same definitions as sklearn's classification_report (0 where undefined), which NeMo uses.

    gold (Sequence[str]): Gold tag per word.
    pred (Sequence[str]): Predicted tag per word.
    labels (Sequence[str]): The rows, in order (NeMo's label_ids order).
    RETURNS (Dict): {label: {precision, recall, f1-score, support}, "accuracy": float,
        "macro avg": {...}, "weighted avg": {...}}.
    """
    tp, predicted, support = _counts(gold, pred, labels)
    precision, recall, f1 = _prf(tp, predicted, support)
    report: Dict = {}
    for i, label in enumerate(labels):
        report[label] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1-score": float(f1[i]),
            "support": int(support[i]),
        }
    total = int(support.sum())
    report["accuracy"] = float(tp.sum() / total) if total else 0.0
    report["macro avg"] = {
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1-score": float(f1.mean()),
        "support": total,
    }
    weights = support / total if total else support
    report["weighted avg"] = {
        "precision": float((precision * weights).sum()),
        "recall": float((recall * weights).sum()),
        "f1-score": float((f1 * weights).sum()),
        "support": total,
    }
    return report


def _counts(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str], where: str = ""
) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """True positives, predicted and gold counts per label id (float64, one per label).

    Raises ValueError, prefixed with `where`, for different lengths or a tag outside `labels`.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{where}{len(gold)} gold tags but {len(pred)} predicted tags")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted((set(gold) | set(pred)) - set(index))
    if unknown:
        raise ValueError(f"{where}tags {unknown} are not among the report's labels {list(labels)}")
    g = numpy.array([index[t] for t in gold], dtype="int64")
    p = numpy.array([index[t] for t in pred], dtype="int64")
    n = len(labels)
    tp = numpy.bincount(g[g == p], minlength=n).astype("float64")
    predicted = numpy.bincount(p, minlength=n).astype("float64")
    support = numpy.bincount(g, minlength=n).astype("float64")
    return tp, predicted, support


def _prf(tp: numpy.ndarray, predicted: numpy.ndarray, support: numpy.ndarray):
    """Precision, recall, F1 from counts (any shape, labels last), 0 where undefined as in sklearn."""
    with numpy.errstate(divide="ignore", invalid="ignore"):
        precision = numpy.where(predicted > 0, tp / predicted, 0.0)
        recall = numpy.where(support > 0, tp / support, 0.0)
        f1 = numpy.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def doc_label_counts(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], labels: Sequence[str]
) -> numpy.ndarray:
    """Each doc's counts, for resampling docs: shape (n_docs, 3, n_labels), rows tp, predicted, gold.

    gold, pred (Sequence[Sequence[str]]): One tag sequence per doc, the same lengths.
    labels (Sequence[str]): The label ids' order; a tag outside it is an error.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold docs but {len(pred)} predicted docs")
    out = numpy.zeros((len(gold), 3, len(labels)), dtype="float64")
    for d, (gd, pd) in enumerate(zip(gold, pred)):
        out[d] = _counts(gd, pd, labels, where=f"doc {d}: ")
    return out


def macro_f1_from_counts(totals: numpy.ndarray) -> numpy.ndarray:
    """Macro F1 over all labels (sklearn's, labels with no support included) from summed counts
    of shape (..., 3, n_labels)."""
    return _prf(totals[..., 0, :], totals[..., 1, :], totals[..., 2, :])[2].mean(axis=-1)


def bootstrap_macro_f1(
    counts: Sequence[numpy.ndarray], n_resamples: int = 1000, seed: int = 0, chunk: int = 100
) -> numpy.ndarray:
    """Macro F1 of each model on `n_resamples` bootstrap resamples of the docs.

    All models are scored on the same resamples (a paired bootstrap), so the spread of the
    difference between two rows is the test set's sampling noise in that comparison.

    counts (Sequence[numpy.ndarray]): One doc_label_counts array per model, over the same docs.
    RETURNS (numpy.ndarray): shape (n_models, n_resamples).
    """
    if not counts:
        raise ValueError("no models to resample")
    shapes = {c.shape for c in counts}
    if len(shapes) != 1:
        raise ValueError(f"the models' counts cover different docs or labels: shapes {sorted(shapes)}")
    n_docs = counts[0].shape[0]
    if n_docs == 0 or n_resamples < 1:
        raise ValueError(f"need at least one doc and one resample, got {n_docs} docs, {n_resamples} resamples")
    rng = numpy.random.default_rng(seed)
    flat = numpy.stack([c.reshape(n_docs, -1) for c in counts])  # (models, docs, 3 * labels)
    out = numpy.empty((len(counts), n_resamples))
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        weights = rng.multinomial(n_docs, numpy.full(n_docs, 1.0 / n_docs), size=size).astype("float64")
        totals = numpy.einsum("rd,mdk->mrk", weights, flat).reshape(len(counts), size, 3, -1)
        out[:, start : start + size] = macro_f1_from_counts(totals)
    return out


def format_token_report(report: Dict, labels: Sequence[str], digits: int = 4) -> str:
    """The report as NeMo prints it (sklearn's layout, rows named 'X (label_id: N)')."""
    names = [f"{label} (label_id: {i})" for i, label in enumerate(labels)]
    width = max(len(n) for n in names + ["weighted avg"])
    head = " " * width + "".join(f"{h:>11}" for h in ("precision", "recall", "f1-score", "support"))
    lines = [head, ""]
    for name, label in zip(names, labels):
        row = report[label]
        lines.append(
            f"{name:>{width}}"
            + "".join(f"{row[k]:>11.{digits}f}" for k in ("precision", "recall", "f1-score"))
            + f"{row['support']:>11}"
        )
    lines.append("")
    total = report["macro avg"]["support"]
    lines.append(f"{'accuracy':>{width}}" + " " * 22 + f"{report['accuracy']:>11.{digits}f}{total:>11}")
    for avg in ("macro avg", "weighted avg"):
        row = report[avg]
        lines.append(
            f"{avg:>{width}}"
            + "".join(f"{row[k]:>11.{digits}f}" for k in ("precision", "recall", "f1-score"))
            + f"{row['support']:>11}"
        )
    return "\n".join(lines)


def format_nemo_comparison(report: Dict, digits: int = 4) -> str:
    """Our macro average and accuracy beside NeMo's published ner_en_bert row."""
    ours, nemo = report["macro avg"], NEMO_NER_EN_BERT["macro avg"]
    lines = [f"{'':<26}{'precision':>11}{'recall':>11}{'f1-score':>11}{'accuracy':>11}"]
    for name, row, acc in (
        ("NeMo ner_en_bert (pub.)", nemo, NEMO_NER_EN_BERT["accuracy"]),
        ("ours, macro avg", ours, report["accuracy"]),
    ):
        lines.append(
            f"{name:<26}" + "".join(f"{row[k]:>11.{digits}f}" for k in ("precision", "recall", "f1-score"))
            + f"{acc:>11.{digits}f}"
        )
    return "\n".join(lines)


def score_examples(examples: Iterable[Example], labels: Sequence[str]) -> Dict:
    """Token-level report (by word, i.e. by first wordpiece) and entity-level P/R/F.

    examples (Iterable[Example]): predicted docs (annotated) with their gold reference docs;
        both must have the same tokens (the evaluation docs are built from the gold words).
    labels (Sequence[str]): IOB labels in report order.
    RETURNS (Dict): {"token": token_report, "entity": {"p", "r", "f", "per_type"}}.
    """
    examples = list(examples)
    gold: List[str] = []
    pred: List[str] = []
    for i, eg in enumerate(examples):
        if len(eg.predicted) != len(eg.reference):
            raise ValueError(f"example {i}: predicted and gold docs have different tokens")
        gold.extend(doc_iob_tags(eg.reference))
        pred.extend(doc_iob_tags(eg.predicted))
    ents = Scorer.score_spans(examples, "ents")  # spaCy's NER scorer: what `spacy train` selects checkpoints on
    entity = {"p": ents["ents_p"], "r": ents["ents_r"], "f": ents["ents_f"], "per_type": ents["ents_per_type"]}
    return {"token": token_report(gold, pred, labels), "entity": entity}


def gold_word_tags(eg: Example) -> List[str]:
    """The predicted IOB tag of each gold word: the tag of the first predicted token it aligns to.

    When the two tokenizations agree this is just the predicted doc's tags; a gold word that
    aligns to no predicted token (only whitespace differs) counts as O.

    eg (Example): A predicted doc and its gold reference.
    RETURNS (List[str]): One tag per token of eg.reference.
    """
    pred = doc_iob_tags(eg.predicted)
    if [t.text for t in eg.predicted] == [t.text for t in eg.reference]:
        return pred
    y2x = eg.alignment.y2x
    lengths = numpy.asarray(y2x.lengths)
    data = numpy.asarray(y2x.data)
    starts = numpy.cumsum(lengths) - lengths
    return [pred[data[s]] if n else "O" for s, n in zip(starts, lengths)]


def token_scores(examples: Iterable[Example]) -> Dict[str, object]:
    """Token-level P/R/F as NeMo reports them, by gold word, over the tags seen in gold or predictions.

    RETURNS (Dict): token_acc, token_macro_p/r/f and token_per_tag ({tag: {p, r, f}}).
    """
    gold: List[str] = []
    pred: List[str] = []
    for eg in examples:
        gold.extend(doc_iob_tags(eg.reference))
        pred.extend(gold_word_tags(eg))
    if not gold:
        return {"token_acc": None, "token_macro_p": None, "token_macro_r": None, "token_macro_f": None,
                "token_per_tag": None}
    labels = ["O"] + sorted((set(gold) | set(pred)) - {"O"}, key=lambda t: (t[2:], t[0]))
    report = token_report(gold, pred, labels)
    macro = report["macro avg"]
    return {
        "token_acc": report["accuracy"],
        "token_macro_p": macro["precision"],
        "token_macro_r": macro["recall"],
        "token_macro_f": macro["f1-score"],
        "token_per_tag": {
            t: {"p": report[t]["precision"], "r": report[t]["recall"], "f": report[t]["f1-score"]} for t in labels
        },
    }


def score_ner_bert(examples: Iterable[Example], **kwargs) -> Dict[str, object]:
    """spaCy's entity scores (ents_p/r/f, ents_per_type) plus NeMo's token-level ones.

    `spacy train` can then select checkpoints on token_macro_f, the figure NeMo reports.
    """
    examples = list(examples)
    scores: Dict[str, object] = dict(Scorer.score_spans(examples, "ents", **kwargs))
    scores.update(token_scores(examples))
    return scores


@registry.scorers("spacy-ner-bert.ner_scorer.v1")
def make_ner_bert_scorer():
    """Entity-level scores (as spacy.ner_scorer.v1) and token-level macro P/R/F (token_macro_f)."""
    return score_ner_bert
