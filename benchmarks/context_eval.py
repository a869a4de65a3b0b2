"""What neighbouring sentences are worth: pipelines scored on sentences alone and inside blocks of them.

GMB's files keep sentences in document order, for the train split and for NeMo's dev split (our test
split) alike. The workflow scores each sentence alone, as NeMo does; a user's documents give the encoder
the neighbouring sentences too (its strided windows span sentence boundaries). This script scores
trained pipelines both ways, each way calibrated as the workflow calibrates (one tau chosen on the
validation slice, bias = -tau * log tag prior):

- *sentences*: every validation and test sentence alone, as the workflow's files hold them;
- *context*: the train file cut into blocks of DOC_SENTS consecutive sentences; each validation
  sentence is predicted inside its block (the neighbours are training text; only the validation
  sentence's words are scored, never the neighbours'); the test split in blocks of DOC_SENTS, every
  word scored. A block is decoded whole, as the pipeline decodes a doc.

The validation slice is the workflow's (convert's split of the train file, --dev-size/--seed), so its
sentences are the ones held out of every pipeline trained on the workflow's corpus/train.spacy.

With --sent-spans a third way, *context, sentence spans*: the context blocks again, each block's
sentences found by spaCy's rule-based sentencizer (added before ner_bert) and each encoded on its own
(`spacy-transformers.sent_spans.v1` as the encoder's span getter, set when the pipeline is loaded),
the block still decoded whole: how a sentence-trained pipeline can serve multi-sentence documents.

With --write-train DIR it writes DIR/train.spacy instead: the workflow's 53,000 training sentences
(the same ones as corpus/train.spacy) as blocks of DOC_SENTS with the validation sentences taken out,
to train a pipeline with context.

usage: python benchmarks/context_eval.py GMB_DIR LABELS MODEL [MODEL ...] [--dev-size 2000] [--seed 0]
       [--doc-sents 8] [--sent-spans] [--json OUT.json]
       python benchmarks/context_eval.py GMB_DIR LABELS --write-train DIR [--dev-size 2000] [--seed 0] [--doc-sents 8]
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy

Sentence = Tuple[List[str], List[str]]
# One doc to predict: its words, and the (start, end) token offsets of the sentences scored in it.
Block = Tuple[List[str], List[Tuple[int, int]]]
# Load-time override: the embedded encoder makes one span of each sentence of a doc.
SENT_SPANS = {"components": {"ner_bert": {"model": {"tok2vec": {
    "get_spans": {"@span_getters": "spacy-transformers.sent_spans.v1"}}}}}}


def read_gmb(gmb_dir: Path, labels: Sequence[str]) -> Tuple[List[Sentence], List[Sentence]]:
    """The train and test (NeMo's dev) splits, as convert reads them (repairing invalid IOB)."""
    from spacy_ner_bert.corpus import read_nemo

    train, _ = read_nemo(gmb_dir / "text_train.txt", gmb_dir / "labels_train.txt", allowed=labels)
    test, _ = read_nemo(gmb_dir / "text_dev.txt", gmb_dir / "labels_dev.txt", allowed=labels)
    return train, test


def held_out(n_sentences: int, dev_size: int, seed: int) -> List[int]:
    """Indices of the validation sentences, as convert (--doc-sents 1) holds them out, in order."""
    from spacy_ner_bert.corpus import split_train_dev

    return split_train_dev(list(range(n_sentences)), dev_size, seed)[1]


def blocks_of(n: int, size: int) -> List[List[int]]:
    """Consecutive blocks of `size` sentence indices (the last may be shorter): convert's grouping."""
    from spacy_ner_bert.corpus import group_sentences

    return group_sentences(range(n), size)


def context_train_groups(train: Sequence[Sentence], dev_ids: Sequence[int], size: int) -> List[List[Sentence]]:
    """The training sentences in blocks of `size`, the validation sentences taken out of their blocks."""
    dev = set(dev_ids)
    groups = [[train[i] for i in block if i not in dev] for block in blocks_of(len(train), size)]
    return [g for g in groups if g]


def predict_blocks(sentences: Sequence[Sentence], wanted: Sequence[int], size: int) -> List[Block]:
    """The docs to predict so that the sentences `wanted` are scored.

    size 1: each wanted sentence alone. Otherwise each block of `size` holding a wanted sentence,
    whole, with the offsets of its wanted sentences.
    """
    wanted_set = set(wanted)
    out: List[Block] = []
    for block in blocks_of(len(sentences), size):
        if not any(i in wanted_set for i in block):
            continue
        words: List[str] = []
        scored = []
        for i in block:
            if i in wanted_set:
                scored.append((len(words), len(words) + len(sentences[i][0])))
            words.extend(sentences[i][0])
        out.append((words, scored))
    return out


def load_sentence_spans(model: Path):
    """The pipeline at `model` with each sentence of a doc encoded on its own: spaCy's sentencizer
    before ner_bert finds the sentences (where nothing before it set them), sent_spans makes the spans."""
    import spacy

    nlp = spacy.load(model, config=SENT_SPANS)
    nlp.add_pipe("sentencizer", before="ner_bert")
    return nlp


def sentencizer_agreement(blocks: Sequence[Block]) -> Dict:
    """How spaCy's rule-based sentencizer splits the blocks (every sentence scored, as the test blocks
    are): the gold sentence starts it finds, those it adds, and the blocks it splits exactly."""
    import spacy
    from spacy.tokens import Doc

    nlp = spacy.blank("en")
    sentencizer = nlp.add_pipe("sentencizer")
    found = extra = missed = exact = 0
    for words, scored in blocks:
        doc = sentencizer(Doc(nlp.vocab, words=words, spaces=[True] * (len(words) - 1) + [False]))
        pred = {t.i for t in doc if t.is_sent_start}
        gold = {start for start, _ in scored}
        found, extra, missed = found + len(pred & gold), extra + len(pred - gold), missed + len(gold - pred)
        exact += pred == gold
    return {"sentence_starts": found + missed, "found": found, "extra": extra, "blocks": len(blocks),
            "blocks_split_exactly": exact}


def block_logits(nlp, blocks: Sequence[Block]) -> List[numpy.ndarray]:
    """The ner_bert logits (before its tag bias) of each block's words."""
    from spacy.tokens import Doc

    from spacy_ner_bert.calibrate import run_components_before
    from spacy_ner_bert.pipe import get_ner_bert

    docs = [Doc(nlp.vocab, words=words, spaces=[True] * (len(words) - 1) + [False]) for words, _ in blocks]
    return get_ner_bert(nlp, "ner_bert").logits(run_components_before(nlp, "ner_bert", docs))


def scored_tags(tags, logits: Sequence[numpy.ndarray], blocks: Sequence[Block], bias: numpy.ndarray):
    """Decode each block whole with `bias`; per scored sentence, its predicted tag ids."""
    from spacy_ner_bert.decode import decode_docs

    paths, _ = decode_docs([x + bias for x in logits], tags)
    return [numpy.asarray(path)[s:e] for path, (_, scored) in zip(paths, blocks) for s, e in scored]


def evaluate(tags, labels, pred_ids: Sequence[numpy.ndarray], gold: Sequence[Sequence[str]]) -> Dict:
    """Token-level report (NeMo's table, by word) and entity-level P/R/F of the scored sentences."""
    from spacy_ner_bert.scoring import token_report

    gold_flat = [t for sent in gold for t in sent]
    pred_flat = [tags.tags[i] for ids in pred_ids for i in ids]
    report = token_report(gold_flat, pred_flat, list(labels))
    tp = n_pred = n_gold = 0
    for ids, sent in zip(pred_ids, gold):
        p = set(tags.spans(ids))
        g = set(tags.spans([tags.index[t] for t in sent]))
        tp, n_pred, n_gold = tp + len(p & g), n_pred + len(p), n_gold + len(g)
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_gold if n_gold else 0.0
    report["entity"] = {"p": prec, "r": rec, "f": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}
    return report


def score_mode(nlp, tags, labels, val, test) -> Dict:
    """Tau chosen on the validation blocks, then the test blocks scored once with it.

    val, test: (blocks, gold tags of each scored sentence in block order).
    """
    from spacy_ner_bert.calibrate import DEFAULT_TAUS, log_prior

    (val_blocks, val_gold), (test_blocks, test_gold) = val, test
    val_logits, test_logits = block_logits(nlp, val_blocks), block_logits(nlp, test_blocks)
    prior = log_prior([t for sent in val_gold for t in sent], tags)
    table, best = [], None
    for tau in sorted(set(DEFAULT_TAUS) | {0.0}, key=abs):  # 0 first: it wins ties, as in calibrate
        bias = (-tau * prior).astype("float32")
        f = evaluate(tags, labels, scored_tags(tags, val_logits, val_blocks, bias), val_gold)["macro avg"]["f1-score"]
        table.append({"tau": float(tau), "f": f})
        if best is None or f > best[1]:
            best = (float(tau), f, bias)
    tau, val_f, bias = best
    report = evaluate(tags, labels, scored_tags(tags, test_logits, test_blocks, bias), test_gold)
    return {"tau": tau, "validation_macro_f1": val_f, "test_macro_f1": report["macro avg"]["f1-score"],
            "test_macro_p": report["macro avg"]["precision"], "test_macro_r": report["macro avg"]["recall"],
            "test_accuracy": report["accuracy"], "test_entity": report["entity"],
            "test_per_label_f1": {label: report[label]["f1-score"] for label in labels},
            "validation_by_tau": sorted(table, key=lambda row: row["tau"])}


def main(argv=None) -> int:
    from _common import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gmb_dir", type=Path, help="folder with text_/labels_ train and dev files (assets/gmb)")
    ap.add_argument("labels", type=Path, help="label file, one per line, O first (configs/gmb_labels.txt)")
    ap.add_argument("models", type=Path, nargs="*", help="trained pipeline directories")
    ap.add_argument("--dev-size", type=int, default=2000, help="validation sentences, as convert (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="convert's split seed (default 0)")
    ap.add_argument("--doc-sents", type=int, default=8, help="sentences per block in context mode (default 8)")
    ap.add_argument("--sent-spans", action="store_true",
                    help="also score the context blocks with each sentence encoded on its own (sentencizer + sent_spans)")
    ap.add_argument("--write-train", type=Path, default=None, metavar="DIR",
                    help="write DIR/train.spacy (training sentences in blocks) instead of scoring")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    if args.doc_sents < 2:
        ap.error(f"--doc-sents must be at least 2 (1 is the sentence mode itself), got {args.doc_sents}")
    if args.write_train is None and not args.models:
        ap.error("give one or more pipelines to score, or --write-train DIR")
    for path, what in [(args.gmb_dir, "GMB folder"), (args.labels, "label file")] + [(m, "pipeline directory") for m in args.models]:
        if not path.exists():
            ap.error(f"{path}: no such {what}")

    import spacy

    from spacy_ner_bert.corpus import CorpusError, groups_to_docs, read_label_file, write_docbin
    from spacy_ner_bert.pipe import get_ner_bert

    try:
        labels = read_label_file(args.labels)
        train, test = read_gmb(args.gmb_dir, labels)
        dev_ids = held_out(len(train), args.dev_size, args.seed)
    except (CorpusError, OSError, ValueError) as err:
        print(f"{args.gmb_dir}: {err}", file=sys.stderr)
        return 1
    if args.write_train is not None:
        groups = context_train_groups(train, dev_ids, args.doc_sents)
        from spacy.vocab import Vocab

        write_docbin(groups_to_docs(groups, Vocab()), args.write_train / "train.spacy")
        print(f"wrote {args.write_train / 'train.spacy'}: {len(groups):,} docs, "
              f"{sum(len(g) for g in groups):,} sentences ({len(dev_ids):,} validation sentences left out)")
        return 0

    val_gold = [train[i][1] for i in dev_ids]
    test_gold = [s[1] for s in test]
    every_test = range(len(test))
    modes = {
        "sentences": ((predict_blocks(train, dev_ids, 1), val_gold), (predict_blocks(test, every_test, 1), test_gold)),
        "context": ((predict_blocks(train, dev_ids, args.doc_sents), val_gold),
                    (predict_blocks(test, every_test, args.doc_sents), test_gold)),
    }
    agreement = None
    if args.sent_spans:
        modes["context_sentence_spans"] = modes["context"]
        agreement = sentencizer_agreement(modes["context"][1][0])
        print(f"sentencizer on the test blocks: {agreement['found']:,} of {agreement['sentence_starts']:,} sentence "
              f"starts found, {agreement['extra']:,} added; {agreement['blocks_split_exactly']:,} of "
              f"{agreement['blocks']:,} blocks split exactly", flush=True)
    results = []
    for model in args.models:
        try:
            nlp = spacy.load(model)
            tags = get_ner_bert(nlp, "ner_bert").tags
            by_mode = {mode: nlp for mode in modes}
            if args.sent_spans:
                by_mode["context_sentence_spans"] = load_sentence_spans(model)
        except (OSError, ValueError) as err:  # ConfigValidationError: ner_bert listens to a transformer
            print(f"{model}: {err}", file=sys.stderr)
            return 1
        row = {"model": str(model)}
        for mode, (val, tst) in modes.items():
            try:
                row[mode] = score_mode(by_mode[mode], tags, labels, val, tst)
            except (KeyError, ValueError) as err:  # gold tags outside the pipeline's or the label file's
                print(f"{model}, {mode}: {err}", file=sys.stderr)
                return 1
        results.append(row)
        print(f"{model}: " + "; ".join(
            f"{mode} tau {row[mode]['tau']:.1f} validation {row[mode]['validation_macro_f1']:.4f} "
            f"test {row[mode]['test_macro_f1']:.4f} entity F {row[mode]['test_entity']['f']:.4f}" for mode in modes),
            flush=True)
    write_json(args.json, {"gmb_dir": str(args.gmb_dir), "dev_size": args.dev_size, "seed": args.seed,
                           "doc_sents": args.doc_sents, "sent_spans": args.sent_spans,
                           "sentencizer_on_test_blocks": agreement, "pipelines": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
