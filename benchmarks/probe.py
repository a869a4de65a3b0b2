"""Linear probe: how much NER the frozen encoder's word vectors hold, before any fine-tune.

For each encoder, every word of the training and validation DocBins gets the encoder's last-layer
vector of its first wordpiece (the one the component labels from); a linear softmax classifier over
the 13 IOB tags is trained on the training words (the recipe's class weighting: inverse frequency to
the power --class-weighting) and scored on the validation words by token macro F1 (argmax, no
decoding, no calibration). A cheap comparison of encoders (e.g. the package's against a
re-pretrained one from benchmarks/tapt.py); it does not predict what a fine-tune reaches.

usage: python benchmarks/probe.py TRAIN.spacy DEV.spacy LABELS ENCODER [ENCODER ...] [--train-docs N] [--json OUT]
"""
import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy


def read_tagged(path: Path, limit: int) -> List[Tuple[List[str], List[str]]]:
    """Words and IOB tags of the first `limit` docs (0: all) of a DocBin."""
    import spacy
    from spacy.tokens import DocBin

    from spacy_ner_bert.scoring import doc_iob_tags

    nlp = spacy.blank("en")
    out = []
    for doc in DocBin().from_disk(path).get_docs(nlp.vocab):
        if limit and len(out) >= limit:
            break
        if len(doc):
            out.append(([t.text for t in doc], doc_iob_tags(doc)))
    return out


def first_piece_vectors(encoder: str, sents: Sequence[Sequence[str]], batch: int = 64, max_length: int = 128):
    """Last-layer vectors of each word's first wordpiece (float32, words in order), and a mask of the
    words kept (a word past --max-length wordpieces has none)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from spacy_ner_bert.encoders import check_encoder_source, resolve_encoder_name

    check_encoder_source(encoder)
    source = resolve_encoder_name(encoder)
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    model = AutoModel.from_pretrained(source).eval()
    order = sorted(range(len(sents)), key=lambda i: len(sents[i]))
    per_sent: Dict[int, Tuple[numpy.ndarray, numpy.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch):
            ids = order[start: start + batch]
            enc = tokenizer([list(sents[i]) for i in ids], is_split_into_words=True, truncation=True,
                            max_length=max_length, padding=True, return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state.numpy()
            for row, i in enumerate(ids):
                first: Dict[int, int] = {}
                for pos, w in enumerate(enc.word_ids(row)):
                    if w is not None and w not in first:
                        first[w] = pos
                kept = numpy.array([w in first for w in range(len(sents[i]))])
                per_sent[i] = (hidden[row, [first[w] for w in range(len(sents[i])) if w in first]], kept)
    vectors = numpy.concatenate([per_sent[i][0] for i in range(len(sents))]).astype("float32")
    kept = numpy.concatenate([per_sent[i][1] for i in range(len(sents))])
    return vectors, kept


def train_probe(x: numpy.ndarray, y: numpy.ndarray, n_labels: int, class_weighting: float, epochs: int,
                seed: int = 0):
    """A linear softmax classifier (weights, bias), full-batch L-BFGS on class-weighted cross-entropy."""
    import torch

    torch.manual_seed(seed)
    counts = numpy.bincount(y, minlength=n_labels).astype("float64")
    weights = numpy.where(counts > 0, (counts.sum() / numpy.maximum(counts, 1)) ** class_weighting, 0.0)
    weights = torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy(y.astype("int64"))
    layer = torch.nn.Linear(x.shape[1], n_labels)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(xt), yt, weight=weights) + 1e-4 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer, mean, std


def macro_f1(gold: numpy.ndarray, pred: numpy.ndarray, labels: Sequence[str]) -> Tuple[float, List[float], float]:
    """Token macro F1, per-label F1 and accuracy of label indices, by the workflow's own table
    (`scoring.token_report`: all labels count, 0 where undefined)."""
    from spacy_ner_bert.scoring import token_report

    report = token_report([labels[k] for k in gold], [labels[k] for k in pred], labels)
    return report["macro avg"]["f1-score"], [report[label]["f1-score"] for label in labels], report["accuracy"]


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train", type=Path, help="training DocBin (corpus/train.spacy)")
    ap.add_argument("dev", type=Path, help="validation DocBin (corpus/dev.spacy)")
    ap.add_argument("labels", type=Path, help="label file, one per line, O first (configs/gmb_labels.txt)")
    ap.add_argument("encoders", nargs="+", help="encoders to compare (package names or HF directories)")
    ap.add_argument("--train-docs", type=int, default=20000, help="training docs used (default 20000; 0: all)")
    ap.add_argument("--class-weighting", type=float, default=0.3, help="inverse-frequency power (default 0.3)")
    ap.add_argument("--iterations", type=int, default=200, help="L-BFGS iterations (default 200)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    for path, what in [(args.train, "DocBin file"), (args.dev, "DocBin file"), (args.labels, "label file")]:
        if not path.is_file():
            ap.error(f"{path}: no such {what}")
    if args.train_docs < 0 or args.iterations < 1:
        ap.error(f"--train-docs must be >= 0 and --iterations >= 1, got {args.train_docs}, {args.iterations}")

    import torch

    from spacy_ner_bert.corpus import CorpusError, read_label_file

    try:
        labels = read_label_file(args.labels)
    except CorpusError as err:
        ap.error(str(err))
    index = {label: i for i, label in enumerate(labels)}
    data = {"train": read_tagged(args.train, args.train_docs), "dev": read_tagged(args.dev, 0)}
    gold = {}
    for split, sents in data.items():
        unknown = sorted({t for _, tags in sents for t in tags} - set(index))
        if unknown:
            ap.error(f"{args.train if split == 'train' else args.dev}: tags not in {args.labels}: {unknown}")
        gold[split] = numpy.array([index[t] for _, tags in sents for t in tags])
    results = []
    for encoder in args.encoders:
        t0 = time.time()
        feats = {split: first_piece_vectors(encoder, [w for w, _ in sents]) for split, sents in data.items()}
        layer, mean, std = train_probe(feats["train"][0], gold["train"][feats["train"][1]], len(labels),
                                       args.class_weighting, args.iterations)
        x_dev, kept = feats["dev"]
        with torch.no_grad():
            scores = layer(torch.from_numpy((x_dev - mean) / std)).argmax(-1).numpy()
        pred = numpy.zeros(len(gold["dev"]), dtype="int64")  # a word with no wordpiece counts as O
        pred[kept] = scores
        macro, per_label, acc = macro_f1(gold["dev"], pred, labels)
        results.append({"encoder": encoder, "dev_token_macro_f1": macro, "dev_accuracy": acc,
                        "per_label_f1": dict(zip(labels, per_label)), "seconds": time.time() - t0})
        print(f"{encoder}: validation token macro F1 {macro:.4f}, accuracy {acc:.4f} "
              f"({len(gold['train'])} training words, {time.time() - t0:.0f} s)", flush=True)
        print("  " + "  ".join(f"{label} {f:.2f}" for label, f in zip(labels, per_label)), flush=True)
    write_json(args.json, {"train_docs": args.train_docs, "class_weighting": args.class_weighting,
                           "iterations": args.iterations, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
