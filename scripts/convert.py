"""Convert IOB data (NeMo text+labels or CoNLL) to train/dev/test .spacy files."""
from pathlib import Path
from typing import Optional

import typer

from spacy_ner_bert.corpus import CorpusError, convert_corpus


def main(
    input_dir: Path = typer.Argument(..., help="Folder with text_<split>.txt + labels_<split>.txt (or <split>.conll)"),
    output_dir: Path = typer.Argument(..., help="Where train.spacy, dev.spacy and test.spacy go"),
    fmt: str = typer.Option("nemo", "--format", help="nemo or conll"),
    train_split: str = typer.Option("train", help="Split to train on (a validation slice is held out of it)"),
    test_split: str = typer.Option("dev", help="Split scored once at the end (NeMo's dev split)"),
    labels_file: Optional[Path] = typer.Option(None, help="Allowed labels, one per line (NeMo's label_ids.csv)"),
    dev_size: int = typer.Option(2000, help="Sentences held out of train for checkpoint selection"),
    seed: int = typer.Option(0, help="Seed of the train/validation shuffle"),
    train_limit: int = typer.Option(0, help="Use only the first N train sentences (+ dev_size); 0 = all"),
    test_limit: int = typer.Option(0, help="Use only the first N test sentences; 0 = all"),
    doc_sents: int = typer.Option(1, help="Consecutive sentences per doc: >1 gives the encoder its neighbours as context"),
    strict: bool = typer.Option(False, help="Reject an I-X that does not continue an entity instead of making it B-X"),
):
    """Read, check and convert; errors name the file and line, and leave no partial output."""
    try:
        convert_corpus(
            input_dir, output_dir, fmt=fmt, train_split=train_split, test_split=test_split,
            labels_file=labels_file, dev_size=dev_size, seed=seed, train_limit=train_limit,
            test_limit=test_limit, doc_sents=doc_sents, repair=not strict, log=typer.echo,
        )
    except (CorpusError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
