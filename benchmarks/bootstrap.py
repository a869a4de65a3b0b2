"""How much of a macro-F1 figure is the evaluation set's sampling noise: a paired bootstrap over docs.

Each pipeline labels the docs of DATA once (each word by its first wordpiece, as evaluate does); the
docs are then resampled with replacement and every pipeline is scored on the same resamples. Prints,
per pipeline, the token-level macro F1 (NeMo's, 13 labels) with its 95% percentile interval, and for
each pipeline after the first, its difference from the first with that difference's interval and the
share of resamples in which the first is ahead. The rarest labels' supports are printed too: macro F1
weighs each label equally, so a handful of words of the rarest one move it most.

This measures the data's noise only (what another draw of sentences like these would do), not the
seed's: a recipe comparison needs both. Use it on the validation slice to see how large a
difference selection can resolve, and on the test split to put an interval on a reported score.

usage: python benchmarks/bootstrap.py DATA.spacy LABELS MODEL [MODEL ...] [--n 1000] [--seed 0]
       [--gpu-id -1] [--batch-size 64] [--json OUT.json]
"""
import argparse
import sys
from pathlib import Path

import numpy


def predict_counts(model: Path, data: Path, labels, batch_size: int):
    import spacy
    from spacy.tokens import DocBin

    from spacy_ner_bert.corpus import unannotated_copy
    from spacy_ner_bert.scoring import doc_iob_tags, doc_label_counts

    nlp = spacy.load(model)
    gold = list(DocBin().from_disk(data).get_docs(nlp.vocab))
    pred = nlp.pipe((unannotated_copy(d) for d in gold), batch_size=batch_size)
    return doc_label_counts([doc_iob_tags(d) for d in gold], [doc_iob_tags(d) for d in pred], labels)


def main(argv=None) -> int:
    from _common import add_scoring_args, checked_inputs, paired_interval, write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help=".spacy file with gold entities (validation or test)")
    add_scoring_args(ap, "trained pipeline directories; the first is the reference", "bootstrap resamples")
    ap.add_argument("--batch-size", type=int, default=64, help="docs per batch")
    args = ap.parse_args(argv)

    from spacy_ner_bert.scoring import bootstrap_macro_f1, macro_f1_from_counts

    labels = checked_inputs(ap, args, [(args.data, "data file")])
    counts = []
    for model in args.models:
        try:
            counts.append(predict_counts(model, args.data, labels, args.batch_size))
        except (OSError, ValueError) as err:  # not a pipeline or not a DocBin; tags outside LABELS
            print(f"{model} on {args.data}: {err}", file=sys.stderr)
            return 1
    samples = bootstrap_macro_f1(counts, n_resamples=args.n, seed=args.seed)
    points = [float(macro_f1_from_counts(c.sum(axis=0))) for c in counts]
    support = counts[0].sum(axis=0)[2]
    rare = sorted(zip(support, labels))[:4]
    print(f"{args.data}: {counts[0].shape[0]:,} docs, {int(support.sum()):,} words; "
          f"{args.n} paired resamples of the docs (seed {args.seed}); 95% percentile intervals")
    print("rarest labels: " + ", ".join(f"{label} {int(n)}" for n, label in rare))
    width = max(len(str(m)) for m in args.models) + 2
    print(f"\n{'pipeline':<{width}}{'macro F1':>10}   95% interval")
    result = {"data": str(args.data), "docs": int(counts[0].shape[0]), "resamples": args.n, "seed": args.seed,
              "rarest": {label: int(n) for n, label in rare}, "models": []}
    for model, point, row in zip(args.models, points, samples):
        low, high = numpy.percentile(row, [2.5, 97.5])
        print(f"{str(model):<{width}}{point:>10.4f}   [{low:.4f}, {high:.4f}]")
        result["models"].append({"model": str(model), "macro_f1": point, "low": float(low), "high": float(high)})
    if len(args.models) > 1:
        print(f"\ndifference from {args.models[0]} (it minus the other)")
        print(f"{'pipeline':<{width}}{'diff':>10}   95% interval        first ahead in")
        for i in range(1, len(args.models)):
            diff = samples[0] - samples[i]
            low, high, ahead = paired_interval(diff)
            point = points[0] - points[i]
            print(f"{str(args.models[i]):<{width}}{point:>+10.4f}   [{low:+.4f}, {high:+.4f}]   {ahead:6.1%}")
            result["models"][i].update({"diff": point, "diff_low": low, "diff_high": high,
                                        "first_ahead": ahead})
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
