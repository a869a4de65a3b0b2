"""What several trained pipelines score as one: their tag log-probabilities averaged, then calibrated.

Each pipeline's ner_bert logits (before its tag bias) are computed once on the validation slice and
on the test split. Every pipeline alone, and the ensemble (the mean of the pipelines' per-token
log-probabilities, decoded under the same IOB constraints), gets the workflow's calibrate step: one
tau chosen on the validation slice (bias = -tau * log tag prior), then the test split is scored as
evaluate scores it (token-level macro F1 by word, NeMo's 13 labels; spaCy's entity F).

Seeds of one recipe disagree by about 0.01 test macro F1; averaging them is the usual cure for that
spread. A paired bootstrap over the test docs (as benchmarks/bootstrap.py) gives the ensemble's
difference from each pipeline and from the pipelines' mean, each with its 95% interval.

The pipelines must share one tag set. Pass model-best or model-final alike: logits are read before
the tag bias, and each pipeline's tau is chosen again here (as `calibrate` chose it).

With --save-logits DIR, each pipeline's logits (before its tag bias) are also written to
DIR/<i>.npz (i = its position in MODEL ...), for analyses that should not run the encoders again
(benchmarks/calibration_cv.py): dev_logits/test_logits (all tokens, docs concatenated), dev_lengths/
test_lengths (tokens per doc), tags, and the pipeline's path.

usage: python benchmarks/ensemble.py VALIDATION.spacy TEST.spacy LABELS MODEL [MODEL ...] [--n 1000]
       [--seed 0] [--gpu-id -1] [--json OUT.json] [--save-logits DIR]
"""
import argparse
import sys
from pathlib import Path
from typing import List, Sequence

import numpy


def pool_log_probs(members: Sequence[Sequence[numpy.ndarray]]) -> List[numpy.ndarray]:
    """The ensemble's per-token scores: the members' log-softmax averaged (decode.LogLinearPool).

    members (Sequence[Sequence[numpy.ndarray]]): Per member, one (n_tokens, n_tags) logit array per doc.
    RETURNS (List[numpy.ndarray]): One (n_tokens, n_tags) array of log-probabilities per doc.
    """
    from spacy_ner_bert.decode import LogLinearPool

    pool = LogLinearPool()
    for member in members:
        pool.add(member)
    return pool.log_probs()


def member_logits(model: Path, data: Sequence[Path]):
    """A pipeline's tag set and its ner_bert logits on each data file's docs, with the gold docs."""
    import spacy
    from spacy.tokens import DocBin

    from spacy_ner_bert.calibrate import component_inputs
    from spacy_ner_bert.pipe import get_ner_bert

    nlp = spacy.load(model)
    pipe = get_ner_bert(nlp, "ner_bert")
    out = []
    for path in data:
        gold = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        out.append((gold, pipe.logits(component_inputs(nlp, "ner_bert", gold))))
    return pipe.tags, out


def save_logits(path: Path, model: Path, tags, dev: Sequence[numpy.ndarray], test: Sequence[numpy.ndarray]) -> None:
    """Write a pipeline's per-doc logits on both files as one .npz (docs concatenated, with lengths)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def flat(logits):
        rows = numpy.concatenate(logits) if len(logits) else numpy.zeros((0, len(tags)), dtype="float32")
        return rows.astype("float32"), numpy.asarray([len(x) for x in logits], dtype="int64")

    (dev_x, dev_n), (test_x, test_n) = flat(dev), flat(test)
    numpy.savez_compressed(path, dev_logits=dev_x, dev_lengths=dev_n, test_logits=test_x, test_lengths=test_n,
                           tags=numpy.asarray(list(tags.tags)), model=numpy.asarray(str(model)))


def load_logits(path: Path):
    """What save_logits wrote: (tags, model path, per-doc validation logits, per-doc test logits)."""
    with numpy.load(path) as data:
        def split(name):
            lengths = data[f"{name}_lengths"]
            return numpy.split(data[f"{name}_logits"], numpy.cumsum(lengths)[:-1]) if len(lengths) else []

        return [str(t) for t in data["tags"]], str(data["model"]), split("dev"), split("test")


def score(tags, logits, bias, gold, labels):
    """Decode with `bias`; the evaluate-style report and each doc's counts for the bootstrap."""
    from spacy.tokens import Span
    from spacy.training import Example

    from spacy_ner_bert.corpus import unannotated_copy
    from spacy_ner_bert.decode import decode_docs
    from spacy_ner_bert.scoring import doc_iob_tags, doc_label_counts, score_examples

    paths, _ = decode_docs([x + bias for x in logits], tags)
    predicted = []
    for doc, path in zip(gold, paths):
        pred = unannotated_copy(doc)
        pred.set_ents([Span(pred, s, e, label=label) for s, e, label in tags.spans(path)], default="outside")
        predicted.append(pred)
    report = score_examples([Example(p, g) for p, g in zip(predicted, gold)], labels)
    counts = doc_label_counts([doc_iob_tags(d) for d in gold], [doc_iob_tags(d) for d in predicted], labels)
    return report, counts


def main(argv=None) -> int:
    from _common import add_scoring_args, checked_inputs, paired_interval, write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("validation", type=Path, help="validation .spacy file: each tau is chosen on it")
    ap.add_argument("test", type=Path, help="test .spacy file: scored once per pipeline and for the ensemble")
    add_scoring_args(ap, "trained pipeline directories (two or more)", "bootstrap resamples of the test docs")
    ap.add_argument("--save-logits", type=Path, default=None, metavar="DIR",
                    help="also write each pipeline's validation and test logits to DIR/<i>.npz")
    args = ap.parse_args(argv)
    if len(args.models) < 2:
        ap.error(f"an ensemble needs two or more pipelines, got {len(args.models)}")

    from spacy_ner_bert.calibrate import choose_tau
    from spacy_ner_bert.scoring import bootstrap_macro_f1, doc_iob_tags

    labels = checked_inputs(ap, args, [(args.validation, "validation file"), (args.test, "test file")])
    tags, members = None, []  # per pipeline: (validation logits, test logits)
    for model in args.models:
        try:
            model_tags, data = member_logits(model, [args.validation, args.test])
        except (OSError, ValueError) as err:  # not a pipeline, no ner_bert, or not a DocBin
            print(f"{model}: {err}", file=sys.stderr)
            return 1
        if tags is None:
            tags = model_tags
        elif model_tags.tags != tags.tags:
            print(f"{model}: tags {list(model_tags.tags)} differ from {args.models[0]}'s {list(tags.tags)}; "
                  "an ensemble needs one tag set", file=sys.stderr)
            return 1
        if not members:
            (dev_gold, _), (test_gold, _) = data
        members.append((data[0][1], data[1][1]))
        if args.save_logits is not None:
            save_logits(args.save_logits / f"{len(members) - 1}.npz", model, model_tags, data[0][1], data[1][1])
    dev_tags = [t for doc in dev_gold for t in doc_iob_tags(doc)]
    rows = [(str(m), dev, test) for m, (dev, test) in zip(args.models, members)]
    rows.append(("ensemble of all", pool_log_probs([m[0] for m in members]), pool_log_probs([m[1] for m in members])))
    results, counts = [], []
    for name, dev_logits, test_logits in rows:
        try:
            tau, table, bias = choose_tau(dev_logits, dev_tags, tags)
            report, doc_counts = score(tags, test_logits, bias, test_gold, labels)
        except ValueError as err:  # gold tags outside the pipelines' tags or outside LABELS
            print(f"{name} on {args.validation} and {args.test}: {err}", file=sys.stderr)
            return 1
        dev_f = next(row["f"] for row in table if row["tau"] == tau)
        results.append({"model": name, "tau": tau, "validation_macro_f1": dev_f,
                        "test_macro_f1": report["token"]["macro avg"]["f1-score"],
                        "test_accuracy": report["token"]["accuracy"], "test_entity_f": report["entity"]["f"],
                        "test_per_label_f1": {label: report["token"][label]["f1-score"] for label in labels}})
        counts.append(doc_counts)
    samples = bootstrap_macro_f1(counts, n_resamples=args.n, seed=args.seed)
    for result, row in zip(results, samples):
        result["test_low"], result["test_high"] = (float(x) for x in numpy.percentile(row, [2.5, 97.5]))

    print(f"{len(args.models)} pipelines; tau chosen on {args.validation} ({len(dev_gold):,} docs), "
          f"scored on {args.test} ({len(test_gold):,} docs); {args.n} paired resamples of the test docs")
    width = max(len(r["model"]) for r in results) + 2
    print(f"\n{'pipeline':<{width}}{'tau':>6}{'valid F1':>10}{'test F1':>10}   95% interval{'':8}{'entity F':>9}")
    for r in results:
        print(f"{r['model']:<{width}}{r['tau']:>6.1f}{r['validation_macro_f1']:>10.4f}{r['test_macro_f1']:>10.4f}"
              f"   [{r['test_low']:.4f}, {r['test_high']:.4f}]{r['test_entity_f']:>9.4f}")
    singles = numpy.mean([r["test_macro_f1"] for r in results[:-1]])
    print(f"{'mean of the pipelines':<{width}}{'':>16}{singles:>10.4f}")
    ens = samples[-1]
    print(f"\nensemble minus (paired, test){'':>4}{'diff':>8}   95% interval        ensemble ahead in")
    comparisons = [(r["model"], results[-1]["test_macro_f1"] - r["test_macro_f1"], ens - samples[i])
                   for i, r in enumerate(results[:-1])]
    comparisons.append(("mean of the pipelines", results[-1]["test_macro_f1"] - singles, ens - samples[:-1].mean(axis=0)))
    out = {"validation": str(args.validation), "test": str(args.test), "resamples": args.n, "seed": args.seed,
           "pipelines": results, "ensemble_minus": []}
    for name, point, diff in comparisons:
        low, high, ahead = paired_interval(diff)
        print(f"{name:<{width + 14}}{point:>+8.4f}   [{low:+.4f}, {high:+.4f}]   {ahead:6.1%}")
        out["ensemble_minus"].append({"model": name, "diff": float(point), "low": low, "high": high,
                                      "ensemble_ahead": ahead})
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
