"""Distillation: trained ner_bert pipelines (teachers) label the training docs with soft targets.

`write_teacher_targets` runs each teacher on the training docs, tokenized exactly as `spacy train`
tokenizes them (spacy.Corpus.v1: nlp.make_doc(text), or the gold words where spaces are unknown),
pools the teachers' tag log-probabilities (their mean, as benchmarks/ensemble.py pools them) and
writes the docs again with the pooled log-probabilities in `doc.user_data[TEACHER_KEY]`. A
student trained on that file with `distill_weight > 0` (pipe.py, get_loss) learns from the soft
targets as well as from the gold tags.
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy
from spacy.tokens import Doc, DocBin

TEACHER_KEY = "ner_bert_teacher"


def attach(reference: Doc, tags: Sequence[str], log_probs: numpy.ndarray) -> None:
    """Store teacher log-probabilities (one row per token the student sees, one column per tag in
    `tags` order) on the reference doc, which is what a training DocBin holds."""
    if log_probs.ndim != 2 or log_probs.shape[1] != len(tags):
        raise ValueError(f"teacher targets of shape {log_probs.shape} for {len(tags)} tags")
    reference.user_data[TEACHER_KEY] = {"tags": " ".join(tags), "log_probs": log_probs.astype("float16")}


def teacher_log_probs(reference: Doc, n_tokens: int, tags: Sequence[str], where: str) -> Optional[numpy.ndarray]:
    """The teacher log-probabilities stored on `reference` (float32), or None when it has none.

    n_tokens (int): Tokens of the doc the student predicts on (the example's predicted doc).
    where (str): Names the doc in errors (e.g. "training example 3 (text starts 'The ...')").
    """
    data = reference.user_data.get(TEACHER_KEY)
    if data is None:
        return None
    stored = tuple(str(data["tags"]).split(" "))
    if stored != tuple(tags):
        raise ValueError(f"[ner_bert] {where} has teacher targets for the tags {list(stored)}, "
                         f"but this component's tags are {list(tags)}")
    log_probs = numpy.asarray(data["log_probs"], dtype="float32")
    if log_probs.shape != (n_tokens, len(tags)):
        raise ValueError(f"[ner_bert] {where} has teacher targets for {log_probs.shape[0]} tokens, but the doc "
                         f"has {n_tokens}: the targets were written for another tokenization (write them "
                         f"again with the tokenizer of this pipeline)")
    return log_probs


def _training_docs(nlp, path: Path) -> List:
    """(predicted, reference) pairs as spacy.Corpus.v1 makes them for `spacy train` (no augmentation)."""
    from spacy.training import Corpus

    return [(eg.predicted, eg.reference) for eg in Corpus(path, gold_preproc=False, max_length=0)(nlp)]


def write_teacher_targets(train: Path, out: Path, teachers: Sequence[Path], component: str = "ner_bert",
                          log=print) -> Dict[str, float]:
    """Label `train` with the pooled log-probabilities of `teachers`; write the DocBin `out`.

    train (Path): The training DocBin.
    out (Path): Where to write it again, with soft targets in each doc's user_data.
    teachers (Sequence[Path]): Trained pipelines with the component; one tag set.
    component (str): The component's name in the teachers.
    RETURNS (Dict[str, float]): Docs, tokens, teachers, and how often the pooled argmax is the gold tag.
    """
    import spacy

    from .calibrate import run_components_before
    from .decode import LogLinearPool
    from .pipe import get_ner_bert
    from .scoring import doc_iob_tags

    if not teachers:
        raise ValueError("write_teacher_targets needs one or more teacher pipelines")
    tags, pairs, pool = None, None, LogLinearPool()
    for path in teachers:
        try:
            nlp = spacy.load(path)
            pipe = get_ner_bert(nlp, component)
        except (OSError, ValueError) as err:
            raise ValueError(f"teacher {path}: {err}") from None
        if tags is None:
            tags = pipe.tags.tags
        elif pipe.tags.tags != tags:
            raise ValueError(f"{path}: tags {list(pipe.tags.tags)} differ from {teachers[0]}'s {list(tags)}")
        try:
            pairs_here = _training_docs(nlp, Path(train))
        except ValueError as err:  # not a DocBin
            raise ValueError(f"{train}: {err}") from None
        if pairs is None:
            pairs = pairs_here
        elif [len(p) for p, _ in pairs_here] != [len(p) for p, _ in pairs]:
            raise ValueError(f"{path}: its tokenizer splits {train} differently from {teachers[0]}'s")
        docs = run_components_before(nlp, component, [p for p, _ in pairs_here])
        logits = pipe.logits(docs)
        pool.add(logits)
        log(f"{path}: {len(docs):,} docs scored")
    n_tokens, agree, with_gold = 0, 0, 0
    db = DocBin(store_user_data=True)
    for (predicted, reference), pooled in zip(pairs, pool.log_probs()):
        doc = reference.copy()
        attach(doc, tags, pooled)  # rows follow the predicted tokens: what the student scores
        db.add(doc)
        n_tokens += len(predicted)
        if len(predicted) == len(reference):
            gold = doc_iob_tags(reference)
            best = [tags[i] for i in pooled.argmax(axis=1)]
            with_gold += len(gold)
            agree += sum(g == b for g, b in zip(gold, best))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    db.to_disk(out)
    return {"docs": len(pairs), "tokens": n_tokens, "teachers": len(teachers),
            "pooled_argmax_equals_gold": agree / max(with_gold, 1)}
