"""Choose a per-tag logit bias on validation data: logit adjustment by tag frequency.

Macro F1 weighs each of the 13 tags equally, so the decision threshold of the rare tags (B-MISC,
I-MISC, I-GPE) matters as much as that of O. Logit adjustment adds -tau * log(prior of each tag)
to the logits before decoding: tau > 0 favours rare tags (more recall), tau < 0 favours frequent
ones (more precision). One number, chosen on the validation slice, so it can hardly overfit it.
"""
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example

from .decode import decode_docs
from .tags import IOBTags
from .scoring import doc_iob_tags, token_report

DEFAULT_TAUS = tuple(float(round(t, 2)) + 0.0 for t in numpy.arange(-0.5, 1.01, 0.1))  # + 0.0: no -0.0


def calibrate(
    nlp: Language, examples: Iterable[Example], component: str = "ner_bert", taus: Sequence[float] = DEFAULT_TAUS
) -> Tuple[float, List[Dict[str, float]]]:
    """Set the component's tag_bias to the tau that maximizes token macro F1 on `examples`.

    examples (Iterable[Example]): Validation examples; only their reference docs are used (the
        prediction runs on their words, so tokens match one to one).
    component (str): The ner_bert component's name.
    taus (Sequence[float]): Candidate values; 0 (no bias) is always tried, and wins ties.
    RETURNS (Tuple[float, List[Dict]]): The chosen tau and, per tau, its macro P/R/F.
    """
    from .pipe import get_ner_bert

    pipe = get_ner_bert(nlp, component)
    tags = pipe.tags
    golds = [eg.reference for eg in examples]
    if not sum(len(doc) for doc in golds):
        raise ValueError("[ner_bert] calibrate needs validation examples with tokens")
    docs = component_inputs(nlp, component, golds)
    gold_tags = [t for doc in golds for t in doc_iob_tags(doc)]
    check_tags(gold_tags, tags)  # before the encoder runs
    best_tau, table, bias = choose_tau(pipe.logits(docs), gold_tags, tags, taus)
    pipe.set_tag_bias(None if best_tau == 0.0 else bias.tolist())
    return best_tau, table


def component_inputs(nlp: Language, component: str, golds: Sequence[Doc]) -> List[Doc]:
    """What `component` reads when `nlp` runs on the words of `golds`: unannotated copies of them,
    run through the components before it (they may set what it reads)."""
    from .corpus import unannotated_copy

    return run_components_before(nlp, component, [unannotated_copy(doc) for doc in golds])


def run_components_before(nlp: Language, component: str, docs: Sequence[Doc]) -> List[Doc]:
    """`docs` run through the components of `nlp` that come before `component`."""
    docs = list(docs)
    for name, proc in nlp.pipeline:
        if name == component:
            break
        docs = list(proc.pipe(docs))
    return docs


def choose_tau(
    logits: Sequence[numpy.ndarray], gold_tags: Sequence[str], tags: IOBTags, taus: Sequence[float] = DEFAULT_TAUS
) -> Tuple[float, List[Dict[str, float]], numpy.ndarray]:
    """The tau whose bias gives the best token macro F1 of `logits` against `gold_tags`.

    What `calibrate` does once it has the component's logits; for logits from elsewhere too
    (several pipelines' averaged log-probabilities: benchmarks/ensemble.py).

    logits (Sequence[numpy.ndarray]): One (n_tokens, n_tags) array per doc, tags in `tags` order.
    gold_tags (Sequence[str]): The gold tag of every token, all docs concatenated.
    tags (IOBTags): The tag set.
    taus (Sequence[float]): Candidate values; 0 (no bias) is always tried, and wins ties.
    RETURNS (Tuple[float, List[Dict], numpy.ndarray]): The chosen tau, per tau its macro P/R/F
        (sorted by tau), and the chosen bias (float32, one value per tag; zeros for tau 0).
    """
    if len(gold_tags) != sum(len(x) for x in logits):
        raise ValueError(
            f"[ner_bert] {len(gold_tags)} gold tags for {sum(len(x) for x in logits)} tokens of logits"
        )
    prior = log_prior(gold_tags, tags)
    table = []
    best_tau, best_f = 0.0, -1.0
    for tau in sorted(set(taus) | {0.0}, key=abs):
        bias = (-tau * prior).astype("float32")
        paths, _ = decode_docs([x + bias for x in logits], tags)
        pred = [tags.tags[i] for path in paths for i in path]
        macro = token_report(gold_tags, pred, list(tags.tags))["macro avg"]
        table.append({"tau": float(tau), "p": macro["precision"], "r": macro["recall"], "f": macro["f1-score"]})
        if macro["f1-score"] > best_f:
            best_tau, best_f = float(tau), macro["f1-score"]
    table.sort(key=lambda row: row["tau"])
    return best_tau, table, (-best_tau * prior).astype("float32") + 0.0


def check_tags(gold_tags: Sequence[str], tags: IOBTags) -> None:
    """Raise ValueError naming the gold tags that are not in `tags`."""
    unknown = sorted(set(gold_tags) - set(tags.tags))
    if unknown:
        raise ValueError(f"[ner_bert] validation tags {unknown} are not among the component's tags {list(tags.tags)}")


def log_prior(gold_tags: Sequence[str], tags: IOBTags) -> numpy.ndarray:
    """Log of each tag's share of `gold_tags` (add-one smoothed), in `tags` order."""
    check_tags(gold_tags, tags)
    counts = numpy.bincount([tags.index[t] for t in gold_tags], minlength=len(tags)).astype("float64")
    return numpy.log((counts + 1.0) / (counts + 1.0).sum())
