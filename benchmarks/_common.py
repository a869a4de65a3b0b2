"""Shared by the benchmark scripts: input checks and paired intervals (bootstrap.py, ensemble.py); JSON out (also calibration_cv.py, context_eval.py, train_speed.py, probe.py)."""
import argparse
import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy


def add_scoring_args(ap: argparse.ArgumentParser, models_help: str, n_help: str) -> None:
    """The arguments both scripts take after their data files: labels, models, --n, --seed, --gpu-id, --json."""
    ap.add_argument("labels", type=Path, help="label file, one per line, O first (configs/gmb_labels.txt)")
    ap.add_argument("models", type=Path, nargs="+", help=models_help)
    ap.add_argument("--n", type=int, default=1000, help=f"{n_help} (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="resampling seed (default 0)")
    ap.add_argument("--gpu-id", type=int, default=-1, help="GPU id, -1 for CPU")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")


def checked_inputs(ap: argparse.ArgumentParser, args, files: Sequence[Tuple[Path, str]]) -> List[str]:
    """Stop with the argparse error naming the first bad input; return the labels; take the GPU.

    ap (argparse.ArgumentParser): The script's parser (its error exits with status 2).
    args: The parsed arguments: n (resamples), labels (label file), models, gpu_id.
    files (Sequence[Tuple[Path, str]]): The data files to check, each with what it is.
    RETURNS (List[str]): The labels of args.labels.
    """
    if args.n < 1:
        ap.error(f"--n must be at least 1, got {args.n}")
    for path, what in [*files, (args.labels, "label file")] + [(m, "pipeline directory") for m in args.models]:
        if not path.exists():
            ap.error(f"{path}: no such {what}")

    import spacy

    from spacy_ner_bert.corpus import CorpusError, read_label_file

    try:
        labels = read_label_file(args.labels)
    except CorpusError as err:
        ap.error(str(err))
    if args.gpu_id >= 0:
        spacy.require_gpu(args.gpu_id)
    return labels


def paired_interval(diff: numpy.ndarray) -> Tuple[float, float, float]:
    """A paired difference's 95% percentile interval over the resamples, and the share above 0."""
    low, high = numpy.percentile(diff, [2.5, 97.5])
    return float(low), float(high), float((diff > 0).mean())


def write_json(path: Optional[Path], result: dict) -> None:
    """Write `result` to `path` (its folder made), if a path was given."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
