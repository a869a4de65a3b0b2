"""Choose ner_bert's tag bias (logit adjustment) on the validation slice; write the pipeline with it."""
import json
from collections import Counter
from pathlib import Path

import spacy
import typer
from spacy.tokens import DocBin
from spacy.training import Example
from wasabi import msg

from spacy_ner_bert.calibrate import calibrate
from spacy_ner_bert.checkpoints.common import write_dir_atomically
from spacy_ner_bert.pipe import get_ner_bert
from spacy_ner_bert.scoring import doc_iob_tags

# Below this many validation words of a tag, its F1 (1/13 of the macro) moves in large steps.
FEW_WORDS = 30


def main(
    model: Path = typer.Argument(..., help="Trained pipeline directory"),
    dev_path: Path = typer.Argument(..., help="Validation .spacy file (never the test split)"),
    output: Path = typer.Argument(..., help="Pipeline directory to write, with the chosen tag bias"),
    report: Path = typer.Option(None, help="JSON file for the tau table"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
):
    """Try tau in -0.5..1.0 (bias = -tau * log tag prior), keep the best token macro F1 (ties: tau 0)."""
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    for path, what in ((model, "pipeline directory"), (dev_path, "validation file")):
        if not path.exists():
            msg.fail(f"{path}: no such {what}", exits=1)
    nlp = spacy.load(model)
    docs = list(DocBin().from_disk(dev_path).get_docs(nlp.vocab))
    tau, table = calibrate(nlp, [Example(d, d) for d in docs])
    print(f"{'tau':>6}{'macro P':>10}{'macro R':>10}{'macro F':>10}")
    for row in table:
        mark = "  <- chosen" if row["tau"] == tau else ""
        print(f"{row['tau']:>6.2f}{row['p']:>10.4f}{row['r']:>10.4f}{row['f']:>10.4f}{mark}")
    counted = Counter(t for doc in docs for t in doc_iob_tags(doc))
    support = {tag: counted[tag] for tag in get_ner_bert(nlp, "ner_bert").tags.tags}
    rarest = sorted(support.items(), key=lambda kv: kv[1])[:3]
    print("rarest tags on the validation slice (words): " + ", ".join(f"{tag} {n}" for tag, n in rarest))
    if rarest[0][1] < FEW_WORDS:
        tag, n = rarest[0]
        msg.warn(
            f"{tag} has {n} word{'' if n == 1 else 's'} on {dev_path}: its F1, 1/{len(support)} of the macro, moves "
            "in large steps, so macro F1 differences of a few hundredths on this slice can be noise "
            "(benchmarks/bootstrap.py puts an interval on them; a larger slice narrows it)"
        )
    write_dir_atomically(output, nlp.to_disk, replace=True)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(
            {"chosen_tau": tau, "validation": str(dev_path), "table": table, "support": support}, indent=2
        ))
    msg.good(f"tau {tau} chosen on {len(docs):,} validation docs; wrote {output}")


if __name__ == "__main__":
    typer.run(main)
