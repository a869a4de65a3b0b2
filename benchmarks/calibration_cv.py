"""Would a richer tag bias than calibrate's one tau generalize? Cross-fitted on the validation slice.

The workflow's calibrate step chooses one number, tau (bias = -tau * log tag prior), on the
validation slice. A bias with more free numbers always fits that slice at least as well, so its
in-sample score says nothing. Here each family of biases is fitted on one half of the validation
docs and used to predict the other half (2-fold, repeated with reshuffled halves); the cross-fitted
predictions of all validation docs are scored as one token macro F1. Families:

  none     no bias (what model-best alone predicts)
  tau      calibrate's family: tau in -0.5..1.0 (DEFAULT_TAUS)
  tau+O    tau, plus an offset on O's logit (OFFSETS): one knob for all entity tags at once
  per-tag  tau, then an offset per tag (OFFSETS), by coordinate ascent (two sweeps over the tags)
  tau+trans  (with --train) tau, plus a tag-bigram prior in the Viterbi decoding: lambda * log P(tag |
           previous tag), P counted on the train split's gold tags (add-one), lambda in LAMBDAS
  tau+crf  (with --crf) tau, plus transition and first-tag scores in the Viterbi decoding, fitted as a
           linear-chain CRF over the model's log-probabilities on the fitting half's gold tags (crf.py),
           then used (lambda 1) or not (lambda 0), chosen jointly with tau

Each family is also fitted on the whole validation slice and the test split scored with it
(token macro F1 of the decoded tags over the component's tags: NeMo's 13 labels on GMB, as evaluate
scores it).

Inputs are logits saved by `benchmarks/ensemble.py --save-logits DIR` (the encoders do not run
again); pass several files to see the families over several seeds, and --pool to add the mean of
the files' log-softmax (their ensemble) as one more row.

usage: python benchmarks/calibration_cv.py VALIDATION.spacy TEST.spacy NPZ [NPZ ...] [--repeats 5]
       [--seed 0] [--pool] [--train TRAIN.spacy] [--crf] [--json OUT.json]
"""
import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy

OFFSETS = tuple(float(x) for x in numpy.arange(-1.0, 1.01, 0.25))
LAMBDAS = (0.25, 0.5, 1.0)
FAMILIES = ("none", "tau", "tau+O", "per-tag")


def bigram_log_probs(gold_docs: Sequence[numpy.ndarray], n_tags: int):
    """log P(tag | previous tag) and log P(first tag), add-one smoothed, from gold tag id sequences."""
    pairs = numpy.ones((n_tags, n_tags))
    first = numpy.ones(n_tags)
    for ids in gold_docs:
        if len(ids):
            first[ids[0]] += 1
            numpy.add.at(pairs, (ids[:-1], ids[1:]), 1)
    return numpy.log(pairs / pairs.sum(axis=1, keepdims=True)), numpy.log(first / first.sum())


def macro_f1(gold: numpy.ndarray, pred: numpy.ndarray, n_tags: int) -> float:
    """Token macro F1 over all `n_tags` tags, from tag ids (scoring's F1: 0 where undefined)."""
    from spacy_ner_bert.scoring import _prf

    tp = numpy.bincount(gold[gold == pred], minlength=n_tags).astype("float64")
    n_pred = numpy.bincount(pred, minlength=n_tags).astype("float64")
    n_gold = numpy.bincount(gold, minlength=n_tags).astype("float64")
    return float(_prf(tp, n_pred, n_gold)[2].mean())


class Decoder:
    """Decodes a fixed set of docs under any bias; scores the result against their gold tag ids."""

    def __init__(self, logits: Sequence[numpy.ndarray], gold_docs: Sequence[numpy.ndarray], tags, bigrams=None):
        from spacy_ner_bert.decode import log_softmax

        self.logits = [log_softmax(x) for x in logits]
        self.gold_docs = list(gold_docs)
        self.gold = numpy.concatenate(self.gold_docs) if self.gold_docs else numpy.zeros((0,), dtype="int64")
        self.tags, self.bigrams = tags, bigrams

    def predict(self, bias: numpy.ndarray, lam: float = 0.0, trans=None) -> numpy.ndarray:
        """Decoded tag ids of all docs; with lam > 0, Viterbi adds lam x `trans` ((K, K) step and (K,)
        first-tag scores; None: the train split's bigrams)."""
        from spacy_ner_bert.decode import decode_docs, viterbi_batch

        if lam:
            steps, start = self.bigrams if trans is None else trans
            paths = viterbi_batch([x + bias for x in self.logits], self.tags, lam * steps, lam * start)
        else:
            paths, _ = decode_docs([x + bias for x in self.logits], self.tags)
        return numpy.concatenate(paths) if paths else numpy.zeros((0,), dtype="int64")

    def score(self, bias: numpy.ndarray, lam: float = 0.0, trans=None) -> float:
        return macro_f1(self.gold, self.predict(bias, lam, trans), len(self.tags))


def fit(family: str, dec: Decoder, prior: numpy.ndarray) -> Tuple[numpy.ndarray, float, Optional[tuple]]:
    """The bias, transition weight lambda and transitions (None: the train split's bigrams, if any) of
    `family` that maximize dec's macro F1 (ties: the earlier, smaller candidate)."""
    from spacy_ner_bert.calibrate import DEFAULT_TAUS

    n = len(prior)
    if family == "none":
        return numpy.zeros(n), 0.0, None
    taus = sorted(set(DEFAULT_TAUS) | {0.0}, key=abs)  # calibrate's order: 0 first, so it wins ties
    best_f, bias = -1.0, numpy.zeros(n)
    for tau in taus:
        f = dec.score(-tau * prior)
        if f > best_f:
            best_f, bias = f, -tau * prior
    if family == "tau":
        return bias, 0.0, None
    if family in ("tau+trans", "tau+crf"):
        trans = None
        if family == "tau+crf":
            from crf import fit_transitions

            steps, start, _ = fit_transitions(dec.logits, dec.gold_docs, dec.tags)
            trans = (steps, start)
        best_lam = 0.0
        for lam in (LAMBDAS if family == "tau+trans" else (1.0,)):
            for tau in taus:
                f = dec.score(-tau * prior, lam, trans)
                if f > best_f:
                    best_f, bias, best_lam = f, -tau * prior, lam
        return bias, best_lam, trans
    o = dec.tags.index["O"]
    if family == "tau+O":
        best_b = bias
        for tau in taus:
            for off in sorted(OFFSETS, key=abs):
                b = -tau * prior
                b[o] += off
                f = dec.score(b)
                if f > best_f:
                    best_f, best_b = f, b
        return best_b, 0.0, None
    if family == "per-tag":
        for _ in range(2):
            for t in range(n):
                start = bias[t]
                for off in sorted(OFFSETS, key=abs):
                    b = bias.copy()
                    b[t] = start + off
                    f = dec.score(b)
                    if f > best_f:
                        best_f, bias = f, b
        return bias, 0.0, None
    raise ValueError(f"unknown family {family!r}")


def cross_fitted(family: str, logits, gold_docs: List[numpy.ndarray], tags, prior, repeats: int, seed: int,
                 bigrams=None) -> float:
    """Mean over `repeats` of the macro F1 of 2-fold cross-fitted predictions on all validation docs."""
    rng = numpy.random.default_rng(seed)
    n_docs = len(logits)
    scores = []
    for _ in range(repeats):
        order = rng.permutation(n_docs)
        halves = [numpy.sort(order[: n_docs // 2]), numpy.sort(order[n_docs // 2 :])]
        gold_all, pred_all = [], []
        for k in (0, 1):
            fit_on, pred_on = halves[k], halves[1 - k]
            bias, lam, trans = fit(family, Decoder([logits[i] for i in fit_on], [gold_docs[i] for i in fit_on],
                                                   tags, bigrams), prior)
            dec = Decoder([logits[i] for i in pred_on], [gold_docs[i] for i in pred_on], tags, bigrams)
            gold_all.append(dec.gold)
            pred_all.append(dec.predict(bias, lam, trans))
        scores.append(macro_f1(numpy.concatenate(gold_all), numpy.concatenate(pred_all), len(tags)))
    return float(numpy.mean(scores))


def load_ensemble_module():
    spec = importlib.util.spec_from_file_location("ensemble", Path(__file__).with_name("ensemble.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("validation", type=Path, help="validation .spacy file the logits were computed on")
    ap.add_argument("test", type=Path, help="test .spacy file the logits were computed on")
    ap.add_argument("logits", type=Path, nargs="+", help=".npz files written by ensemble.py --save-logits")
    ap.add_argument("--repeats", type=int, default=5, help="2-fold splits of the validation docs (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the splits (default 0)")
    ap.add_argument("--pool", action="store_true", help="add the files' pooled log-probabilities as a row")
    ap.add_argument("--train", type=Path, default=None,
                    help="train .spacy file: adds the tau+trans family (tag bigrams counted on it)")
    ap.add_argument("--crf", action="store_true",
                    help="add the tau+crf family (transitions fitted as a CRF on the validation half's gold tags)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    data_files = [(args.validation, "validation file"), (args.test, "test file")]
    if args.train is not None:
        data_files.append((args.train, "train file"))
    for path, what in data_files + [(p, "logits file") for p in args.logits]:
        if not path.exists():
            ap.error(f"{path}: no such {what}")

    import spacy
    from spacy.tokens import DocBin

    from spacy_ner_bert.calibrate import log_prior
    from spacy_ner_bert.scoring import doc_iob_tags
    from spacy_ner_bert.tags import IOBTags

    ensemble = load_ensemble_module()
    members = []
    for path in args.logits:
        try:
            members.append(ensemble.load_logits(path))
        except (OSError, KeyError, ValueError) as err:
            ap.error(f"{path}: not a logits file from ensemble.py --save-logits ({err})")
    tag_names = members[0][0]
    for path, member in zip(args.logits, members):
        if member[0] != tag_names:
            ap.error(f"{path}: tags {member[0]} differ from {args.logits[0]}'s {tag_names}")
    tags = IOBTags(tag_names)
    vocab = spacy.blank("en").vocab
    gold = {}
    for name, path in (("dev", args.validation), ("test", args.test), ("train", args.train)):
        if path is None:
            continue
        doc_tags = [doc_iob_tags(doc) for doc in DocBin().from_disk(path).get_docs(vocab)]
        unknown = sorted({t for seq in doc_tags for t in seq} - set(tag_names))
        if unknown:
            ap.error(f"{path}: gold tags {unknown} are not among the logits' tags {tag_names}")
        gold[name] = [numpy.asarray([tags.index[t] for t in seq], dtype="int64") for seq in doc_tags]
    families = FAMILIES + (("tau+trans",) if args.train is not None else ()) + (("tau+crf",) if args.crf else ())
    bigrams = bigram_log_probs(gold["train"], len(tags)) if args.train is not None else None
    for path, (_, _, dev, test) in zip(args.logits, members):
        for name, logits in (("dev", dev), ("test", test)):
            if [len(x) for x in logits] != [len(g) for g in gold[name]]:
                ap.error(f"{path}: its {name} logits do not match the docs of "
                         f"{args.validation if name == 'dev' else args.test}")
    prior = log_prior([tag_names[i] for g in gold["dev"] for i in g], tags)
    rows = [(str(path), dev, test) for path, (_, _, dev, test) in zip(args.logits, members)]
    if args.pool:
        rows.append(("pooled", ensemble.pool_log_probs([r[1] for r in rows]), ensemble.pool_log_probs([r[2] for r in rows])))

    results: List[Dict] = []
    print(f"cross-fitted validation macro F1 ({args.repeats} x 2-fold over {len(gold['dev']):,} docs), "
          f"then fitted on all of it and scored on the test split ({len(gold['test']):,} docs)")
    print(f"\n{'logits':<44}" + "".join(f"{f + ' cv':>14}{f + ' test':>16}" for f in families))
    for name, dev, test in rows:
        result = {"logits": name}
        for family in families:
            cv = cross_fitted(family, dev, gold["dev"], tags, prior, args.repeats, args.seed, bigrams)
            bias, lam, trans = fit(family, Decoder(dev, gold["dev"], tags, bigrams), prior)
            result[family] = {"cv": cv, "test": Decoder(test, gold["test"], tags, bigrams).score(bias, lam, trans),
                              "bias": [float(b) for b in bias], "lambda": lam}
            if family == "tau+crf":
                result[family]["transitions"] = [x.tolist() for x in trans]
        results.append(result)
        print(f"{name[-44:]:<44}" + "".join(f"{result[f]['cv']:>14.4f}{result[f]['test']:>16.4f}" for f in families), flush=True)
    singles = results[: len(args.logits)]
    print(f"{'mean of the files':<44}" + "".join(
        f"{numpy.mean([r[f]['cv'] for r in singles]):>14.4f}{numpy.mean([r[f]['test'] for r in singles]):>16.4f}"
        for f in families))
    if args.json:
        from _common import write_json

        write_json(args.json, {"validation": str(args.validation), "test": str(args.test),
                               "repeats": args.repeats, "seed": args.seed, "offsets": list(OFFSETS),
                               "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
