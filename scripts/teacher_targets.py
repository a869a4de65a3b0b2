"""Label the training docs with trained pipelines' pooled tag log-probabilities (distillation targets)."""
import json
import time
from pathlib import Path
from typing import List

import spacy
import typer
from wasabi import msg

from spacy_ner_bert.distill import write_teacher_targets


def main(
    train_path: Path = typer.Argument(..., help="Training .spacy file (the one the student trains on)"),
    output: Path = typer.Argument(..., help=".spacy file to write: the same docs with teacher targets"),
    teachers: List[Path] = typer.Argument(..., help="Trained pipeline directories (the teachers)"),
    report: Path = typer.Option(None, help="JSON file for what was written"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
):
    """Each teacher scores every training doc; their mean log-probabilities become the soft targets."""
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    for path, what in [(train_path, "training file")] + [(t, "teacher pipeline directory") for t in teachers]:
        if not path.exists():
            msg.fail(f"{path}: no such {what}", exits=1)
    start = time.time()
    try:
        stats = write_teacher_targets(train_path, output, teachers)
    except (OSError, ValueError) as err:
        msg.fail(str(err), exits=1)
    stats["seconds"] = round(time.time() - start, 1)
    msg.good(f"wrote {output}: {stats['docs']:,} docs, {stats['tokens']:,} tokens, {stats['teachers']} teachers; "
             f"pooled argmax = gold tag on {stats['pooled_argmax_equals_gold']:.2%} of tokens ({stats['seconds']} s)")
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(stats, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
